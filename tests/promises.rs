//! Regression tests for the promises an adversarial review found broken (issue 9): OLD and the
//! patch are never written or removed, nothing half-written is left, no input hangs, a signal or
//! a failed allocation still ends in one line (or the signal's own status) with nothing left,
//! `--memory` holds for diff and apply whatever the input, and messages stay one line for any
//! name. Each test is named after what it guards; `SPINDIFF_TEST_BIN=/path/to/old/spindiff`
//! runs them against another build.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::Rng;
use common::cli::{BIN, Fixture, assert_fails, assert_ok, out_of_stderr, run_measured};
use spindiff::format::{self as container, ChunkHeader, ContainerWriter, EncodedChunk, Header};

/// Waits for `child` at most `limit`; kills it and fails the test if it is still running.
fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (it hangs)");
        }
        sleep(Duration::from_millis(10));
    }
}

/// Names in `dir` other than `keep`.
fn others(dir: &Path, keep: &[&str]) -> Vec<OsString> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !keep.iter().any(|k| OsStr::new(k) == n))
        .collect()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

// 1. The partial file can be OLD or the patch.
#[test]
fn a_partial_file_that_is_old_or_the_patch_is_refused_untouched() {
    let f = Fixture::new();
    fs::create_dir(f.path("a")).unwrap();
    let partial = f.path("a/.new.spindiff-partial");
    for resume in [false, true] {
        // OLD under the partial file's name
        fs::write(&partial, &f.old).unwrap();
        let mut args = vec!["apply", "a/.new.spindiff-partial", "patch", "-o", "a/new"];
        if resume {
            args.push("--resume");
        }
        let out = f.run(&args);
        assert_fails(&out, 2, "is the same file as OLD");
        assert!(fs::read(&partial).unwrap() == f.old, "OLD was modified");
        // the patch under that name
        fs::write(&partial, f.patch()).unwrap();
        let mut args = vec!["apply", "old", "a/.new.spindiff-partial", "-o", "a/new"];
        if resume {
            args.push("--resume");
        }
        let out = f.run(&args);
        assert_fails(&out, 2, "is the same file as PATCH");
        assert!(
            fs::read(&partial).unwrap() == f.patch(),
            "the patch was modified"
        );
        assert!(!f.path("a/new").exists());
    }
}

// 2. The lock is released before the rename: a second apply could lock and truncate the
// finished output. The window is forced deterministically in the unit tests of src/files.rs
// (`a_writer_that_opened_the_name_before_the_rename_does_not_touch_the_output`); here the
// race runs many times between real processes.
#[test]
fn concurrent_applies_to_one_output_never_leave_a_wrong_one() {
    let f = Fixture::new();
    let mut finished = 0;
    for _ in 0..150 {
        let start = || {
            Command::new(&*BIN)
                .args(["apply", "old", "patch", "-o", "out", "-q"])
                .current_dir(f.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (start(), start());
        for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            match out.status.code() {
                Some(0) => {
                    finished += 1;
                    assert!(
                        fs::read(f.path("out")).unwrap() == f.new,
                        "exit 0, wrong NEW"
                    );
                }
                Some(3) => assert!(out_of_stderr(&out).contains("another spindiff is writing")),
                other => panic!("exit {other:?}: {}", out_of_stderr(&out)),
            }
        }
        assert!(
            fs::read(f.path("out")).unwrap() == f.new,
            "a wrong NEW was left"
        );
        fs::remove_file(f.path("out")).unwrap();
    }
    assert!(finished >= 150);
    f.assert_clean();
}

// 3. `-o -` wrote into OLD or the patch when standard output was that file; standard input
// was not compared with the output.
#[test]
fn standard_streams_that_are_old_or_the_patch_are_refused() {
    let f = Fixture::new();
    let run_with = |args: &[&str], stdin: Stdio, stdout: Stdio| {
        Command::new(&*BIN)
            .args(args)
            .current_dir(f.dir.path())
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    // `>>name` (append) or `1<>name` (read-write, written in place)
    let opened = |name: &str, append: bool| -> Stdio {
        let mut o = fs::OpenOptions::new();
        if append {
            o.append(true);
        } else {
            o.read(true).write(true);
        }
        o.open(f.path(name)).unwrap().into()
    };
    let apply_to_stdout = ["apply", "old", "patch", "-o", "-"];
    for (stdout, role) in [
        (opened("old", true), "OLD"),
        (opened("old", false), "OLD"),
        (opened("patch", true), "PATCH"),
    ] {
        let out = run_with(&apply_to_stdout, Stdio::null(), stdout);
        assert_fails(
            &out,
            2,
            &format!("standard output is the same file as {role}"),
        );
    }
    let patch_in = fs::File::open(f.path("patch")).unwrap();
    let out = run_with(
        &["apply", "old", "-", "-o", "patch"],
        patch_in.into(),
        Stdio::null(),
    );
    assert_fails(&out, 2, "is the same file as PATCH '-' (standard input)");
    // diff writing its patch to standard output that is OLD or NEW
    for (input, role) in [("old", "OLD"), ("new", "NEW")] {
        let out = run_with(
            &["diff", "old", "new", "-o", "-"],
            Stdio::null(),
            opened(input, true),
        );
        assert_fails(
            &out,
            2,
            &format!("standard output is the same file as {role}"),
        );
    }
    assert!(
        fs::read(f.path("new")).unwrap() == f.new,
        "NEW was modified"
    );
    let before = f.patch();
    assert_eq!(
        before.len() as u64,
        fs::metadata(f.path("patch")).unwrap().len()
    );
    f.assert_clean();
}

// 4. An output that is not a regular file was replaced by one.
#[test]
fn outputs_that_are_not_regular_files_are_written_never_replaced() {
    let f = Fixture::new();
    // a character device (a copy of /dev/null; needs root, which CI is)
    let dev = f.path("null-copy");
    let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path; makedev(1, 3) is /dev/null's device number.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
    if made {
        for args in [
            &["apply", "old", "patch", "-o", "null-copy"][..],
            &["diff", "old", "new", "-o", "null-copy"][..],
        ] {
            assert_ok(&f.run(args));
            assert!(
                fs::symlink_metadata(&dev)
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
        }
    } else {
        eprintln!("not root: the character-device case is skipped");
    }
    // a FIFO: written as a stream to whoever reads it
    let fifo = f.path("fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    assert_ok(&f.run(&["apply", "old", "patch", "-o", "fifo"]));
    assert!(reader.join().unwrap() == f.new);
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    // a symbolic link to standard output: followed, the link stays
    std::os::unix::fs::symlink("/proc/self/fd/1", f.path("to-stdout")).unwrap();
    let out = Command::new(&*BIN)
        .args(["apply", "old", "patch", "-o", "to-stdout"])
        .current_dir(f.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(out.stdout == f.new);
    assert!(
        fs::symlink_metadata(f.path("to-stdout"))
            .unwrap()
            .is_symlink()
    );
    // a symbolic link to a regular file: that file is replaced, the link stays
    fs::write(f.path("real"), b"previous").unwrap();
    std::os::unix::fs::symlink("real", f.path("link")).unwrap();
    assert_ok(&f.run(&["apply", "old", "patch", "-o", "link"]));
    assert!(fs::symlink_metadata(f.path("link")).unwrap().is_symlink());
    assert!(fs::read(f.path("real")).unwrap() == f.new);
    // a directory is refused
    fs::create_dir(f.path("dir")).unwrap();
    assert_fails(
        &f.run(&["apply", "old", "patch", "-o", "dir"]),
        3,
        "a directory",
    );
}

// 5. FIFO inputs hung forever in open().
#[test]
fn fifo_inputs_are_refused_at_once() {
    let f = Fixture::new();
    mkfifo(&f.path("fifo"));
    for (args, who) in [
        (&["apply", "fifo", "patch", "-o", "out"][..], "OLD"),
        (&["diff", "fifo", "new", "-o", "p2"][..], "OLD"),
        (&["diff", "old", "fifo", "-o", "p2"][..], "NEW"),
        (&["verify", "fifo", "patch"][..], "OLD"),
        (&["verify", "old", "patch", "fifo"][..], "NEW"),
    ] {
        let child = Command::new(&*BIN)
            .args(args)
            .current_dir(f.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_within(child, Duration::from_secs(20), &args.join(" "));
        assert_fails(&out, 3, &format!("{who} 'fifo': cannot read: it is a FIFO"));
    }
    // a FIFO patch is a stream, read as from a pipe
    let fifo = f.path("fifo");
    let patch = f.patch();
    let writer = std::thread::spawn(move || fs::write(fifo, patch).unwrap());
    assert_ok(&f.run(&["apply", "old", "fifo", "-o", "out"]));
    writer.join().unwrap();
    assert!(fs::read(f.path("out")).unwrap() == f.new);
}

/// A pair large enough that a diff of it runs for a while: OLD of `old_len` bytes, NEW = OLD
/// with edits.
fn large_pair(dir: &Path, old_len: usize) -> (Vec<u8>, Vec<u8>) {
    let old = common::binary_like(old_len, 11);
    let new = common::edit(&old, &common::release_edits(old.len(), 40, 12));
    fs::write(dir.join("old"), &old).unwrap();
    fs::write(dir.join("new"), &new).unwrap();
    (old, new)
}

/// Polls `ready` until it holds, failing if `child` ends first or a minute passes.
fn wait_until(child: &mut Child, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "the diff ended first");
        assert!(started.elapsed() < Duration::from_secs(60));
        sleep(Duration::from_millis(1));
    }
}

/// Waits until `pid` has `file` mapped.
fn wait_for_mapping(pid: u32, file: &Path, child: &mut Child) {
    let name = file.to_str().unwrap();
    wait_until(child, || {
        fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .contains(name)
    });
}

// 6. Truncating OLD or NEW during a diff killed it with SIGBUS.
#[test]
fn an_input_truncated_during_a_diff_is_one_line_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    large_pair(dir.path(), 96 << 20);
    for (victim, role) in [("new", "NEW"), ("old", "OLD")] {
        let mut child = Command::new(&*BIN)
            .args(["diff", "old", "new", "-o", "p.spd", "--threads", "2"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let path = dir.path().join(victim);
        wait_for_mapping(child.id(), &path, &mut child);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), None, "killed by a signal");
        assert_fails(
            &out,
            3,
            &format!("{role} '{victim}': cannot read: it changed"),
        );
        assert!(
            others(dir.path(), &["old", "new"]).is_empty(),
            "left behind"
        );
        large_pair(dir.path(), 96 << 20);
    }
}

/// Waits until `pid` holds a file open in `dir` that is not one of `inputs`: diff's output.
fn wait_for_output_file(pid: u32, dir: &Path, inputs: &[&str], child: &mut Child) {
    let dir = fs::canonicalize(dir).unwrap();
    wait_until(child, || {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                    .any(|p| p.starts_with(&dir) && !inputs.iter().any(|i| p.ends_with(i)))
            })
            .unwrap_or(false)
    });
}

// 7. An interrupted diff left `.PATCH.XXXXXX.spindiff-tmp` behind.
#[test]
fn an_interrupted_diff_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    large_pair(dir.path(), 64 << 20);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGKILL] {
        let mut command = Command::new(&*BIN);
        command
            .args(["diff", "old", "new", "-o", "p.spd", "--threads", "2"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A test run in the background (`cmd &` in a script) inherits SIGINT ignored, and
        // spindiff leaves an ignored signal ignored, as nohup expects: the diff must start as
        // one run from a terminal does.
        // SAFETY: between fork and exec only async-signal-safe calls (signal) are made.
        unsafe {
            command.pre_exec(move || {
                libc::signal(signal, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        wait_for_output_file(child.id(), dir.path(), &["old", "new"], &mut child);
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(signal),
            "ended by the signal itself, not {status:?}"
        );
        assert!(
            others(dir.path(), &["old", "new"]).is_empty(),
            "left behind after signal {signal}: {:?}",
            others(dir.path(), &["old", "new"])
        );
    }
}

// 8. inspect and verify panicked when standard output could not be written.
#[test]
fn unwritable_standard_output_is_one_line_not_a_panic() {
    let f = Fixture::new();
    for args in [&["inspect", "patch"][..], &["verify", "old", "patch"][..]] {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(&*BIN)
            .args(args)
            .current_dir(f.dir.path())
            .stdin(Stdio::null())
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_fails(&out, 3, "cannot write to standard output: No space left");
        // a pipe whose reader is gone: quietly, with the same status
        let mut fds = [0; 2];
        // SAFETY: pipe fills two new descriptors; the read end is closed at once.
        let writer = unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            libc::close(fds[0]);
            std::os::fd::FromRawFd::from_raw_fd(fds[1])
        };
        let writer: fs::File = writer;
        let out = Command::new(&*BIN)
            .args(args)
            .current_dir(f.dir.path())
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", out_of_stderr(&out));
        assert!(out.stderr.is_empty(), "{}", out_of_stderr(&out));
    }
}

// 9. A failed allocation aborted (exit 134) and left the temporary file.
#[test]
fn a_failed_allocation_is_one_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    large_pair(dir.path(), 64 << 20);
    // Limits from where mapping the inputs fails to where the diff fits: allocations fail at
    // different points on the way (the mappings, the index, the suffix arrays, zstd).
    let mut out_of_memory = 0;
    for kib in (100_000..=260_000).step_by(20_000) {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("ulimit -v {kib}; exec \"$0\" \"$@\""))
            .arg(&*BIN)
            .args(["diff", "old", "new", "-o", "p.spd", "--memory", "256M"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), None, "killed by a signal");
        assert!(
            others(dir.path(), &["old", "new", "p.spd"]).is_empty(),
            "left behind"
        );
        if out.status.success() {
            fs::remove_file(dir.path().join("p.spd")).unwrap();
            continue;
        }
        assert_fails(&out, 3, "spindiff: error: ");
        assert!(!dir.path().join("p.spd").exists(), "a patch after an error");
        out_of_memory += usize::from(out_of_stderr(&out).contains("out of memory"));
    }
    assert!(out_of_memory > 0, "no limit made an allocation fail");
}

/// The control stream of one operation copying all of `old`.
fn copy_all_of(old: &[u8]) -> Vec<u8> {
    spindiff::format::control_stream(&[spindiff::format::Op {
        old_pos: 0,
        copy: old.len() as u32,
        insert: 0,
    }])
}

/// The header of chunk `index` of a patch whose chunks are each a copy of all of `old`: its
/// decoded control stream `ctrl` (from [`copy_all_of`]) coded in `coded` bytes, nothing else.
fn copy_all_chunk(old: &[u8], index: u64, ctrl: &[u8], coded: usize) -> ChunkHeader {
    ChunkHeader {
        index,
        new_offset: index * old.len() as u64,
        new_len: old.len() as u32,
        compressed: [coded as u32, 0, 0],
        raw: [ctrl.len() as u32, 0, 0],
        stored: [false; 3],
        output_hash: xxhash_rust::xxh3::xxh3_128(old),
    }
}

/// Writes a valid patch of `chunks` chunks of 4 KiB, each a copy of all of OLD (4 KiB), built
/// with the format's public API.
fn many_chunk_patch(path: &Path, old: &[u8], chunks: u64) {
    let len = old.len() as u32;
    let ctrl = copy_all_of(old);
    let frame = zstd::bulk::compress(&ctrl, 1).unwrap();
    let mut new_hash = blake3::Hasher::new();
    for _ in 0..chunks {
        new_hash.update(old);
    }
    let new_size = chunks * u64::from(len);
    let header = Header {
        version: container::VERSION_PLAIN,
        transform: false,
        references: false,
        group: 0,
        old_size: u64::from(len),
        new_size,
        old_hash: *blake3::hash(old).as_bytes(),
        new_hash: *new_hash.finalize().as_bytes(),
        chunk_size: len,
        chunk_count: chunks,
        windows: Default::default(),
    };
    let out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut w = ContainerWriter::new(out, &header).unwrap();
    for i in 0..chunks {
        let chunk = EncodedChunk {
            header: copy_all_chunk(old, i, &ctrl, frame.len()),
            payload: frame.clone(),
        };
        w.write_chunk(&chunk).unwrap();
    }
    let (mut out, _) = w.finish().unwrap();
    out.flush().unwrap();
}

// 10. apply --memory was exceeded by memory that grows with the chunk count.
#[test]
fn apply_memory_does_not_grow_with_the_chunk_count() {
    let dir = tempfile::tempdir().unwrap();
    let old = Rng(5).bytes(4096);
    fs::write(dir.path().join("old"), &old).unwrap();
    // a valid patch of 256 Ki chunks (1 GiB of output), applied by index and streamed
    let chunks = 256 << 10;
    many_chunk_patch(&dir.path().join("p.spd"), &old, chunks);
    for (threads, patch) in [("3", "p.spd"), ("1", "p.spd"), ("1", "-")] {
        let stdin = (patch == "-").then(|| fs::File::open(dir.path().join("p.spd")).unwrap());
        let (out, peak_kib) = run_measured(
            dir.path(),
            &[
                "verify",
                "old",
                patch,
                "--memory",
                "12M",
                "--threads",
                threads,
            ],
            stdin,
        );
        assert_ok(&out);
        assert!(
            peak_kib <= 12 << 10,
            "verify --threads {threads} of {patch}: peak {peak_kib} KiB over --memory 12M"
        );
    }
    // a forged index of 1.25 M entries with valid checksums, behind chunks that are zeros
    let count = 1_250_000u64;
    let header = Header {
        version: container::VERSION_PLAIN,
        transform: false,
        references: false,
        group: 0,
        old_size: 4096,
        new_size: count * 4096,
        old_hash: *blake3::hash(&old).as_bytes(),
        new_hash: [0; 32],
        chunk_size: 4096,
        chunk_count: count,
        windows: Default::default(),
    };
    let index_at = container::HEADER_LEN as u64 + count * container::CHUNK_HEADER_LEN as u64;
    let entries: Vec<container::IndexEntry> = (0..count)
        .map(|i| container::IndexEntry {
            patch_offset: container::HEADER_LEN as u64 + i * container::CHUNK_HEADER_LEN as u64,
            new_offset: i * 4096,
        })
        .collect();
    let index = container::index_to_bytes(&entries);
    let footer = container::Footer {
        index_offset: index_at,
        index_len: index.len() as u64,
    };
    let mut forged = std::io::BufWriter::new(fs::File::create(dir.path().join("forged")).unwrap());
    forged.write_all(&header.to_bytes()).unwrap();
    forged
        .write_all(&vec![0u8; (index_at as usize) - container::HEADER_LEN])
        .unwrap();
    forged.write_all(&index).unwrap();
    forged.write_all(&footer.to_bytes()).unwrap();
    forged.into_inner().unwrap().sync_all().unwrap();
    drop((entries, index));
    for threads in ["3", "1"] {
        let (out, peak_kib) = run_measured(
            dir.path(),
            &[
                "apply",
                "old",
                "forged",
                "-o",
                "out",
                "--memory",
                "16M",
                "--threads",
                threads,
            ],
            None,
        );
        assert_fails(&out, 1, "corrupt at byte 120");
        assert!(
            peak_kib <= 16 << 10,
            "--threads {threads}: peak {peak_kib} KiB over --memory 16M"
        );
        assert!(!dir.path().join("out").exists());
    }
}

// 11. diff --memory was exceeded by mapped OLD pages when NEW is made of small pieces of OLD.
#[test]
fn diff_memory_cap_holds_when_new_is_old_shuffled_in_small_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let old = common::binary_like(256 << 20, 21);
    let mut rng = Rng(22);
    let mut new = Vec::with_capacity(32 << 20);
    while new.len() < 32 << 20 {
        let b = rng.below(old.len() / 4096) * 4096;
        new.extend_from_slice(&old[b..b + 4096]);
    }
    fs::write(dir.path().join("old"), &old).unwrap();
    fs::write(dir.path().join("new"), &new).unwrap();
    drop(old);
    drop(new);
    let (out, peak_kib) = run_measured(
        dir.path(),
        &[
            "diff",
            "old",
            "new",
            "-o",
            "p.spd",
            "--memory",
            "240M",
            "--threads",
            "2",
        ],
        None,
    );
    assert_ok(&out);
    assert!(
        peak_kib <= 240 << 10,
        "peak {peak_kib} KiB over --memory 240M"
    );
    let out = Command::new(&*BIN)
        .args(["verify", "old", "p.spd", "new"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_ok(&out);
}

// 12. The "cap too small" message named a minimum that was itself refused.
#[test]
fn the_smallest_memory_named_is_accepted_and_one_less_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let old = common::binary_like(96 << 20, 31);
    let new = common::edit(&old, &common::release_edits(old.len(), 10, 32));
    fs::write(dir.path().join("old"), &old).unwrap();
    fs::write(dir.path().join("new"), &new[..1 << 20]).unwrap();
    let run = |memory: &str| {
        Command::new(&*BIN)
            .args(["diff", "old", "new", "-o", "p.spd", "--memory", memory])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("1M");
    assert_fails(&out, 2, "is too small for this OLD");
    let err = out_of_stderr(&out);
    let need: u64 = err
        .split("at least ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no minimum in: {err}"));
    assert_ok(&run(&format!("{need}M")));
    assert_fails(
        &run(&format!("{}M", need - 1)),
        2,
        &format!("at least {need} MiB"),
    );
}

/// Issue 22, item 5: `diff --memory 128M` is accepted for a 1 GiB OLD (the plan takes 1 MiB
/// chunks where 4 MiB ones do not fit), stays under it, and its patch applies.
#[test]
fn diff_memory_128m_is_enough_for_a_1_gib_old() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = common::binary_like(8 << 20, 41);
    fs::write(d.join("old"), &head).unwrap();
    // the rest a hole: a 1 GiB file, cheap to make
    fs::File::options()
        .write(true)
        .open(d.join("old"))
        .and_then(|f| f.set_len(1 << 30))
        .unwrap();
    let mut start = head;
    start.resize(24 << 20, 0);
    let new = common::edit(&start, &common::release_edits(start.len(), 20, 42));
    fs::write(d.join("new"), &new).unwrap();
    let args = [
        "diff",
        "old",
        "new",
        "-o",
        "p",
        "--memory",
        "128M",
        "--threads",
        "2",
    ];
    let (out, peak_kib) = common::cli::run_measured(d, &args, None);
    assert_ok(&out);
    assert!(peak_kib <= 128 << 10, "peak {} MiB", peak_kib >> 10);
    let info = spindiff::inspect(&d.join("p")).unwrap();
    assert_eq!(info.header.chunk_size, 1 << 20);
    let (out, _) = common::cli::run_measured(d, &["apply", "old", "p", "-o", "out"], None);
    assert_ok(&out);
    assert!(fs::read(d.join("out")).unwrap() == new);
}

/// The patch with chunk 0's last stream followed by `extra` (and its length counted).
fn with_bytes_after_a_stream(patch: &[u8], extra: &[u8]) -> Vec<u8> {
    let header = Header::parse(
        patch[..container::HEADER_LEN].try_into().unwrap(),
        Path::new("p"),
    )
    .unwrap();
    let mut reader = container::ContainerReader::new(patch, Path::new("p")).unwrap();
    let mut chunks = Vec::new();
    while let Some(c) = reader.next_chunk().unwrap() {
        chunks.push(EncodedChunk {
            header: c.header,
            payload: c.payload,
        });
    }
    let last = (0..3)
        .rev()
        .find(|&s| chunks[0].header.compressed[s] > 0)
        .unwrap();
    chunks[0].payload.extend_from_slice(extra);
    chunks[0].header.compressed[last] += extra.len() as u32;
    let mut w = ContainerWriter::new(Vec::new(), &header).unwrap();
    for c in &chunks {
        w.write_chunk(c).unwrap();
    }
    w.finish().unwrap().0
}

// 13. A stream of two zstd frames (a skippable or empty frame after the first) was accepted.
// (Version 1's check is in tests/golden.rs; here, version 3: a chunk's part of its group's
// frame followed by more bytes.)
#[test]
fn a_stream_of_more_than_one_zstd_frame_is_rejected() {
    let f = Fixture::new();
    let skippable = [0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0];
    let empty = zstd::bulk::compress(&[], 3).unwrap();
    for extra in [&skippable[..], &empty[..]] {
        let bad = with_bytes_after_a_stream(&f.patch(), extra);
        f.apply_bad(&bad, 1, "chunk 0: stream 2");
    }
}

// 14. An error for a path containing a newline spanned two lines; escapes were printed raw.
#[test]
fn names_with_control_characters_are_escaped_in_messages() {
    let f = Fixture::new();
    for (name, shown) in [
        ("missing\ndir/new", "'missing\\ndir/new'"),
        ("\u{1b}[31mred/new", "'\\u{1b}[31mred/new'"),
    ] {
        let out = f.run(&["apply", "old", "patch", "-o", name]);
        assert_fails(&out, 3, shown);
        assert!(!out.stderr.contains(&0x1b), "a raw escape was printed");
    }
    let out = Command::new(&*BIN)
        .args(["apply", "old"])
        .arg(OsString::from_vec(b"bad\xffname".to_vec()))
        .args(["-o", "out"])
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    assert_fails(&out, 3, "'bad\\xffname'");
}

// 15. Different non-UTF-8 names shared one partial file (names were converted lossily).
#[test]
fn non_utf8_output_names_get_their_own_partial_files() {
    let f = Fixture::new();
    let a = OsString::from_vec(b"y\xff".to_vec());
    let b = OsString::from_vec(b"y\xfe".to_vec());
    // the first apply holds its partial file open (its patch is still coming)
    let (first, stdin) = f.start_apply_to_from_pipe(&a, &f.patch()[..1000]);
    let started = Instant::now();
    while !f.path(".y\u{fffd}.spindiff-partial").exists()
        && !f
            .dir
            .path()
            .join(OsString::from_vec(b".y\xff.spindiff-partial".to_vec()))
            .exists()
    {
        assert!(started.elapsed() < Duration::from_secs(60));
        sleep(Duration::from_millis(5));
    }
    let out = Command::new(&*BIN)
        .args(["apply", "old", "patch", "-o"])
        .arg(&b)
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(fs::read(f.dir.path().join(&b)).unwrap() == f.new);
    let mut stdin = stdin;
    stdin.write_all(&f.patch()[1000..]).unwrap();
    drop(stdin);
    let out = first.wait_with_output().unwrap();
    assert_ok(&out);
    assert!(fs::read(f.dir.path().join(&a)).unwrap() == f.new);
}

// 16. A 240-byte output name could not be written (the partial or temporary name passed 255).
#[test]
fn output_names_up_to_the_file_system_limit_work() {
    let f = Fixture::new();
    for len in [240, 250, 255] {
        let name = "n".repeat(len);
        assert_ok(&f.run(&["apply", "old", "patch", "-o", &name]));
        assert!(fs::read(f.path(&name)).unwrap() == f.new);
        fs::remove_file(f.path(&name)).unwrap();
        assert_ok(&f.run(&[
            "diff",
            "old",
            "new",
            "-o",
            &name,
            "--chunk-size",
            "64K",
            "--memory",
            "256M",
        ]));
        assert!(fs::read(f.path(&name)).unwrap() == f.patch());
        fs::remove_file(f.path(&name)).unwrap();
    }
    f.assert_clean();
}

// 17. --resume with the wrong OLD kept the partial file with --threads 1, deleted it with 2 or 3.
#[test]
fn resume_with_the_wrong_old_keeps_the_partial_file_whatever_the_threads() {
    let f = Fixture::new();
    let mut wrong = f.old.clone();
    wrong[500_000] ^= 1;
    fs::write(f.path("wrong"), &wrong).unwrap();
    let partial = f.path(".out.spindiff-partial");
    let kept = &f.new[..3 << 16]; // three verified 64 KiB chunks
    for threads in ["1", "2", "3"] {
        fs::write(&partial, kept).unwrap();
        let out = f.run(&[
            "apply",
            "wrong",
            "patch",
            "-o",
            "out",
            "--resume",
            "--threads",
            threads,
        ]);
        assert_fails(
            &out,
            1,
            "OLD 'wrong': not the file this patch was made from",
        );
        let left = fs::read(&partial).expect("the partial file was removed");
        assert!(left.len() >= kept.len() && left[..kept.len()] == *kept);
        assert!(!f.path("out").exists());
        assert_eq!(fs::metadata(&partial).unwrap().nlink(), 1);
    }
}

/// The header of a one-chunk patch of format `version` whose chunk copies all of `old`, its
/// frames' windows `windows` (version 10; the default before).
fn copy_all_header(old: &[u8], version: u16, windows: container::FrameWindows) -> Header {
    let len = old.len() as u32;
    Header {
        version,
        transform: false,
        references: false,
        group: 16,
        old_size: u64::from(len),
        new_size: u64::from(len),
        old_hash: *blake3::hash(old).as_bytes(),
        new_hash: *blake3::hash(old).as_bytes(),
        chunk_size: len,
        chunk_count: 1,
        windows,
    }
}

/// `data` as one zstd frame of window 2^`log`: flushed first, so that zstd does not know its
/// size and declares the window itself (a single call would size it from the input).
fn frame_of_window(data: &[u8], log: u32) -> Vec<u8> {
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, zstd_sys};
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::WindowLog(log)).unwrap();
    let mut out = Vec::with_capacity(1024);
    for (data, op) in [
        (data, zstd_sys::ZSTD_EndDirective::ZSTD_e_flush),
        (&[][..], zstd_sys::ZSTD_EndDirective::ZSTD_e_end),
    ] {
        let mut input = InBuffer::around(data);
        let pos = out.len();
        let mut output = OutBuffer::around_pos(&mut out, pos);
        let left = cctx.compress_stream2(&mut output, &mut input, op).unwrap();
        assert_eq!(left, 0);
    }
    let declared = zstd::zstd_safe::get_frame_content_size(&out).unwrap();
    assert_eq!(declared, None, "the frame records no content size");
    out
}

/// Writes the patch of `header` and its one `chunk` to `path`.
fn write_one_chunk_patch(path: &Path, header: &Header, chunk: &EncodedChunk) {
    let mut w = ContainerWriter::new(Vec::new(), header).unwrap();
    w.write_chunk(chunk).unwrap();
    fs::write(path, w.finish().unwrap().0).unwrap();
}

/// Applies `p.spd` to `old` in `dir` with `args` besides; checks that it gives `old` again
/// (`ok`) or fails on chunk 0's control stream, leaving no output.
fn applies_or_control_refused(dir: &Path, old: &[u8], args: &[&str], ok: bool) {
    let out = Command::new(&*BIN)
        .args(["apply", "old", "p.spd", "-o", "out"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    if ok {
        assert_ok(&out);
        assert!(fs::read(dir.join("out")).unwrap() == old);
        fs::remove_file(dir.join("out")).unwrap();
    } else {
        assert_fails(&out, 1, "chunk 0: stream 0 does not decode");
        assert!(!dir.join("out").exists());
    }
}

// 18. (format version 3) A linked frame may declare any window; a decoder context sized from it
// would grow with the patch, not with the chunk size. A frame asking for more than twice the
// chunk is refused before anything is allocated for it, whatever the memory cap.
#[test]
fn a_linked_frame_asking_for_a_window_over_twice_the_chunk_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = Rng(31).bytes(64 << 10);
    fs::write(dir.path().join("old"), &old).unwrap();
    let ctrl = copy_all_of(&old);
    let header = copy_all_header(&old, container::VERSION_LINKED, Default::default());
    for (log, ok) in [(16, true), (17, true), (18, false), (24, false)] {
        let payload = frame_of_window(&ctrl, log);
        let chunk = EncodedChunk {
            header: copy_all_chunk(&old, 0, &ctrl, payload.len()),
            payload,
        };
        write_one_chunk_patch(&dir.path().join("p.spd"), &header, &chunk);
        for threads in ["1", "3"] {
            applies_or_control_refused(dir.path(), &old, &["--threads", threads], ok);
        }
    }
}

// 19. (format version 10, issue 22) A version-10 header declares its frames' windows and bounds a
// chunk's streams together, and apply's memory bound is computed from both: a frame asking for
// more than the declared window, a header declaring a window outside the format's range and a
// chunk whose streams pass 1.25 times its output together are each refused, never decoded.
#[test]
fn issue22_a_version_10_patch_is_held_to_what_it_declares() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = Rng(37).bytes(64 << 10);
    fs::write(d.join("old"), &old).unwrap();
    let len = old.len() as u32;
    let ctrl = copy_all_of(&old);
    let header = |small_log: u8| {
        let windows = container::FrameWindows {
            insert_log: 16,
            small_log,
        };
        copy_all_header(&old, container::VERSION_DECLARED, windows)
    };
    let patch = d.join("p.spd");
    let args = ["-v", "--threads", "1"];
    // the control frame against a declared window of 2^12: within it, then over it
    for (log, ok) in [(11, true), (12, true), (13, false), (17, false)] {
        let payload = frame_of_window(&ctrl, log);
        let chunk = EncodedChunk {
            header: copy_all_chunk(&old, 0, &ctrl, payload.len()),
            payload,
        };
        write_one_chunk_patch(&patch, &header(12), &chunk);
        applies_or_control_refused(d, &old, &args, ok);
    }
    let apply = || {
        Command::new(&*BIN)
            .args(["apply", "old", "p.spd", "-o", "out"])
            .args(args)
            .current_dir(d)
            .output()
            .unwrap()
    };
    // windows outside 2^10 .. twice the chunk (2^17 here)
    let payload = frame_of_window(&ctrl, 12);
    let chunk = EncodedChunk {
        header: copy_all_chunk(&old, 0, &ctrl, payload.len()),
        payload,
    };
    for bad in [9, 18, 0] {
        write_one_chunk_patch(&patch, &header(bad), &chunk);
        assert_fails(&apply(), 1, "frame windows");
        assert!(!d.join("out").exists());
    }
    // streams together past 1.25 times the output: a control stream of the output's length plus
    // the slack (allowed alone) and an insert stream of a third of it
    let mut long = chunk.header.clone();
    long.raw = [len + 64, 0, len / 3];
    long.compressed = [len + 64, 0, len / 3];
    long.stored = [true, false, true];
    let chunk = EncodedChunk {
        header: long,
        payload: vec![0; (len + 64 + len / 3) as usize],
    };
    write_one_chunk_patch(&patch, &header(12), &chunk);
    assert_fails(
        &apply(),
        1,
        "streams longer together than the format allows",
    );
    assert!(!d.join("out").exists());
}
