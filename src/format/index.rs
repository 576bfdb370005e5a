//! The index and the footer (docs/FORMAT.md, "Index", "Footer"): where each chunk record starts,
//! read block by block so that a reader never holds it whole.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::Header;
use super::limits::*;
use super::reader::read_exact_at;
use crate::error::{Error, Result};

/// One entry of the trailing index: where chunk `i` starts in the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Where the chunk's record starts in the patch.
    pub patch_offset: u64,
    /// Where its output starts in NEW.
    pub new_offset: u64,
}

/// Byte length of an index with `count` entries.
pub fn index_len(count: u64) -> u64 {
    4 + 8 + 16 * count + 8
}

/// The index's bytes for `entries`, checksum included.
pub fn index_to_bytes(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(index_len(entries.len() as u64) as usize);
    b.extend_from_slice(&INDEX_TAG);
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        b.extend_from_slice(&e.patch_offset.to_le_bytes());
        b.extend_from_slice(&e.new_offset.to_le_bytes());
    }
    let check = xxh3_64(&b);
    b.extend_from_slice(&check.to_le_bytes());
    b
}

/// Entries an index is read in at a time (16 bytes each): the index is never held whole, so
/// its size, which grows with the chunk count, does not count toward apply's memory.
const INDEX_BLOCK: usize = 4096;

/// Checks one index entry: `i`'s record starts after the previous one's header (`min_next`;
/// the first where the first record must, `first`), before the index at `index_at`, and covers
/// the output range the header gives chunk `i`.
fn check_index_entry(
    e: &IndexEntry,
    i: u64,
    (min_next, first): (u64, u64),
    header: &Header,
    index_at: u64,
) -> bool {
    e.patch_offset >= min_next
        && (i != 0 || e.patch_offset == first)
        && e.patch_offset < index_at
        && e.new_offset == header.chunk_range(i).0
}

/// Reads the index that starts at patch offset `at` from `input` (positioned there), block by
/// block, checking its tag, count, every entry and its checksum; the first chunk record must
/// start at `first` (after the header, and the transform section if any). `each` sees every
/// entry in order once it passed its own checks. The index's checksum is compared at the end,
/// so a caller must not act on the entries before this returns `Ok`.
pub fn scan_index<R: Read>(
    input: &mut R,
    header: &Header,
    path: &Path,
    (at, first): (u64, u64),
    mut each: impl FnMut(u64, &IndexEntry),
) -> Result<()> {
    let n = header.chunk_count;
    let mut head = [0u8; 12];
    read_exact_at(input, &mut head, path, at)?;
    if head[0..4] != INDEX_TAG {
        return Err(Error::corrupt(path, at, "expected the chunk index"));
    }
    if le64(&head[4..12]) != n {
        return Err(Error::corrupt(
            path,
            at + 4,
            "chunk index has the wrong count",
        ));
    }
    let mut sum = Xxh3::new();
    sum.update(&head);
    let mut block = vec![0u8; 16 * INDEX_BLOCK.min(n as usize)];
    let mut min_next = first;
    let mut i = 0u64;
    while i < n {
        let count = (n - i).min(INDEX_BLOCK as u64) as usize;
        let bytes = &mut block[..16 * count];
        let block_at = at + 12 + 16 * i;
        read_exact_at(input, bytes, path, block_at)?;
        sum.update(bytes);
        for (k, b) in bytes.chunks_exact(16).enumerate() {
            let e = IndexEntry {
                patch_offset: le64(&b[0..8]),
                new_offset: le64(&b[8..16]),
            };
            if !check_index_entry(&e, i, (min_next, first), header, at) {
                return Err(Error::corrupt(
                    path,
                    block_at + 16 * k as u64,
                    format!("index entry {i} out of bounds"),
                ));
            }
            min_next = e.patch_offset + CHUNK_HEADER_LEN as u64;
            each(i, &e);
            i += 1;
        }
    }
    let mut check = [0u8; 8];
    let check_at = at + 12 + 16 * n;
    read_exact_at(input, &mut check, path, check_at)?;
    if !checksum_matches(sum.digest(), u64::from_le_bytes(check)) {
        return Err(Error::corrupt(path, at, "chunk index checksum mismatch"));
    }
    Ok(())
}

/// Parses a whole index of a version-1 patch held in memory (`b` starts at patch offset `at`),
/// for tools and tests; readers use [`scan_index`], which never holds it whole.
pub fn parse_index(b: &[u8], header: &Header, path: &Path, at: u64) -> Result<Vec<IndexEntry>> {
    if b.len() as u64 != index_len(header.chunk_count) {
        return Err(Error::corrupt(path, at, "expected the chunk index"));
    }
    let mut out = Vec::new();
    scan_index(
        &mut &b[..],
        header,
        path,
        (at, HEADER_LEN as u64),
        |_, e| out.push(*e),
    )?;
    Ok(out)
}

/// Digest of a sequence of index entries, to compare the chunks a reader saw with the index
/// without keeping either.
#[derive(Clone)]
pub struct EntryDigest(Xxh3);

impl Default for EntryDigest {
    fn default() -> Self {
        EntryDigest(Xxh3::new())
    }
}

impl EntryDigest {
    /// Adds the next entry.
    pub fn add(&mut self, e: &IndexEntry) {
        self.0.update(&e.patch_offset.to_le_bytes());
        self.0.update(&e.new_offset.to_le_bytes());
    }
    /// The digest of the entries added so far.
    pub fn finish(&self) -> u128 {
        self.0.digest128()
    }
}

/// The footer: where the index starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Where the index starts.
    pub index_offset: u64,
    /// Its length.
    pub index_len: u64,
}

impl Footer {
    /// The footer's 24 bytes.
    pub fn to_bytes(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        b[16..24].copy_from_slice(&FOOTER_MAGIC);
        b
    }

    /// Parses a footer found at patch offset `at` (its offsets are checked by the reader).
    pub fn parse(b: &[u8; FOOTER_LEN], path: &Path, at: u64) -> Result<Footer> {
        if b[16..24] != FOOTER_MAGIC {
            return Err(Error::corrupt(path, at + 16, "bad footer magic"));
        }
        Ok(Footer {
            index_offset: le64(&b[0..8]),
            index_len: le64(&b[8..16]),
        })
    }
}
