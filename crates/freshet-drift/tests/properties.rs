//! Properties of profiles and measures over random inputs.

use freshet_drift::measures::{chi_square_gof, js_distance, ks_2samp, psi, wasserstein_1};
use freshet_drift::{NumericBins, NumericProfile, Reservoir};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -1e3f64..1e3,
        1 => Just(f64::NAN),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(0.0)],
    ]
}

fn bins() -> NumericBins {
    NumericBins::from_edges(vec![-500.0, -100.0, 0.0, 10.0, 100.0, 500.0]).expect("valid edges")
}

proptest! {
    #[test]
    fn batch_update_equals_per_value_update(values in prop::collection::vec(value(), 0..5000), cap in 1usize..300) {
        let mut one = NumericProfile::new(bins(), cap, 5);
        let mut all = NumericProfile::new(bins(), cap, 5);
        for &v in &values {
            one.update(v);
        }
        all.update_all(&values);
        prop_assert_eq!(one, all);
    }

    #[test]
    fn reservoir_slice_equals_per_value(values in prop::collection::vec(-1e3f64..1e3, 0..5000), cap in 1usize..200, split in 0usize..5000) {
        let mut one = Reservoir::new(cap, 9);
        let mut all = Reservoir::new(cap, 9);
        for &v in &values {
            one.update(v);
        }
        let split = split.min(values.len());
        all.update_slice(&values[..split]);
        all.update_slice(&values[split..]);
        prop_assert_eq!(one, all);
    }

    #[test]
    fn merged_counts_are_summed(values in prop::collection::vec(value(), 0..2000), split in 0usize..2000) {
        let split = split.min(values.len());
        let mut whole = NumericProfile::new(bins(), 100, 1);
        whole.update_all(&values);
        let mut left = NumericProfile::new(bins(), 100, 1);
        let mut right = NumericProfile::new(bins(), 100, 2);
        left.update_all(&values[..split]);
        right.update_all(&values[split..]);
        left.merge(&right).expect("same bins");
        prop_assert_eq!(left.counts(), whole.counts());
        prop_assert_eq!(left.missing(), whole.missing());
        prop_assert_eq!(left.sample().seen(), whole.sample().seen());
        prop_assert_eq!(left.sample().values().len(), whole.sample().values().len());
    }

    #[test]
    fn binned_measures_are_in_range(a in prop::collection::vec(0u64..1000, 2..30), seed in 0u64..1000) {
        let b: Vec<u64> = a.iter().enumerate().map(|(i, &x)| (x * (seed % 7 + 1) + i as u64 * seed) % 997).collect();
        prop_assume!(a.iter().sum::<u64>() > 0 && b.iter().sum::<u64>() > 0);
        let p = psi(&a, &b).expect("non-empty");
        prop_assert!(p >= -1e-12 && p.is_finite());
        prop_assert!((p - psi(&b, &a).expect("non-empty")).abs() < 1e-9);
        let js = js_distance(&a, &b).expect("non-empty");
        prop_assert!((0.0..=1.0 + 1e-12).contains(&js));
        let c = chi_square_gof(&a, &b).expect("non-empty");
        prop_assert!(c.statistic >= 0.0 && (0.0..=1.0).contains(&c.p_value));
    }

    #[test]
    fn sample_measures_are_consistent(mut a in prop::collection::vec(-1e3f64..1e3, 1..300), mut b in prop::collection::vec(-1e3f64..1e3, 1..300), shift in -10f64..10.0) {
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let ks = ks_2samp(&a, &b).expect("non-empty");
        prop_assert!((0.0..=1.0).contains(&ks.statistic) && (0.0..=1.0).contains(&ks.p_value));
        prop_assert_eq!(ks_2samp(&a, &a).expect("non-empty").statistic, 0.0);
        let w = wasserstein_1(&a, &b).expect("non-empty");
        prop_assert!((w - wasserstein_1(&b, &a).expect("non-empty")).abs() <= 1e-9 * (1.0 + w));
        // Shifting a sample by s moves it exactly |s| in W1.
        let shifted: Vec<f64> = a.iter().map(|x| x + shift).collect();
        let ws = wasserstein_1(&a, &shifted).expect("non-empty");
        prop_assert!((ws - shift.abs()).abs() < 1e-6, "{} vs {}", ws, shift.abs());
    }
}

fn edges() -> impl Strategy<Value = Vec<f64>> {
    // many edges (the grid lookup), some crowded together (its bisection fallback)
    prop::collection::vec(
        prop_oneof![4 => -1e3f64..1e3, 1 => 0.0f64..1e-9, 1 => 1e6f64..1e6 + 1.0],
        1..200,
    )
    .prop_map(|mut e| {
        e.sort_by(f64::total_cmp);
        e.dedup();
        e
    })
}

proptest! {
    #[test]
    fn bin_lookup_and_histogram_equal_bisection(edges in edges(), values in prop::collection::vec(value(), 0..3000)) {
        let bins = NumericBins::from_edges(edges.clone()).expect("sorted, distinct, finite");
        let mut want = vec![0u64; bins.len()];
        for &v in &values {
            let bin = if v.is_nan() { 0 } else { edges.partition_point(|&e| e <= v) };
            prop_assert_eq!(bins.bin_of(v), bin, "value {}", v);
            want[bin] += 1;
        }
        let mut got = vec![0u64; bins.len()];
        bins.histogram(&values, &mut got).expect("lengths agree");
        prop_assert_eq!(got, want);
    }
}

/// KS statistic and W1 by definition: the CDFs evaluated at every point of both samples.
fn brute_force(a: &[f64], b: &[f64]) -> (f64, f64) {
    let cdf = |s: &[f64], x: f64| s.partition_point(|&v| v <= x) as f64 / s.len() as f64;
    let mut points: Vec<f64> = a.iter().chain(b).copied().collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    let d = points
        .iter()
        .map(|&x| (cdf(a, x) - cdf(b, x)).abs())
        .fold(0.0, f64::max);
    let w = points
        .windows(2)
        .map(|p| (cdf(a, p[0]) - cdf(b, p[0])).abs() * (p[1] - p[0]))
        .sum();
    (d, w)
}

proptest! {
    #[test]
    fn ks_and_wasserstein_walks_equal_the_definition(
        mut a in prop::collection::vec((-50i32..50).prop_map(|v| f64::from(v) / 4.0), 1..700),
        mut b in prop::collection::vec((-60i32..40).prop_map(|v| f64::from(v) / 4.0), 1..700),
    ) {
        // coarse values: many ties, within and across the samples (both walk paths: short
        // samples take the single walk, longer ones the two-lane split)
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let (d, w) = brute_force(&a, &b);
        let ks = ks_2samp(&a, &b).expect("non-empty");
        prop_assert!((ks.statistic - d).abs() < 1e-12, "{} vs {}", ks.statistic, d);
        let got = wasserstein_1(&a, &b).expect("non-empty");
        prop_assert!((got - w).abs() <= 1e-9 * (1.0 + w), "{} vs {}", got, w);
    }
}
