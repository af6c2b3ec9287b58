//! Exactly-once delivery: what a store commits with every epoch so that a run can resume where
//! the last one stopped, however it stopped.
//!
//! With each epoch's rows, dead letters and stats, the store writes one [`Checkpoint`] in the same
//! transaction: the epoch, where every part of the source resumes (a file's next `_row`, each
//! Kafka partition's next offset) and the state of every feature window after that epoch. On
//! start, a run asks the store for the checkpoint of its dataflow and source, opens the source at
//! that position, seeds the windows with that state and `feature_stats` with the stored totals,
//! and numbers its epochs on from there. A crash between two commits loses only work that was
//! never committed, and the rerun redoes exactly that work: no gap, no duplicate, same values.
//!
//! Several workers read a source's parts in parallel; each tells the store, through the
//! dataflow, where its parts stand whenever its input moves past an epoch. The store merges
//! those reports and only writes an epoch once every worker has passed it, so a checkpoint is
//! always a consistent cut. In a cluster, every process runs from the checkpoint process 0 read
//! (see [`crate::dataflow::run`]).

use crate::dataflow::{Epoch, StatDelta, StatKey};
use crate::features::{FeatureDef, Kernel, Window};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where one part of a source (a Kafka partition; a file is part 0) resumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPosition {
    /// The epoch the part's next record belongs to.
    pub epoch: Epoch,
    /// The next Kafka offset to read (0 for a file).
    pub offset: i64,
    /// A file: the next record's `_row`. A Kafka partition: the last `_row` read (rows at or below
    /// it are repeats); for the original producer's format, the next `_row` to hand out.
    pub row: u64,
}

/// Where every part of a source resumes.
pub type Position = BTreeMap<i32, PartPosition>;

/// Each window's state, by definition (`sma(50)`), after some row.
pub type WindowState = BTreeMap<String, Kernel>;

/// What a store commits with an epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source this checkpoint belongs to (see [`crate::source::Source::identity`]).
    pub source: String,
    /// The last epoch committed.
    pub epoch: Epoch,
    pub position: Position,
    pub windows: WindowState,
}

/// What a run resumes from: the last checkpoint and the `feature_stats` totals committed with it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Resume {
    pub checkpoint: Checkpoint,
    pub stats: Vec<(StatKey, StatDelta)>,
    /// The scores of the last stored rows, in `_row` order: the history a stream keeps for
    /// features registered live (see [`crate::dataflow::windows`]).
    pub history: Vec<Option<f64>>,
}

impl Checkpoint {
    /// The first epoch a resumed run computes.
    pub fn next_epoch(&self) -> Epoch {
        self.epoch + 1
    }

    /// Windows for `definitions` in the state they had at this checkpoint, or the first
    /// definition that has no state here (a feature registered since).
    pub fn windows(&self, definitions: &[FeatureDef]) -> Result<Vec<Window>, FeatureDef> {
        definitions
            .iter()
            .map(|def| Window::restore(def, &self.windows).ok_or(*def))
            .collect()
    }
}

/// Merges a worker's report into the position: its parts move, the others stay.
pub fn merge(position: &mut Position, report: &Position) {
    for (part, at) in report {
        position.insert(*part, *at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_state_round_trips_through_json_bit_for_bit() {
        let defs: Vec<FeatureDef> = ["sma(3)", "ema(5)"]
            .iter()
            .map(|d| d.parse().unwrap())
            .collect();
        let mut kernels: Vec<Kernel> = defs.iter().map(Kernel::new).collect();
        for score in [Some(0.1), None, Some(650.3), Some(1.0 / 3.0)] {
            for k in &mut kernels {
                k.push(score);
            }
        }
        let checkpoint = Checkpoint {
            windows: defs
                .iter()
                .map(ToString::to_string)
                .zip(kernels.iter().cloned())
                .collect(),
            ..Checkpoint::default()
        };
        let json = serde_json::to_string(&checkpoint).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        let mut restored = back.windows(&defs).unwrap();
        for score in [Some(700.0), None, Some(0.7)] {
            for (a, b) in kernels.iter_mut().zip(&mut restored) {
                assert_eq!(
                    a.push(score).map(f64::to_bits),
                    b.push(score, |_| "").map(f64::to_bits)
                );
            }
        }
        let missing: FeatureDef = "sma(100)".parse().unwrap();
        assert_eq!(back.windows(&[missing]), Err(missing));
    }

    #[test]
    fn merging_moves_only_the_reported_parts() {
        let at = |epoch, offset| PartPosition {
            epoch,
            offset,
            row: 0,
        };
        let mut position: Position = [(0, at(3, 10)), (1, at(3, 12))].into();
        merge(&mut position, &[(1, at(5, 20))].into());
        assert_eq!(position, [(0, at(3, 10)), (1, at(5, 20))].into());
    }
}
