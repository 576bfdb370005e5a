//! The command line, defined once: `--help`, the man pages and the shell completions
//! (`spindiff generate`) all come from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use spindiff::size::parse_size;

pub const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  bad input: a corrupt or truncated patch, the wrong OLD, output that does not verify,
     a patch needing more memory than apply --memory allows, references (--ref-dir) missing,
     of another version or damaged
  2  usage: unknown options or nonsense values
  3  I/O and resources: a file that cannot be opened, read, written or renamed (missing, no
     space, no permission, changed while read), standard output that cannot be written, or
     memory that ran out";

/// Binary deltas of huge images (live ISOs, squashfs, tarballs, native libraries).
///
/// `diff` makes a patch under a hard memory cap; `apply` rebuilds NEW from OLD and the patch in
/// small, constant memory, verifying every chunk and the whole result before NEW appears.
#[derive(Parser)]
#[command(name = "spindiff", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Make a patch that turns OLD into NEW (or one per NEW, with --out-dir).
    #[command(
        after_help = "Examples: spindiff diff base.iso spin-de.iso -o spin-de.spd --memory 512M\n          spindiff diff base.iso spin-de.iso spin-fr.iso --out-dir patches/"
    )]
    Diff {
        /// The base file the patch will be applied to.
        old: PathBuf,
        /// The file the patch produces; with --out-dir, any number of them, each diffed against
        /// OLD, which is read, hashed and indexed once for all.
        #[arg(required = true, num_args = 1.., value_name = "NEW")]
        new: Vec<PathBuf>,
        /// Where to write the patch: a file appears only when complete (until then it has no
        /// name); - is standard output; an existing device or FIFO is written in place.
        #[arg(short, long, value_name = "PATCH", required_unless_present = "out_dir")]
        output: Option<PathBuf>,
        /// Write one patch per NEW into DIR, named after NEW (spin-de.iso -> DIR/spin-de.iso.spd).
        /// A NEW that fails (unreadable, disk full) leaves no patch and the others go on; the
        /// exit status is then the first failure's.
        #[arg(long, value_name = "DIR", conflicts_with = "output")]
        out_dir: Option<PathBuf>,
        #[command(flatten)]
        diff: DiffArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Run the diffs a manifest lists (base, target, output), or one slice of them.
    #[command(
        after_help = "Example: spindiff batch farm.json --shard 2/8 --memory 4G\n\
        The manifest is JSON: {\"jobs\": [{\"base\": \"base.iso\", \"target\": \"spin-de.iso\", \"output\": \"spin-de.spd\"}, ...]};\n\
        relative paths are relative to the manifest's directory. See docs/FARMS.md."
    )]
    Batch {
        /// The manifest (JSON).
        manifest: PathBuf,
        /// Run only slice K of N (1 <= K <= N): the jobs, grouped by base in manifest order,
        /// are cut into N contiguous slices; the N slices cover every job exactly once.
        #[arg(long, value_parser = parse_shard, value_name = "K/N")]
        shard: Option<spindiff::Shard>,
        #[command(flatten)]
        diff: DiffArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild NEW from OLD and a patch.
    #[command(
        after_help = "Example: spindiff apply base.iso spin-de.spd -o spin-de.iso\n         curl -s URL | spindiff apply base.iso - -o spin-de.iso\n         spindiff apply base.iso spin-de.spd -o spin-de.iso --ref-dir /var/cache/apt/archives"
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
        references: ReferenceDirs,
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
        references: ReferenceDirs,
        #[command(flatten)]
        common: Common,
    },
    /// Show what a patch holds: sizes, hashes, chunks, stream sizes and ratio.
    Inspect {
        /// The patch, or - for standard input.
        patch: PathBuf,
        /// Print one JSON document on standard output instead of the table (docs/JSON.md).
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages or print a shell completion script, generated from these same
    /// definitions.
    #[command(subcommand)]
    Generate(Generated),
}

/// What `spindiff generate` produces.
#[derive(Subcommand)]
pub enum Generated {
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

/// How patches are made: the options `diff` and `batch` share.
#[derive(Args)]
pub struct DiffArgs {
    /// Peak memory cap for the whole process, mapped file pages included (e.g. 512M, 2G).
    #[arg(long, default_value = "1G", value_parser = parse_size, value_name = "SIZE")]
    pub memory: u64,
    /// zstd compression level of the patch streams (1-22; higher is smaller and slower).
    #[arg(long, default_value_t = spindiff::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Output bytes per chunk (4K to 64M). Apply needs about two and a half chunks' worth of
    /// memory per chunk it decodes at once; smaller chunks lower that, larger ones compress
    /// slightly better. Under a --memory too small for it, the diff takes smaller chunks,
    /// down to 1M.
    #[arg(long, default_value = "4M", value_parser = parse_size, value_name = "SIZE")]
    pub chunk_size: u64,
    /// The memory the patch must apply in (what `apply --memory` will be given, e.g. 32M on a
    /// small board or VM): the diff takes chunks small enough for it (down from --chunk-size),
    /// a little larger patch for a smaller apply; refused when even 4K chunks do not fit.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub apply_memory: Option<u64>,
    /// Diff compressed squashfs blocks as they are, not expanded (the patch then has no
    /// transform section; larger when OLD and NEW hold squashfs images).
    #[arg(long)]
    pub no_transform: bool,
    /// A directory of reference files beside OLD (packages the new images add, e.g. an apt
    /// cache or a mirror's pool): their payloads (a .deb's data.tar, an RPM's cpio archive,
    /// decompressed) are sources too, and the patch names those it reads, by name, size and
    /// SHA-256; apply then needs them (--ref-dir). Repeatable; subdirectories are read too.
    #[arg(long = "ref-dir", value_name = "DIR")]
    pub ref_dir: Vec<PathBuf>,
}

/// Where `apply` and `verify` find the references a patch names.
#[derive(Args)]
pub struct ReferenceDirs {
    /// A directory of reference files (packages) the patch names: each is found there by its
    /// SHA-256 (any name; subdirectories too), all before anything is written. Repeatable.
    /// `spindiff inspect` lists what a patch needs.
    #[arg(long = "ref-dir", value_name = "DIR")]
    pub ref_dir: Vec<PathBuf>,
}

/// `K/N` with 1 <= K <= N.
fn parse_shard(s: &str) -> Result<spindiff::Shard, String> {
    let bad = || format!("'{s}' is not K/N with 1 <= K <= N (e.g. 2/8)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (u64, u64) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    spindiff::Shard::new(k, n).ok_or_else(bad)
}

#[derive(Args)]
pub struct Common {
    /// Worker threads (default: all cores). Never changes the patch.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Print the plan and a summary (sizes, ratio, time, peak memory).
    #[arg(short, long)]
    pub verbose: bool,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print one JSON document on standard output, on success and on failure, with what the
    /// human summary says (docs/JSON.md); no progress bars. Not with -o -.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// The command's name when it was given `--json`: its result and any error are then
    /// reported as a JSON document.
    pub fn json_command(&self) -> Option<&'static str> {
        match &self.command {
            Command::Diff { common, .. } if common.json => Some("diff"),
            Command::Batch { common, .. } if common.json => Some("batch"),
            Command::Apply { common, .. } if common.json => Some("apply"),
            Command::Verify { common, .. } if common.json => Some("verify"),
            Command::Inspect { json: true, .. } => Some("inspect"),
            _ => None,
        }
    }
}
