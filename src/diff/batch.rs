//! A batch (`spindiff batch MANIFEST [--shard K/N]`): jobs of any bases, grouped by base so
//! each base is prepared once ([`super::many`]), cut into slices for many machines. Before any
//! job runs, every output of the whole batch is checked against every file any job of the
//! batch reads (by device and inode, and by the name it resolves to, so a file not made yet
//! counts too) and against every other output (by directory identity and file name, whatever
//! the spelling): no job writes what another reads or writes.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::many::{Target, diff_many_reading};
use super::{DiffOptions, DiffReport};
use crate::error::{Error, Result, Role, quoted};
use crate::files::{FileId, Named, Reads};
use crate::progress::Progress;

/// One job of a batch: a base and the target diffed against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The base (OLD).
    pub base: PathBuf,
    /// The NEW file and where its patch goes.
    pub target: Target,
    /// Directories of reference files for this job, beside the batch's own
    /// ([`DiffOptions::references`]); jobs of one base are prepared once per set of them.
    pub references: Vec<PathBuf>,
}

/// Slice `k` of `n` (1 <= k <= n) of a batch's jobs: the slices `1/n` .. `n/n` cover every job
/// exactly once, in contiguous runs of equal count give or take one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    k: u64,
    n: u64,
}

impl Shard {
    /// The whole batch.
    pub const ALL: Shard = Shard { k: 1, n: 1 };

    /// Slice `k` of `n`; `None` unless 1 <= k <= n.
    pub fn new(k: u64, n: u64) -> Option<Shard> {
        (1..=n).contains(&k).then_some(Shard { k, n })
    }

    /// Which slice this is.
    pub fn k(&self) -> u64 {
        self.k
    }

    /// Of how many.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// The indices of `count` jobs this slice runs: `(k-1)·count/n .. k·count/n`, computed
    /// in 128 bits (no product of two 64-bit numbers overflows there).
    pub fn range(&self, count: usize) -> Range<usize> {
        let at = |k: u64| (u128::from(k) * count as u128 / u128::from(self.n)) as usize;
        at(self.k - 1)..at(self.k)
    }
}

/// Every input of a batch, by identity and by name.
struct Inputs {
    reads: Reads,
    names: Vec<(Named, Role, PathBuf)>,
}

impl Inputs {
    /// Records what `path` (read in `role`) is; a file that cannot be seen now is recorded by
    /// name only (its job fails when it opens it, or an output could create it).
    fn add(&mut self, role: Role, path: &Path) {
        if let Ok(meta) = std::fs::metadata(path) {
            self.reads.add_identity(role, path, FileId::of(&meta));
        }
        if let Ok(named) = Named::of(path) {
            self.names.push((named, role, path.to_path_buf()));
        }
    }
}

/// Refuses a batch in which an output is an input of any job, or two outputs are one file;
/// returns every input (for each output to be checked again as it is opened).
fn check_outputs(jobs: &[Job], manifest: Option<&Path>, opts: &DiffOptions) -> Result<Reads> {
    let mut inputs = Inputs {
        reads: Reads::new(),
        names: Vec::new(),
    };
    if let Some(m) = manifest {
        inputs.add(Role::Manifest, m);
    }
    for job in jobs {
        inputs.add(Role::Old, &job.base);
        inputs.add(Role::New, &job.target.new);
    }
    let mut dirs: Vec<PathBuf> = opts.references.clone();
    dirs.extend(jobs.iter().flat_map(|j| j.references.iter().cloned()));
    dirs.sort();
    dirs.dedup();
    for file in crate::files::references::list(&dirs)? {
        inputs.add(Role::Reference, &file);
    }
    let mut outputs: Vec<(Named, &Path)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let patch = job.target.patch.as_path();
        let named = Named::of(patch).map_err(|e| Error::io(Role::Patch, patch, "resolve", e))?;
        let what = format!("{} {}", Role::Patch, quoted(patch));
        if let Ok(meta) = std::fs::metadata(patch) {
            inputs.reads.refuse_writing(&FileId::of(&meta), &what)?;
        }
        if let Some((_, role, input)) = inputs.names.iter().find(|(n, ..)| *n == named) {
            return Err(Error::InvalidOption(format!(
                "{what} names {role} {} of a job of this batch; spindiff never writes a file it reads",
                quoted(input)
            )));
        }
        if let Some((_, other)) = outputs.iter().find(|(n, _)| *n == named) {
            return Err(Error::InvalidOption(format!(
                "two jobs write one file: {} and {}",
                quoted(other),
                quoted(patch)
            )));
        }
        outputs.push((named, patch));
    }
    Ok(inputs.reads)
}

/// Runs the slice `shard` of `jobs`, grouped by base (bases in the order they first appear,
/// jobs in their order), each base prepared once; `done(i, result)` is called as job `i` (an
/// index into `jobs`) ends. `manifest`, when the jobs come from a file, is one more file no
/// output may be.
///
/// Fails as a whole, before anything is written, when an output of any job of the batch (not
/// only of this slice) is a file a job reads, or two jobs write one file; a base that cannot be
/// used fails each of its jobs and the others go on. Progress numbers the slice's jobs from 0 in
/// run order ([`Progress::begin_target`]); [`batch_order`] gives that order.
pub fn diff_batch(
    jobs: &[Job],
    shard: Shard,
    manifest: Option<&Path>,
    opts: &DiffOptions,
    progress: &dyn Progress,
    done: &mut dyn FnMut(usize, std::result::Result<&DiffReport, &Error>),
) -> Result<()> {
    opts.checked_threads()?;
    let reads = check_outputs(jobs, manifest, opts)?;
    let mut at = 0;
    for group in batch_groups(jobs, shard) {
        let base = &jobs[group[0]].base;
        let mut references = opts.references.clone();
        references.extend(jobs[group[0]].references.iter().cloned());
        let opts = &opts.clone().references(references);
        let targets: Vec<Target> = group.iter().map(|&i| jobs[i].target.clone()).collect();
        for t in &targets {
            if let Some(dir) = t.patch.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let numbered = Numbered {
            run: progress,
            first: at,
        };
        let mut reported = 0;
        let whole = diff_many_reading(base, &targets, &reads, opts, &numbered, &mut |i, r| {
            reported += 1;
            done(group[i], r.as_ref());
        });
        if let Err(e) = whole {
            // the base itself failed (nothing of the group ran): each of its jobs did
            for &i in &group[reported..] {
                done(i, Err(&e));
            }
        }
        at += group.len();
    }
    Ok(())
}

/// The indices of the jobs the slice `shard` runs, in the order it runs them: all the jobs
/// grouped by base (by what the base path names), bases in the order they first appear, then
/// cut into the slice.
pub fn batch_order(jobs: &[Job], shard: Shard) -> Vec<usize> {
    batch_groups(jobs, shard).concat()
}

/// [`batch_order`] in runs of jobs of one base and one set of references, each base resolved
/// once.
fn batch_groups(jobs: &[Job], shard: Shard) -> Vec<Vec<usize>> {
    type Group<'j> = (Option<Named>, &'j Path, &'j [PathBuf], Vec<usize>);
    let mut groups: Vec<Group> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let key = Named::of(&job.base).ok();
        let found = groups.iter_mut().find(|(k, b, r, _)| {
            (*b == job.base || (key.is_some() && *k == key)) && *r == job.references
        });
        match found {
            Some((.., members)) => members.push(i),
            None => groups.push((key, &job.base, &job.references, vec![i])),
        }
    }
    // (group, job) in run order, cut into the slice, then split where the group changes
    let all: Vec<(usize, usize)> = groups
        .into_iter()
        .enumerate()
        .flat_map(|(g, (.., members))| members.into_iter().map(move |i| (g, i)))
        .collect();
    let slice = &all[shard.range(all.len())];
    slice
        .chunk_by(|a, b| a.0 == b.0)
        .map(|run| run.iter().map(|&(_, i)| i).collect())
        .collect()
}

/// A group's view of the batch's progress: its targets numbered in the slice.
struct Numbered<'p> {
    run: &'p dyn Progress,
    first: usize,
}

impl Progress for Numbered<'_> {
    fn start(&self, phase: &str, total: u64) {
        self.run.start(phase, total);
    }
    fn advance(&self, bytes: u64) {
        self.run.advance(bytes);
    }
    fn finish(&self) {
        self.run.finish();
    }
    fn begin_target(&self, index: usize) {
        self.run.begin_target(self.first + index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slice_of_every_size_covers_every_job_once() {
        for count in [0usize, 1, 2, 5, 17] {
            for n in [1u64, 2, 3, 7, 40, u64::MAX / 3, u64::MAX] {
                let mut seen = vec![0u32; count];
                let ks: Vec<u64> = if n <= 40 {
                    (1..=n).collect()
                } else {
                    // every slice that gets a job, and the ones around them
                    let mut ks: Vec<u64> = (1..=3).chain(n - 2..=n).collect();
                    for j in 0..count as u128 {
                        let k = (j * u128::from(n) / count as u128) as u64 + 1;
                        ks.extend([k.saturating_sub(1).max(1), k, (k + 1).min(n)]);
                    }
                    ks.sort_unstable();
                    ks.dedup();
                    ks
                };
                for k in ks {
                    for i in Shard::new(k, n).unwrap().range(count) {
                        seen[i] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&s| s == 1),
                    "{count} jobs, n = {n}: {seen:?}"
                );
            }
        }
        assert_eq!(Shard::new(0, 3), None);
        assert_eq!(Shard::new(4, 3), None);
    }
}
