//! freshet-drift on the shared drift workload, measured the way the peer scripts measure River
//! and scipy (`../shared/peers/drift_river.py`, `drift_windows.py`), so the figures sit side by
//! side; `scripts/bench-drift.sh` runs it with the peers and prints the table.
//!
//! Run: `cargo run --release -p freshet-drift --example drift_bench -- --data /tmp/wl-drift`
//! (`gen.py drift --rows 1000000 --out /tmp/wl-drift`). Prints ONE JSON line:
//!
//! - `detectors`: ADWIN and Page-Hinkley with River's defaults, one `update` per value of the
//!   `value` column in row order; values/s (median of `--repeat` runs), false alarms before
//!   `--drift-at`, detection delay (first alarm at or after it, minus it) and alarms after it.
//! - `profiles`: in-memory profile updates over the whole column (values/s, median of runs):
//!   numeric window profile (10 quantile bins + 20k-value reservoir) fed a slice at a time and
//!   one value at a time, bins alone ([`NumericBins::histogram`]), and categorical counts.
//! - `windows`: reference = rows [0, `--ref`), windows = consecutive blocks of `--win` rows from
//!   row `--ref` on, as in `drift_windows.py`. Each test is timed per window from the raw window
//!   values (bucketing or sorting included), setup of the reference apart; values/s = window
//!   rows × columns / compute seconds of the median run. `checks` gives false-alarm windows
//!   among those ending at or before `--drift-at` and the detection delay (the first alarming
//!   window's end minus `--drift-at`).
//! - with `--rss-values N`: streams N synthetic values per feature (one numeric, one
//!   categorical) through windows, a fixed reference, ADWIN and Page-Hinkley, and reports the
//!   process's resident set size (`VmRSS`, `VmHWM` from /proc/self/status) after every tenth.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use freshet_drift::measures::{chi_square_2samp, chi_square_gof, js_distance, psi};
use freshet_drift::{
    Adwin, CategoricalConfig, CategoricalReference, NumericConfig, NumericReference, PageHinkley,
};
use serde_json::{json, Value};

#[path = "../tests/common/mod.rs"]
mod common;
use common::SplitMix64;

struct Args {
    data: String,
    rows: Option<usize>,
    reference: usize,
    window: usize,
    drift_at: usize,
    repeat: usize,
    rss_values: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data: "/tmp/wl-drift".into(),
        rows: None,
        reference: 100_000,
        window: 10_000,
        drift_at: 500_000,
        repeat: 3,
        rss_values: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--data" => args.data = value()?,
            "--rows" => args.rows = Some(number(value()?)?),
            "--ref" => args.reference = number(value()?)?,
            "--win" => args.window = number(value()?)?,
            "--drift-at" => args.drift_at = number(value()?)?,
            "--repeat" => args.repeat = number(value()?)?.max(1),
            "--rss-values" => args.rss_values = Some(number(value()?)? as u64),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// drift.csv's `value` and `category` columns.
fn load(path: &str, rows: Option<usize>) -> Result<(Vec<f64>, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut values = Vec::new();
    let mut categories = Vec::new();
    for (i, line) in text.lines().skip(1).enumerate() {
        if rows.is_some_and(|n| i >= n) {
            break;
        }
        let mut fields = line.split(',');
        let (Some(v), Some(c)) = (fields.next(), fields.next()) else {
            return Err(format!("{path}:{}: expected value,category,segment", i + 2));
        };
        values.push(
            v.parse::<f64>()
                .map_err(|e| format!("{path}:{}: {e}", i + 2))?,
        );
        categories.push(c.to_owned());
    }
    Ok((values, categories))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn detector(
    name: &str,
    params: &str,
    values: &[f64],
    drift_at: usize,
    repeat: usize,
    mut make: impl FnMut() -> Box<dyn FnMut(f64) -> bool>,
) -> (String, Value) {
    let mut rates = Vec::new();
    let mut alarms = Vec::new();
    for _ in 0..repeat {
        let mut update = make();
        let mut found = Vec::new();
        let start = Instant::now();
        for (i, &v) in values.iter().enumerate() {
            if update(v) {
                found.push(i);
            }
        }
        rates.push(values.len() as f64 / start.elapsed().as_secs_f64());
        alarms = found;
    }
    let before = alarms.iter().filter(|&&i| i < drift_at).count();
    let after: Vec<usize> = alarms.iter().copied().filter(|&i| i >= drift_at).collect();
    let runs: Vec<f64> = rates.iter().map(|r| round(*r, 1)).collect();
    (
        name.to_owned(),
        json!({
            "params": params,
            "values_per_s": round(median(&mut rates), 1),
            "values_per_s_runs": runs,
            "false_alarms": before,
            "first_false_alarm": alarms.first().filter(|&&i| i < drift_at),
            "detection_delay": after.first().map(|i| i - drift_at),
            "alarms_after_drift": after.len(),
        }),
    )
}

fn rate<F: FnMut()>(n: usize, repeat: usize, mut f: F) -> Value {
    let mut rates = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        f();
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    json!({
        "values_per_s": round(median(&mut rates), 1),
        "values_per_s_runs": rates.iter().map(|r| round(*r, 1)).collect::<Vec<_>>(),
    })
}

/// Scores of one window by check name.
type Scores = BTreeMap<&'static str, f64>;

/// A categorical test on reference and window profiles.
type CategoricalScore = fn(&CategoricalReference, &freshet_drift::CategoricalProfile) -> Scores;

/// An alarm rule: `("p<", t)` for p-values, `(">=", t)` for distances.
type Rule = (&'static str, &'static str, f64);

/// One window test: columns it reads, and per window the scores by check name.
struct Unit {
    name: &'static str,
    columns: &'static [&'static str],
    setup_s: f64,
    score: Box<dyn FnMut(usize) -> BTreeMap<&'static str, f64>>,
    rules: &'static [Rule],
}

fn run_unit(mut unit: Unit, windows: usize, win: usize, starts: &[usize], args: &Args) -> Value {
    let mut runs: Vec<(f64, Vec<f64>, Vec<Scores>)> = Vec::new();
    for _ in 0..args.repeat {
        let mut times = Vec::with_capacity(windows);
        let mut scores = Vec::with_capacity(windows);
        for w in 0..windows {
            let start = Instant::now();
            let s = (unit.score)(w);
            times.push(start.elapsed().as_secs_f64());
            scores.push(black_box(s));
        }
        runs.push((times.iter().sum(), times, scores));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (total, mut times, scores) = runs.swap_remove((runs.len() - 1) / 2);
    let mut checks = serde_json::Map::new();
    for &(check, op, threshold) in unit.rules {
        let key = check.split('@').next().unwrap_or(check);
        let values: Vec<f64> = scores
            .iter()
            .map(|s| s.get(key).copied().unwrap_or(f64::NAN))
            .collect();
        let alarm: Vec<bool> = values
            .iter()
            .map(|&v| {
                if op == "p<" {
                    v < threshold
                } else {
                    v >= threshold
                }
            })
            .collect();
        let pre: Vec<bool> = starts
            .iter()
            .zip(&alarm)
            .filter(|(s, _)| **s + win <= args.drift_at)
            .map(|(_, a)| *a)
            .collect();
        let post: Vec<usize> = starts
            .iter()
            .zip(&alarm)
            .filter(|(s, a)| **s >= args.drift_at && **a)
            .map(|(s, _)| *s)
            .collect();
        let post_total = starts.iter().filter(|s| **s >= args.drift_at).count();
        let pre_max = starts
            .iter()
            .zip(&values)
            .filter(|(s, _)| **s + win <= args.drift_at)
            .map(|(_, v)| *v)
            .fold(f64::NEG_INFINITY, f64::max);
        let first_post = starts
            .iter()
            .position(|s| *s == args.drift_at)
            .map(|i| values[i]);
        checks.insert(
            check.to_owned(),
            json!({
                "rule": format!("{}{}{threshold}", if op == "p<" { "p" } else { "score" }, if op == "p<" { "<" } else { ">=" }),
                "false_alarm_windows": format!("{}/{}", pre.iter().filter(|a| **a).count(), pre.len()),
                "first_alarm_window_start": post.first(),
                "detection_delay_rows": post.first().map(|s| s + win - args.drift_at),
                "post_alarm_windows": format!("{}/{post_total}", post.len()),
                "score_pre_max": pre_max,
                "score_first_post": first_post,
            }),
        );
    }
    json!({
        "columns": unit.columns,
        "setup_s": round(unit.setup_s, 4),
        "window_s_median": median(&mut times),
        "values_per_s": round((win * unit.columns.len() * windows) as f64 / total, 1),
        "total_s": total,
        "checks": checks,
    })
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn window_units(
    values: &[f64],
    categories: &[String],
    args: &Args,
) -> Result<Vec<Unit>, freshet_drift::DriftError> {
    let (r, w) = (args.reference, args.window);
    let reference_values = &values[..r];
    let config = NumericConfig {
        reference_sample: r.max(1),
        ..NumericConfig::default()
    };
    let mut units = Vec::new();
    let windows_of = |data: &[f64]| -> Vec<Vec<f64>> {
        (r..data.len().saturating_sub(w) + 1)
            .step_by(w)
            .map(|s| data[s..s + w].to_vec())
            .collect()
    };
    let value_windows = std::sync::Arc::new(windows_of(values));
    let category_windows: std::sync::Arc<Vec<Vec<&'static str>>> = {
        // leaked once per run so the closures can hold the slices ('static like pandas' objects)
        let owned: &'static [String] = Box::leak(categories.to_vec().into_boxed_slice());
        std::sync::Arc::new(
            (r..owned.len().saturating_sub(w) + 1)
                .step_by(w)
                .map(|s| owned[s..s + w].iter().map(String::as_str).collect())
                .collect(),
        )
    };

    let (reference, setup_s) = timed(|| NumericReference::from_values(reference_values, config, 7));
    let reference = std::sync::Arc::new(reference?);

    {
        let (reference, windows) = (reference.clone(), value_windows.clone());
        units.push(Unit {
            name: "ks_2samp(value)",
            columns: &["value"],
            setup_s,
            score: Box::new(move |i| {
                let mut sorted = windows[i].clone();
                freshet_drift::measures::sort_floats(&mut sorted);
                let p = reference.ks_sorted(&sorted).map_or(f64::NAN, |t| t.p_value);
                BTreeMap::from([("p", p)])
            }),
            rules: &[("p", "p<", 0.01)],
        });
    }
    {
        let (reference, windows) = (reference.clone(), value_windows.clone());
        units.push(Unit {
            name: "psi_q10(value)",
            columns: &["value"],
            setup_s,
            score: Box::new(move |i| {
                let mut counts = vec![0u64; reference.bins().len()];
                let v = reference
                    .bins()
                    .histogram(&windows[i], &mut counts)
                    .and_then(|()| psi(reference.counts(), &counts))
                    .unwrap_or(f64::NAN);
                BTreeMap::from([("psi", v)])
            }),
            rules: &[("psi", ">=", 0.1), ("psi@0.2", ">=", 0.2)],
        });
    }
    {
        let (reference, windows) = (reference.clone(), value_windows.clone());
        units.push(Unit {
            name: "jensen_shannon_q10(value)",
            columns: &["value"],
            setup_s,
            score: Box::new(move |i| {
                let mut counts = vec![0u64; reference.bins().len()];
                let v = reference
                    .bins()
                    .histogram(&windows[i], &mut counts)
                    .and_then(|()| js_distance(reference.counts(), &counts))
                    .unwrap_or(f64::NAN);
                BTreeMap::from([("js", v)])
            }),
            rules: &[("js", ">=", 0.1)],
        });
    }
    {
        let (reference, windows) = (reference.clone(), value_windows.clone());
        units.push(Unit {
            name: "wasserstein_normed(value)",
            columns: &["value"],
            setup_s,
            score: Box::new(move |i| {
                let mut sorted = windows[i].clone();
                freshet_drift::measures::sort_floats(&mut sorted);
                let v = reference
                    .wasserstein_normed_sorted(&sorted)
                    .unwrap_or(f64::NAN);
                BTreeMap::from([("w", v)])
            }),
            rules: &[("w", ">=", 0.1)],
        });
    }
    {
        // the pipeline's path: a window profile (bins + reservoir) fed the window, then every
        // numeric measure at once
        let (reference, windows) = (reference.clone(), value_windows.clone());
        let mut seed = 0u64;
        units.push(Unit {
            name: "pipeline_profile_all4(value)",
            columns: &["value"],
            setup_s,
            score: Box::new(move |i| {
                seed += 1;
                let mut profile = reference.new_window(seed);
                profile.update_all(&windows[i]);
                match reference.compare(&profile) {
                    Ok(d) => BTreeMap::from([
                        ("ks_p", d.ks.p_value),
                        ("psi", d.psi),
                        ("js", d.jensen_shannon),
                        ("w", d.wasserstein),
                    ]),
                    Err(_) => BTreeMap::new(),
                }
            }),
            rules: &[
                ("ks_p", "p<", 0.01),
                ("psi", ">=", 0.1),
                ("js", ">=", 0.1),
                ("w", ">=", 0.1),
            ],
        });
    }

    let (creference, csetup) =
        timed(|| CategoricalReference::from_values(&categories[..r], CategoricalConfig::default()));
    let creference = std::sync::Arc::new(creference?);
    let categorical: [(&'static str, &'static [Rule], CategoricalScore); 3] = [
        ("chi_square_gof(category)", &[("p", "p<", 0.01)], |r, p| {
            BTreeMap::from([(
                "p",
                chi_square_gof(r.counts(), p.counts()).map_or(f64::NAN, |t| t.p_value),
            )])
        }),
        (
            "chi_square_2samp(category)",
            &[("p", "p<", 0.01)],
            |r, p| {
                BTreeMap::from([(
                    "p",
                    chi_square_2samp(r.counts(), p.counts()).map_or(f64::NAN, |t| t.p_value),
                )])
            },
        ),
        (
            "psi(category)",
            &[("psi", ">=", 0.1), ("psi@0.2", ">=", 0.2)],
            |r, p| BTreeMap::from([("psi", psi(r.counts(), p.counts()).unwrap_or(f64::NAN))]),
        ),
    ];
    for (name, rules, measure) in categorical {
        let (reference, windows) = (creference.clone(), category_windows.clone());
        units.push(Unit {
            name,
            columns: &["category"],
            setup_s: csetup,
            score: Box::new(move |i| {
                let mut profile = reference.new_window();
                profile.update_all(&windows[i]);
                measure(&reference, &profile)
            }),
            rules,
        });
    }
    Ok(units)
}

/// `VmRSS` and `VmHWM` of this process, in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| round(kb / 1024.0, 1))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Streams `n` values per feature through monitors the shape the pipeline keeps (module doc).
fn rss_run(n: u64, window: u64) -> Result<Value, freshet_drift::DriftError> {
    let countries = ["US", "GB", "DE", "FR", "IN", "BR", "NG", "JP", "CA", "MX"];
    let mut g = SplitMix64(0x1234_5678);
    let reference_values: Vec<f64> = (0..100_000).map(|_| g.normal()).collect();
    let reference = NumericReference::from_values(&reference_values, NumericConfig::default(), 1)?;
    drop(reference_values);
    let creference = CategoricalReference::from_values(&countries, CategoricalConfig::default())?;
    let mut profile = reference.new_window(0);
    let mut cprofile = creference.new_window();
    let mut adwin = Adwin::default();
    let mut ph = PageHinkley::default();
    let (mut windows, mut detections) = (0u64, 0u64);
    let mut samples = Vec::new();
    let (base_rss, _) = rss_mb();
    let start = Instant::now();
    for i in 0..n {
        let v = g.normal() + if i >= n / 2 { 0.25 } else { 0.0 };
        profile.update(v);
        cprofile.update(countries[(g.next_u64() % 10) as usize]);
        detections += u64::from(adwin.update(v)) + u64::from(ph.update(v));
        if (i + 1) % window == 0 {
            black_box(reference.compare(&profile)?);
            black_box(creference.chi_square(&cprofile)?);
            profile.clear();
            cprofile.clear();
            windows += 1;
        }
        if (i + 1) % (n / 10).max(1) == 0 {
            let (rss, hwm) = rss_mb();
            samples.push(json!({"values": i + 1, "rss_mb": rss, "hwm_mb": hwm}));
        }
    }
    Ok(json!({
        "values_per_feature": n,
        "window_values": window,
        "windows": windows,
        "detections": detections,
        "seconds": round(start.elapsed().as_secs_f64(), 3),
        "rss_mb_before": base_rss,
        "adwin_buckets": adwin.bucket_count(),
        "samples": samples,
    }))
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    if let Some(n) = args.rss_values {
        let out = rss_run(n, args.window as u64).map_err(|e| e.to_string())?;
        println!(
            "{}",
            json!({"system": "freshet-drift", "task": "rss", "rss": out})
        );
        return Ok(());
    }
    let (values, categories) = load(&format!("{}/drift.csv", args.data), args.rows)?;
    if values.len() < args.reference + args.window {
        return Err(format!("{} rows: fewer than --ref + --win", values.len()));
    }
    let mut detectors = serde_json::Map::new();
    for (name, value) in [
        detector(
            "ADWIN",
            "delta=0.002 clock=32 max_buckets=5 min_window_length=5 grace_period=10",
            &values,
            args.drift_at,
            args.repeat,
            || {
                let mut d = Adwin::default();
                Box::new(move |v| d.update(v))
            },
        ),
        detector(
            "PageHinkley",
            "min_instances=30 delta=0.005 threshold=50 alpha=0.9999 mode=both",
            &values,
            args.drift_at,
            args.repeat,
            || {
                let mut d = PageHinkley::default();
                Box::new(move |v| d.update(v))
            },
        ),
    ] {
        detectors.insert(name, value);
    }

    let reference =
        NumericReference::from_values(&values[..args.reference], NumericConfig::default(), 7)
            .map_err(|e| e.to_string())?;
    let creference = CategoricalReference::from_values(
        &categories[..args.reference],
        CategoricalConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    let mut profiles = serde_json::Map::new();
    let mut window = reference.new_window(1);
    profiles.insert(
        "numeric_update_all(10 bins + 20k reservoir)".into(),
        rate(values.len(), args.repeat, || {
            window.clear();
            window.update_all(black_box(&values));
        }),
    );
    profiles.insert(
        "numeric_update_per_value(10 bins + 20k reservoir)".into(),
        rate(values.len(), args.repeat, || {
            window.clear();
            for &v in black_box(&values) {
                window.update(v);
            }
        }),
    );
    let mut counts = vec![0u64; reference.bins().len()];
    profiles.insert(
        "numeric_histogram(10 bins)".into(),
        rate(values.len(), args.repeat, || {
            counts.iter_mut().for_each(|c| *c = 0);
            let _ = reference.bins().histogram(black_box(&values), &mut counts);
        }),
    );
    let mut cwindow = creference.new_window();
    profiles.insert(
        "categorical_update(top-20 + other)".into(),
        rate(categories.len(), args.repeat, || {
            cwindow.clear();
            cwindow.update_all(black_box(&categories));
        }),
    );

    let starts: Vec<usize> = (args.reference..values.len().saturating_sub(args.window) + 1)
        .step_by(args.window)
        .collect();
    let mut tests = serde_json::Map::new();
    for unit in window_units(&values, &categories, &args).map_err(|e| e.to_string())? {
        let name = unit.name;
        tests.insert(
            name.to_owned(),
            run_unit(unit, starts.len(), args.window, &starts, &args),
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{}",
        json!({
            "system": "freshet-drift",
            "version": env!("CARGO_PKG_VERSION"),
            "rows": values.len(),
            "drift_at": args.drift_at,
            "reference_rows": args.reference,
            "window_rows": args.window,
            "windows": starts.len(),
            "detectors": detectors,
            "profiles": profiles,
            "tests": tests,
            "machine": format!("{} cpu, load1={} at end", std::thread::available_parallelism().map_or(0, |n| n.get()), load.split_whitespace().next().unwrap_or("?")),
        })
    );
    Ok(())
}
