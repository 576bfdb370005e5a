//! The seekable reader: a patch in a regular file, read by its index, so that chunks can be
//! fetched in any order (and decoded in parallel). Its length is known, so a header that
//! declares more chunks than the file can hold is refused before anything else is read; the
//! index is checked block by block and its entries read when a chunk is fetched, never held.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::limits::*;
use super::reader::{Sections, read_sections};
use super::{
    ChunkHeader, CompressedChunk, Footer, Header, REFERENCES_TAG, ReferencesSection, TRANSFORM_TAG,
    TransformSection, index_len, read_header, scan_index,
};
use crate::error::{Error, Result, Role};

/// Positioned reads of a file as a [`Read`] from `pos` on (the file's own position is not used
/// or moved).
pub struct ReadAt<'a> {
    /// The file.
    pub file: &'a File,
    /// Where the next read starts.
    pub pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads exactly `buf.len()` bytes of the patch at `at`; the patch ending first is a truncated
/// patch.
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

/// Reads the header of the patch in `file` and rejects, before anything is written, a patch
/// too short for the chunks it declares: each needs at least its chunk header and an index
/// entry (and a transformed patch its transform section, whose length is read). Returns the
/// header, the patch's length and where its first chunk record starts.
pub fn check_length(file: &File, path: &Path) -> Result<(Header, u64, u64)> {
    let len = file
        .metadata()
        .map_err(|e| Error::io(Role::Patch, path, "stat", e))?
        .len();
    let header = read_header(&mut ReadAt { file, pos: 0 }, path)?;
    let mut first = HEADER_LEN as u64;
    for (present, tag, what) in [
        (
            header.has_transform(),
            TRANSFORM_TAG,
            "expected the transform section",
        ),
        (
            header.has_references(),
            REFERENCES_TAG,
            "expected the references section",
        ),
    ] {
        if !present {
            continue;
        }
        let mut head = [0u8; 12];
        read_at_exact(file, &mut head, first, path)?;
        if head[0..4] != tag {
            return Err(Error::corrupt(path, first, what));
        }
        first = first.saturating_add(u64::from_le_bytes(head[4..12].try_into().unwrap()));
    }
    let needed = header
        .chunk_count
        .checked_mul(CHUNK_HEADER_LEN as u64)
        .and_then(|c| c.checked_add(index_len(header.chunk_count)))
        .and_then(|c| c.checked_add(first + FOOTER_LEN as u64));
    match needed {
        Some(n) if n <= len => Ok((header, len, first)),
        _ => Err(Error::corrupt(
            path,
            0,
            format!(
                "truncated or forged: the header declares {} output bytes in {} chunks, more than a {len}-byte patch can hold",
                header.new_size, header.chunk_count
            ),
        )),
    }
}

/// A seekable patch whose footer and index have been checked: chunks can be read in any order.
pub struct PatchIndex<'a> {
    file: &'a File,
    header: Header,
    index_offset: u64,
    sections: Sections,
}

impl<'a> PatchIndex<'a> {
    /// Reads the footer of the patch in `file` (`len` bytes, whose `header` and first chunk
    /// offset `first` were read by [`check_length`]), its transform section if any, and checks
    /// the index the footer points at, block by block.
    pub fn read(
        file: &'a File,
        header: Header,
        (len, first): (u64, u64),
        path: &Path,
    ) -> Result<PatchIndex<'a>> {
        let mut input = BufReader::with_capacity(
            64 << 10,
            ReadAt {
                file,
                pos: HEADER_LEN as u64,
            },
        );
        let (sections, read_first) = read_sections(&mut input, &header, path)?;
        if read_first != first {
            return Err(Error::corrupt(
                path,
                HEADER_LEN as u64,
                "a section's length changed",
            ));
        }
        let expected_len = index_len(header.chunk_count);
        if len < first.saturating_add(FOOTER_LEN as u64 + expected_len) {
            return Err(Error::TruncatedPatch {
                path: path.to_path_buf(),
                offset: len,
            });
        }
        let footer_at = len - FOOTER_LEN as u64;
        let mut fb = [0u8; FOOTER_LEN];
        read_at_exact(file, &mut fb, footer_at, path)?;
        let footer = Footer::parse(&fb, path, footer_at)?;
        if footer.index_len != expected_len
            || footer.index_offset.checked_add(expected_len) != Some(footer_at)
        {
            return Err(Error::corrupt(
                path,
                footer_at,
                "footer does not point at a valid index",
            ));
        }
        let mut input = BufReader::with_capacity(
            64 << 10,
            ReadAt {
                file,
                pos: footer.index_offset,
            },
        );
        scan_index(
            &mut input,
            &header,
            path,
            (footer.index_offset, first),
            |_, _| {},
        )?;
        Ok(PatchIndex {
            file,
            header,
            index_offset: footer.index_offset,
            sections,
        })
    }

    /// The patch's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// A transformed patch's transform section.
    pub fn transform(&self) -> Option<&TransformSection> {
        self.sections.transform.as_ref()
    }

    /// The references section of a patch made with references.
    pub fn references(&self) -> Option<&ReferencesSection> {
        self.sections.references.as_ref()
    }

    /// Where chunk `i`'s record starts.
    fn record_start(&self, i: u64, path: &Path) -> Result<u64> {
        let mut b = [0u8; 8];
        read_at_exact(self.file, &mut b, self.index_offset + 12 + 16 * i, path)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Where chunk `i`'s record ends: where the next begins, or the index for the last.
    fn record_end(&self, i: u64, path: &Path) -> Result<u64> {
        if i + 1 == self.header.chunk_count {
            Ok(self.index_offset)
        } else {
            self.record_start(i + 1, path)
        }
    }

    /// Reads and checks chunk `i`'s header, including that its record fills the space the
    /// index gives it. Returns it with the record's offset.
    pub fn chunk_header(&self, i: u64, path: &Path) -> Result<(ChunkHeader, u64)> {
        let at = self.record_start(i, path)?;
        let mut hb = [0u8; CHUNK_HEADER_LEN];
        read_at_exact(self.file, &mut hb, at, path)?;
        let h = ChunkHeader::parse(&hb, &self.header, i, path, at)?;
        if at.checked_add(CHUNK_HEADER_LEN as u64 + h.payload_len())
            != Some(self.record_end(i, path)?)
        {
            return Err(Error::corrupt(
                path,
                at,
                format!("chunk {i}: length disagrees with the index"),
            ));
        }
        Ok((h, at))
    }

    /// Reads chunk `i`'s record.
    pub fn chunk(&self, i: u64, path: &Path) -> Result<CompressedChunk> {
        let (header, at) = self.chunk_header(i, path)?;
        let mut payload = vec![0u8; header.payload_len() as usize]; // bounded by parse
        read_at_exact(self.file, &mut payload, at + CHUNK_HEADER_LEN as u64, path)?;
        Ok(CompressedChunk {
            header,
            payload,
            patch_offset: at,
        })
    }
}
