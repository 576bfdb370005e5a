//! Apply: container -> decode -> apply -> verify -> output. OLD is read at random with positioned
//! reads (no mapping, so its pages never count toward apply's memory), the patch is read front
//! to back (a pipe works) or, when it is a seekable file, by its index with chunks decoded in
//! parallel. Every chunk is verified before its bytes reach the output ([`VerifiedChunk`] is the
//! only thing the output accepts) and the whole output is verified before the temporary file is
//! renamed into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

pub mod decode;

use crate::error::{Error, Result, Role};
use crate::files::{self, Destination, OldFile, PatchInput, PendingFile, Reads};
use crate::format::{self, AddRuns, ChunkHeader, ContainerReader, Header, Ops, PatchIndex};
use crate::progress::Progress;
use decode::{DecodedChunk, decode_chunk};

/// Size of apply's read and write buffers: large enough for sequential throughput, small next
/// to the chunks in flight, which are what apply's memory is made of.
const IO_BUFFER: usize = 256 << 10;

/// Memory an apply needs besides its chunks in flight: the program, I/O buffers, hashers.
pub const BASE_MEMORY: u64 = 8 << 20;

/// Most memory one chunk of `chunk_size` output bytes can take while in flight, whatever the
/// patch holds: its compressed payload (<= 4 * chunk + 1/128 + frame overheads, by the format's
/// bounds) and its decoded streams (<= 4 * chunk + 128) while it decodes, then the streams and
/// its output (chunk) while it is rebuilt; plus a decompression context.
pub fn chunk_memory(chunk_size: u32) -> u64 {
    let l = u64::from(chunk_size);
    8 * l + l / 16 + (1 << 20)
}

/// Bound on apply's memory with `in_flight` chunks of `chunk_size` decoded at once. A patch
/// cannot make apply exceed it: every allocation is bounded by the header's chunk size, itself
/// at most [`format::MAX_CHUNK_SIZE`].
pub fn memory_bound(chunk_size: u32, in_flight: usize) -> u64 {
    BASE_MEMORY + in_flight as u64 * chunk_memory(chunk_size)
}

/// How many chunks may be in flight at once under `limit` (`None`: `threads`), at least one.
fn chunks_in_flight(
    header: &Header,
    threads: usize,
    limit: Option<u64>,
    path: &Path,
) -> Result<usize> {
    let Some(limit) = limit else {
        return Ok(threads);
    };
    let fit = limit.saturating_sub(BASE_MEMORY) / chunk_memory(header.chunk_size);
    if fit == 0 {
        return Err(Error::MemoryLimit {
            path: path.to_path_buf(),
            need: memory_bound(header.chunk_size, 1),
            limit,
        });
    }
    Ok(threads.min(usize::try_from(fit).unwrap_or(usize::MAX)))
}

/// Output bytes of one chunk whose XXH3-128 matched the patch. Only [`apply_chunk`] makes one.
pub struct VerifiedChunk {
    index: u64,
    bytes: Vec<u8>,
}

impl VerifiedChunk {
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Rebuilds one chunk from its decoded streams and OLD, then verifies it.
pub fn apply_chunk(chunk: DecodedChunk, old: &OldFile, patch_path: &Path) -> Result<VerifiedChunk> {
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
        old.read_at(dst, op.old_pos)?;
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

/// Where verified output goes.
pub enum Output {
    /// NEW's partial file beside the target, renamed into place once everything verifies.
    File(PendingFile),
    /// Standard output, a device or a FIFO: verified chunks are streamed as they come.
    Stream(files::Output),
    /// Nowhere (`verify`).
    Discard,
}

impl Output {
    fn write(&mut self, chunk: &VerifiedChunk, target: &Path) -> Result<()> {
        let written = match self {
            Output::File(f) => f.write_all(chunk.bytes()),
            Output::Stream(s) => s.write_all(chunk.bytes()),
            Output::Discard => Ok(()),
        };
        written.map_err(|e| Error::io(Role::Output, target, "write", e))
    }

    /// Renames the finished file into place (or flushes a stream).
    fn commit(self) -> Result<()> {
        match self {
            Output::File(f) => f.commit(),
            Output::Stream(s) => s.commit(),
            Output::Discard => Ok(()),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub header: Header,
    /// Chunks in the patch.
    pub chunks: u64,
    /// Chunks found already written and verified in the partial output of an interrupted apply
    /// (`--resume`), kept as they were: not decoded, not rewritten.
    pub kept: u64,
    /// Chunks decoded at once: 1 when streamed.
    pub in_flight: usize,
}

impl ApplyReport {
    /// Whether chunks were decoded several at a time (rather than streamed).
    pub fn parallel(&self) -> bool {
        self.in_flight > 1
    }
}

/// Collects verified chunks in order, hashes them, writes them.
struct Sink {
    output: Output,
    target: PathBuf,
    hasher: blake3::Hasher,
    /// Chunks and output bytes accounted for so far, kept or written.
    next: u64,
    bytes: u64,
    /// Resuming: the length the interrupted apply's partial output had; chunks inside it are
    /// checked against the patch before anything is decoded. `None` once a chunk did not verify
    /// (the file was cut there), or when not resuming.
    unchecked: Option<u64>,
    kept: u64,
}

impl Sink {
    /// `destination`: `None` = discard; `target` is the name it was given (for messages).
    /// With `resume`, an interrupted apply's partial output is checked chunk by chunk instead of
    /// rewritten, and kept if this apply fails too (it still holds verified chunks).
    fn new(
        destination: Option<Destination>,
        target: Option<&Path>,
        resume: bool,
        reads: &Reads,
    ) -> Result<Sink> {
        let mut unchecked = None;
        let target = target.map(Path::to_path_buf).unwrap_or_default();
        let output = match destination {
            None => Output::Discard,
            Some(Destination::Replace(file)) => {
                let (mut file, present) =
                    PendingFile::open_partial(&file, Role::Output, IO_BUFFER, resume, reads)?;
                if resume {
                    unchecked = Some(present);
                    if present > 0 {
                        file.keep_on_failure();
                    }
                }
                Output::File(file)
            }
            Some(stream) => Output::Stream(files::Output::open(
                stream,
                &target,
                Role::Output,
                IO_BUFFER,
            )?),
        };
        Ok(Sink {
            output,
            target,
            hasher: blake3::Hasher::new(),
            next: 0,
            bytes: 0,
            unchecked,
            kept: 0,
        })
    }

    fn accept(&mut self, chunk: VerifiedChunk, progress: &dyn Progress) -> Result<()> {
        debug_assert_eq!(chunk.index(), self.next);
        self.stop_keeping()?;
        self.hasher.update(chunk.bytes());
        self.output.write(&chunk, &self.target)?;
        progress.advance(chunk.bytes().len() as u64);
        self.next += 1;
        self.bytes += chunk.bytes().len() as u64;
        Ok(())
    }

    /// Resuming: whether the chunk `h` describes is already in the partial output with the
    /// checksum the patch gives it. If so it is kept (hashed, counted, not rewritten); the first
    /// chunk that is not ends the resume, and the partial file is cut where it starts.
    fn keep_existing(&mut self, h: &ChunkHeader, progress: &dyn Progress) -> Result<bool> {
        let (Some(unchecked), Output::File(file)) = (self.unchecked, &self.output) else {
            return Ok(false);
        };
        debug_assert_eq!(h.index, self.next);
        let end = h.new_offset + u64::from(h.new_len);
        if end <= unchecked {
            let mut whole = self.hasher.clone();
            let mut sum = Xxh3::new();
            let mut buf = vec![0u8; IO_BUFFER.min(h.new_len as usize)];
            let mut at = h.new_offset;
            while at < end {
                let n = ((end - at) as usize).min(buf.len());
                file.read_back(&mut buf[..n], at)?;
                sum.update(&buf[..n]);
                whole.update(&buf[..n]);
                at += n as u64;
            }
            if sum.digest128() == h.output_hash {
                self.hasher = whole;
                self.kept += 1;
                self.next += 1;
                self.bytes = end;
                progress.advance(u64::from(h.new_len));
                return Ok(true);
            }
        }
        self.stop_keeping()?;
        Ok(false)
    }

    /// Ends a resume: what the partial file holds after the chunks kept so far is cut.
    fn stop_keeping(&mut self) -> Result<()> {
        if self.unchecked.take().is_some()
            && let Output::File(file) = &mut self.output
        {
            file.truncate_at(self.bytes)?;
        }
        Ok(())
    }

    fn is_resuming(&self) -> bool {
        self.unchecked.is_some()
    }

    /// After the last chunk: a resume that kept everything drops any bytes beyond NEW's end.
    fn finish_output(&mut self) -> Result<()> {
        self.stop_keeping()
    }
}

/// Applies `patch_path` (`-` = standard input) to `old_path`, writing `output` (`None` = only
/// verify, `-` = standard output). With `threads` >= 3 a seekable patch is decoded by
/// `threads - 1` chunks at a time (one thread's worth is the in-order hashing and writing, which
/// is most of apply's time); otherwise it is streamed, one chunk at a time. `resume` keeps what
/// an interrupted apply to the same output already wrote and verified. `memory` caps the chunks
/// in flight by [`memory_bound`]; a patch whose chunks cannot fit even one at a time is refused.
pub fn apply_patch(
    old_path: &Path,
    patch_path: &Path,
    output: Option<&Path>,
    threads: usize,
    resume: bool,
    memory: Option<u64>,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let needs_file = || {
        Error::InvalidOption(
            "--resume needs an output file (it continues an interrupted apply to that file)".into(),
        )
    };
    if resume && output.is_none_or(files::is_standard_stream) {
        return Err(needs_file());
    }
    let old = OldFile::open(old_path)?;
    let mut reads = Reads::new();
    reads.add(Role::Old, old_path, old.file())?;
    let patch = PatchInput::open(patch_path, &mut reads)?;
    let destination = output
        .map(|o| Destination::decide(o, Role::Output, &reads))
        .transpose()?;
    if resume && !matches!(destination, Some(Destination::Replace(_))) {
        return Err(needs_file());
    }
    let job = Job {
        old: &old,
        threads,
        patch_path,
        output,
        reads: &reads,
        resume,
        memory,
        progress,
    };
    if let Some(file) = patch.seekable() {
        let (header, patch_len) = format::check_length(file, patch_path)?;
        let decoders = threads.saturating_sub(1).max(1);
        let in_flight = chunks_in_flight(&header, decoders, memory, patch_path)?;
        if in_flight > 1 {
            // A patch whose footer or index is damaged is read front to back instead, which
            // pinpoints what is wrong with it (truncation, a bad chunk).
            if let Ok(index) = PatchIndex::read(file, header, patch_len, patch_path) {
                return job.indexed(index, in_flight, destination);
            }
        }
    }
    job.stream(patch.into_reader(IO_BUFFER), destination)
}

/// OLD's BLAKE3 check: done, or under way on a thread of its own.
struct OldCheck(Option<std::thread::JoinHandle<Result<()>>>);

impl OldCheck {
    fn wait(self) -> Result<()> {
        match self.0 {
            None => Ok(()),
            Some(hashing) => hashing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    }
}

/// One apply: its inputs, where the output goes and how.
struct Job<'a> {
    old: &'a OldFile,
    /// With two or more, OLD is hashed on a thread of its own while chunks are applied.
    threads: usize,
    patch_path: &'a Path,
    output: Option<&'a Path>,
    /// Every file this apply reads: no output may be one of them.
    reads: &'a Reads,
    resume: bool,
    memory: Option<u64>,
    progress: &'a dyn Progress,
}

impl Job<'_> {
    /// Reads the patch front to back: one chunk in flight.
    fn stream<R: Read>(&self, input: R, destination: Option<Destination>) -> Result<ApplyReport> {
        let mut reader = ContainerReader::new(input, self.patch_path)?;
        let header = reader.header().clone();
        chunks_in_flight(&header, 1, self.memory, self.patch_path)?;
        let old_check = self.check_old(&header)?;
        let written = (|| {
            let mut sink = Sink::new(destination, self.output, self.resume, self.reads)?;
            self.progress.start("apply", header.new_size);
            while let Some(chunk) = reader.next_chunk()? {
                if sink.keep_existing(&chunk.header, self.progress)? {
                    continue;
                }
                let decoded = decode_chunk(chunk, self.patch_path)?;
                sink.accept(
                    apply_chunk(decoded, self.old, self.patch_path)?,
                    self.progress,
                )?;
            }
            Ok(sink)
        })();
        self.finish(old_check, written, &header, 1)
    }

    /// Reads a seekable patch by its index: `in_flight` chunks decoded at a time.
    fn indexed(
        &self,
        patch: PatchIndex,
        in_flight: usize,
        destination: Option<Destination>,
    ) -> Result<ApplyReport> {
        let header = patch.header();
        let old_check = self.check_old(header)?;
        let written = (|| {
            let mut sink = Sink::new(destination, self.output, self.resume, self.reads)?;
            self.progress.start("apply", header.new_size);
            let mut first = 0;
            while sink.is_resuming() && first < header.chunk_count {
                let (h, _) = patch.chunk_header(first, self.patch_path)?;
                if !sink.keep_existing(&h, self.progress)? {
                    break;
                }
                first += 1;
            }
            let mut next = first;
            while next < header.chunk_count {
                let end = (next + in_flight as u64).min(header.chunk_count);
                let results: Vec<Result<VerifiedChunk>> = (next..end)
                    .into_par_iter()
                    .map(|i| {
                        let chunk = patch.chunk(i, self.patch_path)?;
                        let decoded = decode_chunk(chunk, self.patch_path)?;
                        apply_chunk(decoded, self.old, self.patch_path)
                    })
                    .collect();
                for r in results {
                    sink.accept(r?, self.progress)?;
                }
                next = end;
            }
            Ok(sink)
        })();
        self.finish(old_check, written, header, in_flight)
    }

    /// OLD's size now; its BLAKE3 now, or with a spare thread alongside the chunks (which go to
    /// the partial file meanwhile: nothing is committed before the hash has matched).
    fn check_old(&self, header: &Header) -> Result<OldCheck> {
        self.old.check_size(header)?;
        if self.threads < 2 {
            self.old.check_hash(header)?;
            return Ok(OldCheck(None));
        }
        let old = self.old.try_clone()?;
        let header = header.clone();
        Ok(OldCheck(Some(std::thread::spawn(move || {
            old.check_hash(&header)
        }))))
    }

    fn finish(
        &self,
        old_check: OldCheck,
        written: Result<Sink>,
        header: &Header,
        in_flight: usize,
    ) -> Result<ApplyReport> {
        self.progress.finish();
        // A wrong OLD explains whatever else went wrong (chunks that do not verify): its
        // verdict comes first.
        old_check.wait()?;
        let mut sink = written?;
        sink.finish_output()?;
        if sink.next != header.chunk_count
            || !format::checksum_matches(*sink.hasher.finalize().as_bytes(), header.new_hash)
        {
            return Err(Error::OutputMismatch {
                path: self.patch_path.to_path_buf(),
                what: "the whole output's BLAKE3 differs from the patch header".into(),
            });
        }
        let kept = sink.kept;
        sink.output.commit()?;
        Ok(ApplyReport {
            header: header.clone(),
            chunks: header.chunk_count,
            kept,
            in_flight,
        })
    }
}
