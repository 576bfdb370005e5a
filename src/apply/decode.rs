//! Decoding of chunk records read from an untrusted patch: each stream is decompressed into a
//! buffer of exactly the length the (already bounds-checked) header declares, and the control
//! stream is read op by op with every value checked before use. Produces a [`DecodedChunk`];
//! only `apply` turns that into output bytes.
//!
//! Versions 1 and 2 code every stream of every chunk as a frame of its own, so any chunk
//! decodes alone. Version 3 codes each stream kind of a group of chunks as one frame, split at
//! the chunks: a [`Decoder`] keeps one zstd context per stream kind from chunk to chunk, so the
//! chunks of a group are decoded in order, from the group's first (their rebuilding from OLD,
//! the heavy part, still runs in parallel).

use std::path::Path;

use zstd::bulk::Decompressor;
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use crate::error::{Error, Result};
use crate::format::{ADD, CHUNK_HEADER_LEN, CTRL, ChunkHeader, CompressedChunk, Header, INSERT};

/// A chunk whose streams decompressed to exactly their declared lengths. Its operations are
/// still unchecked: [`Ops`](crate::format::Ops) checks each as it is read.
pub struct DecodedChunk {
    pub header: ChunkHeader,
    pub ctrl: Vec<u8>,
    pub add: Vec<u8>,
    pub insert: Vec<u8>,
    pub patch_offset: u64,
}

impl DecodedChunk {
    /// `chunk` with its three streams decoded (control, add, insert).
    fn new(chunk: CompressedChunk, [ctrl, add, insert]: [Vec<u8>; 3]) -> DecodedChunk {
        DecodedChunk {
            header: chunk.header,
            ctrl,
            add,
            insert,
            patch_offset: chunk.patch_offset,
        }
    }
}

/// Memory a [`Decoder`] holds besides the chunks for a patch with `header`: from version 3,
/// three zstd streaming contexts, each with its window (at most what the header declares from
/// version 10, twice the chunk size before: the format's bound), two block buffers (blocks are at
/// most 128 KiB and never larger than the window) and the context itself.
pub fn decoder_memory(header: &Header) -> u64 {
    if header.is_linked() {
        [CTRL, ADD, INSERT]
            .map(|k| stream_decoder_memory(header.window_log(k)))
            .iter()
            .sum()
    } else {
        0
    }
}

/// One linked stream's decoder with a window of `2^window_log` bytes.
fn stream_decoder_memory(window_log: u32) -> u64 {
    let window = 1u64 << window_log;
    window + 2 * window.min(128 << 10) + (256 << 10)
}

/// Decodes the chunks of one patch, in order (version 3), or each on its own (versions 1, 2).
pub struct Decoder {
    header: Header,
    /// Version 3: one context per stream kind, and whether its group's frame is open.
    linked: Option<[LinkedStream; 3]>,
    /// The chunk expected next (version 3).
    next: u64,
}

struct LinkedStream {
    dctx: DCtx<'static>,
    open: bool,
}

impl Decoder {
    /// A decoder for the patch `header` describes, starting at its first chunk.
    pub fn new(header: &Header, path: &Path) -> Result<Decoder> {
        let linked = if header.is_linked() {
            let stream = |kind: usize| -> Result<LinkedStream> {
                let failed = || Error::OutOfMemory {
                    what: "creating a zstd decompression context".into(),
                };
                let mut dctx = DCtx::try_create().ok_or_else(failed)?;
                // A frame asking for a larger window than the header declares (version 10) or
                // than twice the chunk size is refused, so no patch can make a context grow
                // past it.
                dctx.set_parameter(DParameter::WindowLogMax(header.window_log(kind)))
                    .map_err(|_| Error::corrupt(path, 0, "zstd refused the window limit"))?;
                Ok(LinkedStream { dctx, open: false })
            };
            Some([stream(CTRL)?, stream(ADD)?, stream(INSERT)?])
        } else {
            None
        };
        Ok(Decoder {
            header: header.clone(),
            linked,
            next: 0,
        })
    }

    /// The chunk decoding must start from to reach chunk `i`: the first of its group.
    pub fn start_for(&self, i: u64) -> u64 {
        self.header.group_start(i)
    }

    /// Makes chunk `i`, the first of its group, the next to decode (a resumed apply starts
    /// there).
    pub fn restart_at(&mut self, i: u64) {
        debug_assert_eq!(self.header.group_start(i), i);
        if let Some(streams) = &mut self.linked {
            for s in streams {
                s.open = false;
            }
        }
        self.next = i;
    }

    /// Decompresses the three streams of `chunk`, which must be the next in order (version 3)
    /// or any chunk (versions 1, 2).
    pub fn decode(&mut self, chunk: CompressedChunk, path: &Path) -> Result<DecodedChunk> {
        let Some(streams) = &mut self.linked else {
            return decode_independent(chunk, path);
        };
        let h = &chunk.header;
        assert_eq!(h.index, self.next, "version-3 chunks are decoded in order");
        let ends_group = self.header.ends_group(h.index);
        let mut out: [Vec<u8>; 3] = Default::default();
        let mut at = 0usize;
        for k in [CTRL, ADD, INSERT] {
            let len = h.compressed[k] as usize;
            let part = &chunk.payload[at..at + len];
            let offset = chunk.patch_offset + CHUNK_HEADER_LEN as u64 + at as u64;
            at += len;
            let corrupt = |what: &str| {
                Error::corrupt(
                    path,
                    offset,
                    format!("chunk {}: stream {k} {what}", h.index),
                )
            };
            if h.stored[k] {
                // a frame opened earlier in the group cannot end in a stored part
                if ends_group && streams[k].open {
                    return Err(corrupt("does not end its group's frame"));
                }
                out[k] = part.to_vec(); // its length is the decoded length, checked by parse
                continue;
            }
            out[k] = streams[k].decode(part, h.raw[k] as usize, ends_group, &corrupt)?;
        }
        self.next += 1;
        Ok(DecodedChunk::new(chunk, out))
    }
}

impl LinkedStream {
    /// Decodes `part`, one chunk's part of its group's frame, to exactly `raw` bytes: all of
    /// `part` is used, nothing more comes out, and the frame ends where its group ends
    /// (`ends_group`) and nowhere else.
    fn decode(
        &mut self,
        part: &[u8],
        raw: usize,
        ends_group: bool,
        corrupt: &dyn Fn(&str) -> Error,
    ) -> Result<Vec<u8>> {
        if part.is_empty() {
            // parse allows no bytes only for no data; a frame left open must end in the group
            if ends_group && self.open {
                return Err(corrupt("does not end its group's frame"));
            }
            return Ok(Vec::new());
        }
        if !self.open {
            self.dctx
                .reset(ResetDirective::SessionOnly)
                .map_err(|_| corrupt("cannot start a frame"))?;
            self.open = true;
        }
        let mut buf = vec![0u8; raw]; // bounded by ChunkHeader::parse
        let mut input = InBuffer::around(part);
        let mut output = OutBuffer::around(&mut buf[..]);
        let mut ended = false;
        loop {
            let before = (input.pos(), output.pos());
            let hint = self
                .dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|code| {
                    corrupt(&format!(
                        "does not decode: {}",
                        zstd::zstd_safe::get_error_name(code)
                    ))
                })?;
            if hint == 0 {
                ended = true;
                break;
            }
            if (input.pos(), output.pos()) == before {
                break; // needs more input or more room than this chunk has
            }
        }
        let produced = output.pos();
        let used = input.pos();
        if produced != raw {
            return Err(corrupt("decodes to the wrong length"));
        }
        if used != part.len() {
            return Err(corrupt("holds more than its chunk's data"));
        }
        if !ended {
            // Nothing more may be waiting inside the context; it may only notice now that the
            // frame is complete.
            let mut extra = [0u8; 1];
            let mut none = InBuffer::around(&[]);
            let mut spill = OutBuffer::around(&mut extra[..]);
            let hint = self
                .dctx
                .decompress_stream(&mut spill, &mut none)
                .map_err(|_| corrupt("does not decode"))?;
            if spill.pos() != 0 {
                return Err(corrupt("decodes to the wrong length"));
            }
            ended = hint == 0;
        }
        match (ended, ends_group) {
            (true, true) => self.open = false,
            (false, false) => {}
            (true, false) => return Err(corrupt("ends its group's frame before the group ends")),
            (false, true) => return Err(corrupt("does not end its group's frame")),
        }
        Ok(buf)
    }
}

/// Decompresses the three streams of a version-1 or version-2 chunk, each a frame of its own.
fn decode_independent(chunk: CompressedChunk, path: &Path) -> Result<DecodedChunk> {
    let h = &chunk.header;
    let mut streams: [Vec<u8>; 3] = Default::default();
    let mut at = 0usize;
    let mut decompressor =
        Decompressor::new().map_err(|e| Error::corrupt(path, chunk.patch_offset, e.to_string()))?;
    for i in [CTRL, ADD, INSERT] {
        let clen = h.compressed[i] as usize;
        let frame = &chunk.payload[at..at + clen];
        let offset = chunk.patch_offset + CHUNK_HEADER_LEN as u64 + at as u64;
        at += clen;
        let raw = h.raw[i] as usize;
        if raw == 0 {
            continue;
        }
        // Exactly one frame, filling the stream: zstd would also decode frames (or skippable
        // frames) concatenated after the first, which the format does not allow.
        if zstd::zstd_safe::find_frame_compressed_size(frame) != Ok(clen) {
            return Err(Error::corrupt(
                path,
                offset,
                format!(
                    "chunk {}: stream {i} is not exactly one zstd frame",
                    h.index
                ),
            ));
        }
        let mut buf = Vec::with_capacity(raw); // bounded by ChunkHeader::parse
        let n = decompressor
            .decompress_to_buffer(frame, &mut buf)
            .map_err(|e| {
                Error::corrupt(
                    path,
                    offset,
                    format!("chunk {}: stream {i} does not decode: {e}", h.index),
                )
            })?;
        if n != raw
            || zstd::zstd_safe::get_frame_content_size(frame)
                .ok()
                .flatten()
                != Some(raw as u64)
        {
            return Err(Error::corrupt(
                path,
                offset,
                format!("chunk {}: stream {i} decodes to the wrong length", h.index),
            ));
        }
        streams[i] = buf;
    }
    Ok(DecodedChunk::new(chunk, streams))
}
