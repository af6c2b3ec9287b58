//! The one dataflow graph every mode runs, and the driver that feeds it.
//!
//! ```text
//!  source ──chunks──▶ ParseRecords ──rows──▶ OrderedWindows ──rows──▶ JoinKeyed ──▶ StampVersions ──┐
//!  (file/S3/Kafka,    (every worker,  and    (one worker: global  │     ▲ (keyed     (version in force │
//!   _row assigned)     by chunk)      dead    windows, epochs in  │     │  values     at the row's date;│
//!                                     letters _row order;    keyed│     │  filled in) process 0's       │
//!                                             dead letters        │     │             workers, by batch)│
//!                                             on at once)         │     │                  │ stat deltas │
//!  catalog watcher ──newer plans─────────────┼───▶┘          rows ▼     │                  ▼             │
//!  (live versions)                           │              ApplyKeyed ─┘ (by key    count_total         │
//!                                            │                             value)   (differential,       │
//!                                            │                                       on worker 0)        │
//!                                            └──dead letters─────────────────────────────┴──▶ WriteToStore ◀┘
//!                                                          (worker 0, one tx and checkpoint per epoch; on a
//!                                                           shared store, WriteRows on every other worker
//!                                                           writes the rows routed to it first)
//! ```
//!
//! Timestamps are epochs: consecutive runs of `_row`s fixed by the source. An epoch is written
//! once the frontier has passed it everywhere, so the store only ever holds whole epochs, and
//! the output never depends on the number of workers, nor on which worker parsed a chunk: a
//! chunk goes to the process its hash picks, and there to the worker with the fewest records
//! waiting to be parsed (`ParseQueues`). A version registered while a stream runs
//! reaches the graph as a newer plan on worker 0's plan input, at the epoch that worker is
//! reading; every later epoch is computed and stored under it ([`windows`] says how new
//! features start from the kept history). Rows travel in batches that share one text
//! buffer ([`LoanBatch`]); the store is written by a thread of its own (`writer`), and the sink
//! operator holds each epoch's capability until that thread has committed it.

mod cluster;
pub mod keyed;
mod operators;
mod stats;
pub mod windows;
mod writer;

pub use cluster::Cluster;
pub use keyed::KeyedWindows;
pub use operators::{
    ApplyKeyed, Epoch, JoinKeyed, OrderedWindows, ParseRecords, SinkItem, StampVersions,
    WindowEvent, WriteRows, WriteToStore,
};
pub use stats::{StatDelta, StatKey, StatSums};
pub use windows::{History, Windows};

use crate::checkpoint::{Checkpoint, Position, Resume};
use crate::features::{FeatureValues, Window};
use crate::metrics;
use crate::plan::FeaturePlan;
use crate::record::{LoanBatch, YearRange};
use crate::sink::{EpochBatch, FeatureBatch, FeatureRow, Sink, SinkError};
use crate::source::{Poll, RawChunk, Source, SourceError};
use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::trace::implementations::{KeyBatcher, KeySpine};
use operators::ParseQueues;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::core::{Concatenate, Exchange, Inspect, Probe};
use timely::dataflow::operators::vec::{Broadcast, Map, Partition};
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

/// Consecutive rows with the value of every definition the plan uses (before version stamping).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowedBatch {
    pub batch: LoanBatch,
    pub values: Vec<FeatureValues>,
}

/// What one dataflow computes: which years of the input feed which table under which plan, and
/// where it resumes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub years: YearRange,
    pub plan: FeaturePlan,
    /// The source's identity, under which the store keeps its checkpoint.
    pub source: String,
    /// The checkpoint to resume from (see [`crate::checkpoint`]); `None` starts from the first
    /// row.
    pub resume: Option<Resume>,
    /// Every row gets this version, whatever its date (a backfill); `None`: the version in
    /// force at the row's date.
    pub pinned: Option<u32>,
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
    /// Where newer plans (live versions) are offered to the running dataflow.
    pub live_plans: Option<Arc<PlanSlot>>,
    /// How many recent scores the window operator keeps for definitions that arrive live.
    pub history_rows: usize,
    /// Run as one process of several (cluster mode); `None` runs alone.
    pub cluster: Option<Cluster>,
    /// Every worker writes the rows routed to it, over a connection of its own (a server store
    /// all processes reach); otherwise worker 0 writes every row (a file store).
    pub every_worker_writes: bool,
}

/// A newer plan offered to a running dataflow (by the catalog watcher); worker 0 sends it into
/// the graph at the epoch it is reading.
#[derive(Debug, Default)]
pub struct PlanSlot {
    pending: AtomicBool,
    plan: Mutex<Option<FeaturePlan>>,
}

impl PlanSlot {
    pub fn offer(&self, plan: FeaturePlan) {
        *self.plan.lock().expect("plan lock") = Some(plan);
        self.pending.store(true, Ordering::Release);
    }

    /// The plan offered since the last call, if any (cheap when there is none).
    fn take(&self) -> Option<FeaturePlan> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        self.plan.lock().expect("plan lock").take()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            workers: 1,
            epochs_in_flight: 4,
            progress: false,
            stop: None,
            live_plans: None,
            history_rows: 0,
            cluster: None,
            every_worker_writes: false,
        }
    }
}

/// The store writers a worker holds: worker 0 writes epochs with their checkpoints (and every
/// row routed to it); on a shared store, every other worker of every process writes the rows
/// routed to it.
#[derive(Default)]
pub struct Writers {
    pub checkpoints: Option<Box<dyn Sink>>,
    pub rows: Option<Box<dyn Sink>>,
    /// The workers that write rows (worker 0 first); a batch of rows goes to one of them.
    pub row_writers: Vec<usize>,
    /// Where all rows meet for the global windows: the last worker of process 0, next to the
    /// reader and the store writer (another worker than 0 when there are several, so that the
    /// windows do not share worker 0's thread; in process 0, so that rows do not cross the
    /// network to a window worker and back).
    pub window_worker: usize,
}

impl Writers {
    /// Which row writer a batch goes to (mixed from its first row, so consecutive batches
    /// spread).
    fn route(row_writers: &[usize], rows: &FeatureBatch) -> usize {
        let mixed = operators::batch_route(rows.batch.first_row().unwrap_or(0));
        row_writers[(mixed % row_writers.len() as u64) as usize]
    }
}

/// Builds the graph on one worker; returns the probe that tells which epochs are durable in the
/// store. `raw` carries the source's chunks; `positions` where each worker's source parts
/// resume once its input has moved past an epoch (for the checkpoint); `plans` newer plans.
pub fn build<'scope>(
    raw: StreamVec<'scope, Epoch, RawChunk>,
    positions: StreamVec<'scope, Epoch, Position>,
    plans: StreamVec<'scope, Epoch, FeaturePlan>,
    job: &Job,
    history_rows: usize,
    writers: Writers,
    state: Arc<RunState>,
) -> ProbeHandle<Epoch> {
    let plan = &job.plan;
    let windows = match &job.resume {
        Some(resume) => resume
            .checkpoint
            .windows(&plan.definitions())
            .expect("the job checked that the checkpoint holds every window"),
        None => plan.definitions().iter().map(Window::new).collect(),
    };
    let history = match &job.resume {
        Some(resume) => History::refilled(history_rows, &resume.history),
        None => History::new(history_rows, true),
    };
    let scope = raw.scope();
    let keyed = KeyedWindows::new(
        plan.definitions(),
        windows.clone(),
        scope.index(),
        scope.peers(),
    );
    let parsed = raw.parse_records(job.years, Arc::clone(&state));
    let at = writers.window_worker;
    let (events, keyed_work, dead_letters) =
        parsed.ordered_windows(plans, Windows::new(plan.clone(), windows, history), at);
    let (items, stat_deltas) = events
        .join_keyed(keyed_work.apply_keyed(keyed), plan, at)
        // Process 0's workers stamp: the window worker is its last.
        .stamp_versions(plan, job.pinned, at + 1, Arc::clone(&state));
    // A resumed run's totals go on from those the store committed with its checkpoint.
    let stored: HashMap<StatKey, StatDelta> = job
        .resume
        .as_ref()
        .map(|r| r.stats.iter().cloned().collect())
        .unwrap_or_default();
    // The totals are summed where they are stored, on worker 0: the deltas come from process
    // 0's workers, so in a cluster they never cross to another process and back.
    let stat_totals = arrange_core::<_, _, KeyBatcher<_, _, _>, KeySpine<_, _, _>>(
        stat_deltas.map(|key| (key, ())).inner,
        ExchangePact::new(|_: &((StatKey, ()), Epoch, StatDelta)| 0),
        "Stats at worker 0",
        KeyBatcher::new,
    )
    .count_total()
    .inner
    .flat_map(
        move |((key, total), time, diff): ((StatKey, StatDelta), Epoch, isize)| {
            (diff > 0).then(|| {
                let mut total = total;
                if let Some(before) = stored.get(&key) {
                    total.plus_equals(before);
                }
                SinkItem::Stat(time, key, total)
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
    // Rows go to their process's writer; a plan change goes to every writer; everything else
    // goes to worker 0 with the checkpoint.
    let row_writers = writers.row_writers.clone();
    let mut parts = items.partition(3, move |item| match item {
        SinkItem::Rows(rows) if Writers::route(&row_writers, &rows) != 0 => {
            (1, SinkItem::Rows(rows))
        }
        SinkItem::Plan(plan) => (2, SinkItem::Plan(plan)),
        other => (0, other),
    });
    let (plan_changes, elsewhere, here) = (
        parts.pop().expect("three parts"),
        parts.pop().expect("three parts"),
        parts.pop().expect("three parts"),
    );
    let row_writers = writers.row_writers;
    let rows_committed = scope
        .concatenate([
            elsewhere.exchange(move |item| match item {
                SinkItem::Rows(rows) => Writers::route(&row_writers, rows) as u64,
                _ => 0,
            }),
            plan_changes.clone().broadcast(),
        ])
        .write_rows(writers.rows, Arc::clone(&state));
    scope
        .concatenate([
            here,
            plan_changes,
            dead_letters.map(SinkItem::Dead),
            stat_totals,
            positions.map(SinkItem::Position),
        ])
        .write_to_store(rows_committed, writers.checkpoints, last, plan, state)
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

/// Longest a worker sleeps while an early stop is under way or a cluster is starting, when what
/// it waits for may come without a wake-up. (A worker whose source has nothing yet sleeps for the
/// source's `idle_wait`, by default as long: 1 ms there cost a third of the throughput of a file
/// run.)
const MAX_PARK: Duration = Duration::from_micros(100);

/// Longest a worker sleeps when only a message can give it work: it has no source, or its source
/// is held back for the store to catch up. Every message wakes it: another worker's data or
/// progress, a store writer's commit (its operator's activator); the bound only covers a failure
/// or a stop elsewhere. With the short bound above, such workers woke thousands of times a
/// second to find nothing to do, on cores the others needed:
///
/// - waiting on a slow store, a fifth of a run into PostgreSQL (the worker without a source:
///   1.9 s of CPU in a 13 s run, 0.46 s with this bound);
/// - in a cluster on one 2-core host, process 1's worker (2 × 1, 5,000,000 records into CSV:
///   the two processes took 3.28 s of CPU instead of 3.48 s, medians of eight alternations).
const IDLE_PARK: Duration = Duration::from_millis(5);

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
    /// Records waiting to be parsed on each of this process's workers.
    parse_queues: ParseQueues,
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
        // Rows per version, indexed by version (a handful).
        let mut stored: Vec<u64> = Vec::new();
        for rows in &batch.rows {
            for &version in &rows.versions {
                let version = version as usize;
                if version >= stored.len() {
                    stored.resize(version + 1, 0);
                }
                stored[version] += 1;
            }
        }
        let mut report = self.report.lock().expect("report lock");
        let mut previews_wanted = false;
        for (version, &rows) in stored.iter().enumerate().filter(|(_, &r)| r > 0) {
            let version = version as u32;
            metrics.stored(&self.table, version, rows);
            *report.stored.entry(version).or_default() += rows;
            previews_wanted |= report
                .first_rows
                .get(&version)
                .is_none_or(|preview| preview.len() < PREVIEW_ROWS);
        }
        report.dead_lettered += batch.dead_letters.len() as u64;
        if !previews_wanted {
            return;
        }
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

/// Makes the source each worker polls: `(worker index, workers, where the run resumes)` → that
/// worker's share of the input, or `None` when it reads nothing. The position is where the job
/// the run executes resumes (in a cluster, process 0's job; see [`run`]).
pub type SourceFactory = Box<
    dyn Fn(usize, usize, &Position) -> Result<Option<Box<dyn Source>>, SourceError> + Send + Sync,
>;

/// A factory that gives one source (a file) to worker 0, opened where process 0's job resumes.
pub fn single_source(source: Box<dyn Source>) -> SourceFactory {
    let slot = Mutex::new(Some(source));
    Box::new(move |index, _, _| {
        Ok(if index == 0 {
            slot.lock().expect("source lock").take()
        } else {
            None
        })
    })
}

/// Runs `job` over the sources into the store on `options.workers` threads. `sinks` are this
/// process's store connections, one per worker that writes, in worker order: worker 0's (the
/// checkpoints) first in process 0; with `options.every_worker_writes`, one for every worker.
///
/// Without `options.stop`, the run ends when every source is finished and every epoch is
/// durable. When `options.stop` is raised (a signal), every worker stops reading and holds its
/// input where it is; the run then writes exactly the epochs every worker had closed, tells the
/// sources what is durable, and ends. Rows of epochs that were still open are left for the next
/// run, so the store never holds an epoch that was computed from part of its rows.
///
/// In a cluster every process runs process 0's job (see [`process_0s_job`]): its plan and the
/// checkpoint it read; `job` is this process's (on the others, the plan it read and no
/// checkpoint).
pub fn run(
    job: &Job,
    sources: SourceFactory,
    sinks: Vec<Box<dyn Sink>>,
    options: EngineOptions,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let workers = options.workers.max(1);
    // This process's workers are global workers `first_here..first_here + workers`.
    let first_here = options.cluster.as_ref().map_or(0, |c| c.process * workers);
    let state = Arc::new(RunState {
        table: job.plan.table.clone(),
        parse_queues: ParseQueues::new(first_here, workers),
        ..RunState::default()
    });
    let sinks: Mutex<Vec<Option<Box<dyn Sink>>>> =
        Mutex::new(sinks.into_iter().map(Some).collect());
    let job = job.clone();
    let shared = Arc::clone(&state);
    let (allocators, network) = match &options.cluster {
        Some(cluster) => {
            cluster::exit_when_a_peer_fails();
            cluster.allocators(workers).map_err(RunError::Engine)?
        }
        None => timely::CommunicationConfig::Process(workers)
            .try_build()
            .map_err(RunError::Engine)?,
    };
    let clustered = options.cluster.is_some();
    let worker_config = timely::WorkerConfig::default();
    let guards = timely::execute::execute_from(allocators, network, worker_config, move |worker| {
        let state = Arc::clone(&shared);
        let (index, peers) = (worker.index(), worker.peers());
        let read_here = &job;
        let job = if clustered {
            process_0s_job(worker, read_here)
        } else {
            read_here.clone()
        };
        // This process's sinks go to its workers in order: worker 0 writes checkpoints, the
        // others the rows routed to them.
        let mut writers = Writers {
            row_writers: if options.every_worker_writes {
                (0..peers).collect()
            } else {
                vec![0]
            },
            window_worker: workers - 1,
            ..Writers::default()
        };
        let mut sink = sinks
            .lock()
            .expect("sinks lock")
            .get_mut(index - first_here)
            .and_then(Option::take);
        if let (Some(rows), true) = (&mut sink, job.plan != read_here.plan) {
            // Prepared for the plan this process read; process 0 read a newer one.
            if let Err(error) = rows.prepare(&job.plan) {
                state.fail(error.into());
            }
        }
        if index == 0 {
            writers.checkpoints = sink;
        } else {
            writers.rows = sink;
        }
        let resume_at = job
            .resume
            .as_ref()
            .map(|r| r.checkpoint.position.clone())
            .unwrap_or_default();
        let mut my_source = sources(index, peers, &resume_at).unwrap_or_else(|error| {
            state.fail(error.into());
            None
        });
        let mut inputs = Inputs::default();
        let probe = worker.dataflow::<Epoch, _, _>(|scope| {
            build(
                inputs.raw.to_stream(scope),
                inputs.positions.to_stream(scope),
                inputs.plans.to_stream(scope),
                &job,
                options.history_rows,
                writers,
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
                if clustered {
                    // Workers of other processes cannot vote here: stop at once instead. The
                    // store keeps whole epochs; a restart of every process resumes from them.
                    state.fail(RunError::Engine(
                        "stopped by a signal in cluster mode: the other processes stop too; restart all of them to resume".into(),
                    ));
                    break;
                }
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
            if let (0, Some(slot), Some(handle)) = (index, &options.live_plans, &mut input) {
                if let Some(plan) = slot.take() {
                    tracing::info!(
                        table = plan.table.as_str(),
                        versions = plan.versions.len(),
                        epoch = handle.time(),
                        "Taking on a newer feature-set plan from this epoch."
                    );
                    handle.plans.send(plan);
                    handle.plans.flush();
                }
            }
            let (mut fed, mut held_back) = (false, false);
            match (&mut my_source, &mut input) {
                (Some(source), Some(handle)) => {
                    // Bound memory: read on only while few epochs are open. (A source past its
                    // last epoch is at Epoch::MAX and only has its end to report.)
                    let open = handle.time();
                    let ahead =
                        durable.is_some_and(|d| open >= d.saturating_add(options.epochs_in_flight));
                    held_back = ahead && open != Epoch::MAX;
                    if !held_back {
                        match source.poll() {
                            Ok(Poll::Ready(mut chunk)) => {
                                chunk.read_here = true;
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
                let wait = match &my_source {
                    Some(source) if !held_back => source.idle_wait(),
                    _ => IDLE_PARK,
                };
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

/// Process 0's job, which every worker of a cluster runs: worker 0 sends it to every worker
/// before the run's dataflow is built.
///
/// Only process 0 reads the plan it registered and the store's last checkpoint. Had each process
/// read them on its own, a commit landing between two of those reads (the last transaction of a
/// process that was just killed: the server completes it after the process is gone; or a version
/// registered meanwhile) would leave processes resuming from different checkpoints, with
/// `feature_stats` totals, window states and source positions that do not belong together.
fn process_0s_job(worker: &mut timely::worker::Worker, job: &Job) -> Job {
    let received: Rc<RefCell<Option<Job>>> = Rc::default();
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Job>>>::new();
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let slot = Rc::clone(&received);
        input
            .to_stream(scope)
            .broadcast()
            .inspect(move |job| *slot.borrow_mut() = Some(job.clone()))
            .probe()
            .0
    });
    if worker.index() == 0 {
        input.send(job.clone());
    }
    drop(input);
    while !probe.done() {
        worker.step_or_park(Some(MAX_PARK));
    }
    received
        .take()
        .expect("worker 0 sends its job to every worker")
}

/// A worker's inputs: the source's chunks, where its source parts resume, and newer plans
/// (worker 0 only). They advance together.
struct Inputs {
    raw: InputHandle<Epoch, CapacityContainerBuilder<Vec<RawChunk>>>,
    positions: InputHandle<Epoch, CapacityContainerBuilder<Vec<Position>>>,
    plans: InputHandle<Epoch, CapacityContainerBuilder<Vec<FeaturePlan>>>,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs {
            raw: InputHandle::new(),
            positions: InputHandle::new(),
            plans: InputHandle::new(),
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
        self.plans.advance_to(epoch);
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
