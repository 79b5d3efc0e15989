//! Drift measures between a reference and a live window, each defined exactly, because the
//! usual libraries disagree on bins, empty-bin fills, log bases and normalisation.
//!
//! Binned measures take two count vectors over the same buckets (quantile bins of a numeric
//! feature, or top-K categories plus "other"); sample measures take two samples sorted
//! ascending without NaN. Proportions are `count / total` of their own side.
//!
//! - **PSI** ([`psi`]): Σ_i (a_i − e_i) · ln(a_i / e_i) over buckets, e = reference proportions,
//!   a = window proportions, natural log. A proportion that is exactly 0 is replaced by
//!   [`PSI_EMPTY_FILL`] = 1e-4 on either side, with no renormalisation (Evidently's convention).
//!   Range [0, ∞); 0.1 / 0.2 are the customary "moderate" / "significant" levels.
//! - **Jensen–Shannon distance** ([`js_distance`]): √JSD with JSD = ½ KL(p‖m) + ½ KL(q‖m),
//!   m = (p + q)/2, logarithms base 2, 0·log 0 = 0, no fill (JSD is finite with empty buckets).
//!   Range [0, 1]. Equals `scipy.spatial.distance.jensenshannon(p, q, base=2)`. (Evidently
//!   applies the PSI fill first and uses base e; the difference is below 1e-3 except for
//!   near-empty buckets.)
//! - **Kolmogorov–Smirnov** ([`ks_2samp`]): D = sup_x |F_ref(x) − F_win(x)| over the empirical
//!   CDFs of the two samples (right-continuous, ties counted on both sides as in
//!   `scipy.stats.ks_2samp`), two-sided p-value from [`crate::special::ks_2samp_p_value`] at
//!   the sample sizes. In profiles the samples are the reference reservoir (≤ 100k values) and
//!   the window reservoir, so n and m are the sample sizes, not the traffic counts.
//! - **Wasserstein-1, normed** ([`wasserstein_normed`]): W1 = ∫ |F_ref(x) − F_win(x)| dx over the
//!   empirical CDFs of the two samples (`scipy.stats.wasserstein_distance`), divided by
//!   max(σ_ref, 0.001) where σ_ref is the population standard deviation (ddof = 0) of the
//!   reference sample (Evidently's "Wasserstein distance (normed)"). Range [0, ∞); Evidently's
//!   default threshold is 0.1.
//! - **Chi-square goodness of fit** ([`chi_square_gof`]): window counts o_i against expected
//!   e_i = p_i · Σo, with p_i = r_i / Σr the reference proportions. Buckets empty on both sides
//!   are left out. A bucket empty in the reference but not in the window gets p_i = 1e-4 and
//!   the p_i are renormalised to sum to 1 (otherwise one unseen category would make the
//!   statistic infinite). Statistic X² = Σ (o_i − e_i)² / e_i, df = buckets kept − 1, p-value
//!   = Q(df/2, X²/2) (chi-square survival). With no empty reference bucket this is exactly
//!   `scipy.stats.chisquare(o, r * Σo / Σr)` and Evidently's `chisquare` stattest.
//!
//! - **Two-sample chi-square** ([`chi_square_2samp`]): the test of homogeneity of the 2 × k
//!   contingency table (reference counts, window counts) over the buckets non-empty on at least
//!   one side: expected E_sj = (row total s) · (bucket total j) / N, X² = Σ (O − E)² / E,
//!   df = k − 1, p-value = Q(df/2, X²/2). With df = 1 Yates' correction moves each observed
//!   count towards its expectation by min(0.5, |O − E|). This is exactly
//!   `scipy.stats.chi2_contingency(np.vstack([r, w]))` on the kept buckets. Unlike the
//!   goodness-of-fit test it treats the reference counts as a sample, so a short reference does
//!   not inflate X².
//!
//! Alerting direction ([`Measure::fires_above`]): PSI, JS and Wasserstein fire when the value is
//! at or above the threshold; KS and chi-square fire when the p-value is below the threshold.

use serde::{Deserialize, Serialize};

use crate::special::{chi_square_sf, ks_2samp_p_value};
use crate::DriftError;

/// Proportion substituted for an exactly-empty bucket in PSI (and for an empty reference bucket
/// in the chi-square test).
pub const PSI_EMPTY_FILL: f64 = 1e-4;

/// Floor of the reference standard deviation in the normed Wasserstein distance (Evidently's).
pub const WASSERSTEIN_MIN_STD: f64 = 1e-3;

/// The drift methods, named as in pipeline files: five window measures, compared window by
/// window with a reference, and two streaming change detectors, run on every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Population stability index over bins or categories.
    Psi,
    /// Kolmogorov–Smirnov two-sample test; alerts on its p-value.
    Ks,
    /// Jensen–Shannon distance (base 2) over bins or categories.
    JensenShannon,
    /// Wasserstein-1 distance normed by the reference standard deviation.
    Wasserstein,
    /// Chi-square test on categories (goodness of fit, or two-sample); alerts on its p-value.
    ChiSquare,
    /// The ADWIN change detector ([`crate::adwin`]) on a numeric stream.
    Adwin,
    /// The Page-Hinkley change detector ([`crate::page_hinkley`]) on a numeric stream.
    PageHinkley,
}

impl Measure {
    /// Every window measure, in a fixed order (the default `methods`).
    pub const ALL: [Measure; 5] = [
        Measure::Psi,
        Measure::Ks,
        Measure::JensenShannon,
        Measure::Wasserstein,
        Measure::ChiSquare,
    ];

    /// The streaming change detectors.
    pub const DETECTORS: [Measure; 2] = [Measure::Adwin, Measure::PageHinkley];

    /// True for the streaming change detectors (run per value, not per window).
    pub const fn is_detector(self) -> bool {
        matches!(self, Measure::Adwin | Measure::PageHinkley)
    }

    /// True when larger values mean drift (distances); false for p-values (tests) and for the
    /// detectors (which alert on a detection, not a threshold).
    pub const fn fires_above(self) -> bool {
        matches!(
            self,
            Measure::Psi | Measure::JensenShannon | Measure::Wasserstein
        )
    }

    /// The name used in pipeline files and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Measure::Psi => "psi",
            Measure::Ks => "ks",
            Measure::JensenShannon => "jensen_shannon",
            Measure::Wasserstein => "wasserstein",
            Measure::ChiSquare => "chi_square",
            Measure::Adwin => "adwin",
            Measure::PageHinkley => "page_hinkley",
        }
    }
}

/// Which chi-square test a categorical feature gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChiSquareMethod {
    /// Goodness of fit of the window to the reference proportions, taken as exact
    /// ([`chi_square_gof`]).
    #[default]
    GoodnessOfFit,
    /// Homogeneity of the reference and window counts, both samples ([`chi_square_2samp`]).
    TwoSample,
}

impl ChiSquareMethod {
    /// The test on reference and window counts over the same buckets.
    pub fn test(self, reference: &[u64], window: &[u64]) -> Result<ChiSquareTest, DriftError> {
        match self {
            Self::GoodnessOfFit => chi_square_gof(reference, window),
            Self::TwoSample => chi_square_2samp(reference, window),
        }
    }
}

/// Result of the two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KsTest {
    /// D = sup |F_ref − F_win|, in [0, 1].
    pub statistic: f64,
    /// Two-sided p-value (see [`crate::special::ks_2samp_p_value`]).
    pub p_value: f64,
}

/// Result of the chi-square goodness-of-fit test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChiSquareTest {
    /// X² = Σ (o − e)² / e.
    pub statistic: f64,
    /// Degrees of freedom: buckets kept − 1.
    pub df: u64,
    /// P(χ²_df > X²); 1 when df = 0.
    pub p_value: f64,
}

fn totals(reference: &[u64], window: &[u64]) -> Result<(f64, f64), DriftError> {
    if reference.len() != window.len() {
        return Err(DriftError::LengthMismatch {
            left: reference.len(),
            right: window.len(),
        });
    }
    let r: u64 = reference.iter().sum();
    let w: u64 = window.iter().sum();
    if r == 0 {
        return Err(DriftError::Empty {
            what: "reference counts",
        });
    }
    if w == 0 {
        return Err(DriftError::Empty {
            what: "window counts",
        });
    }
    Ok((r as f64, w as f64))
}

/// Population stability index of `window` counts against `reference` counts (module doc).
pub fn psi(reference: &[u64], window: &[u64]) -> Result<f64, DriftError> {
    let (rt, wt) = totals(reference, window)?;
    let fill = |p: f64| if p == 0.0 { PSI_EMPTY_FILL } else { p };
    Ok(reference
        .iter()
        .zip(window)
        .map(|(&r, &w)| {
            let e = fill(r as f64 / rt);
            let a = fill(w as f64 / wt);
            (a - e) * (a / e).ln()
        })
        .sum())
}

/// Jensen–Shannon distance (base 2) between the two count vectors' proportions (module doc).
pub fn js_distance(reference: &[u64], window: &[u64]) -> Result<f64, DriftError> {
    let (rt, wt) = totals(reference, window)?;
    let mut divergence = 0.0;
    for (&r, &w) in reference.iter().zip(window) {
        let p = r as f64 / rt;
        let q = w as f64 / wt;
        let m = 0.5 * (p + q);
        if p > 0.0 {
            divergence += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            divergence += 0.5 * q * (q / m).log2();
        }
    }
    Ok(divergence.max(0.0).sqrt())
}

pub(crate) fn check_sorted(sample: &[f64], what: &'static str) -> Result<(), DriftError> {
    if sample.is_empty() {
        return Err(DriftError::Empty { what });
    }
    if sample.iter().any(|v| v.is_nan()) || !sample.is_sorted() {
        return Err(DriftError::NotSorted);
    }
    Ok(())
}

/// Walks the merged sequence of two sorted samples. After each value, with i values of `a`
/// and j of `b` consumed, calls `step(value, |i·m − j·n|)`: the difference of the empirical
/// CDFs times n·m, exact in integers. The merge takes the smaller head with integer selects,
/// not a branch: a branching merge mispredicts about every other value.
#[inline(always)]
fn merge_walk(a: &[f64], b: &[f64], mut step: impl FnMut(f64, u64)) {
    let (n, m) = (a.len(), b.len());
    let (mut i, mut j) = (0usize, 0usize);
    // computed from i and j rather than carried: a carried `± m or n` becomes a branch
    let diff = |i: usize, j: usize| ((i * m) as u64).abs_diff((j * n) as u64);
    while i < n && j < m {
        let (x, y) = (a[i], b[j]);
        let take_a = x <= y;
        i += usize::from(take_a);
        j += usize::from(!take_a);
        // the smaller head; `min` lowers to a select where an `if` would become a branch
        step(x.min(y), diff(i, j));
    }
    while i < n {
        i += 1;
        step(a[i - 1], diff(i, j));
    }
    while j < m {
        j += 1;
        step(b[j - 1], diff(i, j));
    }
}

/// The KS statistic's numerator (max |i·m − j·n| over settled states) and the Wasserstein-1
/// integral times n·m, in one walk.
#[inline(always)]
fn walk_ks_and_wasserstein(a: &[f64], b: &[f64], with_area: bool) -> (u64, f64) {
    let finite = |s: &[f64]| {
        s.first().is_some_and(|v| v.is_finite()) && s.last().is_some_and(|v| v.is_finite())
    };
    if a.len() + b.len() >= TWO_LANE_MIN && finite(a) && finite(b) {
        return walk_two_lanes(a, b, with_area);
    }
    let first = match (a.first(), b.first()) {
        (Some(&x), Some(&y)) => x.min(y),
        _ => return (0, 0.0),
    };
    let mut lane = Lane::start(0, 0, first, 0);
    merge_walk(a, b, |value, diff| lane.settle(value, diff, with_area));
    (lane.largest.max(lane.previous_diff), lane.area)
}

/// Merged lengths from which [`walk_two_lanes`] splits the walk.
const TWO_LANE_MIN: usize = 256;

/// One merge position and what the KS and Wasserstein walks keep about it.
struct Lane {
    i: usize,
    j: usize,
    /// The last value consumed; the CDFs of the state after it hold on [previous, next value).
    previous: f64,
    /// |i·m − j·n| after `previous`.
    previous_diff: u64,
    largest: u64,
    area: f64,
}

impl Lane {
    fn start(i: usize, j: usize, previous: f64, previous_diff: u64) -> Self {
        Self {
            i,
            j,
            previous,
            previous_diff,
            largest: 0,
            area: 0.0,
        }
    }

    /// Consumes `value`, after which the CDF difference is `diff`: the previous state counts
    /// for KS once the sequence has moved on to a larger value (after the last of a run of
    /// ties), and adds its area over [previous, value).
    #[inline(always)]
    fn settle(&mut self, value: f64, diff: u64, with_area: bool) {
        // a multiply, not a select: the select would become a branch on ties
        self.largest = self
            .largest
            .max(self.previous_diff * u64::from(value > self.previous));
        if with_area {
            self.area += self.previous_diff as f64 * (value - self.previous);
        }
        self.previous = value;
        self.previous_diff = diff;
    }

    /// One merge step over finite samples (+∞ stands for an exhausted side).
    #[inline(always)]
    fn step(&mut self, a: &[f64], b: &[f64], with_area: bool) {
        let x = a.get(self.i).copied().unwrap_or(f64::INFINITY);
        let y = b.get(self.j).copied().unwrap_or(f64::INFINITY);
        let take_a = x <= y;
        self.i += usize::from(take_a);
        self.j += usize::from(!take_a);
        let diff = ((self.i * b.len()) as u64).abs_diff((self.j * a.len()) as u64);
        self.settle(x.min(y), diff, with_area);
    }
}

/// The walk of [`walk_ks_and_wasserstein`] as two interleaved halves. A branch-free merge is
/// bound by the latency of its own loop (load, compare, advance); two independent halves run
/// side by side in the same time. The second half starts where the first ends: (i, j) with
/// i + j = half, found by bisection on the merge path (ties go to `a` first, as in the walk).
/// Both samples must be finite (+∞ marks an exhausted side).
fn walk_two_lanes(a: &[f64], b: &[f64], with_area: bool) -> (u64, f64) {
    let (n, m) = (a.len(), b.len());
    let half = (n + m) / 2;
    // largest i in [lo, hi] with a[i−1] ≤ b[half − i], i.e. a[i−1] is merged before b[j]
    let (mut lo, mut hi) = (half.saturating_sub(m), half.min(n));
    while lo < hi {
        let i = (lo + hi).div_ceil(2);
        if a[i - 1] <= b[half - i] {
            lo = i;
        } else {
            hi = i - 1;
        }
    }
    let (i1, j1) = (lo, half - lo);
    let before_split = match (i1.checked_sub(1), j1.checked_sub(1)) {
        (Some(i), Some(j)) => a[i].max(b[j]),
        (Some(i), None) => a[i],
        (None, Some(j)) => b[j],
        (None, None) => f64::NEG_INFINITY,
    };
    let mut first = Lane::start(0, 0, a[0].min(b[0]), 0);
    let split_diff = ((i1 * m) as u64).abs_diff((j1 * n) as u64);
    let mut second = Lane::start(i1, j1, before_split, split_diff);
    for _ in 0..half {
        first.step(a, b, with_area);
        second.step(a, b, with_area);
    }
    if n + m - half > half {
        second.step(a, b, with_area);
    }
    // the first lane's last state is settled by the second lane's first step
    let largest = first.largest.max(second.largest).max(second.previous_diff);
    (largest, first.area + second.area)
}

/// KS test and unnormed Wasserstein-1 of two samples already known to be non-empty, sorted and
/// NaN-free, in one walk.
pub(crate) fn ks_and_wasserstein_unchecked(
    reference_sorted: &[f64],
    window_sorted: &[f64],
) -> (KsTest, f64) {
    let (n, m) = (reference_sorted.len(), window_sorted.len());
    let (largest, area) = walk_ks_and_wasserstein(reference_sorted, window_sorted, true);
    let scale = n as f64 * m as f64;
    let d = largest as f64 / scale;
    (
        KsTest {
            statistic: d,
            p_value: ks_2samp_p_value(d, n, m),
        },
        area / scale,
    )
}

/// Two-sample KS test between two samples sorted ascending (module doc).
pub fn ks_2samp(reference_sorted: &[f64], window_sorted: &[f64]) -> Result<KsTest, DriftError> {
    check_sorted(reference_sorted, "reference sample")?;
    check_sorted(window_sorted, "window sample")?;
    Ok(ks_2samp_unchecked(reference_sorted, window_sorted))
}

/// [`ks_2samp`] on samples already known to be non-empty, sorted and NaN-free.
pub(crate) fn ks_2samp_unchecked(reference_sorted: &[f64], window_sorted: &[f64]) -> KsTest {
    let (n, m) = (reference_sorted.len(), window_sorted.len());
    let (largest, _) = walk_ks_and_wasserstein(reference_sorted, window_sorted, false);
    let d = largest as f64 / (n as f64 * m as f64);
    KsTest {
        statistic: d,
        p_value: ks_2samp_p_value(d, n, m),
    }
}

/// Wasserstein-1 distance between two samples sorted ascending, not normed
/// (`scipy.stats.wasserstein_distance`).
pub fn wasserstein_1(reference_sorted: &[f64], window_sorted: &[f64]) -> Result<f64, DriftError> {
    check_sorted(reference_sorted, "reference sample")?;
    check_sorted(window_sorted, "window sample")?;
    Ok(wasserstein_1_unchecked(reference_sorted, window_sorted))
}

/// [`wasserstein_1`] on samples already known to be non-empty, sorted and NaN-free.
pub(crate) fn wasserstein_1_unchecked(reference_sorted: &[f64], window_sorted: &[f64]) -> f64 {
    ks_and_wasserstein_unchecked(reference_sorted, window_sorted).1
}

/// Sorts finite-or-infinite, NaN-free values ascending, as `sort_unstable_by(f64::total_cmp)`
/// would, but on integer keys: each value's bits are mapped once to an unsigned key that orders
/// like the value, so the sort compares plain integers.
pub fn sort_floats(values: &mut [f64]) {
    let mut keys: Vec<u64> = values.iter().map(|v| order_key(*v)).collect();
    keys.sort_unstable();
    for (v, k) in values.iter_mut().zip(keys) {
        *v = from_order_key(k);
    }
}

/// Flips the sign bit of non-negative values and every bit of negative ones (IEEE 754 total
/// order as unsigned integers).
#[inline(always)]
fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    let mask = ((bits as i64 >> 63) as u64) | (1 << 63);
    bits ^ mask
}

#[inline(always)]
fn from_order_key(key: u64) -> f64 {
    let mask = (((key as i64 >> 63) as u64) ^ u64::MAX) | (1 << 63);
    f64::from_bits(key ^ mask)
}

/// Population standard deviation (ddof = 0), two-pass.
pub fn population_std(sample: &[f64]) -> f64 {
    if sample.is_empty() {
        return f64::NAN;
    }
    let n = sample.len() as f64;
    let mean = sample.iter().sum::<f64>() / n;
    (sample.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
}

/// Wasserstein-1 divided by max(σ_ref, 0.001), σ_ref the population std of the reference
/// sample (module doc). Both samples sorted ascending.
pub fn wasserstein_normed(
    reference_sorted: &[f64],
    window_sorted: &[f64],
) -> Result<f64, DriftError> {
    let w = wasserstein_1(reference_sorted, window_sorted)?;
    Ok(w / population_std(reference_sorted).max(WASSERSTEIN_MIN_STD))
}

/// Chi-square goodness-of-fit of `window` counts against `reference` proportions (module doc).
pub fn chi_square_gof(reference: &[u64], window: &[u64]) -> Result<ChiSquareTest, DriftError> {
    let (rt, wt) = totals(reference, window)?;
    let kept = || {
        reference
            .iter()
            .zip(window)
            .filter(|(&r, &w)| r > 0 || w > 0)
    };
    let mass: f64 = kept()
        .map(|(&r, _)| {
            if r == 0 {
                PSI_EMPTY_FILL
            } else {
                r as f64 / rt
            }
        })
        .sum();
    let mut statistic = 0.0;
    let mut buckets = 0u64;
    for (&r, &w) in kept() {
        let p = if r == 0 {
            PSI_EMPTY_FILL
        } else {
            r as f64 / rt
        } / mass;
        let e = p * wt;
        let o = w as f64;
        statistic += (o - e) * (o - e) / e;
        buckets += 1;
    }
    let df = buckets.saturating_sub(1);
    let p_value = if df == 0 {
        1.0
    } else {
        chi_square_sf(statistic, df)
    };
    Ok(ChiSquareTest {
        statistic,
        df,
        p_value,
    })
}

/// Two-sample chi-square test of homogeneity of `reference` and `window` counts (module doc).
pub fn chi_square_2samp(reference: &[u64], window: &[u64]) -> Result<ChiSquareTest, DriftError> {
    let (rt, wt) = totals(reference, window)?;
    let n = rt + wt;
    let kept = || {
        reference
            .iter()
            .zip(window)
            .filter(|(&r, &w)| r > 0 || w > 0)
    };
    let buckets = kept().count() as u64;
    let df = buckets.saturating_sub(1);
    let yates = df == 1;
    let mut statistic = 0.0;
    for (&r, &w) in kept() {
        let column = (r + w) as f64;
        for (observed, row) in [(r as f64, rt), (w as f64, wt)] {
            let expected = row * column / n;
            let mut diff = (observed - expected).abs();
            if yates {
                diff -= diff.min(0.5);
            }
            statistic += diff * diff / expected;
        }
    }
    let p_value = if df == 0 {
        1.0
    } else {
        chi_square_sf(statistic, df)
    };
    Ok(ChiSquareTest {
        statistic,
        df,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_counts_have_no_drift() {
        let c = [10, 20, 30, 40];
        assert_eq!(psi(&c, &c), Ok(0.0));
        assert!(js_distance(&c, &c).is_ok_and(|d| d.abs() < 1e-12));
        let t = chi_square_gof(&c, &c).expect("counts are non-empty");
        assert!(t.statistic.abs() < 1e-12 && t.df == 3 && (t.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn mismatched_and_empty_inputs_are_errors() {
        assert_eq!(
            psi(&[1, 2], &[1]),
            Err(DriftError::LengthMismatch { left: 2, right: 1 })
        );
        assert!(matches!(
            psi(&[0, 0], &[1, 1]),
            Err(DriftError::Empty { .. })
        ));
        assert_eq!(ks_2samp(&[2.0, 1.0], &[1.0]), Err(DriftError::NotSorted));
        assert!(matches!(
            wasserstein_1(&[], &[1.0]),
            Err(DriftError::Empty { .. })
        ));
    }

    #[test]
    fn disjoint_distributions_have_js_distance_one() {
        assert!(js_distance(&[5, 0], &[0, 7]).is_ok_and(|d| (d - 1.0).abs() < 1e-12));
    }

    #[test]
    fn two_sample_chi_square_matches_scipy_chi2_contingency() {
        // scipy 1.17.1: stats.chi2_contingency(np.vstack([r, w])) on the buckets kept
        // (reference, window, statistic, df, p-value)
        type Case = (&'static [u64], &'static [u64], f64, u64, f64);
        let cases: [Case; 4] = [
            (
                &[400, 120, 100, 80, 80, 60, 40, 50, 40, 30],
                &[250, 100, 80, 70, 150, 80, 120, 50, 50, 50],
                109.595_057_116_796_24,
                9,
                1.777_725_617_707_052_3e-19,
            ),
            (
                &[50, 50, 0],
                &[50, 49, 1],
                1.010_101_010_101_010_2,
                2,
                0.603_475_096_117_159_5,
            ),
            // df = 1: Yates' correction
            (
                &[30, 70],
                &[45, 55],
                4.181_333_333_333_333,
                1,
                0.040_871_534_089_006_28,
            ),
            (
                &[10, 20, 0, 5],
                &[12, 18, 0, 9],
                1.217_278_961_639_864_7,
                2,
                0.544_090_611_456_125_4,
            ),
        ];
        for (r, w, statistic, df, p) in cases {
            let t = chi_square_2samp(r, w).expect("non-empty");
            assert!((t.statistic - statistic).abs() <= 1e-9 * statistic, "{t:?}");
            assert_eq!(t.df, df);
            assert!((t.p_value - p).abs() <= 1e-9 * p, "{t:?} vs {p}");
        }
    }

    #[test]
    fn two_sample_chi_square_is_calmer_than_goodness_of_fit_on_a_small_reference() {
        // the same proportions, a reference as small as the window: the goodness-of-fit test
        // takes the reference as exact and overstates X² about twofold
        let reference = [52, 148];
        let window = [40, 160];
        let gof = chi_square_gof(&reference, &window).expect("non-empty");
        let two = chi_square_2samp(&reference, &window).expect("non-empty");
        assert!(gof.statistic > 1.8 * two.statistic, "{gof:?} {two:?}");
    }

    #[test]
    fn float_sort_orders_like_total_cmp() {
        let mut values = vec![
            3.5,
            -0.0,
            0.0,
            -1e-300,
            f64::INFINITY,
            -7.25,
            1e300,
            f64::NEG_INFINITY,
            2.0,
            -0.5,
        ];
        let mut want = values.clone();
        want.sort_unstable_by(f64::total_cmp);
        sort_floats(&mut values);
        assert_eq!(
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unseen_category_keeps_chi_square_finite() {
        let t = chi_square_gof(&[50, 50, 0], &[50, 49, 1]).expect("non-empty");
        assert!(t.statistic.is_finite() && t.df == 2);
    }
}
