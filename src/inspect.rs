//! `inspect`: what a patch holds, read front to back with every record checked, payloads
//! skipped.

use std::path::Path;

use crate::error::Result;
use crate::files::{PatchInput, Reads};
use crate::format::{
    ADD, CHUNK_HEADER_LEN, CTRL, ContainerReader, FOOTER_LEN, HEADER_LEN, Header, INSERT, index_len,
};

/// Summary of a patch.
#[derive(Debug, Clone)]
pub struct PatchInfo {
    /// The patch's header.
    pub header: Header,
    /// The patch's length.
    pub patch_len: u64,
    /// Compressed bytes of the control, add and insert streams over all chunks.
    pub compressed: [u64; 3],
    /// Decoded bytes of the same streams.
    pub raw: [u64; 3],
    /// Bytes of container framing (header, chunk headers, index, footer).
    pub framing: u64,
}

impl PatchInfo {
    /// Patch size over NEW size.
    pub fn ratio(&self) -> f64 {
        self.patch_len as f64 / self.header.new_size.max(1) as f64
    }
}

pub fn inspect_patch(path: &Path) -> Result<PatchInfo> {
    let input = PatchInput::open(path, &mut Reads::new())?;
    let mut reader = ContainerReader::new(input.into_reader(1 << 20), path)?;
    let header = reader.header().clone();
    let (mut compressed, mut raw) = ([0u64; 3], [0u64; 3]);
    let mut chunks = 0u64;
    while let Some(ch) = reader.next_chunk_header()? {
        for i in [CTRL, ADD, INSERT] {
            compressed[i] += u64::from(ch.compressed[i]);
            raw[i] += u64::from(ch.raw[i]);
        }
        chunks += 1;
    }
    let framing =
        (HEADER_LEN + FOOTER_LEN) as u64 + chunks * CHUNK_HEADER_LEN as u64 + index_len(chunks);
    Ok(PatchInfo {
        patch_len: framing + compressed.iter().sum::<u64>(),
        header,
        compressed,
        raw,
        framing,
    })
}
