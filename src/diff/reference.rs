//! The reference a chunk is matched against: OLD ranges laid end to end ([`Reference`]), read
//! through [`ReferenceBytes`]: a slice in memory (a segment's reference, built for its suffix
//! array), or all of OLD read on demand through a few small windows ([`OldWindow`]), so that
//! matching a chunk against anchor runs anywhere in OLD touches no mapping (whose pages would
//! count toward the memory cap wherever the runs point).

use std::cell::{Cell, RefCell};

use super::anchors::OldSource;

/// A contiguous OLD range placed at `start` in a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Where the range starts in the reference.
    pub start: usize,
    /// Where it starts in OLD.
    pub old: u64,
    /// Its length.
    pub len: usize,
}

/// Random access to a reference's bytes.
pub trait ReferenceBytes {
    /// The reference's length.
    fn len(&self) -> usize;
    /// Whether the reference is empty.
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

    /// A view of OLD (`len` bytes) read through `old`'s positioned reads.
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
        Reference::whole_in(old, &Space::plain(old.len() as u64))
    }

    /// All of the source space `old` laid out as `space` says: a piece for the base and one
    /// for each reference's payload, so that no match extends from one into another.
    pub fn whole_in(old: &'a B, space: &Space) -> Reference<'a, B> {
        let pieces = space
            .split(0..old.len() as u64)
            .map(|r| Piece {
                start: r.start as usize,
                old: r.start,
                len: (r.end - r.start) as usize,
            })
            .collect();
        Reference { bytes: old, pieces }
    }

    /// The reference's bytes.
    pub fn bytes(&self) -> &'a B {
        self.bytes
    }

    /// Bounds `start..end` of the piece holding reference position `pos` (`pos == len` maps to
    /// an empty range at the end).
    pub(crate) fn piece_bounds(&self, pos: usize) -> (usize, usize) {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        match self.pieces.get(i) {
            Some(p) => (p.start, p.start + p.len),
            None => (self.bytes.len(), self.bytes.len()),
        }
    }

    pub(crate) fn to_old(&self, pos: usize) -> u64 {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        match self.pieces.get(i) {
            Some(p) => p.old + (pos - p.start) as u64,
            None => self.pieces.last().map_or(0, |p| p.old + p.len as u64),
        }
    }
}

/// How the source space a diff matches against is laid out: the base (OLD, or OLD's expanded
/// stream), then the payloads of the references (`--ref-dir`) end to end. Without references it
/// is the base alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Space {
    /// The base's length: where a chunk of NEW is expected to come from is its relative position
    /// in the base, never in the references.
    pub base_len: u64,
    /// Where each reference's payload starts and ends, in order.
    pub references: Vec<std::ops::Range<u64>>,
}

impl Space {
    /// A space of `len` bytes of base and no references.
    pub fn plain(len: u64) -> Space {
        Space {
            base_len: len,
            references: Vec::new(),
        }
    }

    /// `range` split where the base or a reference ends or a reference starts: pieces none of
    /// which spans two sources.
    pub fn split(&self, range: std::ops::Range<u64>) -> impl Iterator<Item = std::ops::Range<u64>> {
        let mut cuts: Vec<u64> = std::iter::once(self.base_len)
            .chain(self.references.iter().flat_map(|r| [r.start, r.end]))
            .filter(|&c| c > range.start && c < range.end)
            .collect();
        cuts.dedup();
        let ends = cuts.clone().into_iter().chain([range.end]);
        std::iter::once(range.start)
            .chain(cuts)
            .zip(ends)
            .map(|(s, e)| s..e)
            .filter(|r| r.start < r.end)
    }

    /// Marks in `reached` (one flag per reference) the references `range` overlaps.
    pub fn mark(&self, range: std::ops::Range<u64>, reached: &mut [bool]) {
        if range.end <= self.base_len || range.start >= range.end {
            return;
        }
        let first = self.references.partition_point(|r| r.end <= range.start);
        for (i, r) in self.references.iter().enumerate().skip(first) {
            if r.start >= range.end {
                break;
            }
            reached[i] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A space of 100 bytes of base and references at 100..150 and 170..200 (a gap between).
    fn space() -> Space {
        Space {
            base_len: 100,
            references: vec![100..150, 170..200],
        }
    }

    #[test]
    fn ranges_split_where_sources_meet_and_mark_what_they_overlap() {
        let s = space();
        let pieces: Vec<_> = s.split(90..180).collect();
        assert_eq!(pieces, [90..100, 100..150, 150..170, 170..180]);
        assert_eq!(s.split(10..20).collect::<Vec<_>>(), vec![(10..20)]);
        let mut reached = [false; 2];
        s.mark(0..100, &mut reached);
        assert_eq!(reached, [false, false], "the base is no reference");
        s.mark(99..101, &mut reached);
        assert_eq!(reached, [true, false]);
        s.mark(150..170, &mut reached);
        assert_eq!(reached, [true, false], "the gap belongs to none");
        s.mark(160..171, &mut reached);
        assert_eq!(reached, [true, true]);
        // the whole space as pieces: one per source, none spanning two
        let bytes = [0u8; 200];
        let whole = Reference::whole_in(&bytes[..], &s);
        assert_eq!(whole.piece_bounds(99), (0, 100));
        assert_eq!(whole.piece_bounds(100), (100, 150));
        assert_eq!(whole.piece_bounds(175), (170, 200));
    }
}
