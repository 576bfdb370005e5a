//! Images for the transform's tests: real ones packed by mksquashfs from the sample spin's
//! tree, and hostile ones written by hand (squashfs-tools would never make them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sample images (`images/`).
pub fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// A tree to pack: the German spin's files, unpacked.
pub fn tree(dir: &Path) -> PathBuf {
    unpacked(dir, "tree", "spin-de.squashfs")
}

/// The base's files, unpacked: the tree [`tree`]'s spin was made from.
pub fn base_tree(dir: &Path) -> PathBuf {
    unpacked(dir, "base", "base.squashfs")
}

/// The sample image `image` unpacked into `dir/name`.
fn unpacked(dir: &Path, name: &str, image: &str) -> PathBuf {
    let tree = dir.join(name);
    let status = Command::new("unsquashfs")
        .args(["-q", "-no-progress", "-d"])
        .arg(&tree)
        .arg(images().join(image))
        .output()
        .expect("unsquashfs (squashfs-tools; scripts/test.sh installs it)");
    assert!(status.status.success(), "{:?}", status);
    tree
}

/// Packs `tree` into `out` with mksquashfs, `-comp` and `comp`.
pub fn mksquashfs(tree: &Path, out: &Path, comp: &[&str]) {
    let status = Command::new("mksquashfs")
        .arg(tree)
        .arg(out)
        .args(["-noappend", "-quiet", "-no-progress", "-comp"])
        .args(comp)
        .output()
        .expect("mksquashfs (squashfs-tools; scripts/test.sh installs it)");
    assert!(status.status.success(), "{:?}", status);
}

/// A zstd squashfs (block size 4 KiB) written by hand, whose metadata and data blocks tile it
/// exactly as a real one's do, holding one file: `data_blocks` blocks of zeros, each stored
/// compressed, then `sparse_blocks` sparse ones (listed in the inode table, four bytes each,
/// stored nowhere). With many sparse blocks its inode table inflates far past the image; with
/// many data blocks its expanded stream does.
pub fn hostile_squashfs(data_blocks: u32, sparse_blocks: u32) -> Vec<u8> {
    const BLOCK: usize = 4096;
    let zstd = |b: &[u8]| zstd::bulk::compress(b, 19).unwrap();
    let zero_block = zstd(&[0u8; BLOCK]);
    let mut img = vec![0u8; 96];
    // data blocks, right after the superblock
    let mut sizes = Vec::new();
    for _ in 0..data_blocks {
        img.extend_from_slice(&zero_block);
        sizes.push(zero_block.len() as u32);
    }
    // the inode table: one extended regular file (type 9) and its block list, the sparse
    // blocks' zeros made a metadata block at a time (the table may be hundreds of MiB)
    let file_size = u64::from(data_blocks + sparse_blocks) * BLOCK as u64;
    let mut head = Vec::new();
    head.extend_from_slice(&9u16.to_le_bytes());
    head.extend_from_slice(&[0u8; 14]); // mode, uid, gid, mtime, inode number
    head.extend_from_slice(&96u64.to_le_bytes()); // blocks start
    head.extend_from_slice(&file_size.to_le_bytes());
    head.extend_from_slice(&[0u8; 12]); // sparse, nlink
    head.extend_from_slice(&u32::MAX.to_le_bytes()); // no fragment
    head.extend_from_slice(&[0u8; 8]); // offset, xattr
    for s in &sizes {
        head.extend_from_slice(&s.to_le_bytes());
    }
    let table_len = head.len() as u64 + 4 * u64::from(sparse_blocks);
    let inode_table = img.len() as u64;
    let zeros = zstd(&[0u8; 8192]);
    let mut at = 0u64;
    while at < table_len {
        let n = (table_len - at).min(8192) as usize;
        let stored = if at as usize >= head.len() && n == 8192 {
            zeros.clone()
        } else {
            let mut block = vec![0u8; n];
            let from = (at as usize).min(head.len());
            let known = &head[from..head.len().min(from + n)];
            block[..known.len()].copy_from_slice(known);
            zstd(&block)
        };
        img.extend_from_slice(&(stored.len() as u16).to_le_bytes());
        img.extend_from_slice(&stored);
        at += n as u64;
    }
    // an empty directory table, then the id table: one block (uncompressed) and its pointer
    let directory_table = img.len() as u64;
    let id_block = img.len() as u64;
    img.extend_from_slice(&(0x8000u16 | 4).to_le_bytes());
    img.extend_from_slice(&0u32.to_le_bytes());
    let id_table = img.len() as u64;
    img.extend_from_slice(&id_block.to_le_bytes());
    let bytes_used = img.len() as u64;
    let sb = &mut img[..96];
    sb[0..4].copy_from_slice(b"hsqs");
    sb[4..8].copy_from_slice(&1u32.to_le_bytes()); // inodes
    sb[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[20..22].copy_from_slice(&6u16.to_le_bytes()); // zstd
    sb[22..24].copy_from_slice(&12u16.to_le_bytes()); // block log
    sb[26..28].copy_from_slice(&1u16.to_le_bytes()); // ids
    sb[28..30].copy_from_slice(&4u16.to_le_bytes()); // version 4.0
    sb[40..48].copy_from_slice(&bytes_used.to_le_bytes());
    sb[48..56].copy_from_slice(&id_table.to_le_bytes());
    sb[56..64].copy_from_slice(&u64::MAX.to_le_bytes()); // no xattrs
    sb[64..72].copy_from_slice(&inode_table.to_le_bytes());
    sb[72..80].copy_from_slice(&directory_table.to_le_bytes());
    sb[80..88].copy_from_slice(&u64::MAX.to_le_bytes()); // no fragments
    sb[88..96].copy_from_slice(&u64::MAX.to_le_bytes()); // no export table
    img
}

/// A newc cpio archive of `files` (name, bytes), ended by its trailer, as `cpio -H newc`
/// writes one.
pub fn cpio(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |name: &str, data: &[u8], mode: u32| {
        let name_len = name.len() + 1;
        out.extend_from_slice(b"070701");
        for v in [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name_len as u32,
            0,
        ] {
            out.extend_from_slice(format!("{v:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    for (name, data) in files {
        entry(name, data, 0o100644);
    }
    entry("TRAILER!!!", &[], 0);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// An initrd's files besides a spin's new one: a sample image (compressed already: little to
/// gain) and a text-like stretch that compresses about 3:1, as an initrd's binaries and scripts
/// do (tests/streams.rs, tests/zstd_streams.rs).
#[allow(dead_code)]
pub fn initrd_base_files() -> Vec<(String, Vec<u8>)> {
    // words from a hash
    let text: Vec<u8> = (0..1_000_000u32)
        .flat_map(|i| {
            let w = i.wrapping_mul(2654435761) >> 20;
            format!("set {} {:x} {}\n", w % 97, w, i % 7).into_bytes()
        })
        .take(3 << 20)
        .collect();
    vec![
        (
            "usr/lib/modules.squashfs".into(),
            std::fs::read(images().join("base.squashfs")).unwrap(),
        ),
        ("usr/share/init.txt".into(), text),
    ]
}

/// An initrd's files: [`initrd_base_files`], with `extra` bytes of a spin's new file in front
/// (incompressible, so that a patch is mostly this file; it shifts all after it).
#[allow(dead_code)]
pub fn initrd_files(extra: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    if extra > 0 {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let more: Vec<u8> = (0..extra)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        files.push(("usr/lib/locale/de/messages.mo".to_string(), more));
    }
    files.extend(initrd_base_files());
    files
}

/// A compressor of an initrd's main cpio (the zstd, gzip or xz command).
#[allow(dead_code)]
pub type Compress<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// An initrd: a microcode cpio, then the cpio of `files` passed through `compress`
/// (uncompressed when `None`), as initramfs-tools and dracut write it (tests/zstd_streams.rs,
/// tests/gzip_streams.rs).
#[allow(dead_code)]
pub fn initrd(files: &[(String, Vec<u8>)], compress: Option<Compress>) -> Vec<u8> {
    let microcode: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let mut out = cpio(&[("kernel/x86/microcode/GenuineIntel.bin", &microcode)]);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let main = cpio(&refs);
    match compress {
        Some(compress) => out.extend_from_slice(&compress(&main)),
        None => out.extend_from_slice(&main),
    }
    out
}
