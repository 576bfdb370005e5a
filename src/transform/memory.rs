//! The transform's memory model: what finding the file systems, expanding them and keeping their
//! descriptions take, so that a diff of images holding squashfs stays within `--memory` whatever
//! the images claim. Three parts, each bounded:
//!
//! - **parsing** a file system ([`parse_budget`]): its plain inode and fragment tables, its
//!   block list and its regions, transient; a file system that needs more stays opaque;
//! - **expanding** a file ([`expansion_memory`]): a batch of blocks' plain bytes and, for each
//!   block worked on at once, a decoder and an encoder whose settings are bounded by what a real
//!   image can hold (a dictionary at most the block size, a block at most 1 MiB);
//! - **held** through the whole diff ([`held`]): the layouts, the tables and OLD's block index,
//!   counted in the plan ([`crate::Params::held`]). They are derived from OLD alone and a
//!   bound for any NEW, so a patch is the same from a single diff or a many-targets run.

use super::codec::Codec;
use super::expand::{BATCH, CHECKED_BYTES, Piece, SMALL_STREAM};
use super::squashfs::{Layout, Region};
use super::{LAYOUT_BYTES, PARSE_BUDGET};
use crate::transform::codec::METADATA_SIZE;
use crate::transform::stream::STEP;

/// Bytes of a transform table and of its compressed copy in the patch section one piece takes at
/// most (a head, a length, a file system, an OLD offset and a plain length, as varints).
const TABLE_BYTES_PER_PIECE: u64 = 2 * 24;

/// The smallest parse budget: enough for the tables of any real image of a few GiB, so that
/// whether a file system is found does not depend on a cap too small to diff anything (a cap
/// that is refused then names the minimum of the diff that expands it).
pub const MIN_PARSE_BUDGET: u64 = 4 << 20;

/// The parse budget of each file system when `avail` bytes of the cap are left beside the
/// process itself: [`PARSE_BUDGET`], or less under a small cap (what the cap leaves beside the
/// layouts of OLD and NEW), never less than [`MIN_PARSE_BUDGET`].
pub fn parse_budget(avail: u64) -> u64 {
    avail
        .saturating_sub(2 * LAYOUT_BYTES)
        .clamp(MIN_PARSE_BUDGET, PARSE_BUDGET)
}

/// Memory one side's pieces take for `regions` regions in `filesystems` file systems: the
/// pieces, their table and its compressed copy.
fn pieces_bytes(regions: u64, filesystems: u64) -> u64 {
    // the file's bytes around the file systems are a piece each too
    (regions + filesystems + 1) * (std::mem::size_of::<Piece>() as u64 + TABLE_BYTES_PER_PIECE)
}

/// What a transformed diff with OLD's file systems `old_fs` holds beside its plan at most, from
/// start to end: OLD's layouts, pieces, table and block index; what any NEW's layouts, pieces
/// and table can take ([`LAYOUT_BYTES`] of layouts); and the blocks remembered as checked
/// for earlier targets ([`CHECKED_BYTES`]).
pub fn held(old_fs: &[Layout]) -> u64 {
    let old_regions: u64 = old_fs.iter().map(|l| l.regions.len() as u64).sum();
    let old_blocks: u64 = old_fs
        .iter()
        .map(|l| l.regions.iter().filter(|r| r.block.is_some()).count() as u64)
        .sum();
    // a hash map's slots (key, value and a control byte) with room to grow twice over
    let slot = 32 + 24 + 1;
    let old = old_fs.iter().map(Layout::held_bytes).sum::<u64>()
        + pieces_bytes(old_regions, old_fs.len() as u64)
        + 2 * old_blocks * slot;
    let new_regions = LAYOUT_BYTES / std::mem::size_of::<Region>() as u64;
    let new = LAYOUT_BYTES + pieces_bytes(new_regions, new_regions.min(64));
    old + new + CHECKED_BYTES
}

/// Memory expanding a file with `layouts` takes at most beside what [`held`] counts, deciding
/// `batch` blocks at a time on `threads` threads: each block's plain bytes until the batch is
/// written, and for each block being worked on at once a decoder and an encoder with their
/// buffers; or, for a whole stream (expanded alone), its decoder and encoder.
pub fn expansion_memory(layouts: &[&Layout], threads: usize, batch: usize) -> u64 {
    // a whole stream is expanded alone, streamed: a decoder, an encoder checking it, and their
    // buffers
    // (small ones, gzip members found inside other data, several at once: one per thread); a
    // gzip member's recipe is made then, by the predictor
    let stream = layouts
        .iter()
        .flat_map(|l| {
            let streams = l.regions.iter().filter_map(|r| Some((r.len, r.block?)));
            streams
                .filter(|&(_, k)| l.codec.streams(k))
                .map(|(len, k)| {
                    let plain = k.plain_limit(l.block_size) as u64;
                    let one = match &l.codec {
                        Codec::GzipStream(_) => super::gzipstream::expansion_memory(plain),
                        codec => super::stream::rebuild_memory(codec, plain),
                    } + 2 * STEP as u64;
                    let at_once = if len <= SMALL_STREAM { threads } else { 1 };
                    one * at_once as u64
                })
        })
        .max()
        .unwrap_or(0);
    // the rest, block by block (a zstd stream's layout has no other block)
    let layouts: Vec<&Layout> = layouts
        .iter()
        .copied()
        .filter(|l| !l.codec.is_streamed())
        .collect();
    let worst = |f: &dyn Fn(&Layout) -> u64| layouts.iter().map(|l| f(l)).max().unwrap_or(0);
    // the most plain bytes a block holds (an EROFS pcluster: its own plain length)
    let plain = |l: &Layout| {
        let blocks = l.regions.iter().filter_map(|r| r.block);
        let most = blocks
            .filter(|&k| !l.codec.streams(k))
            .map(|k| k.plain_limit(l.block_size))
            .max()
            .unwrap_or(0);
        (most.max(METADATA_SIZE) as u64).max(u64::from(l.block_size))
    };
    let block = worst(&plain);
    let codecs = worst(&|l| {
        let limit = plain(l) as usize;
        l.codec.encoder_memory(limit) + l.codec.decoder_memory() + 2 * limit as u64
    });
    (batch as u64 * block + threads.min(batch) as u64 * codecs).max(stream)
}

/// The largest batch (at most [`BATCH`]) whose [`expansion_memory`] fits in `avail` bytes, or
/// `None` when not even one block does.
pub fn expansion_batch(layouts: &[&Layout], threads: usize, avail: u64) -> Option<usize> {
    (1..=BATCH)
        .rev()
        .find(|&b| expansion_memory(layouts, threads, b) <= avail)
}
