//! Which copies pay for themselves: between matching and encoding, a chunk's operations as the
//! matcher found them, with every copy that costs more than inserting its bytes folded into the
//! inserts around it.
//!
//! bsdiff's matcher takes a match wherever it beats the current diagonal by 8 bytes, so a
//! relinked binary comes out as over a million short copies (most 8-64 bytes), many of them
//! approximate. Each copy costs control bytes (its length, its insert length and the jump from
//! the last copy's end, which is close to random and barely compresses) and, for each byte
//! that differs from OLD, add bytes that break the runs of zeros; inserting the same bytes
//! costs only what zstd makes of them next to the other inserted bytes. HDiffPatch keeps a
//! match only when it pays for its control bytes; this is the same idea as a post-pass over
//! one chunk, with a score in bytes:
//!
//! ```text
//! score = copy length - NONZERO_ADD_COST * (add bytes that are not zero)
//!                     - MOVE_BYTE_COST * (varint bytes of the jump from the last kept copy)
//! ```
//!
//! A copy scoring under [`MIN_SCORE`] is dropped: its bytes join the previous operation's insert
//! (or a copy-less first operation). The weights were fitted on the corpus (docs/ARCHITECTURE.md,
//! "Against HDiffPatch"); the rule depends on the chunk alone, so patches stay the same whatever
//! the thread count, and the result always rebuilds the same NEW bytes.
//!
//! ```
//! use spindiff::internals::matcher::{Delta, Op, rebuild};
//! use spindiff::internals::select::paying_copies;
//!
//! let old = b"the quick brown fox jumps over the lazy dog".to_vec();
//! let new = b"THE quick brown fox jumps over the lazy cat".to_vec();
//! // a 3-byte approximate copy, then an exact 37-byte copy far away, then an insert
//! let delta = Delta {
//!     ops: vec![
//!         Op { old_pos: 0, copy: 3, insert: 0 },
//!         Op { old_pos: 3, copy: 37, insert: 3 },
//!     ],
//!     add: new[..40].iter().zip(&old).map(|(n, o)| n.wrapping_sub(*o)).collect(),
//!     insert: b"cat".to_vec(),
//! };
//! let kept = paying_copies(delta, &new);
//! assert_eq!(kept.ops[0], Op { old_pos: 0, copy: 0, insert: 3 });
//! assert_eq!(rebuild(&kept, &old), new);
//! ```

use super::matcher::{Delta, Op};
use crate::format::varint::zigzag;

/// Score lost per add byte that is not zero (a byte where the copy differs from OLD).
pub const NONZERO_ADD_COST: i64 = 3;
/// Score lost per varint byte of the jump from the end of the last kept copy.
pub const MOVE_BYTE_COST: i64 = 8;
/// A copy scoring less is inserted instead.
pub const MIN_SCORE: i64 = 8;

/// `delta` (the operations of the chunk `new`) with the copies that do not pay for themselves
/// turned into inserted bytes.
pub fn paying_copies(delta: Delta, new: &[u8]) -> Delta {
    let mut kept = Delta {
        ops: Vec::with_capacity(delta.ops.len()),
        add: Vec::with_capacity(delta.add.len()),
        insert: Vec::with_capacity(delta.insert.len()),
    };
    // cursors into the add stream, the insert stream and the chunk
    let (mut add_at, mut insert_at, mut new_at) = (0usize, 0usize, 0usize);
    // end in OLD of the last copy kept: what the next copy's jump is encoded against
    let mut last_end = 0u64;
    for op in &delta.ops {
        let (copy, insert) = (op.copy as usize, op.insert as usize);
        let add = &delta.add[add_at..add_at + copy];
        if copy == 0 || pays(op, add, last_end) {
            if copy > 0 {
                last_end = op.old_pos + u64::from(op.copy);
            }
            kept.add.extend_from_slice(add);
            kept.insert
                .extend_from_slice(&delta.insert[insert_at..insert_at + insert]);
            match kept.ops.last_mut() {
                // a copy-less op after another is folded into it, as the matcher does
                Some(prev) if copy == 0 => prev.insert += op.insert,
                _ => kept.ops.push(*op),
            }
        } else {
            kept.insert
                .extend_from_slice(&new[new_at..new_at + copy + insert]);
            let bytes = op.copy + op.insert;
            match kept.ops.last_mut() {
                Some(prev) => prev.insert += bytes,
                None => kept.ops.push(Op {
                    old_pos: 0,
                    copy: 0,
                    insert: bytes,
                }),
            }
        }
        add_at += copy;
        insert_at += insert;
        new_at += copy + insert;
    }
    kept
}

/// Whether the copy of `op` (its add bytes `add`) scores at least [`MIN_SCORE`] after the last
/// kept copy ended at `last_end`.
fn pays(op: &Op, add: &[u8], last_end: u64) -> bool {
    let differing = add.iter().filter(|&&b| b != 0).count() as i64;
    let jump = zigzag(op.old_pos.wrapping_sub(last_end) as i64);
    let jump_bytes = i64::from((64 - jump.leading_zeros()).max(1).div_ceil(7));
    let score = i64::from(op.copy) - NONZERO_ADD_COST * differing - MOVE_BYTE_COST * jump_bytes;
    score >= MIN_SCORE
}

#[cfg(test)]
mod tests {
    use super::super::matcher::rebuild;
    use super::*;
    use crate::testing::noise;
    use proptest::prelude::*;

    fn delta_of(ops: Vec<Op>, old: &[u8], new: &[u8]) -> Delta {
        let (mut add, mut insert, mut at) = (Vec::new(), Vec::new(), 0usize);
        for op in &ops {
            let o = op.old_pos as usize;
            for i in 0..op.copy as usize {
                add.push(new[at + i].wrapping_sub(old[o + i]));
            }
            at += op.copy as usize;
            insert.extend_from_slice(&new[at..at + op.insert as usize]);
            at += op.insert as usize;
        }
        Delta { ops, add, insert }
    }

    #[test]
    fn a_long_exact_copy_is_kept_and_a_short_far_one_is_inserted() {
        let old = noise(100_000, 1);
        let mut new = old[50_000..51_000].to_vec();
        new.extend_from_slice(&old[10..22]); // 12 bytes from far away
        new.extend_from_slice(&old[51_012..52_000]);
        let ops = vec![
            Op {
                old_pos: 50_000,
                copy: 1000,
                insert: 0,
            },
            Op {
                old_pos: 10,
                copy: 12,
                insert: 0,
            },
            Op {
                old_pos: 51_012,
                copy: 988,
                insert: 0,
            },
        ];
        let kept = paying_copies(delta_of(ops, &old, &new), &new);
        assert_eq!(
            kept.ops,
            [
                Op {
                    old_pos: 50_000,
                    copy: 1000,
                    insert: 12
                },
                Op {
                    old_pos: 51_012,
                    copy: 988,
                    insert: 0
                }
            ]
        );
        assert_eq!(kept.insert, &old[10..22]);
        assert_eq!(rebuild(&kept, &old), new);
    }

    #[test]
    fn an_approximate_copy_pays_only_while_most_bytes_agree() {
        let old = noise(10_000, 2);
        let mut new = old[1000..1100].to_vec();
        let op = Op {
            old_pos: 1000,
            copy: 100,
            insert: 0,
        };
        assert_eq!(
            paying_copies(delta_of(vec![op], &old, &new), &new).ops,
            [op]
        );
        for b in new.iter_mut().step_by(3) {
            *b ^= 0x55;
        }
        let kept = paying_copies(delta_of(vec![op], &old, &new), &new);
        assert_eq!(kept.ops[0].copy, 0);
        assert_eq!(rebuild(&kept, &old), new);
    }

    proptest! {
        #[test]
        fn selection_never_changes_the_output(
            seed in 0u64..1000,
            cuts in proptest::collection::vec((0usize..3000, 0usize..40, 0usize..5), 1..40),
        ) {
            let old = noise(4000, seed);
            let mut new = Vec::new();
            let mut ops = Vec::new();
            for (pos, copy, insert) in cuts {
                let copy = copy.min(old.len() - pos);
                let mut bytes = old[pos..pos + copy].to_vec();
                if let Some(b) = bytes.get_mut(copy / 2) {
                    *b = b.wrapping_add(seed as u8 | 1);
                }
                new.extend_from_slice(&bytes);
                new.extend(noise(insert, seed + pos as u64));
                if copy + insert > 0 {
                    ops.push(Op { old_pos: pos as u64, copy: copy as u32, insert: insert as u32 });
                }
            }
            let delta = delta_of(ops, &old, &new);
            let kept = paying_copies(delta.clone(), &new);
            prop_assert_eq!(rebuild(&kept, &old), new.clone());
            prop_assert!(kept.ops.len() <= delta.ops.len());
            prop_assert!(kept.ops.iter().skip(1).all(|o| o.copy > 0));
        }
    }
}
