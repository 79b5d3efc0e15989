//! Drift monitors in the dataflow: `[[drift]]` features (event fields of a source, or computed
//! features of one of its views) are profiled against a reference, tumbling event-time window by
//! window; streaming change detectors run on every numeric value in event-time order; alerts
//! follow both. The semantics, exactly: `docs/drift.md`.
//!
//! Shape, per source with monitors:
//! - **Event fields** (`source.field`): one operator reads the decoded events and exchanges them
//!   all to worker 0 (a constant route), which keeps a single global profile per monitor and
//!   feature. Profiles never need merging across workers, and a monitor's windows, measures and
//!   alerts do not depend on the number of workers. Drift updates run on one thread; each is one
//!   bin search and one reservoir step (categories: one table probe), so that thread keeps up
//!   with many workers' worth of events (`scripts/bench-drift.sh` measures the overhead).
//! - **Computed features** (`view.feature`): a tap per monitored view runs on the worker that
//!   owns each key (records exchanged by entity, as for the window operators). It recomputes the
//!   monitored features with the window operator's own state ([`crate::window`]) and emits every
//!   value the window operator produces for them: a continuous (or `last`) feature's value after
//!   each instant at which the key's window changes, a hopping/tumbling feature's value for each
//!   closed window. A second drift operator on worker 0 monitors that stream like event fields.
//!   Values are released in event-time order once the watermark passes, so they do not depend
//!   on the number of workers either.
//! - **Other streams**: [`drift_stream_operator`] monitors any stream of [`DriftRecord`]s inside
//!   the dataflow, and [`StreamMonitors`] does the same outside it (push values, advance a
//!   watermark, finish), for parts with [`DriftInput::Stream`] from [`stream_plans`]. A model's
//!   scores and errors (`model.NAME.score`, `model.NAME.error`, parts from [`model_plans`]) are
//!   monitored that way in the model's learner thread (the `freshet` binary's `model_drift`).
//!
//! Order: detectors see each feature's values sorted by (event time, value) once the watermark
//! has passed them, so River-style detection indices are reproducible. Window profiles are fed
//! in arrival order (a reservoir's sample depends on it; counts and reference periods do not).

use std::borrow::Cow;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use freshet_core::drift::{DriftAlert, DriftWindow, ReferencePeriod};
use freshet_core::event::{Decoded, Scalar};
use freshet_core::spec::{
    DriftAlertSpec, DriftFieldKind, DriftSpec, Measure, ReferenceSpec, MODEL_STREAMS,
};
use freshet_core::store::{FeatureValue, StoreWrite};
use freshet_drift::measures;
use freshet_drift::{
    Adwin, AdwinConfig, AlertBook, AlertKey, AlertRule, CategoricalConfig, CategoricalProfile,
    CategoricalReference, CategoricalReferenceBuilder, ChiSquareMethod, NumericConfig,
    NumericProfile, NumericReference, NumericReferenceBuilder, PageHinkley, PageHinkleyConfig,
    Reservoir, Transition,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Exchange as _;

use crate::dataflow::{fail, Record, RecordStream, RunError};
use crate::plan::{Group, Output, SourcePlan, ViewPlan};
use crate::window::{ClosedWindow, ViewState};

/// The `format` field of a reference snapshot file.
pub const SNAPSHOT_FORMAT: &str = "freshet-drift-reference/1";

/// Seed of the reference samples (fixed, so a replay is reproducible).
const REFERENCE_SEED: u64 = 0x6672_6573_6865_7421;

/// Receives what drift monitors produce.
pub trait DriftSink: Send + Sync {
    /// Called when a feature's reference is frozen (or, in snapshot mode, at end of input; for a
    /// lagged reference, with the first reference a window is compared with).
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        let _ = (monitor, feature, reference);
    }
    /// Called once per evaluated window and feature.
    fn window(&self, window: &DriftWindow);
    /// Called once per alert transition: after the window that caused it, or, for a detector,
    /// in event-time order among the windows.
    fn alert(&self, alert: &DriftAlert);
}

/// A sink that drops everything (pipelines without monitors, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardDrift;

impl DriftSink for DiscardDrift {
    fn window(&self, _window: &DriftWindow) {}
    fn alert(&self, _alert: &DriftAlert) {}
}

/// Forwards everything to several sinks, in order (drift.jsonl plus a webhook, say).
pub struct FanOut(pub Vec<Arc<dyn DriftSink>>);

impl DriftSink for FanOut {
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        for s in &self.0 {
            s.reference(monitor, feature, reference);
        }
    }
    fn window(&self, window: &DriftWindow) {
        for s in &self.0 {
            s.window(window);
        }
    }
    fn alert(&self, alert: &DriftAlert) {
        for s in &self.0 {
            s.alert(alert);
        }
    }
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
    /// The window ending at `e` against event time `[e - lag - duration, e - lag)`.
    Lagged {
        /// `lag`, ms (a whole number of windows, at least one).
        lag_ms: u64,
        /// `duration`, ms (a whole number of windows).
        duration_ms: u64,
    },
}

/// What one part of a monitor reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftInput {
    /// Fields of the source's decoded events; a feature's `slot` is its decoded slot.
    Fields,
    /// Computed features of the named view; a feature's `slot` is its position in the view.
    /// Parts are compiled for every source and resolved against the source's views when the
    /// dataflow is built: a part whose view belongs to another source is ignored there.
    View(String),
    /// A stream fed through [`drift_stream_operator`] (e.g. `model.fraud.score`); a feature's
    /// `slot` is the index the stream's [`DriftRecord`]s use for it.
    Stream(String),
}

/// One monitored feature.
#[derive(Debug, Clone)]
pub struct DriftFeaturePlan {
    /// `source.field` or `view.feature`.
    pub name: String,
    /// Where its value is ([`DriftInput`]).
    pub slot: usize,
    /// The kind from `kinds`, if the pipeline sets it.
    pub kind: Option<DriftFieldKind>,
}

/// The part of one `[[drift]]` monitor that reads one input.
#[derive(Debug, Clone)]
pub struct DriftPlan {
    /// Monitor name.
    pub monitor: String,
    /// What the part reads.
    pub input: DriftInput,
    /// Window length, ms.
    pub window_ms: u64,
    /// Where the reference comes from.
    pub reference: ReferencePlan,
    /// The monitored features of this input.
    pub features: Vec<DriftFeaturePlan>,
    /// Window measures computed per window.
    pub methods: Vec<Measure>,
    /// Streaming detectors run per value (`adwin`, `page_hinkley`).
    pub detectors: Vec<Measure>,
    /// Thresholds, hysteresis and delivery.
    pub alert: DriftAlertSpec,
    /// Numeric profile sizes.
    pub numeric: NumericConfig,
    /// Categorical profile sizes.
    pub categorical: CategoricalConfig,
    /// Which chi-square test categorical features get.
    pub chi_square: ChiSquareMethod,
    /// ADWIN's parameters.
    pub adwin: AdwinConfig,
    /// Page-Hinkley's parameters.
    pub page_hinkley: PageHinkleyConfig,
}

impl DriftPlan {
    fn from_spec(d: &DriftSpec, input: DriftInput, features: Vec<DriftFeaturePlan>) -> Self {
        let reference = match &d.reference {
            ReferenceSpec::First {
                duration: Some(t), ..
            } => ReferencePlan::FirstDuration(t.as_ms()),
            ReferenceSpec::First {
                events: Some(n), ..
            } => ReferencePlan::FirstEvents(*n),
            ReferenceSpec::First { .. } => ReferencePlan::WholeInput,
            ReferenceSpec::File { path } => ReferencePlan::File(path.clone()),
            ReferenceSpec::Lagged { lag, duration } => ReferencePlan::Lagged {
                lag_ms: lag.as_ms(),
                duration_ms: duration.as_ms(),
            },
        };
        Self {
            monitor: d.name.clone(),
            input,
            window_ms: d.window.as_ms(),
            reference,
            features,
            methods: d.window_measures().collect(),
            detectors: d.detectors().collect(),
            alert: d.alert.clone(),
            numeric: d.numeric,
            categorical: d.categorical,
            chi_square: d.chi_square_test,
            adwin: d.adwin,
            page_hinkley: d.page_hinkley,
        }
    }
}

/// Compiles the monitor parts of `source`: one per monitor reading fields of `source` (`slot_of`
/// allocates their decoded slots), and one per monitor and other owner name (candidate views,
/// resolved when the dataflow is built, see [`DriftInput::View`]).
pub(crate) fn compile(
    drift: &[&DriftSpec],
    source: &str,
    slot_of: &mut dyn FnMut(&str) -> usize,
) -> Vec<DriftPlan> {
    let mut plans = Vec::new();
    for d in drift {
        let kind = |field: &str| d.kinds.get(field).copied();
        let fields: Vec<DriftFeaturePlan> = d
            .feature_refs()
            .filter(|(owner, _)| *owner == source)
            .map(|(owner, field)| DriftFeaturePlan {
                name: format!("{owner}.{field}"),
                slot: slot_of(field),
                kind: kind(field),
            })
            .collect();
        if !fields.is_empty() {
            plans.push(DriftPlan::from_spec(d, DriftInput::Fields, fields));
        }
        let mut owners: Vec<&str> = Vec::new();
        for (owner, _) in d.feature_refs() {
            if owner != source && !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        for view in owners {
            let features = d
                .feature_refs()
                .filter(|(owner, _)| *owner == view)
                .map(|(owner, feature)| DriftFeaturePlan {
                    name: format!("{owner}.{feature}"),
                    // the position in the view, set when the view is resolved
                    slot: usize::MAX,
                    kind: kind(feature),
                })
                .collect();
            plans.push(DriftPlan::from_spec(
                d,
                DriftInput::View(view.to_owned()),
                features,
            ));
        }
    }
    plans
}

/// The monitor parts that read a named stream (e.g. `model.fraud.score`): the features of each
/// monitor whose name starts with `stream.`, with slots numbered in the order of `names` (the
/// index a producer of [`DriftRecord`]s uses for each name). Monitors without such a feature get
/// no part.
pub fn stream_plans(drift: &[&DriftSpec], stream: &str, names: &[&str]) -> Vec<DriftPlan> {
    drift
        .iter()
        .filter_map(|d| {
            let features: Vec<DriftFeaturePlan> = d
                .features
                .iter()
                .filter_map(|f| {
                    let rest = f.strip_prefix(stream)?.strip_prefix('.')?;
                    let slot = names.iter().position(|n| *n == rest)?;
                    Some(DriftFeaturePlan {
                        name: f.clone(),
                        slot,
                        kind: Some(DriftFieldKind::Numeric),
                    })
                })
                .collect();
            (!features.is_empty())
                .then(|| DriftPlan::from_spec(d, DriftInput::Stream(stream.to_owned()), features))
        })
        .collect()
}

/// The monitor parts that read model `model`'s streams (`model.NAME.score`, `model.NAME.error`):
/// [`stream_plans`] over [`MODEL_STREAMS`], so a feature's slot is its stream's index there
/// (0 score, 1 error).
pub fn model_plans(drift: &[&DriftSpec], model: &str) -> Vec<DriftPlan> {
    stream_plans(drift, &format!("model.{model}"), &MODEL_STREAMS)
}

/// Loads the snapshot files of `file` references; relative paths are taken from `base`.
pub fn load_references(
    plans: &mut [crate::plan::SourcePlan],
    base: &Path,
) -> Result<(), SnapshotError> {
    load_plan_references(plans.iter_mut().flat_map(|p| p.drift.iter_mut()), base)
}

/// [`load_references`] for monitor parts outside source plans (model streams, see
/// [`model_plans`]).
pub fn load_plan_references<'a>(
    plans: impl IntoIterator<Item = &'a mut DriftPlan>,
    base: &Path,
) -> Result<(), SnapshotError> {
    let mut cache: HashMap<PathBuf, ReferenceSnapshot> = HashMap::new();
    for plan in plans {
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
pub fn reference_whole_input(plans: &mut [SourcePlan]) {
    for plan in plans.iter_mut().flat_map(|p| p.drift.iter_mut()) {
        plan.reference = ReferencePlan::WholeInput;
    }
}

/// A value of no field: what a feature reads when its slot is absent.
static NULL: Scalar = Scalar::Null;

enum Builder {
    /// Kind not known yet: nulls seen so far.
    Undecided(u64),
    Numeric(NumericReferenceBuilder),
    Categorical(CategoricalReferenceBuilder),
}

enum Profile {
    Numeric(NumericProfile),
    Categorical(CategoricalProfile),
    /// A window of a lagged monitor, summarised before its reference exists.
    Summary(Summary),
    /// The feature has no usable reference: nothing to compare.
    None,
}

/// A window summarised without bins (lagged references); kept, downsampled, in the ring of
/// past windows that later references are built from.
#[derive(Clone)]
enum Summary {
    /// Kind not known yet: nulls seen so far.
    Undecided(u64),
    /// A uniform sample of the finite values, the values it stands for (`seen`), and missing.
    Numeric { sample: Reservoir, missing: u64 },
    /// Category counts (Space-Saving, exact up to `sketch_capacity` categories).
    Categorical(CategoricalReferenceBuilder),
}

enum DetectorState {
    Adwin(Adwin),
    PageHinkley(PageHinkley),
}

impl DetectorState {
    /// Feeds one value; on a detection, the alert value (ADWIN: estimated mean change;
    /// Page-Hinkley: its signed statistic).
    fn update(&mut self, value: f64) -> Option<f64> {
        match self {
            Self::Adwin(d) => d.update(value).then(|| d.mean_change()),
            Self::PageHinkley(d) => d.update(value).then(|| d.statistic()),
        }
    }
}

/// One detector on one feature, with its alert state.
struct Detector {
    measure: Measure,
    state: DetectorState,
    /// The parameter reported as the alert's threshold (δ or λ).
    parameter: f64,
    firing: bool,
    /// Time and value of the latest detection.
    last: Option<(u64, f64)>,
}

struct FeatureState {
    plan: DriftFeaturePlan,
    /// Known once `kinds` names it, the reference decides it, or (lagged) a first value does.
    kind: Option<DriftFieldKind>,
    builder: Builder,
    reference: Option<FeatureReference>,
    /// Whether a lagged feature's first reference was handed to the sink.
    announced: bool,
    keys: Vec<(Measure, AlertKey, AlertRule)>,
    detectors: Vec<Detector>,
    /// Numeric values waiting for the watermark before the detectors see them.
    queue: Vec<(u64, f64)>,
}

/// A category as a string slice; only numbers need formatting.
fn category(value: &Scalar) -> Option<Cow<'_, str>> {
    match value {
        Scalar::Null => None,
        Scalar::Bool(true) => Some(Cow::Borrowed("true")),
        Scalar::Bool(false) => Some(Cow::Borrowed("false")),
        Scalar::Num(n) => Some(Cow::Owned(n.to_string())),
        Scalar::Str(s) => Some(Cow::Borrowed(s)),
    }
}

fn number(value: &Scalar) -> f64 {
    match value {
        Scalar::Num(n) => *n,
        _ => f64::NAN,
    }
}

fn kind_of(value: &Scalar) -> Option<DriftFieldKind> {
    match value {
        Scalar::Null => None,
        Scalar::Num(_) => Some(DriftFieldKind::Numeric),
        Scalar::Bool(_) | Scalar::Str(_) => Some(DriftFieldKind::Categorical),
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
        let key = |measure| AlertKey {
            monitor: monitor.monitor.clone(),
            feature: plan.name.clone(),
            measure,
        };
        let keys = monitor
            .methods
            .iter()
            .filter_map(|&m| monitor.alert.rule(m).map(|rule| (m, key(m), rule)))
            .collect();
        let detectors = if plan.kind == Some(DriftFieldKind::Categorical) {
            Vec::new()
        } else {
            monitor
                .detectors
                .iter()
                .filter_map(|&measure| {
                    let (state, parameter) = match measure {
                        Measure::Adwin => (
                            DetectorState::Adwin(monitor.adwin.build()),
                            monitor.adwin.delta,
                        ),
                        Measure::PageHinkley => (
                            DetectorState::PageHinkley(monitor.page_hinkley.build()),
                            monitor.page_hinkley.threshold,
                        ),
                        _ => return None,
                    };
                    Some(Detector {
                        measure,
                        state,
                        parameter,
                        firing: false,
                        last: None,
                    })
                })
                .collect()
        };
        let kind = plan.kind.or(reference.as_ref().map(FeatureReference::kind));
        let mut state = Self {
            plan,
            kind,
            builder,
            reference,
            announced: false,
            keys,
            detectors,
            queue: Vec::new(),
        };
        if let Some(kind) = state.kind {
            state.settle_kind(kind);
        }
        Ok(state)
    }

    /// Drops the alerts and detectors that do not apply to `kind`.
    fn settle_kind(&mut self, kind: DriftFieldKind) {
        self.kind = Some(kind);
        self.keys.retain(|(m, _, _)| kind.applies(*m));
        if kind == DriftFieldKind::Categorical {
            self.detectors.clear();
            self.queue = Vec::new();
        }
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
            let Some(kind) = kind_of(value) else {
                self.builder = Builder::Undecided(nulls + 1);
                return Ok(());
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
        if let Some(kind) = self.reference.as_ref().map(FeatureReference::kind) {
            self.settle_kind(kind);
        }
    }

    fn new_window(&self, start: u64, monitor: &DriftPlan) -> Profile {
        if matches!(monitor.reference, ReferencePlan::Lagged { .. }) {
            return Profile::Summary(match self.kind {
                None => Summary::Undecided(0),
                Some(kind) => typed_summary(kind, 0, start, monitor),
            });
        }
        match &self.reference {
            Some(FeatureReference::Numeric(r)) => Profile::Numeric(r.new_window(start)),
            Some(FeatureReference::Categorical(r)) => Profile::Categorical(r.new_window()),
            None => Profile::None,
        }
    }

    /// Queues a value for the detectors (numbers only; the rest is missing to them).
    fn queue(&mut self, ts: u64, value: &Scalar) {
        if self.detectors.is_empty() {
            return;
        }
        if let Scalar::Num(v) = value {
            if v.is_finite() {
                self.queue.push((ts, *v));
            }
        }
    }
}

fn typed_summary(kind: DriftFieldKind, missing: u64, start: u64, monitor: &DriftPlan) -> Summary {
    match kind {
        DriftFieldKind::Numeric => Summary::Numeric {
            sample: Reservoir::new(
                monitor.numeric.window_sample,
                REFERENCE_SEED ^ start.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            missing,
        },
        DriftFieldKind::Categorical => {
            let mut b = CategoricalReferenceBuilder::new(monitor.categorical)
                .unwrap_or_else(|_| unreachable_builder());
            for _ in 0..missing {
                b.update_missing();
            }
            Summary::Categorical(b)
        }
    }
}

/// The categorical config was validated with the pipeline, so building cannot fail; a default
/// builder keeps the operator going if it ever did.
fn unreachable_builder() -> CategoricalReferenceBuilder {
    CategoricalReferenceBuilder::new(CategoricalConfig::default())
        .unwrap_or_else(|_| unreachable!("the default categorical config is valid"))
}

fn add_live(
    profile: &mut Profile,
    value: &Scalar,
    feature: &mut FeatureState,
    start: u64,
    monitor: &DriftPlan,
) {
    match profile {
        Profile::Numeric(p) => p.update(number(value)),
        Profile::Categorical(p) => match category(value) {
            Some(c) => p.update(&c),
            None => p.update_missing(),
        },
        Profile::Summary(summary) => {
            if let Summary::Undecided(nulls) = *summary {
                let Some(kind) = feature.kind.or_else(|| kind_of(value)) else {
                    *summary = Summary::Undecided(nulls + 1);
                    return;
                };
                if feature.kind.is_none() {
                    feature.settle_kind(kind);
                }
                *summary = typed_summary(kind, nulls, start, monitor);
            }
            match summary {
                Summary::Numeric { sample, missing } => match value {
                    Scalar::Num(n) if n.is_finite() => sample.update(*n),
                    _ => *missing += 1,
                },
                Summary::Categorical(b) => match category(value) {
                    Some(c) => b.update(&c),
                    None => b.update_missing(),
                },
                Summary::Undecided(_) => {}
            }
        }
        Profile::None => {}
    }
}

/// Measures of one window: (count, missing, values by output name, alert values by measure).
fn evaluate(
    reference: &FeatureReference,
    profile: &Profile,
    methods: &[Measure],
    chi_square: ChiSquareMethod,
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
                    if let Ok(t) = r.ks_sorted(&sorted) {
                        put("ks", None, t.statistic);
                        put("ks_p", Some(Measure::Ks), t.p_value);
                    }
                }
                if wants(Measure::Wasserstein) {
                    if let Ok(v) = r.wasserstein_normed_sorted(&sorted) {
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
                    if let Ok(t) = chi_square.test(r.counts(), p.counts()) {
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

/// One monitor part's state on worker 0 (module doc).
struct MonitorState {
    plan: Arc<DriftPlan>,
    features: Vec<FeatureState>,
    /// Whether the reference is frozen (or pinned, or rolling) and events go to windows.
    live: bool,
    /// Whether the frozen references were handed to the sink.
    announced: bool,
    /// Smallest event time of the reference period (set by the first reference event).
    reference_start: Option<u64>,
    /// Exclusive end of the reference period (set by the first reference event).
    reference_end: Option<u64>,
    reference_events: u64,
    /// Events after the reference period that arrived before it was frozen: the time and the
    /// carried values by feature.
    pending: Vec<(u64, Vec<(usize, Scalar)>)>,
    /// Start of the first window compared with the reference.
    first_window: u64,
    /// Open windows by start: one profile per feature.
    windows: BTreeMap<u64, Vec<Profile>>,
    /// The latest watermark: windows ending at or before it are evaluated (or had no event).
    closed_to: u64,
    book: AlertBook,
    /// Lagged references: summaries of past windows by start, one per feature.
    ring: BTreeMap<u64, Vec<Summary>>,
    /// Lagged references: start of the earliest window that received an event.
    history_start: Option<u64>,
}

/// An alert waiting to be emitted in time order among the windows.
type Timed = (u64, DriftAlert);

impl MonitorState {
    fn new(plan: Arc<DriftPlan>) -> Result<Self, String> {
        let features = plan
            .features
            .iter()
            .map(|f| FeatureState::new(f.clone(), &plan))
            .collect::<Result<Vec<_>, _>>()?;
        let live = matches!(
            plan.reference,
            ReferencePlan::Pinned(_) | ReferencePlan::Lagged { .. }
        );
        Ok(Self {
            features,
            live,
            announced: false,
            reference_start: None,
            reference_end: None,
            reference_events: 0,
            pending: Vec::new(),
            first_window: 0,
            windows: BTreeMap::new(),
            closed_to: 0,
            book: AlertBook::new(),
            ring: BTreeMap::new(),
            history_start: None,
            plan,
        })
    }

    /// Ingests one event whose value for feature `i` is `value(i)` (`None`: the event does not
    /// carry that feature, which is not the same as a null value).
    fn ingest<'v>(
        &mut self,
        ts: u64,
        value: &dyn Fn(usize) -> Option<&'v Scalar>,
        sink: &dyn DriftSink,
    ) -> Result<(), String> {
        for (i, f) in self.features.iter_mut().enumerate() {
            if let Some(v) = value(i) {
                f.queue(ts, v);
            }
        }
        if self.live {
            self.add_to_window(ts, value);
            return Ok(());
        }
        let in_reference = match self.plan.reference {
            ReferencePlan::FirstDuration(d) => {
                let end = *self.reference_end.get_or_insert(ts.saturating_add(d));
                ts < end
            }
            ReferencePlan::FirstEvents(_) | ReferencePlan::WholeInput => true,
            ReferencePlan::File(_) | ReferencePlan::Pinned(_) | ReferencePlan::Lagged { .. } => {
                false
            }
        };
        if !in_reference {
            let carried = (0..self.features.len())
                .filter_map(|i| value(i).map(|v| (i, v.clone())))
                .collect();
            self.pending.push((ts, carried));
            return Ok(());
        }
        let plan = self.plan.clone();
        for (i, f) in self.features.iter_mut().enumerate() {
            if let Some(v) = value(i) {
                f.add_reference(v, &plan)?;
            }
        }
        self.reference_events += 1;
        self.reference_start = Some(self.reference_start.map_or(ts, |s| s.min(ts)));
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

    /// Adds an event to its window.
    fn add_to_window<'v>(&mut self, ts: u64, value: &dyn Fn(usize) -> Option<&'v Scalar>) {
        let w = self.plan.window_ms;
        let start = ts - ts % w;
        if start < self.first_window || start.saturating_add(w) <= self.closed_to {
            return;
        }
        if matches!(self.plan.reference, ReferencePlan::Lagged { .. }) {
            self.history_start = Some(self.history_start.map_or(start, |h| h.min(start)));
        }
        let plan = &self.plan;
        let features = &mut self.features;
        let profiles = self
            .windows
            .entry(start)
            .or_insert_with(|| features.iter().map(|f| f.new_window(start, plan)).collect());
        for (i, (profile, f)) in profiles.iter_mut().zip(features.iter_mut()).enumerate() {
            if let Some(v) = value(i) {
                add_live(profile, v, f, start, plan);
            }
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
            let value = |i: usize| values.iter().find(|(j, _)| *j == i).map(|(_, v)| v);
            self.add_to_window(ts, &value);
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

    /// The reference period of fixed `first` references, once known.
    fn reference_period(&self) -> Option<ReferencePeriod> {
        match self.plan.reference {
            ReferencePlan::FirstDuration(_) | ReferencePlan::FirstEvents(_) => {
                Some(ReferencePeriod {
                    start_ms: self.reference_start?,
                    end_ms: self.reference_end?,
                })
            }
            _ => None,
        }
    }

    /// Freezes a due reference, runs the detectors over the values before `w`, evaluates the
    /// windows ending at or before `w`, and emits windows and alerts in event-time order.
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
        let mut detected = self.run_detectors(w, end_of_input).into_iter().peekable();
        let length = self.plan.window_ms;
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(length);
            if end > w {
                break;
            }
            let profiles = entry.remove();
            while let Some((_, alert)) = detected.next_if(|(t, _)| *t < end) {
                sink.alert(&alert);
            }
            if matches!(self.plan.reference, ReferencePlan::Lagged { .. }) {
                self.evaluate_lagged(start, end, profiles, sink);
            } else {
                self.evaluate(start, end, &profiles, sink);
            }
        }
        for (_, alert) in detected {
            sink.alert(&alert);
        }
        self.closed_to = self.closed_to.max(w);
    }

    /// Feeds the detectors every queued value before `w` (all of them at end of input), in
    /// (time, value) order; returns their alert transitions, sorted by time. A detection fires
    /// a clear alert; a firing one clears once `clear_after` windows of event time pass without
    /// a detection.
    fn run_detectors(&mut self, w: u64, end_of_input: bool) -> Vec<Timed> {
        let mut out: Vec<Timed> = Vec::new();
        let calm_ms = self
            .plan
            .window_ms
            .saturating_mul(u64::from(self.plan.alert.clear_after));
        for f in &mut self.features {
            if f.detectors.is_empty() {
                continue;
            }
            f.queue
                .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let ready = if end_of_input {
                f.queue.len()
            } else {
                f.queue.partition_point(|(ts, _)| *ts < w)
            };
            let alert = |d: &Detector, transition, value, at: u64| DriftAlert {
                monitor: self.plan.monitor.clone(),
                feature: f.plan.name.clone(),
                measure: d.measure,
                transition,
                value,
                threshold: d.parameter,
                window_start_ms: at,
                window_end_ms: at,
                reference: None,
            };
            for d in &mut f.detectors {
                for &(ts, v) in &f.queue[..ready] {
                    if let Some(clear_at) = cleared(d, calm_ms, ts) {
                        let value = d.last.map_or(0.0, |(_, v)| v);
                        out.push((clear_at, alert(d, Transition::Cleared, value, clear_at)));
                    }
                    if let Some(value) = d.state.update(v) {
                        if !d.firing {
                            d.firing = true;
                            out.push((ts, alert(d, Transition::Fired, value, ts)));
                        }
                        d.last = Some((ts, value));
                    }
                }
                let now = if end_of_input { w.saturating_add(1) } else { w };
                if let Some(clear_at) = cleared(d, calm_ms, now) {
                    let value = d.last.map_or(0.0, |(_, v)| v);
                    out.push((clear_at, alert(d, Transition::Cleared, value, clear_at)));
                }
            }
            f.queue.drain(..ready);
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }

    fn emit(
        &mut self,
        f: usize,
        window: DriftWindow,
        alert_values: &BTreeMap<Measure, f64>,
        reference: Option<ReferencePeriod>,
        sink: &dyn DriftSink,
    ) {
        sink.window(&window);
        for (measure, key, rule) in &self.features[f].keys {
            let value = alert_values.get(measure).copied().unwrap_or(f64::NAN);
            if let Some(event) = self.book.observe(key, rule, value) {
                sink.alert(&DriftAlert {
                    monitor: self.plan.monitor.clone(),
                    feature: window.feature.clone(),
                    measure: *measure,
                    transition: event.transition,
                    value: event.value,
                    threshold: event.threshold,
                    window_start_ms: window.window_start_ms,
                    window_end_ms: window.window_end_ms,
                    reference,
                });
            }
        }
    }

    fn evaluate(&mut self, start: u64, end: u64, profiles: &[Profile], sink: &dyn DriftSink) {
        let reference = self.reference_period();
        for (i, profile) in profiles.iter().enumerate() {
            let Some(r) = &self.features[i].reference else {
                continue;
            };
            let (count, missing, values, alert_values) =
                evaluate(r, profile, &self.plan.methods, self.plan.chi_square);
            let window = DriftWindow {
                monitor: self.plan.monitor.clone(),
                feature: self.features[i].plan.name.clone(),
                window_start_ms: start,
                window_end_ms: end,
                count,
                missing,
                measures: values,
            };
            self.emit(i, window, &alert_values, reference, sink);
        }
    }

    /// Evaluates a window of a lagged monitor against the summaries of the windows in
    /// `[end - lag - duration, end - lag)`, then files its own summary in the ring.
    fn evaluate_lagged(
        &mut self,
        start: u64,
        end: u64,
        profiles: Vec<Profile>,
        sink: &dyn DriftSink,
    ) {
        let ReferencePlan::Lagged {
            lag_ms,
            duration_ms,
        } = self.plan.reference
        else {
            return;
        };
        let w = self.plan.window_ms;
        let span = lag_ms.saturating_add(duration_ms);
        let period = (end >= span).then(|| ReferencePeriod {
            start_ms: end - span,
            end_ms: end - lag_ms,
        });
        // compared only once the whole reference period lies after the first window with data
        let complete = period.filter(|p| self.history_start.is_some_and(|h| p.start_ms >= h));
        let summaries: Vec<Summary> = profiles
            .into_iter()
            .map(|p| match p {
                Profile::Summary(s) => s,
                _ => Summary::Undecided(0),
            })
            .collect();
        if let Some(period) = complete {
            for (i, summary) in summaries.iter().enumerate() {
                let Some((reference, profile)) = self.lagged_pair(i, summary, period, end) else {
                    continue;
                };
                if !self.features[i].announced {
                    self.features[i].announced = true;
                    sink.reference(&self.plan.monitor, &self.features[i].plan.name, &reference);
                }
                let (count, missing, values, alert_values) = evaluate(
                    &reference,
                    &profile,
                    &self.plan.methods,
                    self.plan.chi_square,
                );
                let window = DriftWindow {
                    monitor: self.plan.monitor.clone(),
                    feature: self.features[i].plan.name.clone(),
                    window_start_ms: start,
                    window_end_ms: end,
                    count,
                    missing,
                    measures: values,
                };
                self.emit(i, window, &alert_values, Some(period), sink);
            }
        }
        // file this window, downsampled so that a reference period's windows together keep
        // about `reference_sample` values
        let windows_per_reference = (duration_ms / w.max(1)).max(1);
        let keep = (self.plan.numeric.reference_sample as u64)
            .div_ceil(windows_per_reference)
            .min(self.plan.numeric.window_sample as u64)
            .max(1) as usize;
        let filed = summaries
            .into_iter()
            .map(|s| match s {
                Summary::Numeric { sample, missing } => Summary::Numeric {
                    sample: sample.downsample(keep, REFERENCE_SEED ^ start),
                    missing,
                },
                other => other,
            })
            .collect();
        self.ring.insert(start, filed);
        // the next window ends at end + w at the earliest: older summaries are never needed
        let oldest = end.saturating_add(w).saturating_sub(span);
        while self
            .ring
            .first_key_value()
            .is_some_and(|(k, _)| *k < oldest)
        {
            self.ring.pop_first();
        }
    }

    /// A lagged feature's reference over `period` and the window's profile on its layout.
    fn lagged_pair(
        &self,
        i: usize,
        summary: &Summary,
        period: ReferencePeriod,
        end: u64,
    ) -> Option<(FeatureReference, Profile)> {
        let filed = self
            .ring
            .range(period.start_ms..period.end_ms)
            .filter_map(|(_, s)| s.get(i));
        match summary {
            Summary::Numeric { sample, missing } => {
                let mut parts = Vec::new();
                let mut reference_missing = 0;
                for s in filed {
                    if let Summary::Numeric { sample, missing } = s {
                        parts.push(sample);
                        reference_missing += missing;
                    }
                }
                let union = Reservoir::union(
                    &parts,
                    self.plan.numeric.reference_sample,
                    REFERENCE_SEED ^ end,
                );
                let reference = NumericReferenceBuilder::from_sample(
                    self.plan.numeric,
                    union,
                    reference_missing,
                    REFERENCE_SEED,
                )
                .and_then(NumericReferenceBuilder::finish)
                .ok()?;
                let profile = reference.window_from_sample(sample.clone(), *missing);
                Some((
                    FeatureReference::Numeric(reference),
                    Profile::Numeric(profile),
                ))
            }
            Summary::Categorical(window) => {
                let mut merged: Option<CategoricalReferenceBuilder> = None;
                for s in filed {
                    if let Summary::Categorical(b) = s {
                        match &mut merged {
                            Some(m) => m.merge(b).ok()?,
                            None => merged = Some(b.clone()),
                        }
                    }
                }
                let reference = merged?.finish().ok()?;
                let profile = reference.window_from_counts(window);
                Some((
                    FeatureReference::Categorical(reference),
                    Profile::Categorical(profile),
                ))
            }
            Summary::Undecided(_) => None,
        }
    }
}

/// When a firing detector alert clears, if it does by time `now`: `clear_after` windows of event
/// time after its latest detection, with no detection in between.
fn cleared(d: &mut Detector, calm_ms: u64, now: u64) -> Option<u64> {
    let (last, _) = d.last?;
    let at = last.saturating_add(calm_ms);
    if d.firing && at <= now {
        d.firing = false;
        return Some(at);
    }
    None
}

/// One item of a stream of monitored values other than event fields (computed features, and
/// later model scores), fed to [`drift_stream_operator`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DriftRecord {
    /// Values at event time `ts_ms`, by feature index (see [`DriftInput`]); a feature not listed
    /// is not carried by this record, which is not the same as a null value.
    Values {
        /// Event time, epoch ms.
        ts_ms: u64,
        /// (feature index, value) pairs.
        values: Vec<(u32, Scalar)>,
    },
    /// End of input of one producer, with the largest event time it saw.
    End {
        /// Largest event time, epoch ms.
        clock_ms: Option<u64>,
    },
}

/// A stream of [`DriftRecord`]s.
pub type DriftRecordStream<'a> = timely::dataflow::Stream<'a, u64, Vec<DriftRecord>>;

/// Connects the drift monitors of one source (module doc): an operator for the parts reading
/// its event fields, and a tap and an operator per monitored view of the source.
pub(crate) fn drift_operator(
    records: &RecordStream<'_>,
    source: Arc<SourcePlan>,
    sink: Arc<dyn DriftSink>,
    failure: Arc<Mutex<Option<RunError>>>,
) {
    let fields: Vec<Arc<DriftPlan>> = source
        .drift
        .iter()
        .filter(|p| p.input == DriftInput::Fields)
        .cloned()
        .map(Arc::new)
        .collect();
    if !fields.is_empty() {
        fields_operator(records, fields, sink.clone(), failure.clone());
    }
    for view in &source.views {
        let name = &view.schema.name;
        let plans: Vec<Arc<DriftPlan>> = source
            .drift
            .iter()
            .filter(|p| p.input == DriftInput::View(name.clone()))
            .map(|p| {
                let mut p = p.clone();
                for f in &mut p.features {
                    let feature = f.name.split_once('.').map_or("", |(_, x)| x);
                    f.slot = view
                        .schema
                        .features
                        .iter()
                        .position(|n| n == feature)
                        .unwrap_or(usize::MAX);
                }
                Arc::new(p)
            })
            .collect();
        if plans.is_empty() {
            continue;
        }
        let mut monitored: Vec<usize> = plans
            .iter()
            .flat_map(|p| p.features.iter().map(|f| f.slot))
            .filter(|s| *s < view.schema.features.len())
            .collect();
        monitored.sort_unstable();
        monitored.dedup();
        let tap = view_tap(records, view, &monitored);
        drift_stream_operator(&tap, plans, sink.clone(), failure.clone());
    }
}

fn monitors_of(plans: Vec<Arc<DriftPlan>>, failure: &Mutex<Option<RunError>>) -> Vec<MonitorState> {
    let mut monitors = Vec::new();
    for plan in plans {
        match MonitorState::new(plan) {
            Ok(m) => monitors.push(m),
            Err(e) => fail(failure, RunError::Dataflow(e)),
        }
    }
    monitors
}

fn name_of(plans: &[Arc<DriftPlan>]) -> String {
    plans
        .iter()
        .map(|p| p.monitor.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The operator of the parts reading event fields: every record goes to worker 0.
fn fields_operator(
    records: &RecordStream<'_>,
    plans: Vec<Arc<DriftPlan>>,
    sink: Arc<dyn DriftSink>,
    failure: Arc<Mutex<Option<RunError>>>,
) {
    let name = name_of(&plans);
    records
        .clone()
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &Record| 0u64),
            &format!("Drift({name})"),
            move |_capability, _info| {
                let mut monitors = monitors_of(plans, &failure);
                // each monitor's feature slots, outside the monitors so that ingesting one
                // borrows nothing else of it
                let slots: Vec<Vec<usize>> = monitors
                    .iter()
                    .map(|m| m.plan.features.iter().map(|f| f.slot).collect())
                    .collect();
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
                                    for (m, slots) in monitors.iter_mut().zip(&slots) {
                                        let value = |i: usize| {
                                            Some(
                                                slots
                                                    .get(i)
                                                    .and_then(|s| event.values.get(*s))
                                                    .unwrap_or(&NULL),
                                            )
                                        };
                                        if let Err(e) = m.ingest(event.ts_ms, &value, &*sink) {
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

/// A total order on scalars (null, booleans, numbers, strings), to sort records that share an
/// event time into an order that does not depend on their arrival.
fn order_scalars(a: &Scalar, b: &Scalar) -> std::cmp::Ordering {
    let rank = |s: &Scalar| match s {
        Scalar::Null => 0,
        Scalar::Bool(_) => 1,
        Scalar::Num(_) => 2,
        Scalar::Str(_) => 3,
    };
    match (a, b) {
        (Scalar::Bool(x), Scalar::Bool(y)) => x.cmp(y),
        (Scalar::Num(x), Scalar::Num(y)) => x.total_cmp(y),
        (Scalar::Str(x), Scalar::Str(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn order_values(a: &[(u32, Scalar)], b: &[(u32, Scalar)]) -> std::cmp::Ordering {
    for ((i, x), (j, y)) in a.iter().zip(b) {
        let o = i.cmp(j).then_with(|| order_scalars(x, y));
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Held stream values: (event time, (feature index, value) pairs).
type Held = (u64, Vec<(u32, Scalar)>);

/// The monitor parts that read one stream of values outside the dataflow's event fields (a
/// view's computed features, a model's scores and errors), driven by event time.
///
/// Guarantee: values are held until [`StreamMonitors::advance`] passes their event time, then
/// ingested in (time, values) order, so windows, detectors and alerts depend only on the values
/// and their times, not on the order they were pushed in — provided no value is pushed with a
/// time below a watermark already passed (such a value still counts for the detectors, but a
/// window it belongs to may be closed already, and then it is left out).
pub struct StreamMonitors {
    monitors: Vec<MonitorState>,
    held: Vec<Held>,
    t_end: Option<u64>,
    watermark: Option<u64>,
}

impl StreamMonitors {
    /// Monitors for `plans` (feature slots are the indices the pushed values use). Fails when a
    /// plan cannot be monitored (a pinned reference whose kind does not fit, say).
    pub fn new(plans: Vec<Arc<DriftPlan>>) -> Result<Self, String> {
        let monitors = plans
            .into_iter()
            .map(MonitorState::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            monitors,
            held: Vec::new(),
            t_end: None,
            watermark: None,
        })
    }

    /// Whether there is nothing to monitor.
    pub fn is_empty(&self) -> bool {
        self.monitors.is_empty()
    }

    /// Values at event time `ts_ms`, by feature index; a feature not listed is not carried.
    pub fn push(&mut self, ts_ms: u64, values: Vec<(u32, Scalar)>) {
        self.saw(ts_ms);
        self.held.push((ts_ms, values));
    }

    /// Records that the input reached event time `ts_ms` (the end of input evaluates the
    /// windows that end by the largest such time).
    pub fn saw(&mut self, ts_ms: u64) {
        self.t_end = Some(self.t_end.map_or(ts_ms, |t| t.max(ts_ms)));
    }

    /// Every value before `watermark_ms` has been pushed: ingests them in order, runs the
    /// detectors and evaluates the windows that end by it. A watermark not above the last one
    /// does nothing.
    pub fn advance(&mut self, watermark_ms: u64, sink: &dyn DriftSink) -> Result<(), String> {
        if self.watermark.is_some_and(|w| watermark_ms <= w) {
            return Ok(());
        }
        self.watermark = Some(watermark_ms);
        self.ingest(Some(watermark_ms), sink)?;
        for m in &mut self.monitors {
            m.advance(watermark_ms, false, sink);
        }
        Ok(())
    }

    /// End of input: ingests everything held and evaluates the windows that end by the largest
    /// event time seen.
    pub fn finish(&mut self, sink: &dyn DriftSink) -> Result<(), String> {
        self.ingest(None, sink)?;
        let t_end = self.t_end.unwrap_or(0);
        for m in &mut self.monitors {
            m.advance(t_end, true, sink);
        }
        Ok(())
    }

    fn ingest(&mut self, before: Option<u64>, sink: &dyn DriftSink) -> Result<(), String> {
        self.held
            .sort_by(|a, b| a.0.cmp(&b.0).then_with(|| order_values(&a.1, &b.1)));
        let ready = before.map_or(self.held.len(), |w| {
            self.held.partition_point(|(ts, _)| *ts < w)
        });
        for (ts, values) in self.held.drain(..ready) {
            for m in &mut self.monitors {
                let plan = m.plan.clone();
                let value = |i: usize| {
                    let slot = plan.features.get(i)?.slot;
                    values
                        .iter()
                        .find(|(j, _)| *j as usize == slot)
                        .map(|(_, v)| v)
                };
                m.ingest(ts, &value, sink)?;
            }
        }
        Ok(())
    }
}

/// Monitors a stream of [`DriftRecord`]s (computed features of a view, say) on
/// worker 0. Records are held until the watermark passes their event time and then ingested in
/// (time, values) order, so profiles, detectors and alerts do not depend on how the producers'
/// outputs interleave (nor on the number of workers). `plans` are the monitor parts that read
/// the stream, with feature slots set to the indices the records use.
pub fn drift_stream_operator(
    stream: &DriftRecordStream<'_>,
    plans: Vec<Arc<DriftPlan>>,
    sink: Arc<dyn DriftSink>,
    failure: Arc<Mutex<Option<RunError>>>,
) {
    let name = name_of(&plans);
    stream
        .clone()
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &DriftRecord| 0u64),
            &format!("DriftStream({name})"),
            move |_capability, _info| {
                let mut monitors = match StreamMonitors::new(plans) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        fail(&failure, RunError::Dataflow(e));
                        None
                    }
                };
                let mut finished = false;
                let mut ended = false;
                move |(input, frontier), _output| {
                    input.for_each(|_cap, data| {
                        for record in data.drain(..) {
                            let Some(m) = monitors.as_mut() else {
                                continue;
                            };
                            match record {
                                DriftRecord::Values { ts_ms, values } => m.push(ts_ms, values),
                                DriftRecord::End { clock_ms } => {
                                    ended = true;
                                    if let Some(c) = clock_ms {
                                        m.saw(c);
                                    }
                                }
                            }
                        }
                    });
                    let Some(m) = monitors.as_mut() else {
                        return;
                    };
                    if finished {
                        return;
                    }
                    let result = match frontier.frontier().first() {
                        None => {
                            finished = true;
                            if ended {
                                m.finish(&*sink)
                            } else {
                                Ok(())
                            }
                        }
                        Some(&time) if time > 0 => m.advance(time - 1, &*sink),
                        Some(_) => Ok(()),
                    };
                    if let Err(e) = result {
                        fail(&failure, RunError::Dataflow(e));
                    }
                }
            },
        );
}

/// A [`ViewPlan`] reduced to the features at `positions`: continuous groups and `last` features
/// (`hopping == false`), or hopping/tumbling groups (`hopping == true`). `None` when nothing
/// monitored is of that shape.
fn reduced_view(view: &ViewPlan, positions: &[usize], hopping: bool) -> Option<ViewPlan> {
    let keep = |groups: &[Group]| -> Vec<Group> {
        groups
            .iter()
            .filter_map(|g| {
                let outputs: Vec<_> = g
                    .outputs
                    .iter()
                    .filter(|(p, _)| positions.contains(p))
                    .copied()
                    .collect();
                (!outputs.is_empty()).then(|| prune_group(g, outputs))
            })
            .collect()
    };
    let reduced = if hopping {
        ViewPlan {
            continuous: Vec::new(),
            hopping: keep(&view.hopping),
            last: Vec::new(),
            ..view.clone()
        }
    } else {
        ViewPlan {
            continuous: keep(&view.continuous),
            hopping: Vec::new(),
            last: view
                .last
                .iter()
                .filter(|(p, _)| positions.contains(p))
                .copied()
                .collect(),
            ..view.clone()
        }
    };
    let empty =
        reduced.continuous.is_empty() && reduced.hopping.is_empty() && reduced.last.is_empty();
    (!empty).then_some(reduced)
}

/// `group` with only `outputs`, and only the accumulators and fields they read (the window
/// operator's group may hold sketches and distinct counts for features nobody monitors).
fn prune_group(group: &Group, outputs: Vec<(usize, Output)>) -> Group {
    let acc_of = |o: &Output| match *o {
        Output::Count => None,
        Output::Sum(a)
        | Output::Mean(a)
        | Output::Stddev(a)
        | Output::Min(a)
        | Output::Max(a)
        | Output::Quantile(a, _)
        | Output::CountDistinct(a)
        | Output::ApproxCountDistinct(a) => Some(a),
    };
    let mut accs: Vec<usize> = outputs.iter().filter_map(|(_, o)| acc_of(o)).collect();
    accs.sort_unstable();
    accs.dedup();
    let mut fields: Vec<usize> = accs
        .iter()
        .filter_map(|&a| group.accs.get(a).map(|(_, f)| *f))
        .collect();
    fields.sort_unstable();
    fields.dedup();
    let new_field = |f: usize| fields.iter().position(|&x| x == f).unwrap_or(0);
    let new_acc = |a: usize| accs.iter().position(|&x| x == a).unwrap_or(0);
    let outputs = outputs
        .into_iter()
        .map(|(p, o)| {
            let o = match o {
                Output::Count => Output::Count,
                Output::Sum(a) => Output::Sum(new_acc(a)),
                Output::Mean(a) => Output::Mean(new_acc(a)),
                Output::Stddev(a) => Output::Stddev(new_acc(a)),
                Output::Min(a) => Output::Min(new_acc(a)),
                Output::Max(a) => Output::Max(new_acc(a)),
                Output::Quantile(a, q) => Output::Quantile(new_acc(a), q),
                Output::CountDistinct(a) => Output::CountDistinct(new_acc(a)),
                Output::ApproxCountDistinct(a) => Output::ApproxCountDistinct(new_acc(a)),
            };
            (p, o)
        })
        .collect();
    Group {
        length_ms: group.length_ms,
        slide_ms: group.slide_ms,
        accs: accs
            .iter()
            .filter_map(|&a| group.accs.get(a).map(|(k, f)| (*k, new_field(*f))))
            .collect(),
        fields: fields
            .iter()
            .filter_map(|&f| group.fields.get(f).copied())
            .collect(),
        outputs,
    }
}

fn scalar_of(value: &FeatureValue) -> Scalar {
    match value {
        FeatureValue::Null => Scalar::Null,
        FeatureValue::Int(i) => Scalar::Num(*i as f64),
        FeatureValue::Float(f) => Scalar::Num(*f),
        FeatureValue::Bool(b) => Scalar::Bool(*b),
        FeatureValue::Str(s) => Scalar::Str(Box::from(&**s)),
    }
}

/// The computed-feature tap of one view (module doc). Events wait until the watermark passes
/// their time, then every instant τ (an event time, or the time an event leaves a continuous
/// window) is applied in order to a copy of the window state reduced to the monitored features:
/// for every key whose continuous or `last` features changed at τ, the values at τ are emitted
/// at time τ; every hopping/tumbling window that closes is emitted at its end − 1 (its last
/// instant).
fn view_tap<'a>(
    records: &RecordStream<'a>,
    view: &ViewPlan,
    monitored: &[usize],
) -> DriftRecordStream<'a> {
    let continuous = reduced_view(view, monitored, false).map(Arc::new);
    let hopping = reduced_view(view, monitored, true).map(Arc::new);
    let lengths: Vec<u64> = {
        let mut l: Vec<u64> = continuous
            .iter()
            .flat_map(|v| v.continuous.iter().map(|g| g.length_ms))
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let last_fields: Vec<usize> = continuous
        .iter()
        .flat_map(|v| v.last.iter().map(|(_, slot)| *slot))
        .collect();
    let continuous_positions: Vec<usize> = continuous
        .iter()
        .flat_map(|v| {
            v.continuous
                .iter()
                .flat_map(|g| g.outputs.iter().map(|(p, _)| *p))
                .chain(v.last.iter().map(|(p, _)| *p))
        })
        .collect();
    let names: Vec<Arc<str>> = view.feature_names.clone();
    let name = view.schema.name.clone();
    records
        .clone()
        .exchange(|r: &Record| match r {
            Record::Event(e) => xxhash_rust::xxh3::xxh3_64(e.entity.as_bytes()),
            Record::End { to, .. } | Record::Barrier { to, .. } => *to,
        })
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<DriftRecord>>, _, _, _>(
            Pipeline,
            &format!("DriftTap({name})"),
            move |capability, _info| {
                let mut cap = Some(capability);
                let mut cont = continuous.map(ViewState::new);
                let mut hop = hopping.map(ViewState::new);
                let mut buffer: Vec<Decoded> = Vec::new();
                let mut expiries: BinaryHeap<std::cmp::Reverse<u64>> = BinaryHeap::new();
                let mut out: Vec<DriftRecord> = Vec::new();
                let mut writes: Vec<StoreWrite> = Vec::new();
                let mut closed: Vec<ClosedWindow> = Vec::new();
                let mut no_closed: Vec<ClosedWindow> = Vec::new();
                let mut t_end: Option<u64> = None;
                let mut watermark: Option<u64> = None;
                let mut ended = false;
                move |(input, frontier), output| {
                    input.for_each(|_cap, data| {
                        for record in data.drain(..) {
                            match record {
                                Record::Event(e) => {
                                    t_end = Some(t_end.map_or(e.ts_ms, |t| t.max(e.ts_ms)));
                                    buffer.push(e);
                                }
                                Record::End { clock_ms, .. } => {
                                    ended = true;
                                    if let Some(c) = clock_ms {
                                        t_end = Some(t_end.map_or(c, |t| t.max(c)));
                                    }
                                }
                                Record::Barrier { .. } => {}
                            }
                        }
                    });
                    let Some(c) = cap.as_mut() else { return };
                    // instants before `limit` are final (all of them, up to t_end, at the end)
                    let (limit, end) = match frontier.frontier().first() {
                        None => (t_end.map_or(0, |t| t.saturating_add(1)), true),
                        Some(&time) if time > 0 && watermark.is_none_or(|w| time - 1 > w) => {
                            watermark = Some(time - 1);
                            (time - 1, false)
                        }
                        Some(_) => return,
                    };
                    if !end || ended {
                        buffer.sort_by_key(|e| e.ts_ms);
                        let ready = buffer.partition_point(|e| e.ts_ms < limit);
                        let mut events = buffer.drain(..ready).peekable();
                        loop {
                            let next_event = events.peek().map(|e| e.ts_ms);
                            let next_expiry = expiries.peek().map(|r| r.0).filter(|t| *t < limit);
                            let instant = match (next_event, next_expiry) {
                                (Some(a), Some(b)) => a.min(b),
                                (Some(a), None) => a,
                                (None, Some(b)) => b,
                                (None, None) => break,
                            };
                            while let Some(e) = events.next_if(|e| e.ts_ms == instant) {
                                if let Some(s) = cont.as_mut() {
                                    s.ingest(&e, &last_fields);
                                    for l in &lengths {
                                        expiries
                                            .push(std::cmp::Reverse(instant.saturating_add(*l)));
                                    }
                                }
                                if let Some(s) = hop.as_mut() {
                                    s.ingest(&e, &[]);
                                }
                            }
                            while expiries.peek().is_some_and(|r| r.0 == instant) {
                                expiries.pop();
                            }
                            if let Some(s) = cont.as_mut() {
                                // no hopping group in this state: nothing closes here
                                s.advance(instant, instant, &mut no_closed, &mut writes);
                                s.flush(false, usize::MAX, &mut writes);
                                for write in writes.drain(..) {
                                    if let StoreWrite::Upsert { vector, .. } = write {
                                        let values = continuous_positions
                                            .iter()
                                            .filter_map(|&p| {
                                                Some((p as u32, scalar_of(vector.values.get(p)?)))
                                            })
                                            .collect();
                                        out.push(DriftRecord::Values {
                                            ts_ms: instant,
                                            values,
                                        });
                                    }
                                }
                            }
                            if let Some(s) = hop.as_mut() {
                                s.advance(instant, instant, &mut closed, &mut writes);
                                writes.clear();
                            }
                        }
                        drop(events);
                        if let Some(s) = hop.as_mut() {
                            // windows ending at or before the watermark hold only earlier events
                            let w = if end { t_end.unwrap_or(0) } else { limit };
                            s.advance(w, w, &mut closed, &mut writes);
                            writes.clear();
                            for cw in closed.drain(..) {
                                if let Some(p) = names.iter().position(|n| *n == cw.feature) {
                                    out.push(DriftRecord::Values {
                                        ts_ms: cw.window_end_ms.saturating_sub(1),
                                        values: vec![(p as u32, scalar_of(&cw.value))],
                                    });
                                }
                            }
                        }
                        if end {
                            out.push(DriftRecord::End { clock_ms: t_end });
                        }
                    }
                    if !out.is_empty() {
                        output.session(&*c).give_iterator(out.drain(..));
                    }
                    match frontier.frontier().first() {
                        Some(&time) => c.downgrade(&time),
                        None => cap = None,
                    }
                }
            },
        )
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
            detectors: Vec::new(),
            alert: DriftAlertSpec {
                chi_square_p: Some(0.01),
                fire_after: 1,
                clear_after: 1,
                ..DriftAlertSpec::default()
            },
            numeric: NumericConfig::default(),
            categorical: CategoricalConfig::default(),
            chi_square: ChiSquareMethod::GoodnessOfFit,
            adwin: AdwinConfig::default(),
            page_hinkley: PageHinkleyConfig::default(),
            input: DriftInput::Fields,
        })
    }

    impl MonitorState {
        /// Ingests an event whose values are in slot order (every feature carried).
        fn ingest_slots(
            &mut self,
            ts: u64,
            values: &[Scalar],
            sink: &dyn DriftSink,
        ) -> Result<(), String> {
            let plan = self.plan.clone();
            let value = |i: usize| {
                let slot = plan.features.get(i).map(|f| f.slot);
                Some(slot.and_then(|s| values.get(s)).unwrap_or(&NULL))
            };
            self.ingest(ts, &value, sink)
        }
    }

    fn event(x: Scalar, c: &str) -> Vec<Scalar> {
        vec![x, Scalar::Str(c.into())]
    }

    #[test]
    fn duration_reference_waits_for_the_watermark_and_buffers_what_follows() {
        let sink = Recorder::default();
        let mut m = MonitorState::new(plan(ReferencePlan::FirstDuration(15))).expect("plan");
        // reference [3, 18): a null first, so the kind comes from the first number
        m.ingest_slots(3, &event(Scalar::Null, "a"), &sink)
            .expect("ingest");
        for ts in 4..18 {
            m.ingest_slots(ts, &event(Scalar::Num(ts as f64), "a"), &sink)
                .expect("ingest");
        }
        // after the reference period but before the watermark reaches 18: buffered; 18 and 19
        // fall before the first window [20, 30) and are not compared
        for ts in [18, 19, 21, 22] {
            m.ingest_slots(ts, &event(Scalar::Num(100.0), "b"), &sink)
                .expect("ingest");
        }
        m.advance(17, false, &sink);
        assert!(sink.take().is_empty(), "reference not complete at w = 17");
        m.advance(18, false, &sink);
        assert_eq!(
            sink.take(),
            ["ref s.x numeric 14", "ref s.c categorical 15"]
        );
        m.ingest_slots(29, &event(Scalar::Str("oops".into()), "a"), &sink)
            .expect("ingest");
        m.ingest_slots(35, &event(Scalar::Num(1.0), "a"), &sink)
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
            m.ingest_slots(ts, &event(Scalar::Num(1.0), "a"), &sink)
                .expect("ingest");
        }
        // frozen at the third event; the period ends after time 12, so windows start at 20
        assert_eq!(sink.take().len(), 2);
        for ts in [13, 25, 47] {
            m.ingest_slots(ts, &event(Scalar::Num(1.0), "a"), &sink)
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
            m.ingest_slots(5, &event(Scalar::Num(2.0), "a"), &sink)
                .expect("ingest");
            m.ingest_slots(
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
    fn detectors_see_values_in_time_order_and_alerts_fire_then_clear() {
        let sink = Recorder::default();
        let mut plan = (*plan(ReferencePlan::Pinned(Arc::new(BTreeMap::new())))).clone();
        plan.detectors = vec![Measure::PageHinkley];
        plan.page_hinkley = PageHinkleyConfig {
            min_instances: 5,
            delta: 0.0,
            threshold: 1.0,
            alpha: 1.0,
            mode: freshet_drift::PageHinkleyMode::Both,
        };
        let mut m = MonitorState::new(Arc::new(plan)).expect("plan");
        // 0 until time 50, then 10; delivered newest first
        for ts in (0..70u64).rev() {
            let x = if ts < 50 { 0.0 } else { 10.0 };
            m.ingest_slots(ts, &event(Scalar::Num(x), "a"), &sink)
                .expect("ingest");
        }
        // nothing before the watermark passes
        assert!(sink.take().is_empty());
        m.advance(55, false, &sink);
        // in time order the first 10 comes at 50: detected there; in arrival order the first
        // values would all be 10
        assert_eq!(sink.take(), ["alert s.x page_hinkley firing at 50"]);
        // no detection after the reset (constant 10): clears one window (10) later
        m.advance(100, true, &sink);
        assert_eq!(sink.take(), ["alert s.x page_hinkley cleared at 60"]);
    }

    #[test]
    fn lagged_reference_keeps_bounded_summaries_of_past_windows() {
        let sink = Recorder::default();
        let mut plan = (*plan(ReferencePlan::Lagged {
            lag_ms: 20,
            duration_ms: 20,
        }))
        .clone();
        plan.numeric = NumericConfig {
            bins: 10,
            reference_sample: 1_000,
            window_sample: 800,
        };
        let mut m = MonitorState::new(Arc::new(plan)).expect("plan");
        let mut windows = 0;
        for k in 0..50u64 {
            for i in 0..5_000u64 {
                let ts = k * 10 + i % 10;
                let x = ((i * 7919) % 1000) as f64;
                m.ingest_slots(
                    ts,
                    &event(Scalar::Num(x), if i % 3 == 0 { "a" } else { "b" }),
                    &sink,
                )
                .expect("ingest");
            }
            m.advance(k * 10 + 10, false, &sink);
            // at most (lag + duration) / window summaries, each sample at most
            // reference_sample / (duration / window) = 500 values
            assert!(m.ring.len() <= 4, "{} summaries", m.ring.len());
            for summaries in m.ring.values() {
                for s in summaries {
                    if let Summary::Numeric { sample, .. } = s {
                        assert!(sample.values().len() <= 500);
                        assert_eq!(sample.seen(), 5_000);
                    }
                }
            }
            windows += sink
                .take()
                .iter()
                .filter(|l| l.starts_with("window s.x"))
                .count();
        }
        // the first window with a complete reference [e - 40, e - 20) ends at 40
        assert_eq!(windows, 50 - 3);
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
