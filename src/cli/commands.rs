//! One function per subcommand: options into the library's, the library's call, the report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::CommandFactory;

use super::args::{Cli, Common, Generated};
use super::bars::Bars;
use super::{json, report};
use spindiff::{ApplyOptions, DiffOptions, Error, Role};

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
    let opts = match common.threads {
        Some(t) => opts.threads(usize::from(t)),
        None => opts,
    };
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
    let bars = bars(common);
    let count = targets.len();
    let mut status = 0u8;
    let mut docs = Vec::new();
    let label = |i: usize| format!("[{}/{count}] {}", i + 1, targets[i].new.display());
    bars.set_label(label(0));
    spindiff::diff_many(old, &targets, &opts, &bars, &mut |i, result| {
        let t = &targets[i];
        let code = result.as_ref().err().map_or(0, super::exit_status);
        if status == 0 {
            status = code;
        }
        if common.json {
            let fields = result.as_ref().map(|r| {
                json::diff_fields(r, old, &t.new, &t.patch, patch_info(&t.patch).as_ref())
            });
            docs.push(json::diff_target(fields, &t.new, &t.patch, code));
        } else {
            match &result {
                Ok(r) if common.verbose => {
                    report::target(i, count, &t.new, &t.patch);
                    report::diff(r, started);
                }
                Ok(_) => {}
                Err(e) => report::error(e),
            }
        }
        if i + 1 < count {
            bars.set_label(label(i + 1));
        }
    })?;
    if common.json {
        json::diff_many(docs, status, started)?;
    }
    Ok(status)
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

fn apply_options(common: &Common, memory: Option<u64>) -> ApplyOptions {
    let opts = ApplyOptions::default().memory(memory);
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
    resume: bool,
    memory: Option<u64>,
    common: &Common,
) -> Result<(), Error> {
    let started = Instant::now();
    refuse_json_on_stdout(common, output)?;
    let opts = apply_options(common, memory).resume(resume);
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
    memory: Option<u64>,
    common: &Common,
) -> Result<(), Error> {
    let started = Instant::now();
    let r = spindiff::verify(old, patch, new, &apply_options(common, memory))?;
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
