//! A CSV file (plain or gzip, detected by its magic bytes) read on its own thread, so that
//! decompression and record splitting overlap with parsing and feature computation.

use super::{Poll, RawChunk, RecordSplitter, Rejection, Source, SourceError};
use crate::record::HEADER;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};

/// How many chunks the reader thread may run ahead of the dataflow.
const CHANNEL_CHUNKS: usize = 8;

/// How records are grouped into chunks and epochs.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    /// Records per chunk (the unit of parallel parsing).
    pub chunk_rows: usize,
    /// Records per epoch (the unit of ordering and of store transactions).
    pub epoch_rows: u64,
}

impl Chunking {
    /// Records per chunk (fewer when an epoch is smaller): small enough that a chunk's buffers
    /// are ordinary allocations, large enough to amortise per-chunk work.
    pub const CHUNK_ROWS: usize = 1024;

    /// Chunks of [`Self::CHUNK_ROWS`] records and epochs of `epoch_rows` rounded up to whole chunks.
    pub fn with_epoch_rows(epoch_rows: u64) -> Chunking {
        let epoch_rows = epoch_rows.max(1);
        let chunk_rows = Self::CHUNK_ROWS.min(epoch_rows as usize);
        Chunking {
            chunk_rows,
            epoch_rows: epoch_rows
                .div_ceil(chunk_rows as u64)
                .saturating_mul(chunk_rows as u64),
        }
    }

    pub fn epoch_of(&self, row: u64) -> u64 {
        (row - 1) / self.epoch_rows
    }
}

/// Reads a local file on a background thread and hands out its records in chunks.
pub struct FileSource {
    path: PathBuf,
    chunks: Receiver<Result<RawChunk, SourceError>>,
    /// The thread polling this source, woken by the reader after each chunk so the worker can
    /// park while it waits instead of sleeping a fixed time.
    poller: Arc<Mutex<Option<Thread>>>,
    bytes_read: Arc<AtomicU64>,
    total_bytes: u64,
    reader: Option<JoinHandle<()>>,
    /// The epoch of the last chunk handed out: chunks come in epoch order.
    frontier: u64,
}

/// Counts the bytes read from the underlying file, for progress reporting.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl FileSource {
    /// Opens `path`, checks its header, and starts the reader thread.
    pub fn open(path: &Path, chunking: Chunking) -> Result<FileSource, SourceError> {
        let open_error = |error| SourceError::Open {
            path: path.to_owned(),
            error,
        };
        let file = File::open(path).map_err(open_error)?;
        let total_bytes = file.metadata().map_err(open_error)?.len();
        let bytes_read = Arc::new(AtomicU64::new(0));
        let mut buffered = BufReader::with_capacity(
            1 << 16,
            CountingReader {
                inner: file,
                count: Arc::clone(&bytes_read),
            },
        );
        let is_gzip = buffered
            .fill_buf()
            .map_err(open_error)?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read + Send> = if is_gzip {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut splitter = RecordSplitter::new(reader);
        check_header(path, &mut splitter)?;

        let (sender, chunks) = sync_channel(CHANNEL_CHUNKS);
        let poller: Arc<Mutex<Option<Thread>>> = Arc::default();
        let wake = Arc::clone(&poller);
        let wake_poller = move || {
            if let Some(thread) = wake.lock().ok().and_then(|mut p| p.take()) {
                thread.unpark();
            }
        };
        let thread_path = path.to_owned();
        let reader = std::thread::Builder::new()
            .name("riskflow-reader".into())
            .spawn(move || {
                let mut next_row = 1u64;
                loop {
                    let chunk = read_chunk(&thread_path, &mut splitter, &mut next_row, chunking);
                    let last = !matches!(&chunk, Ok(c) if !c.is_empty());
                    let sent = match chunk {
                        Ok(chunk) if chunk.is_empty() => false,
                        chunk => sender.send(chunk).is_ok(),
                    };
                    wake_poller();
                    if last || !sent {
                        drop(sender);
                        wake_poller();
                        return;
                    }
                }
            })
            .map_err(open_error)?;
        Ok(FileSource {
            path: path.to_owned(),
            chunks,
            poller,
            bytes_read,
            total_bytes,
            reader: Some(reader),
            frontier: 0,
        })
    }
}

fn check_header<R: Read>(path: &Path, splitter: &mut RecordSplitter<R>) -> Result<(), SourceError> {
    let header = splitter
        .next_record()
        .map_err(|error| SourceError::Read {
            path: path.to_owned(),
            row: 0,
            error,
        })?
        .ok_or_else(|| SourceError::Empty {
            path: path.to_owned(),
        })?;
    let header = header.strip_prefix("\u{feff}".as_bytes()).unwrap_or(header);
    let header = header.strip_suffix(b"\r").unwrap_or(header);
    if header != HEADER.as_bytes() {
        let mut found: String = String::from_utf8_lossy(header).chars().take(300).collect();
        if found.len() < header.len() {
            found.push('…');
        }
        return Err(SourceError::Header {
            path: path.to_owned(),
            found,
        });
    }
    Ok(())
}

/// Reads up to one chunk; an empty chunk means the end of the input.
fn read_chunk<R: Read>(
    path: &Path,
    splitter: &mut RecordSplitter<R>,
    next_row: &mut u64,
    chunking: Chunking,
) -> Result<RawChunk, SourceError> {
    let mut chunk = RawChunk {
        epoch: chunking.epoch_of(*next_row),
        first_row: *next_row,
        data: Vec::with_capacity(chunking.chunk_rows * 128),
        ends: Vec::with_capacity(chunking.chunk_rows),
        ..RawChunk::default()
    };
    while chunk.len() < chunking.chunk_rows {
        if !chunk.is_empty() && chunking.epoch_of(*next_row) != chunk.epoch {
            break;
        }
        let record = splitter
            .next_record_sized()
            .map_err(|error| SourceError::Read {
                path: path.to_owned(),
                row: *next_row,
                error,
            })?;
        match record {
            Some((head, Some(full_length))) => {
                chunk.push_rejected(head, Rejection::Oversized { full_length })
            }
            Some((record, None)) => chunk.push(record),
            None => break,
        }
        *next_row += 1;
    }
    Ok(chunk)
}

impl Source for FileSource {
    fn poll(&mut self) -> Result<Poll, SourceError> {
        // Register before looking, so a chunk sent in between still wakes this thread.
        if let Ok(mut poller) = self.poller.lock() {
            *poller = Some(std::thread::current());
        }
        match self.chunks.try_recv() {
            Ok(Ok(chunk)) => {
                self.frontier = chunk.epoch;
                Ok(Poll::Ready(chunk))
            }
            Ok(Err(error)) => Err(error),
            Err(TryRecvError::Empty) => Ok(Poll::Pending),
            Err(TryRecvError::Disconnected) => {
                let panicked = self
                    .reader
                    .take()
                    .map(|r| r.join().is_err())
                    .unwrap_or(false);
                if panicked {
                    Err(SourceError::ReaderGone {
                        path: self.path.clone(),
                    })
                } else {
                    Ok(Poll::Finished)
                }
            }
        }
    }

    fn frontier(&self) -> u64 {
        self.frontier
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (
            self.bytes_read.load(Ordering::Relaxed),
            Some(self.total_bytes),
        )
    }
}
