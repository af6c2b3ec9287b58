//! Sources of raw records. A source hands out [`RawChunk`]s: runs of consecutive records with
//! their source positions (`_row`) already assigned, so that row order never depends on how the
//! chunks are later spread over workers.
//!
//! The file source (plain or gzip) is always built; Kafka and S3 sources implement the same trait.

mod file;
mod split;

pub use file::{Chunking, FileSource};
pub use split::{RecordSplitter, MAX_RECORD_BYTES};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Consecutive raw records, stored back to back.
///
/// Record `i` is `data[start(i)..ends[i]]` where `start(0) = 0` and `start(i) = ends[i-1] + 1`
/// (one separator byte, the record's newline, sits between records). A trailing `\r` is left in
/// place; the parser strips it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawChunk {
    /// The timely epoch this chunk belongs to; a source never goes back to an earlier epoch.
    pub epoch: u64,
    /// Source position of the first record.
    pub first_row: u64,
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
    /// Indices of records cut to [`MAX_RECORD_BYTES`], with their full length.
    pub oversized: Vec<(u32, u64)>,
}

impl RawChunk {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records with their source positions, and the full length of those that were cut.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8], Option<u64>)> + '_ {
        let mut start = 0usize;
        let mut oversized = self.oversized.iter().peekable();
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let record = &self.data[start..end as usize];
            start = end as usize + 1;
            let full_length = oversized
                .next_if(|(index, _)| *index as usize == i)
                .map(|(_, len)| *len);
            (self.first_row + i as u64, record, full_length)
        })
    }

    /// Appends a record that was cut from `full_length` bytes to its head.
    pub fn push_oversized(&mut self, head: &[u8], full_length: u64) {
        self.oversized.push((self.ends.len() as u32, full_length));
        self.push(head);
    }

    /// Appends one record.
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
    /// Nothing right now; poll again later.
    Pending,
    /// The source is exhausted.
    Finished,
}

/// A source of raw records, polled by the worker that owns it.
pub trait Source: Send {
    /// Returns the next chunk if one is ready. Never blocks for long.
    fn poll(&mut self) -> Result<Poll, SourceError>;
    /// Input bytes consumed so far and the total, if known (for progress reporting).
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
            | SourceError::ReaderGone { .. } => false,
        }
    }
}
