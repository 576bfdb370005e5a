//! Suffix arrays over a segment's reference, built with libsais into a caller-owned buffer (so a
//! worker reuses one allocation for every segment it builds), and the longest-match search that
//! the matcher runs against them. A table of the first two bytes narrows each search to the
//! suffixes that share the needle's first two bytes before the binary search starts.

use libsais::{LibsaisError, SuffixArrayConstruction};

use crate::error::{Error, Result};

/// Largest reference a suffix array can index (libsais with `i32` output).
pub const MAX_REFERENCE: usize = libsais::LIBSAIS_I32_OUTPUT_MAXIMUM_SIZE;

/// Number of two-byte buckets: `first * 257 + second + 1`, with `second + 1 == 0` for the
/// one-byte suffix at the end of the text.
const BUCKETS: usize = 256 * 257;

/// Window length of the prefilter: where no window of this length matches, no search is made.
/// Matches shorter than 8 bytes never justify an operation (bsdiff's loop needs one 8 bytes
/// better than the current diagonal); not searching for those under 16 bytes either made
/// patches smaller, not larger, since they break up approximate matches for little gain
/// (measurements: docs/ARCHITECTURE.md, "An 8-byte-window prefilter").
pub const FILTER_WINDOW: usize = 16;

/// A suffix array over `text` with its two-byte bucket table and window prefilter.
pub struct SuffixArray<'a> {
    text: &'a [u8],
    sa: &'a [i32],
    buckets: Vec<u32>,
    /// One bit per hash of every [`FILTER_WINDOW`]-byte window of the text; 8 bits per text
    /// byte, so about 12% of absent windows pass.
    filter: Vec<u64>,
}

/// Bytes a suffix array over `len` bytes of text takes beyond the text itself.
pub fn bytes_for(len: usize) -> usize {
    len * 4 + (BUCKETS + 1) * 4 + filter_words(len) * 8
}

fn filter_words(len: usize) -> usize {
    len.max(8).div_ceil(8)
}

/// Bit of the filter (of `bits` bits) for the window starting `w`: a 64-bit multiplicative hash
/// mapped onto `0..bits` by multiply-shift, so the filter needs no power-of-two size.
fn filter_bit(w: &[u8], bits: u64) -> u64 {
    let x = w[..FILTER_WINDOW].chunks_exact(8).fold(0u64, |x, c| {
        (x.rotate_left(29) ^ u64::from_le_bytes(c.try_into().unwrap()))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    let h = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((u128::from(h ^ (h >> 32)) * u128::from(bits)) >> 64) as u64
}

/// For each two-byte key, the first suffix-array index of the suffixes starting with it
/// (`BUCKETS + 1` entries, the last one the text's length).
fn bucket_table(text: &[u8]) -> Vec<u32> {
    let mut counts = vec![0u32; BUCKETS + 1];
    for w in text.windows(2) {
        counts[w[0] as usize * 257 + w[1] as usize + 1] += 1;
    }
    if let Some(&last) = text.last() {
        counts[last as usize * 257] += 1;
    }
    // exclusive prefix sums: counts[k] = first SA index of key k, counts[BUCKETS] = len
    let mut sum = 0u32;
    for c in counts.iter_mut() {
        let n = *c;
        *c = sum;
        sum += n;
    }
    counts
}

/// The prefilter: one bit set per [`FILTER_WINDOW`]-byte window of `text`.
fn window_filter(text: &[u8]) -> Vec<u64> {
    let mut filter = vec![0u64; filter_words(text.len())];
    let bits = filter.len() as u64 * 64;
    for w in text.windows(FILTER_WINDOW) {
        let b = filter_bit(w, bits);
        filter[(b >> 6) as usize] |= 1 << (b & 63);
    }
    filter
}

impl<'a> SuffixArray<'a> {
    /// Builds the suffix array of `text` into `buf`, which is cleared and grown to `text.len()`
    /// (its capacity is kept for the next build). The suffix sort itself is single-threaded
    /// (parallelism comes from building several segments at once); the bucket table and the
    /// prefilter are built beside it when the caller runs inside a rayon pool with a free
    /// worker.
    /// Fails only when libsais cannot allocate its working memory.
    pub fn build(text: &'a [u8], buf: &'a mut Vec<i32>) -> Result<SuffixArray<'a>> {
        assert!(
            text.len() <= MAX_REFERENCE,
            "reference larger than libsais can index"
        );
        buf.clear();
        buf.resize(text.len(), 0);
        // libsais and the two tables read the text independently: the tables are built beside
        // the suffix sort, on another worker when one is free
        let (sorted, (buckets, filter)) = rayon::join(
            || {
                if text.is_empty() {
                    return Ok(());
                }
                match SuffixArrayConstruction::for_text(text)
                    .in_borrowed_buffer(buf.as_mut_slice())
                    .single_threaded()
                    .run()
                {
                    Ok(_) => Ok(()),
                    Err(LibsaisError::OutOfMemory) => Err(Error::OutOfMemory {
                        what: format!("sorting the suffixes of a {}-byte reference", text.len()),
                    }),
                    Err(e) => panic!(
                        "libsais accepts any text up to MAX_REFERENCE with a large enough buffer: {e:?}"
                    ),
                }
            },
            || (bucket_table(text), window_filter(text)),
        );
        sorted?;
        Ok(SuffixArray {
            text,
            sa: buf.as_slice(),
            buckets,
            filter,
        })
    }

    /// False when `needle`'s first [`FILTER_WINDOW`] bytes occur nowhere in the text (then no
    /// match is that long); true when they may.
    pub fn may_match_window(&self, needle: &[u8]) -> bool {
        if needle.len() < FILTER_WINDOW {
            return true;
        }
        let b = filter_bit(needle, self.filter.len() as u64 * 64);
        self.filter[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }

    /// The indexed text.
    pub fn text(&self) -> &'a [u8] {
        self.text
    }

    /// Longest prefix of `needle` that occurs in the text: `(length, text position)`. Matches
    /// shorter than two bytes are reported as length 0.
    pub fn longest_match(&self, needle: &[u8]) -> (usize, usize) {
        match self.search(needle) {
            Some(found) => found.best(),
            None => (0, 0),
        }
    }

    /// [`SuffixArray::longest_match`], except that among the positions where a match of
    /// [`NEAR_MIN`] to [`NEAR_MAX`] bytes occurs (up to [`NEAR_CANDIDATES`] on each side of
    /// where the search ended), the one whose match `clip(position, length)` leaves longest
    /// and, among those, the one nearest `near` is returned, with its clipped length. Repeated content
    /// (the same instructions in many functions of a binary) then matches where the last copy
    /// came from: the jump to it is short, and the bytes after it more likely agree too.
    pub fn longest_match_near(
        &self,
        needle: &[u8],
        near: usize,
        clip: impl Fn(usize, usize) -> usize,
    ) -> (usize, usize) {
        let Some(found) = self.search(needle) else {
            return (0, 0);
        };
        let (len, pos) = found.best();
        let mut best = (clip(pos, len), pos);
        if !(NEAR_MIN..=NEAR_MAX).contains(&len) {
            return best;
        }
        let mut consider = |p: usize| {
            if self.text.get(p..p + len) != Some(&needle[..len]) {
                return false; // past the suffixes that share the match
            }
            let candidate = (clip(p, len), p);
            if candidate.0 > best.0
                || (candidate.0 == best.0 && p.abs_diff(near) < best.1.abs_diff(near))
            {
                best = candidate;
            }
            true
        };
        let range = found.range;
        for j in (found.at.saturating_sub(NEAR_CANDIDATES)..found.at).rev() {
            if !consider(range[j] as usize) {
                break;
            }
        }
        for &p in &range[found.at..(found.at + NEAR_CANDIDATES).min(range.len())] {
            if !consider(p as usize) {
                break;
            }
        }
        best
    }

    /// The binary search for `needle` in its two-byte bucket, or `None` when the bucket is
    /// empty (or the needle shorter than two bytes).
    fn search(&self, needle: &[u8]) -> Option<Found<'_>> {
        if needle.len() < 2 {
            return None;
        }
        let key = needle[0] as usize * 257 + needle[1] as usize + 1;
        let (lo, hi) = (self.buckets[key] as usize, self.buckets[key + 1] as usize);
        if lo == hi {
            return None;
        }
        let range = &self.sa[lo..hi];
        // Binary search for the first suffix in the bucket that is not smaller than the needle
        // (the suffix array's order: lexicographic, a proper prefix first). Every suffix between
        // two others shares at least the smaller of their common prefixes with the needle, so
        // each comparison starts there (Manber and Myers): the bytes the bounds already agree on
        // are not compared again. All suffixes in the bucket share the needle's first two bytes.
        let (mut lo, mut hi) = (0usize, range.len());
        // common prefixes of the needle with range[lo - 1] and range[hi], once those exist
        let (mut lo_lcp, mut hi_lcp) = (2usize, 2usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let suffix = &self.text[range[mid] as usize..];
            let known = lo_lcp.min(hi_lcp);
            let l = known + common_prefix(&suffix[known..], &needle[known..]);
            let smaller = l < needle.len() && (l == suffix.len() || suffix[l] < needle[l]);
            if smaller {
                lo = mid + 1;
                lo_lcp = l;
            } else {
                hi = mid;
                hi_lcp = l;
            }
        }
        Some(Found {
            range,
            at: lo,
            before: lo_lcp,
            after: hi_lcp,
        })
    }
}

/// Matches at least this long are worth looking at the neighbouring positions of the same
/// match for one nearer the current diagonal (shorter ones are not taken anyway).
pub const NEAR_MIN: usize = 16;
/// Matches longer than this are taken where the search found them: each candidate costs a
/// comparison of the match's length, and a long copy pays for its jump anyway.
pub const NEAR_MAX: usize = 256;
/// Positions looked at on each side of where the search ended.
pub const NEAR_CANDIDATES: usize = 8;

/// Where a search ended in its bucket: the suffixes before `at` are smaller than the needle,
/// and share `before` bytes with it (the one just before), `after` the one at `at`.
struct Found<'s> {
    range: &'s [i32],
    at: usize,
    before: usize,
    after: usize,
}

impl Found<'_> {
    /// The longest match, which is next to the insertion point; the earlier suffix wins a tie.
    fn best(&self) -> (usize, usize) {
        let mut best = (0, 0);
        if self.at > 0 {
            best = (self.before, self.range[self.at - 1] as usize);
        }
        if self.at < self.range.len() && self.after > best.0 {
            best = (self.after, self.range[self.at] as usize);
        }
        best
    }
}

/// Length of the common prefix of `a` and `b`.
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(text: &[u8], needle: &[u8]) -> usize {
        (0..text.len())
            .map(|p| common_prefix(&text[p..], needle))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn finds_the_longest_match() {
        let text = b"the quick brown fox jumps over the lazy dog; the quick red fox".to_vec();
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&text, &mut buf).unwrap();
        for needle in [
            &b"the quick red"[..],
            b"fox jumps",
            b"dog",
            b"zzz",
            b"e ",
            b"g",
        ] {
            let (len, pos) = sa.longest_match(needle);
            let want = brute(&text, needle);
            assert_eq!(len, if want < 2 { 0 } else { want }, "{needle:?}");
            assert_eq!(&text[pos..pos + len], &needle[..len]);
        }
    }

    #[test]
    fn finds_the_longest_match_in_repetitive_text() {
        // a three-letter alphabet makes long shared prefixes, where the search's skipping of
        // already-compared bytes matters
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let text: Vec<u8> = (0..4000).map(|_| b"abc"[(next() % 3) as usize]).collect();
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&text, &mut buf).unwrap();
        for _ in 0..3000 {
            let start = (next() % text.len() as u64) as usize;
            let len = 1 + (next() % 40) as usize;
            let mut needle = text[start..(start + len).min(text.len())].to_vec();
            if next() % 2 == 0 {
                let at = (next() % needle.len() as u64) as usize;
                needle[at] = b"abcd"[(next() % 4) as usize];
            }
            let (len, pos) = sa.longest_match(&needle);
            let want = brute(&text, &needle);
            assert_eq!(len, if want < 2 { 0 } else { want }, "{needle:?}");
            assert_eq!(&text[pos..pos + len], &needle[..len]);
        }
    }

    #[test]
    fn of_equally_long_matches_the_nearest_is_taken() {
        let mut text = crate::testing::noise(12_000, 0x9E37_79B9_7F4A_7C15);
        let repeated = text[20..60].to_vec();
        for at in [5000, 9000] {
            text[at..at + 40].copy_from_slice(&repeated);
        }
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&text, &mut buf).unwrap();
        let whole = |_: usize, len: usize| len;
        for (near, want) in [(0, 20), (4000, 5000), (8000, 9000), (11_000, 9000)] {
            assert_eq!(sa.longest_match_near(&repeated, near, whole), (40, want));
        }
        // a position whose match the caller clips shorter loses to a whole one
        let cut_at_9000 = |p: usize, len: usize| if p == 9000 { 10 } else { len };
        assert_eq!(
            sa.longest_match_near(&repeated, 9000, cut_at_9000),
            (40, 5000)
        );
        // short matches are not looked at again
        assert_eq!(
            sa.longest_match_near(&repeated[..NEAR_MIN - 1], 9000, whole),
            sa.longest_match(&repeated[..NEAR_MIN - 1])
        );
    }

    #[test]
    fn window_filter_has_no_false_negatives() {
        let text: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&text, &mut buf).unwrap();
        for p in (0..text.len() - FILTER_WINDOW).step_by(7) {
            assert!(sa.may_match_window(&text[p..]), "window at {p} missed");
        }
        let absent = (0..2000u64)
            .filter(|i| {
                let mut window = [0u8; FILTER_WINDOW];
                for (k, c) in window.chunks_exact_mut(8).enumerate() {
                    c.copy_from_slice(&(i * 0x0123_4567_89AB + k as u64).to_le_bytes());
                }
                !sa.may_match_window(&window)
            })
            .count();
        assert!(
            absent > 1500,
            "filter passes too much: {absent} of 2000 rejected"
        );
    }

    #[test]
    fn handles_runs_and_the_last_byte() {
        let text = vec![7u8; 1000];
        let mut buf = Vec::new();
        let sa = SuffixArray::build(&text, &mut buf).unwrap();
        assert_eq!(sa.longest_match(&[7u8; 2000]).0, 1000);
        let text = b"abcab".to_vec();
        let sa = SuffixArray::build(&text, &mut buf).unwrap();
        assert_eq!(sa.longest_match(b"abx").0, 2);
        assert_eq!(sa.longest_match(b"bc").0, 2);
    }
}
