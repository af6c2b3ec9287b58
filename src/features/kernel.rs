//! SMA and EMA kernels, exactly as DESIGN §3 defines them.

use super::{FeatureDef, Kind};
use serde::{Deserialize, Serialize};

/// Mean of the non-null scores among the last `window` rows; null when all are null.
///
/// Keeps a running sum and rebuilds it from the ring every `window` rows, so rounding error never
/// accumulates over long streams; with whole-number scores the sum is exact and the mean equals
/// SQL's `AVG(...) OVER (ROWS BETWEEN N-1 PRECEDING AND CURRENT ROW)` bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sma {
    ring: Vec<Option<f64>>,
    next: usize,
    sum: f64,
    count: u32,
}

impl Sma {
    pub fn new(window: u32) -> Sma {
        Sma {
            ring: vec![None; window as usize],
            next: 0,
            sum: 0.0,
            count: 0,
        }
    }

    pub fn push(&mut self, score: Option<f64>) -> Option<f64> {
        if let Some(old) = self.ring[self.next] {
            self.sum -= old;
            self.count -= 1;
        }
        self.ring[self.next] = score;
        if let Some(x) = score {
            self.sum += x;
            self.count += 1;
        }
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
            self.sum = self.ring.iter().flatten().sum();
        }
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }
}

/// Exponential moving average: seeded with the first non-null score, `e += alpha * (x - e)` for
/// each later score, unchanged by nulls, null before the first score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    alpha: f64,
    value: Option<f64>,
}

impl Ema {
    pub fn new(span: u32) -> Ema {
        Ema {
            alpha: 2.0 / (f64::from(span) + 1.0),
            value: None,
        }
    }

    pub fn push(&mut self, score: Option<f64>) -> Option<f64> {
        if let Some(x) = score {
            self.value = Some(match self.value {
                None => x,
                Some(e) => e + self.alpha * (x - e),
            });
        }
        self.value
    }
}

/// Any kernel, chosen by a definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    Sma(Sma),
    Ema(Ema),
}

impl Kernel {
    pub fn new(def: &FeatureDef) -> Kernel {
        match def.kind {
            Kind::Sma => Kernel::Sma(Sma::new(def.window)),
            Kind::Ema => Kernel::Ema(Ema::new(def.window)),
        }
    }

    /// Whether this kernel computes `def` and its state is whole (a state read back from a
    /// store is checked before it is trusted).
    pub fn matches(&self, def: &FeatureDef) -> bool {
        match (self, Kernel::new(def)) {
            (Kernel::Sma(k), Kernel::Sma(fresh)) => {
                k.ring.len() == fresh.ring.len()
                    && k.next < k.ring.len()
                    && k.count as usize == k.ring.iter().flatten().count()
            }
            (Kernel::Ema(k), Kernel::Ema(fresh)) => k.alpha == fresh.alpha,
            _ => false,
        }
    }

    /// Feeds the next row's score and returns the feature's value at that row.
    #[inline]
    pub fn push(&mut self, score: Option<f64>) -> Option<f64> {
        match self {
            Kernel::Sma(k) => k.push(score),
            Kernel::Ema(k) => k.push(score),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kernel: &mut Kernel, scores: &[Option<f64>]) -> Vec<Option<f64>> {
        scores.iter().map(|s| kernel.push(*s)).collect()
    }

    #[test]
    fn sma_matches_the_original_snapshot_warm_up() {
        // Task 1 snapshot: 693, 509, 700, 693 -> 693, 601, 634, 648.75 (the original printed
        // rounded values 693, 635(!), 660, 673 because its window was wrong; see README).
        let mut sma = Kernel::new(&"sma(50)".parse().unwrap());
        let got = run(
            &mut sma,
            &[Some(693.0), Some(509.0), Some(700.0), Some(693.0)],
        );
        assert_eq!(got, [Some(693.0), Some(601.0), Some(634.0), Some(648.75)]);
    }

    #[test]
    fn sma_skips_nulls_and_is_null_only_when_all_are() {
        let mut sma = Sma::new(3);
        let got: Vec<_> = [None, Some(3.0), None, None, None, Some(0.0), Some(6.0)]
            .into_iter()
            .map(|s| sma.push(s))
            .collect();
        assert_eq!(
            got,
            [
                None,
                Some(3.0),
                Some(3.0),
                Some(3.0),
                None,
                Some(0.0),
                Some(3.0)
            ]
        );
    }

    #[test]
    fn sma_window_slides_exactly_n_rows() {
        let mut sma = Sma::new(2);
        let got: Vec<_> = [1.0, 2.0, 4.0, 8.0]
            .into_iter()
            .map(|s| sma.push(Some(s)))
            .collect();
        assert_eq!(got, [Some(1.0), Some(1.5), Some(3.0), Some(6.0)]);
    }

    #[test]
    fn sma_stays_exact_over_long_runs() {
        let window = 50usize;
        let mut sma = Sma::new(window as u32);
        let scores: Vec<Option<f64>> = (0..200_000u64)
            .map(|i| (i % 7 != 0).then(|| ((i * 7919) % 1000) as f64 + 0.1))
            .collect();
        for (i, s) in scores.iter().enumerate() {
            let got = sma.push(*s);
            let lo = (i + 1).saturating_sub(window);
            let vals: Vec<f64> = scores[lo..=i].iter().flatten().copied().collect();
            let want = (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64);
            match (got, want) {
                (Some(g), Some(w)) => assert!(((g - w) / w).abs() < 1e-12, "row {i}: {g} vs {w}"),
                (g, w) => assert_eq!(g, w, "row {i}"),
            }
        }
    }

    #[test]
    fn ema_seeds_with_first_score_and_ignores_nulls() {
        let mut ema = Ema::new(3); // alpha = 0.5
        let got: Vec<_> = [None, Some(10.0), None, Some(20.0), Some(0.0)]
            .into_iter()
            .map(|s| ema.push(s))
            .collect();
        assert_eq!(got, [None, Some(10.0), Some(10.0), Some(15.0), Some(7.5)]);
    }

    #[test]
    fn ema_alpha_is_two_over_span_plus_one() {
        let mut ema = Ema::new(50);
        ema.push(Some(100.0));
        let v = ema.push(Some(151.0)).unwrap();
        assert!((v - (100.0 + 2.0 / 51.0 * 51.0)).abs() < 1e-12);
    }
}
