//! `GET /metrics` in the Prometheus text format, and the middleware that times every request.
//!
//! Label values are bounded: `route` is the matched route template (or `unmatched`), `status`
//! the status class (`2xx`..`5xx`), `view` a registered view name, `monitor`, `feature` and
//! `measure` come from the pipeline's `[[drift]]` monitors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use freshet_core::metrics::{
    KafkaServingStats, LabelJoinMetrics, LearnerMetrics, LearnerWindow, PipelineMetrics,
};

use crate::models::ModelTiming;
use crate::state::AppState;

/// Upper bounds (seconds) of the `freshet_http_request_duration_seconds` buckets; `+Inf` is
/// implied.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The `route` label of requests no route matched, so unknown paths cannot grow the label set.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The Prometheus text exposition format, version 0.0.4.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last slot is `+Inf`.
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let slot = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[slot] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// Request latency histograms by route template and status class.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    // A mutex held for one map update per request; at the request rates one process serves this
    // costs less than per-series atomics would save.
    histograms: Mutex<BTreeMap<(String, &'static str), Histogram>>,
}

impl HttpMetrics {
    pub(crate) fn observe(&self, route: &str, status: StatusCode, elapsed: Duration) {
        let class = status_class(status);
        let mut histograms = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match histograms.get_mut(&(route.to_owned(), class)) {
            Some(h) => h.observe(elapsed.as_secs_f64()),
            None => {
                let mut h = Histogram::default();
                h.observe(elapsed.as_secs_f64());
                histograms.insert((route.to_owned(), class), h);
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, &'static str), Histogram> {
        self.histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Middleware: records each request's latency under its route template and status class.
pub(crate) async fn record_latency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let start = Instant::now();
    let mut response = next.run(request).await;
    let elapsed = start.elapsed();
    if let Some(timing) = response.extensions_mut().remove::<ModelTiming>() {
        timing.record(elapsed);
    }
    state.http.observe(&route, response.status(), elapsed);
    response
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    render_pipeline(&mut out, &state.pipeline, now_ms());
    render_store(&mut out, &state);
    if let Some(board) = &state.drift {
        render_drift(&mut out, board);
    }
    render_http(&mut out, &state.http.snapshot());
    if let Some(book) = &state.models {
        crate::models::render_metrics(&mut out, book);
    }
    if let Some(learners) = &state.learners {
        render_learners(&mut out, &learners.snapshot());
    }
    if let Some(serving) = &state.kafka_serving {
        render_kafka_serving(&mut out, &serving.snapshot());
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)],
        out,
    )
        .into_response()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// `write!` into a String cannot fail, so its results are ignored below.

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", PipelineMetrics::get(value));
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn load(gauge: &AtomicI64) -> i64 {
    gauge.load(std::sync::atomic::Ordering::Relaxed)
}

/// Store writes, checkpoints, offset commits and consumer lag (live runs).
fn render_delivery(out: &mut String, m: &PipelineMetrics) {
    let secs = |us: &AtomicU64| PipelineMetrics::get(us) as f64 / 1e6;
    family(
        out,
        "freshet_store_write_seconds",
        "summary",
        "Store write batch latency, first attempt to acknowledgement.",
    );
    let _ = writeln!(
        out,
        "freshet_store_write_seconds_sum {}\nfreshet_store_write_seconds_count {}",
        secs(&m.store_write_us_total),
        PipelineMetrics::get(&m.store_writes_total)
    );
    gauge(
        out,
        "freshet_store_write_max_us",
        "Largest store write batch latency, µs.",
        i64::try_from(PipelineMetrics::get(&m.store_write_us_max)).unwrap_or(i64::MAX),
    );
    counter(
        out,
        "freshet_store_retries_total",
        "Store write attempts that failed and were retried.",
        &m.store_retries_total,
    );
    gauge(
        out,
        "freshet_store_degraded",
        "1 while store writes fail and are being retried.",
        i64::from(m.store_degraded.load(std::sync::atomic::Ordering::Relaxed)),
    );
    counter(
        out,
        "freshet_checkpoints_total",
        "Checkpoints completed.",
        &m.checkpoints_total,
    );
    family(
        out,
        "freshet_kafka_commit_seconds",
        "summary",
        "Offset commit latency.",
    );
    let _ = writeln!(
        out,
        "freshet_kafka_commit_seconds_sum {}\nfreshet_kafka_commit_seconds_count {}",
        secs(&m.commit_us_total),
        PipelineMetrics::get(&m.commits_total)
    );
    gauge(
        out,
        "freshet_kafka_commit_max_us",
        "Largest offset commit latency, µs.",
        i64::try_from(PipelineMetrics::get(&m.commit_us_max)).unwrap_or(i64::MAX),
    );
    let Ok(partitions) = m.partitions.lock() else {
        return;
    };
    if partitions.is_empty() {
        return;
    }
    family(
        out,
        "freshet_kafka_consumer_lag",
        "gauge",
        "Records in the partition not yet read (high watermark minus position).",
    );
    for ((topic, partition), lag) in partitions.iter() {
        let _ = writeln!(
            out,
            "freshet_kafka_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
            lag.lag()
        );
    }
    family(
        out,
        "freshet_kafka_consumer_position",
        "gauge",
        "Offset of the next record to read.",
    );
    for ((topic, partition), lag) in partitions.iter() {
        let _ = writeln!(
            out,
            "freshet_kafka_consumer_position{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
            lag.position
        );
    }
}

fn render_pipeline(out: &mut String, m: &PipelineMetrics, now_ms: i64) {
    counter(
        out,
        "freshet_pipeline_events_total",
        "Events accepted into the dataflow.",
        &m.events_total,
    );
    counter(
        out,
        "freshet_pipeline_late_total",
        "Events that arrived later than the allowed lateness.",
        &m.late_total,
    );
    counter(
        out,
        "freshet_pipeline_rejected_total",
        "Records rejected as malformed.",
        &m.rejected_total,
    );
    counter(
        out,
        "freshet_pipeline_closed_windows_total",
        "Closed windows written to the changelog.",
        &m.closed_windows_total,
    );
    counter(
        out,
        "freshet_pipeline_dead_letters_total",
        "Records sent to the dead-letter output.",
        &m.dead_letters_total,
    );
    render_delivery(out, m);
    gauge(
        out,
        "freshet_pipeline_head_ms",
        "Head event time (min over partitions of the max event time), epoch ms; -1 before any event.",
        load(&m.head_ms),
    );
    let watermark = load(&m.watermark_ms);
    gauge(
        out,
        "freshet_pipeline_watermark_ms",
        "Watermark (head minus allowed lateness), epoch ms; -1 before any event.",
        watermark,
    );
    if watermark >= 0 {
        gauge(
            out,
            "freshet_pipeline_watermark_lag_ms",
            "Wall clock minus watermark, ms.",
            now_ms.saturating_sub(watermark),
        );
    }
}

fn render_store(out: &mut String, state: &AppState) {
    family(
        out,
        "freshet_store_entities",
        "gauge",
        "Entities held in the online store, per feature view.",
    );
    for view in state.store.views() {
        match state.store.len(&view) {
            Ok(n) => {
                let _ = writeln!(
                    out,
                    "freshet_store_entities{{view=\"{}\"}} {n}",
                    escape_label(&view)
                );
            }
            Err(e) => tracing::warn!(view = %view, error = %e, "cannot count store entities"),
        }
    }
}

fn render_drift(out: &mut String, board: &freshet_core::drift::DriftBoard) {
    family(
        out,
        "freshet_drift_windows_total",
        "counter",
        "Drift windows evaluated, over every monitor and feature.",
    );
    let _ = writeln!(out, "freshet_drift_windows_total {}", board.windows_total());
    family(
        out,
        "freshet_drift_alerts_firing",
        "gauge",
        "1 while a drift alert fires, else 0.",
    );
    for monitor in board.snapshot() {
        for feature in &monitor.features {
            for alert in &feature.alerts {
                let _ = writeln!(
                    out,
                    "freshet_drift_alerts_firing{{monitor=\"{}\",feature=\"{}\",measure=\"{}\"}} {}",
                    escape_label(&monitor.name),
                    escape_label(&feature.feature),
                    alert.measure.name(),
                    u8::from(alert.firing_since.is_some())
                );
            }
        }
    }
}

fn render_http(out: &mut String, histograms: &BTreeMap<(String, &'static str), Histogram>) {
    const NAME: &str = "freshet_http_request_duration_seconds";
    family(
        out,
        NAME,
        "histogram",
        "HTTP request latency by route template and status class, seconds.",
    );
    for ((route, status), h) in histograms {
        let labels = format!("route=\"{}\",status=\"{status}\"", escape_label(route));
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS_SECONDS.iter().zip(&h.buckets) {
            cumulative += n;
            let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{NAME}_sum{{{labels}}} {}", h.sum_seconds);
        let _ = writeln!(out, "{NAME}_count{{{labels}}} {}", h.count);
    }
}

/// Escapes a label value as the text format requires: backslash, double quote and newline.
pub(crate) fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The `freshet_model_*` families: each online model's learning, prequential (every example is
/// scored before it is learned), over every example since the start (`window="cumulative"`) and
/// over the model's rolling window (`window="rolling"`). A metric that does not apply to a
/// model's kind (log loss of a regression, MAE of a classifier) or has no value yet (AUC before
/// both labels were seen) has no line for that model.
pub(crate) fn render_learners(out: &mut String, models: &[LearnerMetrics]) {
    family(
        out,
        "freshet_model_version",
        "gauge",
        "The latest version the model's learner published.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "freshet_model_version{{model=\"{}\"}} {}",
            escape_label(&m.model),
            m.version
        );
    }
    family(
        out,
        "freshet_model_updates_total",
        "counter",
        "Mini-batch updates the model's learner applied.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "freshet_model_updates_total{{model=\"{}\"}} {}",
            escape_label(&m.model),
            m.updates
        );
    }
    family(
        out,
        "freshet_model_examples_total",
        "counter",
        "Labelled examples scored then learned (prequential), since the start.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "freshet_model_examples_total{{model=\"{}\"}} {}",
            escape_label(&m.model),
            m.cumulative.examples
        );
    }
    family(
        out,
        "freshet_model_rolling_examples",
        "gauge",
        "Examples in the model's rolling window.",
    );
    for m in models {
        let _ = writeln!(
            out,
            "freshet_model_rolling_examples{{model=\"{}\"}} {}",
            escape_label(&m.model),
            m.rolling.examples
        );
    }
    type JoinPick = fn(&LabelJoinMetrics) -> u64;
    let joins: [(&str, &str, JoinPick); 5] = [
        (
            "freshet_model_labels_total",
            "Label events read by the model's label join (delayed labels).",
            |j| j.labels,
        ),
        (
            "freshet_model_labels_joined_total",
            "Labels that labelled an example within max_delay.",
            |j| j.joined,
        ),
        (
            "freshet_model_labels_unmatched_total",
            "Labels that labelled no example (late, unknown key, before their event, or duplicate).",
            |j| j.unmatched,
        ),
        (
            "freshet_model_examples_expired_total",
            "Examples whose label did not come within max_delay.",
            |j| j.expired,
        ),
        (
            "freshet_model_examples_superseded_total",
            "Events' examples not learned because a served row under the same join key took their label.",
            |j| j.superseded,
        ),
    ];
    for (name, help, pick) in joins {
        family(out, name, "counter", help);
        for m in models {
            if let Some(j) = &m.join {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\"}} {}",
                    escape_label(&m.model),
                    pick(j)
                );
            }
        }
    }
    family(
        out,
        "freshet_model_served_rows_total",
        "counter",
        "Rows served for the model that went to its label join: logged, or not logged because late (behind the watermark) or dropped (queue full).",
    );
    for m in models {
        if let Some(j) = &m.join {
            for (outcome, value) in [
                ("logged", j.served_logged),
                ("late", j.served_late),
                ("dropped", j.served_dropped),
            ] {
                let _ = writeln!(
                    out,
                    "freshet_model_served_rows_total{{model=\"{}\",outcome=\"{outcome}\"}} {value}",
                    escape_label(&m.model)
                );
            }
        }
    }
    type Pick = fn(&LearnerWindow) -> Option<f64>;
    let families: [(&str, &str, Pick); 6] = [
        (
            "freshet_model_logloss",
            "Prequential mean log loss (classifiers).",
            |w| w.logloss,
        ),
        (
            "freshet_model_accuracy",
            "Prequential accuracy, 0 to 1 (classifiers).",
            |w| w.accuracy,
        ),
        (
            "freshet_model_auc",
            "Prequential ROC AUC (binary classifiers, once both labels were seen).",
            |w| w.auc,
        ),
        (
            "freshet_model_mae",
            "Prequential mean absolute error (regression).",
            |w| w.mae,
        ),
        (
            "freshet_model_rmse",
            "Prequential root mean squared error (regression).",
            |w| w.rmse,
        ),
        (
            "freshet_model_rows_per_second",
            "Examples learned per second of learner time.",
            |w| w.rows_per_s,
        ),
    ];
    for (name, help, pick) in families {
        family(out, name, "gauge", help);
        for m in models {
            for (window, values) in [("cumulative", &m.cumulative), ("rolling", &m.rolling)] {
                if let Some(v) = pick(values).filter(|v| v.is_finite()) {
                    let _ = writeln!(
                        out,
                        "{name}{{model=\"{}\",window=\"{window}\"}} {v}",
                        escape_label(&m.model)
                    );
                }
            }
        }
    }
}

/// The `freshet_serving_kafka_*` families: each `[[serving]]` table's Kafka request loop.
pub(crate) fn render_kafka_serving(out: &mut String, tables: &[KafkaServingStats]) {
    type Pick = fn(&KafkaServingStats) -> u64;
    let counters: [(&str, &str, Pick); 4] = [
        (
            "freshet_serving_kafka_requests_total",
            "Requests read from the request topic.",
            |s| s.requests,
        ),
        (
            "freshet_serving_kafka_responses_total",
            "Responses acknowledged by the brokers.",
            |s| s.responses,
        ),
        (
            "freshet_serving_kafka_dead_letters_total",
            "Malformed requests sent to the dead-letter topic.",
            |s| s.dead_letters,
        ),
        (
            "freshet_serving_kafka_failed_total",
            "Requests answered with an error (store or model failure).",
            |s| s.failed,
        ),
    ];
    for (name, help, pick) in counters {
        family(out, name, "counter", help);
        for s in tables {
            let _ = writeln!(
                out,
                "{name}{{serving=\"{}\"}} {}",
                escape_label(&s.name),
                pick(s)
            );
        }
    }
    family(
        out,
        "freshet_serving_kafka_in_flight",
        "gauge",
        "Requests read whose response is not yet acknowledged.",
    );
    for s in tables {
        let _ = writeln!(
            out,
            "freshet_serving_kafka_in_flight{{serving=\"{}\"}} {}",
            escape_label(&s.name),
            s.in_flight
        );
    }
    family(
        out,
        "freshet_serving_kafka_latency_seconds",
        "summary",
        "Time from reading a request to the brokers acknowledging its response (HDR histogram quantiles).",
    );
    for s in tables {
        for (q, seconds) in &s.latency_quantiles {
            let _ = writeln!(
                out,
                "freshet_serving_kafka_latency_seconds{{serving=\"{}\",quantile=\"{q}\"}} {seconds}",
                escape_label(&s.name)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let mut h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.003);
        h.observe(10.0);
        let mut out = String::new();
        render_http(&mut out, &BTreeMap::from([(("/x".to_owned(), "2xx"), h)]));
        let line = |le: &str| {
            format!("freshet_http_request_duration_seconds_bucket{{route=\"/x\",status=\"2xx\",le=\"{le}\"}}")
        };
        assert!(out.contains(&format!("{} 1\n", line("0.0005"))), "{out}");
        assert!(out.contains(&format!("{} 2\n", line("0.005"))), "{out}");
        assert!(out.contains(&format!("{} 2\n", line("2.5"))), "{out}");
        assert!(out.contains(&format!("{} 3\n", line("+Inf"))), "{out}");
        assert!(out.contains(
            "freshet_http_request_duration_seconds_count{route=\"/x\",status=\"2xx\"} 3\n"
        ));
    }

    #[test]
    fn lag_is_omitted_before_the_first_watermark() {
        let m = PipelineMetrics::new();
        let mut out = String::new();
        render_pipeline(&mut out, &m, 1_000);
        assert!(out.contains("freshet_pipeline_watermark_ms -1\n"), "{out}");
        assert!(!out.contains("freshet_pipeline_watermark_lag_ms"), "{out}");

        m.watermark_ms
            .store(400, std::sync::atomic::Ordering::Relaxed);
        let mut out = String::new();
        render_pipeline(&mut out, &m, 1_000);
        assert!(
            out.contains("freshet_pipeline_watermark_lag_ms 600\n"),
            "{out}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }
}
