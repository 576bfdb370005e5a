//! spindiff: binary deltas of huge images (live ISOs, squashfs, tarballs, native libraries)
//! made under a hard memory cap and applied in small, constant memory.
//!
//! The diff runs inputs -> anchor index -> plan -> suffix arrays -> matching -> encoding ->
//! container ([`inputs`], [`anchors`], [`plan`], [`suffix`], [`matching`], [`encode`],
//! [`container`]); apply runs container -> decode -> apply -> verify ([`container`], [`decode`],
//! [`apply`](mod@apply)). The format is specified in `docs/FORMAT.md`.
//!
//! ```
//! use std::fs;
//! let dir = tempfile::tempdir().unwrap();
//! let (old, new) = (dir.path().join("old"), dir.path().join("new"));
//! let base: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
//! let mut changed = base.clone();
//! changed[1000..1004].copy_from_slice(b"spin");
//! fs::write(&old, &base).unwrap();
//! fs::write(&new, &changed).unwrap();
//!
//! let patch = dir.path().join("p.spd");
//! spindiff::diff(&old, &new, &patch, &spindiff::DiffOptions::default()).unwrap();
//! let out = dir.path().join("out");
//! spindiff::apply(&old, &patch, &out, &spindiff::ApplyOptions::default()).unwrap();
//! assert_eq!(fs::read(&out).unwrap(), changed);
//! assert_eq!(spindiff::inspect(&patch).unwrap().header.new_size, 200_000);
//! ```

pub mod apply;
pub mod cleanup;
pub mod diff;
pub mod error;
pub mod files;
pub mod format;
pub mod inspect;
pub mod progress;
pub mod size;

use std::path::Path;

pub use apply::ApplyReport;
pub use diff::{DEFAULT_LEVEL, DiffOptions, DiffReport};
pub use error::{Error, Result, Role};
pub use inspect::PatchInfo;
pub use progress::{NoProgress, Progress};

/// Options of [`apply()`] and [`verify`].
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
    /// [`apply::memory_bound`]); a patch whose chunks do not fit even one at a time is refused
    /// with [`Error::MemoryLimit`] before anything is written. `None`: no cap beyond the
    /// format's own (chunks of at most 64 MiB).
    pub memory: Option<u64>,
}

impl ApplyOptions {
    fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// Makes a patch that turns `old` into `new` and writes it to `patch`.
pub fn diff(old: &Path, new: &Path, patch: &Path, opts: &DiffOptions) -> Result<DiffReport> {
    diff::diff_files(old, new, patch, opts, &NoProgress)
}

/// [`diff()`] with progress reports.
pub fn diff_with_progress(
    old: &Path,
    new: &Path,
    patch: &Path,
    opts: &DiffOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    diff::diff_files(old, new, patch, opts, progress)
}

/// Applies `patch` (`-` = standard input) to `old` and writes `output` (`-` = standard output).
/// A file output appears only once all of it has been verified; on any error nothing is left.
/// A process killed meanwhile leaves `.NAME.spindiff-partial` beside the output, which
/// [`ApplyOptions::resume`] continues from.
pub fn apply(old: &Path, patch: &Path, output: &Path, opts: &ApplyOptions) -> Result<ApplyReport> {
    apply_with_progress(old, patch, output, opts, &NoProgress)
}

/// [`apply()`] with progress reports.
pub fn apply_with_progress(
    old: &Path,
    patch: &Path,
    output: &Path,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    apply::apply_patch(
        old,
        patch,
        Some(output),
        opts.threads(),
        opts.resume,
        opts.memory,
        progress,
    )
}

/// Checks that `patch` applies to `old` and produces output matching its checksums, without
/// writing anything. With `new`, also checks that the output would be exactly `new`.
pub fn verify(
    old: &Path,
    patch: &Path,
    new: Option<&Path>,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    let header = if files::is_standard_stream(patch) {
        None
    } else {
        Some(inspect::inspect_patch(patch)?.header)
    };
    if let (Some(new), Some(h)) = (new, &header) {
        check_new(new, h)?;
    }
    let report = apply::apply_patch(
        old,
        patch,
        None,
        opts.threads(),
        false,
        opts.memory,
        &NoProgress,
    )?;
    if let (Some(new), None) = (new, &header) {
        check_new(new, &report.header)?;
    }
    Ok(report)
}

fn check_new(new: &Path, header: &format::Header) -> Result<()> {
    let m = files::Mapped::open(new, Role::New)?;
    if m.len() != header.new_size {
        return Err(Error::NewMismatch {
            path: new.to_path_buf(),
            what: format!(
                "it has {} bytes, the patch produces {}",
                m.len(),
                header.new_size
            ),
        });
    }
    if files::hash_mapped(&m) != header.new_hash {
        return Err(Error::NewMismatch {
            path: new.to_path_buf(),
            what: "its BLAKE3 hash differs from the patch's output".into(),
        });
    }
    Ok(())
}

/// Reads and checks a patch's structure and summarises it.
pub fn inspect(patch: &Path) -> Result<PatchInfo> {
    inspect::inspect_patch(patch)
}
