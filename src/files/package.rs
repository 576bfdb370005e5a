//! Package archives read down to their payloads (issue 23: references beside OLD). A spin's new
//! bytes are mostly the files of the packages it adds, which every distribution mirror serves;
//! what an image holds of a package is its payload's files, not the archive's compressed bytes.
//! So a reference file is read as what it carries:
//!
//! - a Debian package (`ar`: `debian-binary`, `control.tar.*`, `data.tar.*`): its `data.tar`,
//!   decompressed (xz, zstd, gzip or none);
//! - an RPM (lead, signature header, header, payload): its cpio payload, decompressed (zstd, xz
//!   or gzip, told by the payload's own magic);
//! - a file that is one compressed stream (a `.tar.xz`, `.tar.zst`, `.tar.gz`): its plain bytes;
//! - anything else: its bytes as they are.
//!
//! Only decompression is needed: a reference is an input on both sides of a patch, never
//! rebuilt. Reference files are untrusted: every length is checked against the file before it
//! is used, the decoders' memory is bounded ([`DECODER_MEMORY`]: xz's memory limit, zstd's
//! largest window) and so is what a payload expands to (the caller's `max`, a decompression
//! bomb's end), and the payload is streamed to a sink a step at a time, never held whole.
//!
//! ```
//! use spindiff::internals::files::package::{Archive, expand, locate};
//! // a plain file is its own payload
//! let file = b"just bytes".to_vec();
//! assert_eq!(locate(&file).unwrap().archive, Archive::Plain);
//! let mut out = Vec::new();
//! assert_eq!(expand(&file, &mut out, 1 << 20).unwrap(), 10);
//! assert_eq!(out, file);
//! ```

use std::io::{self, Read, Write};

/// The most memory a payload's decoder takes: xz's memory limit (a dictionary of 64 MiB, `xz
/// -9e`'s, and its buffers) and zstd's largest window (128 MiB frames, `--long=27`, are refused:
/// no distribution packs with them).
pub const DECODER_MEMORY: u64 = 80 << 20;
/// zstd's largest window accepted in a payload (64 MiB: `zstd --ultra -22`'s).
pub const MAX_ZSTD_WINDOW_LOG: u32 = 26;
/// The most bytes of an RPM's headers (the signature and the main header): real packages have
/// hundreds of KiB (file lists, changelogs).
pub const MAX_RPM_HEADERS: u64 = 64 << 20;
/// Bytes decompressed and written at a time.
const STEP: usize = 1 << 20;

/// What kind of file a reference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// A Debian package: an `ar` archive whose `data.tar` is the payload.
    Deb,
    /// An RPM: its cpio payload follows the lead and the headers.
    Rpm,
    /// One compressed stream (a compressed tarball).
    Stream,
    /// Anything else: the file is its own payload.
    Plain,
}

/// How a payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not at all.
    None,
    /// gzip (one member or several).
    Gzip,
    /// xz.
    Xz,
    /// zstd (one frame or several).
    Zstd,
}

/// Where a reference's payload lies in its file and how it is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// What the file is.
    pub archive: Archive,
    /// The payload's compression.
    pub compression: Compression,
    /// Its first byte in the file.
    pub offset: u64,
    /// Its stored length.
    pub len: u64,
}

/// The compression whose magic `b` starts with, if any.
fn compression_of(b: &[u8]) -> Option<Compression> {
    if b.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// Where `file`'s payload is: a Debian package's `data.tar`, an RPM's payload, a compressed
/// stream, or the whole file. An archive whose structure does not hold (a member past the end, a
/// header that lies about its length, a package without a payload) is an error naming why; a
/// file that is no archive at all is [`Archive::Plain`].
pub fn locate(file: &[u8]) -> Result<Payload, String> {
    if file.starts_with(b"!<arch>\n") {
        return deb_payload(file);
    }
    if file.starts_with(&[0xed, 0xab, 0xee, 0xdb]) {
        return rpm_payload(file);
    }
    let (archive, compression) = match compression_of(file) {
        Some(c) => (Archive::Stream, c),
        None => (Archive::Plain, Compression::None),
    };
    Ok(Payload {
        archive,
        compression,
        offset: 0,
        len: file.len() as u64,
    })
}

/// The `data.tar` member of a Debian package (`ar`: a global header, then members of a 60-byte
/// header each, name, times, owner, mode, decimal size and `` `\n ``, their data padded to an
/// even length).
fn deb_payload(file: &[u8]) -> Result<Payload, String> {
    let mut at = 8usize;
    while at < file.len() {
        let header = file
            .get(at..at + 60)
            .ok_or("a Debian package cut inside a member's header")?;
        if &header[58..60] != b"`\n" {
            return Err("a Debian package with a malformed member header".into());
        }
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim_end().parse().ok())
            .ok_or("a Debian package member of no size")?;
        let start = at + 60;
        let end = u64::try_from(start)
            .ok()
            .and_then(|s| s.checked_add(size))
            .filter(|&e| e <= file.len() as u64)
            .ok_or("a Debian package member past the end of the file")? as usize;
        let name = std::str::from_utf8(&header[..16]).unwrap_or("");
        let name = name.trim_end().trim_end_matches('/');
        if let Some(suffix) = name.strip_prefix("data.tar") {
            let compression = match suffix {
                "" => Compression::None,
                ".gz" => Compression::Gzip,
                ".xz" => Compression::Xz,
                ".zst" => Compression::Zstd,
                _ => return Err(format!("a Debian package's {name}: not xz, zstd or gzip")),
            };
            if compression != Compression::None
                && compression_of(&file[start..end]) != Some(compression)
            {
                return Err(format!(
                    "a Debian package's {name} is not what its name says"
                ));
            }
            return Ok(Payload {
                archive: Archive::Deb,
                compression,
                offset: start as u64,
                len: size,
            });
        }
        at = end + (end & 1);
    }
    Err("a Debian package without data.tar".into())
}

/// An RPM's payload: behind the 96-byte lead, the signature header (padded to 8 bytes) and the
/// main header, each a magic, a count of 16-byte index entries and a data length.
fn rpm_payload(file: &[u8]) -> Result<Payload, String> {
    let mut at = 96u64;
    for (i, what) in ["signature", "header"].into_iter().enumerate() {
        let h = usize::try_from(at)
            .ok()
            .and_then(|a| file.get(a..a + 16))
            .ok_or_else(|| format!("an RPM cut inside its {what}"))?;
        if h[..4] != [0x8e, 0xad, 0xe8, 0x01] {
            return Err(format!("an RPM whose {what} has no header magic"));
        }
        let be = |b: &[u8]| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let len = 16 + 16 * be(&h[8..12]) + be(&h[12..16]);
        if at + len > MAX_RPM_HEADERS {
            return Err(format!(
                "an RPM whose {what} passes {} MiB",
                MAX_RPM_HEADERS >> 20
            ));
        }
        at += len;
        if i == 0 {
            at = at.div_ceil(8) * 8; // the signature is padded to 8 bytes
        }
    }
    let rest = usize::try_from(at)
        .ok()
        .and_then(|a| file.get(a..))
        .filter(|r| !r.is_empty())
        .ok_or("an RPM without a payload")?;
    let compression = compression_of(rest).ok_or("an RPM whose payload is not zstd, xz or gzip")?;
    Ok(Payload {
        archive: Archive::Rpm,
        compression,
        offset: at,
        len: rest.len() as u64,
    })
}

/// Writes `file`'s payload ([`locate`]) to `out`, decompressed a step at a time, and returns its
/// length; refuses a payload of more than `max` bytes (a decompression bomb ends there) and a
/// compressed stream that is damaged or cut.
pub fn expand(file: &[u8], out: &mut dyn Write, max: u64) -> Result<u64, String> {
    let p = locate(file)?;
    let stored = &file[p.offset as usize..(p.offset + p.len) as usize];
    expand_payload(p.compression, stored, out, (max, DECODER_MEMORY))
}

/// Writes the payload read from `stored` (its bytes in the file, compressed with
/// `compression`) to `out` as [`expand`] does, its decoder within `memory` bytes (at most
/// [`DECODER_MEMORY`]: a payload whose decoder needs more is refused).
pub fn expand_payload(
    compression: Compression,
    stored: impl Read,
    out: &mut dyn Write,
    (max, memory): (u64, u64),
) -> Result<u64, String> {
    let memory = memory.min(DECODER_MEMORY);
    let mut reader: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(stored),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stored)),
        Compression::Xz => {
            let stream =
                liblzma::stream::Stream::new_stream_decoder(memory, liblzma::stream::CONCATENATED)
                    .map_err(|e| format!("xz: {e}"))?;
            Box::new(liblzma::read::XzDecoder::new_stream(stored, stream))
        }
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::new(stored).map_err(|e| format!("zstd: {e}"))?;
            // the window is most of a zstd decoder's memory
            let window_log = (63 - memory.max(1 << 20).leading_zeros()).min(MAX_ZSTD_WINDOW_LOG);
            d.window_log_max(window_log)
                .map_err(|e| format!("zstd: {e}"))?;
            Box::new(d)
        }
    };
    let mut buf = vec![0u8; STEP];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("its payload does not decompress: {e}")),
        };
        done += n as u64;
        if done > max {
            return Err(format!("its payload expands past {max} bytes"));
        }
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing its payload: {e}"))?;
    }
}

/// A reference as a patch names it: enough to find the file again (a distribution's package
/// index gives its name, size and SHA-256, so `apt-get download`, `dnf download` or a mirror
/// finds it) and to check what it expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The file's name (a hint: a reference is found by its SHA-256).
    pub name: String,
    /// The file's size.
    pub size: u64,
    /// The file's SHA-256.
    pub sha256: [u8; 32],
    /// What its payload expands to ([`expand`]).
    pub payload_len: u64,
    /// The payload's BLAKE3.
    pub payload_hash: [u8; 32],
}

/// Reads the reference file `file` named `name`: its identity, with its payload written to
/// `out` as it is expanded (at most `max` bytes).
pub fn read_reference(
    name: &str,
    file: &[u8],
    out: &mut dyn Write,
    max: u64,
) -> Result<Reference, String> {
    use sha2::Digest;
    let mut payload_hash = blake3::Hasher::new();
    let mut hashing = HashingWriter {
        inner: out,
        hash: &mut payload_hash,
    };
    let payload_len = expand(file, &mut hashing, max)?;
    Ok(Reference {
        name: name.to_string(),
        size: file.len() as u64,
        sha256: sha2::Sha256::digest(file).into(),
        payload_len,
        payload_hash: payload_hash.finalize().into(),
    })
}

/// A writer that hashes (BLAKE3) what passes through it.
pub(crate) struct HashingWriter<'a> {
    pub(crate) inner: &'a mut dyn Write,
    pub(crate) hash: &'a mut blake3::Hasher,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `ar` archive of `members` (name, data), as dpkg-deb writes one.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn xz(plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = liblzma::write::XzEncoder::new(&mut out, 6);
        e.write_all(plain).unwrap();
        e.finish().unwrap();
        out
    }

    #[test]
    fn a_debian_package_is_its_data_tar_decompressed() {
        let tar: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(b"control")),
            ("data.tar.xz", &xz(&tar)),
        ]);
        let p = locate(&deb).unwrap();
        assert_eq!((p.archive, p.compression), (Archive::Deb, Compression::Xz));
        let mut out = Vec::new();
        assert_eq!(expand(&deb, &mut out, 1 << 30).unwrap(), tar.len() as u64);
        assert!(out == tar);
        // a bomb's end: more than `max` is refused
        assert!(expand(&deb, &mut Vec::new(), 1000).is_err());
        // zstd and gzip payloads, and a payload that is not what its name says
        let zst = zstd::bulk::compress(&tar, 19).unwrap();
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar.zst", &zst)]);
        let mut out = Vec::new();
        expand(&deb, &mut out, 1 << 30).unwrap();
        assert!(out == tar);
        let lying = ar(&[("data.tar.gz", &zst)]);
        assert!(locate(&lying).is_err());
    }

    #[test]
    fn a_damaged_package_is_an_error_never_a_panic() {
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("data.tar.xz", &xz(&[7u8; 5000])),
        ]);
        for cut in [9, 60, 70, 100, deb.len() - 3] {
            let r = expand(&deb[..cut], &mut Vec::new(), 1 << 30);
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut lying = deb.clone();
        lying[8 + 60 + 4 + 48..8 + 60 + 4 + 58].copy_from_slice(b"9999999999");
        assert!(locate(&lying).is_err());
        assert!(locate(&ar(&[("debian-binary", b"2.0\n")])).is_err());
        // an RPM lead with headers that lie about their length
        let mut rpm = vec![0xed, 0xab, 0xee, 0xdb];
        rpm.resize(96, 0);
        rpm.extend_from_slice(&[
            0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        assert!(locate(&rpm).is_err());
    }

    #[test]
    fn a_reference_names_its_file_and_its_payload() {
        let tar: Vec<u8> = (0..50_000u32).map(|i| (i % 97) as u8).collect();
        let deb = ar(&[("debian-binary", b"2.0\n"), ("data.tar.xz", &xz(&tar))]);
        let mut out = Vec::new();
        let r = read_reference("p_1.0_all.deb", &deb, &mut out, 1 << 20).unwrap();
        assert!(out == tar);
        assert_eq!(
            (r.size, r.payload_len),
            (deb.len() as u64, tar.len() as u64)
        );
        assert_eq!(r.payload_hash, *blake3::hash(&tar).as_bytes());
        // the SHA-256 of an empty file, as sha256sum gives it
        let empty = read_reference("empty", b"", &mut Vec::new(), 1).unwrap();
        let want = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let got: String = empty.sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_rpm_is_its_payload_decompressed() {
        let cpio: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let mut rpm = vec![0xed, 0xab, 0xee, 0xdb];
        rpm.resize(96, 0);
        // a signature of one entry and 5 bytes of data (padded to 8), a header of none
        rpm.extend_from_slice(&[0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5]);
        rpm.extend_from_slice(&[0u8; 16 + 5]);
        rpm.resize(rpm.len().div_ceil(8) * 8, 0);
        rpm.extend_from_slice(&[0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        rpm.extend_from_slice(&zstd::bulk::compress(&cpio, 3).unwrap());
        let p = locate(&rpm).unwrap();
        assert_eq!(
            (p.archive, p.compression),
            (Archive::Rpm, Compression::Zstd)
        );
        let mut out = Vec::new();
        expand(&rpm, &mut out, 1 << 30).unwrap();
        assert!(out == cpio);
    }
}
