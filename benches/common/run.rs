//! The compute-bound part of a run, parse + features, through the real dataflow graph: generated
//! records read beforehand into the chunks and epochs a file run makes, handed out by an
//! in-memory source, under the versioned plan of `dataflows/features.toml`, with no store (every
//! epoch is computed, stamped and counted, then dropped). The file reader thread and the store
//! writer, which a real run also runs on these cores, are left out on purpose: this is what more
//! workers, or more processes, can speed up.

use riskflow::dataflow::{run, single_source, Cluster, EngineOptions, Job, SourceFactory};
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
    parse_and_features_in_cluster(job, chunks, 1, workers)
}

/// Runs `job` over `chunks` as `processes` cluster processes of `workers` worker threads each,
/// with no store. The processes are threads of this one, connected over loopback TCP as
/// separate processes are: every message between them is encoded, sent and decoded. Process 0
/// holds the source, as in a file run.
pub fn parse_and_features_in_cluster(
    job: &Job,
    chunks: Vec<RawChunk>,
    processes: usize,
    workers: usize,
) {
    let records = chunks.iter().map(|c| c.len() as u64).sum();
    let source = InMemory {
        chunks: chunks.into_iter(),
        frontier: 0,
        handed: 0,
        records,
    };
    // A process alone needs no address.
    let addresses: Vec<String> = (0..processes)
        .filter(|_| processes > 1)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        })
        .collect();
    let options = |process: usize| EngineOptions {
        workers,
        cluster: (processes > 1).then(|| Cluster {
            process,
            addresses: addresses.clone(),
        }),
        ..EngineOptions::default()
    };
    let others: Vec<_> = (1..processes)
        .map(|process| {
            let (job, options) = (job.clone(), options(process));
            let no_source: SourceFactory = Box::new(|_, _, _| Ok(None));
            std::thread::spawn(move || run(&job, no_source, Vec::new(), options))
        })
        .collect();
    // Each process counts the records its workers parsed.
    let mut parsed = run(job, single_source(Box::new(source)), Vec::new(), options(0))
        .expect("the run succeeds")
        .records_read;
    for other in others {
        parsed += other
            .join()
            .unwrap()
            .expect("the run succeeds")
            .records_read;
    }
    assert_eq!(parsed, records);
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
