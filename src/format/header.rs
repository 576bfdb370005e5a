//! The header (docs/FORMAT.md, "Header"): 120 bytes at offset 0.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::limits::*;
use crate::error::{Error, Result};

/// The bytes of NEW (`new_size` bytes) that chunk `index` covers with chunks of `chunk_size`:
/// every chunk but the last is exactly `chunk_size` long.
pub fn chunk_span(index: u64, chunk_size: u32, new_size: u64) -> std::ops::Range<u64> {
    let start = index * u64::from(chunk_size);
    start..(start + u64::from(chunk_size)).min(new_size)
}

/// The fixed header at the start of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version: 1 (plain), 2 (a transform section follows), 3 (linked streams, with or
    /// without a transform section), 4-9 (what the tables and sections may name) or 10 (the
    /// frames' windows declared, a chunk's streams bounded together).
    pub version: u16,
    /// Whether a transform section follows the header: always in version 2, flag bit 0 in
    /// version 3, never in version 1.
    pub transform: bool,
    /// Whether a references section follows the header (and the transform section): flag bit 1,
    /// versions 9 ([`VERSION_REFERENCES`]) and 10.
    pub references: bool,
    /// Version 3: chunks per group, whose streams are coded as one zstd frame each (1 ..=
    /// [`MAX_GROUP_CHUNKS`]); 0 in versions 1 and 2, where every chunk's streams are frames of
    /// their own.
    pub group: u32,
    /// OLD's length.
    pub old_size: u64,
    /// NEW's length.
    pub new_size: u64,
    /// OLD's BLAKE3.
    pub old_hash: [u8; 32],
    /// NEW's BLAKE3.
    pub new_hash: [u8; 32],
    /// Output bytes per chunk; every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// Chunks in the patch: NEW's length over the chunk size, rounded up.
    pub chunk_count: u64,
    /// Version 10: the windows its linked frames declare at most; `FrameWindows::default()`
    /// (none declared) before.
    pub windows: FrameWindows,
}

/// The zstd windows a version-10 patch declares for its linked frames, as powers of two: the
/// insert stream's and the control and add streams'. A reader refuses a frame asking for more,
/// so its decoders hold these windows, not the format's widest (twice the chunk size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameWindows {
    /// log2 of the insert stream's window.
    pub insert_log: u8,
    /// log2 of the control and add streams' window.
    pub small_log: u8,
}

impl FrameWindows {
    /// Windows of `insert` and `small` bytes (powers of two).
    pub fn new(insert: u32, small: u32) -> FrameWindows {
        FrameWindows {
            insert_log: insert.ilog2() as u8,
            small_log: small.ilog2() as u8,
        }
    }

    /// Whether a windows were declared (version 10 and later).
    pub fn declared(&self) -> bool {
        *self != FrameWindows::default()
    }
}

impl Header {
    /// Number of chunks a patch of `new_size` bytes has with chunks of `chunk_size` bytes.
    pub fn chunks_for(new_size: u64, chunk_size: u32) -> u64 {
        new_size.div_ceil(u64::from(chunk_size))
    }

    /// Whether a transform section follows the header: the chunks then make NEW's expanded
    /// stream.
    pub fn has_transform(&self) -> bool {
        self.transform
    }

    /// Whether a references section follows the header and the transform section: the chunks'
    /// copies then read OLD (or its expanded stream) and the payloads it names.
    pub fn has_references(&self) -> bool {
        self.references
    }

    /// Whether the chunks' streams are linked in groups (version 3).
    pub fn is_linked(&self) -> bool {
        self.group > 0
    }

    /// The first chunk of the group chunk `index` belongs to: where decoding must start to reach
    /// it (the chunk itself when streams are not linked).
    pub fn group_start(&self, index: u64) -> u64 {
        if self.group == 0 {
            index
        } else {
            index - index % u64::from(self.group)
        }
    }

    /// Whether chunk `index` is the last of its group (every chunk is when streams are not
    /// linked): a linked stream's frame ends there.
    pub fn ends_group(&self, index: u64) -> bool {
        self.group == 0
            || (index + 1).is_multiple_of(u64::from(self.group))
            || index + 1 == self.chunk_count
    }

    /// The largest window (log2) a frame of stream kind `k` may declare: the header's own from
    /// version 10, twice the chunk size before ([`max_window_log`]).
    pub fn window_log(&self, k: usize) -> u32 {
        match (self.windows.declared(), k) {
            (false, _) => max_window_log(self.chunk_size),
            (true, super::INSERT) => u32::from(self.windows.insert_log),
            (true, _) => u32::from(self.windows.small_log),
        }
    }

    /// Output range `(offset, len)` of chunk `index`.
    pub fn chunk_range(&self, index: u64) -> (u64, u32) {
        let r = chunk_span(index, self.chunk_size, self.new_size);
        (r.start, (r.end - r.start) as u32)
    }

    /// The header's 120 bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        // 10..12: flags: bit 0, a transform section follows (versions 2 and 3); bit 1, a
        // references section follows (version 9)
        let flags = u16::from(self.transform) | u16::from(self.references) << 1;
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.old_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.new_size.to_le_bytes());
        b[32..64].copy_from_slice(&self.old_hash);
        b[64..96].copy_from_slice(&self.new_hash);
        b[96..100].copy_from_slice(&self.chunk_size.to_le_bytes());
        // 100..104: chunks per group (version 3), zero before; from version 10, chunks per group
        // in 100..102 and the windows' logs in 102 (insert) and 103 (control and add)
        if self.version >= VERSION_DECLARED {
            b[100..102].copy_from_slice(&(self.group as u16).to_le_bytes());
            b[102] = self.windows.insert_log;
            b[103] = self.windows.small_log;
        } else {
            b[100..104].copy_from_slice(&self.group.to_le_bytes());
        }
        b[104..112].copy_from_slice(&self.chunk_count.to_le_bytes());
        let check = xxh3_64(&b[..112]);
        b[112..120].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses and checks a header. `path` is only used in errors.
    pub fn parse(b: &[u8; HEADER_LEN], path: &Path) -> Result<Header> {
        if b[0..8] != MAGIC {
            return Err(Error::corrupt(path, 0, "not a spindiff patch (bad magic)"));
        }
        let version = le16(&b[8..10]);
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
                newest: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(Error::corrupt(path, 8, "format version 0 does not exist"));
        }
        if !checksum_matches(xxh3_64(&b[..112]), le64(&b[112..120])) {
            return Err(Error::corrupt(path, 112, "header checksum mismatch"));
        }
        let flags = le16(&b[10..12]);
        let (group, windows) = if version >= VERSION_DECLARED {
            let windows = FrameWindows {
                insert_log: b[102],
                small_log: b[103],
            };
            (u32::from(le16(&b[100..102])), windows)
        } else {
            (le32(&b[100..104]), FrameWindows::default())
        };
        let allowed = match version {
            VERSION_PLAIN => flags == 0 && group == 0,
            VERSION_TRANSFORM => flags == 1 && group == 0,
            VERSION_EROFS
            | VERSION_STREAMS
            | VERSION_WHOLE_STREAMS
            | VERSION_GZIP_STREAMS
            | VERSION_TOOLS_NG => flags == 1 && (1..=MAX_GROUP_CHUNKS).contains(&group),
            VERSION_REFERENCES | VERSION_DECLARED => {
                flags <= 3 && (1..=MAX_GROUP_CHUNKS).contains(&group)
            }
            _ => flags <= 1 && (1..=MAX_GROUP_CHUNKS).contains(&group),
        };
        if !allowed {
            return Err(Error::corrupt(
                path,
                10,
                format!(
                    "flags {flags:#x} or group of {group} chunks not allowed in version {version}"
                ),
            ));
        }
        if le32(&b[12..16]) as usize != HEADER_LEN {
            return Err(Error::corrupt(path, 12, "unexpected header length"));
        }
        let h = Header {
            version,
            transform: flags & 1 == 1,
            references: flags & 2 == 2,
            group,
            old_size: le64(&b[16..24]),
            new_size: le64(&b[24..32]),
            old_hash: b[32..64].try_into().unwrap(),
            new_hash: b[64..96].try_into().unwrap(),
            chunk_size: le32(&b[96..100]),
            chunk_count: le64(&b[104..112]),
            windows,
        };
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&h.chunk_size) {
            return Err(Error::corrupt(
                path,
                96,
                format!("chunk size {} outside the format's limits", h.chunk_size),
            ));
        }
        let widest = max_window_log(h.chunk_size) as u8;
        let window_ok = |log: u8| (MIN_WINDOW_LOG..=widest).contains(&log);
        if version >= VERSION_DECLARED
            && !(window_ok(windows.insert_log) && window_ok(windows.small_log))
        {
            return Err(Error::corrupt(
                path,
                102,
                format!(
                    "frame windows 2^{} and 2^{} outside 2^{MIN_WINDOW_LOG} .. 2^{widest} (twice the chunk size)",
                    windows.insert_log, windows.small_log
                ),
            ));
        }
        if h.chunk_count != Header::chunks_for(h.new_size, h.chunk_size) {
            return Err(Error::corrupt(
                path,
                104,
                "chunk count does not match the output size",
            ));
        }
        Ok(h)
    }
}

/// Reads and checks the header. A file whose first bytes are not the magic is reported as not
/// being a patch even when it is shorter than a header.
pub fn read_header<R: Read>(input: &mut R, path: &Path) -> Result<Header> {
    let mut b = [0u8; HEADER_LEN];
    let got = super::reader::read_full(input, &mut b, path)?;
    let seen = got.min(MAGIC.len());
    if b[..seen] != MAGIC[..seen] {
        return Err(Error::corrupt(path, 0, "not a spindiff patch (bad magic)"));
    }
    if got < HEADER_LEN {
        return Err(Error::TruncatedPatch {
            path: path.to_path_buf(),
            offset: got as u64,
        });
    }
    Header::parse(&b, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u16, windows: FrameWindows) -> Header {
        Header {
            version,
            transform: true,
            references: false,
            group: 64,
            old_size: 5 << 30,
            new_size: 9 << 20,
            old_hash: [1; 32],
            new_hash: [2; 32],
            chunk_size: 4 << 20,
            chunk_count: 3,
            windows,
        }
    }

    #[test]
    fn version_10_declares_its_windows_beside_the_group_and_version_9_keeps_its_layout() {
        let path = Path::new("p.spd");
        let declared = header(VERSION_DECLARED, FrameWindows::new(4 << 20, 256 << 10));
        let b = declared.to_bytes();
        assert_eq!((le16(&b[100..102]), b[102], b[103]), (64, 22, 18));
        assert_eq!(Header::parse(&b, path).unwrap(), declared);
        assert_eq!(declared.window_log(super::super::INSERT), 22);
        assert_eq!(declared.window_log(super::super::CTRL), 18);
        let old = header(VERSION_TOOLS_NG, FrameWindows::default());
        let b = old.to_bytes();
        assert_eq!(le32(&b[100..104]), 64);
        assert_eq!(Header::parse(&b, path).unwrap(), old);
        assert_eq!(old.window_log(super::super::INSERT), 23);
    }
}
