//! The segment pipeline: segments are worked on by `alive` orchestrating threads, each owning
//! one reference buffer and one suffix-array buffer that it reuses; all CPU work (suffix sorts,
//! matching, preparing the streams) runs in one rayon pool. Finished segments go through a
//! [`ReorderWindow`] to the writer, which codes their chunks' streams into their groups' zstd
//! frames ([`LinkedEncoder`], in chunk order) and writes them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use rayon::prelude::*;

use super::anchors::{AnchorIndex, find_runs};
use super::encode::{LinkedEncoder, PreparedChunk, prepare_chunk};
use super::matcher::{Bsdiff, Delta, Matcher, RunFinder, SuffixFinder};
use super::plan::{Params, Segment, expected_old_pos, queue_bytes};
use super::reference::{OldWindow, Piece, Reference};
use super::select;
use super::suffix::SuffixArray;
use crate::error::{Error, Result, Role};
use crate::files::Source;
use crate::format::{ContainerWriter, EncodedChunk, Header, chunk_span};
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

/// What the writer hears about: a segment's chunks, prepared (from a segment thread), or one
/// chunk coded into its record (from an encoder thread).
enum Finished {
    Segment(usize, Result<Vec<PreparedChunk>>),
    Chunk(u64, Result<EncodedChunk>),
}

/// The bytes of decoded streams waiting for the encoders, held under a cap: the writer waits
/// before handing over a chunk that would pass it (unless nothing is waiting), the encoders give
/// the bytes back as they code.
struct QueueBudget {
    used: Mutex<u64>,
    freed: Condvar,
    cap: u64,
}

impl QueueBudget {
    fn take(&self, n: u64) {
        let mut used = self.used.lock().unwrap();
        while *used > 0 && *used + n > self.cap {
            used = self.freed.wait(used).unwrap();
        }
        *used += n;
    }

    fn give_back(&self, n: u64) {
        *self.used.lock().unwrap() -= n;
        self.freed.notify_all();
    }
}

/// What a prepared chunk holds in the encoders' queue.
fn queued_bytes(chunk: &PreparedChunk) -> u64 {
    chunk.streams.iter().map(|s| s.len() as u64).sum()
}

/// Matches and encodes every segment and writes their chunks to `writer` in order, as the
/// chunks of the patch `header` describes. `patch` names the patch in errors.
///
/// Segment threads prepare the chunks' streams; the writer hands each chunk to the encoder
/// thread of its group (groups take turns over `workers` encoders, each with its own zstd
/// contexts, so groups are coded in parallel and every group's frames in chunk order), and
/// writes the records in order as they come back. `matched` is called once every chunk has been
/// matched and handed to the encoders (the pool and the segment buffers are then free; only
/// the encoders' work and the writing are left).
pub(super) fn run<W: Write>(
    work: &Work,
    header: &Header,
    writer: &mut ContainerWriter<W>,
    (patch, progress): (&Path, &dyn Progress),
    matched: &dyn Fn(),
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
    let (tx, rx) = mpsc::channel::<Finished>();
    let cannot_start = |e: std::io::Error| Error::OutOfMemory {
        what: format!("cannot start a thread: {e}"),
    };
    let budget = QueueBudget {
        used: Mutex::new(0),
        freed: Condvar::new(),
        cap: queue_bytes(work.params.chunk_size),
    };
    std::thread::scope(|s| {
        let mut encoders = Vec::new();
        for _ in 0..work.params.workers.max(1) {
            let (chunk_tx, chunk_rx) = mpsc::channel::<PreparedChunk>();
            let tx = tx.clone();
            let budget = &budget;
            let mut encoder =
                LinkedEncoder::new(header, work.params.level, work.params.insert_window);
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                let mut failed = false;
                for chunk in chunk_rx {
                    let i = chunk.header.index;
                    let held = queued_bytes(&chunk);
                    // after a failure the group's frames cannot go on: the writer stops at the
                    // first error in chunk order, which is this encoder's own
                    let coded = if failed {
                        Err(Error::OutOfMemory {
                            what: "coding a chunk after an earlier chunk failed".into(),
                        })
                    } else {
                        encoder.encode(chunk)
                    };
                    budget.give_back(held);
                    failed |= coded.is_err();
                    if tx.send(Finished::Chunk(i, coded)).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                return Err(cannot_start(e)); // the encoders started end with their queues
            }
            encoders.push(chunk_tx);
        }
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
                    if tx.send(Finished::Segment(i, out)).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                window.record(None); // the threads already started stop at their next segment
                return Err(cannot_start(e));
            }
        }
        drop(tx);
        let handing = (header, encoders, &budget, work.segments.len());
        let written = write_in_order(rx, &window, handing, (writer, patch), progress, matched);
        if written.is_err() {
            window.record(None);
        }
        written
    })
}

/// The writer: hands the chunks of finished segments, in segment order, to their groups'
/// encoders, and writes the coded chunks in chunk order.
fn write_in_order<W: Write>(
    finished: mpsc::Receiver<Finished>,
    window: &ReorderWindow,
    (header, mut encoders, budget, segment_count): (
        &Header,
        Vec<mpsc::Sender<PreparedChunk>>,
        &QueueBudget,
        usize,
    ),
    (writer, patch): (&mut ContainerWriter<W>, &Path),
    progress: &dyn Progress,
    matched: &dyn Fn(),
) -> Result<()> {
    let mut segments: BTreeMap<usize, Result<Vec<PreparedChunk>>> = BTreeMap::new();
    let mut chunks: BTreeMap<u64, Result<EncodedChunk>> = BTreeMap::new();
    let (mut handed, mut written) = (0usize, 0u64);
    let group = u64::from(header.group.max(1));
    if segment_count == 0 {
        encoders.clear();
        matched();
    }
    for message in finished {
        match message {
            Finished::Segment(i, out) => {
                segments.insert(i, out);
                while let Some(out) = segments.remove(&handed) {
                    for chunk in out? {
                        let encoder =
                            &encoders[(chunk.header.index / group) as usize % encoders.len()];
                        budget.take(queued_bytes(&chunk));
                        if encoder.send(chunk).is_err() {
                            break; // it ended: its error is on its way
                        }
                    }
                    handed += 1;
                    window.record(Some(handed));
                }
            }
            Finished::Chunk(i, coded) => {
                chunks.insert(i, coded);
                while let Some(coded) = chunks.remove(&written) {
                    let chunk = coded?;
                    writer
                        .write_chunk(&chunk)
                        .map_err(|e| Error::io(Role::Patch, patch, "write", e))?;
                    progress.advance(u64::from(chunk.header.new_len));
                    written += 1;
                }
            }
        }
        if handed == segment_count && !encoders.is_empty() {
            encoders.clear(); // every chunk handed over: the encoders end when done
            matched();
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
    fn run(&self, seg: &Segment, buffers: &mut Buffers) -> Result<Vec<PreparedChunk>> {
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
                    let found;
                    let runs = match &seg.runs {
                        Some(kept) => kept,
                        None => {
                            let expected = expected_old_pos(offset, self.old.len(), self.new.len());
                            found = find_runs(self.index, self.old, bytes, expected);
                            &found
                        }
                    };
                    let window = OldWindow::new(self.old, self.old.len());
                    let delta =
                        Bsdiff.match_chunk(bytes, &Reference::whole(&window), &RunFinder { runs });
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

    fn encode(&self, i: usize, offset: u64, bytes: &[u8], delta: Delta) -> Result<PreparedChunk> {
        let delta = select::paying_copies(delta, bytes);
        let encoded = prepare_chunk(i as u64, offset, bytes, delta, self.level);
        self.new
            .release(offset as usize, offset as usize + bytes.len());
        encoded
    }
}
