//! Serving statistics per model: latency histograms (HDR) by version and endpoint, rows scored,
//! missing inputs, shadow comparisons; and their Prometheus exposition.
//!
//! Label values are bounded: `model` and `input` come from the pipeline, `endpoint` is
//! `predict`, `infer` or `kafka`, and `version` takes only the versions a model holds (at most
//! [`RECENT_VERSIONS`](super::RECENT_VERSIONS) plus the one its policy names): a version's
//! series goes away when the model stops holding it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use freshet_core::serving::ModelDescription;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::book::{ModelBook, ServedModel};
use crate::telemetry::escape_label;

/// Largest latency the histograms record, ns (60 s); longer requests count as 60 s.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Significant digits of the histograms: quantiles are within 1 %.
const SIGNIFICANT_DIGITS: u8 = 2;
/// The quantiles `/metrics` reports.
const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.99, "0.99"), (0.999, "0.999")];
/// Shadow comparisons kept for `GET /v1/models/{name}`.
pub(crate) const SHADOW_SAMPLES: usize = 32;

/// The model endpoints whose latency is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Endpoint {
    /// `POST /v1/models/{name}/predict`.
    Predict,
    /// `POST /v2/models/{name}[/versions/{v}]/infer`.
    Infer,
    /// A request read from a Kafka request topic (`[[serving]]`); its latency is the scoring
    /// of its batch, store lookups included.
    Kafka,
}

impl Endpoint {
    const ALL: [Self; 3] = [Self::Predict, Self::Infer, Self::Kafka];

    fn name(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::Infer => "infer",
            Self::Kafka => "kafka",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Predict => 0,
            Self::Infer => 1,
            Self::Kafka => 2,
        }
    }
}

/// Latencies with an exact sum (the histogram's own mean is rounded to its buckets).
#[derive(Clone)]
struct Latencies {
    histogram: Histogram<u64>,
    sum_ns: u128,
}

impl Latencies {
    fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| {
                unreachable!("the bounds and precision are constants that hdrhistogram accepts")
            });
        Self {
            histogram,
            sum_ns: 0,
        }
    }

    fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_NS);
        self.histogram.saturating_record(ns);
        self.sum_ns += u128::from(ns);
    }
}

#[derive(Default)]
struct LatencyBook {
    by_version: BTreeMap<(u64, Endpoint), Latencies>,
    all: [Option<Latencies>; 3],
}

/// One shadow comparison: the same row scored by the serving and the shadow version.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShadowSample {
    /// The entity, for `/v1` requests.
    pub(crate) entity: Option<String>,
    /// The version that answered.
    pub(crate) served_version: u64,
    /// Its scores.
    pub(crate) served: Vec<f32>,
    /// The shadow version.
    pub(crate) shadow_version: u64,
    /// Its scores.
    pub(crate) shadow: Vec<f32>,
}

#[derive(Default)]
struct ShadowState {
    rows: u64,
    errors: u64,
    abs_diff_sum: f64,
    recent: VecDeque<ShadowSample>,
}

/// What `GET /v1/models/{name}` shows of the shadow.
#[derive(Debug, Serialize)]
pub(crate) struct ShadowSummary {
    /// Rows scored in the shadow since start.
    pub(crate) rows: u64,
    /// Shadow scorings that failed.
    pub(crate) errors: u64,
    /// Mean absolute difference between shadow and served scores, over every row and output.
    pub(crate) mean_abs_diff: Option<f64>,
    /// The latest comparisons, oldest first.
    pub(crate) recent: Vec<ShadowSample>,
}

/// Serving statistics of one model.
pub(crate) struct ModelStats {
    latency: Mutex<LatencyBook>,
    rows: [AtomicU64; 3],
    /// Rows in which each input was missing, in input order.
    missing: Vec<AtomicU64>,
    shadow: Mutex<ShadowState>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModelStats {
    pub(crate) fn new(description: &ModelDescription) -> Self {
        Self {
            latency: Mutex::default(),
            rows: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            missing: description
                .inputs
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            shadow: Mutex::default(),
        }
    }

    /// Records one answered request.
    pub(crate) fn record_latency(&self, version: u64, endpoint: Endpoint, elapsed: Duration) {
        let mut book = lock(&self.latency);
        book.by_version
            .entry((version, endpoint))
            .or_insert_with(Latencies::new)
            .record(elapsed);
        book.all[endpoint.index()]
            .get_or_insert_with(Latencies::new)
            .record(elapsed);
    }

    /// Counts rows scored.
    pub(crate) fn add_rows(&self, endpoint: Endpoint, rows: usize) {
        self.rows[endpoint.index()].fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Counts a row in which input `index` was missing.
    pub(crate) fn add_missing(&self, index: usize) {
        if let Some(counter) = self.missing.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the latency series of versions no longer held.
    pub(crate) fn retain_versions(&self, held: impl Fn(u64) -> bool) {
        lock(&self.latency)
            .by_version
            .retain(|(version, _), _| held(*version));
    }

    /// Records a shadow scoring of `rows` rows whose scores differ from the served ones by
    /// `abs_diff_sum` in total, with one sample comparison.
    pub(crate) fn record_shadow(&self, rows: usize, abs_diff_sum: f64, sample: ShadowSample) {
        let mut shadow = lock(&self.shadow);
        shadow.rows += rows as u64;
        shadow.abs_diff_sum += abs_diff_sum;
        if shadow.recent.len() == SHADOW_SAMPLES {
            shadow.recent.pop_front();
        }
        shadow.recent.push_back(sample);
    }

    /// Counts a shadow scoring that failed.
    pub(crate) fn record_shadow_error(&self) {
        lock(&self.shadow).errors += 1;
    }

    /// The shadow comparisons so far.
    pub(crate) fn shadow_summary(&self, outputs: usize) -> ShadowSummary {
        let shadow = lock(&self.shadow);
        let values = shadow.rows as f64 * outputs as f64;
        ShadowSummary {
            rows: shadow.rows,
            errors: shadow.errors,
            mean_abs_diff: (values > 0.0).then(|| shadow.abs_diff_sum / values),
            recent: shadow.recent.iter().cloned().collect(),
        }
    }
}

/// Attached to a model endpoint's response so the latency middleware can record the whole
/// request's time under the model, version and endpoint.
#[derive(Clone)]
pub(crate) struct ModelTiming {
    pub(crate) model: Arc<ServedModel>,
    pub(crate) version: u64,
    pub(crate) endpoint: Endpoint,
}

impl ModelTiming {
    /// Records the request's latency.
    pub(crate) fn record(&self, elapsed: Duration) {
        self.model
            .stats
            .record_latency(self.version, self.endpoint, elapsed);
    }
}

// `write!` into a String cannot fail, so its results are ignored below.

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn summary(out: &mut String, name: &str, labels: &str, latencies: &Latencies) {
    for (q, text) in QUANTILES {
        let seconds = latencies.histogram.value_at_quantile(q) as f64 / 1e9;
        let _ = writeln!(out, "{name}{{{labels},quantile=\"{text}\"}} {seconds}");
    }
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        latencies.sum_ns as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "{name}_count{{{labels}}} {}",
        latencies.histogram.len()
    );
}

/// The `freshet_serve_*` families.
pub(crate) fn render(out: &mut String, book: &ModelBook) {
    const LATENCY: &str = "freshet_serve_latency_seconds";
    const MODEL_LATENCY: &str = "freshet_serve_model_latency_seconds";
    let models: Vec<&Arc<ServedModel>> = book.iter().collect();
    let snapshots: Vec<(String, LatencyBook)> = models
        .iter()
        .map(|m| {
            let latency = lock(&m.stats.latency);
            let copy = LatencyBook {
                by_version: latency.by_version.clone(),
                all: latency.all.clone(),
            };
            (escape_label(m.name()), copy)
        })
        .collect();

    family(
        out,
        LATENCY,
        "summary",
        "Model request latency by model, held version and endpoint, seconds (HDR histogram quantiles).",
    );
    for (model, latency) in &snapshots {
        for ((version, endpoint), l) in &latency.by_version {
            let labels = format!(
                "model=\"{model}\",version=\"{version}\",endpoint=\"{}\"",
                endpoint.name()
            );
            summary(out, LATENCY, &labels, l);
        }
    }
    family(
        out,
        MODEL_LATENCY,
        "summary",
        "Model request latency by model and endpoint over every version since start, seconds (HDR histogram quantiles).",
    );
    for (model, latency) in &snapshots {
        for endpoint in Endpoint::ALL {
            if let Some(l) = &latency.all[endpoint.index()] {
                let labels = format!("model=\"{model}\",endpoint=\"{}\"", endpoint.name());
                summary(out, MODEL_LATENCY, &labels, l);
            }
        }
    }

    family(
        out,
        "freshet_serve_rows_total",
        "counter",
        "Rows scored, by model and endpoint.",
    );
    for m in &models {
        for endpoint in Endpoint::ALL {
            let _ = writeln!(
                out,
                "freshet_serve_rows_total{{model=\"{}\",endpoint=\"{}\"}} {}",
                escape_label(m.name()),
                endpoint.name(),
                m.stats.rows[endpoint.index()].load(Ordering::Relaxed)
            );
        }
    }
    family(
        out,
        "freshet_serve_missing_inputs_total",
        "counter",
        "Rows scored through /v1 predict in which the input was missing (null feature, unknown entity, absent field).",
    );
    for m in &models {
        for (input, count) in m.description.inputs.iter().zip(&m.stats.missing) {
            let _ = writeln!(
                out,
                "freshet_serve_missing_inputs_total{{model=\"{}\",input=\"{}\"}} {}",
                escape_label(m.name()),
                escape_label(&input.name),
                count.load(Ordering::Relaxed)
            );
        }
    }

    let routings: Vec<_> = models.iter().map(|m| (m, m.routing())).collect();
    family(
        out,
        "freshet_serve_model_version",
        "gauge",
        "The latest published version of the model; -1 before the first.",
    );
    for (m, routing) in &routings {
        let latest = routing
            .latest_version()
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or(-1);
        let _ = writeln!(
            out,
            "freshet_serve_model_version{{model=\"{}\"}} {latest}",
            escape_label(m.name())
        );
    }
    family(
        out,
        "freshet_serve_versions_held",
        "gauge",
        "Versions the model holds for pinning, canaries, shadows and versioned requests.",
    );
    for (m, routing) in &routings {
        let _ = writeln!(
            out,
            "freshet_serve_versions_held{{model=\"{}\"}} {}",
            escape_label(m.name()),
            routing.held().len()
        );
    }
    family(
        out,
        "freshet_serve_traffic_policy",
        "gauge",
        "1 for the model's current traffic policy; `version` is the version it names (empty for latest).",
    );
    for (m, routing) in &routings {
        let version = routing
            .policy
            .version()
            .map_or_else(String::new, |v| v.to_string());
        let _ = writeln!(
            out,
            "freshet_serve_traffic_policy{{model=\"{}\",policy=\"{}\",version=\"{version}\"}} 1",
            escape_label(m.name()),
            routing.policy.name()
        );
    }

    let shadows: Vec<_> = models
        .iter()
        .map(|m| {
            let s = lock(&m.stats.shadow);
            (escape_label(m.name()), s.rows, s.errors, s.abs_diff_sum)
        })
        .collect();
    family(
        out,
        "freshet_serve_shadow_rows_total",
        "counter",
        "Rows scored by a shadow version (never returned).",
    );
    for (model, rows, _, _) in &shadows {
        let _ = writeln!(
            out,
            "freshet_serve_shadow_rows_total{{model=\"{model}\"}} {rows}"
        );
    }
    family(
        out,
        "freshet_serve_shadow_errors_total",
        "counter",
        "Shadow scorings that failed (the request was answered all the same).",
    );
    for (model, _, errors, _) in &shadows {
        let _ = writeln!(
            out,
            "freshet_serve_shadow_errors_total{{model=\"{model}\"}} {errors}"
        );
    }
    family(
        out,
        "freshet_serve_shadow_abs_diff_sum",
        "counter",
        "Sum over shadow-scored rows and outputs of |shadow score - served score|; divide by the rows (times outputs) for the mean.",
    );
    for (model, _, _, sum) in &shadows {
        let _ = writeln!(
            out,
            "freshet_serve_shadow_abs_diff_sum{{model=\"{model}\"}} {sum}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_recorded_latencies() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let p50 = l.histogram.value_at_quantile(0.5) as f64 / 1e3;
        let p99 = l.histogram.value_at_quantile(0.99) as f64 / 1e3;
        assert!((495.0..=505.0).contains(&p50), "p50 {p50} us");
        assert!((985.0..=1000.0).contains(&p99), "p99 {p99} us");
        let mut out = String::new();
        summary(&mut out, "x", "model=\"m\"", &l);
        assert!(
            out.contains("x{model=\"m\",quantile=\"0.999\"} 0.000999"),
            "{out}"
        );
        assert!(out.contains("x_count{model=\"m\"} 1000\n"), "{out}");
        assert!(out.contains("x_sum{model=\"m\"} 0.5005\n"), "{out}");
    }

    #[test]
    fn latencies_beyond_the_range_are_clamped() {
        let mut l = Latencies::new();
        l.record(Duration::from_secs(3600));
        l.record(Duration::ZERO);
        assert_eq!(l.histogram.len(), 2);
        assert!(l.histogram.max() >= MAX_LATENCY_NS / 2);
    }
}
