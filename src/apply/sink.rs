//! Where verified chunks go, in order: hashed into the whole output's BLAKE3, written to NEW's
//! partial file, a stream or a caller's writer (or nowhere, for `verify`), and, when resuming,
//! compared with what an interrupted apply already wrote.

use std::io::Write;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::rebuild::VerifiedChunk;
use crate::error::{Error, Result, Role};
use crate::files::{self, Destination, OldReader, PendingFile, Reads};
use crate::format::ChunkHeader;
use crate::progress::Progress;
use crate::transform::rebuild::Reencoder;

/// Size of apply's read and write buffers: large enough for sequential throughput, small next
/// to the chunks in flight, which are what apply's memory is made of.
pub const IO_BUFFER: usize = 256 << 10;

/// Where an apply's output is to go, decided before the patch is read.
pub enum Target<'w> {
    /// Nowhere (`verify`).
    Discard,
    /// A destination decided from a name (`-`, a file, a device), checked against `Reads`.
    Named(Destination, PathBuf),
    /// A caller's writer.
    Writer(&'w mut dyn Write),
}

/// The output as a writer, for the re-encoder.
struct OutputWriter<'o, 'w>(&'o mut Output<'w>);

impl Write for OutputWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_bytes(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where verified output goes.
enum Output<'w> {
    /// NEW's partial file beside the target, renamed into place once everything verifies.
    File(PendingFile),
    /// Standard output, a device or a FIFO: verified chunks are streamed as they come.
    Stream(files::Output),
    Writer(&'w mut dyn Write),
    Discard,
}

impl Output<'_> {
    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.write_all(bytes),
            Output::Stream(s) => s.write_all(bytes),
            Output::Writer(w) => w.write_all(bytes),
            Output::Discard => Ok(()),
        }
    }

    fn write(&mut self, bytes: &[u8], target: &Path) -> Result<()> {
        self.write_bytes(bytes)
            .map_err(|e| Error::io(Role::Output, target, "write", e))
    }

    /// Renames the finished file into place (or flushes a stream).
    fn commit(self, target: &Path) -> Result<()> {
        match self {
            Output::File(f) => f.commit(),
            Output::Stream(s) => s.commit(),
            Output::Writer(w) => w
                .flush()
                .map_err(|e| Error::io(Role::Output, target, "write", e)),
            Output::Discard => Ok(()),
        }
    }
}

/// Collects verified chunks in order, hashes them, writes them.
pub struct Sink<'w, 't> {
    output: Output<'w>,
    /// A transformed patch's re-encoder: verified chunks are NEW's expanded stream, NEW is what
    /// it writes.
    pub reencoder: Option<Reencoder<'t>>,
    target: PathBuf,
    pub hasher: blake3::Hasher,
    /// Chunks and output bytes accounted for so far, kept or written.
    pub next: u64,
    bytes: u64,
    /// Resuming: the length the interrupted apply's partial output had; chunks inside it are
    /// checked against the patch before anything is decoded. `None` once a chunk did not verify
    /// (the file was cut there), or when not resuming.
    unchecked: Option<u64>,
    /// Resuming a transformed patch: the pieces of NEW whose stored bytes in the partial output
    /// were found to be NEW's (how many, and where the next starts in the expanded stream).
    checked_pieces: (usize, u64),
    pub kept: u64,
}

impl<'w, 't> Sink<'w, 't> {
    /// Opens `target`. With `resume`, an interrupted apply's partial output is checked chunk by
    /// chunk instead of rewritten, and kept if this apply fails too (it still holds verified
    /// chunks). With a `reencoder` the output is NEW rebuilt from the chunks' expanded stream,
    /// and a partial file is checked by expanding it again (its blocks decompressed).
    pub fn open(
        target: Target<'w>,
        resume: bool,
        reads: &Reads,
        reencoder: Option<Reencoder<'t>>,
    ) -> Result<Sink<'w, 't>> {
        let mut unchecked = None;
        let (output, target) = match target {
            Target::Discard => (Output::Discard, PathBuf::new()),
            Target::Writer(w) => (Output::Writer(w), PathBuf::from("(writer)")),
            Target::Named(Destination::Replace(file), name) => {
                let (mut file, present) =
                    PendingFile::open_partial(&file, Role::Output, IO_BUFFER, resume, reads)?;
                if resume {
                    unchecked = Some(present);
                    if present > 0 {
                        file.keep_on_failure();
                    }
                }
                (Output::File(file), name)
            }
            Target::Named(stream, name) => (
                Output::Stream(files::Output::open(stream, &name, Role::Output, IO_BUFFER)?),
                name,
            ),
        };
        Ok(Sink {
            reencoder,
            output,
            target,
            hasher: blake3::Hasher::new(),
            next: 0,
            bytes: 0,
            unchecked,
            checked_pieces: (0, 0),
            kept: 0,
        })
    }

    pub fn accept(&mut self, chunk: VerifiedChunk, progress: &dyn Progress) -> Result<()> {
        debug_assert_eq!(chunk.index(), self.next);
        self.stop_keeping()?;
        self.hasher.update(chunk.bytes());
        match &mut self.reencoder {
            Some(r) => r.push(chunk.bytes(), &mut OutputWriter(&mut self.output))?,
            None => self.output.write(chunk.bytes(), &self.target)?,
        }
        progress.advance(chunk.bytes().len() as u64);
        self.next += 1;
        self.bytes += chunk.bytes().len() as u64;
        Ok(())
    }

    /// Resuming: whether the chunk `h` describes is already in the partial output with the
    /// checksum the patch gives it. If so it is kept (hashed, counted, not rewritten); the first
    /// chunk that is not ends the resume, and the partial file is cut where it starts.
    pub fn keep_existing(&mut self, h: &ChunkHeader, progress: &dyn Progress) -> Result<bool> {
        let (Some(unchecked), Output::File(file)) = (self.unchecked, &self.output) else {
            return Ok(false);
        };
        debug_assert_eq!(h.index, self.next);
        let end = h.new_offset + u64::from(h.new_len);
        if let Some(reencoder) = &self.reencoder {
            // The partial file holds NEW; the chunk is a range of NEW's expanded stream.
            let written = Written {
                file,
                len: unchecked,
                path: &self.target,
            };
            let mut bytes = vec![0u8; h.new_len as usize];
            if reencoder.read_back_expanded(&written, &mut bytes, h.new_offset)
                && xxh3_128(&bytes) == h.output_hash
                && reencoder.written_blocks_are_new(
                    &written,
                    end,
                    (&mut self.checked_pieces.0, &mut self.checked_pieces.1),
                )
            {
                self.hasher.update(&bytes);
                return Ok(self.kept_one(end, h, progress));
            }
        } else if end <= unchecked {
            let mut whole = self.hasher.clone();
            let mut sum = Xxh3::new();
            let mut buf = vec![0u8; IO_BUFFER.min(h.new_len as usize)];
            let mut at = h.new_offset;
            while at < end {
                let n = ((end - at) as usize).min(buf.len());
                file.read_back(&mut buf[..n], at)?;
                sum.update(&buf[..n]);
                whole.update(&buf[..n]);
                at += n as u64;
            }
            if sum.digest128() == h.output_hash {
                self.hasher = whole;
                return Ok(self.kept_one(end, h, progress));
            }
        }
        self.stop_keeping()?;
        Ok(false)
    }

    fn kept_one(&mut self, end: u64, h: &ChunkHeader, progress: &dyn Progress) -> bool {
        self.kept += 1;
        self.next += 1;
        self.bytes = end;
        progress.advance(u64::from(h.new_len));
        true
    }

    /// Ends a resume: what the partial file holds after the chunks kept so far is cut (with a
    /// re-encoder, after the NEW bytes those chunks account for, which it then goes on from).
    fn stop_keeping(&mut self) -> Result<()> {
        let Some(unchecked) = self.unchecked.take() else {
            return Ok(());
        };
        if let Output::File(file) = &mut self.output {
            let stay = match &mut self.reencoder {
                Some(r) => r.resume(
                    &Written {
                        file,
                        len: unchecked,
                        path: &self.target,
                    },
                    self.bytes,
                )?,
                None => self.bytes,
            };
            file.truncate_at(stay)?;
        }
        Ok(())
    }

    pub fn is_resuming(&self) -> bool {
        self.unchecked.is_some()
    }

    /// The re-encoder, once everything it still holds has been written.
    pub fn take_reencoder(&mut self) -> Result<Option<Reencoder<'t>>> {
        self.stop_keeping()?;
        let Some(mut r) = self.reencoder.take() else {
            return Ok(None);
        };
        r.flush(&mut OutputWriter(&mut self.output))?;
        Ok(Some(r))
    }

    /// After the last chunk: a resume that kept everything drops any bytes beyond NEW's end;
    /// then the output is committed (a file renamed into place, a stream flushed).
    pub fn commit(mut self) -> Result<()> {
        self.stop_keeping()?;
        self.output.commit(&self.target)
    }
}

/// What an interrupted apply wrote, read back (for the re-encoder, which re-expands it).
struct Written<'f> {
    file: &'f PendingFile,
    len: u64,
    /// The output it is the partial file of (for errors).
    path: &'f Path,
}

impl OldReader for Written<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        if at
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(Error::OutputMismatch {
                path: self.path.to_path_buf(),
                what: "a read past the end of the partial output".into(),
            });
        }
        self.file.read_back(buf, at)
    }
}
