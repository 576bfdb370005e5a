//! bsdiff-style matching of one chunk of NEW against a reference: the longest exact match at
//! each position (from a suffix array, or from the anchor runs when those already cover the
//! chunk), then approximate extension forward and backward where at least half of the bytes
//! agree. The result is a [`Delta`]: copy-with-add operations with absolute OLD offsets and
//! inserted bytes. A copy never crosses a junction between two OLD ranges of the reference.
//!
//! The reference's bytes are read through [`ReferenceBytes`]: a slice in memory (a segment's
//! reference, built for its suffix array), or all of OLD read on demand through a small window
//! ([`OldWindow`]), so that matching a chunk against anchor runs anywhere in OLD touches no
//! mapping (whose pages would count toward the memory cap wherever the runs point).

use std::cell::{Cell, RefCell};

use crate::anchors::{OldSource, Run};
pub use crate::format::Op;
use crate::suffix::SuffixArray;

/// A contiguous OLD range placed at `start` in a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: usize,
    pub old: u64,
    pub len: usize,
}

/// Random access to a reference's bytes.
pub trait ReferenceBytes {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The byte at `i < len()`.
    fn byte(&self, i: usize) -> u8;
    /// Calls `f` with consecutive pieces that together are bytes `start..start + len` (within
    /// `len()`), in order, each with its offset from `start`.
    fn pieces(&self, start: usize, len: usize, f: impl FnMut(usize, &[u8]));
    /// The same pieces, last first.
    fn pieces_rev(&self, start: usize, len: usize, f: impl FnMut(usize, &[u8]));
}

impl ReferenceBytes for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline]
    fn byte(&self, i: usize) -> u8 {
        self[i]
    }
    #[inline]
    fn pieces(&self, start: usize, len: usize, mut f: impl FnMut(usize, &[u8])) {
        f(0, &self[start..start + len])
    }
    #[inline]
    fn pieces_rev(&self, start: usize, len: usize, mut f: impl FnMut(usize, &[u8])) {
        f(0, &self[start..start + len])
    }
}

/// Bytes of OLD read on demand with positioned reads into a few small windows (matching
/// alternates between the previous match's diagonal and the new one's, so one window would be
/// refilled back and forth); longer ranges are handed over in window-sized pieces, so its
/// memory is a few windows whatever is matched. A read that fails or comes up short (OLD shrank or the disk failed) reads as zeros
/// and is recorded: the caller must check [`OldWindow::failed`] before using what was matched.
pub struct OldWindow<'a, S: OldSource + ?Sized> {
    old: &'a S,
    len: usize,
    windows: RefCell<[Window; WAYS]>,
    /// The window that served the last access: tried first.
    last: Cell<usize>,
    /// The window the next miss refills (round robin).
    victim: Cell<usize>,
    failed: Cell<bool>,
}

/// Windows an [`OldWindow`] keeps.
const WAYS: usize = 4;

#[derive(Default)]
struct Window {
    start: usize,
    bytes: Vec<u8>,
}

impl Window {
    #[inline]
    fn holds(&self, start: usize, len: usize) -> bool {
        start >= self.start && start + len <= self.start + self.bytes.len()
    }
}

impl<'a, S: OldSource + ?Sized> OldWindow<'a, S> {
    /// Bytes read at a time: small, since runs of a chunk made of small pieces of OLD each
    /// start a new window.
    pub const WINDOW: usize = 64 << 10;
    /// How much of a window lies before the byte that caused it (the diagonal mostly moves
    /// forward).
    const BEHIND: usize = 4 << 10;

    pub fn new(old: &'a S, len: u64) -> OldWindow<'a, S> {
        OldWindow {
            old,
            len: len as usize,
            windows: RefCell::new(Default::default()),
            last: Cell::new(0),
            victim: Cell::new(0),
            failed: Cell::new(false),
        }
    }

    /// Whether a read of OLD failed or came up short.
    pub fn failed(&self) -> bool {
        self.failed.get()
    }

    /// The window holding `start..start + len`, refilling one if none does.
    #[inline]
    fn find(&self, start: usize, len: usize) -> usize {
        let last = self.last.get();
        let windows = self.windows.borrow();
        if windows[last].holds(start, len) {
            return last;
        }
        let found = windows.iter().position(|w| w.holds(start, len));
        drop(windows);
        let way = found.unwrap_or_else(|| self.fill(start, len));
        self.last.set(way);
        way
    }

    /// Calls `f` with bytes `start..start + len`, at most a window.
    fn piece(&self, start: usize, len: usize, f: impl FnOnce(&[u8])) {
        let way = self.find(start, len);
        let windows = self.windows.borrow();
        let w = &windows[way];
        f(&w.bytes[start - w.start..start - w.start + len])
    }

    /// Reads `start..start + len` and what lies around it into the next victim window.
    #[cold]
    fn fill(&self, start: usize, len: usize) -> usize {
        let way = self.victim.get();
        self.victim.set((way + 1) % WAYS);
        let from = start.saturating_sub(Self::BEHIND);
        let to = (start + len).max(from + Self::WINDOW).min(self.len);
        let mut windows = self.windows.borrow_mut();
        let w = &mut windows[way];
        w.start = from;
        if w.bytes.len() != to - from {
            w.bytes.resize(to - from, 0);
        }
        let got = self.old.read_at(from as u64, &mut w.bytes);
        if got != to - from {
            w.bytes[got..].fill(0);
            self.failed.set(true);
        }
        way
    }
}

impl<S: OldSource + ?Sized> ReferenceBytes for OldWindow<'_, S> {
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn byte(&self, i: usize) -> u8 {
        let way = self.find(i, 1);
        let windows = self.windows.borrow();
        let w = &windows[way];
        w.bytes[i - w.start]
    }
    fn pieces(&self, start: usize, len: usize, mut f: impl FnMut(usize, &[u8])) {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(Self::WINDOW - Self::BEHIND);
            self.piece(start + done, n, |b| f(done, b));
            done += n;
        }
    }
    fn pieces_rev(&self, start: usize, len: usize, mut f: impl FnMut(usize, &[u8])) {
        let mut left = len;
        while left > 0 {
            let n = left.min(Self::WINDOW - Self::BEHIND);
            left -= n;
            self.piece(start + left, n, |b| f(left, b));
        }
    }
}

/// The OLD bytes a chunk is matched against: one or more OLD ranges laid end to end.
pub struct Reference<'a, B: ReferenceBytes + ?Sized = [u8]> {
    bytes: &'a B,
    pieces: Vec<Piece>,
}

impl<'a> Reference<'a, [u8]> {
    /// `pieces` must tile `bytes` in order.
    pub fn new(bytes: &'a [u8], pieces: Vec<Piece>) -> Reference<'a, [u8]> {
        debug_assert_eq!(pieces.iter().map(|p| p.len).sum::<usize>(), bytes.len());
        Reference { bytes, pieces }
    }
}

impl<'a, B: ReferenceBytes + ?Sized> Reference<'a, B> {
    /// All of OLD as one piece.
    pub fn whole(old: &'a B) -> Reference<'a, B> {
        Reference {
            bytes: old,
            pieces: vec![Piece {
                start: 0,
                old: 0,
                len: old.len(),
            }],
        }
    }

    pub fn bytes(&self) -> &'a B {
        self.bytes
    }

    /// Bounds `start..end` of the piece holding reference position `pos` (`pos == len` maps to
    /// an empty range at the end).
    fn piece_bounds(&self, pos: usize) -> (usize, usize) {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        match self.pieces.get(i) {
            Some(p) => (p.start, p.start + p.len),
            None => (self.bytes.len(), self.bytes.len()),
        }
    }

    fn to_old(&self, pos: usize) -> u64 {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        match self.pieces.get(i) {
            Some(p) => p.old + (pos - p.start) as u64,
            None => self.pieces.last().map_or(0, |p| p.old + p.len as u64),
        }
    }
}

/// Where the longest exact matches of NEW come from.
pub trait MatchFinder {
    /// Longest match of `new[scan..]` in the reference: `(length, reference position)`.
    fn longest(&self, new: &[u8], scan: usize) -> (usize, usize);
}

/// Suffix-array search, clipped at piece junctions.
pub struct SuffixFinder<'s, 'r> {
    pub sa: &'s SuffixArray<'s>,
    pub reference: &'r Reference<'r, [u8]>,
}

impl MatchFinder for SuffixFinder<'_, '_> {
    fn longest(&self, new: &[u8], scan: usize) -> (usize, usize) {
        // Where no window of the prefilter's length can match, report none and skip the
        // search (see suffix::FILTER_WINDOW for why shorter matches are not worth one).
        if !self.sa.may_match_window(&new[scan..]) {
            return (0, 0);
        }
        let (len, pos) = self.sa.longest_match(&new[scan..]);
        let (_, end) = self.reference.piece_bounds(pos);
        (len.min(end - pos), pos)
    }
}

/// Matches taken from verified anchor runs (reference = all of OLD, so positions are offsets).
pub struct RunFinder<'r> {
    pub runs: &'r [Run],
}

impl MatchFinder for RunFinder<'_> {
    fn longest(&self, _new: &[u8], scan: usize) -> (usize, usize) {
        let i = self.runs.partition_point(|r| r.new_pos + r.len <= scan);
        match self.runs.get(i) {
            Some(r) if r.new_pos <= scan => {
                let skip = scan - r.new_pos;
                (r.len - skip, r.old_pos as usize + skip)
            }
            _ => (0, 0),
        }
    }
}

/// The difference of one chunk: operations plus their add and insert bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub ops: Vec<Op>,
    pub add: Vec<u8>,
    pub insert: Vec<u8>,
}

/// A found match no better than the current diagonal but at least this long lets the scan jump
/// ahead instead of probing every position inside it (bsdiff is quadratic there).
const SKIP_MIN: usize = 64;
/// Search stride while the current diagonal agrees (see `match_chunk`).
const SEARCH_STRIDE: usize = 32;
/// How far before the end of such a match the scan resumes.
const SKIP_KEEP: usize = 32;

/// Matches `new` (one chunk) against `reference` using `finder` for exact matches.
pub fn match_chunk<B: ReferenceBytes + ?Sized>(
    new: &[u8],
    reference: &Reference<B>,
    finder: &impl MatchFinder,
) -> Delta {
    let old = reference.bytes;
    let n = new.len();
    let mut delta = Delta::default();
    let (mut scan, mut len, mut pos) = (0usize, 0usize, 0usize);
    let (mut lastscan, mut lastpos) = (0usize, 0usize);
    let mut lastoffset: i64 = 0;
    let mut last_piece = reference.piece_bounds(0);
    // does NEW at `at` agree with OLD on the current diagonal?
    let agrees = |at: usize, lastoffset: i64, piece: (usize, usize)| -> bool {
        let o = at as i64 + lastoffset;
        o >= piece.0 as i64 && o < piece.1 as i64 && old.byte(o as usize) == new[at]
    };
    while scan < n {
        // agreements of the current diagonal over [scan, scsc); signed, as in bsdiff, since a
        // position can be un-counted before it was counted
        let mut oldscore: i64 = 0;
        scan += len;
        let mut scsc = scan;
        while scan < n {
            // While the current diagonal still agrees, search only every SEARCH_STRIDE bytes: a
            // match good enough to leave the diagonal (8 bytes better) runs on past the next
            // searched position and is found there.
            if scan % SEARCH_STRIDE != 0 && agrees(scan, lastoffset, last_piece) {
                len = 0;
            } else {
                (len, pos) = finder.longest(new, scan);
            }
            if scsc < scan + len {
                oldscore += agreements(old, new, scsc..scan + len, lastoffset, last_piece);
                scsc = scan + len;
            }
            let score = len as i64;
            if (score == oldscore && len != 0) || score > oldscore + 8 {
                break;
            }
            if len >= SKIP_MIN {
                let to = scan + len - SKIP_KEEP;
                oldscore -= agreements(old, new, scan..to, lastoffset, last_piece);
                scan = to;
                continue;
            }
            if agrees(scan, lastoffset, last_piece) {
                oldscore -= 1;
            }
            scan += 1;
        }
        if len as i64 == oldscore && scan != n {
            continue;
        }
        // extend the previous match forward from (lastscan, lastpos)
        let (_, lp_end) = reference.piece_bounds(lastpos);
        let fwd_limit = (scan - lastscan).min(lp_end.saturating_sub(lastpos));
        let (mut s, mut best, mut lenf) = (0i64, 0i64, 0usize);
        old.pieces(lastpos, fwd_limit, |at, o| {
            for (k, (o, n)) in o.iter().zip(&new[lastscan + at..]).enumerate() {
                let i = at + k;
                if o == n {
                    s += 1;
                }
                if s * 2 - (i as i64 + 1) > best * 2 - lenf as i64 {
                    best = s;
                    lenf = i + 1;
                }
            }
        });
        // extend the new match backward from (scan, pos)
        let mut lenb = 0usize;
        if scan < n {
            let (p_start, _) = reference.piece_bounds(pos);
            let back_limit = (scan - lastscan).min(pos - p_start);
            let (mut s, mut best) = (0i64, 0i64);
            old.pieces_rev(pos - back_limit, back_limit, |at, o| {
                // reference position pos - i is o[back_limit - i - at]
                for (k, &b) in o.iter().enumerate().rev() {
                    let i = back_limit - at - k;
                    if b == new[scan - i] {
                        s += 1;
                    }
                    if s * 2 - i as i64 > best * 2 - lenb as i64 {
                        best = s;
                        lenb = i;
                    }
                }
            });
        }
        // where the two extensions overlap, split at the best point
        if lastscan + lenf > scan - lenb {
            let overlap = (lastscan + lenf) - (scan - lenb);
            let (mut s, mut best, mut lens) = (0i64, 0i64, 0usize);
            for i in 0..overlap {
                if new[lastscan + lenf - overlap + i] == old.byte(lastpos + lenf - overlap + i) {
                    s += 1;
                }
                if new[scan - lenb + i] == old.byte(pos - lenb + i) {
                    s -= 1;
                }
                if s > best {
                    best = s;
                    lens = i + 1;
                }
            }
            lenf = lenf + lens - overlap;
            lenb -= lens;
        }
        let insert_end = scan - lenb;
        push_op(
            &mut delta, new, old, reference, lastscan, lastpos, lenf, insert_end,
        );
        lastscan = scan - lenb;
        lastpos = pos - lenb;
        lastoffset = pos as i64 - scan as i64;
        last_piece = reference.piece_bounds(pos);
    }
    delta
}

/// How many positions `at` in `range` agree on the diagonal `offset`: NEW at `at` equals the
/// reference at `at + offset`, which must lie in `piece` (a position outside it never agrees).
fn agreements<B: ReferenceBytes + ?Sized>(
    old: &B,
    new: &[u8],
    range: std::ops::Range<usize>,
    offset: i64,
    piece: (usize, usize),
) -> i64 {
    // the positions whose reference position falls inside the piece
    let lo = (piece.0 as i64 - offset).max(range.start as i64);
    let hi = (piece.1 as i64 - offset).min(range.end as i64);
    if lo >= hi {
        return 0;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    let mut count = 0;
    old.pieces((lo as i64 + offset) as usize, hi - lo, |at, o| {
        count += o
            .iter()
            .zip(&new[lo + at..])
            .filter(|(a, b)| a == b)
            .count() as i64;
    });
    count
}

#[allow(clippy::too_many_arguments)]
fn push_op<B: ReferenceBytes + ?Sized>(
    delta: &mut Delta,
    new: &[u8],
    old: &B,
    reference: &Reference<B>,
    lastscan: usize,
    lastpos: usize,
    lenf: usize,
    insert_end: usize,
) {
    let insert = insert_end - (lastscan + lenf);
    if lenf == 0 && insert == 0 {
        return;
    }
    old.pieces(lastpos, lenf, |at, o| {
        delta.add.extend(
            new[lastscan + at..]
                .iter()
                .zip(o)
                .map(|(n, o)| n.wrapping_sub(*o)),
        )
    });
    delta
        .insert
        .extend_from_slice(&new[lastscan + lenf..insert_end]);
    let old_pos = if lenf > 0 {
        reference.to_old(lastpos)
    } else {
        0
    };
    // a copy-less op directly after another is folded into it
    if lenf == 0
        && let Some(prev) = delta.ops.last_mut()
    {
        prev.insert += insert as u32;
        return;
    }
    delta.ops.push(Op {
        old_pos,
        copy: lenf as u32,
        insert: insert as u32,
    });
}

/// Rebuilds the chunk from `delta` and OLD (a test helper and the reference semantics of an
/// operation list; apply has its own streaming implementation).
pub fn rebuild(delta: &Delta, old: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut a, mut x) = (0, 0);
    for op in &delta.ops {
        let o = op.old_pos as usize;
        for i in 0..op.copy as usize {
            out.push(old[o + i].wrapping_add(delta.add[a + i]));
        }
        a += op.copy as usize;
        out.extend_from_slice(&delta.insert[x..x + op.insert as usize]);
        x += op.insert as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn shifted_pointers_become_add_bytes() {
        let old = noise(1 << 16, 3);
        let mut new = old.clone();
        for i in (1000..30_000).step_by(16) {
            let v = u32::from_le_bytes(new[i..i + 4].try_into().unwrap()).wrapping_add(0x1234);
            new[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&old, &mut buf).unwrap();
        let reference = Reference::whole(&old[..]);
        let delta = match_chunk(
            &new,
            &reference,
            &SuffixFinder {
                sa: &sa,
                reference: &reference,
            },
        );
        assert_eq!(rebuild(&delta, &old), new);
        assert!(delta.insert.len() < 64, "inserted {}", delta.insert.len());
        assert!(delta.ops.len() < 8, "{} ops", delta.ops.len());
    }

    #[test]
    fn copies_never_cross_junctions() {
        let a = noise(5000, 1);
        let b = noise(5000, 2);
        // the reference holds a then b, which are far apart in OLD; NEW is the tail of a, the
        // head of b, then the head of a: a copy running from a into b would read the wrong OLD
        // bytes, since the reference junction is not a junction in OLD
        let mut bytes = a.clone();
        bytes.extend_from_slice(&b);
        let pieces = vec![
            Piece {
                start: 0,
                old: 100_000,
                len: 5000,
            },
            Piece {
                start: 5000,
                old: 20_000,
                len: 5000,
            },
        ];
        let reference = Reference::new(&bytes, pieces);
        let mut new = a[4000..].to_vec();
        new.extend_from_slice(&b[..100]);
        new.extend_from_slice(&a[..3000]);
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&bytes, &mut buf).unwrap();
        let delta = match_chunk(
            &new,
            &reference,
            &SuffixFinder {
                sa: &sa,
                reference: &reference,
            },
        );
        let mut old = vec![0u8; 110_000];
        old[100_000..105_000].copy_from_slice(&a);
        old[20_000..25_000].copy_from_slice(&b);
        assert_eq!(rebuild(&delta, &old), new);
    }

    #[test]
    fn runs_alone_cover_a_copied_chunk() {
        let old = noise(100_000, 5);
        let new = old[30_000..70_000].to_vec();
        let runs = [Run {
            new_pos: 0,
            old_pos: 30_000,
            len: 40_000,
        }];
        let reference = Reference::whole(&old[..]);
        let delta = match_chunk(&new, &reference, &RunFinder { runs: &runs });
        assert_eq!(delta.ops.len(), 1);
        assert_eq!(rebuild(&delta, &old), new);
        // read through a window instead of from memory: the same delta
        let window = OldWindow::new(&old[..], old.len() as u64);
        let windowed = match_chunk(&new, &Reference::whole(&window), &RunFinder { runs: &runs });
        assert_eq!(windowed, delta);
        assert!(!window.failed());
    }
}
