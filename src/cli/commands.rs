//! One function per subcommand: options into the library's, the library's call, the report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::CommandFactory;

use super::args::{Cli, Common, Generated};
use super::bars::Bars;
use super::{json, report};
use spindiff::{ApplyOptions, DiffOptions, DiffReport, Error, Role};

/// `spindiff diff`.
pub fn diff(
    old: &Path,
    new: &Path,
    output: &Path,
    opts: DiffOptions,
    common: &Common,
) -> Result<(), Error> {
    let started = Instant::now();
    refuse_json_on_stdout(common, output)?;
    let opts = match common.threads {
        Some(t) => opts.threads(usize::from(t)),
        None => opts,
    };
    let r = spindiff::diff_with_progress(old, new, output, &opts, &bars(common))?;
    if common.json {
        return json::diff(&r, old, new, output, patch_info(output).as_ref(), started);
    }
    report::skipped_references(&r);
    if common.verbose {
        report::diff(&r, started);
    }
    Ok(())
}

/// What a patch just written holds, when it can be read back (not a device or a FIFO).
fn patch_info(patch: &Path) -> Option<spindiff::PatchInfo> {
    std::fs::metadata(patch)
        .is_ok_and(|m| m.is_file())
        .then(|| spindiff::inspect(patch).ok())
        .flatten()
}

/// `spindiff diff OLD NEW... --out-dir DIR`: every NEW against OLD, OLD prepared once. Each
/// target's failure is reported as it happens (a line, or its entry in the JSON document); the
/// exit status is the first failure's.
pub fn diff_many(
    old: &Path,
    news: &[PathBuf],
    dir: &Path,
    opts: DiffOptions,
    common: &Common,
) -> Result<u8, Error> {
    let started = Instant::now();
    let opts = with_threads(opts, common);
    let targets = news
        .iter()
        .map(|new| {
            let name = new.file_name().ok_or_else(|| {
                Error::InvalidOption(format!(
                    "--out-dir: {} has no file name to name its patch after",
                    spindiff::quoted(new)
                ))
            })?;
            let mut patch = name.to_os_string();
            patch.push(".spd");
            Ok(spindiff::Target {
                new: new.clone(),
                patch: dir.join(patch),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        role: Role::Patch,
        path: dir.to_path_buf(),
        action: "create the directory",
        source,
    })?;
    let mut run = Outcomes::new(common, targets.len());
    run.group(old, &targets, &opts)?;
    if common.json {
        json::diff_many("diff", "targets", run.docs, None, run.error, started)?;
    }
    Ok(run.status)
}

/// One job of a batch manifest (docs/FARMS.md).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    base: PathBuf,
    target: PathBuf,
    output: PathBuf,
    /// Directories of reference files for this job, beside --ref-dir's.
    #[serde(default)]
    ref_dirs: Vec<PathBuf>,
}

/// A batch manifest: `{"jobs": [...]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    jobs: Vec<Job>,
}

/// `spindiff batch MANIFEST [--shard K/N]`: the manifest's jobs grouped by base (in the order
/// bases first appear, jobs in manifest order), cut into N contiguous slices of which K runs;
/// each base of the slice is prepared once (the library's [`spindiff::diff_batch`]).
pub fn batch(
    manifest: &Path,
    shard: Option<spindiff::Shard>,
    opts: DiffOptions,
    common: &Common,
) -> Result<u8, Error> {
    let started = Instant::now();
    let opts = with_threads(opts, common);
    let text = std::fs::read(manifest).map_err(|source| Error::Io {
        role: Role::Manifest,
        path: manifest.to_path_buf(),
        action: "read",
        source,
    })?;
    let parsed: Manifest = serde_json::from_slice(&text).map_err(|e| {
        Error::InvalidOption(format!(
            "manifest {}: not a list of jobs: {e}",
            spindiff::quoted(manifest)
        ))
    })?;
    // relative paths are relative to the manifest's directory
    let root = manifest.parent().unwrap_or(Path::new(""));
    let jobs: Vec<spindiff::Job> = parsed
        .jobs
        .into_iter()
        .map(|job| spindiff::Job {
            base: root.join(job.base),
            target: spindiff::Target {
                new: root.join(job.target),
                patch: root.join(job.output),
            },
            references: job.ref_dirs.iter().map(|d| root.join(d)).collect(),
        })
        .collect();
    let slice = shard.unwrap_or(spindiff::Shard::ALL);
    let order = spindiff::batch_order(&jobs, slice);
    let mut run = Outcomes::new(common, order.len());
    let labels = order.iter().enumerate().map(|(at, &i)| {
        format!(
            "[{}/{}] {}",
            at + 1,
            order.len(),
            jobs[i].target.new.display()
        )
    });
    run.bars.set_targets(labels.collect());
    let bars = std::mem::replace(&mut run.bars, Bars::new(true));
    spindiff::diff_batch(
        &jobs,
        slice,
        Some(manifest),
        &opts,
        &bars,
        &mut |i, result| run.outcome(&jobs[i].base, &jobs[i].target, result),
    )
    .map_err(|e| match e {
        Error::InvalidOption(what) => {
            Error::InvalidOption(format!("manifest {}: {what}", spindiff::quoted(manifest)))
        }
        e => e,
    })?;
    if common.json {
        let shard = shard.map(|s| serde_json::json!({ "k": s.k(), "n": s.n() }));
        json::diff_many("batch", "jobs", run.docs, shard, run.error, started)?;
    }
    Ok(run.status)
}

/// What a run of many diffs reports as it goes: the first failure's status, each target's JSON
/// (with `--json`), each failure's line and, with `-v`, each target's summary.
struct Outcomes<'c> {
    common: &'c Common,
    bars: Bars,
    status: u8,
    /// The first failure's `error` object, the run's (`--json`).
    error: Option<(u8, serde_json::Value)>,
    docs: Vec<serde_json::Value>,
    done: usize,
    count: usize,
    started: Instant,
    /// Whether the reference files the base skipped were reported.
    warned: bool,
}

impl<'c> Outcomes<'c> {
    fn new(common: &'c Common, count: usize) -> Outcomes<'c> {
        Outcomes {
            common,
            bars: bars(common),
            status: 0,
            error: None,
            docs: Vec::new(),
            done: 0,
            count,
            started: Instant::now(),
            warned: false,
        }
    }

    /// Diffs `targets` against `old`; `Err` when `old` (or the options) cannot be used at all.
    fn group(
        &mut self,
        old: &Path,
        targets: &[spindiff::Target],
        opts: &DiffOptions,
    ) -> Result<(), Error> {
        let (first, count) = (self.done, self.count);
        let labels = targets.iter().enumerate();
        let labels =
            labels.map(|(i, t)| format!("[{}/{count}] {}", first + i + 1, t.new.display()));
        self.bars.set_targets(labels.collect());
        let mut results = Vec::new();
        spindiff::diff_many(old, targets, opts, &self.bars, &mut |_, result| {
            results.push(result)
        })?;
        // reported once the group is done, in order (a failure's line at once would interleave
        // with the bars)
        for (t, result) in targets.iter().zip(results) {
            self.outcome(old, t, result.as_ref());
        }
        Ok(())
    }

    fn outcome(&mut self, old: &Path, t: &spindiff::Target, result: Result<&DiffReport, &Error>) {
        let code = result.err().map_or(0, super::exit_status);
        if let Err(e) = result {
            // on standard error whatever the output (docs/JSON.md), in order with the others
            report::error(e);
            if self.status == 0 {
                self.status = code;
                self.error = Some((code, json::error_fields(e)));
            }
        }
        if self.common.json {
            let fields = result.map(|r| {
                json::diff_fields(r, old, &t.new, &t.patch, patch_info(&t.patch).as_ref())
            });
            self.docs
                .push(json::diff_target(fields, old, &t.new, &t.patch, code));
        } else {
            if let Ok(r) = result
                && !self.warned
            {
                // the base's references: the same for every target
                report::skipped_references(r);
                self.warned = true;
            }
            match result {
                Ok(r) if self.common.verbose => {
                    report::target(self.done, self.count, &t.new, &t.patch);
                    let began = Instant::now().checked_sub(r.elapsed);
                    report::diff(r, began.unwrap_or(self.started));
                }
                Ok(_) | Err(_) => {}
            }
        }
        self.done += 1;
    }
}

fn with_threads(opts: DiffOptions, common: &Common) -> DiffOptions {
    match common.threads {
        Some(t) => opts.threads(usize::from(t)),
        None => opts,
    }
}

fn bars(common: &Common) -> Bars {
    Bars::new(common.quiet || common.json)
}

/// `--json` writes its document to standard output: NEW or the patch cannot go there too.
fn refuse_json_on_stdout(common: &Common, output: &Path) -> Result<(), Error> {
    if common.json && output == Path::new("-") {
        return Err(Error::InvalidOption(
            "--json writes its report to standard output, which -o - would share".into(),
        ));
    }
    Ok(())
}

/// The library's apply options from the command line's.
pub fn apply_options(common: &Common, memory: Option<u64>, ref_dirs: Vec<PathBuf>) -> ApplyOptions {
    let opts = ApplyOptions::default().memory(memory).references(ref_dirs);
    match common.threads {
        Some(t) => opts.threads(usize::from(t)),
        None => opts,
    }
}

/// `spindiff apply`.
pub fn apply(
    old: &Path,
    patch: &Path,
    output: &Path,
    opts: ApplyOptions,
    common: &Common,
) -> Result<(), Error> {
    let started = Instant::now();
    refuse_json_on_stdout(common, output)?;
    let resume = opts.resume;
    let r = spindiff::apply_with_progress(old, patch, output, &opts, &bars(common))?;
    if common.json {
        return json::apply("apply", &r, old, patch, Some(output), started);
    }
    if common.verbose {
        report::apply(&r, resume, patch, started);
    }
    Ok(())
}

/// `spindiff verify`.
pub fn verify(
    old: &Path,
    patch: &Path,
    new: Option<&Path>,
    opts: ApplyOptions,
    common: &Common,
) -> Result<(), Error> {
    let started = Instant::now();
    let r = spindiff::verify(old, patch, new, &opts)?;
    if common.json {
        return json::apply("verify", &r, old, patch, new, started);
    }
    if !common.quiet {
        report::verified(&r, new.is_some())?;
    }
    if common.verbose {
        report::summary(r.header.old_size, r.new_size, 0, started);
    }
    Ok(())
}

/// `spindiff inspect`.
pub fn inspect(patch: &Path, as_json: bool) -> Result<(), Error> {
    let started = Instant::now();
    let info = spindiff::inspect(patch)?;
    if as_json {
        return json::inspect(&info, patch, started);
    }
    report::inspect(&info)
}

/// Writes the man pages into `dir`, or a completion script to standard output.
pub fn generate(what: Generated) -> Result<(), Error> {
    match what {
        Generated::Man { dir } => {
            let failed = |action, source| Error::Io {
                role: Role::Output,
                path: dir.clone(),
                action,
                source,
            };
            std::fs::create_dir_all(&dir).map_err(|e| failed("create the directory", e))?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| failed("write a page", e))
        }
        Generated::Completions { shell } => {
            // clap_complete panics on a write error: render into memory, then write that.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "spindiff", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .map_err(|source| Error::Io {
                    role: Role::Output,
                    path: PathBuf::from("-"),
                    action: "write",
                    source,
                })
        }
    }
}
