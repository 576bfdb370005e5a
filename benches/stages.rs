//! Micro-benchmarks of the hot paths, one stage at a time, so a change to one stage can be
//! measured alone: suffix array build (MB/s of reference), matching (MB/s of NEW), chunk
//! encoding, anchor runs, and apply (MB/s of output).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spindiff::internals::anchors::{AnchorIndex, Sampling, find_runs};
use spindiff::internals::encode::encode_chunk;
use spindiff::internals::matcher::{Bsdiff, Matcher, SuffixFinder};
use spindiff::internals::reference::Reference;
use spindiff::internals::suffix::SuffixArray;

const SIZE: usize = 4 << 20;

fn pair() -> (Vec<u8>, Vec<u8>) {
    let old = common::binary_like(SIZE, 1);
    let new = common::edit(&old, &common::release_edits(SIZE, 40, 2));
    (old, new)
}

fn stages(c: &mut Criterion) {
    let (old, new) = pair();
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);

    g.throughput(Throughput::Bytes(old.len() as u64));
    let mut buf = Vec::new();
    g.bench_function("suffix_array_build", |b| {
        b.iter(|| SuffixArray::build(&old, &mut buf).unwrap().text().len())
    });

    let mut buf = Vec::new();
    let sa = SuffixArray::build(&old, &mut buf).unwrap();
    let reference = Reference::whole(&old[..]);
    let finder = SuffixFinder {
        sa: &sa,
        reference: &reference,
    };
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.bench_function("match_suffix_array", |b| {
        b.iter(|| Bsdiff.match_chunk(&new, &reference, &finder).ops.len())
    });

    let index = AnchorIndex::build(&old, Sampling::new(256), &|_, _| {});
    g.bench_function("anchor_runs", |b| {
        b.iter(|| find_runs(&index, &old[..], &new, 0).len())
    });

    let delta = Bsdiff.match_chunk(&new, &reference, &finder);
    for level in [3, 9, 19] {
        g.bench_function(format!("encode_level_{level}"), |b| {
            b.iter(|| {
                encode_chunk(0, 0, &new, delta.clone(), level)
                    .unwrap()
                    .payload
                    .len()
            })
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("old"), &old).unwrap();
    fs::write(p("new"), &new).unwrap();
    let opts = spindiff::DiffOptions {
        chunk_size: 1 << 20,
        ..Default::default()
    };
    spindiff::diff(&p("old"), &p("new"), &p("patch"), &opts).unwrap();
    g.bench_function("apply", |b| {
        b.iter(|| {
            spindiff::apply(
                &p("old"),
                &p("patch"),
                &p("out"),
                &spindiff::ApplyOptions::default(),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
