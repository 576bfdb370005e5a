//! Apply: container -> [`decode`] -> [`rebuild`] (and verify) -> [`sink`] (in order, to the
//! output). OLD is read at random with positioned reads (no mapping, so its pages never count
//! toward apply's memory), the patch front to back (a pipe works) or, when it is a seekable
//! file, by its index with chunks decoded in parallel. Every chunk is verified before its bytes
//! reach the output (a `VerifiedChunk` is the only thing the sink accepts) and the whole output
//! is verified before a file is renamed into place.

use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

mod decode;
mod rebuild;
mod sink;

use crate::error::{Error, Result, Role};
use crate::files::references::{ExpandedReferences, WithReferences};
use crate::files::{self, Buffer, Destination, OldFile, OldReader, PatchInput, Reads};
use crate::format::{self, ContainerReader, HEADER_LEN, Header, PatchIndex, TransformSection};
use crate::progress::Progress;
use crate::transform::expand::{FsCodec, Rebuild};
pub use crate::transform::rebuild::Budget as TransformBudget;
use crate::transform::rebuild::{Budget, ExpandedOld, Names, Reencoder};
use crate::transform::table::{MAX_BLOCK_SIZE, Table};
use decode::{Decoder, decoder_memory};
use rebuild::{VerifiedChunk, apply_chunk};
use sink::{IO_BUFFER, Sink, Target};

/// Memory an apply needs besides its chunks in flight: the program, I/O buffers, hashers.
pub const BASE_MEMORY: u64 = 8 << 20;

/// Most memory one chunk of a patch with `header` can take while in flight, whatever the patch
/// holds: its compressed payload and its decoded streams while it decodes, then the streams and
/// its output while it is rebuilt; plus a sixteenth of a chunk and 1 MiB for what rebuilding
/// reads beside them. Versions 1 to 9 bound the decoded streams only one by one (`4L + 128` in
/// all for chunks of `L` bytes, a payload of up to as much again); version 10 bounds them
/// together ([`format::max_decoded_len`]: `1.25L + 128`), which makes a chunk's worst case
/// about `2.5L` rather than `8L` (docs/FORMAT.md, "Memory a reader needs").
pub fn chunk_memory(header: &Header) -> u64 {
    let l = u64::from(header.chunk_size);
    let streams = if header.version >= format::VERSION_DECLARED {
        let decoded = format::max_decoded_len(header.chunk_size);
        // payload: each stream at most decoded + 1/128 + 1 KiB (or stored as it is)
        2 * decoded + decoded / 128 + (3 << 10)
    } else {
        8 * l
    };
    streams + l / 16 + (1 << 20)
}

/// Bound on apply's memory for a patch with `header` and `in_flight` chunks decoded at once. A
/// patch cannot make apply exceed it: every allocation is bounded by the header's chunk size
/// (at most [`format::MAX_CHUNK_SIZE`]) and what its version bounds by it.
pub fn memory_bound(header: &Header, in_flight: usize) -> u64 {
    BASE_MEMORY + in_flight as u64 * chunk_memory(header)
}

/// What apply holds itself to when no `--memory` is given: as many chunks in flight and as much
/// of the transform's work at once ([`Budget::ladder`]) as fit in it, and no less than one chunk
/// and [`Budget::TIGHTEST`] when even those do not (a patch is never refused for it). The
/// gzip and xz live ISOs' patches fit it with two threads recompressing eight blocks at once;
/// an image of 1 MiB xz blocks gets one thread (liblzma's encoder takes 13.7 MiB for a 1 MiB
/// dictionary), where it peaked at 83 MiB with two. Issue 22: a default apply within 64 MiB.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// Makes glibc's allocator hand buffers of 1 MiB and more back to the system as soon as they are
/// freed (a fixed `M_MMAP_THRESHOLD`; by default glibc raises it to the largest buffer freed, up
/// to 32 MiB, and keeps such buffers in its arenas), so that apply's peak follows what it holds
/// and stays under [`memory_bound`]. Without it, freed chunk buffers stayed in the arenas: the
/// gzip live ISO's default patch peaked at 51.8 MiB with two chunks in flight against a 46.6 MiB
/// bound (35.9 MiB with it), and at 34.3 MiB streamed against 34.4 (27.6 with it); the xz live
/// ISO's under `--memory 32M` at 28.8 MiB (22.1). Process-wide; other allocators are left alone.
fn return_large_buffers_promptly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of glibc's allocator; any value is accepted.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// How many chunks may be in flight at once under `limit` (`None`: as many as fit in
/// [`DEFAULT_MEMORY`], at least one), at most `threads`, at least one, when `reserved` bytes of
/// it are taken by something else (the transform, the decoder).
fn chunks_in_flight(
    header: &Header,
    threads: usize,
    (limit, reserved): (Option<u64>, u64),
    path: &Path,
) -> Result<usize> {
    let fit = limit
        .unwrap_or(DEFAULT_MEMORY)
        .saturating_sub(BASE_MEMORY + reserved)
        / chunk_memory(header);
    if let Some(limit) = limit.filter(|_| fit == 0) {
        return Err(Error::MemoryLimit {
            path: path.to_path_buf(),
            need: memory_bound(header, 1) + reserved,
            limit,
        });
    }
    Ok(threads
        .min(usize::try_from(fit).unwrap_or(usize::MAX))
        .max(1))
}

/// Checks OLD's size against the patch header.
fn check_old_size(old: &dyn OldReader, header: &Header, path: &Path) -> Result<()> {
    if old.len() != header.old_size {
        return Err(Error::WrongOld {
            path: path.to_path_buf(),
            what: format!(
                "it has {} bytes, the patch expects {}",
                old.len(),
                header.old_size
            ),
        });
    }
    Ok(())
}

/// Checks OLD's BLAKE3 against the patch header.
fn check_old_hash(old: &dyn OldReader, header: &Header, path: &Path) -> Result<()> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_BUFFER];
    let mut at = 0u64;
    while at < old.len() {
        let n = ((old.len() - at) as usize).min(buf.len());
        old.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    if !format::checksum_matches(*hasher.finalize().as_bytes(), header.old_hash) {
        return Err(Error::WrongOld {
            path: path.to_path_buf(),
            what: "its BLAKE3 hash differs from the one in the patch".into(),
        });
    }
    Ok(())
}

/// Options of [`apply`](crate::apply()) and [`verify`](crate::verify): `ApplyOptions::default()`
/// then the setters (or a struct literal ending in `..Default::default()`).
///
/// ```
/// let opts = spindiff::ApplyOptions::default().threads(2).memory(Some(64 << 20));
/// assert_eq!(opts.memory_cap(), Some(64 << 20));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Threads; `None` = all cores. With 3 or more, a seekable patch is decoded `threads - 1`
    /// chunks at a time; with 1 or 2 it is streamed one chunk at a time, because hashing and
    /// writing the output in order is most of apply's time and a second decoder does not pay.
    pub threads: Option<usize>,
    /// Continue an interrupted apply to the same output: chunks its partial file
    /// (`.NAME.spindiff-partial`) already holds with the right checksums are kept, not
    /// rewritten ([`ApplyReport::kept`] counts them); the rest is written as usual.
    pub resume: bool,
    /// Cap on apply's memory: fewer chunks are decoded at once to stay under it (see
    /// [`memory_bound`]); a patch whose chunks do not fit even one at a time is refused
    /// with [`Error::MemoryLimit`] before anything is written. `None`: apply holds itself to
    /// [`DEFAULT_APPLY_MEMORY`](crate::DEFAULT_APPLY_MEMORY) (64 MiB) where the patch allows it (fewer chunks in flight, a leaner transform)
    /// and refuses nothing; a patch needing more takes one chunk and the leanest transform.
    pub memory: Option<u64>,
    /// Directories of reference files (`--ref-dir`) for a patch made with references: each file
    /// it names is found there by its SHA-256, all before anything is written.
    pub references: Vec<std::path::PathBuf>,
}

impl ApplyOptions {
    /// Sets the number of threads.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }
    /// Continues an interrupted apply (see [`ApplyOptions::resume`](Self#structfield.resume)).
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
    /// Sets (or, with `None`, lifts) the memory cap.
    pub fn memory(mut self, cap: Option<u64>) -> Self {
        self.memory = cap;
        self
    }
    /// Sets the directories of reference files (see
    /// [`ApplyOptions::references`](Self#structfield.references)).
    pub fn references(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.references = dirs;
        self
    }
    /// The memory cap.
    pub fn memory_cap(&self) -> Option<u64> {
        self.memory
    }
    fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyReport {
    /// The patch's header.
    pub header: Header,
    /// Chunks in the patch.
    pub chunks: u64,
    /// Chunks found already written and verified in the partial output of an interrupted apply
    /// (`--resume`), kept as they were: not decoded, not rewritten.
    pub kept: u64,
    /// Chunks decoded at once: 1 when streamed.
    pub in_flight: usize,
    /// NEW's own size and BLAKE3 (for a transformed patch, not its expanded stream's).
    pub new_size: u64,
    /// See `new_size`.
    pub new_hash: [u8; 32],
    /// Memory the transform of a transformed patch takes besides the chunks (0 without a transform section).
    pub transform_memory: u64,
    /// What the transform held at once under the memory cap (threads, blocks recompressed at
    /// once, OLD's cache); `None` without a transform section.
    pub transform_budget: Option<TransformBudget>,
    /// What this apply's memory could reach at most, whatever the patch held: [`memory_bound`]
    /// for its chunks in flight, plus the transform's and the decoder's own memory.
    pub memory_bound: u64,
    /// The references the patch read beside OLD (empty for a patch made without).
    pub references: Vec<format::ReferenceEntry>,
    /// The temporary space their expanded payloads took.
    pub reference_bytes: u64,
}

impl ApplyReport {
    /// Whether chunks were decoded several at a time (rather than streamed).
    pub fn parallel(&self) -> bool {
        self.in_flight > 1
    }
}

/// Applies `patch_path` (`-` = standard input) to `old_path`, writing `output` (`None` = only
/// verify, `-` = standard output). With 3 or more threads a seekable patch is decoded by
/// `threads - 1` chunks at a time (one thread's worth is the in-order hashing and writing, which
/// is most of apply's time); otherwise it is streamed, one chunk at a time.
pub fn apply_files(
    old_path: &Path,
    patch_path: &Path,
    output: Option<&Path>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let needs_file = || {
        Error::InvalidOption(
            "--resume needs an output file (it continues an interrupted apply to that file)".into(),
        )
    };
    if opts.resume && output.is_none_or(files::is_standard_stream) {
        return Err(needs_file());
    }
    let old = OldFile::open(old_path)?;
    let mut reads = Reads::new();
    reads.add(Role::Old, old_path, old.file())?;
    let reference_files = files::references::list(&opts.references)?;
    files::references::add_reads(&mut reads, &reference_files)?;
    let patch = PatchInput::open(patch_path, &mut reads)?;
    let target = match output {
        None => Target::Discard,
        Some(o) => Target::Named(Destination::decide(o, Role::Output, &reads)?, o.into()),
    };
    if opts.resume && !matches!(target, Target::Named(Destination::Replace(_), _)) {
        return Err(needs_file());
    }
    let job = Job {
        old: &old,
        real_old: &old,
        reencode: None,
        old_path,
        patch_path,
        output_path: output.unwrap_or(Path::new("(verify: no output)")),
        reads: &reads,
        opts,
        progress,
        budget: Budget::TIGHTEST,
        pool: None,
        references: None,
        reference_files: &reference_files,
    };
    if let Some(file) = patch.seekable() {
        let (header, patch_len, first) = format::check_length(file, patch_path)?;
        // A transformed patch's chunks are heavy to rebuild (their copies decompress OLD's blocks),
        // so every thread decodes; otherwise writing and hashing in order is most of the work
        // and keeps a thread's worth.
        let decoders = if header.has_transform() {
            opts.thread_count()
        } else {
            opts.thread_count().saturating_sub(1).max(1)
        };
        let reserved = decoder_memory(&header);
        let in_flight = chunks_in_flight(&header, decoders, (opts.memory, reserved), patch_path);
        // a transformed patch's memory is only known once its tables are read: it is checked
        // (and a cap too small for it named) there
        let in_flight = match in_flight {
            Err(_) if header.has_transform() => 1,
            other => other?,
        };
        if in_flight > 1 {
            // A patch whose footer or index is damaged is read front to back instead, which
            // pinpoints what is wrong with it (truncation, a bad chunk).
            if let Ok(index) = PatchIndex::read(file, header, (patch_len, first), patch_path) {
                return job.indexed(index, in_flight, target);
            }
        }
    }
    job.stream(patch.into_reader(IO_BUFFER), target)
}

/// Applies a patch read front to back from `patch` to OLD held in memory, writing NEW to `out`
/// as its chunks verify (only verified chunks are written, but a patch that fails midway leaves
/// `out` with a prefix: check the result before using it).
///
/// ```
/// let old: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
/// let mut new = old.clone();
/// new[5000..5004].copy_from_slice(b"spin");
/// let base = spindiff::Base::from_bytes(&old, &spindiff::DiffOptions::default()).unwrap();
/// let mut patch = Vec::new();
/// base.diff_bytes(&new, &mut patch).unwrap();
/// let mut out = Vec::new();
/// spindiff::apply_bytes(&old, &mut &patch[..], &mut out, &spindiff::ApplyOptions::default()).unwrap();
/// assert_eq!(out, new);
/// ```
pub fn apply_bytes(
    old: &[u8],
    patch: &mut dyn Read,
    out: &mut dyn std::io::Write,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    let old = Buffer {
        bytes: old,
        role: Role::Old,
    };
    apply_from(&old, patch, out, opts)
}

/// [`apply_bytes`] with OLD read through any [`OldReader`] (a file, a buffer, a view of
/// something else), for callers that layer their own reading of OLD.
pub fn apply_from(
    old: &dyn OldReader,
    patch: &mut dyn Read,
    out: &mut dyn std::io::Write,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    let reference_files = files::references::list(&opts.references)?;
    let job = Job {
        old,
        real_old: old,
        reencode: None,
        old_path: Path::new("(memory)"),
        patch_path: Path::new("(reader)"),
        output_path: Path::new("(writer)"),
        reads: &Reads::new(),
        opts,
        progress: &crate::progress::NoProgress,
        budget: Budget::TIGHTEST,
        pool: None,
        references: None,
        reference_files: &reference_files,
    };
    job.stream(patch, Target::Writer(out))
}

/// One apply: its inputs and options.
struct Job<'a> {
    /// What the chunks copy from: OLD, or OLD's expanded stream for a transformed patch.
    old: &'a dyn OldReader,
    /// OLD itself: checked against the header, and read for blocks NEW copies whole.
    real_old: &'a dyn OldReader,
    /// A transformed patch's NEW table and section: the sink re-encodes NEW from its expanded
    /// stream.
    reencode: Option<(&'a (Table, Table), &'a TransformSection)>,
    /// Names OLD in errors.
    old_path: &'a Path,
    patch_path: &'a Path,
    /// Names the output in errors.
    output_path: &'a Path,
    /// Every file this apply reads: no output may be one of them.
    reads: &'a Reads,
    opts: &'a ApplyOptions,
    progress: &'a dyn Progress,
    /// A transformed patch: what its transform holds at once (threads that decompress and
    /// recompress blocks, blocks in flight, OLD's cache), and the pool of those threads.
    budget: Budget,
    pool: Option<rayon::ThreadPool>,
    /// A patch made with references: their payloads, which the chunks' copies read after the
    /// base (`old`).
    references: Option<&'a ExpandedReferences>,
    /// The files under the `--ref-dir` directories, listed once (they are among `reads`).
    reference_files: &'a [std::path::PathBuf],
}

impl Job<'_> {
    /// This job as it is, without its pool: what the views below change a part of.
    fn view(&self) -> Job<'_> {
        Job {
            old: self.old,
            real_old: self.real_old,
            reencode: self.reencode,
            old_path: self.old_path,
            patch_path: self.patch_path,
            output_path: self.output_path,
            reads: self.reads,
            opts: self.opts,
            progress: self.progress,
            budget: self.budget,
            pool: None,
            references: self.references,
            reference_files: self.reference_files,
        }
    }

    /// This job for a patch whose references are `references`.
    fn with_references<'t>(&'t self, references: Option<&'t ExpandedReferences>) -> Job<'t> {
        Job {
            references,
            ..self.view()
        }
    }

    /// The payloads of the references `section` (of a patch with `header` and transform section
    /// `transform`) names, found in the `--ref-dir` directories by SHA-256 and expanded into
    /// temporary space beside the output, each checked; all before anything is written.
    fn expand_references(
        &self,
        (header, transform, section): (
            &Header,
            Option<&TransformSection>,
            Option<&format::ReferencesSection>,
        ),
    ) -> Result<Option<ExpandedReferences>> {
        let Some(section) = section else {
            return Ok(None);
        };
        let base_len = transform.map_or(header.old_size, |t| t.old_expanded_size);
        if section.base_len != base_len {
            return Err(Error::corrupt(
                self.patch_path,
                HEADER_LEN as u64,
                "references section: its base's length disagrees with the header",
            ));
        }
        let listed = (self.reference_files, &self.opts.references[..]);
        let found = files::references::find(section, listed, self.patch_path)?;
        let memory = self
            .opts
            .memory
            .map_or(files::package::DECODER_MEMORY, |m| {
                m.saturating_sub(BASE_MEMORY)
            });
        let temporary = self.names().temporary_file()?;
        ExpandedReferences::make(section, &found, (temporary, memory)).map(Some)
    }

    /// What the chunks' copies read: the base (`old`), then the references' payloads.
    fn source<'s>(&'s self, with: &'s mut Option<WithReferences<'s>>) -> &'s dyn OldReader {
        match self.references {
            Some(r) => with.insert(r.over(self.old, self.patch_path)),
            None => self.old,
        }
    }

    /// This job for a transformed patch: chunks copy from OLD's expanded stream (`expanded`) and
    /// the sink re-encodes NEW with `tables`.
    fn transformed<'t>(
        &'t self,
        expanded: &'t ExpandedOld<'t>,
        tables: &'t (Table, Table),
        (section, budget): (&'t TransformSection, Budget),
    ) -> Job<'t> {
        Job {
            old: expanded,
            reencode: Some((tables, section)),
            budget,
            ..self.view()
        }
    }

    /// Runs `apply` (which reads a transformed patch's chunks) with a pool of the budget's
    /// threads ([`transform_budget`]: as many as the cap holds the transform's decoders and
    /// encoders for), which every parallel step of the apply runs on, so that no more run at
    /// once than the memory bound counts.
    fn in_transform_pool<T>(mut self, apply: impl FnOnce(&Job) -> Result<T>) -> Result<T> {
        let k = self.budget.threads;
        self.pool = Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(k)
                .build()
                .map_err(|e| Error::OutOfMemory {
                    what: format!("cannot start {k} threads: {e}"),
                })?,
        );
        apply(&self)
    }

    /// Reads the patch front to back: one chunk in flight.
    fn stream<R: Read>(&self, input: R, target: Target) -> Result<ApplyReport> {
        let reader = ContainerReader::new(input, self.patch_path)?;
        let header = reader.header().clone();
        let refs = self.expand_references((&header, reader.transform(), reader.references()))?;
        let job = self.with_references(refs.as_ref());
        job.stream_sections(reader, &header, target)
    }

    /// [`Job::stream`] once the header and its sections are read.
    fn stream_sections<R: Read>(
        &self,
        mut reader: ContainerReader<R>,
        header: &Header,
        target: Target,
    ) -> Result<ApplyReport> {
        let header = header.clone();
        let Some(section) = reader.transform().cloned() else {
            return self.stream_chunks(&mut reader, &header, target);
        };
        let tables = transform_tables(&header, &section, self.patch_path, self.opts.memory)?;
        let threads = self.opts.thread_count();
        let budget = transform_budget(&tables, &header, threads, self.opts.memory);
        let expanded = ExpandedOld::new(
            self.real_old,
            &tables.0,
            inflate_budget(&header),
            self.names(),
        )
        .with_cache(budget.cache_bytes(tables.0.largest_block()));
        self.transformed(&expanded, &tables, (&section, budget))
            .in_transform_pool(|job| job.stream_chunks(&mut reader, &header, target))
    }

    fn stream_chunks<R: Read>(
        &self,
        reader: &mut ContainerReader<R>,
        header: &Header,
        target: Target,
    ) -> Result<ApplyReport> {
        chunks_in_flight(header, 1, self.memory_for_chunks(header), self.patch_path)?;
        return_large_buffers_promptly();
        let mut with = None;
        let source = self.source(&mut with);
        self.with_old_checked(header, 1, || {
            let mut sink = Sink::open(target, self.opts.resume, self.reads, self.reencoder())?;
            let mut decoder = Decoder::new(header, self.patch_path)?;
            self.progress.start("apply", header.new_size);
            while let Some(chunk) = reader.next_chunk()? {
                let kept = sink.keep_existing(&chunk.header, self.progress)?;
                if kept && !header.is_linked() {
                    continue;
                }
                // a kept chunk of version 3 is still decoded: the next ones' streams go on
                // from its
                let decoded = decoder.decode(chunk, self.patch_path)?;
                if !kept {
                    sink.accept(
                        apply_chunk(decoded, source, self.patch_path)?,
                        self.progress,
                    )?;
                }
            }
            Ok(sink)
        })
    }

    /// Reads a seekable patch by its index: `in_flight` chunks decoded at a time.
    fn indexed(&self, patch: PatchIndex, in_flight: usize, target: Target) -> Result<ApplyReport> {
        let refs =
            self.expand_references((patch.header(), patch.transform(), patch.references()))?;
        self.with_references(refs.as_ref())
            .indexed_sections(patch, in_flight, target)
    }

    /// [`Job::indexed`] once the references are expanded.
    fn indexed_sections(
        &self,
        patch: PatchIndex,
        in_flight: usize,
        target: Target,
    ) -> Result<ApplyReport> {
        let Some(section) = patch.transform().cloned() else {
            return self.indexed_chunks(&patch, in_flight, target);
        };
        let header = patch.header();
        let tables = transform_tables(header, &section, self.patch_path, self.opts.memory)?;
        let budget = transform_budget(&tables, header, in_flight, self.opts.memory);
        let expanded = ExpandedOld::new(
            self.real_old,
            &tables.0,
            inflate_budget(header),
            self.names(),
        )
        .with_cache(budget.cache_bytes(tables.0.largest_block()));
        self.transformed(&expanded, &tables, (&section, budget))
            .in_transform_pool(|job| job.indexed_chunks(&patch, in_flight, target))
    }

    fn indexed_chunks(
        &self,
        patch: &PatchIndex,
        in_flight: usize,
        target: Target,
    ) -> Result<ApplyReport> {
        let header = patch.header();
        let in_flight = in_flight.min(chunks_in_flight(
            header,
            in_flight,
            self.memory_for_chunks(header),
            self.patch_path,
        )?);
        return_large_buffers_promptly();
        let mut with = None;
        let source = self.source(&mut with);
        self.with_old_checked(header, in_flight, || {
            let mut sink = Sink::open(target, self.opts.resume, self.reads, self.reencoder())?;
            let mut decoder = Decoder::new(header, self.patch_path)?;
            self.progress.start("apply", header.new_size);
            let mut next = 0;
            while sink.is_resuming() && next < header.chunk_count {
                let (h, _) = patch.chunk_header(next, self.patch_path)?;
                if !sink.keep_existing(&h, self.progress)? {
                    break;
                }
                next += 1;
            }
            // Version 3: the streams of `next`'s group are decoded from the group's start.
            let start = decoder.start_for(next);
            decoder.restart_at(start);
            for i in start..next {
                decoder.decode(patch.chunk(i, self.patch_path)?, self.patch_path)?;
            }
            while next < header.chunk_count {
                let end = (next + in_flight as u64).min(header.chunk_count);
                // decoded in order (cheap; version 3 needs it), rebuilt in parallel
                let decoded = (next..end)
                    .map(|i| decoder.decode(patch.chunk(i, self.patch_path)?, self.patch_path))
                    .collect::<Result<Vec<_>>>()?;
                let rebuild = || -> Vec<Result<VerifiedChunk>> {
                    decoded
                        .into_par_iter()
                        .map(|chunk| apply_chunk(chunk, source, self.patch_path))
                        .collect()
                };
                let results = match &self.pool {
                    Some(pool) => pool.install(rebuild),
                    None => rebuild(),
                };
                for r in results {
                    sink.accept(r?, self.progress)?;
                }
                next = end;
            }
            Ok(sink)
        })
    }

    fn reencoder(&self) -> Option<Reencoder<'_>> {
        self.reencode.map(|(tables, _)| {
            Reencoder::new(&tables.1, self.real_old, self.pool.as_ref(), self.names())
                .within(self.budget)
        })
    }

    /// The files this apply's errors name.
    fn names(&self) -> Names<'_> {
        Names {
            old: self.old_path,
            patch: self.patch_path,
            output: self.output_path,
        }
    }

    /// The memory cap, and what of it the transform and the decoder take besides the chunks.
    fn memory_for_chunks(&self, header: &Header) -> (Option<u64>, u64) {
        (self.opts.memory, self.reserved_memory(header))
    }

    /// Memory the transform of a transformed patch and the decoder take besides the chunks.
    fn reserved_memory(&self, header: &Header) -> u64 {
        let transform = self.reencode.map_or(0, |(tables, _)| {
            transform_memory((&tables.0, &tables.1), &self.budget)
        });
        transform + decoder_memory(header)
    }

    /// Checks OLD's size, then runs `write` (which applies every chunk into a sink) while OLD's
    /// BLAKE3 is checked: before it with one thread, beside it on a thread of its own with more
    /// (nothing is committed before the hash matched, and a wrong OLD is reported in preference
    /// to the chunk failures it causes). Then checks the whole output and commits it.
    fn with_old_checked<'w, 't>(
        &self,
        header: &Header,
        in_flight: usize,
        write: impl FnOnce() -> Result<Sink<'w, 't>>,
    ) -> Result<ApplyReport> {
        check_old_size(self.real_old, header, self.old_path)?;
        let hash_old = || check_old_hash(self.real_old, header, self.old_path);
        let written = std::thread::scope(|s| {
            let beside = if self.opts.thread_count() >= 2 {
                std::thread::Builder::new().spawn_scoped(s, hash_old).ok()
            } else {
                None
            };
            if beside.is_none() {
                hash_old()?;
            }
            let written = write();
            if let Some(hashing) = beside {
                hashing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            }
            written
        });
        self.progress.finish();
        let mut sink = written?;
        if sink.next != header.chunk_count
            || !format::checksum_matches(*sink.hasher.finalize().as_bytes(), header.new_hash)
        {
            return Err(Error::OutputMismatch {
                path: self.patch_path.to_path_buf(),
                what: "the whole output's BLAKE3 differs from the patch header".into(),
            });
        }
        if let (Some(reencoder), Some((_, section))) = (sink.take_reencoder()?, self.reencode) {
            let (hash, len) = reencoder.finish()?;
            if len != section.new_size || !format::checksum_matches(hash, section.new_hash) {
                return Err(Error::OutputMismatch {
                    path: self.patch_path.to_path_buf(),
                    what: "NEW rebuilt from its expanded stream has the wrong BLAKE3".into(),
                });
            }
        }
        let kept = sink.kept;
        sink.commit()?;
        let (new_size, new_hash) = self
            .reencode
            .map_or((header.new_size, header.new_hash), |(_, s)| {
                (s.new_size, s.new_hash)
            });
        Ok(ApplyReport {
            header: header.clone(),
            chunks: header.chunk_count,
            kept,
            in_flight,
            new_size,
            new_hash,
            transform_memory: self
                .reencode
                .map_or(0, |(t, _)| transform_memory((&t.0, &t.1), &self.budget)),
            transform_budget: self.reencode.map(|_| self.budget),
            memory_bound: memory_bound(header, in_flight) + self.reserved_memory(header),
            references: self.references.map_or(Vec::new(), |r| r.entries().to_vec()),
            reference_bytes: self
                .references
                .map_or(0, ExpandedReferences::temporary_bytes),
        })
    }
}

/// Both tables of a transformed patch, parsed and checked against the header and the section.
fn transform_tables(
    header: &Header,
    section: &TransformSection,
    path: &Path,
    memory: Option<u64>,
) -> Result<(Table, Table)> {
    let bad = |what: String| Error::corrupt(path, HEADER_LEN as u64, what);
    // Tables are held while chunks apply. Refused when parsing them alone would pass the cap;
    // the cap named is what any patch with tables of this size can need, so that a cap of that
    // much is never refused later. Once they are read, the chunks' check names the exact need.
    let raw = (section.old_table.len() + section.new_table.len()) as u64;
    let parse = BASE_MEMORY + crate::transform::table::parse_memory(raw);
    if let Some(limit) = memory
        && parse > limit
    {
        return Err(Error::MemoryLimit {
            path: path.to_path_buf(),
            need: transformed_memory_bound(header, raw),
            limit,
        });
    }
    let v = header.version;
    let old = Table::parse_for(&section.old_table, header.old_size, header.old_size, v);
    let new = Table::parse_for(&section.new_table, section.new_size, header.old_size, v);
    let (old, new) = (old.map_err(bad)?, new.map_err(bad)?);
    if old.expanded_len() != section.old_expanded_size || new.expanded_len() != header.new_size {
        return Err(bad(
            "transform section: the tables' expanded sizes disagree with the header".into(),
        ));
    }
    if new.unrebuildable() {
        return Err(bad(
            "transform table: a gzip stream to rebuild without its recipe".into(),
        ));
    }
    if let Some(variant) = new.missing_release() {
        return Err(Error::MissingEncoder {
            path: path.to_path_buf(),
            what: format!(
                "libzstd {} to recompress its zstd blocks (scripts/zstd-releases.sh builds it)",
                crate::transform::zstd_release::name(variant)
            ),
        });
    }
    Ok((old, new))
}

/// The most bytes of OLD's blocks a transformed patch may make apply decompress: what re-reading
/// every block 64 times over for NEW's expanded stream takes, plus a margin. A hostile patch
/// whose every copy lands in a different block is stopped there.
fn inflate_budget(header: &Header) -> u64 {
    header.new_size.saturating_mul(64).saturating_add(256 << 20)
}

/// Memory the transform of a transformed patch takes besides the chunks within `budget`:
/// - both tables, and where each of OLD's pieces starts;
/// - OLD's block cache ([`Budget::cache_bytes`]; the blocks being decompressed are counted in
///   it, room being made for them first);
/// - for each of the budget's threads (they rebuild the chunks, reading OLD's expanded stream) a
///   decoder and a block's worth: the stored bytes it decompresses, or a block it is copying
///   from that the cache let go meanwhile;
/// - the re-encoder's buffers ([`reencoder_buffers`]) and an encoder per block recompressed at
///   once ([`Budget::encoders`]; its output counted with it);
/// - for whole streams, one decoder and one encoder.
///
/// The codecs' settings were checked against what a real image can hold when the tables were
/// read, so their memory is bounded too.
pub fn transform_memory((old, new): (&Table, &Table), budget: &Budget) -> u64 {
    let pieces = (old.pieces.len() + new.pieces.len()) as u64;
    let codecs = || old.codecs.iter().chain(&new.codecs);
    // the most plain bytes of a block (an EROFS pcluster's or an xz block's is its own length,
    // up to 12 MiB)
    let exact = codecs().any(|c| c.codec.has_exact_blocks());
    let exact_blocks = exact.then(|| old.largest_block().max(new.largest_block()));
    let block = codecs()
        .map(|c| u64::from(c.block_size))
        .chain(exact_blocks)
        .max()
        .unwrap_or(u64::from(MAX_BLOCK_SIZE));
    let limit = block as usize;
    // blocks held whole: a decoder per thread, an encoder per block in flight
    let decoder = old
        .block_codecs()
        .chain(new.block_codecs())
        .map(|c| c.codec.decoder_memory())
        .max()
        .unwrap_or(0)
        + block;
    let encoder = new
        .block_codecs()
        .map(|c| c.codec.encoder_memory(limit))
        .max()
        .unwrap_or(0);
    // whole streams: one of OLD's decoded at a time (into temporary space, a step at a time)
    // and one of NEW's encoder, whatever the threads
    let stream_cost = |t: &Table, f: &dyn Fn(&FsCodec, u64) -> u64, recompressed: bool| {
        // NEW's encoders run only for the streams it recompresses (one copied from OLD is
        // copied as it is stored)
        let streams = t.pieces.iter().filter(|p| {
            t.is_streamed(p) && (!recompressed || matches!(p.rebuild, Rebuild::Recompress { .. }))
        });
        let cost = |p: &crate::transform::expand::Piece| {
            let (fs, _) = p.block?;
            Some(f(&t.codecs[usize::from(fs)], p.expanded_len()))
        };
        streams.filter_map(cost).max().unwrap_or(0)
    };
    let decode = |c: &FsCodec, _| crate::transform::stream::decoder_memory(&c.codec);
    let encode = |c: &FsCodec, plain| crate::transform::stream::encoder_memory(&c.codec, plain);
    let streams = stream_cost(old, &decode, false).max(stream_cost(new, &decode, true))
        + stream_cost(new, &encode, true);
    let streamed = old.pieces.iter().any(|p| old.is_streamed(p))
        || new.pieces.iter().any(|p| new.is_streamed(p));
    // ExpandedOld also keeps where each of OLD's pieces starts
    pieces * std::mem::size_of::<crate::transform::expand::Piece>() as u64
        + old.pieces.len() as u64 * 8
        + budget.cache_bytes(block)
        + budget.threads as u64 * decoder
        + reencoder_buffers(budget, block, streamed)
        + budget.encoders() as u64 * encoder
        + streams
}

/// The re-encoder's buffers within `budget` when no block has more than `block` plain bytes:
/// the block it gathers (one buffer of the block's size) or the buffer a piece copied from OLD is
/// read into (a block, or a step of a whole stream when the tables have `streams`), never both
/// (pieces come one at a time, and a gathered block leaves the re-encoder as it is
/// recompressed); and beside the chunks the plain bytes of the blocks in flight, their
/// recompressed bytes and the bytes waiting behind them ([`Budget::batch_bytes`] each; none for
/// [`Budget::TIGHTEST`], which recompresses each block as NEW is written).
fn reencoder_buffers(budget: &Budget, block: u64, streams: bool) -> u64 {
    let step = crate::transform::stream::STEP as u64;
    let piece = if streams { block.max(step) } else { block };
    piece + 3 * budget.batch_bytes(block)
}

/// The most memory any transformed patch of `header` whose tables are `raw` bytes can need to
/// apply with one thread: a bound known before the tables are read (on tables of at most
/// `raw` bytes, any codec valid in its version, blocks of at most [`MAX_BLOCK_SIZE`] plain, or
/// from version 4 EROFS pclusters and xz streams' blocks of at most `PCLUSTER_MAX_PLAIN`).
fn transformed_memory_bound(header: &Header, raw: u64) -> u64 {
    use crate::transform::codec::{Codec, PCLUSTER_MAX_PLAIN};
    let exact = header.version >= format::VERSION_EROFS;
    let block = u64::from(if exact {
        PCLUSTER_MAX_PLAIN
    } else {
        MAX_BLOCK_SIZE
    });
    memory_bound(header, 1)
        + decoder_memory(header)
        + crate::transform::table::parse_memory(raw)
        + Budget::TIGHTEST.cache_bytes(block)
        + reencoder_buffers(&Budget::TIGHTEST, block, true)
        + Codec::most_memory(block as usize, exact)
        + block
}

/// What the transform of an apply of a transformed patch with `tables` holds at once: the
/// first of [`Budget::ladder`] (`threads` threads, then fewer, then fewer blocks in flight and a
/// smaller cache of OLD's blocks) that fits under `limit` ([`DEFAULT_MEMORY`] when none is
/// given) beside one chunk in flight, at least
/// [`Budget::TIGHTEST`] (a cap that does not hold that is refused when the chunks are counted,
/// naming what one needs).
fn transform_budget(
    tables: &(Table, Table),
    header: &Header,
    threads: usize,
    limit: Option<u64>,
) -> Budget {
    let limit = limit.unwrap_or(DEFAULT_MEMORY);
    let fixed = memory_bound(header, 1) + decoder_memory(header);
    Budget::ladder(threads)
        .find(|b| fixed + transform_memory((&tables.0, &tables.1), b) <= limit)
        .unwrap_or(Budget::TIGHTEST)
}

/// The least `apply --memory` a patch this build writes (version 10) with chunks of
/// `chunk_size` applies under when its transform takes `transform` bytes at the least (its
/// tables within the tightest budget, `apply::least_transform_memory`; 0 without a transform
/// section): one chunk in flight, its frames' windows the widest the diff gives such a patch
/// ([`crate::diff::encode::frame_windows`]). `diff --apply-memory` chooses the chunk size with
/// it.
pub fn least_memory(chunk_size: u32, transform: u64) -> u64 {
    let mut header = Header {
        version: format::VERSION_DECLARED,
        transform: transform > 0,
        references: false,
        group: 1,
        old_size: 0,
        new_size: 0,
        old_hash: [0; 32],
        new_hash: [0; 32],
        chunk_size,
        chunk_count: 0,
        windows: format::FrameWindows::default(),
    };
    header.windows = crate::diff::encode::frame_windows(&header, u32::MAX);
    memory_bound(&header, 1) + decoder_memory(&header) + transform
}

/// The least memory the transform of a patch with tables `old` and `new` takes on apply: within
/// [`Budget::TIGHTEST`].
pub fn least_transform_memory(old: &Table, new: &Table) -> u64 {
    transform_memory((old, new), &Budget::TIGHTEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-2 header and a section whose tables claim `raw` bytes of entries.
    fn hostile(raw: usize) -> (Header, TransformSection) {
        let header = Header {
            version: crate::format::VERSION_TRANSFORM,
            transform: true,
            references: false,
            group: 0,
            old_size: 1 << 20,
            new_size: 1 << 20,
            old_hash: [0; 32],
            new_hash: [0; 32],
            chunk_size: 1 << 20,
            chunk_count: 1,
            windows: Default::default(),
        };
        let section = TransformSection {
            new_size: 1 << 20,
            new_hash: [0; 32],
            old_expanded_size: 1 << 20,
            old_table: vec![0xff; raw],
            new_table: vec![0xff; raw],
        };
        (header, section)
    }

    #[test]
    fn tables_past_the_memory_cap_are_refused_before_they_are_parsed() {
        let (header, section) = hostile(64 << 20);
        let path = Path::new("hostile.spd");
        match transform_tables(&header, &section, path, Some(256 << 20)) {
            Err(Error::MemoryLimit { need, limit, .. }) => {
                assert_eq!(limit, 256 << 20);
                assert!(need > limit, "{need}");
            }
            other => panic!("expected MemoryLimit, got {other:?}"),
        }
        // Under the cap the same garbage reaches the parser and is refused as corrupt.
        let (header, section) = hostile(64);
        match transform_tables(&header, &section, path, Some(256 << 20)) {
            Err(Error::CorruptPatch { .. }) => {}
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
