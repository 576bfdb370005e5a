//! The transform layer's parser and codecs (issue 11): real mksquashfs images of every codec,
//! squashfs inside an ISO, images that are truncated or lie about their tables, and golden
//! hashes of recompressed blocks, so that a dependency update that changes an encoder's output
//! fails here instead of making patches that no longer apply. mksquashfs and xorriso are
//! installed by scripts/test.sh.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use spindiff::internals::transform::codec::{BlockKind, Codec};
use spindiff::internals::transform::{census, find_filesystems};

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

use common::images::{base_tree, mksquashfs, tree};

#[test]
fn the_sample_images_tile_and_every_block_recompresses() {
    for name in ["base.squashfs", "spin-de.squashfs"] {
        let file = std::fs::read(images().join(name)).unwrap();
        let found = find_filesystems(&file);
        assert_eq!(found.len(), 1, "{name}");
        let layout = &found[0];
        assert_eq!(layout.start, 0);
        let c = census(&file, layout);
        assert!(c.blocks > 20, "{name}: {c:?}");
        assert_eq!(c.reproduced, c.blocks, "{name}: {c:?}");
        assert!(c.plain_bytes > c.stored_bytes);
    }
}

/// Whether this build has libzstd 1.5.4 beside the bundled release; scripts/test.sh builds it
/// and sets `SPINDIFF_REQUIRE_ZSTD_RELEASES`, so there it must.
fn pinned_zstd() -> bool {
    let has = spindiff::internals::transform::zstd_release::available(1);
    assert!(
        has || std::env::var_os("SPINDIFF_REQUIRE_ZSTD_RELEASES").is_none(),
        "libzstd 1.5.4 is not linked: run scripts/zstd-releases.sh, then build again"
    );
    has
}

#[test]
fn images_of_every_codec_parse_and_recompress() {
    let dir = tempfile::tempdir().unwrap();
    let tree = tree(dir.path());
    // (options, every block must recompress?)
    let cases: [(&[&str], bool); 8] = [
        (&["gzip"], true),
        (&["gzip", "-Xcompression-level", "6"], true),
        (&["xz"], true),
        (&["xz", "-Xbcj", "x86"], true),
        (&["lz4"], true),
        (&["lz4", "-Xhc"], true),
        // zstd's output depends on its release: every block reproduces when this build has
        // the release Debian 12's mksquashfs uses (1.5.4; scripts/zstd-releases.sh)
        (&["zstd"], pinned_zstd()),
        (&["zstd", "-Xcompression-level", "19"], pinned_zstd()),
    ];
    for (comp, all) in cases {
        let out = dir.path().join("image");
        mksquashfs(&tree, &out, comp);
        let file = std::fs::read(&out).unwrap();
        let found = find_filesystems(&file);
        assert_eq!(found.len(), 1, "{comp:?}");
        let c = census(&file, &found[0]);
        assert!(c.blocks > 20, "{comp:?}: {c:?}");
        // Debian's mksquashfs: libzstd 1.5.4 is tried first
        if comp[0] == "zstd" && pinned_zstd() {
            assert_eq!(found[0].first_variant, 1, "{comp:?}");
        }
        if all {
            assert_eq!(c.reproduced, c.blocks, "{comp:?}: {c:?}");
        }
    }
    // a compressor spindiff does not read leaves the image opaque
    let out = dir.path().join("lzo");
    mksquashfs(&tree, &out, &["lzo"]);
    assert!(find_filesystems(&std::fs::read(&out).unwrap()).is_empty());
}

#[test]
fn a_squashfs_inside_an_iso_is_found_by_its_tree_and_by_a_sector_scan() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("iso");
    std::fs::create_dir_all(root.join("live")).unwrap();
    std::fs::copy(
        images().join("spin-de.squashfs"),
        root.join("live/filesystem.squashfs"),
    )
    .unwrap();
    std::fs::write(root.join("README"), b"a live image\n").unwrap();
    let iso = dir.path().join("live.iso");
    let status = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "LIVE", "-o"])
        .arg(&iso)
        .arg(&root)
        .output()
        .expect("xorriso (scripts/test.sh installs it)");
    assert!(status.status.success(), "{:?}", status);
    let mut file = std::fs::read(&iso).unwrap();
    let squashfs = std::fs::read(images().join("spin-de.squashfs")).unwrap();
    let found = find_filesystems(&file);
    assert_eq!(found.len(), 1);
    let at = found[0].start as usize;
    assert_eq!(at % 2048, 0);
    assert_eq!(&file[at..at + 4096], &squashfs[..4096]);
    assert_eq!(
        census(&file, &found[0]).reproduced,
        census(&squashfs, &find_filesystems(&squashfs)[0]).reproduced
    );
    // without a readable volume descriptor, the sector scan finds it
    file[16 * 2048] = 0;
    let found = find_filesystems(&file);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].start as usize, at);
}

#[test]
fn truncated_or_lying_images_are_opaque_and_never_a_panic() {
    let file = std::fs::read(images().join("base.squashfs")).unwrap();
    let layout = &find_filesystems(&file)[0];
    // truncated anywhere before its end: opaque
    for cut in (0..layout.end as usize)
        .step_by(4099)
        .chain([layout.end as usize - 1])
    {
        assert!(find_filesystems(&file[..cut]).is_empty(), "cut at {cut}");
    }
    // every superblock byte and every table pointer flipped, and bytes flipped all over the
    // tables: whatever comes out must still tile and must not panic
    let tables_start = layout
        .regions
        .iter()
        .filter(|r| r.block == Some(BlockKind::Metadata))
        .map(|r| r.offset)
        .min()
        .unwrap() as usize;
    let mut positions: Vec<usize> = (0..96).collect();
    positions.extend((tables_start..file.len()).step_by(11));
    for at in positions {
        for bit in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[at] ^= bit;
            // the fuzz target's checks: layouts tile, lying blocks fail cleanly
            common::fuzzing::squashfs(&bad);
        }
    }
}

/// Fixed plain input: binary-like text and little-endian words.
fn golden_input() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut plain = Vec::new();
    while plain.len() < 131_072 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        plain.extend_from_slice(format!("lib{}.so.{} ", x % 97, x % 13).as_bytes());
        plain.extend_from_slice(&(x as u32).to_le_bytes());
    }
    plain.truncate(131_072);
    plain
}

/// The encoders' output is pinned: a patch recompresses blocks on apply, so an encoder whose
/// output changed would make patches made by another build fail to apply. If this fails after
/// a dependency update, the update changed an encoder: pin the previous version.
#[test]
fn recompression_is_bit_for_bit_what_it_was() {
    let plain = golden_input();
    let cases = [
        (
            "gzip",
            Codec::Gzip {
                level: 9,
                replayable: true,
            },
            0,
            60_611,
            "0f43d3fbdf2acde82cc64d0bc3c15f19",
        ),
        (
            "xz",
            Codec::Xz {
                dict_size: 131_072,
                filters: vec![4],
            },
            0,
            56_960,
            "9dafab34e223582632d12e8c2a9c670b",
        ),
        (
            "xz -Xbcj x86",
            Codec::Xz {
                dict_size: 131_072,
                filters: vec![4],
            },
            1,
            56_964,
            "5c05f212d0e7453ed3bc8a03b459b05a",
        ),
        (
            "lz4",
            Codec::Lz4 { hc: false },
            0,
            82_035,
            "2ceb0d6d50e7a205ad9d19426d70be2e",
        ),
        (
            "lz4 -Xhc",
            Codec::Lz4 { hc: true },
            0,
            63_259,
            "400c2b607ea76dae48fc1db4fba3ddec",
        ),
        (
            "zstd 15",
            Codec::Zstd { level: 15 },
            0,
            57_066,
            "9753f4597a0bf620414460518ebdfe5c",
        ),
    ];
    for (name, codec, variant, len, hash) in cases {
        let out = codec
            .compress(&plain, BlockKind::Data, variant, 131_072)
            .unwrap();
        assert_eq!(out.len(), len, "{name}");
        assert_eq!(&blake3::hash(&out).to_hex()[..32], hash, "{name}");
        let mut back = Vec::new();
        codec.decompress(&out, 131_072, &mut back).unwrap();
        assert!(back == plain, "{name}: round trip");
    }
}

/// Expands OLD and NEW, checks that NEW rebuilds bit for bit from its expanded stream, and
/// returns the expanded streams and NEW's census.
fn expand_pair(
    old: &[u8],
    new: &[u8],
) -> (
    Vec<u8>,
    Vec<u8>,
    spindiff::internals::transform::expand::Census,
) {
    use spindiff::internals::transform::expand::{
        ExpandedNew, expand_new, expand_old, rebuild_new,
    };
    let (old_layouts, new_layouts) = (find_filesystems(old), find_filesystems(new));
    let mut old_x = Vec::new();
    let (_, blocks) = expand_old(old, &old_layouts, &mut old_x).unwrap();
    let mut new_x = Vec::new();
    let ExpandedNew {
        pieces,
        census,
        codecs,
    } = expand_new(new, &new_layouts, &blocks, &mut new_x).unwrap();
    let rebuilt = rebuild_new(&new_x, &pieces, &codecs, old).unwrap();
    assert!(
        rebuilt == new,
        "NEW does not rebuild from its expanded stream"
    );
    (old_x, new_x, census)
}

#[test]
fn expanded_new_rebuilds_bit_for_bit_and_diffs_smaller() {
    let old = std::fs::read(images().join("base.squashfs")).unwrap();
    let new = std::fs::read(images().join("spin-de.squashfs")).unwrap();
    let (old_x, new_x, census) = expand_pair(&old, &new);
    assert_eq!(census.stored, 0, "{census:?}");
    assert!(census.copied > 10 && census.recompressed > 10, "{census:?}");
    // the gain the transform is for: the expanded pair's patch against the pair's own
    let base = spindiff::DiffOptions::default()
        .memory(256 << 20)
        .threads(2);
    let diff = |a: &[u8], b: &[u8]| {
        let base = spindiff::Base::from_bytes(a, &base).unwrap();
        let mut patch = Vec::new();
        base.diff_bytes(b, &mut patch).unwrap();
        patch.len()
    };
    let (plain, expanded) = (diff(&old, &new), diff(&old_x, &new_x));
    assert!(
        expanded * 10 < plain * 8,
        "expanded {expanded} bytes against {plain}: less than 20% smaller"
    );
}

#[test]
fn every_codec_rebuilds_from_its_expanded_stream() {
    let dir = tempfile::tempdir().unwrap();
    let tree = tree(dir.path());
    let base_tree = base_tree(dir.path());
    for comp in [
        &["gzip"][..],
        &["xz", "-Xbcj", "x86"],
        &["lz4", "-Xhc"],
        &["zstd"],
    ] {
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        mksquashfs(&base_tree, &old, comp);
        mksquashfs(&tree, &new, comp);
        let (old, new) = (std::fs::read(old).unwrap(), std::fs::read(new).unwrap());
        let (_, _, census) = expand_pair(&old, &new);
        assert!(
            census.copied + census.recompressed > 0,
            "{comp:?}: {census:?}"
        );
    }
}

/// The tables of both sides of the sample pair, as a patch would carry them.
fn sample_tables() -> (
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    spindiff::internals::transform::table::Table,
    spindiff::internals::transform::table::Table,
) {
    use spindiff::internals::transform::expand::{FsCodec, expand_new, expand_old};
    use spindiff::internals::transform::table::Table;
    let old = std::fs::read(images().join("base.squashfs")).unwrap();
    let new = std::fs::read(images().join("spin-de.squashfs")).unwrap();
    let (old_layouts, new_layouts) = (find_filesystems(&old), find_filesystems(&new));
    let mut old_x = Vec::new();
    let (old_pieces, blocks) = expand_old(&old, &old_layouts, &mut old_x).unwrap();
    let mut new_x = Vec::new();
    let expanded = expand_new(&new, &new_layouts, &blocks, &mut new_x).unwrap();
    let old_table = Table {
        codecs: old_layouts.iter().map(FsCodec::of).collect(),
        pieces: old_pieces,
    };
    let new_table = Table {
        codecs: expanded.codecs,
        pieces: expanded.pieces,
    };
    (old, new, old_x, new_x, old_table, new_table)
}

#[test]
fn tables_survive_their_bytes_and_lying_tables_are_refused() {
    use spindiff::internals::transform::table::Table;
    let (old, new, _, _, old_table, new_table) = sample_tables();
    for (t, len) in [(&old_table, old.len()), (&new_table, new.len())] {
        let bytes = t.to_bytes();
        assert!(bytes.len() < 1024, "{} bytes of table", bytes.len());
        assert_eq!(
            &Table::parse(&bytes, len as u64, old.len() as u64).unwrap(),
            t
        );
        // every byte flipped: refused, or a table that still tiles the file (never a panic)
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            if let Ok(t) = Table::parse(&bad, len as u64, old.len() as u64) {
                assert_eq!(t.file_len(), len as u64);
            }
        }
        assert!(Table::parse(&bytes[..bytes.len() - 1], len as u64, old.len() as u64).is_err());
        assert!(Table::parse(&bytes, len as u64 + 1, old.len() as u64).is_err());
    }
}

#[test]
fn a_patch_of_the_expanded_pair_applies_through_expanded_old_and_the_reencoder() {
    use spindiff::internals::transform::rebuild::{ExpandedOld, Names, Reencoder};
    let (old, new, old_x, new_x, old_table, new_table) = sample_tables();
    let old_file = OldBytes(&old);
    let names = Names {
        old: Path::new("old"),
        patch: Path::new("p"),
        output: Path::new("out"),
    };
    let expanded = ExpandedOld::new(&old_file, &old_table, 1 << 30, names);
    // random reads of expanded OLD are the expanded stream's bytes
    let mut x = 12345u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % old_x.len() as u64) as usize;
        let n = ((x >> 40) as usize % 300_000).min(old_x.len() - at);
        let mut buf = vec![0u8; n];
        spindiff::OldReader::read_exact_at(&expanded, &mut buf, at as u64).unwrap();
        assert!(buf[..] == old_x[at..at + n], "read of {n} at {at}");
    }
    // the engine's patch of the expanded pair, applied against expanded OLD into the
    // re-encoder, gives NEW bit for bit
    let opts = spindiff::DiffOptions::default()
        .memory(256 << 20)
        .threads(2);
    let base = spindiff::Base::from_bytes(&old_x, &opts).unwrap();
    let mut patch = Vec::new();
    base.diff_bytes(&new_x, &mut patch).unwrap();
    /// The re-encoder as a writer of the expanded stream, into a buffer.
    struct Into<'a>(Reencoder<'a>, Vec<u8>);
    impl std::io::Write for Into<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .push(buf, &mut self.1)
                .map_err(std::io::Error::other)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    for threads in [1, 3] {
        let mut into = Into(
            Reencoder::new(&new_table, &old_file, None, names),
            Vec::new(),
        );
        let apply = spindiff::ApplyOptions::default().threads(threads);
        spindiff::apply_from(&expanded, &mut &patch[..], &mut into, &apply).unwrap();
        let Into(mut reencoder, mut rebuilt) = into;
        reencoder.flush(&mut rebuilt).unwrap();
        let (hash, len) = reencoder.finish().unwrap();
        assert_eq!(len, new.len() as u64);
        assert!(rebuilt == new, "NEW does not come back");
        assert_eq!(hash, *blake3::hash(&new).as_bytes());
    }
}

/// OLD in memory, for the transform's readers.
struct OldBytes<'a>(&'a [u8]);

impl spindiff::OldReader for OldBytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> spindiff::Result<()> {
        let at = at as usize;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
}

/// Runs the binary under test in `dir`.
fn spindiff(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(&*common::cli::BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A directory holding the sample pair as `old` and `new`.
fn sample_pair() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(images().join("base.squashfs"), dir.path().join("old")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), dir.path().join("new")).unwrap();
    dir
}

#[test]
fn a_squashfs_pair_diffs_to_a_transform_patch_that_applies_every_way() {
    let dir = sample_pair();
    let d = dir.path();
    let new = std::fs::read(d.join("new")).unwrap();
    for threads in ["1", "2"] {
        common::cli::assert_ok(&spindiff(
            d,
            &[
                "diff",
                "old",
                "new",
                "-o",
                &format!("p{threads}"),
                "--threads",
                threads,
            ],
        ));
    }
    let patch = std::fs::read(d.join("p1")).unwrap();
    assert!(
        patch == std::fs::read(d.join("p2")).unwrap(),
        "patches differ with the thread count"
    );
    let inspect = spindiff(d, &["inspect", "p1"]);
    common::cli::assert_ok(&inspect);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("format version  10"), "{text}");
    assert!(
        text.contains("19 copied from OLD, 28 recompressed, 0 left compressed"),
        "{text}"
    );
    // without the transform: no transform section (header flag bit 0), and larger
    common::cli::assert_ok(&spindiff(
        d,
        &["diff", "old", "new", "-o", "v1", "--no-transform"],
    ));
    let v1 = std::fs::read(d.join("v1")).unwrap();
    assert_eq!(v1[10] & 1, 0);
    assert_eq!(patch[10] & 1, 1);
    assert!(
        patch.len() * 10 < v1.len() * 8,
        "{} against {}",
        patch.len(),
        v1.len()
    );
    // streamed, by index, from a pipe, verified
    for (args, out) in [
        (vec!["apply", "old", "p1", "-o", "out1"], "out1"),
        (
            vec!["apply", "old", "p1", "-o", "out3", "--threads", "3"],
            "out3",
        ),
    ] {
        common::cli::assert_ok(&spindiff(d, &args));
        assert!(std::fs::read(d.join(out)).unwrap() == new, "{args:?}");
    }
    let piped = Command::new(&*common::cli::BIN)
        .args(["apply", "old", "-", "-o", "-"])
        .current_dir(d)
        .stdin(std::fs::File::open(d.join("p1")).unwrap())
        .output()
        .unwrap();
    common::cli::assert_ok(&piped);
    assert!(piped.stdout == new);
    common::cli::assert_ok(&spindiff(d, &["verify", "old", "p1", "new"]));
}

/// `apply -v --resume` of a version-2 patch from a partial file holding `partial`: NEW must come
/// out whole; returns (chunks kept, chunks).
fn resume_v2(d: &Path, partial: &[u8], args: &[&str], stdin: Option<&Path>) -> (u64, u64) {
    std::fs::write(d.join(".out.spindiff-partial"), partial).unwrap();
    let out = Command::new(&*common::cli::BIN)
        .args(["apply", "old"])
        .args(args)
        .args(["-o", "out", "--resume", "-v"])
        .current_dir(d)
        .stdin(stdin.map_or_else(std::process::Stdio::null, |p| {
            std::fs::File::open(p).unwrap().into()
        }))
        .output()
        .unwrap();
    common::cli::assert_ok(&out);
    let new = std::fs::read(d.join("new")).unwrap();
    assert!(
        std::fs::read(d.join("out")).unwrap() == new,
        "resumed NEW differs"
    );
    common::cli::resume_counts(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_resumed_version_2_apply_keeps_what_verified_wherever_it_stopped() {
    let dir = sample_pair();
    let d = dir.path();
    // small chunks, so that a partial file holds many and cuts fall everywhere in pieces
    common::cli::assert_ok(&spindiff(
        d,
        &["diff", "old", "new", "-o", "p", "--chunk-size", "64K"],
    ));
    let new = std::fs::read(d.join("new")).unwrap();
    // a killed apply leaves a prefix of NEW: cut inside stored pieces, blocks and at their ends
    let mut last = 0;
    for cut in (0..new.len()).step_by(97_001).chain([new.len()]) {
        let (kept, total) = resume_v2(d, &new[..cut], &["p"], None);
        assert!(
            kept >= last,
            "cut {cut}: {kept} kept, {last} at a shorter cut"
        );
        last = kept;
        if cut == 0 {
            assert_eq!(kept, 0);
        }
        if cut == new.len() {
            assert_eq!(kept, total, "a complete partial file is kept whole");
        }
    }
    let (middle, total) = resume_v2(d, &new[..new.len() / 2], &["p"], None);
    assert!(middle > 0 && middle < total, "{middle} of {total}");
    // by index with three threads, and streamed from a pipe: the same chunks kept
    assert_eq!(
        resume_v2(d, &new[..new.len() / 2], &["p", "--threads", "3"], None),
        (middle, total)
    );
    assert_eq!(
        resume_v2(d, &new[..new.len() / 2], &["-"], Some(&d.join("p"))),
        (middle, total)
    );
    // a damaged byte ends what is kept before it, however much follows; bytes past NEW's end go
    let mut damaged = new.clone();
    damaged[new.len() / 2] ^= 0x55;
    let (kept, _) = resume_v2(d, &damaged, &["p"], None);
    assert!(kept <= middle + 1, "{kept} kept past a damaged byte");
    let mut longer = new.clone();
    longer.extend_from_slice(&[7u8; 5000]);
    assert_eq!(resume_v2(d, &longer, &["p"], None), (total, total));
}

#[test]
fn a_lying_transform_section_is_refused_in_one_line_and_nothing_is_left() {
    let dir = sample_pair();
    let d = dir.path();
    common::cli::assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "p"]));
    let patch = std::fs::read(d.join("p")).unwrap();
    let section_len = u64::from_le_bytes(patch[124..132].try_into().unwrap()) as usize;
    for at in (120..120 + section_len).step_by(7) {
        let mut bad = patch.clone();
        bad[at] ^= 0x21;
        std::fs::write(d.join("bad"), &bad).unwrap();
        for threads in ["1", "3"] {
            let out = spindiff(
                d,
                &["apply", "old", "bad", "-o", "out", "--threads", threads],
            );
            assert_eq!(out.status.code(), Some(1), "flip at {at}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(!d.join("out").exists() && !d.join(".out.spindiff-partial").exists());
        }
    }
}

#[test]
fn an_xz_live_iso_pair_round_trips_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = tree(d);
    let base_tree = base_tree(d);
    for (t, name) in [(&base_tree, "old"), (&tree, "new")] {
        let root = d.join(format!("{name}-iso"));
        std::fs::create_dir_all(root.join("live")).unwrap();
        mksquashfs(
            t,
            &root.join("live/filesystem.squashfs"),
            &["xz", "-Xbcj", "x86"],
        );
        std::fs::write(root.join("README"), format!("the {name} live image\n")).unwrap();
        assert!(
            Command::new("xorriso")
                .args(["-as", "mkisofs", "-quiet", "-V", "LIVE", "-o"])
                .arg(d.join(name))
                .arg(&root)
                .output()
                .unwrap()
                .status
                .success()
        );
    }
    common::cli::assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "p"]));
    common::cli::assert_ok(&spindiff(
        d,
        &["diff", "old", "new", "-o", "v1", "--no-transform"],
    ));
    common::cli::assert_ok(&spindiff(d, &["apply", "old", "p", "-o", "out"]));
    assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new")).unwrap());
    let (v2, v1) = (
        std::fs::metadata(d.join("p")).unwrap().len(),
        std::fs::metadata(d.join("v1")).unwrap().len(),
    );
    assert!(v2 * 10 < v1 * 8, "{v2} against {v1}");
}

/// Issue 20, item 4: a block of the partial file that decompresses to NEW's bytes but is not
/// NEW's stored block (a padding bit flipped after the deflate stream's last code) is not kept:
/// the resume rewrites it and NEW comes out exact. And a resume that fails (here: the patch
/// ends early) keeps its partial file, whatever it kept.
#[test]
fn a_resume_keeps_no_block_that_only_decompresses_right_and_a_failed_resume_keeps_its_partial_file()
{
    let dir = sample_pair();
    let d = dir.path();
    common::cli::assert_ok(&spindiff(
        d,
        &["diff", "old", "new", "-o", "p", "--chunk-size", "64K"],
    ));
    let new = std::fs::read(d.join("new")).unwrap();
    let layout = &find_filesystems(&new)[0];
    let mut tampered = None;
    'blocks: for r in layout.regions.iter().filter(|r| r.block.is_some()) {
        let (at, end) = (r.offset as usize, r.offset as usize + r.len as usize);
        let mut plain = Vec::new();
        layout
            .codec
            .decompress(&new[at..end], 1 << 20, &mut plain)
            .unwrap();
        for bit in (1..8).rev() {
            let mut block = new[at..end].to_vec();
            block[r.len as usize - 5] ^= 1 << bit;
            let mut again = Vec::new();
            if layout.codec.decompress(&block, 1 << 20, &mut again).is_ok() && again == plain {
                let mut file = new.clone();
                file[at..end].copy_from_slice(&block);
                tampered = Some(file);
                break 'blocks;
            }
        }
    }
    let tampered = tampered.expect("a block with a padding bit to flip");
    let partial = d.join(".out.spindiff-partial");
    // a resume that fails keeps the partial file
    let patch = std::fs::read(d.join("p")).unwrap();
    std::fs::write(d.join("cut"), &patch[..patch.len() - 100]).unwrap();
    std::fs::write(&partial, &tampered).unwrap();
    let out = spindiff(d, &["apply", "old", "cut", "-o", "out", "--resume"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!d.join("out").exists());
    assert!(partial.exists(), "a failed resume removed its partial file");
    // with the whole patch it succeeds, rewriting the block that was not NEW's
    std::fs::write(&partial, &tampered).unwrap();
    let (kept, total) = resume_v2(d, &tampered, &["p"], None);
    assert!(kept < total, "every chunk kept: {kept} of {total}");
}

/// Phases and bytes a diff reports, in order.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<(String, u64, u64)>>);

impl spindiff::Progress for Recorded {
    fn start(&self, phase: &str, total: u64) {
        self.0.lock().unwrap().push((phase.to_string(), total, 0));
    }
    fn advance(&self, bytes: u64) {
        self.0
            .lock()
            .unwrap()
            .last_mut()
            .expect("a phase started")
            .2 += bytes;
    }
}

#[test]
fn expanding_the_images_is_reported_as_progress_before_the_diff() {
    let dir = sample_pair();
    let d = dir.path();
    let (old_len, new_len) = (
        std::fs::metadata(d.join("old")).unwrap().len(),
        std::fs::metadata(d.join("new")).unwrap().len(),
    );
    let progress = Recorded::default();
    let opts = spindiff::DiffOptions::default().threads(2);
    spindiff::diff_with_progress(
        &d.join("old"),
        &d.join("new"),
        &d.join("p"),
        &opts,
        &progress,
    )
    .unwrap();
    let phases = progress.0.into_inner().unwrap();
    let names: Vec<&str> = phases.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(names, ["expand", "expand", "index", "scan", "diff"]);
    assert_eq!((phases[0].1, phases[1].1), (old_len, new_len));
    for (phase, total, done) in &phases {
        assert!(done <= total, "{phase}: {done} of {total}");
    }
}

/// Issue 22: a small machine applies in little memory. The default patch of the sample pair (4
/// MiB chunks) applies under `apply --memory 32M` (since format version 10) and is refused under
/// 20M, naming what it needs; `diff --apply-memory 20M` takes chunks small enough, and that
/// patch applies under the cap (streamed, by index and
/// resumed), its bound under the cap and the transform within its least budget; a cap that even
/// 4 KiB chunks do not fit is refused at diff time, naming the least the pair needs.
#[test]
fn issue22_a_patch_made_with_apply_memory_applies_under_that_cap() {
    let dir = sample_pair();
    let d = dir.path();
    let new = std::fs::read(d.join("new")).unwrap();
    common::cli::assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "big", "-q"]));
    common::cli::assert_ok(&spindiff(
        d,
        &["apply", "old", "big", "-o", "out", "--memory", "32M"],
    ));
    assert!(std::fs::read(d.join("out")).unwrap() == new);
    std::fs::remove_file(d.join("out")).unwrap();
    let refused = spindiff(d, &["apply", "old", "big", "-o", "out", "--memory", "20M"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("needs --memory"), "{err}");
    assert!(!d.join("out").exists());

    common::cli::assert_ok(&spindiff(
        d,
        &[
            "diff",
            "old",
            "new",
            "-o",
            "small",
            "-q",
            "--apply-memory",
            "20M",
        ],
    ));
    let inspect = spindiff(d, &["inspect", "--json", "small"]);
    common::cli::assert_ok(&inspect);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let chunk = info["chunk_size"].as_u64().unwrap();
    assert!(chunk < 4 << 20, "{info}");
    for extra in [&[][..], &["--threads", "3"][..]] {
        let mut args = vec![
            "apply", "old", "small", "-o", "out", "--memory", "20M", "--json",
        ];
        args.extend_from_slice(extra);
        let applied = spindiff(d, &args);
        common::cli::assert_ok(&applied);
        let report: serde_json::Value = serde_json::from_slice(&applied.stdout).unwrap();
        let bound = report["memory_bound_bytes"].as_u64().unwrap();
        assert!(bound <= 20 << 20, "{report}");
        // what the re-encoder held is reported, and counted in the bound
        let transform = &report["transform"];
        assert!(
            transform["memory_bytes"].as_u64().unwrap() < bound,
            "{report}"
        );
        assert!(transform["threads"].as_u64().unwrap() >= 1, "{report}");
        assert!(
            transform["blocks_in_flight"].as_u64().unwrap() >= 1,
            "{report}"
        );
        assert!(std::fs::read(d.join("out")).unwrap() == new, "{extra:?}");
    }
    // resumed from a partial file that stops halfway
    std::fs::write(d.join(".out.spindiff-partial"), &new[..new.len() / 2]).unwrap();
    std::fs::remove_file(d.join("out")).unwrap();
    common::cli::assert_ok(&spindiff(
        d,
        &[
            "apply", "old", "small", "-o", "out", "--memory", "20M", "--resume",
        ],
    ));
    assert!(std::fs::read(d.join("out")).unwrap() == new);

    let too_small = spindiff(
        d,
        &["diff", "old", "new", "-o", "tiny", "--apply-memory", "9M"],
    );
    assert_eq!(too_small.status.code(), Some(2));
    let err = String::from_utf8_lossy(&too_small.stderr);
    assert!(
        err.contains("--apply-memory") && err.contains("MiB at least"),
        "{err}"
    );
    assert!(!d.join("tiny").exists());
}

/// `diff --apply-memory` through the library: the patch applies under the cap, and its chunks
/// are the largest that fit (twice as large would not).
#[test]
fn issue22_apply_memory_takes_the_largest_chunks_that_fit() {
    let (old, new) = (
        std::fs::read(images().join("base.squashfs")).unwrap(),
        std::fs::read(images().join("spin-de.squashfs")).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (o, n, p) = (
        dir.path().join("o"),
        dir.path().join("n"),
        dir.path().join("p"),
    );
    std::fs::write(&o, &old).unwrap();
    std::fs::write(&n, &new).unwrap();
    let opts = spindiff::DiffOptions::default()
        .threads(2)
        .apply_memory(Some(24 << 20));
    spindiff::diff(&o, &n, &p, &opts).unwrap();
    let report = spindiff::apply(
        &o,
        &p,
        &dir.path().join("out"),
        &spindiff::ApplyOptions::default().memory(Some(24 << 20)),
    )
    .unwrap();
    assert!(report.memory_bound <= 24 << 20);
    let least = spindiff::least_apply_memory(report.header.chunk_size, report.transform_memory);
    assert!(
        least <= report.memory_bound,
        "{least} > {}",
        report.memory_bound
    );
    // the diff took the largest chunks that fit: twice as large would not have
    let larger =
        spindiff::least_apply_memory(report.header.chunk_size * 2, report.transform_memory);
    assert!(larger > 24 << 20, "{larger}");
    assert!(std::fs::read(dir.path().join("out")).unwrap() == new);
}

/// Issue 22: an image of 1 MiB xz blocks (`-b 1M -Xdict-size 1M`, as Arch's, openSUSE's and
/// Tails' are) applies on a machine of 32 MiB. liblzma's encoder alone takes 13.7 MiB for such a
/// block, so the patch is made for it (`diff --apply-memory 32M`, which takes smaller chunks)
/// and applied with blocks recompressed in turn as NEW is written (no block in flight beside
/// the chunks): its bound is under the cap, the process's peak under the bound, and the output
/// NEW, streamed and resumed from a partial file.
#[test]
fn issue22_an_image_of_1_mib_xz_blocks_applies_in_32_mib() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = tree(d);
    let base_tree = base_tree(d);
    let comp = ["xz", "-Xbcj", "x86", "-b", "1M", "-Xdict-size", "1M"];
    mksquashfs(&base_tree, &d.join("old"), &comp);
    mksquashfs(&tree, &d.join("new"), &comp);
    let new = std::fs::read(d.join("new")).unwrap();
    common::cli::assert_ok(&spindiff(
        d,
        &[
            "diff",
            "old",
            "new",
            "-o",
            "p",
            "-q",
            "--apply-memory",
            "32M",
        ],
    ));
    let applied = spindiff(
        d,
        &[
            "apply", "old", "p", "-o", "out", "--memory", "32M", "--json",
        ],
    );
    common::cli::assert_ok(&applied);
    let report: serde_json::Value = serde_json::from_slice(&applied.stdout).unwrap();
    let bound = report["memory_bound_bytes"].as_u64().unwrap();
    assert!(bound <= 32 << 20, "{report}");
    // the transform did take its 1 MiB blocks: liblzma's encoder is most of it
    let transform = report["transform"]["memory_bytes"].as_u64().unwrap();
    assert!(transform > 16 << 20, "{report}");
    assert_eq!(report["transform"]["blocks_in_flight"], 0, "{report}");
    if let Some(peak) = report["peak_memory_bytes"].as_u64() {
        assert!(peak <= bound, "peak {peak} over the bound {bound}");
    }
    assert!(std::fs::read(d.join("out")).unwrap() == new);
    std::fs::write(d.join(".out.spindiff-partial"), &new[..new.len() / 2]).unwrap();
    std::fs::remove_file(d.join("out")).unwrap();
    common::cli::assert_ok(&spindiff(
        d,
        &[
            "apply", "old", "p", "-o", "out", "--memory", "32M", "--resume",
        ],
    ));
    assert!(std::fs::read(d.join("out")).unwrap() == new);
}
