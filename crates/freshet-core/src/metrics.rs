//! Process-wide counters shared by the dataflow, the CLI and the HTTP layer.
//!
//! Counters only grow; gauges hold the latest value. All are relaxed atomics: they are
//! monitoring figures, not synchronisation.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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

    /// Reads a counter or gauge.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
