//! The fuzzers' seed corpus (fuzz/corpus/) and every input a fuzzer ever failed on
//! (fuzz/regressions/<target>/, named after what it found), replayed through the same code the
//! fuzz targets run (tests/common/fuzzing.rs). `SPINDIFF_RECORD_SEEDS=1` rewrites fuzz/old.bin and
//! the current format version's seeds (real patches of it, `v<version>-patch-<i>`) after a format
//! change; the seeds of older versions (`patch-<i>`: version 1, `v2-squashfs`) stay, so the
//! fuzzers keep reaching the older readers too.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fuzzing::{Scratch, roundtrip_input};
use common::{binary_like, edit, release_edits};
use spindiff::DiffOptions;

/// The tests here run one at a time: the replays measure the process's peak memory
/// (`common::fuzzing::peak_growth`), which another test running beside them would inflate.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

/// Writes fuzz/old.bin and the current version's seeds: patches of it with 4 KiB chunks
/// (several chunks each), and the same pairs as round-trip inputs.
fn record_seeds() {
    let old = binary_like(24 << 10, 4242);
    fs::write(fuzz_dir().join("old.bin"), &old).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old");
    fs::write(&old_path, &old).unwrap();
    for target in ["inspect", "apply", "roundtrip"] {
        fs::create_dir_all(fuzz_dir().join("corpus").join(target)).unwrap();
    }
    let version = spindiff::format::FORMAT_VERSION;
    for i in 0..9u64 {
        let new = if i < 8 {
            edit(&old, &release_edits(old.len(), 1 + i as usize * 2, 100 + i))
        } else {
            // 18 chunks: more than one group of linked streams (version 3)
            let thrice = old.repeat(3);
            edit(&thrice, &release_edits(thrice.len(), 12, 100 + i))
        };
        let new_path = dir.path().join("new");
        fs::write(&new_path, &new).unwrap();
        let patch = dir.path().join("patch");
        let opts = DiffOptions {
            memory: 256 << 20,
            threads: Some(1),
            chunk_size: 4096,
            ..Default::default()
        };
        spindiff::diff(&old_path, &new_path, &patch, &opts).unwrap();
        let bytes = fs::read(&patch).unwrap();
        for target in ["inspect", "apply"] {
            fs::write(
                fuzz_dir()
                    .join("corpus")
                    .join(target)
                    .join(format!("v{version}-patch-{i}")),
                &bytes,
            )
            .unwrap();
        }
        // round trips of a slice of OLD against a slice of NEW keep the seeds small
        let pair = roundtrip_input(&old[..4096 + 512 * i as usize], &new[..5000]);
        fs::write(
            fuzz_dir()
                .join("corpus/roundtrip")
                .join(format!("pair-{i}")),
            pair,
        )
        .unwrap();
    }
}

/// A seed with a transform section for the parsers, in the current version: the patch between
/// two tiny squashfs images of the squashfs seeds (gzip -> xz).
fn record_transform_seed() {
    let squashfs = fuzz_dir().join("corpus/squashfs");
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("patch");
    let opts = DiffOptions::default().memory(256 << 20).threads(1);
    spindiff::diff(
        &squashfs.join("gzip.sq"),
        &squashfs.join("xz.sq"),
        &patch,
        &opts,
    )
    .unwrap();
    let name = format!("v{}-squashfs", spindiff::format::FORMAT_VERSION);
    fs::copy(&patch, fuzz_dir().join("corpus/inspect").join(name)).unwrap();
}

#[test]
fn seeds_are_real_patches_of_the_fixed_old() {
    let _serial = serial();
    if std::env::var_os("SPINDIFF_RECORD_SEEDS").is_some() {
        record_seeds();
        record_transform_seed();
    }
    let scratch = Scratch::new(&fs::read(fuzz_dir().join("old.bin")).unwrap());
    let seeds = inputs("corpus", "apply");
    assert!(seeds.len() >= 16, "seed corpus missing");
    let version = |p: &[u8]| u16::from_le_bytes([p[8], p[9]]);
    for v in [1, 3, 10] {
        let n = seeds.iter().filter(|(_, d)| version(d) == v).count();
        assert!(n >= 8, "{n} seeds of version {v}");
    }
    let v2 = fs::read(fuzz_dir().join("corpus/inspect/v2-squashfs")).expect("version-2 seed");
    assert!(
        scratch.inspect(&v2) && version(&v2) == 2,
        "the version-2 seed"
    );
    let v3 = fs::read(fuzz_dir().join("corpus/inspect/v3-squashfs")).expect("version-3 seed");
    assert!(
        scratch.inspect(&v3) && version(&v3) == 3 && v3[10] & 1 == 1,
        "the version-3 seed with a transform section"
    );
    for (path, data) in &seeds {
        assert!(scratch.inspect(data), "{} does not inspect", path.display());
        assert!(
            scratch.apply(data),
            "{} does not apply to fuzz/old.bin",
            path.display()
        );
    }
    assert!(inputs("corpus", "roundtrip").len() >= 8);
}

#[test]
fn corpus_and_past_failures_replay_cleanly() {
    let _serial = serial();
    let scratch = Scratch::new(&fs::read(fuzz_dir().join("old.bin")).unwrap());
    for kind in ["corpus", "regressions"] {
        for (_, data) in inputs(kind, "inspect") {
            scratch.inspect(&data);
        }
        for (_, data) in inputs(kind, "apply") {
            scratch.apply(&data);
        }
        for (_, data) in inputs(kind, "roundtrip") {
            scratch.roundtrip(&data);
        }
        for (_, data) in inputs(kind, "squashfs") {
            common::fuzzing::squashfs(&data);
        }
        for (_, data) in inputs(kind, "packages") {
            common::fuzzing::packages(&data);
        }
    }
}

/// The `packages` seeds are reference files that expand: Debian packages made by dpkg-deb with
/// each payload compression, and an RPM.
#[test]
fn package_seeds_are_references_that_expand() {
    let _serial = serial();
    let seeds = inputs("corpus", "packages");
    assert!(seeds.len() >= 3, "packages seed corpus missing");
    for (path, data) in seeds {
        assert!(
            common::fuzzing::packages(&data).is_some_and(|n| n > 0),
            "{}",
            path.display()
        );
    }
}

#[test]
fn squashfs_seeds_are_images_of_every_codec_that_parse() {
    let _serial = serial();
    let seeds = inputs("corpus", "squashfs");
    assert!(seeds.len() >= 4, "squashfs seed corpus missing");
    for (path, data) in seeds {
        // one image or stream each, but the seed of gzip members inside other data, which
        // holds two (tests/embedded_gzip.rs)
        let members = path.file_name().is_some_and(|n| n == "embedded-gzip.bin");
        let want = if members { 2 } else { 1 };
        assert_eq!(common::fuzzing::squashfs(&data), want, "{}", path.display());
    }
}
