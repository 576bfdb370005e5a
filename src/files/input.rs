//! Inputs: OLD and NEW opened as regular files without blocking (a FIFO is refused at once),
//! mapped for the diff's sequential passes ([`Mapped`]), read at random with positioned reads
//! ([`read_full_at`], behind both [`Mapped`]'s and [`OldFile`]'s), and the patch opened from a
//! path or standard input ([`PatchInput`]).
//!
//! A touched page of a mapping counts toward the process's RSS, so whoever walks a mapping
//! releases what it is done with ([`Mapped::release`]); that is what lets `--memory` hold for
//! inputs larger than the cap.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};

use super::Reads;
use crate::cleanup::MapGuard;
use crate::error::{Error, Result, Role};

/// Reads at `pos` until `buf` is full or the file ends; returns how much was read.
pub fn read_full_at(file: &File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Describes a non-regular file for messages.
pub(crate) fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

pub(crate) fn clear_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL touch only its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens an input that is read at random (OLD, NEW): it must be a regular file. The open does
/// not block, so a FIFO with no writer is refused at once rather than waited on.
pub fn open_regular(path: &Path, role: Role) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(role, path, "open", e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(role, path, "stat", e))?;
    if !meta.is_file() {
        return Err(Error::io(
            role,
            path,
            "read",
            io::Error::other(format!(
                "it is {}, not a regular file (it is read at random)",
                kind_of(&meta)
            )),
        ));
    }
    clear_nonblocking(&file).map_err(|e| Error::io(role, path, "open", e))?;
    Ok(file)
}

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
    /// Opens and maps the regular file at `path`.
    pub fn open(path: &Path, role: Role) -> Result<Mapped> {
        let file = open_regular(path, role)?;
        Mapped::from_file(file, role, path)
    }

    /// Maps an open file (`path` names it in errors).
    pub fn from_file(file: File, role: Role, path: &Path) -> Result<Mapped> {
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
        match read_full_at(&self.file, pos, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(self.changed()),
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
}

fn changed_under_us() -> std::io::Error {
    std::io::Error::other("it changed while spindiff was reading it; no patch was written")
}

fn page_size() -> usize {
    4096
}

/// Bytes a diff reads, OLD or NEW: a mapped file ([`Mapped`]) or a buffer in memory
/// ([`Buffer`]). Sequential passes walk [`Source::bytes`] and release what they are done with;
/// everything that reads at random uses positioned reads, so that pages of a mapping touched at
/// random never stay resident (see docs/ARCHITECTURE.md, "How a diff runs").
pub trait Source: Sync {
    /// All the bytes.
    fn bytes(&self) -> &[u8];
    /// Reads `buf.len()` bytes at `pos` (not through [`Source::bytes`]).
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> Result<()>;
    /// Reads what there is at `pos`, up to `buf.len()`; a failure reads as the end.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize;
    /// Drops `start..end` from memory; reading it again is correct, only slower.
    fn release(&self, _start: usize, _end: usize) {}
    /// Fails if the source changed since it was opened.
    fn check_unchanged(&self) -> Result<()> {
        Ok(())
    }
    /// The error for a read that failed or came up short.
    fn read_failed(&self) -> Error;

    /// Length in bytes.
    fn len(&self) -> u64 {
        self.bytes().len() as u64
    }
    /// Drops all of it from memory.
    fn release_all(&self) {
        self.release(0, self.bytes().len());
    }
}

/// A borrowed source: one OLD shared by the diffs of many NEW files ([`crate::diff::many`]).
impl<S: Source + ?Sized> Source for &S {
    fn bytes(&self) -> &[u8] {
        (**self).bytes()
    }
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_exact_at(pos, buf)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize {
        (**self).read_at(pos, buf)
    }
    fn release(&self, start: usize, end: usize) {
        (**self).release(start, end)
    }
    fn check_unchanged(&self) -> Result<()> {
        (**self).check_unchanged()
    }
    fn read_failed(&self) -> Error {
        (**self).read_failed()
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn release_all(&self) {
        (**self).release_all()
    }
}

impl Source for Mapped {
    fn bytes(&self) -> &[u8] {
        Mapped::bytes(self)
    }
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        Mapped::read_exact_at(self, pos, buf)
    }
    /// Positioned reads through the file, not the mapping. An I/O error here (the file shrank
    /// or the disk failed under us) reads as the end of OLD: fewer matches, never wrong ones
    /// (and a file that shrank fails [`Mapped::check_unchanged`] at the end).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize {
        read_full_at(&self.file, pos, buf).unwrap_or(0)
    }
    fn release(&self, start: usize, end: usize) {
        Mapped::release(self, start, end)
    }
    fn check_unchanged(&self) -> Result<()> {
        Mapped::check_unchanged(self)
    }
    fn read_failed(&self) -> Error {
        self.changed()
    }
}

/// Bytes in memory as a [`Source`], named by its role in errors.
pub struct Buffer<'a> {
    pub bytes: &'a [u8],
    pub role: Role,
}

impl Source for Buffer<'_> {
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        if self.read_at(pos, buf) == buf.len() {
            Ok(())
        } else {
            Err(self.read_failed())
        }
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> usize {
        let start = (pos.min(self.bytes.len() as u64)) as usize;
        let n = buf.len().min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        n
    }
    fn read_failed(&self) -> Error {
        Error::io(
            self.role,
            Path::new("(memory)"),
            "read",
            io::Error::other("a read past the end of the buffer"),
        )
    }
}

/// Step in which inputs are hashed and scanned, so that at most this much of a mapping is
/// resident at once on behalf of a sequential pass.
pub const SCAN_BLOCK: usize = 16 << 20;

/// BLAKE3 of a whole source, hashed block by block with the pages released behind it.
pub fn hash_source(m: &(impl Source + ?Sized)) -> [u8; 32] {
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

/// OLD, opened for positioned reads.
pub struct OldFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl OldFile {
    /// Opens OLD (a regular file) for positioned reads.
    pub fn open(path: &Path) -> Result<OldFile> {
        let file = open_regular(path, Role::Old)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(Role::Old, path, "stat", e))?;
        Ok(OldFile {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    /// OLD's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The open file (for its identity).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads exactly `buf.len()` bytes of OLD at `at`.
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        match read_full_at(&self.file, at, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(Error::io(
                Role::Old,
                &self.path,
                "read",
                io::Error::other("it is shorter than when it was opened"),
            )),
            Err(e) => Err(Error::io(Role::Old, &self.path, "read", e)),
        }
    }
}

/// The patch as read: standard input or a file (read at random when it is a regular file).
pub enum PatchInput {
    Stdin,
    File(File),
}

impl PatchInput {
    /// Opens `path` (`-`: standard input) and records it in `reads`. A FIFO is read as a
    /// stream: like any reader of a named pipe, this waits for a writer.
    pub fn open(path: &Path, reads: &mut Reads) -> Result<PatchInput> {
        if super::is_standard_stream(path) {
            reads.add_stdin(Role::Patch)?;
            return Ok(PatchInput::Stdin);
        }
        let file = File::open(path).map_err(|e| Error::io(Role::Patch, path, "open", e))?;
        reads.add(Role::Patch, path, &file)?;
        Ok(PatchInput::File(file))
    }

    /// The file, if the patch is one that can be read at random.
    pub fn seekable(&self) -> Option<&File> {
        match self {
            PatchInput::File(f) if f.metadata().is_ok_and(|m| m.is_file()) => Some(f),
            _ => None,
        }
    }

    /// The patch as a stream from its start, buffered by `buffer` bytes.
    pub fn into_reader(self, buffer: usize) -> io::BufReader<Box<dyn io::Read + Send>> {
        let input: Box<dyn io::Read + Send> = match self {
            PatchInput::Stdin => Box::new(io::stdin()),
            PatchInput::File(f) => Box::new(f),
        };
        io::BufReader::with_capacity(buffer, input)
    }
}

/// OLD as apply reads it: a length and positioned reads (a file, a buffer in memory).
pub trait OldReader: Sync {
    /// OLD's length in bytes.
    fn len(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `at`.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()>;
    /// Whether OLD is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OldReader for OldFile {
    fn len(&self) -> u64 {
        OldFile::len(self)
    }
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        self.read_at(buf, at)
    }
}

impl OldReader for Buffer<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        Source::read_exact_at(self, at, buf)
    }
}
