//! The diff: OLD -> [`Base`] (its hash and anchor index, built once) -> plan -> suffix arrays ->
//! matching -> selection -> encoding -> container, one module per stage:
//!
//! | module | owns |
//! |---|---|
//! | [`anchors`] | the content-defined anchor index over OLD and `find_runs` (verified exact matches of a piece of NEW) |
//! | [`plan`] | `--memory` -> parameters; per-chunk OLD ranges; segments (chunks sharing one suffix array) |
//! | [`suffix`] | libsais suffix arrays in reused buffers |
//! | [`reference`] | the OLD bytes a chunk is matched against (in memory, or OLD through windows) |
//! | [`matcher`] | exact-match finders and the [`Matcher`](matcher::Matcher) trait, bsdiff's first |
//! | `pipeline` | segment threads, one rayon pool, the reorder window in front of the writer |
//! | [`select`] | which copies pay for themselves: the others become inserted bytes |
//! | [`encode`] | a chunk's [`Delta`](matcher::Delta) -> its compressed record |
//! | [`many`] | one OLD, many NEW files: OLD prepared once, each patch the single diff's |
//!
//! The same inputs and options give byte-identical patches whatever the thread count: the plan
//! depends on the inputs and the options only.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;

pub mod anchors;
pub mod batch;
pub mod encode;
pub mod many;
pub mod matcher;
mod pipeline;
pub mod plan;
pub mod reference;
pub mod select;
pub mod suffix;

use crate::error::{Error, Result, Role};
use crate::files::{
    self, Buffer, Destination, Mapped, Output, Reads, SCAN_BLOCK, Source, hash_source,
};
use crate::format::{ContainerWriter, Header, ReferencesSection, TransformSection, chunk_span};
use crate::progress::{NoProgress, Progress};
use crate::transform::expand::{FsCodec, expand_new_releasing, expand_old_releasing};
use crate::transform::squashfs::Layout;
use crate::transform::table::Table;
use crate::transform::{self, find_filesystems_within};
use anchors::{AnchorIndex, Run, find_runs};
use plan::{ChunkPlan, Params, expected_old_pos, plan_chunk, segments};
use reference::Space;

/// Options of a diff: `DiffOptions::default()` then the setters (or a struct literal ending in
/// `..Default::default()`), so that a field added later does not break callers.
///
/// ```
/// let opts = spindiff::DiffOptions::default().memory(512 << 20).threads(2);
/// assert_eq!(opts.memory_cap(), 512 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Hard cap on the diff's peak memory (RSS, mapped pages included), in bytes.
    pub memory: u64,
    /// Worker threads; `None` = all cores. Never changes the patch.
    pub threads: Option<usize>,
    /// zstd level of the streams (1..=22).
    pub level: i32,
    /// Output bytes per chunk.
    pub chunk_size: u32,
    /// Expand compressed squashfs blocks inside OLD and NEW before diffing, and recompress them
    /// on apply (the patch then has a transform section); pairs without any have none.
    pub transform: bool,
    /// The memory the patch must apply in (`apply --memory`): the diff takes the largest chunks,
    /// down from `chunk_size`, whose apply fits it ([`crate::apply::least_memory`]), or refuses
    /// the pair when chunks of 4 KiB do not. A many-targets run fits its chunks as if each NEW's
    /// table were OLD's and refuses a target whose own table needs more.
    pub apply_memory: Option<u64>,
    /// Directories of reference files (`--ref-dir`; issue 23): the payloads of the files under
    /// them (a package's `data.tar` or cpio archive, decompressed) are sources beside OLD, and
    /// the patch names those its chunks reach (apply then needs them). Read by the diffs of
    /// files ([`crate::diff()`], [`crate::diff_many`], [`crate::diff_batch`], [`Base::open`]),
    /// not by [`Base::from_bytes`].
    pub references: Vec<std::path::PathBuf>,
}

impl DiffOptions {
    /// Turns the expansion of compressed content on or off.
    pub fn transform(mut self, on: bool) -> Self {
        self.transform = on;
        self
    }
    /// Sets the memory cap (bytes).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }
    /// Sets the number of worker threads (it never changes the patch).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }
    /// Sets the zstd level of the streams (1..=22).
    pub fn level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }
    /// Sets the output bytes per chunk.
    pub fn chunk_size(mut self, bytes: u32) -> Self {
        self.chunk_size = bytes;
        self
    }
    /// Sets (or, with `None`, lifts) the memory the patch must apply in.
    pub fn apply_memory(mut self, bytes: Option<u64>) -> Self {
        self.apply_memory = bytes;
        self
    }
    /// Sets the directories of reference files (see [`DiffOptions::references`]).
    pub fn references(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.references = dirs;
        self
    }

    /// These options with the chunk size a patch must have to apply in `apply_memory` when its
    /// transform takes `transform` bytes at the least ([`crate::apply::least_transform_memory`];
    /// 0 without one): the chunk size halved until it fits.
    pub(crate) fn fitted_to_apply(&self, transform: u64) -> Result<DiffOptions> {
        let Some(cap) = self.apply_memory else {
            return Ok(self.clone());
        };
        let mut chunk = self.chunk_size;
        let need = |chunk| crate::apply::least_memory(chunk, transform);
        while need(chunk) > cap && chunk / 2 >= crate::format::MIN_CHUNK_SIZE {
            chunk /= 2;
        }
        if need(chunk) > cap {
            return Err(Error::InvalidOption(format!(
                "--apply-memory {} is too small for this pair: its patch applies in {} MiB at least (chunks of {})",
                crate::size::format_size(cap),
                need(chunk).div_ceil(1 << 20),
                crate::size::format_size(u64::from(chunk))
            )));
        }
        Ok(self.clone().chunk_size(chunk))
    }
    /// The file systems `new_fs` of OLD or NEW without the whole streams a machine of
    /// `apply_memory` could not recompress (their encoder alone passes it: a zstd stream's
    /// multi-threaded framing takes about 100 MiB at level 9): those stay compressed, as stored
    /// bytes, on both sides (OLD's would count as NEW's when chunks are fitted, and a stream
    /// compressed in NEW matches OLD's compressed one best).
    pub(crate) fn rebuildable(&self, mut new_fs: Vec<Layout>) -> Vec<Layout> {
        if let Some(cap) = self.apply_memory {
            let min_chunk = crate::format::MIN_CHUNK_SIZE;
            new_fs.retain(|l| {
                l.regions.iter().filter_map(|r| r.block).all(|k| {
                    let plain = k.plain_limit(l.block_size) as u64;
                    let stream =
                        crate::transform::stream::rebuild_memory_either_side(&l.codec, plain);
                    !l.codec.streams(k) || crate::apply::least_memory(min_chunk, stream) <= cap
                })
            });
        }
        new_fs
    }

    /// OLD's file systems in `old` (its bytes; `release` behind the scan), each parsed within
    /// `budget`, as this diff expands them: without the streams [`Self::rebuildable`] leaves
    /// compressed, and each codec as OLD's table holds it (OLD is only decoded: a level parsing
    /// left to NEW's expansion is settled).
    pub(crate) fn old_filesystems(
        &self,
        old: &[u8],
        budget: u64,
        release: &dyn Fn(usize, usize),
    ) -> Vec<Layout> {
        let mut old_fs = self.rebuildable(find_filesystems_within(old, budget, release));
        for l in &mut old_fs {
            l.codec = l.codec.settled();
        }
        old_fs
    }

    /// NEW's file systems in `new` (its bytes; `release` behind the scan), each parsed within
    /// `budget`, as this diff with OLD's file systems `old_fs` expands them: without the
    /// streams [`Self::rebuildable`] leaves compressed, and [`Self::searchable`].
    pub(crate) fn new_filesystems(
        &self,
        new: &[u8],
        (budget, old_fs): (u64, &[Layout]),
        release: &dyn Fn(usize, usize),
    ) -> Vec<Layout> {
        let new_fs = self.rebuildable(find_filesystems_within(new, budget, release));
        self.searchable(new_fs, old_fs)
    }

    /// NEW's file systems `new_fs` with the level search of a zstd frame whose level parsing
    /// left to expansion ([`transform::zstdstream::DEFERRED`]) given up where the cap leaves it
    /// no room beside what a diff with OLD's file systems `old_fs` holds: such a frame stays
    /// stored, as it would with no search.
    fn searchable(&self, mut new_fs: Vec<Layout>, old_fs: &[Layout]) -> Vec<Layout> {
        let taken = plan::RESERVED + transform::memory::held(old_fs);
        for l in &mut new_fs {
            if l.codec.is_deferred()
                && taken + transform::memory::expansion_memory(&[l], 1, 1) > self.memory
            {
                l.codec = l.codec.settled();
            }
        }
        new_fs
    }

    /// The memory cap (bytes).
    pub fn memory_cap(&self) -> u64 {
        self.memory
    }

    /// Checks the options and returns the thread count they ask for.
    fn checked_threads(&self) -> Result<usize> {
        if !(1..=22).contains(&self.level) {
            return Err(Error::InvalidOption(format!(
                "--level {} is outside 1..=22",
                self.level
            )));
        }
        if !(crate::format::MIN_CHUNK_SIZE..=crate::format::MAX_CHUNK_SIZE)
            .contains(&self.chunk_size)
        {
            return Err(Error::InvalidOption(format!(
                "chunk size {} is outside the format's limits",
                self.chunk_size
            )));
        }
        match self.threads {
            Some(0) => Err(Error::InvalidOption("--threads must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            memory: 1 << 30,
            threads: None,
            level: DEFAULT_LEVEL,
            chunk_size: plan::DEFAULT_CHUNK_SIZE,
            transform: true,
            apply_memory: None,
            references: Vec::new(),
        }
    }
}

/// Default zstd level.
pub const DEFAULT_LEVEL: i32 = 19;

/// Chunks per group of linked streams (format version 3) for a NEW of `chunks` chunks: a quarter
/// of them, between 16 and 64 (64 to 256 MiB of output at the default chunk size). Longer groups
/// code a little smaller (tar pair: groups of 64 -0.5% against 16; docs/ARCHITECTURE.md,
/// "Against HDiffPatch"), but groups are what the encoder threads share out, so a NEW of few
/// chunks keeps at least four; a resumed or random-access apply decodes at most a group's
/// streams again to reach a chunk. Depends on NEW's size only, never on the thread count.
pub fn link_group(chunks: u64) -> u32 {
    chunks.div_ceil(4).clamp(16, 64) as u32
}

/// What a diff did, for `-v` and for callers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiffReport {
    /// The plan the memory cap gave.
    pub params: Params,
    /// Anchors in OLD's index.
    pub anchors: usize,
    /// Chunks in the patch.
    pub chunks: usize,
    /// Chunks matched against a suffix array (the rest were covered by anchor runs).
    pub suffix_chunks: usize,
    /// Segments (chunks sharing one suffix array).
    pub segments: usize,
    /// Bytes of OLD indexed by suffix arrays, over all segments.
    pub reference_bytes: u64,
    /// Size of OLD.
    pub old_size: u64,
    /// Size of NEW.
    pub new_size: u64,
    /// Size of the patch written.
    pub patch_size: u64,
    /// Wall time of the diff (for [`Base::diff_file`]: from opening NEW).
    pub elapsed: Duration,
    /// The references the patch names (read beside OLD; apply needs them).
    pub references: usize,
    /// Reference files (`--ref-dir`) that could not serve and were skipped, each with why (a
    /// damaged package: a partial download in a package cache).
    pub skipped_references: Vec<String>,
}

/// OLD prepared for diffing: its BLAKE3, its anchor index and the plan's parameters, built once
/// by [`Base::open`] or [`Base::from_bytes`], then used for any number of NEW files
/// ([`Base::diff_file`], [`Base::diff_bytes`]). Each patch is the same as a single diff's.
///
/// ```
/// let old: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
/// let base = spindiff::Base::from_bytes(&old, &spindiff::DiffOptions::default()).unwrap();
/// for spin in [&b"de"[..], b"fr"] {
///     let mut new = old.clone();
///     new[1000..1002].copy_from_slice(spin);
///     let mut patch = Vec::new();
///     let report = base.diff_bytes(&new, &mut patch).unwrap();
///     assert_eq!(report.patch_size, patch.len() as u64);
/// }
/// ```
pub struct Base<'a> {
    old: Box<dyn Source + Send + 'a>,
    /// OLD, when it is a file: no output may be it.
    reads: Reads,
    hash: [u8; 32],
    index: AnchorIndex,
    params: Params,
    pool: rayon::ThreadPool,
    /// Bytes of anchor runs the plan keeps ([`plan::KEPT_RUNS`]; tests change it).
    kept_runs: u64,
    /// The memory its patches must apply in ([`DiffOptions::apply_memory`]).
    apply_memory: Option<u64>,
    /// How OLD's source space is laid out: the base, then the references' payloads.
    space: Space,
    /// Every reference placed in the space (a patch names those its chunks reach).
    references: Option<ReferencesSection>,
    /// Reference files skipped (damaged packages), each with why.
    skipped_references: Vec<String>,
}

/// The references placed in a base's source space after OLD (or its expanded stream), and
/// the base's own BLAKE3 (the header names OLD, not the space).
struct Placed {
    hash: [u8; 32],
    section: ReferencesSection,
    /// Why each reference file that could not serve was skipped.
    skipped: Vec<String>,
}

impl Base<'static> {
    /// Maps OLD from `path`, hashes it and builds its anchor index (with the payloads of
    /// [`DiffOptions::references`] after it, in the temporary directory, when there are any).
    pub fn open(path: &Path, opts: &DiffOptions) -> Result<Base<'static>> {
        let old = Mapped::open(path, Role::Old)?;
        let mut reads = Reads::new();
        reads.add(Role::Old, path, old.file())?;
        let references = files::references::list(&opts.references)?;
        let tmp = Path::new(files::STANDARD_STREAM);
        Base::plain(old, reads, (opts, &references), tmp, &NoProgress)
    }
}

impl<'a> Base<'a> {
    /// Hashes OLD held in memory and builds its anchor index.
    pub fn from_bytes(old: &'a [u8], opts: &DiffOptions) -> Result<Base<'a>> {
        let old = Buffer {
            bytes: old,
            role: Role::Old,
        };
        Base::build(Box::new(old), Reads::new(), (opts, 0, None), &NoProgress)
    }

    /// The base over OLD itself (`old`, whose file `reads` records), or with reference files
    /// (`references`, [`DiffOptions::references`]) over a copy of OLD with their payloads
    /// appended, beside `patch`.
    fn plain<M: std::borrow::Borrow<Mapped> + Source + Send + 'a>(
        old: M,
        reads: Reads,
        (opts, references): (&DiffOptions, &[std::path::PathBuf]),
        patch: &Path,
        progress: &dyn Progress,
    ) -> Result<Base<'a>> {
        if references.is_empty() {
            return Base::build(Box::new(old), reads, (opts, 0, None), progress);
        }
        let dir = expansion_dir(patch);
        let hash = hash_source(old.borrow());
        let base = copy_of(old.borrow(), &dir)?;
        let (space, placed) = place_references(base, hash, references, &dir)?;
        Base::build(Box::new(space), reads, (opts, 0, Some(placed)), progress)
    }

    /// The base over OLD's expanded stream `old_x` (a temporary file beside `patch`; OLD's
    /// BLAKE3 is `old_hash`) with `held` bytes held beside it, and the payloads of the reference
    /// files `references` appended to it when there are any.
    fn expanded(
        old_x: Mapped,
        old_hash: [u8; 32],
        (opts, held, references): (&DiffOptions, u64, &[std::path::PathBuf]),
        patch: &Path,
        progress: &dyn Progress,
    ) -> Result<Base<'a>> {
        if references.is_empty() {
            return Base::build(Box::new(old_x), Reads::new(), (opts, held, None), progress);
        }
        let dir = expansion_dir(patch);
        let base = old_x
            .file()
            .try_clone()
            .map_err(|e| Error::io(Role::Temporary, &dir, "reopen OLD's expanded stream", e))?;
        let base_len = old_x.len();
        drop(old_x);
        let (space, placed) = place_references((base, base_len), old_hash, references, &dir)?;
        Base::build(
            Box::new(space),
            Reads::new(),
            (opts, held, Some(placed)),
            progress,
        )
    }

    /// Builds the base over `old`; `held` bytes are held beside the plan throughout (see
    /// [`Params::held`]). With `placed`, `old` is a source space whose references follow the
    /// base, whose hash `placed` gives.
    fn build(
        old: Box<dyn Source + Send + 'a>,
        reads: Reads,
        (opts, held, placed): (&DiffOptions, u64, Option<Placed>),
        progress: &dyn Progress,
    ) -> Result<Base<'a>> {
        let threads = opts.checked_threads()?;
        // a transformed diff fitted its chunks beside its transform already
        let opts = &opts.fitted_to_apply(0)?;
        let params = Params::derive_holding(
            old.len(),
            (opts.memory, held),
            threads,
            opts.level,
            opts.chunk_size,
        )?;
        let pool = matching_pool(params.workers)?;
        progress.start("index", old.len());
        let (hash, index) = pool.install(|| {
            let hash = match &placed {
                Some(p) => p.hash,
                None => hash_source(old.as_ref()),
            };
            let index = AnchorIndex::build(old.bytes(), params.sampling, &|s, e| old.release(s, e));
            (hash, index)
        });
        let space = match &placed {
            Some(p) => Space {
                base_len: p.section.base_len,
                references: p
                    .section
                    .entries
                    .iter()
                    .map(|e| e.offset..e.end())
                    .collect(),
            },
            None => Space::plain(old.len()),
        };
        progress.advance(old.len());
        progress.finish();
        Ok(Base {
            old,
            reads,
            hash,
            index,
            params,
            pool,
            kept_runs: plan::KEPT_RUNS,
            apply_memory: opts.apply_memory,
            space,
            skipped_references: placed.as_ref().map_or(Vec::new(), |p| p.skipped.clone()),
            references: placed.map(|p| p.section),
        })
    }

    /// OLD (for the transform: OLD's expanded stream).
    fn old(&self) -> &dyn Source {
        self.old.as_ref()
    }

    /// The plan's parameters (from the memory cap and OLD's size).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Diffs NEW in memory against OLD and writes the patch to `out`.
    pub fn diff_bytes(&self, new: &[u8], out: &mut dyn Write) -> Result<DiffReport> {
        let new = Buffer {
            bytes: new,
            role: Role::New,
        };
        let (_, report) =
            self.diff_source(&new, out, (Path::new("(memory)"), &NoProgress), &|| ())?;
        Ok(report)
    }

    /// Diffs the file `new` against OLD and writes the patch to `patch` (`-`: standard output;
    /// a file appears only when complete). Refuses a patch that would be OLD or NEW.
    pub fn diff_file(
        &self,
        new: &Path,
        patch: &Path,
        progress: &dyn Progress,
    ) -> Result<DiffReport> {
        let new_file = Mapped::open(new, Role::New)?;
        let mut reads = self.reads.clone();
        reads.add(Role::New, new, new_file.file())?;
        let destination = Destination::decide(patch, Role::Patch, &reads)?;
        let output = Output::open(destination, patch, Role::Patch, OUTPUT_BUFFER)?;
        let (output, report) = self.diff_source(&new_file, output, (patch, progress), &|| ())?;
        output.commit()?;
        Ok(report)
    }

    /// Diffs NEW's expanded stream `new_x` against this base (built over OLD's expanded stream)
    /// into a transformed patch on `output`, and commits it once neither OLD nor NEW (`files`)
    /// changed meanwhile; the report gives NEW's own size. `matched` as for
    /// [`Base::diff_source`].
    fn diff_expanded(
        &self,
        (old, new): (&Mapped, &Mapped),
        (new_x, transformed): (&Mapped, &Transformed),
        output: Output,
        (patch, progress): (&Path, &dyn Progress),
        matched: &dyn Fn(),
    ) -> Result<DiffReport> {
        let need = crate::apply::least_memory(self.params.chunk_size, transformed.apply_transform);
        if let Some(cap) = self.apply_memory.filter(|&cap| need > cap) {
            return Err(Error::InvalidOption(format!(
                "--apply-memory {} is too small for {}: its patch, with chunks of {}, applies in {} MiB at least (diff it on its own to take smaller chunks)",
                crate::size::format_size(cap),
                patch.display(),
                crate::size::format_size(u64::from(self.params.chunk_size)),
                need.div_ceil(1 << 20)
            )));
        }
        let (output, mut report) = self.diff_source_transformed(
            new_x,
            output,
            (patch, progress),
            Some(transformed),
            matched,
        )?;
        old.check_unchanged()?;
        new.check_unchanged()?;
        output.commit()?;
        report.new_size = new.len();
        Ok(report)
    }

    /// The diff proper: plans every chunk of `new`, then matches and encodes them and writes the
    /// container to `out`. `patch` names the output in errors. `matched` is called once every
    /// chunk is matched and only coding the last streams and writing them is left.
    fn diff_source<W: Write>(
        &self,
        new: &dyn Source,
        out: W,
        (patch, progress): (&Path, &dyn Progress),
        matched: &dyn Fn(),
    ) -> Result<(W, DiffReport)> {
        self.diff_source_transformed(new, out, (patch, progress), None, matched)
    }

    /// [`Base::diff_source`]; with `transform`, OLD and NEW are expanded streams and the patch
    /// has a transform section: the header names OLD itself, the section follows it.
    fn diff_source_transformed<W: Write>(
        &self,
        new: &dyn Source,
        out: W,
        (patch, progress): (&Path, &dyn Progress),
        transform: Option<&Transformed>,
        matched: &dyn Fn(),
    ) -> Result<(W, DiffReport)> {
        let started = Instant::now();
        let old = self.old.as_ref();
        let Planned {
            plans,
            costs,
            new_hash,
            reached,
        } = self.plan(new, progress);
        let segs = segments(plans, self.params.max_reference);
        let references = self.reached_references(&reached);
        let mut header = Header {
            version: crate::format::VERSION_DECLARED,
            transform: false,
            references: references.is_some(),
            group: link_group(Header::chunks_for(new.len(), self.params.chunk_size)),
            // OLD itself, never the references after it
            old_size: self.space.base_len,
            old_hash: self.hash,
            new_size: new.len(),
            new_hash,
            chunk_size: self.params.chunk_size,
            chunk_count: Header::chunks_for(new.len(), self.params.chunk_size),
            windows: Default::default(),
        };
        let mut sections = Vec::new();
        if let Some(t) = transform {
            header.transform = true;
            header.version = header.version.max(t.version);
            header.old_size = t.old_size;
            header.old_hash = t.old_hash;
            sections.extend_from_slice(&t.section);
        }
        if let Some(r) = &references {
            sections.extend_from_slice(&r.to_bytes());
        }
        header.windows = encode::frame_windows(&header, self.params.insert_window);
        let wio = |e| Error::io(Role::Patch, patch, "write", e);
        let mut writer = ContainerWriter::with_section(out, &header, &sections).map_err(wio)?;
        progress.start("diff", new.len());
        let work = pipeline::Work {
            old,
            space: &self.space,
            new,
            index: &self.index,
            params: &self.params,
            pool: &self.pool,
            segments: &segs,
            costs: &costs,
        };
        pipeline::run(&work, &header, &mut writer, (patch, progress), matched)?;
        progress.finish();
        // Whatever was read of a file that changed meanwhile may mix its old and new contents.
        old.check_unchanged()?;
        new.check_unchanged()?;
        let (out, patch_size) = writer.finish().map_err(wio)?;
        let suffix_chunks = segs
            .iter()
            .filter(|s| s.reference.is_some())
            .map(|s| s.chunks.len())
            .sum();
        let report = DiffReport {
            anchors: self.index.len(),
            chunks: header.chunk_count as usize,
            suffix_chunks,
            segments: segs.iter().filter(|s| s.reference.is_some()).count(),
            reference_bytes: segs.iter().map(plan::Segment::reference_len).sum(),
            old_size: header.old_size,
            new_size: header.new_size,
            patch_size,
            elapsed: started.elapsed(),
            params: self.params.clone(),
            references: references.as_ref().map_or(0, |r| r.entries.len()),
            skipped_references: self.skipped_references.clone(),
        };
        Ok((out, report))
    }

    /// Plans every chunk of `new` from its anchor runs, hashing NEW on the way, a block at a
    /// time with pages released behind. Returns the plans and NEW's BLAKE3. The runs of chunks
    /// matched from them alone are kept in their plans, in chunk order, up to
    /// [`plan::KEPT_RUNS`] bytes; the others are found again when their chunks are matched.
    /// Also returns each chunk's expected coding cost: the bytes its runs leave uncovered when
    /// it gets a suffix array (those become add and insert bytes zstd has work on), else 0; and
    /// which of the space's references the plans reach (their runs or their suffix arrays'
    /// ranges): no copy can read another.
    fn plan(&self, new: &dyn Source, progress: &dyn Progress) -> Planned {
        let old = self.old();
        let chunk_size = self.params.chunk_size as usize;
        let chunk_count = Header::chunks_for(new.len(), self.params.chunk_size) as usize;
        let chunk_range = |i: usize| {
            let r = chunk_span(i as u64, self.params.chunk_size, new.len());
            r.start as usize..r.end as usize
        };
        let mut new_hasher = blake3::Hasher::new();
        let mut planned = Planned {
            plans: Vec::with_capacity(chunk_count),
            costs: Vec::with_capacity(chunk_count),
            new_hash: [0; 32],
            reached: vec![false; self.space.references.len()],
        };
        let mut keep = self.kept_runs / std::mem::size_of::<Run>() as u64;
        let per_block = (SCAN_BLOCK / chunk_size).max(1);
        let prior_len = self.space.base_len;
        progress.start("scan", new.len());
        self.pool.install(|| {
            for first in (0..chunk_count).step_by(per_block) {
                let ids = first..(first + per_block).min(chunk_count);
                let span = chunk_range(ids.start).start..chunk_range(ids.end - 1).end;
                new_hasher.update_rayon(&new.bytes()[span.clone()]);
                let block: Vec<(ChunkPlan, Vec<Run>, u64)> = ids
                    .into_par_iter()
                    .map(|i| {
                        let r = chunk_range(i);
                        let expected = expected_old_pos(r.start as u64, prior_len, new.len());
                        let runs = find_runs(&self.index, old, &new.bytes()[r.clone()], expected);
                        let len = r.len();
                        let plan = plan_chunk(
                            &runs,
                            r.start as u64,
                            &new.bytes()[r],
                            (old.len(), prior_len),
                            new.len(),
                            self.params.max_reference,
                        );
                        let cost = if plan.needs_suffix_array() {
                            (len - runs.iter().map(|r| r.len).sum::<usize>()) as u64
                        } else {
                            0
                        };
                        (plan, runs, cost)
                    })
                    .collect();
                for (plan, runs, cost) in block {
                    self.mark_reached(&plan, &runs, &mut planned.reached);
                    planned.costs.push(cost);
                    planned.plans.push(match plan {
                        ChunkPlan::Runs(None) if runs.len() as u64 <= keep => {
                            keep -= runs.len() as u64;
                            ChunkPlan::Runs(Some(runs))
                        }
                        plan => plan,
                    });
                }
                new.release(span.start, span.end);
                old.release_all();
                progress.advance((span.end - span.start) as u64);
            }
        });
        progress.finish();
        planned.new_hash = *new_hasher.finalize().as_bytes();
        planned
    }

    /// Marks in `reached` the references a chunk planned as `plan` (with its anchor runs
    /// `runs`) can copy from: its suffix array's ranges, or its runs (a match extends within
    /// the piece of its run, never into another reference: [`reference::Reference::whole_in`]).
    fn mark_reached(&self, plan: &ChunkPlan, runs: &[Run], reached: &mut [bool]) {
        if reached.is_empty() {
            return;
        }
        match plan {
            ChunkPlan::SuffixArray(ranges) => {
                for r in ranges {
                    self.space.mark(r.clone(), reached);
                }
            }
            ChunkPlan::Runs(_) => {
                for r in runs {
                    self.space
                        .mark(r.old_pos..r.old_pos + r.len as u64, reached);
                }
            }
        }
    }

    /// The references section of a patch whose plans reached `reached`: those references
    /// only, each at its place in the space (`None` when none is reached, or there are none).
    fn reached_references(&self, reached: &[bool]) -> Option<ReferencesSection> {
        let all = self.references.as_ref()?;
        let entries: Vec<_> = all
            .entries
            .iter()
            .zip(reached)
            .filter(|&(_, &r)| r)
            .map(|(e, _)| e.clone())
            .collect();
        (!entries.is_empty()).then_some(ReferencesSection {
            base_len: all.base_len,
            entries,
        })
    }
}

/// What planning NEW gave ([`Base::plan`]).
struct Planned {
    plans: Vec<ChunkPlan>,
    costs: Vec<u64>,
    new_hash: [u8; 32],
    /// For each reference of the space, whether a chunk's plan reaches it.
    reached: Vec<bool>,
}

/// Buffer in front of the patch file.
const OUTPUT_BUFFER: usize = 1 << 20;

/// Diffs `old_path` against `new_path` and writes the patch to `patch_path`: [`Base::open`] then
/// [`Base::diff_file`], except that NEW and the output are opened first, so that a missing NEW
/// or an unwritable destination fails before OLD is read.
pub fn diff_files(
    old_path: &Path,
    new_path: &Path,
    patch_path: &Path,
    opts: &DiffOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let started = Instant::now();
    opts.checked_threads()?;
    let old = Mapped::open(old_path, Role::Old)?;
    let new = Mapped::open(new_path, Role::New)?;
    let mut reads = Reads::new();
    reads.add(Role::Old, old_path, old.file())?;
    reads.add(Role::New, new_path, new.file())?;
    let references = files::references::list(&opts.references)?;
    files::references::add_reads(&mut reads, &references)?;
    let destination = Destination::decide(patch_path, Role::Patch, &reads)?;
    let budget = parse_budget(opts);
    let (old_fs, new_fs) = if opts.transform {
        let old_fs = opts.old_filesystems(old.bytes(), budget, &|s, e| old.release(s, e));
        let new_fs =
            opts.new_filesystems(new.bytes(), (budget, &old_fs), &|s, e| new.release(s, e));
        without_unchanged_streams((&old, old_fs), (&new, new_fs))
    } else {
        (Vec::new(), Vec::new())
    };
    let expand = compressed(&old_fs) || compressed(&new_fs);
    check_cap(&old, &old_fs, expand, opts)?;
    let output = Output::open(destination, patch_path, Role::Patch, OUTPUT_BUFFER)?;
    if expand {
        let mut report = diff_expanded_files(
            (&old, &old_fs),
            (&new, &new_fs),
            (output, patch_path, &references),
            opts,
            progress,
        )?;
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    let mut old_only = Reads::new();
    old_only.add(Role::Old, old_path, old.file())?;
    let base = Base::plain(&old, old_only, (opts, &references), patch_path, progress)?;
    let (output, mut report) = base.diff_source(&new, output, (patch_path, progress), &|| ())?;
    output.commit()?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// [`diff_files`] of a pair whose file systems (`old_fs`, `new_fs`) are expanded: both expanded
/// beside the patch, the base built over OLD's expanded stream, the transformed patch written.
fn diff_expanded_files(
    (old, old_fs): (&Mapped, &[Layout]),
    (new, new_fs): (&Mapped, &[Layout]),
    (output, patch_path, references): (Output, &Path, &[std::path::PathBuf]),
    opts: &DiffOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    // expansion checks NEW's blocks in parallel, on --threads threads
    let threads = opts.checked_threads()?;
    let held = transform::memory::held(old_fs);
    let batch = expansion_batch(&[old_fs, new_fs], (held, 0), opts, threads)?;
    let pool = thread_pool(threads)?;
    let (expanded, old_x, (new_x, transformed)) = pool.install(|| {
        let (expanded, old_x) = ExpandedBase::make(old, (old_fs, batch), patch_path, progress)?;
        let new_x = expanded.expand_new(&old_x, new, (new_fs, batch), patch_path, progress)?;
        Ok::<_, Error>((expanded, old_x, new_x))
    })?;
    // chunks for --apply-memory as a many-targets run takes them (so that its patches are this
    // one), then smaller still where NEW's own table needs more than those allow
    let opts = &opts
        .fitted_to_apply(expanded.least_apply_transform())?
        .fitted_to_apply(transformed.apply_transform)?;
    let old_hash = expanded.old_hash;
    drop((pool, expanded));
    let base = Base::expanded(
        old_x,
        old_hash,
        (opts, held, references),
        patch_path,
        progress,
    )?;
    base.diff_expanded(
        (old, new),
        (&new_x, &transformed),
        output,
        (patch_path, progress),
        &|| (),
    )
}

/// A copy of OLD in an unnamed temporary file in `dir` (copied by the kernel where it can), the
/// base of a source space with references; and its length.
fn copy_of(old: &Mapped, dir: &Path) -> Result<(std::fs::File, u64)> {
    let failed = |e| Error::io(Role::Temporary, dir, "copy OLD beside the references", e);
    let mut copy = tempfile::tempfile_in(dir).map_err(failed)?;
    let mut from = old.file().try_clone().map_err(failed)?;
    std::io::Seek::rewind(&mut from).map_err(failed)?;
    let copied = std::io::copy(&mut from, &mut copy).map_err(failed)?;
    if copied != old.len() {
        return Err(old.changed());
    }
    Ok((copy, copied))
}

/// The source space of a diff with references: the base (`base`, a temporary file of
/// `base_len` bytes holding OLD or its expanded stream, whose BLAKE3 is `hash`) with the
/// payloads of the reference files `files` appended, mapped; and what was placed.
fn place_references(
    (base, base_len): (std::fs::File, u64),
    hash: [u8; 32],
    files: &[std::path::PathBuf],
    dir: &Path,
) -> Result<(Mapped, Placed)> {
    let (section, skipped) = files::references::append_payloads(&base, base_len, files, dir)?;
    let space = Mapped::from_file(base, Role::Temporary, dir)?;
    let skipped = skipped.iter().map(Error::to_string).collect();
    Ok((
        space,
        Placed {
            hash,
            section,
            skipped,
        },
    ))
}

/// A pool of `threads` worker threads; failing to start them is running out of a resource.
fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    start_pool(rayon::ThreadPoolBuilder::new(), threads)
}

/// Starts `threads` threads of `builder`'s pool.
fn start_pool(builder: rayon::ThreadPoolBuilder, threads: usize) -> Result<rayon::ThreadPool> {
    builder
        .num_threads(threads)
        .build()
        .map_err(|e| Error::OutOfMemory {
            what: format!("cannot start {threads} threads: {e}"),
        })
}

/// How much lower than the rest of the process the matching pool's threads run (in nice
/// steps). The encoders code each group's frames in chunk order, one thread per group, so the
/// encoder of a heavy group is the diff's critical path; with the matching threads a little
/// nicer it gets a core of its own while they share the other, instead of a third of each
/// (spin diff: 0.90x the time, paired; docs/ARCHITECTURE.md, "A lead group"). The work done is
/// the same, and so is the patch.
const MATCHING_NICENESS: i32 = 3;

/// [`thread_pool`] for matching: its threads run [`MATCHING_NICENESS`] steps nicer than the
/// thread that starts them (never less nice than they were; a failure to change it is ignored:
/// it is only a hint to the scheduler).
fn matching_pool(threads: usize) -> Result<rayon::ThreadPool> {
    let builder = rayon::ThreadPoolBuilder::new().start_handler(|_| {
        #[cfg(target_os = "linux")]
        // SAFETY: gettid, getpriority and setpriority take no pointers, and errno is this
        // thread's own; on Linux a PRIO_PROCESS "who" that is a thread id applies to that
        // thread alone.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            // -1 is a niceness too: only errno tells a failure, which leaves it as it is
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            if now != -1 || *libc::__errno_location() == 0 {
                libc::setpriority(libc::PRIO_PROCESS, tid, (now + MATCHING_NICENESS).min(19));
            }
        }
    });
    start_pool(builder, threads)
}

/// Refuses, before anything is written, a cap under which no plan fits: for a diff that
/// expands (`expand`), a plan over OLD's expanded stream (at most its layouts' expanded bound)
/// beside what the transform holds, so that the smallest cap the message names is accepted.
fn check_cap(old: &Mapped, old_fs: &[Layout], expand: bool, opts: &DiffOptions) -> Result<()> {
    let (len, held) = if expand {
        let stored: u64 = old_fs.iter().map(|l| l.end - l.start).sum();
        let expanded: u64 = old_fs.iter().map(Layout::expanded_bound).sum();
        (
            old.len() - stored + expanded,
            transform::memory::held(old_fs),
        )
    } else {
        (old.len(), 0)
    };
    let threads = opts.checked_threads()?;
    Params::derive_holding(len, (opts.memory, held), threads, opts.level, opts.chunk_size)
        .map_err(|e| match e {
            Error::InvalidOption(_) if expand => Error::InvalidOption(format!(
                "--memory {} is too small for this OLD ({} bytes, its file systems expanded at most {len}): at least {} MiB is needed",
                crate::size::format_size(opts.memory),
                old.len(),
                Params::minimum_memory_holding(len, held, opts.level, opts.chunk_size) >> 20
            )),
            e => e,
        })?;
    Ok(())
}

/// The parse budget of each file system under the cap (`transform::memory::parse_budget`).
fn parse_budget(opts: &DiffOptions) -> u64 {
    transform::memory::parse_budget(opts.memory.saturating_sub(plan::RESERVED))
}

/// How many blocks expansion decides at once so that the process, what the transform holds
/// (`held`), what runs beside it (`beside`: a finishing target's encoders) and the expansion of
/// files with the file systems `layouts` fit under the cap; refused when not even one does.
fn expansion_batch(
    layouts: &[&[Layout]],
    (held, beside): (u64, u64),
    opts: &DiffOptions,
    threads: usize,
) -> Result<usize> {
    let all: Vec<&Layout> = layouts.iter().flat_map(|l| l.iter()).collect();
    let taken = plan::RESERVED + held + beside;
    transform::memory::expansion_batch(&all, threads, opts.memory.saturating_sub(taken))
        .ok_or_else(|| {
            let need = taken + transform::memory::expansion_memory(&all, 1, 1);
            Error::InvalidOption(format!(
                "--memory {} is too small to expand the file systems of OLD and NEW: at least {} MiB is needed",
                crate::size::format_size(opts.memory),
                need.div_ceil(1 << 20)
            ))
        })
}

/// The least stored bytes of a stream [`without_unchanged_streams`] leaves alone when NEW holds it
/// unchanged: more than the largest gzip member found inside other data.
const UNCHANGED_STREAM_MIN: u64 = transform::gzipstream::MAX_EMBEDDED_STORED as u64;

/// OLD's and NEW's file systems without the whole compressed streams larger than
/// [`UNCHANGED_STREAM_MIN`] (an initrd's zstd, xz or gzip stream; not file systems) that NEW
/// holds byte for byte somewhere in OLD, on both sides. NEW's stored bytes then copy OLD's as
/// they are, so expanding them buys no patch byte, while it costs the diff its expansion and
/// apply the decoding of OLD's stream: on a live ISO whose spin left the initrd alone, a zstd
/// decoder's 8 MiB window that put the default patch's `apply --memory` past 32 MiB (issue 22),
/// and 124 MiB decoded for nothing. An OLD stream that NEW lacks stays expanded (NEW's changed
/// streams may copy from it). Small streams, the gzip members inside other data, stay expanded:
/// their decoders are small, and NEW's changed members copy from the unchanged ones' plain bytes
/// (the update pair's patch is 0.8% larger without them). Single diffs only: a many-targets run
/// expands OLD once for all its targets.
fn without_unchanged_streams(
    (old, mut old_fs): (&Mapped, Vec<Layout>),
    (new, mut new_fs): (&Mapped, Vec<Layout>),
) -> (Vec<Layout>, Vec<Layout>) {
    use crate::transform::codec::Codec;
    use std::collections::HashMap;
    let is_stream = |l: &Layout| {
        let whole = matches!(
            l.codec,
            Codec::XzStream(_) | Codec::ZstdStream(_) | Codec::GzipStream(_)
        );
        whole && l.end - l.start > UNCHANGED_STREAM_MIN
    };
    // the stream's stored bytes, hashed (and released behind, as the scans do)
    let key = |file: &Mapped, l: &Layout| {
        let (start, end) = (l.start as usize, l.end as usize);
        let hash = xxhash_rust::xxh3::xxh3_128(&file.bytes()[start..end]);
        file.release(start, end);
        (l.end - l.start, hash)
    };
    // nothing to read of either side unless both hold such a stream
    if !(old_fs.iter().any(is_stream) && new_fs.iter().any(is_stream)) {
        return (old_fs, new_fs);
    }
    let mut olds: HashMap<(u64, u128), Vec<usize>> = HashMap::new();
    for (i, l) in old_fs.iter().enumerate().filter(|(_, l)| is_stream(l)) {
        olds.entry(key(old, l)).or_default().push(i);
    }
    let mut dropped_old = vec![false; old_fs.len()];
    new_fs.retain(|l| {
        let same = is_stream(l).then(|| olds.get(&key(new, l))).flatten();
        for &i in same.into_iter().flatten() {
            dropped_old[i] = true;
        }
        same.is_none()
    });
    let mut dropped = dropped_old.into_iter();
    old_fs.retain(|_| !dropped.next().unwrap_or(false));
    (old_fs, new_fs)
}

/// Whether any of the file systems `fs` has compressed blocks (what makes a diff expand).
fn compressed(fs: &[Layout]) -> bool {
    fs.iter()
        .any(|l| l.regions.iter().any(|r| r.block.is_some()))
}

/// What a transformed patch's header and section say beyond the chunks.
struct Transformed {
    /// OLD itself, for the header.
    old_size: u64,
    old_hash: [u8; 32],
    /// The transform section's bytes.
    section: Vec<u8>,
    /// The oldest format version whose tables name its compressors (4 for EROFS's, 5 for xz
    /// streams').
    version: u16,
    /// The least memory its transform takes on apply ([`crate::apply::least_transform_memory`]).
    apply_transform: u64,
}

/// The directory for the expanded streams of a diff writing `patch`: beside it, or the
/// temporary directory for a stream.
fn expansion_dir(patch: &Path) -> std::path::PathBuf {
    match patch.parent() {
        Some(p) if !p.as_os_str().is_empty() && !crate::files::is_standard_stream(patch) => {
            p.to_path_buf()
        }
        _ if crate::files::is_standard_stream(patch) => std::env::temp_dir(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Hashes `file` (BLAKE3), then writes what `expand` makes of it into an unnamed temporary file
/// in `dir`, as the progress phase "expand" (`expand` calls its release function behind what it
/// has read: the pages are released and counted), and maps that file. Returns the hash, what
/// `expand` returned and the mapped stream.
fn expand_file<T>(
    file: &Mapped,
    role: Role,
    dir: &Path,
    progress: &dyn Progress,
    expand: impl FnOnce(&mut dyn Write, &dyn Fn(usize, usize)) -> std::io::Result<T>,
) -> Result<([u8; 32], T, Mapped)> {
    let action = match role {
        Role::Old => [
            "write OLD's expanded stream",
            "create a file for OLD's expanded stream",
        ],
        _ => [
            "write NEW's expanded stream",
            "create a file for NEW's expanded stream",
        ],
    };
    let written = |e| Error::io(Role::Temporary, dir, action[0], e);
    let hash = hash_source(file);
    let mut out = tempfile::tempfile_in(dir)
        .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| Error::io(Role::Temporary, dir, action[1], e))?;
    progress.start("expand", file.len());
    let release = |start, end| {
        file.release(start, end);
        progress.advance((end - start) as u64);
    };
    let made = expand(&mut out, &release).map_err(written)?;
    progress.finish();
    let out = out.into_inner().map_err(|e| written(e.into_error()))?;
    Ok((hash, made, Mapped::from_file(out, Role::Temporary, dir)?))
}

/// What expanding OLD gave, for any number of NEW files (beside its expanded stream, an unnamed
/// temporary file, mapped, which the diff's [`Base`] owns): its table and the index of its
/// blocks that NEW's blocks are looked up in.
struct ExpandedBase {
    old_size: u64,
    old_hash: [u8; 32],
    old_table: Vec<u8>,
    /// The same table, for the memory apply takes for it.
    old_pieces: Table,
    /// The oldest format version whose tables name OLD's compressors.
    old_version: u16,
    /// The length of OLD's expanded stream (references' payloads may follow it in the space).
    old_expanded_size: u64,
    blocks: crate::transform::expand::OldBlocks,
    /// NEW's blocks checked so far, for the NEW files after the first.
    checked: crate::transform::expand::Checked,
}

impl ExpandedBase {
    /// The least memory the transform of a patch against this OLD takes on apply when NEW's
    /// table is like OLD's: what a many-targets run fits `--apply-memory`'s chunks to.
    fn least_apply_transform(&self) -> u64 {
        crate::apply::least_transform_memory(&self.old_pieces, &self.old_pieces)
    }

    /// Expands `old` (its file systems `old_fs`) beside `patch`; returns the expanded stream too.
    fn make(
        old: &Mapped,
        (old_fs, batch): (&[Layout], usize),
        patch: &Path,
        progress: &dyn Progress,
    ) -> Result<(ExpandedBase, Mapped)> {
        let (old_hash, (old_pieces, blocks), old_x) = expand_file(
            old,
            Role::Old,
            &expansion_dir(patch),
            progress,
            |out, release| expand_old_releasing(old.bytes(), old_fs, batch, out, release),
        )?;
        let old_table = Table {
            codecs: old_fs.iter().map(FsCodec::for_decoding).collect(),
            pieces: old_pieces,
        };
        let old_version = old_table.format_version();
        Ok((
            ExpandedBase {
                old_size: old.len(),
                old_hash,
                old_table: old_table.to_bytes(),
                old_pieces: old_table,
                old_version,
                old_expanded_size: old_x.len(),
                blocks,
                checked: Default::default(),
            },
            old_x,
        ))
    }

    /// Expands `new` (its file systems `new_fs`) beside `patch`, its blocks found in OLD read
    /// back from OLD's expanded stream `old_x`; returns it with what the patch must say.
    fn expand_new(
        &self,
        old_x: &dyn Source,
        new: &Mapped,
        (new_fs, batch): (&[Layout], usize),
        patch: &Path,
        progress: &dyn Progress,
    ) -> Result<(Mapped, Transformed)> {
        let read_back = |at: u64, buf: &mut [u8]| old_x.read_exact_at(at, buf).is_ok();
        let (new_hash, expanded_new, new_x) = expand_file(
            new,
            Role::New,
            &expansion_dir(patch),
            progress,
            |out, release| {
                expand_new_releasing(
                    new.bytes(),
                    new_fs,
                    (&self.blocks, Some(&read_back)),
                    (Some(&self.checked), batch),
                    out,
                    release,
                )
            },
        )?;
        let new_table = Table {
            codecs: expanded_new.codecs,
            pieces: expanded_new.pieces,
        };
        let section = TransformSection {
            new_size: new.len(),
            new_hash,
            old_expanded_size: self.old_expanded_size,
            old_table: self.old_table.clone(),
            new_table: new_table.to_bytes(),
        };
        Ok((
            new_x,
            Transformed {
                old_size: self.old_size,
                old_hash: self.old_hash,
                section: section.to_bytes(19),
                version: self.old_version.max(new_table.format_version()),
                apply_transform: crate::apply::least_transform_memory(&self.old_pieces, &new_table),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::noise;

    /// Runs the plan keeps and runs found again when a chunk is matched are the same runs: the
    /// patch does not depend on how many the plan kept.
    #[test]
    fn the_patch_is_the_same_whatever_runs_the_plan_kept() {
        let old = noise(3 << 20, 1);
        let mut new = old.clone();
        for (i, at) in (0..new.len()).step_by(40_000).enumerate() {
            new[at] ^= 0x5a; // many runs per chunk
            if i % 7 == 0 {
                new.splice(at..at, noise(100, i as u64)); // and shifts
            }
        }
        let opts = DiffOptions::default().chunk_size(256 << 10).threads(2);
        let mut base = Base::from_bytes(&old, &opts).unwrap();
        let patch_with = |base: &Base, kept: &str| {
            let mut patch = Vec::new();
            base.diff_bytes(&new, &mut patch).unwrap();
            assert!(!patch.is_empty(), "{kept}");
            patch
        };
        let all = patch_with(&base, "all kept");
        // room for the runs of some chunks only, then for none
        for kept in [40 * std::mem::size_of::<Run>() as u64, 0] {
            base.kept_runs = kept;
            assert!(
                patch_with(&base, "some kept") == all,
                "{kept} bytes of runs kept"
            );
        }
    }

    /// A lead group (see `pipeline::schedule`) changes the order work is done in, never the
    /// patch: new text in the second of two groups leads at two and three threads, and the
    /// patch is the one a single encoder (no lead) makes.
    #[test]
    fn a_lead_group_leaves_the_patch_as_it_was() {
        let chunk = 64usize << 10;
        let old = noise(2 << 20, 3);
        let mut new = old.clone();
        let words = b"lorem ipsum dolor sit amet consectetur ";
        let text: Vec<u8> = (0..300_000usize)
            .map(|i| words[(i * 7 + i / 13) % words.len()])
            .collect();
        new.splice(20 * chunk..20 * chunk, text);
        let opts = |threads| {
            DiffOptions::default()
                .chunk_size(chunk as u32)
                .threads(threads)
        };
        let base = Base::from_bytes(&old, &opts(2)).unwrap();
        let source = Buffer {
            bytes: &new,
            role: Role::New,
        };
        let Planned { plans, costs, .. } = base.plan(&source, &NoProgress);
        let segs = segments(plans, base.params.max_reference);
        let group = link_group(Header::chunks_for(new.len() as u64, chunk as u32));
        let schedule = pipeline::schedule(
            &segs,
            &costs,
            u64::from(group),
            base.params.workers,
            base.params.leads(),
        );
        assert_eq!(schedule.lead.map(|(g, _)| g), Some(1), "{costs:?}");
        let patch = |threads| {
            let mut patch = Vec::new();
            Base::from_bytes(&old, &opts(threads))
                .unwrap()
                .diff_bytes(&new, &mut patch)
                .unwrap();
            patch
        };
        let one = patch(1);
        assert!(patch(2) == one, "two threads (a lead) against one (none)");
        assert!(patch(3) == one, "three threads (a lead) against one (none)");
    }
}
