//! The `spindiff` command end to end, and every bad-input case: each must give a one-line error
//! naming the file, the documented exit code, no panic, OLD untouched and no NEW (or temporary
//! file) left behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{binary_like, edit, release_edits};

const BIN: &str = env!("CARGO_BIN_EXE_spindiff");

struct Fixture {
    dir: tempfile::TempDir,
    old: Vec<u8>,
    new: Vec<u8>,
}

impl Fixture {
    /// OLD and NEW of about 1 MiB and a patch with 64 KiB chunks (16+ chunks).
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let old = binary_like(1 << 20, 77);
        let new = edit(&old, &release_edits(old.len(), 30, 78));
        fs::write(dir.path().join("old"), &old).unwrap();
        fs::write(dir.path().join("new"), &new).unwrap();
        let f = Fixture { dir, old, new };
        let out = f.run(&[
            "diff",
            "old",
            "new",
            "-o",
            "patch",
            "--chunk-size",
            "64K",
            "--memory",
            "256M",
        ]);
        assert_ok(&out);
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input); // the child may stop reading early on bad input
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn patch(&self) -> Vec<u8> {
        fs::read(self.path("patch")).unwrap()
    }

    /// Writes `bytes` as `bad` and applies it; asserts a clean failure with `code`.
    fn apply_bad(&self, bytes: &[u8], code: i32, expect: &str) {
        fs::write(self.path("bad"), bytes).unwrap();
        for threads in ["1", "2"] {
            let out = self.run(&["apply", "old", "bad", "-o", "out", "--threads", threads]);
            assert_fails(&out, code, expect);
            assert!(
                out_of_stderr(&out).contains("'bad'"),
                "error names the patch: {}",
                out_of_stderr(&out)
            );
            self.assert_clean();
        }
        let out = self.run_stdin(&["apply", "old", "-", "-o", "out"], bytes);
        assert_fails(&out, code, expect);
        self.assert_clean();
    }

    /// OLD unchanged, no output, no temporary files.
    fn assert_clean(&self) {
        assert!(
            fs::read(self.path("old")).unwrap() == self.old,
            "OLD was modified"
        );
        assert!(!self.path("out").exists(), "a partial NEW was left behind");
        for e in fs::read_dir(self.dir.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains("tmp"), "temporary file left behind: {name}");
        }
    }
}

fn out_of_stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", out_of_stderr(o));
}

fn assert_fails(o: &Output, code: i32, expect: &str) {
    let err = out_of_stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code for: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "expected '{expect}' in: {err}");
}

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
        "format version  1",
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
        let out = Command::new(BIN)
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
fn wrong_old_same_size() {
    let f = Fixture::new();
    let mut other = f.old.clone();
    other[12345] ^= 1;
    fs::write(f.path("other"), &other).unwrap();
    for threads in ["1", "2"] {
        let out = f.run(&["apply", "other", "patch", "-o", "out", "--threads", threads]);
        assert_fails(
            &out,
            1,
            "OLD 'other': not the file this patch was made from",
        );
    }
    f.assert_clean();
}

#[test]
fn wrong_old_other_size() {
    let f = Fixture::new();
    fs::write(f.path("other"), &f.old[..1000]).unwrap();
    let out = f.run(&["apply", "other", "patch", "-o", "out"]);
    assert_fails(&out, 1, "it has 1000 bytes");
    f.assert_clean();
}

#[test]
fn truncated_patches() {
    let f = Fixture::new();
    let patch = f.patch();
    // inside the header, just after it, inside the first chunk header and payload, mid-file,
    // inside the index, inside the footer, one byte short
    for cut in [
        0,
        10,
        120,
        130,
        200,
        patch.len() / 2,
        patch.len() - 100,
        patch.len() - 10,
        patch.len() - 1,
    ] {
        f.apply_bad(&patch[..cut], 1, "truncated");
    }
}

#[test]
fn corrupted_patches() {
    let f = Fixture::new();
    let patch = f.patch();
    // header fields, the first chunk's header, its compressed streams, the index, the footer
    for at in [
        0,
        9,
        20,
        40,
        100,
        114,
        125,
        140,
        170,
        200,
        300,
        patch.len() / 2,
        patch.len() - 30,
        patch.len() - 5,
    ] {
        let mut bad = patch.clone();
        bad[at] ^= 0x10;
        f.apply_bad(&bad, 1, "PATCH '");
    }
    f.apply_bad(
        b"this is not a patch at all, just some text\n",
        1,
        "not a spindiff patch",
    );
}

#[test]
fn trailing_garbage_is_rejected() {
    let f = Fixture::new();
    let mut patch = f.patch();
    patch.extend_from_slice(b"junk");
    f.apply_bad(&patch, 1, "trailing bytes");
}

#[test]
fn unwritable_output_directory() {
    let f = Fixture::new();
    let out = f.run(&["apply", "old", "patch", "-o", "no/such/dir/out"]);
    assert_fails(&out, 3, "output 'no/such/dir/out'");
    let out = f.run(&["diff", "old", "new", "-o", "no/such/dir/p"]);
    assert_fails(&out, 3, "PATCH 'no/such/dir/p'");
    f.assert_clean();
}

#[test]
fn output_onto_old_is_refused() {
    let f = Fixture::new();
    let out = f.run(&["apply", "old", "patch", "-o", "old"]);
    assert_fails(&out, 2, "same file as OLD");
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
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Exit status") && text.contains("3  I/O"),
        "{text}"
    );
}

#[test]
fn sample_images_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
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
