//! Varints (docs/FORMAT.md, "Control stream"): unsigned LEB128, and zigzag for signed values.

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed value as an unsigned one, small magnitudes small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Reads varints from untrusted bytes: `None` for one that is cut short or overflows 64 bits.
pub struct Varints<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Varints<'a> {
    /// Reads varints from `data`, starting at `at`.
    pub fn new(data: &'a [u8], at: usize) -> Varints<'a> {
        Varints { data, at }
    }

    /// Where the next varint starts.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The next `n` bytes as they are, or `None` when fewer are left.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(b)
    }

    #[allow(clippy::should_implement_trait)] // an Iterator would hide where the stream broke
    /// The next varint, or `None` for one cut short or over 64 bits.
    pub fn next(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at)?;
            self.at += 1;
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reject_overflow() {
        let values = [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        let mut out = Vec::new();
        for v in values {
            put_varint(&mut out, v);
        }
        let mut r = Varints::new(&out, 0);
        for v in values {
            assert_eq!(r.next(), Some(v));
        }
        assert_eq!(r.next(), None);
        let too_long = [0xff; 10];
        assert_eq!(Varints::new(&too_long, 0).next(), None);
        for v in [0i64, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
