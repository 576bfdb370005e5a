//! Reference files read down to their payloads (issue 23's package readers): a Debian package
//! as dpkg-deb builds it, with each payload compression dpkg knows (xz, zstd, gzip, none), gives
//! exactly the `data.tar` dpkg-deb itself extracts (`--fsys-tarfile`) and names itself by the
//! SHA-256 sha256sum gives; a cut or damaged one is refused with a reason.

use std::path::Path;
use std::process::Command;

use spindiff::internals::files::package::{Archive, Compression, expand, locate, read_reference};

/// A package tree in `dir`: a control file and a few files.
fn package_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
    std::fs::write(
        dir.join("DEBIAN/control"),
        "Package: spindiff-test\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: spindiff <spindiff@example.org>\nDescription: a test package\n",
    )
    .unwrap();
    let doc = dir.join("usr/share/doc/spindiff-test");
    std::fs::create_dir_all(&doc).unwrap();
    let text: String = (0..20_000)
        .map(|i| format!("line {i} of a changelog\n"))
        .collect();
    std::fs::write(doc.join("changelog"), text).unwrap();
    let binary: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
    std::fs::write(dir.join("usr/lib/libspindiff-test.so"), binary).unwrap();
}

fn dpkg_deb(args: &[&str]) -> Vec<u8> {
    let out = Command::new("dpkg-deb")
        .args(args)
        .output()
        .expect("dpkg-deb (dpkg, on every Debian system)");
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

#[test]
fn issue23_a_debian_package_expands_to_the_data_tar_dpkg_extracts() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    package_tree(&tree);
    let tree = tree.to_str().unwrap();
    for (z, compression) in [
        ("xz", Compression::Xz),
        ("zstd", Compression::Zstd),
        ("gzip", Compression::Gzip),
        ("none", Compression::None),
    ] {
        let deb = dir.path().join(format!("p-{z}.deb"));
        let deb = deb.to_str().unwrap();
        dpkg_deb(&[
            "--root-owner-group",
            &format!("-Z{z}"),
            "--build",
            tree,
            deb,
        ]);
        let file = std::fs::read(deb).unwrap();
        let p = locate(&file).unwrap();
        assert_eq!(
            (p.archive, p.compression),
            (Archive::Deb, compression),
            "{z}"
        );
        let mut payload = Vec::new();
        let n = expand(&file, &mut payload, 1 << 30).unwrap();
        assert_eq!(n, payload.len() as u64);
        let want = dpkg_deb(&["--fsys-tarfile", deb]);
        assert!(payload == want, "{z}: not the data.tar dpkg-deb extracts");
        // its identity: the SHA-256 sha256sum gives (what a package index carries)
        let r = read_reference("p.deb", &file, &mut std::io::sink(), 1 << 30).unwrap();
        let sum = Command::new("sha256sum").arg(deb).output().unwrap().stdout;
        let hex: String = r.sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert!(sum.starts_with(hex.as_bytes()), "{z}");
        assert_eq!(r.payload_hash, *blake3::hash(&want).as_bytes());
        // cut anywhere inside the payload: refused, never a panic
        if compression != Compression::None {
            let cut = &file[..(p.offset + p.len / 2) as usize];
            let err = expand(cut, &mut Vec::new(), 1 << 30).unwrap_err();
            assert!(!err.is_empty(), "{z}");
        }
    }
}
