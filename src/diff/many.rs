//! One OLD, many NEW files (`spindiff diff BASE NEW... --out-dir DIR`): OLD is opened, hashed,
//! searched for squashfs file systems, expanded and indexed once, then the targets are diffed
//! one after another against it. Each patch is byte for byte the one a single
//! [`diff_files`](super::diff_files) makes (the same code builds it from the same parts); a
//! target that fails (unreadable, disk full) is reported for itself and leaves no patch, and the
//! others go on. Where the cap allows, a target starts while the one before it codes its last
//! streams.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::ScopedJoinHandle;
use std::time::Instant;

use super::{
    Base, DiffOptions, DiffReport, ExpandedBase, OUTPUT_BUFFER, check_cap, compressed,
    expansion_batch, parse_budget, plan, thread_pool,
};
use crate::error::{Error, Result, Role};
use crate::files::{Destination, Mapped, Named, Output, Reads};
use crate::progress::Progress;
use crate::transform;
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
/// target of the other kind rebuilds it once every target using the current one has ended), so
/// the process stays within one diff's memory.
enum Prepared<'o> {
    Plain(Base<'o>),
    Expanded(Box<ExpandedBase>, Base<'static>),
}

impl Prepared<'_> {
    fn is_expanded(&self) -> bool {
        matches!(self, Prepared::Expanded(..))
    }

    fn base(&self) -> &Base<'_> {
        match self {
            Prepared::Plain(base) | Prepared::Expanded(_, base) => base,
        }
    }
}

/// One target's view of the run's progress: passed on until the target's chunks are all
/// matched, silent after (its encoders finish while the next target reports).
struct TargetProgress<'p> {
    run: &'p dyn Progress,
    silent: AtomicBool,
}

impl TargetProgress<'_> {
    /// Ends the target's current phase on the display and silences the rest.
    fn hand_over(&self) {
        if !self.silent.swap(true, Ordering::Relaxed) {
            self.run.finish();
        }
    }

    fn live(&self) -> bool {
        !self.silent.load(Ordering::Relaxed)
    }
}

impl Progress for TargetProgress<'_> {
    fn start(&self, phase: &str, total: u64) {
        if self.live() {
            self.run.start(phase, total);
        }
    }
    fn advance(&self, bytes: u64) {
        if self.live() {
            self.run.advance(bytes);
        }
    }
    fn finish(&self) {
        if self.live() {
            self.run.finish();
        }
    }
}

/// A target whose patch is being finished on its own thread.
type Finishing<'s> = (usize, ScopedJoinHandle<'s, Result<DiffReport>>);

/// Waits for the finishing target, if any, and reports it.
fn settle(finishing: &mut Option<Finishing>, done: &mut dyn FnMut(usize, Result<DiffReport>)) {
    if let Some((i, thread)) = finishing.take() {
        done(
            i,
            thread
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        );
    }
}

/// Diffs every target against `old_path`, in order, calling `done` with each one's result as it
/// ends. Fails as a whole only when OLD cannot be used (or the options cannot work), before any
/// patch is written; two targets with the same patch are refused up front.
///
/// Each target runs on a thread of its own. When the cap holds a whole diff beside one whose
/// encoders are finishing ([`Params::overlaps_targets`]), the next target starts as soon as
/// this one's chunks are all matched, so the coding of its last groups (one thread per group)
/// overlaps the next target's expansion and matching; at most two targets are alive then.
pub fn diff_many(
    old_path: &Path,
    targets: &[Target],
    opts: &DiffOptions,
    progress: &dyn Progress,
    done: &mut dyn FnMut(usize, Result<DiffReport>),
) -> Result<()> {
    diff_many_reading(old_path, targets, &Reads::new(), opts, progress, done)
}

/// [`diff_many`] within a larger run that also reads `run_reads` (a batch's other bases and
/// targets): no patch may be one of those either.
pub(super) fn diff_many_reading(
    old_path: &Path,
    targets: &[Target],
    run_reads: &Reads,
    opts: &DiffOptions,
    progress: &dyn Progress,
    done: &mut dyn FnMut(usize, Result<DiffReport>),
) -> Result<()> {
    let threads = opts.checked_threads()?;
    refuse_shared_patches(targets)?;
    let old = Mapped::open(old_path, Role::Old)?;
    // Every file read by any target: no patch may be one of them (a later target's NEW, too).
    let mut reads = run_reads.clone();
    reads.add(Role::Old, old_path, old.file())?;
    let references = crate::files::references::list(&opts.references)?;
    crate::files::references::add_reads(&mut reads, &references)?;
    let mut news = open_news(targets, &mut reads)?;
    let budget = parse_budget(opts);
    let old_fs: Vec<Layout> = if opts.transform {
        opts.old_filesystems(old.bytes(), budget, &|s, e| old.release(s, e))
    } else {
        Vec::new()
    };
    // both kinds of target where OLD is expanded for some (a target of compressed content
    // against a plain OLD is checked when it comes)
    check_cap(&old, &old_fs, false, opts)?;
    check_cap(&old, &old_fs, compressed(&old_fs), opts)?;
    let pool = thread_pool(threads)?;
    let (old, old_fs, pool) = (&old, &old_fs[..], &pool);
    let mut prepared: Option<Arc<Prepared>> = None;
    std::thread::scope(|s| {
        let mut finishing: Option<Finishing> = None;
        for (i, t) in targets.iter().enumerate() {
            let started = Instant::now();
            progress.begin_target(i);
            // beside a finishing target: parsed within what its encoders leave of the cap
            let beside = finishing_bytes(&finishing, prepared.as_deref());
            let budget = transform::memory::parse_budget(
                opts.memory.saturating_sub(plan::RESERVED + beside),
            );
            let opened = news[i]
                .take()
                .expect("each target once")
                .and_then(|new| open_target(new, &t.patch, &reads, (opts, budget, old_fs)));
            let (new, new_fs, output) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    settle(&mut finishing, done);
                    done(i, Err(e));
                    continue;
                }
            };
            let expand = opts.transform && (compressed(old_fs) || compressed(&new_fs));
            if prepared.as_ref().is_none_or(|p| p.is_expanded() != expand) {
                // one prepared base at a time: a target still using the other one ends first
                settle(&mut finishing, done);
                prepared = None;
                let old = (old_path, old, old_fs);
                let prepare =
                    |old| prepare(expand, old, (&t.patch, &references), opts, pool, progress);
                match prepare(old) {
                    Ok(p) => prepared = Some(Arc::new(p)),
                    Err(e) => {
                        done(i, Err(e));
                        continue;
                    }
                }
            }
            let base = Arc::clone(prepared.as_ref().expect("prepared just above"));
            let overlap = base.base().params().overlaps_targets();
            let batch = match target_batch(&base, &new_fs, &mut finishing, done, opts, threads) {
                Ok(batch) => batch,
                Err(e) => {
                    done(i, Err(e));
                    continue;
                }
            };
            let (matched_tx, matched_rx) = mpsc::channel::<()>();
            let thread = s.spawn(move || {
                let target = (&new, (&new_fs[..], batch), output, t.patch.as_path());
                run_target(&base, old, target, (pool, progress), matched_tx).map(|r| DiffReport {
                    elapsed: started.elapsed(),
                    ..r
                })
            });
            if overlap {
                // until this target's chunks are matched (or it ended early)
                let _ = matched_rx.recv();
            }
            settle(&mut finishing, done); // at most two targets alive
            finishing = Some((i, thread));
            if !overlap {
                settle(&mut finishing, done);
            }
        }
        settle(&mut finishing, done);
    });
    Ok(())
}

/// Refuses targets that would write one patch (under any spelling), before anything runs.
fn refuse_shared_patches(targets: &[Target]) -> Result<()> {
    let names: Vec<Option<Named>> = targets.iter().map(|t| Named::of(&t.patch).ok()).collect();
    for (i, t) in targets.iter().enumerate() {
        let same =
            |j: usize| targets[j].patch == t.patch || (names[i].is_some() && names[j] == names[i]);
        if (0..i).any(same) {
            return Err(Error::InvalidOption(format!(
                "two targets would write the same patch {}",
                crate::error::quoted(&t.patch)
            )));
        }
    }
    Ok(())
}

/// Opens every target's NEW (a NEW that cannot be opened fails its target only, when it comes),
/// recording each in `reads`.
fn open_news(targets: &[Target], reads: &mut Reads) -> Result<Vec<Option<Result<Mapped>>>> {
    let mut news = Vec::with_capacity(targets.len());
    for t in targets {
        let new = Mapped::open(&t.new, Role::New);
        if let Ok(n) = &new {
            reads.add(Role::New, &t.new, n.file())?;
        }
        news.push(Some(new));
    }
    Ok(news)
}

/// A target's output, opened (never a file of `reads`), and its NEW's file systems, each
/// parsed within `budget` ([`DiffOptions::searchable`] beside OLD's `old_fs`).
fn open_target(
    new: Mapped,
    patch: &Path,
    reads: &Reads,
    (opts, budget, old_fs): (&DiffOptions, u64, &[Layout]),
) -> Result<(Mapped, Vec<Layout>, Output)> {
    let destination = Destination::decide(patch, Role::Patch, reads)?;
    let output = Output::open(destination, patch, Role::Patch, OUTPUT_BUFFER)?;
    let new_fs = if opts.transform {
        opts.new_filesystems(new.bytes(), (budget, old_fs), &|s, e| new.release(s, e))
    } else {
        Vec::new()
    };
    Ok((new, new_fs, output))
}

/// Builds OLD's prepared state: expanded (its file systems `old_fs`, beside `patch`) or plain.
fn prepare<'o>(
    expand: bool,
    (old_path, old, old_fs): (&Path, &'o Mapped, &[Layout]),
    (patch, references): (&Path, &[PathBuf]),
    opts: &DiffOptions,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
) -> Result<Prepared<'o>> {
    if expand {
        let held = transform::memory::held(old_fs);
        let batch = expansion_batch(&[old_fs], (held, 0), opts, opts.checked_threads()?)?;
        let (expanded, old_x) =
            pool.install(|| ExpandedBase::make(old, (old_fs, batch), patch, progress))?;
        // chunks for --apply-memory as if each NEW's table were OLD's (a target whose own
        // table needs more is refused by name)
        let opts = &opts.fitted_to_apply(expanded.least_apply_transform())?;
        let old_hash = expanded.old_hash;
        let index = Base::expanded(old_x, old_hash, (opts, held, references), patch, progress)?;
        Ok(Prepared::Expanded(Box::new(expanded), index))
    } else {
        let mut old_only = Reads::new();
        old_only.add(Role::Old, old_path, old.file())?;
        Ok(Prepared::Plain(Base::plain(
            old,
            old_only,
            (opts, references),
            patch,
            progress,
        )?))
    }
}

/// What the finishing target, if any, still holds (its encoders, queue and output buffer).
fn finishing_bytes(finishing: &Option<Finishing>, prepared: Option<&Prepared>) -> u64 {
    match (finishing, prepared) {
        (Some(_), Some(p)) => p.base().params().finishing_bytes(),
        _ => 0,
    }
}

/// How many blocks the target with file systems `new_fs` expands at once: beside the finishing
/// target where the cap holds both, else once it has ended (waiting for it here). 0 for a
/// target that is not expanded.
fn target_batch(
    prepared: &Prepared,
    new_fs: &[Layout],
    finishing: &mut Option<Finishing>,
    done: &mut dyn FnMut(usize, Result<DiffReport>),
    opts: &DiffOptions,
    threads: usize,
) -> Result<usize> {
    if !prepared.is_expanded() {
        return Ok(0);
    }
    let held = prepared.base().params().held;
    let beside = finishing_bytes(finishing, Some(prepared));
    if beside > 0 {
        if let Ok(batch) = expansion_batch(&[new_fs], (held, beside), opts, threads) {
            return Ok(batch);
        }
        settle(finishing, done);
    }
    expansion_batch(&[new_fs], (held, 0), opts, threads)
}

/// A target's thread: [`diff_target`] with its own view of the progress, sending on `matched`
/// once its chunks are all matched (and going silent then).
fn run_target(
    prepared: &Prepared,
    old: &Mapped,
    target: (&Mapped, (&[Layout], usize), Output, &Path),
    (pool, progress): (&rayon::ThreadPool, &dyn Progress),
    matched: mpsc::Sender<()>,
) -> Result<DiffReport> {
    let view = TargetProgress {
        run: progress,
        silent: AtomicBool::new(false),
    };
    let matched = || {
        view.hand_over();
        let _ = matched.send(());
    };
    diff_target(prepared, old, target, pool, &view, &matched)
}

/// Diffs one target (its NEW, NEW's file systems, the opened output and the patch's name)
/// against the prepared OLD and commits its patch.
fn diff_target(
    prepared: &Prepared,
    old: &Mapped,
    (new, new_fs, output, patch): (&Mapped, (&[Layout], usize), Output, &Path),
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
    matched: &dyn Fn(),
) -> Result<DiffReport> {
    match prepared {
        Prepared::Expanded(expanded, index) => {
            let (new_x, transformed) =
                pool.install(|| expanded.expand_new(index.old(), new, new_fs, patch, progress))?;
            index.diff_expanded(
                (old, new),
                (&new_x, &transformed),
                output,
                (patch, progress),
                matched,
            )
        }
        Prepared::Plain(base) => {
            let (output, report) = base.diff_source(new, output, (patch, progress), matched)?;
            output.commit()?;
            Ok(report)
        }
    }
}
