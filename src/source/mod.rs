//! Sources of raw records. A source hands out [`RawChunk`]s: records with their source
//! positions (`_row`) already assigned, so that row order never depends on how the chunks are
//! later spread over workers, and with the epoch each belongs to.
//!
//! Every timely worker polls its own source (the file source lives on worker 0; each worker's
//! Kafka source reads its share of the partitions). A source promises a frontier: no chunk it
//! hands out later has an earlier epoch. The driver turns that promise into the dataflow's
//! progress.

mod file;
pub mod s3;
mod split;

pub use file::{Chunking, FileSource};
pub use split::{RecordSplitter, MAX_RECORD_BYTES};

use crate::checkpoint::Position;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Raw records of one epoch, stored back to back.
///
/// Record `i` is `data[start(i)..ends[i]]` where `start(0) = 0` and `start(i) = ends[i-1] + 1`
/// (one separator byte, the record's newline, sits between records). A trailing `\r` is left in
/// place; the parser strips it.
///
/// Records are in increasing `_row` order within a chunk. A file chunk's rows are consecutive
/// (`rows` is empty and record `i` is row `first_row + i`); a Kafka chunk lists them in `rows`,
/// since a partition holds only some of the rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawChunk {
    /// The timely epoch this chunk belongs to: never below the source's frontier.
    pub epoch: u64,
    /// Source position of the first record.
    pub first_row: u64,
    /// Source position of each record, when they are not consecutive.
    pub rows: Vec<u64>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
    /// Records the source already knows to be unreadable, by index.
    pub rejected: Vec<(u32, Rejection)>,
    /// Set by the engine when it takes the chunk from a source of this process; not encoded, so
    /// a chunk that crossed to another process arrives without it. Only such chunks are counted
    /// in this process's parse queues (see `dataflow::ParseQueues`).
    #[serde(skip)]
    pub read_here: bool,
}

/// Why a source rejected a record before parsing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The record was cut to its head; this was its full length in bytes.
    Oversized { full_length: u64 },
    /// A message that does not hold a record in any accepted format.
    BadMessage { detail: String },
}

impl RawChunk {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records with their source positions, and why the source rejected those it did.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8], Option<&Rejection>)> + '_ {
        let mut start = 0usize;
        let mut rejected = self.rejected.iter().peekable();
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let record = &self.data[start..end as usize];
            start = end as usize + 1;
            let rejection = rejected
                .next_if(|(index, _)| *index as usize == i)
                .map(|(_, why)| why);
            let row = match self.rows.get(i) {
                Some(&row) => row,
                None => self.first_row + i as u64,
            };
            (row, record, rejection)
        })
    }

    /// Appends a record the source rejected (its raw bytes are still kept for the dead letter).
    pub fn push_rejected(&mut self, raw: &[u8], why: Rejection) {
        self.rejected.push((self.ends.len() as u32, why));
        self.push(raw);
    }

    /// Appends a rejected record at an explicit source position (rows must increase).
    pub fn push_rejected_at(&mut self, row: u64, raw: &[u8], why: Rejection) {
        self.rejected.push((self.ends.len() as u32, why));
        self.push_at(row, raw);
    }

    /// Appends a record at an explicit source position (rows must increase).
    pub fn push_at(&mut self, row: u64, record: &[u8]) {
        if self.ends.is_empty() {
            self.first_row = row;
        }
        self.rows.push(row);
        self.push(record);
    }

    /// Appends one record (the next consecutive row, or, after `push_at`, give the row there).
    pub fn push(&mut self, record: &[u8]) {
        if !self.ends.is_empty() {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(record);
        let end = u32::try_from(self.data.len()).expect("chunks stay far below 4 GiB");
        self.ends.push(end);
    }
}

/// What a poll of a source returned.
#[derive(Debug)]
pub enum Poll {
    /// A chunk is ready.
    Ready(RawChunk),
    /// Nothing right now; poll again later (the source wakes the polling thread when it has
    /// something, or the driver polls again after [`Source::idle_wait`]).
    Pending,
    /// The source is exhausted.
    Finished,
}

/// A source of raw records, polled by the worker that owns it.
pub trait Source: Send {
    /// Returns the next chunk if one is ready. Never blocks for long.
    fn poll(&mut self) -> Result<Poll, SourceError>;
    /// No chunk handed out from now on has an epoch below this one.
    fn frontier(&self) -> u64;
    /// Where this source's parts resume to redo every epoch from [`Self::frontier`] on (after
    /// the last poll returned [`Poll::Finished`]: where they resume once everything is done).
    /// `None` for a source that cannot resume.
    fn position(&self) -> Option<Position> {
        None
    }
    /// Tells the source that every epoch below `frontier` is durable in the store, so it may
    /// acknowledge them upstream (Kafka offsets).
    fn durable(&mut self, _frontier: u64) -> Result<(), SourceError> {
        Ok(())
    }
    /// Called when the run stops early (a signal): acknowledge what is durable and let go.
    fn close(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// Longest the driver waits for a wake-up before polling again while the source is pending.
    fn idle_wait(&self) -> std::time::Duration {
        std::time::Duration::from_micros(100)
    }
    /// Input consumed so far and the total, if known (for progress reporting): bytes for a
    /// file, rows for a stream.
    fn progress(&self) -> (u64, Option<u64>);
}

/// Errors of a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open input {path}")]
    Open {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot read input {path} (near record {row})")]
    Read {
        path: PathBuf,
        row: u64,
        #[source]
        error: std::io::Error,
    },
    #[error("input {path} is empty: expected the header `{expected}`", expected = crate::record::HEADER)]
    Empty { path: PathBuf },
    #[error("input {path} does not have the rejected-loans header.\n  expected: {expected}\n  found:    {found}", expected = crate::record::HEADER)]
    Header { path: PathBuf, found: String },
    #[error("the reader thread for {path} stopped unexpectedly")]
    ReaderGone { path: PathBuf },
    #[error("kafka: {0}")]
    Kafka(String),
}

impl SourceError {
    /// Whether retrying the same operation can help (a transient I/O failure) or not (bad input).
    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Open { error, .. } | SourceError::Read { error, .. } => matches!(
                error.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            SourceError::Empty { .. }
            | SourceError::Header { .. }
            | SourceError::ReaderGone { .. }
            | SourceError::Kafka(_) => false,
        }
    }
}
