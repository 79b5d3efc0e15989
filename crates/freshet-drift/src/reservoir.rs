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
        v.sort_unstable_by(f64::total_cmp);
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
