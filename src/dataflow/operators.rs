//! The dataflow's operators, each a small extension trait over a timely stream.

use super::stats::{StatDelta, StatKey, StatSums};
use super::writer::StoreWriter;
use super::{RunState, WindowedBatch};
use crate::checkpoint::{merge, Checkpoint, Position, WindowState};
use crate::features::{FeatureDef, FeatureValues, Kernel};
use crate::parse::RecordParser;
use crate::plan::FeaturePlan;
use crate::record::{merged_row_order, DeadLetter, LoanBatch, YearRange};
use crate::sink::{EpochBatch, FeatureBatch, Sink, StatTotal};
use crate::source::RawChunk;
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

/// Epochs are the timestamps of the whole graph.
pub type Epoch = u64;

/// Spreads chunks over workers by their first row (mixed, so consecutive chunks differ).
fn chunk_route(chunk: &RawChunk) -> u64 {
    chunk.first_row.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

/// Decodes raw chunks into rows, in parallel on every worker.
pub trait ParseRecords<'scope> {
    /// Rows of the wanted years (one batch per chunk, in `_row` order), and the records that
    /// could not be read.
    fn parse_records(
        self,
        years: YearRange,
        state: Arc<RunState>,
    ) -> (
        StreamVec<'scope, Epoch, LoanBatch>,
        StreamVec<'scope, Epoch, DeadLetter>,
    );
}

impl<'scope> ParseRecords<'scope> for StreamVec<'scope, Epoch, RawChunk> {
    fn parse_records(
        self,
        years: YearRange,
        state: Arc<RunState>,
    ) -> (
        StreamVec<'scope, Epoch, LoanBatch>,
        StreamVec<'scope, Epoch, DeadLetter>,
    ) {
        let mut parser = RecordParser::default();
        type Parsed = Result<LoanBatch, DeadLetter>;
        self.unary::<CapacityContainerBuilder<Vec<Parsed>>, _, _, _>(
            Exchange::new(chunk_route),
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
                        }
                    });
                }
            },
        )
        .ok_err(|parsed| parsed)
    }
}

/// Holds rows per epoch until the frontier passes it, then feeds them to the kernels in `_row`
/// order. All rows meet on one worker: the default feature key is the whole stream.
///
/// Besides the rows with their values, it emits the windows' state after each epoch it computed
/// (`Err`), which the store commits with the epoch so a later run can resume from it.
pub trait OrderedWindows<'scope> {
    fn ordered_windows(
        self,
        definitions: &[FeatureDef],
        kernels: Vec<Kernel>,
    ) -> StreamVec<'scope, Epoch, Result<WindowedBatch, WindowState>>;
}

impl<'scope> OrderedWindows<'scope> for StreamVec<'scope, Epoch, LoanBatch> {
    fn ordered_windows(
        self,
        definitions: &[FeatureDef],
        mut kernels: Vec<Kernel>,
    ) -> StreamVec<'scope, Epoch, Result<WindowedBatch, WindowState>> {
        let peers = self.scope().peers() as u64;
        let window_worker = peers - 1; // worker 0 also runs the sink
        let names: Vec<String> = definitions.iter().map(ToString::to_string).collect();
        type Out = Result<WindowedBatch, WindowState>;
        self.unary_frontier::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
            Exchange::new(move |_: &LoanBatch| window_worker),
            "OrderedWindows",
            move |_, _| {
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<LoanBatch>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(cap) = cap.retain_least(output.output_index()) else {
                            return;
                        };
                        let (_, batches) = pending
                            .entry(*cap.time())
                            .or_insert_with(|| (cap, Vec::new()));
                        batches.extend(data.flat_map(|container| container.drain(..)));
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (cap, mut batches) = entry.remove();
                        batches.sort_unstable_by_key(LoanBatch::first_row);
                        let values = apply_in_row_order(&batches, &mut kernels);
                        let mut session = output.session(&cap);
                        for (batch, values) in batches.into_iter().zip(values) {
                            session.give(Ok(WindowedBatch { batch, values }));
                        }
                        session.give(Err(names
                            .iter()
                            .cloned()
                            .zip(kernels.iter().cloned())
                            .collect()));
                    }
                }
            },
        )
    }
}

/// Feeds the rows of one epoch's batches (sorted by first row) to the kernels in `_row` order;
/// returns the values per batch and row.
///
/// File batches are runs that never interleave, so they are applied one after another; Kafka
/// batches hold every n-th row of a partition and are merged first.
fn apply_in_row_order(batches: &[LoanBatch], kernels: &mut [Kernel]) -> Vec<Vec<FeatureValues>> {
    let mut apply = |loan: &crate::record::LoanRow| -> FeatureValues {
        kernels
            .iter_mut()
            .map(|k| k.push(loan.risk_score))
            .collect()
    };
    let Some(order) = merged_row_order(batches.iter().map(|batch| &batch.rows[..])) else {
        return batches
            .iter()
            .map(|batch| batch.rows.iter().map(&mut apply).collect())
            .collect();
    };
    let mut values: Vec<Vec<FeatureValues>> = batches
        .iter()
        .map(|batch| vec![FeatureValues::new(); batch.len()])
        .collect();
    for (b, i) in order {
        values[b as usize][i as usize] = apply(&batches[b as usize].rows[i as usize]);
    }
    values
}

/// Gives each row the version in force at its date, keeping that version's features; also
/// emits the changes to `feature_stats` (pre-summed per batch) for differential to maintain.
pub trait StampVersions<'scope> {
    fn stamp_versions(
        self,
        plan: &FeaturePlan,
        state: Arc<RunState>,
    ) -> (
        StreamVec<'scope, Epoch, FeatureBatch>,
        VecCollection<'scope, Epoch, StatKey, StatDelta>,
    );
}

impl<'scope> StampVersions<'scope> for StreamVec<'scope, Epoch, WindowedBatch> {
    fn stamp_versions(
        self,
        plan: &FeaturePlan,
        state: Arc<RunState>,
    ) -> (
        StreamVec<'scope, Epoch, FeatureBatch>,
        VecCollection<'scope, Epoch, StatKey, StatDelta>,
    ) {
        let plan = plan.clone();
        let slots = plan.definition_slots();
        type Out = Result<FeatureBatch, (StatKey, Epoch, StatDelta)>;
        let (rows, stats) = self
            .unary::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
                Pipeline,
                "StampVersions",
                move |_, _| {
                    let mut sums = StatSums::default();
                    move |input, output| {
                        input.for_each_stamp(|cap, data| {
                            let Some(&time) = cap.least() else { return };
                            let mut session = output.session(&cap);
                            for windowed in data.flat_map(|container| container.drain(..)) {
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
                                    let Some(version) = plan.version_at(loan.application_date)
                                    else {
                                        state.add_read(0, 1);
                                        continue;
                                    };
                                    let values: FeatureValues = slots[version.id as usize]
                                        .iter()
                                        .map(|&s| row_values[s])
                                        .collect();
                                    let columns = std::iter::once(loan.risk_score)
                                        .chain(values.iter().copied());
                                    sums.add(version.id, loan.application_date, columns);
                                    rows.rows[kept] = loan;
                                    kept += 1;
                                    batch.versions.push(version.id);
                                    batch.values.push(values);
                                }
                                rows.rows.truncate(kept);
                                batch.batch = rows;
                                if !batch.is_empty() {
                                    session.give(Ok(batch));
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
        (rows, stats.as_collection())
    }
}

/// One item bound for the store.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum SinkItem {
    Rows(FeatureBatch),
    Dead(DeadLetter),
    /// A new total, with the epoch it belongs to: differential sends updates of several times
    /// in one message, so the message's time is only a lower bound.
    Stat(Epoch, StatTotal),
    /// A worker's input moved past this epoch; its source parts resume here.
    Position(Position),
    /// The windows' state after this epoch.
    Windows(WindowState),
}

/// Writes each epoch to the store once the frontier has passed it, in one transaction, on worker
/// 0, with the checkpoint that lets a later run resume right after it. The operator holds a
/// capability for every epoch not yet durable, so a probe after it tells the driver which
/// epochs are committed.
pub trait WriteToStore<'scope> {
    /// `last` is the checkpoint the run resumed from (or an empty one naming the source).
    fn write_to_store(
        self,
        sink: Option<Box<dyn Sink>>,
        last: Checkpoint,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, ()>;
}

/// An epoch being gathered: its capability, what it will write, and what it tells the
/// checkpoint.
struct Gathering {
    cap: Capability<Epoch>,
    batch: EpochBatch,
    positions: Vec<Position>,
    windows: Option<WindowState>,
}

impl<'scope> WriteToStore<'scope> for StreamVec<'scope, Epoch, SinkItem> {
    fn write_to_store(
        self,
        sink: Option<Box<dyn Sink>>,
        mut last: Checkpoint,
        state: Arc<RunState>,
    ) -> StreamVec<'scope, Epoch, ()> {
        let scope = self.scope();
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &SinkItem| 0),
            "WriteToStore",
            move |_, info| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                let mut writer =
                    sink.map(|sink| StoreWriter::start(sink, Arc::clone(&state), wake));
                let mut pending: BTreeMap<Epoch, Gathering> = BTreeMap::new();
                let mut writing: VecDeque<(Epoch, Capability<Epoch>)> = VecDeque::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        let port = output.output_index();
                        for item in data.flat_map(|batch| batch.drain(..)) {
                            let epoch = match &item {
                                SinkItem::Stat(epoch, _) => *epoch,
                                _ => least,
                            };
                            let gathering = pending.entry(epoch).or_insert_with(|| Gathering {
                                cap: cap.delayed(&epoch, port),
                                batch: EpochBatch {
                                    epoch,
                                    ..EpochBatch::default()
                                },
                                positions: Vec::new(),
                                windows: None,
                            });
                            let batch = &mut gathering.batch;
                            match item {
                                SinkItem::Rows(rows) => batch.rows.push(rows),
                                SinkItem::Dead(dead) => batch.dead_letters.push(dead),
                                SinkItem::Stat(_, stat) => batch.stats.push(stat),
                                SinkItem::Position(at) => gathering.positions.push(at),
                                SinkItem::Windows(windows) => gathering.windows = Some(windows),
                            }
                        }
                    });
                    let Some(store) = writer.as_mut() else {
                        pending.clear();
                        return;
                    };
                    while let Some(entry) = pending.first_entry() {
                        let stopped = state.stop_target().is_some_and(|t| *entry.key() >= t);
                        if frontier.less_equal(entry.key()) || state.failed() || stopped {
                            break;
                        }
                        let Gathering {
                            cap,
                            mut batch,
                            positions,
                            windows,
                        } = entry.remove();
                        let before = last.position.clone();
                        for at in &positions {
                            merge(&mut last.position, at);
                        }
                        let moved = windows.is_some() || last.position != before;
                        if let Some(windows) = windows {
                            last.windows = windows;
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
                        writing.push_back((batch.epoch, cap));
                        store.write(batch);
                    }
                    while writing
                        .front()
                        .is_some_and(|(epoch, _)| store.is_committed(*epoch))
                    {
                        writing.pop_front();
                    }
                    if frontier.is_empty() && pending.is_empty() {
                        store.finish();
                        writing.clear();
                        writer = None;
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Date, LoanRow};
    use timely::dataflow::operators::capture::{Capture, Event};
    use timely::dataflow::operators::Input;

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

    #[test]
    fn ordered_windows_apply_each_epoch_in_row_order_whatever_the_arrival_order() {
        let def: FeatureDef = "sma(2)".parse().unwrap();
        let captured = timely::execute_directly(move |worker| {
            let (mut input, captured) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (input, rows) = scope.new_input::<Vec<LoanBatch>>();
                (
                    input,
                    rows.ordered_windows(&[def], vec![Kernel::new(&def)])
                        .capture(),
                )
            });
            // Epoch 0 arrives as two chunks in the wrong order, then epoch 1.
            input.send(batch(&[(3, 30.0), (4, 40.0)]));
            input.send(batch(&[(1, 10.0), (2, 20.0)]));
            input.advance_to(1);
            input.send(batch(&[(5, 50.0)]));
            drop(input);
            while worker.step() {}
            captured
        });
        let mut seen = Vec::new();
        for event in captured.try_iter() {
            if let Event::Messages(epoch, batches) = event {
                let batches: Vec<Result<WindowedBatch, WindowState>> = batches;
                for batch in batches.into_iter().flatten() {
                    for (loan, values) in batch.batch.rows.iter().zip(&batch.values) {
                        seen.push((*epoch.least().expect("a time"), loan.row, values[0]));
                    }
                }
            }
        }
        assert_eq!(
            seen,
            [
                (0, 1, Some(10.0)),
                (0, 2, Some(15.0)),
                (0, 3, Some(25.0)),
                (0, 4, Some(35.0)),
                (1, 5, Some(45.0))
            ]
        );
    }
}
