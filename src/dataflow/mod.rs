//! The one dataflow graph every mode runs, and the driver that feeds it.
//!
//! ```text
//!  source ──chunks──▶ ParseRecords ──rows──▶ OrderedWindows ──▶ StampVersions ──rows──────┐
//!  (file/S3/Kafka,    (every worker,  │      (exchange by key;    (version in force   │
//!   _row assigned)     by chunk)      │       epochs in _row       at the row's date)  │
//!                                     │       order)                     │ stat deltas   ▼
//!                                     │                                  ▼          WriteToStore
//!                                     │                     count_total (differential) ─▶ (worker 0,
//!                                     └──dead letters────────────────────────────────────▶ one tx/epoch)
//! ```
//!
//! Timestamps are epochs: consecutive runs of `_row`s fixed by the source. An epoch is written
//! once the frontier has passed it everywhere, so the store only ever holds whole epochs, and
//! the output never depends on the number of workers. Rows travel in batches that share one text
//! buffer ([`LoanBatch`]); the store is written by a thread of its own (`writer`), and the sink
//! operator holds each epoch's capability until that thread has committed it.

mod operators;
mod stats;
mod writer;

pub use operators::{Epoch, OrderedWindows, ParseRecords, SinkItem, StampVersions, WriteToStore};
pub use stats::{StatDelta, StatKey, StatSums};

use crate::checkpoint::{Checkpoint, Position, Resume};
use crate::features::{FeatureValues, Kernel};
use crate::metrics;
use crate::plan::FeaturePlan;
use crate::record::{LoanBatch, YearRange};
use crate::sink::{EpochBatch, FeatureRow, Sink, SinkError, StatTotal};
use crate::source::{Poll, RawChunk, Source, SourceError};
use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::count::CountTotal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{Concatenate, OkErr, Probe};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

/// Consecutive rows with the value of every definition the plan uses (before version stamping).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowedBatch {
    pub batch: LoanBatch,
    pub values: Vec<FeatureValues>,
}

/// What one dataflow computes: which years of the input feed which table under which plan, and
/// where it resumes.
#[derive(Clone, Debug)]
pub struct Job {
    pub years: YearRange,
    pub plan: FeaturePlan,
    /// The source's identity, under which the store keeps its checkpoint.
    pub source: String,
    /// The checkpoint to resume from (see [`crate::checkpoint`]); `None` starts from the first
    /// row.
    pub resume: Option<Resume>,
}

impl Job {
    /// The first epoch this run computes.
    pub fn first_epoch(&self) -> Epoch {
        self.resume
            .as_ref()
            .map_or(0, |r| r.checkpoint.next_epoch())
    }
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Timely worker threads in this process.
    pub workers: usize,
    /// How many epochs the source may run ahead of the store; bounds memory.
    pub epochs_in_flight: u64,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Raised (by a signal handler) to stop early; see [`run`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            workers: 1,
            epochs_in_flight: 4,
            progress: false,
            stop: None,
        }
    }
}

/// Builds the graph on one worker; returns the probe that tells which epochs are durable in the
/// store. `raw` carries the source's chunks; `positions` where each worker's source parts
/// resume once its input has moved past an epoch (for the checkpoint).
pub fn build<'scope>(
    raw: StreamVec<'scope, Epoch, RawChunk>,
    positions: StreamVec<'scope, Epoch, Position>,
    job: &Job,
    sink: Option<Box<dyn Sink>>,
    state: Arc<RunState>,
) -> ProbeHandle<Epoch> {
    let plan = &job.plan;
    let definitions = plan.definitions();
    let kernels = match &job.resume {
        Some(resume) => resume
            .checkpoint
            .kernels(&definitions)
            .expect("the job checked that the checkpoint holds every window"),
        None => definitions.iter().map(Kernel::new).collect(),
    };
    let (rows, dead_letters) = raw.parse_records(job.years, Arc::clone(&state));
    let (windowed, windows) = rows
        .ordered_windows(&definitions, kernels)
        .ok_err(|out| out);
    let (features, stat_deltas) = windowed.stamp_versions(plan, Arc::clone(&state));
    let stat_names: Vec<Vec<String>> = plan
        .versions
        .iter()
        .map(|v| {
            std::iter::once("risk_score".to_owned())
                .chain(v.features.keys().cloned())
                .collect()
        })
        .collect();
    // A resumed run's totals go on from those the store committed with its checkpoint.
    let stored: HashMap<StatKey, StatDelta> = job
        .resume
        .as_ref()
        .map(|r| r.stats.iter().cloned().collect())
        .unwrap_or_default();
    let stat_totals = stat_deltas.count_total().inner.flat_map(
        move |(((version, day, column), total), time, diff): (
            (StatKey, StatDelta),
            Epoch,
            isize,
        )| {
            (diff > 0).then(|| {
                let mut total = total;
                if let Some(before) = stored.get(&(version, day, column)) {
                    total.plus_equals(before);
                }
                SinkItem::Stat(
                    time,
                    StatTotal {
                        version,
                        day,
                        column: stat_names[version as usize][column as usize].clone(),
                        rows: total.rows,
                        nulls: total.nulls,
                        mean: total.mean(),
                        sum_micros: total.sum_micros,
                    },
                )
            })
        },
    );
    let last = match &job.resume {
        Some(resume) => resume.checkpoint.clone(),
        None => Checkpoint {
            source: job.source.clone(),
            ..Checkpoint::default()
        },
    };
    let scope = features.scope();
    scope
        .concatenate([
            features.map(SinkItem::Rows),
            dead_letters.map(SinkItem::Dead),
            stat_totals,
            positions.map(SinkItem::Position),
            windows.map(SinkItem::Windows),
        ])
        .write_to_store(sink, last, state)
        .probe()
        .0
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the dataflow could not start: {0}")]
    Engine(String),
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Records read from the source (header excluded).
    pub records_read: u64,
    /// Well-formed records outside the job's years (or before its first version).
    pub filtered: u64,
    pub dead_lettered: u64,
    /// Rows stored, per version.
    pub stored: BTreeMap<u32, u64>,
    /// The first rows stored for each version, for the run summary.
    pub first_rows: BTreeMap<u32, Vec<FeatureRow>>,
    pub elapsed: Duration,
    /// The run was stopped by a signal before its sources were finished.
    pub stopped_early: bool,
}

impl RunReport {
    pub fn stored_total(&self) -> u64 {
        self.stored.values().sum()
    }
}

/// Longest a worker sleeps with nothing to do. Sources and the store writer wake it when they
/// have something; the bound covers wake-ups nobody sends (measured: 1 ms here cost a third of
/// the throughput of a file run).
const MAX_PARK: Duration = Duration::from_micros(100);

/// How many rows of each version the report keeps for display.
const PREVIEW_ROWS: usize = 4;

/// State shared by the workers of one run: counters, the first error, and the stop flag.
#[derive(Default)]
pub struct RunState {
    /// The table the run writes (the label of its metrics).
    table: String,
    records_read: AtomicU64,
    filtered: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<RunError>>,
    report: Mutex<RunReport>,
    stop: Mutex<StopVotes>,
}

/// An early stop in progress: how many workers have stopped reading, the least epoch they hold,
/// and, once all have, the first epoch that will not be written.
struct StopVotes {
    workers: usize,
    least_held: Epoch,
    target: Option<Epoch>,
}

impl Default for StopVotes {
    fn default() -> Self {
        StopVotes {
            workers: 0,
            least_held: Epoch::MAX,
            target: None,
        }
    }
}

impl RunState {
    fn add_read(&self, read: u64, filtered: u64) {
        self.records_read.fetch_add(read, Ordering::Relaxed);
        self.filtered.fetch_add(filtered, Ordering::Relaxed);
        metrics::global().read(&self.table, read, filtered);
    }

    /// Counts a committed epoch (which took `latency`) in the report and the metrics.
    fn record_epoch(&self, batch: &EpochBatch, latency: Duration) {
        let metrics = metrics::global();
        metrics.committed(&self.table, batch.epoch, latency);
        for dead in &batch.dead_letters {
            metrics.dead_lettered(&self.table, dead.reason.code());
        }
        let mut stored: BTreeMap<u32, u64> = BTreeMap::new();
        for rows in &batch.rows {
            for version in &rows.versions {
                *stored.entry(*version).or_default() += 1;
            }
        }
        let mut report = self.report.lock().expect("report lock");
        for (&version, &rows) in &stored {
            metrics.stored(&self.table, version, rows);
            *report.stored.entry(version).or_default() += rows;
        }
        report.dead_lettered += batch.dead_letters.len() as u64;
        for (row, version, values) in batch.rows() {
            let preview = report.first_rows.entry(version).or_default();
            if preview.len() < PREVIEW_ROWS {
                let (loan, text) = row.to_owned_row();
                preview.push(FeatureRow {
                    loan,
                    text,
                    version,
                    values: values.into(),
                });
            }
        }
    }

    /// Records the first error and tells every worker to stop.
    fn fail(&self, error: RunError) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(error);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// A worker stopped reading, holding its input at `held`.
    fn vote_stop(&self, held: Epoch, peers: usize) {
        let mut stop = self.stop.lock().expect("stop lock");
        stop.workers += 1;
        stop.least_held = stop.least_held.min(held);
        if stop.workers == peers {
            stop.target = Some(stop.least_held);
        }
    }

    /// During an early stop, the first epoch that will not be written.
    pub fn stop_target(&self) -> Option<Epoch> {
        self.stop.lock().expect("stop lock").target
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Makes the source each worker polls: `(worker index, workers)` → that worker's share of the
/// input, or `None` when it reads nothing.
pub type SourceFactory =
    Box<dyn Fn(usize, usize) -> Result<Option<Box<dyn Source>>, SourceError> + Send + Sync>;

/// A factory that gives one source (a file) to worker 0.
pub fn single_source(source: Box<dyn Source>) -> SourceFactory {
    let slot = Mutex::new(Some(source));
    Box::new(move |index, _| {
        Ok(if index == 0 {
            slot.lock().expect("source lock").take()
        } else {
            None
        })
    })
}

/// Runs `job` over the sources into `sink` on `options.workers` threads.
///
/// Without `options.stop`, the run ends when every source is finished and every epoch is
/// durable. When `options.stop` is raised (a signal), every worker stops reading and holds its
/// input where it is; the run then writes exactly the epochs every worker had closed, tells the
/// sources what is durable, and ends. Rows of epochs that were still open are left for the next
/// run, so the store never holds an epoch that was computed from part of its rows.
pub fn run(
    job: &Job,
    sources: SourceFactory,
    sink: Box<dyn Sink>,
    options: EngineOptions,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let state = Arc::new(RunState {
        table: job.plan.table.clone(),
        ..RunState::default()
    });
    let sink = Mutex::new(Some(sink));
    let job = job.clone();
    let shared = Arc::clone(&state);
    let config = timely::Config::process(options.workers.max(1));
    let guards = timely::execute(config, move |worker| {
        let state = Arc::clone(&shared);
        let (index, peers) = (worker.index(), worker.peers());
        let my_sink = if index == 0 {
            sink.lock().expect("sink lock").take()
        } else {
            None
        };
        let mut my_source = sources(index, peers).unwrap_or_else(|error| {
            state.fail(error.into());
            None
        });
        let mut inputs = Inputs::default();
        let probe = worker.dataflow::<Epoch, _, _>(|scope| {
            build(
                inputs.raw.to_stream(scope),
                inputs.positions.to_stream(scope),
                &job,
                my_sink,
                Arc::clone(&state),
            )
        });
        inputs.advance_to(job.first_epoch());
        let bar = (index == 0 && options.progress)
            .then(|| progress_bar(my_source.as_ref().and_then(|s| s.progress().1)));
        let mut input = Some(inputs);
        let mut durable_seen = 0;
        let mut stop_voted = false;
        while !state.failed() {
            let durable = probe.with_frontier(|f| f.first().copied());
            if let Some(source) = &mut my_source {
                let durable = durable.unwrap_or(Epoch::MAX);
                if durable > durable_seen {
                    durable_seen = durable;
                    if let Err(error) = source.durable(durable) {
                        state.fail(error.into());
                    }
                }
            }
            if options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                if !stop_voted {
                    stop_voted = true;
                    state.vote_stop(input.as_ref().map_or(Epoch::MAX, Inputs::time), peers);
                }
                if let Some(target) = state.stop_target() {
                    if !probe.less_than(&target) {
                        if let Some(source) = &mut my_source {
                            if let Err(error) = source.durable(target).and_then(|()| source.close())
                            {
                                state.fail(error.into());
                            }
                        }
                        break;
                    }
                }
                worker.step_or_park(Some(MAX_PARK));
                continue;
            }
            let mut fed = false;
            match (&mut my_source, &mut input) {
                (Some(source), Some(handle)) => {
                    // Bound memory: read on only while few epochs are open. (A source past its
                    // last epoch is at Epoch::MAX and only has its end to report.)
                    let open = handle.time();
                    let ahead =
                        durable.is_some_and(|d| open >= d.saturating_add(options.epochs_in_flight));
                    if !ahead || open == Epoch::MAX {
                        match source.poll() {
                            Ok(Poll::Ready(chunk)) => {
                                handle.raw.send(chunk);
                                handle.raw.flush();
                                fed = true;
                            }
                            Ok(Poll::Pending) => {}
                            Ok(Poll::Finished) => {
                                handle.report(source.position());
                                input = None;
                            }
                            Err(error) => state.fail(error.into()),
                        }
                        if let Some(handle) = &mut input {
                            let frontier = source.frontier();
                            if frontier > handle.time() {
                                handle.report(source.position());
                                handle.advance_to(frontier);
                            }
                        }
                    }
                }
                (None, Some(_)) => input = None,
                _ => {}
            }
            if let Some(bar) = &bar {
                match my_source.as_ref().map(|s| s.progress()) {
                    Some((done, Some(_))) => bar.set_position(done),
                    _ => bar.set_position(state.records_read.load(Ordering::Relaxed)),
                }
            }
            if input.is_none() && probe.done() {
                if let Some(source) = &mut my_source {
                    if let Err(error) = source.durable(Epoch::MAX).and_then(|()| source.close()) {
                        state.fail(error.into());
                    }
                }
                break;
            }
            if fed {
                worker.step();
            } else {
                let wait = my_source.as_ref().map_or(MAX_PARK, |s| s.idle_wait());
                worker.step_or_park(Some(wait));
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        // After a failure or an early stop the dataflow is unfinished by design; timely would
        // step it until it completes, so take it down here (the store writer finishes what it
        // was given as it is dropped).
        for dataflow in worker.installed_dataflows() {
            worker.drop_dataflow(dataflow);
        }
    })
    .map_err(RunError::Engine)?;
    let results = guards.join();
    if let Some(error) = state.error.lock().expect("error lock").take() {
        return Err(error);
    }
    for result in results {
        result.map_err(|e| RunError::Engine(format!("a worker stopped: {e}")))?;
    }
    let mut report = state.report.lock().expect("report lock").clone();
    report.records_read = state.records_read.load(Ordering::Relaxed);
    report.filtered = state.filtered.load(Ordering::Relaxed);
    report.elapsed = started.elapsed();
    report.stopped_early = state.stop_target().is_some();
    Ok(report)
}

/// A worker's two inputs: the source's chunks, and where its source parts resume.
struct Inputs {
    raw: InputHandle<Epoch, CapacityContainerBuilder<Vec<RawChunk>>>,
    positions: InputHandle<Epoch, CapacityContainerBuilder<Vec<Position>>>,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs {
            raw: InputHandle::new(),
            positions: InputHandle::new(),
        }
    }
}

impl Inputs {
    fn time(&self) -> Epoch {
        *self.raw.time()
    }

    fn advance_to(&mut self, epoch: Epoch) {
        self.raw.advance_to(epoch);
        self.positions.advance_to(epoch);
    }

    /// Reports, at the current epoch, where the source resumes once its input moves on.
    fn report(&mut self, position: Option<Position>) {
        if let Some(position) = position.filter(|p| !p.is_empty()) {
            self.positions.send(position);
            self.positions.flush();
        }
    }
}

/// A byte bar for a source of known size (a file), a row counter for a stream.
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            "{spinner} {bytes}/{total_bytes} {bar:30} {bytes_per_sec} eta {eta}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {human_pos} records read ({per_sec})",
        ),
    };
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    bar
}
