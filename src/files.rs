//! Files spindiff writes (the patch, NEW): written beside the target under another name through a
//! buffer, then flushed, fsynced and renamed into place only when complete. Dropped before
//! [`PendingFile::commit`], the unfinished file is removed, so a failure leaves nothing behind.
//!
//! NEW is written to a fixed name, `.NAME.spindiff-partial`, locked while a process writes it. If
//! that process is killed (nothing runs on SIGKILL or a power cut, so the file stays), a later
//! `apply --resume` finds the file, keeps the chunks in it that still verify and writes the rest.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use crate::error::{Error, Result, Role};

/// A file being written in place of `target`.
pub struct PendingFile {
    /// Removed when dropped, unless persisted by [`PendingFile::commit`].
    path: TempPath,
    out: BufWriter<File>,
    target: PathBuf,
    role: Role,
}

fn directory_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn name_of(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `a` and `b` name the same existing file (same device and inode: hard links and
/// symbolic links count).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses an output that is one of the inputs: it would be replaced when the output is renamed
/// into place.
pub fn refuse_overwriting(output: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    for (role, input) in inputs {
        if same_file(output, input) {
            return Err(Error::InvalidOption(format!(
                "output '{}' is the same file as {role}; write it elsewhere (inputs are never modified)",
                output.display()
            )));
        }
    }
    Ok(())
}

/// Where `apply` writes `target` until it is complete and verified: `.NAME.spindiff-partial` in
/// the same directory (the same file system, so the final rename is atomic).
pub fn partial_path(target: &Path) -> PathBuf {
    directory_of(target).join(format!(".{}.spindiff-partial", name_of(target)))
}

impl PendingFile {
    /// Creates `.NAME.XXXXXX.spindiff-tmp`, a fresh uniquely named file, in `target`'s directory
    /// with the permissions a new file gets (0666 less the umask).
    pub fn create(target: &Path, role: Role, buffer: usize) -> Result<PendingFile> {
        let (file, path) = tempfile::Builder::new()
            .prefix(&format!(".{}.", name_of(target)))
            .suffix(".spindiff-tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(directory_of(target))
            .map_err(|e| Error::io(role, target, "create a temporary file in its directory", e))?
            .into_parts();
        Ok(PendingFile {
            path,
            out: BufWriter::with_capacity(buffer, file),
            target: target.to_path_buf(),
            role,
        })
    }

    /// Opens [`partial_path`]`(target)`, locked against a second writer. With `keep`, what an
    /// interrupted run left in it stays (its length is returned) for the caller to check; without,
    /// the file starts empty.
    pub fn open_partial(
        target: &Path,
        role: Role,
        buffer: usize,
        keep: bool,
    ) -> Result<(PendingFile, u64)> {
        let partial = partial_path(target);
        // Not through a symbolic link: in a shared directory someone else could point the name
        // at a file of ours (root's) that truncating would destroy.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&partial)
            .map_err(|e| Error::io(role, target, "create its partial file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::io(
                    role,
                    target,
                    "write",
                    io::Error::other(format!(
                        "another spindiff is writing it (its partial file '{}' is locked)",
                        partial.display()
                    )),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(role, target, "lock", e)),
        }
        // Nor a hard link to another file, nor someone else's file.
        let meta = file
            .metadata()
            .map_err(|e| Error::io(role, target, "stat its partial file", e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.nlink() != 1 || meta.uid() != euid {
            return Err(Error::io(
                role,
                target,
                "write",
                io::Error::other(format!(
                    "'{}' is not a partial file spindiff made (a link, or another user's file); remove it",
                    partial.display()
                )),
            ));
        }
        // Only now, holding the lock, may the file be removed on failure or emptied.
        let path = TempPath::try_from_path(&partial)
            .map_err(|e| Error::io(role, target, "resolve its partial file's path", e))?;
        let present = if keep {
            meta.len()
        } else {
            file.set_len(0)
                .map_err(|e| Error::io(role, target, "write", e))?;
            0
        };
        Ok((
            PendingFile {
                path,
                out: BufWriter::with_capacity(buffer, file),
                target: target.to_path_buf(),
                role,
            },
            present,
        ))
    }

    /// Reads bytes already in the file at `at`, without moving where writing continues.
    pub fn read_back(&self, buf: &mut [u8], at: u64) -> Result<()> {
        self.out
            .get_ref()
            .read_exact_at(buf, at)
            .map_err(|e| Error::io(self.role, &self.target, "read back its partial file", e))
    }

    /// Cuts the file at `len` and continues writing there.
    pub fn truncate_at(&mut self, len: u64) -> Result<()> {
        let (role, target) = (self.role, &self.target);
        self.out
            .flush()
            .map_err(|e| Error::io(role, target, "write", e))?;
        let file = self.out.get_mut();
        file.set_len(len)
            .map_err(|e| Error::io(role, target, "truncate its partial file", e))?;
        file.seek(SeekFrom::Start(len))
            .map_err(|e| Error::io(role, target, "seek in its partial file", e))?;
        Ok(())
    }

    /// Flushes, fsyncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let (role, target) = (self.role, &self.target);
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(role, target, "write", e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io(role, target, "sync", e))?;
        drop(file);
        self.path
            .persist(target)
            .map_err(|e| Error::io(role, target, "rename the finished file into place", e.error))?;
        Ok(())
    }
}

impl Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
