//! The add stream (docs/FORMAT.md, "Add stream"): sparse, carry-aware runs. [`add_runs`]
//! writes it from the bytes NEW differs from OLD by over the copies; [`AddRuns`] reads it from
//! an untrusted patch and adds it into copied bytes, checking every run as it is used.

use super::Op;
use super::varint::{Varints, put_varint};

/// The add stream in its sparse, carry-aware form. The copied bytes of all ops, laid end to
/// end, form the "add space". Each maximal run of bytes where NEW differs from OLD is stored as
/// `gap` (varint: distance from the start of the previous run, or from 0), `len * 2 + mode`
/// (varint), then `len` bytes of a little-endian magnitude `M`. Mode 0 means NEW = OLD + M over
/// the run, mode 1 NEW = OLD - M; the carry (or borrow) of that arithmetic propagates past the
/// stored bytes until it is absorbed, so `M` is stored without its trailing zero bytes. A
/// pointer shifted by a constant therefore always stores the same few bytes, whatever carries
/// its addition caused. Runs never cross from one op's copy into the next.
///
/// `new` is the chunk's output, `ops` its operations and `add` the byte-wise differences over
/// their copies, laid end to end.
pub fn add_runs(new: &[u8], ops: &[Op], add: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut o, mut a) = (0usize, 0usize);
    let mut last_start = 0usize;
    let mut magnitude = Vec::new();
    let all = add;
    for op in ops {
        let copy = op.copy as usize;
        let add = &all[a..a + copy];
        let mut j = 0;
        while j < copy {
            if add[j] == 0 {
                j += 1;
                continue;
            }
            let mut k = j;
            while k < copy && add[k] != 0 {
                k += 1;
            }
            let n = &new[o + j..o + k];
            let old = |t: usize| n[t].wrapping_sub(add[j + t]);
            // NEW - OLD over the run; a final borrow means OLD > NEW, so store OLD - NEW
            let borrow = subtract(&mut magnitude, n.len(), |t| n[t], old);
            let mode = if borrow {
                subtract(&mut magnitude, n.len(), old, |t| n[t]);
                1
            } else {
                0
            };
            while magnitude.last() == Some(&0) {
                magnitude.pop();
            }
            put_varint(&mut out, (a + j - last_start) as u64);
            put_varint(&mut out, (magnitude.len() as u64) << 1 | mode);
            out.extend_from_slice(&magnitude);
            last_start = a + j;
            j = k;
        }
        o += copy + op.insert as usize;
        a += copy;
    }
    out
}

/// `out = x - y` over `len` little-endian bytes; returns the final borrow.
fn subtract(
    out: &mut Vec<u8>,
    len: usize,
    x: impl Fn(usize) -> u8,
    y: impl Fn(usize) -> u8,
) -> bool {
    out.clear();
    let mut borrow = 0i16;
    for t in 0..len {
        let v = i16::from(x(t)) - i16::from(y(t)) - borrow;
        borrow = i16::from(v < 0);
        out.push(v as u8);
    }
    borrow != 0
}

/// Reads the sparse add runs (see [`add_runs`]) and adds them into copied bytes.
pub struct AddRuns<'a> {
    data: &'a [u8],
    at: usize,
    /// Add-space start, stored length and mode of the run read but not yet applied.
    next: Option<(u64, usize, bool)>,
    last_start: u64,
    last_end: u64,
}

impl<'a> AddRuns<'a> {
    /// Reads the decoded add stream `data`.
    pub fn new(data: &'a [u8]) -> AddRuns<'a> {
        AddRuns {
            data,
            at: 0,
            next: None,
            last_start: 0,
            last_end: 0,
        }
    }

    fn read_next(&mut self) -> Result<(u64, usize, bool), String> {
        let mut cursor = Varints::new(self.data, self.at);
        let (Some(gap), Some(len_mode)) = (cursor.next(), cursor.next()) else {
            return Err("malformed add stream".into());
        };
        let start = self
            .last_start
            .checked_add(gap)
            .ok_or("add run out of range")?;
        if start < self.last_end {
            return Err("add runs overlap".into());
        }
        let subtract = len_mode & 1 == 1;
        let len = usize::try_from(len_mode >> 1)
            .ok()
            .filter(|&l| l > 0 && l <= self.data.len() - cursor.position());
        let Some(len) = len else {
            return Err("add run longer than the add stream".into());
        };
        self.at = cursor.position();
        Ok((start, len, subtract))
    }

    /// Adds every run that starts inside the copy `out`, whose first byte is at `region_start`
    /// in add space. A run that starts inside and ends outside is an error.
    pub fn apply(&mut self, out: &mut [u8], region_start: u64) -> Result<(), String> {
        let region_end = region_start + out.len() as u64;
        loop {
            let (start, len, subtract) = match self.next {
                Some(run) => run,
                None if self.at == self.data.len() => return Ok(()),
                None => {
                    let run = self.read_next()?;
                    self.next = Some(run);
                    run
                }
            };
            if start >= region_end {
                return Ok(());
            }
            if start < region_start || start + len as u64 > region_end {
                return Err("add run crosses the end of a copy".into());
            }
            let at = (start - region_start) as usize;
            let magnitude = &self.data[self.at..self.at + len];
            let mut carry = 0u8;
            let mut i = at;
            // the magnitude, then its carry (or borrow) until absorbed, all inside this copy
            while i < at + len || carry != 0 {
                let Some(d) = out.get_mut(i) else {
                    return Err("add run carries past the end of a copy".into());
                };
                let m = magnitude.get(i - at).copied().unwrap_or(0);
                let (v, c) = if subtract {
                    let (v1, b1) = d.overflowing_sub(m);
                    let (v2, b2) = v1.overflowing_sub(carry);
                    (v2, b1 | b2)
                } else {
                    let (v1, c1) = d.overflowing_add(m);
                    let (v2, c2) = v1.overflowing_add(carry);
                    (v2, c1 | c2)
                };
                *d = v;
                carry = u8::from(c);
                i += 1;
            }
            self.at += len;
            self.last_start = start;
            self.last_end = region_start + i as u64;
            self.next = None;
        }
    }

    /// Errors if runs are left over after the last copy.
    pub fn finish(&self) -> Result<(), String> {
        if self.next.is_some() || self.at != self.data.len() {
            return Err("add runs beyond the copied bytes".into());
        }
        Ok(())
    }
}
