//! Test data: deterministic "binary-like" bytes and the edits a new release makes to them.
#![allow(dead_code)]

pub mod cli;
pub mod fuzzing;
pub mod images;

/// xorshift64* stream.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Bytes that look like a binary: code-like noise, zero padding, tables of little-endian
/// pointers and repeated strings.
pub fn binary_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match rng.below(4) {
            0 => {
                let n = 64 + rng.below(4096);
                out.extend(rng.bytes(n))
            }
            1 => out.extend(std::iter::repeat_n(0u8, rng.below(512))),
            2 => {
                let base = rng.next() as u32 & 0x00ff_ffff;
                for i in 0..(16 + rng.below(256)) as u32 {
                    out.extend_from_slice(&(base + i * 24).to_le_bytes());
                    out.extend_from_slice(&rng.bytes(4));
                }
            }
            _ => {
                let word = format!("symbol_{}_name\0", rng.below(100));
                for _ in 0..rng.below(32) {
                    out.extend_from_slice(word.as_bytes());
                }
            }
        }
    }
    out.truncate(len);
    out
}

/// One edit of the kinds a new release makes.
#[derive(Debug, Clone)]
pub enum Edit {
    Insert {
        at: usize,
        len: usize,
        seed: u64,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Replace {
        at: usize,
        len: usize,
        seed: u64,
    },
    Move {
        from: usize,
        len: usize,
        to: usize,
    },
    /// 4-byte LE words at a 16-byte stride over `len` bytes get `delta` added.
    ShiftPointers {
        at: usize,
        len: usize,
        delta: u32,
    },
}

/// Applies edits; positions are taken modulo the current length so any edit list is valid.
pub fn edit(old: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = old.to_vec();
    for e in edits {
        let n = v.len();
        match *e {
            Edit::Insert { at, len, seed } => {
                let at = at % (n + 1);
                let bytes = Rng(seed | 1).bytes(len);
                v.splice(at..at, bytes);
            }
            Edit::Delete { at, len } if n > 0 => {
                let at = at % n;
                let end = (at + len).min(n);
                v.drain(at..end);
            }
            Edit::Replace { at, len, seed } if n > 0 => {
                let at = at % n;
                let end = (at + len).min(n);
                let bytes = Rng(seed | 1).bytes(end - at);
                v[at..end].copy_from_slice(&bytes);
            }
            Edit::Move { from, len, to } if n > 0 => {
                let from = from % n;
                let end = (from + len).min(n);
                let block: Vec<u8> = v.drain(from..end).collect();
                let to = to % (v.len() + 1);
                v.splice(to..to, block);
            }
            Edit::ShiftPointers { at, len, delta } if n > 0 => {
                let at = at % n;
                let end = (at + len).min(n);
                let mut i = at;
                while i + 4 <= end {
                    let w = u32::from_le_bytes(v[i..i + 4].try_into().unwrap()).wrapping_add(delta);
                    v[i..i + 4].copy_from_slice(&w.to_le_bytes());
                    i += 16;
                }
            }
            _ => {}
        }
    }
    v
}

/// A release-like edit list.
pub fn release_edits(len: usize, count: usize, seed: u64) -> Vec<Edit> {
    let mut rng = Rng(seed | 1);
    (0..count)
        .map(|_| match rng.below(5) {
            0 => Edit::Insert {
                at: rng.below(len),
                len: 1 + rng.below(3000),
                seed: rng.next(),
            },
            1 => Edit::Delete {
                at: rng.below(len),
                len: 1 + rng.below(3000),
            },
            2 => Edit::Replace {
                at: rng.below(len),
                len: 1 + rng.below(64),
                seed: rng.next(),
            },
            3 => Edit::Move {
                from: rng.below(len),
                len: 1 + rng.below(len / 8 + 1),
                to: rng.below(len),
            },
            _ => Edit::ShiftPointers {
                at: rng.below(len),
                len: 64 + rng.below(8192),
                delta: rng.next() as u32 & 0xfffff,
            },
        })
        .collect()
}
