//! Issue 20: the transform under hostile images and patches. An image may claim anything (an
//! inode table that inflates to hundreds of MiB, blocks of zeros that expand a thousand times,
//! compressor options no mksquashfs writes) and a patch's transform tables likewise; none of it
//! may break a memory cap, fill the disk, or make an error name a placeholder instead of a file.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::cli::{BIN, assert_ok, named_cap, run_measured, spindiff};
use common::images::{hostile_squashfs, images, mksquashfs, tree};
use spindiff::internals::transform::{find_filesystems, squashfs};

const MIB: u64 = 1 << 20;

/// Whether the patch at `patch` has a transform section (its file systems were expanded).
fn transformed(patch: &Path) -> bool {
    spindiff::inspect(patch).unwrap().transform.is_some()
}

/// Diffs `old` and `new` in `d` into `p` under `--memory 256M` with two threads: the peak stays
/// under the cap and the patch has no transform section (the images were diffed as stored).
fn diffs_opaque_under_256m(d: &Path, old: &str, new: &str) {
    let args = [
        "diff",
        old,
        new,
        "-o",
        "p",
        "--memory",
        "256M",
        "--threads",
        "2",
    ];
    let (out, peak_kib) = run_measured(d, &args, None);
    assert_ok(&out);
    assert!(peak_kib * 1024 <= 256 * MIB, "peak {} MiB", peak_kib >> 10);
    assert!(!transformed(&d.join("p")));
}

/// Item 5: an image of 1 MB whose inode table inflates to 256 MiB listing 67 million sparse
/// blocks. The parse is bounded (and counted in the cap): the diff under `--memory 256M` peaks
/// under 256 MiB, and the file system, too large to parse within the budget, stays opaque.
#[test]
fn an_inode_table_that_inflates_past_the_parse_budget_stays_within_the_diff_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sparse = ((256 * MIB - 8192) / 4) as u32;
    let img = hostile_squashfs(0, sparse);
    assert!(img.len() < 2 * MIB as usize, "{} bytes", img.len());
    std::fs::write(d.join("old"), &img).unwrap();
    std::fs::write(d.join("new"), [&img[..], b"spin"].concat()).unwrap();
    diffs_opaque_under_256m(d, "old", "new");
    let (out, _) = run_measured(d, &["apply", "old", "p", "-o", "out"], None);
    assert_ok(&out);
    assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new")).unwrap());
}

/// Item 11 (and 5): an image whose 20,000 blocks of zeros (300 KB stored) would expand to 80
/// MiB of temporary space stays opaque: no file system expands past MAX_EXPANSION_RATIO times
/// its size, so a diff's temporary space is bounded by its inputs. The same image parses when
/// nothing bounds it (it is the bound that keeps it opaque, not a defect).
#[test]
fn a_file_system_that_would_expand_past_the_bound_stays_opaque() {
    let img = hostile_squashfs(20_000, 0);
    assert!(img.len() < 400_000, "{} bytes", img.len());
    assert!(squashfs::parse_within(&img, 0, u64::MAX).is_some());
    assert!(find_filesystems(&img).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("old"), &img).unwrap();
    std::fs::write(d.join("new"), [&img[..], b"spin"].concat()).unwrap();
    assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "p"]));
    assert!(!transformed(&d.join("p")));
}

/// Two xz squashfs images of the sample tree (`old.sq`) and of the tree with a new file
/// (`new.sq`), in `d`: NEW's new blocks are checked for recompression by a diff.
fn xz_pair(d: &Path) {
    let tree = tree(d);
    mksquashfs(&tree, &d.join("old.sq"), &["xz", "-Xbcj", "x86"]);
    let words = b"lorem ipsum dolor sit amet consectetur adipiscing ";
    let text: Vec<u8> = (0..600_000usize)
        .map(|i| words[(i * 7 + i / 11) % words.len()])
        .collect();
    std::fs::write(tree.join("new-file"), text).unwrap();
    mksquashfs(&tree, &d.join("new.sq"), &["xz", "-Xbcj", "x86"]);
}

/// Sets the xz dictionary an image's compressor options claim (the options block follows the
/// superblock: a 2-byte header, then the dictionary size and the filter flags).
fn claim_xz_dictionary(path: &Path, dict: u32) {
    let mut img = std::fs::read(path).unwrap();
    assert_eq!(&img[20..22], &4u16.to_le_bytes(), "an xz image");
    assert_eq!(img[24] & 0x04, 0, "no uncompressed-inodes flag");
    assert_ne!(
        u16::from_le_bytes([img[24], img[25]]) & 0x0400,
        0,
        "compressor options"
    );
    img[98..102].copy_from_slice(&dict.to_le_bytes());
    std::fs::write(path, img).unwrap();
}

/// Item 6: compressor options that lie (a 1 GiB xz dictionary for 128 KiB blocks) make the file
/// system opaque: no encoder is set up from them, and the diff under `--memory 256M` with two
/// threads stays under 256 MiB.
#[test]
fn compressor_options_no_mksquashfs_writes_make_the_file_system_opaque() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    xz_pair(d);
    for name in ["old.sq", "new.sq"] {
        claim_xz_dictionary(&d.join(name), 1 << 30);
        let img = std::fs::read(d.join(name)).unwrap();
        assert!(find_filesystems(&img).is_empty(), "{name}");
    }
    diffs_opaque_under_256m(d, "old.sq", "new.sq");
}

/// Replaces the xz dictionary of every file system of NEW's table in `patch` by `dict`, keeping
/// the rest.
fn forge_new_table_dictionary(patch: &Path, dict: u32) {
    use spindiff::internals::transform::codec::Codec;
    common::cli::forge_new_table(patch, |table| {
        for fs in &mut table.codecs {
            match &mut fs.codec {
                Codec::Xz { dict_size, .. } => *dict_size = dict,
                other => panic!("not an xz table: {other:?}"),
            }
        }
    });
}

/// Item 7: a patch whose transform table names a 1 GiB xz dictionary is refused as corrupt
/// before any encoder is set up: `apply --memory 100M` fails in one line, under 100 MiB.
#[test]
fn a_transform_table_naming_a_dictionary_no_image_holds_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    xz_pair(d);
    assert_ok(&spindiff(d, &["diff", "old.sq", "new.sq", "-o", "p"]));
    assert!(transformed(&d.join("p")));
    forge_new_table_dictionary(&d.join("p"), 1 << 30);
    let args = ["apply", "old.sq", "p", "-o", "out", "--memory", "100M"];
    let (out, peak_kib) = run_measured(d, &args, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PATCH 'p'") && stderr.contains("xz dictionary"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(peak_kib * 1024 <= 100 * MIB, "peak {} MiB", peak_kib >> 10);
    assert!(!d.join("out").exists());
}

/// Item 8: the smallest `apply --memory` an error names is accepted, for a transformed patch
/// (whose transform takes memory of its own) streamed and read by its index, and the apply then
/// stays within it.
#[test]
fn the_smallest_apply_memory_an_error_names_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(images().join("base.squashfs"), d.join("old")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("new")).unwrap();
    assert_ok(&spindiff(d, &["diff", "old", "new", "-o", "p"]));
    assert!(transformed(&d.join("p")));
    for threads in ["1", "3"] {
        let mut cap = "20M".to_string();
        let (out, peak_kib) = loop {
            let args = [
                "apply",
                "old",
                "p",
                "-o",
                "out",
                "--threads",
                threads,
                "--memory",
                &cap,
            ];
            let (out, peak_kib) = run_measured(d, &args, None);
            if out.status.success() {
                break (out, peak_kib);
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(cap, "20M", "the cap named, {cap}, was refused: {stderr}");
            assert!(stderr.contains("applying it needs"), "{stderr}");
            cap = named_cap(&stderr);
        };
        assert_ok(&out);
        let cap_bytes = spindiff::size::parse_size(&cap).unwrap();
        assert!(
            peak_kib * 1024 <= cap_bytes,
            "{threads} threads: peak {peak_kib} KiB, cap {cap}"
        );
        assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(d.join("new")).unwrap());
    }
}

/// The cap a diff's refusal names: "at least N MiB".
fn named_diff_cap(stderr: &str) -> String {
    let at = stderr.find("at least ").expect("a cap named") + "at least ".len();
    let end = stderr[at..].find(' ').unwrap();
    format!("{}M", &stderr[at..at + end])
}

/// Item 8, on the diff side: for a pair that is expanded, the smallest `diff --memory` named up
/// front counts what the transform holds and OLD's expanded stream, so a cap of that much is
/// accepted (and the patch made under it applies).
#[test]
fn the_smallest_diff_memory_named_for_an_expanded_pair_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(images().join("base.squashfs"), d.join("old")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("new")).unwrap();
    let out = spindiff(d, &["diff", "old", "new", "-o", "p", "--memory", "20M"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let cap = named_diff_cap(&String::from_utf8_lossy(&out.stderr));
    let args = [
        "diff",
        "old",
        "new",
        "-o",
        "p",
        "--memory",
        &cap,
        "--threads",
        "2",
    ];
    let (out, peak_kib) = run_measured(d, &args, None);
    assert_ok(&out);
    let cap_bytes = spindiff::size::parse_size(&cap).unwrap();
    assert!(
        peak_kib * 1024 <= cap_bytes,
        "peak {peak_kib} KiB under {cap}"
    );
    assert!(transformed(&d.join("p")));
    assert_ok(&spindiff(d, &["verify", "old", "p", "new"]));
}

/// Runs `args` in `d` with writes limited to `kib` KiB, as a full disk stops them.
fn with_file_size_limit(d: &Path, kib: u64, args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(&*BIN)
        .args(args)
        .current_dir(d)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Item 9: a full disk while the expanded streams are written names the directory they go to
/// as such (not as NEW), and which input's stream it was; nothing is left.
#[test]
fn a_full_disk_during_expansion_names_the_temporary_directory_and_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(images().join("base.squashfs"), d.join("old")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("new")).unwrap();
    std::fs::create_dir(d.join("out")).unwrap();
    let out = with_file_size_limit(d, 256, &["diff", "old", "new", "-o", "out/p"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "spindiff: error: temporary directory 'out': cannot write OLD's expanded stream"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read_dir(d.join("out")).unwrap().count(), 0);
}
