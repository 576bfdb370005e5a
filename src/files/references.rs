//! References (issue 23; docs/ARCHITECTURE.md, "References"): files beside OLD whose payloads
//! ([`super::package`]: a package's `data.tar` or cpio archive, decompressed) a patch's copies
//! read. Both sides lay them out the same way, the *source space*: the base (OLD, or OLD's
//! expanded stream) and then each payload at the offset the patch records.
//!
//! - The diff appends every payload in the `--ref-dir` directories to its space file
//!   ([`append_payloads`]), and the patch names those its chunks' plans reach.
//! - Apply finds each named file by its SHA-256 ([`find`]: the name is a hint), all of them
//!   before anything is written, expands their payloads into one unnamed temporary file,
//!   checked against the BLAKE3 the patch gives ([`ExpandedReferences`]), and reads the space
//!   through [`WithReferences`], which refuses a read between the payloads it names.
//!
//! Reference files are untrusted: read with the package readers' bounds (decoder memory, a
//! payload of at most what the patch says), and mapped pages are released behind the reads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::input::{Mapped, OldReader};
use super::package::{self, HashingWriter};
use crate::error::{Error, Result, Role};
use crate::format::{ReferenceEntry, ReferencesSection, valid_name};

/// Most regular files read under the `--ref-dir` directories (a whole distribution's package
/// pool is tens of thousands); past it the directories are refused.
pub const MAX_REFERENCE_FILES: usize = 1 << 20;
/// The most a reference's payload may expand to on the diff side (a decompression bomb ends
/// there): far more than any package's payload.
pub const MAX_PAYLOAD: u64 = 16 << 30;
/// The most a reference's payload may expand to per byte of its file on the diff side: a
/// package's payload compresses a few times to a few tens of times (locales' data.tar.xz 5x,
/// a text dictionary's 10x); 1024 is deflate's own limit, so only a crafted file passes it.
pub const MAX_EXPANSION: u64 = 1024;

/// The payload bound a diff allows a reference file of `size` bytes: [`MAX_EXPANSION`] times its
/// size and 1 MiB, at most [`MAX_PAYLOAD`].
pub fn payload_bound(size: u64) -> u64 {
    size.saturating_mul(MAX_EXPANSION)
        .saturating_add(1 << 20)
        .min(MAX_PAYLOAD)
}

/// Bytes free for an unprivileged writer on the file system holding `dir`, if it can be told.
fn available_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` points to
    // writable memory of the struct's size, which statvfs fills on success (checked).
    let done = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if done != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    // the fields are u64 on 64-bit Linux, narrower on some other targets
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The regular files under `dirs`, recursively (symbolic links to regular files followed,
/// to directories not, so no loop), in order of file name, then path: the order a diff lays
/// their payloads out in, whatever order the directories list them in.
pub fn list(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::io(Role::Reference, &dir, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(Role::Reference, &dir, "list", e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| Error::io(Role::Reference, &path, "stat", e))?;
            if kind.is_dir() {
                pending.push(path);
            } else if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                files.push(path);
            }
            if files.len() > MAX_REFERENCE_FILES {
                return Err(Error::InvalidOption(format!(
                    "--ref-dir: more than {MAX_REFERENCE_FILES} files under {}",
                    crate::error::quoted(&dir)
                )));
            }
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then_with(|| a.cmp(b)));
    Ok(files)
}

/// Adds the files `files` (of [`list`]) to `reads`: no output may be one of them.
pub fn add_reads(reads: &mut super::Reads, files: &[PathBuf]) -> Result<()> {
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| Error::io(Role::Reference, f, "stat", e))?;
        reads.add_identity(Role::Reference, f, super::FileId::of(&meta));
    }
    Ok(())
}

/// `path`'s file name as a patch carries it, or an error naming why it cannot be carried.
fn reference_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| valid_name(n))
        .map(str::to_string)
        .ok_or_else(|| Error::BadReference {
            path: path.to_path_buf(),
            what: "its name cannot be carried in a patch (not UTF-8, or a control character)"
                .into(),
        })
}

/// A reader of a mapped file's bytes from `pos` to `end` that feeds what it reads to a SHA-256
/// (the file's: see [`read_reference`]) and releases the pages behind it, so that reading a
/// large package does not keep it resident.
struct Releasing<'a> {
    file: &'a Mapped,
    pos: usize,
    end: usize,
    released: usize,
    sha256: sha2::Sha256,
}

impl Releasing<'_> {
    /// Hashes the file's bytes from `pos` up to `to` without passing them on.
    fn skip_to(&mut self, to: usize) {
        use sha2::Digest;
        self.sha256.update(&self.file.bytes()[self.pos..to]);
        self.pos = to;
    }
}

impl Read for Releasing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = buf.len().min(self.end - self.pos);
        let bytes = &self.file.bytes()[self.pos..self.pos + n];
        buf[..n].copy_from_slice(bytes);
        self.sha256.update(bytes);
        self.pos += n;
        if self.pos - self.released >= 8 << 20 {
            self.file.release(self.released, self.pos);
            self.released = self.pos;
        }
        Ok(n)
    }
}

/// Reads the reference file at `path`: its identity as a patch names it (offset 0), with its
/// payload written to `out` as it is expanded, at most `max` bytes, the decoder within `memory`.
/// The file is read once: its SHA-256 covers what lies before the payload, the payload's
/// stored bytes as the decoder reads them, and what the decoder left after.
pub fn read_reference(
    path: &Path,
    out: &mut dyn Write,
    (max, memory): (u64, u64),
) -> Result<ReferenceEntry> {
    use sha2::Digest;
    let name = reference_name(path)?;
    let file = Mapped::open(path, Role::Reference)?;
    let bad = |what: String| Error::BadReference {
        path: path.to_path_buf(),
        what,
    };
    let payload = package::locate(file.bytes()).map_err(bad)?;
    let mut hasher = blake3::Hasher::new();
    let mut hashing = HashingWriter {
        inner: out,
        hash: &mut hasher,
    };
    let mut stored = Releasing {
        file: &file,
        pos: 0,
        end: (payload.offset + payload.len) as usize,
        released: 0,
        sha256: sha2::Sha256::new(),
    };
    stored.skip_to(payload.offset as usize);
    let payload_len = package::expand_payload(
        payload.compression,
        &mut stored,
        &mut hashing,
        (max, memory),
    )
    .map_err(bad)?;
    stored.end = file.len() as usize;
    stored.skip_to(stored.end);
    let sha256 = stored.sha256.finalize().into();
    file.release(0, file.len() as usize);
    // the payload and the SHA-256 come from the mapping: of a file unchanged meanwhile
    file.check_unchanged()?;
    Ok(ReferenceEntry {
        offset: 0,
        name,
        size: file.len(),
        sha256,
        payload_len,
        payload_hash: hasher.finalize().into(),
    })
}

/// The SHA-256 of `file` (named `path` in errors), read in steps, not mapped.
fn sha256_of(file: &File, path: &Path) -> Result<[u8; 32]> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, at)
            .map_err(|e| Error::io(Role::Reference, path, "read", e))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
}

/// The diff's side: appends the payload of each of `files` (of [`list`], in its order) to
/// `space`, whose first `base_len` bytes are the base, skipping empty payloads and files whose
/// SHA-256 an earlier one had. A file that is a damaged package, or whose payload passes
/// [`payload_bound`], is skipped too (a package cache holds partial downloads): its error is
/// returned beside the references placed (the patch keeps those its chunks reach). `tmp` names
/// the space file in errors; failing to write it fails the whole.
pub fn append_payloads(
    space: &File,
    base_len: u64,
    files: &[PathBuf],
    tmp: &Path,
) -> Result<(ReferencesSection, Vec<Error>)> {
    let mut entries: Vec<ReferenceEntry> = Vec::new();
    let mut skipped = Vec::new();
    let mut end = base_len;
    let written = |e| Error::io(Role::Temporary, tmp, "write the references' payloads", e);
    for path in files {
        let mut out = BufWriter::with_capacity(1 << 20, AppendAt::new(space, end));
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let bound = (payload_bound(size), package::DECODER_MEMORY);
        let read = read_reference(path, &mut out, bound);
        let flushed = out.flush();
        if let Some(e) = out.get_mut().failed.take() {
            return Err(written(e));
        }
        flushed.map_err(written)?;
        let mut entry = match read {
            Ok(entry) => entry,
            Err(e @ Error::BadReference { .. }) => {
                space.set_len(end).map_err(written)?;
                skipped.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if entry.payload_len == 0 || entries.iter().any(|e| e.sha256 == entry.sha256) {
            space.set_len(end).map_err(written)?;
            continue;
        }
        entry.offset = end;
        end += entry.payload_len;
        entries.push(entry);
    }
    Ok((ReferencesSection { base_len, entries }, skipped))
}

/// Positioned writes to a file from `at` on; the first error is kept, so that a full disk is
/// told from a damaged package (whose decoder reports any error of its sink as its own).
struct AppendAt<'a> {
    file: &'a File,
    at: u64,
    failed: Option<io::Error>,
}

impl<'a> AppendAt<'a> {
    fn new(file: &'a File, at: u64) -> AppendAt<'a> {
        AppendAt {
            file,
            at,
            failed: None,
        }
    }
}

impl Write for AppendAt<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.file.write_all_at(buf, self.at) {
            let kind = e.kind();
            self.failed.get_or_insert(e);
            return Err(kind.into());
        }
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Apply's side: among `files` ([`list`] of the directories `dirs`), the file for each
/// reference `section` names, found by SHA-256 (files of the named name and the right size are
/// hashed first, then any of the right size). Every reference is looked for before any error:
/// one error names each one missing (name, size, SHA-256), and says when a file of its name is
/// there with other contents.
pub fn find(
    section: &ReferencesSection,
    (files, dirs): (&[PathBuf], &[PathBuf]),
    patch: &Path,
) -> Result<Vec<PathBuf>> {
    let mut by_size: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    for f in files {
        if let Ok(m) = std::fs::metadata(f) {
            by_size.entry(m.len()).or_default().push(f);
        }
    }
    let mut hashed: HashMap<PathBuf, Option<[u8; 32]>> = HashMap::new();
    let mut hash = |p: &PathBuf| -> Option<[u8; 32]> {
        *hashed
            .entry(p.clone())
            .or_insert_with(|| File::open(p).ok().and_then(|f| sha256_of(&f, p).ok()))
    };
    let mut found = Vec::with_capacity(section.entries.len());
    let mut missing = Vec::new();
    for e in &section.entries {
        let named = |p: &&PathBuf| p.file_name().is_some_and(|n| n == e.name.as_str());
        let mut candidates: Vec<&PathBuf> = by_size.get(&e.size).cloned().unwrap_or_default();
        candidates.sort_by_key(|p| !named(p));
        match candidates.into_iter().find(|p| hash(p) == Some(e.sha256)) {
            Some(p) => found.push(p.clone()),
            None => {
                let other = files.iter().any(|p| named(&p));
                missing.push(format!(
                    "{} ({} bytes, SHA-256 {}){}",
                    e.name,
                    e.size,
                    e.sha256_hex(),
                    if other {
                        ": a file of that name is there with other contents (another version, or damaged)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let looked = if dirs.is_empty() {
        "no --ref-dir was given".to_string()
    } else {
        let shown: Vec<String> = dirs.iter().map(|d| crate::error::quoted(d)).collect();
        format!("looked in {}", shown.join(", "))
    };
    Err(Error::MissingReferences {
        path: patch.to_path_buf(),
        what: format!(
            "needs {} of its {} references, not found ({looked}): {}",
            missing.len(),
            section.entries.len(),
            missing.join("; ")
        ),
    })
}

/// The payloads of a patch's references, expanded into one unnamed temporary file and checked:
/// what apply reads beside OLD.
pub struct ExpandedReferences {
    section: ReferencesSection,
    file: File,
    /// Where each entry's payload starts in the file.
    starts: Vec<u64>,
}

impl ExpandedReferences {
    /// Expands the payload of each of `section`'s references from `files` ([`find`]'s) into
    /// `file`, an unnamed temporary file in `dir` (whose free space is checked first), each
    /// decoder within `memory`, and checks each against the length and BLAKE3 the patch gives.
    pub fn make(
        section: &ReferencesSection,
        files: &[PathBuf],
        ((file, dir), memory): ((File, PathBuf), u64),
    ) -> Result<ExpandedReferences> {
        let named = dir.as_path();
        let need = section.payload_bytes();
        if let Some(free) = available_space(named).filter(|&free| free < need) {
            return Err(Error::io(
                Role::Temporary,
                named,
                "hold the references' payloads",
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("they take {need} bytes, {free} are free"),
                ),
            ));
        }
        let mut starts = Vec::with_capacity(files.len());
        let mut at = 0u64;
        for (e, path) in section.entries.iter().zip(files) {
            let mut out = BufWriter::with_capacity(1 << 20, AppendAt::new(&file, at));
            let read = read_reference(path, &mut out, (e.payload_len, memory));
            let flushed = out.flush();
            let failed = out.get_mut().failed.take().map_or(flushed, Err);
            failed.map_err(|err| Error::io(Role::Temporary, named, "write", err))?;
            let got = read?;
            if got.payload_len != e.payload_len || got.payload_hash != e.payload_hash {
                return Err(Error::BadReference {
                    path: path.clone(),
                    what: format!(
                        "its payload is not the one the patch was made with ({} bytes, expected {})",
                        got.payload_len, e.payload_len
                    ),
                });
            }
            starts.push(at);
            at += e.payload_len;
        }
        Ok(ExpandedReferences {
            section: section.clone(),
            file,
            starts,
        })
    }

    /// The references, as the patch names them.
    pub fn entries(&self) -> &[ReferenceEntry] {
        &self.section.entries
    }

    /// The temporary space the payloads take.
    pub fn temporary_bytes(&self) -> u64 {
        self.section.payload_bytes()
    }

    /// The source space: `base` (OLD, or OLD's expanded stream), then these payloads; a read
    /// between them is the patch's fault (`patch` names it).
    pub fn over<'a>(&'a self, base: &'a dyn OldReader, patch: &'a Path) -> WithReferences<'a> {
        WithReferences {
            base,
            refs: self,
            patch,
        }
    }
}

/// The source space a patch made with references copies from: the base, then the payloads at
/// the offsets the patch records.
pub struct WithReferences<'a> {
    base: &'a dyn OldReader,
    refs: &'a ExpandedReferences,
    patch: &'a Path,
}

impl OldReader for WithReferences<'_> {
    fn len(&self) -> u64 {
        self.refs.section.space_len()
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        let base_len = self.refs.section.base_len;
        let (mut buf, mut at) = (buf, at);
        if at < base_len {
            let n = buf.len().min((base_len - at) as usize);
            let (head, tail) = buf.split_at_mut(n);
            self.base.read_exact_at(head, at)?;
            (buf, at) = (tail, at + n as u64);
        }
        let entries = &self.refs.section.entries;
        while !buf.is_empty() {
            let i = entries.partition_point(|e| e.end() <= at);
            let Some(e) = entries.get(i).filter(|e| e.offset <= at) else {
                return Err(Error::corrupt(
                    self.patch,
                    0,
                    format!("a copy reads byte {at} of the source space, in no reference it names"),
                ));
            };
            let n = buf.len().min((e.end() - at) as usize);
            let (head, tail) = buf.split_at_mut(n);
            self.refs
                .file
                .read_exact_at(head, self.refs.starts[i] + (at - e.offset))
                .map_err(|err| Error::io(Role::Temporary, self.patch, "read back", err))?;
            (buf, at) = (tail, at + n as u64);
        }
        Ok(())
    }
}
