//! The transform section of a transformed patch (docs/FORMAT.md, "Version 2"): NEW's own size and
//! hash, OLD's expanded size and the two transform tables, each one zstd frame, behind a tag and
//! a checksum. Read from an untrusted patch: its length, both tables' lengths and their frames
//! are checked before anything is allocated from them.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::limits::checksum_matches;
use super::reader::read_exact_at;
use crate::error::{Error, Result};

/// Tag that starts the section.
pub const TRANSFORM_TAG: [u8; 4] = *b"TRNS";
/// Bytes of the section before the tables.
pub const TRANSFORM_FIXED_LEN: usize = 76;
/// Largest decoded table: far more than a squashfs of any size needs (a piece takes a few
/// bytes; a 4 GiB image has tens of thousands), and the bound on what a reader holds.
pub const MAX_TABLE_LEN: u32 = 16 << 20;

/// What a transformed patch says about the transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformSection {
    /// NEW's own size (the header's `new_size` is its expanded stream's).
    pub new_size: u64,
    /// NEW's own BLAKE3.
    pub new_hash: [u8; 32],
    /// The size of OLD's expanded stream, which the chunks' copies address.
    pub old_expanded_size: u64,
    /// OLD's transform table, decoded.
    pub old_table: Vec<u8>,
    /// NEW's transform table, decoded.
    pub new_table: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl TransformSection {
    /// The section's bytes, tables compressed at `level`.
    pub fn to_bytes(&self, level: i32) -> Vec<u8> {
        let old = zstd::bulk::compress(&self.old_table, level).expect("zstd compresses in memory");
        let new = zstd::bulk::compress(&self.new_table, level).expect("zstd compresses in memory");
        let len = TRANSFORM_FIXED_LEN + old.len() + new.len() + 8;
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&TRANSFORM_TAG);
        b.extend_from_slice(&(len as u64).to_le_bytes());
        b.extend_from_slice(&self.new_size.to_le_bytes());
        b.extend_from_slice(&self.new_hash);
        b.extend_from_slice(&self.old_expanded_size.to_le_bytes());
        for (raw, z) in [(&self.old_table, &old), (&self.new_table, &new)] {
            b.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            b.extend_from_slice(&(z.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(&old);
        b.extend_from_slice(&new);
        let check = xxh3_64(&b);
        b.extend_from_slice(&check.to_le_bytes());
        b
    }

    /// Reads the section at patch offset `at` from `input`; returns it and its length.
    pub fn read<R: Read>(input: &mut R, path: &Path, at: u64) -> Result<(TransformSection, u64)> {
        let bad = |off: u64, what: &str| {
            Error::corrupt(path, at + off, format!("transform section: {what}"))
        };
        let mut fixed = [0u8; TRANSFORM_FIXED_LEN];
        read_exact_at(input, &mut fixed, path, at)?;
        if fixed[0..4] != TRANSFORM_TAG {
            return Err(bad(0, "expected the transform section"));
        }
        let len = le64(&fixed, 4);
        let (old_raw, old_z, new_raw, new_z) = (
            le32(&fixed, 60),
            le32(&fixed, 64),
            le32(&fixed, 68),
            le32(&fixed, 72),
        );
        let table_ok = |raw: u32, z: u32| {
            raw <= MAX_TABLE_LEN
                && (raw == 0) == (z == 0)
                && u64::from(z) <= super::max_compressed_len(raw)
        };
        if !table_ok(old_raw, old_z) || !table_ok(new_raw, new_z) {
            return Err(bad(60, "a table length out of bounds"));
        }
        let frames = u64::from(old_z) + u64::from(new_z);
        if len != TRANSFORM_FIXED_LEN as u64 + frames + 8 {
            return Err(bad(4, "its length disagrees with its tables"));
        }
        let mut rest = vec![0u8; frames as usize + 8]; // bounded by the checks above
        read_exact_at(input, &mut rest, path, at + TRANSFORM_FIXED_LEN as u64)?;
        let (body, check) = rest.split_at(frames as usize);
        let mut summed = xxhash_rust::xxh3::Xxh3::new();
        summed.update(&fixed);
        summed.update(body);
        if !checksum_matches(
            summed.digest(),
            u64::from_le_bytes(check.try_into().unwrap()),
        ) {
            return Err(bad(len - 8, "checksum mismatch"));
        }
        let (old_frame, new_frame) = body.split_at(old_z as usize);
        let decode = |frame: &[u8], raw: u32, off: u64| -> Result<Vec<u8>> {
            if raw == 0 {
                return Ok(Vec::new());
            }
            if zstd::zstd_safe::find_frame_compressed_size(frame) != Ok(frame.len())
                || zstd::zstd_safe::get_frame_content_size(frame)
                    .ok()
                    .flatten()
                    != Some(u64::from(raw))
            {
                return Err(bad(
                    off,
                    "a table is not exactly one zstd frame of its length",
                ));
            }
            let mut out = Vec::with_capacity(raw as usize);
            zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(frame, &mut out))
                .map_err(|e| bad(off, &format!("a table does not decode: {e}")))?;
            if out.len() != raw as usize {
                return Err(bad(off, "a table decodes to the wrong length"));
            }
            Ok(out)
        };
        let old_table = decode(old_frame, old_raw, TRANSFORM_FIXED_LEN as u64)?;
        let new_table = decode(
            new_frame,
            new_raw,
            TRANSFORM_FIXED_LEN as u64 + u64::from(old_z),
        )?;
        Ok((
            TransformSection {
                new_size: le64(&fixed, 12),
                new_hash: fixed[20..52].try_into().unwrap(),
                old_expanded_size: le64(&fixed, 52),
                old_table,
                new_table,
            },
            len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_refused() {
        let s = TransformSection {
            new_size: 2_682_880,
            new_hash: [7; 32],
            old_expanded_size: 2_963_824,
            old_table: (0..500u32).flat_map(|i| i.to_le_bytes()).collect(),
            new_table: b"pieces".repeat(40),
        };
        let bytes = s.to_bytes(19);
        let (back, len) = TransformSection::read(&mut &bytes[..], Path::new("p"), 120).unwrap();
        assert_eq!((back, len), (s, bytes.len() as u64));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                TransformSection::read(&mut &bad[..], Path::new("p"), 120).is_err(),
                "flip at {at}"
            );
        }
        assert!(
            TransformSection::read(&mut &bytes[..bytes.len() - 1], Path::new("p"), 120).is_err()
        );
    }
}
