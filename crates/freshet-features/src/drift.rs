//! Drift monitors in the dataflow: `[[drift]]` fields of a source are profiled against a
//! reference, window by tumbling event-time window, and alerts follow the measures.
//!
//! Shape: per source with monitors, one operator reads the decoded events and exchanges them all
//! to worker 0 (a constant route), which keeps a single global profile per monitor and feature.
//! That is the simplest deterministic choice: profiles never need merging across workers, and
//! a monitor's windows, measures and alerts do not depend on the number of workers. Its cost is
//! that drift updates run on one thread; the profiles are bounded summaries (freshet-drift), so
//! each update is one bin search and one reservoir step.
//!
//! Semantics (also in the README):
//! - **Reference.** `first` + `duration = D`: the events with time in `[t0, t0 + D)`, where t0 is
//!   the time of the first event the operator receives; frozen when the watermark reaches
//!   `t0 + D`. `first` + `events = N`: the first N events received, frozen at the N-th; the
//!   reference period then ends after the largest time among them. `file`: profiles pinned by
//!   `freshet drift snapshot`, used from the first event on. A field's kind (numeric or
//!   categorical) is `kinds` from the pipeline, else that of its first non-null reference value.
//! - **Windows.** Tumbling `[k*W, (k+1)*W)` aligned to the epoch, starting with the first window
//!   that begins at or after the end of the reference period (events between the two are not
//!   compared). A window is evaluated once, when the watermark `w` reaches its end (`end <= w`,
//!   as for the feature views' hopping windows), and at end of input when its end is at or before
//!   `t_end`, the largest event time of the input. A window in which no event arrived is not
//!   evaluated. Late events never reach the operator (the source drops them).
//! - **Alerts.** Each measure with a threshold has an alert per feature, driven by
//!   [`freshet_drift::AlertBook`] (hysteresis and de-duplication); only transitions are emitted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use freshet_core::drift::{DriftAlert, DriftWindow};
use freshet_core::event::Scalar;
use freshet_core::spec::{DriftAlertSpec, DriftFieldKind, DriftSpec, Measure, ReferenceSpec};
use freshet_drift::measures;
use freshet_drift::{
    AlertBook, AlertKey, AlertRule, CategoricalConfig, CategoricalProfile, CategoricalReference,
    CategoricalReferenceBuilder, NumericConfig, NumericProfile, NumericReference,
    NumericReferenceBuilder,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::dataflow::{fail, Record, RecordStream, RunError};

/// The `format` field of a reference snapshot file.
pub const SNAPSHOT_FORMAT: &str = "freshet-drift-reference/1";

/// Seed of the reference samples (fixed, so a replay is reproducible).
const REFERENCE_SEED: u64 = 0x6672_6573_6865_7421;

/// Receives what drift monitors produce.
pub trait DriftSink: Send + Sync {
    /// Called when a feature's reference is frozen (or, in snapshot mode, at end of input).
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        let _ = (monitor, feature, reference);
    }
    /// Called once per evaluated window and feature.
    fn window(&self, window: &DriftWindow);
    /// Called once per alert transition, after the window that caused it.
    fn alert(&self, alert: &DriftAlert);
}

/// A sink that drops everything (pipelines without monitors, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardDrift;

impl DriftSink for DiscardDrift {
    fn window(&self, _window: &DriftWindow) {}
    fn alert(&self, _alert: &DriftAlert) {}
}

/// A frozen reference profile of one feature, as kept in snapshot files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "profile", rename_all = "snake_case")]
pub enum FeatureReference {
    /// Quantile bins, bin counts and a sample.
    Numeric(NumericReference),
    /// Top-K categories plus "other".
    Categorical(CategoricalReference),
}

impl FeatureReference {
    /// Numeric or categorical.
    pub fn kind(&self) -> DriftFieldKind {
        match self {
            Self::Numeric(_) => DriftFieldKind::Numeric,
            Self::Categorical(_) => DriftFieldKind::Categorical,
        }
    }

    /// Non-missing values the reference was built from.
    pub fn count(&self) -> u64 {
        match self {
            Self::Numeric(r) => r.seen(),
            Self::Categorical(r) => r.counts().iter().sum(),
        }
    }
}

/// The file `freshet drift snapshot` writes: reference profiles by monitor and feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceSnapshot {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// monitor → feature (`source.field`) → reference.
    pub monitors: BTreeMap<String, BTreeMap<String, FeatureReference>>,
}

/// Why a pinned reference could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("drift `{monitor}`: cannot read reference {}: {source}", path.display())]
    Io {
        /// The monitor.
        monitor: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a snapshot or lacks a feature of the monitor.
    #[error("drift `{monitor}`: reference {}: {reason}", path.display())]
    Invalid {
        /// The monitor.
        monitor: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where a monitor's reference comes from, once compiled.
#[derive(Debug, Clone)]
pub enum ReferencePlan {
    /// Event time `[t0, t0 + ms)`.
    FirstDuration(u64),
    /// The first N events.
    FirstEvents(u64),
    /// A snapshot file not loaded yet ([`load_references`] replaces it).
    File(PathBuf),
    /// Loaded snapshot profiles by feature.
    Pinned(Arc<BTreeMap<String, FeatureReference>>),
    /// Every event of the input, frozen at end of input (`freshet drift snapshot`).
    WholeInput,
}

/// One monitored field.
#[derive(Debug, Clone)]
pub struct DriftFeaturePlan {
    /// `source.field`.
    pub name: String,
    /// The field's slot in the source's decoded events.
    pub slot: usize,
    /// The kind from `kinds`, if the pipeline sets it.
    pub kind: Option<DriftFieldKind>,
}

/// The part of one `[[drift]]` monitor that reads one source.
#[derive(Debug, Clone)]
pub struct DriftPlan {
    /// Monitor name.
    pub monitor: String,
    /// Window length, ms.
    pub window_ms: u64,
    /// Where the reference comes from.
    pub reference: ReferencePlan,
    /// The monitored fields of this source.
    pub features: Vec<DriftFeaturePlan>,
    /// Measures computed per window.
    pub methods: Vec<Measure>,
    /// Thresholds and hysteresis.
    pub alert: DriftAlertSpec,
    /// Numeric profile sizes.
    pub numeric: NumericConfig,
    /// Categorical profile sizes.
    pub categorical: CategoricalConfig,
}

/// Compiles the monitors of `spec` that read `source`; `slot_of` allocates decoded fields.
pub(crate) fn compile(
    drift: &[&DriftSpec],
    source: &str,
    slot_of: &mut dyn FnMut(&str) -> usize,
) -> Vec<DriftPlan> {
    drift
        .iter()
        .filter_map(|d| {
            let features: Vec<DriftFeaturePlan> = d
                .features
                .iter()
                .filter_map(|f| {
                    let (s, field) = f.split_once('.')?;
                    (s == source).then(|| DriftFeaturePlan {
                        name: f.clone(),
                        slot: slot_of(field),
                        kind: d.kinds.get(field).copied(),
                    })
                })
                .collect();
            if features.is_empty() {
                return None;
            }
            let reference = match &d.reference {
                ReferenceSpec::First {
                    duration: Some(t), ..
                } => ReferencePlan::FirstDuration(t.as_ms()),
                ReferenceSpec::First {
                    events: Some(n), ..
                } => ReferencePlan::FirstEvents(*n),
                ReferenceSpec::First { .. } => ReferencePlan::WholeInput,
                ReferenceSpec::File { path } => ReferencePlan::File(path.clone()),
            };
            Some(DriftPlan {
                monitor: d.name.clone(),
                window_ms: d.window.as_ms(),
                reference,
                features,
                methods: d.methods.clone(),
                alert: d.alert,
                numeric: d.numeric,
                categorical: d.categorical,
            })
        })
        .collect()
}

/// Loads the snapshot files of `file` references; relative paths are taken from `base`.
pub fn load_references(
    plans: &mut [crate::plan::SourcePlan],
    base: &Path,
) -> Result<(), SnapshotError> {
    let mut cache: HashMap<PathBuf, ReferenceSnapshot> = HashMap::new();
    for plan in plans.iter_mut().flat_map(|p| p.drift.iter_mut()) {
        let ReferencePlan::File(path) = &plan.reference else {
            continue;
        };
        let path = base.join(path);
        let invalid = |reason: String| SnapshotError::Invalid {
            monitor: plan.monitor.clone(),
            path: path.clone(),
            reason,
        };
        if !cache.contains_key(&path) {
            let text = std::fs::read_to_string(&path).map_err(|source| SnapshotError::Io {
                monitor: plan.monitor.clone(),
                path: path.clone(),
                source,
            })?;
            let snapshot: ReferenceSnapshot =
                serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            if snapshot.format != SNAPSHOT_FORMAT {
                return Err(invalid(format!(
                    "format `{}`, expected `{SNAPSHOT_FORMAT}`",
                    snapshot.format
                )));
            }
            cache.insert(path.clone(), snapshot);
        }
        let snapshot = cache.get(&path).map(|s| &s.monitors);
        let Some(profiles) = snapshot.and_then(|m| m.get(&plan.monitor)) else {
            return Err(invalid(format!(
                "no profiles for monitor `{}`",
                plan.monitor
            )));
        };
        let mut pinned = BTreeMap::new();
        for f in &plan.features {
            let Some(r) = profiles.get(&f.name) else {
                return Err(invalid(format!("no profile for feature `{}`", f.name)));
            };
            if f.kind.is_some_and(|k| k != r.kind()) {
                return Err(invalid(format!(
                    "feature `{}` is {} in the snapshot but kinds says otherwise",
                    f.name,
                    r.kind().name()
                )));
            }
            pinned.insert(f.name.clone(), r.clone());
        }
        plan.reference = ReferencePlan::Pinned(Arc::new(pinned));
    }
    Ok(())
}

/// Makes every monitor's reference the whole input (`freshet drift snapshot`).
pub fn reference_whole_input(plans: &mut [crate::plan::SourcePlan]) {
    for plan in plans.iter_mut().flat_map(|p| p.drift.iter_mut()) {
        plan.reference = ReferencePlan::WholeInput;
    }
}

enum Builder {
    /// Kind not known yet: nulls seen so far.
    Undecided(u64),
    Numeric(NumericReferenceBuilder),
    Categorical(CategoricalReferenceBuilder),
}

enum Profile {
    Numeric(NumericProfile),
    Categorical(CategoricalProfile),
    /// The feature has no usable reference: nothing to compare.
    None,
}

struct FeatureState {
    plan: DriftFeaturePlan,
    builder: Builder,
    reference: Option<FeatureReference>,
    keys: Vec<(Measure, AlertKey, AlertRule)>,
}

fn category(value: &Scalar) -> Option<String> {
    match value {
        Scalar::Null => None,
        Scalar::Bool(b) => Some(b.to_string()),
        Scalar::Num(n) => Some(n.to_string()),
        Scalar::Str(s) => Some(s.to_string()),
    }
}

fn number(value: &Scalar) -> f64 {
    match value {
        Scalar::Num(n) => *n,
        _ => f64::NAN,
    }
}

impl FeatureState {
    fn new(plan: DriftFeaturePlan, monitor: &DriftPlan) -> Result<Self, String> {
        let builder = match plan.kind {
            None => Builder::Undecided(0),
            Some(kind) => Self::builder_for(kind, monitor)?,
        };
        let reference = match &monitor.reference {
            ReferencePlan::Pinned(profiles) => profiles.get(&plan.name).cloned(),
            _ => None,
        };
        let keys = Measure::ALL
            .into_iter()
            .filter(|m| monitor.methods.contains(m))
            .filter_map(|m| {
                monitor.alert.rule(m).map(|rule| {
                    let key = AlertKey {
                        monitor: monitor.monitor.clone(),
                        feature: plan.name.clone(),
                        measure: m,
                    };
                    (m, key, rule)
                })
            })
            .collect();
        Ok(Self {
            plan,
            builder,
            reference,
            keys,
        })
    }

    fn builder_for(kind: DriftFieldKind, monitor: &DriftPlan) -> Result<Builder, String> {
        Ok(match kind {
            DriftFieldKind::Numeric => Builder::Numeric(
                NumericReferenceBuilder::new(monitor.numeric, REFERENCE_SEED)
                    .map_err(|e| e.to_string())?,
            ),
            DriftFieldKind::Categorical => Builder::Categorical(
                CategoricalReferenceBuilder::new(monitor.categorical).map_err(|e| e.to_string())?,
            ),
        })
    }

    fn add_reference(&mut self, value: &Scalar, monitor: &DriftPlan) -> Result<(), String> {
        if let Builder::Undecided(nulls) = self.builder {
            let kind = match value {
                Scalar::Null => {
                    self.builder = Builder::Undecided(nulls + 1);
                    return Ok(());
                }
                Scalar::Num(_) => DriftFieldKind::Numeric,
                Scalar::Bool(_) | Scalar::Str(_) => DriftFieldKind::Categorical,
            };
            self.builder = Self::builder_for(kind, monitor)?;
            for _ in 0..nulls {
                match &mut self.builder {
                    Builder::Numeric(b) => b.update(f64::NAN),
                    Builder::Categorical(b) => b.update_missing(),
                    Builder::Undecided(_) => {}
                }
            }
        }
        match &mut self.builder {
            Builder::Numeric(b) => b.update(number(value)),
            Builder::Categorical(b) => match category(value) {
                Some(c) => b.update(&c),
                None => b.update_missing(),
            },
            Builder::Undecided(_) => {}
        }
        Ok(())
    }

    /// Freezes the reference; it stays `None` when the reference period had no usable value.
    fn freeze(&mut self) {
        let builder = std::mem::replace(&mut self.builder, Builder::Undecided(0));
        self.reference = match builder {
            Builder::Undecided(_) => None,
            Builder::Numeric(b) => b.finish().ok().map(FeatureReference::Numeric),
            Builder::Categorical(b) => b.finish().ok().map(FeatureReference::Categorical),
        };
        if let Some(r) = &self.reference {
            let kind = r.kind();
            self.keys.retain(|(m, _, _)| kind.applies(*m));
        }
    }

    fn new_window(&self, start: u64) -> Profile {
        match &self.reference {
            Some(FeatureReference::Numeric(r)) => Profile::Numeric(r.new_window(start)),
            Some(FeatureReference::Categorical(r)) => Profile::Categorical(r.new_window()),
            None => Profile::None,
        }
    }
}

fn add_live(profile: &mut Profile, value: &Scalar) {
    match profile {
        Profile::Numeric(p) => p.update(number(value)),
        Profile::Categorical(p) => match category(value) {
            Some(c) => p.update(&c),
            None => p.update_missing(),
        },
        Profile::None => {}
    }
}

/// Measures of one window: (count, missing, values by output name, alert values by measure).
fn evaluate(
    reference: &FeatureReference,
    profile: &Profile,
    methods: &[Measure],
) -> (
    u64,
    u64,
    BTreeMap<&'static str, f64>,
    BTreeMap<Measure, f64>,
) {
    let mut out = BTreeMap::new();
    let mut alert_values = BTreeMap::new();
    let mut put = |name: &'static str, measure: Option<Measure>, value: f64| {
        out.insert(name, value);
        if let Some(m) = measure {
            alert_values.insert(m, value);
        }
    };
    let wants = |m: Measure| methods.contains(&m);
    match (reference, profile) {
        (FeatureReference::Numeric(r), Profile::Numeric(p)) => {
            if p.count() > 0 {
                if wants(Measure::Psi) {
                    if let Ok(v) = measures::psi(r.counts(), p.counts()) {
                        put("psi", Some(Measure::Psi), v);
                    }
                }
                if wants(Measure::JensenShannon) {
                    if let Ok(v) = measures::js_distance(r.counts(), p.counts()) {
                        put("jensen_shannon", Some(Measure::JensenShannon), v);
                    }
                }
                let sorted = if wants(Measure::Ks) || wants(Measure::Wasserstein) {
                    p.sample().sorted_values()
                } else {
                    Vec::new()
                };
                if wants(Measure::Ks) {
                    if let Ok(t) = measures::ks_2samp(r.sorted_sample(), &sorted) {
                        put("ks", None, t.statistic);
                        put("ks_p", Some(Measure::Ks), t.p_value);
                    }
                }
                if wants(Measure::Wasserstein) {
                    if let Ok(v) = measures::wasserstein_normed(r.sorted_sample(), &sorted) {
                        put("wasserstein", Some(Measure::Wasserstein), v);
                    }
                }
            }
            (p.count(), p.missing(), out, alert_values)
        }
        (FeatureReference::Categorical(r), Profile::Categorical(p)) => {
            if p.count() > 0 {
                if wants(Measure::Psi) {
                    if let Ok(v) = r.psi(p) {
                        put("psi", Some(Measure::Psi), v);
                    }
                }
                if wants(Measure::JensenShannon) {
                    if let Ok(v) = r.js_distance(p) {
                        put("jensen_shannon", Some(Measure::JensenShannon), v);
                    }
                }
                if wants(Measure::ChiSquare) {
                    if let Ok(t) = r.chi_square(p) {
                        put("chi_square", None, t.statistic);
                        put("chi_square_p", Some(Measure::ChiSquare), t.p_value);
                    }
                }
            }
            (p.count(), p.missing(), out, alert_values)
        }
        _ => (0, 0, out, alert_values),
    }
}

/// One monitor's state on worker 0 (module doc).
struct MonitorState {
    plan: Arc<DriftPlan>,
    features: Vec<FeatureState>,
    /// Whether the reference is frozen and events go to windows.
    live: bool,
    /// Whether the frozen references were handed to the sink.
    announced: bool,
    /// Exclusive end of the reference period (set by the first reference event).
    reference_end: Option<u64>,
    reference_events: u64,
    /// Events after the reference period that arrived before it was frozen: (time, values).
    pending: Vec<(u64, Vec<Scalar>)>,
    /// Start of the first window compared with the reference.
    first_window: u64,
    /// Open windows by start: one profile per feature.
    windows: BTreeMap<u64, Vec<Profile>>,
    /// The latest watermark: windows ending at or before it are evaluated (or had no event).
    closed_to: u64,
    book: AlertBook,
}

impl MonitorState {
    fn new(plan: Arc<DriftPlan>) -> Result<Self, String> {
        let features = plan
            .features
            .iter()
            .map(|f| FeatureState::new(f.clone(), &plan))
            .collect::<Result<Vec<_>, _>>()?;
        let live = matches!(plan.reference, ReferencePlan::Pinned(_));
        let mut features = features;
        for f in &mut features {
            if let Some(kind) = f.reference.as_ref().map(FeatureReference::kind) {
                f.keys.retain(|(m, _, _)| kind.applies(*m));
            }
        }
        Ok(Self {
            features,
            live,
            announced: false,
            reference_end: None,
            reference_events: 0,
            pending: Vec::new(),
            first_window: 0,
            windows: BTreeMap::new(),
            closed_to: 0,
            book: AlertBook::new(),
            plan,
        })
    }

    fn values(&self, values: &[Scalar]) -> Vec<Scalar> {
        self.features
            .iter()
            .map(|f| values.get(f.plan.slot).cloned().unwrap_or(Scalar::Null))
            .collect()
    }

    fn ingest(&mut self, ts: u64, values: &[Scalar], sink: &dyn DriftSink) -> Result<(), String> {
        if self.live {
            self.add_to_window(ts, values, false);
            return Ok(());
        }
        let in_reference = match self.plan.reference {
            ReferencePlan::FirstDuration(d) => {
                let end = *self.reference_end.get_or_insert(ts.saturating_add(d));
                ts < end
            }
            ReferencePlan::FirstEvents(_) | ReferencePlan::WholeInput => true,
            ReferencePlan::File(_) | ReferencePlan::Pinned(_) => false,
        };
        if !in_reference {
            let projected = self.values(values);
            self.pending.push((ts, projected));
            return Ok(());
        }
        let plan = self.plan.clone();
        for f in &mut self.features {
            let value = values.get(f.plan.slot).unwrap_or(&Scalar::Null);
            f.add_reference(value, &plan)?;
        }
        self.reference_events += 1;
        if let ReferencePlan::FirstEvents(n) = plan.reference {
            let after = ts.saturating_add(1);
            let end = self.reference_end.map_or(after, |e| e.max(after));
            self.reference_end = Some(end);
            if self.reference_events >= n {
                self.freeze(sink);
            }
        }
        Ok(())
    }

    /// Adds an event to its window; `projected` values are in feature order, others are the
    /// decoded event's slots.
    fn add_to_window(&mut self, ts: u64, values: &[Scalar], projected: bool) {
        let w = self.plan.window_ms;
        let start = ts - ts % w;
        if start < self.first_window || start.saturating_add(w) <= self.closed_to {
            return;
        }
        let features = &self.features;
        let profiles = self
            .windows
            .entry(start)
            .or_insert_with(|| features.iter().map(|f| f.new_window(start)).collect());
        for (i, (profile, f)) in profiles.iter_mut().zip(features).enumerate() {
            let slot = if projected { i } else { f.plan.slot };
            add_live(profile, values.get(slot).unwrap_or(&Scalar::Null));
        }
    }

    fn freeze(&mut self, sink: &dyn DriftSink) {
        for f in &mut self.features {
            f.freeze();
        }
        self.live = true;
        self.announce(sink);
        let w = self.plan.window_ms;
        let end = self.reference_end.unwrap_or(0);
        self.first_window = end.div_ceil(w).saturating_mul(w);
        for (ts, values) in std::mem::take(&mut self.pending) {
            self.add_to_window(ts, &values, true);
        }
    }

    fn announce(&mut self, sink: &dyn DriftSink) {
        if self.announced {
            return;
        }
        self.announced = true;
        for f in &self.features {
            if let Some(r) = &f.reference {
                sink.reference(&self.plan.monitor, &f.plan.name, r);
            }
        }
    }

    /// Freezes a due reference and evaluates the windows ending at or before `w`.
    fn advance(&mut self, w: u64, end_of_input: bool, sink: &dyn DriftSink) {
        if self.live {
            self.announce(sink);
        } else {
            let due = match self.plan.reference {
                ReferencePlan::FirstDuration(_) => self.reference_end.is_some_and(|e| e <= w),
                _ => false,
            };
            if due || end_of_input {
                self.freeze(sink);
            }
        }
        let length = self.plan.window_ms;
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(length);
            if end > w {
                break;
            }
            let profiles = entry.remove();
            self.evaluate(start, end, &profiles, sink);
        }
        self.closed_to = self.closed_to.max(w);
    }

    fn evaluate(&mut self, start: u64, end: u64, profiles: &[Profile], sink: &dyn DriftSink) {
        for (f, profile) in self.features.iter().zip(profiles) {
            let Some(reference) = &f.reference else {
                continue;
            };
            let (count, missing, values, alert_values) =
                evaluate(reference, profile, &self.plan.methods);
            sink.window(&DriftWindow {
                monitor: self.plan.monitor.clone(),
                feature: f.plan.name.clone(),
                window_start_ms: start,
                window_end_ms: end,
                count,
                missing,
                measures: values,
            });
            for (measure, key, rule) in &f.keys {
                let value = alert_values.get(measure).copied().unwrap_or(f64::NAN);
                if let Some(event) = self.book.observe(key, rule, value) {
                    sink.alert(&DriftAlert {
                        monitor: self.plan.monitor.clone(),
                        feature: f.plan.name.clone(),
                        measure: *measure,
                        transition: event.transition,
                        value: event.value,
                        threshold: event.threshold,
                        window_end_ms: end,
                    });
                }
            }
        }
    }
}

/// The drift operator of one source (module doc): every record goes to worker 0.
pub(crate) fn drift_operator(
    records: &RecordStream<'_>,
    plans: Vec<Arc<DriftPlan>>,
    sink: Arc<dyn DriftSink>,
    failure: Arc<Mutex<Option<RunError>>>,
) {
    let name = plans
        .iter()
        .map(|p| p.monitor.as_str())
        .collect::<Vec<_>>()
        .join(",");
    records
        .clone()
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &Record| 0u64),
            &format!("Drift({name})"),
            move |_capability, _info| {
                let mut monitors: Vec<MonitorState> = Vec::new();
                for plan in plans {
                    match MonitorState::new(plan) {
                        Ok(m) => monitors.push(m),
                        Err(e) => fail(&failure, RunError::Dataflow(e)),
                    }
                }
                let mut t_end: Option<u64> = None;
                let mut watermark: Option<u64> = None;
                let mut finished = false;
                // end of input (not a live stop): the last windows are evaluated
                let mut ended = false;
                move |(input, frontier), _output| {
                    input.for_each(|_cap, data| {
                        for record in data.drain(..) {
                            match record {
                                Record::Event(event) => {
                                    t_end = Some(t_end.map_or(event.ts_ms, |t| t.max(event.ts_ms)));
                                    for m in &mut monitors {
                                        if let Err(e) = m.ingest(event.ts_ms, &event.values, &*sink)
                                        {
                                            fail(&failure, RunError::Dataflow(e));
                                        }
                                    }
                                }
                                Record::End { clock_ms, .. } => {
                                    ended = true;
                                    if let Some(c) = clock_ms {
                                        t_end = Some(t_end.map_or(c, |t| t.max(c)));
                                    }
                                }
                                // drift state is not checkpointed (see the dataflow module)
                                Record::Barrier { .. } => {}
                            }
                        }
                    });
                    if finished {
                        return;
                    }
                    match frontier.frontier().first() {
                        None => {
                            finished = true;
                            if ended {
                                for m in &mut monitors {
                                    m.advance(t_end.unwrap_or(0), true, &*sink);
                                }
                            }
                        }
                        Some(&time) if time > 0 && watermark.is_none_or(|w| time - 1 > w) => {
                            let w = time - 1;
                            watermark = Some(w);
                            for m in &mut monitors {
                                m.advance(w, false, &*sink);
                            }
                        }
                        Some(_) => {}
                    }
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        lines: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.lines.lock().expect("lock"))
        }
    }

    impl DriftSink for Recorder {
        fn reference(&self, _monitor: &str, feature: &str, reference: &FeatureReference) {
            self.lines.lock().expect("lock").push(format!(
                "ref {feature} {} {}",
                reference.kind().name(),
                reference.count()
            ));
        }
        fn window(&self, w: &DriftWindow) {
            self.lines.lock().expect("lock").push(format!(
                "window {} [{}, {}) n={} missing={}",
                w.feature, w.window_start_ms, w.window_end_ms, w.count, w.missing
            ));
        }
        fn alert(&self, a: &DriftAlert) {
            self.lines.lock().expect("lock").push(format!(
                "alert {} {} {} at {}",
                a.feature,
                a.measure.name(),
                a.state_name(),
                a.window_end_ms
            ));
        }
    }

    fn plan(reference: ReferencePlan) -> Arc<DriftPlan> {
        Arc::new(DriftPlan {
            monitor: "m".into(),
            window_ms: 10,
            reference,
            features: vec![
                DriftFeaturePlan {
                    name: "s.x".into(),
                    slot: 0,
                    kind: None,
                },
                DriftFeaturePlan {
                    name: "s.c".into(),
                    slot: 1,
                    kind: Some(DriftFieldKind::Categorical),
                },
            ],
            methods: Measure::ALL.to_vec(),
            alert: DriftAlertSpec {
                chi_square_p: Some(0.01),
                fire_after: 1,
                clear_after: 1,
                ..DriftAlertSpec::default()
            },
            numeric: NumericConfig::default(),
            categorical: CategoricalConfig::default(),
        })
    }

    fn event(x: Scalar, c: &str) -> Vec<Scalar> {
        vec![x, Scalar::Str(c.into())]
    }

    #[test]
    fn duration_reference_waits_for_the_watermark_and_buffers_what_follows() {
        let sink = Recorder::default();
        let mut m = MonitorState::new(plan(ReferencePlan::FirstDuration(15))).expect("plan");
        // reference [3, 18): a null first, so the kind comes from the first number
        m.ingest(3, &event(Scalar::Null, "a"), &sink)
            .expect("ingest");
        for ts in 4..18 {
            m.ingest(ts, &event(Scalar::Num(ts as f64), "a"), &sink)
                .expect("ingest");
        }
        // after the reference period but before the watermark reaches 18: buffered; 18 and 19
        // fall before the first window [20, 30) and are not compared
        for ts in [18, 19, 21, 22] {
            m.ingest(ts, &event(Scalar::Num(100.0), "b"), &sink)
                .expect("ingest");
        }
        m.advance(17, false, &sink);
        assert!(sink.take().is_empty(), "reference not complete at w = 17");
        m.advance(18, false, &sink);
        assert_eq!(
            sink.take(),
            ["ref s.x numeric 14", "ref s.c categorical 15"]
        );
        m.ingest(29, &event(Scalar::Str("oops".into()), "a"), &sink)
            .expect("ingest");
        m.ingest(35, &event(Scalar::Num(1.0), "a"), &sink)
            .expect("ingest");
        m.advance(30, false, &sink);
        assert_eq!(
            sink.take(),
            [
                "window s.x [20, 30) n=2 missing=1",
                "window s.c [20, 30) n=3 missing=0",
                "alert s.c chi_square firing at 30",
            ]
        );
        // end of input at t_end = 39: [30, 40) ends after it and stays open
        m.advance(39, true, &sink);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn event_count_reference_windows_start_after_it_and_empty_windows_are_skipped() {
        let sink = Recorder::default();
        let mut m = MonitorState::new(plan(ReferencePlan::FirstEvents(3))).expect("plan");
        for ts in [1, 12, 5] {
            m.ingest(ts, &event(Scalar::Num(1.0), "a"), &sink)
                .expect("ingest");
        }
        // frozen at the third event; the period ends after time 12, so windows start at 20
        assert_eq!(sink.take().len(), 2);
        for ts in [13, 25, 47] {
            m.ingest(ts, &event(Scalar::Num(1.0), "a"), &sink)
                .expect("ingest");
        }
        m.advance(47, true, &sink);
        assert_eq!(
            sink.take(),
            [
                "window s.x [20, 30) n=1 missing=0",
                "window s.c [20, 30) n=1 missing=0",
            ]
        );
    }

    #[test]
    fn pinned_reference_compares_from_the_first_event_and_alerts_clear() {
        let refs = BTreeMap::from([
            (
                "s.x".to_owned(),
                FeatureReference::Numeric(
                    NumericReference::from_values(&[1.0, 2.0, 3.0], NumericConfig::default(), 1)
                        .expect("ref"),
                ),
            ),
            (
                "s.c".to_owned(),
                FeatureReference::Categorical(
                    CategoricalReference::from_values(
                        &["a", "a", "b", "b"],
                        CategoricalConfig::default(),
                    )
                    .expect("ref"),
                ),
            ),
        ]);
        let sink = Recorder::default();
        let mut m = MonitorState::new(plan(ReferencePlan::Pinned(Arc::new(refs)))).expect("plan");
        for i in 0..200 {
            m.ingest(5, &event(Scalar::Num(2.0), "a"), &sink)
                .expect("ingest");
            m.ingest(
                15,
                &event(Scalar::Num(2.0), if i % 2 == 0 { "a" } else { "b" }),
                &sink,
            )
            .expect("ingest");
        }
        m.advance(20, false, &sink);
        let lines = sink.take();
        assert_eq!(&lines[..2], ["ref s.x numeric 3", "ref s.c categorical 4"]);
        assert!(
            lines.contains(&"alert s.c chi_square firing at 10".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"alert s.c chi_square cleared at 20".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let snapshot = ReferenceSnapshot {
            format: SNAPSHOT_FORMAT.into(),
            monitors: BTreeMap::from([(
                "m".to_owned(),
                BTreeMap::from([(
                    "s.c".to_owned(),
                    FeatureReference::Categorical(
                        CategoricalReference::from_values(
                            &["a", "b"],
                            CategoricalConfig::default(),
                        )
                        .expect("ref"),
                    ),
                )]),
            )]),
        };
        let text = serde_json::to_string(&snapshot).expect("serialize");
        let back: ReferenceSnapshot = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, snapshot);
    }
}
