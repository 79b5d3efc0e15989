//! Drift-monitoring results shared by the dataflow, the binary and the HTTP layer: the records a
//! drift operator emits ([`DriftWindow`], [`DriftAlert`]) and [`DriftBoard`], the current state
//! of every monitor that `GET /v1/drift` and `/metrics` read.
//!
//! Guarantees: the board holds one entry per (monitor, feature) and per configured alert, all
//! known from the pipeline file, so its memory does not grow with traffic; it is updated only
//! when a window is evaluated, under one short mutex.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

pub use freshet_drift::{Measure, Transition};
use serde::Serialize;

use crate::spec::{DriftFieldKind, PipelineSpec};

impl DriftFieldKind {
    /// The name used in pipeline files and outputs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Numeric => "numeric",
            Self::Categorical => "categorical",
        }
    }

    /// Whether `measure` is computed for fields of this kind (detectors: numeric only).
    pub const fn applies(self, measure: Measure) -> bool {
        match self {
            Self::Numeric => !matches!(measure, Measure::ChiSquare),
            Self::Categorical => !matches!(
                measure,
                Measure::Ks | Measure::Wasserstein | Measure::Adwin | Measure::PageHinkley
            ),
        }
    }
}

/// One evaluated window of one monitored feature (a `"kind":"window"` line of drift.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftWindow {
    /// The monitor.
    pub monitor: String,
    /// The feature, `source.field`.
    pub feature: String,
    /// Window start, epoch ms (inclusive).
    #[serde(rename = "window_start")]
    pub window_start_ms: u64,
    /// Window end, epoch ms (exclusive).
    #[serde(rename = "window_end")]
    pub window_end_ms: u64,
    /// Non-missing values in the window.
    pub count: u64,
    /// Null, NaN or wrongly typed values in the window (not part of any measure).
    pub missing: u64,
    /// Measure values by name: `psi`, `ks` (statistic D), `ks_p`, `jensen_shannon`,
    /// `wasserstein`, `chi_square` (statistic X²), `chi_square_p`. A window without values has
    /// none.
    pub measures: BTreeMap<&'static str, f64>,
}

/// A change of an alert's state (a `"kind":"alert"` line of drift.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftAlert {
    /// The monitor.
    pub monitor: String,
    /// The feature, `source.field` or `view.feature`.
    pub feature: String,
    /// The measure; for `ks` and `chi_square` the value is the p-value; for the detectors
    /// (`adwin`, `page_hinkley`) see [`DriftAlert::value`].
    pub measure: Measure,
    /// Fired or cleared.
    pub transition: Transition,
    /// Window measures: the window value that completed the streak. `adwin`: the estimated
    /// change of the mean (newer minus older part of its window) at the detection;
    /// `page_hinkley`: its statistic at the detection (positive for an increase, negative for
    /// a decrease). A cleared detector alert repeats the value of its last detection.
    pub value: f64,
    /// The threshold it was compared with; for detectors their parameter (ADWIN's δ,
    /// Page-Hinkley's λ).
    pub threshold: f64,
    /// Start of the window that caused the transition, epoch ms; for a detector alert the
    /// event time of the detection (or the clearing time), equal to the end.
    pub window_start_ms: u64,
    /// End of the window that caused the transition, epoch ms; for a detector alert the event
    /// time of the value at which it detected the change (or the clearing time).
    pub window_end_ms: u64,
    /// The event-time period of the reference the window was compared with, when known (not
    /// for pinned snapshot references, nor for detectors).
    pub reference: Option<ReferencePeriod>,
}

/// An event-time period `[start, end)`, epoch ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReferencePeriod {
    /// Inclusive start.
    pub start_ms: u64,
    /// Exclusive end.
    pub end_ms: u64,
}

impl DriftAlert {
    /// The alert as delivered to webhooks and alert topics: `{"kind": "alert", "state",
    /// "monitor", "feature", "measure", "value", "threshold", "window": {"start", "end"},
    /// "reference": {"start", "end"} | null}` (times in epoch ms; a non-finite value is null).
    pub fn message(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "alert",
            "state": self.state_name(),
            "monitor": self.monitor,
            "feature": self.feature,
            "measure": self.measure.name(),
            "value": self.value,
            "threshold": self.threshold,
            "window": {"start": self.window_start_ms, "end": self.window_end_ms},
            "reference": self.reference.map(|r| serde_json::json!({"start": r.start_ms, "end": r.end_ms})),
        })
    }

    /// The key alert messages are produced with: `monitor/feature`, so one feature's
    /// transitions stay in order on one partition.
    pub fn key(&self) -> String {
        format!("{}/{}", self.monitor, self.feature)
    }

    /// `"firing"` or `"cleared"`.
    pub fn state_name(&self) -> &'static str {
        match self.transition {
            Transition::Fired => "firing",
            Transition::Cleared => "cleared",
        }
    }
}

/// The state of one alert as `/v1/drift` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertStatus {
    /// The measure.
    pub measure: Measure,
    /// Its threshold.
    pub threshold: f64,
    /// `"firing"` or `"ok"`.
    pub state: &'static str,
    /// End of the window whose value fired the alert, while it fires.
    pub firing_since: Option<u64>,
}

/// The reference of one feature as `/v1/drift` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReferenceStatus {
    /// Whether the reference is frozen and windows are being compared with it.
    pub ready: bool,
    /// Non-missing values in the reference (0 until ready).
    pub count: u64,
}

/// The state of one monitored feature as `/v1/drift` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureStatus {
    /// The feature, `source.field`.
    pub feature: String,
    /// `numeric` or `categorical`; null until the reference decides it.
    pub kind: Option<DriftFieldKind>,
    /// The reference profile's state.
    pub reference: ReferenceStatus,
    /// Windows evaluated so far.
    pub windows: u64,
    /// The latest evaluated window.
    pub latest: Option<DriftWindow>,
    /// One entry per measure with a threshold that applies to the feature's kind.
    pub alerts: Vec<AlertStatus>,
}

/// The state of one monitor as `/v1/drift` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorStatus {
    /// The monitor's name.
    pub name: String,
    /// Window length, ms.
    pub window_ms: u64,
    /// Its features, in pipeline order.
    pub features: Vec<FeatureStatus>,
}

/// Current state of every drift monitor of a pipeline (module doc).
#[derive(Debug, Default)]
pub struct DriftBoard {
    monitors: Mutex<Vec<MonitorStatus>>,
    windows_total: AtomicU64,
}

impl DriftBoard {
    /// A board listing every monitor, feature and alert of `spec`, nothing evaluated yet.
    pub fn new(spec: &PipelineSpec) -> Self {
        let monitors = spec
            .drift
            .iter()
            .map(|d| {
                let d = d.get_ref();
                MonitorStatus {
                    name: d.name.clone(),
                    window_ms: d.window.as_ms(),
                    features: d
                        .features
                        .iter()
                        .map(|f| FeatureStatus {
                            feature: f.clone(),
                            kind: None,
                            reference: ReferenceStatus::default(),
                            windows: 0,
                            latest: None,
                            alerts: d
                                .window_measures()
                                .filter_map(|m| d.alert.threshold(m).map(|t| (m, t)))
                                .chain(
                                    d.detectors()
                                        .filter_map(|m| d.detector_parameter(m).map(|t| (m, t))),
                                )
                                .map(|(measure, threshold)| AlertStatus {
                                    measure,
                                    threshold,
                                    state: "ok",
                                    firing_since: None,
                                })
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            monitors: Mutex::new(monitors),
            windows_total: AtomicU64::new(0),
        }
    }

    fn with_feature(&self, monitor: &str, feature: &str, f: impl FnOnce(&mut FeatureStatus)) {
        let mut monitors = self.monitors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = monitors
            .iter_mut()
            .filter(|m| m.name == monitor)
            .flat_map(|m| m.features.iter_mut())
            .find(|s| s.feature == feature)
        {
            f(status);
        }
    }

    /// Records that a feature's reference is frozen; alerts that do not apply to `kind` go.
    pub fn reference_ready(&self, monitor: &str, feature: &str, kind: DriftFieldKind, count: u64) {
        self.with_feature(monitor, feature, |s| {
            s.kind = Some(kind);
            s.reference = ReferenceStatus { ready: true, count };
            s.alerts.retain(|a| kind.applies(a.measure));
        });
    }

    /// Records an evaluated window.
    pub fn record_window(&self, window: &DriftWindow) {
        self.windows_total.fetch_add(1, Ordering::Relaxed);
        self.with_feature(&window.monitor, &window.feature, |s| {
            s.windows += 1;
            s.latest = Some(window.clone());
        });
    }

    /// Records an alert transition.
    pub fn record_alert(&self, alert: &DriftAlert) {
        self.with_feature(&alert.monitor, &alert.feature, |s| {
            if let Some(a) = s.alerts.iter_mut().find(|a| a.measure == alert.measure) {
                match alert.transition {
                    Transition::Fired => {
                        a.state = "firing";
                        a.firing_since = Some(alert.window_end_ms);
                    }
                    Transition::Cleared => {
                        a.state = "ok";
                        a.firing_since = None;
                    }
                }
            }
        });
    }

    /// Every monitor's current state, in pipeline order.
    pub fn snapshot(&self) -> Vec<MonitorStatus> {
        self.monitors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Windows evaluated so far, over every monitor and feature.
    pub fn windows_total(&self) -> u64 {
        self.windows_total.load(Ordering::Relaxed)
    }
}
