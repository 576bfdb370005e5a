//! Encoding of one chunk's [`Delta`] into the container's chunk record: the control stream as
//! varints, the add bytes as sparse carry-aware runs ([`add_runs`]), the insert bytes as they
//! are, each stream compressed as its own zstd frame.
//! The frames are single-shot with the content size recorded, so their window never exceeds the
//! chunk and apply decodes them in bounded memory.

use xxhash_rust::xxh3::xxh3_128;

use crate::container::{ChunkHeader, EncodedChunk, max_add_len, max_ctrl_len};
use crate::error::{Error, Result};
use crate::matching::{Delta, Op};

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
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

/// The add stream in its sparse, carry-aware form. The copied bytes of all ops, laid end to
/// end, form the "add space". Each maximal run of bytes where NEW differs from OLD is stored as
/// `gap` (varint: distance from the start of the previous run, or from 0), `len * 2 + mode`
/// (varint), then `len` bytes of a little-endian magnitude `M`. Mode 0 means NEW = OLD + M over
/// the run, mode 1 NEW = OLD - M; the carry (or borrow) of that arithmetic propagates past the
/// stored bytes until it is absorbed, so `M` is stored without its trailing zero bytes. A
/// pointer shifted by a constant therefore always stores the same few bytes, whatever carries
/// its addition caused. Runs never cross from one op's copy into the next.
pub fn add_runs(new: &[u8], delta: &Delta) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut o, mut a) = (0usize, 0usize);
    let mut last_start = 0usize;
    let mut magnitude = Vec::new();
    for op in &delta.ops {
        let copy = op.copy as usize;
        let add = &delta.add[a..a + copy];
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
    let mut add = add_runs(new, &delta);
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
