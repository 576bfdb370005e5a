//! The segment pipeline: segments are worked on by `alive` orchestrating threads, each owning
//! one reference buffer and one suffix-array buffer that it reuses; all CPU work (suffix sorts,
//! matching, zstd) runs in one rayon pool. Finished segments go through a [`ReorderWindow`] to
//! the writer, which writes their chunks in order.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use rayon::prelude::*;

use super::anchors::{AnchorIndex, find_runs};
use super::encode::encode_chunk;
use super::matcher::{Bsdiff, Delta, Matcher, RunFinder, SuffixFinder};
use super::plan::{Params, Segment, expected_old_pos};
use super::reference::{OldWindow, Piece, Reference};
use super::select;
use super::suffix::SuffixArray;
use crate::error::{Error, Result, Role};
use crate::files::Source;
use crate::format::{ContainerWriter, EncodedChunk, chunk_span};
use crate::progress::Progress;

/// Segments handed out but not yet written are at most this many per alive segment: the bound
/// on encoded chunks waiting for the writer (and so on their memory).
const WINDOW_PER_ALIVE: usize = 2;

/// Which segments may be started: segment `i` while `i < written + size`. The writer records
/// what it wrote or that it failed, which stops every segment thread at its next segment.
struct ReorderWindow {
    state: Mutex<Option<usize>>, // segments written; None once the writer failed
    changed: Condvar,
    size: usize,
}

impl ReorderWindow {
    fn new(size: usize) -> ReorderWindow {
        ReorderWindow {
            state: Mutex::new(Some(0)),
            changed: Condvar::new(),
            size,
        }
    }

    /// Waits until segment `i` may be started; false if the writer failed.
    fn wait_for_room(&self, i: usize) -> bool {
        let mut state = self.state.lock().unwrap();
        loop {
            match *state {
                None => return false,
                Some(written) if i < written + self.size => return true,
                Some(_) => state = self.changed.wait(state).unwrap(),
            }
        }
    }

    /// Records that `written` segments are written, or (`None`) that the writer failed.
    fn record(&self, written: Option<usize>) {
        *self.state.lock().unwrap() = written;
        self.changed.notify_all();
    }
}

/// What the pipeline works on.
pub(super) struct Work<'a> {
    pub old: &'a dyn Source,
    pub new: &'a dyn Source,
    pub index: &'a AnchorIndex,
    pub params: &'a Params,
    pub pool: &'a rayon::ThreadPool,
    pub segments: &'a [Segment],
}

/// Matches and encodes every segment and writes their chunks to `writer` in order. `patch`
/// names the patch in errors.
pub(super) fn run<W: Write>(
    work: &Work,
    writer: &mut ContainerWriter<W>,
    patch: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let ctx = SegmentContext {
        old: work.old,
        new: work.new,
        index: work.index,
        chunk_size: work.params.chunk_size as usize,
        level: work.params.level,
        max_reference: work.params.max_reference,
    };
    let window = ReorderWindow::new(work.params.alive * WINDOW_PER_ALIVE);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Result<Vec<EncodedChunk>>)>();
    std::thread::scope(|s| {
        for _ in 0..work.params.alive {
            let tx = tx.clone();
            let (ctx, next, window) = (&ctx, &next, &window);
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                let mut buffers = Buffers::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= work.segments.len() || !window.wait_for_room(i) {
                        break;
                    }
                    let out = work
                        .pool
                        .install(|| ctx.run(&work.segments[i], &mut buffers));
                    if tx.send((i, out)).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                window.record(None); // the threads already started stop at their next segment
                return Err(Error::OutOfMemory {
                    what: format!("cannot start a thread: {e}"),
                });
            }
        }
        drop(tx);
        write_in_order(rx, &window, writer, patch, progress)
    })
}

/// The writer: takes finished segments as they come and writes them in order.
fn write_in_order<W: Write>(
    finished: mpsc::Receiver<(usize, Result<Vec<EncodedChunk>>)>,
    window: &ReorderWindow,
    writer: &mut ContainerWriter<W>,
    patch: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let mut pending: BTreeMap<usize, Result<Vec<EncodedChunk>>> = BTreeMap::new();
    let mut done = 0usize;
    for (i, out) in finished {
        pending.insert(i, out);
        while let Some(out) = pending.remove(&done) {
            let written = out.and_then(|chunks| {
                chunks.iter().try_for_each(|chunk| {
                    writer
                        .write_chunk(chunk)
                        .map_err(|e| Error::io(Role::Patch, patch, "write", e))?;
                    progress.advance(u64::from(chunk.header.new_len));
                    Ok(())
                })
            });
            done += 1;
            window.record(written.is_ok().then_some(done));
            written?;
        }
    }
    Ok(())
}

/// Buffers one orchestrating thread reuses for every segment it builds.
#[derive(Default)]
struct Buffers {
    reference: Vec<u8>,
    suffix_array: Vec<i32>,
}

struct SegmentContext<'a> {
    old: &'a dyn Source,
    new: &'a dyn Source,
    index: &'a AnchorIndex,
    chunk_size: usize,
    level: i32,
    max_reference: usize,
}

impl SegmentContext<'_> {
    fn chunk(&self, i: usize) -> (u64, &[u8]) {
        let r = chunk_span(i as u64, self.chunk_size as u32, self.new.len());
        (r.start, &self.new.bytes()[r.start as usize..r.end as usize])
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
                        return Err(self.old.read_failed());
                    }
                    self.encode(i, offset, bytes, delta)
                })
                .collect(),
        };
        self.old.release_all();
        out
    }

    fn encode(&self, i: usize, offset: u64, bytes: &[u8], delta: Delta) -> Result<EncodedChunk> {
        let delta = select::paying_copies(delta, bytes);
        let encoded = encode_chunk(i as u64, offset, bytes, delta, self.level);
        self.new
            .release(offset as usize, offset as usize + bytes.len());
        encoded
    }
}
