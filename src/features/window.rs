//! A definition's window state: one kernel over the whole stream, or one per value of its key
//! column (`sma(50) by state`), each fed that value's rows in row order.

use super::{FeatureDef, Kernel};
use crate::record::TextField;
use std::collections::{BTreeMap, HashMap};

/// The windows of one definition.
#[derive(Clone, Debug, PartialEq)]
pub enum Window {
    Global(Kernel),
    Keyed {
        def: FeatureDef,
        field: TextField,
        by_key: HashMap<String, Kernel>,
    },
}

/// Separates a keyed definition from a key value in saved state (`sma(50) by state @ CA`);
/// definitions never contain it.
const KEY_SEPARATOR: &str = " @ ";

impl Window {
    pub fn new(def: &FeatureDef) -> Window {
        match def.key {
            None => Window::Global(Kernel::new(def)),
            Some(field) => Window::Keyed {
                def: *def,
                field,
                by_key: HashMap::new(),
            },
        }
    }

    /// Feeds the next row (its score, and its key column's text through `text`) and returns the
    /// feature's value at that row.
    #[inline]
    pub fn push<'t>(
        &mut self,
        score: Option<f64>,
        text: impl FnOnce(TextField) -> &'t str,
    ) -> Option<f64> {
        match self {
            Window::Global(kernel) => kernel.push(score),
            Window::Keyed { def, field, by_key } => {
                let key = text(*field);
                match by_key.get_mut(key) {
                    Some(kernel) => kernel.push(score),
                    None => by_key
                        .entry(key.to_owned())
                        .or_insert_with(|| Kernel::new(def))
                        .push(score),
                }
            }
        }
    }

    /// Writes this window's state for `def` into `state` (what a checkpoint keeps): the kernel
    /// under the definition; for a keyed one, a fresh kernel under the definition (so that a
    /// keyed window with no rows yet is still known) and each key's kernel under
    /// `definition @ value`.
    pub fn save(&self, def: &FeatureDef, state: &mut BTreeMap<String, Kernel>) {
        let name = def.to_string();
        match self {
            Window::Global(kernel) => {
                state.insert(name, kernel.clone());
            }
            Window::Keyed { by_key, .. } => {
                for (key, kernel) in by_key {
                    state.insert(format!("{name}{KEY_SEPARATOR}{key}"), kernel.clone());
                }
                state.insert(name, Kernel::new(def));
            }
        }
    }

    /// The window of `def` as `state` saved it, if it did (and whole).
    pub fn restore(def: &FeatureDef, state: &BTreeMap<String, Kernel>) -> Option<Window> {
        let name = def.to_string();
        let saved = state.get(&name).filter(|k| k.matches(def))?;
        let Some(field) = def.key else {
            return Some(Window::Global(saved.clone()));
        };
        let prefix = format!("{name}{KEY_SEPARATOR}");
        let mut by_key = HashMap::new();
        for (entry, kernel) in state.range(prefix.clone()..) {
            let Some(key) = entry.strip_prefix(&prefix) else {
                break;
            };
            if !kernel.matches(def) {
                return None;
            }
            by_key.insert(key.to_owned(), kernel.clone());
        }
        Some(Window::Keyed {
            def: *def,
            field,
            by_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_window_and_state_round_trips() {
        let def: FeatureDef = "sma(2) by state".parse().unwrap();
        let mut window = Window::new(&def);
        let rows = [
            ("CA", 10.0),
            ("NY", 100.0),
            ("CA", 20.0),
            ("CA", 30.0),
            ("NY", 200.0),
        ];
        let values: Vec<Option<f64>> = rows
            .iter()
            .map(|&(state, score)| window.push(Some(score), |_| state))
            .collect();
        assert_eq!(
            values,
            [Some(10.0), Some(100.0), Some(15.0), Some(25.0), Some(150.0)]
        );
        let mut state = BTreeMap::new();
        window.save(&def, &mut state);
        let other: FeatureDef = "sma(2)".parse().unwrap();
        Window::new(&other).save(&other, &mut state);
        let mut back = Window::restore(&def, &state).unwrap();
        assert_eq!(back, window);
        assert_eq!(
            back.push(Some(40.0), |_| "CA"),
            window.push(Some(40.0), |_| "CA")
        );
        let missing: FeatureDef = "ema(3) by state".parse().unwrap();
        assert_eq!(Window::restore(&missing, &state), None);
    }
}
