//! The apply side of the transform, in bounded memory: OLD's expanded stream served by
//! positioned reads of OLD and a small cache of decompressed blocks ([`ExpandedOld`]), and the
//! re-encoder that turns NEW's expanded stream, fed in order, back into NEW ([`Reencoder`]):
//! stored pieces pass through, a block copied from OLD is read from OLD, a block that
//! recompresses is recompressed. Its memory is one block being gathered plus the encoder's.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::expand::{FsCodec, Piece, Rebuild};
use super::table::Table;
use crate::error::{Error, Result, Role};
use crate::files::OldReader;

/// Bytes of OLD's decompressed blocks kept at once when its largest block holds `block` plain
/// bytes: two such blocks, at least [`CACHE_MIN`]. A chunk's copies come from many blocks in no
/// particular order (and fragment blocks serve many files), so a small cache decompresses the
/// same blocks over and over: with 8 blocks, decompression was 65% of a live ISO's apply
/// (`perf`), about seven times per block. 4 MiB (32 of a live ISO's 128 KiB blocks) applies the
/// gzip and xz live ISOs as fast as 16 MiB did (11.0 and 24.5 s) at 41.6 and 47.0 MiB instead of
/// 58.3 and 60.6; EROFS pclusters of up to 8 MiB (Fedora KDE's) need two in the cache: with one,
/// that pair's apply took 111 s instead of 66.
pub fn cache_bytes(block: u64) -> u64 {
    block.saturating_mul(2).max(CACHE_MIN)
}

/// The smallest cache of OLD's decompressed blocks ([`cache_bytes`]).
pub const CACHE_MIN: u64 = 4 << 20;

/// How much of the transform's work apply holds in memory at once, which `apply --memory`
/// trades for speed under a small cap: threads decompressing and recompressing blocks, blocks
/// recompressed at once, and whether OLD's block cache keeps its [`CACHE_MIN`] floor. Apply
/// takes the first of [`Budget::ladder`] that fits the cap; [`Budget::TIGHTEST`] is the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Threads that decompress OLD's blocks and recompress NEW's.
    pub threads: usize,
    /// Blocks recompressed at once at most (the pool works on these beside the chunks); 0:
    /// none beside the chunks, each recompressed in turn by the thread that writes NEW, as its
    /// last plain byte arrives, and written before anything after it is taken (nothing waits
    /// behind a block being recompressed, so nothing is held for it).
    pub blocks: usize,
    /// OLD's block cache: [`cache_bytes`] with `true`, two blocks with `false`.
    pub full_cache: bool,
}

impl Budget {
    /// One thread, blocks recompressed in turn as NEW is written (none beside the chunks), two
    /// of OLD's blocks cached: the least memory a transformed apply takes (the slowest: OLD's
    /// blocks are decompressed more often, and the chunks wait while a block is recompressed).
    /// It holds no block in flight and no bytes behind one, which is what an image of 1 MiB xz
    /// blocks needs to apply in 32 MiB (issue 22: two blocks in flight and two held behind them
    /// are 4 MiB of such a patch's 32).
    pub const TIGHTEST: Budget = Budget {
        threads: 1,
        blocks: 0,
        full_cache: false,
    };

    /// The budget with `threads` threads and everything else at its default.
    pub fn with_threads(threads: usize) -> Budget {
        Budget {
            threads: threads.max(1),
            blocks: RECOMPRESS_BATCH,
            full_cache: true,
        }
    }

    /// The budgets apply tries, from the most memory to the least: with as many threads as it
    /// can, first as many blocks in flight as threads, then the smaller cache, then one thread
    /// fewer, down to one thread with one block in flight and then [`Budget::TIGHTEST`].
    /// Encoders are what a transformed apply waits for (the xz live ISO applies in 31.5 s under
    /// `--memory 32M`, one encoder, against 14.5 s with two and no cap), so threads go last.
    pub fn ladder(threads: usize) -> impl Iterator<Item = Budget> {
        let each = (1..=threads.max(1)).rev().flat_map(|k| {
            let full = Budget::with_threads(k);
            let fewer = Budget {
                blocks: k.min(RECOMPRESS_BATCH),
                ..full
            };
            let small = Budget {
                full_cache: false,
                ..fewer
            };
            [full, fewer, small]
        });
        each.chain([Budget::TIGHTEST])
    }

    /// Whether blocks are recompressed in turn by the thread that writes NEW (no block in
    /// flight beside the chunks).
    pub fn inline(&self) -> bool {
        self.blocks == 0
    }

    /// Encoders of blocks at work at once: one per block in flight, one per thread at most, one
    /// when blocks are recompressed in turn.
    pub fn encoders(&self) -> usize {
        self.threads.min(self.blocks).max(1)
    }

    /// Bytes of OLD's block cache when its largest block holds `block` plain bytes.
    pub fn cache_bytes(&self, block: u64) -> u64 {
        if self.full_cache {
            cache_bytes(block)
        } else {
            block.saturating_mul(2)
        }
    }

    /// The most plain bytes the blocks being recompressed beside the chunks hold when no block
    /// has more than `block`: this budget's blocks, or fewer once they reach [`PENDING_BYTES`]
    /// (none for [`Budget::TIGHTEST`]); the bytes waiting behind them to be written are held to
    /// as much.
    pub fn batch_bytes(&self, block: u64) -> u64 {
        (self.blocks as u64 * block).min(PENDING_BYTES as u64 + block)
    }
}

/// The files an apply's errors name: OLD, the patch and the output.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// OLD (for a resume's read-back: the partial output, read as a source).
    pub old: &'a Path,
    /// The patch.
    pub patch: &'a Path,
    /// Where NEW is written.
    pub output: &'a Path,
}

impl Names<'_> {
    /// The patch's output does not come out as the diff found: the patch is at fault.
    fn mismatch(&self, what: &str) -> Error {
        Error::OutputMismatch {
            path: self.patch.to_path_buf(),
            what: what.into(),
        }
    }

    /// The directory an apply's temporary files go in: beside the output, or the system's
    /// temporary directory when the output is a stream or has no directory.
    pub(crate) fn temporary_dir(&self) -> std::path::PathBuf {
        self.output
            .parent()
            .filter(|d| d.is_dir())
            .map_or_else(std::env::temp_dir, Path::to_path_buf)
    }

    /// An unnamed temporary file in [`Names::temporary_dir`], and that directory (for errors).
    pub(crate) fn temporary_file(&self) -> Result<(std::fs::File, std::path::PathBuf)> {
        let dir = self.temporary_dir();
        let file = tempfile::tempfile_in(&dir)
            .map_err(|e| Error::io(Role::Temporary, &dir, "create", e))?;
        Ok((file, dir))
    }
}

/// OLD's expanded stream, read at random.
pub struct ExpandedOld<'a> {
    old: &'a dyn OldReader,
    names: Names<'a>,
    table: &'a Table,
    /// Where each piece starts in the expanded stream, and its end.
    starts: Vec<u64>,
    len: u64,
    /// Decompressed blocks by piece, with when each was last used; at most [`cache_bytes`] of
    /// OLD's largest block.
    cache: Mutex<Cache>,
    /// Bytes decompressed so far, and the most a patch may make apply decompress: a hostile
    /// patch whose every copy lands in a different block costs this much work at most.
    inflated: AtomicU64,
    budget: u64,
    /// Whole streams decoded into temporary files, by piece (each decoded once, when first read).
    streams: Arc<DecodedStreams>,
}

/// Whole streams decoded into temporary files, by piece: each decoded when first read. A
/// resume's read-backs share theirs across chunks (a stream spans many).
pub type DecodedStreams = Mutex<OpenStreams>;

/// The most decoded streams kept open at once: a tarball can hold thousands of gzip members,
/// and a file each would pass the process's limit on open files (1024 by default). A stream
/// read again after [`OPEN_STREAMS`] others were decoded is decoded again (counted against the
/// apply's decompression budget like any other).
pub const OPEN_STREAMS: usize = 64;

/// The decoded streams kept open, by piece, with the order they were decoded in.
#[derive(Default)]
pub struct OpenStreams {
    files: std::collections::HashMap<usize, Arc<std::fs::File>>,
    order: std::collections::VecDeque<usize>,
}

impl OpenStreams {
    fn get(&self, piece: usize) -> Option<Arc<std::fs::File>> {
        self.files.get(&piece).cloned()
    }

    /// Keeps `file` for `piece`, closing the one decoded longest ago past [`OPEN_STREAMS`] (a
    /// reader still holding it keeps it open until it is done).
    fn insert(&mut self, piece: usize, file: Arc<std::fs::File>) {
        if self.order.len() == OPEN_STREAMS
            && let Some(oldest) = self.order.pop_front()
        {
            self.files.remove(&oldest);
        }
        self.files.insert(piece, file);
        self.order.push_back(piece);
    }
}

impl<'a> ExpandedOld<'a> {
    /// OLD (`old`) through its table. `budget` bounds the bytes decompressed over the apply;
    /// errors name the files `names` gives.
    pub fn new(
        old: &'a dyn OldReader,
        table: &'a Table,
        budget: u64,
        names: Names<'a>,
    ) -> ExpandedOld<'a> {
        let mut starts = Vec::with_capacity(table.pieces.len());
        let mut at = 0;
        for p in &table.pieces {
            starts.push(at);
            at += p.expanded_len();
        }
        ExpandedOld {
            old,
            names,
            table,
            starts,
            len: at,
            cache: Mutex::new(Cache {
                limit: cache_bytes(table.largest_block()) as usize,
                ..Cache::default()
            }),
            inflated: AtomicU64::new(0),
            budget,
            streams: Arc::default(),
        }
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::WrongOld {
            path: self.names.old.to_path_buf(),
            what: what.into(),
        }
    }

    /// Shares `streams` (whole streams already decoded from the same file) instead of its own.
    fn sharing(mut self, streams: Arc<DecodedStreams>) -> ExpandedOld<'a> {
        self.streams = streams;
        self
    }

    /// Keeps at most `bytes` of OLD's decompressed blocks (at least one block's worth is always
    /// kept while it is read), instead of [`cache_bytes`] of its largest block.
    pub fn with_cache(self, bytes: u64) -> ExpandedOld<'a> {
        self.cache.lock().unwrap().limit = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// Piece `i`, a whole stream, decoded into a temporary file (beside the output), once.
    fn stream(&self, i: usize, piece: &Piece) -> Result<Arc<std::fs::File>> {
        let mut streams = self.streams.lock().unwrap();
        if let Some(f) = streams.get(i) {
            return Ok(f);
        }
        let plain_len = piece.expanded_len();
        if self.inflated.fetch_add(plain_len, Ordering::Relaxed) > self.budget {
            return Err(Error::CorruptPatch {
                path: self.names.patch.to_path_buf(),
                offset: 0,
                what: "it makes apply decompress more of OLD than any patch needs".into(),
            });
        }
        let (file, dir) = self.names.temporary_file()?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut failed = None;
        let read = &mut |at: u64, buf: &mut [u8]| {
            self.old
                .read_exact_at(buf, piece.offset + at)
                .map_err(|e| e.to_string())
        };
        let sink = &mut |b: &[u8]| {
            out.write_all(b).map_err(|e| {
                let message = e.to_string();
                failed = Some(e);
                message
            })
        };
        let (fs, _) = piece
            .block
            .ok_or_else(|| self.corrupt("an expanded piece that is not a block"))?;
        let codec = &self.table.codecs[usize::from(fs)].codec;
        let decoded = super::stream::decode(codec, read, u64::from(piece.len), plain_len, sink);
        if let Some(e) = failed {
            return Err(Error::io(Role::Temporary, &dir, "write", e));
        }
        match decoded {
            Ok(n) if n == plain_len => {}
            Ok(_) => return Err(self.corrupt("a stream of OLD decompresses to another length")),
            Err(e) => {
                return Err(self.corrupt(&format!("a stream of OLD does not decompress: {e}")));
            }
        }
        out.flush()
            .map_err(|e| Error::io(Role::Temporary, &dir, "write", e))?;
        drop(out);
        let file = Arc::new(file);
        streams.insert(i, file.clone());
        Ok(file)
    }

    /// Piece `i`'s decompressed bytes, from the cache or OLD. Room for them is made in the cache
    /// before they are decompressed, so the cache's bytes include the block being decompressed.
    fn block(&self, i: usize, piece: &Piece) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.cache.lock().unwrap().get(i) {
            return Ok(b);
        }
        let (fs, kind) = piece
            .block
            .ok_or_else(|| self.corrupt("an expanded piece that is not a block"))?;
        let fs = &self.table.codecs[usize::from(fs)];
        let limit = fs.limit(kind);
        if self.inflated.fetch_add(limit as u64, Ordering::Relaxed) > self.budget {
            return Err(Error::CorruptPatch {
                path: self.names.patch.to_path_buf(),
                offset: 0,
                what: "it makes apply decompress more of OLD than any patch needs".into(),
            });
        }
        self.cache.lock().unwrap().reserve(limit);
        let decompressed = self.decompress(piece, fs, limit);
        let mut cache = self.cache.lock().unwrap();
        cache.release(limit);
        let plain = Arc::new(decompressed?);
        cache.insert(i, plain.clone());
        Ok(plain)
    }

    /// Piece `piece`'s stored bytes read from OLD and decompressed (into a buffer of `limit`
    /// bytes, the most its kind holds).
    fn decompress(&self, piece: &Piece, fs: &FsCodec, limit: usize) -> Result<Vec<u8>> {
        let mut stored = vec![0u8; piece.len as usize];
        self.old.read_exact_at(&mut stored, piece.offset)?;
        let mut plain = Vec::new();
        fs.codec
            .decompress(&stored, limit, &mut plain)
            .map_err(|e| self.corrupt(&format!("a block of OLD does not decompress: {e}")))?;
        if plain.len() as u64 != piece.expanded_len() {
            return Err(self.corrupt("a block of OLD decompresses to another length"));
        }
        Ok(plain)
    }
}

/// A least-recently-used cache of decompressed blocks, bounded in bytes: the blocks' buffers
/// (their capacity: a block shorter than its kind's most is decompressed into a buffer of that
/// most) and the room reserved for blocks being decompressed.
#[derive(Default)]
struct Cache {
    blocks: std::collections::HashMap<usize, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    clock: u64,
    /// The most bytes kept.
    limit: usize,
}

impl Cache {
    fn get(&mut self, i: usize) -> Option<Arc<Vec<u8>>> {
        self.clock += 1;
        let clock = self.clock;
        self.blocks.get_mut(&i).map(|(b, used)| {
            *used = clock;
            b.clone()
        })
    }

    /// Drops the blocks used longest ago until `bytes` more fit (or none is left).
    fn make_room(&mut self, bytes: usize) {
        while self.bytes + bytes > self.limit && !self.blocks.is_empty() {
            let oldest = *self
                .blocks
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k)
                .unwrap();
            let (b, _) = self.blocks.remove(&oldest).unwrap();
            self.bytes -= b.capacity();
        }
    }

    /// Makes room for a block of up to `bytes` about to be decompressed, and counts it.
    fn reserve(&mut self, bytes: usize) {
        self.make_room(bytes);
        self.bytes += bytes;
    }

    /// Gives back room [`Cache::reserve`]d.
    fn release(&mut self, bytes: usize) {
        self.bytes -= bytes;
    }

    fn insert(&mut self, i: usize, block: Arc<Vec<u8>>) {
        self.make_room(block.capacity());
        self.clock += 1;
        self.bytes += block.capacity();
        if let Some((old, _)) = self.blocks.insert(i, (block, self.clock)) {
            self.bytes -= old.capacity();
        }
    }
}

impl OldReader for ExpandedOld<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = at + done as u64;
            let i = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
            let piece = self
                .table
                .pieces
                .get(i)
                .filter(|_| pos < self.len)
                .ok_or_else(|| self.corrupt("a read past the end of OLD's expanded stream"))?;
            let within = pos - self.starts[i];
            let n = ((piece.expanded_len() - within) as usize).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match piece.rebuild {
                Rebuild::Stored => self.old.read_exact_at(dst, piece.offset + within)?,
                _ if self.table.is_streamed(piece) => {
                    use std::os::unix::fs::FileExt;
                    let file = self.stream(i, piece)?;
                    file.read_exact_at(dst, within).map_err(|e| {
                        Error::io(Role::Temporary, self.names.output, "read back", e)
                    })?;
                }
                _ => {
                    let block = self.block(i, piece)?;
                    dst.copy_from_slice(&block[within as usize..within as usize + n]);
                }
            }
            done += n;
        }
        Ok(())
    }
}

/// Turns NEW's expanded stream, pushed in order, back into NEW, written to the writer each push
/// is given, and hashed. A block to recompress is handed to the pool as soon as its plain bytes
/// are complete and its result written when every byte before it is: recompression runs on
/// every thread of the pool beside the chunks' rebuild (no batch waits for its slowest block,
/// and the chunks are not held up by the encoders), within [`Budget::batch_bytes`] of plain bytes in
/// flight and as many bytes waiting behind them.
pub struct Reencoder<'a> {
    table: &'a Table,
    /// The real OLD, for blocks copied from it.
    old: &'a dyn OldReader,
    piece: usize,
    /// Bytes of the current piece pushed so far.
    filled: usize,
    block: Vec<u8>,
    /// What is to be written, in order: bytes, and blocks being recompressed.
    queue: std::collections::VecDeque<Segment>,
    /// Bytes waiting in the queue, and plain bytes and blocks being recompressed.
    queued: usize,
    in_flight: (usize, usize),
    /// The most bytes held waiting behind them: [`Budget::batch_bytes`] of the largest block.
    hold: usize,
    /// Blocks recompressed at once at most ([`RECOMPRESS_BATCH`] unless [`Self::within`] a
    /// smaller budget; 0: each in turn, on the thread that pushes); `hold` and `cache` are that
    /// budget's too.
    blocks: usize,
    /// Bytes of decompressed blocks a resume's read-back keeps.
    cache: u64,
    hasher: blake3::Hasher,
    written: u64,
    /// Where blocks are recompressed in parallel (rayon's current pool when `None`).
    pool: Option<&'a rayon::ThreadPool>,
    names: Names<'a>,
    /// The encoder of the whole stream being rebuilt, with the bytes it has written so far.
    stream: Option<(super::stream::Encoder, u64)>,
    /// Resuming inside a whole stream: the stream decoded from the partial output (a temporary
    /// file) and how many of its first plain bytes to feed again before anything else.
    refeed: Option<(Arc<std::fs::File>, u64)>,
    /// Resuming: the whole streams of the partial output decoded so far (each once, however
    /// many chunks read it back).
    written_streams: Arc<DecodedStreams>,
}

/// Something to write: bytes, or a block being recompressed (its stored bytes arrive on the
/// receiver; its plain length is what it holds in flight).
enum Segment {
    Bytes(Vec<u8>),
    Block(std::sync::mpsc::Receiver<Option<Vec<u8>>>, usize),
}

/// Blocks recompressed at once at most: recompression (zlib level 9 runs at a few MB/s) is most
/// of a transformed patch's apply time, and blocks are independent.
pub const RECOMPRESS_BATCH: usize = 8;
/// Plain bytes of the blocks being recompressed at which no more is handed to the pool until
/// the first of them is written: EROFS pclusters hold up to 12 MiB each, and eight of them,
/// with their encoders' outputs, would be most of what a small machine has. Bytes waiting
/// behind them to be written are held to as much.
pub const PENDING_BYTES: usize = 8 << 20;

impl<'a> Reencoder<'a> {
    /// Rebuilds the file `table` describes, with `old` for the blocks copied from OLD,
    /// recompressing on `pool` (rayon's current pool when `None`).
    pub fn new(
        table: &'a Table,
        old: &'a dyn OldReader,
        pool: Option<&'a rayon::ThreadPool>,
        names: Names<'a>,
    ) -> Reencoder<'a> {
        Reencoder {
            table,
            old,
            piece: 0,
            filled: 0,
            block: Vec::new(),
            queue: std::collections::VecDeque::new(),
            queued: 0,
            in_flight: (0, 0),
            hold: 0,
            blocks: 0,
            cache: 0,
            hasher: blake3::Hasher::new(),
            written: 0,
            pool,
            names,
            stream: None,
            refeed: None,
            written_streams: Arc::default(),
        }
        // the default budget's blocks in flight, bytes held and cache
        .within(Budget::with_threads(1))
    }

    /// Works within `budget`: at most its blocks recompressed at once (none beside the pushes
    /// for [`Budget::TIGHTEST`]), as many blocks' bytes held waiting behind them
    /// ([`Budget::batch_bytes`]), and its cache when a resume reads NEW's blocks back.
    pub fn within(mut self, budget: Budget) -> Reencoder<'a> {
        let largest = self.table.largest_block();
        self.blocks = budget.blocks;
        self.hold = budget.batch_bytes(largest) as usize;
        self.cache = budget.cache_bytes(largest);
        self
    }

    /// Hands piece `i`'s plain bytes to the pool to be recompressed, once what is in flight
    /// leaves room for it; recompresses and writes them here when blocks are recompressed in
    /// turn.
    fn recompress(&mut self, i: usize, plain: Vec<u8>, out: &mut dyn Write) -> Result<()> {
        while self.in_flight.1 > 0
            && (self.in_flight.1 >= self.blocks || self.in_flight.0 + plain.len() > PENDING_BYTES)
        {
            self.write_front(out, true)?;
        }
        let piece = &self.table.pieces[i];
        let (Some((fs, kind)), Rebuild::Recompress { variant, .. }) = (piece.block, piece.rebuild)
        else {
            return Err(self
                .names
                .mismatch("a recompressed piece that is not a block"));
        };
        let fs = &self.table.codecs[usize::from(fs)];
        let (codec, stored) = (fs.codec.clone(), piece.len as usize);
        let limit = fs.encode_limit(kind, stored);
        if self.blocks == 0 {
            // nothing is ever queued in turn: the bytes before this block are written
            let block = codec.compress(&plain, kind, variant, limit);
            drop(plain);
            let block = block.filter(|s| s.len() == stored).ok_or_else(|| {
                self.names
                    .mismatch("a block does not recompress as it did at diff time")
            })?;
            return self.write_out(&block, out);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.in_flight.0 += plain.len();
        self.in_flight.1 += 1;
        self.queue.push_back(Segment::Block(rx, plain.len()));
        let job = move || {
            let block = codec
                .compress(&plain, kind, variant, limit)
                .filter(|s| s.len() == stored);
            // the receiver is gone only when the apply failed first
            let _ = tx.send(block);
        };
        match self.pool {
            Some(pool) => pool.spawn(job),
            None => rayon::spawn(job),
        }
        self.write_front(out, false)
    }

    /// Writes what is ready at the front of the queue; with `wait`, at least its first block,
    /// waiting for it.
    fn write_front(&mut self, out: &mut dyn Write, mut wait: bool) -> Result<()> {
        while let Some(front) = self.queue.front() {
            let bytes = match front {
                Segment::Bytes(_) => {
                    let Some(Segment::Bytes(b)) = self.queue.pop_front() else {
                        unreachable!()
                    };
                    self.queued -= b.len();
                    b
                }
                Segment::Block(rx, plain) => {
                    let got = if wait {
                        rx.recv().ok()
                    } else {
                        match rx.try_recv() {
                            Ok(b) => Some(b),
                            Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                        }
                    };
                    let plain = *plain;
                    self.queue.pop_front();
                    self.in_flight.0 -= plain;
                    self.in_flight.1 -= 1;
                    wait = false;
                    got.flatten().ok_or_else(|| {
                        self.names
                            .mismatch("a block does not recompress as it did at diff time")
                    })?
                }
            };
            self.write_out(&bytes, out)?;
        }
        Ok(())
    }

    /// Writes `bytes` after everything queued before them.
    fn emit(&mut self, bytes: &[u8], out: &mut dyn Write) -> Result<()> {
        // behind blocks still being recompressed: held, up to as many bytes as they hold
        while self.queued + bytes.len() > self.hold && !self.queue.is_empty() {
            self.write_front(out, true)?;
        }
        if self.queue.is_empty() {
            return self.write_out(bytes, out);
        }
        self.queued += bytes.len();
        self.queue.push_back(Segment::Bytes(bytes.to_vec()));
        Ok(())
    }

    fn write_out(&mut self, bytes: &[u8], out: &mut dyn Write) -> Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        out.write_all(bytes)
            .map_err(|e| Error::io(Role::Output, self.names.output, "write", e))
    }

    /// Takes the next bytes of the expanded stream, writing what they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut dyn Write) -> Result<()> {
        self.refeed(out)?;
        self.push_expanded(bytes, out)
    }

    /// Resuming inside a whole stream: feeds its first plain bytes again (see [`Self::resume`]).
    fn refeed(&mut self, out: &mut dyn Write) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some((file, len)) = self.refeed.take() else {
            return Ok(());
        };
        let mut buf = vec![0u8; super::stream::STEP];
        let mut at = 0u64;
        while at < len {
            let n = ((len - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)
                .map_err(|e| Error::io(Role::Temporary, self.names.output, "read back", e))?;
            self.push_expanded(&buf[..n], out)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Feeds bytes of a whole stream being recompressed to its encoder (set up at its first
    /// bytes), writing what it gives.
    fn feed_stream(&mut self, piece: &Piece, bytes: &[u8], out: &mut dyn Write) -> Result<()> {
        if self.stream.is_none() {
            let (Some((fs, _)), Rebuild::Recompress { variant, .. }) = (piece.block, piece.rebuild)
            else {
                return Err(self
                    .names
                    .mismatch("a recompressed piece that is not a block"));
            };
            let codec = &self.table.codecs[usize::from(fs)].codec;
            let encoder = super::stream::Encoder::new(codec, variant, piece.expanded_len())
                .ok_or_else(|| self.names.mismatch("a stream's encoder does not start"))?;
            self.stream = Some((encoder, 0));
        }
        let mut made = Vec::new();
        let (encoder, written) = self.stream.as_mut().unwrap();
        encoder
            .feed(bytes, &mut |b| made.extend_from_slice(b))
            .map_err(|e| self.names.mismatch(&e))?;
        *written += made.len() as u64;
        if *written > u64::from(piece.len) {
            return Err(self
                .names
                .mismatch("a stream does not recompress as it did at diff time"));
        }
        self.emit(&made, out)
    }

    /// Ends the whole stream being recompressed: its last bytes, and its length checked.
    fn finish_stream(&mut self, piece: &Piece, out: &mut dyn Write) -> Result<()> {
        let Some((mut encoder, written)) = self.stream.take() else {
            return Err(self.names.mismatch("an empty stream"));
        };
        let mut made = Vec::new();
        encoder
            .finish(&mut |b| made.extend_from_slice(b))
            .map_err(|e| self.names.mismatch(&e))?;
        if written + made.len() as u64 != u64::from(piece.len) {
            return Err(self
                .names
                .mismatch("a stream does not recompress as it did at diff time"));
        }
        self.emit(&made, out)
    }

    fn push_expanded(&mut self, mut bytes: &[u8], out: &mut dyn Write) -> Result<()> {
        while !bytes.is_empty() {
            let Some(&piece) = self.table.pieces.get(self.piece) else {
                return Err(self
                    .names
                    .mismatch("the expanded stream is longer than its pieces"));
            };
            let n = ((piece.expanded_len() as usize) - self.filled).min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            bytes = rest;
            match piece.rebuild {
                Rebuild::Stored => self.emit(now, out)?,
                // copied whole from OLD when the piece ends
                Rebuild::CopyOld { .. } => {}
                Rebuild::Recompress { .. } if self.table.is_streamed(&piece) => {
                    self.feed_stream(&piece, now, out)?;
                }
                Rebuild::Recompress { .. } => {
                    // gathered in one buffer of the block's size, not one grown by doubling
                    // (which would hold the old half beside the new while it moves)
                    let whole = piece.expanded_len() as usize;
                    self.block
                        .reserve_exact(whole.saturating_sub(self.block.len()));
                    self.block.extend_from_slice(now);
                }
            }
            self.filled += n;
            if self.filled as u64 == piece.expanded_len() {
                self.finish_piece(&piece, out)?;
                self.piece += 1;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// The current piece is complete: writes it (a block to recompress goes to the pool).
    fn finish_piece(&mut self, piece: &Piece, out: &mut dyn Write) -> Result<()> {
        match piece.rebuild {
            Rebuild::Stored => {}
            Rebuild::CopyOld { old_offset, .. } => {
                // nothing is gathered for it: no buffer is held beside the one it is read into
                self.block = Vec::new();
                // a step at a time: a whole stream may be tens of MB
                let step = super::stream::STEP as u64;
                let mut stored = vec![0u8; u64::from(piece.len).min(step) as usize];
                let mut at = 0u64;
                while at < u64::from(piece.len) {
                    let n = (u64::from(piece.len) - at).min(step) as usize;
                    self.old.read_exact_at(&mut stored[..n], old_offset + at)?;
                    self.emit(&stored[..n], out)?;
                    at += n as u64;
                }
            }
            Rebuild::Recompress { .. } if self.table.is_streamed(piece) => {
                self.finish_stream(piece, out)?;
            }
            Rebuild::Recompress { .. } => {
                let block = std::mem::take(&mut self.block);
                self.recompress(self.piece, block, out)?;
            }
        }
        Ok(())
    }

    /// Resuming (`--resume`): reads NEW's expanded bytes `at..at + buf.len()` back from what an
    /// interrupted apply wrote (`written`: the start of NEW), by decompressing its blocks.
    /// `false` when `written` does not hold them all or they do not decompress.
    pub fn read_back_expanded(&self, written: &dyn OldReader, buf: &mut [u8], at: u64) -> bool {
        self.read_back(written).read_exact_at(buf, at).is_ok()
    }

    /// NEW's expanded stream as what an interrupted apply wrote (`written`) holds it: its blocks
    /// decompressed (within this budget's cache), its whole streams decoded once for every
    /// read-back (shared).
    fn read_back<'w>(&'w self, written: &'w dyn OldReader) -> ExpandedOld<'w> {
        // Reading the stream once costs one decompression per block (plus one per chunk
        // boundary); the budget allows that twice over.
        let budget = self.table.expanded_len().saturating_mul(2);
        let names = Names {
            old: self.names.output,
            ..self.names
        };
        ExpandedOld::new(written, self.table, budget, names)
            .sharing(self.written_streams.clone())
            .with_cache(self.cache)
    }

    /// Resuming: whether the blocks of `written` (what an interrupted apply wrote) among the
    /// pieces from `*next` on that end by `expanded_end` in the expanded stream hold exactly
    /// NEW's stored bytes: a block copied from OLD is OLD's block, a recompressed one is what
    /// its plain bytes recompress to. A block that only decompresses to the right bytes (the
    /// same deflate data behind another zlib header, say) is not NEW's and must not be kept.
    /// `*next` advances past the pieces found right.
    pub fn written_blocks_are_new(
        &self,
        written: &dyn OldReader,
        expanded_end: u64,
        (next, next_start): (&mut usize, &mut u64),
    ) -> bool {
        while let Some(piece) = self.table.pieces.get(*next) {
            let end = *next_start + piece.expanded_len();
            if end > expanded_end {
                return true;
            }
            if self.table.is_streamed(piece) {
                if !self.written_stream_is_new(written, piece) {
                    return false;
                }
                *next += 1;
                *next_start = end;
                continue;
            }
            let mut stored = vec![0u8; piece.len as usize];
            if written.read_exact_at(&mut stored, piece.offset).is_err() {
                return false;
            }
            let right = match piece.rebuild {
                Rebuild::Stored => true,
                Rebuild::CopyOld { old_offset, .. } => {
                    let mut old = vec![0u8; stored.len()];
                    self.old.read_exact_at(&mut old, old_offset).is_ok() && old == stored
                }
                Rebuild::Recompress { variant, .. } => {
                    let Some((fs, kind)) = piece.block else {
                        return false;
                    };
                    let fs = &self.table.codecs[usize::from(fs)];
                    let mut plain = Vec::new();
                    fs.codec
                        .decompress(&stored, fs.limit(kind), &mut plain)
                        .is_ok()
                        && fs
                            .codec
                            .compress(&plain, kind, variant, fs.encode_limit(kind, stored.len()))
                            .as_deref()
                            == Some(&stored[..])
                }
            };
            if !right {
                return false;
            }
            *next += 1;
            *next_start = end;
        }
        true
    }

    /// Resuming: whether the whole stream `piece` in `written` is NEW's: OLD's stream where it
    /// is copied, else what its plain bytes recompress to, checked a step at a time.
    fn written_stream_is_new(&self, written: &dyn OldReader, piece: &Piece) -> bool {
        let step = super::stream::STEP as u64;
        match piece.rebuild {
            Rebuild::Stored => true,
            Rebuild::CopyOld { old_offset, .. } => {
                let (mut a, mut b) = (vec![0u8; step as usize], vec![0u8; step as usize]);
                let mut at = 0u64;
                while at < u64::from(piece.len) {
                    let n = (u64::from(piece.len) - at).min(step) as usize;
                    if written
                        .read_exact_at(&mut a[..n], piece.offset + at)
                        .is_err()
                        || self
                            .old
                            .read_exact_at(&mut b[..n], old_offset + at)
                            .is_err()
                        || a[..n] != b[..n]
                    {
                        return false;
                    }
                    at += n as u64;
                }
                true
            }
            Rebuild::Recompress { variant, plain_len } => {
                let Some((fs, _)) = piece.block else {
                    return false;
                };
                let codec = &self.table.codecs[usize::from(fs)].codec;
                let read = |at: u64, buf: &mut [u8]| {
                    written
                        .read_exact_at(buf, piece.offset + at)
                        .map_err(|e| e.to_string())
                };
                let plain = u64::from(plain_len);
                super::stream::verify(codec, &read, u64::from(piece.len), (plain, variant))
            }
        }
    }

    /// Resuming: continues after the first `kept` bytes of the expanded stream, whose NEW bytes
    /// an interrupted apply wrote (`written`, read back with [`Self::read_back_expanded`] and
    /// verified): NEW's bytes before the piece that `kept` falls in (and, in a stored piece, up
    /// to `kept`) are hashed and stay; a block `kept` falls inside is gathered again from
    /// `written`. Returns how many bytes of `written` stay: the rest is to be cut.
    pub fn resume(&mut self, written: &dyn OldReader, kept: u64) -> Result<u64> {
        debug_assert!(self.piece == 0 && self.filled == 0 && self.written == 0);
        let (mut start, mut piece) = (0u64, 0usize);
        for p in &self.table.pieces {
            if start + p.expanded_len() > kept {
                break;
            }
            start += p.expanded_len();
            piece += 1;
        }
        let within = kept - start;
        let mut stay = self.table.pieces.get(piece).map_or_else(
            || {
                self.table
                    .pieces
                    .last()
                    .map_or(0, |p| p.offset + u64::from(p.len))
            },
            |p| p.offset,
        );
        if within > 0 {
            let p = self.table.pieces[piece];
            if let Rebuild::Stored = p.rebuild {
                stay += within;
            } else if let Rebuild::CopyOld { .. } = p.rebuild {
                // copied whole from OLD when the piece ends: nothing to gather
            } else if self.table.is_streamed(&p) {
                // a whole stream restarts: its first plain bytes are fed to a new encoder again,
                // from the stream the read-backs decoded
                let decoded = self.read_back(written).stream(piece, &p).map_err(|_| {
                    self.names
                        .mismatch("a kept stream of the partial output no longer reads back")
                })?;
                self.refeed = Some((decoded, within));
                self.piece = piece;
                self.filled = 0;
                return self.keep_before(written, stay);
            } else {
                // the buffer the rest of the block is gathered into too (one of the block's size)
                let mut block = Vec::with_capacity(p.expanded_len() as usize);
                block.resize(within as usize, 0);
                if !self.read_back_expanded(written, &mut block, start) {
                    return Err(self
                        .names
                        .mismatch("a kept block of the partial output no longer reads back"));
                }
                self.block = block;
            }
        }
        self.piece = piece;
        self.filled = within as usize;
        self.keep_before(written, stay)
    }

    /// Resuming: the first `stay` bytes of `written` stay; hashes them.
    fn keep_before(&mut self, written: &dyn OldReader, stay: u64) -> Result<u64> {
        let mut buf = vec![0u8; (256 << 10).min(stay as usize)];
        let mut at = 0u64;
        while at < stay {
            let n = ((stay - at) as usize).min(buf.len());
            written.read_exact_at(&mut buf[..n], at)?;
            self.hasher.update(&buf[..n]);
            at += n as u64;
        }
        self.written = stay;
        Ok(stay)
    }

    /// Writes what is still queued, waiting for the blocks being recompressed; called once all
    /// of the stream has been pushed.
    pub fn flush(&mut self, out: &mut dyn Write) -> Result<()> {
        self.refeed(out)?;
        while !self.queue.is_empty() {
            self.write_front(out, true)?;
        }
        Ok(())
    }

    /// After the whole stream (and [`Reencoder::flush`]): NEW's BLAKE3 and length. Fails unless
    /// every piece was completed and written.
    pub fn finish(self) -> Result<([u8; 32], u64)> {
        if self.piece != self.table.pieces.len() || self.filled != 0 || !self.queue.is_empty() {
            return Err(self
                .names
                .mismatch("the expanded stream is shorter than its pieces"));
        }
        Ok((*self.hasher.finalize().as_bytes(), self.written))
    }
}
