//! What the commands tell a person: the plan and summary lines of `-v` on standard error, and
//! what `verify` and `inspect` print on standard output. A line that cannot be written to
//! standard output is the command's error (exit 3); one that cannot be written to standard
//! error is dropped (a verified result is not worth failing over its summary).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use spindiff::size::format_size;
use spindiff::{ApplyReport, DiffReport, Error, PatchInfo, Role};

/// Writes a line of the human summary to standard error, ignoring failures.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes a line to standard output; a failure is the command's error.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(stdout_failed)?
    };
}

/// The error for standard output that cannot be written.
pub fn stdout_failed(source: std::io::Error) -> Error {
    Error::Io {
        role: Role::Output,
        path: PathBuf::from("-"),
        action: "write to standard output",
        source,
    }
}

/// Whether `e` is standard output closed by its reader: reported by the exit status alone.
pub fn is_closed_stdout(e: &Error) -> bool {
    matches!(e, Error::Io { role: Role::Output, path, source, .. }
        if path == Path::new("-") && source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints `spindiff: error: ...` (unless standard output was closed by its reader).
pub fn error(e: &Error) {
    if !is_closed_stdout(e) {
        note!("spindiff: error: {e}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The process's peak resident set size, from the kernel.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The last line of `-v`: sizes, ratio, time and peak memory.
pub fn summary(old: u64, new: u64, patch: u64, started: Instant) {
    let ratio = if new == 0 {
        0.0
    } else {
        patch as f64 / new as f64 * 100.0
    };
    note!(
        "summary: OLD {}, NEW {}, patch {} ({ratio:.3}% of NEW), {:.2} s, peak memory {}",
        format_size(old),
        format_size(new),
        format_size(patch),
        started.elapsed().as_secs_f64(),
        peak_rss().map_or("unknown".into(), format_size)
    );
}

/// `diff --out-dir -v`: which target the lines that follow are about.
pub fn target(i: usize, count: usize, new: &Path, patch: &Path) {
    note!(
        "target {}/{count}: {} -> {}",
        i + 1,
        spindiff::quoted(new),
        spindiff::quoted(patch)
    );
}

/// The reference files a diff skipped (damaged packages), one warning line each.
pub fn skipped_references(r: &DiffReport) {
    for why in &r.skipped_references {
        note!("spindiff: warning: skipped: {why}");
    }
}

/// `diff -v`: the plan the cap gave and what the diff did.
pub fn diff(r: &DiffReport, started: Instant) {
    let p = &r.params;
    if r.references > 0 {
        note!(
            "references: the patch names {} (apply needs them: spindiff inspect lists them)",
            r.references
        );
    }
    note!(
        "plan: memory cap {}, chunk {}, anchor spacing {} ({} anchors, index <= {}), reference <= {}, {} suffix array(s) alive, {} worker thread(s), expected peak <= {}",
        format_size(p.memory),
        format_size(u64::from(p.chunk_size)),
        p.sampling.spacing(),
        r.anchors,
        format_size(p.index_bytes),
        format_size(p.max_reference as u64),
        p.alive,
        p.workers,
        format_size(p.expected_peak())
    );
    note!(
        "work: {} chunks, {} covered by anchor runs, {} matched with suffix arrays in {} segment(s) over {} of OLD",
        r.chunks,
        r.chunks - r.suffix_chunks,
        r.suffix_chunks,
        r.segments,
        format_size(r.reference_bytes)
    );
    summary(r.old_size, r.new_size, r.patch_size, started);
}

/// `apply -v`: what was kept, decoded and verified.
pub fn apply(r: &ApplyReport, resume: bool, patch: &Path, started: Instant) {
    if resume {
        note!(
            "resume: {} of {} chunks were already written and verified, kept (not rewritten); {} written",
            r.kept,
            r.chunks,
            r.chunks - r.kept
        );
    }
    if let Some(b) = r.transform_budget {
        note!(
            "transform: {} thread(s), {}, OLD's block cache {} ({} in all)",
            b.threads,
            if b.inline() {
                "blocks recompressed in turn as NEW is written".to_string()
            } else {
                format!("{} block(s) recompressed at once", b.blocks)
            },
            if b.full_cache {
                "two blocks, at least 4 MiB"
            } else {
                "two blocks"
            },
            format_size(r.transform_memory)
        );
    }
    if !r.references.is_empty() {
        note!(
            "references: {} found by SHA-256 and checked, payloads {} in temporary space",
            r.references.len(),
            format_size(r.reference_bytes)
        );
    }
    note!(
        "applied {} chunks of {} ({}; memory bound {}), output verified (BLAKE3 {})",
        r.chunks,
        format_size(u64::from(r.header.chunk_size)),
        if r.parallel() {
            format!("{} decoded at a time", r.in_flight)
        } else {
            "streamed".to_string()
        },
        format_size(r.memory_bound),
        hex(&r.new_hash)
    );
    let patch_len = std::fs::metadata(patch).map(|m| m.len()).unwrap_or(0);
    summary(r.header.old_size, r.new_size, patch_len, started);
}

/// `verify`'s verdict on standard output.
pub fn verified(r: &ApplyReport, with_new: bool) -> Result<(), Error> {
    say!(
        "OK: the patch turns OLD into {} bytes with BLAKE3 {}{}{}",
        r.new_size,
        hex(&r.new_hash),
        if r.references.is_empty() {
            String::new()
        } else {
            format!(", reading {} references", r.references.len())
        },
        if with_new { ", identical to NEW" } else { "" }
    );
    for e in &r.references {
        say!(
            "  reference {} {} bytes SHA-256 {}",
            e.name,
            e.size,
            e.sha256_hex()
        );
    }
    Ok(())
}

/// `inspect`'s table on standard output.
pub fn inspect(i: &PatchInfo) -> Result<(), Error> {
    let h = &i.header;
    say!("format version  {}", h.version);
    say!(
        "old size        {} ({})",
        h.old_size,
        format_size(h.old_size)
    );
    say!(
        "new size        {} ({})",
        i.new_size(),
        format_size(i.new_size())
    );
    say!("old blake3      {}", hex(&h.old_hash));
    say!("new blake3      {}", hex(&i.new_hash()));
    if let Some(t) = &i.transform {
        say!(
            "transform       file systems expanded: {} in OLD ({} -> {}), {} in NEW ({} -> {})",
            t.filesystems[0],
            format_size(h.old_size),
            format_size(t.old_expanded_size),
            t.filesystems[1],
            format_size(t.new_size),
            format_size(h.new_size)
        );
        for (side, regions) in ["OLD", "NEW"].iter().zip(&t.regions) {
            for r in regions {
                say!(
                    "  {side} {:<11} at {}: {} -> {}",
                    r.kind,
                    r.offset,
                    format_size(r.stored_size),
                    format_size(r.expanded_size)
                );
            }
        }
        say!(
            "NEW's blocks    {} copied from OLD, {} recompressed, {} left compressed; section {}",
            t.copied,
            t.recompressed,
            t.stored,
            format_size(t.section_len)
        );
    }
    if !i.references.is_empty() {
        say!(
            "references      {} (payloads {}; section {}): apply needs them (--ref-dir)",
            i.references.len(),
            format_size(i.references.iter().map(|r| r.payload_len).sum()),
            format_size(i.references_len)
        );
        for r in &i.references {
            say!("  {} {} bytes SHA-256 {}", r.name, r.size, r.sha256_hex());
        }
    }
    say!("chunk size      {}", format_size(u64::from(h.chunk_size)));
    say!("chunks          {}", h.chunk_count);
    if h.is_linked() {
        say!("streams         one zstd frame per {} chunks", h.group);
    }
    for (name, k) in [("control", 0), ("add", 1), ("insert", 2)] {
        say!(
            "{:<15} {} -> {}",
            format!("{name} stream"),
            format_size(i.raw[k]),
            format_size(i.compressed[k])
        );
    }
    say!("framing         {}", format_size(i.framing));
    say!(
        "patch size      {} ({})",
        i.patch_len,
        format_size(i.patch_len)
    );
    say!("ratio           {:.4}% of NEW", i.ratio() * 100.0);
    Ok(())
}
