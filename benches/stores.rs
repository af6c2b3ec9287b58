//! The store writers on one epoch of 100,000 generated records under the default plan: the CSV
//! export (formatting and writing a fresh file) and the SQLite store (one transaction on a store
//! that grows as in a run), in a temporary directory.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use riskflow::features::{FeatureValues, Kernel};
use riskflow::parse::RecordParser;
use riskflow::plan::FeaturePlan;
use riskflow::sink::{CsvSink, EpochBatch, FeatureBatch, Sink, SqliteSink};
use riskflow::source::RecordSplitter;

mod common;

const ROWS_PER_BATCH: usize = 4096;

/// 100,000 generated records (with quirks) parsed into batches, each row with its version's
/// features computed by the real kernels.
fn epoch(plan: &FeaturePlan) -> EpochBatch {
    let bytes = common::generated(100_000, 2008, 7);
    let mut splitter = RecordSplitter::new(&bytes[..]);
    splitter.next_record().unwrap(); // header
    let mut parser = RecordParser::default();
    let mut kernels: Vec<Vec<Kernel>> = plan
        .versions
        .iter()
        .map(|v| v.features.values().map(Kernel::new).collect())
        .collect();
    let mut batches = vec![FeatureBatch::default()];
    let mut row = 0;
    while let Some(record) = splitter.next_record().unwrap() {
        row += 1;
        let current = batches.last_mut().unwrap();
        let Ok(loan) = parser.parse(row, record, &mut current.batch.text) else {
            continue;
        };
        let version = plan.version_at(loan.application_date).unwrap().id;
        for (v, version_kernels) in kernels.iter_mut().enumerate() {
            let values: FeatureValues = version_kernels
                .iter_mut()
                .map(|k| k.push(loan.risk_score))
                .collect();
            if v == version as usize {
                current.values.push(values);
            }
        }
        current.versions.push(version);
        current.batch.rows.push(loan);
        if current.len() == ROWS_PER_BATCH {
            batches.push(FeatureBatch::default());
        }
    }
    EpochBatch {
        epoch: 0,
        rows: batches,
        ..EpochBatch::default()
    }
}

/// The epoch as the `n`-th of a run: its rows numbered on after the previous ones'.
fn renumbered(epoch: &EpochBatch, n: u64) -> EpochBatch {
    let shift = n * epoch.row_range().map_or(0, |(_, last)| last);
    let mut rows = epoch.rows.clone();
    for loan in rows.iter_mut().flat_map(|b| b.batch.rows.iter_mut()) {
        loan.row += shift;
    }
    EpochBatch {
        epoch: n,
        rows,
        ..EpochBatch::default()
    }
}

fn stores(c: &mut Criterion) {
    let plan = common::loan_features_plan();
    let epoch = epoch(&plan);
    let mut group = c.benchmark_group("stores");
    group.throughput(Throughput::Elements(epoch.row_count() as u64));
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    group.bench_function("csv_export", |b| {
        b.iter_batched(
            || {
                let mut sink = CsvSink::create(&dir.path().join("rows.csv")).unwrap();
                sink.prepare(&plan).unwrap();
                sink
            },
            |mut sink| {
                sink.write_epoch(&epoch).unwrap();
                sink.finish().unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    // One store for every iteration, as in a run: each writes the epoch again under new row
    // numbers (the copy is made outside the timing).
    let mut sqlite = SqliteSink::open(&dir.path().join("store.db"), &plan.table).unwrap();
    sqlite.prepare(&plan).unwrap();
    let mut written = 0;
    group.bench_function("sqlite_store", |b| {
        b.iter_batched(
            || {
                written += 1;
                renumbered(&epoch, written)
            },
            |next| sqlite.write_epoch(&next).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, stores);
criterion_main!(benches);
