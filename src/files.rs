//! Files spindiff writes (the patch, NEW): a temporary file beside the target, written through a
//! buffer, then flushed, fsynced and renamed into place only when complete. Dropped before
//! [`PendingFile::commit`], the temporary file is removed, so a failure leaves nothing behind.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, Result, Role};

/// A file being written in place of `target`.
pub struct PendingFile {
    tmp: NamedTempFile,
    out: BufWriter<File>,
    target: PathBuf,
    role: Role,
}

impl PendingFile {
    /// Creates `.NAME.XXXXXX.spindiff-tmp` in `target`'s directory, with the permissions a new
    /// file gets (0666 less the umask).
    pub fn create(target: &Path, role: Role, buffer: usize) -> Result<PendingFile> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".spindiff-tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(|e| Error::io(role, target, "create a temporary file in its directory", e))?;
        let file = tmp
            .reopen()
            .map_err(|e| Error::io(role, target, "open", e))?;
        Ok(PendingFile {
            tmp,
            out: BufWriter::with_capacity(buffer, file),
            target: target.to_path_buf(),
            role,
        })
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
        self.tmp
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
