//! `feature_stats`: per version, day and column, the row count, null count and mean, kept by
//! differential dataflow as an incrementally maintained collection.
//!
//! Sums are fixed-point integers (micro-units), so totals are exact and identical whatever the
//! order in which workers add them up: results never depend on the worker count.

use crate::record::Date;
use differential_dataflow::difference::{IsZero, Semigroup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fixed-point scale of [`StatDelta::sum_micros`].
const MICROS: f64 = 1e6;

/// Which totals an update belongs to: version, day, and column (0 = `risk_score`, k = the
/// version's k-th feature).
pub type StatKey = (u32, Date, u16);

/// A change to one column's totals; the difference type of the stats collection.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StatDelta {
    pub rows: i64,
    pub nulls: i64,
    pub sum_micros: i128,
}

impl StatDelta {
    /// One row whose column holds `value`.
    pub fn of(value: Option<f64>) -> StatDelta {
        match value {
            Some(v) => StatDelta {
                rows: 1,
                nulls: 0,
                sum_micros: round_to_integer(v * MICROS),
            },
            None => StatDelta {
                rows: 1,
                nulls: 1,
                sum_micros: 0,
            },
        }
    }

    /// Mean of the non-null values, if any.
    pub fn mean(&self) -> Option<f64> {
        let values = self.rows - self.nulls;
        (values > 0).then(|| self.sum_micros as f64 / MICROS / values as f64)
    }
}

/// `x.round() as i128` (halves away from zero), without the library calls that costs: below
/// 2^52 in magnitude the fraction `x - trunc(x)` is exact, and from there on `x` is whole.
#[inline]
fn round_to_integer(x: f64) -> i128 {
    if x.abs() < 4_503_599_627_370_496.0 {
        let whole = x as i64;
        let fraction = x - whole as f64;
        i128::from(whole + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5))
    } else {
        x as i128
    }
}

impl IsZero for StatDelta {
    fn is_zero(&self) -> bool {
        self.rows == 0 && self.nulls == 0 && self.sum_micros == 0
    }
}

impl Semigroup for StatDelta {
    fn plus_equals(&mut self, rhs: &Self) {
        self.rows += rhs.rows;
        self.nulls += rhs.nulls;
        self.sum_micros += rhs.sum_micros;
    }
}

/// Sums a batch's deltas per key. Rows come in `_row` order and mostly in date order, so
/// consecutive rows usually share a (version, day): those cost no map lookup.
#[derive(Default)]
pub struct StatSums {
    current: Option<(u32, Date)>,
    running: Vec<StatDelta>,
    sums: BTreeMap<StatKey, StatDelta>,
}

impl StatSums {
    /// Adds one row: its score (column 0) and its version's feature values (columns 1..).
    pub fn add(&mut self, version: u32, day: Date, columns: impl Iterator<Item = Option<f64>>) {
        if self.current != Some((version, day)) {
            self.flush();
            self.current = Some((version, day));
        }
        for (i, value) in columns.enumerate() {
            if self.running.len() <= i {
                self.running.push(StatDelta::default());
            }
            self.running[i].plus_equals(&StatDelta::of(value));
        }
    }

    /// Takes the sums so far.
    pub fn take(&mut self) -> BTreeMap<StatKey, StatDelta> {
        self.flush();
        std::mem::take(&mut self.sums)
    }

    fn flush(&mut self) {
        if let Some((version, day)) = self.current.take() {
            for (column, delta) in self.running.drain(..).enumerate() {
                self.sums
                    .entry((version, day, column as u16))
                    .or_default()
                    .plus_equals(&delta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_equals_the_library_round() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
        ];
        values.extend([
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            -9.3e18,
            1e30,
        ]);
        values.extend([
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = 10f64.powi((x % 13) as i32);
            values.push(((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * magnitude * MICROS);
            values.push(((x % 2_000_001) as f64 - 1_000_000.0) / 2.0);
        }
        for v in values {
            assert_eq!(round_to_integer(v), v.round() as i128, "{v:?}");
        }
    }

    #[test]
    fn totals_are_exact_and_order_free() {
        let values = [Some(0.1), None, Some(0.2), Some(650.0), None];
        let mut forward = StatDelta::default();
        values
            .iter()
            .for_each(|v| forward.plus_equals(&StatDelta::of(*v)));
        let mut backward = StatDelta::default();
        values
            .iter()
            .rev()
            .for_each(|v| backward.plus_equals(&StatDelta::of(*v)));
        assert_eq!(forward, backward);
        assert_eq!((forward.rows, forward.nulls), (5, 2));
        assert!((forward.mean().unwrap() - 650.3 / 3.0).abs() < 1e-9);
        assert_eq!(StatDelta::of(None).mean(), None);
    }

    #[test]
    fn sums_group_rows_by_version_day_and_column() {
        let (d1, d2) = (
            Date::parse("2009-01-01").unwrap(),
            Date::parse("2009-01-02").unwrap(),
        );
        let mut sums = StatSums::default();
        sums.add(1, d1, [Some(1.0), None].into_iter());
        sums.add(1, d2, [Some(2.0), Some(3.0)].into_iter());
        sums.add(1, d1, [None, Some(4.0)].into_iter());
        let taken = sums.take();
        assert_eq!(
            taken[&(1, d1, 0)],
            StatDelta {
                rows: 2,
                nulls: 1,
                sum_micros: 1_000_000
            }
        );
        assert_eq!(
            taken[&(1, d1, 1)],
            StatDelta {
                rows: 2,
                nulls: 1,
                sum_micros: 4_000_000
            }
        );
        assert_eq!(taken[&(1, d2, 1)].rows, 1);
        assert!(sums.take().is_empty());
    }
}
