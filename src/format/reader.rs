//! The sequential reader: a container read front to back from any reader (a pipe works), every
//! record checked as it comes, nothing held that grows with the patch.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::limits::*;
use super::{
    ChunkHeader, CompressedChunk, EntryDigest, Footer, Header, IndexEntry, ReferencesSection,
    TransformSection, index_len, read_header, scan_index,
};
use crate::error::{Error, Result, Role};

/// Reads a container front to back from any reader (a pipe works), checking as it goes.
pub struct ContainerReader<R: Read> {
    input: R,
    path: PathBuf,
    pos: u64,
    header: Header,
    next: u64,
    /// The chunks read so far, as index entries (compared with the index at the end).
    seen: EntryDigest,
    finished: bool,
    /// The sections between the header and the first chunk record, and where that starts.
    sections: Sections,
    first: u64,
}

/// The sections that follow the header: a transformed patch's transform section, then a
/// references section (version 9).
#[derive(Debug, Clone, Default)]
pub struct Sections {
    /// The transform section, when the header's flag says one follows.
    pub transform: Option<TransformSection>,
    /// The references section, when the header's flag says one follows.
    pub references: Option<ReferencesSection>,
}

/// Reads the sections `header` says follow it from `input` (positioned just after the header);
/// returns them and where the first chunk record starts.
pub fn read_sections<R: Read>(
    input: &mut R,
    header: &Header,
    path: &Path,
) -> Result<(Sections, u64)> {
    let mut at = HEADER_LEN as u64;
    let mut sections = Sections::default();
    if header.has_transform() {
        let (section, len) = TransformSection::read(input, path, at)?;
        sections.transform = Some(section);
        at += len;
    }
    if header.has_references() {
        let (section, len) = ReferencesSection::read(input, path, at)?;
        sections.references = Some(section);
        at += len;
    }
    Ok((sections, at))
}

impl<R: Read> ContainerReader<R> {
    /// Reads and checks the header; `path` names the patch in errors.
    pub fn new(mut input: R, path: &Path) -> Result<Self> {
        let header = read_header(&mut input, path)?;
        let (sections, first) = read_sections(&mut input, &header, path)?;
        Ok(ContainerReader {
            input,
            path: path.to_path_buf(),
            pos: first,
            header,
            next: 0,
            seen: EntryDigest::default(),
            finished: false,
            sections,
            first,
        })
    }

    /// A transformed patch's transform section.
    pub fn transform(&self) -> Option<&TransformSection> {
        self.sections.transform.as_ref()
    }

    /// The references section of a patch made with references.
    pub fn references(&self) -> Option<&ReferencesSection> {
        self.sections.references.as_ref()
    }

    /// Where the first chunk record starts: after the header and its sections.
    pub fn first_chunk_offset(&self) -> u64 {
        self.first
    }

    /// The patch's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next chunk record, or `None` after the last chunk once index and footer have
    /// been read and checked against what was seen.
    pub fn next_chunk(&mut self) -> Result<Option<CompressedChunk>> {
        let Some((header, at)) = self.next_header()? else {
            return Ok(None);
        };
        let mut payload = vec![0u8; header.payload_len() as usize]; // bounded by parse
        read_exact_at(
            &mut self.input,
            &mut payload,
            &self.path,
            at + CHUNK_HEADER_LEN as u64,
        )?;
        Ok(Some(CompressedChunk {
            header,
            payload,
            patch_offset: at,
        }))
    }

    /// Like [`Self::next_chunk`] but skips the payload (used by `inspect`).
    pub fn next_chunk_header(&mut self) -> Result<Option<ChunkHeader>> {
        let Some((header, at)) = self.next_header()? else {
            return Ok(None);
        };
        let len = header.payload_len();
        let skipped = io::copy(&mut (&mut self.input).take(len), &mut io::sink())
            .map_err(|e| Error::io(Role::Patch, &self.path, "read", e))?;
        if skipped != len {
            return Err(Error::TruncatedPatch {
                path: self.path.clone(),
                offset: at + CHUNK_HEADER_LEN as u64 + skipped,
            });
        }
        Ok(Some(header))
    }

    /// Reads and checks the next chunk header and accounts for its record (the caller reads or
    /// skips the payload); at the end, reads and checks index and footer instead.
    fn next_header(&mut self) -> Result<Option<(ChunkHeader, u64)>> {
        if self.next == self.header.chunk_count {
            self.finish()?;
            return Ok(None);
        }
        let at = self.pos;
        let mut hb = [0u8; CHUNK_HEADER_LEN];
        read_exact_at(&mut self.input, &mut hb, &self.path, at)?;
        let header = ChunkHeader::parse(&hb, &self.header, self.next, &self.path, at)?;
        self.seen.add(&IndexEntry {
            patch_offset: at,
            new_offset: header.new_offset,
        });
        self.pos = at + CHUNK_HEADER_LEN as u64 + header.payload_len();
        self.next += 1;
        Ok(Some((header, at)))
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let at = self.pos;
        let len = index_len(self.header.chunk_count);
        let mut listed = EntryDigest::default();
        scan_index(
            &mut self.input,
            &self.header,
            &self.path,
            (at, self.first),
            |_, e| listed.add(e),
        )?;
        if listed.finish() != self.seen.finish() {
            return Err(Error::corrupt(
                &self.path,
                at,
                "chunk index does not match the chunks",
            ));
        }
        let mut fb = [0u8; FOOTER_LEN];
        read_exact_at(&mut self.input, &mut fb, &self.path, at + len)?;
        let footer = Footer::parse(&fb, &self.path, at + len)?;
        if footer.index_offset != at || footer.index_len != len {
            return Err(Error::corrupt(
                &self.path,
                at + len,
                "footer does not point at the index",
            ));
        }
        let end = at + len + FOOTER_LEN as u64;
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => {
                return Err(Error::corrupt(
                    &self.path,
                    end,
                    "trailing bytes after the footer",
                ));
            }
            Err(e) => return Err(Error::io(Role::Patch, &self.path, "read", e)),
        }
        self.finished = true;
        self.pos = end;
        Ok(())
    }
}

/// Reads into `buf` until it is full or the input ends; returns how much was read.
pub(crate) fn read_full<R: Read>(input: &mut R, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(Role::Patch, path, "read", e)),
        }
    }
    Ok(done)
}

/// Reads exactly `buf.len()` bytes of the patch, which is at patch offset `at`; a short read is
/// a truncated patch at `at + bytes read`.
pub(crate) fn read_exact_at<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    path: &Path,
    at: u64,
) -> Result<()> {
    let done = read_full(input, buf, path)?;
    if done < buf.len() {
        return Err(Error::TruncatedPatch {
            path: path.to_path_buf(),
            offset: at + done as u64,
        });
    }
    Ok(())
}
