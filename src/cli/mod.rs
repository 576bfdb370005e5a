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

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Diff {
            old,
            new,
            output,
            memory,
            level,
            chunk_size,
            no_transform,
            common,
        } => {
            let chunk_size = u32::try_from(chunk_size).map_err(|_| {
                Error::InvalidOption(format!(
                    "--chunk-size {chunk_size} is larger than the format allows"
                ))
            })?;
            let opts = DiffOptions::default()
                .memory(memory)
                .level(level)
                .chunk_size(chunk_size)
                .transform(!no_transform);
            commands::diff(&old, &new, &output, opts, &common)
        }
        Command::Apply {
            old,
            patch,
            output,
            resume,
            memory,
            common,
        } => commands::apply(&old, &patch, &output, resume, memory, &common),
        Command::Verify {
            old,
            patch,
            new,
            memory,
            common,
        } => commands::verify(&old, &patch, new.as_deref(), memory, &common),
        Command::Inspect { patch, json } => commands::inspect(&patch, json),
        Command::Generate(what) => commands::generate(what),
    }
}

/// The exit status of an error (documented in `--help` and the README).
pub fn exit_status(e: &Error) -> u8 {
    match e {
        Error::Io { .. } | Error::OutOfMemory { .. } => 3,
        Error::InvalidOption(_) => 2,
        _ => 1,
    }
}
