//! Who is who among the files of a run: every file it reads (OLD, NEW, PATCH, standard input)
//! recorded by device and inode ([`Reads`]), so that every place it writes can be checked
//! against them before its first byte.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::STANDARD_STREAM;
use crate::error::{Error, Result, Role, quoted};

/// Device and inode of an open file, and whether writing it could destroy data someone reads
/// (a regular file or a block device; writing into a pipe or a terminal that is also read
/// destroys nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    holds_data: bool,
}

impl FileId {
    pub fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            holds_data: meta.is_file() || meta.file_type().is_block_device(),
        }
    }

    pub(crate) fn of_fd(fd: BorrowedFd<'_>) -> io::Result<FileId> {
        let file = File::from(fd.try_clone_to_owned()?);
        Ok(FileId::of(&file.metadata()?))
    }

    fn same_data(&self, other: &FileId) -> bool {
        self.holds_data && other.holds_data && self.dev == other.dev && self.ino == other.ino
    }
}

/// Every file this run reads, by role, path and identity.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    files: Vec<(Role, PathBuf, FileId)>,
}

impl Reads {
    pub fn new() -> Reads {
        Reads::default()
    }

    /// Records an opened input.
    pub fn add(&mut self, role: Role, path: &Path, file: &File) -> Result<()> {
        let meta = file
            .metadata()
            .map_err(|e| Error::io(role, path, "stat", e))?;
        self.files
            .push((role, path.to_path_buf(), FileId::of(&meta)));
        Ok(())
    }

    /// Records a file known by its identity (stat'ed, not opened).
    pub fn add_identity(&mut self, role: Role, path: &Path, id: FileId) {
        self.files.push((role, path.to_path_buf(), id));
    }

    /// Records standard input, read in `role`.
    pub fn add_stdin(&mut self, role: Role) -> Result<()> {
        let id = FileId::of_fd(io::stdin().as_fd())
            .map_err(|e| Error::io(role, Path::new(STANDARD_STREAM), "stat standard input", e))?;
        self.files.push((role, PathBuf::from(STANDARD_STREAM), id));
        Ok(())
    }

    /// Refuses to write `what` (described for the message, e.g. "output 'x'") when it is the
    /// same file as one that is read.
    pub fn refuse_writing(&self, id: &FileId, what: &str) -> Result<()> {
        match self.files.iter().find(|(_, _, r)| r.same_data(id)) {
            None => Ok(()),
            Some((role, path, _)) => Err(Error::InvalidOption(format!(
                "{what} is the same file as {role} {}{}; spindiff never writes a file it reads",
                quoted(path),
                if super::is_standard_stream(path) {
                    " (standard input)"
                } else {
                    ""
                }
            ))),
        }
    }
}

/// The directory a name is in: its device and inode when it exists, else its path resolved as
/// far as it exists (the rest, directories a run creates, taken as written with `.` and `..`
/// folded).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Directory {
    Existing(u64, u64),
    ToCreate(PathBuf),
}

/// What a path names: a file name in a directory, whatever the spelling (`p.spd`,
/// `x/../p.spd`, an absolute path, a symbolic link to it). Two paths that name the same file
/// have equal `Named`s; a file reached under two names by hard links is told by [`FileId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    directory: Directory,
    name: std::ffi::OsString,
}

impl Named {
    /// Resolves `path`: a symbolic link at its end to what it points to, its directory to its
    /// identity. Fails when the link cannot be followed or the path ends without a file name.
    pub fn of(path: &Path) -> io::Result<Named> {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let path = if is_link {
            std::fs::canonicalize(path)?
        } else {
            path.to_path_buf()
        };
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("it names no file"))?
            .to_os_string();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let directory = match std::fs::metadata(&parent) {
            Ok(m) => Directory::Existing(m.dev(), m.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `x/..` with no `x` yet names an existing directory all the same
                let resolved = resolve_missing(&parent)?;
                match std::fs::metadata(&resolved) {
                    Ok(m) => Directory::Existing(m.dev(), m.ino()),
                    Err(_) => Directory::ToCreate(resolved),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Named { directory, name })
    }
}

/// `dir`, which does not exist, as an absolute path: its longest existing ancestor resolved,
/// the components after it folded (`.` dropped, `..` removing the one before).
fn resolve_missing(dir: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(dir)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        rest.push(existing.file_name().map(|n| n.to_os_string()));
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let mut out = std::fs::canonicalize(existing)?;
    for part in rest.into_iter().rev() {
        match part {
            Some(p) if p != "." => out.push(p),
            Some(_) => {}
            None => {
                out.pop();
            }
        }
    }
    Ok(out)
}
