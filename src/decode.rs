//! Decoding of a chunk record read from an untrusted patch: each stream is decompressed into a
//! buffer of exactly the length the (already bounds-checked) header declares, and the control
//! stream is read op by op with every value checked before use. Produces a [`DecodedChunk`];
//! only `apply` turns that into output bytes.

use std::path::Path;

use zstd::bulk::Decompressor;

use crate::container::{ADD, CHUNK_HEADER_LEN, CTRL, ChunkHeader, CompressedChunk, INSERT};
use crate::error::{Error, Result};

/// A chunk whose streams decompressed to exactly their declared lengths. Its operations are
/// still unchecked: [`Ops`] checks each as it is read.
pub struct DecodedChunk {
    pub header: ChunkHeader,
    pub ctrl: Vec<u8>,
    pub add: Vec<u8>,
    pub insert: Vec<u8>,
    pub patch_offset: u64,
}

/// Decompresses the three streams of `chunk`.
pub fn decode_chunk(chunk: CompressedChunk, path: &Path) -> Result<DecodedChunk> {
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
    let [ctrl, add, insert] = streams;
    Ok(DecodedChunk {
        header: chunk.header,
        ctrl,
        add,
        insert,
        patch_offset: chunk.patch_offset,
    })
}

/// One checked operation: `old_pos + copy <= old_size`, and the copy and insert fit in what is
/// left of the chunk's output and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedOp {
    pub old_pos: u64,
    pub copy: usize,
    pub insert: usize,
}

/// Reads the control stream op by op, checking each against OLD's size and the chunk's output.
pub struct Ops<'a> {
    ctrl: &'a [u8],
    at: usize,
    prev_end: u64,
    old_size: u64,
    left: u64,
}

/// Reads the sparse add runs (see `encode::add_runs`) and adds them into copied bytes.
pub struct AddRuns<'a> {
    data: &'a [u8],
    at: usize,
    /// Add-space start, stored length and mode of the run read but not yet applied.
    next: Option<(u64, usize, bool)>,
    last_start: u64,
    last_end: u64,
}

impl<'a> AddRuns<'a> {
    pub fn new(data: &'a [u8]) -> AddRuns<'a> {
        AddRuns {
            data,
            at: 0,
            next: None,
            last_start: 0,
            last_end: 0,
        }
    }

    fn read_next(&mut self) -> Result<(u64, usize, bool), String> {
        let mut cursor = Varints {
            data: self.data,
            at: self.at,
        };
        let (Some(gap), Some(len_mode)) = (cursor.next(), cursor.next()) else {
            return Err("malformed add stream".into());
        };
        let start = self
            .last_start
            .checked_add(gap)
            .ok_or("add run out of range")?;
        if start < self.last_end {
            return Err("add runs overlap".into());
        }
        let subtract = len_mode & 1 == 1;
        let len = usize::try_from(len_mode >> 1)
            .ok()
            .filter(|&l| l > 0 && l <= self.data.len() - cursor.at);
        let Some(len) = len else {
            return Err("add run longer than the add stream".into());
        };
        self.at = cursor.at;
        Ok((start, len, subtract))
    }

    /// Adds every run that starts inside the copy `out`, whose first byte is at `region_start`
    /// in add space. A run that starts inside and ends outside is an error.
    pub fn apply(&mut self, out: &mut [u8], region_start: u64) -> Result<(), String> {
        let region_end = region_start + out.len() as u64;
        loop {
            let (start, len, subtract) = match self.next {
                Some(run) => run,
                None if self.at == self.data.len() => return Ok(()),
                None => {
                    let run = self.read_next()?;
                    self.next = Some(run);
                    run
                }
            };
            if start >= region_end {
                return Ok(());
            }
            if start < region_start || start + len as u64 > region_end {
                return Err("add run crosses the end of a copy".into());
            }
            let at = (start - region_start) as usize;
            let magnitude = &self.data[self.at..self.at + len];
            let mut carry = 0u8;
            let mut i = at;
            // the magnitude, then its carry (or borrow) until absorbed, all inside this copy
            while i < at + len || carry != 0 {
                let Some(d) = out.get_mut(i) else {
                    return Err("add run carries past the end of a copy".into());
                };
                let m = magnitude.get(i - at).copied().unwrap_or(0);
                let (v, c) = if subtract {
                    let (v1, b1) = d.overflowing_sub(m);
                    let (v2, b2) = v1.overflowing_sub(carry);
                    (v2, b1 | b2)
                } else {
                    let (v1, c1) = d.overflowing_add(m);
                    let (v2, c2) = v1.overflowing_add(carry);
                    (v2, c1 | c2)
                };
                *d = v;
                carry = u8::from(c);
                i += 1;
            }
            self.at += len;
            self.last_start = start;
            self.last_end = region_start + i as u64;
            self.next = None;
        }
    }

    /// Errors if runs are left over after the last copy.
    pub fn finish(&self) -> Result<(), String> {
        if self.next.is_some() || self.at != self.data.len() {
            return Err("add runs beyond the copied bytes".into());
        }
        Ok(())
    }
}

struct Varints<'a> {
    data: &'a [u8],
    at: usize,
}

impl Varints<'_> {
    fn next(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at)?;
            self.at += 1;
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

impl<'a> Ops<'a> {
    pub fn new(chunk: &'a DecodedChunk, old_size: u64) -> Ops<'a> {
        Ops {
            ctrl: &chunk.ctrl,
            at: 0,
            prev_end: 0,
            old_size,
            left: u64::from(chunk.header.new_len),
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut cursor = Varints {
            data: self.ctrl,
            at: self.at,
        };
        let v = cursor.next();
        self.at = cursor.at;
        v
    }

    /// The next op; `Ok(None)` at the end of the stream. Errors carry a description.
    pub fn next_op(&mut self) -> Result<Option<CheckedOp>, String> {
        if self.at == self.ctrl.len() {
            if self.left != 0 {
                return Err(format!(
                    "control stream ends {} bytes short of the output",
                    self.left
                ));
            }
            return Ok(None);
        }
        let (copy, insert, delta) = match (self.varint(), self.varint(), self.varint()) {
            (Some(c), Some(i), Some(d)) => (c, i, d),
            _ => return Err("malformed control stream".into()),
        };
        let total = copy
            .checked_add(insert)
            .filter(|&t| t <= self.left && t > 0);
        let Some(total) = total else {
            return Err("operation runs past the end of the chunk".into());
        };
        let signed = (delta >> 1) as i64 ^ -((delta & 1) as i64);
        let old_pos = if copy == 0 {
            if signed != 0 {
                return Err("copy-less operation moves in OLD".into());
            }
            self.prev_end
        } else {
            let p = i128::from(self.prev_end) + i128::from(signed);
            if p < 0 || p + i128::from(copy) > i128::from(self.old_size) {
                return Err("operation reads outside OLD".into());
            }
            self.prev_end = p as u64 + copy;
            p as u64
        };
        self.left -= total;
        Ok(Some(CheckedOp {
            old_pos,
            copy: copy as usize,
            insert: insert as usize,
        }))
    }
}
