//! Writing a container: header, chunk records in order, then index and footer.

use std::io::{self, Write};

use super::limits::*;
use super::{EncodedChunk, Footer, Header, IndexEntry, index_to_bytes};

/// Writes a container: header, chunks in order, then index and footer.
pub struct ContainerWriter<W: Write> {
    out: W,
    written: u64,
    index: Vec<IndexEntry>,
    linked: bool,
}

impl<W: Write> ContainerWriter<W> {
    /// Starts a patch: writes `header`.
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        ContainerWriter::with_section(out, header, &[])
    }

    /// Starts a transformed patch: writes `header`, then its transform section's bytes
    /// (`TransformSection::to_bytes`).
    pub fn with_section(mut out: W, header: &Header, section: &[u8]) -> io::Result<Self> {
        out.write_all(&header.to_bytes())?;
        out.write_all(section)?;
        Ok(ContainerWriter {
            out,
            written: (HEADER_LEN + section.len()) as u64,
            index: Vec::new(),
            linked: header.is_linked(),
        })
    }

    /// Writes the next chunk record (chunks come in order).
    pub fn write_chunk(&mut self, chunk: &EncodedChunk) -> io::Result<()> {
        debug_assert_eq!(chunk.header.index, self.index.len() as u64);
        self.index.push(IndexEntry {
            patch_offset: self.written,
            new_offset: chunk.header.new_offset,
        });
        self.out.write_all(&chunk.header.to_bytes(self.linked))?;
        self.out.write_all(&chunk.payload)?;
        self.written += CHUNK_HEADER_LEN as u64 + chunk.payload.len() as u64;
        Ok(())
    }

    /// Writes index and footer; returns the sink and the patch's total length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let index = index_to_bytes(&self.index);
        let footer = Footer {
            index_offset: self.written,
            index_len: index.len() as u64,
        };
        self.out.write_all(&index)?;
        self.out.write_all(&footer.to_bytes())?;
        self.written += index.len() as u64 + FOOTER_LEN as u64;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}
