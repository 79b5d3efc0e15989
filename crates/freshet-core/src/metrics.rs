//! Process-wide counters shared by the dataflow, the CLI and the HTTP layer.
//!
//! Counters only grow; gauges hold the latest value. All are relaxed atomics: they are
//! monitoring figures, not synchronisation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Counters of the event pipeline, exposed at `/metrics` as `freshet_pipeline_*`.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    /// Events accepted into the dataflow.
    pub events_total: AtomicU64,
    /// Events that arrived later than the allowed lateness.
    pub late_total: AtomicU64,
    /// Records rejected as malformed.
    pub rejected_total: AtomicU64,
    /// The latest head (min over partitions of the max event time), epoch ms; -1 before any event.
    pub head_ms: AtomicI64,
    /// The latest watermark (head minus allowed lateness), epoch ms; -1 before any event.
    pub watermark_ms: AtomicI64,
    /// Closed windows written to the changelog.
    pub closed_windows_total: AtomicU64,
    /// Store write batches acknowledged.
    pub store_writes_total: AtomicU64,
    /// Sum of the store write batches' latencies (first attempt to acknowledgement), µs.
    pub store_write_us_total: AtomicU64,
    /// Largest store write batch latency, µs.
    pub store_write_us_max: AtomicU64,
    /// Store write attempts that failed and were retried.
    pub store_retries_total: AtomicU64,
    /// Whether the latest store write attempt failed (the store is unreachable).
    pub store_degraded: AtomicBool,
    /// Records sent to the dead-letter output (rejected, and late under `dead_letter`).
    pub dead_letters_total: AtomicU64,
    /// Checkpoints completed (state written, offsets committed).
    pub checkpoints_total: AtomicU64,
    /// Offset commits acknowledged by the broker.
    pub commits_total: AtomicU64,
    /// Sum of the offset commits' latencies, µs.
    pub commit_us_total: AtomicU64,
    /// Largest offset commit latency, µs.
    pub commit_us_max: AtomicU64,
    /// Per (topic, partition): the next offset to read and the partition's high watermark.
    pub partitions: Mutex<BTreeMap<(String, u32), PartitionLag>>,
}

/// Where a consumer stands in one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionLag {
    /// Offset of the next record to read.
    pub position: u64,
    /// Offset after the last record in the partition (as last reported by the broker).
    pub high_watermark: u64,
}

impl PartitionLag {
    /// Records not yet read.
    pub fn lag(&self) -> u64 {
        self.high_watermark.saturating_sub(self.position)
    }
}

impl PipelineMetrics {
    /// Fresh counters, gauges at -1.
    pub fn new() -> Self {
        let m = Self::default();
        m.head_ms.store(-1, Ordering::Relaxed);
        m.watermark_ms.store(-1, Ordering::Relaxed);
        m
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one acknowledged store write batch that took `latency`.
    pub fn record_store_write(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        Self::add(&self.store_writes_total, 1);
        Self::add(&self.store_write_us_total, us);
        self.store_write_us_max.fetch_max(us, Ordering::Relaxed);
    }

    /// Records one acknowledged offset commit that took `latency`.
    pub fn record_commit(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        Self::add(&self.commits_total, 1);
        Self::add(&self.commit_us_total, us);
        self.commit_us_max.fetch_max(us, Ordering::Relaxed);
    }

    /// Records the next offset the consumer of `topic`/`partition` reads.
    pub fn set_position(&self, topic: &str, partition: u32, position: u64) {
        self.update_partition(topic, partition, |l| l.position = position);
    }

    /// Records the high watermark of `topic`/`partition`.
    pub fn set_high_watermark(&self, topic: &str, partition: u32, high_watermark: u64) {
        self.update_partition(topic, partition, |l| l.high_watermark = high_watermark);
    }

    fn update_partition(&self, topic: &str, partition: u32, f: impl FnOnce(&mut PartitionLag)) {
        if let Ok(mut p) = self.partitions.lock() {
            match p.get_mut(&(topic.to_owned(), partition)) {
                Some(slot) => f(slot),
                None => {
                    let mut lag = PartitionLag::default();
                    f(&mut lag);
                    p.insert((topic.to_owned(), partition), lag);
                }
            }
        }
    }

    /// Total records not yet read over every partition.
    pub fn total_lag(&self) -> u64 {
        self.partitions
            .lock()
            .map(|p| p.values().map(PartitionLag::lag).sum())
            .unwrap_or(0)
    }

    /// Reads a counter or gauge.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Prequential metrics of one online model over a set of examples (all since the start, or the
/// rolling window); a metric that does not apply to the model's kind is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnerWindow {
    /// Examples scored.
    pub examples: u64,
    /// Mean log loss (classifiers).
    pub logloss: Option<f64>,
    /// Fraction of correct predictions (classifiers).
    pub accuracy: Option<f64>,
    /// ROC AUC (binary classifiers, once both labels were seen).
    pub auc: Option<f64>,
    /// Mean absolute error (regression).
    pub mae: Option<f64>,
    /// Root mean squared error (regression).
    pub rmse: Option<f64>,
    /// Examples per second of learner time.
    pub rows_per_s: Option<f64>,
}

/// What `/metrics` shows of one online model's learning (`freshet_model_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnerMetrics {
    /// The model's name.
    pub model: String,
    /// The latest published version.
    pub version: u64,
    /// Updates applied.
    pub updates: u64,
    /// Since the start (or since the checkpoint's start, for a resumed model).
    pub cumulative: LearnerWindow,
    /// Over the model's `rolling_window` latest examples.
    pub rolling: LearnerWindow,
    /// The label join of a model with delayed labels; `None` for an immediate label.
    pub join: Option<LabelJoinMetrics>,
}

/// What `/metrics` shows of a delayed-label model's label join (`freshet_model_labels_*`,
/// `freshet_model_examples_{expired,superseded}_total`, `freshet_model_served_rows_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelJoinMetrics {
    /// Label events read.
    pub labels: u64,
    /// Labels that labelled an example.
    pub joined: u64,
    /// Labels that labelled none (late, unknown key, before their event, duplicate).
    pub unmatched: u64,
    /// Examples whose label did not come within `max_delay`.
    pub expired: u64,
    /// Events' examples whose outcome a served row under the same key took.
    pub superseded: u64,
    /// Served rows that entered the join's feature log.
    pub served_logged: u64,
    /// Served rows not logged: their event time was behind the watermark.
    pub served_late: u64,
    /// Served rows not logged: the queue to the dataflow was full.
    pub served_dropped: u64,
}

/// The online models' latest metrics, as the learners report them; the HTTP layer reads it
/// without knowing how models learn.
pub trait LearnerBoard: Send + Sync + 'static {
    /// Every model's latest metrics, sorted by model name.
    fn snapshot(&self) -> Vec<LearnerMetrics>;
}

/// What `/metrics` shows of one `[[serving]]` table's Kafka request loop
/// (`freshet_serving_kafka_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaServingStats {
    /// The `[[serving]]` table's name.
    pub name: String,
    /// Requests read from the request topic.
    pub requests: u64,
    /// Responses the brokers acknowledged.
    pub responses: u64,
    /// Malformed requests sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Well-formed requests answered with an error (store or model failure).
    pub failed: u64,
    /// Requests read whose response is not acknowledged yet.
    pub in_flight: u64,
    /// Read-to-acknowledged latency quantiles: (quantile as written in the label, seconds).
    pub latency_quantiles: Vec<(&'static str, f64)>,
}

/// The Kafka request loops' statistics, read by the HTTP layer.
pub trait KafkaServingBoard: Send + Sync + 'static {
    /// Every `[[serving]]` table's statistics, in pipeline order.
    fn snapshot(&self) -> Vec<KafkaServingStats>;
}
