//! The encoders' own time for what an apply of a transformed patch recompresses: every block of
//! NEW the patch's table says to recompress, decompressed from NEW, then compressed again as
//! apply does, one at a time, timing only the compression. The physical limit of such an
//! apply is this time divided by its threads (issue 21 and 22 report apply time against it).
//!
//!   cargo bench --bench recompress -- PATCH NEW     -> "encoders: S s over N blocks (M MB)"

use std::path::Path;
use std::time::{Duration, Instant};

use spindiff::format::ContainerReader;
use spindiff::internals::transform::expand::Rebuild;
use spindiff::internals::transform::table::Table;

fn main() {
    // `cargo bench` passes `--bench`; the rest are the files
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [patch, new] = &files[..] else {
        eprintln!("usage: cargo bench --bench recompress -- PATCH NEW");
        std::process::exit(2);
    };
    let reader = ContainerReader::new(
        std::io::BufReader::new(std::fs::File::open(patch).expect("PATCH")),
        Path::new(patch),
    )
    .expect("a patch");
    let header = reader.header().clone();
    let Some(section) = reader.transform() else {
        println!("encoders: 0.00 s over 0 blocks (no transform section)");
        return;
    };
    let table = Table::parse_for(
        &section.new_table,
        section.new_size,
        header.old_size,
        header.version,
    )
    .expect("NEW's table");
    let new = std::fs::read(new).expect("NEW");
    let (mut spent, mut blocks, mut plain_bytes) = (Duration::ZERO, 0u64, 0u64);
    let mut plain = Vec::new();
    for piece in &table.pieces {
        let (Rebuild::Recompress { variant, .. }, Some((fs, kind))) = (piece.rebuild, piece.block)
        else {
            continue;
        };
        let fs = &table.codecs[usize::from(fs)];
        let stored = &new[piece.offset as usize..(piece.offset + u64::from(piece.len)) as usize];
        fs.codec
            .decompress(stored, fs.limit(kind), &mut plain)
            .expect("a block of NEW decompresses");
        let limit = fs.encode_limit(kind, stored.len());
        let started = Instant::now();
        let again = fs.codec.compress(&plain, kind, variant, limit);
        spent += started.elapsed();
        assert_eq!(
            again.as_deref(),
            Some(stored),
            "a block that does not recompress"
        );
        blocks += 1;
        plain_bytes += plain.len() as u64;
    }
    println!(
        "encoders: {:.2} s over {blocks} blocks ({:.1} MB plain)",
        spent.as_secs_f64(),
        plain_bytes as f64 / 1e6
    );
}
