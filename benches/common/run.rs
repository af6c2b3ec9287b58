//! The compute-bound part of a run, parse + features, through the real dataflow graph: generated
//! records read beforehand into the chunks and epochs a file run makes, handed out by an
//! in-memory source, under the versioned plan of `dataflows/features.toml`, with no store (every
//! epoch is computed, stamped and counted, then dropped). The file reader thread and the store
//! writer, which a real run also runs on these cores, are left out on purpose: this is what more
//! workers can speed up.

use riskflow::dataflow::{run, single_source, EngineOptions, Job};
use riskflow::record::YearRange;
use riskflow::source::{Chunking, FileSource, Poll, RawChunk, Source, SourceError};

/// `records` generated records (dated 2008–2018, with quirks) as a file run's source makes them:
/// read by [`FileSource`] from a temporary file, in chunks of `Chunking::CHUNK_ROWS` and epochs
/// of the run's default `Chunking::EPOCH_ROWS`.
pub fn file_chunks(records: u64) -> Vec<RawChunk> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.csv");
    std::fs::write(&path, super::generated(records, 2008, 11)).unwrap();
    let mut source =
        FileSource::open(&path, Chunking::with_epoch_rows(Chunking::EPOCH_ROWS), None).unwrap();
    let mut chunks = Vec::new();
    loop {
        match source.poll().unwrap() {
            Poll::Ready(chunk) => chunks.push(chunk),
            Poll::Pending => std::thread::yield_now(),
            Poll::Finished => return chunks,
        }
    }
}

/// The features dataflow's job: every year from 2008, the shipped versioned plan.
pub fn features_job() -> Job {
    Job {
        years: YearRange {
            first: 2008,
            last: u32::MAX,
        },
        plan: super::loan_features_plan(),
        source: "bench".into(),
        resume: None,
        pinned: None,
    }
}

/// Runs `job` over `chunks` on `workers` worker threads, with no store.
pub fn parse_and_features(job: &Job, chunks: Vec<RawChunk>, workers: usize) {
    let records = chunks.iter().map(|c| c.len() as u64).sum();
    let source = InMemory {
        chunks: chunks.into_iter(),
        frontier: 0,
        handed: 0,
        records,
    };
    let options = EngineOptions {
        workers,
        ..EngineOptions::default()
    };
    let report =
        run(job, single_source(Box::new(source)), Vec::new(), options).expect("the run succeeds");
    assert_eq!(report.records_read, records);
}

/// Hands out chunks that are already in memory.
struct InMemory {
    chunks: std::vec::IntoIter<RawChunk>,
    frontier: u64,
    handed: u64,
    records: u64,
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
        (self.handed, Some(self.records))
    }
}
