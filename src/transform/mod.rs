//! The transform layer: compressed content inside images. A live image's root file system is a
//! squashfs whose blocks are each compressed on their own, so a changed file changes its
//! blocks wholesale and a byte-level differ sends them almost whole. This layer finds the
//! squashfs file systems in a file (at its start, or inside an ISO 9660 image), lists the
//! regions each is made of ([`squashfs::Layout`]) and which compressed blocks recompress bit
//! for bit with the image's compressor ([`codec::Codec::reproduces`]): those can be diffed as
//! their decompressed bytes and recompressed on apply: the expanded streams and per-block
//! decisions ([`expand`]), their tables in a transformed patch ([`table`]) and apply's side, OLD's
//! expanded stream and the re-encoder ([`rebuild`]).

pub mod codec;
pub mod expand;
pub mod iso;
pub mod rebuild;
pub mod squashfs;
pub mod table;

use codec::METADATA_SIZE;
use squashfs::{Layout, Region};

/// The squashfs file systems in `file` that parse and tile exactly, in file order.
pub fn find_filesystems(file: &[u8]) -> Vec<Layout> {
    find_filesystems_releasing(file, &|_, _| {})
}

/// [`find_filesystems`], calling `release(start, end)` behind a scan of the whole file.
pub fn find_filesystems_releasing(file: &[u8], release: &dyn Fn(usize, usize)) -> Vec<Layout> {
    if file.starts_with(squashfs::MAGIC) {
        return squashfs::parse(file, 0).into_iter().collect();
    }
    let mut found: Vec<Layout> = iso::squashfs_candidates(file, release)
        .into_iter()
        .filter_map(|at| squashfs::parse(file, at))
        .collect();
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
        let limit = match kind {
            codec::BlockKind::Metadata => METADATA_SIZE,
            codec::BlockKind::Data => layout.block_size as usize,
        };
        c.blocks += 1;
        c.stored_bytes += u64::from(*len);
        if layout.codec.decompress(stored, limit, &mut plain).is_err() {
            continue;
        }
        c.plain_bytes += plain.len() as u64;
        if layout
            .codec
            .reproduces(&plain, stored, *kind, limit)
            .is_some()
        {
            c.reproduced += 1;
        }
    }
    c
}
