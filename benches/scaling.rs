//! The 1 × 2 speed-up on the compute-bound part (parse + features; see `common/run.rs`), timed
//! in alternating pairs: one run with 1 worker, then one with 2, over and over, in one process.
//!
//!   cargo bench --bench scaling            # 15 pairs of runs over 500,000 records
//!   PAIRS=40 cargo bench --bench scaling   # more pairs
//!
//! Criterion (`benches/dataflow.rs`) times all runs of one worker count before the other. On a
//! shared 2-core VM, one worker's speed was seen to move by half between minutes, which moved
//! the ratio of two such groups by as much; a pair's two runs are a fraction of a second apart,
//! so the median ratio of pairs holds still where the ratio of two groups does not. Prints the
//! median records/s of each worker count and the median (and range) of the pairs' ratios.
//! Without `--bench` (as `cargo test --all-targets` runs it) it makes one small pair, to check
//! that it runs.

mod common;

use common::run::{features_job, file_chunks, parse_and_features};
use std::time::Instant;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (records, pairs) = if measuring {
        let pairs = std::env::var("PAIRS").map_or(15, |p| p.parse().expect("PAIRS is a number"));
        (500_000, pairs)
    } else {
        (20_000, 1)
    };
    let chunks = file_chunks(records);
    let job = features_job();
    let mut rates = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for _ in 0..pairs {
        let mut seconds = [0.0; 2];
        for workers in [1, 2] {
            let input = chunks.clone();
            let started = Instant::now();
            parse_and_features(&job, input, workers);
            seconds[workers - 1] = started.elapsed().as_secs_f64();
            rates[workers - 1].push(records as f64 / seconds[workers - 1] / 1e6);
        }
        ratios.push(seconds[0] / seconds[1]);
    }
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    println!(
        "parse + features, {records} records, pairs of runs: {pairs}; 1 worker {:.2} M records/s, 2 workers {:.2} M records/s (medians); 2 workers / 1 worker: median {:.2}x (pairs {low:.2}x-{high:.2}x)",
        median(rates[0].clone()),
        median(rates[1].clone()),
        median(ratios),
    );
}
