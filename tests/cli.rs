//! The `spindiff` command end to end: the subcommands, options, progress-free output, exit codes
//! and the sample images. Bad patches, wrong inputs and failing machines are in `faults.rs`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{binary_like, edit, release_edits};

use common::cli::{BIN, Fixture, assert_fails, assert_ok, out_of_stderr};

#[test]
fn diff_apply_verify_inspect() {
    let f = Fixture::new();
    assert_ok(&f.run(&["apply", "old", "patch", "-o", "out"]));
    assert!(fs::read(f.path("out")).unwrap() == f.new);
    let v = f.run(&["verify", "old", "patch", "new"]);
    assert_ok(&v);
    assert!(String::from_utf8_lossy(&v.stdout).contains("identical to NEW"));
    let i = f.run(&["inspect", "patch"]);
    assert_ok(&i);
    let text = String::from_utf8_lossy(&i.stdout);
    for field in [
        "format version  10",
        "chunks          17",
        "add stream",
        "ratio",
    ] {
        assert!(text.contains(field), "inspect lacks '{field}': {text}");
    }
}

#[test]
fn patch_from_stdin_and_new_to_stdout() {
    let f = Fixture::new();
    let out = f.run_stdin(&["apply", "old", "-", "-o", "-"], &f.patch());
    assert_ok(&out);
    assert!(out.stdout == f.new, "stdout differs from NEW");
}

#[test]
fn verbose_prints_plan_and_summary() {
    let f = Fixture::new();
    let out = f.run(&["diff", "old", "new", "-o", "p2", "-v", "--memory", "300M"]);
    assert_ok(&out);
    let err = out_of_stderr(&out);
    assert!(err.contains("plan: memory cap 300.0 MiB"), "{err}");
    assert!(err.contains("suffix array(s) alive"), "{err}");
    assert!(err.contains("peak memory"), "{err}");
}

#[test]
fn same_patch_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let old = binary_like(6 << 20, 5);
    let new = edit(&old, &release_edits(old.len(), 80, 6));
    fs::write(dir.path().join("old"), &old).unwrap();
    fs::write(dir.path().join("new"), &new).unwrap();
    let mut patches = Vec::new();
    for t in ["1", "2"] {
        let name = format!("p{t}");
        let out = Command::new(&*BIN)
            .args([
                "diff",
                "old",
                "new",
                "-o",
                &name,
                "--threads",
                t,
                "--chunk-size",
                "256K",
                "--memory",
                "200M",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_ok(&out);
        patches.push(fs::read(dir.path().join(&name)).unwrap());
    }
    assert!(
        patches[0] == patches[1],
        "patches differ between 1 and 2 threads"
    );
}

#[test]
fn missing_files() {
    let f = Fixture::new();
    assert_fails(
        &f.run(&["diff", "nope", "new", "-o", "p"]),
        3,
        "OLD 'nope': cannot open",
    );
    assert_fails(
        &f.run(&["diff", "old", "nope", "-o", "p"]),
        3,
        "NEW 'nope': cannot open",
    );
    assert_fails(
        &f.run(&["apply", "nope", "patch", "-o", "out"]),
        3,
        "OLD 'nope': cannot open",
    );
    assert_fails(
        &f.run(&["apply", "old", "nope", "-o", "out"]),
        3,
        "PATCH 'nope': cannot open",
    );
    assert_fails(&f.run(&["inspect", "nope"]), 3, "PATCH 'nope': cannot open");
    f.assert_clean();
}

#[test]
fn verify_detects_a_different_new() {
    let f = Fixture::new();
    fs::write(f.path("other"), b"something else").unwrap();
    assert_fails(
        &f.run(&["verify", "old", "patch", "other"]),
        1,
        "NEW 'other': differs",
    );
}

#[test]
fn nonsense_options() {
    let f = Fixture::new();
    for (args, expect) in [
        (
            &["diff", "old", "new", "-o", "p", "--memory", "lots"][..],
            "not a size",
        ),
        (
            &["diff", "old", "new", "-o", "p", "--memory", "1M"][..],
            "too small",
        ),
        (
            &["diff", "old", "new", "-o", "p", "--threads", "0"][..],
            "threads",
        ),
        (
            &["diff", "old", "new", "-o", "p", "--level", "99"][..],
            "level",
        ),
        (
            &["diff", "old", "new", "-o", "p", "--chunk-size", "1"][..],
            "chunk size",
        ),
        (&["apply", "old", "patch"][..], "--output"),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let out = f.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            out_of_stderr(&out)
        );
        assert!(
            out_of_stderr(&out).contains(expect),
            "{args:?}: {}",
            out_of_stderr(&out)
        );
        assert!(!out_of_stderr(&out).contains("panicked"));
        assert!(!Path::new(&f.path("p")).exists());
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(&*BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Exit status") && text.contains("3  I/O"),
        "{text}"
    );
}

#[test]
fn man_pages_and_completions_come_from_the_option_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = Command::new(&*BIN)
        .args(["generate", "man"])
        .arg(&man)
        .output()
        .unwrap();
    assert_ok(&out);
    let page = |name: &str| fs::read_to_string(man.join(name)).unwrap();
    assert!(page("spindiff.1").contains(".TH spindiff 1"));
    // every subcommand gets its page, with its options and their help
    for (name, option) in [
        ("spindiff-diff.1", "chunk\\-size"),
        ("spindiff-apply.1", "resume"),
        ("spindiff-verify.1", "memory"),
        ("spindiff-inspect.1", "PATCH"),
    ] {
        assert!(page(name).contains(option), "{name} lacks {option}");
    }
    for (shell, expect) in [
        ("bash", "--chunk-size"),
        ("zsh", "--resume"),
        ("fish", "inspect"),
    ] {
        let out = Command::new(&*BIN)
            .args(["generate", "completions", shell])
            .output()
            .unwrap();
        assert_ok(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expect),
            "{shell}"
        );
    }
    let out = Command::new(&*BIN)
        .args(["generate", "man", "/proc/version/man1"])
        .output()
        .unwrap();
    assert_fails(
        &out,
        3,
        "output '/proc/version/man1': cannot create the directory",
    );
}

#[test]
fn sample_images_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(&*BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let (old, new) = (root.join("base.squashfs"), root.join("spin-de.squashfs"));
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    assert_ok(&run(&["diff", old, new, "-o", "p", "--memory", "256M"]));
    assert_ok(&run(&["apply", old, "p", "-o", "out"]));
    assert!(fs::read(dir.path().join("out")).unwrap() == fs::read(new).unwrap());
    // a localized spin shares most of its bytes with the base
    let patch = fs::metadata(dir.path().join("p")).unwrap().len();
    assert!(
        patch < fs::metadata(new).unwrap().len() / 2,
        "patch {patch} bytes"
    );
}
