//! Golden patches: version-1, -2, -3, -5, -6, -7, -9 and -10 patches committed in tests/data/ must keep
//! applying, whatever the encoder does today. The version-1 pair is regenerated from fixed
//! seeds and the version-2 pair is two of the sample images in images/, so only the patches are
//! stored; version 5's small OLD is stored beside its patch.
//! They are recorded once, by `SPINDIFF_RECORD_GOLDEN=1` (version 1),
//! `SPINDIFF_RECORD_GOLDEN_V3=1` (version 3) or `SPINDIFF_RECORD_GOLDEN_V10=1` (version 10)
//! `cargo test --release --test golden`, and never
//! again: a format change gets a new version number and a new golden file.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{binary_like, edit, release_edits};

fn golden_pair() -> (Vec<u8>, Vec<u8>) {
    let old = binary_like(300_000, 4242);
    let new = edit(&old, &release_edits(old.len(), 20, 4243));
    (old, new)
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn golden_path() -> PathBuf {
    data("v1-small.spd")
}

/// Applies `patch` to `old` with 1 and 3 threads; returns what both gave (the same).
fn applied(old: &Path, patch: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut outputs = [1, 3].map(|threads| {
        let opts = spindiff::ApplyOptions {
            threads: Some(threads),
            ..Default::default()
        };
        spindiff::apply(old, patch, &out, &opts).unwrap();
        fs::read(&out).unwrap()
    });
    assert!(
        outputs[0] == outputs[1],
        "{}: threads differ",
        patch.display()
    );
    std::mem::take(&mut outputs[0])
}

/// Applies `patch` to `old` with 1 and 3 threads and checks that it gives `new`; returns the
/// patch's header.
fn applies(old: &Path, patch: &Path, new: &[u8]) -> spindiff::format::Header {
    assert!(
        applied(old, patch) == new,
        "golden patch {} no longer reproduces NEW",
        patch.display()
    );
    spindiff::inspect(patch).unwrap().header
}

/// The golden pair's patch `name` applies (recorded first, with 64 KiB chunks, when the
/// environment has `record`); returns its header.
fn golden_pair_patch_applies(name: &str, record: &str) -> spindiff::format::Header {
    let (old, new) = golden_pair();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), &old).unwrap();
    if std::env::var_os(record).is_some() {
        fs::write(p("new"), &new).unwrap();
        let opts = spindiff::DiffOptions {
            chunk_size: 64 << 10,
            memory: 256 << 20,
            ..Default::default()
        };
        spindiff::diff(&p("old"), &p("new"), &data(name), &opts).unwrap();
    }
    applies(&p("old"), &data(name), &new)
}

/// The same pair as version 3 (linked streams, one group): once a later version is written,
/// this is what keeps version 3 applying. Recorded like the version-1 patch, with
/// `SPINDIFF_RECORD_GOLDEN_V3=1`.
#[test]
fn version_3_patch_still_applies() {
    let header = golden_pair_patch_applies("v3-small.spd", "SPINDIFF_RECORD_GOLDEN_V3");
    assert_eq!((header.version, header.group), (3, 16));
    assert_eq!(header.chunk_count, 5);
}

/// The same pair as version 10 (declared windows, streams bounded together), recorded with
/// `SPINDIFF_RECORD_GOLDEN_V10=1`.
#[test]
fn version_10_patch_still_applies() {
    let header = golden_pair_patch_applies("v10-small.spd", "SPINDIFF_RECORD_GOLDEN_V10");
    assert_eq!((header.version, header.group), (10, 16));
    assert_eq!(header.chunk_count, 5);
    // 64 KiB chunks: insert frames up to twice the chunk, control and add up to the chunk
    assert!(header.windows.declared());
    assert!(header.windows.insert_log <= 17 && header.windows.small_log <= 16);
}

#[test]
fn version_1_patch_still_applies() {
    let header = golden_pair_patch_applies("v1-small.spd", "SPINDIFF_RECORD_GOLDEN");
    assert_eq!(header.version, 1);
    assert_eq!(header.chunk_count, 5);
}

/// A version-2 patch (compressed content expanded, version 2's independent chunk frames) written
/// before version 3: the French sample spin back to the base image.
#[test]
fn version_2_patch_still_applies() {
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images");
    let base = fs::read(images.join("base.squashfs")).unwrap();
    let header = applies(
        &images.join("spin-fr.squashfs"),
        &data("v2-spin-fr-to-base.spd"),
        &base,
    );
    assert_eq!(header.version, 2);
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
        let mut reader = ContainerReader::new(&patch[..], Path::new("p")).unwrap();
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

/// A version-5 patch (an xz stream's blocks expanded: an initrd's) of a small initrd, a
/// microcode cpio then an xz stream cut into blocks as dracut's multi-threaded xz cuts them,
/// to an initrd with a file more. OLD is committed beside it (the xz command that made it may
/// write other bytes in another release); NEW is what the patch's BLAKE3 says. Recorded with
/// `SPINDIFF_RECORD_GOLDEN_V5=1`, which needs the xz command.
#[test]
fn version_5_patch_still_applies() {
    let (old, patch) = (data("v5-initrd.old"), data("v5-initrd.spd"));
    if std::env::var_os("SPINDIFF_RECORD_GOLDEN_V5").is_some() {
        let xz = [
            "xz",
            "--check=crc32",
            "--lzma2=dict=64KiB",
            "-T2",
            "--block-size=128KiB",
            "-c",
        ];
        record_initrd_golden(&old, &patch, &xz);
    }
    let t = applied_initrd_golden(&old, &patch, (5, "xz stream"));
    assert!(t.recompressed >= 2, "{t:?}");
}

/// A version-6 patch (a whole zstd stream expanded: an initrd as initramfs-tools writes it,
/// `zstd -q -9` from a pipe, behind a microcode cpio) to an initrd with a file more. OLD is
/// committed beside it (the zstd command that made it may write other bytes in another
/// release); NEW is what the patch's BLAKE3 says. Recorded with `SPINDIFF_RECORD_GOLDEN_V6=1`,
/// which needs the zstd command (Debian 12's, 1.5.4).
#[test]
fn version_6_patch_still_applies() {
    let (old, patch) = (data("v6-initrd.old"), data("v6-initrd.spd"));
    if std::env::var_os("SPINDIFF_RECORD_GOLDEN_V6").is_some() {
        record_initrd_golden(&old, &patch, &["zstd", "-q", "-9", "-c"]);
    }
    let t = applied_initrd_golden(&old, &patch, (6, "zstd stream"));
    assert_eq!(t.recompressed, 1, "{t:?}");
}

/// A version-7 patch (a whole gzip stream expanded and rebuilt from its recipe: an initrd as
/// dracut writes it with gzip, `gzip -n -9` from a pipe, behind a microcode cpio) to an initrd
/// with a file more. OLD is committed beside it; NEW is what the patch's BLAKE3 says. Recorded
/// with `SPINDIFF_RECORD_GOLDEN_V7=1`, which needs the gzip command.
#[test]
fn version_7_patch_still_applies() {
    let (old, patch) = (data("v7-initrd.old"), data("v7-initrd.spd"));
    if std::env::var_os("SPINDIFF_RECORD_GOLDEN_V7").is_some() {
        record_initrd_golden(&old, &patch, &["gzip", "-n", "-9", "-c"]);
    }
    let t = applied_initrd_golden(&old, &patch, (7, "gzip stream"));
    assert_eq!(t.recompressed, 1, "{t:?}");
}

/// Applies a golden initrd patch ([`applied`]) and checks what it says: its format `version`,
/// NEW's stream of `kind` behind the microcode cpio, and NEW's BLAKE3 that of the output.
/// Returns its transform summary.
fn applied_initrd_golden(
    old: &Path,
    patch: &Path,
    (version, kind): (u16, &str),
) -> spindiff::TransformInfo {
    let out = applied(old, patch);
    let info = spindiff::inspect(patch).unwrap();
    assert_eq!(info.header.version, version);
    let t = info.transform.unwrap();
    assert_eq!(t.regions[1][0].kind, kind);
    assert_eq!(*blake3::hash(&out).as_bytes(), t.new_hash);
    t
}

/// A small initrd for the golden patches: a microcode cpio, then a cpio (with `extra` bytes of
/// a file more) compressed by `command` reading it from a pipe, in `dir`.
fn golden_initrd(dir: &Path, extra: usize, command: &[&str]) -> Vec<u8> {
    let text: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("{:x} {}\n", i.wrapping_mul(2654435761), i % 9).into_bytes())
        .collect();
    let microcode = ("kernel/x86/microcode/GenuineIntel.bin", &text[..5000]);
    let mut early = common::images::cpio(&[microcode]);
    let cpio = common::images::cpio(&[
        ("init", &text[..extra.min(text.len())]),
        ("lib/modules.txt", &text[..]),
    ]);
    let path = dir.join(format!("cpio{extra}"));
    fs::write(&path, &cpio).unwrap();
    let out = std::process::Command::new(command[0])
        .args(&command[1..])
        .stdin(fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    early.extend_from_slice(&out.stdout);
    early
}

/// Records a golden initrd patch: OLD a small initrd whose cpio `command` compresses
/// ([`golden_initrd`]), NEW the same with a file more, the patch with 64 KiB chunks.
fn record_initrd_golden(old: &Path, patch: &Path, command: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(old, golden_initrd(dir.path(), 0, command)).unwrap();
    let new = dir.path().join("new");
    fs::write(&new, golden_initrd(dir.path(), 30_000, command)).unwrap();
    let opts = spindiff::DiffOptions {
        chunk_size: 64 << 10,
        memory: 256 << 20,
        ..Default::default()
    };
    spindiff::diff(old, &new, patch, &opts).unwrap();
}

/// A version-9 patch (references): the golden pair's NEW with part of a package's payload (the
/// fuzz corpus's hello .deb, zstd) inserted, diffed with that package as a reference. Recorded
/// like the others, with `SPINDIFF_RECORD_GOLDEN_V9=1`; it must keep applying with the package
/// beside OLD, and name it.
#[test]
fn version_9_patch_with_a_reference_still_applies() {
    let refs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/packages");
    let deb = fs::read(refs.join("hello-zstd.deb")).unwrap();
    let mut payload = Vec::new();
    spindiff::internals::files::package::expand(&deb, &mut payload, 1 << 30).unwrap();
    let (old, _) = golden_pair();
    let mut new = old.clone();
    new.splice(
        150_000..150_000,
        payload[payload.len() / 3..].iter().copied(),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), &old).unwrap();
    fs::create_dir(p("refs")).unwrap();
    fs::write(p("refs/hello-zstd.deb"), &deb).unwrap();
    if std::env::var_os("SPINDIFF_RECORD_GOLDEN_V9").is_some() {
        fs::write(p("new"), &new).unwrap();
        let opts = spindiff::DiffOptions::default()
            .chunk_size(64 << 10)
            .memory(256 << 20)
            .references(vec![p("refs")]);
        spindiff::diff(&p("old"), &p("new"), &data("v9-references.spd"), &opts).unwrap();
    }
    let out = p("out");
    for threads in [1, 3] {
        let opts = spindiff::ApplyOptions::default()
            .threads(threads)
            .references(vec![p("refs")]);
        let report = spindiff::apply(&p("old"), &data("v9-references.spd"), &out, &opts).unwrap();
        assert_eq!(report.references.len(), 1);
        assert!(fs::read(&out).unwrap() == new, "{threads} threads");
    }
    let info = spindiff::inspect(&data("v9-references.spd")).unwrap();
    assert_eq!((info.header.version, info.header.references), (9, true));
    assert_eq!(info.references[0].name, "hello-zstd.deb");
    // without the package: refused, naming it
    let err = spindiff::apply(
        &p("old"),
        &data("v9-references.spd"),
        &out,
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), "missing_references");
}
