//! Golden patches: a version-1 patch committed in tests/data/ must keep applying, whatever the
//! encoder does today. OLD and NEW are regenerated from fixed seeds, so only the patch is stored.
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
