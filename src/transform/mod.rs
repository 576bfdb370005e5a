//! The transform layer: compressed content inside images. A live image's root file system is a
//! squashfs whose blocks are each compressed on their own, so a changed file changes its
//! blocks wholesale and a byte-level differ sends them almost whole. This layer finds the
//! squashfs and EROFS file systems and the xz, zstd and gzip streams (an initrd) in a file (at its
//! start, or inside an ISO 9660 image), one reader per format ([`squashfs`], [`erofs`],
//! [`xzstream`], [`zstdstream`], [`gzipstream`]),
//! lists the regions each is made of ([`squashfs::Layout`]) and which compressed blocks recompress bit
//! for bit with the image's compressor ([`codec::Codec::reproduces`]): those can be diffed as
//! their decompressed bytes and recompressed on apply: the expanded streams and per-block
//! decisions ([`expand`]), their tables in a transformed patch ([`table`]) and apply's side, OLD's
//! expanded stream and the re-encoder ([`rebuild`]).

pub mod codec;
pub mod erofs;
pub mod expand;
pub mod gzipstream;
pub mod iso;
pub mod memory;
pub mod rebuild;
pub mod squashfs;
pub mod stream;
pub mod table;
pub mod xzstream;
pub mod zstd_release;
pub mod zstdstream;

use squashfs::{Layout, Region};

/// A file system is expanded only when its expanded stream can be at most this many times its
/// stored size ([`Layout::expanded_bound`]): real images expand 2-5 times; one that claims more
/// (a hostile image of blocks of zeros) stays opaque, so the temporary space a diff takes is at
/// most this many times its inputs.
pub const MAX_EXPANSION_RATIO: u64 = 8;

/// Memory parsing a file system takes at most while it parses (its tables, its block list, its
/// regions), beside the layouts found before it: an inode table of 32 MiB lists about half a
/// million files. A file system that needs more stays opaque.
pub const PARSE_BUDGET: u64 = 64 << 20;
/// What the layouts of one file keep at most (their regions, 16 bytes each: 256 Ki regions,
/// enough for 32 GiB of 128 KiB blocks); file systems past it stay opaque.
pub const LAYOUT_BYTES: u64 = 4 << 20;

/// The squashfs file systems in `file` that parse and tile exactly, in file order, each parsed
/// within [`PARSE_BUDGET`], together holding at most [`LAYOUT_BYTES`].
pub fn find_filesystems(file: &[u8]) -> Vec<Layout> {
    find_filesystems_releasing(file, &|_, _| {})
}

/// [`find_filesystems`], calling `release(start, end)` behind a scan of the whole file.
pub fn find_filesystems_releasing(file: &[u8], release: &dyn Fn(usize, usize)) -> Vec<Layout> {
    find_filesystems_within(file, PARSE_BUDGET, release)
}

/// [`find_filesystems_releasing`], each file system parsed within `budget` bytes (at most
/// [`PARSE_BUDGET`]; see [`memory::parse_budget`]). File systems that need more memory than
/// that or [`LAYOUT_BYTES`], or that could expand more than [`MAX_EXPANSION_RATIO`], stay
/// opaque.
pub fn find_filesystems_within(
    file: &[u8],
    budget: u64,
    release: &dyn Fn(usize, usize),
) -> Vec<Layout> {
    let budget = budget.min(PARSE_BUDGET);
    let usable = |l: &Layout| {
        l.expanded_bound() <= MAX_EXPANSION_RATIO.saturating_mul(l.end - l.start)
            && l.held_bytes() <= LAYOUT_BYTES
    };
    let len = file.len() as u64;
    if file.starts_with(squashfs::MAGIC) || erofs::is_erofs(file, 0) {
        let found = parse_at(file, (0, len), budget).filter(usable);
        return match found {
            // an uncompressed file system: what is compressed in it is its files' own
            Some(l) if !l.regions.iter().any(|r| r.block.is_some()) => {
                embedded(file, budget, release)
            }
            found => found.into_iter().collect(),
        };
    }
    // a compressed initrd of its own (its xz stream behind cpio archives, or alone); a file that
    // only starts with a gzip member is looked into for others
    if let Some(at) = iso::stream_in(file, 0)
        && let Some(l) = parse_at(file, (at as u64, len), budget).filter(usable)
    {
        return vec![l];
    }
    let mut held = 0u64;
    let mut found: Vec<Layout> = Vec::new();
    for at in iso::candidates(file, release) {
        let Some(l) = parse_at(file, at, budget).filter(usable) else {
            continue;
        };
        if held + l.held_bytes() <= LAYOUT_BYTES {
            held += l.held_bytes();
            found.push(l);
        }
    }
    if found.is_empty() && !iso::is_iso(file) {
        return embedded(file, budget, release);
    }
    found.sort_by_key(|l| l.start);
    found.dedup_by_key(|l| l.start);
    // file systems may not overlap
    let mut end = 0;
    found.retain(|l| {
        let keep = l.start >= end;
        if keep {
            end = l.end;
        }
        keep
    });
    found
}

/// The gzip members inside `file` ([`gzipstream::embedded_members`]), when `budget` could hold
/// the predictor that makes their recipes (as [`gzipstream::parse_within`] asks of a stream).
fn embedded(file: &[u8], budget: u64, release: &dyn Fn(usize, usize)) -> Vec<Layout> {
    if budget < gzipstream::analysis_memory() {
        return Vec::new();
    }
    gzipstream::embedded_members(file, release)
}

/// The file system or compressed stream at `at` in `file` (a stream ends by `end`, the end of
/// the file in the image that holds it), by its magic: one reader per format, each giving the
/// same description (regions and a codec), which nothing after this point tells apart.
fn parse_at(file: &[u8], (at, end): (u64, u64), budget: u64) -> Option<Layout> {
    let offset = usize::try_from(at).ok()?;
    if xzstream::is_xz(file, offset) {
        xzstream::parse_within(file, at, end, budget)
    } else if zstdstream::is_zstd(file, offset) {
        zstdstream::parse_within(file, at, end, budget)
    } else if gzipstream::is_gzip(file, offset) {
        gzipstream::parse_within(file, (at, end), budget)
    } else if erofs::is_erofs(file, offset) {
        erofs::parse_within(file, at, budget)
    } else {
        squashfs::parse_within(file, at, budget)
    }
}

/// What the blocks of a layout are: how many are compressed, decompress and recompress bit for
/// bit, and their plain and stored sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockCensus {
    /// Compressed blocks.
    pub blocks: u64,
    /// Of those, the ones that recompress to exactly their stored bytes.
    pub reproduced: u64,
    /// Stored bytes of the compressed blocks.
    pub stored_bytes: u64,
    /// Their decompressed bytes.
    pub plain_bytes: u64,
}

/// Decompresses and recompresses every compressed block of `layout` in `file`.
pub fn census(file: &[u8], layout: &Layout) -> BlockCensus {
    let mut c = BlockCensus::default();
    let mut plain = Vec::new();
    for r in &layout.regions {
        let Region {
            offset,
            len,
            block: Some(kind),
        } = r
        else {
            continue;
        };
        let stored = &file[*offset as usize..(*offset + u64::from(*len)) as usize];
        let limit = kind.plain_limit(layout.block_size);
        c.blocks += 1;
        c.stored_bytes += u64::from(*len);
        if layout.codec.decompress(stored, limit, &mut plain).is_err() {
            continue;
        }
        c.plain_bytes += plain.len() as u64;
        if layout
            .codec
            .reproduces(&plain, stored, *kind, limit, layout.first_variant)
            .is_some()
        {
            c.reproduced += 1;
        }
    }
    c
}
