//! Whole zstd streams inside an image: an initrd as Debian's initramfs-tools writes it (`zstd -q
//! -9` of a cpio, behind an uncompressed microcode cpio or not), or any file of an ISO that is
//! one zstd frame. Unlike a squashfs block or an xz stream's block, such a frame cannot be cut
//! into pieces that recompress on their own: every block of it refers back into the window of
//! everything before, and the zstd command line's multi-threaded framing (its default since
//! 1.5.3, deterministic whatever the thread count) lays jobs over it that only a whole run
//! reproduces. So the frame is one region ([`BlockKind::Exact`] of its whole plain length), and
//! each side streams it:
//!
//! - the diff decodes it as it writes the expanded stream, and checks it by re-encoding it as
//!   it decodes, comparing as it goes ([`super::stream::verify`]);
//! - apply feeds NEW's plain bytes to one encoder as they arrive ([`StreamEncoder`]), and
//!   decompresses OLD's frame once into temporary space to read it at random.
//!
//! Settings: the frame header gives the checksum flag and whether the content size was written
//! (the command line writes it when it knows the input's size: a file, not a pipe); the level,
//! the multi-threaded framing and the libzstd release are found by trying: the first blocks of
//! each candidate (`detect`), then the whole frame ([`super::stream::verify`]). Parsing tries
//! the levels whose trial fits its budget (1-11 at the default 64 MiB); a frame none of those
//! makes, when some levels were not tried (dracut-ng's `-15`, Fedora 43's default; `-19`), has
//! its level left to NEW's expansion ([`DEFERRED`], [`search`]), whose memory plan counts the
//! most any level's encoder takes (about 205 MiB at level 19 over a 30 MB stream). OLD's frames
//! are only decoded and need no level.
//!
//! Parsed for hostile input: the frame's block headers are walked to its end within the file,
//! the window is at most [`MAX_WINDOW_LOG`], and the whole frame is decoded (bounded to
//! [`super::MAX_EXPANSION_RATIO`] times its size) before it is described.

use super::codec::{BlockKind, Codec};
use super::squashfs::{Layout, Region};
use zstd::zstd_safe::zstd_sys;

/// The first four bytes of a zstd frame.
pub const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The largest window a frame may have to be expanded: 8 MiB (`zstd -19`'s). Larger windows
/// (`--long`, `--ultra`) stay stored: their decoder alone would be most of a small machine.
pub const MAX_WINDOW_LOG: u32 = 23;
/// The levels tried, most common first: the command line's default (3), initramfs-tools' (9),
/// mkinitcpio's and dracut's usual ones (19, 15), then the rest. 20-22 (`--ultra`) are not.
pub const LEVELS: [i32; 19] = [
    3, 9, 19, 15, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18,
];
/// The most stored bytes of a frame that is expanded (a table's limit; real initrds are tens of
/// MB).
pub const MAX_STORED: u32 = 1 << 30;
/// Plain bytes of a first trial (`detect`): two full blocks.
pub const TRIAL: usize = 256 << 10;
/// Plain bytes of the longest trial: when several candidates reproduce the first [`TRIAL`]
/// bytes (incompressible first bytes, such as an initrd's compressed kernel modules, come out
/// alike at every level), trials four times longer each tell them apart before the whole frame
/// is checked. A multiple of the multi-threaded framing's jobs at every level (at least 2 MiB).
pub const MAX_TRIAL: usize = 4 << 20;
/// Bytes read and decoded at a time.
pub const STEP: usize = 1 << 20;

/// How a frame was made: what [`Codec::ZstdStream`] holds (the libzstd release is the piece's
/// encoding variant, as for squashfs's zstd blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settings {
    /// The compression level (1-19).
    pub level: i32,
    /// The multi-threaded framing (`ZSTD_c_nbWorkers` 1: the command line's default), or one
    /// thread's (`--single-thread`, or a libzstd without threads).
    pub workers: bool,
    /// The frame ends with a checksum (`ZSTD_c_checksumFlag`: the command line's default).
    pub checksum: bool,
    /// The frame header holds the content size (the input's size was known: pledged).
    pub content_size: bool,
}

/// Whether settings from a patch's table are ones a frame this reader expands can have.
pub fn settings_are_real(s: &Settings) -> bool {
    (1..=19).contains(&s.level)
}

/// The level of settings whose level [`parse_within`] left to NEW's expansion: no level whose
/// trial fits the parse budget matched the frame's first blocks, and some levels' trials did not
/// fit it (levels 12-19 at the default budget: dracut's `-15`). Expansion, where memory is
/// planned, tries every level ([`search`]); a table never holds it.
pub const DEFERRED: i32 = 0;

/// The level a frame's settings name when no level reproduces it (the command line's default):
/// nothing recompresses such a frame, and its whole-frame check fails at its first block.
pub const FALLBACK_LEVEL: i32 = 3;

impl Settings {
    /// Whether [`parse_within`] left the level to NEW's expansion ([`DEFERRED`]).
    pub fn is_deferred(&self) -> bool {
        self.level == DEFERRED
    }

    /// These settings as a table holds them: a level [`search`] did not find is
    /// [`FALLBACK_LEVEL`].
    pub fn settled(self) -> Settings {
        if self.is_deferred() {
            Settings {
                level: FALLBACK_LEVEL,
                ..self
            }
        } else {
            self
        }
    }
}

/// Whether `file` has a zstd frame header at `at` that this reader can describe: the magic, no
/// dictionary, reserved bits clear.
pub fn is_zstd(file: &[u8], at: usize) -> bool {
    frame_header(file.get(at..).unwrap_or(&[])).is_some()
}

/// What a frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    len: usize,
    checksum: bool,
    content_size: Option<u64>,
    /// The window descriptor's log (a single segment has none: its window is its content).
    window_log: Option<u32>,
}

fn frame_header(b: &[u8]) -> Option<FrameHeader> {
    if !b.starts_with(&MAGIC) {
        return None;
    }
    let fhd = *b.get(4)?;
    let (fcs_flag, single, reserved, checksum, dict) =
        (fhd >> 6, fhd >> 5 & 1, fhd >> 3 & 1, fhd >> 2 & 1, fhd & 3);
    if reserved != 0 || dict != 0 {
        return None;
    }
    let mut at = 5;
    let mut window_log = None;
    if single == 0 {
        let wd = *b.get(at)?;
        at += 1;
        let log = 10 + u32::from(wd >> 3);
        if log > MAX_WINDOW_LOG || wd & 7 != 0 {
            return None; // libzstd writes whole powers of two
        }
        window_log = Some(log);
    }
    let fcs_len = match (fcs_flag, single) {
        (0, 0) => 0,
        (0, _) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let field = b.get(at..at + fcs_len)?;
    let mut v = [0u8; 8];
    v[..fcs_len].copy_from_slice(field);
    let mut size = u64::from_le_bytes(v);
    if fcs_len == 2 {
        size += 256;
    }
    // a single segment's window is its content: it must fit the same bound
    if single == 1 && size > 1 << MAX_WINDOW_LOG {
        return None;
    }
    Some(FrameHeader {
        len: at + fcs_len,
        checksum: checksum == 1,
        content_size: (fcs_len > 0).then_some(size),
        window_log,
    })
}

/// Where the frame at the start of `b` ends, walking its block headers: `None` when a block is
/// reserved, longer than a block may be, or past `b`.
fn frame_len(b: &[u8], header: &FrameHeader) -> Option<usize> {
    let mut at = header.len;
    loop {
        let h = b.get(at..at + 3)?;
        let v = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        let (last, kind, size) = (v & 1 == 1, v >> 1 & 3, (v >> 3) as usize);
        if size > 128 << 10 {
            return None;
        }
        at += 3 + match kind {
            0 | 2 => size,
            1 => 1,
            _ => return None,
        };
        if at > b.len() {
            return None;
        }
        if last {
            break;
        }
    }
    let end = at + if header.checksum { 4 } else { 0 };
    (end <= b.len()).then_some(end)
}

/// What a read of stored bytes gives: nothing, or why not.
pub type ReadResult = Result<(), String>;
/// Reads `buf.len()` stored bytes at an offset of the frame.
pub type ReadAt<'a> = &'a mut dyn FnMut(u64, &mut [u8]) -> ReadResult;

/// Decodes one frame, read `STEP` bytes at a time by `read(offset, buf)` from `stored_len`
/// bytes, giving its plain bytes to `sink` as they come; refuses more than `max_plain` plain
/// bytes and a frame that does not end exactly at `stored_len`. Returns the plain length. Its
/// memory: the decoder's window (at most [`MAX_WINDOW_LOG`]) and two buffers of `STEP`.
pub fn decode(
    read: ReadAt<'_>,
    stored_len: u64,
    max_plain: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|_| "zstd: the decoder's window")?;
    let (mut input, mut output) = (vec![0u8; STEP], vec![0u8; STEP]);
    let (mut read_at, mut plain, mut done) = (0u64, 0u64, false);
    while read_at < stored_len {
        let n = (stored_len - read_at).min(STEP as u64) as usize;
        read(read_at, &mut input[..n])?;
        read_at += n as u64;
        let mut src = InBuffer::around(&input[..n]);
        while src.pos() < n || !done {
            if done {
                return Err("zstd: bytes after the end of the frame".into());
            }
            let mut dst = OutBuffer::around(&mut output[..]);
            let hint = dctx
                .decompress_stream(&mut dst, &mut src)
                .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
            let got = dst.pos();
            plain += got as u64;
            if plain > max_plain {
                return Err("zstd: a frame that expands more than it may".into());
            }
            sink(&output[..got])?;
            done = hint == 0;
            if got == 0 && src.pos() == n {
                break; // the decoder wants more input
            }
        }
    }
    if !done {
        return Err("zstd: a frame cut short".into());
    }
    Ok(plain)
}

/// A libzstd release's streaming compressor, fed plain bytes as they come.
pub struct StreamEncoder {
    api: &'static super::zstd_release::StreamApi,
    cctx: *mut std::ffi::c_void,
    out: Vec<u8>,
}

// SAFETY: the context is owned by this value alone and libzstd contexts may move between
// threads (they are not used from two at once: every method takes `&mut self`).
unsafe impl Send for StreamEncoder {}

impl Drop for StreamEncoder {
    fn drop(&mut self) {
        // SAFETY: `cctx` came from this API's create and is freed once.
        unsafe { (self.api.free)(self.cctx) };
    }
}

/// `ZSTD_EndDirective`.
#[derive(Clone, Copy)]
enum Directive {
    Continue = 0,
    Flush = 1,
    End = 2,
}

impl StreamEncoder {
    /// An encoder with `s`, of the release `variant` names, for `plain_len` plain bytes; `None`
    /// when this build lacks the release or libzstd refuses the settings.
    pub fn new(s: &Settings, variant: u8, plain_len: u64) -> Option<StreamEncoder> {
        let api = super::zstd_release::stream_api(variant)?;
        // SAFETY: create takes nothing; a null result is handled.
        let cctx = unsafe { (api.create)() };
        if cctx.is_null() {
            return None;
        }
        let enc = StreamEncoder {
            api,
            cctx,
            out: vec![0u8; 128 << 10],
        };
        use zstd_sys::ZSTD_cParameter as P;
        let params = [
            (P::ZSTD_c_compressionLevel, s.level),
            (P::ZSTD_c_checksumFlag, i32::from(s.checksum)),
            (P::ZSTD_c_nbWorkers, i32::from(s.workers)),
        ];
        for (p, v) in params {
            // SAFETY: a live context of this API's release; the parameter ids are the same in
            // every release since 1.4.
            let r = unsafe { (api.set_parameter)(enc.cctx, p as i32, v) };
            if enc.failed(r) {
                return None;
            }
        }
        if s.content_size {
            // SAFETY: as above.
            let r = unsafe { (api.set_pledged)(enc.cctx, plain_len) };
            if enc.failed(r) {
                return None;
            }
        }
        Some(enc)
    }

    fn failed(&self, code: usize) -> bool {
        // SAFETY: isError only inspects the value.
        unsafe { (self.api.is_error)(code) != 0 }
    }

    fn step(
        &mut self,
        plain: &[u8],
        end: Directive,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let mut input = zstd_sys::ZSTD_inBuffer {
            src: plain.as_ptr().cast(),
            size: plain.len(),
            pos: 0,
        };
        loop {
            let mut output = zstd_sys::ZSTD_outBuffer {
                dst: self.out.as_mut_ptr().cast(),
                size: self.out.len(),
                pos: 0,
            };
            // SAFETY: a live context; the buffers point at live memory of the sizes given, and
            // libzstd reads at most `input.size` and writes at most `output.size` bytes.
            let left = unsafe {
                (self.api.compress_stream2)(self.cctx, &mut output, &mut input, end as i32)
            };
            if self.failed(left) {
                return Err("zstd: the encoder failed".into());
            }
            sink(&self.out[..output.pos]);
            let input_done = input.pos == input.size;
            match end {
                Directive::Continue if input_done => return Ok(()),
                Directive::Flush | Directive::End if input_done && left == 0 => return Ok(()),
                _ => {}
            }
        }
    }

    /// Takes the next plain bytes, giving what the encoder writes to `sink`.
    pub fn feed(&mut self, plain: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.step(plain, Directive::Continue, sink)
    }

    /// Ends the frame, giving the rest of it to `sink`.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.step(&[], Directive::End, sink)
    }
}

/// Whether encoding `plain` (the frame's first plain bytes, at most [`TRIAL`]) with `s` and
/// release `variant`, flushed, gives exactly the frame's first bytes.
fn trial(s: &Settings, variant: u8, plain: &[u8], stored: &[u8], plain_len: u64) -> bool {
    let Some(mut enc) = StreamEncoder::new(s, variant, plain_len) else {
        return false;
    };
    let mut out = Vec::new();
    let end = if plain.len() as u64 == plain_len {
        Directive::End
    } else {
        Directive::Flush
    };
    // fed first, then ended or flushed with nothing more, as the command line does (libzstd
    // takes a frame ended in its first call to be of that call's length: a pledged size)
    let sink = &mut |b: &[u8]| out.extend_from_slice(b);
    let made =
        enc.step(plain, Directive::Continue, sink).is_ok() && enc.step(&[], end, sink).is_ok();
    made && stored.get(..out.len()) == Some(&out[..])
}

/// The levels of [`LEVELS`] a frame with header `h` can have (its window is theirs) whose trial
/// fits `budget`.
fn levels_within(h: &FrameHeader, budget: u64) -> Vec<i32> {
    let size_hint = h.content_size.unwrap_or(0);
    let fits = |&level: &i32| {
        // SAFETY: both compute parameters from plain integers.
        let (params, context) = unsafe {
            (
                zstd_sys::ZSTD_getCParams(level, size_hint, 0),
                zstd_sys::ZSTD_estimateCCtxSize(level),
            )
        };
        h.window_log.is_none_or(|log| log == params.windowLog)
            && trial_memory(context as u64) <= budget
    };
    LEVELS.into_iter().filter(fits).collect()
}

/// What [`detect`] found: settings, the libzstd release (its encoding variant), and whether
/// the whole frame was checked with them already.
type Detected = (Settings, u8, bool);

/// The first settings and release whose first blocks match the frame's first plain bytes
/// `first` (at most [`MAX_TRIAL`], all of them in a shorter frame): each release this build has
/// (the pinned older ones first: the bundled release is the newest), each of `levels`,
/// multi-threaded framing first, tried on the first [`TRIAL`] bytes, then on four times more at
/// a time while several match. When several still match (a frame whose first [`MAX_TRIAL`] bytes
/// are incompressible), the first [`MAX_VERIFIED`] are checked on the whole frame
/// ([`super::stream::verify`]); `None` when none of those reproduces it.
fn detect(frame: &[u8], first: &[u8], plain_len: u64, levels: &[i32]) -> Option<Detected> {
    let h = frame_header(frame)?;
    if first.len() as u64 != plain_len.min(MAX_TRIAL as u64) {
        return None;
    }
    let mut candidates: Vec<(Settings, u8)> = (0..super::zstd_release::variants())
        .rev()
        .flat_map(|variant| {
            levels.iter().flat_map(move |&level| {
                [true, false].map(|workers| {
                    let s = Settings {
                        level,
                        workers,
                        checksum: h.checksum,
                        content_size: h.content_size.is_some(),
                    };
                    (s, variant)
                })
            })
        })
        .collect();
    let mut len = TRIAL.min(first.len());
    candidates.retain(|(s, variant)| trial(s, *variant, &first[..len], frame, plain_len));
    while candidates.len() > 1 && len < first.len() {
        len = (4 * len).min(first.len());
        let longer: Vec<(Settings, u8)> = candidates
            .iter()
            .copied()
            .filter(|(s, variant)| trial(s, *variant, &first[..len], frame, plain_len))
            .collect();
        if longer.is_empty() {
            break; // a longer trial that no candidate passes tells nothing: the frame decides
        }
        candidates = longer;
    }
    if candidates.len() <= 1 {
        return candidates.first().map(|&(s, v)| (s, v, false));
    }
    // several match the first blocks: the whole frame tells them apart (a wrong one stops at
    // its first difference)
    let read = super::stream::read_slice(frame);
    let stored_len = frame.len() as u64;
    candidates
        .iter()
        .take(MAX_VERIFIED)
        .find(|(s, v)| {
            let codec = Codec::ZstdStream(*s);
            super::stream::verify(&codec, &read, stored_len, (plain_len, *v))
        })
        .map(|&(s, v)| (s, v, true))
}

/// The first [`MAX_TRIAL`] plain bytes of `frame` (all of a shorter one), decoding no further.
fn first_bytes(frame: &[u8], plain_len: u64) -> Vec<u8> {
    let mut first = Vec::new();
    let read = &mut super::stream::read_slice(frame);
    // the sink stops the decoder once it has them: the error is that stop
    let _ = decode(read, frame.len() as u64, plain_len, &mut |b| {
        let take = (MAX_TRIAL - first.len()).min(b.len());
        first.extend_from_slice(&b[..take]);
        if first.len() == MAX_TRIAL {
            return Err("enough".into());
        }
        Ok(())
    });
    first
}

/// The settings and release of `frame` (of `plain_len` plain bytes), whose level
/// [`parse_within`] left [`DEFERRED`], and whether the whole frame was checked with them
/// already: every level of [`LEVELS`] tried on its first blocks, as parsing tries those within
/// its budget. Run where NEW is expanded, its memory planned there ([`encoder_memory`] of
/// deferred settings is the most any level takes). `None` when no level matches.
pub fn search(frame: &[u8], plain_len: u64) -> Option<(Settings, u8, bool)> {
    let h = frame_header(frame)?;
    let first = first_bytes(frame, plain_len);
    detect(frame, &first, plain_len, &levels_within(&h, u64::MAX))
}

/// The memory a trial of a level whose one-thread context libzstd estimates at `context` bytes
/// takes at most: twice that (measured peaks: 15 MiB at level 9, whose estimate is 12 MiB; 63
/// MiB at levels 12-14, estimated at 48), the first bytes held for the trials and the trial's
/// output.
fn trial_memory(context: u64) -> u64 {
    2 * context + 3 * MAX_TRIAL as u64
}

/// Candidates checked on the whole frame at most when several match its first blocks.
pub const MAX_VERIFIED: usize = 6;

/// Reads the zstd frame at `at` in `file`, which must end exactly at `end` (the end of the file
/// holding it): one region of its whole plain length, with the first settings that reproduce
/// its first blocks, trying only levels whose trial fits `budget` (the parse budget: level 12's
/// context alone takes 60 MiB). When none matches, the level is [`DEFERRED`] if some levels were
/// not tried, else [`FALLBACK_LEVEL`]. `None` when it does not read or expands more than
/// [`super::MAX_EXPANSION_RATIO`] times.
pub fn parse_within(file: &[u8], at: u64, end: u64, budget: u64) -> Option<Layout> {
    let frame = file.get(usize::try_from(at).ok()?..usize::try_from(end).ok()?)?;
    let h = frame_header(frame)?;
    if frame_len(frame, &h)? != frame.len() || frame.len() > u32::MAX as usize {
        return None;
    }
    let max = (frame.len() as u64)
        .saturating_mul(super::MAX_EXPANSION_RATIO)
        .min(u64::from(u32::MAX));
    // decoded whole once: its plain length, and its first bytes for the trials
    let mut first = Vec::new();
    let read = &mut super::stream::read_slice(frame);
    let plain_len = decode(read, frame.len() as u64, max, &mut |b| {
        let take = (MAX_TRIAL - first.len()).min(b.len());
        first.extend_from_slice(&b[..take]);
        Ok(())
    })
    .ok()?;
    if plain_len == 0 || h.content_size.is_some_and(|c| c != plain_len) {
        return None;
    }
    // settings that match no candidate's first blocks still describe the frame: OLD's side only
    // decodes it; NEW's is checked whole before it is expanded, and that check fails at once.
    // Levels whose trial passes the budget are left to NEW's expansion ([`search`]).
    let levels = levels_within(&h, budget);
    let none = if levels.len() < levels_within(&h, u64::MAX).len() {
        DEFERRED
    } else {
        FALLBACK_LEVEL
    };
    let (settings, variant, _) = detect(frame, &first, plain_len, &levels).unwrap_or((
        Settings {
            level: none,
            workers: true,
            checksum: h.checksum,
            content_size: h.content_size.is_some(),
        },
        0,
        false,
    ));
    Some(Layout {
        start: at,
        end,
        codec: Codec::ZstdStream(settings),
        block_size: 4096,
        regions: vec![Region {
            offset: at,
            len: frame.len() as u32,
            block: Some(BlockKind::Exact(plain_len as u32)),
        }],
        first_variant: variant,
    })
}

/// The memory of [`StreamEncoder`] with `s` for a stream of `plain_len` bytes at most, as
/// measured on libzstd 1.5.4 and 1.5.7 (peak RSS over 70 MB: 13 MiB at level 9 on one thread,
/// 97 MiB with the multi-threaded framing): one thread's context (the level's tables and
/// window), and with the multi-threaded framing its job buffers (an input ring of four jobs of
/// four windows each, two jobs' output), of which a shorter stream fills only its own length.
pub fn encoder_memory(s: &Settings, plain_len: u64) -> u64 {
    if s.is_deferred() {
        // whatever level [`search`] finds, and its trials
        return LEVELS
            .into_iter()
            .map(|level| {
                // SAFETY: computes a size from a plain integer.
                let context = unsafe { zstd_sys::ZSTD_estimateCCtxSize(level) } as u64;
                let s = Settings {
                    level,
                    workers: true,
                    ..*s
                };
                encoder_memory(&s, plain_len).max(trial_memory(context))
            })
            .max()
            .unwrap_or(0);
    }
    // SAFETY: both compute sizes from plain integers.
    let (window, context) = unsafe {
        let params = zstd_sys::ZSTD_getCParams(s.level, 0, 0);
        (
            1u64 << params.windowLog,
            zstd_sys::ZSTD_estimateCCtxSize(s.level) as u64,
        )
    };
    let buffers = if s.workers {
        let job = (4 * window).max(1 << 20);
        let ring = plain_len.saturating_add(job);
        (4 * job).min(ring) + (2 * job).min(ring.saturating_add(plain_len >> 7))
    } else {
        window + (256 << 10)
    };
    context + buffers + (256 << 10)
}

/// The memory [`decode`] takes: its window and buffers.
pub fn decoder_memory() -> u64 {
    (1 << MAX_WINDOW_LOG) + 2 * STEP as u64 + (256 << 10)
}
