//! Files and streams: every byte spindiff reads from or writes to the outside goes through
//! here, so the promises about them are kept in one place:
//!
//! - inputs read at random (OLD, NEW) must be regular files, opened without blocking
//!   ([`open_regular`]); OLD is read with positioned reads ([`OldFile`], [`read_full_at`]);
//! - nothing written or removed is ever a file that is read ([`Reads`], checked by
//!   [`Destination::decide`] and [`PendingFile::open_partial`]);
//! - an output appears only when complete, and a non-regular output is written as a stream,
//!   never replaced ([`Destination`], [`PendingFile`], [`Output`]);
//! - `-` means standard input or output, decided here once ([`is_standard_stream`]).

mod identity;
mod input;
mod output;

use std::path::Path;

pub use identity::{FileId, Reads};
pub use input::{Mapped, OldFile, PatchInput, SCAN_BLOCK, hash_mapped, open_regular, read_full_at};
pub use output::{Destination, NAME_MAX, Output, PendingFile, partial_path, sibling};

/// The name that stands for standard input (for an input) or standard output (for an output).
pub const STANDARD_STREAM: &str = "-";

/// Whether `path` is `-`: standard input or output rather than a file.
pub fn is_standard_stream(path: &Path) -> bool {
    path.as_os_str() == STANDARD_STREAM
}
