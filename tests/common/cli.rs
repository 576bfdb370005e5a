//! Running the `spindiff` binary on a small fixture, and what every failure must look like: a
//! one-line error with the documented exit code, no panic, OLD untouched, nothing left behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::LazyLock;

use super::{binary_like, edit, release_edits};

/// The binary under test: this build's, unless `SPINDIFF_TEST_BIN` names another (to show that
/// a regression test fails on an older build).
pub static BIN: LazyLock<String> = LazyLock::new(|| {
    std::env::var("SPINDIFF_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_spindiff").into())
});

/// The cap an apply's `MemoryLimit` error names: `--memory NM`.
pub fn named_cap(stderr: &str) -> String {
    let at = stderr.find("--memory ").expect("a cap named") + "--memory ".len();
    let end = stderr[at..].find(' ').unwrap();
    stderr[at..at + end].to_string()
}

/// Runs the binary under test with `args` in `dir`, standard input empty.
pub fn spindiff(dir: &Path, args: &[&str]) -> Output {
    Command::new(&*BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the binary under test with `args` in `dir` (standard input from `stdin`, or empty)
/// and returns its output and its peak resident set size in KiB, as GNU time reports it. (The
/// test process cannot take it from wait4: a child's maximum RSS includes that of the test
/// process it was forked from, which is large while other tests run.)
pub fn run_measured(dir: &Path, args: &[&str], stdin: Option<fs::File>) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(&*BIN)
        .args(args)
        .current_dir(dir)
        .stdin(stdin.map_or(Stdio::null(), Stdio::from))
        .output()
        .expect("GNU time (/usr/bin/time, Debian package time; scripts/test.sh installs it)");
    let text = fs::read_to_string(report.path()).unwrap();
    let peak = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in GNU time's report: {text}"));
    (output, peak)
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

impl Fixture {
    /// OLD and NEW of about 1 MiB and a patch with 64 KiB chunks (16+ chunks).
    pub fn new() -> Fixture {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&*BIN)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts `apply old - -o out` and writes `fed` into its standard input, which stays open
    /// (the apply waits for more) until the returned handle is dropped.
    pub fn start_apply_from_pipe(&self, fed: &[u8]) -> (Child, ChildStdin) {
        self.start_apply_to_from_pipe(std::ffi::OsStr::new("out"), fed)
    }

    /// [`Self::start_apply_from_pipe`] with the output named `output`.
    pub fn start_apply_to_from_pipe(
        &self,
        output: &std::ffi::OsStr,
        fed: &[u8],
    ) -> (Child, ChildStdin) {
        let mut child = Command::new(&*BIN)
            .args(["apply", "old", "-", "-q", "-o"])
            .arg(output)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(fed).unwrap();
        (child, stdin)
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(&*BIN)
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

    pub fn patch(&self) -> Vec<u8> {
        fs::read(self.path("patch")).unwrap()
    }

    /// Writes `bytes` as `bad` and applies it; asserts a clean failure with `code`.
    pub fn apply_bad(&self, bytes: &[u8], code: i32, expect: &str) {
        fs::write(self.path("bad"), bytes).unwrap();
        for threads in ["1", "3"] {
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
    pub fn assert_clean(&self) {
        assert!(
            fs::read(self.path("old")).unwrap() == self.old,
            "OLD was modified"
        );
        assert!(!self.path("out").exists(), "a partial NEW was left behind");
        for e in fs::read_dir(self.dir.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("tmp") && !name.contains("partial"),
                "temporary file left behind: {name}"
            );
        }
    }
}

/// Counts from `apply -v --resume`: (kept, total).
pub fn resume_counts(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resume: "))
        .unwrap_or_else(|| panic!("no resume line in: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

pub fn out_of_stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", out_of_stderr(o));
}

pub fn assert_fails(o: &Output, code: i32, expect: &str) {
    let err = out_of_stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code for: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "expected '{expect}' in: {err}");
}

/// The size of the patch `old` -> `new` in `d` made with `options`, checked to apply exactly
/// with one and two threads and to resume to NEW from each length `cuts(NEW's length)` of a
/// partial output (tests/streams.rs, tests/zstd_streams.rs).
#[allow(dead_code)]
pub fn checked_patch_size(
    d: &Path,
    (old, new): (&str, &str),
    options: &[&str],
    cuts: fn(usize) -> Vec<usize>,
) -> u64 {
    let patch = format!("{new}.spd");
    let mut args = vec!["diff", old, new, "-o", &patch];
    args.extend_from_slice(options);
    assert_ok(&spindiff(d, &args));
    let want = fs::read(d.join(new)).unwrap();
    for threads in ["1", "2"] {
        let args = ["apply", old, &patch, "-o", "out", "--threads", threads];
        assert_ok(&spindiff(d, &args));
        assert!(fs::read(d.join("out")).unwrap() == want, "{threads}");
    }
    for cut in cuts(want.len()) {
        fs::write(d.join("out"), &want[..cut]).unwrap();
        let args = ["apply", old, &patch, "-o", "out", "--resume"];
        assert_ok(&spindiff(d, &args));
        assert!(fs::read(d.join("out")).unwrap() == want, "resumed at {cut}");
    }
    fs::metadata(d.join(&patch)).unwrap().len()
}

/// Rewrites the NEW table of the patch at `path` with `change`, the transform section's checksum
/// made again (the chunks after it are left as they were: a patch refused at its table never
/// reaches them).
#[allow(dead_code)]
pub fn forge_new_table(
    path: &Path,
    change: impl Fn(&mut spindiff::internals::transform::table::Table),
) {
    use spindiff::format::{HEADER_LEN, TransformSection};
    use spindiff::internals::transform::table::Table;
    let bytes = fs::read(path).unwrap();
    let mut input = &bytes[HEADER_LEN..];
    let (mut section, len) = TransformSection::read(&mut input, path, HEADER_LEN as u64).unwrap();
    let header = spindiff::inspect(path).unwrap().header;
    let mut table = Table::parse(&section.new_table, section.new_size, header.old_size).unwrap();
    change(&mut table);
    section.new_table = table.to_bytes();
    let end = HEADER_LEN + len as usize;
    let forged = [
        &bytes[..HEADER_LEN],
        &section.to_bytes(19)[..],
        &bytes[end..],
    ]
    .concat();
    fs::write(path, forged).unwrap();
}
