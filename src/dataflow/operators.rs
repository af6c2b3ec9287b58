//! The dataflow's operators, each a small extension trait over a timely stream.

use super::keyed::{KeyedOut, KeyedWindows, KeyedWork};
use super::stats::{StatDelta, StatKey, StatSums};
use super::writer::StoreWriter;
use super::{RunError, RunState, WindowedBatch, Windows};
use crate::checkpoint::{merge, Checkpoint, Position, WindowState};
use crate::features::FeatureValues;
use crate::parse::RecordParser;
use crate::plan::FeaturePlan;
use crate::record::{DeadLetter, LoanBatch, YearRange};
use crate::sink::{EpochBatch, FeatureBatch, Sink, StatTotal};
use crate::source::RawChunk;
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, InputCapability, Operator};
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

/// Epochs are the timestamps of the whole graph.
pub type Epoch = u64;

/// Spreads batches over workers by their first row (mixed, so consecutive batches differ).
pub(super) fn batch_route(first_row: u64) -> u64 {
    first_row.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

/// Records routed to each worker of this process and not parsed yet, so that a chunk can go to
/// the worker with the least to do. The window worker also runs the global windows, and worker
/// 0 the source and the store; with chunks spread by their hash alone the window worker was the
/// busiest (41% of a 2-worker run's samples against 34%), and the other waited on it.
#[derive(Debug, Default)]
pub(super) struct ParseQueues {
    /// This process's first worker (global index).
    first: usize,
    waiting: Vec<AtomicU64>,
}

impl ParseQueues {
    /// The queues of this process's `workers` workers, the first of which is global worker
    /// `first`.
    pub(super) fn new(first: usize, workers: usize) -> ParseQueues {
        ParseQueues {
            first,
            waiting: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Which worker parses `chunk` (a global index): the one its hash picks, unless that is a
    /// worker of this process; then the worker of this process with the fewest records waiting
    /// (the hashed one on a tie). Each process still parses its share of the chunks; which of its
    /// workers parses one never changes a result (rows meet again in `_row` order).
    fn route(&self, chunk: &RawChunk, peers: usize) -> u64 {
        let hashed = (batch_route(chunk.first_row) % peers as u64) as usize;
        // Only chunks taken from a source here are counted: only they are uncounted when parsed.
        let Some(local) = hashed
            .checked_sub(self.first)
            .filter(|&i| i < self.waiting.len() && chunk.read_here)
        else {
            return hashed as u64;
        };
        let workers = self.waiting.len();
        let least = (0..workers)
            .map(|offset| (local + offset) % workers)
            .min_by_key(|&i| self.waiting[i].load(Ordering::Relaxed))
            .expect("a process has workers");
        self.waiting[least].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        (self.first + least) as u64
    }

    /// Worker `worker` (global index) has parsed a chunk that was counted for it.
    fn parsed(&self, worker: usize, records: usize) {
        self.waiting[worker - self.first].fetch_sub(records as u64, Ordering::Relaxed);
    }
}

/// Decodes raw chunks into rows, in parallel on every worker.
pub trait ParseRecords<'scope> {
    /// Rows of the wanted years (one batch per chunk, in `_row` order), and the records that
    /// could not be read, in one stream: they travel together to the window worker, one message
    /// where two streams would need two (in a cluster, each crosses between processes).
    fn parse_records(
        self,
        years: YearRange,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, Parsed>;
}

/// A chunk's rows, or a record of it that could not be read.
pub type Parsed = Result<LoanBatch, DeadLetter>;

impl<'scope> ParseRecords<'scope> for StreamVec<'scope, Epoch, RawChunk> {
    fn parse_records(
        self,
        years: YearRange,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, Parsed> {
        let mut parser = RecordParser::default();
        let (me, peers) = (self.scope().index(), self.scope().peers());
        let router = Arc::clone(&state);
        self.unary::<CapacityContainerBuilder<Vec<Parsed>>, _, _, _>(
            Exchange::new(move |chunk: &RawChunk| router.parse_queues.route(chunk, peers)),
            "ParseRecords",
            move |_, _| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        for chunk in data.flat_map(|batch| batch.iter()) {
                            // A chunk may belong to a later epoch than the input's time (a
                            // Kafka partition that is ahead of the others on its worker).
                            let chunk_cap = cap.delayed(&chunk.epoch, output.output_index());
                            let mut session = output.session(&chunk_cap);
                            let mut batch = LoanBatch {
                                text: String::with_capacity(chunk.data.len() / 2),
                                rows: Vec::with_capacity(chunk.len()),
                            };
                            let mut filtered = 0;
                            for (row, raw, rejection) in chunk.records() {
                                let parsed = match rejection {
                                    Some(why) => Err(RecordParser::rejected(row, raw, why)),
                                    None => parser.parse(row, raw, &mut batch.text),
                                };
                                let date = match &parsed {
                                    Ok(loan) => Some(loan.application_date),
                                    Err(dead) => dead.application_date,
                                };
                                match parsed {
                                    _ if date.is_some_and(|d| !years.contains(d.year())) => {
                                        filtered += 1
                                    }
                                    Ok(loan) => batch.rows.push(loan),
                                    Err(dead) => session.give(Err(dead)),
                                }
                            }
                            if !batch.is_empty() {
                                session.give(Ok(batch));
                            }
                            state.add_read(chunk.len() as u64, filtered);
                            if chunk.read_here {
                                state.parse_queues.parsed(me, chunk.len());
                            }
                        }
                    });
                }
            },
        )
    }
}

/// What the ordered-windows operator emits for an epoch, in this order: the plan, when a live
/// version changed it at this epoch; the rows with the value of every definition the plan uses;
/// the windows' state after the epoch (which the store commits so that a later run resumes
/// from it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum WindowEvent {
    Plan(FeaturePlan),
    Rows(WindowedBatch),
    State(WindowState),
}

/// Holds rows per epoch until the frontier passes it, then feeds them to the global kernels in
/// `_row` order. All rows meet on one worker: the default feature key is the whole stream. Keyed
/// definitions are sent on to their keys' owners as [`KeyedWork`] (see [`super::keyed`]).
///
/// `plans` carries newer plans (live versions); one sent at epoch `e` is taken on before the
/// rows of `e`, so every epoch is computed under one plan.
pub trait OrderedWindows<'scope> {
    /// All rows meet on worker `at` (see [`crate::dataflow::Writers::window_worker`]); the
    /// dead letters that come with them are passed on at once.
    fn ordered_windows(
        self,
        plans: StreamVec<'scope, Epoch, FeaturePlan>,
        windows: Windows,
        at: usize,
    ) -> (
        StreamVec<'scope, Epoch, WindowEvent>,
        StreamVec<'scope, Epoch, KeyedWork>,
        StreamVec<'scope, Epoch, DeadLetter>,
    );
}

/// An epoch waiting for the frontier: its capability, its rows, and a newer plan if one came.
struct OpenEpoch {
    cap: Capability<Epoch>,
    batches: Vec<LoanBatch>,
    plan: Option<FeaturePlan>,
}

impl OpenEpoch {
    /// The open epoch a message belongs to (opened now if it is the first).
    fn of<'a>(
        open: &'a mut BTreeMap<Epoch, OpenEpoch>,
        cap: &InputCapability<Epoch>,
        port: usize,
    ) -> Option<&'a mut OpenEpoch> {
        let time = *cap.least()?;
        Some(open.entry(time).or_insert_with(|| OpenEpoch {
            cap: cap.delayed(&time, port),
            batches: Vec::new(),
            plan: None,
        }))
    }
}

impl<'scope> OrderedWindows<'scope> for StreamVec<'scope, Epoch, Parsed> {
    fn ordered_windows(
        self,
        plans: StreamVec<'scope, Epoch, FeaturePlan>,
        mut windows: Windows,
        at: usize,
    ) -> (
        StreamVec<'scope, Epoch, WindowEvent>,
        StreamVec<'scope, Epoch, KeyedWork>,
        StreamVec<'scope, Epoch, DeadLetter>,
    ) {
        let peers = self.scope().peers();
        let to = at as u64;
        type Out = Result<Result<WindowEvent, KeyedWork>, DeadLetter>;
        let out = self.binary_frontier::<_, CapacityContainerBuilder<Vec<Out>>, _, _, _, _>(
            plans,
            Exchange::new(move |_: &Parsed| to),
            Exchange::new(move |_: &FeaturePlan| to),
            "OrderedWindows",
            move |_, _| {
                let mut open: BTreeMap<Epoch, OpenEpoch> = BTreeMap::new();
                move |(rows, rows_frontier), (plans, plans_frontier), output| {
                    let port = output.output_index();
                    rows.for_each_stamp(|cap, data| {
                        let mut epoch = OpenEpoch::of(&mut open, &cap, port);
                        let mut session = output.session(&cap);
                        for parsed in data.flat_map(|container| container.drain(..)) {
                            match (parsed, &mut epoch) {
                                (Ok(batch), Some(epoch)) => epoch.batches.push(batch),
                                (Ok(_), None) => {}
                                (Err(dead), _) => session.give(Err(dead)),
                            }
                        }
                    });
                    plans.for_each_stamp(|cap, data| {
                        if let Some(epoch) = OpenEpoch::of(&mut open, &cap, port) {
                            for plan in data.flat_map(|container| container.drain(..)) {
                                let newest = epoch.plan.as_ref().map_or(0, |p| p.versions.len());
                                if plan.versions.len() > newest {
                                    epoch.plan = Some(plan);
                                }
                            }
                        }
                    });
                    while let Some(first) = open.first_entry() {
                        let epoch = first.key();
                        if rows_frontier.less_equal(epoch) || plans_frontier.less_equal(epoch) {
                            break;
                        }
                        let OpenEpoch {
                            cap,
                            mut batches,
                            plan,
                        } = first.remove();
                        let mut session = output.session(&cap);
                        let changed = plan.is_some_and(|plan| windows.take_on(plan));
                        if changed {
                            let plan = windows.plan();
                            session.give(Ok(Ok(WindowEvent::Plan(plan.clone()))));
                            session.give_iterator((0..peers).map(|owner| {
                                Ok(Err(KeyedWork {
                                    owner: owner as u32,
                                    plan: Some(plan.clone()),
                                    ..KeyedWork::default()
                                }))
                            }));
                        }
                        if batches.is_empty() && !changed {
                            continue;
                        }
                        batches.sort_unstable_by_key(LoanBatch::first_row);
                        let (windowed, keyed) = windows.apply(batches, peers);
                        session.give_iterator(keyed.into_iter().map(|k| Ok(Err(k))));
                        session.give_iterator(
                            windowed.into_iter().map(|w| Ok(Ok(WindowEvent::Rows(w)))),
                        );
                        session.give(Ok(Ok(WindowEvent::State(windows.state()))));
                    }
                }
            },
        );
        let (out, dead_letters): (StreamVec<'scope, Epoch, _>, _) = out.ok_err(|out: Out| out);
        let (events, keyed_work) = out.ok_err(|out: Result<WindowEvent, KeyedWork>| out);
        (events, keyed_work, dead_letters)
    }
}

/// Feeds each key owner's share of an epoch's keyed rows to its windows, once the frontier has
/// passed the epoch, and sends the values (and its keys' state) back to the window worker.
pub trait ApplyKeyed<'scope> {
    fn apply_keyed(self, windows: KeyedWindows) -> StreamVec<'scope, Epoch, KeyedOut>;
}

impl<'scope> ApplyKeyed<'scope> for StreamVec<'scope, Epoch, KeyedWork> {
    fn apply_keyed(self, mut windows: KeyedWindows) -> StreamVec<'scope, Epoch, KeyedOut> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<KeyedOut>>, _, _, _>(
            Exchange::new(|work: &KeyedWork| u64::from(work.owner)),
            "ApplyKeyed",
            move |_, _| {
                let mut open: BTreeMap<Epoch, (Capability<Epoch>, Vec<KeyedWork>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        open.entry(time)
                            .or_insert_with(|| (cap.delayed(&time, port), Vec::new()))
                            .1
                            .extend(data.flat_map(|container| container.drain(..)));
                    });
                    while let Some(first) = open.first_entry() {
                        if frontier.less_equal(first.key()) {
                            break;
                        }
                        let (cap, work) = first.remove();
                        let mut values = Vec::new();
                        for work in &work {
                            if let Some(plan) = &work.plan {
                                windows.take_on(plan);
                            }
                            windows.apply(work, &mut values);
                        }
                        if !values.is_empty() {
                            let mut session = output.session(&cap);
                            session.give(KeyedOut::Values(values));
                            session.give(KeyedOut::State(windows.state()));
                        }
                    }
                }
            },
        )
    }
}

/// Fills the keyed values computed by the keys' owners into the rows of each epoch (on the
/// window worker, once both frontiers have passed it), and adds the owners' keys to the epoch's
/// window state.
///
/// While the plan has no keyed definition (`plan`, then the newer plans among the events),
/// events pass straight through.
pub trait JoinKeyed<'scope> {
    /// `at`: the window worker.
    fn join_keyed(
        self,
        keyed: StreamVec<'scope, Epoch, KeyedOut>,
        plan: &FeaturePlan,
        at: usize,
    ) -> StreamVec<'scope, Epoch, WindowEvent>;
}

/// An epoch's events from the window worker and values from the key owners.
struct Joining {
    cap: Capability<Epoch>,
    events: Vec<WindowEvent>,
    keyed: Vec<KeyedOut>,
}

impl Joining {
    fn of<'a>(
        open: &'a mut BTreeMap<Epoch, Joining>,
        cap: &InputCapability<Epoch>,
        port: usize,
    ) -> &'a mut Joining {
        let time = *cap.least().expect("a message has a time");
        open.entry(time).or_insert_with(|| Joining {
            cap: cap.delayed(&time, port),
            events: Vec::new(),
            keyed: Vec::new(),
        })
    }
}

impl<'scope> JoinKeyed<'scope> for StreamVec<'scope, Epoch, WindowEvent> {
    fn join_keyed(
        self,
        keyed: StreamVec<'scope, Epoch, KeyedOut>,
        plan: &FeaturePlan,
        at: usize,
    ) -> StreamVec<'scope, Epoch, WindowEvent> {
        let to = at as u64;
        let is_keyed = |plan: &FeaturePlan| plan.definitions().iter().any(|d| d.key.is_some());
        let mut keyed_plan = is_keyed(plan);
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<WindowEvent>>, _, _, _, _>(
            keyed,
            Pipeline,
            Exchange::new(move |_: &KeyedOut| to),
            "JoinKeyed",
            move |_, _| {
                let mut open: BTreeMap<Epoch, Joining> = BTreeMap::new();
                move |(events, events_frontier), (keyed, keyed_frontier), output| {
                    let port = output.output_index();
                    events.for_each_stamp(|cap, data| {
                        for event in data.flat_map(|container| container.drain(..)) {
                            if let WindowEvent::Plan(newer) = &event {
                                keyed_plan = is_keyed(newer);
                            }
                            if keyed_plan {
                                Joining::of(&mut open, &cap, port).events.push(event);
                            } else {
                                output.session(&cap).give(event);
                            }
                        }
                    });
                    keyed.for_each_stamp(|cap, data| {
                        Joining::of(&mut open, &cap, port)
                            .keyed
                            .extend(data.flat_map(|container| container.drain(..)));
                    });
                    while let Some(first) = open.first_entry() {
                        let epoch = first.key();
                        if events_frontier.less_equal(epoch) || keyed_frontier.less_equal(epoch) {
                            break;
                        }
                        let Joining { cap, events, keyed } = first.remove();
                        output
                            .session(&cap)
                            .give_iterator(fill_keyed(events, keyed).into_iter());
                    }
                }
            },
        )
    }
}

/// An epoch's events with the keyed values filled in and the owners' keys in its state.
fn fill_keyed(mut events: Vec<WindowEvent>, keyed: Vec<KeyedOut>) -> Vec<WindowEvent> {
    if keyed.is_empty() {
        return events;
    }
    // The window worker numbered the batches in first-row order.
    let mut rows: Vec<&mut WindowedBatch> = events
        .iter_mut()
        .filter_map(|e| match e {
            WindowEvent::Rows(windowed) => Some(windowed),
            _ => None,
        })
        .collect();
    rows.sort_unstable_by_key(|w| w.batch.first_row());
    let mut owners_state = Vec::new();
    for out in keyed {
        match out {
            KeyedOut::Values(values) => {
                for (batch, index, slot, value) in values {
                    rows[batch as usize].values[index as usize][slot as usize] = value;
                }
            }
            KeyedOut::State(state) => owners_state.push(state),
        }
    }
    for event in &mut events {
        if let WindowEvent::State(state) = event {
            for owner in owners_state.drain(..) {
                state.extend(owner);
            }
        }
    }
    events
}

/// Gives each row the version in force at its date, keeping that version's features; also
/// emits the changes to `feature_stats` (pre-summed per batch) for differential to maintain.
/// Plan changes and window states pass on to the store with the epoch they belong to.
///
/// The batches are stamped on workers `0..stampers`, spread by first row, so that the window
/// worker does not also stamp every row. `stampers` are the window worker's process's workers:
/// rows do not cross to another process and back. Every stamping worker gets each plan change
/// before the rows of its epoch (a channel keeps the order in which one worker sent), and one
/// of them passes it on to the store.
pub trait StampVersions<'scope> {
    /// `pinned`: every row gets this version (a backfill).
    fn stamp_versions(
        self,
        plan: &FeaturePlan,
        pinned: Option<u32>,
        stampers: usize,
        state: Arc<RunState>,
    ) -> (
        StreamVec<'scope, Epoch, SinkItem>,
        VecCollection<'scope, Epoch, StatKey, StatDelta>,
    );
}

impl<'scope> StampVersions<'scope> for StreamVec<'scope, Epoch, WindowEvent> {
    fn stamp_versions(
        self,
        plan: &FeaturePlan,
        pinned: Option<u32>,
        stampers: usize,
        state: Arc<RunState>,
    ) -> (
        StreamVec<'scope, Epoch, SinkItem>,
        VecCollection<'scope, Epoch, StatKey, StatDelta>,
    ) {
        let mut plan = plan.clone();
        let mut slots = plan.definition_slots();
        let stampers = stampers.max(1) as u64;
        // (stamping worker, whether it passes a plan change on to the store, event)
        let spread = self.flat_map(move |event| -> Vec<(u64, bool, WindowEvent)> {
            match event {
                WindowEvent::Rows(windowed) => {
                    let to = batch_route(windowed.batch.first_row().unwrap_or(0)) % stampers;
                    vec![(to, false, WindowEvent::Rows(windowed))]
                }
                WindowEvent::Plan(newer) => (0..stampers)
                    .map(|to| (to, to == 0, WindowEvent::Plan(newer.clone())))
                    .collect(),
                state => vec![(0, false, state)],
            }
        });
        type Out = Result<SinkItem, (StatKey, Epoch, StatDelta)>;
        let (items, stats) = spread
            .unary::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
                Exchange::new(|(to, _, _): &(u64, bool, WindowEvent)| *to),
                "StampVersions",
                move |_, _| {
                    let mut sums = StatSums::default();
                    move |input, output| {
                        input.for_each_stamp(|cap, data| {
                            let Some(&time) = cap.least() else { return };
                            let mut session = output.session(&cap);
                            for (_, forward, event) in data.flat_map(|c| c.drain(..)) {
                                let windowed = match event {
                                    WindowEvent::Rows(windowed) => windowed,
                                    WindowEvent::Plan(newer) => {
                                        slots = newer.definition_slots();
                                        plan = newer.clone();
                                        if forward {
                                            session.give(Ok(SinkItem::Plan(newer)));
                                        }
                                        continue;
                                    }
                                    WindowEvent::State(windows) => {
                                        session.give(Ok(SinkItem::Windows(windows)));
                                        continue;
                                    }
                                };
                                let batch =
                                    stamp(&plan, pinned, &slots, windowed, &mut sums, &state);
                                if !batch.is_empty() {
                                    session.give(Ok(SinkItem::Rows(batch)));
                                }
                            }
                            session.give_iterator(
                                sums.take()
                                    .into_iter()
                                    .map(|(key, delta)| Err((key, time, delta))),
                            );
                        });
                    }
                },
            )
            .ok_err(|out| out);
        (items, stats.as_collection())
    }
}

/// Stamps one batch: rows dated before the first version are filtered out (and counted so);
/// the others keep their version's values and add to the stats sums.
fn stamp(
    plan: &FeaturePlan,
    pinned: Option<u32>,
    slots: &[Vec<usize>],
    windowed: WindowedBatch,
    sums: &mut StatSums,
    state: &RunState,
) -> FeatureBatch {
    let WindowedBatch {
        batch: mut rows,
        values: all_values,
    } = windowed;
    let mut batch = FeatureBatch {
        versions: Vec::with_capacity(rows.len()),
        values: Vec::with_capacity(rows.len()),
        ..FeatureBatch::default()
    };
    let mut kept = 0;
    for (i, row_values) in all_values.iter().enumerate() {
        let loan = rows.rows[i];
        let version = match pinned {
            Some(id) => plan.versions.get(id as usize),
            None => plan.version_at(loan.application_date),
        };
        let Some(version) = version else {
            state.add_read(0, 1);
            continue;
        };
        // Pushed one by one: `collect` into a SmallVec is an out-of-line call per row.
        let mut values = FeatureValues::new();
        for &slot in &slots[version.id as usize] {
            values.push(row_values[slot]);
        }
        let columns = std::iter::once(loan.risk_score).chain(values.iter().copied());
        sums.add(version.id, loan.application_date, columns);
        rows.rows[kept] = loan;
        kept += 1;
        batch.versions.push(version.id);
        batch.values.push(values);
    }
    rows.rows.truncate(kept);
    batch.batch = rows;
    batch
}

/// One item bound for the store.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum SinkItem {
    Rows(FeatureBatch),
    Dead(DeadLetter),
    /// A column's new total, with the epoch it belongs to: differential sends updates of several
    /// times in one message, so the message's time is only a lower bound.
    Stat(Epoch, StatKey, StatDelta),
    /// A worker's input moved past this epoch; its source parts resume here.
    Position(Position),
    /// The windows' state after this epoch.
    Windows(WindowState),
    /// The plan changed at this epoch (a live version): the store evolves before writing it.
    Plan(FeaturePlan),
}

/// Writes each epoch to the store once the frontier has passed it, in one transaction, on worker
/// 0, with the checkpoint that lets a later run resume right after it. The operator holds a
/// capability for every epoch not yet durable, so a probe after it tells the driver which
/// epochs are committed.
///
/// On a shared store, where every worker writes, the rows routed to other workers reach their
/// [`WriteRows`] operators; `rows_committed` is those operators' output, and an epoch's
/// checkpoint is written only once its frontier has passed the epoch, that is once every
/// worker's rows of it are durable.
pub trait WriteToStore<'scope> {
    /// `last` is the checkpoint the run resumed from (or an empty one naming the source); `plan`
    /// the plan the run starts with.
    fn write_to_store(
        self,
        rows_committed: StreamVec<'scope, Epoch, ()>,
        sink: Option<Box<dyn Sink>>,
        last: Checkpoint,
        plan: &FeaturePlan,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, ()>;
}

/// Writes the rows routed to this worker (any worker but 0, on a shared store), over a
/// connection of its own, without a checkpoint; the output's frontier passes an epoch once its
/// rows are durable here.
/// A plan item makes the store take on the newer plan first (the catalog watcher has already
/// evolved the store's schema, see [`crate::sink::Sink::adopt`]).
pub trait WriteRows<'scope> {
    fn write_rows(
        self,
        sink: Option<Box<dyn Sink>>,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, ()>;
}

/// An epoch being gathered: its capability, what it will write, and what it tells the
/// checkpoint.
struct Gathering {
    cap: Capability<Epoch>,
    batch: EpochBatch,
    stats: Vec<(StatKey, StatDelta)>,
    positions: Vec<Position>,
    windows: Option<WindowState>,
    plan: Option<FeaturePlan>,
}

impl Gathering {
    fn new(cap: Capability<Epoch>, epoch: Epoch) -> Gathering {
        Gathering {
            cap,
            batch: EpochBatch {
                epoch,
                ..EpochBatch::default()
            },
            stats: Vec::new(),
            positions: Vec::new(),
            windows: None,
            plan: None,
        }
    }

    fn add(&mut self, item: SinkItem) {
        match item {
            SinkItem::Rows(rows) => self.batch.rows.push(rows),
            SinkItem::Dead(dead) => self.batch.dead_letters.push(dead),
            SinkItem::Stat(_, key, total) => self.stats.push((key, total)),
            SinkItem::Position(at) => self.positions.push(at),
            SinkItem::Windows(windows) => self.windows = Some(windows),
            SinkItem::Plan(plan) => self.plan = Some(plan),
        }
    }
}

/// Gathers the items of each epoch as they arrive (a stat names its own epoch).
fn gather(
    pending: &mut BTreeMap<Epoch, Gathering>,
    cap: &InputCapability<Epoch>,
    port: usize,
    items: impl Iterator<Item = SinkItem>,
) {
    let Some(&least) = cap.least() else { return };
    for item in items {
        let epoch = match &item {
            SinkItem::Stat(epoch, ..) => *epoch,
            _ => least,
        };
        pending
            .entry(epoch)
            .or_insert_with(|| Gathering::new(cap.delayed(&epoch, port), epoch))
            .add(item);
    }
}

/// Epochs handed to the store writer thread, each holding its capability until committed.
struct Committing {
    writer: Option<StoreWriter>,
    writing: VecDeque<(Epoch, Capability<Epoch>)>,
}

impl Committing {
    /// A writer thread for `sink` (none without a sink: the worker writes nothing).
    fn start(sink: Option<Box<dyn Sink>>, state: &Arc<RunState>, wake: SyncActivator) -> Self {
        Committing {
            writer: sink.map(|sink| StoreWriter::start(sink, Arc::clone(state), wake)),
            writing: VecDeque::new(),
        }
    }

    fn write(&mut self, batch: EpochBatch, cap: Capability<Epoch>) {
        if let Some(writer) = &self.writer {
            self.writing.push_back((batch.epoch, cap));
            writer.write(batch);
        }
    }

    /// Drops the capabilities of committed epochs; once `done`, waits for the writer to finish.
    fn release(&mut self, done: bool) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        while self
            .writing
            .front()
            .is_some_and(|(epoch, _)| writer.is_committed(*epoch))
        {
            self.writing.pop_front();
        }
        if done {
            writer.finish();
            self.writing.clear();
            self.writer = None;
        }
    }
}

/// The `feature_stats` column names of each version: `risk_score`, then its features.
fn stat_columns(plan: &FeaturePlan) -> Vec<Vec<String>> {
    plan.versions
        .iter()
        .map(|v| {
            std::iter::once("risk_score".to_owned())
                .chain(v.features.keys().cloned())
                .collect()
        })
        .collect()
}

impl<'scope> WriteToStore<'scope> for StreamVec<'scope, Epoch, SinkItem> {
    fn write_to_store(
        self,
        rows_committed: StreamVec<'scope, Epoch, ()>,
        sink: Option<Box<dyn Sink>>,
        mut last: Checkpoint,
        plan: &FeaturePlan,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, ()> {
        let scope = self.scope();
        let mut stat_names = stat_columns(plan);
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            rows_committed,
            Exchange::new(|_: &SinkItem| 0),
            Pipeline,
            "WriteToStore",
            move |_, info| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                let has_sink = sink.is_some();
                let mut store = Committing::start(sink, &state, wake);
                let mut pending: BTreeMap<Epoch, Gathering> = BTreeMap::new();
                move |(input, frontier), (committed, elsewhere), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        gather(&mut pending, &cap, port, data.flat_map(|b| b.drain(..)));
                    });
                    committed.for_each(|_, _| {});
                    if !has_sink {
                        pending.clear();
                        return;
                    }
                    while let Some(entry) = pending.first_entry() {
                        let epoch = *entry.key();
                        let stopped = state.stop_target().is_some_and(|t| epoch >= t);
                        let open = frontier.less_equal(&epoch) || elsewhere.less_equal(&epoch);
                        if open || state.failed() || stopped {
                            break;
                        }
                        let Gathering {
                            cap,
                            mut batch,
                            stats,
                            positions,
                            windows,
                            plan,
                        } = entry.remove();
                        if let Some(plan) = plan {
                            stat_names = stat_columns(&plan);
                            batch.evolve = Some(plan);
                        }
                        batch.stats = stats
                            .into_iter()
                            .map(|((version, day, column), total)| StatTotal {
                                version,
                                day,
                                column: stat_names[version as usize][column as usize].clone(),
                                rows: total.rows,
                                nulls: total.nulls,
                                mean: total.mean(),
                                sum_micros: total.sum_micros,
                            })
                            .collect();
                        let before = last.position.clone();
                        for at in &positions {
                            merge(&mut last.position, at);
                        }
                        let moved =
                            windows.is_some() || batch.evolve.is_some() || last.position != before;
                        if let Some(windows) = windows {
                            // Key owners report only their keys: a kernel is replaced, never
                            // dropped.
                            last.windows.extend(windows);
                        }
                        if batch.is_empty() && !moved {
                            continue; // nothing to write, nothing learnt: release the epoch
                        }
                        last.epoch = batch.epoch;
                        batch.checkpoint = Some(last.clone());
                        batch
                            .rows
                            .sort_unstable_by_key(|rows| rows.batch.first_row());
                        batch.dead_letters.sort_unstable_by_key(|d| d.row);
                        batch.stats.sort_unstable_by(|a, b| {
                            (a.version, a.day, &a.column).cmp(&(b.version, b.day, &b.column))
                        });
                        store.write(batch, cap);
                    }
                    store
                        .release(frontier.is_empty() && elsewhere.is_empty() && pending.is_empty());
                }
            },
        )
    }
}

impl<'scope> WriteRows<'scope> for StreamVec<'scope, Epoch, SinkItem> {
    fn write_rows(
        self,
        sink: Option<Box<dyn Sink>>,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, ()> {
        let scope = self.scope();
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "WriteRows",
            move |_, info| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                let has_sink = sink.is_some();
                let mut store = Committing::start(sink, &state, wake);
                let mut pending: BTreeMap<Epoch, Gathering> = BTreeMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        gather(&mut pending, &cap, port, data.flat_map(|b| b.drain(..)));
                    });
                    if !has_sink {
                        // Rows are routed only to workers that hold a row writer.
                        if pending.values().any(|g| !g.batch.rows.is_empty()) {
                            state.fail(RunError::Engine(
                                "rows reached a worker without a store writer".into(),
                            ));
                        }
                        pending.clear();
                        return;
                    }
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) || state.failed() {
                            break;
                        }
                        let Gathering {
                            cap,
                            mut batch,
                            plan,
                            ..
                        } = entry.remove();
                        batch.evolve = plan;
                        if batch.rows.is_empty() && batch.evolve.is_none() {
                            continue;
                        }
                        batch
                            .rows
                            .sort_unstable_by_key(|rows| rows.batch.first_row());
                        store.write(batch, cap);
                    }
                    store.release(frontier.is_empty() && pending.is_empty());
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::{History, Windows};
    use crate::features::Window;
    use crate::record::{Date, LoanRow, Reason};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    use timely::dataflow::operators::capture::{Capture, Event};
    use timely::dataflow::operators::core::Inspect;
    use timely::dataflow::operators::Input;

    /// A chunk of `records` records starting at `first_row`, as the engine takes it from a
    /// source of this process.
    fn chunk(first_row: u64, records: u32) -> RawChunk {
        RawChunk {
            first_row,
            ends: (1..=records).collect(),
            read_here: true,
            ..RawChunk::default()
        }
    }

    /// The first row of a chunk that `batch_route` sends to global worker `to` of `peers`.
    fn row_hashed_to(to: u64, peers: u64) -> u64 {
        (1..).find(|&row| batch_route(row) % peers == to).unwrap()
    }

    #[test]
    fn a_chunk_goes_to_the_least_queued_worker_of_the_process_its_hash_picks() {
        // Process 1 of two, with workers 3, 4 and 5 of 6.
        let queues = ParseQueues::new(3, 3);
        let to_worker_4 = row_hashed_to(4, 6);
        // Empty queues: the hashed worker.
        assert_eq!(queues.route(&chunk(to_worker_4, 100), 6), 4);
        // Worker 4 now has 100 waiting: the next one goes to 5, then 3, both empty.
        assert_eq!(queues.route(&chunk(to_worker_4, 10), 6), 5);
        assert_eq!(queues.route(&chunk(to_worker_4, 10), 6), 3);
        assert_eq!(queues.route(&chunk(to_worker_4, 10), 6), 5);
        // Worker 4 parses its 100: it is the least queued again.
        queues.parsed(4, 100);
        assert_eq!(queues.route(&chunk(to_worker_4, 10), 6), 4);
        // A chunk hashed to another process goes there, and is not counted here.
        let to_worker_1 = row_hashed_to(1, 6);
        assert_eq!(queues.route(&chunk(to_worker_1, 1000), 6), 1);
        // Nor is one that crossed from another process: timely's encoding leaves `read_here` out.
        let crossed: RawChunk =
            bincode::deserialize(&bincode::serialize(&chunk(to_worker_4, 1000)).unwrap()).unwrap();
        assert!(!crossed.read_here);
        assert_eq!(queues.route(&crossed, 6), 4);
        let waiting: Vec<u64> = queues
            .waiting
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        assert_eq!(waiting, [10, 10, 20]);
    }

    fn batch(rows: &[(u64, f64)]) -> LoanBatch {
        let rows = rows
            .iter()
            .map(|&(row, score)| LoanRow {
                row,
                amount_requested: None,
                application_date: Date::parse("2009-01-01").unwrap(),
                risk_score: Some(score),
                spans: [0; 7],
            })
            .collect();
        LoanBatch {
            text: String::new(),
            rows,
        }
    }

    /// A plan of `versions` (each a list of `name = definition`), all applying from 2000.
    fn plan(versions: &[&[(&str, &str)]]) -> FeaturePlan {
        let versions = versions
            .iter()
            .enumerate()
            .map(|(id, features)| {
                crate::plan::version(id as u32, &format!("{}-01-01", 2000 + id), features)
            })
            .collect();
        FeaturePlan::new("t", versions).unwrap()
    }

    /// A row as the operator emitted it: epoch, `_row`, values.
    type RowSeen = (Epoch, u64, Vec<Option<f64>>);

    /// Runs the window operators (global, keyed, joined) on `workers` workers over `epochs` of
    /// rows (sent by worker 0), with `newer` sent on the plan input at `(epoch, plan)`; returns
    /// `(epoch, _row, values)` per row and the plans announced.
    fn windowed_on(
        workers: usize,
        start: FeaturePlan,
        epochs: Vec<Vec<LoanBatch>>,
        newer: Option<(Epoch, FeaturePlan)>,
    ) -> (Vec<RowSeen>, Vec<(Epoch, usize)>) {
        let config = timely::Config::process(workers);
        let guards = timely::execute(config, move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let start = start.clone();
            let (mut rows_in, mut plans_in, captured) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (rows_in, rows) = scope.new_input::<Vec<Parsed>>();
                let (plans_in, plans) = scope.new_input::<Vec<FeaturePlan>>();
                let defs = start.definitions();
                let plan = start.clone();
                let windows: Vec<Window> = defs.iter().map(Window::new).collect();
                let keyed = KeyedWindows::new(defs, windows.clone(), index, peers);
                let windows = Windows::new(start, windows, History::new(1_000, true));
                let (events, work, _) = rows.ordered_windows(plans, windows, peers - 1);
                let joined = events.join_keyed(work.apply_keyed(keyed), &plan, peers - 1);
                (rows_in, plans_in, joined.capture())
            });
            for (epoch, batches) in epochs.iter().enumerate() {
                let epoch = epoch as Epoch;
                rows_in.advance_to(epoch);
                plans_in.advance_to(epoch);
                if index != 0 {
                    continue;
                }
                if let Some((_, plan)) = newer.as_ref().filter(|(at, _)| *at == epoch) {
                    plans_in.send(plan.clone());
                }
                for batch in batches {
                    rows_in.send(Ok(batch.clone()));
                }
            }
            drop((rows_in, plans_in));
            while worker.step() {}
            captured
        })
        .unwrap();
        let (mut rows, mut plans) = (Vec::new(), Vec::new());
        for captured in guards.join() {
            for event in captured.unwrap().try_iter() {
                let Event::Messages(epoch, events) = event else {
                    continue;
                };
                let epoch = *epoch.least().expect("a time");
                let events: Vec<WindowEvent> = events;
                for event in events {
                    match event {
                        WindowEvent::Rows(batch) => {
                            for (loan, values) in batch.batch.rows.iter().zip(&batch.values) {
                                rows.push((epoch, loan.row, values.to_vec()));
                            }
                        }
                        WindowEvent::Plan(plan) => plans.push((epoch, plan.versions.len())),
                        WindowEvent::State(_) => {}
                    }
                }
            }
        }
        rows.sort_by_key(|(_, row, _)| *row);
        (rows, plans)
    }

    fn windowed(
        start: FeaturePlan,
        epochs: Vec<Vec<LoanBatch>>,
        newer: Option<(Epoch, FeaturePlan)>,
    ) -> (Vec<RowSeen>, Vec<(Epoch, usize)>) {
        windowed_on(1, start, epochs, newer)
    }

    /// A batch of `(_row, score, state)`.
    fn keyed_batch(rows: &[(u64, f64, &str)]) -> LoanBatch {
        let mut batch = batch(&rows.iter().map(|&(r, s, _)| (r, s)).collect::<Vec<_>>());
        for (loan, &(_, _, state)) in batch.rows.iter_mut().zip(rows) {
            let start = batch.text.len() as u32;
            batch.text.push_str(state);
            let end = batch.text.len() as u32;
            loan.spans = [start, start, start, start, end, end, end];
        }
        batch
    }

    #[test]
    fn keyed_windows_spread_over_workers_equal_a_sequential_loop() {
        let states = ["CA", "NY", "TX", "FL", "WA"];
        let row = |r: u64| (r, ((r * 37) % 101) as f64, states[(r * 7 % 5) as usize]);
        // Three epochs of two chunks each, the second chunk first.
        let epochs: Vec<Vec<LoanBatch>> = (0..3u64)
            .map(|e| {
                let first: Vec<_> = (e * 40 + 1..=e * 40 + 20).map(row).collect();
                let second: Vec<_> = (e * 40 + 21..=e * 40 + 40).map(row).collect();
                vec![keyed_batch(&second), keyed_batch(&first)]
            })
            .collect();
        let start = plan(&[&[("g", "sma(3)"), ("k", "sma(2) by state")]]);
        // From epoch 1, also `ema(3) by state`: registered live, it starts empty there.
        let newer = plan(&[
            &[("g", "sma(3)"), ("k", "sma(2) by state")],
            &[
                ("g", "sma(3)"),
                ("k", "sma(2) by state"),
                ("e", "ema(3) by state"),
            ],
        ]);
        let expected: Vec<RowSeen> = {
            let defs: Vec<crate::features::FeatureDef> =
                ["sma(3)", "sma(2) by state", "ema(3) by state"]
                    .iter()
                    .map(|d| d.parse().unwrap())
                    .collect();
            let mut global = crate::features::Kernel::new(&defs[0]);
            let mut by_state: BTreeMap<&str, crate::features::Kernel> = BTreeMap::new();
            let mut ema_by_state: BTreeMap<&str, crate::features::Kernel> = BTreeMap::new();
            (1..=120)
                .map(|r| {
                    let (r, score, state) = row(r);
                    let epoch = (r - 1) / 40;
                    let mut values = vec![
                        global.push(Some(score)),
                        by_state
                            .entry(state)
                            .or_insert_with(|| crate::features::Kernel::new(&defs[1]))
                            .push(Some(score)),
                    ];
                    if epoch >= 1 {
                        values.push(
                            ema_by_state
                                .entry(state)
                                .or_insert_with(|| crate::features::Kernel::new(&defs[2]))
                                .push(Some(score)),
                        );
                    }
                    (epoch, r, values)
                })
                .collect()
        };
        for workers in [1, 2, 3] {
            let (rows, plans) = windowed_on(
                workers,
                start.clone(),
                epochs.clone(),
                Some((1, newer.clone())),
            );
            assert_eq!(plans, [(1, 2)], "{workers} workers");
            assert_eq!(rows, expected, "{workers} workers");
        }
    }

    #[test]
    fn dead_letters_that_come_with_rows_are_passed_on_before_their_epoch_is_complete() {
        // Worker 0 sends rows and a dead letter at epoch 0, and the plan input keeps the epoch
        // open: the dead letter comes out of the window worker (1) at once, the rows only once
        // epoch 0 is complete.
        let passed_on = Arc::new(AtomicBool::new(false));
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            let dead_seen = Rc::new(RefCell::new(Vec::new()));
            let events_seen = Rc::new(RefCell::new(0));
            let (mut rows_in, plans_in) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (rows_in, rows) = scope.new_input::<Vec<Parsed>>();
                let (plans_in, plans) = scope.new_input::<Vec<FeaturePlan>>();
                let plan = plan(&[&[("f", "sma(2)")]]);
                let windows: Vec<Window> = plan.definitions().iter().map(Window::new).collect();
                let windows = Windows::new(plan, windows, History::new(0, true));
                let (events, _, dead) = rows.ordered_windows(plans, windows, 1);
                let seen = Rc::clone(&dead_seen);
                dead.inspect_core(move |event| {
                    if let Ok((stamp, letters)) = event {
                        let epoch = *stamp.least().expect("a time");
                        let rows = letters.iter().map(|d: &DeadLetter| (epoch, d.row));
                        seen.borrow_mut().extend(rows);
                    }
                });
                let seen = Rc::clone(&events_seen);
                events.inspect(move |_| *seen.borrow_mut() += 1);
                (rows_in, plans_in)
            });
            let dead = DeadLetter {
                row: 3,
                application_date: None,
                reason: Reason::FieldCount,
                detail: "two fields".into(),
                raw: b"a,b".to_vec(),
            };
            if index == 0 {
                rows_in.send(Ok(batch(&[(1, 10.0), (2, 20.0)])));
                rows_in.send(Err(dead));
            }
            // Sends the rows on; the plan input keeps epoch 0 open.
            rows_in.advance_to(1);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !passed_on.load(Ordering::SeqCst) && Instant::now() < deadline {
                worker.step();
                if !dead_seen.borrow().is_empty() {
                    passed_on.store(true, Ordering::SeqCst);
                }
            }
            let before_the_epoch_closed = (dead_seen.borrow().clone(), *events_seen.borrow());
            drop((rows_in, plans_in));
            while worker.step() {}
            let after = *events_seen.borrow();
            (index, before_the_epoch_closed, after)
        })
        .unwrap();
        let mut results: Vec<_> = guards.join().into_iter().map(Result::unwrap).collect();
        results.sort();
        assert_eq!(results[0], (0, (vec![], 0), 0));
        // Rows, then the windows' state.
        assert_eq!(results[1], (1, (vec![(0, 3)], 0), 2));
    }

    #[test]
    fn ordered_windows_apply_each_epoch_in_row_order_whatever_the_arrival_order() {
        // Epoch 0 arrives as two chunks in the wrong order, then epoch 1.
        let epochs = vec![
            vec![
                batch(&[(3, 30.0), (4, 40.0)]),
                batch(&[(1, 10.0), (2, 20.0)]),
            ],
            vec![batch(&[(5, 50.0)])],
        ];
        let (rows, plans) = windowed(plan(&[&[("f", "sma(2)")]]), epochs, None);
        let got: Vec<(Epoch, u64, Option<f64>)> =
            rows.into_iter().map(|(e, r, v)| (e, r, v[0])).collect();
        assert_eq!(
            got,
            [
                (0, 1, Some(10.0)),
                (0, 2, Some(15.0)),
                (0, 3, Some(25.0)),
                (0, 4, Some(35.0)),
                (1, 5, Some(45.0))
            ]
        );
        assert!(plans.is_empty());
    }

    #[test]
    fn a_newer_plan_applies_from_its_epoch_with_its_new_windows_warmed_from_history() {
        let epochs = vec![
            vec![batch(&[(1, 10.0), (2, 20.0)])],
            vec![batch(&[(3, 30.0)])],
            vec![batch(&[(4, 40.0)])],
        ];
        let first = plan(&[&[("f", "sma(2)")]]);
        let both = plan(&[&[("f", "sma(2)")], &[("f", "sma(2)"), ("g", "sma(3)")]]);
        let (rows, plans) = windowed(first, epochs, Some((1, both)));
        assert_eq!(plans, [(1, 2)], "the new plan is announced at its epoch");
        assert_eq!(
            rows,
            [
                (0, 1, vec![Some(10.0)]),
                (0, 2, vec![Some(15.0)]),
                // sma(3) at row 3 already covers rows 1-3, as a full replay would.
                (1, 3, vec![Some(25.0), Some(20.0)]),
                (2, 4, vec![Some(35.0), Some(30.0)]),
            ]
        );
    }
}
