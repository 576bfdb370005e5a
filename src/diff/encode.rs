//! Encoding, in two steps. [`prepare_chunk`] (chunks in parallel) turns one chunk's [`Delta`]
//! into its three decoded streams: the control stream as varints, the add bytes as sparse
//! carry-aware runs ([`add_runs`](fn@crate::format::add_runs)), the insert bytes as they are, and
//! decides which streams are stored as they are (new content that is already compressed).
//! [`LinkedEncoder`] (chunks in order) then codes every other stream as the chunk's part of its
//! group's zstd frame (format version 3): the frame is flushed at the end of each chunk, so each
//! chunk's bytes decode on their own once the chunks before it in the group have, while zstd's
//! statistics and window carry over from chunk to chunk instead of restarting three times per
//! chunk. The windows are never larger than a chunk, so apply decodes them in bounded memory.
//!
//! ```
//! use spindiff::format::{Header, Op, VERSION_LINKED};
//! use spindiff::internals::encode::{LinkedEncoder, prepare_chunk};
//! use spindiff::internals::matcher::Delta;
//!
//! // A chunk of 64 KiB inserted verbatim (nothing copied), alone in its group.
//! let new: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
//! let ops = vec![Op { old_pos: 0, copy: 0, insert: new.len() as u32 }];
//! let delta = Delta { ops, add: Vec::new(), insert: new.clone() };
//! let header = Header {
//!     version: VERSION_LINKED,
//!     transform: false,
//!     references: false,
//!     group: 16,
//!     old_size: 0,
//!     new_size: new.len() as u64,
//!     old_hash: [0; 32],
//!     new_hash: [0; 32],
//!     chunk_size: 64 << 10,
//!     chunk_count: 1,
//!     windows: Default::default(),
//! };
//! let prepared = prepare_chunk(0, 0, &new, delta, 19).unwrap();
//! let chunk = LinkedEncoder::new(&header, 19).encode(prepared).unwrap();
//! assert!(chunk.payload.len() < 1000); // one frame, opened and ended in this chunk
//! ```

use xxhash_rust::xxh3::xxh3_128;
use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, ResetDirective, zstd_sys};

use crate::diff::matcher::Delta;
use crate::error::{Error, Result};
use crate::format::{
    ADD, ChunkHeader, EncodedChunk, FrameWindows, Header, INSERT, Op, add_runs, control_stream,
    max_add_len, max_ctrl_len, max_decoded_len, max_window_log,
};

/// Streams at least this long are first probed at a fast level.
const PROBE_MIN: usize = 64 << 10;
/// Level of the probe.
const PROBE_LEVEL: i32 = 3;
/// Window of the control and add streams' frames (at most the chunk size): a chunk's control
/// and add streams are a small fraction of its output, so 256 KiB of them reach back over many
/// chunks (on the tar pair the patch is byte for byte the one 1 MiB windows make), with a
/// compression context a sixteenth of the insert stream's.
pub(crate) const SMALL_STREAM_WINDOW: u32 = 256 << 10;

/// A chunk's three decoded streams and its record header, the compressed lengths not yet known.
pub struct PreparedChunk {
    /// The record header: index, output range, decoded lengths, stored streams, output hash.
    pub header: ChunkHeader,
    /// Control, add and insert streams, decoded.
    pub streams: [Vec<u8>; 3],
}

fn out_of_memory(len: usize) -> Error {
    Error::OutOfMemory {
        what: format!("compressing a {len}-byte stream"),
    }
}

/// Whether a stream of new content is not worth coding: compressed at a fast level it saves
/// less than 1%. New content inside images is often already compressed, and the high levels
/// spend seconds per MiB on it for nothing.
fn incompressible(data: &[u8], level: i32) -> Result<bool> {
    if level <= PROBE_LEVEL || data.len() < PROBE_MIN {
        return Ok(false);
    }
    let mut cctx = CCtx::try_create().ok_or_else(|| out_of_memory(data.len()))?;
    cctx.set_parameter(CParameter::CompressionLevel(PROBE_LEVEL))
        .map_err(|_| out_of_memory(data.len()))?;
    let mut probe = Vec::new();
    probe
        .try_reserve_exact(zstd::zstd_safe::compress_bound(data.len()))
        .map_err(|_| out_of_memory(data.len()))?;
    cctx.compress2(&mut probe, data)
        .map_err(|_| out_of_memory(data.len()))?;
    Ok(probe.len() * 100 >= data.len() * 99)
}

/// Builds the streams of chunk `index`, covering NEW bytes `new` at `new_offset`, from `delta`,
/// and decides which are stored as they are (see [`LinkedEncoder`]) for coding at `level`.
pub fn prepare_chunk(
    index: u64,
    new_offset: u64,
    new: &[u8],
    delta: Delta,
    level: i32,
) -> Result<PreparedChunk> {
    let new_len = new.len() as u32;
    let mut ctrl = control_stream(&delta.ops);
    let mut add = add_runs(new, &delta.ops, &delta.add);
    let mut insert = delta.insert;
    let decoded = (ctrl.len() + add.len() + insert.len()) as u64;
    if ctrl.len() > max_ctrl_len(new_len) as usize
        || add.len() > max_add_len(new_len) as usize
        || decoded > max_decoded_len(new_len)
    {
        // pathological input: fall back to inserting the chunk verbatim
        let fallback = [Op {
            old_pos: 0,
            copy: 0,
            insert: new_len,
        }];
        ctrl = control_stream(&fallback);
        add = Vec::new();
        insert = new.to_vec();
    }
    let streams = [ctrl, add, insert];
    let mut stored = [false; 3];
    for k in [ADD, INSERT] {
        stored[k] = incompressible(&streams[k], level)?;
    }
    Ok(PreparedChunk {
        header: ChunkHeader {
            index,
            new_offset,
            new_len,
            compressed: [0; 3],
            raw: streams.each_ref().map(|s| s.len() as u32),
            stored,
            output_hash: xxh3_128(new),
        },
        streams,
    })
}

/// One stream kind's coder: a zstd context kept from chunk to chunk of a group.
struct StreamCoder {
    cctx: CCtx<'static>,
    /// Whether a frame is open (some chunk of the current group coded bytes into it).
    open: bool,
}

impl StreamCoder {
    /// A context at `level` whose window is at most `window` bytes (a power of two).
    fn new(level: i32, window: u32) -> Result<StreamCoder> {
        let failed = || Error::OutOfMemory {
            what: "creating a zstd compression context".into(),
        };
        let mut cctx = CCtx::try_create().ok_or_else(failed)?;
        for p in [
            CParameter::CompressionLevel(level),
            // the tables zstd would size for one window's worth of input
            CParameter::SrcSizeHint(window),
            CParameter::WindowLog(window.ilog2()),
            CParameter::ChecksumFlag(false),
        ] {
            cctx.set_parameter(p).map_err(|_| failed())?;
        }
        Ok(StreamCoder { cctx, open: false })
    }

    /// Codes `data` into the open frame (opening one first if none is), appending the bytes to
    /// `out`: flushed, so that they decode without what follows, or ending the frame (`end`).
    fn code(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>) -> Result<()> {
        let failed = || out_of_memory(data.len());
        if !self.open {
            self.cctx
                .reset(ResetDirective::SessionOnly)
                .map_err(|_| failed())?;
            self.open = true;
        }
        let op = if end {
            zstd_sys::ZSTD_EndDirective::ZSTD_e_end
        } else {
            zstd_sys::ZSTD_EndDirective::ZSTD_e_flush
        };
        out.try_reserve(zstd::zstd_safe::compress_bound(data.len()) + 64)
            .map_err(|_| failed())?;
        let mut input = InBuffer::around(data);
        loop {
            // (around_pos: zstd writes after what `out` already holds)
            let pos = out.len();
            let mut output = OutBuffer::around_pos(out, pos);
            let left = self
                .cctx
                .compress_stream2(&mut output, &mut input, op)
                .map_err(|_| failed())?;
            if left == 0 && input.pos() == data.len() {
                break;
            }
            out.try_reserve(left.max(1 << 16)).map_err(|_| failed())?;
        }
        if end {
            self.open = false;
        }
        Ok(())
    }
}

/// Codes prepared chunks, in order, into chunk records of a version-3 patch (docs/FORMAT.md,
/// "Version 3"): per stream kind, the streams of a group's chunks that are not stored form one
/// zstd frame, flushed at every chunk and ended in the group's last chunk.
pub struct LinkedEncoder {
    header: Header,
    coders: [Option<StreamCoder>; 3],
    level: i32,
    windows: FrameWindows,
}

/// The chunk size rounded down to a power of two: half the format's largest window, the insert
/// stream's window unless the plan takes the wider one, and the cap on the control and add
/// streams' windows.
pub fn chunk_window(chunk_size: u32) -> u32 {
    1 << (max_window_log(chunk_size) - 1)
}

/// The windows of the frames of a patch with `header` (its chunk size and whether it has a
/// transform section), the plan asking for insert frames of `insert_window` bytes (a power of
/// two, at most the format's bound: twice the chunk size; `plan::Params::insert_window` chooses
/// it): a patch with a transform section keeps [`chunk_window`] for its insert frames, since
/// its apply also holds the transform's tables, block cache and re-encoder; the control and add
/// frames take 256 KiB at most (`SMALL_STREAM_WINDOW`). Version 10 declares them in the header.
pub fn frame_windows(header: &Header, insert_window: u32) -> FrameWindows {
    let chunk = chunk_window(header.chunk_size);
    let widest = if header.has_transform() {
        chunk
    } else {
        2 * chunk
    };
    let insert = insert_window
        .min(widest)
        .max(1 << crate::format::MIN_WINDOW_LOG);
    FrameWindows::new(insert, chunk.min(SMALL_STREAM_WINDOW))
}

impl LinkedEncoder {
    /// An encoder for the chunks of the patch `header` describes, at zstd `level`, with the
    /// frames' windows the header declares (version 10: the diff sets them with
    /// [`frame_windows`]), or for a header that declares none, insert frames of the chunk size.
    pub fn new(header: &Header, level: i32) -> LinkedEncoder {
        let windows = if header.windows.declared() {
            header.windows
        } else {
            frame_windows(header, chunk_window(header.chunk_size))
        };
        LinkedEncoder {
            header: header.clone(),
            coders: [None, None, None],
            level,
            windows,
        }
    }

    /// The window of stream kind `k`'s frames.
    fn window(&self, k: usize) -> u32 {
        if k == INSERT {
            1 << self.windows.insert_log
        } else {
            1 << self.windows.small_log
        }
    }

    /// Codes the next chunk (chunks come in order) into its record.
    pub fn encode(&mut self, chunk: PreparedChunk) -> Result<EncodedChunk> {
        let PreparedChunk {
            mut header,
            streams,
        } = chunk;
        let ends_group = self.header.ends_group(header.index);
        let mut payload = Vec::new();
        for (k, data) in streams.iter().enumerate() {
            let before = payload.len();
            let open = self.coders[k].as_ref().is_some_and(|c| c.open);
            // A frame opened earlier in the group must end in its last chunk, so that chunk's
            // stream goes into the frame even when it would have been stored.
            if ends_group && open {
                header.stored[k] = false;
            }
            if header.stored[k] {
                payload.extend_from_slice(data);
            } else {
                let window = self.window(k);
                let coder = match &mut self.coders[k] {
                    Some(c) => c,
                    slot => slot.insert(StreamCoder::new(self.level, window)?),
                };
                if !data.is_empty() || (ends_group && coder.open) {
                    coder.code(data, ends_group, &mut payload)?;
                }
            }
            header.compressed[k] = (payload.len() - before) as u32;
        }
        Ok(EncodedChunk { header, payload })
    }
}

/// Encodes chunk `index` covering NEW bytes `new` at `new_offset` as the only chunk of a
/// version-3 patch (a group of its own).
pub fn encode_chunk(
    index: u64,
    new_offset: u64,
    new: &[u8],
    delta: Delta,
    level: i32,
) -> Result<EncodedChunk> {
    let header = Header {
        version: crate::format::VERSION_LINKED,
        transform: false,
        references: false,
        group: 1,
        old_size: 0,
        new_size: new_offset + new.len() as u64,
        old_hash: [0; 32],
        new_hash: [0; 32],
        chunk_size: (new.len() as u32).max(crate::format::MIN_CHUNK_SIZE),
        chunk_count: index + 1,
        windows: Default::default(),
    };
    let prepared = prepare_chunk(index, new_offset, new, delta, level)?;
    LinkedEncoder::new(&header, level).encode(prepared)
}
