//! The compute-bound part of a run, parse + features, through the real dataflow graph with 1 and
//! 2 workers: 500,000 generated records (with quirks), read beforehand into the chunks and epochs
//! a file run makes and handed out by an in-memory source, under the versioned plan of
//! `dataflows/features.toml`, with no store (every epoch is computed, stamped and counted, then
//! dropped). The file reader thread and the store writer, which a real run also runs on these
//! cores, are left out on purpose: this is what more workers can speed up.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use riskflow::dataflow::{run, single_source, EngineOptions, Job};
use riskflow::record::YearRange;
use riskflow::source::{Chunking, FileSource, Poll, RawChunk, Source, SourceError};

mod common;

const RECORDS: u64 = 500_000;

/// The generated records as a file run's source makes them: read by [`FileSource`] from a
/// temporary file, in chunks of `Chunking::CHUNK_ROWS` and epochs of the run's default 16,384
/// rows.
fn chunks() -> Vec<RawChunk> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.csv");
    std::fs::write(&path, common::generated(RECORDS, 2008, 11)).unwrap();
    let mut source = FileSource::open(&path, Chunking::with_epoch_rows(16_384), None).unwrap();
    let mut chunks = Vec::new();
    loop {
        match source.poll().unwrap() {
            Poll::Ready(chunk) => chunks.push(chunk),
            Poll::Pending => std::thread::yield_now(),
            Poll::Finished => return chunks,
        }
    }
}

/// Hands out chunks that are already in memory.
struct InMemory {
    chunks: std::vec::IntoIter<RawChunk>,
    frontier: u64,
    handed: u64,
}

impl Source for InMemory {
    fn poll(&mut self) -> Result<Poll, SourceError> {
        Ok(match self.chunks.next() {
            Some(chunk) => {
                self.frontier = chunk.epoch;
                self.handed += chunk.len() as u64;
                Poll::Ready(chunk)
            }
            None => Poll::Finished,
        })
    }

    fn frontier(&self) -> u64 {
        self.frontier
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.handed, Some(RECORDS))
    }
}

fn bench(c: &mut Criterion) {
    let chunks = chunks();
    let job = Job {
        years: YearRange {
            first: 2008,
            last: u32::MAX,
        },
        plan: common::loan_features_plan(),
        source: "bench".into(),
        resume: None,
        pinned: None,
    };
    let mut group = c.benchmark_group("parse_and_features");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    for workers in [1, 2] {
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter_batched(
                || chunks.clone(),
                |chunks| {
                    let source = InMemory {
                        chunks: chunks.into_iter(),
                        frontier: 0,
                        handed: 0,
                    };
                    let options = EngineOptions {
                        workers,
                        ..EngineOptions::default()
                    };
                    let report = run(&job, single_source(Box::new(source)), Vec::new(), options)
                        .expect("the run succeeds");
                    assert_eq!(report.records_read, RECORDS);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
