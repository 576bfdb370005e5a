//! Whole streams: a region of a file that is one stream its compressor cannot cut into pieces
//! that recompress alone (a zstd frame, [`super::zstdstream`]; an xz stream's one block of more
//! than [`super::xzstream::MAX_BLOCK_PLAIN`], [`super::xzstream`]; a gzip member,
//! [`super::gzipstream`]). Such a region is never held
//! whole: expansion decodes it a step at a time into the expanded stream and checks it by
//! re-encoding it as it decodes ([`verify`]); apply feeds its plain bytes to one [`Encoder`] as
//! they arrive and decodes OLD's once into temporary space. This module gives those operations
//! whatever the compressor, so expansion and apply do not tell them apart.

use super::codec::{BlockKind, Codec};
pub use super::zstdstream::{ReadAt, ReadResult, STEP};

/// Reads a stream held in memory (a mapped input), for [`decode`] and [`verify`].
pub fn read_slice(bytes: &[u8]) -> impl Fn(u64, &mut [u8]) -> ReadResult + '_ {
    move |at, buf| {
        let at = at as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    }
}

/// Whether a block of `kind` of `codec` is a whole stream (see the module doc).
pub fn streams(codec: &Codec, kind: BlockKind) -> bool {
    match (codec, kind) {
        (Codec::ZstdStream(_) | Codec::GzipStream(_), _) => true,
        (Codec::XzStream(_), BlockKind::Exact(plain)) => plain > super::xzstream::MAX_BLOCK_PLAIN,
        _ => false,
    }
}

/// Decodes the stream of `codec`, `stored_len` bytes read a step at a time by `read`, giving its
/// plain bytes to `sink`; refuses more than `max_plain` of them. Returns the plain length.
pub fn decode(
    codec: &Codec,
    read: ReadAt<'_>,
    stored_len: u64,
    max_plain: u64,
    sink: &mut dyn FnMut(&[u8]) -> ReadResult,
) -> Result<u64, String> {
    match codec {
        Codec::ZstdStream(_) => super::zstdstream::decode(read, stored_len, max_plain, sink),
        Codec::XzStream(s) => super::xzstream::decode_stream(s, read, stored_len, max_plain, sink),
        Codec::GzipStream(_) => super::gzipstream::decode(read, stored_len, max_plain, sink),
        _ => Err("a compressor without whole streams".into()),
    }
}

/// A stream's encoder, fed its plain bytes as they come.
pub enum Encoder {
    /// A zstd frame.
    Zstd(super::zstdstream::StreamEncoder),
    /// An xz block.
    Xz(super::xzstream::BlockEncoder),
    /// A gzip member.
    Gzip(super::gzipstream::GzipEncoder),
}

impl Encoder {
    /// The encoder of a stream of `codec` with encoding `variant` and `plain_len` plain bytes;
    /// `None` when this build cannot make it.
    pub fn new(codec: &Codec, variant: u8, plain_len: u64) -> Option<Encoder> {
        match codec {
            Codec::ZstdStream(s) => {
                super::zstdstream::StreamEncoder::new(s, variant, plain_len).map(Encoder::Zstd)
            }
            Codec::XzStream(s) => super::xzstream::BlockEncoder::new(s, variant).map(Encoder::Xz),
            Codec::GzipStream(r) if variant == 0 => {
                super::gzipstream::GzipEncoder::new(r, plain_len).map(Encoder::Gzip)
            }
            _ => None,
        }
    }

    /// Takes the next plain bytes, giving what the encoder writes to `sink`.
    pub fn feed(&mut self, plain: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        match self {
            Encoder::Zstd(e) => e.feed(plain, sink),
            Encoder::Xz(e) => e.feed(plain, sink),
            Encoder::Gzip(e) => e.feed(plain, sink),
        }
    }

    /// Ends the stream, giving the rest of it to `sink`.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        match self {
            Encoder::Zstd(e) => e.finish(sink),
            Encoder::Xz(e) => e.finish(sink),
            Encoder::Gzip(e) => e.finish(sink),
        }
    }
}

/// The memory a whole stream of `codec` of `plain_len` plain bytes takes to rebuild: its encoder
/// and buffers.
pub fn encoder_memory(codec: &Codec, plain_len: u64) -> u64 {
    match codec {
        Codec::ZstdStream(s) => super::zstdstream::encoder_memory(s, plain_len),
        Codec::GzipStream(r) => super::gzipstream::encoder_memory(r),
        _ => codec.encoder_memory(0) + 2 * STEP as u64,
    }
}

/// The memory decoding a whole stream of `codec` takes: its window and buffers.
pub fn decoder_memory(codec: &Codec) -> u64 {
    match codec {
        Codec::ZstdStream(_) => super::zstdstream::decoder_memory(),
        Codec::GzipStream(_) => super::gzipstream::decoder_memory(),
        _ => codec.decoder_memory() + 2 * STEP as u64,
    }
}

/// The memory checking or rebuilding a whole stream of `codec` of `plain_len` plain bytes takes:
/// its decoder and its encoder.
pub fn rebuild_memory(codec: &Codec, plain_len: u64) -> u64 {
    encoder_memory(codec, plain_len) + decoder_memory(codec)
}

/// Decodes the whole stream `stored` of `codec` into `out`, which it must fill exactly (for
/// callers that hold a stream in memory: tests, the in-memory rebuild).
pub fn decode_all(codec: &Codec, stored: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut at = 0usize;
    let max = out.len() as u64;
    decode(
        codec,
        &mut read_slice(stored),
        stored.len() as u64,
        max,
        &mut |b| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
            Ok(())
        },
    )?;
    Ok(at)
}

/// `plain` encoded whole with `codec` and `variant`, as [`Encoder`] encodes it fed a step at a
/// time.
pub fn encode_all(codec: &Codec, variant: u8, plain: &[u8]) -> Option<Vec<u8>> {
    let mut enc = Encoder::new(codec, variant, plain.len() as u64)?;
    let mut out = Vec::new();
    for piece in plain.chunks(STEP) {
        enc.feed(piece, &mut |b| out.extend_from_slice(b)).ok()?;
    }
    enc.finish(&mut |b| out.extend_from_slice(b)).ok()?;
    Some(out)
}

/// What rebuilding a stream like this one may take on apply, the same for OLD's layout and
/// NEW's (what `diff --apply-memory` decides by, which must drop a stream on both sides or
/// neither): [`rebuild_memory`], except that a gzip stream counts the most any recipe takes
/// (its recipe is NEW's alone: OLD's layout has none to measure).
pub fn rebuild_memory_either_side(codec: &Codec, plain_len: u64) -> u64 {
    match codec {
        Codec::GzipStream(_) => {
            super::gzipstream::most_encoder_memory() + super::gzipstream::decoder_memory()
        }
        _ => rebuild_memory(codec, plain_len),
    }
}

/// Whether re-encoding the stream's plain bytes (decoded from `read`) with `codec` and
/// `variant` gives exactly its `stored_len` stored bytes, compared as the encoder writes them:
/// the first difference ends the check. Memory: a decoder, an encoder and `STEP` buffers.
pub fn verify(
    codec: &Codec,
    read: &dyn Fn(u64, &mut [u8]) -> ReadResult,
    stored_len: u64,
    (plain_len, variant): (u64, u8),
) -> bool {
    let Some(mut enc) = Encoder::new(codec, variant, plain_len) else {
        return false;
    };
    let compared = std::cell::Cell::new(0u64);
    let same = std::cell::Cell::new(true);
    let mut expect = vec![0u8; STEP];
    let mut compare = |out: &[u8]| {
        for piece in out.chunks(STEP) {
            let at = compared.get();
            let expect = &mut expect[..piece.len()];
            if !same.get()
                || at + piece.len() as u64 > stored_len
                || read(at, expect).is_err()
                || expect != piece
            {
                same.set(false);
                return;
            }
            compared.set(at + piece.len() as u64);
        }
    };
    let decoded = decode(
        codec,
        &mut |o, b| read(o, b),
        stored_len,
        plain_len,
        &mut |plain| {
            enc.feed(plain, &mut compare)?;
            // the first difference ends the check
            if same.get() {
                Ok(())
            } else {
                Err(String::new())
            }
        },
    );
    let finished = decoded == Ok(plain_len) && enc.finish(&mut compare).is_ok();
    finished && same.get() && compared.get() == stored_len
}
