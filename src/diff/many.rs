//! One OLD, many NEW files (`spindiff diff BASE NEW... --out-dir DIR`): OLD is opened, hashed,
//! searched for squashfs file systems, expanded and indexed once, then the targets are diffed
//! one after another against it. Each patch is byte for byte the one a single
//! [`diff_files`](super::diff_files) makes (the same code builds it from the same parts); a
//! target that fails (unreadable, disk full) is reported for itself and leaves no patch, and the
//! others go on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    Base, DiffOptions, DiffReport, ExpandedBase, OUTPUT_BUFFER, compressed, plan::Params,
    thread_pool,
};
use crate::error::{Error, Result, Role};
use crate::files::{Destination, Mapped, Output, Reads};
use crate::progress::Progress;
use crate::transform::find_filesystems_releasing;
use crate::transform::squashfs::Layout;

/// One target of [`crate::diff_many`]: a NEW file and where its patch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The NEW file.
    pub new: PathBuf,
    /// Where its patch is written (a file appears only when complete).
    pub patch: PathBuf,
}

/// OLD's prepared state, kept from one target to the next: the plain base over OLD, or what
/// expanding OLD gave and the base over its expanded stream. Only one is held at a time (a
/// target of the other kind rebuilds it), so the process stays within one diff's memory.
enum Prepared<'o> {
    None,
    Plain(Base<'o>),
    Expanded(Box<ExpandedBase>, Base<'static>),
}

/// Diffs every target against `old_path`, in order, calling `done` with each one's result as it
/// ends. Fails as a whole only when OLD cannot be used (or the options cannot work), before any
/// patch is written; two targets with the same patch are refused up front.
pub fn diff_many(
    old_path: &Path,
    targets: &[Target],
    opts: &DiffOptions,
    progress: &dyn Progress,
    done: &mut dyn FnMut(usize, Result<DiffReport>),
) -> Result<()> {
    let threads = opts.checked_threads()?;
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|u| u.patch == t.patch) {
            return Err(Error::InvalidOption(format!(
                "two targets would write the same patch {}",
                crate::error::quoted(&t.patch)
            )));
        }
    }
    let old = Mapped::open(old_path, Role::Old)?;
    Params::derive(old.len(), opts.memory, threads, opts.level, opts.chunk_size)?;
    // Every file read by any target: no patch may be one of them (a later target's NEW, too).
    let mut reads = Reads::new();
    reads.add(Role::Old, old_path, old.file())?;
    let mut news: Vec<Option<Result<Mapped>>> = Vec::with_capacity(targets.len());
    for t in targets {
        let new = Mapped::open(&t.new, Role::New);
        if let Ok(n) = &new {
            reads.add(Role::New, &t.new, n.file())?;
        }
        news.push(Some(new));
    }
    let old_fs: Vec<Layout> = if opts.transform {
        find_filesystems_releasing(old.bytes(), &|s, e| old.release(s, e))
    } else {
        Vec::new()
    };
    let pool = thread_pool(threads)?;
    let mut prepared = Prepared::None;
    for (i, t) in targets.iter().enumerate() {
        let started = Instant::now();
        let new = news[i].take().expect("each target once");
        let result = new.and_then(|new| {
            let destination = Destination::decide(&t.patch, Role::Patch, &reads)?;
            let output = Output::open(destination, &t.patch, Role::Patch, OUTPUT_BUFFER)?;
            let new_fs = if opts.transform {
                find_filesystems_releasing(new.bytes(), &|s, e| new.release(s, e))
            } else {
                Vec::new()
            };
            let mut report = if opts.transform && (compressed(&old_fs) || compressed(&new_fs)) {
                if !matches!(prepared, Prepared::Expanded(..)) {
                    prepared = Prepared::None;
                    let (expanded, old_x) =
                        pool.install(|| ExpandedBase::make(&old, &old_fs, &t.patch, progress))?;
                    let index = Base::build(Box::new(old_x), Reads::new(), opts, progress)?;
                    prepared = Prepared::Expanded(Box::new(expanded), index);
                }
                let Prepared::Expanded(expanded, index) = &prepared else {
                    unreachable!("prepared just above")
                };
                let (new_x, transformed) = pool.install(|| {
                    expanded.expand_new(index.old(), &new, &new_fs, &t.patch, progress)
                })?;
                index.diff_expanded(
                    (&old, &new),
                    &new_x,
                    output,
                    &t.patch,
                    progress,
                    &transformed,
                )?
            } else {
                if !matches!(prepared, Prepared::Plain(_)) {
                    prepared = Prepared::None;
                    let mut old_only = Reads::new();
                    old_only.add(Role::Old, old_path, old.file())?;
                    prepared =
                        Prepared::Plain(Base::build(Box::new(&old), old_only, opts, progress)?);
                }
                let Prepared::Plain(base) = &prepared else {
                    unreachable!("prepared just above")
                };
                let (output, report) = base.diff_source(&new, output, &t.patch, progress)?;
                output.commit()?;
                report
            };
            report.elapsed = started.elapsed();
            Ok(report)
        });
        done(i, result);
    }
    Ok(())
}
