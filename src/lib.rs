//! spindiff: binary deltas of huge images (live ISOs, squashfs, tarballs, native libraries)
//! made under a hard memory cap and applied in small, constant memory.
//!
//! The API is small: [`diff`] and [`apply`] between files (`-` for standard streams), [`verify`]
//! and [`inspect`]; [`Base`] to prepare OLD once and diff it against many NEW files or buffers;
//! [`apply_bytes`] to apply from any reader to any writer. The patch format is the public
//! contract in [`format`](mod@format) (specified in `docs/FORMAT.md`). Errors are typed ([`Error`]); the
//! `spindiff` command only wraps these functions.
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
//!
//! The data flows through the modules as the folders show it:
//!
//! ```text
//! diff:   files (OLD, NEW) -> diff::{anchors -> plan -> suffix -> reference/matcher -> encode} -> format (writer)
//! apply:  format (reader) -> apply::{decode -> rebuild and verify -> sink} -> files (NEW)
//! ```

#![warn(missing_docs)]

mod apply;
pub mod cleanup;
mod diff;
mod error;
mod files;
pub mod format;
mod inspect;
mod progress;
pub mod size;
mod transform;

use std::path::Path;

pub use apply::{
    ApplyOptions, ApplyReport, DEFAULT_MEMORY as DEFAULT_APPLY_MEMORY, TransformBudget,
    apply_bytes, apply_from, least_memory as least_apply_memory,
    memory_bound as apply_memory_bound,
};
pub use diff::batch::{Job, Shard, batch_order, diff_batch};
pub use diff::many::Target;
pub use diff::plan::Params;
pub use diff::{Base, DEFAULT_LEVEL, DiffOptions, DiffReport};
pub use error::{Error, Result, Role, quoted};
pub use files::OldReader;
pub use inspect::{ExpandedRegion, PatchInfo, TransformInfo};
pub use progress::{NoProgress, Progress};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Test data shared by the unit tests.
#[cfg(test)]
mod testing {
    /// `n` bytes of xorshift noise from `seed`.
    pub fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}

/// The pipeline's stages, for the stage benchmarks (`benches/`) and tests: not part of the
/// API, may change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::diff::{anchors, encode, matcher, plan, reference, select, suffix};
    /// Input files (see `src/files/`).
    pub mod files {
        pub use crate::files::package;
    }
    /// The transform layer's parts (see `src/transform/`).
    pub mod transform {
        pub use crate::transform::{
            BlockCensus, LAYOUT_BYTES, MAX_EXPANSION_RATIO, PARSE_BUDGET, census, codec, erofs,
            expand, find_filesystems, gzipstream, iso, memory, rebuild, squashfs, stream, table,
            xzstream, zstd_release, zstdstream,
        };
    }
}

/// Makes a patch that turns the file `old` into the file `new` and writes it to `patch` (`-`:
/// standard output; a file appears only when complete, and never over `old` or `new`).
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

/// Diffs every target's NEW against one `old`, in order, writing each target's patch; `done` is
/// called with each target's result as it ends. OLD is hashed, searched for squashfs file
/// systems, expanded and indexed once for all of them, and each patch is byte for byte the one
/// [`diff()`] makes for that pair. A target that fails leaves no patch and the others go on;
/// the call fails as a whole only when OLD or the options cannot be used (nothing is written
/// then) or two targets name the same patch.
///
/// ```no_run
/// use spindiff::{DiffOptions, NoProgress, Target};
/// let targets = ["spin-de.iso", "spin-fr.iso"].map(|n| Target {
///     new: n.into(),
///     patch: format!("{n}.spd").into(),
/// });
/// spindiff::diff_many("base.iso".as_ref(), &targets, &DiffOptions::default(), &NoProgress,
///     &mut |i, result| println!("{}: {:?}", targets[i].new.display(), result.map(|r| r.patch_size)))
///     .unwrap();
/// ```
pub fn diff_many(
    old: &Path,
    targets: &[Target],
    opts: &DiffOptions,
    progress: &dyn Progress,
    done: &mut dyn FnMut(usize, Result<DiffReport>),
) -> Result<()> {
    diff::many::diff_many(old, targets, opts, progress, done)
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
    apply::apply_files(old, patch, Some(output), opts, progress)
}

/// Checks that `patch` applies to `old` and produces output matching its checksums, without
/// writing anything. With `new`, also checks that the output would be exactly `new`.
pub fn verify(
    old: &Path,
    patch: &Path,
    new: Option<&Path>,
    opts: &ApplyOptions,
) -> Result<ApplyReport> {
    let expected = if files::is_standard_stream(patch) {
        None
    } else {
        let info = inspect::inspect_patch(patch)?;
        Some((info.new_size(), info.new_hash()))
    };
    if let (Some(new), Some((size, hash))) = (new, expected) {
        check_new(new, size, hash)?;
    }
    let opts = opts.clone().resume(false);
    let report = apply::apply_files(old, patch, None, &opts, &NoProgress)?;
    if let (Some(new), None) = (new, expected) {
        check_new(new, report.new_size, report.new_hash)?;
    }
    Ok(report)
}
fn check_new(new: &Path, size: u64, hash: [u8; 32]) -> Result<()> {
    let m = files::Mapped::open(new, Role::New)?;
    if m.len() != size {
        return Err(Error::NewMismatch {
            path: new.to_path_buf(),
            what: format!("it has {} bytes, the patch produces {}", m.len(), size),
        });
    }
    if files::hash_source(&m) != hash {
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
