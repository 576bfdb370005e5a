//! Outputs: where an output goes ([`Destination`], decided once from what its name refers to),
//! and the file written in place of a target ([`PendingFile`]): beside it, fsynced, and renamed
//! over it only when complete (and, for apply, verified). diff writes an unnamed file
//! (`O_TMPFILE`) that a kill leaves nothing of; apply writes the fixed name
//! `.NAME.spindiff-partial`, locked while written, which `apply --resume` continues after a
//! kill. The lock is held until the file has been renamed, and a file is only ever removed while
//! its name still refers to the file this process wrote. Any name the file system accepts works:
//! names are bytes, and derived names stay within [`NAME_MAX`] (see [`sibling`]).

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::input::{clear_nonblocking, kind_of};
use super::{FileId, Reads};
use crate::cleanup::FileGuard;
use crate::error::{Error, Result, Role, quoted};

/// Longest file name (one path component) Linux file systems accept, in bytes.
pub const NAME_MAX: usize = 255;

/// Where an output goes, decided once from what the name refers to.
pub enum Destination {
    /// Standard output (`-`).
    Stdout,
    /// An existing device or FIFO: written in place as a stream, never replaced.
    Stream(File),
    /// A regular file, or a name not taken yet: written beside it and renamed over it when
    /// complete. A symbolic link has been resolved to the file it points to.
    Replace(PathBuf),
}

impl Destination {
    /// Decides where `path` (`-`: standard output) sends the output of `role`, refusing any
    /// destination that is a file this run reads.
    pub fn decide(path: &Path, role: Role, reads: &Reads) -> Result<Destination> {
        if super::is_standard_stream(path) {
            let id = FileId::of_fd(io::stdout().as_fd())
                .map_err(|e| Error::io(role, path, "stat standard output", e))?;
            reads.refuse_writing(&id, "standard output")?;
            return Ok(Destination::Stdout);
        }
        let what = format!("{role} {}", quoted(path));
        let link = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Destination::Replace(path.to_path_buf()));
            }
            Err(e) => return Err(Error::io(role, path, "stat", e)),
        };
        let is_link = link.file_type().is_symlink();
        let meta = if is_link {
            std::fs::metadata(path)
                .map_err(|e| Error::io(role, path, "follow the symbolic link", e))?
        } else {
            link
        };
        reads.refuse_writing(&FileId::of(&meta), &what)?;
        let t = meta.file_type();
        if t.is_file() {
            let target = if is_link {
                std::fs::canonicalize(path)
                    .map_err(|e| Error::io(role, path, "follow the symbolic link", e))?
            } else {
                path.to_path_buf()
            };
            Ok(Destination::Replace(target))
        } else if t.is_char_device() || t.is_block_device() || t.is_fifo() {
            // No O_CREAT, no O_TRUNC: the device or FIFO is written, never replaced. A FIFO
            // waits for its reader here, as any writer into a named pipe does.
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(role, path, "open", e))?;
            // The name could have changed between the check and the open.
            let id = FileId::of(
                &file
                    .metadata()
                    .map_err(|e| Error::io(role, path, "stat", e))?,
            );
            reads.refuse_writing(&id, &what)?;
            Ok(Destination::Stream(file))
        } else {
            Err(Error::io(
                role,
                path,
                "write",
                io::Error::other(format!("it is {}", kind_of(&meta))),
            ))
        }
    }
}

fn directory_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME<tag>` in `target`'s directory: the name of a file written in place of `target`. NAME
/// is taken as bytes (two names that differ only in bytes that are not UTF-8 get two different
/// siblings). When the result would pass [`NAME_MAX`], NAME is cut and a hash of the whole of it
/// added, so any name the file system accepts has a sibling it accepts too, and always the same
/// one.
pub fn sibling(target: &Path, tag: &str) -> PathBuf {
    let name = target.file_name().unwrap_or_default().as_bytes();
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    if 1 + name.len() + tag.len() <= NAME_MAX {
        out.extend_from_slice(name);
    } else {
        let hash = format!("~{:016x}", xxhash_rust::xxh3::xxh3_64(name));
        let keep = NAME_MAX - 1 - tag.len() - hash.len();
        out.extend_from_slice(&name[..keep]);
        out.extend_from_slice(hash.as_bytes());
    }
    out.extend_from_slice(tag.as_bytes());
    directory_of(target).join(OsString::from_vec(out))
}

/// Where `apply` writes `target` until it is complete and verified: `.NAME.spindiff-partial` in
/// the same directory (the same file system, so the final rename is atomic).
pub fn partial_path(target: &Path) -> PathBuf {
    sibling(target, ".spindiff-partial")
}

/// A fresh name for a temporary sibling of `target`: `.NAME.XXXXXXXX.spindiff-tmp`.
fn temporary_name(target: &Path, attempt: u32) -> PathBuf {
    let seed = format!(
        "{:?}{}{}{attempt}",
        std::time::SystemTime::now(),
        std::process::id(),
        target.display()
    );
    let tag = format!(
        ".{:08x}.spindiff-tmp",
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) as u32
    );
    sibling(target, &tag)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
}

/// Gives the unnamed (`O_TMPFILE`) `file` the name `name`. Fails with `AlreadyExists` when the
/// name is taken.
fn link_unnamed(file: &File, name: &Path) -> io::Result<()> {
    let to = c_path(name)?;
    // SAFETY: valid descriptors and NUL-terminated paths. AT_EMPTY_PATH links the descriptor
    // itself; it needs CAP_DAC_READ_SEARCH, so without it the /proc path does the same.
    let done = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if done == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::AlreadyExists {
        return Err(err);
    }
    let proc = c_path(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    // SAFETY: as above.
    let done = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens (creating it if needed) a partial file's name. Not through a symbolic link: in a
/// shared directory someone else could point the name at a file of ours (root's) that
/// truncating would destroy. Nor blocking on a FIFO planted there.
fn open_partial_name(partial: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(partial)
}

fn busy_error(target: &Path, role: Role, partial: &Path) -> Error {
    Error::io(
        role,
        target,
        "write",
        io::Error::other(format!(
            "another spindiff is writing it (its partial file {} is locked)",
            quoted(partial)
        )),
    )
}

/// A file being written in place of `target`.
pub struct PendingFile {
    out: BufWriter<File>,
    id: FileId,
    /// The file's name while it is written; `None` while it has none (`O_TMPFILE`).
    name: Option<PathBuf>,
    /// Whether dropping the file removes it (while `name` still refers to it).
    remove_on_drop: bool,
    /// Removes the file if the process dies of a signal or of memory exhaustion.
    guard: Option<FileGuard>,
    target: PathBuf,
    role: Role,
}

impl PendingFile {
    /// Creates the file `diff` writes its patch to: unnamed (`O_TMPFILE`) in `target`'s
    /// directory where the file system allows, so that nothing is left if the process is
    /// killed; else `.NAME.XXXXXXXX.spindiff-tmp`, removed on an error or a terminating signal.
    /// Either way it gets the permissions a new file gets (0666 less the umask).
    pub fn create(target: &Path, role: Role, buffer: usize) -> Result<PendingFile> {
        let dir = directory_of(target);
        let failed = |e| Error::io(role, target, "create a temporary file in its directory", e);
        let (file, name) = match OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir)
        {
            Ok(file) => (file, None),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let mut attempt = 0;
                loop {
                    let name = temporary_name(target, attempt);
                    match OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(0o666)
                        .open(&name)
                    {
                        Ok(file) => break (file, Some(name)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                            attempt += 1
                        }
                        Err(e) => return Err(failed(e)),
                    }
                }
            }
            Err(e) => return Err(failed(e)),
        };
        let id = FileId::of(&file.metadata().map_err(failed)?);
        let guard = name.as_deref().map(|n| FileGuard::new(n, true));
        Ok(PendingFile {
            out: BufWriter::with_capacity(buffer, file),
            id,
            remove_on_drop: true,
            name,
            guard,
            target: target.to_path_buf(),
            role,
        })
    }

    /// Opens [`partial_path`]`(target)`, locked against a second writer. With `keep`, what an
    /// interrupted run left in it stays (its length is returned) for the caller to check; without,
    /// the file starts empty. Refused, untouched, when the name is a link, another user's file,
    /// or a file this run reads (`reads`).
    pub fn open_partial(
        target: &Path,
        role: Role,
        buffer: usize,
        keep: bool,
        reads: &Reads,
    ) -> Result<(PendingFile, u64)> {
        let partial = partial_path(target);
        // A writer that finishes renames its partial file away while still holding its lock;
        // one that opened the name just before may then get the lock on what is now the
        // finished output. Whoever locks checks that the name still refers to the locked file,
        // and opens it again if not.
        for _ in 0..8 {
            let file = open_partial_name(&partial)
                .map_err(|e| Error::io(role, target, "create its partial file", e))?;
            if let Some(opened) =
                PendingFile::lock_partial(file, &partial, target, role, buffer, keep, reads)?
            {
                return Ok(opened);
            }
        }
        Err(busy_error(target, role, &partial))
    }

    /// Locks `file`, just opened as `partial`, and checks it. `None` when the name no longer
    /// refers to it (its writer finished and renamed it away meanwhile): the caller opens the
    /// name again; what was opened is not touched.
    fn lock_partial(
        file: File,
        partial: &Path,
        target: &Path,
        role: Role,
        buffer: usize,
        keep: bool,
        reads: &Reads,
    ) -> Result<Option<(PendingFile, u64)>> {
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(busy_error(target, role, partial)),
            Err(TryLockError::Error(e)) => return Err(Error::io(role, target, "lock", e)),
        }
        let meta = file
            .metadata()
            .map_err(|e| Error::io(role, target, "stat its partial file", e))?;
        let id = FileId::of(&meta);
        match std::fs::symlink_metadata(partial) {
            Ok(now) if FileId::of(&now) == id => {}
            _ => return Ok(None),
        }
        // Nor a hard link to another file, nor someone else's file, nor an input.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.nlink() != 1 || meta.uid() != euid {
            return Err(Error::io(
                role,
                target,
                "write",
                io::Error::other(format!(
                    "{} is not a partial file spindiff made (a link, another user's file, or not a regular file); remove it",
                    quoted(partial)
                )),
            ));
        }
        reads.refuse_writing(&id, &format!("the partial file {}", quoted(partial)))?;
        clear_nonblocking(&file).map_err(|e| Error::io(role, target, "open", e))?;
        // Only now, holding the lock on a file that is none of the inputs, may the file be
        // emptied or removed on failure.
        let present = if keep {
            meta.len()
        } else {
            file.set_len(0)
                .map_err(|e| Error::io(role, target, "write", e))?;
            0
        };
        let pending = PendingFile {
            out: BufWriter::with_capacity(buffer, file),
            id,
            remove_on_drop: true,
            guard: Some(FileGuard::new(partial, false)),
            name: Some(partial.to_path_buf()),
            target: target.to_path_buf(),
            role,
        };
        Ok(Some((pending, present)))
    }

    /// Keeps the file if this writer fails (it holds verified output worth resuming from).
    pub fn keep_on_failure(&mut self) {
        self.remove_on_drop = false;
        self.guard = None;
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

    /// Flushes, fsyncs and renames the file into place. The file stays open, and so locked,
    /// until it has its final name. If the rename fails, a partial file opened with
    /// [`Self::keep_on_failure`] stays where it is (the message says so).
    pub fn commit(mut self) -> Result<()> {
        let (role, target) = (self.role, self.target.clone());
        self.out
            .flush()
            .map_err(|e| Error::io(role, &target, "write", e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(role, &target, "sync", e))?;
        let name = match self.name.clone() {
            Some(name) => name,
            None => match link_unnamed(self.out.get_ref(), &target) {
                // The target did not exist: the link put the file in place, atomically.
                Ok(()) => return self.finished(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let name = self.link_temporary()?;
                    self.name = Some(name.clone());
                    name
                }
                Err(e) => {
                    return Err(Error::io(
                        role,
                        &target,
                        "link the finished file into place",
                        e,
                    ));
                }
            },
        };
        // A kill from here on leaves the (complete) partial file for --resume, not a removal
        // racing the rename.
        self.guard = None;
        if let Err(e) = std::fs::rename(&name, &target) {
            let e = if self.remove_on_drop {
                e
            } else {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; the verified output is kept in {} (apply --resume finishes it)",
                        quoted(&name)
                    ),
                )
            };
            return Err(Error::io(
                role,
                &target,
                "rename the finished file into place",
                e,
            ));
        }
        self.finished()
    }

    /// Links an unnamed file under a fresh temporary name beside the target (which exists, so
    /// it cannot be linked there directly).
    fn link_temporary(&mut self) -> Result<PathBuf> {
        for attempt in 0..16 {
            let name = temporary_name(&self.target, attempt);
            self.guard = Some(FileGuard::new(&name, true));
            match link_unnamed(self.out.get_ref(), &name) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    self.guard = None;
                    return Err(Error::io(
                        self.role,
                        &self.target,
                        "link the finished file beside it",
                        e,
                    ));
                }
            }
        }
        self.guard = None;
        Err(Error::io(
            self.role,
            &self.target,
            "link the finished file beside it",
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// The file has its final name: nothing to remove; make the rename durable.
    fn finished(mut self) -> Result<()> {
        self.remove_on_drop = false;
        self.guard = None;
        if let Ok(dir) = File::open(directory_of(&self.target)) {
            let _ = dir.sync_all(); // best effort: some file systems refuse fsync on directories
        }
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        if let Some(name) = &self.name {
            // Only while the name still refers to the file written here.
            if let Ok(meta) = std::fs::symlink_metadata(name)
                && FileId::of(&meta) == self.id
            {
                let _ = std::fs::remove_file(name);
            }
        }
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

/// An output being written: a file renamed into place when complete, or a stream (standard
/// output, a device, a FIFO) written as it comes.
pub enum Output {
    File(PendingFile),
    Stream {
        out: BufWriter<Box<dyn Write + Send>>,
        path: PathBuf,
        role: Role,
    },
}

impl Output {
    /// Starts writing `destination` (decided from `path`) through a buffer of `buffer` bytes:
    /// a file is created beside its target ([`PendingFile::create`]).
    pub fn open(
        destination: Destination,
        path: &Path,
        role: Role,
        buffer: usize,
    ) -> Result<Output> {
        let stream = |w: Box<dyn Write + Send>| Output::Stream {
            out: BufWriter::with_capacity(buffer, w),
            path: path.to_path_buf(),
            role,
        };
        Ok(match destination {
            Destination::Replace(target) => {
                Output::File(PendingFile::create(&target, role, buffer)?)
            }
            Destination::Stdout => stream(Box::new(io::stdout())),
            Destination::Stream(file) => stream(Box::new(file)),
        })
    }

    /// Puts a file in place, or flushes a stream.
    pub fn commit(self) -> Result<()> {
        match self {
            Output::File(f) => f.commit(),
            Output::Stream {
                mut out,
                path,
                role,
            } => out.flush().map_err(|e| Error::io(role, &path, "write", e)),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Stream { out, .. } => out.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::File(f) => f.write_all(buf),
            Output::Stream { out, .. } => out.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Stream { out, .. } => out.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 9, item 2: the lock was released before the rename, so a second writer that had
    // opened the name could lock and truncate the finished output. The window is forced here:
    // the second writer opens the name before the first commits, and locks after.
    #[test]
    fn a_writer_that_opened_the_name_before_the_rename_does_not_touch_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new");
        let partial = partial_path(&target);
        let reads = Reads::new();
        let (mut first, _) =
            PendingFile::open_partial(&target, Role::Output, 64, false, &reads).unwrap();
        first.write_all(b"the verified output").unwrap();
        let early = open_partial_name(&partial).unwrap();
        assert!(
            matches!(early.try_lock(), Err(TryLockError::WouldBlock)),
            "the first writer holds the lock"
        );
        first.commit().unwrap();
        let second =
            PendingFile::lock_partial(early, &partial, &target, Role::Output, 64, false, &reads)
                .unwrap();
        assert!(
            second.is_none(),
            "locked the renamed output as its partial file"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"the verified output");
        // opening again gets a fresh partial file, and the output stays
        let (second, _) =
            PendingFile::open_partial(&target, Role::Output, 64, false, &reads).unwrap();
        drop(second);
        assert_eq!(std::fs::read(&target).unwrap(), b"the verified output");
        assert!(!partial.exists());
    }

    // Issue 9, item 2 (variant): a rename that fails lost the verified output.
    #[test]
    fn a_failed_rename_keeps_a_partial_file_marked_to_keep() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"").unwrap(); // a non-empty directory: rename fails
        let reads = Reads::new();
        for keep in [true, false] {
            let (mut f, _) =
                PendingFile::open_partial(&target, Role::Output, 64, false, &reads).unwrap();
            if keep {
                f.keep_on_failure();
            }
            f.write_all(b"verified").unwrap();
            let err = f.commit().unwrap_err().to_string();
            assert!(err.contains("rename the finished file into place"), "{err}");
            let partial = partial_path(&target);
            if keep {
                assert!(err.contains("the verified output is kept in"), "{err}");
                assert_eq!(std::fs::read(&partial).unwrap(), b"verified");
                std::fs::remove_file(&partial).unwrap();
            } else {
                assert!(!partial.exists());
            }
        }
    }

    // Issue 9, item 16: a name near the 255-byte limit could not have a sibling.
    #[test]
    fn siblings_of_long_names_fit_and_stay_distinct() {
        let a = Path::new("d").join("a".repeat(255));
        let b = Path::new("d").join(format!("{}b", "a".repeat(254)));
        let (sa, sb) = (partial_path(&a), partial_path(&b));
        for s in [&sa, &sb] {
            assert!(s.file_name().unwrap().len() <= NAME_MAX);
            assert!(s.to_str().unwrap().ends_with(".spindiff-partial"));
        }
        assert_ne!(sa, sb);
        assert_eq!(
            sa,
            partial_path(&a),
            "the same name every time (for --resume)"
        );
    }
}
