//! Expansion: a file with squashfs file systems in it as the stream the diff engine should see,
//! every compressed block replaced by its decompressed bytes where that can be undone bit for
//! bit, and the table that says how to undo it.
//!
//! For OLD, every block that decompresses is expanded (apply only ever decompresses OLD's
//! blocks). For NEW, each compressed block gets, at diff time and checked there, one of: its
//! stored bytes are those of a block of OLD ([`Rebuild::CopyOld`]: apply copies them, nothing
//! to recompress); it recompresses bit for bit ([`Rebuild::Recompress`]); or neither
//! ([`Rebuild::Stored`]: its stored bytes go through the diff as they are).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use super::codec::{BlockKind, Codec};
use super::squashfs::Layout;

/// How apply rebuilds a region of NEW from the expanded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// The region's bytes are in the stream as they are (bytes outside any file system, raw
    /// regions, and compressed blocks that neither recompress nor match a block of OLD).
    Stored,
    /// A block whose stored bytes are those of OLD's block at `old_offset`; the stream holds
    /// its `plain_len` decompressed bytes.
    CopyOld {
        /// Where OLD's block is (its length is the region's).
        old_offset: u64,
        /// Decompressed bytes in the stream.
        plain_len: u32,
    },
    /// A block that recompresses bit for bit with encoding `variant`; the stream holds its
    /// `plain_len` decompressed bytes.
    Recompress {
        /// Which of the codec's encodings reproduces it.
        variant: u8,
        /// Decompressed bytes in the stream.
        plain_len: u32,
    },
}

/// One region of a file and how it appears in the expanded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Where the region is in the file.
    pub offset: u64,
    /// Its length in the file.
    pub len: u32,
    /// How it is rebuilt (for OLD: `Stored`, or `Recompress` for a block that is expanded).
    pub rebuild: Rebuild,
    /// For a block: which file system (index into the layouts) and what kind of block.
    pub block: Option<(u16, BlockKind)>,
}

impl Piece {
    /// The region's length in the expanded stream.
    pub fn expanded_len(&self) -> u64 {
        match self.rebuild {
            Rebuild::Stored => u64::from(self.len),
            Rebuild::CopyOld { plain_len, .. } | Rebuild::Recompress { plain_len, .. } => {
                u64::from(plain_len)
            }
        }
    }
}

/// What expansion did, block by block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Blocks whose stored bytes are an OLD block's.
    pub copied: u64,
    /// Blocks that recompress.
    pub recompressed: u64,
    /// Compressed blocks left stored.
    pub stored: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Bytes of the expanded stream.
    pub expanded_bytes: u64,
}

impl Census {
    /// Counts NEW's `piece`: how it is rebuilt (a stored piece counts only when it is a block
    /// left compressed) and its expanded bytes.
    fn count(&mut self, piece: Piece) -> Piece {
        match piece.rebuild {
            Rebuild::Stored => self.stored += u64::from(piece.block.is_some()),
            Rebuild::CopyOld { .. } => self.copied += 1,
            Rebuild::Recompress { .. } => self.recompressed += 1,
        }
        self.expanded_bytes += piece.expanded_len();
        piece
    }
}

/// The file's pieces: its layouts' regions, with what lies outside them as stored pieces.
fn pieces_of(file_len: u64, layouts: &[Layout]) -> Vec<(u64, u32, Option<BlockKind>, usize)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let stored = |from: u64, to: u64, out: &mut Vec<_>| {
        let mut p = from;
        while p < to {
            let n = (to - p).min(u64::from(u32::MAX)) as u32;
            out.push((p, n, None, usize::MAX));
            p += u64::from(n);
        }
    };
    for (i, l) in layouts.iter().enumerate() {
        stored(at, l.start, &mut out);
        out.extend(l.regions.iter().map(|r| (r.offset, r.len, r.block, i)));
        at = l.end;
    }
    stored(at, file_len, &mut out);
    out
}

/// A piece of a file: where it is, its length, its kind of block and its layout's index.
type Entry = (u64, u32, Option<BlockKind>, usize);

/// Stored bytes at most of a whole stream that is decided in a batch with others, on the
/// threads at once: a gzip member found inside other data (a man page, a changelog).
pub const SMALL_STREAM: u32 = 1 << 20;

/// `all` cut into batches, with whether each is of whole streams (streamed, never held whole:
/// [`Codec::streams`]): a large stream alone; up to `batch` small ones ([`SMALL_STREAM`]) with
/// the bytes between them; other pieces, at most `batch` at a time.
fn batches<'a>(all: &'a [Entry], batch: usize, layouts: &[Layout]) -> Vec<(&'a [Entry], bool)> {
    let streamed = |e: &Entry| e.2.is_some_and(|k| layouts[e.3].codec.streams(k));
    let batch = batch.max(1);
    let mut out = Vec::new();
    // the batch being gathered: where it starts, whether it is of streams, what it counts
    let (mut from, mut of_streams, mut count) = (0, false, 0);
    for (i, e) in all.iter().enumerate() {
        let stream = streamed(e);
        let small = stream && e.1 <= SMALL_STREAM;
        let block = e.2.is_some() && !stream;
        if (stream && !small) || (small && !of_streams) || (block && of_streams) || count == batch {
            if from < i {
                out.push((&all[from..i], of_streams));
            }
            (from, of_streams, count) = (i, small, 0);
        }
        if stream && !small {
            out.push((&all[i..=i], true));
            (from, of_streams, count) = (i + 1, false, 0);
            continue;
        }
        // a batch of pieces counts them all; one of streams, its streams
        if !of_streams || small {
            count += 1;
        }
    }
    if from < all.len() {
        out.push((&all[from..], of_streams));
    }
    out
}

/// Decodes the whole stream `stored` of `codec` (of `plain_len` plain bytes) to `out`, a step
/// at a time.
fn decode_stream(
    codec: &Codec,
    stored: &[u8],
    plain_len: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let read = &mut super::stream::read_slice(stored);
    let sink = &mut |b: &[u8]| out.write_all(b).map_err(|e| e.to_string());
    match super::stream::decode(codec, read, stored.len() as u64, plain_len, sink) {
        Ok(n) if n == plain_len => Ok(()),
        Ok(_) => Err(io::Error::other(
            "a stream changed length since it was read",
        )),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// What a block of a file system is compressed with: enough to decompress or recompress it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsCodec {
    /// The compressor and its settings.
    pub codec: Codec,
    /// The file system's data block size.
    pub block_size: u32,
}

impl FsCodec {
    /// The codec of a layout.
    pub fn of(layout: &Layout) -> FsCodec {
        FsCodec {
            codec: layout.codec.clone(),
            block_size: layout.block_size,
        }
    }

    /// The codec of OLD's layout: what decoding it needs (a gzip stream's recipe is NEW's
    /// alone: [`Codec::for_decoding`]).
    pub fn for_decoding(layout: &Layout) -> FsCodec {
        FsCodec {
            codec: layout.codec.for_decoding(),
            block_size: layout.block_size,
        }
    }

    /// The most bytes a block of `kind` holds, stored or plain (a pcluster: its plain length).
    pub fn limit(&self, kind: BlockKind) -> usize {
        kind.plain_limit(self.block_size)
    }

    /// What [`Codec::compress`] is given as its limit for a block of `kind` stored in `stored`
    /// bytes: the kind's limit, or for a pcluster the exact stored length.
    pub fn encode_limit(&self, kind: BlockKind, stored: usize) -> usize {
        match kind {
            BlockKind::Exact(_) => stored,
            _ => self.limit(kind),
        }
    }
}

fn limit(kind: BlockKind, layout: &Layout) -> usize {
    FsCodec::of(layout).limit(kind)
}

/// Expands OLD: every block that decompresses. Writes the stream to `out`; returns its pieces
/// and the blocks by their stored bytes (for NEW's `CopyOld`).
pub fn expand_old(
    file: &[u8],
    layouts: &[Layout],
    out: &mut dyn Write,
) -> io::Result<(Vec<Piece>, OldBlocks)> {
    expand_old_releasing(file, layouts, BATCH, out, &|_, _| {})
}

/// Calls `release(start, end)` for each 16 MiB of `file` that has been read.
pub(super) struct Releaser<'a> {
    release: &'a dyn Fn(usize, usize),
    done: usize,
}

impl<'a> Releaser<'a> {
    const STEP: usize = 16 << 20;

    pub(super) fn new(release: &'a dyn Fn(usize, usize)) -> Releaser<'a> {
        Releaser { release, done: 0 }
    }

    /// Releases what is left up to `end`, the file's end.
    pub(super) fn finish(&mut self, end: usize) {
        (self.release)(self.done, end);
        self.done = end;
    }

    /// Writes the stored bytes `stored` of the file, which start at `offset`, to `out` a step
    /// at a time, releasing behind them: a stretch between file systems or members can be most
    /// of the file.
    fn write_stored(&mut self, stored: &[u8], offset: u64, out: &mut dyn Write) -> io::Result<()> {
        let mut at = offset;
        for piece in stored.chunks(Self::STEP) {
            out.write_all(piece)?;
            at += piece.len() as u64;
            self.reached(at);
        }
        Ok(())
    }

    pub(super) fn reached(&mut self, at: u64) {
        let at = at as usize;
        if at >= self.done + Self::STEP {
            let end = at / Self::STEP * Self::STEP;
            (self.release)(self.done, end);
            self.done = end;
        }
    }
}

/// [`expand_old`], `batch` blocks at a time (see [`super::memory::expansion_memory`]), calling
/// `release(start, end)` behind what it has read.
pub fn expand_old_releasing(
    file: &[u8],
    layouts: &[Layout],
    batch: usize,
    out: &mut dyn Write,
    release: &dyn Fn(usize, usize),
) -> io::Result<(Vec<Piece>, OldBlocks)> {
    use rayon::prelude::*;
    let mut releaser = Releaser::new(release);
    let mut pieces = Vec::new();
    let mut blocks = OldBlocks::default();
    let mut expanded_at = 0u64;
    let all = pieces_of(file.len() as u64, layouts);
    // decompressed in parallel, a batch at a time, written in order
    for (batch, streamed) in batches(&all, batch, layouts) {
        if streamed {
            // whole streams, each decoded as it is read, with the bytes between them
            for &(offset, len, kind, l) in batch {
                let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
                let rebuild = match kind {
                    Some(k) => {
                        let plain_len = k.plain_limit(0) as u32;
                        decode_stream(&layouts[l].codec, stored, u64::from(plain_len), out)?;
                        blocks.insert(stored, offset, expanded_at, plain_len);
                        Rebuild::Recompress {
                            variant: 0,
                            plain_len,
                        }
                    }
                    None => {
                        releaser.write_stored(stored, offset, out)?;
                        Rebuild::Stored
                    }
                };
                releaser.reached(offset + u64::from(len));
                let piece = Piece {
                    offset,
                    len,
                    rebuild,
                    block: kind.map(|k| (l as u16, k)),
                };
                expanded_at += piece.expanded_len();
                pieces.push(piece);
            }
            continue;
        }
        let plains: Vec<Option<Vec<u8>>> = batch
            .par_iter()
            .map(|&(offset, len, block, l)| {
                let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
                let kind = block?;
                let layout = &layouts[l];
                let mut plain = Vec::new();
                layout
                    .codec
                    .decompress(stored, limit(kind, layout), &mut plain)
                    .ok()
                    .map(|()| plain)
            })
            .collect();
        for (&(offset, len, block, l), plain) in batch.iter().zip(plains) {
            releaser.reached(offset);
            let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
            let rebuild = match plain {
                Some(plain) => {
                    out.write_all(&plain)?;
                    blocks.insert(stored, offset, expanded_at, plain.len() as u32);
                    Rebuild::Recompress {
                        variant: 0,
                        plain_len: plain.len() as u32,
                    }
                }
                None => {
                    releaser.write_stored(stored, offset, out)?;
                    Rebuild::Stored
                }
            };
            expanded_at += match rebuild {
                Rebuild::Recompress { plain_len, .. } => u64::from(plain_len),
                _ => u64::from(len),
            };
            pieces.push(Piece {
                offset,
                len,
                rebuild,
                block: block.map(|k| (l as u16, k)),
            });
        }
    }
    Ok((pieces, blocks))
}

/// What blocks are known by: the BLAKE3 of their stored bytes.
type BlockHash = [u8; 32];

fn block_hash(stored: &[u8]) -> BlockHash {
    *blake3::hash(stored).as_bytes()
}

/// OLD's compressed blocks by a hash of their stored bytes (first offset wins): where each is in
/// OLD, where its plain bytes are in OLD's expanded stream, and how many there are.
#[derive(Default)]
pub struct OldBlocks(HashMap<BlockHash, (u64, u64, u32)>);

impl OldBlocks {
    fn insert(&mut self, stored: &[u8], offset: u64, expanded_at: u64, plain_len: u32) {
        self.0
            .entry(block_hash(stored))
            .or_insert((offset, expanded_at, plain_len));
    }

    /// The block whose stored bytes hash to `hash` ([`block_hash`]).
    fn find(&self, hash: &BlockHash) -> Option<(u64, u64, u32)> {
        self.0.get(hash).copied()
    }

    /// Memory the index holds: its table's slots and their control bytes.
    pub fn held_bytes(&self) -> u64 {
        let slot = std::mem::size_of::<(BlockHash, (u64, u64, u32))>() + 1;
        (self.0.capacity() * slot) as u64
    }
}

/// Blocks of NEW already checked for recompression, by their stored bytes and settings, with
/// what the check found. The targets of a many-targets diff share many of their new blocks (a
/// language pack in several spins: a file's data blocks depend on its bytes alone), and the
/// check (recompressing the block) is the slow part of expanding NEW. Decisions only depend on
/// the block and its settings, so a patch is the same with or without it. At most
/// [`CHECKED_MAX`] blocks are remembered.
#[derive(Default)]
pub struct Checked(std::sync::Mutex<HashMap<CheckedBlock, Option<u8>>>);

/// A checked block: the BLAKE3 of its stored bytes, its compressor, kind, size limit and the
/// encoding tried first.
type CheckedBlock = (BlockHash, Codec, BlockKind, usize, u8);

/// Blocks [`Checked`] remembers at most (about 100 bytes each).
pub const CHECKED_MAX: usize = 16 << 10;
/// Memory [`Checked`] holds at most: its entries, their codecs' filter lists and the table's
/// growth.
pub const CHECKED_BYTES: u64 = CHECKED_MAX as u64 * 256;

impl Checked {
    /// Which encoding of `codec` reproduces `stored` (whose [`block_hash`] is `hash`) from
    /// `plain`, from memory or by checking.
    fn reproduces(
        &self,
        codec: &Codec,
        plain: &[u8],
        (stored, hash): (&[u8], &BlockHash),
        (kind, limit, first): (BlockKind, usize, u8),
    ) -> Option<u8> {
        let key = (*hash, codec.clone(), kind, limit, first);
        if let Some(&found) = self.0.lock().unwrap().get(&key) {
            return found;
        }
        let found = codec.reproduces(plain, stored, kind, limit, first);
        let mut known = self.0.lock().unwrap();
        if known.len() < CHECKED_MAX {
            known.insert(key, found);
        }
        found
    }
}

/// Reads `buf.len()` bytes of OLD's expanded stream at an offset; false if it cannot.
pub type ExpandedReader<'a> = &'a (dyn Fn(u64, &mut [u8]) -> bool + Sync);

/// Expands NEW against OLD's blocks: each compressed block is copied from OLD, recompressed or
/// left stored (see the module doc). Writes the stream to `out`.
pub fn expand_new(
    file: &[u8],
    layouts: &[Layout],
    old: &OldBlocks,
    out: &mut dyn Write,
) -> io::Result<ExpandedNew> {
    expand_new_releasing(file, layouts, (old, None), (None, BATCH), out, &|_, _| {})
}

/// What expanding NEW found: its pieces, what was done with its blocks, and the codec of each
/// of its layouts as NEW's table must hold it (a zstd frame's level found only when it was
/// expanded: [`super::zstdstream::search`]).
#[derive(Debug)]
pub struct ExpandedNew {
    /// The file's pieces, in order.
    pub pieces: Vec<Piece>,
    /// What expansion did, block by block.
    pub census: Census,
    /// The codec of each layout, for NEW's table.
    pub codecs: Vec<FsCodec>,
}

/// [`expand_new`], calling `release(start, end)` behind what it has read. With a reader of
/// OLD's expanded stream, a block found in OLD takes its plain bytes from there instead of
/// being decompressed again (most blocks of a spin are OLD's); with `checked`, a block checked
/// for an earlier NEW is not recompressed again. `batch` blocks are decided at a time (see
/// [`super::memory::expansion_memory`]); the result does not depend on it.
pub fn expand_new_releasing(
    file: &[u8],
    layouts: &[Layout],
    (old, old_expanded): (&OldBlocks, Option<ExpandedReader>),
    (checked, batch): (Option<&Checked>, usize),
    out: &mut dyn Write,
    release: &dyn Fn(usize, usize),
) -> io::Result<ExpandedNew> {
    use rayon::prelude::*;
    let mut releaser = Releaser::new(release);
    let mut codecs: Vec<FsCodec> = layouts
        .iter()
        .map(|l| FsCodec {
            codec: l.codec.settled(),
            block_size: l.block_size,
        })
        .collect();
    let mut pieces = Vec::new();
    let mut census = Census {
        file_bytes: file.len() as u64,
        ..Census::default()
    };
    let all = pieces_of(file.len() as u64, layouts);
    // Blocks are decided in parallel, a batch at a time (recompressing a block to check it is
    // the slow part: zlib level 9 runs at a few MB/s), and written in order.
    for (batch, streamed) in batches(&all, batch, layouts) {
        if streamed {
            // whole streams (several small ones, with the bytes between them, at once): each
            // decided on its own, in parallel, then written in order
            let plans = plan_new_streams(batch, (file, layouts), (old, old_expanded.is_some()));
            for (&(offset, len, kind, l), plan) in batch.iter().zip(plans) {
                let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
                let (rebuild, block) = match (plan, kind) {
                    (Some((plan, codec)), Some(k)) => {
                        let plain_len = k.plain_limit(0) as u32;
                        let rebuild =
                            write_new_stream((plan, &codec), stored, plain_len, old_expanded, out)?;
                        codecs[l].codec = codec;
                        (rebuild, Some((l as u16, k)))
                    }
                    _ => {
                        releaser.write_stored(stored, offset, out)?;
                        (Rebuild::Stored, None)
                    }
                };
                releaser.reached(offset + u64::from(len));
                pieces.push(census.count(Piece {
                    offset,
                    len,
                    rebuild,
                    block,
                }));
            }
            continue;
        }
        let decided: Vec<(Rebuild, Option<Vec<u8>>)> = batch
            .par_iter()
            .map(|&(offset, len, block, l)| {
                let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
                decide(
                    stored,
                    block.map(|k| (k, &layouts[l])),
                    old,
                    old_expanded,
                    checked,
                )
            })
            .collect();
        for (&(offset, len, block, l), (rebuild, plain)) in batch.iter().zip(decided) {
            releaser.reached(offset);
            let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
            match plain {
                Some(plain) => out.write_all(&plain)?,
                None => releaser.write_stored(stored, offset, out)?,
            }
            pieces.push(census.count(Piece {
                offset,
                len,
                rebuild,
                block: block.map(|k| (l as u16, k)),
            }));
        }
    }
    Ok(ExpandedNew {
        pieces,
        census,
        codecs,
    })
}

/// [`plan_new_stream`] for each whole stream of `batch` (pieces of `file`, of `layouts`), on
/// the pool's threads; `None` for the stored bytes between them.
fn plan_new_streams(
    batch: &[Entry],
    (file, layouts): (&[u8], &[Layout]),
    old: (&OldBlocks, bool),
) -> Vec<Option<(StreamPlan, Codec)>> {
    use rayon::prelude::*;
    batch
        .par_iter()
        .map(|&(offset, len, kind, l)| {
            let stored = &file[offset as usize..(offset + u64::from(len)) as usize];
            let plain_len = kind?.plain_limit(0) as u32;
            Some(plan_new_stream(stored, &layouts[l], plain_len, old))
        })
        .collect()
}

/// How a whole stream of NEW is rebuilt, decided before it is written.
enum StreamPlan {
    /// Copied from OLD's expanded stream, from `at`.
    CopyOld { old_offset: u64, at: u64 },
    /// Recompressed with this encoding variant.
    Recompress(u8),
    /// Left as it is.
    Stored,
}

/// Decides how a whole stream of NEW (`stored`, of `plain_len` plain bytes) is rebuilt: copied
/// from OLD's expanded stream when OLD has the same stream and `can_copy` (that stream can be
/// read), else recompressed when re-encoding it as it decodes gives it back (checked whole,
/// first with the release its layout found, then the others), else stored. Returns the plan
/// and its layout's codec as NEW's table holds it: a zstd frame's level parsing left
/// [`super::zstdstream::DEFERRED`] searched here; a gzip member's recipe made here, and only
/// for a member OLD does not hold (one copied needs its header alone, as in OLD's table).
fn plan_new_stream(
    stored: &[u8],
    layout: &Layout,
    plain_len: u32,
    (old, can_copy): (&OldBlocks, bool),
) -> (StreamPlan, Codec) {
    if let Some((old_offset, at, n)) = old.find(&block_hash(stored))
        && can_copy
        && n == plain_len
    {
        let codec = match &layout.codec {
            Codec::GzipStream(r) => Codec::GzipStream(Arc::new(r.for_decoding())),
            codec => codec.settled(),
        };
        return (StreamPlan::CopyOld { old_offset, at }, codec);
    }
    let read = super::stream::read_slice(stored);
    let (codec, first_variant, verified) = match &layout.codec {
        Codec::ZstdStream(s) if s.is_deferred() => {
            match super::zstdstream::search(stored, u64::from(plain_len)) {
                Some((found, variant, verified)) => (Codec::ZstdStream(found), variant, verified),
                None => (layout.codec.settled(), layout.first_variant, false),
            }
        }
        Codec::GzipStream(r) if r.chunks.is_empty() => match super::gzipstream::recipe_of(stored) {
            Some(recipe) => (Codec::GzipStream(Arc::new(recipe)), 0, false),
            None => (layout.codec.clone(), 0, false),
        },
        codec => (codec.clone(), layout.first_variant, false),
    };
    // a zstd frame: each release this build has, the one its layout found first; an xz block:
    // the encoding its header names
    let candidates: Vec<u8> = match &codec {
        Codec::ZstdStream(_) => {
            let first = first_variant;
            let releases = (0..super::zstd_release::variants()).filter(|&v| v != first);
            std::iter::once(first).chain(releases).collect()
        }
        Codec::XzStream(_) => super::xzstream::variant_of(stored).into_iter().collect(),
        Codec::GzipStream(_) => vec![0],
        _ => Vec::new(),
    };
    let reproducing = candidates.into_iter().find(|&v| {
        let stored_len = stored.len() as u64;
        (verified && v == first_variant)
            || super::stream::verify(&codec, &read, stored_len, (u64::from(plain_len), v))
    });
    match reproducing {
        Some(variant) => (StreamPlan::Recompress(variant), codec),
        None => (StreamPlan::Stored, codec),
    }
}

/// Writes a whole stream of NEW (`stored`, of `plain_len` plain bytes) to `out` as its plan
/// says, streaming, and returns how it is rebuilt.
fn write_new_stream(
    (plan, codec): (StreamPlan, &Codec),
    stored: &[u8],
    plain_len: u32,
    old_expanded: Option<ExpandedReader>,
    out: &mut dyn Write,
) -> io::Result<Rebuild> {
    use super::stream::STEP;
    match (plan, old_expanded) {
        (StreamPlan::CopyOld { old_offset, at }, Some(read)) => {
            let mut buf = vec![0u8; STEP.min(plain_len as usize)];
            let mut done = 0u64;
            while done < u64::from(plain_len) {
                let k = (u64::from(plain_len) - done).min(STEP as u64) as usize;
                if !read(at + done, &mut buf[..k]) {
                    return Err(io::Error::other("OLD's expanded stream does not read back"));
                }
                out.write_all(&buf[..k])?;
                done += k as u64;
            }
            Ok(Rebuild::CopyOld {
                old_offset,
                plain_len,
            })
        }
        (StreamPlan::Recompress(variant), _) => {
            decode_stream(codec, stored, u64::from(plain_len), out)?;
            Ok(Rebuild::Recompress { variant, plain_len })
        }
        _ => {
            out.write_all(stored)?;
            Ok(Rebuild::Stored)
        }
    }
}

/// Blocks decided at once at most: a bound on the decompressed bytes held (64 blocks).
pub const BATCH: usize = 64;

/// How a region of NEW is rebuilt (see the module doc), with its decompressed bytes when it is
/// expanded.
fn decide(
    stored: &[u8],
    block: Option<(BlockKind, &Layout)>,
    old: &OldBlocks,
    old_expanded: Option<ExpandedReader>,
    checked: Option<&Checked>,
) -> (Rebuild, Option<Vec<u8>>) {
    let Some((kind, layout)) = block else {
        return (Rebuild::Stored, None);
    };
    let limit = limit(kind, layout);
    let hash = block_hash(stored);
    let in_old = old.find(&hash);
    if let (Some((old_offset, at, plain_len)), Some(read)) = (in_old, old_expanded) {
        let mut plain = vec![0u8; plain_len as usize];
        if read(at, &mut plain) {
            let rebuild = Rebuild::CopyOld {
                old_offset,
                plain_len,
            };
            return (rebuild, Some(plain));
        }
    }
    let mut plain = Vec::new();
    if layout.codec.decompress(stored, limit, &mut plain).is_err() {
        return (Rebuild::Stored, None);
    }
    let plain_len = plain.len() as u32;
    if let Some((old_offset, _, _)) = in_old {
        (
            Rebuild::CopyOld {
                old_offset,
                plain_len,
            },
            Some(plain),
        )
    } else if let Some(variant) = match checked {
        Some(c) => c.reproduces(
            &layout.codec,
            &plain,
            (stored, &hash),
            (kind, limit, layout.first_variant),
        ),
        None => layout
            .codec
            .reproduces(&plain, stored, kind, limit, layout.first_variant),
    } {
        (Rebuild::Recompress { variant, plain_len }, Some(plain))
    } else {
        (Rebuild::Stored, None)
    }
}

/// Rebuilds NEW from its expanded stream (`expanded`), its pieces and layouts, and OLD: what
/// apply's re-encoder does, in memory. Fails if a block does not recompress as the diff found.
pub fn rebuild_new(
    expanded: &[u8],
    pieces: &[Piece],
    codecs: &[FsCodec],
    old: &[u8],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for p in pieces {
        let n = p.expanded_len() as usize;
        let bytes = expanded
            .get(at..at + n)
            .ok_or("the expanded stream is shorter than its pieces")?;
        at += n;
        match p.rebuild {
            Rebuild::Stored => out.extend_from_slice(bytes),
            Rebuild::CopyOld { old_offset, .. } => out.extend_from_slice(
                old.get(old_offset as usize..old_offset as usize + p.len as usize)
                    .ok_or("a copied block lies outside OLD")?,
            ),
            Rebuild::Recompress { variant, .. } => {
                let (fs, kind) = p.block.ok_or("a recompressed piece that is not a block")?;
                let fs = codecs
                    .get(usize::from(fs))
                    .ok_or("a block of a file system that is not there")?;
                let block = fs
                    .codec
                    .compress(bytes, kind, variant, fs.encode_limit(kind, p.len as usize))
                    .filter(|b| b.len() == p.len as usize)
                    .ok_or("a block does not recompress as it did at diff time")?;
                out.extend_from_slice(&block);
            }
        }
    }
    Ok(out)
}
