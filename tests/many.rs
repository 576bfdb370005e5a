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
    for extra in [&[][..], &["--no-transform"][..], &["--threads", "1"][..]] {
        let out_dir = format!("out{}", extra.len());
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
    // version 3 either way; header flag bit 0: a transform section follows
    let transformed = |p: &[u8]| (u16::from_le_bytes([p[8], p[9]]), p[10] & 1 == 1);
    let de = std::fs::read(d.join("mixed/de.sq.spd")).unwrap();
    assert_eq!(transformed(&de), (3, true));
    let cut = std::fs::read(d.join("mixed/cut.sq.spd")).unwrap();
    assert_eq!(transformed(&cut), (3, false));
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
