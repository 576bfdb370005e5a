//! The compressors of squashfs blocks: decompression of untrusted blocks into bounded buffers,
//! and recompression that replays mksquashfs's encoders bit for bit. The encoders are built
//! from pinned sources (zlib through libz-sys `static`, liblzma through liblzma-sys `static`,
//! LZ4 through lz4-sys, zstd through the zstd crate), never the machine's libraries, so that a
//! block that recompresses here recompresses the same everywhere; a golden test of fixed
//! blocks' hashes catches an upgrade that changes an encoder's output.
//!
//! Only a block whose recompression gives back exactly its stored bytes is ever recompressed on
//! apply; any other block stays as its stored bytes.

use std::os::raw::{c_char, c_int};

/// What kind of block: metadata blocks hold at most 8 KiB (mksquashfs's xz compresses them with
/// an 8 KiB dictionary, squashfs-tools-ng's with the file system's); data and fragment blocks
/// hold at most the block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// A metadata block (tables: inodes, directories, fragments, ids, exports, xattrs).
    Metadata,
    /// A data or fragment block.
    Data,
    /// A block that decompresses to exactly this many bytes (0 where that is not known: a
    /// block kept as stored), and is recompressed to exactly its stored length: an EROFS
    /// physical cluster (pcluster: whole file system blocks, the stream at their end behind
    /// zeros, EROFS's 0padding) or a block of an xz stream (header, data, padding and check).
    Exact(u32),
}

impl BlockKind {
    /// The most plain bytes a block of this kind holds in a file system of `block_size` blocks
    /// (a pcluster: exactly its length).
    pub fn plain_limit(self, block_size: u32) -> usize {
        match self {
            BlockKind::Metadata => METADATA_SIZE,
            BlockKind::Data => block_size as usize,
            BlockKind::Exact(plain) => plain as usize,
        }
    }
}

/// The most bytes an EROFS pcluster decompresses to (erofs_fs.h, `Z_EROFS_PCLUSTER_MAX_DSIZE`).
pub const PCLUSTER_MAX_PLAIN: u32 = 12 << 20;
/// The most bytes an EROFS pcluster takes on disk (`Z_EROFS_PCLUSTER_MAX_SIZE`).
pub const PCLUSTER_MAX_STORED: u32 = 1 << 20;

/// Bytes of a metadata block, uncompressed.
pub const METADATA_SIZE: usize = 8192;

/// The encoding variant of an xz metadata block compressed with the file system's dictionary,
/// as squashfs-tools-ng's gensquashfs and tar2sqfs write every block (variant 0: mksquashfs's,
/// with a dictionary of the block's 8 KiB). Named in a table from format version 8 on.
pub const XZ_TOOLS_NG_METADATA: u8 = 1;
/// Encodings of an xz metadata block: mksquashfs's and squashfs-tools-ng's.
const XZ_METADATA_VARIANTS: u8 = 2;

/// A squashfs compressor with the settings the superblock and its options give.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Codec {
    /// zlib (squashfs "gzip") at `level`; `replayable` when the window is 15 bits and no
    /// strategies were chosen (mksquashfs's defaults, the only settings replayed so far; other
    /// images keep their blocks as stored).
    Gzip {
        /// zlib level.
        level: u32,
        /// Whether the settings are ones `compress2` replays.
        replayable: bool,
    },
    /// xz: LZMA2 at preset 6 with `dict_size` for data blocks, optionally behind BCJ filters
    /// (`filters`: the filter ids mksquashfs tried per data block, keeping the smallest).
    Xz {
        /// Dictionary size for data blocks.
        dict_size: u32,
        /// BCJ filter ids tried beside plain LZMA2.
        filters: Vec<u64>,
    },
    /// LZ4 block format; `hc` for `-Xhc`.
    Lz4 {
        /// High compression (`LZ4_compress_HC` at its top level).
        hc: bool,
    },
    /// zstd at `level`.
    Zstd {
        /// zstd level.
        level: i32,
    },
    /// EROFS's LZ4: LZ4 blocks of a fixed output size (`LZ4_compress_destSize`, or
    /// `LZ4_compress_HC_destSize` at `level` for lz4hc), behind 0padding.
    ErofsLz4 {
        /// lz4hc rather than lz4.
        hc: bool,
        /// lz4hc's level (1-12; 0 for plain lz4); not recorded in the image: found by trying.
        level: u32,
    },
    /// EROFS's LZMA: MicroLZMA streams of a fixed output size (`lzma_microlzma_encoder`), at
    /// the LZMA preset `level` (0-9, +100 for extreme) with `dict_size`, behind 0padding.
    ErofsLzma {
        /// Dictionary size (the file system's LZMA configuration).
        dict_size: u32,
        /// The preset mkfs.erofs used (not recorded in the image: found by trying).
        level: u32,
    },
    /// EROFS's zstd: one zstd frame of a pcluster's plain bytes (`ZSTD_compress2` at `level`
    /// with `window_log`; mkfs.erofs searches the input length, then compresses exactly it),
    /// behind 0padding. Bit for bit only with the libzstd version that made the image.
    ErofsZstd {
        /// zstd level (not recorded in the image: found by trying).
        level: i32,
        /// `ZSTD_c_windowLog`: the file system's zstd configuration.
        window_log: u32,
    },
    /// The blocks of a whole xz stream (an initrd): LZMA2 at a preset, behind a BCJ filter or
    /// not, each block with its header, padding and check (see [`super::xzstream`]).
    XzStream(super::xzstream::Settings),
    /// A whole zstd stream (an initrd), one frame: one region, recompressed as a stream
    /// ([`super::zstdstream`]); the encoding variant names the libzstd release.
    ZstdStream(super::zstdstream::Settings),
    /// A whole gzip member (an initrd): one region, rebuilt from its plain bytes and the
    /// predictor's corrections its recipe holds ([`super::gzipstream`]).
    GzipStream(std::sync::Arc<super::gzipstream::Recipe>),
    /// A compressor spindiff does not read (lzo, legacy lzma): the image stays opaque.
    Unsupported(u16),
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Codec {
    /// The codec of a superblock's `compression_id`, with its options block's contents (if
    /// the superblock says there is one) and the image's block size. Options a real mksquashfs
    /// cannot write (an xz dictionary outside 4 KiB..=the block size or not of the form 2^n or
    /// 2^n + 2^(n-1), levels out of range, unknown flags, window sizes or versions) give
    /// [`Codec::Unsupported`]: the file system stays opaque, and no encoder is ever set up from
    /// a claim an image made up.
    pub fn from_superblock(id: u16, options: Option<&[u8]>, block_size: u32) -> Codec {
        let codec = match (id, options) {
            (1, None) => Some(Codec::Gzip {
                level: 9,
                replayable: true,
            }),
            (1, Some(o)) if o.len() >= 8 => {
                let (level, window, strategies) = (le32(o), le16(&o[4..]), le16(&o[6..]));
                // mksquashfs: -Xcompression-level 1..9, -Xwindow-size 8..15, five strategies
                ((1..=9).contains(&level) && (8..=15).contains(&window) && strategies & !0x1f == 0)
                    .then_some(Codec::Gzip {
                        level,
                        replayable: window == 15 && strategies == 0,
                    })
            }
            (4, None) => Some(Codec::Xz {
                dict_size: block_size,
                filters: Vec::new(),
            }),
            (4, Some(o)) if o.len() >= 8 => {
                let (dict_size, flags) = (le32(o), le32(&o[4..]));
                // mksquashfs's BCJ filters in the order of its -Xbcj table
                let ids = [0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b];
                let filters = (0..ids.len())
                    .filter(|i| flags & (1 << i) != 0)
                    .map(|i| ids[i])
                    .collect();
                (xz_dictionary_is_real(dict_size, block_size) && flags & !0xff == 0)
                    .then_some(Codec::Xz { dict_size, filters })
            }
            (5, Some(o)) if o.len() >= 8 => {
                // version 1 (LZ4_LEGACY), the one flag -Xhc
                let (version, flags) = (le32(o), le32(&o[4..]));
                (version == 1 && flags & !1 == 0).then_some(Codec::Lz4 { hc: flags & 1 != 0 })
            }
            (6, None) => Some(Codec::Zstd { level: 15 }),
            (6, Some(o)) if o.len() >= 4 => {
                let level = le32(o);
                (1..=22).contains(&level).then_some(Codec::Zstd {
                    level: level as i32,
                })
            }
            _ => None,
        };
        codec.unwrap_or(Codec::Unsupported(id))
    }

    /// Most memory one [`Codec::compress`] of a block of at most `limit` bytes takes: the
    /// encoder's state and its output buffer. The settings are bounded by what a real image
    /// can hold ([`Codec::from_superblock`], and the same checks on a patch's tables), so this
    /// is too.
    pub fn encoder_memory(&self, limit: usize) -> u64 {
        let out = limit as u64 + (limit as u64 >> 8) + (64 << 10);
        out + match self {
            // deflate's window and hash chains at windowBits 15, memLevel 8, and its state
            Codec::Gzip { .. } => 320 << 10,
            Codec::Xz { dict_size, .. } => xz_encoder_memory(*dict_size).unwrap_or(u64::MAX / 4),
            // LZ4_streamHC_t and LZ4_stream_t are under 300 KiB
            Codec::Lz4 { .. } => 320 << 10,
            Codec::Zstd { level } => zstd_encoder_memory(*level, limit),
            Codec::ErofsLzma { dict_size, level } => {
                xz_encoder_memory_at(*dict_size, *level).unwrap_or(u64::MAX / 4)
            }
            // LZ4_streamHC_t, and the output buffer already counted
            Codec::ErofsLz4 { .. } => 320 << 10,
            Codec::ErofsZstd { level, window_log } => {
                zstd_encoder_memory_at(*level, limit, Some(*window_log))
            }
            // the encoder, and the LZMA2 data it writes before the block is put together
            Codec::XzStream(s) => {
                xz_encoder_memory_at(s.dict, s.level).unwrap_or(u64::MAX / 4) + limit as u64
            }
            // streamed, never held whole: the most its encoder takes whatever the stream's
            // length (what a stream of a known length takes: `stream::encoder_memory`)
            Codec::ZstdStream(s) => return super::zstdstream::encoder_memory(s, u64::MAX),
            Codec::GzipStream(_) => return super::gzipstream::most_encoder_memory(),
            Codec::Unsupported(_) => 0,
        }
    }

    /// The most [`Codec::encoder_memory`] and [`Codec::decoder_memory`] together of any codec
    /// with settings a real image can hold (with `exact`, EROFS's and xz streams' too), for
    /// blocks of at most `limit` bytes (a bound known before a patch's tables are read).
    pub fn most_memory(limit: usize, exact: bool) -> u64 {
        let dict = (limit as u32).clamp(8192, 1 << 20); // a squashfs block: at most 1 MiB
        let erofs_codecs = [
            // the largest dictionary a table may name, at the extreme preset 9
            Codec::ErofsLzma {
                dict_size: 8 << 20,
                level: 109,
            },
            Codec::ErofsLz4 {
                hc: true,
                level: 12,
            },
            Codec::ErofsZstd {
                level: 22,
                window_log: ZSTD_MAX_WINDOW_LOG,
            },
            Codec::XzStream(super::xzstream::Settings {
                dict: super::xzstream::MAX_DICT,
                level: 109,
                bcj: Some(liblzma_sys::LZMA_FILTER_X86),
                check: 4,
            }),
            Codec::ZstdStream(super::zstdstream::Settings {
                level: 19,
                workers: true,
                checksum: true,
                content_size: true,
            }),
        ];
        let squashfs_codecs = [
            Codec::Gzip {
                level: 9,
                replayable: true,
            },
            Codec::Xz {
                dict_size: dict,
                filters: Vec::new(),
            },
            Codec::Lz4 { hc: true },
            Codec::Zstd { level: 22 },
        ];
        let read = if exact { &erofs_codecs[..] } else { &[] };
        squashfs_codecs
            .iter()
            .chain(read)
            .map(|c| c.encoder_memory(limit) + c.decoder_memory())
            .max()
            .unwrap_or(0)
    }

    /// The codec as OLD's table holds it: what decoding needs (a gzip stream's recipe, NEW's
    /// alone, reduced to its header).
    pub fn for_decoding(&self) -> Codec {
        match self {
            Codec::GzipStream(r) => Codec::GzipStream(std::sync::Arc::new(r.for_decoding())),
            c => c.settled(),
        }
    }

    /// Whether it is a zstd frame's settings whose level parsing left to expansion
    /// ([`super::zstdstream::DEFERRED`]).
    pub fn is_deferred(&self) -> bool {
        matches!(self, Codec::ZstdStream(s) if s.is_deferred())
    }

    /// The codec as a table holds it: a zstd frame's level parsing left to expansion
    /// ([`super::zstdstream::DEFERRED`]) is the fallback level.
    pub fn settled(&self) -> Codec {
        match self {
            Codec::ZstdStream(s) => Codec::ZstdStream(s.settled()),
            c => c.clone(),
        }
    }

    /// Whether it is zstd (squashfs's or EROFS's): its encoding variant names a libzstd release
    /// ([`super::zstd_release`]).
    pub fn is_zstd(&self) -> bool {
        matches!(
            self,
            Codec::Zstd { .. } | Codec::ErofsZstd { .. } | Codec::ZstdStream(_)
        )
    }

    /// Whether every block of it is a whole stream, fed through one encoder as its plain bytes
    /// come and decompressed as a stream ([`super::stream`]), never held whole in memory.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Codec::ZstdStream(_) | Codec::GzipStream(_))
    }

    /// Whether its block of `kind` is a whole stream ([`super::stream::streams`]: a zstd frame,
    /// or an xz stream's block too large to hold).
    pub fn streams(&self, kind: BlockKind) -> bool {
        super::stream::streams(self, kind)
    }

    /// What it compresses, for people: `squashfs xz`, `EROFS lzma`, `xz stream`, ...
    pub fn kind_name(&self) -> &'static str {
        match self {
            Codec::Gzip { .. } => "squashfs gzip",
            Codec::Xz { .. } => "squashfs xz",
            Codec::Lz4 { .. } => "squashfs lz4",
            Codec::Zstd { .. } => "squashfs zstd",
            Codec::ErofsLz4 { .. } => "EROFS lz4",
            Codec::ErofsLzma { .. } => "EROFS lzma",
            Codec::ErofsZstd { .. } => "EROFS zstd",
            Codec::XzStream(_) => "xz stream",
            Codec::ZstdStream(_) => "zstd stream",
            Codec::GzipStream(_) => "gzip stream",
            Codec::Unsupported(_) => "unsupported",
        }
    }

    /// Whether its blocks decompress to exact lengths of their own ([`BlockKind::Exact`]: EROFS
    /// pclusters and xz streams' blocks) rather than at most a block size.
    pub fn has_exact_blocks(&self) -> bool {
        matches!(
            self,
            Codec::ErofsLzma { .. }
                | Codec::ErofsLz4 { .. }
                | Codec::ErofsZstd { .. }
                | Codec::XzStream(_)
                | Codec::ZstdStream(_)
                | Codec::GzipStream(_)
        )
    }

    /// The most stored bytes of one of its [`BlockKind::Exact`] blocks.
    pub fn exact_stored_limit(&self) -> u32 {
        match self {
            Codec::XzStream(_) => super::xzstream::MAX_BLOCK_STORED,
            Codec::ZstdStream(_) => super::zstdstream::MAX_STORED,
            Codec::GzipStream(_) => super::gzipstream::MAX_STORED,
            _ => PCLUSTER_MAX_STORED,
        }
    }

    /// The oldest patch format version whose tables can name it: squashfs's compressors from
    /// version 2, EROFS's from 4, xz streams from 5, zstd streams from 6.
    pub fn format_version(&self) -> u16 {
        use crate::format::{
            VERSION_EROFS, VERSION_GZIP_STREAMS, VERSION_STREAMS, VERSION_TRANSFORM,
            VERSION_WHOLE_STREAMS,
        };
        match self {
            Codec::ErofsLzma { .. } | Codec::ErofsLz4 { .. } | Codec::ErofsZstd { .. } => {
                VERSION_EROFS
            }
            Codec::XzStream(_) => VERSION_STREAMS,
            Codec::ZstdStream(_) => VERSION_WHOLE_STREAMS,
            Codec::GzipStream(_) => VERSION_GZIP_STREAMS,
            _ => VERSION_TRANSFORM,
        }
    }

    /// The oldest patch format version whose tables can name encoding `variant` of a block of
    /// `kind` of this codec, or `None` when no version can (the read side refuses a table
    /// naming it, the write side writes the newest such version a table needs): another
    /// libzstd release than the bundled one from version 5; an xz metadata block has two
    /// encodings, squashfs-tools-ng's ([`XZ_TOOLS_NG_METADATA`]) from version 8.
    pub fn encoding_version(&self, kind: BlockKind, variant: u8) -> Option<u16> {
        use crate::format::{VERSION_STREAMS, VERSION_TOOLS_NG, VERSION_TRANSFORM};
        match (self, kind) {
            (Codec::Xz { .. }, BlockKind::Metadata) => match variant {
                0 => Some(VERSION_TRANSFORM),
                XZ_TOOLS_NG_METADATA => Some(VERSION_TOOLS_NG),
                _ => None,
            },
            _ if self.is_zstd() && variant > 0 => Some(VERSION_STREAMS),
            _ => Some(VERSION_TRANSFORM),
        }
    }

    /// Most memory one [`Codec::decompress`] takes besides its output (whatever the block's
    /// size): an LZMA decoder's is its dictionary's ([`xz_decoder_limit`]; an xz block whose
    /// header asks for more than the file system's dictionary is refused).
    pub fn decoder_memory(&self) -> u64 {
        match self {
            Codec::Xz { dict_size, .. } => xz_decoder_limit(*dict_size),
            Codec::ErofsLzma { dict_size, .. } => xz_decoder_limit(*dict_size),
            Codec::XzStream(s) => xz_decoder_limit(s.dict),
            Codec::ZstdStream(_) => super::zstdstream::decoder_memory(),
            Codec::GzipStream(_) => super::gzipstream::decoder_memory(),
            _ => 256 << 10,
        }
    }

    /// Decompresses `stored` into `out` (cleared), refusing more than `max` bytes (an EROFS
    /// pcluster decompresses to exactly `max`, its [`BlockKind::Exact`] length).
    pub fn decompress(&self, stored: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        out.resize(max, 0);
        let n = match self {
            Codec::Gzip { .. } => inflate(stored, out)?,
            Codec::Xz { dict_size, .. } => unxz(stored, xz_decoder_limit(*dict_size), out)?,
            Codec::Lz4 { .. } => unlz4(stored, out)?,
            Codec::Zstd { .. } => zstd::bulk::decompress_to_buffer(stored, &mut out[..])
                .map_err(|e| format!("zstd: {e}"))?,
            Codec::ErofsLzma { dict_size, .. } => unmicrolzma(stored, *dict_size, out)?,
            Codec::ErofsLz4 { .. } => {
                // exactly the pcluster's plain length
                let n = unlz4(after_padding(stored), out)?;
                if n != out.len() {
                    return Err("an lz4 pcluster shorter than its extent".into());
                }
                n
            }
            Codec::ErofsZstd { .. } => unzstd_frame(after_padding(stored), out)?,
            Codec::XzStream(s) => super::xzstream::decode_block(s, stored, out)?,
            Codec::ZstdStream(_) | Codec::GzipStream(_) => {
                super::stream::decode_all(self, stored, out)?
            }
            Codec::Unsupported(id) => return Err(format!("compressor {id} is not supported")),
        };
        out.truncate(n);
        Ok(())
    }

    /// Recompresses `plain` as mksquashfs would for a block of `kind` (at most `limit` bytes
    /// stored) and returns which of its candidate encodings gives exactly `stored`, if any,
    /// trying encoding `first` before the others.
    pub fn reproduces(
        &self,
        plain: &[u8],
        stored: &[u8],
        kind: BlockKind,
        limit: usize,
        first: u8,
    ) -> Option<u8> {
        // An xz block names its filters: only the encoding that used them can reproduce it.
        let hinted = match self {
            Codec::Xz { filters, .. } => match (kind, xz_first_filter(stored)) {
                // a metadata block's dictionary tells the tools that made it apart: both tried
                (BlockKind::Metadata, Some(liblzma_sys::LZMA_FILTER_LZMA2)) => None,
                (_, Some(liblzma_sys::LZMA_FILTER_LZMA2)) => Some(0),
                (_, Some(id)) => filters.iter().position(|&f| f == id).map(|i| i as u8 + 1),
                (_, None) => None,
            },
            // an xz stream's block header says its encoding (its length, and sizes or not)
            Codec::XzStream(_) => Some(super::xzstream::variant_of(stored)?),
            _ => None,
        };
        let candidates: Vec<u8> = match hinted {
            Some(v) if v < self.variants(kind) => vec![v],
            _ => {
                let rest = (0..self.variants(kind)).filter(|&v| v != first);
                std::iter::once(first)
                    .filter(|&f| f < self.variants(kind))
                    .chain(rest)
                    .collect()
            }
        };
        let limit = match kind {
            BlockKind::Exact(_) => stored.len(),
            _ => limit,
        };
        candidates.into_iter().find(|&v| {
            self.compress(plain, kind, v, limit)
                .is_some_and(|c| c == stored)
        })
    }

    /// How many encodings mksquashfs tries for a block of `kind` (xz: plain LZMA2 and each
    /// BCJ filter, for data blocks; for metadata blocks, mksquashfs's dictionary and
    /// squashfs-tools-ng's).
    fn variants(&self, kind: BlockKind) -> u8 {
        match (self, kind) {
            (Codec::Xz { filters, .. }, BlockKind::Data) => 1 + filters.len() as u8,
            (Codec::Xz { .. }, BlockKind::Metadata) => XZ_METADATA_VARIANTS,
            (Codec::XzStream(_), _) => 1 + (super::xzstream::MAX_HEADER_LEN / 4) as u8,
            // the libzstd releases this build has (the bundled one first)
            (Codec::Zstd { .. } | Codec::ErofsZstd { .. } | Codec::ZstdStream(_), _) => {
                super::zstd_release::variants()
            }
            (Codec::Unsupported(_), _)
            | (
                Codec::Gzip {
                    replayable: false, ..
                },
                _,
            ) => 0,
            _ => 1,
        }
    }

    /// `plain` compressed with encoding `variant` as mksquashfs does for `kind`; `None` when it
    /// does not fit `limit` (mksquashfs then stores the block uncompressed). For an EROFS
    /// pcluster `limit` is its stored length, which the result then has exactly (zeros, then
    /// the stream), as mkfs.erofs writes it.
    pub fn compress(
        &self,
        plain: &[u8],
        kind: BlockKind,
        variant: u8,
        limit: usize,
    ) -> Option<Vec<u8>> {
        let out = match self {
            Codec::Gzip { level, .. } => deflate(plain, *level)?,
            Codec::Xz { dict_size, filters } => {
                // a variant a patch names need not exist: no encoding, never a panic
                let (dict, bcj) = match (kind, variant) {
                    (BlockKind::Metadata, 0) => (METADATA_SIZE as u32, None),
                    (BlockKind::Metadata, XZ_TOOLS_NG_METADATA) => (*dict_size, None),
                    (BlockKind::Metadata, _) => return None,
                    (_, 0) => (*dict_size, None),
                    (_, v) => (*dict_size, Some(*filters.get(usize::from(v) - 1)?)),
                };
                xz(plain, dict, bcj, limit)?
            }
            Codec::Lz4 { hc } => lz4(plain, *hc, limit)?,
            Codec::Zstd { level } if variant == 0 => zstd::bulk::compress(plain, *level).ok()?,
            Codec::Zstd { level } => {
                let call = super::zstd_release::Call::CompressCctx { level: *level };
                super::zstd_release::compress(variant, plain, call)?
            }
            // the whole pcluster: exactly `limit` bytes
            Codec::ErofsLzma { dict_size, level } => microlzma(plain, *dict_size, *level, limit)?,
            Codec::ErofsLz4 { hc, level } => lz4_destsize(plain, (*hc, *level), limit)?,
            Codec::ErofsZstd { level, window_log } => {
                erofs_zstd(plain, (*level, *window_log, variant), limit)?
            }
            Codec::XzStream(s) => super::xzstream::encode_block(s, plain, variant, limit)?,
            Codec::ZstdStream(_) | Codec::GzipStream(_) => {
                super::stream::encode_all(self, variant, plain)?
            }
            Codec::Unsupported(_) => return None,
        };
        (out.len() <= limit).then_some(out)
    }
}

/// Inflates a squashfs gzip block (a zlib stream) into `out`, returning its plain length: with
/// libdeflate, a decompressor per thread (about 32 KiB), 2-3 times zlib's speed (OLD's blocks are
/// inflated for every copy a chunk makes from them, on both sides). The bytes are the stream's,
/// whatever inflates it; a stream that does not fit `out`, or is not zlib, is an error.
fn inflate(stored: &[u8], out: &mut [u8]) -> Result<usize, String> {
    thread_local! {
        static INFLATER: std::cell::RefCell<libdeflater::Decompressor> =
            std::cell::RefCell::new(libdeflater::Decompressor::new());
    }
    INFLATER.with(|d| {
        d.borrow_mut()
            .zlib_decompress(stored, out)
            .map_err(|e| format!("zlib: {e}"))
    })
}

fn deflate(plain: &[u8], level: u32) -> Option<Vec<u8>> {
    // SAFETY: compressBound has no preconditions.
    let bound = unsafe { libz_sys::compressBound(plain.len() as libz_sys::uLong) };
    let mut out = vec![0u8; bound as usize];
    let mut len = bound as libz_sys::uLongf;
    // compress2 is deflateInit2(level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY): mksquashfs's
    // settings when the image records no gzip options.
    // SAFETY: `out` holds `bound` bytes, enough for any input of this length.
    let r = unsafe {
        libz_sys::compress2(
            out.as_mut_ptr(),
            &mut len,
            plain.as_ptr(),
            plain.len() as libz_sys::uLong,
            level as c_int,
        )
    };
    if r != libz_sys::Z_OK {
        return None;
    }
    out.truncate(len as usize);
    Some(out)
}

/// Whether an xz dictionary size is one mksquashfs writes for `block_size`: at least 4 KiB
/// (LZMA2's smallest; the default, the block size, is 4 KiB for 4 KiB blocks), at most the
/// block size, and 2^n or 2^n + 2^(n-1) (its -Xdict-size rounds to those).
pub fn xz_dictionary_is_real(dict: u32, block_size: u32) -> bool {
    let n = 31 - dict.max(1).leading_zeros();
    let form = dict == 1 << n || (n > 0 && dict == (1 << n) + (1 << (n - 1)));
    (4096..=block_size).contains(&dict) && form
}

/// The memory of a liblzma decoder (LZMA or LZMA2, raw or in an xz stream) with the dictionary
/// `dict`: that dictionary and the decoder's state (liblzma's LZMA2 decoder takes about 30 KiB
/// besides its dictionary, the stream and block decoders and a BCJ filter a few KiB more). It is
/// the memory limit given to the xz decoder of a squashfs block whose file system names `dict`
/// (at most the block size, and 2^n or 2^n + 2^(n-1), which LZMA2's properties store exactly:
/// [`xz_dictionary_is_real`]): mksquashfs and squashfs-tools-ng write every block with the file
/// system's dictionary; a block whose header asks for more does not decompress. Until issue 22
/// that limit was twice the block and 1 MiB (3 MiB for 1 MiB blocks, where the decoder takes
/// 1.03).
pub fn xz_decoder_limit(dict: u32) -> u64 {
    u64::from(dict) + (256 << 10)
}

/// What liblzma says its encoder for LZMA2 at preset 6 with `dict` takes (a BCJ filter in
/// front adds a few KiB, within the margin).
fn xz_encoder_memory(dict: u32) -> Option<u64> {
    xz_encoder_memory_at(dict, 6)
}

/// LZMA options at preset `level` (0-9, +100 for extreme) with `dict`; `None` for a level
/// liblzma does not know.
pub(crate) fn lzma_options(level: u32, dict: u32) -> Option<liblzma_sys::lzma_options_lzma> {
    let preset = match level {
        0..=9 => level,
        100..=109 => (level - 100) | liblzma_sys::LZMA_PRESET_EXTREME,
        _ => return None,
    };
    // SAFETY: a zeroed lzma_options_lzma is what lzma_lzma_preset expects to fill.
    let mut opt: liblzma_sys::lzma_options_lzma = unsafe { std::mem::zeroed() };
    // SAFETY: `opt` is a valid options struct.
    if unsafe { liblzma_sys::lzma_lzma_preset(&mut opt, preset) } != 0 {
        return None;
    }
    opt.dict_size = dict;
    Some(opt)
}

/// What liblzma says its LZMA encoder at preset `level` with `dict` takes.
fn xz_encoder_memory_at(dict: u32, level: u32) -> Option<u64> {
    let mut chain = LzmaChain::new(None, dict, level)?;
    let filters = chain.filters();
    // SAFETY: the chain ends with LZMA_VLI_UNKNOWN and its options point into `chain`, alive
    // for the call; the function only reads them.
    let usage = unsafe { liblzma_sys::lzma_raw_encoder_memusage(filters.as_ptr()) };
    // UINT64_MAX is liblzma's "invalid options"; the stream's header and check add little
    (usage != u64::MAX).then_some(usage + (64 << 10))
}

/// What zstd says a context at `level` takes for inputs of at most `limit` bytes (its
/// parameters are adapted to the input size, as [`zstd::bulk::compress`] does).
fn zstd_encoder_memory(level: i32, limit: usize) -> u64 {
    zstd_encoder_memory_at(level, limit, None)
}

/// [`zstd_encoder_memory`] with the window set to `window_log` where it is given.
fn zstd_encoder_memory_at(level: i32, limit: usize, window_log: Option<u32>) -> u64 {
    use zstd::zstd_safe::zstd_sys;
    // SAFETY: the functions take plain values and compute sizes; they allocate nothing.
    let bytes = unsafe {
        let mut params = zstd_sys::ZSTD_getCParams(level, limit as u64, 0);
        if let Some(log) = window_log {
            params.windowLog = params.windowLog.max(log);
        }
        zstd_sys::ZSTD_estimateCCtxSize_usingCParams(params)
    };
    bytes as u64
}

/// The largest `ZSTD_c_windowLog` an EROFS image's zstd configuration holds (a dictionary of at
/// most one pcluster, `Z_EROFS_ZSTD_MAX_DICT_SIZE`).
pub const ZSTD_MAX_WINDOW_LOG: u32 = 20;

/// `plain` as mkfs.erofs's zstd compressor writes a pcluster of `stored_len` bytes: one frame
/// of all of `plain` (`ZSTD_compress2` at `level` with `window_log`, by the libzstd release
/// `variant` names) at the end, zeros before; `None` when it does not fit.
fn erofs_zstd(
    plain: &[u8],
    (level, window_log, variant): (i32, u32, u8),
    stored_len: usize,
) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let (out, len) = if variant == 0 {
        let mut cctx = CCtx::try_create()?;
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .ok()?;
        cctx.set_parameter(CParameter::WindowLog(window_log)).ok()?;
        // room for any input (a smaller buffer makes ZSTD_compress2 fail near its end, where
        // mkfs.erofs gave 32 bytes more than the pcluster)
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(plain.len())];
        let len = cctx.compress2(&mut out[..], plain).ok()?;
        (out, len)
    } else {
        let call = super::zstd_release::Call::Compress2 { level, window_log };
        let out = super::zstd_release::compress(variant, plain, call)?;
        let len = out.len();
        (out, len)
    };
    // the frame must fit the pcluster
    if len > stored_len {
        return None;
    }
    // exactly the pcluster: a small input's bound can be shorter than it
    let mut out = out;
    out.resize(stored_len, 0);
    Some(behind_padding(out, len))
}

/// Decodes one zstd frame into exactly `out.len()` bytes: its header must say that many (a
/// frame of another length is not this pcluster's).
fn unzstd_frame(frame: &[u8], out: &mut [u8]) -> Result<usize, String> {
    use zstd::zstd_safe;
    match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n == out.len() as u64 => {}
        _ => return Err("a zstd pcluster of another length".into()),
    }
    let n = zstd::bulk::decompress_to_buffer(frame, out).map_err(|e| format!("zstd: {e}"))?;
    if n != out.len() {
        return Err("a zstd pcluster shorter than its frame says".into());
    }
    Ok(n)
}

fn unxz(stored: &[u8], mut memlimit: u64, out: &mut [u8]) -> Result<usize, String> {
    let (mut in_pos, mut out_pos) = (0usize, 0usize);
    // SAFETY: the buffers are valid for the sizes given; liblzma writes at most `out.len()`.
    let r = unsafe {
        liblzma_sys::lzma_stream_buffer_decode(
            &mut memlimit,
            0,
            std::ptr::null(),
            stored.as_ptr(),
            &mut in_pos,
            stored.len(),
            out.as_mut_ptr(),
            &mut out_pos,
            out.len(),
        )
    };
    if r != liblzma_sys::LZMA_OK || in_pos != stored.len() {
        return Err(format!("xz error {r}"));
    }
    Ok(out_pos)
}

/// The id of the first filter of an xz stream's first block, read from its block header: the
/// stream header is 12 bytes, the block header's first byte its size, the second its flags
/// (bit 6: a compressed size follows, bit 7: an uncompressed size), then the sizes as varints,
/// then each filter's id as a varint.
fn xz_first_filter(stored: &[u8]) -> Option<u64> {
    let block = stored.get(12..)?;
    if *block.first()? == 0 {
        return None; // an index, no block
    }
    let flags = *block.get(1)?;
    let mut at = 2;
    let mut varint = || super::xzstream::vli(block, &mut at);
    if flags & 0x40 != 0 {
        varint()?;
    }
    if flags & 0x80 != 0 {
        varint()?;
    }
    varint()
}

fn xz(plain: &[u8], dict_size: u32, bcj: Option<u64>, limit: usize) -> Option<Vec<u8>> {
    let mut chain = LzmaChain::new(bcj, dict_size, 6)?;
    let mut filters = chain.filters();
    let mut out = vec![0u8; limit];
    let mut out_pos = 0usize;
    // SAFETY: the filter chain ends with LZMA_VLI_UNKNOWN and points into `chain`, alive for
    // the call; the buffers are valid for the sizes given.
    let r = unsafe {
        liblzma_sys::lzma_stream_buffer_encode(
            filters.as_mut_ptr(),
            liblzma_sys::LZMA_CHECK_CRC32,
            std::ptr::null(),
            plain.as_ptr(),
            plain.len(),
            out.as_mut_ptr(),
            &mut out_pos,
            out.len(),
        )
    };
    if r != liblzma_sys::LZMA_OK {
        return None;
    }
    out.truncate(out_pos);
    Some(out)
}

/// An LZMA2 filter chain (behind `bcj` if given) at preset `level` with `dict`, for liblzma's
/// raw coders; `None` for a level liblzma does not know.
pub(crate) struct LzmaChain {
    opt: Box<liblzma_sys::lzma_options_lzma>,
    bcj: Option<u64>,
}

impl LzmaChain {
    pub(crate) fn new(bcj: Option<u64>, dict: u32, level: u32) -> Option<LzmaChain> {
        let opt = Box::new(lzma_options(level, dict)?);
        Some(LzmaChain { opt, bcj })
    }

    /// The filters, ending with LZMA_VLI_UNKNOWN; they point into `self`.
    pub(crate) fn filters(&mut self) -> Vec<liblzma_sys::lzma_filter> {
        let lzma2 = liblzma_sys::lzma_filter {
            id: liblzma_sys::LZMA_FILTER_LZMA2,
            options: (&mut *self.opt as *mut liblzma_sys::lzma_options_lzma).cast(),
        };
        let end = liblzma_sys::lzma_filter {
            id: liblzma_sys::LZMA_VLI_UNKNOWN,
            options: std::ptr::null_mut(),
        };
        match self.bcj {
            None => vec![lzma2, end],
            Some(id) => vec![
                liblzma_sys::lzma_filter {
                    id,
                    options: std::ptr::null_mut(),
                },
                lzma2,
                end,
            ],
        }
    }
}

/// The stream of an EROFS pcluster: its bytes after the leading zeros of 0padding (a
/// MicroLZMA stream's first byte, its negated properties, is never 0).
fn after_padding(stored: &[u8]) -> &[u8] {
    let zeros = stored.iter().take_while(|&&b| b == 0).count();
    &stored[zeros..]
}

/// Decodes the MicroLZMA stream of an EROFS pcluster into exactly `out.len()` bytes.
fn unmicrolzma(stored: &[u8], dict_size: u32, out: &mut [u8]) -> Result<usize, String> {
    let stream = after_padding(stored);
    let mut strm = LzmaStream::new();
    // SAFETY: `strm` is a zeroed lzma_stream (LZMA_STREAM_INIT); the sizes are the buffers'.
    let r = unsafe {
        liblzma_sys::lzma_microlzma_decoder(
            &mut strm.0,
            stream.len() as u64,
            out.len() as u64,
            1,
            dict_size.max(4096),
        )
    };
    if r != liblzma_sys::LZMA_OK {
        return Err(format!("microlzma error {r}"));
    }
    strm.0.next_in = stream.as_ptr();
    strm.0.avail_in = stream.len();
    strm.0.next_out = out.as_mut_ptr();
    strm.0.avail_out = out.len();
    // SAFETY: the stream was initialised above; next_in/next_out point into live buffers of
    // the lengths given.
    let r = unsafe { liblzma_sys::lzma_code(&mut strm.0, liblzma_sys::LZMA_FINISH) };
    if r != liblzma_sys::LZMA_STREAM_END || strm.0.total_out != out.len() as u64 {
        return Err(format!("microlzma error {r}"));
    }
    Ok(out.len())
}

/// `plain` as mkfs.erofs's LZMA compressor writes a pcluster of `stored_len` bytes: a
/// MicroLZMA stream of all of `plain` (`None` if it does not all fit) at the end, zeros before.
fn microlzma(plain: &[u8], dict_size: u32, level: u32, stored_len: usize) -> Option<Vec<u8>> {
    let opt = lzma_options(level, dict_size)?;
    let mut out = vec![0u8; stored_len];
    let mut strm = LzmaStream::new();
    // SAFETY: `strm` is a zeroed lzma_stream; `opt` lives through the call.
    if unsafe { liblzma_sys::lzma_microlzma_encoder(&mut strm.0, &opt) } != liblzma_sys::LZMA_OK {
        return None;
    }
    strm.0.next_in = plain.as_ptr();
    strm.0.avail_in = plain.len();
    strm.0.next_out = out.as_mut_ptr();
    strm.0.avail_out = out.len();
    // SAFETY: the stream was initialised above; next_in/next_out point into live buffers of
    // the lengths given.
    let r = unsafe { liblzma_sys::lzma_code(&mut strm.0, liblzma_sys::LZMA_FINISH) };
    let (taken, len) = (strm.0.total_in as usize, strm.0.total_out as usize);
    if r != liblzma_sys::LZMA_STREAM_END || taken != plain.len() {
        return None;
    }
    Some(behind_padding(out, len))
}

/// An EROFS pcluster from `out`, whose first `len` bytes an encoder wrote: the stream moved to
/// the end, zeros before it (0padding).
fn behind_padding(mut out: Vec<u8>, len: usize) -> Vec<u8> {
    let start = out.len() - len;
    out.copy_within(..len, start);
    out[..start].fill(0);
    out
}

/// An lzma_stream, ended when dropped.
struct LzmaStream(liblzma_sys::lzma_stream);

impl LzmaStream {
    fn new() -> LzmaStream {
        // SAFETY: an all-zero lzma_stream is LZMA_STREAM_INIT.
        LzmaStream(unsafe { std::mem::MaybeUninit::zeroed().assume_init() })
    }
}

impl Drop for LzmaStream {
    fn drop(&mut self) {
        // SAFETY: lzma_end accepts any stream that is LZMA_STREAM_INIT or was initialised.
        unsafe { liblzma_sys::lzma_end(&mut self.0) }
    }
}

unsafe extern "C" {
    // lz4.c and lz4hc.c, built by lz4-sys (which declares neither)
    fn LZ4_compress_destSize(
        src: *const c_char,
        dst: *mut c_char,
        src_size: *mut c_int,
        target_dst_size: c_int,
    ) -> c_int;
    fn LZ4_compress_HC_destSize(
        state: *mut std::ffi::c_void,
        src: *const c_char,
        dst: *mut c_char,
        src_size: *mut c_int,
        target_dst_size: c_int,
        level: c_int,
    ) -> c_int;
    fn LZ4_sizeofStateHC() -> c_int;
}

/// `plain` as mkfs.erofs's LZ4 compressor writes a pcluster of `stored_len` bytes: an LZ4
/// block of all of `plain` (`None` if it does not all fit) at the end, zeros before.
fn lz4_destsize(plain: &[u8], (hc, level): (bool, u32), stored_len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; stored_len];
    let mut taken = c_int::try_from(plain.len()).ok()?;
    let target = c_int::try_from(stored_len).ok()?;
    let len = if hc {
        // SAFETY: LZ4_sizeofStateHC has no preconditions.
        let size = usize::try_from(unsafe { LZ4_sizeofStateHC() }).ok()?;
        // the state must be 8-byte aligned: a buffer of u64
        let mut state = vec![0u64; size.div_ceil(8)];
        // SAFETY: `state` is an aligned buffer of LZ4_sizeofStateHC bytes; the source and
        // destination are valid for the sizes given, and the encoder writes at most `target`.
        unsafe {
            LZ4_compress_HC_destSize(
                state.as_mut_ptr().cast(),
                plain.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                &mut taken,
                target,
                level as c_int,
            )
        }
    } else {
        // SAFETY: the source and destination are valid for the sizes given; the encoder writes
        // at most `target` bytes.
        unsafe {
            LZ4_compress_destSize(
                plain.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                &mut taken,
                target,
            )
        }
    };
    let len = usize::try_from(len).ok().filter(|&n| n > 0)?;
    if taken as usize != plain.len() {
        return None;
    }
    Some(behind_padding(out, len))
}

fn unlz4(stored: &[u8], out: &mut [u8]) -> Result<usize, String> {
    // SAFETY: the buffers are valid for the sizes given; LZ4_decompress_safe never writes past
    // `out.len()` and fails on malformed input.
    let n = unsafe {
        lz4_sys::LZ4_decompress_safe(
            stored.as_ptr().cast::<c_char>(),
            out.as_mut_ptr().cast::<c_char>(),
            stored.len() as c_int,
            out.len() as c_int,
        )
    };
    if n < 0 {
        return Err("malformed LZ4 block".into());
    }
    Ok(n as usize)
}

fn lz4(plain: &[u8], hc: bool, limit: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; limit];
    // SAFETY: the buffers are valid for the sizes given; the encoders write at most `limit`.
    let n = unsafe {
        if hc {
            lz4_sys::LZ4_compress_HC(
                plain.as_ptr().cast::<c_char>(),
                out.as_mut_ptr().cast::<c_char>(),
                plain.len() as c_int,
                limit as c_int,
                12, // LZ4HC_CLEVEL_MAX
            )
        } else {
            lz4_sys::LZ4_compress_default(
                plain.as_ptr().cast::<c_char>(),
                out.as_mut_ptr().cast::<c_char>(),
                plain.len() as c_int,
                limit as c_int,
            )
        }
    };
    if n <= 0 {
        return None;
    }
    out.truncate(n as usize);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A patch's table names the encoding variant: one that does not exist is no encoding.
    #[test]
    fn a_variant_that_does_not_exist_encodes_nothing() {
        let xz = Codec::Xz {
            dict_size: 1 << 17,
            filters: vec![4],
        };
        assert!(xz.compress(b"plain", BlockKind::Data, 1, 4096).is_some());
        for v in [2, 9, 255] {
            assert!(xz.compress(b"plain", BlockKind::Data, v, 4096).is_none());
        }
    }

    // A zstd pcluster is its whole stored length, zeros then the frame, even where the frame's
    // bound for a small input is shorter than the pcluster (it came out that short before).
    #[test]
    fn a_small_zstd_pcluster_fills_its_blocks() {
        let zstd = Codec::ErofsZstd {
            level: 8,
            window_log: 15,
        };
        let plain = b"a small file's plain bytes, far shorter than one block".repeat(4);
        let kind = BlockKind::Exact(plain.len() as u32);
        let stored = zstd.compress(&plain, kind, 0, 4096).unwrap();
        assert_eq!(stored.len(), 4096);
        let mut back = Vec::new();
        zstd.decompress(&stored, plain.len(), &mut back).unwrap();
        assert_eq!(back, plain);
    }
}
