//! Patches that point at packages (issue 23): `diff --ref-dir` reads the payloads of the
//! packages a spin adds beside OLD, the patch names those it reads (name, size, SHA-256), and
//! `apply --ref-dir` finds them by SHA-256, checks them all before writing anything and rebuilds
//! NEW exactly. Real packages: Debian packages dpkg-deb builds with each payload compression (xz,
//! zstd, gzip) and an RPM (the fuzz corpus's, an xz payload).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::Rng;
use common::cli::{assert_fails, assert_ok, out_of_stderr, resume_counts, spindiff};

/// A package tree with `seed`'s files: a library (incompressible, as compressed data and code
/// mostly are) and a text file.
fn package_tree(dir: &Path, name: &str, seed: u64) {
    fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    fs::write(
        dir.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.{seed}\nArchitecture: all\n\
             Maintainer: spindiff <spindiff@example.org>\nDescription: test package {seed}\n"
        ),
    )
    .unwrap();
    fs::create_dir_all(dir.join("usr/lib")).unwrap();
    fs::write(
        dir.join(format!("usr/lib/lib{name}.so")),
        Rng(seed).bytes(150_000),
    )
    .unwrap();
    let text: String = (0..3000).map(|i| format!("{name} line {i}\n")).collect();
    fs::write(dir.join(format!("usr/lib/{name}.txt")), text).unwrap();
}

/// Builds `name`'s package with payload compression `z` into `out`.
fn build_deb(work: &Path, name: &str, seed: u64, z: &str, out: &Path) {
    let tree = work.join(format!("tree-{name}-{seed}"));
    package_tree(&tree, name, seed);
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", &format!("-Z{z}"), "--build"])
        .arg(&tree)
        .arg(out)
        .output()
        .expect("dpkg-deb (dpkg, on every Debian system)");
    assert!(status.status.success(), "{status:?}");
}

/// An RPM as Fedora packs it, with a zstd payload: the corpus RPM's lead and headers, then a
/// cpio archive of `seed`'s library, zstd-compressed; and that library.
fn zstd_rpm(seed: u64) -> (Vec<u8>, Vec<u8>) {
    let (xz_rpm, _) = rpm();
    let p = spindiff::internals::files::package::locate(&xz_rpm).unwrap();
    let library = Rng(seed).bytes(120_000);
    let cpio = common::images::cpio(&[("./usr/lib64/libhello.so.1", &library)]);
    let mut rpm = xz_rpm[..p.offset as usize].to_vec();
    rpm.extend_from_slice(&zstd::bulk::compress(&cpio, 19).unwrap());
    (rpm, library)
}

/// The RPM of the fuzz corpus (hello, xz payload) and its payload, expanded.
fn rpm() -> (Vec<u8>, Vec<u8>) {
    let rpm = fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/packages/hello-xz.rpm"
    ))
    .unwrap();
    let mut payload = Vec::new();
    spindiff::internals::files::package::expand(&rpm, &mut payload, 1 << 30).unwrap();
    (rpm, payload)
}

/// In `d`: `old` (a base), `refs/` (three .deb files, xz, zstd and gzip payloads, two RPMs, xz
/// and zstd payloads, and an unrelated file none of NEW's bytes come from) and `new` and `new2`: OLD with the packages'
/// files added (as an image holds them: the files' bytes, not the archives'), two spins sharing
/// some of them.
fn pair(d: &Path) {
    fs::create_dir_all(d.join("refs")).unwrap();
    let old = common::binary_like(1 << 20, 5);
    fs::write(d.join("old"), &old).unwrap();
    let mut files = Vec::new();
    for (i, z) in ["xz", "zstd", "gzip"].iter().enumerate() {
        let name = format!("pkg{i}");
        build_deb(
            d,
            &name,
            i as u64 + 1,
            z,
            &d.join(format!("refs/{name}_1.0_all.deb")),
        );
        let tree = d.join(format!("tree-{name}-{}", i + 1));
        files.push(fs::read(tree.join(format!("usr/lib/lib{name}.so"))).unwrap());
        files.push(fs::read(tree.join(format!("usr/lib/{name}.txt"))).unwrap());
    }
    let (rpm, payload) = rpm();
    fs::write(d.join("refs/hello-2.12-1.x86_64.rpm"), rpm).unwrap();
    files.push(payload[payload.len() / 4..].to_vec());
    let (rpm, library) = zstd_rpm(11);
    fs::write(d.join("refs/libhello-1.0-1.fc42.x86_64.rpm"), rpm).unwrap();
    files.push(library);
    fs::write(d.join("refs/unrelated.bin"), Rng(99).bytes(100_000)).unwrap();
    let spin = |take: &[usize]| {
        let mut new = old.clone();
        for (k, &i) in take.iter().enumerate() {
            let at = (k + 1) * old.len() / (take.len() + 1);
            new.splice(at..at, files[i].iter().copied());
        }
        new
    };
    fs::write(d.join("new"), spin(&[0, 1, 2, 3, 4, 5, 6, 7])).unwrap();
    fs::write(d.join("new2"), spin(&[2, 3, 6])).unwrap();
}

fn diff(d: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["diff", "old", "new", "-o", "p", "--chunk-size", "256K"];
    args.extend_from_slice(extra);
    assert_ok(&spindiff(d, &args));
    fs::read(d.join("p")).unwrap()
}

/// Applies `patch` to `old` in `d` into `out` with the references in `refs` and `extra`
/// options, and checks that it succeeds and gives the file `new`; returns what it printed.
fn applies(d: &Path, (patch, out, new): (&str, &str, &str), extra: &[&str]) -> Output {
    let args = ["apply", "old", patch, "-o", out, "--ref-dir", "refs"];
    let done = spindiff(d, &[&args[..], extra].concat());
    assert_ok(&done);
    assert!(
        fs::read(d.join(out)).unwrap() == fs::read(d.join(new)).unwrap(),
        "{patch} did not give {new}"
    );
    done
}

/// The references `inspect --json` lists: (name, size, sha256).
fn listed(d: &Path, patch: &str) -> Vec<(String, u64, String)> {
    let out = spindiff(d, &["inspect", patch, "--json"]);
    assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = doc["references"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    files
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The patch with the packages as references is a fraction of the one without, names exactly
/// the packages NEW's bytes come from (the unrelated file is left out) as sha256sum names them,
/// is the same whatever the thread count, and applies to NEW exactly, by index and streamed.
#[test]
fn issue23_packages_as_references_shrink_the_patch_and_apply_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pair(d);
    let without = diff(d, &[]);
    let with = diff(d, &["--ref-dir", "refs", "--threads", "1"]);
    eprintln!(
        "patch: {} bytes with references, {} without",
        with.len(),
        without.len()
    );
    assert!(
        with.len() * 5 < without.len(),
        "{} bytes with references, {} without",
        with.len(),
        without.len()
    );
    assert!(diff(d, &["--ref-dir", "refs", "--threads", "3"]) == with);
    let names: Vec<String> = listed(d, "p").into_iter().map(|(n, ..)| n).collect();
    assert_eq!(
        names,
        [
            "hello-2.12-1.x86_64.rpm",
            "libhello-1.0-1.fc42.x86_64.rpm",
            "pkg0_1.0_all.deb",
            "pkg1_1.0_all.deb",
            "pkg2_1.0_all.deb"
        ]
    );
    for (name, size, sha) in listed(d, "p") {
        let path = d.join("refs").join(&name);
        assert_eq!(fs::metadata(&path).unwrap().len(), size);
        let sum = Command::new("sha256sum")
            .arg(&path)
            .output()
            .unwrap()
            .stdout;
        assert!(sum.starts_with(sha.as_bytes()), "{name}");
    }
    let new = fs::read(d.join("new")).unwrap();
    for threads in ["1", "3"] {
        let out = applies(d, ("p", "out", "new"), &["--threads", threads, "-v"]);
        assert!(out_of_stderr(&out).contains("references: 5 found by SHA-256"));
        fs::remove_file(d.join("out")).unwrap();
    }
    // streamed from a pipe, the references in a directory of other names and subdirectories
    fs::create_dir_all(d.join("cache/sub")).unwrap();
    for (i, (name, ..)) in listed(d, "p").into_iter().enumerate() {
        fs::copy(
            d.join("refs").join(name),
            d.join(format!("cache/sub/{i}.bin")),
        )
        .unwrap();
    }
    let out = Command::new(&*common::cli::BIN)
        .args(["apply", "old", "-", "-o", "out", "--ref-dir", "cache"])
        .current_dir(d)
        .stdin(fs::File::open(d.join("p")).unwrap())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(fs::read(d.join("out")).unwrap() == new);
    // verify lists what it read
    let out = spindiff(d, &["verify", "old", "p", "new", "--ref-dir", "refs"]);
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("reading 5 references") && said.contains("pkg1_1.0_all.deb"),
        "{said}"
    );
}

/// No reference directory, one package missing, one there under its name with other contents
/// (another version; a truncated download): each refused before anything is written, every
/// missing package named with its size and SHA-256, OLD untouched, no output, exit status 1.
#[test]
fn issue23_a_missing_or_wrong_reference_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pair(d);
    diff(d, &["--ref-dir", "refs"]);
    let refs = listed(d, "p");
    let old = fs::read(d.join("old")).unwrap();
    let clean = |out: &std::process::Output| {
        assert!(fs::read(d.join("old")).unwrap() == old, "OLD was modified");
        assert!(!d.join("out").exists(), "an output was left behind");
        assert!(!d.join(".out.spindiff-partial").exists());
        assert_eq!(
            out_of_stderr(out).lines().count(),
            1,
            "{}",
            out_of_stderr(out)
        );
    };
    let out = spindiff(d, &["apply", "old", "p", "-o", "out"]);
    assert_fails(&out, 1, "needs 5 of its 5 references");
    for (name, size, sha) in &refs {
        let e = out_of_stderr(&out);
        assert!(
            e.contains(&format!("{name} ({size} bytes, SHA-256 {sha})")),
            "{e}"
        );
    }
    clean(&out);
    // pkg1 missing, pkg2 rebuilt as another version, the RPM cut short
    fs::create_dir_all(d.join("partial")).unwrap();
    fs::copy(
        d.join("refs/pkg0_1.0_all.deb"),
        d.join("partial/pkg0_1.0_all.deb"),
    )
    .unwrap();
    build_deb(d, "pkg2", 7, "gzip", &d.join("partial/pkg2_1.0_all.deb"));
    let rpm = fs::read(d.join("refs/hello-2.12-1.x86_64.rpm")).unwrap();
    fs::write(
        d.join("partial/hello-2.12-1.x86_64.rpm"),
        &rpm[..rpm.len() / 2],
    )
    .unwrap();
    let out = spindiff(
        d,
        &["apply", "old", "p", "-o", "out", "--ref-dir", "partial"],
    );
    assert_fails(&out, 1, "needs 4 of its 5 references");
    let e = out_of_stderr(&out);
    assert!(
        e.contains("pkg1_1.0_all.deb (") && !e.contains("pkg0"),
        "{e}"
    );
    assert!(
        e.contains("pkg2_1.0_all.deb (") && e.contains("with other contents"),
        "{e}"
    );
    clean(&out);
    // JSON: the kind a script tells apart
    let out = spindiff(d, &["verify", "old", "p", "--ref-dir", "partial", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "missing_references");
}

/// A reference whose SHA-256 matches is the file the patch was made with, but a patch whose
/// references section is forged (a payload moved past where the copies read it) fails cleanly:
/// a read between the payloads it names, or a chunk that does not verify; nothing written.
#[test]
fn issue23_a_forged_references_section_fails_cleanly() {
    use spindiff::format::{HEADER_LEN, ReferencesSection};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pair(d);
    let patch = diff(d, &["--ref-dir", "refs"]);
    let at = HEADER_LEN as u64;
    let (mut section, len) =
        ReferencesSection::read(&mut &patch[HEADER_LEN..], Path::new("p"), at).unwrap();
    let last = section.entries.last_mut().unwrap();
    last.offset += 4096;
    let mut forged = patch.clone();
    forged[HEADER_LEN..HEADER_LEN + len as usize].copy_from_slice(&section.to_bytes());
    fs::write(d.join("forged"), &forged).unwrap();
    for threads in ["1", "3"] {
        let args = ["apply", "old", "forged", "-o", "out", "--ref-dir", "refs"];
        let out = spindiff(d, &[&args[..], &["--threads", threads]].concat());
        eprintln!("forged, {threads} thread(s): {}", out_of_stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{}", out_of_stderr(&out));
        assert!(out_of_stderr(&out).contains("PATCH 'forged'"));
        assert!(!d.join("out").exists());
    }
}

/// An apply with references that was interrupted resumes: the verified chunks its partial file
/// holds are kept, the rest written from OLD and the references, NEW exact.
#[test]
fn issue23_an_apply_with_references_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pair(d);
    diff(d, &["--ref-dir", "refs"]);
    let new = fs::read(d.join("new")).unwrap();
    fs::write(d.join(".out.spindiff-partial"), &new[..new.len() * 2 / 3]).unwrap();
    let out = applies(d, ("p", "out", "new"), &["--resume", "-v"]);
    let (kept, total) = resume_counts(&out_of_stderr(&out));
    assert!(kept > 0 && kept < total, "{kept} of {total} kept");
}

/// Many targets share the references: `--out-dir` and a batch manifest (with a job's own
/// `ref_dirs`) make each target's patch byte for byte the single diff's, each naming only what
/// it reads; a manifest whose output is one of the references is refused before anything runs.
#[test]
fn issue23_many_targets_and_batches_share_references() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pair(d);
    let single = |new: &str| {
        let args = ["diff", "old", new, "-o", "single", "--ref-dir", "refs"];
        assert_ok(&spindiff(d, &args));
        fs::read(d.join("single")).unwrap()
    };
    let (one, two) = (single("new"), single("new2"));
    let args = [
        "diff",
        "old",
        "new",
        "new2",
        "--out-dir",
        "out",
        "--ref-dir",
        "refs",
    ];
    assert_ok(&spindiff(d, &args));
    assert!(fs::read(d.join("out/new.spd")).unwrap() == one);
    assert!(fs::read(d.join("out/new2.spd")).unwrap() == two);
    let names: Vec<String> = listed(d, "out/new2.spd")
        .into_iter()
        .map(|(n, ..)| n)
        .collect();
    assert_eq!(names, ["hello-2.12-1.x86_64.rpm", "pkg1_1.0_all.deb"]);
    let manifest = serde_json::json!({ "jobs": [
        { "base": "old", "target": "new", "output": "b/new.spd", "ref_dirs": ["refs"] },
        { "base": "old", "target": "new2", "output": "b/new2.spd", "ref_dirs": ["refs"] },
    ]});
    fs::write(d.join("m.json"), manifest.to_string()).unwrap();
    assert_ok(&spindiff(d, &["batch", "m.json"]));
    assert!(fs::read(d.join("b/new.spd")).unwrap() == one);
    assert!(fs::read(d.join("b/new2.spd")).unwrap() == two);
    applies(d, ("b/new2.spd", "n2", "new2"), &[]);
    // an output that is a reference of a job: refused, the reference untouched
    let before = fs::read(d.join("refs/pkg1_1.0_all.deb")).unwrap();
    let manifest = serde_json::json!({ "jobs": [
        { "base": "old", "target": "new", "output": "refs/pkg1_1.0_all.deb", "ref_dirs": ["refs"] },
    ]});
    fs::write(d.join("m2.json"), manifest.to_string()).unwrap();
    let out = spindiff(d, &["batch", "m2.json"]);
    assert_fails(&out, 2, "REFERENCE");
    assert!(fs::read(d.join("refs/pkg1_1.0_all.deb")).unwrap() == before);
    // and a single diff's: refused too
    let args = [
        "diff",
        "old",
        "new",
        "-o",
        "refs/pkg1_1.0_all.deb",
        "--ref-dir",
        "refs",
    ];
    assert_fails(&spindiff(d, &args), 2, "REFERENCE");
    assert!(fs::read(d.join("refs/pkg1_1.0_all.deb")).unwrap() == before);
}

/// A package cache holds partial downloads, and a directory may hold a decompression bomb: a
/// package cut short and an xz file of 64 MiB of zeros (thousands of times its size) are
/// skipped with a warning naming each, and the diff goes on with the others.
#[test]
fn issue23_damaged_packages_and_bombs_in_a_reference_directory_are_skipped_with_a_warning() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pair(d);
    let deb = fs::read(d.join("refs/pkg1_1.0_all.deb")).unwrap();
    fs::create_dir(d.join("refs/partial")).unwrap();
    fs::write(
        d.join("refs/partial/pkg3_1.0_all.deb"),
        &deb[..deb.len() / 2],
    )
    .unwrap();
    let mut bomb = liblzma::write::XzEncoder::new(Vec::new(), 0);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        bomb.write_all(&zeros).unwrap();
    }
    fs::write(d.join("refs/zeros.tar.xz"), bomb.finish().unwrap()).unwrap();
    let args = ["diff", "old", "new", "-o", "p", "--ref-dir", "refs", "-v"];
    let out = spindiff(d, &args);
    assert_ok(&out);
    let e = out_of_stderr(&out);
    let warned: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("warning: skipped"))
        .collect();
    assert_eq!(warned.len(), 2, "{e}");
    assert!(warned[0].contains("pkg3_1.0_all.deb"), "{e}");
    assert!(
        warned[1].contains("zeros.tar.xz") && warned[1].contains("expands past"),
        "{e}"
    );
    assert!(e.contains("references: the patch names 5"), "{e}");
    let names: Vec<String> = listed(d, "p").into_iter().map(|(n, ..)| n).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("pkg3") || n.contains("zeros"))
    );
}

/// References through compressed content: a spin's xz squashfs that adds two packages' files to
/// the base's (mksquashfs, `-comp xz`) diffs to a transformed patch that names both packages,
/// a fraction of the patch without them, and applies exactly: the chunks copy from OLD's
/// expanded stream and from the payloads after it, and NEW's blocks are recompressed.
#[test]
fn issue23_a_spins_squashfs_points_at_the_packages_it_adds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = common::images::tree(d);
    fs::create_dir_all(d.join("refs")).unwrap();
    let spin = d.join("spin");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&base)
        .arg(&spin)
        .status()
        .unwrap();
    assert!(copied.success());
    for (i, z) in ["xz", "zstd"].iter().enumerate() {
        let name = format!("lang{i}");
        build_deb(
            d,
            &name,
            20 + i as u64,
            z,
            &d.join(format!("refs/{name}_1.0_all.deb")),
        );
        let from = d.join(format!("tree-{name}-{}/usr/lib", 20 + i));
        let to = spin.join(format!("usr/lib/{name}"));
        fs::create_dir_all(&to).unwrap();
        for f in fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    common::images::mksquashfs(&base, &d.join("old"), &["xz"]);
    common::images::mksquashfs(&spin, &d.join("new"), &["xz"]);
    let without = diff(d, &[]);
    let with = diff(d, &["--ref-dir", "refs"]);
    eprintln!(
        "squashfs patch: {} bytes with references, {} without",
        with.len(),
        without.len()
    );
    let info = spindiff::inspect(&d.join("p")).unwrap();
    assert!(info.transform.is_some() && info.header.references);
    assert_eq!(info.references.len(), 2);
    assert!(
        with.len() * 3 < without.len(),
        "{} bytes with references, {} without",
        with.len(),
        without.len()
    );
    applies(d, ("p", "out", "new"), &["--threads", "2"]);
}
