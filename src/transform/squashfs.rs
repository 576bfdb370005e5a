//! A squashfs 4.0 parser written for hostile input: from the superblock, the compressor options,
//! the inode table (every file's data blocks), the directory table and the fragment, export, id
//! and xattr tables, the list of regions the file system is made of, in order. A layout is only
//! returned when these regions tile the file system exactly, from the superblock to
//! `bytes_used`; anything else (a truncated image, a table that points outside it, blocks that
//! overlap, a compressor spindiff does not read) is `None`, and the image is treated as opaque
//! bytes. Every offset and length is checked before it is used, and nothing is allocated from a
//! length before that check.

use super::codec::{BlockKind, Codec, METADATA_SIZE};

/// "hsqs", the superblock's magic.
pub const MAGIC: &[u8; 4] = b"hsqs";
/// Size of the superblock.
pub const SUPERBLOCK_LEN: u64 = 96;

/// One region of a file system, in order: bytes stored as they are, or a block compressed on
/// its own (a metadata block's payload, a data or fragment block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Where the region starts in the file.
    pub offset: u64,
    /// Its length in the file.
    pub len: u32,
    /// `None`: stored as is; `Some(kind)`: a compressed block of that kind.
    pub block: Option<BlockKind>,
}

/// A squashfs found in a file: where it is, how it is compressed and the regions it is made of.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where the superblock starts in the file.
    pub start: u64,
    /// Where the file system's bytes end (`start + bytes_used`).
    pub end: u64,
    /// The compressor, with the image's settings.
    pub codec: Codec,
    /// Data block size.
    pub block_size: u32,
    /// Regions tiling `start..end`, in order.
    pub regions: Vec<Region>,
    /// The encoding variant a block's recompression tries first: for zstd, the libzstd release
    /// that reproduced the file system's first data blocks (Debian's 1.5.4 images would
    /// otherwise encode each block twice); any variant that reproduces a block is as good, so
    /// this only decides how soon one is found.
    pub first_variant: u8,
}

impl Layout {
    /// Memory the layout holds (its regions).
    pub fn held_bytes(&self) -> u64 {
        let recipe = match &self.codec {
            Codec::GzipStream(r) => r.held_bytes(),
            _ => 0,
        };
        (self.regions.capacity() * std::mem::size_of::<Region>()) as u64 + recipe
    }

    /// The most bytes its expanded stream can have: every compressed block at the most its
    /// kind holds, every other region as it is.
    pub fn expanded_bound(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| match r.block {
                None => u64::from(r.len),
                Some(kind) => kind.plain_limit(self.block_size) as u64,
            })
            .sum()
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Fields of the superblock the parser uses.
struct Superblock {
    inode_count: u32,
    block_size: u32,
    fragment_count: u32,
    compression: u16,
    flags: u16,
    id_count: u16,
    bytes_used: u64,
    id_table: u64,
    xattr_table: u64,
    inode_table: u64,
    directory_table: u64,
    fragment_table: u64,
    export_table: u64,
}

const COMPRESSOR_OPTIONS: u16 = 0x0400;
const ABSENT: u64 = u64::MAX;

impl Superblock {
    fn parse(b: &[u8]) -> Option<Superblock> {
        if b.len() < SUPERBLOCK_LEN as usize || &b[0..4] != MAGIC {
            return None;
        }
        let sb = Superblock {
            inode_count: le32(b, 4),
            block_size: le32(b, 12),
            fragment_count: le32(b, 16),
            compression: le16(b, 20),
            flags: le16(b, 24),
            id_count: le16(b, 26),
            bytes_used: le64(b, 40),
            id_table: le64(b, 48),
            xattr_table: le64(b, 56),
            inode_table: le64(b, 64),
            directory_table: le64(b, 72),
            fragment_table: le64(b, 80),
            export_table: le64(b, 88),
        };
        let block_log = le16(b, 22);
        let version = (le16(b, 28), le16(b, 30));
        let sane = version == (4, 0)
            && (12..=20).contains(&block_log)
            && sb.block_size == 1 << block_log
            && sb.bytes_used >= SUPERBLOCK_LEN
            && sb.inode_table < sb.directory_table
            && sb.directory_table < sb.bytes_used
            && sb.id_table < sb.bytes_used
            && sb.inode_count > 0;
        sane.then_some(sb)
    }
}

/// Reads one file system (superblock at `img[start]`) and the regions it is made of.
struct Parser<'a> {
    /// The file system's bytes, from its superblock to `bytes_used`.
    fs: &'a [u8],
    start: u64,
    codec: Codec,
    regions: Vec<Region>,
    scratch: Vec<u8>,
    /// Bytes of memory the parse may still take (see [`parse_within`]).
    budget: u64,
}

impl Parser<'_> {
    /// Takes `bytes` of the budget; `None` (the image stays opaque) when it has run out.
    fn charge(&mut self, bytes: u64) -> Option<()> {
        self.budget = self.budget.checked_sub(bytes)?;
        Some(())
    }

    /// Records a region, charged at twice its size (the vector's growth).
    fn region(&mut self, offset: u64, len: u32, block: Option<BlockKind>) -> Option<()> {
        self.charge(2 * std::mem::size_of::<Region>() as u64)?;
        self.regions.push(Region { offset, len, block });
        Some(())
    }

    /// The metadata block at `pos` (relative to the superblock): its stored length (header
    /// included) and plain bytes, appended to `plain`.
    fn metadata(&mut self, pos: u64, plain: &mut Vec<u8>) -> Option<u64> {
        let p = usize::try_from(pos).ok()?;
        let header = le16(self.fs.get(p..p.checked_add(2)?)?, 0);
        let len = usize::from(header & 0x7fff);
        let stored = self.fs.get(p + 2..p + 2 + len)?; // p + 2 <= fs.len(): no overflow
        if len == 0 || len > METADATA_SIZE {
            return None;
        }
        // a kept table grows by at most a block, counted twice for the vector's growth
        self.charge(2 * METADATA_SIZE as u64)?;
        self.region(self.start + pos, 2, None)?;
        let compressed = header & 0x8000 == 0;
        if compressed {
            self.codec
                .decompress(stored, METADATA_SIZE, &mut self.scratch)
                .ok()?;
            plain.extend_from_slice(&self.scratch);
        } else {
            plain.extend_from_slice(stored);
        }
        let kind = compressed.then_some(BlockKind::Metadata);
        self.region(self.start + pos + 2, len as u32, kind)?;
        Some(2 + len as u64)
    }

    /// Metadata blocks from `from` up to exactly `to`, one after another (the inode and
    /// directory tables, xattr keys and values). With `keep`, returns their plain bytes;
    /// without, only their regions are recorded (and nothing of the table is held).
    fn metadata_run(&mut self, from: u64, to: u64, keep: bool) -> Option<Vec<u8>> {
        let mut plain = Vec::new();
        let mut pos = from;
        while pos < to {
            if !keep {
                plain.clear();
                // the cleared buffer is reused: refund the block charged for it
                pos += self.metadata(pos, &mut plain)?;
                self.budget += 2 * METADATA_SIZE as u64;
            } else {
                pos += self.metadata(pos, &mut plain)?;
            }
        }
        (pos == to).then_some(plain)
    }

    /// A table of `entries` entries of `size` bytes in metadata blocks whose positions are
    /// listed at `pointers`: the blocks, which must follow each other and end at `blocks_end`,
    /// and the pointer array (a raw region). Returns the plain table and where its first block
    /// starts.
    fn indexed_table(
        &mut self,
        pointers: u64,
        blocks_end: u64,
        entries: u64,
        size: u64,
    ) -> Option<(Vec<u8>, u64)> {
        let bytes = entries.checked_mul(size)?;
        let blocks = bytes.div_ceil(METADATA_SIZE as u64);
        let p = usize::try_from(pointers).ok()?;
        let array = self
            .fs
            .get(p..p.checked_add(usize::try_from(blocks * 8).ok()?)?)?;
        let mut plain = Vec::new();
        let first = if blocks > 0 {
            le64(array, 0)
        } else {
            blocks_end
        };
        let mut expected = first;
        for i in 0..blocks as usize {
            let at = le64(array, i * 8);
            if at != expected {
                return None; // blocks must follow each other
            }
            expected = at + self.metadata(at, &mut plain)?;
        }
        if expected != blocks_end || (plain.len() as u64) < bytes {
            return None;
        }
        if blocks > 0 {
            self.region(self.start + pointers, (blocks * 8) as u32, None)?;
        }
        Some((plain, first))
    }
}

/// A data or fragment block: `size` as stored in an inode or fragment entry.
fn data_block(offset: u64, size: u32) -> Option<Region> {
    let len = size & 0x00ff_ffff;
    (len > 0).then_some(Region {
        offset,
        len,
        block: (size & 0x0100_0000 == 0).then_some(BlockKind::Data),
    })
}

/// Appends the data blocks of every file in the inode table `inodes` (`count` inodes), leaving
/// out sparse ones (they are not stored). `budget` is charged for each entry (twice its size,
/// the vector's growth); duplicate files list the same blocks again, so the list is sorted and
/// deduplicated whenever it would outgrow the budget, and only a list of distinct blocks that
/// still does not fit fails.
fn file_blocks(
    inodes: &[u8],
    count: u32,
    block_size: u32,
    out: &mut Vec<(u64, u32)>,
    budget: &mut u64,
) -> Option<()> {
    const ENTRY: u64 = 2 * std::mem::size_of::<(u64, u32)>() as u64;
    let mut push = |out: &mut Vec<(u64, u32)>, entry: (u64, u32)| -> Option<()> {
        if *budget < ENTRY {
            let before = out.len();
            out.sort_unstable();
            out.dedup();
            *budget += (before - out.len()) as u64 * ENTRY;
        }
        *budget = budget.checked_sub(ENTRY)?;
        out.push(entry);
        Some(())
    };
    let mut at = 0usize;
    let need = |at: usize, n: usize| inodes.get(at..at.checked_add(n)?);
    for _ in 0..count {
        let kind = le16(need(at, 16)?, 0);
        let body = at + 16;
        let (blocks_start, file_size, fragment, list) = match kind {
            2 => {
                let b = need(body, 16)?;
                (
                    u64::from(le32(b, 0)),
                    u64::from(le32(b, 12)),
                    le32(b, 4),
                    body + 16,
                )
            }
            9 => {
                let b = need(body, 40)?;
                (le64(b, 0), le64(b, 8), le32(b, 28), body + 40)
            }
            _ => {
                at = skip_inode(inodes, kind, body)?;
                continue;
            }
        };
        let bs = u64::from(block_size);
        let blocks = if fragment == u32::MAX {
            file_size.div_ceil(bs)
        } else {
            file_size / bs
        };
        let sizes = need(list, usize::try_from(blocks.checked_mul(4)?).ok()?)?;
        let mut pos = blocks_start;
        for i in 0..blocks as usize {
            let size = le32(sizes, i * 4);
            if size & 0x00ff_ffff != 0 {
                push(out, (pos, size))?;
            }
            pos = pos.checked_add(u64::from(size & 0x00ff_ffff))?;
        }
        at = list + sizes.len();
    }
    Some(())
}

/// Where the inode of `kind` whose body starts at `body` ends (for inodes without data blocks).
fn skip_inode(inodes: &[u8], kind: u16, body: usize) -> Option<usize> {
    let get = |at: usize, n: usize| inodes.get(at..at.checked_add(n)?);
    Some(match kind {
        1 => body + 16,
        3 | 10 => {
            let target = le32(get(body, 8)?, 4) as usize;
            body + 8 + target + if kind == 10 { 4 } else { 0 }
        }
        4 | 5 => body + 8,
        6 | 7 => body + 4,
        8 => {
            let b = get(body, 24)?;
            let mut at = body + 24;
            for _ in 0..le16(b, 16) {
                let name = le32(get(at, 12)?, 8) as usize;
                at = at.checked_add(12 + name + 1)?;
            }
            at
        }
        11 | 12 => body + 12,
        13 | 14 => body + 8,
        _ => return None,
    })
    .filter(|&end| end <= inodes.len())
}

/// Parses the file system whose superblock is at `img[start..]`; `None` unless its regions tile
/// it exactly. Takes at most [`super::PARSE_BUDGET`] of memory.
pub fn parse(img: &[u8], start: u64) -> Option<Layout> {
    parse_within(img, start, super::PARSE_BUDGET)
}

/// [`parse`] taking at most `budget` bytes of memory: the plain inode and fragment tables, the
/// list of data blocks and the regions, each counted at twice its length (a vector's growth);
/// a file system that needs more is `None`, opaque bytes.
pub fn parse_within(img: &[u8], start: u64, budget: u64) -> Option<Layout> {
    let rest = img.get(usize::try_from(start).ok()?..)?;
    let sb = Superblock::parse(rest)?;
    let fs = rest.get(..usize::try_from(sb.bytes_used).ok()?)?;
    let mut p = Parser {
        fs,
        start,
        codec: Codec::Unsupported(sb.compression),
        regions: Vec::new(),
        scratch: Vec::new(),
        budget,
    };
    p.region(start, SUPERBLOCK_LEN as u32, None)?;
    // compressor options: a metadata block right after the superblock, stored uncompressed
    let mut data_start = SUPERBLOCK_LEN;
    let options = if sb.flags & COMPRESSOR_OPTIONS != 0 {
        let mut o = Vec::new();
        data_start += p.metadata(SUPERBLOCK_LEN, &mut o)?;
        Some(o)
    } else {
        None
    };
    p.codec = Codec::from_superblock(sb.compression, options.as_deref(), sb.block_size);
    if matches!(p.codec, Codec::Unsupported(_)) {
        return None;
    }
    let tables = tables(&mut p, &sb)?;
    // data and fragment blocks tile what lies between the options and the inode table
    let mut blocks = Vec::new();
    let mut budget = p.budget;
    file_blocks(
        &tables.inodes,
        sb.inode_count,
        sb.block_size,
        &mut blocks,
        &mut budget,
    )?;
    drop(tables.inodes);
    for i in 0..sb.fragment_count as usize {
        let e = tables.fragments.get(i * 16..i * 16 + 16)?;
        budget = budget.checked_sub(2 * std::mem::size_of::<(u64, u32)>() as u64)?;
        blocks.push((le64(e, 0), le32(e, 8)));
    }
    p.budget = budget;
    blocks.sort_unstable();
    blocks.dedup(); // duplicate files share blocks
    let mut pos = data_start;
    for (at, size) in blocks {
        let Some(r) = data_block(start.checked_add(at)?, size) else {
            continue; // a sparse block
        };
        if at != pos {
            return None;
        }
        pos += u64::from(r.len);
        p.region(r.offset, r.len, r.block)?;
    }
    if pos != sb.inode_table {
        return None;
    }
    p.regions.sort_by_key(|r| r.offset);
    p.regions.shrink_to_fit();
    let mut expected = start;
    for r in &p.regions {
        if r.offset != expected {
            return None;
        }
        expected += u64::from(r.len);
    }
    let mut layout = (expected == start + sb.bytes_used).then(|| Layout {
        start,
        end: start + sb.bytes_used,
        codec: p.codec,
        block_size: sb.block_size,
        regions: p.regions,
        first_variant: 0,
    })?;
    layout.first_variant = first_variant(img, &layout);
    Some(layout)
}

/// Data blocks [`first_variant`] tries at most.
const SAMPLED_BLOCKS: usize = 4;

/// The encoding variant that reproduces the most of the first [`SAMPLED_BLOCKS`] data blocks of
/// `layout` in `file`, among several (zstd's libzstd releases); the lowest on a tie, 0 when
/// there is one.
fn first_variant(file: &[u8], layout: &Layout) -> u8 {
    if !layout.codec.is_zstd() {
        return 0;
    }
    let limit = layout.block_size as usize;
    // how many of the sampled blocks each release reproduces, each on its own: half of a Debian
    // image's blocks come out the same by both
    let mut reproduced = vec![0usize; usize::from(super::zstd_release::variants())];
    let mut plain = Vec::new();
    let data = layout
        .regions
        .iter()
        .filter(|r| r.block == Some(BlockKind::Data));
    for r in data.take(SAMPLED_BLOCKS) {
        let stored = &file[r.offset as usize..(r.offset + u64::from(r.len)) as usize];
        if layout.codec.decompress(stored, limit, &mut plain).is_err() {
            continue;
        }
        for (v, n) in (0u8..).zip(reproduced.iter_mut()) {
            let made = layout.codec.compress(&plain, BlockKind::Data, v, limit);
            *n += usize::from(made.as_deref() == Some(stored));
        }
    }
    (0u8..)
        .zip(reproduced)
        .max_by_key(|&(v, n)| (n, std::cmp::Reverse(v)))
        .map_or(0, |(v, _)| v)
}

/// The plain tables the data blocks are found from.
struct Tables {
    inodes: Vec<u8>,
    fragments: Vec<u8>,
}

/// Reads every table, recording their regions: the fragment, export, id and xattr tables by
/// their pointer arrays, then the inode and directory tables, which run from their starts up to
/// the first block of the tables after them.
fn tables(p: &mut Parser, sb: &Superblock) -> Option<Tables> {
    let mut firsts: Vec<u64> = Vec::new();
    let mut fragments = Vec::new();
    if sb.fragment_count > 0 {
        let (plain, first) = p.indexed_table(
            sb.fragment_table,
            sb.fragment_table,
            u64::from(sb.fragment_count),
            16,
        )?;
        fragments = plain;
        firsts.push(first);
    }
    if sb.export_table != ABSENT {
        let (_, first) = p.indexed_table(
            sb.export_table,
            sb.export_table,
            u64::from(sb.inode_count),
            8,
        )?;
        firsts.push(first);
    }
    let (_, first) = p.indexed_table(sb.id_table, sb.id_table, u64::from(sb.id_count), 4)?;
    firsts.push(first);
    if sb.xattr_table != ABSENT {
        firsts.push(xattrs(p, sb.xattr_table)?);
    }
    let directory_end = firsts.into_iter().min()?;
    let inodes = p.metadata_run(sb.inode_table, sb.directory_table, true)?;
    p.metadata_run(sb.directory_table, directory_end, false)?;
    Some(Tables { inodes, fragments })
}

/// The xattr tables: a 16-byte header at `at` (where the key/value blocks start, how many ids),
/// the id table's pointers after it, the key/value blocks, then the id blocks. Returns where the
/// key/value blocks start.
fn xattrs(p: &mut Parser, at: u64) -> Option<u64> {
    let a = usize::try_from(at).ok()?;
    let header = p.fs.get(a..a.checked_add(16)?)?;
    let kv_start = le64(header, 0);
    let ids = u64::from(le32(header, 8));
    p.region(p.start + at, 16, None)?;
    let (_, first_id_block) = p.indexed_table(at + 16, at, ids, 16)?;
    if kv_start > first_id_block {
        return None;
    }
    p.metadata_run(kv_start, first_id_block, false)?;
    Some(kv_start)
}
