//! Decoding of a chunk record read from an untrusted patch: each stream is decompressed into a
//! buffer of exactly the length the (already bounds-checked) header declares, and the control
//! stream is read op by op with every value checked before use. Produces a [`DecodedChunk`];
//! only `apply` turns that into output bytes.

use std::path::Path;

use zstd::bulk::Decompressor;

use crate::error::{Error, Result};
use crate::format::{ADD, CHUNK_HEADER_LEN, CTRL, ChunkHeader, CompressedChunk, INSERT};

/// A chunk whose streams decompressed to exactly their declared lengths. Its operations are
/// still unchecked: [`Ops`] checks each as it is read.
pub struct DecodedChunk {
    pub header: ChunkHeader,
    pub ctrl: Vec<u8>,
    pub add: Vec<u8>,
    pub insert: Vec<u8>,
    pub patch_offset: u64,
}

/// Decompresses the three streams of `chunk`.
pub fn decode_chunk(chunk: CompressedChunk, path: &Path) -> Result<DecodedChunk> {
    let h = &chunk.header;
    let mut streams: [Vec<u8>; 3] = Default::default();
    let mut at = 0usize;
    let mut decompressor =
        Decompressor::new().map_err(|e| Error::corrupt(path, chunk.patch_offset, e.to_string()))?;
    for i in [CTRL, ADD, INSERT] {
        let clen = h.compressed[i] as usize;
        let frame = &chunk.payload[at..at + clen];
        let offset = chunk.patch_offset + CHUNK_HEADER_LEN as u64 + at as u64;
        at += clen;
        let raw = h.raw[i] as usize;
        if raw == 0 {
            continue;
        }
        // Exactly one frame, filling the stream: zstd would also decode frames (or skippable
        // frames) concatenated after the first, which the format does not allow.
        if zstd::zstd_safe::find_frame_compressed_size(frame) != Ok(clen) {
            return Err(Error::corrupt(
                path,
                offset,
                format!(
                    "chunk {}: stream {i} is not exactly one zstd frame",
                    h.index
                ),
            ));
        }
        let mut buf = Vec::with_capacity(raw); // bounded by ChunkHeader::parse
        let n = decompressor
            .decompress_to_buffer(frame, &mut buf)
            .map_err(|e| {
                Error::corrupt(
                    path,
                    offset,
                    format!("chunk {}: stream {i} does not decode: {e}", h.index),
                )
            })?;
        if n != raw
            || zstd::zstd_safe::get_frame_content_size(frame)
                .ok()
                .flatten()
                != Some(raw as u64)
        {
            return Err(Error::corrupt(
                path,
                offset,
                format!("chunk {}: stream {i} decodes to the wrong length", h.index),
            ));
        }
        streams[i] = buf;
    }
    let [ctrl, add, insert] = streams;
    Ok(DecodedChunk {
        header: chunk.header,
        ctrl,
        add,
        insert,
        patch_offset: chunk.patch_offset,
    })
}
