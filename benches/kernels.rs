//! Feature kernels: SMA and EMA per row, with 8% null scores as in the generated data; and the
//! merge of a Kafka epoch's partitions into `_row` order that the global windows read them in.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use riskflow::features::Kernel;
use riskflow::record::{merged_row_order, Date, LoanRow};

fn scores(n: usize) -> Vec<Option<f64>> {
    (0..n as u64)
        .map(|i| (i % 13 != 0).then(|| (430 + (i * 7919) % 420) as f64))
        .collect()
}

fn kernels(c: &mut Criterion) {
    let input = scores(100_000);
    let mut group = c.benchmark_group("kernels");
    group.throughput(Throughput::Elements(input.len() as u64));
    for def in ["sma(50)", "sma(100)", "ema(50)"] {
        group.bench_function(def, |b| {
            b.iter(|| {
                let mut kernel = Kernel::new(&def.parse().unwrap());
                let mut last = None;
                for s in &input {
                    last = kernel.push(*s);
                }
                black_box(last)
            })
        });
    }
    group.finish();
}

/// One epoch of a 4-partition stream: partition `p` holds every fourth row, with a row in 100
/// missing (dead-lettered). `spacing` 1 is the real layout (rows placed by offset); a spacing of
/// 5 spreads the same rows too thinly for that, so they are sorted: the way every epoch was
/// merged before.
fn epoch_partitions(rows: u64, spacing: u64) -> Vec<Vec<LoanRow>> {
    let date = Date::parse("2015-06-01").expect("a date");
    (0..4)
        .map(|p| {
            (1..=rows)
                .filter(|r| (r - 1) % 4 == p && r % 100 != 0)
                .map(|r| LoanRow {
                    row: r * spacing,
                    amount_requested: None,
                    application_date: date,
                    risk_score: None,
                    spans: [0; 7],
                })
                .collect()
        })
        .collect()
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge_epoch");
    for (name, spacing) in [("placed", 1), ("sorted", 5)] {
        let partitions = epoch_partitions(36_000, spacing);
        let rows: usize = partitions.iter().map(Vec::len).sum();
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(merged_row_order(partitions.iter().map(|p| &p[..]))))
        });
    }
    group.finish();
}

criterion_group!(benches, kernels, merge);
criterion_main!(benches);
