//! Round trips through the library: random edits of the kinds real releases make, and the edge
//! cases (empty inputs, identical inputs, one chunk, many chunks).

mod common;

use std::fs;
use std::path::Path;

use common::{Edit, binary_like, edit, release_edits};
use proptest::prelude::*;
use spindiff::{ApplyOptions, DiffOptions};

fn options(chunk_size: u32) -> DiffOptions {
    DiffOptions::default()
        .memory(256 << 20)
        .threads(2)
        .level(3)
        .chunk_size(chunk_size)
}

/// Diffs, applies (streamed and parallel) and verifies; returns the patch size.
fn round_trip(old: &[u8], new: &[u8], opts: &DiffOptions) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), old).unwrap();
    fs::write(p("new"), new).unwrap();
    let report = spindiff::diff(&p("old"), &p("new"), &p("patch"), opts).unwrap();
    for threads in [1, 3] {
        let out = p(&format!("out{threads}"));
        spindiff::apply(
            &p("old"),
            &p("patch"),
            &out,
            &ApplyOptions {
                threads: Some(threads),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            fs::read(&out).unwrap() == new,
            "output differs (apply threads {threads})"
        );
    }
    spindiff::verify(
        &p("old"),
        &p("patch"),
        Some(&p("new")),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(fs::metadata(p("old")).unwrap().len(), old.len() as u64);
    let info = spindiff::inspect(&p("patch")).unwrap();
    assert_eq!(info.patch_len, report.patch_size);
    assert_eq!(info.patch_len, fs::metadata(p("patch")).unwrap().len());
    no_leftovers(dir.path());
    report.patch_size
}

fn no_leftovers(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("tmp"), "temporary file left behind: {name}");
    }
}

fn edit_strategy(len: usize) -> impl Strategy<Value = Edit> {
    let l = len.max(1);
    prop_oneof![
        (0..l, 1..4000usize, any::<u64>()).prop_map(|(at, len, seed)| Edit::Insert {
            at,
            len,
            seed
        }),
        (0..l, 1..4000usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0..l, 1..64usize, any::<u64>()).prop_map(|(at, len, seed)| Edit::Replace {
            at,
            len,
            seed
        }),
        (0..l, 1..l, 0..l).prop_map(|(from, len, to)| Edit::Move { from, len, to }),
        (0..l, 16..20_000usize, any::<u32>()).prop_map(|(at, len, delta)| Edit::ShiftPointers {
            at,
            len,
            delta
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn random_edits_round_trip(
        len in 0usize..150_000,
        seed in any::<u64>(),
        edits in prop::collection::vec(edit_strategy(150_000), 0..12),
        chunk_kib in prop::sample::select(vec![4u32, 16, 64]),
    ) {
        let old = binary_like(len, seed);
        let new = edit(&old, &edits);
        round_trip(&old, &new, &options(chunk_kib << 10));
    }
}

#[test]
fn empty_old() {
    round_trip(b"", &binary_like(50_000, 3), &options(4096));
}

#[test]
fn empty_new() {
    round_trip(&binary_like(50_000, 3), b"", &options(4096));
}

#[test]
fn both_empty() {
    round_trip(b"", b"", &options(4096));
}

#[test]
fn identical_files_give_a_tiny_patch() {
    let data = binary_like(3 << 20, 11);
    let size = round_trip(&data, &data, &options(1 << 20));
    assert!(
        size < 2000,
        "patch of identical 3 MiB files is {size} bytes"
    );
}

#[test]
fn smaller_than_one_chunk() {
    let old = binary_like(3000, 5);
    let new = edit(&old, &release_edits(3000, 3, 9));
    round_trip(&old, &new, &options(1 << 20));
}

#[test]
fn many_chunks_with_release_edits() {
    let old = binary_like(6 << 20, 21);
    let new = edit(&old, &release_edits(old.len(), 60, 22));
    let size = round_trip(&old, &new, &options(64 << 10));
    // the edits insert about 60 KB of random bytes; the rest must cost little
    assert!(size < 200_000, "patch is {size} bytes");
}

#[test]
fn shifted_pointers_cost_almost_nothing() {
    let old = binary_like(2 << 20, 31);
    let new = edit(
        &old,
        &[Edit::ShiftPointers {
            at: 100_000,
            len: 1 << 20,
            delta: 0x1234,
        }],
    );
    let size = round_trip(&old, &new, &options(1 << 20));
    assert!(size < 4096, "65536 shifted pointers cost {size} bytes");
}

/// Regression (format version 3): a group whose last chunk was all new, incompressible content
/// stored that chunk's insert stream as it was and never ended the group's insert frame, opened
/// by an earlier chunk; the encoder's next group went on inside it. With two encoder threads
/// the patch then differed from the one-thread patch and did not apply ("does not end its
/// group's frame"); found on the live ISO pair with `--no-transform`.
#[test]
fn a_group_ending_in_incompressible_content_ends_its_frames() {
    let chunk = 64 << 10;
    let old = binary_like(48 * chunk, 7);
    let mut rng = common::Rng(8);
    let mut new = Vec::new();
    for c in 0..48 {
        if c % 16 == 15 {
            // the group's last chunk: all new and random, so its insert stream is stored
            new.extend_from_slice(&rng.bytes(chunk));
        } else {
            // 1000 new bytes of text, which the group's insert frame codes, then OLD's bytes
            let text = format!("chunk {c}: new text the old release did not have. ").repeat(30);
            new.extend_from_slice(&text.as_bytes()[..1000]);
            new.extend_from_slice(&old[c * chunk..(c + 1) * chunk - 1000]);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), &old).unwrap();
    fs::write(p("new"), &new).unwrap();
    let opts = |threads| {
        DiffOptions::default()
            .memory(256 << 20)
            .threads(threads)
            .chunk_size(chunk as u32)
    };
    let patch = |threads: usize| {
        let out = p(&format!("p{threads}"));
        spindiff::diff(&p("old"), &p("new"), &out, &opts(threads)).unwrap();
        fs::read(out).unwrap()
    };
    let one = patch(1);
    for threads in [2, 4] {
        assert!(patch(threads) == one, "threads {threads}: another patch");
    }
    round_trip(&old, &new, &opts(2));
}
