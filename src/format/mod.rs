//! The patch format, versions 1 to 10: the public contract specified in docs/FORMAT.md, in one place
//! and one file per section of that document. Both sides use it: the diff writes through
//! [`ContainerWriter`], [`control_stream`] and [`add_runs`](fn@add_runs); apply reads through
//! [`ContainerReader`] (front to back, a pipe works) or [`PatchIndex`] (a seekable file, by its
//! index), [`Ops`] and [`AddRuns`].
//!
//! The readers trust nothing: every length, count and offset is checked against the header and
//! the limits in [`limits`] before it is used, no allocation is sized from a patch before that
//! check, and nothing held grows with the patch (the index is read block by block).
//!
//! ```
//! use spindiff::format::{ContainerReader, ContainerWriter, Header, VERSION_PLAIN};
//! use std::path::Path;
//!
//! // An empty NEW: a patch with no chunks, just header, index and footer.
//! let header = Header {
//!     version: VERSION_PLAIN,
//!     transform: false,
//!     references: false,
//!     group: 0,
//!     old_size: 0,
//!     new_size: 0,
//!     old_hash: *blake3::hash(b"").as_bytes(),
//!     new_hash: *blake3::hash(b"").as_bytes(),
//!     chunk_size: 4 << 20,
//!     chunk_count: 0,
//!     windows: Default::default(),
//! };
//! let (patch, len) = ContainerWriter::new(Vec::new(), &header).unwrap().finish().unwrap();
//! assert_eq!(len, patch.len() as u64);
//! let mut reader = ContainerReader::new(&patch[..], Path::new("patch")).unwrap();
//! assert_eq!(reader.header(), &header);
//! assert!(reader.next_chunk().unwrap().is_none()); // index and footer checked
//! ```

pub mod add_runs;
mod chunk;
pub mod control;
mod header;
mod index;
pub mod limits;
mod reader;
mod references;
mod seekable;
mod transform;
pub mod varint;
mod writer;

pub use add_runs::{AddRuns, add_runs};
pub use chunk::{ADD, CTRL, ChunkHeader, CompressedChunk, EncodedChunk, INSERT};
pub use control::{CheckedOp, Op, Ops, control_stream};
pub use header::{FrameWindows, Header, chunk_span, read_header};
pub use index::{
    EntryDigest, Footer, IndexEntry, index_len, index_to_bytes, parse_index, scan_index,
};
pub use limits::*;
pub use reader::{ContainerReader, Sections, read_sections};
pub use references::{
    MAX_REFERENCE_NAME, MAX_REFERENCES, REFERENCES_TAG, ReferenceEntry, ReferencesSection,
    valid_name,
};
pub use seekable::{PatchIndex, ReadAt, check_length};
pub use transform::{MAX_TABLE_LEN, TRANSFORM_TAG, TransformSection};
pub use writer::ContainerWriter;
