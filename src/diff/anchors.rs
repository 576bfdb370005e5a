//! Content-defined anchor index over OLD. A gear rolling hash picks positions by content, so the
//! same strings of NEW select the same anchors whatever their offset; each anchor is keyed by
//! an XXH3 fingerprint of the [`ANCHOR_LEN`] bytes before it. Lookups go through a directory on
//! the fingerprint's top bits, so finding an anchor costs about two cache misses.
//!
//! [`find_runs`] then turns the anchors of a piece of NEW into verified exact matches ("runs")
//! against OLD, extended byte by byte in both directions.

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::diff::suffix::common_prefix;

/// Bytes fingerprinted at each anchor.
pub const ANCHOR_LEN: usize = 32;
/// OLD is scanned in blocks of this size, in parallel; fixed so the index never depends on the
/// thread count.
const BUILD_BLOCK: usize = 16 << 20;

/// Gear table: 256 fixed pseudo-random 64-bit values (splitmix64 of the byte).
static GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut z = (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Anchor selection: on average one anchor every `spacing` bytes, never two closer than
/// `spacing / 2`, which bounds the index at `2 * n / spacing` entries for any content.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    spacing: usize,
    mask: u64,
}

impl Sampling {
    /// `spacing` must be a power of two, at least 64.
    pub fn new(spacing: usize) -> Sampling {
        assert!(spacing.is_power_of_two() && spacing >= 64);
        // Positions pass the hash test at a rate of 2/spacing; the minimum gap of spacing/2
        // brings the mean distance back to about `spacing`.
        let bits = spacing.trailing_zeros() - 1;
        Sampling {
            spacing,
            mask: !(u64::MAX >> bits),
        }
    }

    /// Mean distance between anchors, in bytes.
    pub fn spacing(&self) -> usize {
        self.spacing
    }

    /// Largest number of anchors `len` bytes can hold.
    pub fn max_anchors(&self, len: u64) -> u64 {
        len / (self.spacing as u64 / 2) + 1
    }

    /// Calls `f(end)` for every anchor whose fingerprinted bytes are `data[end - ANCHOR_LEN..end]`
    /// (never a window of one repeated byte),
    /// for anchors ending in `from..data.len()`. The hash warms up on the bytes before `from`,
    /// so the choice at a position depends only on the 32 bytes before it (and the gap rule).
    pub fn for_each(&self, data: &[u8], from: usize, mut f: impl FnMut(usize)) {
        let warm = from.saturating_sub(ANCHOR_LEN);
        let mut h: u64 = 0;
        let mut next_allowed = from.max(ANCHOR_LEN);
        let gap = self.spacing / 2;
        for (i, &b) in data.iter().enumerate().skip(warm) {
            // shifting by 2 makes h depend on the last 32 bytes only: exactly the fingerprinted
            // window, so identical windows are selected alike in OLD and NEW however densely
            // the bytes around them changed
            h = (h << 2).wrapping_add(GEAR[b as usize]);
            let end = i + 1;
            if end >= next_allowed && h & self.mask == 0 {
                // A window of one repeated byte (zero fill, padding) matches every other such
                // window in OLD: it would only produce spurious runs, so it is not an anchor.
                let window = &data[end - ANCHOR_LEN..end];
                if window.iter().any(|&x| x != window[0]) {
                    f(end);
                }
                next_allowed = end + gap;
            }
        }
    }
}

fn fingerprint(window: &[u8]) -> u64 {
    xxh3_64(window)
}

/// Sorted (fingerprint, OLD offset) pairs with a directory on the fingerprint's top bits.
pub struct AnchorIndex {
    sampling: Sampling,
    entries: Vec<(u64, u64)>,
    directory: Vec<u32>,
    dir_shift: u32,
}

impl AnchorIndex {
    /// Bytes the index of an `old_len`-byte OLD can take at most, directory included.
    pub fn max_bytes(sampling: Sampling, old_len: u64) -> u64 {
        let n = sampling.max_anchors(old_len);
        n * 16 + (n / 2 + 2) * 4
    }

    /// Scans OLD in parallel blocks. `release(start, end)` is called after each block so the
    /// caller can drop the scanned pages.
    pub fn build(
        old: &[u8],
        sampling: Sampling,
        release: &(dyn Fn(usize, usize) + Sync),
    ) -> AnchorIndex {
        let blocks: Vec<usize> = (0..old.len().div_ceil(BUILD_BLOCK)).collect();
        let parts: Vec<Vec<(u64, u64)>> = blocks
            .par_iter()
            .map(|&b| {
                let start = b * BUILD_BLOCK;
                let end = (start + BUILD_BLOCK).min(old.len());
                let mut v = Vec::new();
                sampling.for_each(&old[..end], start, |e| {
                    v.push((
                        fingerprint(&old[e - ANCHOR_LEN..e]),
                        (e - ANCHOR_LEN) as u64,
                    ));
                });
                release(start.saturating_sub(64), end);
                v
            })
            .collect();
        let total = parts.iter().map(Vec::len).sum();
        let mut entries = Vec::with_capacity(total);
        for p in parts {
            entries.extend_from_slice(&p);
        }
        entries.par_sort_unstable();
        // Directory: about two entries per bucket.
        let bits = (usize::BITS - (total / 2).max(1).leading_zeros()).clamp(1, 32);
        let dir_shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut directory = vec![0u32; buckets + 1];
        let mut e = 0;
        for (b, slot) in directory.iter_mut().enumerate() {
            while e < entries.len() && ((entries[e].0 >> dir_shift) as usize) < b {
                e += 1;
            }
            *slot = e as u32;
        }
        AnchorIndex {
            sampling,
            entries,
            directory,
            dir_shift,
        }
    }

    /// How anchors were chosen.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Anchors in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether OLD yielded no anchor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * 16 + self.directory.capacity() * 4
    }

    /// OLD offsets (start of the fingerprinted bytes) whose fingerprint equals `fp`: the two
    /// nearest to `expected` first (continuity: content usually stays where it was relative to
    /// its neighbours), then the two lowest, four at most.
    fn lookup(&self, fp: u64, expected: u64) -> impl Iterator<Item = u64> + '_ {
        let b = (fp >> self.dir_shift) as usize;
        let lo = self.directory[b] as usize;
        let hi = self.directory[b + 1] as usize;
        let bucket = &self.entries[lo..hi];
        let first = bucket.partition_point(|&(f, _)| f < fp);
        let count = bucket[first..].partition_point(|&(f, _)| f == fp);
        let same = &bucket[first..first + count]; // sorted by offset
        let near = same.partition_point(|&(_, o)| o < expected);
        let picks = [near.wrapping_sub(1), near, 0, 1];
        picks
            .into_iter()
            .enumerate()
            .filter(move |&(k, i)| i < same.len() && !picks[..k].contains(&i))
            .map(move |(_, i)| same[i].1)
    }
}

/// A verified exact match: `new[new_pos..new_pos + len] == old[old_pos..old_pos + len]`, with
/// `new_pos` relative to the piece of NEW that was searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Where the run starts in the piece of NEW.
    pub new_pos: usize,
    /// Where it starts in OLD.
    pub old_pos: u64,
    /// Its length.
    pub len: usize,
}

/// Random-access reads of OLD for [`find_runs`]. The diff reads through the file
/// (`inputs::Mapped`): anchor candidates land anywhere in OLD, and touching a mapping there would
/// fault in (and count toward RSS) a 64 KiB window around each candidate.
pub trait OldSource: Sync {
    /// Copies bytes at `pos` into `buf`; returns how many (fewer only at the end of OLD).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize;
}

impl OldSource for dyn crate::files::Source + '_ {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize {
        crate::files::Source::read_at(self, pos, buf)
    }
}

impl OldSource for [u8] {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize {
        let start = (pos as usize).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        n
    }
}

/// Block size of the comparisons in [`find_runs`].
const READ_BLOCK: usize = 4096;

/// Length of the common prefix of OLD from `pos` and `new`.
fn agree_forward(old: &(impl OldSource + ?Sized), pos: u64, new: &[u8]) -> usize {
    let mut buf = [0u8; READ_BLOCK];
    let mut done = 0;
    while done < new.len() {
        let want = (new.len() - done).min(READ_BLOCK);
        let got = old.read_at(pos + done as u64, &mut buf[..want]);
        let same = common_prefix(&buf[..got], &new[done..done + got]);
        done += same;
        if same < want {
            break;
        }
    }
    done
}

/// Length of the common suffix of OLD before `pos` and `new`.
fn agree_backward(old: &(impl OldSource + ?Sized), pos: u64, new: &[u8]) -> usize {
    let mut buf = [0u8; READ_BLOCK];
    let limit = new.len().min(pos as usize);
    let mut done = 0;
    while done < limit {
        let want = (limit - done).min(READ_BLOCK);
        let at = pos - (done + want) as u64;
        let got = old.read_at(at, &mut buf[..want]);
        let theirs = &buf[..got];
        let ours = &new[new.len() - done - want..new.len() - done];
        let same = theirs
            .iter()
            .rev()
            .zip(ours.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        done += same;
        if same < want {
            break;
        }
    }
    done
}

/// Finds exact runs of `piece` (a part of NEW) in `old`, in increasing `new_pos` and without
/// overlap in NEW. Runs are extended forward and backward as far as the bytes agree.
/// `expected` is where in OLD the piece's first byte is expected to have come from (used until
/// the first run sets the diagonal).
pub fn find_runs(
    index: &AnchorIndex,
    old: &(impl OldSource + ?Sized),
    piece: &[u8],
    expected: u64,
) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut covered = 0usize; // NEW bytes before this are part of a run already
    let mut last_diag: Option<i128> = None;
    let mut window_buf = [0u8; ANCHOR_LEN];
    index.sampling.for_each(piece, 0, |end| {
        if end <= covered + ANCHOR_LEN {
            return;
        }
        let start = end - ANCHOR_LEN;
        let window = &piece[start..end];
        let fp = fingerprint(window);
        let mut best: Option<Run> = None;
        let diag = last_diag.unwrap_or(expected as i128);
        let near = (start as i128 + diag).clamp(0, u64::MAX as i128) as u64;
        for o in index.lookup(fp, near) {
            if old.read_at(o, &mut window_buf) != ANCHOR_LEN || window_buf != *window {
                continue; // fingerprint collision
            }
            let fwd = agree_forward(old, o + ANCHOR_LEN as u64, &piece[end..]);
            let back = agree_backward(old, o, &piece[covered..start]);
            let run = Run {
                new_pos: start - back,
                old_pos: o - back as u64,
                len: back + ANCHOR_LEN + fwd,
            };
            // among equally long runs, the one closest to the previous run's diagonal
            let distance = |r: &Run| (r.old_pos as i128 - r.new_pos as i128 - diag).unsigned_abs();
            let better = match best {
                None => true,
                Some(b) => run.len > b.len || (run.len == b.len && distance(&run) < distance(&b)),
            };
            if better {
                best = Some(run);
            }
        }
        if let Some(run) = best {
            last_diag = Some(run.old_pos as i128 - run.new_pos as i128);
            covered = run.new_pos + run.len;
            runs.push(run);
        }
    });
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noise;

    #[test]
    fn anchors_are_shift_invariant() {
        let data = noise(1 << 16, 7);
        let s = Sampling::new(128);
        let mut a = Vec::new();
        s.for_each(&data, 0, |e| a.push(e));
        let mut shifted = noise(1000, 9);
        shifted.extend_from_slice(&data);
        let mut b = Vec::new();
        s.for_each(&shifted, 0, |e| {
            if e >= 1000 {
                b.push(e - 1000)
            }
        });
        // after the first few anchors the two selections agree exactly
        let tail_a: Vec<_> = a.iter().filter(|&&e| e > 2000).collect();
        let tail_b: Vec<_> = b.iter().filter(|&&e| e > 2000).collect();
        assert_eq!(tail_a, tail_b);
        assert!(a.len() > 300 && a.len() < 1100, "{} anchors", a.len());
    }

    #[test]
    fn runs_find_moved_content() {
        let old = noise(1 << 18, 1);
        let mut new = old[100_000..150_000].to_vec();
        new.extend_from_slice(&noise(3000, 5));
        new.extend_from_slice(&old[10_000..60_000]);
        let index = AnchorIndex::build(&old, Sampling::new(128), &|_, _| {});
        let runs = find_runs(&index, &old[..], &new, 0);
        assert!(runs.len() >= 2);
        assert_eq!(runs[0].new_pos, 0);
        assert_eq!(runs[0].old_pos, 100_000);
        assert_eq!(runs[0].len, 50_000);
        let last = runs.last().unwrap();
        assert_eq!(last.new_pos + last.len, new.len());
        assert_eq!(last.old_pos as usize + last.len, 60_000);
        for r in &runs {
            assert_eq!(
                &new[r.new_pos..r.new_pos + r.len],
                &old[r.old_pos as usize..][..r.len]
            );
        }
    }

    #[test]
    fn zero_runs_keep_the_index_bounded() {
        let old = vec![0u8; 1 << 20];
        let s = Sampling::new(256);
        let index = AnchorIndex::build(&old, s, &|_, _| {});
        assert!(index.len() as u64 <= s.max_anchors(old.len() as u64));
    }
}
