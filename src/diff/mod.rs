//! The diff pipeline: inputs -> anchor index -> plan -> suffix arrays -> matching -> encoding ->
//! container. Segments are worked on by `alive` orchestrating threads, each owning one reference
//! buffer and one suffix-array buffer that it reuses; all CPU work runs in one rayon pool of
//! `workers` threads. Encoded chunks go through a bounded reorder window to the writer, which
//! writes them in order to a temporary file renamed into place at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use rayon::prelude::*;

pub mod anchors;
pub mod encode;
pub mod matcher;
pub mod plan;
pub mod reference;
pub mod suffix;

use crate::error::{Error, Result, Role};
use crate::files::{Destination, Mapped, Output, Reads, SCAN_BLOCK, hash_mapped};
use crate::format::{ContainerWriter, EncodedChunk, Header};
use crate::progress::Progress;
use anchors::{AnchorIndex, find_runs};
use encode::encode_chunk;
use matcher::{Bsdiff, Delta, Matcher, RunFinder, SuffixFinder};
use plan::{ChunkPlan, Params, Segment, expected_old_pos, plan_chunk, segments};
use reference::{OldWindow, Piece, Reference};
use suffix::SuffixArray;

/// Options of a diff.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Hard cap on the diff's peak memory (RSS, mapped pages included), in bytes.
    pub memory: u64,
    /// Worker threads; `None` = all cores. Never changes the patch.
    pub threads: Option<usize>,
    /// zstd level of the streams (1..=22).
    pub level: i32,
    /// Output bytes per chunk.
    pub chunk_size: u32,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            memory: 1 << 30,
            threads: None,
            level: DEFAULT_LEVEL,
            chunk_size: plan::DEFAULT_CHUNK_SIZE,
        }
    }
}

/// Default zstd level.
pub const DEFAULT_LEVEL: i32 = 19;

/// What a diff did, for `-v` and for callers.
#[derive(Debug, Clone)]
pub struct DiffReport {
    pub params: Params,
    pub anchors: usize,
    pub chunks: usize,
    /// Chunks matched against a suffix array (the rest were covered by anchor runs).
    pub suffix_chunks: usize,
    pub segments: usize,
    /// Bytes of OLD indexed by suffix arrays, over all segments.
    pub reference_bytes: u64,
    pub old_size: u64,
    pub new_size: u64,
    pub patch_size: u64,
    pub elapsed: Duration,
}

/// Diffs `old_path` against `new_path` and writes the patch to `patch_path`.
pub fn diff_files(
    old_path: &Path,
    new_path: &Path,
    patch_path: &Path,
    opts: &DiffOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let started = Instant::now();
    if !(1..=22).contains(&opts.level) {
        return Err(Error::InvalidOption(format!(
            "--level {} is outside 1..=22",
            opts.level
        )));
    }
    if !(crate::format::MIN_CHUNK_SIZE..=crate::format::MAX_CHUNK_SIZE).contains(&opts.chunk_size) {
        return Err(Error::InvalidOption(format!(
            "chunk size {} is outside the format's limits",
            opts.chunk_size
        )));
    }
    let threads = match opts.threads {
        Some(0) => return Err(Error::InvalidOption("--threads must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let old = Mapped::open(old_path, Role::Old)?;
    let new = Mapped::open(new_path, Role::New)?;
    let mut reads = Reads::new();
    reads.add(Role::Old, old_path, old.file())?;
    reads.add(Role::New, new_path, new.file())?;
    let destination = Destination::decide(patch_path, Role::Patch, &reads)?;
    let params = Params::derive(old.len(), opts.memory, threads, opts.level, opts.chunk_size)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(params.workers)
        .build()
        .map_err(|e| Error::OutOfMemory {
            what: format!("cannot start {} threads: {e}", params.workers),
        })?;

    // Output first, so an unwritable destination fails before any work.
    let patch_file = Output::open(destination, patch_path, Role::Patch, 1 << 20)?;

    progress.start("scan", old.len() + new.len());
    let (old_hash, index) = pool.install(|| {
        let hash = hash_mapped(&old);
        let index = AnchorIndex::build(old.bytes(), params.sampling, &|s, e| old.release(s, e));
        (hash, index)
    });
    progress.advance(old.len());

    let chunk_size = params.chunk_size as usize;
    let chunk_count = Header::chunks_for(new.len(), params.chunk_size) as usize;
    let chunk_range = |i: usize| i * chunk_size..((i + 1) * chunk_size).min(new.bytes().len());

    // Plan every chunk, hashing NEW on the way, a block at a time with pages released behind.
    let mut new_hasher = blake3::Hasher::new();
    let mut plans: Vec<ChunkPlan> = Vec::with_capacity(chunk_count);
    let per_block = (SCAN_BLOCK / chunk_size).max(1);
    pool.install(|| {
        for first in (0..chunk_count).step_by(per_block) {
            let ids: Vec<usize> = (first..(first + per_block).min(chunk_count)).collect();
            let span = chunk_range(ids[0]).start..chunk_range(*ids.last().unwrap()).end;
            new_hasher.update_rayon(&new.bytes()[span.clone()]);
            let block: Vec<ChunkPlan> = ids
                .par_iter()
                .map(|&i| {
                    let r = chunk_range(i);
                    let expected = expected_old_pos(r.start as u64, old.len(), new.len());
                    let runs = find_runs(&index, &old, &new.bytes()[r.clone()], expected);
                    plan_chunk(
                        &runs,
                        r.start as u64,
                        &new.bytes()[r],
                        old.len(),
                        new.len(),
                        params.max_reference,
                    )
                })
                .collect();
            plans.extend(block);
            new.release(span.start, span.end);
            old.release_all();
            progress.advance((span.end - span.start) as u64);
        }
    });
    let new_hash = *new_hasher.finalize().as_bytes();
    progress.finish();

    let segs = segments(&plans, params.max_reference);
    drop(plans);
    let header = Header {
        version: crate::format::FORMAT_VERSION,
        old_size: old.len(),
        new_size: new.len(),
        old_hash,
        new_hash,
        chunk_size: params.chunk_size,
        chunk_count: chunk_count as u64,
    };
    let wio = |e| Error::io(Role::Patch, patch_path, "write", e);
    let mut writer = ContainerWriter::new(patch_file, &header).map_err(wio)?;

    progress.start("diff", new.len());
    let ctx = SegmentContext {
        old: &old,
        new: &new,
        index: &index,
        chunk_size,
        level: params.level,
        max_reference: params.max_reference,
    };
    let window = params.alive * 2;
    let next = AtomicUsize::new(0);
    let written = (Mutex::new(0usize), Condvar::new());
    let (tx, rx) = mpsc::channel::<(usize, Result<Vec<EncodedChunk>>)>();
    let write_result: Result<()> = std::thread::scope(|s| {
        for _ in 0..params.alive {
            let tx = tx.clone();
            let (ctx, next, written, segs, pool) = (&ctx, &next, &written, &segs, &pool);
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                let mut buffers = Buffers::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= segs.len() {
                        break;
                    }
                    {
                        let mut w = written.0.lock().unwrap();
                        while i >= *w + window && *w != usize::MAX {
                            w = written.1.wait(w).unwrap();
                        }
                        if *w == usize::MAX {
                            break; // the writer failed
                        }
                    }
                    let out = pool.install(|| ctx.run(&segs[i], &mut buffers));
                    if tx.send((i, out)).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                // the threads already started stop at their next segment
                *written.0.lock().unwrap() = usize::MAX;
                written.1.notify_all();
                return Err(Error::OutOfMemory {
                    what: format!("cannot start a thread: {e}"),
                });
            }
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Result<Vec<EncodedChunk>>> = BTreeMap::new();
        let mut done = 0usize;
        for (i, out) in rx {
            pending.insert(i, out);
            while let Some(out) = pending.remove(&done) {
                let written_ok = out.and_then(|out| {
                    out.iter().try_for_each(|chunk| {
                        writer.write_chunk(chunk).map_err(wio)?;
                        progress.advance(u64::from(chunk.header.new_len));
                        Ok(())
                    })
                });
                done += 1;
                // usize::MAX tells the segment threads to stop
                *written.0.lock().unwrap() = if written_ok.is_ok() { done } else { usize::MAX };
                written.1.notify_all();
                written_ok?;
            }
        }
        Ok(())
    });
    write_result?;
    progress.finish();
    // Whatever was read of a file that changed meanwhile may mix its old and new contents.
    old.check_unchanged()?;
    new.check_unchanged()?;
    let (patch_file, patch_size) = writer.finish().map_err(wio)?;
    patch_file.commit()?;

    let suffix_chunks = segs
        .iter()
        .filter(|s| s.reference.is_some())
        .map(|s| s.chunks.len())
        .sum();
    Ok(DiffReport {
        anchors: index.len(),
        chunks: chunk_count,
        suffix_chunks,
        segments: segs.iter().filter(|s| s.reference.is_some()).count(),
        reference_bytes: segs.iter().map(Segment::reference_len).sum(),
        old_size: header.old_size,
        new_size: header.new_size,
        patch_size,
        elapsed: started.elapsed(),
        params,
    })
}

/// Buffers one orchestrating thread reuses for every segment it builds.
#[derive(Default)]
struct Buffers {
    reference: Vec<u8>,
    suffix_array: Vec<i32>,
}

struct SegmentContext<'a> {
    old: &'a Mapped,
    new: &'a Mapped,
    index: &'a AnchorIndex,
    chunk_size: usize,
    level: i32,
    max_reference: usize,
}

impl SegmentContext<'_> {
    fn chunk(&self, i: usize) -> (u64, &[u8]) {
        let start = i * self.chunk_size;
        let end = (start + self.chunk_size).min(self.new.bytes().len());
        (start as u64, &self.new.bytes()[start..end])
    }

    /// Matches and encodes every chunk of `seg` (called inside the pool).
    fn run(&self, seg: &Segment, buffers: &mut Buffers) -> Result<Vec<EncodedChunk>> {
        let out = match &seg.reference {
            Some(ranges) => {
                let reference_bytes = &mut buffers.reference;
                reference_bytes.clear();
                // sized once for the largest reference, then reused: never re-grown
                reference_bytes.reserve_exact(self.max_reference);
                buffers.suffix_array.reserve_exact(self.max_reference);
                let mut pieces = Vec::with_capacity(ranges.len());
                for r in ranges {
                    let (s, e) = (r.start as usize, r.end as usize);
                    pieces.push(Piece {
                        start: reference_bytes.len(),
                        old: r.start,
                        len: e - s,
                    });
                    // Read, not copied from the mapping: pages of OLD touched at random would
                    // stay resident (fault-around maps up to a large folio around each touch).
                    let at = reference_bytes.len();
                    reference_bytes.resize(at + (e - s), 0);
                    self.old
                        .read_exact_at(r.start, &mut reference_bytes[at..])?;
                }
                let sa = SuffixArray::build(reference_bytes, &mut buffers.suffix_array)?;
                let reference = Reference::new(reference_bytes, pieces);
                let finder = SuffixFinder {
                    sa: &sa,
                    reference: &reference,
                };
                seg.chunks
                    .clone()
                    .into_par_iter()
                    .map(|i| {
                        let (offset, bytes) = self.chunk(i);
                        let delta = Bsdiff.match_chunk(bytes, &reference, &finder);
                        self.encode(i, offset, bytes, delta)
                    })
                    .collect()
            }
            None => seg
                .chunks
                .clone()
                .into_par_iter()
                .map(|i| {
                    let (offset, bytes) = self.chunk(i);
                    let expected = expected_old_pos(offset, self.old.len(), self.new.len());
                    let runs = find_runs(self.index, self.old, bytes, expected);
                    let window = OldWindow::new(self.old, self.old.len());
                    let delta = Bsdiff.match_chunk(
                        bytes,
                        &Reference::whole(&window),
                        &RunFinder { runs: &runs },
                    );
                    if window.failed() {
                        return Err(self.old.changed());
                    }
                    self.encode(i, offset, bytes, delta)
                })
                .collect(),
        };
        self.old.release_all();
        out
    }

    fn encode(&self, i: usize, offset: u64, bytes: &[u8], delta: Delta) -> Result<EncodedChunk> {
        let encoded = encode_chunk(i as u64, offset, bytes, delta, self.level);
        self.new
            .release(offset as usize, offset as usize + bytes.len());
        encoded
    }
}
