//! The 1 × 2 speed-up on the compute-bound part (parse + features; see `common/run.rs`), timed
//! in alternating pairs: one run with 1 worker, then one with 2, over and over, in one process.
//!
//!   cargo bench --bench scaling                         # 10 pairs of runs over 2,000,000 records
//!   RECORDS=500000 PAIRS=30 cargo bench --bench scaling
//!
//! Runs this long weigh the start and the end of a run (threads starting, the last epochs
//! draining) little; a 2-worker run of 500,000 records takes about a tenth of a second, and its
//! pairs' ratios spread twice as wide.
//!
//! Criterion (`benches/dataflow.rs`) times all runs of one worker count before the other. On the
//! shared 2-core VM this was written on, one worker's speed moved by up to half from one run to
//! the next and between minutes, and the ratio of two such groups with it; the median of many
//! pairs' ratios, each pair's runs a second apart, moved less (1.37x-1.73x over nine runs of this
//! bench, where criterion's groups gave 1.20x-1.72x). Prints the median records/s of each worker
//! count and the median (and range) of the pairs' ratios.
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
        let number = |name: &str, default: u64| {
            std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
        };
        (number("RECORDS", 2_000_000), number("PAIRS", 10) as usize)
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
    let [one, two] = rates;
    println!(
        "parse + features, {records} records, pairs of runs: {pairs}; 1 worker {:.2} M records/s, 2 workers {:.2} M records/s (medians); 2 workers / 1 worker: median {:.2}x (pairs {low:.2}x-{high:.2}x)",
        median(one),
        median(two),
        median(ratios),
    );
}
