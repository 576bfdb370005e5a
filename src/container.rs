//! The patch container: byte layout of the header, the chunk records, the trailing index and the
//! footer (specified in docs/FORMAT.md), a writer for the diff side and a defensive reader for the
//! apply side. The reader trusts nothing: every length, count and offset is checked against the
//! header and the format limits below before it is used, and no allocation is sized from the patch
//! before that check.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::error::{Error, Result};

/// First eight bytes of every patch.
pub const MAGIC: [u8; 8] = *b"SPINDIFF";
/// Format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the fixed file header in bytes.
pub const HEADER_LEN: usize = 120;
/// Size of a chunk record header in bytes (the compressed streams follow it).
pub const CHUNK_HEADER_LEN: usize = 72;
/// Size of the footer that ends every patch.
pub const FOOTER_LEN: usize = 24;
/// Tag that starts every chunk record.
pub const CHUNK_TAG: [u8; 4] = *b"CHNK";
/// Tag that starts the chunk index.
pub const INDEX_TAG: [u8; 4] = *b"INDX";
/// Last eight bytes of every patch.
pub const FOOTER_MAGIC: [u8; 8] = *b"SPINDEND";
/// Largest output a single chunk may describe; bounds apply's memory.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Smallest nominal chunk size a header may declare.
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
/// Extra control bytes allowed beyond one per output byte (see [`max_ctrl_len`]).
pub const CTRL_SLACK: u32 = 64;

/// Whether a computed checksum or hash equals the one stored in the patch. Fuzzing builds
/// (`--cfg fuzzing`, set by cargo-fuzz) accept any stored value, so the fuzzer reaches the parsers
/// and decoders behind the checksums instead of stopping at them. No bound or offset check
/// depends on a checksum: they hold in fuzzing builds exactly as in real ones.
pub(crate) fn checksum_matches<T: PartialEq>(computed: T, stored: T) -> bool {
    cfg!(fuzzing) || computed == stored
}

/// Bound on the decoded control stream of a chunk producing `new_len` bytes. The encoder falls
/// back to a single insert when its controls would exceed it, so a patch never needs more.
pub fn max_ctrl_len(new_len: u32) -> u32 {
    new_len.saturating_add(CTRL_SLACK)
}

/// Bound on the decoded add stream of a chunk producing `new_len` bytes. Sparse runs cost at
/// most two bytes per copied byte (one-byte gap and length varints around a one-byte run); the
/// encoder falls back to a verbatim insert beyond this.
pub fn max_add_len(new_len: u32) -> u32 {
    new_len.saturating_mul(2).saturating_add(CTRL_SLACK)
}

/// Bound on a compressed stream whose decoded size is `raw` (zstd's worst case plus a frame).
pub fn max_compressed_len(raw: u32) -> u64 {
    let raw = u64::from(raw);
    raw + raw / 128 + 1024
}

/// The fixed header at the start of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub old_size: u64,
    pub new_size: u64,
    pub old_hash: [u8; 32],
    pub new_hash: [u8; 32],
    /// Output bytes per chunk; every chunk but the last is exactly this long.
    pub chunk_size: u32,
    pub chunk_count: u64,
}

impl Header {
    /// Number of chunks a patch of `new_size` bytes has with chunks of `chunk_size` bytes.
    pub fn chunks_for(new_size: u64, chunk_size: u32) -> u64 {
        new_size.div_ceil(u64::from(chunk_size))
    }

    /// Output range `(offset, len)` of chunk `index`.
    pub fn chunk_range(&self, index: u64) -> (u64, u32) {
        let offset = index * u64::from(self.chunk_size);
        let len = (self.new_size - offset).min(u64::from(self.chunk_size));
        (offset, len as u32)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        // 10..12: flags, zero in version 1
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.old_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.new_size.to_le_bytes());
        b[32..64].copy_from_slice(&self.old_hash);
        b[64..96].copy_from_slice(&self.new_hash);
        b[96..100].copy_from_slice(&self.chunk_size.to_le_bytes());
        // 100..104: reserved, zero
        b[104..112].copy_from_slice(&self.chunk_count.to_le_bytes());
        let check = xxh3_64(&b[..112]);
        b[112..120].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses and checks a header. `path` is only used in errors.
    pub fn parse(b: &[u8; HEADER_LEN], path: &Path) -> Result<Header> {
        if b[0..8] != MAGIC {
            return Err(Error::corrupt(path, 0, "not a spindiff patch (bad magic)"));
        }
        let version = le16(&b[8..10]);
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        if version == 0 {
            return Err(Error::corrupt(path, 8, "format version 0 does not exist"));
        }
        if !checksum_matches(xxh3_64(&b[..112]), le64(&b[112..120])) {
            return Err(Error::corrupt(path, 112, "header checksum mismatch"));
        }
        if le16(&b[10..12]) != 0 || le32(&b[100..104]) != 0 {
            return Err(Error::corrupt(path, 10, "unknown flags set in header"));
        }
        if le32(&b[12..16]) as usize != HEADER_LEN {
            return Err(Error::corrupt(path, 12, "unexpected header length"));
        }
        let h = Header {
            version,
            old_size: le64(&b[16..24]),
            new_size: le64(&b[24..32]),
            old_hash: b[32..64].try_into().unwrap(),
            new_hash: b[64..96].try_into().unwrap(),
            chunk_size: le32(&b[96..100]),
            chunk_count: le64(&b[104..112]),
        };
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&h.chunk_size) {
            return Err(Error::corrupt(
                path,
                96,
                format!("chunk size {} outside the format's limits", h.chunk_size),
            ));
        }
        if h.chunk_count != Header::chunks_for(h.new_size, h.chunk_size) {
            return Err(Error::corrupt(
                path,
                104,
                "chunk count does not match the output size",
            ));
        }
        Ok(h)
    }
}

/// The fixed part of a chunk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    pub index: u64,
    pub new_offset: u64,
    pub new_len: u32,
    /// Compressed lengths of the control, add and insert streams, in that order.
    pub compressed: [u32; 3],
    /// Decoded lengths of the same three streams.
    pub raw: [u32; 3],
    /// XXH3-128 of the chunk's output bytes.
    pub output_hash: u128,
}

/// Stream numbers inside a chunk.
pub const CTRL: usize = 0;
pub const ADD: usize = 1;
pub const INSERT: usize = 2;

impl ChunkHeader {
    pub fn payload_len(&self) -> u64 {
        self.compressed.iter().map(|&c| u64::from(c)).sum()
    }

    pub fn to_bytes(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[0..4].copy_from_slice(&CHUNK_TAG);
        b[4..12].copy_from_slice(&self.index.to_le_bytes());
        b[12..20].copy_from_slice(&self.new_offset.to_le_bytes());
        b[20..24].copy_from_slice(&self.new_len.to_le_bytes());
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
        let mut c = ChunkHeader {
            index: le64(&b[4..12]),
            new_offset: le64(&b[12..20]),
            new_len: le32(&b[20..24]),
            compressed: [0; 3],
            raw: [0; 3],
            output_hash: u128::from_le_bytes(b[48..64].try_into().unwrap()),
        };
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
        let (offset, len) = header.chunk_range(expected_index);
        if c.new_offset != offset || c.new_len != len {
            return bad(format!(
                "covers output {}+{} instead of {offset}+{len}",
                c.new_offset, c.new_len
            ));
        }
        if c.raw[INSERT] > c.new_len || c.raw[ADD] > max_add_len(c.new_len) {
            return bad("add or insert stream longer than the format allows".into());
        }
        if c.raw[CTRL] > max_ctrl_len(c.new_len) {
            return bad("control stream longer than the format allows".into());
        }
        for i in 0..3 {
            if u64::from(c.compressed[i]) > max_compressed_len(c.raw[i])
                || (c.raw[i] == 0) != (c.compressed[i] == 0)
            {
                return bad(format!("stream {i} has an impossible compressed length"));
            }
        }
        Ok(c)
    }
}

/// One entry of the trailing index: where chunk `i` starts in the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub patch_offset: u64,
    pub new_offset: u64,
}

/// Byte length of an index with `count` entries.
pub fn index_len(count: u64) -> u64 {
    4 + 8 + 16 * count + 8
}

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

/// Checks one index entry: `i`'s record starts after the previous one's header (`min_next`),
/// before the index at `index_at`, and covers the output range the header gives chunk `i`.
fn check_index_entry(
    e: &IndexEntry,
    i: u64,
    min_next: u64,
    header: &Header,
    index_at: u64,
) -> bool {
    e.patch_offset >= min_next
        && (i != 0 || e.patch_offset == HEADER_LEN as u64)
        && e.patch_offset < index_at
        && e.new_offset == header.chunk_range(i).0
}

/// Reads the index that starts at patch offset `at` from `input` (positioned there), block by
/// block, checking its tag, count, every entry and its checksum; `each` sees every entry in
/// order once it passed its own checks. The index's checksum is compared at the end, so a
/// caller must not act on the entries before this returns `Ok`.
pub fn scan_index<R: Read>(
    input: &mut R,
    header: &Header,
    path: &Path,
    at: u64,
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
    let mut min_next = HEADER_LEN as u64;
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
            if !check_index_entry(&e, i, min_next, header, at) {
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

/// Parses a whole index held in memory (`b` starts at patch offset `at`), for tools and tests;
/// readers use [`scan_index`], which never holds it whole.
pub fn parse_index(b: &[u8], header: &Header, path: &Path, at: u64) -> Result<Vec<IndexEntry>> {
    if b.len() as u64 != index_len(header.chunk_count) {
        return Err(Error::corrupt(path, at, "expected the chunk index"));
    }
    let mut out = Vec::new();
    scan_index(&mut &b[..], header, path, at, |_, e| out.push(*e))?;
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
    pub fn add(&mut self, e: &IndexEntry) {
        self.0.update(&e.patch_offset.to_le_bytes());
        self.0.update(&e.new_offset.to_le_bytes());
    }
    pub fn finish(&self) -> u128 {
        self.0.digest128()
    }
}

/// The footer: where the index starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub index_len: u64,
}

impl Footer {
    pub fn to_bytes(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        b[16..24].copy_from_slice(&FOOTER_MAGIC);
        b
    }

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

/// A chunk as the diff side produced it, ready to be written.
pub struct EncodedChunk {
    pub header: ChunkHeader,
    /// The three compressed streams, concatenated in stream order.
    pub payload: Vec<u8>,
}

/// Writes a container: header, chunks in order, then index and footer.
pub struct ContainerWriter<W: Write> {
    out: W,
    written: u64,
    index: Vec<IndexEntry>,
}

impl<W: Write> ContainerWriter<W> {
    pub fn new(mut out: W, header: &Header) -> io::Result<Self> {
        out.write_all(&header.to_bytes())?;
        Ok(ContainerWriter {
            out,
            written: HEADER_LEN as u64,
            index: Vec::new(),
        })
    }

    pub fn write_chunk(&mut self, chunk: &EncodedChunk) -> io::Result<()> {
        debug_assert_eq!(chunk.header.index, self.index.len() as u64);
        self.index.push(IndexEntry {
            patch_offset: self.written,
            new_offset: chunk.header.new_offset,
        });
        self.out.write_all(&chunk.header.to_bytes())?;
        self.out.write_all(&chunk.payload)?;
        self.written += CHUNK_HEADER_LEN as u64 + chunk.payload.len() as u64;
        Ok(())
    }

    /// Writes index and footer; returns the sink and the patch's total length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let index = index_to_bytes(&self.index);
        let footer = Footer {
            index_offset: self.written,
            index_len: index.len() as u64,
        };
        self.out.write_all(&index)?;
        self.out.write_all(&footer.to_bytes())?;
        self.written += index.len() as u64 + FOOTER_LEN as u64;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

/// A chunk record read from an untrusted patch whose header passed [`ChunkHeader::parse`]; its
/// streams are still compressed and unverified.
pub struct CompressedChunk {
    pub header: ChunkHeader,
    pub payload: Vec<u8>,
    /// Where the record starts in the patch (for error messages).
    pub patch_offset: u64,
}

/// Reads a container front to back from any reader (a pipe works), checking as it goes.
pub struct ContainerReader<R: Read> {
    input: R,
    path: PathBuf,
    pos: u64,
    header: Header,
    next: u64,
    /// The chunks read so far, as index entries (compared with the index at the end).
    seen: EntryDigest,
    finished: bool,
}

impl<R: Read> ContainerReader<R> {
    pub fn new(mut input: R, path: &Path) -> Result<Self> {
        let header = read_header(&mut input, path)?;
        Ok(ContainerReader {
            input,
            path: path.to_path_buf(),
            pos: HEADER_LEN as u64,
            header,
            next: 0,
            seen: EntryDigest::default(),
            finished: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next chunk record, or `None` after the last chunk once index and footer have
    /// been read and checked against what was seen.
    pub fn next_chunk(&mut self) -> Result<Option<CompressedChunk>> {
        let Some((header, at)) = self.next_header()? else {
            return Ok(None);
        };
        let mut payload = vec![0u8; header.payload_len() as usize]; // bounded by parse
        read_exact_at(
            &mut self.input,
            &mut payload,
            &self.path,
            at + CHUNK_HEADER_LEN as u64,
        )?;
        Ok(Some(CompressedChunk {
            header,
            payload,
            patch_offset: at,
        }))
    }

    /// Like [`Self::next_chunk`] but skips the payload (used by `inspect`).
    pub fn next_chunk_header(&mut self) -> Result<Option<ChunkHeader>> {
        let Some((header, at)) = self.next_header()? else {
            return Ok(None);
        };
        let len = header.payload_len();
        let skipped = io::copy(&mut (&mut self.input).take(len), &mut io::sink())
            .map_err(|e| Error::io(crate::Role::Patch, &self.path, "read", e))?;
        if skipped != len {
            return Err(Error::TruncatedPatch {
                path: self.path.clone(),
                offset: at + CHUNK_HEADER_LEN as u64 + skipped,
            });
        }
        Ok(Some(header))
    }

    /// Reads and checks the next chunk header and accounts for its record (the caller reads or
    /// skips the payload); at the end, reads and checks index and footer instead.
    fn next_header(&mut self) -> Result<Option<(ChunkHeader, u64)>> {
        if self.next == self.header.chunk_count {
            self.finish()?;
            return Ok(None);
        }
        let at = self.pos;
        let mut hb = [0u8; CHUNK_HEADER_LEN];
        read_exact_at(&mut self.input, &mut hb, &self.path, at)?;
        let header = ChunkHeader::parse(&hb, &self.header, self.next, &self.path, at)?;
        self.seen.add(&IndexEntry {
            patch_offset: at,
            new_offset: header.new_offset,
        });
        self.pos = at + CHUNK_HEADER_LEN as u64 + header.payload_len();
        self.next += 1;
        Ok(Some((header, at)))
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let at = self.pos;
        let len = index_len(self.header.chunk_count);
        let mut listed = EntryDigest::default();
        scan_index(&mut self.input, &self.header, &self.path, at, |_, e| {
            listed.add(e)
        })?;
        if listed.finish() != self.seen.finish() {
            return Err(Error::corrupt(
                &self.path,
                at,
                "chunk index does not match the chunks",
            ));
        }
        let mut fb = [0u8; FOOTER_LEN];
        read_exact_at(&mut self.input, &mut fb, &self.path, at + len)?;
        let footer = Footer::parse(&fb, &self.path, at + len)?;
        if footer.index_offset != at || footer.index_len != len {
            return Err(Error::corrupt(
                &self.path,
                at + len,
                "footer does not point at the index",
            ));
        }
        let end = at + len + FOOTER_LEN as u64;
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => {
                return Err(Error::corrupt(
                    &self.path,
                    end,
                    "trailing bytes after the footer",
                ));
            }
            Err(e) => return Err(Error::io(crate::Role::Patch, &self.path, "read", e)),
        }
        self.finished = true;
        self.pos = end;
        Ok(())
    }
}

/// Reads and checks the header. A file whose first bytes are not the magic is reported as not
/// being a patch even when it is shorter than a header.
pub fn read_header<R: Read>(input: &mut R, path: &Path) -> Result<Header> {
    let mut b = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match input.read(&mut b[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(crate::Role::Patch, path, "read", e)),
        }
    }
    let seen = got.min(MAGIC.len());
    if b[..seen] != MAGIC[..seen] {
        return Err(Error::corrupt(path, 0, "not a spindiff patch (bad magic)"));
    }
    if got < HEADER_LEN {
        return Err(Error::TruncatedPatch {
            path: path.to_path_buf(),
            offset: got as u64,
        });
    }
    Header::parse(&b, path)
}

/// Reads exactly `buf.len()` bytes; a short read is a truncated patch at `at + bytes read`.
pub(crate) fn read_exact_at<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    path: &Path,
    at: u64,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(Error::TruncatedPatch {
                    path: path.to_path_buf(),
                    offset: at + done as u64,
                });
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(crate::Role::Patch, path, "read", e)),
        }
    }
    Ok(())
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b.try_into().unwrap())
}
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}
fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap())
}
