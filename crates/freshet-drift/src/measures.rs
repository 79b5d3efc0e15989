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

/// The drift measures, named as in pipeline files.
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
    /// Chi-square goodness-of-fit test on categories; alerts on its p-value.
    ChiSquare,
}

impl Measure {
    /// Every measure, in a fixed order.
    pub const ALL: [Measure; 5] = [
        Measure::Psi,
        Measure::Ks,
        Measure::JensenShannon,
        Measure::Wasserstein,
        Measure::ChiSquare,
    ];

    /// True when larger values mean drift (distances); false for p-values (tests).
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

fn check_sorted(sample: &[f64], what: &'static str) -> Result<(), DriftError> {
    if sample.is_empty() {
        return Err(DriftError::Empty { what });
    }
    if sample.iter().any(|v| v.is_nan()) || !sample.is_sorted() {
        return Err(DriftError::NotSorted);
    }
    Ok(())
}

/// Walks the merged support of two sorted samples, calling `f(x, next_x, F_a(x), F_b(x))` for
/// each distinct value x (the last call has `next_x = x`).
fn walk_cdfs(a: &[f64], b: &[f64], mut f: impl FnMut(f64, f64, f64, f64)) {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut x = a[0].min(b[0]);
    loop {
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => {
                f(x, x, i as f64 / n, j as f64 / m);
                return;
            }
        };
        f(x, next, i as f64 / n, j as f64 / m);
        x = next;
    }
}

/// Two-sample KS test between two samples sorted ascending (module doc).
pub fn ks_2samp(reference_sorted: &[f64], window_sorted: &[f64]) -> Result<KsTest, DriftError> {
    check_sorted(reference_sorted, "reference sample")?;
    check_sorted(window_sorted, "window sample")?;
    let mut d = 0.0f64;
    walk_cdfs(reference_sorted, window_sorted, |_, _, fa, fb| {
        d = d.max((fa - fb).abs())
    });
    Ok(KsTest {
        statistic: d,
        p_value: ks_2samp_p_value(d, reference_sorted.len(), window_sorted.len()),
    })
}

/// Wasserstein-1 distance between two samples sorted ascending, not normed
/// (`scipy.stats.wasserstein_distance`).
pub fn wasserstein_1(reference_sorted: &[f64], window_sorted: &[f64]) -> Result<f64, DriftError> {
    check_sorted(reference_sorted, "reference sample")?;
    check_sorted(window_sorted, "window sample")?;
    let mut total = 0.0;
    walk_cdfs(reference_sorted, window_sorted, |x, next, fa, fb| {
        total += (fa - fb).abs() * (next - x)
    });
    Ok(total)
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
        let cases: [(&[u64], &[u64], f64, u64, f64); 4] = [
            (
                &[400, 120, 100, 80, 80, 60, 40, 50, 40, 30],
                &[250, 100, 80, 70, 150, 80, 120, 50, 50, 50],
                109.595_057_116_796_24,
                9,
                1.777_725_617_707_052_3e-19,
            ),
            (&[50, 50, 0], &[50, 49, 1], 1.010_101_010_101_010_2, 2, 0.603_475_096_117_159_5),
            // df = 1: Yates' correction
            (&[30, 70], &[45, 55], 4.181_333_333_333_333, 1, 0.040_871_534_089_006_28),
            (&[10, 20, 0, 5], &[12, 18, 0, 9], 1.217_278_961_639_864_7, 2, 0.544_090_611_456_125_4),
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
    fn unseen_category_keeps_chi_square_finite() {
        let t = chi_square_gof(&[50, 50, 0], &[50, 49, 1]).expect("non-empty");
        assert!(t.statistic.is_finite() && t.df == 2);
    }
}
