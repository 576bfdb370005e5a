//! `inspect`: what a patch holds, read front to back with every record checked, payloads
//! skipped.

use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{PatchInput, Reads};
use crate::format::{
    ADD, CHUNK_HEADER_LEN, CTRL, ContainerReader, FOOTER_LEN, HEADER_LEN, Header, INSERT,
    ReferenceEntry, TransformSection, index_len,
};
use crate::transform::expand::Rebuild;
use crate::transform::table::Table;

/// Summary of a patch.
#[derive(Debug, Clone)]
pub struct PatchInfo {
    /// The patch's header.
    pub header: Header,
    /// The patch's length.
    pub patch_len: u64,
    /// Compressed bytes of the control, add and insert streams over all chunks.
    pub compressed: [u64; 3],
    /// Decoded bytes of the same streams.
    pub raw: [u64; 3],
    /// Bytes of container framing (header, chunk headers, index, footer).
    pub framing: u64,
    /// A transformed patch's transform: compressed content it expands.
    pub transform: Option<TransformInfo>,
    /// A patch made with references: the files apply needs beside OLD (`--ref-dir`), each
    /// with its name, size and SHA-256 (what a package index gives), empty for any other.
    pub references: Vec<ReferenceEntry>,
    /// Bytes of its references section (0 without one).
    pub references_len: u64,
}

/// What a transformed patch's transform section holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformInfo {
    /// NEW's own size (the header's is its expanded stream's).
    pub new_size: u64,
    /// NEW's own BLAKE3.
    pub new_hash: [u8; 32],
    /// OLD's expanded size.
    pub old_expanded_size: u64,
    /// Bytes of the section.
    pub section_len: u64,
    /// File systems (squashfs, EROFS) and compressed streams expanded in OLD and in NEW.
    pub filesystems: [usize; 2],
    /// Each of them, in OLD and in NEW: what it is, where, and its sizes.
    pub regions: [Vec<ExpandedRegion>; 2],
    /// NEW's compressed blocks copied from OLD, recompressed, and left stored.
    pub copied: u64,
    /// See `copied`.
    pub recompressed: u64,
    /// See `copied`.
    pub stored: u64,
}

/// A file system or stream a transformed patch expands: from its first compressed block to the
/// end of its last, its stored and its expanded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedRegion {
    /// What it is: `squashfs xz`, `EROFS lzma`, `xz stream`, ...
    pub kind: &'static str,
    /// Where its first block is in the file.
    pub offset: u64,
    /// Bytes from there to the end of its last block.
    pub stored_size: u64,
    /// Those bytes expanded.
    pub expanded_size: u64,
}

/// The file systems and streams of `table`, in file order.
fn regions_of(table: &Table) -> Vec<ExpandedRegion> {
    // the pieces from each one's first block to its last, with what lies between its blocks
    let mut span: Vec<Option<(usize, usize)>> = vec![None; table.codecs.len()];
    for (i, p) in table.pieces.iter().enumerate() {
        if let Some((fs, _)) = p.block
            && let Some(s) = span.get_mut(usize::from(fs))
        {
            *s = Some(s.map_or((i, i), |(first, _)| (first, i)));
        }
    }
    let mut out: Vec<ExpandedRegion> = span
        .iter()
        .enumerate()
        .filter_map(|(fs, s)| {
            let (first, last) = (*s)?;
            let pieces = &table.pieces[first..=last];
            Some(ExpandedRegion {
                kind: table.codecs[fs].codec.kind_name(),
                offset: pieces[0].offset,
                stored_size: pieces.iter().map(|p| u64::from(p.len)).sum(),
                expanded_size: pieces.iter().map(|p| p.expanded_len()).sum(),
            })
        })
        .collect();
    out.sort_by_key(|r| r.offset);
    out
}

impl PatchInfo {
    /// Patch size over NEW size.
    pub fn ratio(&self) -> f64 {
        self.patch_len as f64 / self.new_size().max(1) as f64
    }

    /// NEW's own size (for a transformed patch, not its expanded stream's).
    pub fn new_size(&self) -> u64 {
        self.transform
            .as_ref()
            .map_or(self.header.new_size, |t| t.new_size)
    }

    /// NEW's own BLAKE3.
    pub fn new_hash(&self) -> [u8; 32] {
        self.transform
            .as_ref()
            .map_or(self.header.new_hash, |t| t.new_hash)
    }
}

/// Summarises a patch's transform section (its tables parsed and checked).
fn transform_info(
    path: &Path,
    header: &Header,
    s: &TransformSection,
    len: u64,
) -> Result<TransformInfo> {
    let bad = |what: String| Error::corrupt(path, HEADER_LEN as u64, what);
    let v = header.version;
    let old = Table::parse_for(&s.old_table, header.old_size, header.old_size, v).map_err(bad)?;
    let new = Table::parse_for(&s.new_table, s.new_size, header.old_size, v).map_err(bad)?;
    let mut info = TransformInfo {
        new_size: s.new_size,
        new_hash: s.new_hash,
        old_expanded_size: s.old_expanded_size,
        section_len: len,
        filesystems: [old.codecs.len(), new.codecs.len()],
        regions: [regions_of(&old), regions_of(&new)],
        copied: 0,
        recompressed: 0,
        stored: 0,
    };
    for p in new.pieces.iter().filter(|p| p.block.is_some()) {
        match p.rebuild {
            Rebuild::CopyOld { .. } => info.copied += 1,
            Rebuild::Recompress { .. } => info.recompressed += 1,
            Rebuild::Stored => info.stored += 1,
        }
    }
    Ok(info)
}

pub fn inspect_patch(path: &Path) -> Result<PatchInfo> {
    let input = PatchInput::open(path, &mut Reads::new())?;
    let mut reader = ContainerReader::new(input.into_reader(1 << 20), path)?;
    let header = reader.header().clone();
    let section = reader.transform().cloned();
    let references = reader.references().cloned();
    let references_len = references.as_ref().map_or(0, |r| r.to_bytes().len() as u64);
    let section_len = reader.first_chunk_offset() - HEADER_LEN as u64 - references_len;
    let (mut compressed, mut raw) = ([0u64; 3], [0u64; 3]);
    let mut chunks = 0u64;
    while let Some(ch) = reader.next_chunk_header()? {
        for i in [CTRL, ADD, INSERT] {
            compressed[i] += u64::from(ch.compressed[i]);
            raw[i] += u64::from(ch.raw[i]);
        }
        chunks += 1;
    }
    let framing =
        (HEADER_LEN + FOOTER_LEN) as u64 + chunks * CHUNK_HEADER_LEN as u64 + index_len(chunks);
    let transform = match &section {
        None => None,
        Some(s) => Some(transform_info(path, &header, s, section_len)?),
    };
    Ok(PatchInfo {
        patch_len: framing + section_len + references_len + compressed.iter().sum::<u64>(),
        header,
        compressed,
        raw,
        framing,
        transform,
        references: references.map_or(Vec::new(), |r| r.entries),
        references_len,
    })
}
