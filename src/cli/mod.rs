//! The `spindiff` command: a thin wrapper over the library. [`args`] defines the command line,
//! [`commands`] has one function per subcommand, [`report`] renders results and errors for a
//! person, [`json`] for a program (`--json`), [`bars`] draws progress.

pub mod args;
mod bars;
mod commands;
pub mod json;
pub mod report;

use args::{Cli, Command};
use spindiff::{DiffOptions, Error};

/// Runs the command `cli` names. `Ok` with a non-zero exit status: failures were reported as
/// they happened (a many-targets diff whose other targets went on).
pub fn run(cli: Cli) -> Result<u8, Error> {
    match cli.command {
        Command::Diff {
            old,
            new,
            output,
            out_dir,
            diff,
            common,
        } => {
            let opts = diff_options(&diff)?;
            match (output, out_dir, new.as_slice()) {
                (_, Some(dir), _) => commands::diff_many(&old, &new, &dir, opts, &common),
                (Some(output), None, [new]) => {
                    commands::diff(&old, new, &output, opts, &common).map(|()| 0)
                }
                _ => Err(Error::InvalidOption(
                    "-o takes one NEW; to diff several against OLD, give --out-dir DIR".into(),
                )),
            }
        }
        Command::Batch {
            manifest,
            shard,
            diff,
            common,
        } => commands::batch(&manifest, shard, diff_options(&diff)?, &common),
        Command::Apply {
            old,
            patch,
            output,
            resume,
            memory,
            references,
            common,
        } => {
            let opts = commands::apply_options(&common, memory, references.ref_dir).resume(resume);
            commands::apply(&old, &patch, &output, opts, &common).map(|()| 0)
        }
        Command::Verify {
            old,
            patch,
            new,
            memory,
            references,
            common,
        } => {
            let opts = commands::apply_options(&common, memory, references.ref_dir);
            commands::verify(&old, &patch, new.as_deref(), opts, &common).map(|()| 0)
        }
        Command::Inspect { patch, json } => commands::inspect(&patch, json).map(|()| 0),
        Command::Generate(what) => commands::generate(what).map(|()| 0),
    }
}

/// The library's diff options from the command line's.
fn diff_options(diff: &args::DiffArgs) -> Result<DiffOptions, Error> {
    let chunk_size = u32::try_from(diff.chunk_size).map_err(|_| {
        Error::InvalidOption(format!(
            "--chunk-size {} is larger than the format allows",
            diff.chunk_size
        ))
    })?;
    Ok(DiffOptions::default()
        .memory(diff.memory)
        .level(diff.level)
        .chunk_size(chunk_size)
        .apply_memory(diff.apply_memory)
        .transform(!diff.no_transform)
        .references(diff.ref_dir.clone()))
}

/// The exit status of an error (documented in `--help` and the README).
pub fn exit_status(e: &Error) -> u8 {
    match e {
        Error::Io { .. } | Error::OutOfMemory { .. } => 3,
        Error::InvalidOption(_) => 2,
        _ => 1,
    }
}
