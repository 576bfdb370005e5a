//! `--json` (issue 13, docs/JSON.md): every command's document, and the documents of its
//! failures, are one JSON value on standard output that `jq` parses, with the fields the schema
//! promises and the exit status in the document matching the process's.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::cli::{Fixture, assert_ok};
use serde_json::Value;

/// The one JSON document on standard output, checked with serde_json and with `jq -e`
/// (scripts/test.sh installs jq), and checked against the process's exit status.
fn document(out: &Output) -> Value {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let mut jq = Command::new("jq")
        .args(["-e", ".schema == 1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("jq (scripts/test.sh installs it)");
    jq.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(jq.wait().unwrap().success(), "jq refused the document");
    assert_eq!(doc["schema"], 1);
    let code = out.status.code().unwrap();
    assert_eq!(doc["exit_code"], code, "{doc}");
    assert_eq!(doc["ok"], code == 0, "{doc}");
    assert!(doc["wall_seconds"].as_f64().unwrap() >= 0.0);
    doc
}

fn failed(doc: &Value, command: &str, kind: &str, code: i32) {
    assert_eq!(doc["command"], command, "{doc}");
    assert_eq!(doc["exit_code"], code, "{doc}");
    assert_eq!(doc["error"]["kind"], kind, "{doc}");
    assert!(!doc["error"]["message"].as_str().unwrap().is_empty());
}

#[test]
fn every_command_reports_one_json_document() {
    let f = Fixture::new();
    let patch_len = std::fs::metadata(f.path("patch")).unwrap().len();

    let out = f.run(&[
        "diff",
        "old",
        "new",
        "-o",
        "p2",
        "--json",
        "--chunk-size",
        "64K",
    ]);
    assert_ok(&out);
    let diff = document(&out);
    assert_eq!(diff["command"], "diff");
    assert_eq!(diff["old"]["size"], f.old.len());
    assert_eq!(diff["new"]["size"], f.new.len());
    let p2_len = std::fs::metadata(f.path("p2")).unwrap().len();
    assert_eq!(diff["patch"]["size"], p2_len);
    assert_eq!(diff["contents"]["patch"]["size"], p2_len);
    assert_eq!(diff["contents"]["patch"]["format_version"], 10);
    assert!(diff["plan"]["memory_cap_bytes"].as_u64().unwrap() > 0);
    assert_eq!(diff["work"]["chunks"], diff["contents"]["chunks"], "{diff}");

    let out = f.run(&["inspect", "patch", "--json"]);
    assert_ok(&out);
    let inspect = document(&out);
    assert_eq!(inspect["patch"]["size"], patch_len);
    assert_eq!(inspect["patch"]["path"], "patch");
    let new_hash = inspect["new"]["blake3"].clone();
    assert_eq!(new_hash.as_str().unwrap().len(), 64);
    let streams = &inspect["streams"];
    let total: u64 = ["control", "add", "insert"]
        .iter()
        .map(|s| streams[s]["compressed"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total + inspect["framing_bytes"].as_u64().unwrap(),
        patch_len
    );
    assert!(inspect["transform"].is_null());

    let out = f.run(&["apply", "old", "patch", "-o", "out", "--json"]);
    assert_ok(&out);
    let apply = document(&out);
    assert_eq!(apply["new"]["blake3"], new_hash);
    assert_eq!(apply["new"]["path"], "out");
    assert_eq!(apply["chunks_kept"], 0);
    assert_eq!(std::fs::read(f.path("out")).unwrap(), f.new);

    // a resume that finds everything written keeps every chunk
    std::fs::write(f.path(".out.spindiff-partial"), &f.new).unwrap();
    let out = f.run(&["apply", "old", "patch", "-o", "out", "--resume", "--json"]);
    assert_ok(&out);
    let resumed = document(&out);
    assert_eq!(resumed["chunks_kept"], resumed["chunks"]);

    let out = f.run(&["verify", "old", "patch", "new", "--json"]);
    assert_ok(&out);
    let verify = document(&out);
    assert_eq!(verify["command"], "verify");
    assert_eq!(verify["new"]["path"], "new");
    assert_eq!(verify["new"]["blake3"], new_hash);
}

#[test]
fn failures_report_a_json_document_with_their_exit_status() {
    let f = Fixture::new();
    // a missing file: I/O, 3
    let out = f.run(&["apply", "missing", "patch", "-o", "out", "--json"]);
    let doc = document(&out);
    failed(&doc, "apply", "io", 3);
    assert_eq!(doc["error"]["path"], "missing");
    // the wrong OLD: bad input, 1
    let out = f.run(&["verify", "new", "patch", "--json"]);
    failed(&document(&out), "verify", "wrong_old", 1);
    // a corrupt patch (its magic)
    let mut bad = f.patch();
    bad[0] ^= 0x40;
    std::fs::write(f.path("bad"), &bad).unwrap();
    let out = f.run(&["inspect", "bad", "--json"]);
    let doc = document(&out);
    assert_eq!(doc["command"], "inspect");
    assert_eq!(doc["exit_code"], 1);
    assert!(
        ["corrupt_patch", "truncated_patch"].contains(&doc["error"]["kind"].as_str().unwrap()),
        "{doc}"
    );
    // usage errors, from the option parser and from the command, are 2
    let out = f.run(&["diff", "old", "new", "-o", "p", "--threads", "0", "--json"]);
    failed(&document(&out), "diff", "usage", 2);
    let out = f.run(&["diff", "old", "new", "-o", "-", "--json"]);
    failed(&document(&out), "diff", "invalid_option", 2);
    let out = f.run(&["apply", "old", "patch", "-o", "-", "--json"]);
    failed(&document(&out), "apply", "invalid_option", 2);
    assert!(!f.path("p").exists());
    f.assert_clean();
}
