//! A bounded uniform sample of a stream of finite `f64` values.
//!
//! Definition: after `seen` values, [`Reservoir::values`] holds `min(seen, capacity)` of them,
//! each subset of that size equally likely (Li's "Algorithm L", which draws the gap to the next
//! replacement instead of one random number per value, so a full reservoir costs one counter
//! comparison per value). Merging two reservoirs draws the number of items taken from each side
//! from the hypergeometric split of the combined stream and then a uniform subset of each side,
//! so the merged sample is again uniform over the union. After a merge the skip state is
//! re-drawn with the acceptance level `capacity / seen` (an approximation of Algorithm L's exact
//! state; it does not bias which items are kept beyond that level's jitter).
//!
//! Guarantees: memory is `capacity` values whatever `seen` is; the sample is a deterministic
//! function of the seed and the input order.

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// A bounded, mergeable uniform sample (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservoir {
    capacity: usize,
    seen: u64,
    items: Vec<f64>,
    rng: SplitMix64,
    /// Algorithm L's acceptance level W.
    level: f64,
    /// 1-based index (in `seen` terms) of the next value that enters the full reservoir.
    next_take: u64,
}

impl Reservoir {
    /// An empty reservoir that keeps at most `capacity` values (at least 1).
    pub fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            seen: 0,
            items: Vec::with_capacity(capacity),
            rng: SplitMix64::new(seed),
            level: 1.0,
            next_take: 0,
        }
    }

    /// Offers one value. Callers pass finite values only (profiles filter NaN and infinities).
    #[inline]
    pub fn update(&mut self, value: f64) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(value);
            if self.items.len() == self.capacity {
                self.level = (self.rng.next_open01().ln() / self.capacity as f64).exp();
                self.schedule_next();
            }
        } else if self.seen == self.next_take {
            self.take(value);
        }
    }

    /// Offers every value of a slice; same result as [`Reservoir::update`] on each, but once
    /// the reservoir is full it only touches the values it keeps.
    pub fn update_slice(&mut self, values: &[f64]) {
        let mut rest = values;
        while let Some((&v, tail)) = rest.split_first() {
            if self.items.len() == self.capacity {
                break;
            }
            self.update(v);
            rest = tail;
        }
        if self.items.len() < self.capacity {
            return;
        }
        let base = self.seen;
        let end = base + rest.len() as u64;
        while self.next_take <= end {
            let offset = (self.next_take - base - 1) as usize;
            self.seen = self.next_take;
            self.take(rest[offset]);
        }
        self.seen = end;
    }

    #[cold]
    fn take(&mut self, value: f64) {
        let slot = self.rng.below(self.capacity as u64) as usize;
        self.items[slot] = value;
        self.level *= (self.rng.next_open01().ln() / self.capacity as f64).exp();
        self.schedule_next();
    }

    fn schedule_next(&mut self) {
        let gap = self.rng.next_open01().ln() / (1.0 - self.level).ln();
        // `as` saturates: a gap beyond u64 means "never", which is what it is in practice.
        let gap = if gap.is_finite() {
            gap.floor() as u64
        } else {
            u64::MAX
        };
        self.next_take = self.seen.saturating_add(gap).saturating_add(1);
    }

    /// Values offered so far (including those not kept).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Maximum number of values kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The kept values, in no particular order.
    pub fn values(&self) -> &[f64] {
        &self.items
    }

    /// The kept values sorted ascending (a copy).
    pub fn sorted_values(&self) -> Vec<f64> {
        let mut v = self.items.clone();
        crate::measures::sort_floats(&mut v);
        v
    }

    /// Empties the reservoir, keeping its capacity and generator.
    pub fn clear(&mut self) {
        self.items.clear();
        self.seen = 0;
        self.level = 1.0;
        self.next_take = 0;
    }

    /// Bytes held on the heap (constant once created: the buffer is allocated up front).
    pub fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<f64>()
    }

    /// Folds `other` in, so that `self` becomes a uniform sample of both streams.
    pub fn merge(&mut self, other: &Reservoir) {
        if other.seen == 0 {
            return;
        }
        let total = self.seen + other.seen;
        let both_complete =
            self.seen == self.items.len() as u64 && other.seen == other.items.len() as u64;
        if both_complete && self.items.len() + other.items.len() <= self.capacity {
            for &v in &other.items {
                self.update(v);
            }
            return;
        }
        let want = self.capacity.min(self.items.len() + other.items.len());
        // Hypergeometric split of `want` draws between the two underlying streams.
        let (mut rest_a, mut rest_b) = (self.seen, other.seen);
        let (mut from_a, mut from_b) = (0usize, 0usize);
        for _ in 0..want {
            let pick_a = if from_a == self.items.len() {
                false
            } else if from_b == other.items.len() {
                true
            } else {
                self.rng.below(rest_a + rest_b) < rest_a
            };
            if pick_a {
                from_a += 1;
                rest_a = rest_a.saturating_sub(1);
            } else {
                from_b += 1;
                rest_b = rest_b.saturating_sub(1);
            }
        }
        let mut mine = std::mem::take(&mut self.items);
        partial_shuffle(&mut mine, from_a, &mut self.rng);
        mine.truncate(from_a);
        let mut theirs = other.items.clone();
        partial_shuffle(&mut theirs, from_b, &mut self.rng);
        mine.extend_from_slice(&theirs[..from_b]);
        mine.reserve_exact(self.capacity.saturating_sub(mine.len()));
        self.items = mine;
        self.seen = total;
        if self.items.len() == self.capacity {
            self.level = (self.capacity as f64 / total as f64).min(1.0);
            self.schedule_next();
        }
    }
}

impl Reservoir {
    /// A uniform subsample of at most `capacity` of the kept values, standing for the same
    /// `seen` values (a uniform subset of a uniform sample is uniform).
    pub fn downsample(&self, capacity: usize, seed: u64) -> Reservoir {
        let mut rng = SplitMix64::new(seed);
        let mut items = self.items.clone();
        let keep = capacity.max(1).min(items.len());
        partial_shuffle(&mut items, keep, &mut rng);
        items.truncate(keep);
        items.shrink_to_fit();
        Self::from_parts(capacity.max(1), self.seen, items, rng)
    }

    /// A sample of the union of the streams behind `parts`, stratified by stream size: part i
    /// contributes k_i ≈ K · seen_i / Σ seen values (largest remainders), K as large as every
    /// part's kept values and `capacity` allow, each part's share a uniform subset of its
    /// sample. Every value of the union is then equally likely to be kept, up to rounding.
    pub fn union(parts: &[&Reservoir], capacity: usize, seed: u64) -> Reservoir {
        let mut rng = SplitMix64::new(seed);
        let capacity = capacity.max(1);
        let seen: u64 = parts.iter().map(|p| p.seen).sum();
        if seen == 0 {
            return Self::from_parts(capacity, 0, Vec::new(), rng);
        }
        // the largest K at which no part is asked for more than it kept
        let mut total = capacity as f64;
        for p in parts.iter().filter(|p| p.seen > 0) {
            total = total.min(p.items.len() as f64 * seen as f64 / p.seen as f64);
        }
        let shares: Vec<f64> = parts
            .iter()
            .map(|p| total * p.seen as f64 / seen as f64)
            .collect();
        let mut counts: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
        let mut left = (total.floor() as usize).saturating_sub(counts.iter().sum());
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by(|&a, &b| {
            (shares[b] - shares[b].floor()).total_cmp(&(shares[a] - shares[a].floor()))
        });
        for i in order {
            if left == 0 {
                break;
            }
            if counts[i] < parts[i].items.len() {
                counts[i] += 1;
                left -= 1;
            }
        }
        let mut items = Vec::with_capacity(capacity);
        for (p, &k) in parts.iter().zip(&counts) {
            let mut mine = p.items.clone();
            let k = k.min(mine.len());
            partial_shuffle(&mut mine, k, &mut rng);
            items.extend_from_slice(&mine[..k]);
        }
        Self::from_parts(capacity, seen, items, rng)
    }

    fn from_parts(capacity: usize, seen: u64, mut items: Vec<f64>, rng: SplitMix64) -> Reservoir {
        items.reserve_exact(capacity.saturating_sub(items.len()));
        let mut r = Self {
            capacity,
            seen,
            items,
            rng,
            level: 1.0,
            next_take: 0,
        };
        if r.items.len() == r.capacity {
            r.level = (r.capacity as f64 / r.seen.max(1) as f64).min(1.0);
            r.schedule_next();
        }
        r
    }
}

/// Moves a uniform random subset of size `k` to the front of `v` (partial Fisher–Yates).
fn partial_shuffle(v: &mut [f64], k: usize, rng: &mut SplitMix64) {
    let n = v.len();
    for i in 0..k.min(n) {
        let j = i + rng.below((n - i) as u64) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_below_capacity() {
        let mut r = Reservoir::new(10, 1);
        for i in 0..7 {
            r.update(f64::from(i));
        }
        assert_eq!(r.sorted_values(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn sample_is_roughly_uniform() {
        // Mean of a uniform sample of 0..1_000_000 is ~500_000 with sd ~ 288_675/sqrt(1000).
        let mut r = Reservoir::new(1000, 7);
        for i in 0..1_000_000 {
            r.update(f64::from(i));
        }
        let mean = r.values().iter().sum::<f64>() / r.values().len() as f64;
        assert!(
            (mean - 500_000.0).abs() < 5.0 * 288_675.0 / 1000f64.sqrt(),
            "mean {mean}"
        );
        assert_eq!(r.values().len(), 1000);
    }

    #[test]
    fn union_is_stratified_by_stream_size() {
        // three windows of 30k, 10k and 60k values, each kept as a sample of 5k
        let mut parts = Vec::new();
        for (i, n) in [(0.0, 30_000), (1.0, 10_000), (2.0, 60_000)] {
            let mut r = Reservoir::new(5_000, n as u64);
            for _ in 0..n {
                r.update(i);
            }
            parts.push(r);
        }
        let refs: Vec<&Reservoir> = parts.iter().collect();
        let u = Reservoir::union(&refs, 100_000, 3);
        assert_eq!(u.seen(), 100_000);
        // the largest part limits the sample: 5k of 60k, so 5k / 0.6 = 8333 values in all
        assert_eq!(u.values().len(), 8_333);
        let share = |x: f64| u.values().iter().filter(|&&v| v == x).count();
        assert_eq!((share(0.0), share(1.0), share(2.0)), (2_500, 833, 5_000));
        let small = Reservoir::union(&refs, 1_000, 3);
        assert_eq!(small.values().len(), 1_000);
        assert_eq!(small.values().iter().filter(|&&v| v == 2.0).count(), 600);
        let d = parts[0].downsample(100, 1);
        assert_eq!(
            (d.values().len(), d.seen(), d.capacity()),
            (100, 30_000, 100)
        );
    }

    #[test]
    fn merge_is_weighted_by_stream_sizes() {
        let mut a = Reservoir::new(1000, 1);
        let mut b = Reservoir::new(1000, 2);
        for _ in 0..300_000 {
            a.update(0.0);
        }
        for _ in 0..100_000 {
            b.update(1.0);
        }
        a.merge(&b);
        let ones = a.values().iter().filter(|&&v| v == 1.0).count();
        assert_eq!(a.seen(), 400_000);
        assert_eq!(a.values().len(), 1000);
        assert!((200..300).contains(&ones), "ones {ones}");
    }
}
