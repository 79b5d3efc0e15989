//! ADWIN and Page-Hinkley on seeded Gaussian streams.

use freshet_drift::{Adwin, AdwinConfig, PageHinkley, PageHinkleyConfig};

mod common;
use common::SplitMix64;

// Expected detection indices come from River 0.26.1 on the same streams
// (tests/river_detectors.py prints them):
//   adwin seed 1: [500223]    adwin seed 2: [500287]    adwin seed 3: [500511]
//   ph sd0.1 seed 1: [10175]  ph sd0.1 seed 2: [10199]  ph sd0.1 seed 3: [10210]
//   adwin piecewise seed 11: [50079, 100063, 150079]
//   ph N(0,1) seed 1: [1004, 2083, 2362, 4860, 5791, 6461, 7484, 8555, 9651, 13699, 14863,
//                      15759, 17308]

/// `sd`·N(0, 1) + (`shift` from index `shift_at` on), `n` values.
fn stream(seed: u64, n: usize, shift_at: usize, shift: f64, sd: f64) -> Vec<f64> {
    let mut g = SplitMix64(seed);
    (0..n)
        .map(|i| sd * g.normal() + if i >= shift_at { shift } else { 0.0 })
        .collect()
}

fn detections(mut update: impl FnMut(f64) -> bool, xs: &[f64]) -> Vec<usize> {
    xs.iter()
        .enumerate()
        .filter_map(|(i, &x)| update(x).then_some(i))
        .collect()
}

#[test]
fn adwin_matches_river_on_a_mean_shift_at_500k() {
    // No alarm on the first 500k values of N(0, 1), then the 0 -> 0.25 shift is found within
    // a few hundred values, at exactly the index River's ADWIN reports.
    for (seed, river) in [(1, 500_223), (2, 500_287), (3, 500_511)] {
        let xs = stream(seed, 520_000, 500_000, 0.25, 1.0);
        let mut adwin = Adwin::default();
        assert_eq!(
            detections(|x| adwin.update(x), &xs),
            vec![river],
            "seed {seed}"
        );
        // River restarts from an empty window after a detection.
        assert!(
            adwin.width() < 20_000,
            "seed {seed}: width {}",
            adwin.width()
        );
    }
}

#[test]
fn adwin_matches_river_on_piecewise_means() {
    // Means 0, 0.5, -0.5, 0.2 for 50k values each.
    let mut g = SplitMix64(11);
    let means = [0.0, 0.5, -0.5, 0.2];
    let xs: Vec<f64> = (0..200_000)
        .map(|i| g.normal() + means[i / 50_000])
        .collect();
    let mut adwin = Adwin::default();
    assert_eq!(
        detections(|x| adwin.update(x), &xs),
        vec![50_079, 100_063, 150_079]
    );
    assert_eq!(adwin.detections(), 3);
}

#[test]
fn adwin_memory_is_logarithmic() {
    let mut adwin = Adwin::default();
    let mut g = SplitMix64(9);
    for _ in 0..1_000_000 {
        adwin.update(g.normal());
    }
    // 5 buckets per row, ~log2(1e6 / 5) rows.
    assert!(
        adwin.bucket_count() <= 6 * 20,
        "buckets {}",
        adwin.bucket_count()
    );
    assert!(adwin.estimation().abs() < 0.01);
    assert!((adwin.variance() - 1.0).abs() < 0.01);
}

#[test]
fn page_hinkley_matches_river_on_a_mean_shift() {
    for (seed, river) in [(1, 10_175), (2, 10_199), (3, 10_210)] {
        let xs = stream(seed, 20_000, 10_000, 0.25, 0.1);
        let mut ph = PageHinkley::default();
        assert_eq!(
            detections(|x| ph.update(x), &xs),
            vec![river],
            "seed {seed}"
        );
    }
}

#[test]
fn page_hinkley_matches_river_on_unit_variance_noise() {
    // River's defaults (δ = 0.005, λ = 50) are tuned for low-variance signals such as error
    // rates: on N(0, 1) noise the reflected random walk exceeds 50 regularly, and River agrees.
    let xs = stream(1, 20_000, usize::MAX, 0.0, 1.0);
    let mut ph = PageHinkley::default();
    assert_eq!(
        detections(|x| ph.update(x), &xs),
        vec![1004, 2083, 2362, 4860, 5791, 6461, 7484, 8555, 9651, 13699, 14863, 15759, 17308]
    );
}

#[test]
fn page_hinkley_resets_after_a_detection() {
    let mut ph = PageHinkley::default();
    for _ in 0..100 {
        ph.update(0.0);
    }
    assert!((0..1_000).any(|_| ph.update(10.0)));
    ph.update(10.0);
    assert_eq!(ph.n(), 1);
}

#[test]
fn adwin_with_one_bucket_per_row_survives_changes() {
    let mut adwin = Adwin::new(0.002, 1, 1, 5, 10);
    let mut g = SplitMix64(4);
    let xs: Vec<f64> = (0..20_000)
        .map(|i| g.normal() + if (i / 2_000) % 2 == 0 { 0.0 } else { 3.0 })
        .collect();
    assert!(!detections(|x| adwin.update(x), &xs).is_empty());
}

#[test]
fn adwin_reports_the_estimated_mean_change() {
    let xs = stream(1, 520_000, 500_000, 0.25, 1.0);
    let mut adwin = AdwinConfig::default().build();
    assert_eq!(adwin.mean_change(), 0.0);
    let at = detections(|x| adwin.update(x), &xs);
    assert_eq!(at, vec![500_223]);
    // the newer part holds the shifted values: its mean is higher by roughly the shift
    let change = adwin.mean_change();
    assert!(change > 0.1 && change < 1.0, "change {change}");
    // a shift down reads negative
    let down: Vec<f64> = xs.iter().map(|x| -x).collect();
    let mut adwin = Adwin::default();
    assert_eq!(detections(|x| adwin.update(x), &down), vec![500_223]);
    assert!(adwin.mean_change() < -0.1);
}

#[test]
fn page_hinkley_statistic_has_the_direction_of_the_change() {
    let up = stream(1, 20_000, 10_000, 0.25, 0.1);
    let down: Vec<f64> = up.iter().map(|x| -x).collect();
    for (xs, sign) in [(up, 1.0), (down, -1.0)] {
        let mut ph = PageHinkleyConfig::default().build();
        let mut at_detection = Vec::new();
        for (i, &x) in xs.iter().enumerate() {
            if ph.update(x) {
                at_detection.push((i, ph.statistic()));
            }
        }
        assert_eq!(at_detection.len(), 1, "{at_detection:?}");
        let (i, statistic) = at_detection[0];
        assert_eq!(i, 10_175);
        assert!(sign * statistic > ph.threshold(), "{statistic}");
    }
}

#[test]
fn detector_configs_are_validated() {
    assert!(AdwinConfig::default().validate().is_ok());
    assert!(AdwinConfig {
        delta: 1.5,
        ..AdwinConfig::default()
    }
    .validate()
    .is_err());
    assert!(PageHinkleyConfig::default().validate().is_ok());
    assert!(PageHinkleyConfig {
        threshold: 0.0,
        ..PageHinkleyConfig::default()
    }
    .validate()
    .is_err());
}
