//! Typed errors of the library. Every error names the file it concerns (by role and path) and
//! what is wrong with it; the CLI renders them as one line and maps them to exit codes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Which file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The base image the patch was made against.
    Old,
    /// The target image given to `diff` or `verify`.
    New,
    /// The patch file (or `-` for standard input/output).
    Patch,
    /// The file `apply` writes.
    Output,
    /// The list of diffs a batch runs (the command line's `spindiff batch`).
    Manifest,
    /// The directory a diff writes OLD's and NEW's expanded streams into (beside the patch).
    Temporary,
    /// A reference file (`--ref-dir`): a package whose payload the patch reads beside OLD.
    Reference,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Old => "OLD",
            Role::New => "NEW",
            Role::Patch => "PATCH",
            Role::Output => "output",
            Role::Manifest => "MANIFEST",
            Role::Temporary => "temporary directory",
            Role::Reference => "REFERENCE",
        })
    }
}

/// Everything that can go wrong in `diff`, `apply`, `verify` and `inspect`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while opening, reading, writing or renaming a file.
    Io {
        /// Which file.
        role: Role,
        /// Its path (`-` for a standard stream).
        path: PathBuf,
        /// What was being done ("open", "write", ...).
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The patch is not well formed: bad magic, a checksum mismatch, a length or offset out of
    /// bounds, a stream that does not decode. `offset` is the byte position in the patch.
    CorruptPatch {
        /// The patch.
        path: PathBuf,
        /// Where in the patch.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The patch ends before its footer.
    TruncatedPatch {
        /// The patch.
        path: PathBuf,
        /// Where it ends.
        offset: u64,
    },
    /// The patch was written by a newer format version than this build reads (`newest`).
    UnsupportedVersion {
        /// The patch.
        path: PathBuf,
        /// The version it declares.
        version: u16,
        /// The newest version this build reads.
        newest: u16,
    },
    /// The patch needs an encoder this build does not have (blocks made by a libzstd release
    /// it was built without: `scripts/zstd-releases.sh`).
    MissingEncoder {
        /// The patch.
        path: PathBuf,
        /// Which encoder.
        what: String,
    },
    /// OLD is not the file the patch was made against.
    WrongOld {
        /// OLD.
        path: PathBuf,
        /// How it differs.
        what: String,
    },
    /// A reconstructed chunk or the whole output did not match its checksum.
    OutputMismatch {
        /// The patch.
        path: PathBuf,
        /// Which check failed.
        what: String,
    },
    /// `verify` was given a NEW that differs from what the patch produces.
    NewMismatch {
        /// NEW.
        path: PathBuf,
        /// How it differs.
        what: String,
    },
    /// Applying the patch could take more memory than `apply --memory` allows (its chunks are
    /// too large for the cap).
    MemoryLimit {
        /// The patch.
        path: PathBuf,
        /// The smallest cap that applies it (one chunk in flight, with the transform's and the
        /// decoder's memory): a cap of that much is accepted.
        need: u64,
        /// The cap.
        limit: u64,
    },
    /// A reference file (`--ref-dir`) that cannot serve: a package whose archive or payload is
    /// damaged, or whose payload is not the one the patch was made with.
    BadReference {
        /// The reference file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// References the patch reads are not in any `--ref-dir` (or are there as another version
    /// or damaged): nothing was written. `what` names each (file name, size, SHA-256).
    MissingReferences {
        /// The patch.
        path: PathBuf,
        /// Which references, and what was looked through.
        what: String,
    },
    /// An option that cannot work (for example a memory cap too small for any plan).
    InvalidOption(String),
    /// Memory or another resource of the machine ran out (`what` says which and where).
    OutOfMemory {
        /// What could not get memory (or a thread).
        what: String,
    },
}

/// Convenience alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable, machine-readable name for the kind of error (the `error.kind` field of the
    /// command line's `--json` output, docs/JSON.md): `io`, `corrupt_patch`, `truncated_patch`,
    /// `unsupported_version`, `missing_encoder`, `wrong_old`, `output_mismatch`, `new_mismatch`,
    /// `memory_limit`, `bad_reference`, `missing_references`, `invalid_option`, `out_of_memory`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::CorruptPatch { .. } => "corrupt_patch",
            Error::TruncatedPatch { .. } => "truncated_patch",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::MissingEncoder { .. } => "missing_encoder",
            Error::WrongOld { .. } => "wrong_old",
            Error::OutputMismatch { .. } => "output_mismatch",
            Error::NewMismatch { .. } => "new_mismatch",
            Error::MemoryLimit { .. } => "memory_limit",
            Error::BadReference { .. } => "bad_reference",
            Error::MissingReferences { .. } => "missing_references",
            Error::InvalidOption(_) => "invalid_option",
            Error::OutOfMemory { .. } => "out_of_memory",
        }
    }

    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::CorruptPatch { path, .. }
            | Error::TruncatedPatch { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::MissingEncoder { path, .. }
            | Error::WrongOld { path, .. }
            | Error::OutputMismatch { path, .. }
            | Error::NewMismatch { path, .. }
            | Error::MemoryLimit { path, .. }
            | Error::BadReference { path, .. }
            | Error::MissingReferences { path, .. } => Some(path),
            Error::InvalidOption(_) | Error::OutOfMemory { .. } => None,
        }
    }

    pub(crate) fn io(role: Role, path: &Path, action: &'static str, source: io::Error) -> Self {
        Error::Io {
            role,
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, what: impl Into<String>) -> Self {
        Error::CorruptPatch {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    /// True when the error is an operating-system I/O failure rather than bad content.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io { .. })
    }
}

/// `path` as messages show it: in single quotes, with every byte that is not printable UTF-8
/// escaped (control characters such as a newline or an ANSI escape as `\n` or `\u{1b}`, bytes
/// that are not UTF-8 as `\xff`), so that an error stays one line and a name cannot rewrite the
/// terminal. The quote and the backslash are escaped too, so the shown name is unambiguous.
pub fn quoted(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("'");
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\'' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('\'');
    out
}

fn shown(path: &Path) -> String {
    quoted(path)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                role,
                path,
                action,
                source,
            } => write!(f, "{role} {}: cannot {action}: {source}", shown(path)),
            Error::CorruptPatch { path, offset, what } => {
                write!(f, "PATCH {}: corrupt at byte {offset}: {what}", shown(path))
            }
            Error::TruncatedPatch { path, offset } => write!(
                f,
                "PATCH {}: truncated: it ends at byte {offset} before the patch is complete",
                shown(path)
            ),
            Error::UnsupportedVersion {
                path,
                version,
                newest,
            } => write!(
                f,
                "PATCH {}: format version {version} is newer than this spindiff reads ({newest})",
                shown(path),
            ),
            Error::MissingEncoder { path, what } => write!(
                f,
                "PATCH {}: needs {what}, which this spindiff was built without",
                shown(path)
            ),
            Error::WrongOld { path, what } => write!(
                f,
                "OLD {}: not the file this patch was made from: {what}",
                shown(path)
            ),
            Error::OutputMismatch { path, what } => {
                write!(f, "PATCH {}: output does not verify: {what}", shown(path))
            }
            Error::NewMismatch { path, what } => write!(
                f,
                "NEW {}: differs from what the patch produces: {what}",
                shown(path)
            ),
            Error::MemoryLimit { path, need, limit } => write!(
                f,
                "PATCH {}: applying it needs --memory {}M at least, more than the memory cap of {}",
                shown(path),
                need.div_ceil(1 << 20),
                crate::size::format_size(*limit)
            ),
            Error::BadReference { path, what } => {
                write!(f, "REFERENCE {}: {what}", shown(path))
            }
            Error::MissingReferences { path, what } => {
                write!(f, "PATCH {}: {what}; nothing was written", shown(path))
            }
            Error::InvalidOption(what) => f.write_str(what),
            Error::OutOfMemory { what } => write!(
                f,
                "out of memory: {what} (lower --memory or --threads, or raise the limit); nothing was written"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
