//! Whole gzip streams inside an image: an initrd that is one gzip member (`gzip -9` of a cpio,
//! behind an uncompressed microcode cpio or not; dracut's and initramfs-tools' gzip option,
//! Debian's installer initrds), or any file of an ISO that is one. Like a zstd frame
//! ([`super::zstdstream`]) it is one region ([`BlockKind::Exact`] of its whole plain length),
//! streamed on both sides; unlike it, no encoder setting reproduces a deflate stream by itself:
//! GNU gzip, zlib, pigz and others each choose their matches their own way. So the diff records
//! how the stream differs from what a deflate predictor makes of its plain bytes (preflate-rs:
//! its parameters and a correction stream, a fraction of a percent of the stored bytes for
//! gzip's and zlib's encoders), and apply rebuilds the stream from NEW's plain bytes and those
//! corrections ([`GzipEncoder`]), bit for bit.
//!
//! The corrections are NEW's own: they travel in NEW's table as the codec's [`Recipe`], cut
//! into chunks of at most [`CHUNK_PLAIN`] plain bytes so that apply holds one chunk at a time;
//! OLD's table keeps only the header (OLD's stream is only ever decoded).
//!
//! Parsed for hostile input: the header is bounded ([`MAX_HEADER`]), the stream must end at the
//! end of the file holding it with a trailer whose CRC-32 and length match, plain bytes are
//! bounded ([`super::MAX_EXPANSION_RATIO`] and [`MAX_PLAIN`]), the recipe by [`MAX_RECIPE`],
//! and the predictor's parameters read back from a patch are checked before use
//! ([`recipe_is_real`]).

use std::sync::Arc;

use super::codec::{BlockKind, Codec};
use super::squashfs::{Layout, Region};
use super::stream::{ReadAt, ReadResult, STEP};
use preflate_rs::{ExitCode, PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};

/// The first bytes of a gzip member that deflates (RFC 1952: ID1, ID2, CM 8).
pub const MAGIC: [u8; 3] = [0x1f, 0x8b, 8];
/// The longest member header read (its optional extra field, name and comment included).
pub const MAX_HEADER: usize = 1024;
/// The shortest stream expanded: below it, the recipe and the table entry outweigh the gain.
pub const MIN_STORED: usize = 16 << 10;
/// The most stored bytes of a stream that is expanded.
pub const MAX_STORED: u32 = 1 << 30;
/// The most plain bytes of a stream that is expanded (the predictor counts positions in 31
/// bits).
pub const MAX_PLAIN: u64 = 1 << 30;
/// The most plain bytes of one chunk of the recipe: what apply holds at once. A deflate block
/// of zlib or gzip holds at most 16 Ki symbols (4 MiB of plain bytes); a stream whose block
/// expands past this stays compressed.
pub const CHUNK_PLAIN: usize = 16 << 20;
/// Stored bytes the predictor is given first (later chunks: a `STEP` at a time). It estimates
/// the encoder's parameters on its first chunk alone, and a few MiB are not always enough: on
/// GNU gzip `-9` over kernel modules, preflate-rs 0.7 takes a first chunk of 3-12 MiB of plain
/// bytes for another hash and fails further on; 16 MiB ([`CHUNK_PLAIN`]) find it.
const FIRST_STEP: usize = 4 * STEP;
/// The most bytes a recipe may hold: its header and corrections (0.3% of the stored bytes at
/// `gzip -6`, less at `-9`), and a few bytes per chunk.
pub const MAX_RECIPE: u64 = 2 << 20;
/// The longest match chain the predictor walks per position (zlib's `-9` walks 4096); a recipe
/// asking more is refused (its apply would be slow without bound).
pub const MAX_CHAIN: u32 = 4096;
/// Memory the predictor holds beside its chunk's plain bytes, on either side: its hash chains
/// and token buffers (measured: about 6 MiB).
const PREDICTOR_MEMORY: u64 = 8 << 20;
/// Bytes a chunk of a recipe is counted as beside its corrections.
const CHUNK_OVERHEAD: u64 = 48;

/// How to rebuild one gzip member bit for bit: what [`Codec::GzipStream`] holds.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Recipe {
    /// The member header as stored (flags, time, name...).
    pub header: Vec<u8>,
    /// The deflate stream's chunks, in order (none in OLD's table: OLD is only decoded).
    pub chunks: Vec<Chunk>,
}

impl std::fmt::Debug for Recipe {
    /// Sizes, not bytes: a recipe holds up to [`MAX_RECIPE`] of corrections.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let corrections: usize = self.chunks.iter().map(|c| c.corrections.len()).sum();
        f.debug_struct("Recipe")
            .field("header_bytes", &self.header.len())
            .field("chunks", &self.chunks.len())
            .field("plain_bytes", &self.plain_len())
            .field("correction_bytes", &corrections)
            .finish()
    }
}

/// A piece of a deflate stream as the predictor rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Plain bytes it covers (at most [`CHUNK_PLAIN`]).
    pub plain_len: u32,
    /// The predictor's corrections for them (its parameters first, in the first chunk).
    pub corrections: Vec<u8>,
}

impl Recipe {
    /// Plain bytes its chunks cover.
    pub fn plain_len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.plain_len)).sum()
    }

    /// Memory it holds.
    pub fn held_bytes(&self) -> u64 {
        let corrections: u64 = self.chunks.iter().map(|c| c.corrections.len() as u64).sum();
        self.header.len() as u64 + corrections + CHUNK_OVERHEAD * self.chunks.len() as u64
    }

    /// The most plain bytes of one of its chunks.
    pub fn largest_chunk(&self) -> u64 {
        let largest = self.chunks.iter().map(|c| u64::from(c.plain_len)).max();
        largest.unwrap_or(0)
    }

    /// What decoding the stream needs of it (OLD's table): the header alone.
    pub fn for_decoding(&self) -> Recipe {
        Recipe {
            header: self.header.clone(),
            chunks: Vec::new(),
        }
    }
}

/// The parameters preflate-rs writes at the head of a stream's first chunk (its
/// `ReconstructionData`, bitcode), read back to check them before a predictor is built.
#[derive(bitcode::Decode)]
struct Reconstruction {
    parameters: preflate_rs::TokenPredictorParameters,
    #[allow(dead_code)] // read to check the layout, never used
    corrections: Vec<u8>,
}

/// Whether a recipe from a patch's table is one this reader could have written: a gzip header
/// of exactly its length, chunks within [`CHUNK_PLAIN`] and [`MAX_RECIPE`], and predictor
/// parameters of a real deflate encoder (a window of at most 32 KiB, matches of at most 258
/// bytes, chains of at most [`MAX_CHAIN`]).
pub fn recipe_is_real(r: &Recipe) -> bool {
    if header_len(&r.header) != Some(r.header.len())
        || r.held_bytes() > MAX_RECIPE
        || r.chunks.iter().any(|c| c.plain_len as usize > CHUNK_PLAIN)
    {
        return false;
    }
    let Some(first) = r.chunks.first() else {
        return true; // OLD's: decoded only
    };
    match bitcode::decode::<Reconstruction>(&first.corrections) {
        Ok(Reconstruction { parameters: p, .. }) => {
            (8..=15).contains(&p.window_bits)
                && p.nice_length <= 258
                && (3..=4).contains(&p.min_len)
                && p.max_chain <= MAX_CHAIN
                && p.max_dist_3_matches <= 1 << 15
        }
        Err(_) => false,
    }
}

/// Whether `file` has a gzip member header at `at` (deflate, no reserved flag, within
/// [`MAX_HEADER`]).
pub fn is_gzip(file: &[u8], at: usize) -> bool {
    header_len(file.get(at..).unwrap_or(&[])).is_some()
}

/// The length of the member header at the start of `b` (RFC 1952).
fn header_len(b: &[u8]) -> Option<usize> {
    if !b.starts_with(&MAGIC) {
        return None;
    }
    let flags = *b.get(3)?;
    if flags & 0xe0 != 0 {
        return None;
    }
    let mut at = 10;
    if flags & 4 != 0 {
        let xlen = b.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    // a name, then a comment: each ends with a zero
    for flag in [8, 16] {
        if flags & flag != 0 {
            let field = b.get(at..b.len().min(MAX_HEADER))?;
            at += field.iter().position(|&c| c == 0)? + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    (at <= MAX_HEADER && at <= b.len()).then_some(at)
}

/// The shortest member found inside other data ([`embedded_members`]) that is expanded: a man
/// page or a changelog of a few KiB is worth it when it changed (its deflate bytes differ from
/// the first change on, its plain bytes only there), and one that did not change costs its
/// table entry only.
pub const MIN_EMBEDDED: usize = 1 << 10;
/// The longest member found inside other data: man pages and changelogs are far shorter, and
/// members this short are expanded several at once ([`super::expand::SMALL_STREAM`]).
pub const MAX_EMBEDDED_STORED: usize = super::expand::SMALL_STREAM as usize;
/// The most members [`embedded_members`] finds in one file (a root file system holds a few
/// thousand gzip man pages and changelogs); past them the rest stays as it is.
pub const MAX_EMBEDDED: usize = 1 << 16;
/// Bytes [`embedded_members`] looks through for a header at a time (what it has read is released
/// behind it a step at a time, as expansion does).
const SCAN_WINDOW: usize = 16 << 20;
/// A place whose header and deflate bytes fail within this many bytes is passed by one byte
/// only: each such try costs at most this much inflating, and a longer one is passed whole.
pub const QUICK_FAILURE: usize = 64;

/// The gzip members inside `file` (a tarball, an uncompressed squashfs: the man pages and
/// changelogs a root file system holds gzipped), in order and not overlapping, each a layout of
/// its own as [`parse_within`] describes one (from the inflate that checked it, not read
/// again): every place with a member header whose deflate stream inflates to its end and whose
/// trailer matches, [`MIN_EMBEDDED`] to [`MAX_EMBEDDED_STORED`] bytes long and expanding at most
/// [`super::MAX_EXPANSION_RATIO`] times; at most [`MAX_EMBEDDED`] of them, together holding at
/// most [`super::LAYOUT_BYTES`]. The file is read once, a window at a time,
/// `release(start, end)` called behind it: a place that is no member is passed with every byte
/// its inflater took (by one byte when that is at most [`QUICK_FAILURE`]), so no byte is
/// inflated more than that many times whatever the file holds. Memory: zlib's
/// state and window, a buffer of `STEP`, a window of the file and a member mapped.
pub fn embedded_members(file: &[u8], release: &dyn Fn(usize, usize)) -> Vec<Layout> {
    let finder = memchr::memmem::Finder::new(&MAGIC);
    let mut scratch = vec![0u8; super::stream::STEP];
    let mut releaser = super::expand::Releaser::new(release);
    let (mut found, mut from, mut held) = (Vec::new(), 0, 0u64);
    while from < file.len() && found.len() < MAX_EMBEDDED {
        let window = (from + SCAN_WINDOW).min(file.len());
        match finder.find(&file[from..window]) {
            Some(hit) => {
                let at = from + hit;
                from = match member_len(&file[at..], &mut scratch) {
                    Ok((len, plain_len)) => {
                        let layout = member_layout(&file[at..at + len], at as u64, plain_len);
                        if let Some(l) = layout.filter(|_| len >= MIN_EMBEDDED) {
                            held += l.held_bytes();
                            if held > super::LAYOUT_BYTES {
                                break;
                            }
                            found.push(l);
                        }
                        at + len
                    }
                    // bytes the inflater went through are not inflated again; a place that
                    // failed at once is passed by one byte (its header may hold a member's)
                    Err(took) if took > QUICK_FAILURE => at + took,
                    Err(_) => at + 1,
                };
            }
            // a header cut by the window's end is found from the next window
            None if window < file.len() => from = window + 1 - MAGIC.len(),
            None => break,
        }
        releaser.reached(from as u64);
    }
    releaser.finish(file.len());
    found
}

/// The length of the gzip member at the start of `b`, header and trailer included, and its
/// plain length, when it is one of at most [`MAX_EMBEDDED_STORED`] bytes: its deflate stream
/// inflates to its end within [`super::MAX_EXPANSION_RATIO`] times its stored bytes, and the
/// trailer's CRC-32 and length match. Otherwise the bytes its inflater took (0 for no header).
fn member_len(b: &[u8], scratch: &mut [u8]) -> Result<(usize, u64), usize> {
    use flate2::{Decompress, FlushDecompress, Status};
    let header = header_len(b).ok_or(0usize)?;
    let deflate = &b[header..b.len().min(MAX_EMBEDDED_STORED)];
    let mut inflater = Decompress::new(false);
    let mut crc = flate2::Crc::new();
    let took = |i: &Decompress| header + i.total_in() as usize;
    loop {
        let used = inflater.total_in() as usize;
        let before = inflater.total_out();
        let status = inflater
            .decompress(&deflate[used..], scratch, FlushDecompress::None)
            .map_err(|_| took(&inflater))?;
        let got = (inflater.total_out() - before) as usize;
        crc.update(&scratch[..got]);
        let plain = inflater.total_out();
        if plain > (inflater.total_in() + 64).saturating_mul(super::MAX_EXPANSION_RATIO) {
            return Err(took(&inflater));
        }
        match status {
            Status::StreamEnd => break,
            _ if got == 0 && inflater.total_in() as usize == used => return Err(took(&inflater)),
            _ => {}
        }
    }
    let end = took(&inflater);
    match b.get(end..end + 8) {
        Some(t) if end + 8 <= MAX_EMBEDDED_STORED && t == trailer(&crc, inflater.total_out()) => {
            Ok((end + 8, inflater.total_out()))
        }
        _ => Err(end),
    }
}

/// Decodes one member, read `STEP` bytes at a time by `read(offset, buf)` from `stored_len`
/// bytes, giving its plain bytes to `sink` as they come; refuses more than `max_plain` plain
/// bytes, a deflate stream that does not end exactly before the 8-byte trailer, and a trailer
/// whose CRC-32 or length does not match. Returns the plain length. Memory: zlib's window and two
/// buffers of `STEP`.
pub fn decode(
    read: ReadAt<'_>,
    stored_len: u64,
    max_plain: u64,
    sink: &mut dyn FnMut(&[u8]) -> ReadResult,
) -> Result<u64, String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut head = vec![0u8; stored_len.min(MAX_HEADER as u64) as usize];
    read(0, &mut head)?;
    let start = header_len(&head).ok_or("gzip: a header that does not read")? as u64;
    let end = stored_len
        .checked_sub(8)
        .filter(|&e| e > start)
        .ok_or("gzip: a member cut short")?;
    let mut inflater = Decompress::new(false);
    let mut crc = flate2::Crc::new();
    // buffers no larger than the member needs: a man page is a few KiB, and zeroing a `STEP`
    // twice for each of thousands was most of their parse
    let input_len = (end - start).min(STEP as u64) as usize;
    let (mut input, mut output) = (vec![0u8; input_len], vec![0u8; (4 * input_len).min(STEP)]);
    let (mut at, mut plain, mut done) = (start, 0u64, false);
    while !done {
        if at >= end {
            return Err("gzip: a deflate stream cut short".into());
        }
        let n = (end - at).min(STEP as u64) as usize;
        read(at, &mut input[..n])?;
        let mut used = 0;
        loop {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(&input[used..n], &mut output, FlushDecompress::None)
                .map_err(|e| format!("gzip: {e}"))?;
            let took = (inflater.total_in() - before_in) as usize;
            let got = (inflater.total_out() - before_out) as usize;
            used += took;
            plain += got as u64;
            if plain > max_plain {
                return Err("gzip: a member that expands more than it may".into());
            }
            crc.update(&output[..got]);
            sink(&output[..got])?;
            if status == Status::StreamEnd {
                done = true;
                break;
            }
            if used == n && got < output.len() {
                break; // the inflater wants more input
            }
            if took == 0 && got == 0 {
                return Err("gzip: the inflater stalled".into());
            }
        }
        at += used as u64;
    }
    if at != end {
        return Err("gzip: bytes between the deflate stream and the trailer".into());
    }
    let mut trailer = [0u8; 8];
    read(end, &mut trailer)?;
    if trailer != self::trailer(&crc, plain) {
        return Err("gzip: the trailer's checksum or length does not match".into());
    }
    Ok(plain)
}

/// The member trailer for plain bytes summed by `crc`, `plain` of them: CRC-32, length mod 2^32.
fn trailer(crc: &flate2::Crc, plain: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.sum().to_le_bytes());
    t[4..].copy_from_slice(&(plain as u32).to_le_bytes());
    t
}

/// Records how to rebuild the member `stream` (whose header is `header` bytes long): runs the
/// predictor over its deflate stream a `STEP` of stored bytes at a time, cutting the recipe
/// where the predictor's chunks end (at most [`CHUNK_PLAIN`] plain bytes each; the first is
/// given [`FIRST_STEP`] stored bytes). Returns the
/// recipe and the plain length; an error for a stream the predictor cannot describe within the
/// bounds (its parameters, [`MAX_RECIPE`], `max_plain`) or whose trailer does not match.
fn analyse(stream: &[u8], header: usize, max_plain: u64) -> Result<(Recipe, u64), String> {
    let deflate = stream
        .get(header..stream.len().saturating_sub(8))
        .filter(|d| !d.is_empty())
        .ok_or("gzip: a member cut short")?;
    let config = PreflateConfig {
        max_chain_length: MAX_CHAIN,
        plain_text_limit: CHUNK_PLAIN,
        verify_compression: false,
    };
    let mut predictor = PreflateStreamProcessor::new(&config);
    let mut recipe = Recipe {
        header: stream[..header].to_vec(),
        chunks: Vec::new(),
    };
    let mut crc = flate2::Crc::new();
    let (mut at, mut plain) = (0usize, 0u64);
    let mut end = FIRST_STEP.min(deflate.len());
    while !predictor.is_done() {
        match predictor.decompress(&deflate[at..end]) {
            Ok(r) => {
                let text = predictor.plain_text().text();
                plain += text.len() as u64;
                if plain > max_plain {
                    return Err("gzip: a member that expands more than it may".into());
                }
                if r.compressed_size == 0 && text.is_empty() {
                    return Err("gzip: the predictor made no progress".into());
                }
                crc.update(text);
                recipe.chunks.push(Chunk {
                    plain_len: text.len() as u32,
                    corrections: r.corrections,
                });
                if recipe.held_bytes() > MAX_RECIPE {
                    return Err("gzip: a member the predictor does not describe briefly".into());
                }
                at += r.compressed_size;
                end = (at + STEP).min(deflate.len());
                predictor.shrink_to_dictionary();
            }
            // the predictor needs whole deflate blocks: more input (any other error stays one)
            Err(e) if e.exit_code() == ExitCode::ShortRead && end < deflate.len() => {
                end = (end + STEP).min(deflate.len())
            }
            Err(e) => return Err(format!("gzip: {e:?}")),
        }
    }
    if at != deflate.len() || stream[stream.len() - 8..] != trailer(&crc, plain) {
        return Err("gzip: a member whose trailer does not match".into());
    }
    Ok((recipe, plain))
}

/// Memory [`parse_within`] takes: the predictor, a chunk's plain bytes twice, and the recipe.
pub fn analysis_memory() -> u64 {
    PREDICTOR_MEMORY + 2 * CHUNK_PLAIN as u64 + 2 * STEP as u64 + MAX_RECIPE
}

/// The most plain bytes the member `stream` may have.
fn max_plain(stream: &[u8]) -> u64 {
    (stream.len() as u64)
        .saturating_mul(super::MAX_EXPANSION_RATIO)
        .min(MAX_PLAIN)
}

/// The recipe that rebuilds the member `stream` bit for bit from its plain bytes, when the
/// predictor can describe it within the bounds ([`MAX_RECIPE`], [`MAX_EXPANSION_RATIO`]).
/// preflate-rs is not written for hostile input: a panic in it is a stream it cannot describe.
///
/// [`MAX_EXPANSION_RATIO`]: super::MAX_EXPANSION_RATIO
pub fn recipe_of(stream: &[u8]) -> Option<Recipe> {
    let header = header_len(stream)?;
    match crate::cleanup::contained(|| analyse(stream, header, max_plain(stream))) {
        Some(Ok((recipe, _))) => Some(recipe),
        _ => None,
    }
}

/// Reads the gzip member at `at` in `file`, which must end exactly at `end` (the end of the file
/// holding it; members inside other data: [`embedded_members`]): one region of its
/// whole plain length, with its header alone as the recipe (the predictor runs only when NEW's
/// expansion finds the member nowhere in OLD: [`recipe_of`]). `None` when it does not read, is
/// shorter than [`MIN_STORED`], expands more than [`super::MAX_EXPANSION_RATIO`] times, or
/// `budget` cannot hold [`analysis_memory`] (on OLD's side too, though it only decodes: a
/// stream NEW's side cannot analyse must stay compressed on both sides, not be expanded in OLD
/// alone).
pub fn parse_within(file: &[u8], (at, end): (u64, u64), budget: u64) -> Option<Layout> {
    let stream = file.get(usize::try_from(at).ok()?..usize::try_from(end).ok()?)?;
    if stream.len() < MIN_STORED || stream.len() > MAX_STORED as usize {
        return None;
    }
    if budget < analysis_memory() {
        return None;
    }
    let read = &mut super::stream::read_slice(stream);
    let plain_len = decode(
        read,
        stream.len() as u64,
        max_plain(stream),
        &mut |_| Ok(()),
    )
    .ok()?;
    member_layout(stream, at, plain_len)
}

/// The layout of the member `stream`, at `at` in its file, whose deflate stream was checked to
/// inflate to `plain_len` bytes: one region of its whole plain length, with its header alone
/// as the recipe. `None` for a member of no plain bytes, or of more than
/// [`super::MAX_EXPANSION_RATIO`] times its stored bytes.
fn member_layout(stream: &[u8], at: u64, plain_len: u64) -> Option<Layout> {
    let header = header_len(stream)?;
    if plain_len == 0 || plain_len > max_plain(stream) {
        return None;
    }
    let recipe = Recipe {
        header: stream[..header].to_vec(),
        chunks: Vec::new(),
    };
    Some(Layout {
        start: at,
        end: at + stream.len() as u64,
        codec: Codec::GzipStream(Arc::new(recipe)),
        block_size: 4096,
        regions: vec![Region {
            offset: at,
            len: stream.len() as u32,
            block: Some(BlockKind::Exact(plain_len as u32)),
        }],
        first_variant: 0,
    })
}

/// Rebuilds a member from its plain bytes, fed as they come, and its [`Recipe`].
pub struct GzipEncoder {
    recipe: Arc<Recipe>,
    /// The chunk being gathered.
    next: usize,
    pending: Gathered,
    recreator: RecreateStreamProcessor,
    crc: flate2::Crc,
    plain: u64,
    started: bool,
}

impl GzipEncoder {
    /// The encoder of a member of `plain_len` plain bytes with `recipe`; `None` when the
    /// recipe does not cover exactly that many or is not one a diff writes
    /// ([`recipe_is_real`]).
    pub fn new(recipe: &Arc<Recipe>, plain_len: u64) -> Option<GzipEncoder> {
        let covers = !recipe.chunks.is_empty() && recipe.plain_len() == plain_len;
        (covers && recipe_is_real(recipe)).then(|| GzipEncoder {
            recipe: recipe.clone(),
            next: 0,
            pending: Gathered::default(),
            recreator: RecreateStreamProcessor::new(),
            crc: flate2::Crc::new(),
            plain: 0,
            started: false,
        })
    }

    fn start(&mut self, sink: &mut dyn FnMut(&[u8])) {
        if !self.started {
            sink(&self.recipe.header);
            self.started = true;
        }
    }

    /// Rebuilds the chunk gathered in `pending`.
    fn emit(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let chunk = &self.recipe.chunks[self.next];
        let (recreator, mut pending) = (&mut self.recreator, std::mem::take(&mut self.pending));
        let rebuilt =
            crate::cleanup::contained(|| recreator.recompress(&mut pending, &chunk.corrections));
        match rebuilt {
            Some(Ok((bytes, _))) => sink(&bytes),
            _ => return Err("gzip: the recipe does not rebuild the stream".into()),
        }
        self.next += 1;
        Ok(())
    }

    /// Takes the next plain bytes, giving what the encoder writes to `sink`.
    pub fn feed(&mut self, mut plain: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.start(sink);
        self.crc.update(plain);
        self.plain += plain.len() as u64;
        while !plain.is_empty() {
            let chunk = self.recipe.chunks.get(self.next);
            let want = chunk.ok_or("gzip: more plain bytes than the recipe covers")?;
            let take = (want.plain_len as usize - self.pending.len).min(plain.len());
            self.pending.push(&plain[..take]);
            plain = &plain[take..];
            if self.pending.len == want.plain_len as usize {
                self.emit(sink)?;
            }
        }
        Ok(())
    }

    /// Ends the member (its last chunks, then the trailer), giving the rest to `sink`.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.start(sink);
        while let Some(chunk) = self.recipe.chunks.get(self.next) {
            if self.pending.len != chunk.plain_len as usize {
                return Err("gzip: fewer plain bytes than the recipe covers".into());
            }
            self.emit(sink)?;
        }
        sink(&trailer(&self.crc, self.plain));
        Ok(())
    }
}

/// A chunk's plain bytes as they were fed, in pieces of at most `STEP`, read once by the
/// predictor, which copies them into its own buffer: each piece is dropped as it is read, so
/// the chunk is held about once, not twice.
#[derive(Default)]
struct Gathered {
    pieces: std::collections::VecDeque<Vec<u8>>,
    /// Bytes gathered.
    len: usize,
    /// Bytes of the first piece already read.
    read: usize,
}

impl Gathered {
    fn push(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            let last = match self.pieces.back_mut() {
                Some(p) if p.len() < STEP => p,
                _ => {
                    self.pieces.push_back(Vec::with_capacity(STEP));
                    self.pieces.back_mut().expect("just pushed")
                }
            };
            let take = (STEP - last.len()).min(bytes.len());
            last.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }
}

impl std::io::Read for Gathered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl std::io::BufRead for Gathered {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pieces.front().is_some_and(|p| self.read == p.len()) {
            self.pieces.pop_front();
            self.read = 0;
        }
        Ok(self.pieces.front().map_or(&[], |p| &p[self.read..]))
    }

    fn consume(&mut self, n: usize) {
        self.read += n;
    }
}

/// The memory of [`GzipEncoder`] with `recipe`: the predictor, its largest chunk (inside the
/// predictor, while the pieces it was gathered in are dropped as it reads them, a `STEP` at a
/// time), the deflate bytes rebuilt from it (at most about as many: stored blocks), and the
/// recipe.
pub fn encoder_memory(recipe: &Recipe) -> u64 {
    PREDICTOR_MEMORY + 2 * recipe.largest_chunk() + STEP as u64 + recipe.held_bytes()
}

/// Memory expanding a member of NEW of at most `plain_len` plain bytes takes: the predictor
/// making its recipe ([`recipe_of`]) or the encoder checking it (the predictor, a chunk's plain
/// bytes twice, the recipe), and the decoder.
pub fn expansion_memory(plain_len: u64) -> u64 {
    let chunk = plain_len.min(CHUNK_PLAIN as u64);
    PREDICTOR_MEMORY + 2 * chunk + 2 * STEP as u64 + MAX_RECIPE + decoder_memory()
}

/// The most [`encoder_memory`] of any recipe a table may hold.
pub fn most_encoder_memory() -> u64 {
    PREDICTOR_MEMORY + 2 * CHUNK_PLAIN as u64 + STEP as u64 + MAX_RECIPE
}

/// The memory [`decode`] takes: zlib's state and window, its buffers.
pub fn decoder_memory() -> u64 {
    2 * STEP as u64 + MAX_HEADER as u64 + (256 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Text that compresses about as an initrd's does, with some noise.
    fn plain(n: usize) -> Vec<u8> {
        let noise = crate::testing::noise(n / 8, 7);
        let mut text: Vec<u8> = (0..n as u32)
            .flat_map(|i| format!("line {} of {}\n", i % 977, i / 13).into_bytes())
            .take(n - noise.len())
            .collect();
        text.extend_from_slice(&noise);
        text
    }

    /// A member of `plain` made by zlib at `level` (not GNU gzip: another deflater the predictor
    /// must describe) behind `header`.
    fn member(header: &[u8], plain: &[u8], level: u32) -> Vec<u8> {
        let mut deflater =
            flate2::write::DeflateEncoder::new(header.to_vec(), flate2::Compression::new(level));
        deflater.write_all(plain).unwrap();
        let mut out = deflater.finish().unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(plain);
        out.extend_from_slice(&trailer(&crc, plain.len() as u64));
        out
    }

    const PLAIN_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

    #[test]
    fn headers_are_read_with_every_optional_field_and_refused_when_broken() {
        assert_eq!(header_len(&PLAIN_HEADER), Some(10));
        // extra field (4 bytes), name, comment, header CRC
        let mut full = PLAIN_HEADER.to_vec();
        full[3] = 4 | 8 | 16 | 2;
        full.extend_from_slice(&[4, 0, 1, 2, 3, 4]);
        full.extend_from_slice(b"initrd.img\0a comment\0");
        full.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(header_len(&full), Some(full.len()));
        assert_eq!(header_len(&full[..full.len() - 1]), None, "cut in its CRC");
        assert_eq!(header_len(&full[..20]), None, "cut in its name");
        let mut reserved = PLAIN_HEADER;
        reserved[3] = 0x20;
        assert_eq!(header_len(&reserved), None);
        let mut not_deflate = PLAIN_HEADER;
        not_deflate[2] = 7;
        assert_eq!(header_len(&not_deflate), None);
        // a name that never ends within the header's bound
        let mut endless = PLAIN_HEADER.to_vec();
        endless[3] = 8;
        endless.extend(std::iter::repeat_n(b'x', 2 * MAX_HEADER));
        assert_eq!(header_len(&endless), None);
    }

    /// A zlib member of every level is described and rebuilt bit for bit from its recipe, fed
    /// its plain bytes in pieces of any size.
    #[test]
    fn zlib_members_are_rebuilt_from_their_recipe_fed_in_any_pieces() {
        let plain = plain(3 << 20);
        for level in [1, 6, 9] {
            let stored = member(&PLAIN_HEADER, &plain, level);
            let recipe = &Arc::new(recipe_of(&stored).unwrap());
            assert_eq!(recipe.plain_len(), plain.len() as u64, "level {level}");
            for piece in [1 << 20, 65_537, 999] {
                let mut enc = GzipEncoder::new(recipe, plain.len() as u64).unwrap();
                let mut out = Vec::new();
                for p in plain.chunks(piece) {
                    enc.feed(p, &mut |b| out.extend_from_slice(b)).unwrap();
                }
                enc.finish(&mut |b| out.extend_from_slice(b)).unwrap();
                assert!(out == stored, "level {level}, pieces of {piece}");
            }
            // too few or too many plain bytes are an error, not a wrong stream
            let mut enc = GzipEncoder::new(recipe, plain.len() as u64).unwrap();
            enc.feed(&plain[..1000], &mut |_| {}).unwrap();
            assert!(enc.finish(&mut |_| {}).is_err());
            let mut enc = GzipEncoder::new(recipe, plain.len() as u64).unwrap();
            let mut more = plain.clone();
            more.push(0);
            assert!(enc.feed(&more, &mut |_| {}).is_err());
            assert!(GzipEncoder::new(recipe, plain.len() as u64 + 1).is_none());
        }
    }

    /// Two members one after the other, bytes after the trailer, a wrong CRC or length, or a
    /// cut: the file is not one member ending where it does, and is not described.
    #[test]
    fn anything_but_one_whole_member_is_not_described() {
        let plain = plain(200_000);
        let one = member(&PLAIN_HEADER, &plain, 6);
        let len = one.len();
        let read = |b: &[u8]| parse_within(b, (0, b.len() as u64), u64::MAX);
        assert!(read(&one).is_some());
        assert!(
            read(&[one.clone(), one.clone()].concat()).is_none(),
            "two members"
        );
        assert!(
            read(&[&one[..], &[0u8; 4]].concat()).is_none(),
            "zeros after it"
        );
        for at in [len - 8, len - 1] {
            let mut bad = one.clone();
            bad[at] ^= 1;
            assert!(read(&bad).is_none(), "trailer byte {at}");
        }
        assert!(read(&one[..len - 9]).is_none(), "cut");
        // described with its header alone (the predictor runs at expansion), decoded whole
        let old = parse_within(&one, (0, len as u64), u64::MAX).unwrap();
        let Codec::GzipStream(recipe) = &old.codec else {
            unreachable!()
        };
        assert!(recipe.chunks.is_empty());
        assert_eq!(
            old.regions[0].block,
            Some(BlockKind::Exact(plain.len() as u32))
        );
        // a parse budget that cannot hold the predictor: not read at all
        assert!(parse_within(&one, (0, len as u64), analysis_memory() - 1).is_none());
    }
}
