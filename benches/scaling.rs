//! The speed-ups on the compute-bound part (parse + features; see `common/run.rs`), timed in
//! alternating rounds of three runs in one process: 1 process × 1 worker, 1 × 2, and 2 × 1 (two
//! cluster processes, here threads of this one connected over loopback TCP as separate
//! processes are: every message between them is encoded, sent and decoded), over and over.
//!
//!   cargo bench --bench scaling                         # 10 rounds over 2,000,000 records
//!   RECORDS=500000 ROUNDS=30 cargo bench --bench scaling
//!
//! Runs this long weigh the start and the end of a run (threads starting, the last epochs
//! draining) little; a 2-worker run of 500,000 records takes about a tenth of a second, and its
//! rounds' ratios spread twice as wide.
//!
//! Criterion (`benches/dataflow.rs`) times all runs of one worker count before the other. On the
//! shared 2-core VM this was written on, one worker's speed moved by up to half from one run to
//! the next and between minutes, and the ratio of two such groups with it; the median of many
//! rounds' ratios, each round's runs a second apart, moved less (1.37x-1.73x over nine runs of
//! this bench, where criterion's groups gave 1.20x-1.72x). Prints the median records/s of each
//! shape, and the median (and range) of the rounds' ratios: 1 × 2's speed-up over 1 × 1, and
//! 2 × 1's time over 1 × 2's.
//! Without `--bench` (as `cargo test --all-targets` runs it) it makes one small round, to check
//! that it runs.

mod common;

use common::run::{features_job, file_chunks, parse_and_features_in_cluster};
use std::time::Instant;

/// Processes × workers, in the order each round runs them.
const SHAPES: [(usize, usize); 3] = [(1, 1), (1, 2), (2, 1)];

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// "median 1.23x (rounds 1.10x-1.40x)"
fn spread(ratios: Vec<f64>) -> String {
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    format!(
        "median {:.2}x (rounds {low:.2}x-{high:.2}x)",
        median(ratios)
    )
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (records, rounds) = if measuring {
        let number = |name: &str, default: u64| {
            std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
        };
        (number("RECORDS", 2_000_000), number("ROUNDS", 10) as usize)
    } else {
        (20_000, 1)
    };
    let chunks = file_chunks(records);
    let job = features_job();
    let mut seconds: Vec<[f64; 3]> = Vec::new();
    for _ in 0..rounds {
        let mut round = [0.0; 3];
        for (took, &(processes, workers)) in round.iter_mut().zip(&SHAPES) {
            let input = chunks.clone();
            let started = Instant::now();
            parse_and_features_in_cluster(&job, input, processes, workers);
            *took = started.elapsed().as_secs_f64();
        }
        seconds.push(round);
    }
    let rate = |shape: usize| {
        median(
            seconds
                .iter()
                .map(|round| records as f64 / round[shape] / 1e6)
                .collect(),
        )
    };
    println!(
        "parse + features, {records} records, rounds: {rounds}; 1 x 1 {:.2}, 1 x 2 {:.2}, 2 x 1 {:.2} M records/s (medians)",
        rate(0),
        rate(1),
        rate(2),
    );
    println!(
        "1 x 2 speed-up over 1 x 1: {}; 2 x 1 time over 1 x 2: {}",
        spread(seconds.iter().map(|r| r[0] / r[1]).collect()),
        spread(seconds.iter().map(|r| r[2] / r[1]).collect()),
    );
}
