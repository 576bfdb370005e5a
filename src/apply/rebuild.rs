//! Rebuilding a chunk from its decoded streams and OLD, and verifying it: the only way to a
//! [`VerifiedChunk`], the only thing the output accepts.

use std::path::Path;

use xxhash_rust::xxh3::xxh3_128;

use super::OldReader;
use super::decode::DecodedChunk;
use crate::error::{Error, Result};
use crate::format::{self, AddRuns, Ops};

/// Output bytes of one chunk whose XXH3-128 matched the patch. Only [`apply_chunk`] makes one.
pub struct VerifiedChunk {
    index: u64,
    bytes: Vec<u8>,
}

impl VerifiedChunk {
    /// The chunk's number.
    pub fn index(&self) -> u64 {
        self.index
    }
    /// The chunk's output bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Rebuilds one chunk from its decoded streams and OLD, then verifies it.
pub fn apply_chunk(
    chunk: DecodedChunk,
    old: &dyn OldReader,
    patch_path: &Path,
) -> Result<VerifiedChunk> {
    let h = &chunk.header;
    let corrupt = |what: String| {
        Error::corrupt(
            patch_path,
            chunk.patch_offset,
            format!("chunk {}: {what}", h.index),
        )
    };
    let mut out = vec![0u8; h.new_len as usize];
    let (mut o, mut a, mut x) = (0usize, 0u64, 0usize);
    let mut ops = Ops::new(&chunk.ctrl, h.new_len, old.len());
    let mut add = AddRuns::new(&chunk.add);
    while let Some(op) = ops.next_op().map_err(corrupt)? {
        // Ops guarantees that copy + insert fits what is left of the output.
        if x + op.insert > chunk.insert.len() {
            return Err(corrupt(
                "operations insert more bytes than the insert stream holds".into(),
            ));
        }
        let dst = &mut out[o..o + op.copy];
        old.read_exact_at(dst, op.old_pos)?;
        add.apply(dst, a).map_err(corrupt)?;
        o += op.copy;
        a += op.copy as u64;
        out[o..o + op.insert].copy_from_slice(&chunk.insert[x..x + op.insert]);
        o += op.insert;
        x += op.insert;
    }
    add.finish().map_err(corrupt)?;
    if x != chunk.insert.len() {
        return Err(corrupt("insert stream has bytes no operation uses".into()));
    }
    if !format::checksum_matches(xxh3_128(&out), h.output_hash) {
        return Err(Error::OutputMismatch {
            path: patch_path.to_path_buf(),
            what: format!(
                "chunk {} (output bytes {}..{}) has the wrong checksum",
                h.index,
                h.new_offset,
                h.new_offset + u64::from(h.new_len)
            ),
        });
    }
    Ok(VerifiedChunk {
        index: h.index,
        bytes: out,
    })
}
