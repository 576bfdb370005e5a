//! `spindiff diff BASE NEW... --out-dir DIR` (issue 13): one base, many targets. Each patch is
//! byte for byte the one a single diff makes, whether the targets are expanded (squashfs) or
//! not, in any mix; a target that fails is reported for itself, leaves nothing, and does not
//! stop the others; the exit status says that something failed.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cli::{BIN, assert_ok};

fn images() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

fn spindiff(dir: &Path, args: &[&str]) -> Output {
    Command::new(&*BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The patch a single `spindiff diff OLD NEW -o` makes.
fn single(dir: &Path, old: &str, new: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["diff", old, new, "-o", "single.spd", "-q"];
    args.extend_from_slice(extra);
    assert_ok(&spindiff(dir, &args));
    std::fs::read(dir.join("single.spd")).unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn many_targets_make_the_patches_single_diffs_make() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = std::fs::read(images().join("base.squashfs")).unwrap();
    let spin = std::fs::read(images().join("spin-de.squashfs")).unwrap();
    std::fs::write(d.join("base.sq"), &base).unwrap();
    std::fs::write(d.join("de.sq"), &spin).unwrap();
    // not a file system any more: its blocks are opaque bytes
    std::fs::write(d.join("cut.sq"), &spin[..spin.len() / 2]).unwrap();
    // against a base that holds a squashfs: every target is expanded (format version 2)
    let extras = [
        &[][..],
        &["--no-transform"][..],
        &["--threads", "1"][..],
        // chunks small enough for a 16 MiB apply, the same both ways
        &["--apply-memory", "16M"][..],
    ];
    for (i, extra) in extras.into_iter().enumerate() {
        let out_dir = format!("out{i}");
        let mut args = vec![
            "diff",
            "base.sq",
            "de.sq",
            "cut.sq",
            "--out-dir",
            &out_dir,
            "-q",
        ];
        args.extend_from_slice(extra);
        assert_ok(&spindiff(d, &args));
        for new in ["de.sq", "cut.sq"] {
            let many = std::fs::read(d.join(&out_dir).join(format!("{new}.spd"))).unwrap();
            assert!(
                many == single(d, "base.sq", new, extra),
                "{new} {extra:?}: the many-targets patch differs from the single diff's"
            );
        }
    }
    // against a base that holds none: targets alternate between expanded and plain
    std::fs::write(d.join("plain.bin"), &base[..base.len() / 3]).unwrap();
    std::fs::write(d.join("de2.sq"), &spin).unwrap();
    assert_ok(&spindiff(
        d,
        &[
            "diff",
            "plain.bin",
            "de.sq",
            "cut.sq",
            "de2.sq",
            "--out-dir",
            "mixed",
            "-q",
        ],
    ));
    for new in ["de.sq", "cut.sq", "de2.sq"] {
        let many = std::fs::read(d.join("mixed").join(format!("{new}.spd"))).unwrap();
        assert!(
            many == single(d, "plain.bin", new, &[]),
            "{new}: the many-targets patch differs from the single diff's"
        );
    }
    // version 10 either way; header flag bit 0: a transform section follows
    let transformed = |p: &[u8]| (u16::from_le_bytes([p[8], p[9]]), p[10] & 1 == 1);
    let de = std::fs::read(d.join("mixed/de.sq.spd")).unwrap();
    assert_eq!(transformed(&de), (10, true));
    let cut = std::fs::read(d.join("mixed/cut.sq.spd")).unwrap();
    assert_eq!(transformed(&cut), (10, false));
}

#[test]
fn a_failing_target_leaves_nothing_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(images().join("base.squashfs"), d.join("base.sq")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("de.sq")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("fr.sq")).unwrap();
    // fr's patch cannot be written: its name is taken by a directory
    std::fs::create_dir_all(d.join("out/fr.sq.spd")).unwrap();
    let out = spindiff(
        d,
        &[
            "diff",
            "base.sq",
            "de.sq",
            "missing.sq",
            "fr.sq",
            "--out-dir",
            "out",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per failed target: {stderr}");
    assert!(lines[0].contains("'missing.sq'"), "{stderr}");
    assert!(lines[1].contains("fr.sq.spd"), "{stderr}");
    // de's patch is whole and applies; nothing else was left in the directory
    assert_eq!(files_in(&d.join("out")), ["de.sq.spd", "fr.sq.spd"]);
    assert!(d.join("out/fr.sq.spd").is_dir());
    assert_ok(&spindiff(
        d,
        &["verify", "base.sq", "out/de.sq.spd", "de.sq"],
    ));
    // the same run as JSON: one document, each target's outcome in it
    let out = spindiff(
        d,
        &[
            "diff",
            "base.sq",
            "de.sq",
            "missing.sq",
            "--out-dir",
            "out2",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 3);
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0]["ok"], true);
    assert_eq!(
        targets[0]["patch"]["size"],
        std::fs::metadata(d.join("out2/de.sq.spd")).unwrap().len()
    );
    assert_eq!(targets[1]["ok"], false);
    assert_eq!(targets[1]["error"]["kind"], "io");
    assert_eq!(targets[1]["new"]["path"], "missing.sq");
}

#[test]
fn many_targets_refuse_what_cannot_work_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(images().join("base.squashfs"), d.join("base.sq")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("de.sq")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::copy(images().join("spin-de.squashfs"), d.join("sub/de.sq")).unwrap();
    for (args, expect) in [
        // two NEW files of one name would share a patch
        (
            vec!["diff", "base.sq", "de.sq", "sub/de.sq", "--out-dir", "out"],
            "same patch",
        ),
        // -o names one patch
        (
            vec!["diff", "base.sq", "de.sq", "sub/de.sq", "-o", "p"],
            "one NEW",
        ),
        // a missing base fails the whole run
        (
            vec!["diff", "nothing", "de.sq", "--out-dir", "out"],
            "'nothing'",
        ),
    ] {
        let out = spindiff(d, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(
            !d.join("out").exists() || files_in(&d.join("out")).is_empty(),
            "{args:?} wrote a patch"
        );
    }
}

#[test]
fn a_batch_runs_every_job_once_across_its_shards_and_makes_the_single_patches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("imgs")).unwrap();
    let spin = std::fs::read(images().join("spin-de.squashfs")).unwrap();
    std::fs::copy(images().join("base.squashfs"), d.join("imgs/base.sq")).unwrap();
    std::fs::write(d.join("imgs/de.sq"), &spin).unwrap();
    std::fs::write(d.join("imgs/cut.sq"), &spin[..spin.len() / 2]).unwrap();
    std::fs::write(d.join("imgs/other.bin"), &spin[spin.len() / 3..]).unwrap();
    // two bases, interleaved in the manifest; paths relative to the manifest's directory
    let jobs = [
        ("base.sq", "de.sq", "p/de.spd"),
        ("other.bin", "de.sq", "p/de-other.spd"),
        ("base.sq", "cut.sq", "p/cut.spd"),
        ("other.bin", "cut.sq", "p/cut-other.spd"),
        ("base.sq", "other.bin", "p/other.spd"),
    ];
    let manifest = serde_json::json!({
        "jobs": jobs.iter().map(|(b, t, o)| serde_json::json!({
            "base": format!("imgs/{b}"), "target": format!("imgs/{t}"), "output": o,
        })).collect::<Vec<_>>()
    });
    std::fs::create_dir(d.join("farm")).unwrap();
    std::fs::write(d.join("farm/jobs.json"), manifest.to_string()).unwrap();
    std::fs::rename(d.join("imgs"), d.join("farm/imgs")).unwrap();
    let farm = d.join("farm");
    let mut seen = Vec::new();
    for k in 1..=3 {
        let out = spindiff(
            d,
            &[
                "batch",
                "farm/jobs.json",
                "--shard",
                &format!("{k}/3"),
                "--json",
            ],
        );
        assert_ok(&out);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["command"], "batch");
        assert_eq!(doc["shard"]["k"], k);
        for job in doc["jobs"].as_array().unwrap() {
            assert_eq!(job["ok"], true, "{job}");
            seen.push(job["patch"]["path"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    let mut all: Vec<String> = jobs.iter().map(|(_, _, o)| format!("farm/{o}")).collect();
    all.sort();
    assert_eq!(seen, all, "the shards cover every job exactly once");
    for (b, t, o) in jobs {
        let many = std::fs::read(farm.join(o)).unwrap();
        assert!(
            many == single(&farm, &format!("imgs/{b}"), &format!("imgs/{t}"), &[]),
            "{o}: the batch's patch differs from the single diff's"
        );
    }
    // a shard out of range and a manifest that is not one are refused in one line
    for (args, expect) in [
        (vec!["batch", "farm/jobs.json", "--shard", "4/3"], "K/N"),
        (vec!["batch", "farm/imgs/de.sq"], "not a list of jobs"),
        (vec!["batch", "nothing.json"], "MANIFEST 'nothing.json'"),
    ] {
        let out = spindiff(d, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

/// What a many-targets run tells its progress and its `done` callback, in order.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<String>>);

impl spindiff::Progress for Events {
    fn begin_target(&self, index: usize) {
        self.0.lock().unwrap().push(format!("begin {index}"));
    }
}

/// Issue 13: where the cap holds a whole diff beside one whose encoders are finishing, the next
/// target starts once a target's chunks are matched, before it has ended; where it does not,
/// targets run one after another. Either way each patch is the single diff's.
#[test]
fn the_next_target_starts_while_one_finishes_only_where_the_cap_holds_both() {
    use spindiff::{DiffOptions, Params, Target};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = images().join("base.squashfs");
    let news = [
        images().join("spin-de.squashfs"),
        images().join("spin-fr.squashfs"),
        old.clone(),
    ];
    let old_len = std::fs::metadata(&old).unwrap().len();
    let chunk = 256 << 10;
    let smallest = Params::minimum_memory(old_len, 19, chunk);
    for (memory, overlap) in [(1u64 << 30, true), (smallest, false)] {
        let params = Params::derive(old_len, memory, 2, 19, chunk).unwrap();
        assert_eq!(params.overlaps_targets(), overlap, "--memory {memory}");
        let opts = DiffOptions::default()
            .transform(false)
            .memory(memory)
            .threads(2)
            .chunk_size(chunk);
        let out = d.join(format!("out-{memory}"));
        std::fs::create_dir(&out).unwrap();
        let targets: Vec<Target> = news
            .iter()
            .enumerate()
            .map(|(i, n)| Target {
                new: n.clone(),
                patch: out.join(format!("{i}.spd")),
            })
            .collect();
        let events = Events::default();
        spindiff::diff_many(&old, &targets, &opts, &events, &mut |i, result| {
            result.unwrap();
            events.0.lock().unwrap().push(format!("done {i}"));
        })
        .unwrap();
        let expected: &[&str] = if overlap {
            &[
                "begin 0", "begin 1", "done 0", "begin 2", "done 1", "done 2",
            ]
        } else {
            &[
                "begin 0", "done 0", "begin 1", "done 1", "begin 2", "done 2",
            ]
        };
        assert_eq!(*events.0.lock().unwrap(), expected, "--memory {memory}");
        for t in &targets {
            let single = d.join("single.spd");
            spindiff::diff(&old, &t.new, &single, &opts).unwrap();
            assert!(
                std::fs::read(&t.patch).unwrap() == std::fs::read(&single).unwrap(),
                "{}: the patch differs from the single diff's (--memory {memory})",
                t.new.display()
            );
        }
    }
}

/// Issue 13, with targets overlapping: a patch that cannot be written to its end (the write
/// fails while the target's last streams are coded, the next target already running) is
/// reported for its target and leaves nothing; the targets around it finish, in order.
#[test]
fn a_patch_that_fails_while_the_next_target_runs_leaves_nothing_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["base.squashfs", "spin-de.squashfs", "spin-fr.squashfs"] {
        std::fs::copy(images().join(name), d.join(name)).unwrap();
    }
    // the spins' patches are 0.5-1 MB, the base's against itself a few hundred bytes: with
    // files limited to 64 KiB (the kernel refuses writes past it, as a full disk would) only
    // that one can be written
    let out = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\"")
        .arg(&*BIN)
        .args(["diff", "base.squashfs", "spin-de.squashfs", "base.squashfs"])
        .args([
            "spin-fr.squashfs",
            "--out-dir",
            "out",
            "--no-transform",
            "-q",
        ])
        .current_dir(d)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per failed target: {stderr}");
    assert!(
        lines[0].contains("spin-de.squashfs.spd': cannot write"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("spin-fr.squashfs.spd': cannot write"),
        "{stderr}"
    );
    assert_eq!(files_in(&d.join("out")), ["base.squashfs.spd"]);
    assert_ok(&spindiff(
        d,
        &[
            "verify",
            "base.squashfs",
            "out/base.squashfs.spd",
            "base.squashfs",
        ],
    ));
}

/// Small files for the batch tests: two bases and two targets (plain bytes, fast to diff).
fn small_farm(d: &Path) {
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let with = |tail: &[u8]| [&noise[..], tail].concat();
    for (name, tail) in [
        ("base1", &b""[..]),
        ("base2", b"2"),
        ("t1", b"t1"),
        ("t3", b"t3"),
    ] {
        std::fs::write(d.join(name), with(tail)).unwrap();
    }
}

/// A manifest's job: base, target, output.
type Job<'a> = (&'a str, &'a str, &'a str);

fn batch_of(d: &Path, jobs: &[Job], extra: &[&str]) -> Output {
    let manifest = serde_json::json!({
        "jobs": jobs.iter().map(|(b, t, o)| serde_json::json!({
            "base": b, "target": t, "output": o,
        })).collect::<Vec<_>>()
    });
    std::fs::write(d.join("m.json"), manifest.to_string()).unwrap();
    let mut args = vec!["batch", "m.json", "-q"];
    args.extend_from_slice(extra);
    spindiff(d, &args)
}

/// Every file of `d` and what it holds.
fn contents(d: &Path) -> Vec<(String, Vec<u8>)> {
    files_in(d)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(d.join(&n)).unwrap_or_default();
            (n, bytes)
        })
        .collect()
}

/// Issue 20, items 1 and 2: no output of a batch is a file any job of it reads (a later job's
/// base or target, under any spelling, made yet or not), and no two jobs write one file under
/// two spellings; all refused before anything is written.
#[test]
fn no_batch_output_is_a_file_any_job_reads_or_another_job_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_farm(d);
    let abs = |n: &str| d.join(n).to_string_lossy().into_owned();
    let (abs_base2, abs_p) = (abs("base2"), abs("sub/../p.spd"));
    let cases: Vec<(Vec<Job>, &str)> = vec![
        // job 1's output is job 2's base (the manifest) ...
        (
            vec![("base1", "t1", "base2"), ("base2", "t3", "p3.spd")],
            "never writes a file it reads",
        ),
        // ... spelled otherwise
        (
            vec![("base1", "t1", "x/../base2"), ("base2", "t3", "p3.spd")],
            "never writes a file it reads",
        ),
        (
            vec![("base1", "t1", &abs_base2), ("base2", "t3", "p3.spd")],
            "never writes a file it reads",
        ),
        // a later job's target
        (
            vec![("base1", "t1", "t3"), ("base2", "t3", "p3.spd")],
            "never writes a file it reads",
        ),
        // a base no job made yet: job 1 would create it, job 2 read it
        (
            vec![("base1", "t1", "made.spd"), ("made.spd", "t3", "p3.spd")],
            "never writes a file it reads",
        ),
        // the manifest itself
        (
            vec![("base1", "t1", "m.json")],
            "never writes a file it reads",
        ),
        // two spellings of one output
        (
            vec![("base1", "t1", "p.spd"), ("base1", "t3", "x/../p.spd")],
            "two jobs write one file",
        ),
        (
            vec![("base1", "t1", "p.spd"), ("base2", "t3", &abs_p)],
            "two jobs write one file",
        ),
    ];
    for (jobs, expect) in cases {
        let before = contents(d);
        for extra in [&[][..], &["--shard", "2/2"][..]] {
            let out = batch_of(d, &jobs, extra);
            assert_eq!(out.status.code(), Some(2), "{jobs:?} {extra:?}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(expect), "{jobs:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            let mut after = contents(d);
            after.retain(|(n, _)| n != "m.json");
            let mut was = before.clone();
            was.retain(|(n, _)| n != "m.json");
            assert!(after == was, "{jobs:?} {extra:?} wrote something");
        }
    }
    // two spellings of one base are one base, prepared once; its jobs all succeed
    let out = batch_of(
        d,
        &[("base1", "t1", "p1.spd"), ("./x/../base1", "t3", "p3.spd")],
        &[],
    );
    assert_ok(&out);
    for (t, p) in [("t1", "p1.spd"), ("t3", "p3.spd")] {
        assert!(std::fs::read(d.join(p)).unwrap() == single(d, "base1", t, &[]));
    }
}

/// Issue 20, item 3: for every accepted K/N, huge N included, the slices cover every job
/// exactly once, and no K/N panics.
#[test]
fn shards_of_any_size_cover_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_farm(d);
    let jobs = [
        ("base1", "t1", "p1.spd"),
        ("base2", "t3", "p2.spd"),
        ("base1", "t3", "p3.spd"),
    ];
    let max = u64::MAX;
    let third = 6_148_914_691_236_517_206u64; // u64::MAX / 3 + 1: k·3 overflows 64 bits
    for n in [1u64, 2, 3, 5, third, max] {
        // the slices that hold a job, and their neighbours, under 128-bit arithmetic
        let mut ks: Vec<u64> = vec![1, n];
        for j in 0..3u128 {
            let k = (j * u128::from(n) / 3) as u64 + 1;
            ks.extend(
                [k - 1, k, k.saturating_add(1)]
                    .into_iter()
                    .filter(|k| (1..=n).contains(k)),
            );
        }
        if n <= 5 {
            ks.extend(1..=n);
        }
        ks.sort_unstable();
        ks.dedup();
        let mut seen = Vec::new();
        for k in ks {
            let _ = std::fs::remove_file(d.join("m.json"));
            let out = batch_of(d, &jobs, &["--shard", &format!("{k}/{n}"), "--json"]);
            assert_ok(&out);
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(doc["shard"]["n"], n, "{doc}");
            for job in doc["jobs"].as_array().unwrap() {
                seen.push(job["patch"]["path"].as_str().unwrap().to_string());
            }
        }
        seen.sort();
        assert_eq!(seen, ["p1.spd", "p2.spd", "p3.spd"], "n = {n}");
    }
}

/// Issue 20, item 10: with `--json`, a failed target or job still gets its one line on
/// standard error, and the run's document carries the first failure's `error` object.
#[test]
fn a_failed_job_is_reported_on_standard_error_and_in_the_documents_error_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_farm(d);
    let out = batch_of(
        d,
        &[("base1", "missing", "p1.spd"), ("base1", "t3", "p3.spd")],
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("spindiff: error: NEW 'missing'") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["kind"], "io", "{doc}");
    assert_eq!(doc["error"]["path"], "missing", "{doc}");
    assert_eq!(doc["jobs"][1]["ok"], true, "{doc}");
    // the same for diff --out-dir
    let out = spindiff(
        d,
        &[
            "diff",
            "base1",
            "t1",
            "missing",
            "--out-dir",
            "out",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NEW 'missing'"), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "io", "{doc}");
}
