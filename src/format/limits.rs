//! Constants and limits of the format (docs/FORMAT.md): magic numbers, version, fixed lengths,
//! the bounds that keep a reader's memory proportional to the chunk size, and the little-endian
//! helpers every section uses.

/// First eight bytes of every patch.
pub const MAGIC: [u8; 8] = *b"SPINDIFF";
/// The newest format version this build reads.
pub const FORMAT_VERSION: u16 = 10;
/// Version 1: chunks of NEW itself. Written for every pair without compressed content to expand.
pub const VERSION_PLAIN: u16 = 1;
/// Version 2: chunks of NEW's expanded stream, behind a transform section (docs/FORMAT.md).
pub const VERSION_TRANSFORM: u16 = 2;
/// Version 3: each stream of a group of chunks is one zstd frame, split at the chunks (with or
/// without a transform section). Written for every patch since.
pub const VERSION_LINKED: u16 = 3;
/// Version 4: version 3 whose transform tables may name EROFS's compressors (written only for
/// such patches, so that a reader of version 3 refuses them as newer rather than misreading
/// their tables).
pub const VERSION_EROFS: u16 = 4;
/// Version 5: version 4 whose transform tables may name whole xz streams' blocks (an initrd's):
/// written only for such patches.
pub const VERSION_STREAMS: u16 = 5;
/// Version 6: version 5 whose transform tables may name whole streams (a zstd frame, an xz
/// stream's block too large to hold: an initrd), recompressed as their bytes arrive: written
/// only for such patches.
pub const VERSION_WHOLE_STREAMS: u16 = 6;
/// Version 7: version 6 whose transform tables may name whole gzip streams, each with the
/// recipe that rebuilds it (an initrd): written only for such patches.
pub const VERSION_GZIP_STREAMS: u16 = 7;
/// Version 8: version 7 whose transform tables may name xz metadata blocks compressed with the
/// file system's dictionary (squashfs-tools-ng's gensquashfs and tar2sqfs), encoding variant
/// [`crate::transform::codec::XZ_TOOLS_NG_METADATA`]: written only for such patches.
pub const VERSION_TOOLS_NG: u16 = 8;
/// Version 9: version 8 with references (issue 23): flag bit 1 of the header says a references
/// section follows the header and the transform section, naming the files (packages) whose
/// payloads the chunks' copies read beside OLD. Written only for patches made with references.
pub const VERSION_REFERENCES: u16 = 9;
/// Version 10: version 9 whose header declares the window of each stream kind's frames
/// ([`crate::format::FrameWindows`]) and whose chunks decode to at most [`max_decoded_len`]
/// bytes in all, so that a reader's memory follows what the patch declares rather than the
/// format's widest bounds (issue 22: a transformed patch applies in 32 MiB). Written for every
/// patch since.
pub const VERSION_DECLARED: u16 = 10;
/// Most chunks a version-3 group may hold. The group only bounds how far back decoding must
/// start to reach a chunk; memory does not grow with it (see [`max_window_log`]).
pub const MAX_GROUP_CHUNKS: u32 = 4096;
/// Size of the fixed file header in bytes.
pub const HEADER_LEN: usize = 120;
/// Size of a chunk record header in bytes (the compressed streams follow it).
pub const CHUNK_HEADER_LEN: usize = 72;
/// Size of the footer that ends every patch.
pub const FOOTER_LEN: usize = 24;
/// Tag that starts every chunk record.
pub const CHUNK_TAG: [u8; 4] = *b"CHNK";
/// Tag that starts the chunk index.
pub const INDEX_TAG: [u8; 4] = *b"INDX";
/// Last eight bytes of every patch.
pub const FOOTER_MAGIC: [u8; 8] = *b"SPINDEND";
/// Largest output a single chunk may describe; bounds apply's memory.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Smallest nominal chunk size a header may declare.
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
/// Extra control bytes allowed beyond one per output byte (see [`max_ctrl_len`]).
pub const CTRL_SLACK: u32 = 64;

/// Whether a computed checksum or hash equals the one stored in the patch. Fuzzing builds
/// (`--cfg fuzzing`, set by cargo-fuzz) accept any stored value, so the fuzzer reaches the parsers
/// and decoders behind the checksums instead of stopping at them. No bound or offset check
/// depends on a checksum: they hold in fuzzing builds exactly as in real ones.
pub fn checksum_matches<T: PartialEq>(computed: T, stored: T) -> bool {
    cfg!(fuzzing) || computed == stored
}

/// Bound on the decoded control stream of a chunk producing `new_len` bytes. The encoder falls
/// back to a single insert when its controls would exceed it, so a patch never needs more.
pub fn max_ctrl_len(new_len: u32) -> u32 {
    new_len.saturating_add(CTRL_SLACK)
}

/// Bound on the decoded add stream of a chunk producing `new_len` bytes. Sparse runs cost at
/// most two bytes per copied byte (one-byte gap and length varints around a one-byte run); the
/// encoder falls back to a verbatim insert beyond this.
pub fn max_add_len(new_len: u32) -> u32 {
    new_len.saturating_mul(2).saturating_add(CTRL_SLACK)
}

/// Bound, from version 10, on a chunk's three decoded streams together when it produces
/// `new_len` bytes: its output and a quarter more. Every output byte is an add or an insert byte,
/// so only the control stream and the add stream's run headers come on top; the encoder falls
/// back to a single insert beyond this (a chunk of an operation every few dozen bytes).
pub fn max_decoded_len(new_len: u32) -> u64 {
    let l = u64::from(new_len);
    l + l / 4 + u64::from(2 * CTRL_SLACK)
}

/// Smallest window a version-10 header may declare for a stream kind (1 KiB, zstd's least).
pub const MIN_WINDOW_LOG: u8 = 10;

/// Largest zstd window a version-3 frame may declare with chunks of `chunk_size`: twice the
/// chunk size rounded down to a power of two (at least 8 KiB), so a decoder's history per
/// stream is never larger than two chunks.
pub fn max_window_log(chunk_size: u32) -> u32 {
    chunk_size.max(MIN_CHUNK_SIZE).ilog2() + 1
}

/// Bound on a compressed stream whose decoded size is `raw` (zstd's worst case plus a frame).
pub fn max_compressed_len(raw: u32) -> u64 {
    let raw = u64::from(raw);
    raw + raw / 128 + 1024
}

pub(crate) fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b.try_into().unwrap())
}
pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}
pub(crate) fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap())
}
