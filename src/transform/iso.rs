//! Finding squashfs and EROFS file systems and xz streams inside an ISO 9660 image (a live
//! ISO's `/live/filesystem.squashfs`, Fedora's `LiveOS/squashfs.img` holding EROFS since 42,
//! an initrd): the files its directory tree lists that start with the squashfs magic or have
//! EROFS's 1 KiB in, and, when the tree cannot be read, every 2 KiB sector that does; and the
//! files that are xz streams, behind cpio archives or not. Written for hostile input: every
//! extent is checked against the file, the walk is bounded in depth and in records, and
//! candidates are only offsets; the readers decide what they are.

use super::squashfs::MAGIC;

/// Bytes per ISO 9660 logical sector.
pub const SECTOR: usize = 2048;
/// Most directory records read, and deepest directory walked.
const MAX_RECORDS: usize = 1 << 20;
const MAX_DEPTH: usize = 32;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Where a file system or a compressed stream may start in `file`, with where it must end by
/// (`file`'s end for a file system, the end of the file holding it for a stream), from one walk
/// of the ISO 9660 directory tree: its files that start with the squashfs magic or hold EROFS
/// (when the tree does not read or lists none, a scan of the sectors), and the xz and zstd
/// streams its files hold (an initrd, behind its uncompressed microcode cpio archives if it has
/// them).
/// `release(start, end)` is called behind a scan (every 16 MiB), so that a mapped file's pages
/// do not stay resident.
pub fn candidates(file: &[u8], release: &dyn Fn(usize, usize)) -> Vec<(u64, u64)> {
    let files = tree_files(file).unwrap_or_default();
    let len = file.len() as u64;
    let streams = files.iter().filter_map(|&(s, size)| {
        let end = s.checked_add(size)?;
        Some((stream_in(file.get(..end)?, s)? as u64, end as u64))
    });
    let file_systems = squashfs_candidates(file, &files, release);
    file_systems
        .into_iter()
        .map(|at| (at, len))
        .chain(streams)
        .collect()
}

/// Whether `file` has an ISO 9660 volume descriptor's `CD001` identifier where the first one
/// is (even if the descriptor itself is damaged).
pub fn is_iso(file: &[u8]) -> bool {
    file.get(16 * SECTOR + 1..16 * SECTOR + 6) == Some(b"CD001")
}

/// Offsets in `file` where a squashfs or EROFS may start: those of the tree's `files` that do,
/// else the sectors that do. Only an ISO is scanned (a file with the volume descriptor's `CD001`
/// identifier, even if the descriptor itself is damaged): reading every page of a tarball or a
/// library to find nothing cost a fifth of their diff time.
fn squashfs_candidates(
    file: &[u8],
    files: &[(usize, usize)],
    release: &dyn Fn(usize, usize),
) -> Vec<u64> {
    let is_fs = |at: usize| file[at..].starts_with(MAGIC) || super::erofs::is_erofs(file, at);
    let from_tree: Vec<u64> = files
        .iter()
        .filter(|&&(s, _)| is_fs(s))
        .map(|&(s, _)| s as u64)
        .collect();
    if !from_tree.is_empty() {
        return from_tree;
    }
    if !is_iso(file) {
        return Vec::new();
    }
    const STEP: usize = 16 << 20;
    let mut found = Vec::new();
    for block in (0..file.len()).step_by(STEP) {
        let end = (block + STEP).min(file.len());
        found.extend(
            (block..end)
                .step_by(SECTOR)
                .filter(|&at| is_fs(at))
                .map(|at| at as u64),
        );
        release(block, end);
    }
    found
}

/// Where an xz, zstd or gzip stream starts in the file that starts at `at` and ends with `file`: at
/// once, or after the uncompressed cpio archives in front of it (each ended by its trailer, then
/// zeros).
pub fn stream_in(file: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..MAX_ARCHIVES {
        if super::xzstream::is_xz(file, at)
            || super::zstdstream::is_zstd(file, at)
            || super::gzipstream::is_gzip(file, at)
        {
            return Some(at);
        }
        at = after_cpio(file, at)?;
        // zeros up to the next archive or stream, in 4-byte steps as the kernel reads them
        while file.get(at..at + 4) == Some(&[0; 4]) {
            at += 4;
        }
    }
    None
}

/// cpio archives in front of a compressed initrd looked through at most.
const MAX_ARCHIVES: usize = 8;
/// Entries of one cpio archive read at most.
const MAX_CPIO_ENTRIES: usize = 1 << 20;

/// Where the newc cpio archive at `at` ends (after its trailer), or `None` if there is none.
fn after_cpio(file: &[u8], mut at: usize) -> Option<usize> {
    let field = |h: &[u8], i: usize| {
        let hex = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).ok()?;
        usize::from_str_radix(hex, 16).ok()
    };
    for _ in 0..MAX_CPIO_ENTRIES {
        let h = file.get(at..at.checked_add(110)?)?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return None;
        }
        let (size, name_len) = (field(h, 6)?, field(h, 11)?);
        let name = file.get(at + 110..(at + 110).checked_add(name_len)?)?;
        let data = (at + 110 + name_len).next_multiple_of(4);
        at = data.checked_add(size)?.next_multiple_of(4);
        if at > file.len() {
            return None;
        }
        if name == b"TRAILER!!!\0" {
            return Some(at);
        }
    }
    None
}

/// Every regular file of the directory tree as (where it starts, its size), or `None` when
/// `file` has no primary volume descriptor or its tree does not read.
fn tree_files(file: &[u8]) -> Option<Vec<(usize, usize)>> {
    let pvd = file.get(16 * SECTOR..17 * SECTOR)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    let root = &pvd[156..156 + 34];
    let mut out = Vec::new();
    let mut records = 0usize;
    let mut pending = vec![(le32(root, 2) as usize, le32(root, 10) as usize, 0usize)];
    let mut seen = std::collections::HashSet::new();
    while let Some((lba, len, depth)) = pending.pop() {
        if depth > MAX_DEPTH || !seen.insert(lba) {
            continue;
        }
        let start = lba.checked_mul(SECTOR)?;
        let dir = file.get(start..start.checked_add(len)?)?;
        let mut at = 0;
        while at < dir.len() {
            let rec_len = dir[at] as usize;
            if rec_len == 0 {
                // records do not cross sectors: the rest of this one is padding
                at = (at / SECTOR + 1) * SECTOR;
                continue;
            }
            records += 1;
            let rec = dir.get(at..at + rec_len)?;
            if rec.len() < 34 || records > MAX_RECORDS {
                return None;
            }
            let (extent, size, flags, name_len) = (
                le32(rec, 2) as usize,
                le32(rec, 10) as usize,
                rec[25],
                rec[32] as usize,
            );
            let special = name_len == 1 && rec.get(33).is_some_and(|&n| n <= 1); // . and ..
            if !special {
                if flags & 0x02 != 0 {
                    pending.push((extent, size, depth + 1));
                } else if let Some(s) = extent.checked_mul(SECTOR)
                    && s < file.len()
                {
                    out.push((s, size.min(file.len() - s)));
                }
            }
            at += rec_len;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_iso_is_scanned_sector_by_sector() {
        let mut file = vec![0u8; 64 * SECTOR];
        file[40 * SECTOR..40 * SECTOR + 4].copy_from_slice(MAGIC);
        // a tarball or a library that happens to hold the magic: not scanned
        assert!(candidates(&file, &|_, _| {}).is_empty());
        // an ISO whose volume descriptor does not read (its type byte damaged): scanned
        file[16 * SECTOR + 1..16 * SECTOR + 6].copy_from_slice(b"CD001");
        assert_eq!(
            candidates(&file, &|_, _| {}),
            vec![((40 * SECTOR) as u64, file.len() as u64)]
        );
    }
}
