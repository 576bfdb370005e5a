//! The chunk record (docs/FORMAT.md, "Chunk record"): a 72-byte header, then the compressed
//! control, add and insert streams (in version 3, each either stored as it is or the chunk's
//! part of its group's frame). [`ChunkHeader::parse`] is where every length a chunk declares is
//! bounded; [`CompressedChunk`] exists only after it passed.

use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::Header;
use super::limits::*;
use crate::error::{Error, Result};

/// The fixed part of a chunk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The chunk's number (records are in order).
    pub index: u64,
    /// Where its output starts in NEW.
    pub new_offset: u64,
    /// Its output length.
    pub new_len: u32,
    /// Compressed lengths of the control, add and insert streams, in that order.
    pub compressed: [u32; 3],
    /// Decoded lengths of the same three streams.
    pub raw: [u32; 3],
    /// Version 3: which streams are stored as they are (their compressed length is their
    /// decoded length) rather than being this chunk's part of the group's frame. Always false
    /// before version 3.
    pub stored: [bool; 3],
    /// XXH3-128 of the chunk's output bytes.
    pub output_hash: u128,
}

/// Stream numbers inside a chunk.
pub const CTRL: usize = 0;
/// The add stream.
pub const ADD: usize = 1;
/// The insert stream.
pub const INSERT: usize = 2;

impl ChunkHeader {
    /// Bytes of the compressed streams after the header.
    pub fn payload_len(&self) -> u64 {
        self.compressed.iter().map(|&c| u64::from(c)).sum()
    }

    /// The header's 72 bytes, checksum included, for a patch whose streams are `linked`
    /// (version 3: bytes 20..24 hold the stored flags; before, the output length).
    pub fn to_bytes(&self, linked: bool) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[0..4].copy_from_slice(&CHUNK_TAG);
        b[4..12].copy_from_slice(&self.index.to_le_bytes());
        b[12..20].copy_from_slice(&self.new_offset.to_le_bytes());
        let word = if linked {
            (0..3).map(|k| u32::from(self.stored[k]) << k).sum()
        } else {
            self.new_len
        };
        b[20..24].copy_from_slice(&word.to_le_bytes());
        for i in 0..3 {
            b[24 + 4 * i..28 + 4 * i].copy_from_slice(&self.compressed[i].to_le_bytes());
            b[36 + 4 * i..40 + 4 * i].copy_from_slice(&self.raw[i].to_le_bytes());
        }
        b[48..64].copy_from_slice(&self.output_hash.to_le_bytes());
        let check = xxh3_64(&b[..64]);
        b[64..72].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses a chunk header found at patch offset `at` and checks it against the file header:
    /// it must be chunk `expected_index`, cover exactly the expected output range, and declare
    /// stream lengths within the format's bounds.
    pub fn parse(
        b: &[u8; CHUNK_HEADER_LEN],
        header: &Header,
        expected_index: u64,
        path: &Path,
        at: u64,
    ) -> Result<ChunkHeader> {
        if b[0..4] != CHUNK_TAG {
            return Err(Error::corrupt(path, at, "expected a chunk record"));
        }
        if !checksum_matches(xxh3_64(&b[..64]), le64(&b[64..72])) {
            return Err(Error::corrupt(
                path,
                at + 64,
                format!("chunk {expected_index}: header checksum mismatch"),
            ));
        }
        let word = le32(&b[20..24]);
        let (expected_offset, expected_len) = header.chunk_range(expected_index);
        let mut c = ChunkHeader {
            index: le64(&b[4..12]),
            new_offset: le64(&b[12..20]),
            new_len: if header.is_linked() {
                expected_len
            } else {
                word
            },
            compressed: [0; 3],
            raw: [0; 3],
            stored: [false; 3],
            output_hash: u128::from_le_bytes(b[48..64].try_into().unwrap()),
        };
        if header.is_linked() {
            if word > 0b111 {
                return Err(Error::corrupt(
                    path,
                    at + 20,
                    format!("chunk {expected_index}: unknown stream flags {word:#x}"),
                ));
            }
            c.stored = [word & 1 != 0, word & 2 != 0, word & 4 != 0];
        }
        for i in 0..3 {
            c.compressed[i] = le32(&b[24 + 4 * i..28 + 4 * i]);
            c.raw[i] = le32(&b[36 + 4 * i..40 + 4 * i]);
        }
        let bad = |what: String| {
            Err(Error::corrupt(
                path,
                at,
                format!("chunk {expected_index}: {what}"),
            ))
        };
        if c.index != expected_index {
            return bad(format!("out of order (says it is chunk {})", c.index));
        }
        if c.new_offset != expected_offset || c.new_len != expected_len {
            return bad(format!(
                "covers output {}+{} instead of {expected_offset}+{expected_len}",
                c.new_offset, c.new_len
            ));
        }
        if c.raw[INSERT] > c.new_len || c.raw[ADD] > max_add_len(c.new_len) {
            return bad("add or insert stream longer than the format allows".into());
        }
        if c.raw[CTRL] > max_ctrl_len(c.new_len) {
            return bad("control stream longer than the format allows".into());
        }
        if header.version >= VERSION_DECLARED
            && c.raw.iter().map(|&r| u64::from(r)).sum::<u64>() > max_decoded_len(c.new_len)
        {
            return bad("streams longer together than the format allows".into());
        }
        for i in 0..3 {
            let (z, raw) = (c.compressed[i], c.raw[i]);
            let possible = if c.stored[i] {
                z == raw
            } else if header.is_linked() {
                // a part of the group's frame: data needs bytes; bytes without data only end the
                // frame, in the group's last chunk
                u64::from(z) <= max_compressed_len(raw)
                    && (raw == 0 || z > 0)
                    && (raw > 0 || z == 0 || header.ends_group(expected_index))
            } else {
                u64::from(z) <= max_compressed_len(raw) && (raw == 0) == (z == 0)
            };
            if !possible {
                return bad(format!("stream {i} has an impossible compressed length"));
            }
        }
        Ok(c)
    }
}

/// A chunk as the diff side produced it, ready to be written.
pub struct EncodedChunk {
    /// The record's header.
    pub header: ChunkHeader,
    /// The three compressed streams, concatenated in stream order.
    pub payload: Vec<u8>,
}

/// A chunk record read from an untrusted patch whose header passed [`ChunkHeader::parse`]; its
/// streams are still compressed and unverified.
pub struct CompressedChunk {
    /// The record's header, checked.
    pub header: ChunkHeader,
    /// The compressed streams, as many bytes as the header declares.
    pub payload: Vec<u8>,
    /// Where the record starts in the patch (for error messages).
    pub patch_offset: u64,
}
