//! The plan: from `--memory` and the input sizes, the parameters of a diff (anchor spacing,
//! largest reference, how many suffix arrays may be alive and how many workers run); then, for
//! each chunk of NEW, the OLD ranges it came from; then segments, runs of consecutive chunks
//! that share one suffix array.
//!
//! Everything that shapes the patch (chunk size, spacing, reference size, ranges, segments)
//! depends on the inputs and `--memory` only. The thread count only decides how many segments
//! and chunks are worked on at once, so the patch is the same for any `--threads`.

use std::ops::Range;

use crate::diff::anchors::{AnchorIndex, Run, Sampling};
use crate::diff::suffix;
use crate::error::{Error, Result};

/// Output bytes per chunk (the container's unit) unless the caller asks otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Memory set aside for the process itself: code, allocator slack, thread stacks, I/O buffers.
pub const RESERVED: u64 = 40 << 20;
/// Extra OLD bytes taken on each side of a range, so neighbouring windows overlap.
pub const MARGIN: u64 = 64 << 10;
/// Diagonals within this distance of a group's first diagonal are one region of OLD (measured
/// from the first, not chained, so a group's spread is bounded).
const DIAGONAL_CLUSTER: i128 = 1 << 20;
/// Length of a reference (the OLD bytes one suffix array indexes), in chunks, when the cap
/// allows. A chunk's plan keeps its best-supported OLD ranges up to this length and consecutive
/// chunks share a suffix array while their ranges fit in it. Larger references cost more than
/// they find: weakly supported ranges (one short anchor run plus margins) fill them, every
/// search and suffix sort gets slower, and matches found there are often spurious (measurements:
/// docs/ARCHITECTURE.md, "References of two chunks").
pub const REFERENCE_CHUNKS: u64 = 2;
// The largest reference (two of the format's largest chunks) must be one libsais can index.
const _: () = assert!(
    REFERENCE_CHUNKS * crate::format::MAX_CHUNK_SIZE as u64 <= suffix::MAX_REFERENCE as u64
);
/// A chunk whose anchor runs leave more than 1/UNCOVERED_SHARE of it uncovered gets a suffix
/// array; otherwise its runs alone are matched.
pub const UNCOVERED_SHARE: usize = 32;
/// Weight of the same-relative-position range: more than one stray run, less than two.
const PRIOR_WEIGHT: usize = 2;
/// Smallest anchor spacing used.
const MIN_SPACING: usize = 256;
/// What the anchor index may take under a small cap, where an eighth of it would be less: up
/// to a quarter of what is available. Under `--memory 128M` a 1 GiB OLD's anchors are then
/// 2048 bytes apart rather than 4096, and the patch 2.8-3.0% larger than at 1G rather than
/// 3.1-3.8% (the corpus's tar and raw squashfs pairs): below a few hundred MiB, coverage by
/// anchor runs is worth more than the slots the index takes from the references.
const INDEX_FLOOR: u64 = 32 << 20;

/// How much of the memory available to a plan its anchor index may take.
#[derive(Clone, Copy)]
enum IndexShare {
    /// An eighth: what every plan fits with.
    Eighth,
    /// An eighth, or a quarter up to [`INDEX_FLOOR`] when that is more.
    Floor,
}
/// Bytes of anchor runs the plan keeps for the chunks matched from their runs alone, so that
/// matching them does not search the anchors again; the runs of chunks past it are found again
/// then (the patch is the same either way). 4 MiB is about 175,000 runs: every chunk of a
/// 4 GiB image with 160 runs each.
pub const KEPT_RUNS: u64 = 4 << 20;
/// The smallest chunk the plan falls back to when a cap cannot hold the chunk asked for (see
/// `Params::fit`): the default 4 MiB chunks need about 233 MiB for a 1 GiB OLD, 1 MiB chunks
/// about 101 MiB, at a small cost in patch size (docs/ARCHITECTURE.md, "The memory model").
pub const SMALLEST_FALLBACK_CHUNK: u32 = 1 << 20;
/// Chunks a lead takes at most: the first chunks of the group whose coding dominates the diff,
/// matched before all the others so that its encoder starts at once (`pipeline::schedule`).
pub const LEAD_CHUNKS: u64 = 16;

/// The parameters of one diff, derived from the memory cap.
#[derive(Debug, Clone)]
pub struct Params {
    /// Output bytes per chunk.
    pub chunk_size: u32,
    /// How OLD's anchors are chosen (their mean spacing).
    pub sampling: Sampling,
    /// Upper bound on the anchor index's memory.
    pub index_bytes: u64,
    /// Largest reference (bytes of OLD) one suffix array covers.
    pub max_reference: usize,
    /// Suffix arrays alive at once.
    pub alive: usize,
    /// Threads matching and compressing chunks.
    pub workers: usize,
    /// Memory one chunk worker may need (chunk bytes, streams, zstd context).
    pub worker_bytes: u64,
    /// Memory one alive segment may need (reference, suffix array, pending output).
    pub segment_bytes: u64,
    /// The memory cap the plan was derived from.
    pub memory: u64,
    /// Memory held beside the plan through the whole diff (a transformed diff's layouts,
    /// tables and block index), taken from the cap before anything else.
    pub held: u64,
    /// zstd level of the streams.
    pub level: i32,
    /// Window of the insert stream's frames (chosen by `plan::insert_window`).
    pub insert_window: u32,
}

/// Memory one worker needs at most: for its chunk in flight, its NEW pages, the add and insert
/// streams, the control stream, the compressed payload, the OLD pages its runs touch and the
/// fast probe's zstd context; and one encoder thread's three streaming zstd contexts (the
/// insert stream's window is the chunk, the others' at most 256 KiB) with their buffers and the
/// chunks queued for it.
pub fn worker_bytes(chunk_size: u32, level: i32, insert_window: u32) -> u64 {
    6 * u64::from(chunk_size)
        + zstd_context_bytes(3, chunk_size)
        + encoder_bytes(chunk_size, level, insert_window)
}

/// Memory one encoder thread needs at most: its three streaming zstd contexts (the insert
/// stream's window `insert_window`, the others' at most 256 KiB) with their buffers.
pub fn encoder_bytes(chunk_size: u32, level: i32, insert_window: u32) -> u64 {
    let small = chunk_size.min(super::encode::SMALL_STREAM_WINDOW);
    zstd_context_bytes(level, insert_window)
        + 2 * zstd_context_bytes(level, small)
        + 2 * u64::from(insert_window)
}

/// The insert stream's window: twice the chunk (the format's largest) when the cap holds the
/// larger compression contexts of two workers with two segments alive and references as large
/// as the chunk-sized window gets, the chunk otherwise. Decided for two workers whatever
/// `--threads` is, so that it depends on the cap and the inputs, never on the thread count.
/// (On the tar pair the wider window makes the patch 0.2% smaller.)
fn insert_window(old_len: u64, (memory, held): (u64, u64), level: i32, chunk_size: u32) -> u32 {
    let narrow = super::encode::chunk_window(chunk_size);
    let wide = narrow * 2;
    let plan = |w| {
        let shape = (chunk_size, w, IndexShare::Eighth);
        Params::fit_with(old_len, (memory, held), 2, level, shape)
    };
    match (plan(wide), plan(narrow)) {
        (Some(w), Some(n))
            if w.max_reference == n.max_reference && (w.workers, w.alive) == (2, 2) =>
        {
            wide
        }
        _ => narrow,
    }
}

/// Decoded streams of prepared chunks waiting for their encoders at most: 4 chunks' output
/// (16 MiB at the default chunk size). Chunks that copy most of their bytes have small streams,
/// so this usually lets the next group's encoder start while the last one's is still coding;
/// chunks of all-new content fill it and the encoders then take turns.
pub fn queue_bytes(chunk_size: u32) -> u64 {
    4 * u64::from(chunk_size)
}

/// zstd's one-shot compression context (plus its output buffer) for inputs of at most `chunk`
/// bytes at `level`, from the peak-RSS growth measured on a 4 MiB input (docs/ARCHITECTURE.md,
/// "The memory model"); the tables scale with the window, which zstd sizes from the input.
pub fn zstd_context_bytes(level: i32, chunk: u32) -> u64 {
    let at_4mib: u64 = match level {
        ..=3 => 2,
        4..=6 => 6,
        7..=9 => 14,
        10..=12 => 44,
        17..=19 => 52,
        _ => 68,
    } << 20;
    let window = u64::from(chunk.next_power_of_two()).max(256 << 10);
    at_4mib * window / (4 << 20) + (1 << 20)
}

/// Bytes one segment with a reference of `r` bytes needs: the reference, its suffix array,
/// two-byte table and window filter, and the compressed output of its chunks until written.
pub fn segment_bytes(r: usize) -> u64 {
    (r + suffix::bytes_for(r) + r) as u64
}

impl Params {
    /// Derives the parameters for OLD of `old_len` bytes under a cap of `memory` bytes.
    /// Fails when the cap is too small; the message names the smallest cap that works.
    pub fn derive(
        old_len: u64,
        memory: u64,
        threads: usize,
        level: i32,
        chunk_size: u32,
    ) -> Result<Params> {
        Params::derive_holding(old_len, (memory, 0), threads, level, chunk_size)
    }

    /// [`Params::derive`] for a diff that holds `held` bytes beside the plan throughout
    /// (`(memory, held)`): they are taken from the cap first.
    pub fn derive_holding(
        old_len: u64,
        (memory, held): (u64, u64),
        threads: usize,
        level: i32,
        chunk_size: u32,
    ) -> Result<Params> {
        Params::fit(old_len, (memory, held), threads, level, chunk_size).ok_or_else(|| {
            let need = Params::minimum_memory_holding(old_len, held, level, chunk_size);
            Error::InvalidOption(format!(
                "--memory {} is too small for this OLD ({} bytes): at least {} MiB is needed",
                crate::size::format_size(memory),
                old_len,
                need >> 20
            ))
        })
    }

    /// The smallest cap, in whole MiB, under which [`Params::derive`] succeeds for OLD of
    /// `old_len` bytes (the thread count never decides whether a plan fits).
    pub fn minimum_memory(old_len: u64, level: i32, chunk_size: u32) -> u64 {
        Params::minimum_memory_holding(old_len, 0, level, chunk_size)
    }

    /// [`Params::minimum_memory`] for a diff holding `held` bytes beside the plan.
    pub fn minimum_memory_holding(old_len: u64, held: u64, level: i32, chunk_size: u32) -> u64 {
        let fits =
            |mib: u64| Params::fit(old_len, (mib << 20, held), 1, level, chunk_size).is_some();
        let mut hi = 64u64;
        while !fits(hi) && hi < 1 << 40 {
            hi *= 2;
        }
        let mut lo = 0u64; // does not fit
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi << 20
    }

    /// The parameters under `memory`, or `None` when no plan fits. `chunk_size` is the largest
    /// chunk: under a cap that cannot hold a plan with it, the chunk is halved, down to
    /// [`SMALLEST_FALLBACK_CHUNK`] (or `chunk_size` itself when that is smaller), until one
    /// fits. The chunk chosen depends on the cap and the inputs only, like the rest of the plan.
    fn fit(
        old_len: u64,
        (memory, held): (u64, u64),
        threads: usize,
        level: i32,
        chunk_size: u32,
    ) -> Option<Params> {
        let smallest = chunk_size.min(SMALLEST_FALLBACK_CHUNK);
        let mut chunk = chunk_size;
        loop {
            let window = insert_window(old_len, (memory, held), level, chunk);
            let with = |index| {
                let shape = (chunk, window, index);
                Params::fit_with(old_len, (memory, held), threads, level, shape)
            };
            // the larger index where the plan holds it, else the usual eighth
            let plan = with(IndexShare::Floor).or_else(|| with(IndexShare::Eighth));
            if plan.is_some() || chunk / 2 < smallest {
                return plan;
            }
            chunk /= 2;
        }
    }

    /// [`Params::fit`] with the chunk size, the insert stream's window and the anchor index's
    /// share given.
    fn fit_with(
        old_len: u64,
        (memory, held): (u64, u64),
        threads: usize,
        level: i32,
        (chunk_size, insert_window, index): (u32, u32, IndexShare),
    ) -> Option<Params> {
        let avail = memory.checked_sub(RESERVED + KEPT_RUNS + queue_bytes(chunk_size) + held)?;
        let index_cap = match index {
            IndexShare::Eighth => avail / 8,
            IndexShare::Floor => (avail / 8).max((avail / 4).min(INDEX_FLOOR)),
        };
        let mut spacing = MIN_SPACING;
        let mut sampling = Sampling::new(spacing);
        while AnchorIndex::max_bytes(sampling, old_len) > index_cap && spacing < (1 << 20) {
            spacing *= 2;
            sampling = Sampling::new(spacing);
        }
        let index_bytes = AnchorIndex::max_bytes(sampling, old_len);
        let slots = avail.saturating_sub(index_bytes);
        let wb = worker_bytes(chunk_size, level, insert_window);
        // References are REFERENCE_CHUNKS chunks long: larger ones cost more than they find
        // (see the constant). Only a cap that cannot hold two such segments beside one worker
        // makes them smaller. Either way the size depends on the cap and the input sizes only,
        // never on the thread count, so that the patch does not either.
        let fixed = segment_bytes(0);
        // bytes of segment per byte of reference, rounded up (the bucket table is in `fixed`)
        let per_byte = (segment_bytes(1 << 20) - fixed).div_ceil(1 << 20);
        // the smallest reference: one chunk's span plus its margins
        let min_r = u64::from(chunk_size) + 2 * MARGIN;
        let r = (REFERENCE_CHUNKS * u64::from(chunk_size))
            .max(min_r)
            .min(slots.saturating_sub(wb + 2 * fixed) / (2 * per_byte));
        // no reference needs to be larger than OLD itself
        let max_reference = r.min(old_len.max(min_r)) as usize;
        if (max_reference as u64) < min_r {
            return None;
        }
        let sb = segment_bytes(max_reference);
        let workers = ((slots - sb) / wb).clamp(1, threads.max(1) as u64) as usize;
        let alive = ((slots - workers as u64 * wb) / sb).clamp(1, workers as u64) as usize;
        Some(Params {
            chunk_size,
            sampling,
            index_bytes,
            max_reference,
            alive,
            workers,
            worker_bytes: wb,
            segment_bytes: sb,
            memory,
            held,
            level,
            insert_window,
        })
    }

    /// What a diff still holds once its matching is done, while its encoders code the last
    /// groups: their contexts, the streams queued for them, the output buffer and, where it
    /// leads ([`Params::leads`]), its lead's coded chunks waiting to be written.
    pub fn finishing_bytes(&self) -> u64 {
        self.workers as u64 * encoder_bytes(self.chunk_size, self.level, self.insert_window)
            + queue_bytes(self.chunk_size)
            + super::OUTPUT_BUFFER as u64
            + if self.leads() { self.lead_bytes() } else { 0 }
    }

    /// What a lead holds beyond the plan at most: its chunks' streams, waiting for their
    /// encoder or, coded, for the groups before theirs to be written.
    pub fn lead_bytes(&self) -> u64 {
        LEAD_CHUNKS * u64::from(self.chunk_size)
    }

    /// Whether the diff may match a lead first (`pipeline::schedule`): it has two encoders or
    /// more and the cap holds a lead beside the plan's expected peak. It decides the order work
    /// is done in, never the patch.
    pub fn leads(&self) -> bool {
        self.workers >= 2 && self.expected_peak() + self.lead_bytes() <= self.memory
    }

    /// Whether a many-targets run may start the next target while this one's encoders finish
    /// (`diff::many`): the cap holds a whole diff's expected peak with a finishing one beside
    /// it. It decides when targets run, never what their patches are.
    pub fn overlaps_targets(&self) -> bool {
        let lead = if self.leads() { self.lead_bytes() } else { 0 };
        self.expected_peak() + lead + self.finishing_bytes() <= self.memory
    }

    /// What the plan expects the diff's peak memory to be at most.
    pub fn expected_peak(&self) -> u64 {
        RESERVED
            + self.held
            + KEPT_RUNS
            + queue_bytes(self.chunk_size)
            + self.index_bytes
            + self.workers as u64 * self.worker_bytes
            + self.alive as u64 * self.segment_bytes
    }
}

/// How a chunk of NEW is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkPlan {
    /// From its anchor runs alone: they cover the chunk, or what they leave is new compressed
    /// data a suffix array would find nothing in. The runs, when the plan kept them (see
    /// [`KEPT_RUNS`]).
    Runs(Option<Vec<Run>>),
    /// Against a suffix array over these OLD ranges (sorted, disjoint).
    SuffixArray(Vec<Range<u64>>),
}

impl ChunkPlan {
    /// Whether the chunk needs a suffix array.
    pub fn needs_suffix_array(&self) -> bool {
        matches!(self, ChunkPlan::SuffixArray(_))
    }
}

/// Where in OLD the byte at `new_pos` is expected to come from when nothing else is known: the
/// same relative position.
pub fn expected_old_pos(new_pos: u64, old_len: u64, new_len: u64) -> u64 {
    (u128::from(new_pos) * u128::from(old_len) / u128::from(new_len.max(1))) as u64
}

/// Entropy (bits per byte) at or above which the bytes the anchor runs leave uncovered are taken
/// for new compressed data: a suffix array finds nothing useful there, so they are left to the
/// runs alone (docs/ARCHITECTURE.md, "No suffix array for new compressed data").
pub const NOVEL_ENTROPY: f64 = 7.5;

/// Shannon entropy of the bytes of `chunk` outside `runs` (sorted, disjoint).
fn uncovered_entropy(runs: &[Run], chunk: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    let mut at = 0;
    for r in runs
        .iter()
        .map(|r| (r.new_pos, r.new_pos + r.len))
        .chain([(chunk.len(), chunk.len())])
    {
        for &b in &chunk[at..r.0.max(at)] {
            counts[b as usize] += 1;
        }
        at = at.max(r.1);
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Plans one chunk at `chunk_offset` (of `chunk_len` bytes) from its anchor runs, against OLD's
/// `old_len` bytes, of which the first `prior_len` are where a chunk with nothing to go by is
/// expected to come from (the base of a space with references: [`super::reference::Space`]).
pub fn plan_chunk(
    runs: &[Run],
    chunk_offset: u64,
    chunk: &[u8],
    (old_len, prior_len): (u64, u64),
    new_len: u64,
    max_reference: usize,
) -> ChunkPlan {
    let covered: usize = runs.iter().map(|r| r.len).sum();
    let uncovered = chunk.len() - covered;
    if old_len == 0
        || uncovered * UNCOVERED_SHARE <= chunk.len()
        || uncovered_entropy(runs, chunk) >= NOVEL_ENTROPY
    {
        return ChunkPlan::Runs(None);
    }
    let span = OldSpan {
        old_len,
        chunk_len: chunk.len(),
    };
    // A weak prior: the same relative position in OLD (all there is when nothing anchored).
    let center = expected_old_pos(chunk_offset, prior_len, new_len) as i128;
    let mut candidates = vec![(
        span.around(center, center + chunk.len() as i128),
        PRIOR_WEIGHT,
    )];
    candidates.extend(diagonal_groups(runs, &span));
    ChunkPlan::SuffixArray(merge_ranges(best_supported(candidates, max_reference)))
}

/// Projects spans of a chunk onto OLD: clamped to OLD, widened by [`MARGIN`] on each side.
struct OldSpan {
    old_len: u64,
    chunk_len: usize,
}

impl OldSpan {
    fn around(&self, start: i128, end: i128) -> Range<u64> {
        let margin = MARGIN as i128;
        let clamp = |v: i128| v.clamp(0, self.old_len as i128) as u64;
        clamp(start - margin)..clamp(end + margin)
    }
}

/// One candidate range per group of runs on nearby diagonals (within [`DIAGONAL_CLUSTER`] of
/// the group's first), weighted by evidence: each run is one independent anchor hit, and long
/// runs add a little. Ranking by bytes alone lets one long spurious run (zero fill, a common
/// code sequence elsewhere in OLD) outrank a true diagonal that many short runs agree on.
fn diagonal_groups(runs: &[Run], span: &OldSpan) -> Vec<(Range<u64>, usize)> {
    let mut by_diag: Vec<(i128, usize)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.old_pos as i128 - r.new_pos as i128, i))
        .collect();
    by_diag.sort_unstable();
    let mut out = Vec::new();
    let mut i = 0;
    while i < by_diag.len() {
        let mut j = i + 1;
        while j < by_diag.len() && by_diag[j].0 - by_diag[i].0 <= DIAGONAL_CLUSTER {
            j += 1;
        }
        let group = &by_diag[i..j];
        let (d_min, d_max) = (group[0].0, group[j - i - 1].0);
        let members = || group.iter().map(|&(_, k)| k);
        // a group holding the chunk's first (last) run reaches to its start (end)
        let span_start = if members().any(|k| k == 0) {
            0
        } else {
            members().map(|k| runs[k].new_pos).min().unwrap()
        };
        let span_end = if members().any(|k| k == runs.len() - 1) {
            span.chunk_len
        } else {
            members()
                .map(|k| runs[k].new_pos + runs[k].len)
                .max()
                .unwrap()
        };
        let weight = members().map(|k| 1 + runs[k].len / 1024).sum();
        out.push((
            span.around(span_start as i128 + d_min, span_end as i128 + d_max),
            weight,
        ));
        i = j;
    }
    out
}

/// The best-supported candidates that fit `max_reference` together.
fn best_supported(
    mut candidates: Vec<(Range<u64>, usize)>,
    max_reference: usize,
) -> Vec<Range<u64>> {
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.start.cmp(&b.0.start)));
    let mut kept: Vec<Range<u64>> = Vec::new();
    let mut total = 0u64;
    for (r, _) in candidates {
        let len = r.end - r.start;
        if len == 0 {
            continue;
        }
        let room = max_reference as u64 - total;
        if len > room {
            if kept.is_empty() {
                // the best range alone is too large: keep what fits
                kept.push(r.start..r.start + room);
                total = max_reference as u64;
            }
            continue; // a cut range would lose the part of the chunk it was kept for
        }
        total += len;
        kept.push(r);
    }
    kept
}

/// Sorts and merges overlapping or touching ranges.
pub fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn total_len(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// A run of consecutive chunks worked on together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The chunks, by number.
    pub chunks: Range<usize>,
    /// The OLD ranges of the shared suffix array, or `None` when the chunks are matched from
    /// their anchor runs alone.
    pub reference: Option<Vec<Range<u64>>>,
    /// The anchor runs of a segment matched from them alone (one chunk), when the plan kept
    /// them.
    pub runs: Option<Vec<Run>>,
}

impl Segment {
    /// Bytes of OLD the segment's suffix array indexes (0 without one).
    pub fn reference_len(&self) -> u64 {
        self.reference.as_deref().map_or(0, total_len)
    }
}

/// Groups consecutive chunks that need suffix arrays while their merged reference fits
/// `max_reference`; every chunk covered by its runs is a segment of its own.
pub fn segments(plans: Vec<ChunkPlan>, max_reference: usize) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut open: Option<Segment> = None;
    for (i, p) in plans.into_iter().enumerate() {
        let ranges = match p {
            ChunkPlan::SuffixArray(ranges) => ranges,
            ChunkPlan::Runs(runs) => {
                out.extend(open.take());
                out.push(Segment {
                    chunks: i..i + 1,
                    reference: None,
                    runs,
                });
                continue;
            }
        };
        if let Some(seg) = open.as_mut() {
            let mut merged = seg.reference.clone().unwrap_or_default();
            merged.extend(ranges.iter().cloned());
            let merged = merge_ranges(merged);
            if total_len(&merged) <= max_reference as u64 {
                seg.chunks.end = i + 1;
                seg.reference = Some(merged);
                continue;
            }
            out.extend(open.take());
        }
        open = Some(Segment {
            chunks: i..i + 1,
            reference: Some(ranges),
            runs: None,
        });
    }
    out.extend(open);
    out
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn plan_ignores_thread_count_for_the_patch_shape() {
        for mem in [256u64 << 20, 512 << 20, 1 << 30, 8 << 30] {
            let a = Params::derive(1 << 30, mem, 1, 19, DEFAULT_CHUNK_SIZE).unwrap();
            let b = Params::derive(1 << 30, mem, 16, 19, DEFAULT_CHUNK_SIZE).unwrap();
            assert_eq!(a.max_reference, b.max_reference);
            assert_eq!(a.sampling.spacing(), b.sampling.spacing());
            assert!(b.expected_peak() <= mem, "{mem}: {b:?}");
        }
    }

    #[test]
    fn two_threads_build_one_suffix_array_while_matching_another() {
        // with two threads and the default cap, two segments are alive, so a suffix sort
        // (single-threaded) never leaves the second core idle; it used to be one, the reference
        // sized from the cap with a per-byte cost rounded down
        for old in [200u64 << 20, 1 << 30, 4 << 30] {
            for mem in [512u64 << 20, 1 << 30, 8 << 30] {
                let p = Params::derive(old, mem, 2, 19, DEFAULT_CHUNK_SIZE).unwrap();
                assert_eq!((p.workers, p.alive), (2, 2), "{old} {mem}: {p:?}");
                let chunks = REFERENCE_CHUNKS * u64::from(DEFAULT_CHUNK_SIZE);
                assert_eq!(p.max_reference as u64, chunks, "{old} {mem}");
                assert!(p.expected_peak() <= mem, "{old} {mem}: {p:?}");
            }
        }
    }

    #[test]
    fn tiny_caps_are_refused_up_front() {
        let err = Params::derive(1 << 30, 32 << 20, 2, 19, DEFAULT_CHUNK_SIZE).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }

    /// Issue 22, item 5: a cap that cannot hold 4 MiB chunks for a 1 GiB OLD takes smaller ones
    /// (down to 1 MiB), so 128 MiB is enough; a cap that holds them keeps them.
    #[test]
    fn a_small_cap_takes_smaller_chunks_and_a_1_gib_old_fits_in_128_mib() {
        let small = Params::derive(1 << 30, 128 << 20, 2, 19, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(small.chunk_size, SMALLEST_FALLBACK_CHUNK);
        assert!(small.expected_peak() <= 128 << 20, "{small:?}");
        let large = Params::derive(1 << 30, 1 << 30, 2, 19, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(large.chunk_size, DEFAULT_CHUNK_SIZE);
        assert!(Params::minimum_memory(1 << 30, 19, DEFAULT_CHUNK_SIZE) <= 128 << 20);
        // a chunk asked for below the fallback is never made larger
        let tiny = Params::derive(1 << 30, 1 << 30, 2, 19, 64 << 10).unwrap();
        assert_eq!(tiny.chunk_size, 64 << 10);
    }

    // Issue 22 (item 5): under a small cap the anchor index takes up to a quarter of what is
    // available (2048-byte spacing under 128 MiB, not 4096), while the smallest cap that works
    // and the plans of large caps stay what an eighth gave them.
    #[test]
    fn a_small_cap_gives_the_anchor_index_its_floor_and_large_caps_keep_their_plans() {
        let small = Params::derive(1 << 30, 128 << 20, 2, 19, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(small.sampling.spacing(), 2048, "{small:?}");
        assert!(small.expected_peak() <= 128 << 20, "{small:?}");
        let min = Params::minimum_memory(1 << 30, 19, DEFAULT_CHUNK_SIZE);
        assert_eq!(min, 101 << 20);
        let large = Params::derive(1 << 30, 1 << 30, 2, 19, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(large.sampling.spacing(), 512, "{large:?}");
    }

    #[test]
    fn covered_chunks_need_no_suffix_array() {
        let runs = [Run {
            new_pos: 0,
            old_pos: 500,
            len: 1000,
        }];
        let text = vec![b'a'; 1010];
        let p = plan_chunk(&runs, 0, &text, (1 << 20, 1 << 20), 1 << 20, 1 << 20);
        assert!(!p.needs_suffix_array());
        let runs = [
            Run {
                new_pos: 0,
                old_pos: 500,
                len: 400,
            },
            Run {
                new_pos: 600,
                old_pos: 3_000_000,
                len: 400,
            },
        ];
        let code: Vec<u8> = (0..1000u32).map(|i| (i % 7 * 13) as u8).collect();
        let ChunkPlan::SuffixArray(ranges) =
            plan_chunk(&runs, 0, &code, (4 << 20, 4 << 20), 4 << 20, 1 << 20)
        else {
            panic!("a chunk half uncovered needs a suffix array");
        };
        assert_eq!(ranges.len(), 2);
        assert!(ranges[0].contains(&500) && ranges[1].contains(&3_000_000));
    }

    #[test]
    fn new_compressed_content_needs_no_suffix_array() {
        let noise = crate::testing::noise(100_000, 1);
        let runs = [Run {
            new_pos: 0,
            old_pos: 0,
            len: 10_000,
        }];
        assert!(
            !plan_chunk(&runs, 0, &noise, (1 << 20, 1 << 20), 1 << 20, 1 << 20)
                .needs_suffix_array()
        );
        let text: Vec<u8> = b"the quick brown fox "
            .iter()
            .cycle()
            .take(100_000)
            .copied()
            .collect();
        assert!(
            plan_chunk(&runs, 0, &text, (1 << 20, 1 << 20), 1 << 20, 1 << 20).needs_suffix_array()
        );
    }

    #[test]
    fn segments_group_overlapping_references() {
        let p = |a: u64, b: u64| ChunkPlan::SuffixArray(vec![a..b]);
        let covered = ChunkPlan::Runs(None);
        let plans = vec![p(0, 100), p(50, 200), covered, p(1000, 1300), p(5000, 5300)];
        let segs = segments(plans, 400);
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].chunks, 0..2);
        assert_eq!(segs[0].reference, Some(vec![0..200]));
        assert_eq!(segs[1].reference, None);
        assert_eq!(segs[2].chunks, 3..4);
        assert_eq!(segs[3].chunks, 4..5);
    }
}
