//! The transform layer end to end, outside the patch format: expands OLD and NEW (compressed
//! squashfs blocks replaced by their decompressed bytes where that can be undone), checks that
//! NEW rebuilds bit for bit from its expanded stream, and writes both streams so that the diff
//! of the expanded pair can be compared with the diff of the pair itself:
//!   cargo run --release --example transform_gain -- OLD NEW OUT_DIR
//!   spindiff diff OLD NEW -o plain.spd; spindiff diff OUT_DIR/old.x OUT_DIR/new.x -o x.spd
use spindiff::internals::transform::expand::{ExpandedNew, expand_new, expand_old, rebuild_new};
use spindiff::internals::transform::find_filesystems;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [old_path, new_path, out_dir] = &args[..] else {
        eprintln!("usage: transform_gain OLD NEW OUT_DIR");
        std::process::exit(2);
    };
    let old = std::fs::read(old_path).expect("read OLD");
    let new = std::fs::read(new_path).expect("read NEW");
    let (old_layouts, new_layouts) = (find_filesystems(&old), find_filesystems(&new));
    let mut old_x = Vec::new();
    let (_, blocks) = expand_old(&old, &old_layouts, &mut old_x).unwrap();
    let mut new_x = Vec::new();
    let ExpandedNew {
        pieces,
        census,
        codecs,
    } = expand_new(&new, &new_layouts, &blocks, &mut new_x).unwrap();
    let rebuilt = rebuild_new(&new_x, &pieces, &codecs, &old).expect("rebuild");
    assert!(
        rebuilt == new,
        "NEW does not rebuild from its expanded stream"
    );
    std::fs::create_dir_all(out_dir).unwrap();
    std::fs::write(format!("{out_dir}/old.x"), &old_x).unwrap();
    std::fs::write(format!("{out_dir}/new.x"), &new_x).unwrap();
    println!(
        "OLD: {} file system(s), {} -> {} bytes expanded; NEW: {} file system(s), {} -> {} bytes; NEW's blocks: {} copied from OLD, {} recompressed, {} left stored; {} pieces; NEW rebuilds bit for bit",
        old_layouts.len(),
        old.len(),
        old_x.len(),
        new_layouts.len(),
        census.file_bytes,
        census.expanded_bytes,
        census.copied,
        census.recompressed,
        census.stored,
        pieces.len()
    );
}
