//! The references section of a patch made with references (docs/FORMAT.md, "Version 9"): the
//! files whose payloads the chunks' copies read beside OLD, each placed at an offset of the
//! source space (OLD, or OLD's expanded stream, then the payloads). Read from an untrusted
//! patch: the count, every name and every offset are checked before anything is allocated from
//! them or used.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::limits::checksum_matches;
use super::reader::read_exact_at;
use crate::error::{Error, Result};

/// Tag that starts the section.
pub const REFERENCES_TAG: [u8; 4] = *b"REFS";
/// Bytes of the section before its entries: tag, length, the base's length, the count.
pub const REFERENCES_FIXED_LEN: usize = 24;
/// Bytes of an entry before its name.
pub const REFERENCE_ENTRY_FIXED_LEN: usize = 90;
/// Most references a patch may name: a spin adds tens of packages, a whole desktop install is a
/// few thousand. It bounds what a reader holds for the section (at most 16 Ki entries of 345
/// bytes, 5.6 MB, and their parsed form) before any memory cap is checked.
pub const MAX_REFERENCES: u32 = 1 << 14;
/// Longest reference name, in bytes (a file name: 255 on every common file system).
pub const MAX_REFERENCE_NAME: usize = 255;

/// A file a patch's copies read from, as the patch names it: enough to find the file again
/// (distributions' package indexes carry its name, size and SHA-256) and to check what it
/// expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceEntry {
    /// Where its payload starts in the source space (at or past the base's end).
    pub offset: u64,
    /// The file's name: a hint, a reference is found by its SHA-256.
    pub name: String,
    /// The file's size.
    pub size: u64,
    /// The file's SHA-256.
    pub sha256: [u8; 32],
    /// The length of its payload (a package's `data.tar` or cpio archive, decompressed).
    pub payload_len: u64,
    /// The payload's BLAKE3.
    pub payload_hash: [u8; 32],
}

impl ReferenceEntry {
    /// Where its payload ends in the source space.
    pub fn end(&self) -> u64 {
        self.offset + self.payload_len
    }

    /// SHA-256 in lowercase hex, as package indexes print it.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a patch made with references says about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencesSection {
    /// The length of the base the references follow in the source space: OLD's, or its
    /// expanded stream's for a transformed patch.
    pub base_len: u64,
    /// The references, by offset; their payloads never overlap, and gaps between them (left by
    /// references that contributed nothing) are never read.
    pub entries: Vec<ReferenceEntry>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl ReferencesSection {
    /// The length of the source space the chunks' copies address: the base, then the last
    /// reference's payload.
    pub fn space_len(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.base_len, ReferenceEntry::end)
    }

    /// The payloads' bytes added up: the temporary space a reader expands them into.
    pub fn payload_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.payload_len).sum()
    }

    /// The section's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&REFERENCES_TAG);
        b.extend_from_slice(&[0; 8]); // length, below
        b.extend_from_slice(&self.base_len.to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            b.extend_from_slice(&e.offset.to_le_bytes());
            b.extend_from_slice(&e.size.to_le_bytes());
            b.extend_from_slice(&e.sha256);
            b.extend_from_slice(&e.payload_len.to_le_bytes());
            b.extend_from_slice(&e.payload_hash);
            b.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            b.extend_from_slice(e.name.as_bytes());
        }
        let len = (b.len() + 8) as u64;
        b[4..12].copy_from_slice(&len.to_le_bytes());
        let check = xxh3_64(&b);
        b.extend_from_slice(&check.to_le_bytes());
        b
    }

    /// Reads the section at patch offset `at` from `input`; returns it and its length. The
    /// length is checked against the count (at most [`MAX_REFERENCES`] entries, names of at most
    /// [`MAX_REFERENCE_NAME`] bytes) before the entries are read.
    pub fn read<R: Read>(input: &mut R, path: &Path, at: u64) -> Result<(Self, u64)> {
        let bad = |off: u64, what: &str| {
            Error::corrupt(path, at + off, format!("references section: {what}"))
        };
        let mut fixed = [0u8; REFERENCES_FIXED_LEN];
        read_exact_at(input, &mut fixed, path, at)?;
        if fixed[0..4] != REFERENCES_TAG {
            return Err(bad(0, "expected the references section"));
        }
        let (len, base_len, count) = (le64(&fixed, 4), le64(&fixed, 12), le32(&fixed, 20));
        if count == 0 || count > MAX_REFERENCES {
            return Err(bad(20, "a count of references out of bounds"));
        }
        let least = (REFERENCES_FIXED_LEN + 8) as u64
            + u64::from(count) * (REFERENCE_ENTRY_FIXED_LEN as u64 + 1);
        let most = (REFERENCES_FIXED_LEN + 8) as u64
            + u64::from(count) * (REFERENCE_ENTRY_FIXED_LEN + MAX_REFERENCE_NAME) as u64;
        if !(least..=most).contains(&len) {
            return Err(bad(4, "its length disagrees with its count"));
        }
        // bounded above: at most 16 Ki entries of 345 bytes
        let mut rest = vec![0u8; len as usize - REFERENCES_FIXED_LEN];
        read_exact_at(input, &mut rest, path, at + REFERENCES_FIXED_LEN as u64)?;
        let (body, check) = rest.split_at(rest.len() - 8);
        let mut summed = xxhash_rust::xxh3::Xxh3::new();
        summed.update(&fixed);
        summed.update(body);
        if !checksum_matches(summed.digest(), le64(check, 0)) {
            return Err(bad(len - 8, "checksum mismatch"));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut pos = 0usize;
        let mut end = base_len;
        for _ in 0..count {
            let off = (REFERENCES_FIXED_LEN + pos) as u64;
            if body.len() - pos < REFERENCE_ENTRY_FIXED_LEN {
                return Err(bad(off, "an entry runs past the section"));
            }
            let e = &body[pos..];
            let name_len = usize::from(le16(e, 88));
            let name = e
                .get(REFERENCE_ENTRY_FIXED_LEN..REFERENCE_ENTRY_FIXED_LEN + name_len)
                .ok_or_else(|| bad(off, "a name runs past the section"))?;
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| valid_name(n))
                .ok_or_else(|| bad(off + 90, "a name that is not a plain file name"))?;
            let entry = ReferenceEntry {
                offset: le64(e, 0),
                size: le64(e, 8),
                sha256: e[16..48].try_into().unwrap(),
                payload_len: le64(e, 48),
                payload_hash: e[56..88].try_into().unwrap(),
                name: name.to_string(),
            };
            // in order, past the base, never overlapping, never empty, within u64
            if entry.offset < end
                || entry.payload_len == 0
                || entry.offset.checked_add(entry.payload_len).is_none()
            {
                return Err(bad(off, "a reference out of order, overlapping or empty"));
            }
            end = entry.end();
            entries.push(entry);
            pos += REFERENCE_ENTRY_FIXED_LEN + name_len;
        }
        if pos != body.len() {
            return Err(bad(
                REFERENCES_FIXED_LEN as u64 + pos as u64,
                "trailing bytes",
            ));
        }
        Ok((ReferencesSection { base_len, entries }, len))
    }
}

/// Whether `name` is a plain file name a patch may carry: not empty, at most
/// [`MAX_REFERENCE_NAME`] bytes, no `/`, no control characters, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REFERENCE_NAME
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> ReferencesSection {
        let entry = |offset, name: &str, payload_len| ReferenceEntry {
            offset,
            name: name.into(),
            size: 1234,
            sha256: [7; 32],
            payload_len,
            payload_hash: [9; 32],
        };
        ReferencesSection {
            base_len: 1000,
            entries: vec![
                entry(1000, "locales_2.36_all.deb", 500),
                entry(4000, "task-german_3.73_all.deb", 10),
            ],
        }
    }

    #[test]
    fn a_section_reads_back_as_written() {
        let s = section();
        let bytes = s.to_bytes();
        let (read, len) = ReferencesSection::read(&mut &bytes[..], Path::new("p"), 0).unwrap();
        assert_eq!((read, len), (s, bytes.len() as u64));
        assert_eq!(section().space_len(), 4010);
    }

    /// Every entry is checked: out of order, overlapping, before the base's end, empty, a name
    /// with a slash: each refused as corrupt, none panics.
    #[test]
    fn forged_entries_are_refused() {
        let forge = |f: &dyn Fn(&mut ReferencesSection)| {
            let mut s = section();
            f(&mut s);
            let bytes = s.to_bytes();
            ReferencesSection::read(&mut &bytes[..], Path::new("p"), 0).unwrap_err()
        };
        for e in [
            forge(&|s| s.entries[1].offset = 1200),
            forge(&|s| s.entries[0].offset = 999),
            forge(&|s| s.entries[0].payload_len = 0),
            forge(&|s| s.entries[1].offset = u64::MAX - 2),
            forge(&|s| s.entries[0].name = "../etc/passwd".into()),
            forge(&|s| s.entries[0].name = String::new()),
            forge(&|s| s.entries.clear()),
        ] {
            assert_eq!(e.kind(), "corrupt_patch", "{e}");
        }
        // a count past the bound is refused before the entries are read
        let mut bytes = section().to_bytes();
        bytes[20..24].copy_from_slice(&(MAX_REFERENCES + 1).to_le_bytes());
        let e = ReferencesSection::read(&mut &bytes[..], Path::new("p"), 0).unwrap_err();
        assert!(
            e.to_string().contains("count of references out of bounds"),
            "{e}"
        );
        // cut anywhere: truncated or corrupt, never a panic
        let bytes = section().to_bytes();
        for cut in 0..bytes.len() {
            assert!(ReferencesSection::read(&mut &bytes[..cut], Path::new("p"), 0).is_err());
        }
    }
}
