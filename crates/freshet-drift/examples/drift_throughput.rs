//! Throughput of numeric profile updates and per-window measure computation.
//!
//! Run: `cargo run --release -p freshet-drift --example drift_throughput`
//! Prints values/s for binning into a live window profile (10 and 20 quantile bins, with the
//! window reservoir), for the bins alone, for categorical updates, and the time to compute all
//! measures on a 1M-value window against a 100k-value reference.

use std::hint::black_box;
use std::time::Instant;

use freshet_drift::{
    Adwin, CategoricalConfig, CategoricalReference, NumericConfig, NumericReference, PageHinkley,
};

#[path = "../tests/common/mod.rs"]
mod common;
use common::SplitMix64;

fn normals(seed: u64, n: usize, mean: f64) -> Vec<f64> {
    let mut g = SplitMix64(seed);
    (0..n).map(|_| mean + g.normal()).collect()
}

fn rate(n: usize, secs: f64) -> String {
    format!("{:.1} M values/s", n as f64 / secs / 1e6)
}

fn main() -> Result<(), freshet_drift::DriftError> {
    const N: usize = 1_000_000;
    const ROUNDS: usize = 20;
    let reference_values = normals(1, 200_000, 0.0);
    let window_values = normals(2, N, 0.1);

    for bins in [10, 20] {
        let config = NumericConfig {
            bins,
            ..NumericConfig::default()
        };
        let reference = NumericReference::from_values(&reference_values, config, 7)?;
        let mut window = reference.new_window(1);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            window.clear();
            window.update_all(black_box(&window_values));
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "numeric update_all, {bins} bins + 20k reservoir: {}",
            rate(N * ROUNDS, secs)
        );

        let start = Instant::now();
        for _ in 0..ROUNDS {
            window.clear();
            for &v in black_box(&window_values) {
                window.update(v);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "numeric update per value, {bins} bins + 20k reservoir: {}",
            rate(N * ROUNDS, secs)
        );

        let b = reference.bins();
        let mut counts = vec![0u64; b.len()];
        let start = Instant::now();
        for _ in 0..ROUNDS {
            for &v in black_box(&window_values) {
                counts[b.bin_of(v)] += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        black_box(&counts);
        println!(
            "numeric binning only, {bins} bins: {}",
            rate(N * ROUNDS, secs)
        );

        let start = Instant::now();
        let drift = reference.compare(&window)?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "all numeric measures, 100k reference sample vs {}-value window (20k sample): {:.2} ms ({drift:?})",
            window.count(),
            secs * 1e3
        );
    }

    let countries = [
        "US", "GB", "DE", "FR", "IN", "BR", "JP", "CN", "NG", "MX", "CA", "AU",
    ];
    let mut g = SplitMix64(3);
    let cats: Vec<&str> = (0..N)
        .map(|_| countries[(g.next_u64() % countries.len() as u64) as usize])
        .collect();
    let reference =
        CategoricalReference::from_values(&cats[..100_000], CategoricalConfig::default())?;
    let mut window = reference.new_window();
    let start = Instant::now();
    for &c in black_box(&cats) {
        window.update(c);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("categorical update (12 categories): {}", rate(N, secs));
    let start = Instant::now();
    let psi = reference.psi(&window)?;
    let chi = reference.chi_square(&window)?;
    let js = reference.js_distance(&window)?;
    println!(
        "categorical measures: {:.1} us (psi {psi:.2e}, js {js:.2e}, chi2 p {:.3})",
        start.elapsed().as_secs_f64() * 1e6,
        chi.p_value
    );

    let mut adwin = Adwin::default();
    let start = Instant::now();
    for &v in &window_values {
        black_box(adwin.update(v));
    }
    println!("adwin update: {}", rate(N, start.elapsed().as_secs_f64()));
    let mut ph = PageHinkley::default();
    let start = Instant::now();
    for &v in &window_values {
        black_box(ph.update(v));
    }
    println!(
        "page-hinkley update: {}",
        rate(N, start.elapsed().as_secs_f64())
    );
    Ok(())
}
