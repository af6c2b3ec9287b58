//! The compute-bound part of a run, parse + features, through the real dataflow graph with 1 and
//! 2 workers, on 500,000 generated records (see `common/run.rs` for what is and is not run).
//! `benches/scaling.rs` times the same runs, and 2 processes × 1 worker, in alternating rounds.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

mod common;

use common::run::{features_job, file_chunks, parse_and_features};

const RECORDS: u64 = 500_000;

fn bench(c: &mut Criterion) {
    let chunks = file_chunks(RECORDS);
    let job = features_job();
    let mut group = c.benchmark_group("parse_and_features");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    for workers in [1, 2] {
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter_batched(
                || chunks.clone(),
                |chunks| parse_and_features(&job, chunks, workers),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
