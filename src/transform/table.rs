//! The transform table of one side of a patch (OLD or NEW): the codecs of its file systems and
//! its pieces, as bytes a patch can carry, and back. The pieces tile the file from its start,
//! so offsets are not stored; lengths and codec settings are varints. Decoding is written for a
//! hostile patch: every count is bounded by the bytes left, every length by the format's limits
//! and by the file's size, and nothing is allocated from a count before that check.

use super::codec::{BlockKind, Codec, PCLUSTER_MAX_PLAIN, ZSTD_MAX_WINDOW_LOG};
use super::expand::{FsCodec, Piece, Rebuild};
use crate::format::varint::{Varints, put_varint};

/// Largest data block size squashfs allows (1 MiB).
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// One side's table: what its file systems are compressed with, and its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Per file system.
    pub codecs: Vec<FsCodec>,
    /// The pieces, tiling the file from its start.
    pub pieces: Vec<Piece>,
}

/// Most memory parsing tables of `raw` decoded bytes can take: every piece takes at least two
/// bytes of table and its `Piece` in memory, with the vector's growth.
pub fn parse_memory(raw: u64) -> u64 {
    raw / 2 * 2 * std::mem::size_of::<Piece>() as u64
}

impl Table {
    /// Bytes of the file the pieces tile.
    pub fn file_len(&self) -> u64 {
        self.pieces.iter().map(|p| u64::from(p.len)).sum()
    }

    /// The encoding variants of its zstd blocks to recompress: each names a libzstd release.
    fn zstd_variants(&self) -> impl Iterator<Item = u8> + '_ {
        self.pieces
            .iter()
            .filter_map(|p| match (p.rebuild, p.block) {
                (Rebuild::Recompress { variant, .. }, Some((fs, _)))
                    if self.codecs[usize::from(fs)].codec.is_zstd() =>
                {
                    Some(variant)
                }
                _ => None,
            })
    }

    /// The libzstd release (an encoding variant of a zstd codec) a block to recompress needs
    /// that this build does not have, if any.
    pub fn missing_release(&self) -> Option<u8> {
        self.zstd_variants()
            .find(|&v| !super::zstd_release::available(v))
    }

    /// Whether a piece to recompress has nothing to rebuild it from: a gzip stream whose recipe
    /// has no chunks (as OLD's table holds it; in NEW's, a corrupt table).
    pub fn unrebuildable(&self) -> bool {
        self.pieces.iter().any(|p| match (p.rebuild, p.block) {
            (Rebuild::Recompress { .. }, Some((fs, _))) => matches!(
                &self.codecs[usize::from(fs)].codec,
                Codec::GzipStream(r) if r.chunks.is_empty()
            ),
            _ => false,
        })
    }

    /// The oldest format version that can hold this table: its codecs'
    /// ([`Codec::format_version`]), the encodings of its blocks to recompress
    /// ([`Codec::encoding_version`]: 5 for another libzstd release than the bundled one, 8 for
    /// squashfs-tools-ng's xz metadata blocks), and 6 for whole streams.
    pub fn format_version(&self) -> u16 {
        let codecs = self.codecs.iter().map(|c| c.codec.format_version());
        let encodings = self
            .pieces
            .iter()
            .filter_map(|p| match (p.rebuild, p.block) {
                (Rebuild::Recompress { variant, .. }, Some((fs, kind))) => {
                    let codec = &self.codecs[usize::from(fs)].codec;
                    codec.encoding_version(kind, variant)
                }
                _ => None,
            });
        // an xz stream's block too large to hold is streamed from version 6 on
        let streamed = self.pieces.iter().any(|p| self.is_streamed(p));
        let streamed = streamed.then_some(crate::format::VERSION_WHOLE_STREAMS);
        codecs
            .chain(encodings)
            .chain(streamed)
            .fold(crate::format::VERSION_LINKED, u16::max)
    }

    /// The most plain bytes one of its blocks expands to (0 without blocks); whole streams,
    /// which are never held whole, are not counted ([`Table::is_streamed`]).
    pub fn largest_block(&self) -> u64 {
        let blocks = self
            .pieces
            .iter()
            .filter(|p| p.block.is_some() && !self.is_streamed(p));
        blocks.map(Piece::expanded_len).max().unwrap_or(0)
    }

    /// Whether `piece` is a whole stream ([`Codec::streams`]).
    pub fn is_streamed(&self, piece: &Piece) -> bool {
        piece
            .block
            .is_some_and(|(fs, kind)| self.codecs[usize::from(fs)].codec.streams(kind))
    }

    /// Its codecs that have a block held whole (not a whole stream): those apply decodes or
    /// recompresses a block at a time.
    pub fn block_codecs(&self) -> impl Iterator<Item = &FsCodec> + '_ {
        let mut used = vec![false; self.codecs.len()];
        for p in &self.pieces {
            if let Some((fs, _)) = p.block
                && !self.is_streamed(p)
            {
                used[usize::from(fs)] = true;
            }
        }
        self.codecs
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(c, _)| c)
    }

    /// Bytes of its expanded stream.
    pub fn expanded_len(&self) -> u64 {
        self.pieces.iter().map(Piece::expanded_len).sum()
    }

    /// The table as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, self.codecs.len() as u64);
        for fs in &self.codecs {
            put_codec(&mut out, &fs.codec);
            put_varint(&mut out, u64::from(fs.block_size));
        }
        put_varint(&mut out, self.pieces.len() as u64);
        for p in &self.pieces {
            let (tag, fs, kind) = match p.block {
                None => (0, 0, 0),
                Some((fs, BlockKind::Metadata)) => (1, fs, 0),
                Some((fs, BlockKind::Data | BlockKind::Exact(_))) => (1, fs, 1),
            };
            let how = match p.rebuild {
                Rebuild::Stored => 0,
                Rebuild::CopyOld { .. } => 1,
                Rebuild::Recompress { .. } => 2,
            };
            put_varint(&mut out, how << 2 | tag << 1 | kind);
            put_varint(&mut out, u64::from(p.len));
            if tag == 1 {
                put_varint(&mut out, u64::from(fs));
            }
            match p.rebuild {
                Rebuild::Stored => {}
                Rebuild::CopyOld {
                    old_offset,
                    plain_len,
                } => {
                    put_varint(&mut out, old_offset);
                    put_varint(&mut out, u64::from(plain_len));
                }
                Rebuild::Recompress { variant, plain_len } => {
                    put_varint(&mut out, u64::from(variant));
                    put_varint(&mut out, u64::from(plain_len));
                }
            }
        }
        out
    }

    /// Reads a table of a file of `file_len` bytes whose OLD has `old_len` bytes, checking
    /// everything (see the module doc).
    pub fn parse(b: &[u8], file_len: u64, old_len: u64) -> Result<Table, String> {
        Table::parse_for(b, file_len, old_len, crate::format::FORMAT_VERSION)
    }

    /// [`Table::parse`] of a table in a patch of format `version`: EROFS's codecs only from
    /// version 4 on, xz streams' from 5 ([`Codec::format_version`]).
    pub fn parse_for(b: &[u8], file_len: u64, old_len: u64, version: u16) -> Result<Table, String> {
        let mut r = Reader {
            varints: Varints::new(b, 0),
            len: b.len(),
            version,
        };
        let n_fs = r.count("file system")?;
        // nothing is reserved from a count: entries are pushed as they are read
        let mut codecs = Vec::new();
        for _ in 0..n_fs {
            codecs.push(r.fs_codec()?);
        }
        let n = r.count("piece")?;
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for _ in 0..n {
            let piece = r.piece(offset, &codecs, old_len)?;
            offset += u64::from(piece.len);
            if offset > file_len {
                return Err("transform table: pieces longer than the file".into());
            }
            pieces.push(piece);
        }
        if offset != file_len || r.varints.position() != b.len() {
            return Err("transform table: pieces do not tile the file".into());
        }
        Ok(Table { codecs, pieces })
    }
}

/// Reads a table's varints, each value checked as it comes.
struct Reader<'a> {
    varints: Varints<'a>,
    len: usize,
    /// The patch's format version: codecs newer than it are refused.
    version: u16,
}

impl Reader<'_> {
    fn next(&mut self, what: &str) -> Result<u64, String> {
        self.varints
            .next()
            .ok_or_else(|| format!("transform table: {what} cut short"))
    }

    /// The next `n` bytes as they are.
    fn bytes(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        self.varints
            .bytes(n)
            .ok_or_else(|| format!("transform table: {what} cut short"))
    }

    /// A count of entries: each takes at least a byte, so no count may exceed the table.
    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.next(what)?;
        if n > self.len as u64 {
            return Err(format!(
                "transform table: {what} count {n} larger than the table"
            ));
        }
        Ok(n as usize)
    }

    fn fs_codec(&mut self) -> Result<FsCodec, String> {
        let version = self.version;
        let codec = read_codec(self)?;
        if codec.format_version() > version {
            return Err(format!(
                "transform table: a compressor that does not exist in format version {version}"
            ));
        }
        let block_size = self.next("block size")?;
        if !(4096..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size)
            || !block_size.is_power_of_two()
        {
            return Err(format!("transform table: block size {block_size}"));
        }
        // settings a real image cannot have are refused before any encoder is set up with them
        if let Codec::Xz { dict_size, .. } = codec
            && !super::codec::xz_dictionary_is_real(dict_size, block_size as u32)
        {
            return Err(format!(
                "transform table: an xz dictionary of {dict_size} bytes for blocks of {block_size}"
            ));
        }
        Ok(FsCodec {
            codec,
            block_size: block_size as u32,
        })
    }

    /// Whether a block of `codec` may be a whole stream in this version: a zstd stream's always
    /// (its codec exists from version 6 on), an xz stream's block too large to hold from
    /// version 6 on.
    fn may_stream(&self, codec: &Codec) -> bool {
        codec.is_streamed()
            || matches!(codec, Codec::XzStream(_))
                && self.version >= crate::format::VERSION_WHOLE_STREAMS
    }

    /// The file system and kind of block a piece with head `head` and stored length `len` is,
    /// when it is a block (head bit 1): its file system index read and checked against `codecs`,
    /// its length against its kind's limit.
    fn block_of(
        &mut self,
        head: u64,
        len: u64,
        codecs: &[FsCodec],
    ) -> Result<Option<(u16, BlockKind)>, String> {
        if head & 2 == 0 {
            return Ok(None);
        }
        let fs = usize::try_from(self.next("file system index")?)
            .ok()
            .filter(|&f| f < codecs.len())
            .ok_or("transform table: a block of a file system that is not there")?;
        // an EROFS file system or an xz stream has one kind of block, written as a data
        // block: one of an exact plain length
        let codec = &codecs[fs].codec;
        let (kind, stored_limit) = match (codec.has_exact_blocks(), head & 1 != 0) {
            // a whole stream's limit (a block held whole is checked against its own once
            // its plain length is read)
            (true, true) if self.may_stream(codec) => (
                BlockKind::Exact(0),
                crate::transform::zstdstream::MAX_STORED as usize,
            ),
            (true, true) => (BlockKind::Exact(0), codec.exact_stored_limit() as usize),
            (true, false) => {
                return Err("transform table: a metadata block in EROFS or xz".into());
            }
            (false, true) => (BlockKind::Data, codecs[fs].limit(BlockKind::Data)),
            (false, false) => (BlockKind::Metadata, codecs[fs].limit(BlockKind::Metadata)),
        };
        if len > stored_limit as u64 {
            return Err("transform table: a block longer than its kind allows".into());
        }
        Ok(Some((fs as u16, kind)))
    }

    /// The piece at `offset` of the file.
    fn piece(&mut self, offset: u64, codecs: &[FsCodec], old_len: u64) -> Result<Piece, String> {
        let head = self.next("piece")?;
        let len = self.next("piece length")?;
        if head >> 2 > 2 || len == 0 || len > u64::from(u32::MAX) {
            return Err("transform table: a malformed piece".into());
        }
        let block = self.block_of(head, len, codecs)?;
        let rebuild = match head >> 2 {
            0 => Rebuild::Stored,
            1 => {
                let old_offset = self.next("OLD offset")?;
                if old_offset.checked_add(len).is_none_or(|end| end > old_len) {
                    return Err("transform table: a copied block outside OLD".into());
                }
                Rebuild::CopyOld {
                    old_offset,
                    plain_len: self.plain_len(block, codecs)?,
                }
            }
            _ => {
                let variant = self.next("variant")?;
                if variant > 16 {
                    return Err("transform table: an encoding that does not exist".into());
                }
                Rebuild::Recompress {
                    variant: variant as u8,
                    plain_len: self.plain_len(block, codecs)?,
                }
            }
        };
        // an encoding no version names, or only a newer one than this patch's
        if let (Rebuild::Recompress { variant, .. }, Some((fs, kind))) = (rebuild, block)
            && codecs[usize::from(fs)]
                .codec
                .encoding_version(kind, variant)
                .is_none_or(|v| v > self.version)
        {
            return Err("transform table: an encoding that does not exist".into());
        }
        // a pcluster or an xz block decompresses to exactly its plain length
        let block = match (block, rebuild) {
            (
                Some((fs, BlockKind::Exact(_))),
                Rebuild::CopyOld { plain_len, .. } | Rebuild::Recompress { plain_len, .. },
            ) => Some((fs, BlockKind::Exact(plain_len))),
            (block, _) => block,
        };
        // a gzip stream is rebuilt from its recipe: one (NEW's) covers the piece exactly; OLD's
        // holds none ([`Table::unrebuildable`])
        if let (Some((fs, _)), Rebuild::Recompress { plain_len, .. }) = (block, rebuild)
            && let Codec::GzipStream(recipe) = &codecs[usize::from(fs)].codec
            && !recipe.chunks.is_empty()
            && recipe.plain_len() != u64::from(plain_len)
        {
            return Err("transform table: a gzip recipe that does not cover its stream".into());
        }
        // a block held whole keeps its kind's stored limit
        if let Some((fs, kind)) = block {
            let codec = &codecs[usize::from(fs)].codec;
            if codec.has_exact_blocks()
                && !codec.streams(kind)
                && len > u64::from(codec.exact_stored_limit())
            {
                return Err("transform table: a block longer than its kind allows".into());
            }
        }
        Ok(Piece {
            offset,
            len: len as u32,
            rebuild,
            block,
        })
    }

    /// An expanded block's plain length, within what its kind holds.
    fn plain_len(
        &mut self,
        block: Option<(u16, BlockKind)>,
        codecs: &[FsCodec],
    ) -> Result<u32, String> {
        let (fs, kind) = block.ok_or("transform table: an expanded piece that is not a block")?;
        let v = self.next("plain length")?;
        let codec = &codecs[usize::from(fs)];
        let limit = match kind {
            // a whole stream: up to the format's limit on a piece (its plain bytes are never
            // held whole: they are streamed)
            BlockKind::Exact(_) if self.may_stream(&codec.codec) => u32::MAX as usize,
            BlockKind::Exact(_) => PCLUSTER_MAX_PLAIN as usize,
            kind => codec.limit(kind),
        };
        if v == 0 || v > limit as u64 {
            return Err("transform table: a block's plain length out of bounds".into());
        }
        Ok(v as u32)
    }
}

fn put_codec(out: &mut Vec<u8>, codec: &Codec) {
    match codec {
        Codec::Gzip { level, replayable } => {
            put_varint(out, 1);
            put_varint(out, u64::from(*level) << 1 | u64::from(*replayable));
        }
        Codec::Xz { dict_size, filters } => {
            put_varint(out, 4);
            put_varint(out, u64::from(*dict_size));
            put_varint(out, filters.len() as u64);
            for f in filters {
                put_varint(out, *f);
            }
        }
        Codec::Lz4 { hc } => {
            put_varint(out, 5);
            put_varint(out, u64::from(*hc));
        }
        Codec::Zstd { level } => {
            put_varint(out, 6);
            put_varint(out, crate::format::varint::zigzag(i64::from(*level)));
        }
        Codec::ErofsLz4 { hc, level } => {
            put_varint(out, ErofsCodecId::Lz4 as u64);
            put_varint(out, u64::from(*hc));
            put_varint(out, u64::from(*level));
        }
        Codec::ErofsLzma { dict_size, level } => {
            put_varint(out, ErofsCodecId::Lzma as u64);
            put_varint(out, u64::from(*dict_size));
            put_varint(out, u64::from(*level));
        }
        Codec::ErofsZstd { level, window_log } => {
            put_varint(out, ErofsCodecId::Zstd as u64);
            put_varint(out, crate::format::varint::zigzag(i64::from(*level)));
            put_varint(out, u64::from(*window_log));
        }
        Codec::XzStream(s) => {
            put_varint(out, XZ_STREAM_CODEC_ID);
            put_varint(out, u64::from(s.dict));
            put_varint(out, u64::from(s.level));
            put_varint(out, s.bcj.unwrap_or(0));
            put_varint(out, u64::from(s.check));
        }
        Codec::ZstdStream(s) => {
            put_varint(out, ZSTD_STREAM_CODEC_ID);
            put_varint(out, crate::format::varint::zigzag(i64::from(s.level)));
            let flags =
                u64::from(s.workers) | u64::from(s.checksum) << 1 | u64::from(s.content_size) << 2;
            put_varint(out, flags);
        }
        Codec::GzipStream(r) => {
            put_varint(out, GZIP_STREAM_CODEC_ID);
            put_varint(out, r.header.len() as u64);
            out.extend_from_slice(&r.header);
            put_varint(out, r.chunks.len() as u64);
            for c in &r.chunks {
                put_varint(out, u64::from(c.plain_len));
                put_varint(out, c.corrections.len() as u64);
                out.extend_from_slice(&c.corrections);
            }
        }
        Codec::Unsupported(id) => put_varint(out, u64::from(*id) << 8),
    }
}

/// Codec id of a whole gzip stream in a table, with its recipe: only in patches of format
/// version 7 or later.
const GZIP_STREAM_CODEC_ID: u64 = 21;

/// Codec id of a whole zstd stream in a table: only in patches of format version 6 or later.
const ZSTD_STREAM_CODEC_ID: u64 = 20;

/// Codec id of a whole xz stream's blocks in a table: only in patches of format version 5 or
/// later.
const XZ_STREAM_CODEC_ID: u64 = 19;

/// Codec ids of EROFS's compressors in a table: only in patches of format version 4 or later
/// (a reader of version 3 does not know them).
#[repr(u64)]
enum ErofsCodecId {
    Lzma = 16,
    Lz4 = 17,
    Zstd = 18,
}

/// Reads a codec (of any version: the caller checks [`Codec::format_version`]).
fn read_codec(r: &mut Reader<'_>) -> Result<Codec, String> {
    let id = r.next("codec")?;
    if id == GZIP_STREAM_CODEC_ID {
        return read_gzip_stream(r);
    }
    let next = &mut |what: &str| r.next(what);
    Ok(match id {
        1 => {
            let v = next("gzip settings")?;
            let level = v >> 1;
            if !(1..=9).contains(&level) {
                return Err("transform table: gzip level out of range".into());
            }
            Codec::Gzip {
                level: level as u32,
                replayable: v & 1 == 1,
            }
        }
        4 => {
            let dict_size = next("xz dictionary")?;
            let n = next("xz filters")?;
            if dict_size > u64::from(u32::MAX) || n > 8 {
                return Err("transform table: xz settings out of range".into());
            }
            let filters = (0..n)
                .map(|_| next("xz filter"))
                .collect::<Result<Vec<u64>, String>>()?;
            if filters.iter().any(|&f| !(0x04..=0x0b).contains(&f)) {
                return Err("transform table: an xz filter that does not exist".into());
            }
            Codec::Xz {
                dict_size: dict_size as u32,
                filters,
            }
        }
        5 => match next("lz4 settings")? {
            hc @ (0 | 1) => Codec::Lz4 { hc: hc == 1 },
            _ => return Err("transform table: lz4 settings out of range".into()),
        },
        6 => {
            let level = crate::format::varint::unzigzag(next("zstd level")?);
            if !(1..=22).contains(&level) {
                return Err("transform table: zstd level out of range".into());
            }
            Codec::Zstd {
                level: level as i32,
            }
        }
        16 => {
            let dict_size = next("lzma dictionary")?;
            let level = next("lzma level")?;
            // mkfs.erofs: a dictionary of at most 8 pclusters (8 MiB), presets 0-9 (+100 extreme)
            if !(4096..=8 << 20).contains(&dict_size)
                || !(level <= 9 || (100..=109).contains(&level))
            {
                return Err("transform table: EROFS lzma settings out of range".into());
            }
            Codec::ErofsLzma {
                dict_size: dict_size as u32,
                level: level as u32,
            }
        }
        17 => {
            let hc = next("lz4 variant")?;
            let level = next("lz4hc level")?;
            // lz4 (level 0) or lz4hc at levels 1-12
            if hc > 1 || (hc == 1) != (1..=12).contains(&level) || (hc == 0 && level != 0) {
                return Err("transform table: EROFS lz4 settings out of range".into());
            }
            Codec::ErofsLz4 {
                hc: hc == 1,
                level: level as u32,
            }
        }
        18 => {
            let level = crate::format::varint::unzigzag(next("zstd level")?);
            let window_log = next("zstd window")?;
            // mkfs.erofs: levels up to 22 (zstd's 1-22), a window of at most one pcluster
            if !(1..=22).contains(&level)
                || !(10..=u64::from(ZSTD_MAX_WINDOW_LOG)).contains(&window_log)
            {
                return Err("transform table: EROFS zstd settings out of range".into());
            }
            Codec::ErofsZstd {
                level: level as i32,
                window_log: window_log as u32,
            }
        }
        XZ_STREAM_CODEC_ID => read_xz_stream(next)?,
        ZSTD_STREAM_CODEC_ID => read_zstd_stream(next)?,
        v if v & 0xff == 0 && v >> 8 <= u64::from(u16::MAX) => Codec::Unsupported((v >> 8) as u16),
        _ => return Err("transform table: a compressor that does not exist".into()),
    })
}

/// Reads an xz stream's settings (codec 19), refusing any a stream the reader expands cannot
/// have.
fn read_xz_stream(next: &mut impl FnMut(&str) -> Result<u64, String>) -> Result<Codec, String> {
    let (dict, level) = (next("xz dictionary")?, next("xz preset")?);
    let (bcj, check) = (next("xz filter")?, next("xz check")?);
    let settings = crate::transform::xzstream::Settings {
        dict: u32::try_from(dict).unwrap_or(0),
        level: u32::try_from(level).unwrap_or(u32::MAX),
        bcj: (bcj != 0).then_some(bcj),
        check: u8::try_from(check).unwrap_or(u8::MAX),
    };
    if !crate::transform::xzstream::settings_are_real(&settings) {
        return Err("transform table: xz stream settings out of range".into());
    }
    Ok(Codec::XzStream(settings))
}

/// Reads a zstd stream's settings (codec 20), refusing any a frame this reader expands cannot
/// have.
fn read_zstd_stream(next: &mut impl FnMut(&str) -> Result<u64, String>) -> Result<Codec, String> {
    let level = crate::format::varint::unzigzag(next("zstd level")?);
    let flags = next("zstd stream flags")?;
    let settings = crate::transform::zstdstream::Settings {
        level: i32::try_from(level).unwrap_or(0),
        workers: flags & 1 != 0,
        checksum: flags & 2 != 0,
        content_size: flags & 4 != 0,
    };
    if flags > 7 || !crate::transform::zstdstream::settings_are_real(&settings) {
        return Err("transform table: zstd stream settings out of range".into());
    }
    Ok(Codec::ZstdStream(settings))
}

/// Reads a gzip stream's recipe (codec 21): its header, then its chunks, each length checked
/// against the bytes left before anything is taken, the whole refused unless a diff could have
/// written it ([`crate::transform::gzipstream::recipe_is_real`]).
fn read_gzip_stream(r: &mut Reader<'_>) -> Result<Codec, String> {
    use crate::transform::gzipstream::{
        CHUNK_PLAIN, Chunk, MAX_HEADER, MAX_RECIPE, Recipe, recipe_is_real,
    };
    let header_len = r.next("gzip header length")?;
    if header_len > MAX_HEADER as u64 {
        return Err("transform table: a gzip header longer than it may be".into());
    }
    let header = r.bytes(header_len as usize, "gzip header")?.to_vec();
    let n = r.count("gzip chunk")?;
    let mut chunks = Vec::new();
    let mut held = header_len;
    for _ in 0..n {
        let plain_len = r.next("gzip chunk length")?;
        let len = r.next("gzip corrections length")?;
        held = held.saturating_add(len);
        if plain_len > CHUNK_PLAIN as u64 || held > MAX_RECIPE {
            return Err("transform table: a gzip chunk out of bounds".into());
        }
        let corrections = r.bytes(len as usize, "gzip corrections")?.to_vec();
        chunks.push(Chunk {
            plain_len: plain_len as u32,
            corrections,
        });
    }
    let recipe = Recipe { header, chunks };
    if !recipe_is_real(&recipe) {
        return Err("transform table: a gzip recipe out of range".into());
    }
    Ok(Codec::GzipStream(std::sync::Arc::new(recipe)))
}
