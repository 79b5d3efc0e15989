//! Profiles of a numeric feature: a reference fixed once, and live windows compared against it.
//!
//! Definitions:
//! - **Bins.** [`NumericBins`] holds strictly increasing finite inner edges e_1 < … < e_{B−1};
//!   with e_0 = −∞ and e_B = +∞, bin i is the right-open interval [e_i, e_{i+1}), so a value
//!   goes to the bin whose index is the number of inner edges ≤ value (±∞ land in the outer
//!   bins). [`NumericBins::from_quantiles`] places e_j at the j/B quantile of the reference
//!   sample with linear interpolation (numpy's default `method="linear"`), for j = 1..B−1;
//!   coinciding edges (ties in the data) are merged, so there may be fewer than B bins.
//! - **Profile.** [`NumericProfile`] = one `u64` count per bin, a count of missing values (NaN,
//!   not binned and not sampled), and a [`Reservoir`] of the finite values (the quantile sketch,
//!   used for KS and Wasserstein). Merging sums the counts and merges the reservoirs.
//! - **Reference.** [`NumericReferenceBuilder`] collects the reference period into a reservoir
//!   (default 100 000 values); [`NumericReferenceBuilder::finish`] fixes the bins from that
//!   sample's quantiles, bins the sample to get the reference counts, sorts the sample once and
//!   computes its population standard deviation. The reference counts are therefore those of
//!   the sample: exact when the reference period had at most `reference_sample` values.
//!
//! Guarantees: a profile's memory is fixed at creation (bins + reservoir capacity) and does not
//! grow with the values it sees; updating costs one bin search (up to 32 edges, all comparisons
//! counted, which vectorises; beyond, a constant-time grid lookup over the edge range) plus one
//! counter comparison for the reservoir. [`NumericBins::histogram`] bins a batch of values at
//! several hundred million values per second. `examples/drift_throughput.rs` and `examples/drift_bench.rs` measure it.

use serde::{Deserialize, Serialize};

use crate::measures::{self, KsTest};
use crate::reservoir::Reservoir;
use crate::DriftError;

/// Default number of quantile bins.
pub const DEFAULT_BINS: usize = 10;
/// Default size of the exact reference sample kept for KS and Wasserstein.
pub const DEFAULT_REFERENCE_SAMPLE: usize = 100_000;
/// Default size of the live window's sample.
pub const DEFAULT_WINDOW_SAMPLE: usize = 20_000;
/// Largest number of bins accepted.
pub const MAX_BINS: usize = 1_000;
/// Values per block in [`NumericProfile::update_all`].
const BATCH: usize = 1_024;

const fn default_bins() -> usize {
    DEFAULT_BINS
}
const fn default_reference_sample() -> usize {
    DEFAULT_REFERENCE_SAMPLE
}
const fn default_window_sample() -> usize {
    DEFAULT_WINDOW_SAMPLE
}

/// Sizes of a numeric feature's profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericConfig {
    /// Number of quantile bins fixed from the reference (2..=1000; ties may merge some).
    #[serde(default = "default_bins")]
    pub bins: usize,
    /// Values kept from the reference period for KS, Wasserstein and the bin edges.
    #[serde(default = "default_reference_sample")]
    pub reference_sample: usize,
    /// Values kept from each live window for KS and Wasserstein.
    #[serde(default = "default_window_sample")]
    pub window_sample: usize,
}

impl Default for NumericConfig {
    fn default() -> Self {
        Self {
            bins: DEFAULT_BINS,
            reference_sample: DEFAULT_REFERENCE_SAMPLE,
            window_sample: DEFAULT_WINDOW_SAMPLE,
        }
    }
}

impl NumericConfig {
    /// Checks the ranges; does no I/O.
    pub fn validate(&self) -> Result<(), DriftError> {
        if !(2..=MAX_BINS).contains(&self.bins) {
            return Err(DriftError::InvalidConfig(format!(
                "bins must be between 2 and {MAX_BINS}, got {}",
                self.bins
            )));
        }
        if self.reference_sample == 0 || self.window_sample == 0 {
            return Err(DriftError::InvalidConfig(
                "sample sizes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Bin edges fixed from the reference (module doc).
///
/// Serialises as `{"inner_edges": [..]}`; the lookup table is rebuilt on deserialisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "BinsRepr", into = "BinsRepr")]
pub struct NumericBins {
    inner_edges: Vec<f64>,
    lookup: Option<GridLookup>,
}

#[derive(Serialize, Deserialize)]
struct BinsRepr {
    inner_edges: Vec<f64>,
}

impl TryFrom<BinsRepr> for NumericBins {
    type Error = DriftError;
    fn try_from(repr: BinsRepr) -> Result<Self, DriftError> {
        Self::from_edges(repr.inner_edges)
    }
}

impl From<NumericBins> for BinsRepr {
    fn from(bins: NumericBins) -> Self {
        Self {
            inner_edges: bins.inner_edges,
        }
    }
}

impl PartialEq for NumericBins {
    fn eq(&self, other: &Self) -> bool {
        // the lookup is a function of the edges
        self.inner_edges == other.inner_edges
    }
}

/// Constant-time bin search: a uniform grid of cells over [e_1, e_{B−1}]. Every value maps to a
/// cell by one monotone floating-point formula, and each edge is filed in the cell the same
/// formula gives it, so a value's bin is (edges filed in lower cells) + (1 if it is at or above
/// the edge filed in its own cell). That is exact whenever a cell holds at most one edge, which
/// the grid is refined for; a cell holding more falls back to bisection.
#[derive(Debug, Clone)]
struct GridLookup {
    lo: f64,
    cells_per_unit: f64,
    /// Largest cell index (as a float, for the clamp).
    last_cell: f64,
    cells: Vec<Cell>,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    /// The edge filed in this cell (+∞ when none).
    edge: f64,
    /// Edges filed in lower cells.
    base: u32,
    /// More than one edge is filed here: bisect.
    crowded: bool,
}

impl GridLookup {
    /// Built for ≥ 2 inner edges; grid cells doubled until no cell holds two edges (at most
    /// 2^16 cells, beyond which crowded cells bisect).
    fn new(edges: &[f64]) -> Option<Self> {
        let (&lo, &hi) = (edges.first()?, edges.last()?);
        let span = hi - lo;
        if edges.len() < 2 || !(span.is_finite() && span > 0.0) {
            return None;
        }
        let mut grid = (edges.len() * 8).next_power_of_two();
        loop {
            let cells_per_unit = grid as f64 / span;
            let last_cell = (grid + 1) as f64;
            let mut cells = vec![
                Cell {
                    edge: f64::INFINITY,
                    base: 0,
                    crowded: false,
                };
                grid + 2
            ];
            let mut filed = vec![0u32; grid + 2];
            for &e in edges {
                let index = Self::cell_of(e, lo, cells_per_unit, last_cell);
                cells[index].edge = e;
                filed[index] += 1;
            }
            if filed.iter().all(|&n| n <= 1) || grid >= MAX_GRID_CELLS {
                let mut below = 0u32;
                for (cell, &n) in cells.iter_mut().zip(&filed) {
                    cell.base = below;
                    cell.crowded = n > 1;
                    below += n;
                }
                return Some(Self {
                    lo,
                    cells_per_unit,
                    last_cell,
                    cells,
                });
            }
            grid *= 2;
        }
    }

    /// Monotone in `value`; NaN and values below `lo` map to cell 0, +∞ to the last cell.
    #[inline(always)]
    fn cell_of(value: f64, lo: f64, cells_per_unit: f64, last_cell: f64) -> usize {
        let x = (value - lo) * cells_per_unit + 1.0;
        let x = if x >= 0.0 { x } else { 0.0 };
        let x = if x < last_cell { x } else { last_cell };
        x as u32 as usize
    }

    #[inline(always)]
    fn bin_of(&self, value: f64, edges: &[f64]) -> usize {
        let index = Self::cell_of(value, self.lo, self.cells_per_unit, self.last_cell);
        self.bin_in(value, index as u32, edges)
    }

    /// The bin of `value`, whose cell is `index`.
    #[inline(always)]
    fn bin_in(&self, value: f64, index: u32, edges: &[f64]) -> usize {
        let cell = self.cells[(index as usize).min(self.cells.len() - 1)];
        if cell.crowded {
            return edges.partition_point(|&e| e <= value);
        }
        cell.base as usize + usize::from(value >= cell.edge)
    }
}

/// Grid cells at most.
const MAX_GRID_CELLS: usize = 1 << 16;

impl NumericBins {
    /// Bins from explicit inner edges, which must be finite and strictly increasing.
    pub fn from_edges(inner_edges: Vec<f64>) -> Result<Self, DriftError> {
        if inner_edges.iter().any(|e| !e.is_finite())
            || !inner_edges.windows(2).all(|w| w[0] < w[1])
        {
            return Err(DriftError::InvalidConfig(
                "bin edges must be finite and strictly increasing".into(),
            ));
        }
        let lookup = (inner_edges.len() > CUMULATIVE_MAX_EDGES)
            .then(|| GridLookup::new(&inner_edges))
            .flatten();
        Ok(Self {
            inner_edges,
            lookup,
        })
    }

    /// `bins` quantile bins of `sorted_sample` (ascending, finite): edges at the j/bins
    /// quantiles with linear interpolation, duplicates merged.
    pub fn from_quantiles(sorted_sample: &[f64], bins: usize) -> Result<Self, DriftError> {
        if sorted_sample.is_empty() {
            return Err(DriftError::Empty {
                what: "reference sample",
            });
        }
        if sorted_sample.iter().any(|v| !v.is_finite()) || !sorted_sample.is_sorted() {
            return Err(DriftError::NotSorted);
        }
        let mut edges: Vec<f64> = (1..bins)
            .map(|j| quantile_linear(sorted_sample, j as f64 / bins as f64))
            .collect();
        edges.dedup();
        Self::from_edges(edges)
    }

    /// Number of bins (inner edges + 1).
    pub fn len(&self) -> usize {
        self.inner_edges.len() + 1
    }

    /// Always false: there is at least one bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The inner edges e_1..e_{B−1}.
    pub fn inner_edges(&self) -> &[f64] {
        &self.inner_edges
    }

    /// Index of the bin holding `value` (number of inner edges ≤ value). NaN maps to 0; callers
    /// count NaN as missing instead.
    #[inline]
    pub fn bin_of(&self, value: f64) -> usize {
        match &self.lookup {
            Some(lookup) => lookup.bin_of(value, &self.inner_edges),
            // few edges: counting every comparison vectorises and beats any search
            None if self.inner_edges.len() <= CUMULATIVE_MAX_EDGES => self
                .inner_edges
                .iter()
                .map(|&e| usize::from(e <= value))
                .sum(),
            None => self.inner_edges.partition_point(|&e| e <= value),
        }
    }

    /// Adds the bin counts of `values` to `counts` (one per bin; NaN counts in bin 0, so
    /// filter it first). The same as `counts[bin_of(v)] += 1` for each value, several times
    /// faster. Up to [`CUMULATIVE_MAX_EDGES`] edges it counts, per edge, the values at or above
    /// it (a compare-and-add over the block that vectorises) and takes differences; beyond, it
    /// looks bins up on the grid into four interleaved histograms, so repeated bins do not
    /// serialise on one counter.
    pub fn histogram(&self, values: &[f64], counts: &mut [u64]) -> Result<(), DriftError> {
        if counts.len() != self.len() {
            return Err(DriftError::LengthMismatch {
                left: counts.len(),
                right: self.len(),
            });
        }
        let edges = &self.inner_edges;
        if edges.len() <= CUMULATIVE_MAX_EDGES {
            // at_or_above[j] = values ≥ e_{j+1}; bin i holds at_or_above[i−1] − at_or_above[i]
            let mut at_or_above = [0u64; CUMULATIVE_MAX_EDGES];
            for block in values.chunks(HISTOGRAM_BLOCK) {
                for (count, &e) in at_or_above.iter_mut().zip(edges) {
                    *count += block.iter().map(|&v| u64::from(v >= e)).sum::<u64>();
                }
            }
            let mut above_previous = values.len() as u64;
            for (i, c) in counts.iter_mut().enumerate() {
                let above = at_or_above
                    .get(i)
                    .filter(|_| i < edges.len())
                    .copied()
                    .unwrap_or(0);
                *c += above_previous - above;
                above_previous = above;
            }
            return Ok(());
        }
        let n = self.len();
        let mut lanes = vec![0u64; 4 * n];
        let mut quads = values.chunks_exact(4);
        for v in &mut quads {
            lanes[self.bin_of(v[0])] += 1;
            lanes[n + self.bin_of(v[1])] += 1;
            lanes[2 * n + self.bin_of(v[2])] += 1;
            lanes[3 * n + self.bin_of(v[3])] += 1;
        }
        for &v in quads.remainder() {
            lanes[self.bin_of(v)] += 1;
        }
        for (i, c) in counts.iter_mut().enumerate() {
            *c += lanes[i] + lanes[n + i] + lanes[2 * n + i] + lanes[3 * n + i];
        }
        Ok(())
    }
}

/// Up to this many inner edges, bins are found by counting comparisons (and
/// [`NumericBins::histogram`] counts values at or above each edge); beyond, by the grid lookup.
pub const CUMULATIVE_MAX_EDGES: usize = 32;

/// Values per block of [`NumericBins::histogram`]'s first pass.
const HISTOGRAM_BLOCK: usize = 256;

/// Quantile `q` in [0, 1] of a non-empty ascending sample, numpy's linear interpolation.
pub fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Counts per bin, missing count and a bounded sample of one numeric feature (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    bins: NumericBins,
    counts: Vec<u64>,
    missing: u64,
    sample: Reservoir,
}

impl NumericProfile {
    /// An empty profile over `bins` keeping a sample of `sample_capacity` values.
    pub fn new(bins: NumericBins, sample_capacity: usize, seed: u64) -> Self {
        let counts = vec![0; bins.len()];
        Self {
            bins,
            counts,
            missing: 0,
            sample: Reservoir::new(sample_capacity, seed),
        }
    }

    /// Adds one value: NaN counts as missing, ±∞ go to the outer bins and are not sampled.
    #[inline]
    pub fn update(&mut self, value: f64) {
        if value.is_nan() {
            self.missing += 1;
            return;
        }
        let bin = self.bins.bin_of(value);
        self.counts[bin] += 1;
        if value.is_finite() {
            self.sample.update(value);
        }
    }

    /// Adds every value of a slice; same result as calling [`NumericProfile::update`] on each,
    /// faster because all-finite blocks bin in a tight loop and the reservoir jumps straight to
    /// the values it keeps.
    pub fn update_all(&mut self, values: &[f64]) {
        for block in values.chunks(BATCH) {
            if block.iter().all(|v| v.is_finite()) {
                // lengths agree by construction, so this cannot fail
                let _ = self.bins.histogram(block, &mut self.counts);
                self.sample.update_slice(block);
            } else {
                for &v in block {
                    self.update(v);
                }
            }
        }
    }

    /// Sums `other`'s counts into this profile and merges the samples.
    pub fn merge(&mut self, other: &NumericProfile) -> Result<(), DriftError> {
        if self.bins != other.bins {
            return Err(DriftError::LayoutMismatch);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.missing += other.missing;
        self.sample.merge(&other.sample);
        Ok(())
    }

    /// Empties the profile (for reuse as the next window), keeping bins and memory.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.missing = 0;
        self.sample.clear();
    }

    /// The bins.
    pub fn bins(&self) -> &NumericBins {
        &self.bins
    }

    /// Count per bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Values binned (excludes missing).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// NaN values seen.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// The sample of finite values.
    pub fn sample(&self) -> &Reservoir {
        &self.sample
    }

    /// Quantile `q` of the sample (linear interpolation); `None` when the sample is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let sorted = self.sample.sorted_values();
        (!sorted.is_empty()).then(|| quantile_linear(&sorted, q))
    }

    /// Bytes held on the heap; fixed at creation.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
            + self.bins.inner_edges.capacity() * std::mem::size_of::<f64>()
            + self.sample.heap_bytes()
    }
}

/// Collects the reference period of a numeric feature before the bins exist (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericReferenceBuilder {
    config: NumericConfig,
    sample: Reservoir,
    missing: u64,
    non_finite: u64,
    seed: u64,
}

impl NumericReferenceBuilder {
    /// A builder for `config`; `seed` makes sampling reproducible.
    pub fn new(config: NumericConfig, seed: u64) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self {
            config,
            sample: Reservoir::new(config.reference_sample, seed),
            missing: 0,
            non_finite: 0,
            seed,
        })
    }

    /// Adds one reference value (NaN counts as missing; ±∞ are counted but not sampled).
    #[inline]
    pub fn update(&mut self, value: f64) {
        if value.is_nan() {
            self.missing += 1;
        } else if value.is_infinite() {
            self.non_finite += 1;
        } else {
            self.sample.update(value);
        }
    }

    /// Merges another builder's reference values (e.g. from another worker).
    pub fn merge(&mut self, other: &NumericReferenceBuilder) -> Result<(), DriftError> {
        if self.config != other.config {
            return Err(DriftError::LayoutMismatch);
        }
        self.sample.merge(&other.sample);
        self.missing += other.missing;
        self.non_finite += other.non_finite;
        Ok(())
    }

    /// A builder holding an existing sample of the reference period (e.g. the union of
    /// per-window samples of a lagged reference, [`Reservoir::union`]) and its missing count.
    pub fn from_sample(
        config: NumericConfig,
        sample: Reservoir,
        missing: u64,
        seed: u64,
    ) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self {
            config,
            sample,
            missing,
            non_finite: 0,
            seed,
        })
    }

    /// Fixes the bins and freezes the reference; fails when no finite value was seen.
    pub fn finish(self) -> Result<NumericReference, DriftError> {
        let sorted = self.sample.sorted_values();
        let bins = NumericBins::from_quantiles(&sorted, self.config.bins)?;
        let mut counts = vec![0u64; bins.len()];
        for &v in &sorted {
            counts[bins.bin_of(v)] += 1;
        }
        let std = measures::population_std(&sorted);
        Ok(NumericReference {
            config: self.config,
            bins,
            counts,
            sorted_sample: sorted,
            std,
            seen: self.sample.seen() + self.non_finite,
            missing: self.missing,
            seed: self.seed,
        })
    }
}

/// The frozen reference profile of a numeric feature (module doc).
///
/// Deserialisation checks what the measures rely on (a non-empty, finite, sorted sample, one
/// count per bin), so a hand-edited snapshot cannot feed them invalid input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "NumericReferenceRepr")]
pub struct NumericReference {
    config: NumericConfig,
    bins: NumericBins,
    counts: Vec<u64>,
    sorted_sample: Vec<f64>,
    std: f64,
    seen: u64,
    missing: u64,
    seed: u64,
}

#[derive(Deserialize)]
struct NumericReferenceRepr {
    config: NumericConfig,
    bins: NumericBins,
    counts: Vec<u64>,
    sorted_sample: Vec<f64>,
    std: f64,
    seen: u64,
    missing: u64,
    seed: u64,
}

impl TryFrom<NumericReferenceRepr> for NumericReference {
    type Error = DriftError;
    fn try_from(r: NumericReferenceRepr) -> Result<Self, DriftError> {
        r.config.validate()?;
        measures::check_sorted(&r.sorted_sample, "reference sample")?;
        if r.sorted_sample.iter().any(|v| !v.is_finite()) {
            return Err(DriftError::NotSorted);
        }
        if r.counts.len() != r.bins.len() {
            return Err(DriftError::LengthMismatch {
                left: r.counts.len(),
                right: r.bins.len(),
            });
        }
        Ok(Self {
            config: r.config,
            bins: r.bins,
            counts: r.counts,
            sorted_sample: r.sorted_sample,
            std: r.std,
            seen: r.seen,
            missing: r.missing,
            seed: r.seed,
        })
    }
}

/// Every numeric measure of one window against the reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NumericDrift {
    /// PSI over the reference's quantile bins.
    pub psi: f64,
    /// Jensen–Shannon distance (base 2) over the same bins.
    pub jensen_shannon: f64,
    /// KS statistic and p-value, reference sample vs window sample.
    pub ks: KsTest,
    /// Wasserstein-1 normed by the reference standard deviation.
    pub wasserstein: f64,
}

impl NumericReference {
    /// Builds a reference directly from a slice of values (equivalent to a builder fed them).
    pub fn from_values(
        values: &[f64],
        config: NumericConfig,
        seed: u64,
    ) -> Result<Self, DriftError> {
        let mut b = NumericReferenceBuilder::new(config, seed)?;
        for &v in values {
            b.update(v);
        }
        b.finish()
    }

    /// An empty live-window profile on this reference's bins; `window_seed` varies the sampling
    /// between windows.
    pub fn new_window(&self, window_seed: u64) -> NumericProfile {
        NumericProfile::new(
            self.bins.clone(),
            self.config.window_sample,
            self.seed ^ window_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }

    /// A window profile built from a window's sample alone: its bin counts are those of the
    /// sample (exact while the window had at most the sample's capacity of values), for windows
    /// whose values were seen before their reference's bins existed (lagged references).
    pub fn window_from_sample(&self, sample: Reservoir, missing: u64) -> NumericProfile {
        let mut counts = vec![0u64; self.bins.len()];
        // lengths agree by construction
        let _ = self.bins.histogram(sample.values(), &mut counts);
        NumericProfile {
            bins: self.bins.clone(),
            counts,
            missing,
            sample,
        }
    }

    /// The bins fixed from the reference quantiles.
    pub fn bins(&self) -> &NumericBins {
        &self.bins
    }

    /// Reference counts per bin (of the reference sample).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The reference sample, sorted ascending.
    pub fn sorted_sample(&self) -> &[f64] {
        &self.sorted_sample
    }

    /// Population standard deviation of the reference sample.
    pub fn std(&self) -> f64 {
        self.std
    }

    /// Non-missing values seen during the reference period (sampled or not).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Missing (NaN) values seen during the reference period.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    fn check_layout(&self, window: &NumericProfile) -> Result<(), DriftError> {
        if window.bins != self.bins {
            return Err(DriftError::LayoutMismatch);
        }
        Ok(())
    }

    /// PSI of the window's bin counts against the reference's.
    pub fn psi(&self, window: &NumericProfile) -> Result<f64, DriftError> {
        self.check_layout(window)?;
        measures::psi(&self.counts, &window.counts)
    }

    /// Jensen–Shannon distance (base 2) over the bins.
    pub fn js_distance(&self, window: &NumericProfile) -> Result<f64, DriftError> {
        self.check_layout(window)?;
        measures::js_distance(&self.counts, &window.counts)
    }

    /// KS test of the window sample against the reference sample.
    pub fn ks(&self, window: &NumericProfile) -> Result<KsTest, DriftError> {
        self.ks_sorted(&window.sample.sorted_values())
    }

    /// KS test of a sorted window sample against the reference sample (the reference side
    /// was checked when the reference was built, so only the window is).
    pub fn ks_sorted(&self, window_sorted: &[f64]) -> Result<KsTest, DriftError> {
        measures::check_sorted(window_sorted, "window sample")?;
        Ok(measures::ks_2samp_unchecked(
            &self.sorted_sample,
            window_sorted,
        ))
    }

    /// Wasserstein-1 between the samples, normed by max(reference std, 0.001).
    pub fn wasserstein_normed(&self, window: &NumericProfile) -> Result<f64, DriftError> {
        self.wasserstein_normed_sorted(&window.sample.sorted_values())
    }

    /// Wasserstein-1 between the reference sample and a sorted window sample, normed by
    /// max(reference std, 0.001).
    pub fn wasserstein_normed_sorted(&self, window_sorted: &[f64]) -> Result<f64, DriftError> {
        measures::check_sorted(window_sorted, "window sample")?;
        Ok(
            measures::wasserstein_1_unchecked(&self.sorted_sample, window_sorted)
                / self.std.max(measures::WASSERSTEIN_MIN_STD),
        )
    }

    /// All numeric measures at once (sorts the window sample once).
    pub fn compare(&self, window: &NumericProfile) -> Result<NumericDrift, DriftError> {
        self.check_layout(window)?;
        let sorted = window.sample.sorted_values();
        measures::check_sorted(&sorted, "window sample")?;
        let (ks, wasserstein) =
            measures::ks_and_wasserstein_unchecked(&self.sorted_sample, &sorted);
        Ok(NumericDrift {
            psi: measures::psi(&self.counts, &window.counts)?,
            jensen_shannon: measures::js_distance(&self.counts, &window.counts)?,
            ks,
            wasserstein: wasserstein / self.std.max(measures::WASSERSTEIN_MIN_STD),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_right_open_with_infinite_outer_edges() {
        let bins = NumericBins::from_edges(vec![0.0, 1.0]).expect("valid edges");
        assert_eq!(bins.len(), 3);
        assert_eq!(bins.bin_of(f64::NEG_INFINITY), 0);
        assert_eq!(bins.bin_of(-0.5), 0);
        assert_eq!(bins.bin_of(0.0), 1);
        assert_eq!(bins.bin_of(0.99), 1);
        assert_eq!(bins.bin_of(1.0), 2);
        assert_eq!(bins.bin_of(f64::INFINITY), 2);
    }

    #[test]
    fn quantile_bins_match_numpy_and_merge_ties() {
        // np.quantile([1,2,3,4,5,6,7,8,9,10], [0.25,0.5,0.75]) = [3.25, 5.5, 7.75]
        let s: Vec<f64> = (1..=10).map(f64::from).collect();
        let b = NumericBins::from_quantiles(&s, 4).expect("non-empty");
        assert_eq!(b.inner_edges(), &[3.25, 5.5, 7.75]);
        let ties = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let b = NumericBins::from_quantiles(&ties, 10).expect("non-empty");
        assert_eq!(b.inner_edges()[0], 0.0);
        assert!(b.len() < 10);
    }

    #[test]
    fn profile_memory_is_constant_after_a_million_updates() {
        let reference = NumericReference::from_values(
            &(0..1000).map(f64::from).collect::<Vec<_>>(),
            NumericConfig::default(),
            1,
        )
        .expect("non-empty reference");
        let mut w = reference.new_window(1);
        let before = w.heap_bytes();
        for i in 0..1_000_000u32 {
            w.update(f64::from(i % 5000));
        }
        w.update(f64::NAN);
        assert_eq!(w.heap_bytes(), before);
        assert_eq!(w.count(), 1_000_000);
        assert_eq!(w.missing(), 1);
        assert_eq!(w.sample().values().len(), DEFAULT_WINDOW_SAMPLE);
        let mut other = reference.new_window(2);
        other.update_all(&[1.0, 2.0]);
        w.merge(&other).expect("same bins");
        assert_eq!(w.heap_bytes(), before);
        assert_eq!(w.count(), 1_000_002);
    }

    #[test]
    fn merge_rejects_different_bins() {
        let a = NumericProfile::new(NumericBins::from_edges(vec![0.0]).expect("valid"), 10, 1);
        let mut b = NumericProfile::new(NumericBins::from_edges(vec![1.0]).expect("valid"), 10, 1);
        assert_eq!(b.merge(&a), Err(DriftError::LayoutMismatch));
    }

    #[test]
    fn config_is_validated() {
        assert!(NumericConfig {
            bins: 1,
            ..NumericConfig::default()
        }
        .validate()
        .is_err());
        assert!(NumericReferenceBuilder::new(NumericConfig::default(), 0)
            .and_then(NumericReferenceBuilder::finish)
            .is_err());
    }
}
