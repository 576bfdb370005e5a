//! The control stream (docs/FORMAT.md, "Control stream"): per operation `copy`, `insert`, and
//! the zigzag distance from the end of the previous copy in OLD to this copy's start, as
//! varints. [`control_stream`] writes it; [`Ops`] reads it from an untrusted patch, checking
//! every operation against OLD's size and the chunk's output before it is used.

use super::varint::{Varints, put_varint, unzigzag, zigzag};

/// One operation: copy `copy` bytes from OLD at `old_pos`, adding the next `copy` add bytes,
/// then insert the next `insert` bytes verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// Where the copy starts in OLD.
    pub old_pos: u64,
    /// Bytes copied from OLD (with the add stream added).
    pub copy: u32,
    /// Bytes then inserted from the insert stream.
    pub insert: u32,
}

/// The control stream of `ops`: per op `copy`, `insert`, then the zigzag distance from the end of
/// the previous copy in OLD to this copy's start (0 for a copy-less op).
pub fn control_stream(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ops.len() * 4);
    let mut prev_end: u64 = 0;
    for op in ops {
        put_varint(&mut out, u64::from(op.copy));
        put_varint(&mut out, u64::from(op.insert));
        if op.copy == 0 {
            put_varint(&mut out, 0);
        } else {
            put_varint(&mut out, zigzag(op.old_pos.wrapping_sub(prev_end) as i64));
            prev_end = op.old_pos + u64::from(op.copy);
        }
    }
    out
}

/// One checked operation: `old_pos + copy <= old_size`, and the copy and insert fit in what is
/// left of the chunk's output and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedOp {
    /// Where the copy starts in OLD.
    pub old_pos: u64,
    /// Bytes copied from OLD.
    pub copy: usize,
    /// Bytes then inserted.
    pub insert: usize,
}

/// Reads the control stream op by op, checking each against OLD's size and the chunk's output.
pub struct Ops<'a> {
    ctrl: &'a [u8],
    at: usize,
    prev_end: u64,
    old_size: u64,
    left: u64,
}

impl<'a> Ops<'a> {
    /// Reads `ctrl`, the control stream of a chunk of `new_len` output bytes, against OLD of
    /// `old_size` bytes.
    pub fn new(ctrl: &'a [u8], new_len: u32, old_size: u64) -> Ops<'a> {
        Ops {
            ctrl,
            at: 0,
            prev_end: 0,
            old_size,
            left: u64::from(new_len),
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut cursor = Varints::new(self.ctrl, self.at);
        let v = cursor.next();
        self.at = cursor.position();
        v
    }

    /// The next op; `Ok(None)` at the end of the stream. Errors carry a description.
    pub fn next_op(&mut self) -> Result<Option<CheckedOp>, String> {
        if self.at == self.ctrl.len() {
            if self.left != 0 {
                return Err(format!(
                    "control stream ends {} bytes short of the output",
                    self.left
                ));
            }
            return Ok(None);
        }
        let (copy, insert, delta) = match (self.varint(), self.varint(), self.varint()) {
            (Some(c), Some(i), Some(d)) => (c, i, d),
            _ => return Err("malformed control stream".into()),
        };
        let total = copy
            .checked_add(insert)
            .filter(|&t| t <= self.left && t > 0);
        let Some(total) = total else {
            return Err("operation runs past the end of the chunk".into());
        };
        let signed = unzigzag(delta);
        let old_pos = if copy == 0 {
            if signed != 0 {
                return Err("copy-less operation moves in OLD".into());
            }
            self.prev_end
        } else {
            let p = i128::from(self.prev_end) + i128::from(signed);
            if p < 0 || p + i128::from(copy) > i128::from(self.old_size) {
                return Err("operation reads outside OLD".into());
            }
            self.prev_end = p as u64 + copy;
            p as u64
        };
        self.left -= total;
        Ok(Some(CheckedOp {
            old_pos,
            copy: copy as usize,
            insert: insert as usize,
        }))
    }
}
