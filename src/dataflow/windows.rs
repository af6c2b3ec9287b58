//! The state behind the ordered-windows operator: one window per feature definition the plan
//! uses (a kernel, or a kernel per key value), the plan in force, and the recent scores kept so
//! that a version registered while a stream runs can start its new features from history rather
//! than from nothing.
//!
//! A feature's value depends only on the rows up to it (DESIGN §3). When a live version brings a
//! new definition, its kernel is fed the kept scores first, so its first values are those of a
//! full replay when the kept history reaches back far enough:
//! - history that starts at the first row (a run that has not resumed and has not yet dropped
//!   any score): every definition is exact;
//! - `sma(N)` is exact when at least N scores are kept;
//! - `ema(N)` depends on every earlier score; starting it `K` scores back leaves an error of at
//!   most `(1 - 2/(N+1))^K` times the distance between the true and the seeded average, below
//!   1e-9 relative once K is above about 11·N (for `ema(50)`: about 550 rows).
//!
//! Beyond that, the new feature starts from the oldest kept score, and the engine says so in the
//! log. The history keeps scores only, so a new *keyed* definition (`sma(50) by state`) starts
//! empty, with a warning. A resumed stream refills its history from the last rows the store holds, so a restart
//! loses none of it (rows dated before the table's first version are not stored, so they are not
//! in a refilled history).

use super::keyed::{key_fields, owner, KeyedRow, KeyedWork};
use super::WindowedBatch;
use crate::checkpoint::WindowState;
use crate::features::{FeatureDef, FeatureValues, Kind, Window};
use crate::plan::FeaturePlan;
use crate::record::{merged_row_order, LoanBatch};
use std::collections::VecDeque;

/// The most recent scores in `_row` order, up to a fixed number.
#[derive(Debug)]
pub struct History {
    scores: VecDeque<Option<f64>>,
    capacity: usize,
    /// The kept scores start at the stream's first row.
    from_first_row: bool,
}

impl History {
    /// Keeps up to `capacity` scores; `from_first_row` when the run starts at the first row
    /// (not resumed).
    pub fn new(capacity: usize, from_first_row: bool) -> History {
        History {
            scores: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            from_first_row,
        }
    }

    /// A resumed run's history: the scores of the last rows the store holds (`_row` order).
    pub fn refilled(capacity: usize, stored: &[Option<f64>]) -> History {
        let mut history = History::new(capacity, false);
        for &score in stored {
            history.push(score);
        }
        history
    }

    #[inline]
    fn push(&mut self, score: Option<f64>) {
        if self.capacity == 0 {
            return;
        }
        if self.scores.len() == self.capacity {
            self.scores.pop_front();
            self.from_first_row = false;
        }
        self.scores.push_back(score);
    }

    /// A window for `def` fed every kept score, and whether its state equals a full replay's
    /// (exactly, or for EMA within 1e-9 relative).
    fn warm(&self, def: &FeatureDef) -> (Window, bool) {
        let mut window = Window::new(def);
        if def.key.is_some() {
            return (window, self.scores.is_empty() && self.from_first_row);
        }
        for &score in &self.scores {
            window.push(score, |_| "");
        }
        let kept = self.scores.len();
        let complete = self.from_first_row
            || match def.kind {
                Kind::Sma => kept >= def.window as usize,
                Kind::Ema => {
                    let alpha = 2.0 / (f64::from(def.window) + 1.0);
                    (1.0 - alpha).powf(kept as f64) < 1e-9
                }
            };
        (window, complete)
    }
}

/// The plan in force, its definitions' windows, and the kept history.
pub struct Windows {
    plan: FeaturePlan,
    definitions: Vec<FeatureDef>,
    windows: Vec<Window>,
    history: History,
}

impl Windows {
    /// `windows` are those of `plan.definitions()`, in that order. Keyed windows are kept by
    /// their keys' owners ([`super::keyed::KeyedWindows`]); here they only hold their place.
    pub fn new(plan: FeaturePlan, windows: Vec<Window>, history: History) -> Windows {
        let definitions = plan.definitions();
        debug_assert_eq!(definitions.len(), windows.len());
        let windows = windows
            .into_iter()
            .zip(&definitions)
            .map(|(window, def)| match window {
                Window::Keyed { .. } => Window::new(def),
                global => global,
            })
            .collect();
        Windows {
            plan,
            definitions,
            windows,
            history,
        }
    }

    pub fn plan(&self) -> &FeaturePlan {
        &self.plan
    }

    /// Takes on a newer plan (the same versions and more): definitions it adds get windows warmed
    /// from the history. Returns whether anything changed.
    pub fn take_on(&mut self, newer: FeaturePlan) -> bool {
        if newer.versions.len() <= self.plan.versions.len() {
            return false;
        }
        let definitions = newer.definitions();
        let windows = definitions
            .iter()
            .map(|def| match self.definitions.iter().position(|d| d == def) {
                Some(i) => self.windows[i].clone(),
                None => {
                    let (window, complete) = self.history.warm(def);
                    let kept = self.history.scores.len();
                    if complete {
                        tracing::info!(table = newer.table.as_str(), definition = %def, kept_rows = kept,
                            "New feature definition starts from the kept history: its values equal a full replay's.");
                    } else {
                        tracing::warn!(table = newer.table.as_str(), definition = %def, kept_rows = kept,
                            "New feature definition needs more history than the engine keeps: it starts from the oldest kept row, so its first values differ from a full replay's (raise --history-rows).");
                    }
                    window
                }
            })
            .collect();
        self.definitions = definitions;
        self.windows = windows;
        self.plan = newer;
        true
    }

    /// Feeds one epoch's batches (sorted by first row) to the global kernels in `_row` order;
    /// returns them with their values, keyed definitions' values left empty, and the keyed rows
    /// for each of `peers` key owners that has any (see [`super::keyed`]).
    ///
    /// File batches are runs that never interleave, so they are applied one after another; Kafka
    /// batches hold every n-th row of a partition and are merged first.
    pub fn apply(
        &mut self,
        batches: Vec<LoanBatch>,
        peers: usize,
    ) -> (Vec<WindowedBatch>, Vec<KeyedWork>) {
        let Windows {
            windows,
            history,
            definitions,
            ..
        } = self;
        let fields = key_fields(definitions);
        let mut work: Vec<KeyedWork> = if fields.is_empty() {
            Vec::new()
        } else {
            (0..peers)
                .map(|owner| KeyedWork {
                    owner: owner as u32,
                    ..KeyedWork::default()
                })
                .collect()
        };
        let mut apply = |b: usize, i: usize, batch: &LoanBatch| -> FeatureValues {
            let loan = &batch.rows[i];
            history.push(loan.risk_score);
            for &field in &fields {
                let key = loan.text(&batch.text, field);
                let to = &mut work[owner(field, key, peers)];
                let start = to.text.len() as u32;
                to.text.push_str(key);
                to.rows.push(KeyedRow {
                    batch: b as u32,
                    index: i as u32,
                    score: loan.risk_score,
                    field: field as u8,
                    key: (start, to.text.len() as u32),
                });
            }
            // Pushed one by one: `collect` into a SmallVec is an out-of-line call per row.
            let mut values = FeatureValues::new();
            for window in windows.iter_mut() {
                values.push(match window {
                    Window::Global(kernel) => kernel.push(loan.risk_score),
                    Window::Keyed { .. } => None,
                });
            }
            values
        };
        let windowed = match merged_row_order(batches.iter().map(|batch| &batch.rows[..])) {
            None => batches
                .into_iter()
                .enumerate()
                .map(|(b, batch)| {
                    let values = (0..batch.len()).map(|i| apply(b, i, &batch)).collect();
                    WindowedBatch { batch, values }
                })
                .collect(),
            Some(order) => {
                let mut values: Vec<Vec<FeatureValues>> = batches
                    .iter()
                    .map(|batch| vec![FeatureValues::new(); batch.len()])
                    .collect();
                for (b, i) in order {
                    let (b, i) = (b as usize, i as usize);
                    values[b][i] = apply(b, i, &batches[b]);
                }
                batches
                    .into_iter()
                    .zip(values)
                    .map(|(batch, values)| WindowedBatch { batch, values })
                    .collect()
            }
        };
        work.retain(|w| !w.rows.is_empty());
        (windowed, work)
    }

    /// Every window's state, by definition (what a checkpoint keeps).
    pub fn state(&self) -> WindowState {
        let mut state = WindowState::new();
        for (def, window) in self.definitions.iter().zip(&self.windows) {
            window.save(def, &mut state);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Kernel;
    use crate::plan::{default_plan, FeaturePlan};

    fn scores(n: usize) -> Vec<Option<f64>> {
        (0..n)
            .map(|i| (i % 7 != 3).then(|| ((i * 37) % 500) as f64))
            .collect()
    }

    /// Feeds `scores` to a fresh kernel: the full replay.
    fn replay(def: &str, scores: &[Option<f64>]) -> Kernel {
        let mut kernel = Kernel::new(&def.parse().unwrap());
        for &s in scores {
            kernel.push(s);
        }
        kernel
    }

    fn first_versions(n: usize) -> FeaturePlan {
        let plan = default_plan();
        FeaturePlan::new(&plan.table, plan.versions[..n].to_vec()).unwrap()
    }

    fn windows_after(capacity: usize, scores: &[Option<f64>]) -> Windows {
        let plan = first_versions(1);
        let start = plan.definitions().iter().map(Window::new).collect();
        let mut windows = Windows::new(plan, start, History::new(capacity, true));
        for &s in scores {
            windows.history.push(s);
            for w in &mut windows.windows {
                w.push(s, |_| "");
            }
        }
        windows
    }

    #[test]
    fn a_new_definition_starts_where_a_full_replay_would_be() {
        let seen = scores(3_000);
        // History from the first row: every new kernel equals the replay.
        let mut windows = windows_after(10_000, &seen);
        assert!(windows.take_on(default_plan()));
        let state = windows.state();
        assert_eq!(state["sma(100)"], replay("sma(100)", &seen));
        assert_eq!(state["ema(50)"], replay("ema(50)", &seen));
        assert_eq!(state["sma(50)"], replay("sma(50)", &seen));
        // The same plan again changes nothing.
        assert!(!windows.take_on(default_plan()));
    }

    #[test]
    fn with_a_bounded_history_sma_is_exact_and_ema_converges() {
        let seen = scores(20_000);
        let mut windows = windows_after(1_000, &seen);
        windows.take_on(default_plan());
        let state = windows.state();
        assert_eq!(state["sma(100)"], replay("sma(100)", &seen));
        let (mut warm, mut full) = (state["ema(50)"].clone(), replay("ema(50)", &seen));
        // A null score shows the current average without moving it.
        let (a, b) = (warm.push(None).unwrap(), full.push(None).unwrap());
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
        assert!(!History::new(10, false).warm(&"sma(100)".parse().unwrap()).1);
    }
}
