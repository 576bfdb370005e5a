//! Gzip members inside other data (issue 22, item 4: an update of a root file system): a
//! tarball or an uncompressed squashfs holds the man pages and changelogs of its packages gzipped
//! file by file, and a package update changes a version string near the top of each, so their
//! deflate bytes differ from there on while their plain bytes differ by a few. The members are
//! found by a scan, expanded on both sides, and rebuilt on apply from NEW's plain bytes and a
//! recipe, which NEW's table carries only for the members OLD does not hold.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{assert_ok, spindiff};
use spindiff::internals::transform::codec::Codec;
use spindiff::internals::transform::find_filesystems;
use spindiff::internals::transform::gzipstream::{MAX_EMBEDDED_STORED, embedded_members};

/// A man page of about `len` bytes: the header names `version`, the body is words drawn from a
/// small vocabulary by `seed` (text that deflates as roff does, about 3:1).
fn man_page(name: &str, version: &str, len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "the",
        "file",
        "option",
        "is",
        "read",
        "from",
        "a",
        "directory",
        "when",
        "given",
        "apt",
        "package",
        "source",
        "list",
        "sets",
        "and",
        "each",
        "entry",
        "of",
        "configuration",
        "with",
        "value",
        "default",
        "see",
    ];
    let mut out = format!(".TH \"{name}\" \"8\" \"April 2019\" \"APT {version}\" \"APT\"\n");
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let word = WORDS[(x >> 33) as usize % WORDS.len()];
        out.push_str(word);
        out.push(if (x >> 20).is_multiple_of(11) {
            '\n'
        } else {
            ' '
        });
    }
    out.into_bytes()
}

/// `plain` through `gzip -n -9`, as Debian's packaging gzips man pages and changelogs.
fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-n", "-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let plain = plain.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &plain));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A tarball of `pages` man pages (gzipped, each with `version` unless it is one of `old`) and
/// a binary file between them, as `tar` writes it reproducibly.
fn tarball(dir: &Path, name: &str, pages: &[(usize, &str)]) {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(&root).unwrap();
    for &(i, version) in pages {
        let page = man_page(
            &format!("page{i}"),
            version,
            4_000 + 900 * (i % 17),
            i as u64,
        );
        std::fs::write(root.join(format!("page{i:03}.8.gz")), gzip(&page)).unwrap();
    }
    std::fs::write(root.join("lib.so"), common::binary_like(300_000, 7)).unwrap();
    let out = Command::new("tar")
        .args([
            "cf",
            &format!("{name}.tar"),
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
        ])
        .args(["--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg(".")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Issue 22's update pair in small: 60 man pages, 11 of them with a new version string, one
/// new, one gone. Each member is found, the patch costs a small part of the opaque one, names
/// the recipes of the changed and new members only, is the same whatever the thread count, and
/// applies exactly (by index, on two threads, resumed).
#[test]
fn issue22_gzip_members_of_a_tarball_diff_as_their_plain_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old: Vec<(usize, &str)> = (0..60).map(|i| (i, "2.6.1")).collect();
    let version = |i: usize| {
        if i.is_multiple_of(5) {
            "2.6.2"
        } else {
            "2.6.1"
        }
    };
    let new: Vec<(usize, &str)> = (1..61).map(|i| (i, version(i))).collect();
    tarball(d, "old", &old);
    tarball(d, "new", &new);
    let found = find_filesystems(&std::fs::read(d.join("new.tar")).unwrap());
    assert_eq!(found.len(), 60, "every member of NEW");
    assert!(
        found
            .iter()
            .all(|l| matches!(l.codec, Codec::GzipStream(_)))
    );
    let cuts = |n: usize| vec![n / 3, n - 1];
    let patched = common::cli::checked_patch_size(d, ("old.tar", "new.tar"), &[], cuts);
    let opaque =
        common::cli::checked_patch_size(d, ("old.tar", "new.tar"), &["--no-transform"], |_| vec![]);
    assert!(
        patched * 3 < opaque,
        "{patched} bytes against {opaque} with the members left as they are"
    );
    // the 12 members OLD does not hold (11 changed, the new one, which has the new version
    // too) are recompressed, the other 48 copied
    assert_ok(&spindiff(d, &["diff", "old.tar", "new.tar", "-o", "p.spd"]));
    let out = spindiff(d, &["inspect", "p.spd", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &report["transform"];
    let counts = (&t["blocks_recompressed"], &t["blocks_copied_from_old"]);
    assert_eq!(counts, (&12.into(), &48.into()));
    // NEW's table carries a recipe for those 12 alone: a copied member needs its header only
    let with_recipe = std::cell::Cell::new(0);
    common::cli::forge_new_table(&d.join("p.spd"), |table| {
        let recipes = table.codecs.iter().filter(|c| match &c.codec {
            Codec::GzipStream(r) => !r.chunks.is_empty(),
            _ => false,
        });
        with_recipe.set(recipes.count());
    });
    assert_eq!(with_recipe.get(), 12);
    for threads in ["1", "3"] {
        let p = format!("p{threads}.spd");
        let args = ["diff", "old.tar", "new.tar", "-o", &p, "--threads", threads];
        assert_ok(&spindiff(d, &args));
        assert!(std::fs::read(d.join(&p)).unwrap() == std::fs::read(d.join("p.spd")).unwrap());
    }
}

/// What the scan finds in hostile bytes: headers everywhere, a member cut short, one whose
/// trailer is wrong, one too short to pay, a member across the scan's window: only the whole
/// members of at least the minimum length, each once, and never a panic.
#[test]
fn the_member_scan_finds_whole_members_only() {
    let page = man_page("x", "1", 20_000, 3);
    let member = gzip(&page);
    let mut file = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    file.extend(std::iter::repeat_n([0x1f, 0x8b, 8, 0], 5_000).flatten());
    let first = file.len();
    file.extend_from_slice(&member);
    file.extend_from_slice(&member[..member.len() - 20]); // cut
    let mut wrong = member.clone();
    let n = wrong.len();
    wrong[n - 6] ^= 1; // the CRC-32
    file.extend_from_slice(&wrong);
    file.extend_from_slice(&gzip(b"too short to pay"));
    // the second whole member straddles the scan's 16 MiB window
    file.resize((16 << 20) - 100, 0x1f);
    let second = file.len();
    file.extend_from_slice(&member);
    file.extend_from_slice(&[0x1f, 0x8b]);
    let found: Vec<_> = embedded_members(&file, &|_, _| {})
        .iter()
        .map(|l| (l.start, l.end))
        .collect();
    let want = |at: usize| (at as u64, (at + member.len()) as u64);
    assert_eq!(found, vec![want(first), want(second)]);
    // a member longer than the scan takes is left as it is
    let big = gzip(&common::binary_like(4 * MAX_EMBEDDED_STORED, 1));
    assert!(big.len() > MAX_EMBEDDED_STORED);
    assert!(embedded_members(&big, &|_, _| {}).is_empty());
}

/// The seed the `squashfs` fuzz target starts from for members inside other data holds two,
/// behind a false header and among random bytes.
#[test]
fn the_fuzz_seed_of_embedded_members_holds_two() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/squashfs/embedded-gzip.bin");
    let file = std::fs::read(seed).unwrap();
    let found = find_filesystems(&file);
    assert_eq!(found.len(), 2);
    assert!(
        found
            .iter()
            .all(|l| matches!(l.codec, Codec::GzipStream(_)))
    );
}

/// Apply decodes each of OLD's members that NEW's chunks copy from into a temporary file of its
/// own; with hundreds of them it keeps a few open at a time (`OPEN_STREAMS`), where it used to
/// keep every one open and ran out of file descriptors ("Too many open files"). Run here under
/// a limit of 128 open files, with 300 members that all changed.
#[test]
fn issue22_apply_keeps_few_of_olds_decoded_members_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old: Vec<(usize, &str)> = (0..300).map(|i| (i, "2.6.1")).collect();
    let new: Vec<(usize, &str)> = (0..300).map(|i| (i, "2.6.2")).collect();
    tarball(d, "old", &old);
    tarball(d, "new", &new);
    assert_ok(&spindiff(d, &["diff", "old.tar", "new.tar", "-o", "p.spd"]));
    let apply = format!(
        "ulimit -n 128 && exec {} apply old.tar p.spd -o out.tar",
        *common::cli::BIN
    );
    let out = Command::new("sh")
        .args(["-c", &apply])
        .current_dir(d)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(std::fs::read(d.join("out.tar")).unwrap() == std::fs::read(d.join("new.tar")).unwrap());
}
