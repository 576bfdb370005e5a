//! Whole zstd streams (issue 21, part 3): an initrd as Debian's initramfs-tools writes it (`zstd
//! -q -9` of a cpio: the zstd command line's multi-threaded framing, libzstd 1.5.4 on Debian 12),
//! behind an uncompressed microcode cpio, is found, recompresses bit for bit as one stream, and
//! a pair of such initrds diffs to about what the uncompressed pair does; apply rebuilds it
//! streamed, with one or two threads, and resumes from inside the stream. The streams are made
//! by the zstd command (scripts/test.sh installs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{assert_ok, spindiff};
use common::images::initrd_files;
use spindiff::internals::transform::codec::Codec;
use spindiff::internals::transform::{census, find_filesystems, zstdstream};

/// The tests of this file run one at a time: one of them measures the process's peak memory.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `plain` through the `zstd` command with `options`, from a pipe (no content size in the
/// frame, as initramfs-tools writes it) or, with `from_file`, from a file (with it).
fn zstd(plain: &[u8], options: &[&str], from_file: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, plain).unwrap();
    let mut cmd = Command::new("zstd");
    cmd.args(options).args(["-q", "-c"]);
    if from_file {
        cmd.arg(&input);
    } else {
        cmd.stdin(std::fs::File::open(&input).unwrap());
    }
    let out = cmd
        .output()
        .expect("zstd (the zstd package; scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// An initrd of `files` whose cpio `zstd` compresses with `options` (uncompressed when `None`).
fn initrd(files: &[(String, Vec<u8>)], options: Option<(&[&str], bool)>) -> Vec<u8> {
    match options {
        Some((options, from_file)) => {
            common::images::initrd(files, Some(&|main: &[u8]| zstd(main, options, from_file)))
        }
        None => common::images::initrd(files, None),
    }
}

/// Ways the zstd command writes an initrd: initramfs-tools' (`-9`, multi-threaded framing, from
/// a pipe), mkinitcpio's (the default level, `-T0`), one thread, and from a file (with the
/// content size in the frame header).
const ZSTD_WAYS: [(&[&str], bool); 4] = [
    (&["-9"], false),
    (&["-3", "-T2"], false),
    (&["-1", "--single-thread"], false),
    (&["-9"], true),
];

#[test]
fn issue21_a_zstd_initrd_recompresses_whole_whichever_way_zstd_made_it() {
    let _one = serial();
    let files = initrd_files(0);
    for way in ZSTD_WAYS {
        let file = initrd(&files, Some(way));
        let found = find_filesystems(&file);
        assert_eq!(found.len(), 1, "{way:?}");
        let layout = &found[0];
        assert!(matches!(layout.codec, Codec::ZstdStream(_)), "{way:?}");
        assert!(layout.start > 100_000, "{way:?}: behind the microcode");
        assert_eq!(layout.end, file.len() as u64, "{way:?}");
        assert_eq!(layout.regions.len(), 1, "{way:?}: one stream");
        let c = census(&file, layout);
        assert_eq!((c.blocks, c.reproduced), (1, 1), "{way:?}: {c:?}");
        assert!(c.plain_bytes > c.stored_bytes, "{way:?}: {c:?}");
    }
}

/// Levels whose trial passes the parse budget (12 and up: dracut-ng's `-15`, Fedora 43's
/// default) are not tried while parsing, which stays within its budget: the frame is found, its
/// level left to NEW's expansion ([`zstdstream::DEFERRED`]), where memory is planned.
#[test]
fn a_zstd_initrd_of_a_level_past_the_parse_budget_is_left_to_expansion() {
    let _one = serial();
    let file = initrd(&initrd_files(0), Some((&["-15", "-T0"], false)));
    let (found, growth) = common::fuzzing::peak_growth(|| find_filesystems(&file));
    if let Some(g) = growth {
        assert!(
            g <= common::fuzzing::PARSE_CAP,
            "parsing grew by {} MiB",
            g >> 20
        );
    }
    assert_eq!(found.len(), 1);
    let Codec::ZstdStream(s) = found[0].codec else {
        panic!("{:?}", found[0].codec)
    };
    assert!(s.is_deferred(), "{s:?}");
    let stored = &file[found[0].start as usize..];
    let (settings, _, _) = zstdstream::search(stored, plain_len(&found[0])).expect("a level");
    assert_eq!((settings.level, settings.workers), (15, true));
}

/// The plain length of a zstd stream's layout.
fn plain_len(layout: &spindiff::internals::transform::squashfs::Layout) -> u64 {
    let kind = layout.regions[0].block.expect("a stream");
    kind.plain_limit(0) as u64
}

/// Issue 21 for Fedora's initrds: dracut-ng's `zstd -15 -q -T0` initrd is expanded (its level
/// found where NEW is expanded, written in NEW's table) and diffs within 1.1x of the
/// uncompressed pair, alone or in a many-targets run; under a cap with no room for the level
/// search, the diff still works and the stream stays stored.
#[test]
fn issue21_a_dracut_zstd_15_initrd_diffs_as_if_uncompressed() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_spin_pair(d, (&["-15", "-T0"], false));
    let patched = patch_of(d, ("old", "new"), &[]);
    let text = String::from_utf8_lossy(&spindiff(d, &["inspect", "new.spd"]).stdout).to_string();
    assert!(text.contains("zstd stream"), "{text}");
    assert!(text.contains("1 recompressed"), "{text}");
    let plain = patch_of(d, ("plain-old", "plain-new"), &[]);
    assert!(
        patched * 10 <= plain * 11,
        "{patched} bytes against {plain} uncompressed"
    );
    // a many-targets run searches the level the same way: the same patch
    assert_ok(&spindiff(
        d,
        &["diff", "old", "new", "--out-dir", "many", "-q"],
    ));
    assert!(
        std::fs::read(d.join("many/new.spd")).unwrap() == std::fs::read(d.join("new.spd")).unwrap(),
        "the many-targets patch differs from the single diff's"
    );
    let small = [
        "diff",
        "old",
        "new",
        "-o",
        "small.spd",
        "--memory",
        SMALL_CAP,
    ];
    assert_ok(&spindiff(d, &small));
    let text = String::from_utf8_lossy(&spindiff(d, &["inspect", "small.spd"]).stdout).to_string();
    assert!(!text.contains("1 recompressed"), "{text}");
    let apply = ["apply", "old", "small.spd", "-o", "out"];
    assert_ok(&spindiff(d, &apply));
    assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new")).unwrap());
}

/// A cap under which a diff of small initrds runs, but the level search of a deferred frame
/// (the most any level's encoder takes) does not fit beside it.
const SMALL_CAP: &str = "160M";

/// A base -> spin pair of initrds in `d` whose cpio `zstd` compresses `way` (`old`, `new`), and
/// the same pair uncompressed (`plain-old`, `plain-new`).
fn write_spin_pair(d: &Path, way: (&[&str], bool)) {
    let (old_files, new_files) = (initrd_files(0), initrd_files(400_000));
    for (name, way) in [("", Some(way)), ("plain-", None)] {
        std::fs::write(d.join(format!("{name}old")), initrd(&old_files, way)).unwrap();
        std::fs::write(d.join(format!("{name}new")), initrd(&new_files, way)).unwrap();
    }
}

/// The size of the patch `old` -> `new` in `d`, checked to apply with one and two threads and
/// to resume from inside the stream (a quarter, three quarters and one byte short of it).
fn patch_of(d: &Path, pair: (&str, &str), options: &[&str]) -> u64 {
    common::cli::checked_patch_size(d, pair, options, |n| vec![n / 4, n * 3 / 4, n - 1])
}

/// Issue 21's target for an initrd: its zstd stream is expanded and the patch is within 1.1x of
/// the uncompressed initrds' patch; opaque, the shifted stream costs nearly its whole self.
#[test]
fn issue21_a_debian_zstd_initrd_diffs_as_if_uncompressed() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_spin_pair(d, ZSTD_WAYS[0]);
    let patched = patch_of(d, ("old", "new"), &[]);
    let out = spindiff(d, &["inspect", "new.spd"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("format version  10"), "{text}");
    assert!(text.contains("zstd stream"), "{text}");
    assert!(text.contains("1 recompressed"), "{text}");
    let plain = patch_of(d, ("plain-old", "plain-new"), &[]);
    let opaque = patch_of(d, ("old", "new"), &["--no-transform"]);
    assert!(
        patched * 10 <= plain * 11,
        "{patched} bytes against {plain} uncompressed"
    );
    assert!(
        patched * 5 < opaque * 4,
        "{patched} against {opaque} opaque"
    );
}

/// A stream whose bytes are damaged, or cut, is never a panic: it is opaque, or its frame
/// still reads and tiles (a flipped bit in a literal), and then a NEW made of it is only
/// recompressed where that gives it back.
#[test]
fn a_damaged_or_cut_zstd_stream_is_opaque_or_tiles_and_never_a_panic() {
    let _one = serial();
    let file = initrd(&initrd_files(0), Some(ZSTD_WAYS[0]));
    let start = find_filesystems(&file)[0].start as usize;
    // the stream is not found (the gzip members its raw blocks hold as they are may be)
    for cut in (start..file.len()).step_by(400_009).chain([file.len() - 1]) {
        let found = find_filesystems(&file[..cut]);
        assert!(
            found.iter().all(|l| l.start != start as u64),
            "cut at {cut}"
        );
    }
    let positions = (start..start + 16).chain((start..file.len()).step_by(299_993));
    for at in positions {
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        common::fuzzing::squashfs(&bad);
    }
}

/// A table naming a whole zstd stream reads back only in a patch of format version 6 or
/// later, with settings a real frame can have, and a plain length past the pcluster limit.
#[test]
fn zstd_stream_codecs_need_format_version_6() {
    use spindiff::format::{VERSION_STREAMS, VERSION_WHOLE_STREAMS};
    use spindiff::internals::transform::codec::BlockKind;
    use spindiff::internals::transform::expand::{FsCodec, Piece, Rebuild};
    use spindiff::internals::transform::table::Table;
    use spindiff::internals::transform::zstdstream::Settings;
    let table_of = |s: Settings| Table {
        codecs: vec![FsCodec {
            codec: Codec::ZstdStream(s),
            block_size: 4096,
        }],
        pieces: vec![Piece {
            offset: 0,
            len: 4096,
            rebuild: Rebuild::Recompress {
                variant: 1,
                plain_len: 100 << 20,
            },
            block: Some((0, BlockKind::Exact(100 << 20))),
        }],
    };
    let real = Settings {
        level: 9,
        workers: true,
        checksum: true,
        content_size: false,
    };
    let bytes = table_of(real).to_bytes();
    assert_eq!(table_of(real).format_version(), VERSION_WHOLE_STREAMS);
    assert_eq!(
        Table::parse_for(&bytes, 4096, 4096, VERSION_WHOLE_STREAMS).unwrap(),
        table_of(real)
    );
    assert!(Table::parse_for(&bytes, 4096, 4096, VERSION_STREAMS).is_err());
    for bad in [0, 20, -1] {
        let bytes = table_of(Settings { level: bad, ..real }).to_bytes();
        assert!(Table::parse_for(&bytes, 4096, 4096, VERSION_WHOLE_STREAMS).is_err());
    }
}

/// The seed the `squashfs` fuzz target starts from for zstd streams is one: an initrd whose
/// zstd stream the reader finds behind its microcode cpio.
#[test]
fn the_fuzz_seed_of_zstd_streams_is_a_zstd_initrd() {
    let _one = serial();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/squashfs/initrd-zstd.img");
    let file = std::fs::read(seed).unwrap();
    let found = find_filesystems(&file);
    assert_eq!(found.len(), 1);
    assert!(matches!(found[0].codec, Codec::ZstdStream(_)));
    assert_eq!(census(&file, &found[0]).reproduced, 1);
}

/// `diff --apply-memory` below what a stream's encoder takes (the multi-threaded framing's job
/// buffers: about 100 MiB at level 9 over a long stream) leaves the stream compressed on both
/// sides, so that the patch applies within the cap; without the option the stream is expanded.
#[test]
fn issue21_apply_memory_leaves_a_stream_whose_encoder_passes_it_compressed() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a long stream: its encoder's job buffers fill
    let big = |extra| {
        let mut files = initrd_files(extra);
        let mut x = 0x853C_49E6_748F_EA9Bu64;
        let filler: Vec<u8> = (0..40 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8 & 0x3f
            })
            .collect();
        files.push(("usr/lib/firmware.bin".into(), filler));
        files
    };
    std::fs::write(d.join("old"), initrd(&big(0), Some(ZSTD_WAYS[0]))).unwrap();
    std::fs::write(d.join("new"), initrd(&big(100_000), Some(ZSTD_WAYS[0]))).unwrap();
    assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "full.spd"]));
    let text = String::from_utf8_lossy(&spindiff(d, &["inspect", "full.spd"]).stdout).to_string();
    assert!(text.contains("1 recompressed"), "{text}");
    let capped = [
        "diff",
        "old",
        "new",
        "-o",
        "capped.spd",
        "--apply-memory",
        "48M",
    ];
    assert_ok(&spindiff(d, &capped));
    let text = String::from_utf8_lossy(&spindiff(d, &["inspect", "capped.spd"]).stdout).to_string();
    assert!(!text.contains("zstd stream"), "{text}");
    let apply = ["apply", "old", "capped.spd", "-o", "out", "--memory", "48M"];
    assert_ok(&spindiff(d, &apply));
    assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new")).unwrap());
    // the full patch does not fit that cap, and says so before writing anything
    let refused = spindiff(
        d,
        &["apply", "old", "full.spd", "-o", "out2", "--memory", "48M"],
    );
    assert!(!refused.status.success());
    assert!(!d.join("out2").exists());
}
