//! Encoding of one chunk's [`Delta`] into the container's chunk record: the control stream as
//! varints, the add bytes as sparse carry-aware runs ([`add_runs`](fn@crate::format::add_runs)), the insert bytes as they
//! are, each stream compressed as its own zstd frame.
//! The frames are single-shot with the content size recorded, so their window never exceeds the
//! chunk and apply decodes them in bounded memory.

use xxhash_rust::xxh3::xxh3_128;

use crate::diff::matcher::Delta;
use crate::error::{Error, Result};
use crate::format::{
    ChunkHeader, EncodedChunk, Op, add_runs, control_stream, max_add_len, max_ctrl_len,
};

/// Streams at least this long are first probed at a fast level.
const PROBE_MIN: usize = 64 << 10;
/// Level of the probe.
const PROBE_LEVEL: i32 = 3;

/// One zstd frame of `data`. New content inside images is often already compressed; the high
/// levels spend seconds per MiB on it for nothing, so a large stream is first compressed at a
/// fast level, and if that saves less than 1% it is kept as it is.
/// Fails only when zstd cannot allocate its context or working memory.
fn compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    let zstd = |l| {
        let failed = || Error::OutOfMemory {
            what: format!("compressing a {}-byte stream", data.len()),
        };
        // What zstd::bulk::compress does (the same frames), without its panic when zstd cannot
        // allocate a context.
        let mut cctx = zstd::zstd_safe::CCtx::try_create().ok_or_else(failed)?;
        cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(l))
            .map_err(|_| failed())?;
        let mut frame = Vec::new();
        frame
            .try_reserve_exact(zstd::zstd_safe::compress_bound(data.len()))
            .map_err(|_| failed())?;
        cctx.compress2(&mut frame, data).map_err(|_| failed())?;
        Ok(frame)
    };
    if level > PROBE_LEVEL && data.len() >= PROBE_MIN {
        let probe = zstd(PROBE_LEVEL)?;
        if probe.len() * 100 >= data.len() * 99 {
            return Ok(probe);
        }
    }
    zstd(level)
}

/// Encodes chunk `index` covering NEW bytes `new` at `new_offset`.
pub fn encode_chunk(
    index: u64,
    new_offset: u64,
    new: &[u8],
    delta: Delta,
    level: i32,
) -> Result<EncodedChunk> {
    let new_len = new.len() as u32;
    let mut ctrl = control_stream(&delta.ops);
    let mut add = add_runs(new, &delta.ops, &delta.add);
    let mut insert = delta.insert;
    if ctrl.len() > max_ctrl_len(new_len) as usize || add.len() > max_add_len(new_len) as usize {
        // pathological input: fall back to inserting the chunk verbatim
        let fallback = [Op {
            old_pos: 0,
            copy: 0,
            insert: new_len,
        }];
        ctrl = control_stream(&fallback);
        add = Vec::new();
        insert = new.to_vec();
    }
    let streams = [&ctrl, &add, &insert];
    let mut payload = Vec::new();
    let mut compressed = [0u32; 3];
    let mut raw = [0u32; 3];
    for (i, s) in streams.iter().enumerate() {
        raw[i] = s.len() as u32;
        if s.is_empty() {
            continue;
        }
        let frame = compress(s, level)?;
        compressed[i] = frame.len() as u32;
        payload.extend_from_slice(&frame);
    }
    Ok(EncodedChunk {
        header: ChunkHeader {
            index,
            new_offset,
            new_len,
            compressed,
            raw,
            output_hash: xxh3_128(new),
        },
        payload,
    })
}
