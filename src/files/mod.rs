//! Files and streams: every byte spindiff reads from or writes to the outside goes through
//! here, so the promises about them are kept in one place:
//!
//! - inputs read at random (OLD, NEW) must be regular files, opened without blocking; OLD is
//!   read with positioned reads ([`OldFile`], one positioned read behind every reader);
//! - nothing written or removed is ever a file that is read ([`Reads`], checked by
//!   [`Destination::decide`] and [`PendingFile::open_partial`]);
//! - an output appears only when complete, and a non-regular output is written as a stream,
//!   never replaced ([`Destination`], [`PendingFile`], [`Output`]);
//! - `-` means standard input or output, decided here once ([`is_standard_stream`]).

mod identity;
mod input;
mod output;
pub mod package;
pub mod references;

use std::path::Path;

pub use identity::{FileId, Named, Reads};
pub use input::{Buffer, Mapped, OldFile, OldReader, PatchInput, SCAN_BLOCK, Source, hash_source};
pub use output::{Destination, Output, PendingFile};

/// The name that stands for standard input (for an input) or standard output (for an output).
pub const STANDARD_STREAM: &str = "-";

/// Whether `path` is `-`: standard input or output rather than a file.
pub fn is_standard_stream(path: &Path) -> bool {
    path.as_os_str() == STANDARD_STREAM
}
