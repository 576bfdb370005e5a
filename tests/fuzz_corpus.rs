//! The fuzzers' seed corpus (fuzz/corpus/) and every input a fuzzer ever failed on
//! (fuzz/regressions/<target>/, named after what it found), replayed through the same code the
//! fuzz targets run (tests/common/fuzzing.rs). `SPINDIFF_RECORD_SEEDS=1` rewrites fuzz/old.bin and
//! the seeds (real patches of it) after a format change.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fuzzing::{Scratch, roundtrip_input};
use common::{binary_like, edit, release_edits};
use spindiff::DiffOptions;

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

/// Writes fuzz/old.bin and the seeds: patches of it with 4 KiB chunks (several chunks each),
/// and the same pairs as round-trip inputs.
fn record_seeds() {
    let old = binary_like(24 << 10, 4242);
    fs::write(fuzz_dir().join("old.bin"), &old).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old");
    fs::write(&old_path, &old).unwrap();
    for target in ["inspect", "apply", "roundtrip"] {
        let d = fuzz_dir().join("corpus").join(target);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
    }
    for i in 0..8u64 {
        let new = edit(&old, &release_edits(old.len(), 1 + i as usize * 2, 100 + i));
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
                    .join(format!("patch-{i}")),
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

/// A version-2 seed for the parsers: the patch between two tiny squashfs images of the
/// squashfs seeds (gzip -> xz), with its transform section.
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
    fs::copy(&patch, fuzz_dir().join("corpus/inspect/v2-squashfs")).unwrap();
}

#[test]
fn seeds_are_real_patches_of_the_fixed_old() {
    if std::env::var_os("SPINDIFF_RECORD_SEEDS").is_some() {
        record_seeds();
        record_transform_seed();
    }
    let scratch = Scratch::new(&fs::read(fuzz_dir().join("old.bin")).unwrap());
    let seeds = inputs("corpus", "apply");
    assert!(seeds.len() >= 8, "seed corpus missing");
    let v2 = fs::read(fuzz_dir().join("corpus/inspect/v2-squashfs")).expect("version-2 seed");
    assert!(scratch.inspect(&v2) && v2[8] == 2, "the version-2 seed");
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
    }
}

#[test]
fn squashfs_seeds_are_images_of_every_codec_that_parse() {
    let seeds = inputs("corpus", "squashfs");
    assert!(seeds.len() >= 4, "squashfs seed corpus missing");
    for (path, data) in seeds {
        assert_eq!(common::fuzzing::squashfs(&data), 1, "{}", path.display());
    }
}
