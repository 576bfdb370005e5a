//! The `spindiff` command: a thin wrapper over the library that parses options, draws progress
//! bars and renders errors as one line with an exit code.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use spindiff::size::{format_size, parse_size};
use spindiff::{ApplyOptions, DiffOptions, Error, Progress, Role};

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  bad input: a corrupt or truncated patch, the wrong OLD, output that does not verify,
     a patch needing more memory than apply --memory allows
  2  usage: unknown options or nonsense values
  3  I/O and resources: a file that cannot be opened, read, written or renamed (missing, no
     space, no permission, changed while read), standard output that cannot be written, or
     memory that ran out";

/// The system allocator, except that a failed allocation ends the process with one line and
/// exit status 3 after removing the files spindiff was writing (see spindiff::cleanup), where
/// Rust's default would abort with a core dump and leave them.
struct Allocator;

// SAFETY: every method forwards to System with the same arguments; only a null result, which
// System reports for a failed allocation, is handled differently (the process ends).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            spindiff::cleanup::out_of_memory(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            spindiff::cleanup::out_of_memory(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            spindiff::cleanup::out_of_memory(new_size);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// Writes a line of the human summary to standard error. A summary that cannot be written
/// (standard error closed or full) is not worth failing a verified result for.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes what a command reports to standard output; a failure to write is the command's error.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(stdout_failed)?
    };
}

fn stdout_failed(source: std::io::Error) -> Error {
    Error::Io {
        role: Role::Output,
        path: PathBuf::from("-"),
        action: "write to standard output",
        source,
    }
}

/// Binary deltas of huge images (live ISOs, squashfs, tarballs, native libraries).
///
/// `diff` makes a patch under a hard memory cap; `apply` rebuilds NEW from OLD and the patch in
/// small, constant memory, verifying every chunk and the whole result before NEW appears.
#[derive(Parser)]
#[command(name = "spindiff", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a patch that turns OLD into NEW.
    #[command(
        after_help = "Example: spindiff diff base.iso spin-de.iso -o spin-de.spd --memory 512M"
    )]
    Diff {
        /// The base file the patch will be applied to.
        old: PathBuf,
        /// The file the patch produces.
        new: PathBuf,
        /// Where to write the patch: a file appears only when complete (until then it has no
        /// name); - is standard output; an existing device or FIFO is written in place.
        #[arg(short, long, value_name = "PATCH")]
        output: PathBuf,
        /// Peak memory cap for the whole process, mapped file pages included (e.g. 512M, 2G).
        #[arg(long, default_value = "1G", value_parser = parse_size, value_name = "SIZE")]
        memory: u64,
        /// zstd compression level of the patch streams (1-22; higher is smaller and slower).
        #[arg(long, default_value_t = spindiff::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// Output bytes per chunk (4K to 64M). Apply needs about eight chunks' worth of memory
        /// per chunk it decodes at once; smaller chunks lower that, larger ones compress
        /// slightly better.
        #[arg(long, default_value = "4M", value_parser = parse_size, value_name = "SIZE")]
        chunk_size: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild NEW from OLD and a patch.
    #[command(
        after_help = "Example: spindiff apply base.iso spin-de.spd -o spin-de.iso\n         curl -s URL | spindiff apply base.iso - -o spin-de.iso"
    )]
    Apply {
        /// The base file the patch was made from (never modified).
        old: PathBuf,
        /// The patch, or - to read it from standard input.
        patch: PathBuf,
        /// Where to write NEW, or - for standard output. A file appears only once verified;
        /// until then it is written to .NAME.spindiff-partial beside it. An existing device or
        /// FIFO is written in place, as standard output is; a symbolic link is followed.
        #[arg(short, long, value_name = "NEW")]
        output: PathBuf,
        /// Continue an apply that was killed: keep the chunks its partial file already holds
        /// with the right checksums (not rewritten; -v counts them), write the rest.
        #[arg(long)]
        resume: bool,
        /// Memory cap: fewer chunks are decoded at once to stay under it; a patch whose chunks
        /// need more even one at a time is refused before anything is written (e.g. 64M).
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        memory: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Check that a patch applies to OLD (and yields NEW, if given) without writing anything.
    Verify {
        old: PathBuf,
        /// The patch, or - for standard input.
        patch: PathBuf,
        /// Optionally, the file the patch should produce.
        new: Option<PathBuf>,
        /// Memory cap, as for apply.
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        memory: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Show what a patch holds: sizes, hashes, chunks, stream sizes and ratio.
    Inspect {
        /// The patch, or - for standard input.
        patch: PathBuf,
    },
    /// Write the man pages or print a shell completion script, generated from these same
    /// definitions.
    #[command(subcommand)]
    Generate(Generated),
}

/// What `spindiff generate` produces.
#[derive(Subcommand)]
enum Generated {
    /// Write spindiff.1 and one page per command (spindiff-diff.1, ...) into DIR.
    #[command(after_help = "Example: spindiff generate man /usr/local/share/man/man1")]
    Man {
        /// The directory to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// Print a completion script for SHELL on standard output.
    #[command(
        after_help = "Example: spindiff generate completions bash > /etc/bash_completion.d/spindiff"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Args)]
struct Common {
    /// Worker threads (default: all cores). Never changes the patch.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Print the plan and a summary (sizes, ratio, time, peak memory).
    #[arg(short, long)]
    verbose: bool,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

/// indicatif bars on stderr, only when it is a terminal.
struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        Bars {
            bar: std::sync::Mutex::new(None),
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>6} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        *self.bar.lock().unwrap() = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.lock().unwrap().as_ref() {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes the man pages into `dir`, or a completion script to standard output.
fn generate(what: Generated) -> Result<(), Error> {
    use std::io::Write;
    match what {
        Generated::Man { dir } => {
            let failed = |action, source| Error::Io {
                role: Role::Output,
                path: dir.clone(),
                action,
                source,
            };
            std::fs::create_dir_all(&dir).map_err(|e| failed("create the directory", e))?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| failed("write a page", e))
        }
        Generated::Completions { shell } => {
            // clap_complete panics on a write error: render into memory, then write that.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "spindiff", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .map_err(|source| Error::Io {
                    role: Role::Output,
                    path: PathBuf::from("-"),
                    action: "write",
                    source,
                })
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let started = Instant::now();
    match cli.command {
        Command::Diff {
            old,
            new,
            output,
            memory,
            level,
            chunk_size,
            common,
        } => {
            let chunk_size = u32::try_from(chunk_size).map_err(|_| {
                Error::InvalidOption(format!(
                    "--chunk-size {chunk_size} is larger than the format allows"
                ))
            })?;
            let opts = DiffOptions {
                memory,
                threads: common.threads.map(usize::from),
                level,
                chunk_size,
            };
            let r =
                spindiff::diff_with_progress(&old, &new, &output, &opts, &Bars::new(common.quiet))?;
            if common.verbose {
                let p = &r.params;
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
        }
        Command::Apply {
            old,
            patch,
            output,
            resume,
            memory,
            common,
        } => {
            let opts = ApplyOptions {
                threads: common.threads.map(usize::from),
                resume,
                memory,
            };
            let r = spindiff::apply_with_progress(
                &old,
                &patch,
                &output,
                &opts,
                &Bars::new(common.quiet),
            )?;
            if common.verbose {
                if resume {
                    note!(
                        "resume: {} of {} chunks were already written and verified, kept (not rewritten); {} written",
                        r.kept,
                        r.chunks,
                        r.chunks - r.kept
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
                    format_size(spindiff::apply::memory_bound(
                        r.header.chunk_size,
                        r.in_flight
                    )),
                    hex(&r.header.new_hash)
                );
                let patch_len = std::fs::metadata(&patch).map(|m| m.len()).unwrap_or(0);
                summary(r.header.old_size, r.header.new_size, patch_len, started);
            }
        }
        Command::Verify {
            old,
            patch,
            new,
            memory,
            common,
        } => {
            let opts = ApplyOptions {
                threads: common.threads.map(usize::from),
                resume: false,
                memory,
            };
            let r = spindiff::verify(&old, &patch, new.as_deref(), &opts)?;
            if !common.quiet {
                say!(
                    "OK: the patch turns OLD into {} bytes with BLAKE3 {}{}",
                    r.header.new_size,
                    hex(&r.header.new_hash),
                    if new.is_some() {
                        ", identical to NEW"
                    } else {
                        ""
                    }
                );
            }
            if common.verbose {
                summary(r.header.old_size, r.header.new_size, 0, started);
            }
        }
        Command::Inspect { patch } => {
            let i = spindiff::inspect(&patch)?;
            let h = &i.header;
            say!("format version  {}", h.version);
            say!(
                "old size        {} ({})",
                h.old_size,
                format_size(h.old_size)
            );
            say!(
                "new size        {} ({})",
                h.new_size,
                format_size(h.new_size)
            );
            say!("old blake3      {}", hex(&h.old_hash));
            say!("new blake3      {}", hex(&h.new_hash));
            say!("chunk size      {}", format_size(u64::from(h.chunk_size)));
            say!("chunks          {}", h.chunk_count);
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
        }
        Command::Generate(what) => generate(what)?,
    }
    Ok(())
}

fn summary(old: u64, new: u64, patch: u64, started: Instant) {
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

/// Whether `e` is standard output closed by its reader: reported by the exit status alone.
fn is_closed_stdout(e: &Error) -> bool {
    matches!(e, Error::Io { role: Role::Output, path, source, .. }
        if path == Path::new("-") && source.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    spindiff::cleanup::install();
    let cli = Cli::parse();
    let result = run(cli).and_then(|()| std::io::stdout().flush().map_err(stdout_failed));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !is_closed_stdout(&e) {
                note!("spindiff: error: {e}");
            }
            ExitCode::from(match e {
                Error::Io { .. } | Error::OutOfMemory { .. } => 3,
                Error::InvalidOption(_) => 2,
                _ => 1,
            })
        }
    }
}
