//! The pipeline file: one TOML document declaring sources, feature views, drift monitors, the
//! online store and the HTTP listener.
//!
//! Parsing rejects unknown keys; [`PipelineSpec::from_toml`] then runs every cross-field check in
//! one validation step that does no I/O. Every error names the file, the line and the column and
//! says what was expected ([`SpecError`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::duration::HumanDuration;

pub use freshet_drift::Measure;
pub use serving::{ServingKind, ServingSpec};

pub mod serving;

/// Allowed lateness when a source does not set one: events must arrive in event-time order.
pub const DEFAULT_ALLOWED_LATENESS: HumanDuration = HumanDuration::from_millis(0);
/// Wall time after which a silent partition stops holding the head back.
pub const DEFAULT_IDLE_TIMEOUT: HumanDuration = HumanDuration::from_secs(5);
/// Address the HTTP API listens on when `[serve]` does not set one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Consumer group used when `[kafka]` does not set one.
pub const DEFAULT_GROUP_ID: &str = "freshet";
/// Default `[kafka] fetch_wait`: how long a source consumer's fetch may wait on the broker.
pub const DEFAULT_FETCH_WAIT: HumanDuration = HumanDuration::from_millis(20);

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Kafka connection used by `freshet run`; `replay` and `demo` do not need it.
    #[serde(default)]
    pub kafka: Option<KafkaSpec>,
    /// Where feature vectors are kept for serving.
    #[serde(default)]
    pub store: StoreSpec,
    /// The HTTP listener.
    #[serde(default)]
    pub serve: ServeSpec,
    /// Event sources (`[[source]]`).
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<SourceSpec>>,
    /// Feature views (`[[feature_view]]`).
    #[serde(default, rename = "feature_view")]
    pub feature_views: Vec<Spanned<FeatureViewSpec>>,
    /// Drift monitors (`[[drift]]`).
    #[serde(default, rename = "drift")]
    pub drift: Vec<Spanned<DriftSpec>>,
    /// Online models (`[[model]]`, see [`crate::model`]).
    #[serde(default, rename = "model")]
    pub models: Vec<Spanned<crate::model::ModelSpec>>,
    /// Kafka request/response serving (`[[serving]]`, see [`serving`]).
    #[serde(default, rename = "serving")]
    pub serving: Vec<Spanned<ServingSpec>>,
}

/// `[kafka]`: how to reach the brokers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Consumer group id shared by every freshet process of this pipeline.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// The longest a source consumer's fetch waits on the broker when the partition has no new
    /// records (librdkafka's `fetch.wait.max.ms`). A broker may hold every fetch this long, not
    /// only empty ones (tansu does), so it bounds what reading adds to an event's freshness;
    /// shorter means more fetch requests while a partition is quiet.
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait: HumanDuration,
}

const fn default_fetch_wait() -> HumanDuration {
    DEFAULT_FETCH_WAIT
}

fn default_group_id() -> String {
    DEFAULT_GROUP_ID.to_owned()
}

/// Which online-store backend holds the feature vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// In-process store, the embedded default; nothing to run beside freshet.
    #[default]
    Memory,
    /// A Redis server or cluster at `url`.
    Redis,
}

/// `[store]`: the online store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// Connection URL, required for `redis` (`redis://host:port/db`).
    #[serde(default)]
    pub url: Option<String>,
    /// Prefix of every Redis key (default `freshet`), so pipelines can share a database.
    #[serde(default)]
    pub key_prefix: Option<String>,
}

/// `[serve]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSpec {
    /// Socket address to listen on; default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for ServeSpec {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
}

/// What happens to an event that arrives later than the allowed lateness. Either way it is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Late events go to the dead-letter output with their reason.
    #[default]
    DeadLetter,
    /// Late events are counted and discarded.
    Drop,
}

/// `[[source]]`: a stream of JSON events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Name that feature views and `--input NAME=FILE` refer to.
    pub name: String,
    /// Kafka topic read by `freshet run` (default: the source name); described in `topics/`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Field holding the entity key (a string or an integer).
    pub entity: String,
    /// Field holding the event time: epoch milliseconds (integer) or an RFC 3339 string.
    pub event_time: String,
    /// How far behind its partition's clock an event may arrive and still count.
    #[serde(default = "default_allowed_lateness")]
    pub allowed_lateness: HumanDuration,
    /// What to do with late events: `dead_letter` (default) or `drop`.
    #[serde(default)]
    pub late_policy: LatePolicy,
    /// Wall time after which a silent partition stops holding the head back (default 5s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
}

const fn default_allowed_lateness() -> HumanDuration {
    DEFAULT_ALLOWED_LATENESS
}

const fn default_idle_timeout() -> HumanDuration {
    DEFAULT_IDLE_TIMEOUT
}

/// `[[feature_view]]`: features computed per entity of one source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewSpec {
    /// View name, used in the store, the HTTP API and model feature references (`view.feature`).
    pub name: String,
    /// The `[[source]]` whose events feed this view.
    pub source: String,
    /// An entity whose latest event is this much event time older than the head leaves the store.
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
    /// The features of the view.
    pub features: Vec<Spanned<FeatureSpec>>,
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggKind {
    /// Number of events.
    Count,
    /// Sum of a numeric field.
    Sum,
    /// Arithmetic mean of a numeric field.
    Mean,
    /// Smallest value of a numeric field.
    Min,
    /// Largest value of a numeric field.
    Max,
    /// Population standard deviation of a numeric field.
    Stddev,
    /// Exact number of distinct values of a field.
    CountDistinct,
    /// HyperLogLog estimate of the number of distinct values of a field.
    ApproxCountDistinct,
    /// Quantile `q` of a numeric field, from a relative-error sketch.
    Quantile,
    /// Value of the latest event by event time (no window).
    Last,
}

impl AggKind {
    /// The name used in pipeline files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Max => "max",
            Self::Stddev => "stddev",
            Self::CountDistinct => "count_distinct",
            Self::ApproxCountDistinct => "approx_count_distinct",
            Self::Quantile => "quantile",
            Self::Last => "last",
        }
    }

    /// Whether the aggregate reads its field as a number (a non-numeric value rejects the event).
    pub const fn is_numeric(self) -> bool {
        matches!(
            self,
            Self::Sum | Self::Mean | Self::Min | Self::Max | Self::Stddev | Self::Quantile
        )
    }
}

/// One feature of a view.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Feature name, unique within its view.
    pub name: String,
    /// Aggregate function.
    pub agg: AggKind,
    /// Event field the aggregate reads; every aggregate but `count` needs one.
    #[serde(default)]
    pub field: Option<String>,
    /// Window length. Without `slide`: a continuous window `(head - window, head]`.
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// Hop between window starts: hopping windows `[k*slide, k*slide + window)`; tumbling when
    /// equal to `window`. `window` must be a whole multiple of `slide`.
    #[serde(default)]
    pub slide: Option<HumanDuration>,
    /// Quantile in (0, 1), for `quantile` only.
    #[serde(default)]
    pub q: Option<f64>,
}

/// `[[drift]]`: a drift monitor over event fields and computed features, comparing tumbling
/// event-time windows with a reference profile, running streaming change detectors, and raising
/// alerts (docs/drift.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    /// Monitor name, used in drift.jsonl, `/v1/drift`, metric labels and reference snapshots.
    pub name: String,
    /// Monitored values: event fields as `source.field` (e.g. `transactions.amount`),
    /// computed features of a feature view as `view.feature` (e.g. `card.amount_mean_1h`), or a
    /// model's prequential scores and errors as `model.NAME.score` / `model.NAME.error`
    /// ([`model_stream_ref`]).
    pub features: Vec<String>,
    /// Where the reference profiles come from.
    pub reference: ReferenceSpec,
    /// Length of the tumbling event-time windows `[k*window, (k+1)*window)` compared with the
    /// reference.
    pub window: HumanDuration,
    /// Methods (default: the five window measures). Window measures: numeric fields get `psi`,
    /// `ks`, `jensen_shannon` and `wasserstein`; categorical fields `psi`, `jensen_shannon` and
    /// `chi_square`. Streaming detectors, on every value of a numeric field in event-time order:
    /// `adwin` and `page_hinkley`. A method that does not apply to a field's kind is skipped
    /// for it.
    #[serde(default = "default_methods")]
    pub methods: Vec<Measure>,
    /// Alert thresholds and hysteresis (default: no thresholds, so no alerts).
    #[serde(default)]
    pub alert: DriftAlertSpec,
    /// Field kinds by field name (`{ value = "numeric" }`); a field not named here takes the kind
    /// of its first non-null reference value: a number is numeric, a string or boolean
    /// categorical.
    #[serde(default)]
    pub kinds: BTreeMap<String, DriftFieldKind>,
    /// Profile sizes of numeric fields (bins, reference and window sample sizes).
    #[serde(default)]
    pub numeric: freshet_drift::NumericConfig,
    /// Profile sizes of categorical fields (top-K categories, reference summary size).
    #[serde(default)]
    pub categorical: freshet_drift::CategoricalConfig,
    /// `chi_square` test: `goodness_of_fit` (default; the reference proportions taken as
    /// exact) or `two_sample` (reference and window counts both samples).
    #[serde(default)]
    pub chi_square_test: freshet_drift::ChiSquareMethod,
    /// ADWIN parameters, for `adwin` in `methods` (default: River's).
    #[serde(default)]
    pub adwin: freshet_drift::AdwinConfig,
    /// Page-Hinkley parameters, for `page_hinkley` in `methods` (default: River's).
    #[serde(default)]
    pub page_hinkley: freshet_drift::PageHinkleyConfig,
    /// Kafka topic `freshet run` produces each alert transition to (JSON, keyed by
    /// `monitor/feature`); none by default.
    #[serde(default)]
    pub alert_topic: Option<String>,
}

fn default_methods() -> Vec<Measure> {
    Measure::ALL.to_vec()
}

/// `reference = { kind = .. }`: how a drift monitor gets its reference profiles.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReferenceSpec {
    /// The start of the run: the first `duration` of event time, or the first `events` events
    /// (exactly one of the two).
    First {
        /// Event time `[t0, t0 + duration)`, t0 = the time of the first event of the source.
        #[serde(default)]
        duration: Option<HumanDuration>,
        /// The first N events of the source.
        #[serde(default)]
        events: Option<u64>,
    },
    /// A pinned snapshot written by `freshet drift snapshot`; a relative path is relative to the
    /// pipeline file's directory.
    File {
        /// The snapshot file.
        path: PathBuf,
    },
    /// A rolling reference: the window ending at `e` is compared with event time
    /// `[e - lag - duration, e - lag)`. `lag` and `duration` are whole multiples of `window`,
    /// and `lag` is at least one window.
    Lagged {
        /// How far back the reference period ends, before the window's end.
        lag: HumanDuration,
        /// Length of the reference period.
        duration: HumanDuration,
    },
}

/// Most windows of history a lagged reference may keep (`(lag + duration) / window`).
pub const MAX_LAGGED_WINDOWS: u64 = 10_000;

/// How a monitored field is profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftFieldKind {
    /// Quantile bins and a sample: PSI, KS, Jensen–Shannon, Wasserstein.
    Numeric,
    /// Top-K categories plus "other": PSI, Jensen–Shannon, chi-square.
    Categorical,
}

/// `alert = { .. }`: per-measure thresholds, the hysteresis shared by them, and delivery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftAlertSpec {
    /// PSI at or above this breaches.
    #[serde(default)]
    pub psi: Option<f64>,
    /// A KS p-value below this breaches.
    #[serde(default)]
    pub ks_p: Option<f64>,
    /// Jensen–Shannon distance at or above this breaches.
    #[serde(default)]
    pub jensen_shannon: Option<f64>,
    /// Normed Wasserstein distance at or above this breaches.
    #[serde(default)]
    pub wasserstein: Option<f64>,
    /// A chi-square p-value below this breaches.
    #[serde(default)]
    pub chi_square_p: Option<f64>,
    /// Consecutive breaching windows before an alert fires (default 2).
    #[serde(default = "default_fire_after")]
    pub fire_after: u32,
    /// Consecutive calm windows before a firing alert clears (default 3); a firing detector
    /// alert clears after this many windows' worth of event time without a detection.
    #[serde(default = "default_clear_after")]
    pub clear_after: u32,
    /// `http://host[:port]/path` that each alert transition is POSTed to as JSON, with retries,
    /// from a background thread (docs/drift.md); none by default.
    #[serde(default)]
    pub webhook: Option<String>,
}

const fn default_fire_after() -> u32 {
    freshet_drift::alert::DEFAULT_FIRE_AFTER
}

const fn default_clear_after() -> u32 {
    freshet_drift::alert::DEFAULT_CLEAR_AFTER
}

impl Default for DriftAlertSpec {
    fn default() -> Self {
        Self {
            psi: None,
            ks_p: None,
            jensen_shannon: None,
            wasserstein: None,
            chi_square_p: None,
            fire_after: default_fire_after(),
            clear_after: default_clear_after(),
            webhook: None,
        }
    }
}

impl DriftAlertSpec {
    /// The configured threshold of a window measure, if any (detectors have none here: see
    /// [`DriftSpec::detector_parameter`]).
    pub fn threshold(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::Psi => self.psi,
            Measure::Ks => self.ks_p,
            Measure::JensenShannon => self.jensen_shannon,
            Measure::Wasserstein => self.wasserstein,
            Measure::ChiSquare => self.chi_square_p,
            Measure::Adwin | Measure::PageHinkley => None,
        }
    }

    /// The alert rule of `measure`, when it has a threshold.
    pub fn rule(&self, measure: Measure) -> Option<freshet_drift::AlertRule> {
        self.threshold(measure)
            .map(|threshold| freshet_drift::AlertRule {
                threshold,
                direction: freshet_drift::Direction::for_measure(measure),
                fire_after: self.fire_after,
                clear_after: self.clear_after,
            })
    }
}

/// The name of a measure's key in `alert = { .. }` (detectors have none; their name is given).
pub const fn alert_key(measure: Measure) -> &'static str {
    match measure {
        Measure::Psi => "psi",
        Measure::Ks => "ks_p",
        Measure::JensenShannon => "jensen_shannon",
        Measure::Wasserstein => "wasserstein",
        Measure::ChiSquare => "chi_square_p",
        Measure::Adwin => "adwin",
        Measure::PageHinkley => "page_hinkley",
    }
}

/// The streams of a model that a drift monitor can watch: `model.NAME.score` and
/// `model.NAME.error` (docs/drift.md, "Model scores and errors").
pub const MODEL_STREAMS: [&str; 2] = ["score", "error"];

/// `(model, stream)` when `feature` names a model stream (`model.NAME.score` or
/// `model.NAME.error`, NAME without dots); `None` otherwise.
pub fn model_stream_ref(feature: &str) -> Option<(&str, &str)> {
    let (name, stream) = feature.strip_prefix("model.")?.split_once('.')?;
    (!name.is_empty() && MODEL_STREAMS.contains(&stream)).then_some((name, stream))
}

impl DriftSpec {
    /// The monitored event fields and computed features as (source or view, field or feature)
    /// pairs, model streams excluded; call on a validated spec.
    pub fn feature_refs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.features
            .iter()
            .filter(|f| model_stream_ref(f).is_none())
            .filter_map(|f| f.split_once('.'))
    }

    /// The monitored model streams as (model, `score` or `error`) pairs.
    pub fn model_refs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.features.iter().filter_map(|f| model_stream_ref(f))
    }

    /// The window measures of `methods`, in [`Measure::ALL`] order.
    pub fn window_measures(&self) -> impl Iterator<Item = Measure> + '_ {
        Measure::ALL
            .into_iter()
            .filter(|m| self.methods.contains(m))
    }

    /// The streaming detectors of `methods`, in [`Measure::DETECTORS`] order.
    pub fn detectors(&self) -> impl Iterator<Item = Measure> + '_ {
        Measure::DETECTORS
            .into_iter()
            .filter(|m| self.methods.contains(m))
    }

    /// The parameter a detector alert reports as its threshold: ADWIN's δ, Page-Hinkley's λ.
    pub fn detector_parameter(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::Adwin => Some(self.adwin.delta),
            Measure::PageHinkley => Some(self.page_hinkley.threshold),
            _ => None,
        }
    }
}

/// A pipeline-file error: where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line, 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Errors reading a pipeline file from disk.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}", path.display())]
    Io {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid pipeline.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Errors<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Errors<'_> {
    fn at(&self, offset: usize, message: impl Into<String>) -> SpecError {
        let (line, column) = line_col(self.text, offset);
        SpecError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}

impl PipelineSpec {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_toml(&text, path)?)
    }

    /// Parses and validates pipeline text; `file` is only used in error messages.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, SpecError> {
        let errors = Errors { file, text };
        let spec: Self = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let mut err = errors.at(offset, e.message().trim().to_owned());
            if e.span().is_none() {
                err.line = 0;
            }
            err
        })?;
        spec.validate(&errors)?;
        Ok(spec)
    }

    /// The `[[feature_view]]` named `name`.
    pub fn feature_view(&self, name: &str) -> Option<&Spanned<FeatureViewSpec>> {
        self.feature_views.iter().find(|v| v.get_ref().name == name)
    }

    /// Looks up a source by name.
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources
            .iter()
            .map(Spanned::get_ref)
            .find(|s| s.name == name)
    }

    fn validate(&self, errors: &Errors<'_>) -> Result<(), SpecError> {
        if self.store.backend == StoreBackend::Redis && self.store.url.is_none() {
            return Err(errors.at(
                0,
                "[store] backend = \"redis\" needs url = \"redis://host:port/db\"",
            ));
        }
        let mut source_names = HashSet::new();
        for source in &self.sources {
            let at = source.span().start;
            let s = source.get_ref();
            check_name(errors, at, "source", &s.name)?;
            if !source_names.insert(s.name.as_str()) {
                return Err(errors.at(at, format!("duplicate source name `{}`", s.name)));
            }
            if s.entity == s.event_time {
                return Err(errors.at(
                    at,
                    format!(
                        "source `{}`: entity and event_time name the same field `{}`",
                        s.name, s.entity
                    ),
                ));
            }
        }
        let mut view_names = HashSet::new();
        for view in &self.feature_views {
            let at = view.span().start;
            let v = view.get_ref();
            check_name(errors, at, "feature_view", &v.name)?;
            if !view_names.insert(v.name.as_str()) {
                return Err(errors.at(at, format!("duplicate feature_view name `{}`", v.name)));
            }
            if !source_names.contains(v.source.as_str()) {
                let known: Vec<&str> = source_names.iter().copied().collect();
                return Err(errors.at(
                    at,
                    format!(
                        "feature_view `{}` reads source `{}`, which is not declared; expected one of: {}",
                        v.name,
                        v.source,
                        if known.is_empty() { "(no [[source]] declared)".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
            if v.ttl.is_some_and(|t| t.as_ms() == 0) {
                return Err(errors.at(
                    at,
                    format!("feature_view `{}`: ttl must be positive", v.name),
                ));
            }
            if v.features.is_empty() {
                return Err(errors.at(
                    at,
                    format!("feature_view `{}` declares no features", v.name),
                ));
            }
            let mut feature_names = HashSet::new();
            for feature in &v.features {
                let fat = feature.span().start;
                let f = feature.get_ref();
                check_name(errors, fat, "feature", &f.name)?;
                if !feature_names.insert(f.name.as_str()) {
                    return Err(errors.at(
                        fat,
                        format!("duplicate feature `{}` in view `{}`", f.name, v.name),
                    ));
                }
                validate_feature(f)
                    .map_err(|m| errors.at(fat, format!("feature `{}`: {m}", f.name)))?;
            }
        }
        let mut drift_names = HashSet::new();
        for monitor in &self.drift {
            let at = monitor.span().start;
            let d = monitor.get_ref();
            check_name(errors, at, "drift", &d.name)?;
            if !drift_names.insert(d.name.as_str()) {
                return Err(errors.at(at, format!("duplicate drift name `{}`", d.name)));
            }
            self.validate_drift(d)
                .map_err(|m| errors.at(at, format!("drift `{}`: {m}", d.name)))?;
        }
        let mut model_names = HashSet::new();
        for model in &self.models {
            let at = model.span().start;
            let m = model.get_ref();
            m.validate().map_err(|e| errors.at(at, e.to_string()))?;
            if !model_names.insert(m.name.as_str()) {
                return Err(errors.at(at, format!("duplicate model name `{}`", m.name)));
            }
            self.validate_model(m)
                .map_err(|e| errors.at(at, format!("model `{}`: {e}", m.name)))?;
        }
        let models: Vec<&str> = self
            .models
            .iter()
            .map(|m| m.get_ref().name.as_str())
            .collect();
        let mut serving_names = HashSet::new();
        for table in &self.serving {
            let at = table.span().start;
            let s = table.get_ref();
            check_name(errors, at, "serving", &s.name)?;
            if !serving_names.insert(s.name.as_str()) {
                return Err(errors.at(at, format!("duplicate serving name `{}`", s.name)));
            }
            if self.kafka.is_none() {
                return Err(errors.at(
                    at,
                    format!(
                        "serving `{}` reads a Kafka topic: add a [kafka] section with `brokers`",
                        s.name
                    ),
                ));
            }
            s.validate(&models)
                .map_err(|e| errors.at(at, format!("serving `{}`: {e}", s.name)))?;
        }
        Ok(())
    }

    /// Cross-table checks of a model: its features name existing views or sources, all of one
    /// source (the model's *event source*), and its label source exists.
    fn validate_model(&self, m: &crate::model::ModelSpec) -> Result<(), String> {
        let mut event_source: Option<&str> = None;
        let mut views = HashSet::new();
        for feature in &m.features {
            let Some((table, name)) = feature.split_once('.') else {
                return Err(format!(
                    "feature `{feature}`: expected `view.feature` or `source.field`"
                ));
            };
            let source = if let Some(view) = self.feature_view(table) {
                let v = view.get_ref();
                if !v.features.iter().any(|f| f.get_ref().name == name) {
                    return Err(format!(
                        "feature `{feature}`: view `{table}` has no feature `{name}`"
                    ));
                }
                views.insert(table);
                v.source.as_str()
            } else if self.source(table).is_some() {
                table
            } else {
                return Err(format!(
                    "feature `{feature}`: no feature view or source named `{table}`"
                ));
            };
            match event_source {
                Some(s) if s != source => {
                    return Err(format!(
                        "feature `{feature}` comes from source `{source}` but other features from `{s}`; a model reads one source's events"
                    ))
                }
                _ => event_source = Some(source),
            }
        }
        if views.len() > 1 {
            return Err("features from more than one feature view; use one view per model".into());
        }
        if let Some(label_source) = &m.label.source {
            if self.source(label_source).is_none() {
                return Err(format!("label source `{label_source}` is not a [[source]]"));
            }
            if Some(label_source.as_str()) == event_source {
                return Err("the label source must differ from the features' source".into());
            }
        }
        Ok(())
    }

    /// A drift feature `model.NAME.score|error`: NAME must be a declared model, and no source
    /// or view may be called `model` (the name would be ambiguous).
    fn validate_model_stream(&self, feature: &str, model: &str) -> Result<(), String> {
        let shadow = self.source("model").is_some()
            || self
                .feature_views
                .iter()
                .any(|v| v.get_ref().name == "model");
        if shadow {
            return Err(format!(
                "feature `{feature}`: `model.NAME.score|error` names a model stream, but a source or feature view is also called `model`; rename it"
            ));
        }
        if self.models.iter().any(|m| m.get_ref().name == model) {
            return Ok(());
        }
        let known: Vec<&str> = self
            .models
            .iter()
            .map(|m| m.get_ref().name.as_str())
            .collect();
        Err(format!(
            "feature `{feature}` reads model `{model}`, which is not declared; expected one of: {}",
            if known.is_empty() {
                "(no [[model]] declared)".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }

    fn validate_drift(&self, d: &DriftSpec) -> Result<(), String> {
        if d.features.is_empty() {
            return Err(
                "declares no features; expected features = [\"source.field\" or \"view.feature\", ..]"
                    .into(),
            );
        }
        let mut seen = HashSet::new();
        for feature in &d.features {
            if !seen.insert(feature.as_str()) {
                return Err(format!("duplicate feature `{feature}`"));
            }
            if let Some((model, _)) = model_stream_ref(feature) {
                self.validate_model_stream(feature, model)?;
                continue;
            }
            let Some((owner, field)) = feature.split_once('.') else {
                return Err(format!(
                    "feature `{feature}`: expected `source.field` (e.g. \"transactions.amount\") or `view.feature`"
                ));
            };
            if field.is_empty() || owner.is_empty() {
                return Err(format!(
                    "feature `{feature}`: expected `source.field` or `view.feature`"
                ));
            }
            let view = self
                .feature_views
                .iter()
                .map(Spanned::get_ref)
                .find(|v| v.name == owner);
            match (self.source(owner), view) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "feature `{feature}`: `{owner}` names both a source and a feature view; rename one of them"
                    ));
                }
                (Some(s), None) => {
                    if field == s.entity || field == s.event_time {
                        return Err(format!(
                            "feature `{feature}`: `{field}` is the source's entity or event_time field, not a monitorable value"
                        ));
                    }
                }
                (None, Some(v)) => {
                    if !v.features.iter().any(|f| f.get_ref().name == field) {
                        let known: Vec<&str> = v
                            .features
                            .iter()
                            .map(|f| f.get_ref().name.as_str())
                            .collect();
                        return Err(format!(
                            "feature `{feature}`: view `{owner}` has no feature `{field}`; expected one of: {}",
                            known.join(", ")
                        ));
                    }
                }
                (None, None) => {
                    let mut known: Vec<&str> = self
                        .sources
                        .iter()
                        .map(|s| s.get_ref().name.as_str())
                        .collect();
                    known.extend(self.feature_views.iter().map(|v| v.get_ref().name.as_str()));
                    return Err(format!(
                        "feature `{feature}` reads source `{owner}`, which is not declared (nor is such a feature view); expected one of: {}",
                        if known.is_empty() {
                            "(no [[source]] declared)".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        match &d.reference {
            ReferenceSpec::First { duration, events } => match (duration, events) {
                (Some(t), None) if t.as_ms() > 0 => {}
                (None, Some(n)) if *n > 0 => {}
                (Some(_), None) => return Err("reference duration must be positive".into()),
                (None, Some(_)) => return Err("reference events must be positive".into()),
                _ => {
                    return Err(
                        "reference kind = \"first\" needs exactly one of duration = \"..\" or events = N"
                            .into(),
                    )
                }
            },
            ReferenceSpec::File { path } => {
                if path.as_os_str().is_empty() {
                    return Err("reference kind = \"file\" needs path = \"ref.json\"".into());
                }
            }
            ReferenceSpec::Lagged { lag, duration } => {
                let w = d.window.as_ms();
                if w > 0 {
                    let (lag, duration) = (lag.as_ms(), duration.as_ms());
                    if lag < w || lag % w != 0 || duration < w || duration % w != 0 {
                        return Err(format!(
                            "reference kind = \"lagged\": lag and duration must be whole multiples of window = \"{}\" (lag at least one window)",
                            d.window
                        ));
                    }
                    if (lag + duration) / w > MAX_LAGGED_WINDOWS {
                        return Err(format!(
                            "reference kind = \"lagged\": (lag + duration) / window = {} windows of history, at most {MAX_LAGGED_WINDOWS}",
                            (lag + duration) / w
                        ));
                    }
                }
            }
        }
        if d.window.as_ms() == 0 {
            return Err("window must be positive".into());
        }
        if d.methods.is_empty() {
            return Err(
                "methods is empty; expected some of psi, ks, jensen_shannon, wasserstein, chi_square, adwin, page_hinkley".into(),
            );
        }
        let mut methods = HashSet::new();
        for m in &d.methods {
            if !methods.insert(*m) {
                return Err(format!("method `{}` listed twice", m.name()));
            }
        }
        for m in Measure::ALL {
            let Some(threshold) = d.alert.threshold(m) else {
                continue;
            };
            let key = alert_key(m);
            if !methods.contains(&m) {
                return Err(format!(
                    "alert.{key} is set but `{}` is not in methods",
                    m.name()
                ));
            }
            let ok = threshold.is_finite()
                && if m.fires_above() {
                    threshold > 0.0
                } else {
                    threshold > 0.0 && threshold < 1.0
                };
            if !ok {
                return Err(format!(
                    "alert.{key} = {threshold}: expected {}",
                    if m.fires_above() {
                        "a positive number"
                    } else {
                        "a p-value in (0, 1)"
                    }
                ));
            }
        }
        if d.alert.fire_after == 0 || d.alert.clear_after == 0 {
            return Err("alert fire_after and clear_after must be at least 1".into());
        }
        for field in d.kinds.keys() {
            if !d.feature_refs().any(|(_, f)| f == field) {
                return Err(format!(
                    "kinds: `{field}` is not the field of any feature of this monitor (write the field name, e.g. {{ amount = \"numeric\" }})"
                ));
            }
        }
        d.numeric.validate().map_err(|e| format!("numeric: {e}"))?;
        d.categorical
            .validate()
            .map_err(|e| format!("categorical: {e}"))?;
        d.adwin.validate().map_err(|e| format!("adwin: {e}"))?;
        d.page_hinkley
            .validate()
            .map_err(|e| format!("page_hinkley: {e}"))?;
        if let Some(url) = &d.alert.webhook {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!("alert.webhook = \"{url}\": expected http://host[:port]/path (https is not supported)")
            })?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("alert.webhook = \"{url}\": no host"));
            }
        }
        if d.alert_topic.as_deref().is_some_and(|t| {
            t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(
                "alert_topic: expected a Kafka topic name (letters, digits, `.`, `_`, `-`)".into(),
            );
        }
        Ok(())
    }
}

fn check_name(errors: &Errors<'_>, at: usize, what: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(errors.at(
            at,
            format!("{what} name `{name}`: expected letters, digits, `_` or `-`"),
        ))
    }
}

fn validate_feature(f: &FeatureSpec) -> Result<(), String> {
    let agg = f.agg.name();
    match (f.agg, &f.field) {
        (AggKind::Count, Some(_)) => {
            return Err("`count` counts events and takes no `field`".to_owned())
        }
        (AggKind::Count, None) => {}
        (_, None) => return Err(format!("`{agg}` needs `field = \"...\"`")),
        (_, Some(_)) => {}
    }
    match (f.agg, f.q) {
        (AggKind::Quantile, Some(q)) if q > 0.0 && q < 1.0 => {}
        (AggKind::Quantile, Some(q)) => return Err(format!("q = {q}: expected 0 < q < 1")),
        (AggKind::Quantile, None) => return Err("`quantile` needs `q`, e.g. q = 0.95".to_owned()),
        (_, Some(_)) => return Err(format!("`q` applies to `quantile` only, not `{agg}`")),
        (_, None) => {}
    }
    if f.agg == AggKind::Last {
        if f.window.is_some() || f.slide.is_some() {
            return Err("`last` has no window: remove `window`/`slide`".to_owned());
        }
        return Ok(());
    }
    let window = f
        .window
        .ok_or_else(|| format!("`{agg}` needs `window = \"...\"` (e.g. \"5m\")"))?;
    if window.as_ms() == 0 {
        return Err("window must be positive".to_owned());
    }
    if let Some(slide) = f.slide {
        if slide.as_ms() == 0 || slide > window {
            return Err(format!(
                "slide = \"{slide}\": expected a positive slide no longer than window = \"{window}\""
            ));
        }
        if window.as_ms() % slide.as_ms() != 0 {
            return Err(format!(
                "window = \"{window}\" is not a whole multiple of slide = \"{slide}\""
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
