//! Apply: container -> decode -> apply -> verify -> output. OLD is read at random with positioned
//! reads (no mapping, so its pages never count toward apply's memory), the patch is read front
//! to back (a pipe works) or, when it is a seekable file, by its index with chunks decoded in
//! parallel. Every chunk is verified before its bytes reach the output ([`VerifiedChunk`] is the
//! only thing the output accepts) and the whole output is verified before the temporary file is
//! renamed into place.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use crate::container::{
    self, CHUNK_HEADER_LEN, ChunkHeader, CompressedChunk, ContainerReader, FOOTER_LEN, Footer,
    HEADER_LEN, Header,
};
use crate::decode::{AddRuns, DecodedChunk, Ops, decode_chunk};
use crate::error::{Error, Result, Role};
use crate::files::PendingFile;
use crate::progress::Progress;

/// Size of apply's read and write buffers: large enough for sequential throughput, small next
/// to the chunks in flight, which are what apply's memory is made of.
const IO_BUFFER: usize = 256 << 10;

/// OLD, opened for positioned reads.
pub struct OldFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl OldFile {
    pub fn open(path: &Path) -> Result<OldFile> {
        let file = File::open(path).map_err(|e| Error::io(Role::Old, path, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(Role::Old, path, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::io(
                Role::Old,
                path,
                "read",
                io::Error::other("not a regular file"),
            ));
        }
        Ok(OldFile {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks size and BLAKE3 against the patch header before anything is written.
    pub fn check_against(&self, header: &Header) -> Result<()> {
        if self.len != header.old_size {
            return Err(Error::WrongOld {
                path: self.path.clone(),
                what: format!(
                    "it has {} bytes, the patch expects {}",
                    self.len, header.old_size
                ),
            });
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; IO_BUFFER];
        let mut at = 0u64;
        while at < self.len {
            let n = ((self.len - at) as usize).min(buf.len());
            self.read_at(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        if *hasher.finalize().as_bytes() != header.old_hash {
            return Err(Error::WrongOld {
                path: self.path.clone(),
                what: "its BLAKE3 hash differs from the one in the patch".into(),
            });
        }
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| Error::io(Role::Old, &self.path, "read", e))
    }
}

/// Output bytes of one chunk whose XXH3-128 matched the patch. Only [`apply_chunk`] makes one.
pub struct VerifiedChunk {
    index: u64,
    bytes: Vec<u8>,
}

impl VerifiedChunk {
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Rebuilds one chunk from its decoded streams and OLD, then verifies it.
pub fn apply_chunk(chunk: DecodedChunk, old: &OldFile, patch_path: &Path) -> Result<VerifiedChunk> {
    let h = &chunk.header;
    let corrupt = |what: String| {
        Error::corrupt(
            patch_path,
            chunk.patch_offset,
            format!("chunk {}: {what}", h.index),
        )
    };
    let mut out = vec![0u8; h.new_len as usize];
    let (mut o, mut a, mut x) = (0usize, 0u64, 0usize);
    let mut ops = Ops::new(&chunk, old.len());
    let mut add = AddRuns::new(&chunk.add);
    while let Some(op) = ops.next_op().map_err(corrupt)? {
        // Ops guarantees that copy + insert fits what is left of the output.
        if x + op.insert > chunk.insert.len() {
            return Err(corrupt(
                "operations insert more bytes than the insert stream holds".into(),
            ));
        }
        let dst = &mut out[o..o + op.copy];
        old.read_at(dst, op.old_pos)?;
        add.apply(dst, a).map_err(corrupt)?;
        o += op.copy;
        a += op.copy as u64;
        out[o..o + op.insert].copy_from_slice(&chunk.insert[x..x + op.insert]);
        o += op.insert;
        x += op.insert;
    }
    add.finish().map_err(corrupt)?;
    if x != chunk.insert.len() {
        return Err(corrupt("insert stream has bytes no operation uses".into()));
    }
    if xxh3_128(&out) != h.output_hash {
        return Err(Error::OutputMismatch {
            path: patch_path.to_path_buf(),
            what: format!(
                "chunk {} (output bytes {}..{}) has the wrong checksum",
                h.index,
                h.new_offset,
                h.new_offset + u64::from(h.new_len)
            ),
        });
    }
    Ok(VerifiedChunk {
        index: h.index,
        bytes: out,
    })
}

/// Where verified output goes.
pub enum Output {
    /// A temporary file beside the target, renamed into place once everything verifies.
    File(PendingFile),
    /// Standard output: verified chunks are streamed as they come.
    Stdout(io::Stdout),
    /// Nowhere (`verify`).
    Discard,
}

impl Output {
    pub fn create(target: Option<&Path>) -> Result<Output> {
        match target {
            None => Ok(Output::Discard),
            Some(t) if t.as_os_str() == "-" => Ok(Output::Stdout(io::stdout())),
            Some(t) => Ok(Output::File(PendingFile::create(
                t,
                Role::Output,
                IO_BUFFER,
            )?)),
        }
    }

    fn write(&mut self, chunk: &VerifiedChunk, target: &Path) -> Result<()> {
        let written = match self {
            Output::File(f) => f.write_all(chunk.bytes()),
            Output::Stdout(s) => s.write_all(chunk.bytes()),
            Output::Discard => Ok(()),
        };
        written.map_err(|e| Error::io(Role::Output, target, "write", e))
    }

    /// Renames the finished file into place (or flushes standard output).
    fn commit(self) -> Result<()> {
        match self {
            Output::File(f) => f.commit(),
            Output::Stdout(mut s) => s
                .flush()
                .map_err(|e| Error::io(Role::Output, Path::new("-"), "write", e)),
            Output::Discard => Ok(()),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub header: Header,
    pub chunks: u64,
    pub parallel: bool,
}

/// Collects verified chunks in order, hashes them, writes them.
struct Sink {
    output: Output,
    target: PathBuf,
    hasher: blake3::Hasher,
    next: u64,
}

impl Sink {
    fn new(output: Option<&Path>) -> Result<Sink> {
        Ok(Sink {
            output: Output::create(output)?,
            target: output.map(Path::to_path_buf).unwrap_or_default(),
            hasher: blake3::Hasher::new(),
            next: 0,
        })
    }

    fn accept(&mut self, chunk: VerifiedChunk, progress: &dyn Progress) -> Result<()> {
        debug_assert_eq!(chunk.index(), self.next);
        self.hasher.update(chunk.bytes());
        self.output.write(&chunk, &self.target)?;
        progress.advance(chunk.bytes().len() as u64);
        self.next += 1;
        Ok(())
    }
}

/// Applies `patch_path` (`-` = standard input) to `old_path`, writing `output` (`None` = only
/// verify, `-` = standard output). `threads` bounds parallel chunk decoding.
pub fn apply_patch(
    old_path: &Path,
    patch_path: &Path,
    output: Option<&Path>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let old = OldFile::open(old_path)?;
    if let Some(out) = output.filter(|o| o.as_os_str() != "-") {
        for (role, other) in [("OLD", old_path), ("PATCH", patch_path)] {
            if same_file(out, other) {
                return Err(Error::InvalidOption(format!(
                    "output '{}' is the same file as {role}; write NEW elsewhere (OLD is never modified)",
                    out.display()
                )));
            }
        }
    }
    if patch_path.as_os_str() == "-" {
        let stdin = io::stdin().lock();
        return apply_stream(
            &old,
            BufReader::with_capacity(IO_BUFFER, stdin),
            patch_path,
            output,
            progress,
        );
    }
    let mut file =
        File::open(patch_path).map_err(|e| Error::io(Role::Patch, patch_path, "open", e))?;
    let seekable = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if seekable && threads > 1 {
        // A patch whose footer or index is damaged is read front to back instead, which
        // pinpoints what is wrong with it (truncation, a bad chunk) or applies it if only the
        // index is damaged and the stream is complete... which the stream reader then rejects.
        if let Ok(index) = read_index(&mut file, patch_path) {
            return apply_indexed(&old, &file, index, patch_path, output, threads, progress);
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(Role::Patch, patch_path, "read", e))?;
    }
    apply_stream(
        &old,
        BufReader::with_capacity(IO_BUFFER, file),
        patch_path,
        output,
        progress,
    )
}

fn apply_stream<R: Read>(
    old: &OldFile,
    input: R,
    patch_path: &Path,
    output: Option<&Path>,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let mut reader = ContainerReader::new(input, patch_path)?;
    let header = reader.header().clone();
    old.check_against(&header)?;
    let mut sink = Sink::new(output)?;
    progress.start("apply", header.new_size);
    while let Some(chunk) = reader.next_chunk()? {
        let verified = apply_chunk(decode_chunk(chunk, patch_path)?, old, patch_path)?;
        sink.accept(verified, progress)?;
    }
    finish(sink, &header, patch_path, false, progress)
}

/// Header, chunk index and where the index starts, read from a seekable patch.
struct PatchIndex {
    header: Header,
    entries: Vec<container::IndexEntry>,
    index_offset: u64,
}

fn read_index(file: &mut File, patch_path: &Path) -> Result<PatchIndex> {
    let io_err = |e| Error::io(Role::Patch, patch_path, "read", e);
    let patch_len = file.seek(SeekFrom::End(0)).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let header = container::read_header(file, patch_path)?;
    // footer and index, checked before anything is allocated from them
    let expected_len = container::index_len(header.chunk_count);
    if patch_len < (HEADER_LEN + FOOTER_LEN) as u64 + expected_len {
        return Err(Error::TruncatedPatch {
            path: patch_path.to_path_buf(),
            offset: patch_len,
        });
    }
    let footer_at = patch_len - FOOTER_LEN as u64;
    let mut fb = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut fb, footer_at).map_err(io_err)?;
    let footer = Footer::parse(&fb, patch_path, footer_at)?;
    if footer.index_len != expected_len
        || footer.index_offset.checked_add(expected_len) != Some(footer_at)
    {
        return Err(Error::corrupt(
            patch_path,
            footer_at,
            "footer does not point at a valid index",
        ));
    }
    let mut ib = vec![0u8; expected_len as usize]; // bounded by the patch's length, checked above
    file.read_exact_at(&mut ib, footer.index_offset)
        .map_err(io_err)?;
    let entries = container::parse_index(&ib, &header, patch_path, footer.index_offset)?;
    Ok(PatchIndex {
        header,
        entries,
        index_offset: footer.index_offset,
    })
}

fn apply_indexed(
    old: &OldFile,
    file: &File,
    patch: PatchIndex,
    patch_path: &Path,
    output: Option<&Path>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let PatchIndex {
        header,
        entries: index,
        index_offset,
    } = patch;
    old.check_against(&header)?;
    let mut sink = Sink::new(output)?;
    progress.start("apply", header.new_size);
    let ends: Vec<u64> = index
        .iter()
        .skip(1)
        .map(|e| e.patch_offset)
        .chain([index_offset])
        .collect();
    let ids: Vec<u64> = (0..header.chunk_count).collect();
    for batch in ids.chunks(threads) {
        let results: Vec<Result<VerifiedChunk>> = batch
            .par_iter()
            .map(|&i| {
                let at = index[i as usize].patch_offset;
                let end = ends[i as usize];
                let mut hb = [0u8; CHUNK_HEADER_LEN];
                read_at_exact(file, &mut hb, at, patch_path)?;
                let ch = ChunkHeader::parse(&hb, &header, i, patch_path, at)?;
                if at + CHUNK_HEADER_LEN as u64 + ch.payload_len() != end {
                    return Err(Error::corrupt(
                        patch_path,
                        at,
                        format!("chunk {i}: length disagrees with the index"),
                    ));
                }
                let mut payload = vec![0u8; ch.payload_len() as usize]; // bounded by parse
                read_at_exact(file, &mut payload, at + CHUNK_HEADER_LEN as u64, patch_path)?;
                let chunk = CompressedChunk {
                    header: ch,
                    payload,
                    patch_offset: at,
                };
                apply_chunk(decode_chunk(chunk, patch_path)?, old, patch_path)
            })
            .collect();
        for r in results {
            sink.accept(r?, progress)?;
        }
    }
    finish(sink, &header, patch_path, true, progress)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn read_at_exact(file: &File, buf: &mut [u8], at: u64, path: &Path) -> Result<()> {
    file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::TruncatedPatch {
                path: path.to_path_buf(),
                offset: at,
            }
        } else {
            Error::io(Role::Patch, path, "read", e)
        }
    })
}

fn finish(
    sink: Sink,
    header: &Header,
    patch_path: &Path,
    parallel: bool,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    progress.finish();
    if sink.next != header.chunk_count || *sink.hasher.finalize().as_bytes() != header.new_hash {
        return Err(Error::OutputMismatch {
            path: patch_path.to_path_buf(),
            what: "the whole output's BLAKE3 differs from the patch header".into(),
        });
    }
    sink.output.commit()?;
    Ok(ApplyReport {
        header: header.clone(),
        chunks: header.chunk_count,
        parallel,
    })
}
