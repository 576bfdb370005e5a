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
