//! What the commands tell a program: with `--json`, one JSON document on standard output per
//! run, success or failure, in the schema docs/JSON.md specifies field by field ([`SCHEMA`] is
//! its version). Built from the same library reports as the human summaries in [`super::report`].

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use spindiff::{ApplyReport, DiffReport, Error, PatchInfo};

/// The version of the documents' schema. It changes only when a field is removed or changes
/// meaning; fields may be added within a version.
pub const SCHEMA: u32 = 1;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A path as a JSON string (bytes that are not UTF-8 replaced by U+FFFD).
fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The fields every document has, then the command's own.
#[derive(Serialize)]
struct Document<'a> {
    schema: u32,
    command: &'a str,
    ok: bool,
    exit_code: u8,
    wall_seconds: f64,
    peak_memory_bytes: Option<u64>,
    #[serde(flatten)]
    fields: Value,
}

/// Writes the document for `command` to standard output. A failure to write is the command's
/// error, as for the human output (`super::report::stdout_failed`).
fn emit(command: &str, exit_code: u8, started: Instant, fields: Value) -> Result<(), Error> {
    use std::io::Write;
    let doc = Document {
        schema: SCHEMA,
        command,
        ok: exit_code == 0,
        exit_code,
        wall_seconds: started.elapsed().as_secs_f64(),
        peak_memory_bytes: super::report::peak_rss(),
        fields,
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &doc)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .map_err(super::report::stdout_failed)
}

/// `diff --json`: the plan, what the diff did and, when the patch is a regular file, what it
/// holds (as `inspect --json` gives it).
pub fn diff(
    r: &DiffReport,
    old: &Path,
    new: &Path,
    patch: &Path,
    info: Option<&PatchInfo>,
    started: Instant,
) -> Result<(), Error> {
    emit("diff", 0, started, diff_fields(r, old, new, patch, info))
}

/// `diff --out-dir --json` and `batch --json`: each target's fields as `diff` gives them, or
/// its error, with its own `ok` and `exit_code`, under `key`; the document's are the run's,
/// with the first failure's `error` (`(exit status, error object)`).
pub fn diff_many(
    command: &str,
    key: &str,
    targets: Vec<Value>,
    shard: Option<Value>,
    failure: Option<(u8, Value)>,
    started: Instant,
) -> Result<(), Error> {
    let mut fields = json!({ key: targets });
    if command == "batch" {
        fields["shard"] = shard.unwrap_or(Value::Null);
    }
    let exit_code = failure.as_ref().map_or(0, |(code, _)| *code);
    if let Some((_, error)) = failure {
        fields["error"] = error;
    }
    emit(command, exit_code, started, fields)
}

/// The `error` object of a document: the library error's kind, message and file.
pub fn error_fields(e: &Error) -> Value {
    json!({ "kind": e.kind(), "message": e.to_string(), "path": e.path().map(path) })
}

/// One target of `diff --out-dir --json` or one job of `batch --json`.
pub fn diff_target(
    result: Result<Value, &Error>,
    old: &Path,
    new: &Path,
    patch: &Path,
    exit_code: u8,
) -> Value {
    match result {
        Ok(mut fields) => {
            fields["ok"] = json!(true);
            fields["exit_code"] = json!(0);
            fields
        }
        Err(e) => json!({
            "old": { "path": path(old) },
            "new": { "path": path(new) },
            "patch": { "path": path(patch) },
            "ok": false,
            "exit_code": exit_code,
            "error": error_fields(e),
        }),
    }
}

/// The fields of a diff's document.
pub fn diff_fields(
    r: &DiffReport,
    old: &Path,
    new: &Path,
    patch: &Path,
    info: Option<&PatchInfo>,
) -> Value {
    let p = &r.params;
    json!({
            "old": { "path": path(old), "size": r.old_size },
            "new": { "path": path(new), "size": r.new_size },
            "patch": { "path": path(patch), "size": r.patch_size },
            "ratio": r.patch_size as f64 / r.new_size.max(1) as f64,
            "references": { "named": r.references, "skipped": r.skipped_references },
            "plan": {
                "memory_cap_bytes": p.memory,
                "chunk_size": p.chunk_size,
                "anchor_spacing": p.sampling.spacing(),
                "anchors": r.anchors,
                "index_bytes_max": p.index_bytes,
                "reference_bytes_max": p.max_reference,
                "suffix_arrays_alive": p.alive,
                "workers": p.workers,
                "expected_peak_bytes": p.expected_peak(),
            },
            "work": {
                "chunks": r.chunks,
                "anchor_chunks": r.chunks - r.suffix_chunks,
                "suffix_chunks": r.suffix_chunks,
                "segments": r.segments,
                "suffix_reference_bytes": r.reference_bytes,
            },
            "contents": info.map(contents),
    })
}

/// `apply --json` and `verify --json`.
pub fn apply(
    command: &str,
    r: &ApplyReport,
    old: &Path,
    patch: &Path,
    output: Option<&Path>,
    started: Instant,
) -> Result<(), Error> {
    let mut fields = json!({
        "old": { "path": path(old), "size": r.header.old_size },
        "patch": { "path": path(patch), "format_version": r.header.version },
        "new": { "size": r.new_size, "blake3": hex(&r.new_hash) },
        "chunks": r.chunks,
        "chunks_kept": r.kept,
        "chunks_in_flight": r.in_flight,
        "memory_bound_bytes":
            r.memory_bound,
    });
    if let Some(output) = output {
        fields["new"]["path"] = json!(path(output));
    }
    if !r.references.is_empty() {
        fields["references"] = json!({
            "files": references(&r.references),
            "temporary_bytes": r.reference_bytes,
        });
    }
    if let Some(b) = r.transform_budget {
        fields["transform"] = json!({
            "memory_bytes": r.transform_memory,
            "threads": b.threads,
            "blocks_in_flight": b.blocks,
            "full_cache": b.full_cache,
        });
    }
    emit(command, 0, started, fields)
}

/// `inspect --json`.
pub fn inspect(i: &PatchInfo, patch: &Path, started: Instant) -> Result<(), Error> {
    let mut fields = contents(i);
    fields["patch"]["path"] = json!(path(patch));
    emit("inspect", 0, started, fields)
}

/// What a patch holds.
fn contents(i: &PatchInfo) -> Value {
    let h = &i.header;
    let stream = |k: usize| json!({ "decoded": i.raw[k], "compressed": i.compressed[k] });
    json!({
        "patch": { "size": i.patch_len, "format_version": h.version },
        "old": { "size": h.old_size, "blake3": hex(&h.old_hash) },
        "new": { "size": i.new_size(), "blake3": hex(&i.new_hash()) },
        "chunk_size": h.chunk_size,
        "chunks": h.chunk_count,
        "group_chunks": h.group,
        "streams": { "control": stream(0), "add": stream(1), "insert": stream(2) },
        "framing_bytes": i.framing,
        "ratio": i.ratio(),
        "transform": i.transform.as_ref().map(|t| json!({
            "filesystems_in_old": t.filesystems[0],
            "filesystems_in_new": t.filesystems[1],
            "old_expanded_size": t.old_expanded_size,
            "new_expanded_size": h.new_size,
            "blocks_copied_from_old": t.copied,
            "blocks_recompressed": t.recompressed,
            "blocks_left_compressed": t.stored,
            "section_bytes": t.section_len,
            "regions_in_old": regions(&t.regions[0]),
            "regions_in_new": regions(&t.regions[1]),
        })),
        "references": (!i.references.is_empty()).then(|| json!({
            "files": references(&i.references),
            "section_bytes": i.references_len,
        })),
    })
}

/// The files a patch made with references reads beside OLD: what a script fetches first.
fn references(list: &[spindiff::format::ReferenceEntry]) -> Value {
    list.iter()
        .map(|r| {
            json!({
                "name": r.name,
                "size": r.size,
                "sha256": r.sha256_hex(),
                "payload_size": r.payload_len,
                "payload_blake3": hex(&r.payload_hash),
                "offset": r.offset,
            })
        })
        .collect()
}

/// The file systems and streams a transformed patch expands on one side.
fn regions(list: &[spindiff::ExpandedRegion]) -> Value {
    list.iter()
        .map(|r| {
            json!({
                "kind": r.kind,
                "offset": r.offset,
                "stored_size": r.stored_size,
                "expanded_size": r.expanded_size,
            })
        })
        .collect()
}

/// The document for a command that failed: the error's kind, message and file, and the exit
/// status the process ends with. Written on a best-effort basis: the exit status says it all.
pub fn error(
    command: &str,
    kind: &str,
    message: &str,
    file: Option<&Path>,
    exit_code: u8,
    started: Instant,
) {
    let _ = emit(
        command,
        exit_code,
        started,
        json!({
            "error": { "kind": kind, "message": message, "path": file.map(path) },
        }),
    );
}

/// The document for `e`.
pub fn library_error(command: &str, e: &Error, exit_code: u8, started: Instant) {
    error(
        command,
        e.kind(),
        &e.to_string(),
        e.path(),
        exit_code,
        started,
    );
}
