//! Accumulators behind the aggregates. Each supports insertion, removal (continuous windows
//! retract events as the head passes them) and merging (hopping windows combine panes).
//!
//! Why keyed state rather than differential `reduce`: every aggregate of a window shape shares
//! one per-key event buffer, counts/sums/moments update in O(1), min/max in O(log n) from a
//! sorted multiset, distinct counts from a hash-count map, quantiles from a DDSketch. A
//! differential `reduce` would re-read the whole window per key at every distinct time, and
//! min/max/distinct/quantiles are not Abelian groups that could ride in the difference type.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use freshet_core::event::Scalar;
use freshet_core::store::FeatureValue;

use serde::{Deserialize, Serialize};

use crate::plan::{AccKind, Output};
use crate::sketch::{hll_estimate, DdSketch};

/// A field value as stored in window state: numbers as-is, other scalars as a stable hash.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Val {
    /// Absent or null.
    Null,
    /// A number.
    Num(f64),
    /// Hash of a non-numeric scalar.
    Hash(u64),
}

impl Val {
    /// Converts a decoded scalar.
    pub(crate) fn of(scalar: &Scalar) -> Self {
        match scalar {
            Scalar::Null => Self::Null,
            Scalar::Num(n) => Self::Num(*n),
            other => Self::Hash(other.stable_hash()),
        }
    }

    fn num(self) -> Option<f64> {
        match self {
            Self::Num(n) => Some(n),
            _ => None,
        }
    }

    fn hash(self) -> Option<u64> {
        match self {
            Self::Null => None,
            Self::Num(n) => Some(Scalar::Num(n).stable_hash()),
            Self::Hash(h) => Some(h),
        }
    }
}

/// Neumaier-compensated sum: removal after millions of updates stays accurate to ~1 ulp of
/// the magnitudes involved.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The sum as a canonical (high, low) pair: the same for any order of the same additions
    /// up to the last bit of the low part.
    fn normalized(&self) -> (f64, f64) {
        let high = self.sum + self.compensation;
        (high, self.compensation - (high - self.sum))
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Count, sum and sum of squares, each kept as a compensated (double-double) sum, with the
/// squares added exactly (the product and its rounding error from a fused multiply-add). The
/// variance is then formed as `(n·Σx² − (Σx)²) / n²` in double-double arithmetic, so large,
/// nearly equal values keep their spread, and the result does not depend on insertion order
/// beyond the last bit of a double-double.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Moments {
    n: u64,
    s1: CompensatedSum,
    s2: CompensatedSum,
}

impl Moments {
    fn add(&mut self, x: f64, sign: f64) {
        let sq = x * x;
        self.s1.add(sign * x);
        self.s2.add(sign * sq);
        self.s2.add(sign * x.mul_add(x, -sq));
    }

    fn insert(&mut self, x: f64) {
        self.n += 1;
        self.add(x, 1.0);
    }

    fn remove(&mut self, x: f64) {
        if self.n <= 1 {
            // start afresh so rounding residue never outlives the values
            *self = Self::default();
            return;
        }
        self.n -= 1;
        self.add(x, -1.0);
    }

    fn merge(&mut self, other: &Self) {
        self.n += other.n;
        self.s1.add(other.s1.sum);
        self.s1.add(other.s1.compensation);
        self.s2.add(other.s2.sum);
        self.s2.add(other.s2.compensation);
    }

    fn sum(&self) -> f64 {
        self.s1.value()
    }

    fn mean(&self) -> f64 {
        self.s1.value() / self.n as f64
    }

    fn stddev(&self) -> f64 {
        if self.n <= 1 {
            return 0.0;
        }
        let n = self.n as f64;
        let (a1, b1) = self.s1.normalized();
        let (a2, b2) = self.s2.normalized();
        // n·Σx² and (Σx)², each as a high part plus a low part
        let p = n * a2;
        let p_low = n.mul_add(a2, -p) + n * b2;
        let q = a1 * a1;
        let q_low = a1.mul_add(a1, -q) + 2.0 * a1 * b1 + b1 * b1;
        let scaled_var = (p - q) + (p_low - q_low);
        (scaled_var.max(0.0)).sqrt() / n
    }
}

/// Order-preserving key for f64 in a BTreeMap.
fn ordered(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn unordered(key: u64) -> f64 {
    if key >> 63 == 1 {
        f64::from_bits(key & !(1 << 63))
    } else {
        f64::from_bits(!key)
    }
}

/// One accumulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Acc {
    /// Count, sum and sum of squares.
    Moments(Moments),
    /// Sorted multiset.
    MinMax(BTreeMap<u64, u32>),
    /// Smallest and largest value (no removal).
    Extremes(Option<(f64, f64)>),
    /// Quantile sketch.
    Quantile(DdSketch),
    /// Count per value hash.
    Distinct(HashMap<u64, u32>),
}

impl Acc {
    /// An empty accumulator of `kind`.
    pub(crate) fn new(kind: AccKind) -> Self {
        match kind {
            AccKind::Moments => Self::Moments(Moments::default()),
            AccKind::MinMax => Self::MinMax(BTreeMap::new()),
            AccKind::Extremes => Self::Extremes(None),
            AccKind::Quantile => Self::Quantile(DdSketch::new()),
            AccKind::Distinct => Self::Distinct(HashMap::new()),
        }
    }

    /// Adds a value.
    pub(crate) fn insert(&mut self, v: Val) {
        match self {
            Self::Moments(m) => {
                if let Some(x) = v.num() {
                    m.insert(x);
                }
            }
            Self::MinMax(set) => {
                if let Some(x) = v.num() {
                    *set.entry(ordered(x)).or_insert(0) += 1;
                }
            }
            Self::Extremes(e) => {
                if let Some(x) = v.num() {
                    *e = Some(e.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x))));
                }
            }
            Self::Quantile(sketch) => {
                if let Some(x) = v.num() {
                    sketch.insert(x);
                }
            }
            Self::Distinct(counts) => {
                if let Some(h) = v.hash() {
                    *counts.entry(h).or_insert(0) += 1;
                }
            }
        }
    }

    /// Removes a value inserted before.
    pub(crate) fn remove(&mut self, v: Val) {
        match self {
            Self::Moments(m) => {
                if let Some(x) = v.num() {
                    m.remove(x);
                }
            }
            Self::MinMax(set) => {
                if let Some(x) = v.num() {
                    set.decrement(ordered(x));
                }
            }
            // panes never remove; a removal here would be a planning error, so it is ignored
            Self::Extremes(_) => {}
            Self::Quantile(sketch) => {
                if let Some(x) = v.num() {
                    sketch.remove(x);
                }
            }
            Self::Distinct(counts) => {
                if let Some(h) = v.hash() {
                    counts.decrement(h);
                }
            }
        }
    }

    /// Empties the accumulator, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        match self {
            Self::Moments(m) => *m = Moments::default(),
            Self::MinMax(set) => set.clear(),
            Self::Extremes(e) => *e = None,
            Self::Quantile(sketch) => *sketch = DdSketch::new(),
            Self::Distinct(counts) => counts.clear(),
        }
    }

    /// Adds every value of `other` (same kind).
    pub(crate) fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Moments(a), Self::Moments(b)) => a.merge(b),
            (Self::MinMax(a), Self::MinMax(b)) => {
                for (k, c) in b {
                    *a.entry(*k).or_insert(0) += c;
                }
            }
            (Self::Extremes(a), Self::Extremes(Some((lo2, hi2)))) => {
                *a = Some(a.map_or((*lo2, *hi2), |(lo, hi)| (lo.min(*lo2), hi.max(*hi2))));
            }
            (Self::Quantile(a), Self::Quantile(b)) => a.merge(b),
            (Self::Distinct(a), Self::Distinct(b)) => {
                for (k, c) in b {
                    *a.entry(*k).or_insert(0) += c;
                }
            }
            _ => {}
        }
    }
}

/// Maps of counts that drop a key when its count reaches zero.
trait CountMapLike<K> {
    fn decrement(&mut self, key: K);
}

impl<K: Ord + Copy> CountMapLike<K> for BTreeMap<K, u32> {
    fn decrement(&mut self, key: K) {
        if let Some(c) = self.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.remove(&key);
            }
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> CountMapLike<K> for HashMap<K, u32> {
    fn decrement(&mut self, key: K) {
        if let Some(c) = self.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.remove(&key);
            }
        }
    }
}

/// Reads a feature value from a group's event count and accumulators.
pub(crate) fn read(output: Output, n: u64, accs: &[Acc]) -> FeatureValue {
    let count = |c: usize| FeatureValue::Int(i64::try_from(c).unwrap_or(i64::MAX));
    if n == 0 {
        return if output.zero_when_empty() {
            FeatureValue::Int(0)
        } else {
            FeatureValue::Null
        };
    }
    let value = match output {
        Output::Count => return count(usize::try_from(n).unwrap_or(usize::MAX)),
        Output::Sum(i) | Output::Mean(i) | Output::Stddev(i) => match &accs[i] {
            Acc::Moments(m) if m.n > 0 => Some(match output {
                Output::Sum(_) => m.sum(),
                Output::Mean(_) => m.mean(),
                _ => m.stddev(),
            }),
            _ => None,
        },
        Output::Min(i) | Output::Max(i) => match &accs[i] {
            Acc::MinMax(set) => {
                let key = if matches!(output, Output::Min(_)) {
                    set.keys().next()
                } else {
                    set.keys().next_back()
                };
                key.map(|k| unordered(*k))
            }
            Acc::Extremes(e) => e.map(|(lo, hi)| {
                if matches!(output, Output::Min(_)) {
                    lo
                } else {
                    hi
                }
            }),
            _ => None,
        },
        Output::Quantile(i, q) => match &accs[i] {
            Acc::Quantile(sketch) => sketch.quantile(q),
            _ => None,
        },
        Output::CountDistinct(i) => match &accs[i] {
            Acc::Distinct(counts) => return count(counts.len()),
            _ => None,
        },
        Output::ApproxCountDistinct(i) => match &accs[i] {
            Acc::Distinct(counts) => {
                let estimate = hll_estimate(counts.keys().copied());
                return FeatureValue::Int(i64::try_from(estimate).unwrap_or(i64::MAX));
            }
            _ => None,
        },
    };
    value.map_or(FeatureValue::Null, FeatureValue::Float)
}

/// The value of a `last` feature.
pub(crate) fn scalar_value(scalar: &Scalar) -> FeatureValue {
    match scalar {
        Scalar::Null => FeatureValue::Null,
        Scalar::Bool(b) => FeatureValue::Bool(*b),
        Scalar::Num(n) => FeatureValue::Float(*n),
        Scalar::Str(s) => FeatureValue::Str(Arc::from(&**s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(output: Output, values: &[f64]) -> FeatureValue {
        let n = values.len();
        if n == 0 {
            return read(output, 0, &[]);
        }
        let sum: f64 = values.iter().sum();
        let mean = sum / n as f64;
        match output {
            Output::Count => FeatureValue::Int(n as i64),
            Output::Sum(_) => FeatureValue::Float(sum),
            Output::Mean(_) => FeatureValue::Float(mean),
            Output::Stddev(_) => FeatureValue::Float(
                (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64).sqrt(),
            ),
            Output::Min(_) => {
                FeatureValue::Float(values.iter().copied().fold(f64::INFINITY, f64::min))
            }
            Output::Max(_) => {
                FeatureValue::Float(values.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            }
            Output::CountDistinct(_) | Output::ApproxCountDistinct(_) => {
                let mut bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
                bits.sort_unstable();
                bits.dedup();
                FeatureValue::Int(bits.len() as i64)
            }
            Output::Quantile(_, _) => FeatureValue::Null,
        }
    }

    fn close(a: &FeatureValue, b: &FeatureValue) -> bool {
        match (a, b) {
            (FeatureValue::Float(x), FeatureValue::Float(y)) => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-6
            }
            _ => a == b,
        }
    }

    proptest! {
        /// Insert a stream, remove a prefix of it (a sliding window), compare with a
        /// from-scratch computation over what remains.
        #[test]
        fn insert_then_remove_equals_recomputation(
            values in prop::collection::vec(prop_oneof![-1e6f64..1e6, 0.0f64..10.0, Just(42.0)], 1..300),
            removed in 0usize..300,
        ) {
            let removed = removed.min(values.len());
            let kinds = [AccKind::Moments, AccKind::MinMax, AccKind::Distinct];
            let mut accs: Vec<Acc> = kinds.iter().map(|k| Acc::new(*k)).collect();
            for v in &values {
                accs.iter_mut().for_each(|a| a.insert(Val::Num(*v)));
            }
            for v in &values[..removed] {
                accs.iter_mut().for_each(|a| a.remove(Val::Num(*v)));
            }
            let rest = &values[removed..];
            let n = rest.len() as u64;
            for output in [Output::Count, Output::Sum(0), Output::Mean(0), Output::Stddev(0),
                           Output::Min(1), Output::Max(1), Output::CountDistinct(2)] {
                let got = read(output, n, &accs);
                let want = naive(output, rest);
                prop_assert!(close(&got, &want), "{output:?}: got {got:?}, want {want:?}");
            }
        }

        /// Panes merged in any grouping give the same window as one accumulator over all values.
        #[test]
        fn merged_panes_equal_one_accumulator(
            panes in prop::collection::vec(prop::collection::vec(-1e4f64..1e4, 0..40), 1..8),
        ) {
            let kinds = [AccKind::Moments, AccKind::Extremes, AccKind::Distinct];
            let mut merged: Vec<Acc> = kinds.iter().map(|k| Acc::new(*k)).collect();
            for pane in &panes {
                let mut accs: Vec<Acc> = kinds.iter().map(|k| Acc::new(*k)).collect();
                for v in pane {
                    accs.iter_mut().for_each(|a| a.insert(Val::Num(*v)));
                }
                for (m, a) in merged.iter_mut().zip(&accs) {
                    m.merge(a);
                }
            }
            let all: Vec<f64> = panes.concat();
            let n = all.len() as u64;
            for output in [Output::Count, Output::Sum(0), Output::Mean(0), Output::Stddev(0),
                           Output::Min(1), Output::Max(1), Output::CountDistinct(2)] {
                let got = read(output, n, &merged);
                let want = naive(output, &all);
                prop_assert!(close(&got, &want), "{output:?}: got {got:?}, want {want:?}");
            }
        }
    }

    #[test]
    fn ordered_keys_sort_like_floats() {
        let mut xs = [3.5, -1.0, 0.0, -0.0, 1e300, -1e300, 2.0];
        let mut keys: Vec<u64> = xs.iter().map(|x| ordered(*x)).collect();
        keys.sort_unstable();
        xs.sort_by(f64::total_cmp);
        let back: Vec<f64> = keys.into_iter().map(unordered).collect();
        assert_eq!(back, xs);
    }

    #[test]
    fn moments_survive_long_insert_remove_runs() {
        let mut acc = Acc::new(AccKind::Moments);
        for i in 0..1_000_000u32 {
            acc.insert(Val::Num(f64::from(i % 997) * 1.37 + 1e4));
            if i >= 3 {
                acc.remove(Val::Num(f64::from((i - 3) % 997) * 1.37 + 1e4));
            }
        }
        let tail: Vec<f64> = (999_997..1_000_000u32)
            .map(|i| f64::from(i % 997) * 1.37 + 1e4)
            .collect();
        let want: f64 = tail.iter().sum();
        match read(Output::Sum(0), 3, std::slice::from_ref(&acc)) {
            FeatureValue::Float(got) => assert!((got - want).abs() < 1e-6, "{got} vs {want}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
