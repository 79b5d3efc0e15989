//! `[[model]]`: an online model of a pipeline, trained example by example as labels arrive.
//!
//! These are the parsed, self-documenting spec types; [`ModelSpec::validate`] runs every
//! cross-field check without I/O and names the offending field in a [`ModelSpecError`]. The
//! models themselves live in `freshet-learn`, which is the only crate that builds candle.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::HumanDuration;
use crate::serving::TrafficPolicy;

/// Mini-batch size when a model does not set one: learn after every labelled example.
pub const DEFAULT_BATCH_SIZE: usize = 1;
/// Hash buckets of the categorical weights of linear models (as in Vowpal Wabbit's 18 bits).
pub const DEFAULT_LINEAR_HASH_BUCKETS: u32 = 1 << 18;
/// Hash buckets of the categorical embedding table of `mlp` models.
pub const DEFAULT_MLP_HASH_BUCKETS: u32 = 1 << 12;
/// Width of the hashed categorical embeddings of `mlp` models.
pub const DEFAULT_EMBEDDING_DIM: usize = 8;
/// Hidden layer sizes of an `mlp` that does not set `hidden`.
pub const DEFAULT_HIDDEN: &[usize] = &[32, 16];
/// Updates between two published model versions.
pub const DEFAULT_PUBLISH_EVERY: u64 = 1;
/// Updates between two checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1_000_000;
/// Examples in the rolling window of the prequential metrics.
pub const DEFAULT_ROLLING_WINDOW: usize = 10_000;
/// How long a logged example waits for its label when `label.max_delay` is not set.
pub const DEFAULT_MAX_LABEL_DELAY: HumanDuration = HumanDuration::from_secs(600);
/// Learning rate of `sgd` when not set.
pub const DEFAULT_SGD_LR: f64 = 0.05;
/// Learning rate of `adam` when not set (tuned on the dense drift stream, docs/learning.md).
pub const DEFAULT_ADAM_LR: f64 = 0.005;
/// Learning rate of `adagrad` when not set (tuned like Adam's).
pub const DEFAULT_ADAGRAD_LR: f64 = 0.3;
/// FTRL-Proximal `alpha` when not set (tuned like Adam's; inputs are standardised).
pub const DEFAULT_FTRL_ALPHA: f64 = 0.3;
/// Largest accepted `batch_size`.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
/// Largest accepted `rolling_window`.
pub const MAX_ROLLING_WINDOW: usize = 10_000_000;
/// Largest accepted `hash_buckets`.
pub const MAX_HASH_BUCKETS: u32 = 1 << 26;

/// `[[model]]`: one online model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name, used in models.jsonl, checkpoints, metric labels and the serving API.
    pub name: String,
    /// What is learned: `logistic_regression`, `linear_regression`, `softmax` or `mlp`.
    pub kind: ModelKind,
    /// Inputs, in order: computed features as `view.feature`, event fields as `source.field`;
    /// a `*` in the part after the dot matches any run of characters (`samples.x*`). Numbers are
    /// standardised online; strings are hashed (see `categorical`); a missing value counts as
    /// zero plus a missing-indicator input.
    pub features: Vec<String>,
    /// Features whose numeric values are categories (hashed by their text, like strings).
    #[serde(default)]
    pub categorical: Vec<String>,
    /// Where the label comes from.
    pub label: LabelSpec,
    /// How the weights are updated (default `{ kind = "adam", lr = 0.005 }`).
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Examples per update; each example is scored before the update that learns it.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `cpu` (default) or `cuda:N` (needs a binary built with the `cuda` feature).
    #[serde(default)]
    pub device: DeviceSpec,
    /// `mlp` only: hidden layer sizes, input side first (default `[32, 16]`).
    #[serde(default)]
    pub hidden: Option<Vec<usize>>,
    /// `mlp` only: the hidden layers' activation, `relu` (default) or `tanh`.
    #[serde(default)]
    pub activation: Option<Activation>,
    /// `softmax` only: number of classes; labels are class indices `0..classes`.
    #[serde(default)]
    pub classes: Option<usize>,
    /// Hash buckets for categorical values, a power of two (default 2^18 for linear kinds, 2^12
    /// for `mlp`).
    #[serde(default)]
    pub hash_buckets: Option<u32>,
    /// `mlp` only: width of the learned hashed embeddings of categorical values (default 8).
    #[serde(default)]
    pub embedding_dim: Option<usize>,
    /// L2 penalty `l2/2 * |w|^2` on every weight but the biases (default 0).
    #[serde(default)]
    pub l2: f64,
    /// Learning-rate schedule of `sgd`, `adam` and `adagrad` (default constant).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Updates between two published versions that serving reads (default 1: every update).
    #[serde(default = "default_publish_every")]
    pub publish_every: u64,
    /// Updates between two checkpoints (default 10000); 0 checkpoints only at shutdown.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Examples in the rolling window of the prequential metrics (default 10000).
    #[serde(default = "default_rolling_window")]
    pub rolling_window: usize,
    /// `[model.serving]`: the traffic policy at start and versions loaded from files (default:
    /// `latest`, no files).
    #[serde(default, skip_serializing_if = "ModelServingSpec::is_default")]
    pub serving: ModelServingSpec,
}

/// `[model.serving]`: how a model is served when the process starts. Policies set later (admin
/// endpoint, `freshet models traffic`) replace this one until the file's policy changes.
///
/// ```toml
/// [model.serving]
/// traffic = { canary = { version = 412, percent = 10 } }  # or "latest", { pin = N }, { shadow = N }
/// versions = ["versions/fraud.v412.json"]                  # held from start
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelServingSpec {
    /// The traffic policy at start, written as in the admin endpoint: `"latest"` (default),
    /// `{ pin = N }`, `{ canary = { version = N, percent = P } }` or `{ shadow = N }`. The
    /// version it names must be held at start: one of `versions`, or the learner's current one.
    #[serde(default)]
    pub traffic: TrafficPolicy,
    /// Versions loaded at start and held for the process's life, besides those the learner
    /// publishes: version files (`<model>.v<N>.json`, as serving writes them) or model
    /// checkpoint directories (as `replay --models-dir`, `run` and `freshet models export`
    /// write them). Relative paths are read from the working directory.
    #[serde(default)]
    pub versions: Vec<std::path::PathBuf>,
}

impl ModelServingSpec {
    /// Whether this is the default (`latest`, no files).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

const fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}

const fn default_publish_every() -> u64 {
    DEFAULT_PUBLISH_EVERY
}

const fn default_checkpoint_every() -> u64 {
    DEFAULT_CHECKPOINT_EVERY
}

const fn default_rolling_window() -> usize {
    DEFAULT_ROLLING_WINDOW
}

/// The kinds of model; each one's loss is in docs/learning.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Binary classifier, labels 0 or 1, log loss; the score is P(label = 1).
    LogisticRegression,
    /// Regression, any finite label, squared loss; the score is the prediction.
    LinearRegression,
    /// Multiclass classifier, labels `0..classes`, cross-entropy; scores are class
    /// probabilities.
    Softmax,
    /// Multilayer perceptron; binary (1 output, log loss) or, with `classes`, multiclass.
    Mlp,
}

impl ModelKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Self; 4] = [
        Self::LogisticRegression,
        Self::LinearRegression,
        Self::Softmax,
        Self::Mlp,
    ];

    /// The name used in pipeline files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::LogisticRegression => "logistic_regression",
            Self::LinearRegression => "linear_regression",
            Self::Softmax => "softmax",
            Self::Mlp => "mlp",
        }
    }

    /// Whether the model is linear in its (preprocessed) inputs.
    pub const fn is_linear(self) -> bool {
        !matches!(self, Self::Mlp)
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Hidden-layer activation of an `mlp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
}

/// `label = { .. }`: where each example's label comes from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// The `[[source]]` whose events carry labels, arriving after the example (a delayed
    /// label); without it the label is a field of the example's own event.
    #[serde(default)]
    pub source: Option<String>,
    /// With `source`: the field that both the example's event and the label event carry and
    /// that joins them (e.g. `event_id`).
    #[serde(default)]
    pub join_key: Option<String>,
    /// The field holding the label: 0/1 (or false/true) for binary kinds, a class index for
    /// multiclass, a number for regression.
    pub field: String,
    /// With `source`: how long, in event time, an example waits for its label (default 10m).
    #[serde(default, serialize_with = "serialize_opt_duration")]
    pub max_delay: Option<HumanDuration>,
    /// What becomes of an example whose label never comes: `drop` (default) or, for
    /// classifiers, `negative` (learned as label 0, as for fraud labels that only report
    /// positives).
    #[serde(default)]
    pub unlabeled: Unlabeled,
}

impl LabelSpec {
    /// The label wait of a delayed label (`max_delay` or its default); `None` for an immediate
    /// label.
    pub fn max_delay(&self) -> Option<HumanDuration> {
        self.source
            .as_ref()
            .map(|_| self.max_delay.unwrap_or(DEFAULT_MAX_LABEL_DELAY))
    }
}

fn serialize_opt_duration<S: Serializer>(
    value: &Option<HumanDuration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.collect_str(d),
        None => serializer.serialize_none(),
    }
}

/// What becomes of an example whose label never arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlabeled {
    /// It is discarded, unlearned and unscored.
    #[default]
    Drop,
    /// It is learned (and scored) as label 0.
    Negative,
}

/// `optimizer = { kind = .. }`: the update rule (formulas in docs/learning.md).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Plain stochastic gradient descent: `w -= lr * g`.
    Sgd {
        /// Learning rate (default 0.05).
        #[serde(default = "default_sgd_lr")]
        lr: f64,
    },
    /// Adam (Kingma and Ba, 2015) with bias correction.
    Adam {
        /// Learning rate (default 0.005).
        #[serde(default = "default_adam_lr")]
        lr: f64,
        /// Decay of the first-moment average (default 0.9).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Decay of the second-moment average (default 0.999).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Added to the root of the second moment (default 1e-8).
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// AdaGrad (Duchi et al., 2011): per-coordinate rate `lr / (sqrt(sum g^2) + eps)`.
    Adagrad {
        /// Learning rate (default 0.3).
        #[serde(default = "default_adagrad_lr")]
        lr: f64,
        /// Added to the root of the squared-gradient sum (default 1e-8).
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// FTRL-Proximal (McMahan et al., 2013), per-coordinate rates with L1 and L2; linear
    /// kinds only.
    Ftrl {
        /// Rate scale `alpha` (default 0.3).
        #[serde(default = "default_ftrl_alpha")]
        alpha: f64,
        /// Rate smoothing `beta` (default 1).
        #[serde(default = "default_ftrl_beta")]
        beta: f64,
        /// L1 strength, which makes weights exactly zero (default 0).
        #[serde(default)]
        l1: f64,
        /// L2 strength of the proximal step (default 0).
        #[serde(default)]
        l2: f64,
    },
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self::Adam {
            lr: DEFAULT_ADAM_LR,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
        }
    }
}

impl OptimizerSpec {
    /// The name used in pipeline files.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::Adam { .. } => "adam",
            Self::Adagrad { .. } => "adagrad",
            Self::Ftrl { .. } => "ftrl",
        }
    }
}

const fn default_sgd_lr() -> f64 {
    DEFAULT_SGD_LR
}

const fn default_adam_lr() -> f64 {
    DEFAULT_ADAM_LR
}

const fn default_adagrad_lr() -> f64 {
    DEFAULT_ADAGRAD_LR
}

const fn default_beta1() -> f64 {
    0.9
}

const fn default_beta2() -> f64 {
    0.999
}

const fn default_eps() -> f64 {
    1e-8
}

const fn default_ftrl_alpha() -> f64 {
    DEFAULT_FTRL_ALPHA
}

const fn default_ftrl_beta() -> f64 {
    1.0
}

/// `lr_schedule = { kind = .. }`: how the learning rate decays with the update count `t`
/// (`t` = 0 at the first update).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `lr_t = lr`.
    #[default]
    Constant,
    /// `lr_t = lr / sqrt(1 + t / t0)`.
    InverseSqrt {
        /// Updates over which the rate falls to `1/sqrt(2)` of `lr` (default 1000).
        #[serde(default = "default_schedule_t0")]
        t0: f64,
    },
    /// `lr_t = lr / (1 + t / t0)`.
    InverseTime {
        /// Updates over which the rate halves (default 1000).
        #[serde(default = "default_schedule_t0")]
        t0: f64,
    },
}

const fn default_schedule_t0() -> f64 {
    1000.0
}

impl LrSchedule {
    /// The factor applied to the base rate at update `t`.
    pub fn factor(&self, t: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)] // update counts stay far below 2^52
        let t = t as f64;
        match *self {
            Self::Constant => 1.0,
            Self::InverseSqrt { t0 } => 1.0 / (1.0 + t / t0).sqrt(),
            Self::InverseTime { t0 } => 1.0 / (1.0 + t / t0),
        }
    }
}

/// `device = ".."`: where a model's tensors live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The host CPU (default).
    #[default]
    Cpu,
    /// CUDA device number N (`cuda:N`; `cuda` alone means `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("invalid device `{text}`: expected \"cpu\" or \"cuda:N\"")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A `[[model]]` that fails validation: which model, which field, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}`: {field}: {problem}")]
pub struct ModelSpecError {
    /// The model's name.
    pub model: String,
    /// The offending field, as written in the file (`optimizer.lr`, `label.join_key`).
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

impl ModelSpec {
    fn error(&self, field: &str, problem: impl Into<String>) -> ModelSpecError {
        ModelSpecError {
            model: self.name.clone(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    /// Every check that needs only this table (no I/O, no other tables); the pipeline checks
    /// that sources and views exist.
    pub fn validate(&self) -> Result<(), ModelSpecError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(self.error(
                "name",
                format!("`{}`: expected letters, digits, `_` or `-`", self.name),
            ));
        }
        self.validate_features()?;
        self.serving
            .traffic
            .validate()
            .map_err(|problem| self.error("serving.traffic", problem))?;
        self.validate_label()?;
        self.validate_shape()?;
        self.validate_optimizer()?;
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(self.error(
                "batch_size",
                format!("{}: expected 1 to {MAX_BATCH_SIZE}", self.batch_size),
            ));
        }
        if self.publish_every == 0 {
            return Err(self.error("publish_every", "0: expected at least 1 update"));
        }
        if !(1..=MAX_ROLLING_WINDOW).contains(&self.rolling_window) {
            return Err(self.error(
                "rolling_window",
                format!(
                    "{}: expected 1 to {MAX_ROLLING_WINDOW}",
                    self.rolling_window
                ),
            ));
        }
        Ok(())
    }

    fn validate_features(&self) -> Result<(), ModelSpecError> {
        if self.features.is_empty() {
            return Err(self.error(
                "features",
                "empty: expected [\"view.feature\" or \"source.field\", ..]",
            ));
        }
        for (i, feature) in self.features.iter().enumerate() {
            let split = feature.split_once('.');
            let ok = split.is_some_and(|(scope, field)| {
                !scope.is_empty() && !field.is_empty() && !scope.contains('*')
            });
            if !ok {
                return Err(self.error(
                    "features",
                    format!("`{feature}`: expected `view.feature` or `source.field` (a `*` only after the dot)"),
                ));
            }
            if self.features[..i].contains(feature) {
                return Err(self.error("features", format!("`{feature}` is listed twice")));
            }
        }
        for name in &self.categorical {
            if !self.features.iter().any(|p| glob_match(p, name)) {
                return Err(self.error(
                    "categorical",
                    format!("`{name}` is not one of the model's features"),
                ));
            }
        }
        Ok(())
    }

    fn validate_label(&self) -> Result<(), ModelSpecError> {
        let label = &self.label;
        if label.field.is_empty() {
            return Err(self.error("label.field", "empty: expected the field holding the label"));
        }
        match (&label.source, &label.join_key) {
            (Some(_), None) => {
                return Err(self.error(
                    "label.join_key",
                    "missing: a label from another source needs join_key = \"field\"",
                ))
            }
            (None, Some(_)) => {
                return Err(self.error(
                    "label.join_key",
                    "only applies with label.source (labels from another source)",
                ))
            }
            (Some(source), Some(key)) if source.is_empty() || key.is_empty() => {
                return Err(self.error("label.source", "source and join_key must not be empty"))
            }
            _ => {}
        }
        match (label.source.is_some(), label.max_delay) {
            (false, Some(_)) => {
                return Err(self.error(
                    "label.max_delay",
                    "only applies with label.source (an immediate label does not wait)",
                ))
            }
            (true, Some(d)) if d.as_ms() == 0 => {
                return Err(self.error("label.max_delay", "must be positive"))
            }
            _ => {}
        }
        if label.unlabeled == Unlabeled::Negative && !self.is_classifier() {
            return Err(self.error(
                "label.unlabeled",
                format!(
                    "`negative` needs a classifier, not kind = \"{}\"",
                    self.kind
                ),
            ));
        }
        Ok(())
    }

    fn validate_shape(&self) -> Result<(), ModelSpecError> {
        let mlp = self.kind == ModelKind::Mlp;
        for (set, field) in [
            (self.hidden.is_some(), "hidden"),
            (self.activation.is_some(), "activation"),
            (self.embedding_dim.is_some(), "embedding_dim"),
        ] {
            if set && !mlp {
                return Err(self.error(
                    field,
                    format!("applies to kind = \"mlp\" only, not \"{}\"", self.kind),
                ));
            }
        }
        if let Some(hidden) = &self.hidden {
            if hidden.is_empty() || hidden.iter().any(|&h| h == 0 || h > 65_536) {
                return Err(self.error(
                    "hidden",
                    format!("{hidden:?}: expected one or more layer sizes from 1 to 65536"),
                ));
            }
        }
        if self.embedding_dim.is_some_and(|d| d == 0 || d > 4096) {
            return Err(self.error("embedding_dim", "expected 1 to 4096"));
        }
        match (self.kind, self.classes) {
            (ModelKind::Softmax, None) => {
                return Err(self.error("classes", "kind = \"softmax\" needs classes = N (N >= 2)"))
            }
            (ModelKind::Softmax | ModelKind::Mlp, Some(c)) if !(2..=65_536).contains(&c) => {
                return Err(self.error("classes", format!("{c}: expected 2 to 65536")))
            }
            (ModelKind::LogisticRegression | ModelKind::LinearRegression, Some(_)) => {
                return Err(self.error(
                    "classes",
                    format!(
                        "applies to kind = \"softmax\" or \"mlp\", not \"{}\"",
                        self.kind
                    ),
                ))
            }
            _ => {}
        }
        if let Some(b) = self.hash_buckets {
            if b == 0 || !b.is_power_of_two() || b > MAX_HASH_BUCKETS {
                return Err(self.error(
                    "hash_buckets",
                    format!(
                        "{b}: expected a power of two from 1 to {MAX_HASH_BUCKETS} (e.g. 1024)"
                    ),
                ));
            }
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(self.error("l2", format!("{}: expected a number >= 0", self.l2)));
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<(), ModelSpecError> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(self.error(field, format!("{v}: expected a positive number")))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(self.error(field, format!("{v}: expected a number >= 0")))
            }
        };
        let decay = |field: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(self.error(field, format!("{v}: expected 0 <= {field} < 1")))
            }
        };
        match self.optimizer {
            OptimizerSpec::Sgd { lr } => positive("optimizer.lr", lr)?,
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                positive("optimizer.lr", lr)?;
                decay("optimizer.beta1", beta1)?;
                decay("optimizer.beta2", beta2)?;
                positive("optimizer.eps", eps)?;
            }
            OptimizerSpec::Adagrad { lr, eps } => {
                positive("optimizer.lr", lr)?;
                positive("optimizer.eps", eps)?;
            }
            OptimizerSpec::Ftrl {
                alpha,
                beta,
                l1,
                l2,
            } => {
                positive("optimizer.alpha", alpha)?;
                non_negative("optimizer.beta", beta)?;
                non_negative("optimizer.l1", l1)?;
                non_negative("optimizer.l2", l2)?;
                if self.kind == ModelKind::Mlp {
                    return Err(self.error(
                        "optimizer.kind",
                        "ftrl is for linear kinds; an mlp takes sgd, adam or adagrad",
                    ));
                }
                if self.lr_schedule != LrSchedule::Constant {
                    return Err(self.error(
                        "lr_schedule",
                        "ftrl sets its own per-coordinate rates; lr_schedule applies to sgd, adam and adagrad",
                    ));
                }
            }
        }
        match self.lr_schedule {
            LrSchedule::Constant => Ok(()),
            LrSchedule::InverseSqrt { t0 } | LrSchedule::InverseTime { t0 } => {
                positive("lr_schedule.t0", t0)
            }
        }
    }

    /// Whether the model predicts classes (log loss, accuracy) rather than numbers.
    pub const fn is_classifier(&self) -> bool {
        !matches!(self.kind, ModelKind::LinearRegression)
    }

    /// Number of outputs: 1 for binary and regression models, `classes` for multiclass ones.
    pub fn outputs(&self) -> usize {
        match (self.kind, self.classes) {
            (ModelKind::Softmax | ModelKind::Mlp, Some(c)) => c,
            _ => 1,
        }
    }

    /// `hash_buckets`, or the default of the kind.
    pub fn hash_buckets(&self) -> u32 {
        self.hash_buckets.unwrap_or(if self.kind.is_linear() {
            DEFAULT_LINEAR_HASH_BUCKETS
        } else {
            DEFAULT_MLP_HASH_BUCKETS
        })
    }

    /// `hidden`, or the default for an `mlp`; empty for linear kinds.
    pub fn hidden_layers(&self) -> Vec<usize> {
        match (&self.hidden, self.kind) {
            (Some(h), _) => h.clone(),
            (None, ModelKind::Mlp) => DEFAULT_HIDDEN.to_vec(),
            (None, _) => Vec::new(),
        }
    }

    /// `embedding_dim`, or its default.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim.unwrap_or(DEFAULT_EMBEDDING_DIM)
    }

    /// Expands `features` into concrete input names: a literal is kept as written; a pattern
    /// with `*` becomes every matching name of `available`, in sorted order. A pattern that
    /// matches nothing is an error.
    pub fn resolve_features<'a>(
        &self,
        available: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Vec<String>, ModelSpecError> {
        let mut out: Vec<String> = Vec::new();
        for pattern in &self.features {
            if !pattern.contains('*') {
                if !out.contains(pattern) {
                    out.push(pattern.clone());
                }
                continue;
            }
            let mut matched: Vec<&str> = available
                .clone()
                .into_iter()
                .filter(|name| glob_match(pattern, name))
                .collect();
            if matched.is_empty() {
                return Err(self.error(
                    "features",
                    format!("`{pattern}` matches no feature or field"),
                ));
            }
            matched.sort_unstable();
            for name in matched {
                if !out.iter().any(|o| o == name) {
                    out.push(name.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Whether input `name` (a resolved feature) is declared categorical.
    pub fn is_categorical(&self, name: &str) -> bool {
        self.categorical.iter().any(|c| c == name)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (possibly empty)
/// and every other character matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut tail) = name.strip_prefix(head) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        model: Vec<ModelSpec>,
    }

    fn parse(text: &str) -> Result<ModelSpec, String> {
        let mut doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        let spec = doc.model.pop().ok_or("no model")?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    const FRAUD: &str = r#"
[[model]]
name = "fraud"
kind = "logistic_regression"     # logistic_regression | linear_regression | softmax | mlp
features = ["card.txn_count_5m", "card.amount_mean_1h", "transactions.amount", "transactions.country"]
label = { source = "labels", join_key = "event_id", field = "label", max_delay = "10m" }
optimizer = { kind = "ftrl", alpha = 0.05, beta = 1.0, l1 = 0.0, l2 = 1.0 }
batch_size = 64
device = "cpu"                   # or "cuda:N"
"#;

    const SAMPLES: &str = r#"
[[model]]
name = "samples"
kind = "logistic_regression"
features = ["samples.x*"]
label = { field = "y" }
optimizer = { kind = "adam", lr = 0.01 }
batch_size = 1
"#;

    #[test]
    fn the_documented_fraud_example_parses() {
        let spec = parse(FRAUD).expect("valid");
        assert_eq!(spec.kind, ModelKind::LogisticRegression);
        assert_eq!(spec.features.len(), 4);
        assert_eq!(spec.label.source.as_deref(), Some("labels"));
        assert_eq!(spec.label.join_key.as_deref(), Some("event_id"));
        assert_eq!(spec.label.max_delay(), Some(HumanDuration::from_secs(600)));
        assert_eq!(spec.label.unlabeled, Unlabeled::Drop);
        assert_eq!(
            spec.optimizer,
            OptimizerSpec::Ftrl {
                alpha: 0.05,
                beta: 1.0,
                l1: 0.0,
                l2: 1.0
            }
        );
        assert_eq!(spec.batch_size, 64);
        assert_eq!(spec.device, DeviceSpec::Cpu);
        assert_eq!(spec.hash_buckets(), DEFAULT_LINEAR_HASH_BUCKETS);
        assert_eq!(spec.publish_every, DEFAULT_PUBLISH_EVERY);
        assert_eq!(spec.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
        assert_eq!(spec.rolling_window, DEFAULT_ROLLING_WINDOW);
        assert!(spec.hidden_layers().is_empty());
    }

    #[test]
    fn the_documented_samples_example_parses_and_expands_its_glob() {
        let spec = parse(SAMPLES).expect("valid");
        assert_eq!(spec.label.max_delay(), None);
        assert_eq!(spec.batch_size, 1);
        let fields = [
            "samples.x10",
            "samples.x2",
            "samples.y",
            "samples.x1",
            "other.x1",
        ];
        let resolved = spec.resolve_features(fields).expect("matches");
        assert_eq!(resolved, ["samples.x1", "samples.x10", "samples.x2"]);
        let err = spec.resolve_features(["other.x1"]).expect_err("no match");
        assert!(
            err.to_string().contains("`samples.x*` matches no feature"),
            "{err}"
        );
    }

    #[test]
    fn every_optional_field_parses() {
        let spec = parse(
            r#"
[[model]]
name = "m"
kind = "mlp"
features = ["s.a", "s.b", "s.zip"]
categorical = ["s.zip"]
label = { source = "labels", join_key = "id", field = "y", max_delay = "30s", unlabeled = "negative" }
optimizer = { kind = "adagrad", lr = 0.2 }
batch_size = 32
device = "cuda:1"
hidden = [64, 8]
activation = "tanh"
classes = 3
hash_buckets = 1024
embedding_dim = 4
l2 = 0.001
lr_schedule = { kind = "inverse_sqrt", t0 = 500 }
publish_every = 10
checkpoint_every = 0
rolling_window = 500
"#,
        )
        .expect("valid");
        assert_eq!(spec.device, DeviceSpec::Cuda(1));
        assert_eq!(spec.hidden_layers(), [64, 8]);
        assert_eq!(spec.outputs(), 3);
        assert!(spec.is_categorical("s.zip"));
        assert_eq!(spec.activation, Some(Activation::Tanh));
        assert!((spec.lr_schedule.factor(1500) - 0.5).abs() < 1e-12);
        let json = serde_json::to_string(&spec).expect("serialises");
        assert!(json.contains("\"max_delay\":\"30s\""), "{json}");
        assert!(json.contains("\"device\":\"cuda:1\""), "{json}");
    }

    fn with(extra: &str) -> String {
        format!("{}{extra}\n", SAMPLES.replace("batch_size = 1\n", ""))
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: &[(&str, &str)] = &[
            (
                "[[model]]\nname = \"m\"\nkind = \"svm\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\n",
                "unknown variant `svm`",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"mlp\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\ncolour = 1\n",
                "unknown field `colour`",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"mlp\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\ndevice = \"gpu\"\n",
                "expected \"cpu\" or \"cuda:N\"",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"mlp\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\noptimizer = { kind = \"sgd\", alpha = 1 }\n",
                "unknown field `alpha`",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"mlp\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\", max_delay = \"10 minutes\" }\n",
                "invalid duration",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"mlp\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\noptimizer = { kind = \"ftrl\" }\n",
                "model `m`: optimizer.kind: ftrl is for linear kinds",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"softmax\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\n",
                "model `m`: classes: kind = \"softmax\" needs classes",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"linear_regression\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\", unlabeled = \"negative\" }\n",
                "label.unlabeled: `negative` needs a classifier",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"linear_regression\"\nfeatures = [\"s.a\"]\nlabel = { source = \"l\", field = \"y\" }\n",
                "label.join_key: missing",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"linear_regression\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\", max_delay = \"1m\" }\n",
                "label.max_delay: only applies with label.source",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"linear_regression\"\nfeatures = [\"a\"]\nlabel = { field = \"y\" }\n",
                "features: `a`: expected `view.feature`",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"linear_regression\"\nfeatures = [\"s.a\", \"s.a\"]\nlabel = { field = \"y\" }\n",
                "features: `s.a` is listed twice",
            ),
            (
                "[[model]]\nname = \"m\"\nkind = \"linear_regression\"\nfeatures = [\"s.a\"]\ncategorical = [\"s.b\"]\nlabel = { field = \"y\" }\n",
                "categorical: `s.b` is not one of the model's features",
            ),
            (
                "[[model]]\nname = \"bad name\"\nkind = \"linear_regression\"\nfeatures = [\"s.a\"]\nlabel = { field = \"y\" }\n",
                "name: `bad name`",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.contains(expected),
                "{text}\n=> {err}\nexpected {expected}"
            );
        }
        let more: &[(&str, &str)] = &[
            ("batch_size = 0", "batch_size: 0: expected 1 to 65536"),
            ("hidden = [4]", "hidden: applies to kind = \"mlp\" only"),
            (
                "classes = 3",
                "classes: applies to kind = \"softmax\" or \"mlp\"",
            ),
            (
                "hash_buckets = 1000",
                "hash_buckets: 1000: expected a power of two",
            ),
            ("l2 = -1.0", "l2: -1: expected a number >= 0"),
            ("publish_every = 0", "publish_every: 0"),
            ("rolling_window = 0", "rolling_window: 0"),
            (
                "lr_schedule = { kind = \"inverse_time\", t0 = 0 }",
                "lr_schedule.t0: 0",
            ),
        ];
        for (extra, expected) in more {
            let err = parse(&with(extra)).expect_err(extra);
            assert!(
                err.contains(expected),
                "{extra}\n=> {err}\nexpected {expected}"
            );
        }
        let bad_lr = SAMPLES.replace("lr = 0.01", "lr = -0.5");
        let err = parse(&bad_lr).expect_err("negative lr");
        assert_eq!(
            err,
            "model `samples`: optimizer.lr: -0.5: expected a positive number"
        );
        let bad_beta = SAMPLES.replace("lr = 0.01", "beta1 = 1.0");
        assert!(parse(&bad_beta)
            .expect_err("beta1 = 1")
            .contains("optimizer.beta1: 1: expected 0 <= optimizer.beta1 < 1"));
        let ftrl_schedule = FRAUD.replace(
            "batch_size = 64",
            "batch_size = 64\nlr_schedule = { kind = \"inverse_sqrt\" }",
        );
        assert!(parse(&ftrl_schedule)
            .expect_err("ftrl + schedule")
            .contains("lr_schedule: ftrl sets its own"));
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob_match("s.x*", "s.x"));
        assert!(glob_match("s.x*", "s.x12"));
        assert!(glob_match("s.*_1h", "s.amount_mean_1h"));
        assert!(glob_match("s.a*b*c", "s.aXbYc"));
        assert!(!glob_match("s.a*b*c", "s.aXcYb"));
        assert!(!glob_match("s.x*", "t.x1"));
        assert!(!glob_match("s.ab*ba", "s.aba"));
        assert!(glob_match("s.a", "s.a"));
    }
}
