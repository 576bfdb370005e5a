//! Inputs of the diff: OLD and NEW mapped read-only. A touched page of a mapping counts toward
//! the process's RSS, so whoever walks a mapping releases what it is done with
//! ([`Mapped::release`]); that is what lets `--memory` hold for inputs larger than the cap.

use std::fs::File;
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
}

impl Mapped {
    pub fn open(path: &Path, role: Role) -> Result<Mapped> {
        let file = File::open(path).map_err(|e| Error::io(role, path, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(role, path, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::io(
                role,
                path,
                "read",
                std::io::Error::other("not a regular file"),
            ));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and private; spindiff never writes through it. A
            // concurrent writer to the file could change the bytes under us: the patch would then
            // fail verification on apply, it cannot cause memory unsafety in safe code reading a
            // `&[u8]` of a file-backed mapping on Linux.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(role, path, "map", e))?)
        };
        Ok(Mapped {
            map,
            file,
            path: path.to_path_buf(),
        })
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
