//! Whole gzip streams (issue 21, part 3): an initrd whose cpio is one gzip member (dracut's
//! `gzip -n -9` or `pigz -9 -n -T -R`, initramfs-tools' `gzip -n`, a file gzipped with its
//! name), behind an uncompressed microcode cpio, is found and rebuilt bit for bit from its plain
//! bytes and the recipe NEW's table carries (preflate-rs's corrections); a pair of such initrds
//! diffs to about what the uncompressed pair does, applies with one or two threads and resumes
//! from inside the stream. The streams are made by the gzip command (part of every Debian
//! system) and pigz (scripts/test.sh installs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::cli::{assert_ok, spindiff};
use common::images::initrd_files;
use spindiff::internals::transform::codec::{BlockKind, Codec};
use spindiff::internals::transform::expand::{FsCodec, Piece, Rebuild};
use spindiff::internals::transform::gzipstream::{Chunk, Recipe, recipe_of};
use spindiff::internals::transform::squashfs::Layout;
use spindiff::internals::transform::table::Table;
use spindiff::internals::transform::{census, find_filesystems};

/// The gzip stream `layout` of `file` with the recipe NEW's expansion makes for it (parsing
/// describes a stream by its header alone).
fn with_recipe(file: &[u8], layout: &Layout) -> Layout {
    let stream = &file[layout.start as usize..layout.end as usize];
    let recipe = recipe_of(stream).expect("a stream the predictor describes");
    Layout {
        codec: Codec::GzipStream(Arc::new(recipe)),
        ..layout.clone()
    }
}

/// `plain` through `command` (`gzip` or `pigz`, then its options), from a pipe, or with `name`
/// from a file of that name (its name and time then in the header).
fn gzip(plain: &[u8], command: &[&str], name: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name.unwrap_or("in"));
    std::fs::write(&input, plain).unwrap();
    let mut cmd = Command::new(command[0]);
    cmd.args(&command[1..]).arg("-c");
    match name {
        Some(_) => cmd.arg(&input),
        None => cmd.stdin(std::fs::File::open(&input).unwrap()),
    };
    let out = cmd
        .output()
        .expect("gzip, or pigz (scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// An initrd with `extra` bytes of a new file (see `common::images::initrd_files`) whose cpio
/// is gzipped with `options` (uncompressed when `None`).
fn initrd(extra: usize, options: Option<(&[&str], Option<&str>)>) -> Vec<u8> {
    let files = initrd_files(extra);
    match options {
        Some((command, name)) => {
            common::images::initrd(&files, Some(&|main: &[u8]| gzip(main, command, name)))
        }
        None => common::images::initrd(&files, None),
    }
}

/// Ways an initrd is gzipped: dracut's (`gzip -n -9`, or `pigz -9 -n -T -R` when pigz is
/// installed: zlib's deflate, in blocks flushed for rsync), initramfs-tools' (`gzip -n`, level
/// 6), the fastest level, and a file gzipped by name (a header with its name and time).
const GZIP_WAYS: [(&[&str], Option<&str>); 5] = [
    (&["gzip", "-n", "-9"], None),
    (&["gzip", "-n"], None),
    (&["gzip", "-1"], None),
    (&["gzip", "-9"], Some("initrd.cpio")),
    (&["pigz", "-9", "-n", "-T", "-R"], None),
];

#[test]
fn issue21_a_gzip_initrd_recompresses_whole_whichever_way_gzip_made_it() {
    for way in GZIP_WAYS {
        let file = initrd(0, Some(way));
        let found = find_filesystems(&file);
        assert_eq!(found.len(), 1, "{way:?}");
        let layout = &with_recipe(&file, &found[0]);
        let Codec::GzipStream(recipe) = &layout.codec else {
            panic!("{way:?}: {:?}", layout.codec.kind_name());
        };
        assert!(layout.start > 100_000, "{way:?}: behind the microcode");
        assert_eq!(layout.end, file.len() as u64, "{way:?}");
        assert_eq!(layout.regions.len(), 1, "{way:?}: one stream");
        let c = census(&file, layout);
        assert_eq!((c.blocks, c.reproduced), (1, 1), "{way:?}: {c:?}");
        assert_eq!(recipe.plain_len(), c.plain_bytes, "{way:?}");
        // the corrections are a small part of the stream (a few percent here, where a
        // squashfs image makes most of the cpio: 0.006-0.3% on a real initrd)
        let held = recipe.held_bytes();
        assert!(
            held * 20 < c.stored_bytes,
            "{way:?}: {held} bytes of recipe, {c:?}"
        );
    }
}

/// Issue 21's target for an initrd, with gzip: the stream is expanded and the patch costs what
/// the uncompressed initrds' patch does plus NEW's recipe (which the patch must carry: a few
/// percent of the stream here, 0.006-0.3% on a real initrd); opaque, the shifted stream costs
/// nearly its whole self.
#[test]
fn issue21_a_gzip_initrd_diffs_as_if_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, way) in [("", Some(GZIP_WAYS[0])), ("plain-", None)] {
        std::fs::write(d.join(format!("{name}old")), initrd(0, way)).unwrap();
        std::fs::write(d.join(format!("{name}new")), initrd(400_000, way)).unwrap();
    }
    let cuts = |n: usize| vec![n / 4, n * 3 / 4, n - 1];
    let patched = common::cli::checked_patch_size(d, ("old", "new"), &[], cuts);
    let out = spindiff(d, &["inspect", "new.spd"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("format version  10"), "{text}");
    assert!(text.contains("gzip stream"), "{text}");
    assert!(text.contains("1 recompressed"), "{text}");
    let plain = common::cli::checked_patch_size(d, ("plain-old", "plain-new"), &[], |_| vec![]);
    let opaque =
        common::cli::checked_patch_size(d, ("old", "new"), &["--no-transform"], |_| vec![]);
    let new = std::fs::read(d.join("new")).unwrap();
    let recipe = match &with_recipe(&new, &find_filesystems(&new)[0]).codec {
        Codec::GzipStream(r) => r.held_bytes(),
        other => panic!("{}", other.kind_name()),
    };
    assert!(
        patched <= plain + plain / 50 + recipe,
        "{patched} bytes against {plain} uncompressed and a recipe of {recipe}"
    );
    assert!(
        patched * 5 < opaque * 4,
        "{patched} against {opaque} opaque"
    );
}

/// A gzip stream whose bytes are damaged, or cut, is never a panic (neither in the reader nor
/// in the predictor, which is not written for hostile input): it is opaque, or it still reads
/// and NEW made of it is only rebuilt where the recipe gives it back.
#[test]
fn a_damaged_or_cut_gzip_stream_is_opaque_or_tiles_and_never_a_panic() {
    let file = initrd(0, Some(GZIP_WAYS[1]));
    let start = find_filesystems(&file)[0].start as usize;
    for cut in (start..file.len()).step_by(400_009).chain([file.len() - 1]) {
        // the stream is not found (gzip members inside it may be: stored deflate blocks of
        // gzipped files hold them as they are)
        let found = find_filesystems(&file[..cut]);
        assert!(
            found.iter().all(|l| l.start != start as u64),
            "cut at {cut}"
        );
    }
    let positions = (start..start + 24).chain((start..file.len()).step_by(499_979));
    for at in positions {
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        common::fuzzing::squashfs(&bad);
    }
}

type Parameters = preflate_rs::TokenPredictorParameters;

/// What preflate-rs writes at the head of a stream's first chunk (its `ReconstructionData`).
#[derive(bitcode::Encode, bitcode::Decode)]
struct Reconstruction {
    parameters: Parameters,
    corrections: Vec<u8>,
}

/// The recipe of a real stream, for the table tests.
fn real_recipe() -> Arc<Recipe> {
    let file = initrd(0, Some(GZIP_WAYS[0]));
    match &with_recipe(&file, &find_filesystems(&file)[0]).codec {
        Codec::GzipStream(r) => r.clone(),
        _ => unreachable!(),
    }
}

fn table_of(recipe: Arc<Recipe>, plain_len: u32) -> Table {
    Table {
        codecs: vec![FsCodec {
            codec: Codec::GzipStream(recipe),
            block_size: 4096,
        }],
        pieces: vec![Piece {
            offset: 0,
            len: 4096,
            rebuild: Rebuild::Recompress {
                variant: 0,
                plain_len,
            },
            block: Some((0, BlockKind::Exact(plain_len))),
        }],
    }
}

/// A table naming a gzip stream reads back only in a patch of format version 7 or later, with
/// a recipe a diff could have written: a real header of its own length, chunks within bounds,
/// predictor parameters of a real deflate encoder, and plain bytes covering the stream exactly.
/// OLD's table holds the header alone, which NEW's may not.
#[test]
fn gzip_stream_recipes_need_format_version_7_and_are_checked() {
    use spindiff::format::{VERSION_GZIP_STREAMS, VERSION_WHOLE_STREAMS};
    let recipe = real_recipe();
    let plain = recipe.plain_len() as u32;
    let table = table_of(recipe.clone(), plain);
    assert_eq!(table.format_version(), VERSION_GZIP_STREAMS);
    let bytes = table.to_bytes();
    let read = Table::parse_for(&bytes, 4096, 4096, VERSION_GZIP_STREAMS).unwrap();
    assert_eq!(read, table);
    assert!(!read.unrebuildable());
    assert!(Table::parse_for(&bytes, 4096, 4096, VERSION_WHOLE_STREAMS).is_err());
    // OLD's: the header alone reads, and is nothing to rebuild from
    let old = table_of(Arc::new(recipe.for_decoding()), plain);
    let old = Table::parse_for(&old.to_bytes(), 4096, 4096, VERSION_GZIP_STREAMS).unwrap();
    assert!(old.unrebuildable());
    // plain bytes that do not cover the stream
    let short = table_of(recipe.clone(), plain - 1).to_bytes();
    assert!(Table::parse_for(&short, 4096, 4096, VERSION_GZIP_STREAMS).is_err());
    let broken = |change: &dyn Fn(&mut Recipe)| {
        let mut r = (*recipe).clone();
        change(&mut r);
        let plain = r.plain_len() as u32;
        let bytes = table_of(Arc::new(r), plain).to_bytes();
        Table::parse_for(&bytes, 4096, 4096, VERSION_GZIP_STREAMS).is_err()
    };
    assert!(broken(&|r| r.header[0] = 0));
    assert!(broken(&|r| r.header.push(0)));
    assert!(broken(&|r| r.chunks[0].corrections.truncate(3)));
    // predictor parameters no deflate encoder has: chains past zlib's longest, a window past
    // 32 KiB
    let parameters = |change: fn(&mut Parameters)| {
        move |r: &mut Recipe| {
            let mut first: Reconstruction = bitcode::decode(&r.chunks[0].corrections).unwrap();
            change(&mut first.parameters);
            r.chunks[0].corrections = bitcode::encode(&first);
        }
    };
    assert!(
        !broken(&parameters(|_| {})),
        "the same parameters, encoded again"
    );
    assert!(broken(&parameters(|p| p.max_chain = 1 << 20)));
    assert!(broken(&parameters(|p| p.window_bits = 31)));
    assert!(broken(&parameters(|p| p.nice_length = 1 << 16)));
    assert!(broken(&|r| r.chunks.push(Chunk {
        plain_len: 64 << 20,
        corrections: vec![0; 8],
    })));
    assert!(broken(&|r| r.chunks[0]
        .corrections
        .extend(vec![7; 3 << 20])));
}

/// The seed the `squashfs` fuzz target starts from for gzip streams is one: an initrd whose
/// gzip stream the reader finds behind its microcode cpio and rebuilds.
#[test]
fn the_fuzz_seed_of_gzip_streams_is_a_gzip_initrd() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/squashfs/initrd-gzip.img");
    let file = std::fs::read(seed).unwrap();
    let found = find_filesystems(&file);
    assert_eq!(found.len(), 1);
    assert!(matches!(found[0].codec, Codec::GzipStream(_)));
    assert_eq!(census(&file, &with_recipe(&file, &found[0])).reproduced, 1);
}

/// A patch whose NEW table names a gzip stream to rebuild without its recipe is refused before
/// anything is written, with a one-line error naming the patch.
#[test]
fn a_patch_with_a_gzip_stream_and_no_recipe_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("old"), initrd(0, Some(GZIP_WAYS[0]))).unwrap();
    std::fs::write(d.join("new"), initrd(1000, Some(GZIP_WAYS[0]))).unwrap();
    assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "p.spd"]));
    std::fs::copy(d.join("p.spd"), d.join("bad.spd")).unwrap();
    common::cli::forge_new_table(&d.join("bad.spd"), |t| {
        for fs in &mut t.codecs {
            fs.codec = fs.codec.for_decoding();
        }
    });
    let out = spindiff(d, &["apply", "old", "bad.spd", "-o", "out"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.spd") && err.contains("recipe"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!d.join("out").exists());
}

/// `diff --apply-memory` below what rebuilding a gzip stream may take leaves it compressed on
/// both sides, never on one only (OLD's layout has no recipe to measure, so both count the most
/// any recipe takes): the patch is then about what `--no-transform` makes, not NEW's whole
/// stream against OLD's plain bytes, and it applies under the cap.
#[test]
fn issue21_apply_memory_leaves_a_gzip_stream_compressed_on_both_sides_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("old"), initrd(0, Some(GZIP_WAYS[0]))).unwrap();
    std::fs::write(d.join("new"), initrd(400_000, Some(GZIP_WAYS[0]))).unwrap();
    let opaque =
        common::cli::checked_patch_size(d, ("old", "new"), &["--no-transform"], |_| vec![]);
    for (cap, expanded) in [("32M", false), ("48M", false), ("64M", true)] {
        let patch = format!("{cap}.spd");
        let diff = ["diff", "old", "new", "-o", &patch, "--apply-memory", cap];
        assert_ok(&spindiff(d, &diff));
        let text = String::from_utf8_lossy(&spindiff(d, &["inspect", &patch]).stdout).to_string();
        assert_eq!(text.contains("gzip stream"), expanded, "{cap}: {text}");
        let size = std::fs::metadata(d.join(&patch)).unwrap().len();
        if !expanded {
            assert!(
                size * 100 <= opaque * 101,
                "{cap}: {size} against {opaque} opaque"
            );
        }
        let apply = ["apply", "old", &patch, "-o", "out", "--memory", cap];
        assert_ok(&spindiff(d, &apply));
        assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new")).unwrap());
    }
}
