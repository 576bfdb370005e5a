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
use super::plan::{LEAD_CHUNKS, Params, Segment, expected_old_pos, queue_bytes};
use super::reference::{OldWindow, Piece, Reference, Space};
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
    /// How `old` is laid out: the base, then the references' payloads.
    pub space: &'a Space,
    pub new: &'a dyn Source,
    pub index: &'a AnchorIndex,
    pub params: &'a Params,
    pub pool: &'a rayon::ThreadPool,
    pub segments: &'a [Segment],
    /// Each chunk's expected coding cost (for [`schedule`]).
    pub costs: &'a [u64],
}

/// The order segments are matched in, and which encoder codes each group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schedule {
    /// Segment numbers, in the order the segment threads take them.
    pub order: Vec<usize>,
    /// The lead: the group whose first chunks are matched before everything else, coded by
    /// the last encoder alone, and how many of its segments come first.
    pub lead: Option<(u64, usize)>,
}

impl Schedule {
    /// Segments in chunk order, groups taking turns over the encoders.
    fn natural(segments: usize) -> Schedule {
        Schedule {
            order: (0..segments).collect(),
            lead: None,
        }
    }

    /// The encoder of `group` among `encoders`: the lead's has no other group; the others take
    /// turns over the rest, so every encoder gets its groups in increasing order.
    fn encoder_of(&self, group: u64, encoders: usize) -> usize {
        match self.lead {
            Some((lead, _)) if encoders >= 2 => {
                if group == lead {
                    encoders - 1
                } else {
                    (group % (encoders as u64 - 1)) as usize
                }
            }
            _ => (group % encoders.max(1) as u64) as usize,
        }
    }
}

/// Decides what is matched first. A group's frames are coded in chunk order by one encoder, so
/// when one group holds most of the coding (a spin's new language pack, all of it in one group)
/// and comes late, its encoder would start late and code on alone after everything else is
/// matched. If `may_lead`, there are two encoders or more, and one group other than the first
/// holds at least half of the expected coding `costs` (one per chunk; `group` chunks per group),
/// its first segments (at most [`LEAD_CHUNKS`] chunks, holding at least half of its cost) are
/// matched first and that group gets an encoder of its own. Otherwise segments go in order. The
/// order never changes the patch: each group is still coded in chunk order, and chunks are
/// written in chunk order.
pub(super) fn schedule(
    segments: &[Segment],
    costs: &[u64],
    group: u64,
    encoders: usize,
    may_lead: bool,
) -> Schedule {
    let natural = Schedule::natural(segments.len());
    let group = group.max(1);
    if !may_lead || encoders < 2 || costs.is_empty() {
        return natural;
    }
    let mut per_group = vec![0u64; (costs.len() as u64).div_ceil(group) as usize];
    for (i, c) in costs.iter().enumerate() {
        per_group[i / group as usize] += c;
    }
    let total: u64 = per_group.iter().sum();
    // the heaviest group (the first of equals)
    let Some((lead, heaviest)) = per_group
        .iter()
        .enumerate()
        .rev()
        .max_by_key(|&(_, c)| *c)
        .map(|(g, &c)| (g as u64, c))
    else {
        return natural;
    };
    if lead == 0 || heaviest == 0 || heaviest * 2 < total {
        return natural;
    }
    // its first segments: from the one holding its first chunk, while they hold at most
    // LEAD_CHUNKS chunks in all
    let first = lead * group;
    let Some(start) = segments.iter().position(|s| s.chunks.end as u64 > first) else {
        return natural;
    };
    let mut end = start;
    let mut chunks = 0;
    while end < segments.len() && chunks + segments[end].chunks.len() as u64 <= LEAD_CHUNKS {
        chunks += segments[end].chunks.len() as u64;
        end += 1;
    }
    if end == start {
        return natural; // its first segment alone is longer than a lead
    }
    let lead_chunks =
        segments[start].chunks.start.max(first as usize)..segments[end - 1].chunks.end;
    let lead_cost: u64 = costs[lead_chunks].iter().sum();
    if lead_cost * 2 < heaviest {
        return natural;
    }
    let order = (start..end).chain(0..start).chain(end..segments.len());
    Schedule {
        order: order.collect(),
        lead: Some((lead, end - start)),
    }
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
        space: work.space,
        new: work.new,
        index: work.index,
        chunk_size: work.params.chunk_size as usize,
        level: work.params.level,
        max_reference: work.params.max_reference,
    };
    let window = ReorderWindow::new(work.params.alive * WINDOW_PER_ALIVE);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Finished>();
    let budget = QueueBudget {
        used: Mutex::new(0),
        freed: Condvar::new(),
        cap: queue_bytes(work.params.chunk_size),
    };
    let encoder_count = work.params.workers.max(1);
    let plan = schedule(
        work.segments,
        work.costs,
        u64::from(header.group),
        encoder_count,
        work.params.leads(),
    );
    std::thread::scope(|s| {
        let encoders = spawn_encoders(s, (header, work), encoder_count, &tx, &budget)?;
        spawn_segment_threads(s, work, (&ctx, &next, &window, &plan.order), &tx)?;
        drop(tx);
        let handing = Handing {
            header,
            encoders,
            budget: &budget,
            segments: work.segments,
            schedule: &plan,
        };
        let written = write_in_order(rx, &window, handing, (writer, patch), progress, matched);
        if written.is_err() {
            window.record(None);
        }
        written
    })
}

/// Starts `count` encoder threads in `s`, each coding the chunks sent to it in order with its
/// own linked zstd contexts and sending them back on `tx` (chunks that count against `budget`
/// give their bytes back once coded). Returns their queues.
fn spawn_encoders<'s, 'e>(
    s: &'s std::thread::Scope<'s, 'e>,
    (header, work): (&'e Header, &Work),
    count: usize,
    tx: &mpsc::Sender<Finished>,
    budget: &'e QueueBudget,
) -> Result<Vec<mpsc::Sender<(PreparedChunk, bool)>>> {
    let mut encoders = Vec::new();
    for _ in 0..count {
        let (chunk_tx, chunk_rx) = mpsc::channel::<(PreparedChunk, bool)>();
        let tx = tx.clone();
        let mut encoder = LinkedEncoder::new(header, work.params.level);
        let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
            let mut failed = false;
            for (chunk, budgeted) in chunk_rx {
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
                if budgeted {
                    budget.give_back(held);
                }
                failed |= coded.is_err();
                if tx.send(Finished::Chunk(i, coded)).is_err() {
                    break;
                }
            }
        });
        // the encoders started end with their queues
        spawned.map_err(cannot_start)?;
        encoders.push(chunk_tx);
    }
    Ok(encoders)
}

/// Starts the segment threads in `s` (as many as suffix arrays may be alive): each takes the
/// next segment in `order`, once the reorder window has room for it, matches it on the pool and
/// sends its prepared chunks on `tx`.
fn spawn_segment_threads<'s, 'e>(
    s: &'s std::thread::Scope<'s, 'e>,
    work: &'e Work,
    (ctx, next, window, order): (
        &'e SegmentContext,
        &'e AtomicUsize,
        &'e ReorderWindow,
        &'e [usize],
    ),
    tx: &mpsc::Sender<Finished>,
) -> Result<()> {
    for _ in 0..work.params.alive {
        let tx = tx.clone();
        let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
            let mut buffers = Buffers::default();
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= order.len() || !window.wait_for_room(p) {
                    break;
                }
                let i = order[p];
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
    Ok(())
}

/// A thread that could not be started: the machine ran out of a resource.
fn cannot_start(e: std::io::Error) -> Error {
    Error::OutOfMemory {
        what: format!("cannot start a thread: {e}"),
    }
}

/// What the writer hands chunks to, and in what order.
struct Handing<'a> {
    header: &'a Header,
    /// One queue per encoder.
    encoders: Vec<mpsc::Sender<(PreparedChunk, bool)>>,
    budget: &'a QueueBudget,
    segments: &'a [Segment],
    schedule: &'a Schedule,
}

impl Handing<'_> {
    /// The chunk encoder `e` takes after chunk `after` (or its first, for `None`): the next of
    /// the same group, else the first of its next group.
    fn next_for(&self, e: usize, after: Option<u64>) -> Option<u64> {
        let group = u64::from(self.header.group.max(1));
        let count = self.header.chunk_count;
        if let Some(c) = after
            && c + 1 < count
            && (c + 1) / group == c / group
        {
            return Some(c + 1);
        }
        let from = after.map_or(0, |c| c / group + 1);
        (from..count.div_ceil(group))
            .find(|&g| self.schedule.encoder_of(g, self.encoders.len()) == e)
            .map(|g| g * group)
    }
}

/// The writer: hands the chunks of finished segments to their groups' encoders, each encoder
/// its groups in increasing order and each group in chunk order (the lead's chunks as soon as
/// they are matched, outside the queue's budget: they are at most [`LEAD_CHUNKS`]), and writes
/// the coded chunks in chunk order.
fn write_in_order<W: Write>(
    finished: mpsc::Receiver<Finished>,
    window: &ReorderWindow,
    mut handing: Handing,
    (writer, patch): (&mut ContainerWriter<W>, &Path),
    progress: &dyn Progress,
    matched: &dyn Fn(),
) -> Result<()> {
    let segment_count = handing.segments.len();
    let lead_segments = handing.schedule.lead.map_or(0, |(_, n)| n);
    let is_lead = |i: usize| handing.schedule.order[..lead_segments].contains(&i);
    // matched chunks not yet handed: (chunk, whether it is the lead's, its segment)
    let mut waiting: BTreeMap<u64, (PreparedChunk, bool, usize)> = BTreeMap::new();
    let mut left: Vec<usize> = handing.segments.iter().map(|s| s.chunks.len()).collect();
    let mut next: Vec<Option<u64>> = (0..handing.encoders.len())
        .map(|e| handing.next_for(e, None))
        .collect();
    let mut chunks: BTreeMap<u64, Result<EncodedChunk>> = BTreeMap::new();
    let (mut handed, mut written) = (0usize, 0u64);
    if segment_count == 0 {
        handing.encoders.clear();
        matched();
    }
    for message in finished {
        match message {
            Finished::Segment(i, out) => {
                let lead = is_lead(i);
                for chunk in out? {
                    waiting.insert(chunk.header.index, (chunk, lead, i));
                }
                for (e, next) in next.iter_mut().enumerate() {
                    while let Some((chunk, lead, segment)) = next.and_then(|c| waiting.remove(&c)) {
                        *next = handing.next_for(e, Some(chunk.header.index));
                        if !lead {
                            handing.budget.take(queued_bytes(&chunk));
                        }
                        // an encoder that ended has its error on its way
                        let _ = handing.encoders[e].send((chunk, !lead));
                        left[segment] -= 1;
                        if left[segment] == 0 {
                            handed += 1;
                            window.record(Some(handed));
                        }
                    }
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
        if handed == segment_count && !handing.encoders.is_empty() {
            handing.encoders.clear(); // every chunk handed over: the encoders end when done
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
    space: &'a Space,
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
                // no piece spans the base and a reference, or two references
                for r in ranges.iter().flat_map(|r| self.space.split(r.clone())) {
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
                            let expected =
                                expected_old_pos(offset, self.space.base_len, self.new.len());
                            found = find_runs(self.index, self.old, bytes, expected);
                            &found
                        }
                    };
                    let window = OldWindow::new(self.old, self.old.len());
                    let delta = Bsdiff.match_chunk(
                        bytes,
                        &Reference::whole_in(&window, self.space),
                        &RunFinder { runs },
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

    fn encode(&self, i: usize, offset: u64, bytes: &[u8], delta: Delta) -> Result<PreparedChunk> {
        let delta = select::paying_copies(delta, bytes);
        let encoded = prepare_chunk(i as u64, offset, bytes, delta, self.level);
        self.new
            .release(offset as usize, offset as usize + bytes.len());
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` segments of one chunk each.
    fn singles(n: usize) -> Vec<Segment> {
        (0..n)
            .map(|i| Segment {
                chunks: i..i + 1,
                reference: None,
                runs: None,
            })
            .collect()
    }

    #[test]
    fn a_late_group_holding_most_of_the_coding_leads() {
        // 64 chunks in groups of 16; group 3 holds the cost, in its 4th-7th chunks
        let segs = singles(64);
        let mut costs = vec![1u64; 64];
        for c in &mut costs[51..55] {
            *c = 1000;
        }
        let s = schedule(&segs, &costs, 16, 2, true);
        assert_eq!(s.lead, Some((3, 16)));
        let lead: Vec<usize> = (48..64).collect();
        assert_eq!(s.order[..16], lead[..]);
        let rest: Vec<usize> = (0..48).collect();
        assert_eq!(s.order[16..], rest[..]);
        // the lead's group alone on the last encoder, the others on the first
        assert_eq!(s.encoder_of(3, 2), 1);
        assert!((0..3).all(|g| s.encoder_of(g, 2) == 0));
        assert_eq!((s.encoder_of(1, 3), s.encoder_of(2, 3)), (1, 0));
    }

    #[test]
    fn no_lead_where_it_cannot_help_or_is_not_allowed() {
        let segs = singles(64);
        let mut costs = vec![1u64; 64];
        costs[51] = 1000;
        let natural = Schedule::natural(64);
        assert_eq!(schedule(&segs, &costs, 16, 2, false), natural); // the cap says no
        assert_eq!(schedule(&segs, &costs, 16, 1, true), natural); // one encoder
        // the first group already starts first
        let mut first = vec![1u64; 64];
        first[5] = 1000;
        assert_eq!(schedule(&segs, &first, 16, 2, true), natural);
        // no group holds half of the cost
        let even = vec![1u64; 64];
        assert_eq!(schedule(&segs, &even, 16, 2, true), natural);
        // the group's cost lies past what a lead takes (groups of 32: chunks 32..48 lead)
        let mut late = vec![0u64; 64];
        late[62] = 1000;
        assert_eq!(schedule(&segs, &late, 32, 4, true).lead, None);
        late[40] = 1000;
        assert_eq!(schedule(&segs, &late, 32, 4, true).lead, Some((1, 16)));
        assert_eq!(natural.encoder_of(3, 2), 1);
    }

    #[test]
    fn a_lead_starts_with_the_segment_reaching_into_its_group_and_holds_at_most_lead_chunks() {
        // chunks 14..18 share one suffix array across the boundary of groups 0 and 1
        let mut segs: Vec<Segment> = singles(14);
        segs.push(Segment {
            chunks: 14..18,
            reference: Some(vec![0..10, 20..30]),
            runs: None,
        });
        segs.extend((18..40).map(|i| Segment {
            chunks: i..i + 1,
            reference: None,
            runs: None,
        }));
        let mut costs = vec![0u64; 40];
        costs[17] = 50;
        costs[20] = 50;
        let s = schedule(&segs, &costs, 16, 2, true);
        // segment 14 (chunks 14..18) and then singles up to 16 chunks in all: chunks 14..30
        assert_eq!(s.lead, Some((1, 13)));
        assert_eq!(s.order[0], 14);
        assert_eq!(segs[s.order[12]].chunks, 29..30);
        let mut sorted = s.order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..segs.len()).collect::<Vec<_>>(),
            "every segment once"
        );
    }
}
