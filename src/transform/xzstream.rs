//! Whole xz streams inside an image: a live ISO's initrd (`xz --check=crc32 --lzma2=dict=1MiB`,
//! as dracut writes it, often behind an uncompressed microcode cpio), or any file of the ISO
//! that is one xz stream. The reader lists the regions a stream is made of (its header, each
//! block, its index with the footer), as the squashfs and EROFS readers list theirs, so
//! expansion, the tables and apply's rebuild treat a stream's blocks as blocks.
//!
//! A block is its header, its LZMA2 data, padding and check. liblzma's raw encoder at the
//! stream's preset reproduces the data bit for bit: xz's single-threaded mode writes one block
//! (its header without sizes), its multi-threaded mode one block per three dictionaries, each
//! encoded on its own, its header written after the data with both sizes into room reserved
//! for the configured block size. Both follow from the plain bytes, the settings
//! ([`Codec::XzStream`]) and the header's length (the encoding variant: 0 for no sizes, else
//! the header's length in 4-byte units). Blocks of more than [`MAX_BLOCK_PLAIN`] (a
//! single-threaded initrd's one block) stay stored: apply holds a block's plain bytes while it
//! recompresses it.
//!
//! Parsed for hostile input: the stream is read back from its footer (its index lists every
//! block's sizes), every size is checked against the bytes there, and nothing is allocated
//! from a count before that check.

use super::codec::{BlockKind, Codec, LzmaChain, PCLUSTER_MAX_PLAIN};
use super::squashfs::{Layout, Region};

/// The first six bytes of an xz stream.
pub const MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];
const FOOTER_MAGIC: [u8; 2] = *b"YZ";
/// Stream header and footer length.
const ENDS_LEN: usize = 12;
/// The most plain bytes of a block that is expanded (as for an EROFS pcluster).
pub const MAX_BLOCK_PLAIN: u32 = PCLUSTER_MAX_PLAIN;
/// The most stored bytes of a block that is expanded: LZMA2 adds at most 3 bytes per 64 KiB of
/// data that does not compress, and the header, padding and check a few hundred.
pub const MAX_BLOCK_STORED: u32 = MAX_BLOCK_PLAIN + (1 << 20);
/// The largest LZMA2 dictionary a stream may name to be expanded (xz's presets 0-6 use at most
/// 8 MiB; 7-9 use more, and an encoder that large has no place on a small machine).
pub const MAX_DICT: u32 = 8 << 20;
/// The longest block header a table's encoding variant can name (64 bytes; xz writes 12-24).
pub const MAX_HEADER_LEN: usize = 64;

/// The check types a block's rebuild can compute: none, CRC32 and CRC64 (SHA-256 streams stay
/// stored).
fn check_len(check: u8) -> Option<usize> {
    match check {
        0 => Some(0),
        1 => Some(4),
        4 => Some(8),
        _ => None,
    }
}

fn crc32(b: &[u8]) -> u32 {
    // SAFETY: the pointer and length are a live slice's; lzma_crc32 only reads them.
    unsafe { liblzma_sys::lzma_crc32(b.as_ptr(), b.len(), 0) }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// xz's variable-length integer at `*at` in `b` (at most 9 bytes, no trailing zero byte).
pub(super) fn vli(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (i == 0 || byte != 0).then_some(v);
        }
    }
    None
}

fn put_vli(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The dictionary size an LZMA2 properties byte names (`None` past 40).
pub fn dict_of_props(p: u8) -> Option<u32> {
    match p {
        0..=39 => Some((2 | u32::from(p & 1)) << (p / 2 + 11)),
        40 => Some(u32::MAX),
        _ => None,
    }
}

/// The LZMA2 properties byte of a dictionary: the smallest size at least `dict`.
fn props_of_dict(dict: u32) -> u8 {
    (0..40u8)
        .find(|&p| dict_of_props(p).is_some_and(|d| d >= dict))
        .unwrap_or(40)
}

/// Whether `file` has an xz stream header at `at`: the magic, flags xz writes and their CRC32.
pub fn is_xz(file: &[u8], at: usize) -> bool {
    file.get(at..at.saturating_add(ENDS_LEN)).is_some_and(|h| {
        h[..6] == MAGIC && h[6] == 0 && h[7] & 0xf0 == 0 && crc32(&h[6..8]) == le32(&h[8..])
    })
}

/// What a block header says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockHeader {
    /// Its length (4 to 1024 bytes, a multiple of 4).
    len: usize,
    /// The sizes it records, when it records them.
    compressed: Option<u64>,
    uncompressed: Option<u64>,
    /// The BCJ filter in front of LZMA2, if any, and LZMA2's dictionary.
    bcj: Option<u64>,
    dict: u32,
}

/// The header at the start of `b`, if it is one a rebuild can write: a CRC that matches, LZMA2
/// alone or behind one BCJ filter without properties, no reserved bits set.
fn block_header(b: &[u8]) -> Option<BlockHeader> {
    let len = (usize::from(*b.first()?) + 1) * 4;
    if b[0] == 0 || len > b.len() {
        return None; // an index indicator, or a header past the block
    }
    let h = &b[..len];
    if crc32(&h[..len - 4]) != le32(&h[len - 4..]) {
        return None;
    }
    let flags = h[1];
    if flags & 0x3c != 0 {
        return None;
    }
    let body = &h[..len - 4];
    let mut at = 2;
    let compressed = if flags & 0x40 != 0 {
        Some(vli(body, &mut at)?)
    } else {
        None
    };
    let uncompressed = if flags & 0x80 != 0 {
        Some(vli(body, &mut at)?)
    } else {
        None
    };
    let mut filters = Vec::new();
    for _ in 0..=(flags & 3) {
        let id = vli(body, &mut at)?;
        let size = usize::try_from(vli(body, &mut at)?).ok()?;
        let props = body.get(at..at.checked_add(size)?)?;
        at += size;
        filters.push((id, props));
    }
    // the rest is padding: zeros
    if body[at..].iter().any(|&z| z != 0) {
        return None;
    }
    let (bcj, lzma2) = match filters[..] {
        [lzma2] => (None, lzma2),
        [(id, []), lzma2] if (0x04..=0x0b).contains(&id) => (Some(id), lzma2),
        _ => return None,
    };
    let dict = match lzma2 {
        (liblzma_sys::LZMA_FILTER_LZMA2, &[p]) => dict_of_props(p)?,
        _ => return None,
    };
    Some(BlockHeader {
        len,
        compressed,
        uncompressed,
        bcj,
        dict,
    })
}

/// The block header xz writes for a block of `sizes` (`None`: a single-threaded stream's,
/// without sizes) with `len` bytes (`None`: as short as it can be); `None` when it does not fit.
fn encode_header(
    bcj: Option<u64>,
    dict: u32,
    sizes: Option<(u64, u64)>,
    len: Option<usize>,
) -> Option<Vec<u8>> {
    let mut h = vec![
        0u8,
        u8::from(bcj.is_some()) | if sizes.is_some() { 0xc0 } else { 0 },
    ];
    if let Some((compressed, uncompressed)) = sizes {
        put_vli(&mut h, compressed);
        put_vli(&mut h, uncompressed);
    }
    if let Some(id) = bcj {
        put_vli(&mut h, id);
        h.push(0);
    }
    h.extend_from_slice(&[liblzma_sys::LZMA_FILTER_LZMA2 as u8, 1, props_of_dict(dict)]);
    let len = len.unwrap_or((h.len() + 4).next_multiple_of(4));
    if h.len() + 4 > len || len > 1024 || !len.is_multiple_of(4) {
        return None;
    }
    h.resize(len - 4, 0);
    h[0] = (len / 4 - 1) as u8;
    let crc = crc32(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    Some(h)
}

/// The check of a block's plain bytes, as the stream's check type writes it.
fn check_of(check: u8, plain: &[u8]) -> Vec<u8> {
    let mut sum = RunningCheck::new(check);
    sum.update(plain);
    sum.bytes()
}

/// A block's check computed as its plain bytes come: the stream's check type only.
struct RunningCheck {
    check: u8,
    crc32: u32,
    crc64: u64,
}

impl RunningCheck {
    fn new(check: u8) -> RunningCheck {
        RunningCheck {
            check,
            crc32: 0,
            crc64: 0,
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self.check {
            // SAFETY: the pointer and length are a live slice's; liblzma only reads them.
            1 => self.crc32 = unsafe { liblzma_sys::lzma_crc32(b.as_ptr(), b.len(), self.crc32) },
            // SAFETY: as above.
            4 => self.crc64 = unsafe { liblzma_sys::lzma_crc64(b.as_ptr(), b.len(), self.crc64) },
            _ => {}
        }
    }

    /// The check as the block writes it (none, CRC32 or CRC64, little-endian).
    fn bytes(&self) -> Vec<u8> {
        match self.check {
            1 => self.crc32.to_le_bytes().to_vec(),
            4 => self.crc64.to_le_bytes().to_vec(),
            _ => Vec::new(),
        }
    }
}

/// The settings of a stream's blocks: what [`Codec::XzStream`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settings {
    /// LZMA2's dictionary (from the block headers).
    pub dict: u32,
    /// The xz preset (0-9, +100 for extreme): not in the stream, found by trying.
    pub level: u32,
    /// The BCJ filter in front of LZMA2, if any.
    pub bcj: Option<u64>,
    /// The stream's check type (0 none, 1 CRC32, 4 CRC64).
    pub check: u8,
}

/// Whether settings from a patch's table are ones a stream this reader expands can have.
pub fn settings_are_real(s: &Settings) -> bool {
    (4096..=MAX_DICT).contains(&s.dict)
        && (s.level <= 9 || (100..=109).contains(&s.level))
        && s.bcj.is_none_or(|id| (0x04..=0x0b).contains(&id))
        && check_len(s.check).is_some()
}

/// Decompresses a block (`stored`: header, data, padding, check) into `out`, which must come
/// out exactly `out.len()` bytes; checks its header against `s`, its padding and its check.
pub fn decode_block(s: &Settings, stored: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let h = block_header(stored).ok_or("an xz block header that does not read")?;
    if (h.bcj, h.dict) != (s.bcj, s.dict) {
        return Err("an xz block with other filters than its stream's".into());
    }
    let check = check_len(s.check).ok_or("an xz check type that is not supported")?;
    let data = &stored[h.len..stored.len().checked_sub(check).ok_or("a short xz block")?];
    let mut chain = LzmaChain::new(s.bcj, s.dict, 0).ok_or("xz settings")?;
    let filters = chain.filters();
    let (mut in_pos, mut out_pos) = (0usize, 0usize);
    // SAFETY: the chain ends with LZMA_VLI_UNKNOWN and points into `chain`, alive for the call;
    // the buffers are valid for the lengths given and liblzma writes at most `out.len()`. The
    // dictionary is at most MAX_DICT (the settings were checked).
    let r = unsafe {
        liblzma_sys::lzma_raw_buffer_decode(
            filters.as_ptr(),
            std::ptr::null(),
            data.as_ptr(),
            &mut in_pos,
            data.len(),
            out.as_mut_ptr(),
            &mut out_pos,
            out.len(),
        )
    };
    if r != liblzma_sys::LZMA_OK || out_pos != out.len() {
        return Err(format!("xz block error {r}"));
    }
    let padding = &data[in_pos..];
    let padded = (h.len + in_pos).next_multiple_of(4) - h.len;
    if data.len() != padded || padding.iter().any(|&z| z != 0) {
        return Err("an xz block whose padding is not its data's".into());
    }
    if h.compressed.is_some_and(|c| c != in_pos as u64)
        || h.uncompressed.is_some_and(|u| u != out.len() as u64)
        || stored[stored.len() - check..] != check_of(s.check, out)[..]
    {
        return Err("an xz block whose header or check disagrees with its data".into());
    }
    Ok(out_pos)
}

/// `plain` as xz writes a block of it with `s`: header (`variant` 0: without sizes; else with
/// both, `variant` 4-byte units long), LZMA2 data, padding and check; `None` if it does not fit
/// in `limit` bytes.
pub fn encode_block(s: &Settings, plain: &[u8], variant: u8, limit: usize) -> Option<Vec<u8>> {
    let data = raw_encode(s, plain)?;
    let sizes = (variant != 0).then_some((data.len() as u64, plain.len() as u64));
    let len = (variant != 0).then_some(usize::from(variant) * 4);
    let mut block = encode_header(s.bcj, s.dict, sizes, len)?;
    block.extend_from_slice(&data);
    block.resize(block.len().next_multiple_of(4), 0);
    block.extend_from_slice(&check_of(s.check, plain));
    (block.len() <= limit).then_some(block)
}

/// Decodes a whole block of `s` (a stream's one block too large to hold: [`super::stream`]),
/// `stored_len` bytes read a step at a time by `read`, giving its plain bytes to `sink`;
/// checks its header, padding and check as [`decode_block`] does, and refuses more than
/// `max_plain` plain bytes. Returns the plain length.
pub fn decode_stream(
    s: &Settings,
    read: super::stream::ReadAt<'_>,
    stored_len: u64,
    max_plain: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    use super::stream::STEP;
    let mut head = vec![0u8; (stored_len as usize).min(1024)];
    read(0, &mut head)?;
    let h = block_header(&head).ok_or("an xz block header that does not read")?;
    if (h.bcj, h.dict) != (s.bcj, s.dict) || h.compressed.is_some() || h.uncompressed.is_some() {
        return Err("an xz block with other filters than its stream's".into());
    }
    let check = check_len(s.check).ok_or("an xz check type that is not supported")?;
    let data_end = stored_len
        .checked_sub(check as u64)
        .filter(|&e| e >= h.len as u64)
        .ok_or("a short xz block")?;
    let mut coder = Coder::raw(s, false).ok_or("xz settings")?;
    let (mut input, mut output) = (vec![0u8; STEP], vec![0u8; STEP]);
    let (mut at, mut plain, mut sum) = (h.len as u64, 0u64, RunningCheck::new(s.check));
    let mut ended = false;
    while !ended {
        let n = (data_end - at).min(STEP as u64) as usize;
        read(at, &mut input[..n])?;
        let last = at + n as u64 == data_end;
        let mut used = 0;
        loop {
            let (r, took, made) = coder.code(&input[used..n], &mut output, last);
            used += took;
            plain += made as u64;
            if plain > max_plain {
                return Err("an xz block that expands more than it may".into());
            }
            sum.update(&output[..made]);
            sink(&output[..made])?;
            if r == liblzma_sys::LZMA_STREAM_END {
                ended = true;
                break;
            }
            if r != liblzma_sys::LZMA_OK {
                return Err(format!("xz block error {r}"));
            }
            if used == n && made < output.len() {
                break;
            }
        }
        if !ended {
            if last {
                return Err("an xz block cut short".into());
            }
            at += n as u64;
        } else {
            at += used as u64;
        }
    }
    // zeros to a multiple of 4, then the check
    let padded = at.next_multiple_of(4);
    if padded != data_end {
        return Err("an xz block whose padding is not its data's".into());
    }
    let mut tail = vec![0u8; (stored_len - at) as usize];
    read(at, &mut tail)?;
    let (padding, written) = tail.split_at((padded - at) as usize);
    if padding.iter().any(|&z| z != 0) || written != sum.bytes() {
        return Err("an xz block whose check disagrees with its data".into());
    }
    Ok(plain)
}

/// liblzma's raw encoder or decoder over a stream (`lzma_stream`), ended when dropped.
struct Coder {
    strm: Box<liblzma_sys::lzma_stream>,
    /// The filter chain the coder was set up with (liblzma reads it only then; kept alive).
    _chain: super::codec::LzmaChain,
}

impl Coder {
    /// A raw encoder (`encode`) or decoder with `s`'s filters.
    fn raw(s: &Settings, encode: bool) -> Option<Coder> {
        let level = if encode { s.level } else { 0 };
        let mut chain = LzmaChain::new(s.bcj, s.dict, level)?;
        let filters = chain.filters();
        // SAFETY: an all-zero lzma_stream is LZMA_STREAM_INIT.
        let mut strm: Box<liblzma_sys::lzma_stream> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `strm` is initialised as liblzma asks; the chain ends with
        // LZMA_VLI_UNKNOWN and its options live in `chain`, kept beside the stream. The
        // dictionary is at most MAX_DICT (the settings were checked).
        let r = unsafe {
            if encode {
                liblzma_sys::lzma_raw_encoder(&mut *strm, filters.as_ptr())
            } else {
                liblzma_sys::lzma_raw_decoder(&mut *strm, filters.as_ptr())
            }
        };
        (r == liblzma_sys::LZMA_OK).then_some(Coder {
            strm,
            _chain: chain,
        })
    }

    /// Runs the coder over `input` into `output` (finishing when `last`): its return code,
    /// the input bytes it took and the output bytes it made.
    fn code(&mut self, input: &[u8], output: &mut [u8], last: bool) -> (u32, usize, usize) {
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = input.len();
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = output.len();
        let action = if last {
            liblzma_sys::LZMA_FINISH
        } else {
            liblzma_sys::LZMA_RUN
        };
        // SAFETY: a live, initialised stream whose buffers point at `input` and `output`, valid
        // for the lengths given for the call.
        let r = unsafe { liblzma_sys::lzma_code(&mut *self.strm, action) };
        let took = input.len() - self.strm.avail_in;
        let made = output.len() - self.strm.avail_out;
        self.strm.next_in = std::ptr::null();
        self.strm.next_out = std::ptr::null_mut();
        (r, took, made)
    }
}

impl Drop for Coder {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by a raw coder and is ended once.
        unsafe { liblzma_sys::lzma_end(&mut *self.strm) };
    }
}

// SAFETY: the stream and its chain are owned by this value alone and used through `&mut self`;
// liblzma's coders keep no thread-local state.
unsafe impl Send for Coder {}

/// An xz block written as xz's single-threaded encoder writes its stream's one block (header
/// without sizes, LZMA2 data, padding, check), fed its plain bytes as they come.
pub struct BlockEncoder {
    coder: Coder,
    header: Option<Vec<u8>>,
    data_len: u64,
    sum: RunningCheck,
    out: Vec<u8>,
}

impl BlockEncoder {
    /// The encoder of a block of `s` with encoding `variant` (only 0: a header without sizes);
    /// `None` for another.
    pub fn new(s: &Settings, variant: u8) -> Option<BlockEncoder> {
        if variant != 0 {
            return None;
        }
        Some(BlockEncoder {
            coder: Coder::raw(s, true)?,
            header: Some(encode_header(s.bcj, s.dict, None, None)?),
            data_len: 0,
            sum: RunningCheck::new(s.check),
            out: vec![0u8; super::stream::STEP],
        })
    }

    fn run(&mut self, plain: &[u8], last: bool, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        if let Some(h) = self.header.take() {
            sink(&h);
        }
        let mut used = 0;
        loop {
            let mut out = std::mem::take(&mut self.out);
            let (r, took, made) = self.coder.code(&plain[used..], &mut out, last);
            used += took;
            self.data_len += made as u64;
            sink(&out[..made]);
            self.out = out;
            match r {
                liblzma_sys::LZMA_STREAM_END => return Ok(()),
                liblzma_sys::LZMA_OK if !last && used == plain.len() && made < self.out.len() => {
                    return Ok(());
                }
                liblzma_sys::LZMA_OK => {}
                r => return Err(format!("xz encoder error {r}")),
            }
        }
    }

    /// Takes the next plain bytes, giving what the encoder writes to `sink`.
    pub fn feed(&mut self, plain: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.sum.update(plain);
        self.run(plain, false, sink)
    }

    /// Ends the block: the rest of its data, its padding and its check.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.run(&[], true, sink)?;
        let padding = (self.data_len.next_multiple_of(4) - self.data_len) as usize;
        sink(&[0u8; 3][..padding]);
        sink(&self.sum.bytes());
        Ok(())
    }
}

/// The encoding variant of a block whose header is `stored`'s: 0 without sizes, else its length
/// in 4-byte units (at most [`MAX_HEADER_LEN`]).
pub fn variant_of(stored: &[u8]) -> Option<u8> {
    let h = block_header(stored)?;
    match h.compressed.or(h.uncompressed) {
        None => Some(0),
        Some(_) if h.len <= MAX_HEADER_LEN => Some((h.len / 4) as u8),
        Some(_) => None,
    }
}

/// Presets tried for a stream, most common first: xz's default, its highest, the rest, then
/// their extreme forms.
const LEVELS: [u32; 20] = [
    6, 9, 0, 1, 2, 3, 4, 5, 7, 8, 106, 109, 100, 101, 102, 103, 104, 105, 107, 108,
];

/// The xz stream at `at` of `file`, which ends by `end` (the end of the file holding it), as
/// regions, within `budget` bytes of memory; `None` unless it parses, tiles `at..` up to its
/// footer exactly, and a preset reproduces one of its blocks.
pub fn parse_within(file: &[u8], at: u64, end: u64, budget: u64) -> Option<Layout> {
    let start = usize::try_from(at).ok()?;
    let mut stop = usize::try_from(end).ok()?.min(file.len());
    if !is_xz(file, start) || stop < start + 2 * ENDS_LEN {
        return None;
    }
    let check = file[start + 7];
    // stream padding after the footer: zeros, in 4-byte units
    while stop >= start + 2 * ENDS_LEN + 4 && file[stop - 4..stop] == [0; 4] {
        stop -= 4;
    }
    let footer = &file[stop - ENDS_LEN..stop];
    if footer[10..] != FOOTER_MAGIC
        || footer[8..10] != file[start + 6..start + 8]
        || crc32(&footer[4..10]) != le32(footer)
    {
        return None;
    }
    let index_len = (u64::from(le32(&footer[4..])) + 1) * 4;
    let index_start = (stop - ENDS_LEN).checked_sub(usize::try_from(index_len).ok()?)?;
    if index_start < start + ENDS_LEN {
        return None;
    }
    let index = &file[index_start..stop - ENDS_LEN];
    if index[0] != 0 || crc32(&index[..index.len() - 4]) != le32(&index[index.len() - 4..]) {
        return None;
    }
    let mut pos = 1;
    let count = vli(index, &mut pos)?;
    // each record takes at least two bytes, each region 16 bytes of memory
    let region_size = std::mem::size_of::<Region>() as u64;
    let check_size = check_len(check)?;
    if count > index.len() as u64 / 2 || (count + 2) * region_size > budget {
        return None;
    }
    let mut regions = vec![Region {
        offset: at,
        len: ENDS_LEN as u32,
        block: None,
    }];
    let mut block_at = start + ENDS_LEN;
    for _ in 0..count {
        let unpadded = vli(index, &mut pos)?;
        let plain = vli(index, &mut pos)?;
        let total = usize::try_from(unpadded)
            .ok()?
            .checked_next_multiple_of(4)?;
        let len = u32::try_from(total).ok().filter(|&n| n > 0)?;
        let stored = file.get(block_at..block_at.checked_add(total)?)?;
        let header = block_header(stored);
        let held = plain <= u64::from(MAX_BLOCK_PLAIN) && len <= MAX_BLOCK_STORED;
        // a block too large to hold is streamed: as xz's single-threaded encoder writes its
        // one block, without sizes in its header
        let streamed = plain <= u64::from(u32::MAX)
            && len <= super::zstdstream::MAX_STORED
            && header.as_ref().is_some_and(|h| h.compressed.is_none());
        let expandable = plain > 0
            && (held || streamed)
            && header.is_some_and(|h| {
                h.compressed
                    .is_none_or(|c| c + (h.len + check_size) as u64 == unpadded)
                    && h.uncompressed.is_none_or(|u| u == plain)
            });
        regions.push(Region {
            offset: block_at as u64,
            len,
            block: expandable.then_some(BlockKind::Exact(plain as u32)),
        });
        block_at += total;
    }
    if block_at != index_start || index[pos..index.len() - 4].iter().any(|&z| z != 0) {
        return None;
    }
    regions.push(Region {
        offset: index_start as u64,
        len: u32::try_from(stop - index_start).ok()?,
        block: None,
    });
    let codec = Codec::XzStream(settings(
        file,
        &regions,
        check,
        budget - (count + 2) * region_size,
    )?);
    Some(Layout {
        start: at,
        end: stop as u64,
        codec,
        block_size: 4096,
        regions,
        first_variant: 0,
    })
}

/// The stream's settings: its blocks' filters and dictionary (its smallest expandable block's
/// header), and the preset that reproduces the start of that block's data; within `budget`
/// bytes.
fn settings(file: &[u8], regions: &[Region], check: u8, budget: u64) -> Option<Settings> {
    let block = |r: &Region| {
        let stored = &file[r.offset as usize..(r.offset + u64::from(r.len)) as usize];
        match r.block {
            Some(BlockKind::Exact(plain)) => Some((stored, plain)),
            _ => None,
        }
    };
    let (stored, plain_len) = regions
        .iter()
        .filter_map(block)
        .min_by_key(|&(_, plain)| plain)?;
    let h = block_header(stored)?;
    let mut s = Settings {
        dict: h.dict,
        level: 6,
        bcj: h.bcj,
        check,
    };
    if !settings_are_real(&s) {
        return None;
    }
    // the block's plain bytes (the first PROBE_PLAIN of a streamed one), and a trial's output
    // of at most as many
    let held = plain_len.min(if plain_len > MAX_BLOCK_PLAIN {
        PROBE_PLAIN as u32
    } else {
        plain_len
    });
    if 3 * u64::from(held) > budget {
        return None;
    }
    let plain = if plain_len > MAX_BLOCK_PLAIN {
        let mut first = Vec::with_capacity(held as usize);
        let read = &mut super::stream::read_slice(stored);
        let _ = decode_stream(&s, read, stored.len() as u64, u64::MAX, &mut |b| {
            let take = (held as usize - first.len()).min(b.len());
            first.extend_from_slice(&b[..take]);
            if first.len() == held as usize {
                Err(String::new()) // enough
            } else {
                Ok(())
            }
        });
        if first.len() != held as usize {
            return None;
        }
        first
    } else {
        let mut plain = vec![0u8; plain_len as usize];
        decode_block(&s, stored, &mut plain).ok()?;
        plain
    };
    let data = &stored[h.len..];
    let variant = variant_of(stored)?;
    // The data's first bytes, from a prefix of the plain bytes: the range coder's bytes are
    // final once written, and the encoder's choices depend on at most a few KiB ahead, so all
    // but the last PROBE_MARGIN bytes of the prefix's output are the block's (past the chunk
    // header, whose sizes differ). A block too small for that, or whose first chunk is stored
    // uncompressed, is encoded whole.
    let probe = &plain[..plain.len().min(PROBE_PLAIN)];
    let compare = lzma2_first_chunk(data).map_or(0, |chunk| chunk.min(data.len()));
    let whole = plain.len() as u64 == u64::from(plain_len);
    if !whole && compare < CHUNK_HEADER + PROBE_MARGIN + 1024 {
        // a streamed block whose first chunk is stored (incompressible bytes first): no probe
        // tells the preset; xz's default is assumed, and NEW's block is checked whole before
        // it is expanded
        return Some(s);
    }
    LEVELS.iter().find_map(|&level| {
        s.level = level;
        if whole && (probe.len() == plain.len() || compare < CHUNK_HEADER + PROBE_MARGIN + 1024) {
            return (encode_block(&s, &plain, variant, usize::MAX)?[..] == *stored).then_some(s);
        }
        let trial = raw_encode(&s, probe)?;
        let n = lzma2_first_chunk(&trial)?
            .min(compare)
            .checked_sub(PROBE_MARGIN)?;
        (n > CHUNK_HEADER + 1024 && trial[CHUNK_HEADER..n] == data[CHUNK_HEADER..n]).then_some(s)
    })
}

/// Plain bytes a preset is tried on, and output bytes at the end of that trial not compared.
const PROBE_PLAIN: usize = 256 << 10;
const PROBE_MARGIN: usize = 8 << 10;
/// An LZMA2 chunk's header when it resets the dictionary and sets the properties.
const CHUNK_HEADER: usize = 6;

/// `plain` as LZMA2 data (behind the BCJ filter, if any) with `s`.
fn raw_encode(s: &Settings, plain: &[u8]) -> Option<Vec<u8>> {
    let mut chain = LzmaChain::new(s.bcj, s.dict, s.level)?;
    let filters = chain.filters();
    // room for any input: LZMA2 stores what does not compress in chunks of 64 KiB
    let mut data = vec![0u8; plain.len() + plain.len() / 16384 + 1024];
    let mut out_pos = 0usize;
    // SAFETY: the chain ends with LZMA_VLI_UNKNOWN and points into `chain`, alive for the call;
    // the buffers are valid for the lengths given and liblzma writes at most `data.len()`.
    let r = unsafe {
        liblzma_sys::lzma_raw_buffer_encode(
            filters.as_ptr(),
            std::ptr::null(),
            plain.as_ptr(),
            plain.len(),
            data.as_mut_ptr(),
            &mut out_pos,
            data.len(),
        )
    };
    (r == liblzma_sys::LZMA_OK).then(|| {
        data.truncate(out_pos);
        data
    })
}

/// The length of the first chunk of LZMA2 data, when it is an LZMA chunk that resets the
/// dictionary and sets the properties (as a block's first chunk does).
fn lzma2_first_chunk(data: &[u8]) -> Option<usize> {
    let head = data.get(..CHUNK_HEADER)?;
    if head[0] < 0xe0 {
        return None;
    }
    let packed = (usize::from(head[3]) << 8 | usize::from(head[4])) + 1;
    Some(CHUNK_HEADER + packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_and_its_properties_byte_agree() {
        for p in 0..40u8 {
            assert_eq!(props_of_dict(dict_of_props(p).unwrap()), p);
        }
        assert_eq!(dict_of_props(props_of_dict(1 << 20)), Some(1 << 20));
        assert_eq!(dict_of_props(props_of_dict(5 << 20)), Some(6 << 20));
    }

    #[test]
    fn a_block_reads_back_what_it_was_written_from() {
        let s = Settings {
            dict: 1 << 20,
            level: 6,
            bcj: Some(liblzma_sys::LZMA_FILTER_X86),
            check: 1,
        };
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for variant in [0, 5, 8] {
            let block = encode_block(&s, &plain, variant, usize::MAX).unwrap();
            assert_eq!(variant_of(&block), Some(variant));
            let mut back = vec![0u8; plain.len()];
            decode_block(&s, &block, &mut back).unwrap();
            assert_eq!(back, plain);
            // one byte of its check changed: refused
            let mut bad = block.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(decode_block(&s, &bad, &mut back).is_err());
        }
        // a header too short for both sizes is no encoding
        assert!(encode_block(&s, &plain, 2, usize::MAX).is_none());
    }
}
