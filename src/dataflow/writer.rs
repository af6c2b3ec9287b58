//! The store writer thread: epochs are written off the timely worker, so the store's work
//! (SQLite's B-tree, CSV formatting) overlaps with parsing and feature computation.
//!
//! The sink operator hands over completed epochs in order and keeps each epoch's capability until
//! the writer reports it committed, so the probe after the operator still means "durable".

use super::{Epoch, RunState};
use crate::sink::{EpochBatch, Sink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use timely::scheduling::SyncActivator;

/// Epochs the writer may hold queued before the operator waits: bounds memory.
const QUEUED_EPOCHS: usize = 2;

/// A background thread that owns the sink.
pub struct StoreWriter {
    batches: Option<SyncSender<EpochBatch>>,
    /// One past the last committed epoch (0: none yet).
    committed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Starts the thread; `wake` reschedules the sink operator after each commit.
    pub fn start(
        mut sink: Box<dyn Sink>,
        state: Arc<RunState>,
        wake: SyncActivator,
    ) -> StoreWriter {
        let (batches, incoming) = sync_channel::<EpochBatch>(QUEUED_EPOCHS);
        let committed = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&committed);
        let thread = std::thread::Builder::new()
            .name("riskflow-writer".into())
            .spawn(move || {
                for batch in incoming {
                    if state.failed() {
                        break;
                    }
                    let started = std::time::Instant::now();
                    let evolved = batch
                        .evolve
                        .as_ref()
                        .map_or(Ok(()), |plan| sink.evolve(plan));
                    match evolved.and_then(|()| sink.write_epoch(&batch)) {
                        Ok(()) => state.record_epoch(&batch, started.elapsed()),
                        Err(error) => state.fail(error.into()),
                    }
                    done.store(batch.epoch + 1, Ordering::Release);
                    let _ = wake.activate();
                }
                if !state.failed() {
                    if let Err(error) = sink.finish() {
                        state.fail(error.into());
                    }
                }
                let _ = wake.activate();
            })
            .expect("spawn the store writer thread");
        StoreWriter {
            batches: Some(batches),
            committed,
            thread: Some(thread),
        }
    }

    /// Queues an epoch (blocks while the writer is `QUEUED_EPOCHS` behind).
    pub fn write(&self, batch: EpochBatch) {
        if let Some(batches) = &self.batches {
            // A send fails only if the writer stopped on an error, which the run state reports.
            let _ = batches.send(batch);
        }
    }

    /// Whether `epoch` is committed.
    pub fn is_committed(&self, epoch: Epoch) -> bool {
        self.committed.load(Ordering::Acquire) > epoch
    }

    /// Closes the queue and waits for the writer to flush and exit.
    pub fn finish(&mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StoreWriter {
    /// A run stopped early drops the dataflow with the writer in it: let it finish what it was
    /// given rather than be cut off when the process exits.
    fn drop(&mut self) {
        self.finish();
    }
}
