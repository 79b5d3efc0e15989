//! DDSketch (Masson, Rim, Lee, VLDB 2019) with relative accuracy [`DDSKETCH_RELATIVE_ACCURACY`].
//!
//! Values fall into logarithmic buckets `(gamma^(i-1), gamma^i]` with
//! `gamma = (1 + a) / (1 - a)`; a quantile is answered with the representative of the bucket
//! holding the nearest-rank element (`ceil(q * n)`-th smallest), which is within a relative
//! error `a` of that element. Buckets hold counts, so a value can be removed again (sliding
//! windows) and two sketches merge by adding counts (hopping-window panes).

use std::collections::BTreeMap;

/// Relative accuracy of every quantile answered: 1 %.
pub const DDSKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// Values with magnitude below this count as zero.
const MIN_MAGNITUDE: f64 = 1e-9;

/// A quantile sketch with bounded relative error that supports removal and merging.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DdSketch {
    positive: BTreeMap<i32, u32>,
    negative: BTreeMap<i32, u32>,
    zeros: u64,
    count: u64,
}

fn ln_gamma() -> f64 {
    let a = DDSKETCH_RELATIVE_ACCURACY;
    ((1.0 + a) / (1.0 - a)).ln()
}

fn bucket(magnitude: f64) -> i32 {
    // magnitude >= MIN_MAGNITUDE, so the index is far inside i32
    (magnitude.ln() / ln_gamma()).ceil() as i32
}

fn representative(index: i32) -> f64 {
    let gamma = ln_gamma().exp();
    2.0 * gamma.powi(index) / (gamma + 1.0)
}

impl DdSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values held.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds one value. NaN is ignored.
    pub fn insert(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        self.count += 1;
        if value.abs() < MIN_MAGNITUDE {
            self.zeros += 1;
        } else if value > 0.0 {
            *self.positive.entry(bucket(value)).or_insert(0) += 1;
        } else {
            *self.negative.entry(bucket(-value)).or_insert(0) += 1;
        }
    }

    /// Removes one value previously inserted. NaN is ignored.
    pub fn remove(&mut self, value: f64) {
        if value.is_nan() || self.count == 0 {
            return;
        }
        self.count -= 1;
        if value.abs() < MIN_MAGNITUDE {
            self.zeros = self.zeros.saturating_sub(1);
            return;
        }
        let (store, index) = if value > 0.0 {
            (&mut self.positive, bucket(value))
        } else {
            (&mut self.negative, bucket(-value))
        };
        if let Some(c) = store.get_mut(&index) {
            *c -= 1;
            if *c == 0 {
                store.remove(&index);
            }
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (i, c) in &other.positive {
            *self.positive.entry(*i).or_insert(0) += c;
        }
        for (i, c) in &other.negative {
            *self.negative.entry(*i).or_insert(0) += c;
        }
        self.zeros += other.zeros;
        self.count += other.count;
    }

    /// The nearest-rank quantile `q` in (0, 1]: within relative error
    /// [`DDSKETCH_RELATIVE_ACCURACY`] of the `ceil(q * n)`-th smallest value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, c) in self.negative.iter().rev() {
            seen += u64::from(*c);
            if seen >= target {
                return Some(-representative(*i));
            }
        }
        seen += self.zeros;
        if seen >= target {
            return Some(0.0);
        }
        for (i, c) in &self.positive {
            seen += u64::from(*c);
            if seen >= target {
                return Some(representative(*i));
            }
        }
        self.positive.keys().next_back().map(|i| representative(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nearest_rank(values: &[f64], q: f64) -> f64 {
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        let k = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[k - 1]
    }

    proptest! {
        #[test]
        fn quantiles_within_relative_accuracy(
            values in prop::collection::vec(prop_oneof![-1e6f64..1e6, 0.001f64..10.0, Just(0.0)], 1..400),
            q in 0.01f64..0.99,
        ) {
            let mut sketch = DdSketch::new();
            for v in &values { sketch.insert(*v); }
            let want = nearest_rank(&values, q);
            let got = sketch.quantile(q).expect("non-empty");
            prop_assert!((got - want).abs() <= DDSKETCH_RELATIVE_ACCURACY * want.abs() + 1e-9,
                "q {q}: got {got}, want {want}");
        }

        #[test]
        fn removal_undoes_insertion(
            kept in prop::collection::vec(0.01f64..1e4, 1..100),
            removed in prop::collection::vec(0.01f64..1e4, 0..100),
        ) {
            let mut a = DdSketch::new();
            let mut b = DdSketch::new();
            for v in kept.iter().chain(&removed) { a.insert(*v); }
            for v in &removed { a.remove(*v); }
            for v in &kept { b.insert(*v); }
            for q in [0.1, 0.5, 0.95] {
                prop_assert_eq!(a.quantile(q), b.quantile(q));
            }
        }

        #[test]
        fn merge_equals_union(
            x in prop::collection::vec(0.01f64..1e4, 0..100),
            y in prop::collection::vec(0.01f64..1e4, 1..100),
        ) {
            let mut a = DdSketch::new();
            let mut b = DdSketch::new();
            let mut u = DdSketch::new();
            for v in &x { a.insert(*v); u.insert(*v); }
            for v in &y { b.insert(*v); u.insert(*v); }
            a.merge(&b);
            prop_assert_eq!(a.quantile(0.95), u.quantile(0.95));
        }
    }
}
