//! Matching one chunk of NEW against its reference: the longest exact match at each position
//! (from a suffix array, or from the anchor runs when those already cover the chunk: a
//! [`MatchFinder`]), then a [`Matcher`] turns them into a [`Delta`] of copy-with-add operations
//! with absolute OLD offsets and inserted bytes. [`Bsdiff`] is bsdiff's matcher: approximate
//! extension forward and backward where at least half of the bytes agree. A copy never crosses
//! a junction between two OLD ranges of the reference.

use super::anchors::Run;
use super::reference::{Reference, ReferenceBytes};
use super::suffix::SuffixArray;
pub use crate::format::Op;

/// Where the longest exact matches of NEW come from.
pub trait MatchFinder {
    /// Longest match of `new[scan..]` in the reference: `(length, reference position)`; among
    /// equally long ones, a finder may prefer the one nearest the reference position `near`.
    fn longest(&self, new: &[u8], scan: usize, near: usize) -> (usize, usize);
}

/// Suffix-array search, clipped at piece junctions; of equally long matches, the one nearest the
/// current diagonal.
pub struct SuffixFinder<'s, 'r> {
    /// The reference's suffix array.
    pub sa: &'s SuffixArray<'s>,
    /// The reference it indexes (for its piece bounds).
    pub reference: &'r Reference<'r, [u8]>,
}

impl MatchFinder for SuffixFinder<'_, '_> {
    fn longest(&self, new: &[u8], scan: usize, near: usize) -> (usize, usize) {
        // Where no window of the prefilter's length can match, report none and skip the
        // search (see suffix::FILTER_WINDOW for why shorter matches are not worth one).
        if !self.sa.may_match_window(&new[scan..]) {
            return (0, 0);
        }
        // a match ends at its piece's end: beyond it the reference is another part of OLD
        self.sa.longest_match_near(&new[scan..], near, |pos, len| {
            let (_, end) = self.reference.piece_bounds(pos);
            len.min(end - pos)
        })
    }
}

/// Matches taken from verified anchor runs (reference = all of OLD, so positions are offsets).
pub struct RunFinder<'r> {
    /// The chunk's anchor runs, sorted and disjoint.
    pub runs: &'r [Run],
}

impl MatchFinder for RunFinder<'_> {
    fn longest(&self, _new: &[u8], scan: usize, _near: usize) -> (usize, usize) {
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
    /// The operations, in output order.
    pub ops: Vec<Op>,
    /// NEW minus OLD, byte-wise, over every copy, laid end to end.
    pub add: Vec<u8>,
    /// The inserted bytes, laid end to end.
    pub insert: Vec<u8>,
}

/// A found match no better than the current diagonal but at least this long lets the scan jump
/// ahead instead of probing every position inside it (bsdiff is quadratic there).
const SKIP_MIN: usize = 64;
/// Search stride while the current diagonal agrees (see [`Scan::next_match`]).
const SEARCH_STRIDE: usize = 32;
/// How far before the end of such a match the scan resumes.
const SKIP_KEEP: usize = 32;

/// Turns a chunk's exact matches into its operations.
pub trait Matcher: Sync {
    /// Matches `new` (one chunk) against `reference`, taking exact matches from `finder`.
    fn match_chunk<B: ReferenceBytes + ?Sized>(
        &self,
        new: &[u8],
        reference: &Reference<B>,
        finder: &impl MatchFinder,
    ) -> Delta;
}

/// bsdiff's matcher: at each position the longest exact match, taken when it beats the current
/// diagonal by 8 bytes; each match is extended forward and the next one backward where at
/// least half of the bytes agree, their overlap split at the best point. Two changes from
/// bsdiff: matches never cross a junction between two OLD ranges of a reference, and a found
/// match no better than the current diagonal but at least 64 bytes long lets the scan jump
/// ahead instead of probing every position inside it (bsdiff is quadratic there).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bsdiff;

impl Matcher for Bsdiff {
    fn match_chunk<B: ReferenceBytes + ?Sized>(
        &self,
        new: &[u8],
        reference: &Reference<B>,
        finder: &impl MatchFinder,
    ) -> Delta {
        let mut scan = Scan::new(new, reference);
        let mut delta = Delta::default();
        // `at`: where the search resumes; `len`/`pos`: the last match found (its length and
        // reference position), kept from one round to the next as in bsdiff
        let (mut at, mut len, mut pos) = (0usize, 0usize, 0usize);
        while at < new.len() {
            let score;
            (at, len, pos, score) = scan.next_match(at + len, len, pos, finder);
            if len as i64 == score && at != new.len() {
                continue; // no better than the diagonal: not worth a new operation
            }
            scan.emit(at, pos, &mut delta);
        }
        delta
    }
}

/// The state of [`Bsdiff`] over one chunk: where the last operation's copy left off.
struct Scan<'a, 'r, B: ReferenceBytes + ?Sized> {
    new: &'a [u8],
    reference: &'a Reference<'r, B>,
    old: &'r B,
    /// Where the last match starts, in NEW and in the reference (bsdiff's lastscan, lastpos).
    last_new: usize,
    last_ref: usize,
    /// The current diagonal (reference position minus NEW position) and its piece.
    diagonal: i64,
    diagonal_piece: (usize, usize),
}

impl<'a, 'r, B: ReferenceBytes + ?Sized> Scan<'a, 'r, B> {
    fn new(new: &'a [u8], reference: &'a Reference<'r, B>) -> Self {
        Scan {
            new,
            reference,
            old: reference.bytes(),
            last_new: 0,
            last_ref: 0,
            diagonal: 0,
            diagonal_piece: reference.piece_bounds(0),
        }
    }

    /// Does NEW at `at` agree with the reference on the current diagonal?
    fn agrees(&self, at: usize) -> bool {
        let o = at as i64 + self.diagonal;
        let (start, end) = self.diagonal_piece;
        o >= start as i64 && o < end as i64 && self.old.byte(o as usize) == self.new[at]
    }

    /// How many positions of `range` agree on the current diagonal.
    fn agreements(&self, range: std::ops::Range<usize>) -> i64 {
        agreements(
            self.old,
            self.new,
            range,
            self.diagonal,
            self.diagonal_piece,
        )
    }

    /// Searches from `at` for a match worth leaving the current diagonal for. Returns where it
    /// starts, its length and reference position (`len` and `pos` unchanged if the chunk ends
    /// first), and the diagonal's agreements over it: signed, as in bsdiff, since a position
    /// can be un-counted before it was counted.
    fn next_match(
        &self,
        mut at: usize,
        mut len: usize,
        mut pos: usize,
        finder: &impl MatchFinder,
    ) -> (usize, usize, usize, i64) {
        let n = self.new.len();
        let mut diagonal_score: i64 = 0;
        let mut scored_until = at;
        while at < n {
            // While the current diagonal still agrees, search only every SEARCH_STRIDE bytes: a
            // match good enough to leave the diagonal (8 bytes better) runs on past the next
            // searched position and is found there.
            if !at.is_multiple_of(SEARCH_STRIDE) && self.agrees(at) {
                len = 0;
            } else {
                // the current diagonal's position: where a repeated match had best come from
                let near = (at as i64 + self.diagonal).max(0) as usize;
                (len, pos) = finder.longest(self.new, at, near);
            }
            if scored_until < at + len {
                diagonal_score += self.agreements(scored_until..at + len);
                scored_until = at + len;
            }
            let score = len as i64;
            if (score == diagonal_score && len != 0) || score > diagonal_score + 8 {
                break;
            }
            if len >= SKIP_MIN {
                let to = at + len - SKIP_KEEP;
                diagonal_score -= self.agreements(at..to);
                at = to;
                continue;
            }
            if self.agrees(at) {
                diagonal_score -= 1;
            }
            at += 1;
        }
        (at, len, pos, diagonal_score)
    }

    /// Emits the operation that ends where the match at (`at`, `pos`) takes over: the last
    /// match extended forward, the bytes up to the new match (extended backward) inserted.
    fn emit(&mut self, at: usize, pos: usize, delta: &mut Delta) {
        let mut forward = self.extend_forward(at);
        let mut backward = if at < self.new.len() {
            self.extend_backward(at, pos)
        } else {
            0
        };
        if self.last_new + forward > at - backward {
            (forward, backward) = self.split_overlap(at, pos, forward, backward);
        }
        push_op(
            delta,
            self.new,
            self.old,
            self.reference,
            self.last_new,
            self.last_ref,
            forward,
            at - backward,
        );
        self.last_new = at - backward;
        self.last_ref = pos - backward;
        self.diagonal = pos as i64 - at as i64;
        self.diagonal_piece = self.reference.piece_bounds(pos);
    }

    /// How far the last match extends forward (up to `at`, within its piece): the length with
    /// the most agreements over half.
    fn extend_forward(&self, at: usize) -> usize {
        let (last_new, last_ref) = (self.last_new, self.last_ref);
        let (_, piece_end) = self.reference.piece_bounds(last_ref);
        let limit = (at - last_new).min(piece_end.saturating_sub(last_ref));
        let (mut agreeing, mut best, mut forward) = (0i64, 0i64, 0usize);
        self.old.pieces(last_ref, limit, |off, o| {
            for (k, (o, n)) in o.iter().zip(&self.new[last_new + off..]).enumerate() {
                let i = off + k;
                if o == n {
                    agreeing += 1;
                }
                if agreeing * 2 - (i as i64 + 1) > best * 2 - forward as i64 {
                    best = agreeing;
                    forward = i + 1;
                }
            }
        });
        forward
    }

    /// How far the match at (`at`, `pos`) extends backward (down to the last match, within its
    /// piece), by the same rule.
    fn extend_backward(&self, at: usize, pos: usize) -> usize {
        let (piece_start, _) = self.reference.piece_bounds(pos);
        let limit = (at - self.last_new).min(pos - piece_start);
        let (mut agreeing, mut best, mut backward) = (0i64, 0i64, 0usize);
        self.old.pieces_rev(pos - limit, limit, |off, o| {
            // reference position pos - i is o[limit - i - off]
            for (k, &b) in o.iter().enumerate().rev() {
                let i = limit - off - k;
                if b == self.new[at - i] {
                    agreeing += 1;
                }
                if agreeing * 2 - i as i64 > best * 2 - backward as i64 {
                    best = agreeing;
                    backward = i;
                }
            }
        });
        backward
    }

    /// Where the forward and backward extensions overlap, splits them at the point that keeps
    /// the most agreeing bytes.
    fn split_overlap(
        &self,
        at: usize,
        pos: usize,
        forward: usize,
        backward: usize,
    ) -> (usize, usize) {
        let overlap = (self.last_new + forward) - (at - backward);
        let (mut agreeing, mut best, mut split) = (0i64, 0i64, 0usize);
        for i in 0..overlap {
            let fwd_at = self.last_new + forward - overlap + i;
            if self.new[fwd_at] == self.old.byte(self.last_ref + forward - overlap + i) {
                agreeing += 1;
            }
            if self.new[at - backward + i] == self.old.byte(pos - backward + i) {
                agreeing -= 1;
            }
            if agreeing > best {
                best = agreeing;
                split = i + 1;
            }
        }
        (forward + split - overlap, backward - split)
    }
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

/// Appends the operation that copies `forward` bytes from reference position `last_ref` (for
/// NEW from `last_new`) and inserts NEW's bytes from there up to `insert_end`.
#[allow(clippy::too_many_arguments)]
fn push_op<B: ReferenceBytes + ?Sized>(
    delta: &mut Delta,
    new: &[u8],
    old: &B,
    reference: &Reference<B>,
    last_new: usize,
    last_ref: usize,
    forward: usize,
    insert_end: usize,
) {
    let insert = insert_end - (last_new + forward);
    if forward == 0 && insert == 0 {
        return;
    }
    old.pieces(last_ref, forward, |at, o| {
        delta.add.extend(
            new[last_new + at..]
                .iter()
                .zip(o)
                .map(|(n, o)| n.wrapping_sub(*o)),
        )
    });
    delta
        .insert
        .extend_from_slice(&new[last_new + forward..insert_end]);
    let old_pos = if forward > 0 {
        reference.to_old(last_ref)
    } else {
        0
    };
    // a copy-less op directly after another is folded into it
    if forward == 0
        && let Some(prev) = delta.ops.last_mut()
    {
        prev.insert += insert as u32;
        return;
    }
    delta.ops.push(Op {
        old_pos,
        copy: forward as u32,
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
    use super::super::reference::{OldWindow, Piece};
    use super::*;
    use crate::testing::noise;

    /// bsdiff's matcher over a suffix array of all of `reference`.
    fn match_with_suffix_array(new: &[u8], reference: &Reference<[u8]>) -> Delta {
        let mut buf = Vec::new();
        let sa = SuffixArray::build(reference.bytes(), &mut buf).unwrap();
        let finder = SuffixFinder { sa: &sa, reference };
        Bsdiff.match_chunk(new, reference, &finder)
    }

    #[test]
    fn shifted_pointers_become_add_bytes() {
        let old = noise(1 << 16, 3);
        let mut new = old.clone();
        for i in (1000..30_000).step_by(16) {
            let v = u32::from_le_bytes(new[i..i + 4].try_into().unwrap()).wrapping_add(0x1234);
            new[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let delta = match_with_suffix_array(&new, &Reference::whole(&old[..]));
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
        let delta = match_with_suffix_array(&new, &reference);
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
        let delta = Bsdiff.match_chunk(&new, &reference, &RunFinder { runs: &runs });
        assert_eq!(delta.ops.len(), 1);
        assert_eq!(rebuild(&delta, &old), new);
        // read through a window instead of from memory: the same delta
        let window = OldWindow::new(&old[..], old.len() as u64);
        let windowed =
            Bsdiff.match_chunk(&new, &Reference::whole(&window), &RunFinder { runs: &runs });
        assert_eq!(windowed, delta);
        assert!(!window.failed());
    }
}
