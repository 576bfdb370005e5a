//! An EROFS reader written for hostile input: from the superblock, the compression
//! configuration and every inode reachable from the root directory (and the packed inode that
//! holds fragments), the physical clusters (pclusters) of compressed files, each with the exact
//! length it decompresses to. The image's other bytes (metadata, directories, uncompressed
//! data, pclusters of compressors not read) are regions stored as they are; a pcluster region
//! is only ever expanded when it decompresses, and (for NEW) recompresses bit for bit, so a
//! misread index can cost patch bytes, never correctness. Every offset and count is checked
//! before use, and the memory the walk takes is charged to a budget.
//!
//! Compressed files are indexed per logical cluster (erofs_fs.h, `z_erofs_lcluster_index`): a
//! HEAD lcluster starts an extent (its decompressed data from `lcn << lclusterbits | clusterofs`
//! to the next HEAD's start) and names the pcluster's block address; with big pclusters the
//! first NONHEAD lcluster after it carries the pcluster's block count. Indexes are full (8
//! bytes per lcluster) or compact (packs of 2 or 16 lclusters sharing a 32-bit block base).
//! Read so far: LZMA (MicroLZMA) and LZ4 (lz4, lz4hc) pclusters, big pclusters, ztailpacking
//! (an inline last pcluster), fragments (the packed inode is read like any file), dedupe (a pcluster referred
//! to by several extents is listed once; partial references are skipped).

use super::codec::{BlockKind, Codec, PCLUSTER_MAX_PLAIN, PCLUSTER_MAX_STORED};
use super::squashfs::{Layout, Region};

/// Where the superblock starts in a file system.
pub const SUPERBLOCK_OFFSET: usize = 1024;
/// The superblock's magic.
pub const MAGIC: u32 = 0xE0F5_E1E2;

const INCOMPAT_ZERO_PADDING: u32 = 0x01;
const INCOMPAT_COMPR_CFGS: u32 = 0x02;
const INCOMPAT_DEVICE_TABLE: u32 = 0x08;
const INCOMPAT_ZTAILPACKING: u32 = 0x10;
const INCOMPAT_FRAGMENTS: u32 = 0x20;
/// Every incompatible feature erofs_fs.h defines (chunked files, devices, xattr prefixes
/// among them): an image with another is not read.
const INCOMPAT_KNOWN: u32 = 0x7f;

const LAYOUT_FLAT_PLAIN: u16 = 0;
const LAYOUT_COMPRESSED_FULL: u16 = 1;
const LAYOUT_FLAT_INLINE: u16 = 2;
const LAYOUT_COMPRESSED_COMPACT: u16 = 3;

const ALGORITHM_LZ4: u8 = 0;
const ALGORITHM_LZMA: u8 = 1;
const ALGORITHM_ZSTD: u8 = 3;

const ADVISE_COMPACTED_2B: u16 = 0x01;
const ADVISE_BIG_PCLUSTER_1: u16 = 0x02;
const ADVISE_BIG_PCLUSTER_2: u16 = 0x04;
const ADVISE_INLINE_PCLUSTER: u16 = 0x08;
const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x20;

const TYPE_HEAD1: u8 = 1;
const TYPE_NONHEAD: u8 = 2;
const TYPE_HEAD2: u8 = 3;

const D0_CBLKCNT: u32 = 1 << 11;
const PARTIAL_REF: u16 = 1 << 15;

/// LZMA presets mkfs.erofs may have used, tried in this order to find the image's (the level is
/// not recorded): the default and Fedora's 6 first, then the rest.
const LZMA_LEVELS: [u32; 10] = [6, 9, 0, 1, 2, 3, 4, 5, 7, 8];
/// lz4hc levels, likewise (after plain lz4): lz4hc's default 9 first, then its highest.
const LZ4HC_LEVELS: [u32; 12] = [9, 12, 10, 11, 1, 2, 3, 4, 5, 6, 7, 8];
/// zstd levels, likewise: mkfs.erofs's default (zstd's 3) and lorax's 8 first, then the rest.
const ZSTD_LEVELS: [i32; 22] = [
    3, 8, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
];

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether `img[start..]` begins with an EROFS superblock.
pub fn is_erofs(img: &[u8], start: usize) -> bool {
    start
        .checked_add(SUPERBLOCK_OFFSET)
        .and_then(|at| le32(img, at))
        == Some(MAGIC)
}

/// The fields of the superblock the reader uses.
struct Superblock {
    blkszbits: u32,
    root_nid: u64,
    blocks: u64,
    meta_blkaddr: u64,
    incompat: u32,
    /// LZMA's dictionary, when the image has LZMA pclusters.
    lzma_dict: Option<u32>,
    /// zstd's window log, when the image has zstd pclusters and a configuration mkfs.erofs
    /// writes (format 0, a window of 1 KiB to one pcluster).
    zstd_window: Option<u32>,
    /// Whether the image may have LZ4 pclusters.
    lz4: bool,
    packed_nid: Option<u64>,
}

impl Superblock {
    fn parse(fs: &[u8]) -> Option<Superblock> {
        let sb = fs.get(SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + 128)?;
        let blkszbits = u32::from(sb[12]);
        let incompat = le32(sb, 80)?;
        let extra_devices = le16(sb, 86)?;
        if le32(sb, 0)? != MAGIC
            || !(9..=16).contains(&blkszbits)
            || incompat & !INCOMPAT_KNOWN != 0
            || incompat & INCOMPAT_DEVICE_TABLE != 0 && extra_devices != 0
            || sb[90] != 0
        {
            return None; // unknown features, other devices, directory blocks not blocks
        }
        let sb_size = 128 + 16 * usize::from(sb[13]);
        let algs = if incompat & INCOMPAT_COMPR_CFGS != 0 {
            le16(sb, 84)?
        } else {
            1 // LZ4 only, unconfigured
        };
        // the compressors' configurations follow the superblock: a length, then its bytes
        let mut at = SUPERBLOCK_OFFSET + sb_size;
        let (mut lzma_dict, mut zstd_window) = (None, None);
        if incompat & INCOMPAT_COMPR_CFGS != 0 {
            for alg in 0..16u8 {
                if algs & (1 << alg) == 0 {
                    continue;
                }
                let len = usize::from(le16(fs, at)?);
                let cfg = fs.get(at + 2..at + 2 + len)?;
                if alg == ALGORITHM_LZMA {
                    lzma_dict = Some(le32(cfg, 0)?);
                }
                // z_erofs_zstd_cfgs: format, windowlog - 10, reserved
                if alg == ALGORITHM_ZSTD && cfg.len() >= 2 && cfg[0] == 0 {
                    zstd_window = Some(u32::from(cfg[1]) + 10)
                        .filter(|&log| log <= super::codec::ZSTD_MAX_WINDOW_LOG);
                }
                at += 2 + len;
            }
        }
        let packed_nid = le64(sb, 96)?;
        Some(Superblock {
            lz4: algs & (1 << ALGORITHM_LZ4) != 0,
            blkszbits,
            root_nid: u64::from(le16(sb, 14)?),
            blocks: u64::from(le32(sb, 36)?),
            meta_blkaddr: u64::from(le32(sb, 40)?),
            incompat,
            lzma_dict,
            zstd_window,
            packed_nid: (incompat & INCOMPAT_FRAGMENTS != 0 && packed_nid != 0)
                .then_some(packed_nid),
        })
    }
}

/// An inode, as far as the reader needs it.
struct Inode {
    layout: u16,
    /// Where what follows the inode and its inline xattrs starts (inline data, or a compressed
    /// file's map header).
    tail: usize,
    mode: u16,
    size: u64,
    /// `raw_blkaddr` or the compressed block count.
    i_u: u32,
}

/// One pcluster of a compressed file: where it is, how long it is stored, what it decompresses
/// to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pcluster {
    at: u64,
    stored: u32,
    plain: u32,
}

/// Reads one file system.
struct Reader<'a> {
    fs: &'a [u8],
    sb: Superblock,
    /// Bytes of memory the walk may still take.
    budget: u64,
}

impl Reader<'_> {
    fn blksz(&self) -> u64 {
        1 << self.sb.blkszbits
    }

    fn charge(&mut self, bytes: u64) -> Option<()> {
        self.budget = self.budget.checked_sub(bytes)?;
        Some(())
    }

    fn inode(&self, nid: u64) -> Option<Inode> {
        let at = usize::try_from(
            self.sb
                .meta_blkaddr
                .checked_mul(self.blksz())?
                .checked_add(nid.checked_mul(32)?)?,
        )
        .ok()?;
        let b = self.fs.get(at..at.checked_add(32)?)?;
        let format = le16(b, 0)?;
        let extended = format & 1 != 0;
        let icount = usize::from(le16(b, 2)?);
        let xattrs = if icount == 0 {
            0
        } else {
            12 + (icount - 1) * 4
        };
        let (isize, size) = if extended {
            let e = self.fs.get(at..at.checked_add(64)?)?;
            (64, le64(e, 8)?)
        } else {
            (32, u64::from(le32(b, 8)?))
        };
        Some(Inode {
            layout: (format >> 1) & 7,
            tail: at + isize + xattrs,
            mode: le16(b, 4)?,
            size,
            i_u: le32(b, 16)?,
        })
    }

    /// The bytes of an uncompressed inode's data (a directory's), in order.
    fn flat_data(&self, ino: &Inode) -> Option<Vec<&[u8]>> {
        let blksz = self.blksz();
        let size = ino.size;
        let mut parts = Vec::new();
        let block = |addr: u64, len: u64| -> Option<&[u8]> {
            let at = usize::try_from(addr.checked_mul(blksz)?).ok()?;
            self.fs.get(at..at.checked_add(usize::try_from(len).ok()?)?)
        };
        match ino.layout {
            LAYOUT_FLAT_PLAIN => parts.push(block(u64::from(ino.i_u), size)?),
            LAYOUT_FLAT_INLINE => {
                let whole = size / blksz * blksz;
                if whole > 0 {
                    parts.push(block(u64::from(ino.i_u), whole)?);
                }
                let rest = usize::try_from(size - whole).ok()?;
                parts.push(self.fs.get(ino.tail..ino.tail.checked_add(rest)?)?);
            }
            _ => return None, // a compressed or chunked directory: not read
        }
        Some(parts)
    }

    /// Every inode reachable from the root, and the packed inode: the regular files among
    /// them. `None` when a directory does not read.
    fn files(&mut self) -> Option<Vec<Inode>> {
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![self.sb.root_nid];
        let mut files = Vec::new();
        if let Some(p) = self.sb.packed_nid {
            files.push(self.inode(p)?);
        }
        while let Some(nid) = todo.pop() {
            if !seen.insert(nid) {
                continue;
            }
            self.charge(64)?;
            let ino = self.inode(nid)?;
            match ino.mode & 0o170000 {
                0o040000 => {
                    let blksz = self.blksz() as usize;
                    for part in self.flat_data(&ino)? {
                        for block in part.chunks(blksz) {
                            todo.extend(dirents(block)?);
                        }
                    }
                }
                0o100000 => files.push(ino),
                _ => {}
            }
        }
        Some(files)
    }

    /// The pclusters of `algorithm` of a compressed file, appended to `out`.
    fn pclusters(&mut self, ino: &Inode, algorithm: u8, out: &mut Vec<Pcluster>) -> Option<()> {
        if ino.layout != LAYOUT_COMPRESSED_FULL && ino.layout != LAYOUT_COMPRESSED_COMPACT {
            return Some(());
        }
        let header_at = ino.tail.next_multiple_of(8);
        let h = self.fs.get(header_at..header_at.checked_add(8)?)?;
        let idata_size = u32::from(le16(h, 2)?);
        let advise = le16(h, 4)?;
        let algorithms = h[6];
        let clusterbits = h[7];
        if clusterbits & 0x80 != 0 {
            return Some(()); // the whole file is a fragment, in the packed inode
        }
        let lbits = self.sb.blkszbits + u32::from(clusterbits & 7);
        let total = ino.size.div_ceil(1 << lbits);
        // every lcluster takes at least two bytes of index: the image bounds the count
        if total > self.fs.len() as u64 / 2 {
            return None;
        }
        // the decoded index and its heads, held while this file is read (given back after)
        let index_bytes = total * 2 * (std::mem::size_of::<Lcluster>() as u64 + 8);
        self.charge(index_bytes)?;
        let index = match ino.layout {
            LAYOUT_COMPRESSED_FULL => full_index(self.fs, header_at + 16, total, lbits)?,
            _ => compact_index(self.fs, header_at + 8, total, (lbits, advise))?,
        };
        let tail_at = index.end;
        let heads: Vec<usize> = (0..index.lclusters.len())
            .filter(|&i| index.lclusters[i].kind != TYPE_NONHEAD)
            .collect();
        let fragment = advise & ADVISE_FRAGMENT_PCLUSTER != 0;
        let inline =
            advise & ADVISE_INLINE_PCLUSTER != 0 && self.sb.incompat & INCOMPAT_ZTAILPACKING != 0;
        for (n, &i) in heads.iter().enumerate() {
            let l = index.lclusters[i];
            let start = ((i as u64) << lbits) + u64::from(l.clusterofs);
            let end = match heads.get(n + 1) {
                Some(&j) => ((j as u64) << lbits) + u64::from(index.lclusters[j].clusterofs),
                None => ino.size,
            };
            let last = n + 1 == heads.len();
            let head_algorithm = match l.kind {
                TYPE_HEAD1 => algorithms & 0x0f,
                TYPE_HEAD2 => algorithms >> 4,
                _ => continue, // an uncompressed extent: its bytes are stored as they are
            };
            if head_algorithm != algorithm || l.partial || end <= start || (last && fragment) {
                continue;
            }
            // an extent the reader does not understand stays stored; it never fails the image
            let Some(plain) = u32::try_from(end - start)
                .ok()
                .filter(|&p| p <= PCLUSTER_MAX_PLAIN)
            else {
                continue;
            };
            let pcluster = if last && inline {
                Pcluster {
                    at: tail_at as u64,
                    stored: idata_size,
                    plain,
                }
            } else {
                let big = match l.kind {
                    TYPE_HEAD1 => advise & ADVISE_BIG_PCLUSTER_1 != 0,
                    _ => advise & ADVISE_BIG_PCLUSTER_2 != 0,
                };
                let blocks = match index.lclusters.get(i + 1) {
                    Some(next) if big && next.kind == TYPE_NONHEAD => next.cblkcnt.unwrap_or(0),
                    _ => 1,
                };
                let Some(at) = l.blkaddr.checked_mul(self.blksz()) else {
                    continue;
                };
                Pcluster {
                    at,
                    stored: u32::try_from(u64::from(blocks) << self.sb.blkszbits).unwrap_or(0),
                    plain,
                }
            };
            if pcluster.stored == 0 || pcluster.stored > PCLUSTER_MAX_STORED {
                continue;
            }
            self.charge(2 * std::mem::size_of::<Pcluster>() as u64)?;
            out.push(pcluster);
        }
        self.budget += index_bytes;
        Some(())
    }
}

/// The nids a directory block names, "." and ".." left out.
fn dirents(block: &[u8]) -> Option<Vec<u64>> {
    let first_name = usize::from(le16(block, 8)?);
    if first_name < 12 || first_name % 12 != 0 || first_name > block.len() {
        return None;
    }
    let count = first_name / 12;
    let mut nids = Vec::with_capacity(count);
    for i in 0..count {
        let e = &block[i * 12..i * 12 + 12];
        let name_at = usize::from(le16(e, 8)?);
        let name_end = if i + 1 < count {
            usize::from(le16(block, (i + 1) * 12 + 8)?)
        } else {
            block.len()
        };
        let name = block.get(name_at..name_end.max(name_at))?;
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name != b"." && name != b".." {
            nids.push(le64(e, 0)?);
        }
    }
    Some(nids)
}

/// One logical cluster of a compressed file's index.
#[derive(Debug, Clone, Copy, Default)]
struct Lcluster {
    kind: u8,
    /// HEAD and PLAIN: where its extent starts in the lcluster.
    clusterofs: u32,
    /// HEAD and PLAIN: the pcluster's block address.
    blkaddr: u64,
    /// The first NONHEAD after a big pcluster's HEAD: the pcluster's block count.
    cblkcnt: Option<u32>,
    /// A HEAD that refers to part of another extent's decompressed data (dedupe).
    partial: bool,
}

/// A decoded index, and where the bytes after it start (an inline pcluster's).
struct Index {
    lclusters: Vec<Lcluster>,
    end: usize,
}

/// A full index: 8 bytes per lcluster from `at`.
fn full_index(fs: &[u8], at: usize, total: u64, lbits: u32) -> Option<Index> {
    let total = usize::try_from(total).ok()?;
    let bytes = fs.get(at..at.checked_add(total.checked_mul(8)?)?)?;
    let lclusters = bytes
        .chunks_exact(8)
        .map(|e| {
            let advise = le16(e, 0)?;
            let kind = (advise & 3) as u8;
            let clusterofs = u32::from(le16(e, 2)?);
            let delta0 = u32::from(le16(e, 4)?);
            Some(Lcluster {
                kind,
                clusterofs,
                blkaddr: u64::from(le32(e, 4)?),
                cblkcnt: (kind == TYPE_NONHEAD && delta0 & D0_CBLKCNT != 0)
                    .then_some(delta0 & !D0_CBLKCNT),
                partial: kind != TYPE_NONHEAD && advise & PARTIAL_REF != 0,
            })
            .filter(|l| l.kind == TYPE_NONHEAD || l.clusterofs < 1 << lbits)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Index {
        lclusters,
        end: at + total * 8,
    })
}

/// A compact index from `ebase`: packs of 2 lclusters in 8 bytes (4B) or 16 in 32 bytes (2B),
/// each entry `lclusterbits` bits of offset or delta and 2 bits of type, the pack ending with
/// a 32-bit block base from which each HEAD's block address is counted (the kernel's
/// `unpack_compacted_index`).
fn compact_index(
    fs: &[u8],
    ebase: usize,
    total: u64,
    (lbits, advise): (u32, u16),
) -> Option<Index> {
    let total = usize::try_from(total).ok()?;
    let initial = ((32 - ebase % 32) / 4) & 7;
    let two_b = if advise & ADVISE_COMPACTED_2B != 0 && initial < total {
        if lbits != 12 {
            return None;
        }
        (total - initial) / 16 * 16
    } else {
        0
    };
    let big = advise & (ADVISE_BIG_PCLUSTER_1 | ADVISE_BIG_PCLUSTER_2) != 0;
    let mut lclusters = Vec::with_capacity(total);
    let mut end = ebase;
    let mut lcn = 0usize;
    // the regions of packs: 4-byte packs first, 2-byte ones, 4-byte ones to the end
    let regions = [
        (initial.min(total), 2usize),
        (two_b, 1),
        (total - initial.min(total) - two_b, 2),
    ];
    for (count, shift) in regions {
        let vcnt = if shift == 1 { 16 } else { 2 };
        let pack_len = vcnt << shift;
        let packs = count.div_ceil(vcnt);
        for _ in 0..packs {
            let pack = fs.get(end..end.checked_add(pack_len)?)?;
            let entries = unpack(pack, vcnt, lbits, big)?;
            for e in entries {
                if lcn < total {
                    lclusters.push(e);
                    lcn += 1;
                }
            }
            end += pack_len;
        }
    }
    (lcn == total).then_some(Index { lclusters, end })
}

/// The lclusters of one compact pack of `vcnt` entries.
fn unpack(pack: &[u8], vcnt: usize, lbits: u32, big: bool) -> Option<Vec<Lcluster>> {
    let encodebits = (pack.len() - 4) * 8 / vcnt;
    let base = u64::from(le32(pack, pack.len() - 4)?);
    let field = |i: usize| -> Option<(u32, u8)> {
        let bit = encodebits * i;
        let word = le32(pack, bit / 8).or_else(|| {
            // the last bytes of a pack: read what is there
            let mut w = [0u8; 4];
            let rest = pack.get(bit / 8..)?;
            w[..rest.len().min(4)].copy_from_slice(&rest[..rest.len().min(4)]);
            Some(u32::from_le_bytes(w))
        })?;
        let v = word >> (bit % 8);
        let lo = v & ((1 << lbits) - 1);
        let kind = ((v >> lbits) & 3) as u8;
        Some((lo, kind))
    };
    let mut out = Vec::with_capacity(vcnt);
    for i in 0..vcnt {
        let (lo, kind) = field(i)?;
        if kind == TYPE_NONHEAD {
            let cblkcnt = (lo & D0_CBLKCNT != 0 && lbits >= 12).then_some(lo & !D0_CBLKCNT);
            out.push(Lcluster {
                kind,
                cblkcnt: cblkcnt.filter(|_| big),
                ..Lcluster::default()
            });
            continue;
        }
        // the HEAD's block: the pack's base plus the pclusters before it in the pack
        let mut nblk = 0u64;
        let mut j = i as isize;
        if !big {
            nblk = 1;
            while j > 0 {
                j -= 1;
                let (lo, kind) = field(j as usize)?;
                if kind == TYPE_NONHEAD {
                    j -= lo as isize;
                }
                if j >= 0 {
                    nblk += 1;
                }
            }
        } else {
            while j > 0 {
                j -= 1;
                let (lo, kind) = field(j as usize)?;
                if kind == TYPE_NONHEAD {
                    if lo & D0_CBLKCNT != 0 {
                        j -= 1;
                        nblk += u64::from(lo & !D0_CBLKCNT);
                        continue;
                    }
                    if lo <= 1 {
                        return None;
                    }
                    j -= lo as isize - 2;
                    continue;
                }
                nblk += 1;
            }
        }
        out.push(Lcluster {
            kind,
            clusterofs: lo,
            blkaddr: base + nblk,
            ..Lcluster::default()
        });
    }
    Some(out)
}

/// Parses the EROFS whose superblock area starts at `img[start..]` (its superblock 1 KiB in):
/// its pclusters of one compressor (LZMA, else zstd, else LZ4) as compressed regions, every
/// other byte stored, tiling `start..end`. Takes at most `budget` bytes of memory; `None` when
/// it does not read.
pub fn parse_within(img: &[u8], start: u64, budget: u64) -> Option<Layout> {
    let rest = img.get(usize::try_from(start).ok()?..)?;
    let sb = Superblock::parse(rest)?;
    let len = sb.blocks.checked_mul(1 << sb.blkszbits)?;
    let fs = rest.get(..usize::try_from(len).ok()?)?;
    // one codec a layout: LZMA where the image has it (Fedora's), else zstd (lorax's), else
    // LZ4 (lz4, lz4hc)
    let (algorithm, codecs) = match (sb.lzma_dict, sb.zstd_window, sb.lz4) {
        (Some(dict), _, _) if (4096..=8 << 20).contains(&dict) => {
            let at = |level| Codec::ErofsLzma {
                dict_size: dict,
                level,
            };
            (ALGORITHM_LZMA, LZMA_LEVELS.map(at).to_vec())
        }
        (None, Some(window_log), _) => {
            let at = |level| Codec::ErofsZstd { level, window_log };
            (ALGORITHM_ZSTD, ZSTD_LEVELS.map(at).to_vec())
        }
        (None, None, true) => {
            let hc = |level| Codec::ErofsLz4 { hc: true, level };
            let mut codecs = vec![Codec::ErofsLz4 {
                hc: false,
                level: 0,
            }];
            codecs.extend(LZ4HC_LEVELS.map(hc));
            (ALGORITHM_LZ4, codecs)
        }
        _ => return None,
    };
    if sb.incompat & INCOMPAT_ZERO_PADDING == 0 {
        return None; // streams at the start of their blocks: not read
    }
    let mut r = Reader { fs, sb, budget };
    let files = r.files()?;
    let mut pclusters = Vec::new();
    for ino in &files {
        r.pclusters(ino, algorithm, &mut pclusters)?;
    }
    pclusters.sort_unstable_by_key(|p| p.at);
    // dedupe: a pcluster several extents refer to is listed once; two that disagree on what it
    // decompresses to, or that overlap, are not read
    pclusters.dedup();
    let disagree: Vec<u64> = pclusters
        .windows(2)
        .filter(|w| w[0].at == w[1].at)
        .map(|w| w[0].at)
        .collect();
    pclusters.retain(|p| !disagree.contains(&p.at));
    let mut regions = Vec::with_capacity(pclusters.len() * 2 + 1);
    let mut at = 0u64;
    for p in &pclusters {
        let end = p.at.checked_add(u64::from(p.stored))?;
        if p.at < at || end > len {
            continue; // overlapping another, or past the image: stored as it is
        }
        stored_gap(&mut regions, start + at, start + p.at);
        regions.push(Region {
            offset: start + p.at,
            len: p.stored,
            block: Some(BlockKind::Exact(p.plain)),
        });
        at = end;
    }
    stored_gap(&mut regions, start + at, start + len);
    let codec = settings(rest, &pclusters, codecs)?;
    Some(Layout {
        start,
        end: start + len,
        codec,
        block_size: PCLUSTER_MAX_STORED,
        regions,
        first_variant: 0,
    })
}

/// Regions of stored bytes from `from` to `to`, each under 4 GiB.
fn stored_gap(regions: &mut Vec<Region>, from: u64, to: u64) {
    let mut p = from;
    while p < to {
        let n = (to - p).min(1 << 30) as u32;
        regions.push(Region {
            offset: p,
            len: n,
            block: None,
        });
        p += u64::from(n);
    }
}

/// The settings the image's pclusters were made with (the level is not recorded): the first of
/// `candidates` under which one of the two smallest pclusters recompresses bit for bit, and
/// under which at least one of a few larger ones, spread over the image, does too. `None` when
/// no candidate passes: the image's pclusters do not reproduce here (zstd ones made by another
/// libzstd release, say), and expanding OLD's would only hide the stored bytes NEW's could be
/// matched against, so the file system stays opaque.
fn settings(fs: &[u8], pclusters: &[Pcluster], candidates: Vec<Codec>) -> Option<Codec> {
    // none past 2 MiB: finding the settings costs a few encodes at most
    let mut small: Vec<&Pcluster> = pclusters.iter().filter(|p| p.plain <= 2 << 20).collect();
    small.sort_by_key(|p| p.plain);
    // each pcluster tried is decompressed once, whatever the candidates
    let plain_of = |p: &Pcluster| {
        let stored = fs.get(p.at as usize..(p.at + u64::from(p.stored)) as usize)?;
        let mut plain = Vec::new();
        candidates[0]
            .decompress(stored, p.plain as usize, &mut plain)
            .ok()?;
        Some((plain, stored, BlockKind::Exact(p.plain)))
    };
    let reproduces = |c: &Codec, (plain, stored, kind): &(Vec<u8>, &[u8], BlockKind)| {
        c.reproduces(plain, stored, *kind, stored.len(), 0)
            .is_some()
    };
    // the smallest that decompress (a pcluster whose extents disagree with its stream, as a
    // deduplicated one's may, tells nothing)
    let found = small
        .iter()
        .filter_map(|p| plain_of(p))
        .take(2)
        .find_map(|tried| candidates.iter().find(|c| reproduces(c, &tried)))?;
    // the largest of them, where small inputs take other paths (zstd shrinks its window to a
    // small input, and below 16 KiB uses no row match finder)
    let mut large = small
        .iter()
        .rev()
        .step_by(small.len().div_ceil(4).max(1))
        .take(4)
        .peekable();
    let none_to_try = large.peek().is_none();
    (none_to_try || large.any(|p| plain_of(p).is_some_and(|t| reproduces(found, &t))))
        .then(|| found.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact 4B pack of two lclusters with 12 lcluster bits: a HEAD at offset 0x123 and a
    /// NONHEAD carrying a big pcluster's block count, behind block base 7.
    #[test]
    fn a_compact_pack_gives_each_head_its_block_and_each_big_pcluster_its_count() {
        let head = 0x123 | u32::from(TYPE_HEAD1) << 12;
        let nonhead = (D0_CBLKCNT | 5) | u32::from(TYPE_NONHEAD) << 12;
        let mut pack = Vec::new();
        pack.extend_from_slice(&(head as u16).to_le_bytes());
        pack.extend_from_slice(&(nonhead as u16).to_le_bytes());
        pack.extend_from_slice(&7u32.to_le_bytes());
        let l = unpack(&pack, 2, 12, true).unwrap();
        assert_eq!(
            (l[0].kind, l[0].clusterofs, l[0].blkaddr),
            (TYPE_HEAD1, 0x123, 7)
        );
        assert_eq!((l[1].kind, l[1].cblkcnt), (TYPE_NONHEAD, Some(5)));
    }

    /// Bytes that only look like EROFS (the magic, nothing sane after it) are not read, and
    /// nothing is allocated from their claims.
    #[test]
    fn a_superblock_that_lies_is_not_read() {
        let mut img = vec![0u8; 8192];
        img[1024..1028].copy_from_slice(&MAGIC.to_le_bytes());
        img[1024 + 12] = 12; // 4 KiB blocks
        img[1024 + 36..1024 + 40].copy_from_slice(&u32::MAX.to_le_bytes()); // 16 TiB
        assert!(is_erofs(&img, 0));
        assert!(parse_within(&img, 0, 1 << 20).is_none());
        img[1024 + 36..1024 + 40].copy_from_slice(&2u32.to_le_bytes());
        img[1024 + 80] = 0x80; // an incompatible feature no EROFS has
        assert!(parse_within(&img, 0, 1 << 20).is_none());
    }
}
