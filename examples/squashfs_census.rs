//! Lists the file systems and compressed streams (squashfs, EROFS, xz, zstd, gzip) in each file
//! given and how many of their compressed blocks recompress bit for bit (the transform layer's
//! feasibility check):
//!   cargo run --release --example squashfs_census -- IMAGE...
use spindiff::internals::transform::{census, find_filesystems};

fn main() {
    for path in std::env::args().skip(1) {
        let file = std::fs::read(&path).expect("read");
        let found = find_filesystems(&file);
        if found.is_empty() {
            println!("{path}: no file system or stream that parses and tiles");
        }
        for l in found {
            let c = census(&file, &l);
            println!(
                "{path}: {} at {} ({} bytes), {:?}, block {}, {} regions: {} compressed blocks, {} reproduce, {} stored -> {} plain bytes",
                l.codec.kind_name(),
                l.start,
                l.end - l.start,
                l.codec,
                l.block_size,
                l.regions.len(),
                c.blocks,
                c.reproduced,
                c.stored_bytes,
                c.plain_bytes
            );
        }
    }
}
