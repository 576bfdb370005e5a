//! squashfs-tools-ng's images (issue 21, part 4): its gensquashfs and tar2sqfs compress every xz
//! block, metadata blocks included, with the file system's dictionary, where mksquashfs gives a
//! metadata block a dictionary of its own 8 KiB. Both encodings are tried for a metadata block,
//! so every block of such an image recompresses bit for bit, and a patch naming the second one
//! is of format version 8. The images are made by gensquashfs (scripts/test.sh installs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{assert_ok, checked_patch_size, spindiff};
use spindiff::internals::transform::codec::{BlockKind, Codec, XZ_TOOLS_NG_METADATA};
use spindiff::internals::transform::expand::{FsCodec, Piece, Rebuild};
use spindiff::internals::transform::table::Table;
use spindiff::internals::transform::{census, find_filesystems};

/// A tree of files in `dir`: text and binary-like files, and enough small ones for several
/// metadata blocks of inodes and directory entries; `extra` more files for a spin.
fn tree(dir: &Path, extra: usize) {
    for d in 0..12 {
        let sub = dir.join(format!("share/doc/pkg{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..(40 + extra) {
            // words from a hash: text that compresses about as real text does (an image
            // expanding more than MAX_EXPANSION_RATIO times stays opaque)
            let text: String = (0..(60 + 11 * f as u32))
                .map(|i| {
                    let w = (i ^ (d << 20) ^ ((f as u32) << 12)).wrapping_mul(2654435761);
                    format!("{:x} {} {:o}\n", w >> 7, w % 9973, w >> 19)
                })
                .collect();
            std::fs::write(sub.join(format!("file-{f}.txt")), text).unwrap();
        }
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let binary: Vec<u8> = (0..600_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 { x as u8 } else { (i / 64) as u8 }
        })
        .collect();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/libfoo.so"), binary).unwrap();
}

/// gensquashfs's xz image of `tree` at `out`.
fn gensquashfs(tree: &Path, out: &Path) {
    let made = Command::new("gensquashfs")
        .args(["-c", "xz", "-k", "-q", "-D"])
        .arg(tree)
        .arg(out)
        .output()
        .expect("gensquashfs (the squashfs-tools-ng package; scripts/test.sh installs it)");
    assert!(made.status.success(), "{made:?}");
}

#[test]
fn issue21_every_block_of_a_squashfs_tools_ng_xz_image_recompresses() {
    let dir = tempfile::tempdir().unwrap();
    let (root, image) = (dir.path().join("root"), dir.path().join("image"));
    tree(&root, 0);
    gensquashfs(&root, &image);
    let file = std::fs::read(&image).unwrap();
    let found = find_filesystems(&file);
    assert_eq!(found.len(), 1);
    let layout = &found[0];
    assert!(
        matches!(layout.codec, Codec::Xz { .. }),
        "{:?}",
        layout.codec
    );
    let metadata = layout
        .regions
        .iter()
        .filter(|r| r.block == Some(BlockKind::Metadata))
        .count();
    assert!(metadata >= 3, "{metadata} metadata blocks");
    let c = census(&file, layout);
    assert_eq!(c.reproduced, c.blocks, "{c:?}");
}

/// A pair of gensquashfs images diffs with every NEW block expanded, in a patch of format
/// version 8 that applies, with one or two threads and resumed.
#[test]
fn issue21_a_squashfs_tools_ng_pair_diffs_with_every_block_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, extra) in [("old", 0), ("new", 6)] {
        let root = d.join(format!("{name}-root"));
        tree(&root, extra);
        gensquashfs(&root, &d.join(name));
    }
    let size = checked_patch_size(d, ("old", "new"), &[], |n| vec![n / 2]);
    let text = String::from_utf8_lossy(&spindiff(d, &["inspect", "new.spd"]).stdout).to_string();
    assert!(text.contains("format version  10"), "{text}");
    assert!(text.contains(" 0 left compressed"), "{text}");
    let opaque = d.join("opaque.spd");
    let args = ["diff", "old", "new", "-o", "opaque.spd", "--no-transform"];
    assert_ok(&spindiff(d, &args));
    let opaque = std::fs::metadata(opaque).unwrap().len();
    assert!(size < opaque, "{size} against {opaque} opaque");
}

/// A table naming an xz metadata block with the file system's dictionary reads back only in a
/// patch of format version 8 or later; a metadata block has no third encoding.
#[test]
fn xz_metadata_with_the_file_systems_dictionary_needs_format_version_8() {
    use spindiff::format::{VERSION_GZIP_STREAMS, VERSION_TOOLS_NG};
    let table = |variant| Table {
        codecs: vec![FsCodec {
            codec: Codec::Xz {
                dict_size: 131072,
                filters: vec![],
            },
            block_size: 131072,
        }],
        pieces: vec![Piece {
            offset: 0,
            len: 2000,
            rebuild: Rebuild::Recompress {
                variant,
                plain_len: 8192,
            },
            block: Some((0, BlockKind::Metadata)),
        }],
    };
    let ng = table(XZ_TOOLS_NG_METADATA);
    assert_eq!(ng.format_version(), VERSION_TOOLS_NG);
    let bytes = ng.to_bytes();
    assert_eq!(
        Table::parse_for(&bytes, 2000, 4096, VERSION_TOOLS_NG).unwrap(),
        ng
    );
    assert!(Table::parse_for(&bytes, 2000, 4096, VERSION_GZIP_STREAMS).is_err());
    assert!(table(0).format_version() < VERSION_TOOLS_NG);
    let third = table(XZ_TOOLS_NG_METADATA + 1).to_bytes();
    assert!(Table::parse_for(&third, 2000, 4096, VERSION_TOOLS_NG).is_err());
    // no third encoding: compressing with it gives nothing, never a panic
    let codec = &ng.codecs[0].codec;
    let plain = vec![7u8; 8192];
    assert!(
        codec
            .compress(&plain, BlockKind::Metadata, 2, 8192)
            .is_none()
    );
    assert!(
        codec
            .compress(&plain, BlockKind::Metadata, 1, 8192)
            .is_some()
    );
}
