//! Inputs of the diff: OLD and NEW mapped read-only. A touched page of a mapping counts toward
//! the process's RSS, so whoever walks a mapping releases what it is done with
//! ([`Mapped::release`]); that is what lets `--memory` hold for inputs larger than the cap.

use std::fs::File;

use crate::cleanup::MapGuard;
use std::path::{Path, PathBuf};

use std::os::unix::fs::FileExt;

use memmap2::{Mmap, UncheckedAdvice};

use crate::anchors::OldSource;

use crate::error::{Error, Result, Role};

/// A read-only mapping of one input file (empty files are not mapped).
pub struct Mapped {
    map: Option<Mmap>,
    file: File,
    path: PathBuf,
    role: Role,
    /// Length and modification time when opened, to notice a file changed under the diff.
    stamp: (u64, i64, i64),
    /// Names the file if touching the mapping raises SIGBUS (the file was truncated).
    _bus: Option<MapGuard>,
}

fn stamp(meta: &std::fs::Metadata) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (meta.len(), meta.mtime(), meta.mtime_nsec())
}

impl Mapped {
    pub fn open(path: &Path, role: Role) -> Result<Mapped> {
        let file = crate::files::open_regular(path, role)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(role, path, "stat", e))?;
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and private; spindiff never writes through it. A
            // concurrent writer to the file could change the bytes under us: the patch would then
            // fail verification on apply, it cannot cause memory unsafety in safe code reading a
            // `&[u8]` of a file-backed mapping on Linux.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(role, path, "map", e))?)
        };
        let bus = map.as_ref().map(|m| {
            MapGuard::new(
                m.as_ptr(),
                m.len(),
                format!(
                    "spindiff: error: {}",
                    Error::io(role, path, "read", changed_under_us())
                ),
            )
        });
        Ok(Mapped {
            map,
            file,
            path: path.to_path_buf(),
            role,
            stamp: stamp(&meta),
            _bus: bus,
        })
    }

    /// Fails if the file's length or modification time changed since it was opened: whatever
    /// was read from it may mix old and new contents.
    pub fn check_unchanged(&self) -> Result<()> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::io(self.role, &self.path, "stat", e))?;
        if stamp(&meta) != self.stamp {
            return Err(Error::io(self.role, &self.path, "read", changed_under_us()));
        }
        Ok(())
    }

    /// The open file (for its identity).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads `buf.len()` bytes at `pos` with a positioned read (not through the mapping).
    pub fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        match self.file.read_exact_at(buf, pos) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.changed()),
            Err(e) => Err(Error::io(self.role, &self.path, "read", e)),
        }
    }

    /// The error for a file that changed (shrank) while being read.
    pub fn changed(&self) -> Error {
        Error::io(self.role, &self.path, "read", changed_under_us())
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the pages of `start..end` from this process's resident set. Later reads fault them
    /// back in from the page cache, so this is always correct and only costs time.
    pub fn release(&self, start: usize, end: usize) {
        let Some(map) = &self.map else { return };
        let page = page_size();
        let start = start / page * page;
        let end = end.min(map.len());
        if start >= end {
            return;
        }
        // SAFETY: DONTNEED on a private read-only file mapping only discards this process's page
        // table entries; the contents are re-read from the file on the next access, so no
        // reference into the mapping observes changed data (the same caveat as in `open`).
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
    }

    /// Releases the whole mapping.
    pub fn release_all(&self) {
        self.release(0, self.bytes().len());
    }
}

fn changed_under_us() -> std::io::Error {
    std::io::Error::other("it changed while spindiff was reading it; no patch was written")
}

fn page_size() -> usize {
    4096
}

impl OldSource for Mapped {
    /// Positioned reads through the file, not the mapping. An I/O error here (the file shrank
    /// or the disk failed under us) reads as the end of OLD: fewer matches, never wrong ones.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        done
    }
}

/// Step in which inputs are hashed and scanned, so that at most this much of a mapping is
/// resident at once on behalf of a sequential pass.
pub const SCAN_BLOCK: usize = 16 << 20;

/// BLAKE3 of a whole mapping, hashed block by block with the pages released behind it.
pub fn hash_mapped(m: &Mapped) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let bytes = m.bytes();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + SCAN_BLOCK).min(bytes.len());
        h.update_rayon(&bytes[at..end]);
        m.release(at, end);
        at = end;
    }
    *h.finalize().as_bytes()
}
