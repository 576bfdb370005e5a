//! What each fuzz target does with one input. The targets in fuzz/fuzz_targets/ call these, and
//! tests/fuzz_corpus.rs replays the seed corpus and every input a fuzzer ever failed on through
//! them, so a fix stays fixed without cargo-fuzz installed.

use std::fs;
use std::path::{Path, PathBuf};

use spindiff::{ApplyOptions, DiffOptions};

/// How much the process's peak resident set grew while `f` ran, in bytes: the kernel's own
/// count (`VmHWM`, reset through `/proc/self/clear_refs` first), so memory allocated by the C
/// codecs (liblzma, zstd, zlib) and mappings count too. `None` where the kernel does not say.
/// Nothing else in the process may run meanwhile (tests/fuzz_corpus.rs runs its tests one at a
/// time for it).
pub fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let status = |field: &str| -> Option<u64> {
        let text = fs::read_to_string("/proc/self/status").ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    };
    let reset = fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status("VmRSS:");
    let out = f();
    let peak = status("VmHWM:");
    let growth = match (reset, before, peak) {
        (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    (out, growth)
}

/// The cap the `apply` target applies every input under: any patch whose needs pass it is
/// refused up front, and no input may make apply's memory grow past it.
pub const APPLY_CAP: u64 = 160 << 20;

/// What parsing any input's file systems may take at most: each parse's budget, the layouts
/// kept, and room for the ISO walk and one block being decompressed.
pub const PARSE_CAP: u64 = spindiff::internals::transform::PARSE_BUDGET
    + spindiff::internals::transform::LAYOUT_BYTES
    + (8 << 20);

/// Files the inputs are written to (spindiff's API works on paths): in /dev/shm when there is
/// one, so fuzzing does not wear a disk.
pub struct Scratch {
    dir: tempfile::TempDir,
    old: PathBuf,
}

impl Scratch {
    /// `fixed_old`: the OLD the `apply` target applies every input to (fuzz/old.bin).
    pub fn new(fixed_old: &[u8]) -> Scratch {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::tempdir_in(base).unwrap();
        let old = dir.path().join("fixed-old");
        fs::write(&old, fixed_old).unwrap();
        Scratch { dir, old }
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, data).unwrap();
        p
    }

    /// The container parser: any bytes give a summary or an error, never a panic.
    pub fn inspect(&self, data: &[u8]) -> bool {
        spindiff::inspect(&self.write("patch", data)).is_ok()
    }

    /// Apply to the fixed OLD, streamed (1 thread) and by index (3 threads), output discarded,
    /// under [`APPLY_CAP`]: any bytes give a verified result or an error, never a panic, a hang
    /// or memory past the cap. Both ways must agree.
    pub fn apply(&self, data: &[u8]) -> bool {
        let patch = self.write("patch", data);
        let results: Vec<bool> = [1, 3]
            .into_iter()
            .map(|threads| {
                let opts = ApplyOptions {
                    threads: Some(threads),
                    memory: Some(APPLY_CAP),
                    ..Default::default()
                };
                let (result, growth) =
                    peak_growth(|| spindiff::verify(&self.old, &patch, None, &opts));
                if let Some(g) = growth {
                    assert!(g <= APPLY_CAP, "apply grew by {} MiB", g >> 20);
                }
                result.is_ok()
            })
            .collect();
        assert_eq!(
            results[0], results[1],
            "streamed and indexed apply disagree"
        );
        results[0]
    }

    /// diff then apply of an arbitrary pair must give NEW back exactly. The input is a 2-byte
    /// little-endian split point (modulo the rest's length), then OLD and NEW back to back.
    pub fn roundtrip(&self, data: &[u8]) {
        if data.len() < 2 {
            return;
        }
        let rest = &data[2..];
        let split = usize::from(u16::from_le_bytes([data[0], data[1]])) % (rest.len() + 1);
        let (old, new) = rest.split_at(split);
        let (old_path, new_path) = (self.write("old", old), self.write("new", new));
        let (patch, out) = (self.dir.path().join("rt.spd"), self.dir.path().join("out"));
        let opts = DiffOptions::default()
            .memory(256 << 20)
            .threads(1)
            .level(1)
            .chunk_size(4096);
        spindiff::diff(&old_path, &new_path, &patch, &opts).expect("diff failed");
        spindiff::apply(&old_path, &patch, &out, &ApplyOptions::default()).expect("apply failed");
        assert!(fs::read(&out).unwrap() == new, "round trip changed NEW");
    }
}

/// Encodes a pair the way [`Scratch::roundtrip`] reads it.
pub fn roundtrip_input(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut v = (old.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(old);
    v.extend_from_slice(new);
    v
}

/// The `squashfs` target: the transform layer's parser on arbitrary bytes, within its memory
/// bound ([`PARSE_CAP`]). Whatever layout comes out must tile its file system exactly, and
/// decompressing its blocks must fail cleanly when they lie. Returns how many file systems
/// were found.
pub fn squashfs(data: &[u8]) -> usize {
    use spindiff::internals::transform::find_filesystems;
    let (found, growth) = peak_growth(|| find_filesystems(data));
    if let Some(g) = growth {
        assert!(g <= PARSE_CAP, "parsing grew by {} MiB", g >> 20);
    }
    for layout in &found {
        let mut expected = layout.start;
        for r in &layout.regions {
            assert_eq!(r.offset, expected, "regions do not tile");
            expected += u64::from(r.len);
        }
        assert_eq!(expected, layout.end);
        let mut plain = Vec::new();
        for r in &layout.regions {
            let Some(kind) = r.block else { continue };
            let stored = &data[r.offset as usize..(r.offset + u64::from(r.len)) as usize];
            let limit = kind.plain_limit(layout.block_size);
            let _ = layout.codec.decompress(stored, limit, &mut plain);
        }
    }
    found.len()
}

/// What expanding any reference file may take at most: its decoder's memory limit, a step of
/// its payload, and room for the archive walk.
pub const PACKAGE_CAP: u64 = spindiff::internals::files::package::DECODER_MEMORY + (8 << 20);

/// The `packages` target: a reference file (a Debian package, an RPM, a compressed tarball, any
/// bytes) read down to its payload, within its memory bound ([`PACKAGE_CAP`]) and a bound on
/// what the payload expands to. Returns the payload's length, or `None` when the file is
/// refused.
pub fn packages(data: &[u8]) -> Option<u64> {
    use spindiff::internals::files::package::{expand, locate};
    let max = 64 << 20;
    let (expanded, growth) = peak_growth(|| expand(data, &mut std::io::sink(), max));
    if let Some(g) = growth {
        assert!(g <= PACKAGE_CAP, "expanding grew by {} MiB", g >> 20);
    }
    if let Ok(p) = locate(data) {
        assert!(
            p.offset + p.len <= data.len() as u64,
            "a payload past the file"
        );
    }
    let n = expanded.ok()?;
    assert!(n <= max);
    Some(n)
}
