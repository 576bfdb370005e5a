//! Links the libzstd releases `scripts/zstd-releases.sh` built (their symbols renamed, beside
//! the release zstd-sys bundles) when they are there, and says which with a `cfg`: zstd blocks
//! recompress bit for bit only with the release that made them (docs/ARCHITECTURE.md, "zstd
//! from any libzstd"). Without them spindiff builds and works; such blocks stay stored, and a
//! patch that needs one is refused by name.

use std::path::PathBuf;

/// The releases, as `scripts/zstd-releases.sh` names their archives.
const RELEASES: [&str; 1] = ["1_5_4"];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo::rerun-if-env-changed=SPINDIFF_ZSTD_RELEASES");
    for tag in RELEASES {
        println!("cargo::rustc-check-cfg=cfg(zstd_{tag})");
        let dir = std::env::var_os("SPINDIFF_ZSTD_RELEASES").map_or_else(
            || {
                root.join("target/peers")
                    .join(format!("zstd-{}", tag.replace('_', ".")))
            },
            |d| PathBuf::from(d).join(format!("zstd-{}", tag.replace('_', "."))),
        );
        let lib = dir.join(format!("libspindiff_zstd_{tag}.a"));
        println!("cargo::rerun-if-changed={}", lib.display());
        if lib.is_file() {
            println!("cargo::rustc-link-search=native={}", dir.display());
            println!("cargo::rustc-link-lib=static=spindiff_zstd_{tag}");
            println!("cargo::rustc-cfg=zstd_{tag}");
        }
    }
}
