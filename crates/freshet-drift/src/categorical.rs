//! Profiles of a categorical feature: frequency tables over the reference's top-K categories
//! plus one "other" bucket.
//!
//! Definitions:
//! - **Reference.** [`CategoricalReferenceBuilder`] counts the reference period in a
//!   Space-Saving summary (Metwally et al. 2005) of `sketch_capacity` counters: exact while
//!   there are at most that many distinct categories; beyond that each count overestimates by at
//!   most total / `sketch_capacity`. [`CategoricalReferenceBuilder::finish`] keeps the `top_k`
//!   categories with the largest counts (ties broken by name) and puts the rest of the total in
//!   "other". Two builders merge by adding counters and keeping the largest `sketch_capacity`.
//! - **Window.** [`CategoricalProfile`] has K + 1 counters in the reference's order, "other"
//!   last; a category outside the reference's top K counts as "other". Missing values are
//!   counted apart and are not part of any measure.
//! - **Measures** ([`CategoricalReference::psi`], [`CategoricalReference::js_distance`],
//!   [`CategoricalReference::chi_square`]) run over the K + 1 buckets, as defined in
//!   [`crate::measures`].
//!
//! Guarantees: a window profile holds K + 1 counters and the K reference names whatever the
//! traffic; the reference builder holds at most `sketch_capacity` names.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::measures::{self, ChiSquareTest};
use crate::DriftError;

/// Default number of reference categories tracked by name.
pub const DEFAULT_TOP_K: usize = 20;
/// Default number of counters of the reference Space-Saving summary.
pub const DEFAULT_SKETCH_CAPACITY: usize = 1_024;

const fn default_top_k() -> usize {
    DEFAULT_TOP_K
}
const fn default_sketch_capacity() -> usize {
    DEFAULT_SKETCH_CAPACITY
}

/// Sizes of a categorical feature's profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalConfig {
    /// Reference categories tracked by name; the rest is "other" (at least 1).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Counters of the reference summary (at least `top_k`).
    #[serde(default = "default_sketch_capacity")]
    pub sketch_capacity: usize,
}

impl Default for CategoricalConfig {
    fn default() -> Self {
        Self {
            top_k: DEFAULT_TOP_K,
            sketch_capacity: DEFAULT_SKETCH_CAPACITY,
        }
    }
}

impl CategoricalConfig {
    /// Checks the ranges; does no I/O.
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.top_k == 0 || self.sketch_capacity < self.top_k {
            return Err(DriftError::InvalidConfig(format!(
                "need 1 <= top_k <= sketch_capacity, got top_k {} and sketch_capacity {}",
                self.top_k, self.sketch_capacity
            )));
        }
        Ok(())
    }
}

/// Counts the reference period of a categorical feature (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalReferenceBuilder {
    config: CategoricalConfig,
    counters: HashMap<String, u64>,
    total: u64,
    missing: u64,
}

impl CategoricalReferenceBuilder {
    /// A builder for `config`.
    pub fn new(config: CategoricalConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self {
            config,
            counters: HashMap::new(),
            total: 0,
            missing: 0,
        })
    }

    /// Adds one reference value.
    pub fn update(&mut self, category: &str) {
        self.total += 1;
        if let Some(c) = self.counters.get_mut(category) {
            *c += 1;
            return;
        }
        if self.counters.len() < self.config.sketch_capacity {
            self.counters.insert(category.to_owned(), 1);
            return;
        }
        // Space-Saving: the new category takes over the smallest counter, plus one.
        let smallest = self
            .counters
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(k, &c)| (k.clone(), c));
        if let Some((victim, count)) = smallest {
            self.counters.remove(&victim);
            self.counters.insert(category.to_owned(), count + 1);
        }
    }

    /// Counts one missing value.
    pub fn update_missing(&mut self) {
        self.missing += 1;
    }

    /// Merges another builder: counters are added, then the largest `sketch_capacity` kept.
    pub fn merge(&mut self, other: &CategoricalReferenceBuilder) -> Result<(), DriftError> {
        if self.config != other.config {
            return Err(DriftError::LayoutMismatch);
        }
        for (k, &c) in &other.counters {
            *self.counters.entry(k.clone()).or_insert(0) += c;
        }
        self.total += other.total;
        self.missing += other.missing;
        if self.counters.len() > self.config.sketch_capacity {
            let mut all: Vec<(String, u64)> = self.counters.drain().collect();
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            all.truncate(self.config.sketch_capacity);
            self.counters = all.into_iter().collect();
        }
        Ok(())
    }

    /// Freezes the reference; fails when no non-missing value was seen.
    pub fn finish(self) -> Result<CategoricalReference, DriftError> {
        if self.total == 0 {
            return Err(DriftError::Empty {
                what: "reference sample",
            });
        }
        let mut all: Vec<(String, u64)> = self.counters.into_iter().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(self.config.top_k);
        let named: u64 = all.iter().map(|(_, c)| c).sum();
        let mut counts: Vec<u64> = all.iter().map(|(_, c)| *c).collect();
        counts.push(self.total.saturating_sub(named));
        let categories: Vec<String> = all.into_iter().map(|(k, _)| k).collect();
        let index = categories
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        Ok(CategoricalReference {
            layout: Layout { categories, index },
            counts,
            missing: self.missing,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Layout {
    categories: Vec<String>,
    index: HashMap<String, usize>,
}

/// The frozen reference frequency table of a categorical feature (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalReference {
    layout: Layout,
    counts: Vec<u64>,
    missing: u64,
}

impl CategoricalReference {
    /// Builds a reference from a slice of values (equivalent to a builder fed them).
    pub fn from_values<S: AsRef<str>>(
        values: &[S],
        config: CategoricalConfig,
    ) -> Result<Self, DriftError> {
        let mut b = CategoricalReferenceBuilder::new(config)?;
        for v in values {
            b.update(v.as_ref());
        }
        b.finish()
    }

    /// The named categories, most frequent first; "other" is the bucket after them.
    pub fn categories(&self) -> &[String] {
        &self.layout.categories
    }

    /// Reference counts: one per named category, then "other".
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Missing values seen during the reference period.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// An empty live-window profile over this reference's buckets.
    pub fn new_window(&self) -> CategoricalProfile {
        CategoricalProfile {
            layout: self.layout.clone(),
            counts: vec![0; self.counts.len()],
            missing: 0,
        }
    }

    fn check_layout(&self, window: &CategoricalProfile) -> Result<(), DriftError> {
        if window.layout != self.layout {
            return Err(DriftError::LayoutMismatch);
        }
        Ok(())
    }

    /// PSI over the K + 1 buckets.
    pub fn psi(&self, window: &CategoricalProfile) -> Result<f64, DriftError> {
        self.check_layout(window)?;
        measures::psi(&self.counts, &window.counts)
    }

    /// Jensen–Shannon distance (base 2) over the K + 1 buckets.
    pub fn js_distance(&self, window: &CategoricalProfile) -> Result<f64, DriftError> {
        self.check_layout(window)?;
        measures::js_distance(&self.counts, &window.counts)
    }

    /// Chi-square goodness of fit of the window against the reference proportions.
    pub fn chi_square(&self, window: &CategoricalProfile) -> Result<ChiSquareTest, DriftError> {
        self.check_layout(window)?;
        measures::chi_square_gof(&self.counts, &window.counts)
    }
}

/// Counts of one live window over the reference's buckets (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalProfile {
    layout: Layout,
    counts: Vec<u64>,
    missing: u64,
}

impl CategoricalProfile {
    /// Adds one value; a category not named by the reference counts as "other".
    #[inline]
    pub fn update(&mut self, category: &str) {
        let other = self.counts.len() - 1;
        let bucket = self.layout.index.get(category).copied().unwrap_or(other);
        self.counts[bucket] += 1;
    }

    /// Counts one missing value.
    pub fn update_missing(&mut self) {
        self.missing += 1;
    }

    /// Sums `other`'s counts into this profile.
    pub fn merge(&mut self, other: &CategoricalProfile) -> Result<(), DriftError> {
        if self.layout != other.layout {
            return Err(DriftError::LayoutMismatch);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.missing += other.missing;
        Ok(())
    }

    /// Empties the profile for reuse as the next window.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.missing = 0;
    }

    /// Counts: one per named category, then "other".
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Non-missing values counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Missing values counted.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Bytes held on the heap by the counters (fixed at creation).
    pub fn counter_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(top_k: usize, sketch_capacity: usize) -> CategoricalConfig {
        CategoricalConfig {
            top_k,
            sketch_capacity,
        }
    }

    #[test]
    fn top_k_and_other() {
        let values = ["a", "a", "a", "b", "b", "c", "d"];
        let r = CategoricalReference::from_values(&values, config(2, 10)).expect("non-empty");
        assert_eq!(r.categories(), &["a".to_owned(), "b".to_owned()]);
        assert_eq!(r.counts(), &[3, 2, 2]);
        let mut w = r.new_window();
        for v in ["a", "z", "b", "b"] {
            w.update(v);
        }
        assert_eq!(w.counts(), &[1, 2, 1]);
    }

    #[test]
    fn space_saving_finds_heavy_hitters_in_bounded_memory() {
        let mut b = CategoricalReferenceBuilder::new(config(2, 16)).expect("valid");
        for i in 0..100_000u32 {
            let v = match i % 10 {
                0..=3 => "heavy".to_owned(),
                4..=5 => "medium".to_owned(),
                _ => format!("rare{i}"),
            };
            b.update(&v);
            assert!(b.counters.len() <= 16);
        }
        let r = b.finish().expect("non-empty");
        assert_eq!(r.categories(), &["heavy".to_owned(), "medium".to_owned()]);
        assert_eq!(r.counts().iter().sum::<u64>(), 100_000);
    }

    #[test]
    fn window_memory_is_constant() {
        let r = CategoricalReference::from_values(&["x", "y"], CategoricalConfig::default())
            .expect("non-empty");
        let mut w = r.new_window();
        let before = w.counter_bytes();
        for i in 0..1_000_000u32 {
            w.update(if i % 3 == 0 { "x" } else { "new" });
        }
        assert_eq!(w.counter_bytes(), before);
        assert_eq!(w.count(), 1_000_000);
    }

    #[test]
    fn builders_merge() {
        let mut a = CategoricalReferenceBuilder::new(config(3, 8)).expect("valid");
        let mut b = CategoricalReferenceBuilder::new(config(3, 8)).expect("valid");
        a.update("p");
        b.update("p");
        b.update("q");
        a.merge(&b).expect("same config");
        let r = a.finish().expect("non-empty");
        assert_eq!(r.counts(), &[2, 1, 0]);
    }
}
