//! Compressed files inside an image (issue 21, part 3): an initrd as dracut writes it (an
//! uncompressed microcode cpio, then an xz stream of the rest) is found alone and inside an ISO
//! beside squashfs layers, every block of the stream recompresses bit for bit whichever way xz
//! cut it (multi-threaded with sizes in its block headers, single-threaded without, BCJ or
//! not, CRC32 or CRC64), and a pair of such ISOs diffs to about what the uncompressed initrds
//! do. The streams are made by the xz command (scripts/test.sh installs xz-utils).

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::spindiff;
use common::images::{images, initrd_base_files};
use spindiff::internals::transform::{census, find_filesystems};

/// `plain` through `xz` with `options`.
fn xz(plain: &[u8], options: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("xz")
        .args(options)
        .args(["-c", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz (xz-utils; scripts/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = plain.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// An initrd's files: a sample image (compressed already: little to gain) and a text-like
/// stretch that compresses as an initrd's scripts do; with `extra` bytes of a new file in front
/// (a spin's), which shifts everything after it.
fn initrd_files(extra: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    if extra > 0 {
        // first in the archive: every block after it shifts
        let more: Vec<u8> = (0..extra as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 % 64 + b' ')
            .collect();
        files.push(("usr/lib/locale/de/messages.mo".to_string(), more));
    }
    files.extend(initrd_base_files());
    files
}

/// An initrd: a microcode cpio, then the cpio of `files` compressed by `xz` with `options`
/// (uncompressed when there are none).
fn initrd(files: &[(String, Vec<u8>)], options: &[&str]) -> Vec<u8> {
    if options.is_empty() {
        common::images::initrd(files, None)
    } else {
        common::images::initrd(files, Some(&|main: &[u8]| xz(main, options)))
    }
}

/// Every way xz writes an initrd that spindiff expands: dracut's (multi-threaded, 1 MiB
/// dictionary: sizes in each block header), single-threaded (one block, no sizes), BCJ,
/// CRC64, a low preset.
const XZ_WAYS: [&[&str]; 4] = [
    &[
        "--check=crc32",
        "--lzma2=dict=1MiB",
        "-T2",
        "--block-size=1MiB",
    ],
    &["--check=crc64", "--lzma2=preset=6,dict=2MiB", "-T1"],
    &[
        "--check=crc32",
        "--x86",
        "--lzma2=preset=3,dict=1MiB",
        "-T2",
        "--block-size=768KiB",
    ],
    &["-0", "-T2", "--block-size=2MiB"],
];

#[test]
fn every_block_of_an_initrd_xz_stream_recompresses_whichever_way_xz_cut_it() {
    let files = initrd_files(0);
    for options in XZ_WAYS {
        let file = initrd(&files, options);
        let found = find_filesystems(&file);
        assert_eq!(found.len(), 1, "{options:?}");
        let layout = &found[0];
        // behind the microcode cpio, up to the stream's end
        assert!(
            layout.start > 100_000 && layout.start.is_multiple_of(4),
            "{options:?}"
        );
        assert_eq!(layout.end, file.len() as u64, "{options:?}");
        let c = census(&file, layout);
        assert!(c.blocks >= 1, "{options:?}: {c:?}");
        assert_eq!(c.reproduced, c.blocks, "{options:?}: {c:?}");
        assert!(c.plain_bytes > c.stored_bytes, "{options:?}: {c:?}");
    }
}

#[test]
fn a_lying_or_cut_stream_is_opaque_or_tiles_and_never_a_panic() {
    let file = initrd(&initrd_files(0), XZ_WAYS[0]);
    let start = find_filesystems(&file)[0].start as usize;
    // cut anywhere: the footer and index are gone, the stream is not found (the gzip members
    // its uncompressed chunks hold as they are may be)
    for cut in (start..file.len()).step_by(50_021).chain([file.len() - 1]) {
        let found = find_filesystems(&file[..cut]);
        assert!(
            found.iter().all(|l| l.start != start as u64),
            "cut at {cut}"
        );
    }
    // bytes flipped in the stream header, the block headers, the data and the index: whatever
    // comes out must tile, and a lying block fail to decompress cleanly
    let positions = (start..start + 64)
        .chain((start..file.len()).step_by(99_991))
        .chain(file.len() - 64..file.len());
    for at in positions {
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        common::fuzzing::squashfs(&bad);
    }
}

/// An ISO of `files` (path in the ISO, bytes) made by xorriso.
fn iso(d: &Path, name: &str, files: &[(&str, &[u8])]) {
    let root = d.join(format!("{name}.tree"));
    for (path, bytes) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "LAYERED", "-R", "-o"])
        .arg(d.join(name))
        .arg(&root)
        .output()
        .expect("xorriso (scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
}

/// The size of the patch `old` -> `new` in `d`, checked to apply with one and two threads and
/// to resume from three quarters of its output (inside the initrd's stream).
fn patch_of(d: &Path, pair: (&str, &str), options: &[&str]) -> u64 {
    common::cli::checked_patch_size(d, pair, options, |n| vec![n * 3 / 4])
}

/// Issue 21's target for an ISO with layers and an initrd: every layer and the initrd's
/// stream are expanded, and the patch is within 1.1x of the patch of the same ISOs with the
/// initrd uncompressed; opaque, the shifted initrd costs its whole stream again (here, with
/// the layers' changes, twice the patch).
#[test]
fn an_iso_with_two_squashfs_layers_and_an_xz_initrd_diffs_as_if_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = |n: &str| std::fs::read(images().join(n)).unwrap();
    let (base, spin, layer) = (
        image("base.squashfs"),
        image("spin-de.squashfs"),
        image("spin-fr.squashfs"),
    );
    let (old_files, new_files) = (initrd_files(0), initrd_files(400_000));
    for (name, options) in [("", XZ_WAYS[0]), ("plain-", &[][..])] {
        let old_initrd = initrd(&old_files, options);
        let new_initrd = initrd(&new_files, options);
        for (side, root, initrd) in [("old", &base, &old_initrd), ("new", &spin, &new_initrd)] {
            let files: [(&str, &[u8]); 3] = [
                ("casper/minimal.squashfs", root),
                ("casper/minimal.standard.squashfs", &layer),
                ("casper/initrd", initrd),
            ];
            iso(d, &format!("{name}{side}.iso"), &files);
        }
    }
    let old = std::fs::read(d.join("old.iso")).unwrap();
    let found = find_filesystems(&old);
    assert_eq!(found.len(), 3, "two layers and the initrd's stream");
    let patched = patch_of(d, ("old.iso", "new.iso"), &[]);
    let out = spindiff(d, &["inspect", "new.iso.spd"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("format version  10"), "{text}");
    assert!(
        text.contains("3 in OLD") && text.contains("3 in NEW"),
        "{text}"
    );
    let plain = patch_of(d, ("plain-old.iso", "plain-new.iso"), &[]);
    let opaque = patch_of(d, ("old.iso", "new.iso"), &["--no-transform"]);
    assert!(
        patched * 10 <= plain * 11,
        "{patched} bytes against {plain} with the initrd uncompressed"
    );
    assert!(
        patched * 10 < opaque * 6,
        "{patched} against {opaque} opaque"
    );
}

/// A table naming an xz stream's blocks reads back only in a patch of format version 5 or
/// later (a version-4 reader would not know them), and settings no xz stream of this reader
/// has are refused.
#[test]
fn xz_stream_codecs_need_format_version_5() {
    use spindiff::format::{VERSION_EROFS, VERSION_STREAMS};
    use spindiff::internals::transform::codec::{BlockKind, Codec};
    use spindiff::internals::transform::expand::{FsCodec, Piece, Rebuild};
    use spindiff::internals::transform::table::Table;
    use spindiff::internals::transform::xzstream::Settings;
    let table_of = |s: Settings| Table {
        codecs: vec![FsCodec {
            codec: Codec::XzStream(s),
            block_size: 4096,
        }],
        pieces: vec![Piece {
            offset: 0,
            len: 4096,
            rebuild: Rebuild::Recompress {
                variant: 5,
                plain_len: 10_000,
            },
            block: Some((0, BlockKind::Exact(10_000))),
        }],
    };
    let real = Settings {
        dict: 1 << 20,
        level: 6,
        bcj: Some(4),
        check: 1,
    };
    let bytes = table_of(real).to_bytes();
    assert_eq!(
        Table::parse_for(&bytes, 4096, 4096, VERSION_STREAMS).unwrap(),
        table_of(real)
    );
    let refused = Table::parse_for(&bytes, 4096, 4096, VERSION_EROFS).unwrap_err();
    assert!(refused.contains("does not exist"), "{refused}");
    // a dictionary past 8 MiB, a preset past 9, a filter that is not BCJ, SHA-256 checks
    for bad in [
        Settings {
            dict: 64 << 20,
            ..real
        },
        Settings { level: 10, ..real },
        Settings {
            bcj: Some(0x21),
            ..real
        },
        Settings { check: 10, ..real },
    ] {
        let bytes = table_of(bad).to_bytes();
        assert!(Table::parse_for(&bytes, 4096, 4096, VERSION_STREAMS).is_err());
    }
}

/// A zstd block recompressed by another libzstd release than the bundled one is named by its
/// encoding variant: such a table needs format version 5, and a build without that release
/// says which it lacks instead of failing block by block.
#[test]
fn zstd_blocks_of_another_release_need_version_5_and_that_release() {
    use spindiff::format::{VERSION_EROFS, VERSION_STREAMS};
    use spindiff::internals::transform::codec::{BlockKind, Codec};
    use spindiff::internals::transform::expand::{FsCodec, Piece, Rebuild};
    use spindiff::internals::transform::table::Table;
    let table_of = |variant| Table {
        codecs: vec![FsCodec {
            codec: Codec::Zstd { level: 19 },
            block_size: 131072,
        }],
        pieces: vec![Piece {
            offset: 0,
            len: 4096,
            rebuild: Rebuild::Recompress {
                variant,
                plain_len: 10_000,
            },
            block: Some((0, BlockKind::Data)),
        }],
    };
    assert_eq!(table_of(0).format_version(), 3);
    assert_eq!(table_of(0).missing_release(), None);
    assert_eq!(table_of(1).format_version(), VERSION_STREAMS);
    // a release no build has
    assert_eq!(table_of(7).missing_release(), Some(7));
    let bytes = table_of(1).to_bytes();
    assert!(Table::parse_for(&bytes, 4096, 4096, VERSION_EROFS).is_err());
    assert_eq!(
        Table::parse_for(&bytes, 4096, 4096, VERSION_STREAMS).unwrap(),
        table_of(1)
    );
}

/// initramfs-tools' xz (`xz --check=crc32`, single-threaded: one block for the whole cpio) of
/// an initrd over 12 MiB: the block is too large to hold, so it is a whole stream, decoded and
/// re-encoded as its bytes come (format version 6); the patch is within 1.1x of the
/// uncompressed pair's, and apply rebuilds it with one or two threads and resumes inside it.
#[test]
fn issue21_a_single_threaded_xz_initrd_over_12_mib_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = |extra: usize| {
        let mut files = initrd_files(0);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut word = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // text that compresses as scripts do, and a new file of incompressible bytes in front
        let text: Vec<u8> = (0..1_400_000)
            .flat_map(|i| format!("mod{} {:x}\n", word() % 4000, i % 977).into_bytes())
            .take(9 << 20)
            .collect();
        files.push(("usr/lib/modules.order".into(), text));
        if extra > 0 {
            let more: Vec<u8> = (0..extra).map(|_| word() as u8).collect();
            files.insert(0, ("etc/locale.gen".into(), more));
        }
        files
    };
    let single = ["--check=crc32", "-T1"];
    for (name, options) in [("", &single[..]), ("plain-", &[][..])] {
        std::fs::write(d.join(format!("{name}old")), initrd(&files(0), options)).unwrap();
        std::fs::write(
            d.join(format!("{name}new")),
            initrd(&files(300_000), options),
        )
        .unwrap();
    }
    let old = std::fs::read(d.join("old")).unwrap();
    let found = find_filesystems(&old);
    assert_eq!(found.len(), 1);
    let big = found[0]
        .regions
        .iter()
        .filter_map(|r| r.block)
        .map(|k| k.plain_limit(0));
    assert!(big.max().unwrap() > 12 << 20, "one block over 12 MiB");
    let patched = patch_of(d, ("old", "new"), &[]);
    let text = String::from_utf8_lossy(&spindiff(d, &["inspect", "new.spd"]).stdout).to_string();
    assert!(text.contains("format version  10"), "{text}");
    assert!(text.contains("1 recompressed"), "{text}");
    let plain = patch_of(d, ("plain-old", "plain-new"), &[]);
    assert!(
        patched * 10 <= plain * 11,
        "{patched} bytes against {plain} uncompressed"
    );
}

/// Issue 22: a live ISO whose spin left the initrd alone. NEW holds OLD's xz stream byte for
/// byte, so neither side expands it (NEW's stored bytes copy OLD's as they are): only the
/// squashfs is expanded, and the patch applies under `apply --memory 32M` (an expanded stream
/// took a decoder's window of it, 8 MiB for a live ISO's zstd initrd).
#[test]
fn issue22_an_initrd_the_spin_left_alone_is_not_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = |n: &str| std::fs::read(images().join(n)).unwrap();
    let (base, spin) = (image("base.squashfs"), image("spin-de.squashfs"));
    let initrd = initrd(&initrd_files(0), XZ_WAYS[0]);
    for (side, root) in [("old", &base), ("new", &spin)] {
        let files: [(&str, &[u8]); 2] = [
            ("casper/minimal.squashfs", root),
            ("casper/initrd", &initrd),
        ];
        iso(d, &format!("{side}.iso"), &files);
    }
    // the stream is found in both: it is the diff that leaves it alone
    for side in ["old.iso", "new.iso"] {
        let found = find_filesystems(&std::fs::read(d.join(side)).unwrap());
        let kinds: Vec<_> = found.iter().map(|l| l.codec.kind_name()).collect();
        assert_eq!(kinds, ["xz stream", "squashfs gzip"], "{side}");
    }
    patch_of(d, ("old.iso", "new.iso"), &[]);
    let out = spindiff(d, &["inspect", "new.iso.spd"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 in OLD") && text.contains("1 in NEW") && !text.contains("xz stream"),
        "{text}"
    );
    let args = [
        "apply",
        "old.iso",
        "new.iso.spd",
        "-o",
        "out",
        "--memory",
        "32M",
    ];
    common::cli::assert_ok(&spindiff(d, &args));
    assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new.iso")).unwrap());
}
