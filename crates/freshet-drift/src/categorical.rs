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

    /// Non-missing values counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Missing values counted.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// The count of `category` (an overestimate by at most total / capacity once the summary
    /// is full; 0 when not tracked).
    pub fn count_of(&self, category: &str) -> u64 {
        self.counters.get(category).copied().unwrap_or(0)
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
        Ok(CategoricalReference {
            layout: Layout::new(categories)?,
            counts,
            missing: self.missing,
        })
    }
}

/// The named categories and their lookup table. Serialises as `{"categories", "index"}` (the
/// snapshot format); the table is rebuilt from `categories` on deserialisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "LayoutRepr", into = "LayoutRepr")]
struct Layout {
    categories: Vec<String>,
    table: CategoryTable,
}

#[derive(Serialize, Deserialize)]
struct LayoutRepr {
    categories: Vec<String>,
    index: HashMap<String, usize>,
}

impl TryFrom<LayoutRepr> for Layout {
    type Error = DriftError;
    fn try_from(repr: LayoutRepr) -> Result<Self, DriftError> {
        let layout = Layout::new(repr.categories)?;
        let consistent = repr.index.len() == layout.categories.len()
            && repr
                .index
                .iter()
                .all(|(k, &i)| layout.categories.get(i) == Some(k));
        if !consistent {
            return Err(DriftError::InvalidConfig(
                "category index does not match the category list".into(),
            ));
        }
        Ok(layout)
    }
}

impl From<Layout> for LayoutRepr {
    fn from(layout: Layout) -> Self {
        let index = layout
            .categories
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        Self {
            categories: layout.categories,
            index,
        }
    }
}

impl PartialEq for Layout {
    fn eq(&self, other: &Self) -> bool {
        // the table is a function of the categories
        self.categories == other.categories
    }
}

impl Layout {
    fn new(categories: Vec<String>) -> Result<Self, DriftError> {
        let table = CategoryTable::new(&categories)?;
        Ok(Self { categories, table })
    }

    /// The bucket of `category`: its position among the named categories, else "other".
    #[inline(always)]
    fn bucket(&self, category: &str) -> usize {
        self.table
            .find(category, &self.categories)
            .unwrap_or(self.categories.len())
    }
}

/// Open-addressing table from category to position, for lookups in a few nanoseconds: a
/// category of at most 8 bytes is identified by its bytes packed in a `u64` plus its length (no
/// string comparison); a longer one by a 64-bit hash, confirmed by comparing the string. The
/// hash seed is chosen so that, where possible, every named category sits in its home slot, so
/// a named category is found with one probe and no mispredicted branch.
#[derive(Debug, Clone)]
struct CategoryTable {
    seed: u64,
    shift: u32,
    slots: Vec<Slot>,
}

/// Seeds tried per table size before the table grows (or settles for probing).
const SEED_TRIES: u64 = 64;
/// Largest table tried in search of a collision-free seed.
const MAX_PERFECT_SLOTS: usize = 1 << 14;

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    len: u32,
    /// Position among the categories; `u32::MAX` for an empty slot.
    position: u32,
}

const EMPTY_SLOT: u32 = u32::MAX;

/// The bytes of a string of at most 8 bytes in a little-endian `u64`, from overlapping
/// fixed-size reads (a variable-length copy would go through `memcpy` and stall the load).
#[inline(always)]
fn pack_short(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let u32_at = |at: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(word))
    };
    match n {
        0 => 0,
        1..=3 => {
            u64::from(bytes[0])
                | u64::from(bytes[n / 2]) << (8 * (n / 2))
                | u64::from(bytes[n - 1]) << (8 * (n - 1))
        }
        // the two reads overlap on the same bytes at the same bit positions
        _ => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
    }
}

impl CategoryTable {
    fn new(categories: &[String]) -> Result<Self, DriftError> {
        if categories.len() >= EMPTY_SLOT as usize / 4 {
            return Err(DriftError::InvalidConfig("too many categories".into()));
        }
        let keys: Vec<(u64, u32)> = categories.iter().map(|c| Self::key(c.as_bytes())).collect();
        // load factor ≤ 1/4; grow while looking for a seed that puts every key in its home slot
        let mut size = (categories.len() * 4).next_power_of_two().max(8);
        let (seed, size) = 'search: loop {
            let shift = 64 - size.trailing_zeros();
            for seed in 0..SEED_TRIES {
                let mut used = vec![false; size];
                let perfect = keys.iter().all(|&(key, len)| {
                    let home = Self::slot(seed, shift, key, len);
                    !std::mem::replace(&mut used[home], true)
                });
                if perfect {
                    break 'search (seed, size);
                }
            }
            if size >= MAX_PERFECT_SLOTS {
                break (0, (categories.len() * 4).next_power_of_two().max(8));
            }
            size *= 2;
        };
        let mut table = Self {
            seed,
            shift: 64 - size.trailing_zeros(),
            slots: vec![
                Slot {
                    key: 0,
                    len: 0,
                    position: EMPTY_SLOT,
                };
                size
            ],
        };
        for (position, (c, &(key, len))) in categories.iter().zip(&keys).enumerate() {
            if table.find(c, categories).is_some() {
                return Err(DriftError::InvalidConfig(format!(
                    "category `{c}` is listed twice"
                )));
            }
            let mut i = Self::slot(table.seed, table.shift, key, len);
            while table.slots[i].position != EMPTY_SLOT {
                i = (i + 1) & (table.slots.len() - 1);
            }
            table.slots[i] = Slot {
                key,
                len,
                position: position as u32,
            };
        }
        Ok(table)
    }

    #[inline(always)]
    fn key(bytes: &[u8]) -> (u64, u32) {
        let len = bytes.len() as u32;
        if bytes.len() <= 8 {
            return (pack_short(bytes), len);
        }
        let mut hash = 0xCBF2_9CE4_8422_2325u64;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            hash = (hash ^ u64::from_le_bytes(word))
                .wrapping_mul(0x0000_0100_0000_01B3)
                .rotate_left(29);
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        hash = (hash ^ u64::from_le_bytes(tail)).wrapping_mul(0x0000_0100_0000_01B3);
        (hash, len)
    }

    #[inline(always)]
    fn slot(seed: u64, shift: u32, key: u64, len: u32) -> usize {
        let mixed =
            (key ^ u64::from(len).rotate_right(8) ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> shift) as usize
    }

    #[inline(always)]
    fn find(&self, category: &str, categories: &[String]) -> Option<usize> {
        let bytes = category.as_bytes();
        let (key, len) = Self::key(bytes);
        let mut i = Self::slot(self.seed, self.shift, key, len);
        let matches = |slot: Slot| {
            slot.key == key
                && slot.len == len
                && slot.position != EMPTY_SLOT
                && (bytes.len() <= 8
                    || categories.get(slot.position as usize).map(String::as_str) == Some(category))
        };
        let home = self.slots[i];
        if matches(home) {
            return Some(home.position as usize);
        }
        if home.position == EMPTY_SLOT {
            return None;
        }
        // a collision: only when no collision-free seed was found, or for an unnamed category
        loop {
            i = (i + 1) & (self.slots.len() - 1);
            let slot = self.slots[i];
            if slot.position == EMPTY_SLOT {
                return None;
            }
            if matches(slot) {
                return Some(slot.position as usize);
            }
        }
    }
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

    /// A window profile from a window's counts kept in a builder (lagged references, whose
    /// windows are counted before their reference exists): each named category gets its count
    /// (at most the window's total), "other" the rest.
    pub fn window_from_counts(&self, window: &CategoricalReferenceBuilder) -> CategoricalProfile {
        let mut counts: Vec<u64> = Vec::with_capacity(self.counts.len());
        let mut named = 0u64;
        for c in &self.layout.categories {
            let n = window.count_of(c).min(window.total.saturating_sub(named));
            named += n;
            counts.push(n);
        }
        counts.push(window.total.saturating_sub(named));
        CategoricalProfile {
            layout: self.layout.clone(),
            counts,
            missing: window.missing,
        }
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

    /// Two-sample chi-square test of the window counts against the reference counts (the
    /// reference is a sample too; see [`measures::chi_square_2samp`]).
    pub fn chi_square_2samp(
        &self,
        window: &CategoricalProfile,
    ) -> Result<ChiSquareTest, DriftError> {
        self.check_layout(window)?;
        measures::chi_square_2samp(&self.counts, &window.counts)
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
    #[inline(always)]
    pub fn update(&mut self, category: &str) {
        let bucket = self.layout.bucket(category);
        self.counts[bucket] += 1;
    }

    /// Adds every category of a slice (same as [`CategoricalProfile::update`] on each).
    pub fn update_all<S: AsRef<str>>(&mut self, categories: &[S]) {
        for c in categories {
            self.update(c.as_ref());
        }
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
    fn short_categories_pack_to_their_little_endian_bytes() {
        for s in [
            "", "a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh",
        ] {
            let mut padded = [0u8; 8];
            padded[..s.len()].copy_from_slice(s.as_bytes());
            assert_eq!(pack_short(s.as_bytes()), u64::from_le_bytes(padded), "{s}");
        }
        // longer names, names that share a packed prefix, and a NUL byte all stay apart
        let names: Vec<String> = [
            "US",
            "U",
            "US\0",
            "a-very-long-category-name",
            "a-very-long-category-namf",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let r = CategoricalReference::from_values(&names, config(10, 10)).expect("non-empty");
        let mut w = r.new_window();
        for name in &names {
            w.update(name);
        }
        w.update("unseen");
        assert_eq!(w.counts(), vec![1; names.len() + 1]);
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
