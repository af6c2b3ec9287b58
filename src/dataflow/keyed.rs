//! Keyed features (`sma(50) by state`) spread over the workers by key value.
//!
//! The window worker applies an epoch's rows in `_row` order to the global windows; for every
//! row it also sends `(row, score, key value)` of each key column the plan uses to the worker
//! that owns that value ([`owner`]), one [`KeyedWork`] per owner and epoch, in `_row` order.
//! Each owner feeds its keys' windows ([`KeyedWindows`]) and sends the values back, addressed
//! by the row's place in the epoch; the window worker fills them in before the rows move on.
//! Every value of a key meets on one worker in `_row` order, so the values never depend on the
//! number of workers.
//!
//! Checkpoints: the window worker's state holds the global kernels and a marker for every keyed
//! definition; each owner adds its keys' kernels after every epoch it fed, and the store's
//! checkpoint accumulates them (a key's kernel is replaced, never dropped). A resumed run gives
//! each owner the saved keys it owns under the new worker count.

use crate::checkpoint::WindowState;
use crate::features::{FeatureDef, Window};
use crate::plan::FeaturePlan;
use crate::record::TextField;
use serde::{Deserialize, Serialize};

/// The worker that owns `key` of column `field` among `peers` workers (FNV-1a: the same on
/// every process of a cluster and in every run).
pub fn owner(field: TextField, key: &str, peers: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ field as u64;
    for &byte in key.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % peers as u64) as usize
}

/// A row's score and key value, sent to the key's owner.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedRow {
    /// The row's batch (in the epoch's batches sorted by first row) and index in it.
    pub batch: u32,
    pub index: u32,
    pub score: Option<f64>,
    /// The key column ([`TextField`] as a number).
    pub field: u8,
    /// The key value's bytes in [`KeyedWork::text`].
    pub key: (u32, u32),
}

/// One epoch's keyed rows for one owner, in `_row` order, and the plan when it changed at this
/// epoch (every owner gets it, rows or not).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyedWork {
    pub owner: u32,
    pub plan: Option<FeaturePlan>,
    pub rows: Vec<KeyedRow>,
    pub text: String,
}

impl KeyedWork {
    fn key(&self, row: &KeyedRow) -> &str {
        &self.text[row.key.0 as usize..row.key.1 as usize]
    }
}

/// A keyed value computed by its key's owner: the row's place in the epoch, the definition's
/// slot in the plan's definitions, the value.
pub type KeyedValue = (u32, u32, u16, Option<f64>);

/// What an owner sends back for an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyedOut {
    Values(Vec<KeyedValue>),
    /// The owner's keys' kernels after the epoch.
    State(WindowState),
}

/// The key columns `definitions` use, each once.
pub fn key_fields(definitions: &[FeatureDef]) -> Vec<TextField> {
    let mut fields: Vec<TextField> = definitions.iter().filter_map(|d| d.key).collect();
    fields.sort_unstable();
    fields.dedup();
    fields
}

/// An owner's windows: for each keyed definition of the plan (by slot), the windows of the key
/// values this worker owns.
pub struct KeyedWindows {
    definitions: Vec<FeatureDef>,
    /// `(slot, window)` of every keyed definition.
    windows: Vec<(u16, Window)>,
}

impl KeyedWindows {
    /// The keyed windows of `definitions` as restored from a checkpoint (`restored`, in
    /// definition order), keeping the keys worker `index` of `peers` owns.
    pub fn new(
        definitions: Vec<FeatureDef>,
        restored: Vec<Window>,
        index: usize,
        peers: usize,
    ) -> Self {
        let windows = restored
            .into_iter()
            .enumerate()
            .filter_map(|(slot, window)| match window {
                Window::Keyed {
                    def,
                    field,
                    mut by_key,
                } => {
                    by_key.retain(|key, _| owner(field, key, peers) == index);
                    Some((slot as u16, Window::Keyed { def, field, by_key }))
                }
                Window::Global(_) => None,
            })
            .collect();
        KeyedWindows {
            definitions,
            windows,
        }
    }

    /// Takes on a newer plan: definitions it keeps keep their windows (under their new slots),
    /// new keyed ones start empty.
    pub fn take_on(&mut self, plan: &FeaturePlan) {
        let definitions = plan.definitions();
        let mut old = std::mem::take(&mut self.windows);
        self.windows = definitions
            .iter()
            .enumerate()
            .filter(|(_, def)| def.key.is_some())
            .map(|(slot, def)| {
                let kept = self
                    .definitions
                    .iter()
                    .position(|d| d == def)
                    .and_then(|was| old.iter().position(|(s, _)| *s as usize == was))
                    .map(|at| old.swap_remove(at).1);
                (slot as u16, kept.unwrap_or_else(|| Window::new(def)))
            })
            .collect();
        self.definitions = definitions;
    }

    /// Feeds an epoch's keyed rows (in `_row` order) to their windows; appends the values.
    pub fn apply(&mut self, work: &KeyedWork, values: &mut Vec<KeyedValue>) {
        for row in &work.rows {
            let key = work.key(row);
            for (slot, window) in &mut self.windows {
                let Window::Keyed { field, .. } = window else {
                    continue;
                };
                if *field as u8 != row.field {
                    continue;
                }
                let value = window.push(row.score, |_| key);
                values.push((row.batch, row.index, *slot, value));
            }
        }
    }

    /// The kernels of this worker's keys (with each definition's marker).
    pub fn state(&self) -> WindowState {
        let mut state = WindowState::new();
        for (slot, window) in &self.windows {
            window.save(&self.definitions[*slot as usize], &mut state);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_keys_and_agree_everywhere() {
        let states = ["CA", "NY", "TX", "FL", "WA", "IL", "OH", "GA"];
        let owners: Vec<usize> = states
            .iter()
            .map(|s| owner(TextField::State, s, 4))
            .collect();
        assert!(owners.iter().all(|&o| o < 4));
        assert!(owners.iter().any(|&o| o != owners[0]), "{owners:?}");
        assert_eq!(owner(TextField::State, "CA", 4), owners[0]);
        assert_eq!(owner(TextField::State, "CA", 1), 0);
    }
}
