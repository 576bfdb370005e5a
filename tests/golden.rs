//! Golden patches: version-1, -2 and -3 patches committed in tests/data/ must keep applying,
//! whatever the encoder does today. The version-1 pair is regenerated from fixed seeds and the
//! version-2 pair is two of the sample images in images/, so only the patches are stored.
//! To re-record after a deliberate format change (with a new version number), run
//! `SPINDIFF_RECORD_GOLDEN=1 cargo test --release --test golden` and commit the file.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{binary_like, edit, release_edits};

fn golden_pair() -> (Vec<u8>, Vec<u8>) {
    let old = binary_like(300_000, 4242);
    let new = edit(&old, &release_edits(old.len(), 20, 4243));
    (old, new)
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-small.spd")
}

fn golden_v3_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/v3-small.spd")
}

/// The same pair as version 3 (linked streams, one group): once a later version is written,
/// this is what keeps version 3 applying. Recorded like the version-1 patch.
#[test]
fn version_3_patch_still_applies() {
    let (old, new) = golden_pair();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), &old).unwrap();
    if std::env::var_os("SPINDIFF_RECORD_GOLDEN_V3").is_some() {
        fs::write(p("new"), &new).unwrap();
        let opts = spindiff::DiffOptions {
            chunk_size: 64 << 10,
            memory: 256 << 20,
            ..Default::default()
        };
        spindiff::diff(&p("old"), &p("new"), &golden_v3_path(), &opts).unwrap();
    }
    for threads in [1, 3] {
        let opts = spindiff::ApplyOptions {
            threads: Some(threads),
            ..Default::default()
        };
        spindiff::apply(&p("old"), &golden_v3_path(), &p("out"), &opts).unwrap();
        assert!(
            fs::read(p("out")).unwrap() == new,
            "golden v3 patch no longer reproduces NEW"
        );
    }
    let info = spindiff::inspect(&golden_v3_path()).unwrap();
    assert_eq!((info.header.version, info.header.group), (3, 16));
    assert_eq!(info.header.chunk_count, 5);
}

#[test]
fn version_1_patch_still_applies() {
    let (old, new) = golden_pair();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), &old).unwrap();
    if std::env::var_os("SPINDIFF_RECORD_GOLDEN").is_some() {
        fs::write(p("new"), &new).unwrap();
        let opts = spindiff::DiffOptions {
            chunk_size: 64 << 10,
            memory: 256 << 20,
            ..Default::default()
        };
        spindiff::diff(&p("old"), &p("new"), &golden_path(), &opts).unwrap();
    }
    for threads in [1, 3] {
        let opts = spindiff::ApplyOptions {
            threads: Some(threads),
            ..Default::default()
        };
        spindiff::apply(&p("old"), &golden_path(), &p("out"), &opts).unwrap();
        assert!(
            fs::read(p("out")).unwrap() == new,
            "golden v1 patch no longer reproduces NEW"
        );
    }
    let info = spindiff::inspect(&golden_path()).unwrap();
    assert_eq!(info.header.version, 1);
    assert_eq!(info.header.chunk_count, 5);
}

/// A version-2 patch (compressed content expanded, version 2's independent chunk frames) written
/// before version 3: the French sample spin back to the base image.
#[test]
fn version_2_patch_still_applies() {
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images");
    let patch = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2-spin-fr-to-base.spd");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for threads in [1, 3] {
        let opts = spindiff::ApplyOptions {
            threads: Some(threads),
            ..Default::default()
        };
        spindiff::apply(&images.join("spin-fr.squashfs"), &patch, &out, &opts).unwrap();
        assert!(
            fs::read(&out).unwrap() == fs::read(images.join("base.squashfs")).unwrap(),
            "golden v2 patch no longer reproduces the base image"
        );
    }
    let info = spindiff::inspect(&patch).unwrap();
    assert_eq!(info.header.version, 2);
}

// promises 13: a version-1 stream of two zstd frames (a skippable or an empty frame after the
// first) is refused, as before version 3.
#[test]
fn a_version_1_stream_of_more_than_one_frame_is_rejected() {
    use spindiff::format::{ContainerReader, ContainerWriter, EncodedChunk};
    let (old, _) = golden_pair();
    let patch = fs::read(golden_path()).unwrap();
    let skippable = [0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0];
    let empty = zstd::bulk::compress(&[], 3).unwrap();
    for extra in [&skippable[..], &empty[..]] {
        let mut reader = ContainerReader::new(&patch[..], std::path::Path::new("p")).unwrap();
        let header = reader.header().clone();
        let mut w = ContainerWriter::new(Vec::new(), &header).unwrap();
        let mut first = true;
        while let Some(c) = reader.next_chunk().unwrap() {
            let mut chunk = EncodedChunk {
                header: c.header,
                payload: c.payload,
            };
            if first {
                let last = (0..3)
                    .rev()
                    .find(|&s| chunk.header.compressed[s] > 0)
                    .unwrap();
                chunk.payload.extend_from_slice(extra);
                chunk.header.compressed[last] += extra.len() as u32;
                first = false;
            }
            w.write_chunk(&chunk).unwrap();
        }
        let bad = w.finish().unwrap().0;
        let err = spindiff::apply_bytes(
            &old,
            &mut &bad[..],
            &mut Vec::new(),
            &spindiff::ApplyOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("is not exactly one zstd frame"),
            "{err}"
        );
    }
}
