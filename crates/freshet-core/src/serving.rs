//! The model-serving contract: what the serving layer (HTTP, and later Kafka request/response)
//! needs from online models, without compiling a learner, and the traffic policies that choose
//! which version of a model answers.
//!
//! A [`Scorer`] lists the served models ([`ModelDescription`]: inputs and where each comes from,
//! outputs) and hands out their current version as an immutable [`ModelVersion`]. A version never
//! changes once handed out, so a request that holds one scores with one whole model even while
//! the learner publishes the next (the binary implements the trait over freshet-learn's
//! registries, which swap versions with one atomic pointer store).
//!
//! A [`TrafficPolicy`] says which version serves: the latest, a pinned one, a canary share of
//! entities (sticky: an entity always lands on the same side, by [`canary_bucket`]), or the latest
//! with another version scored in the shadow.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::model::ModelKind;

/// Buckets of the canary split: a canary of `percent` takes the entities whose bucket is below
/// `percent * CANARY_BUCKETS / 100`, so shares are set to 0.01 %.
pub const CANARY_BUCKETS: u32 = 10_000;

/// Seed of the canary hash, so that the split is independent of the hashes the models and the
/// store use for the same keys.
const CANARY_SEED: u64 = 0x6672_6573_6865_7421;

/// One input value of a row to score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputValue<'a> {
    /// No value: a null feature, an entity the store does not hold, an absent request field. The
    /// model takes its learned missing-value path.
    Missing,
    /// A number (booleans are 0 and 1).
    Number(f64),
    /// A categorical value, by its text (the model hashes it as it did in training).
    Category(&'a str),
}

impl InputValue<'_> {
    /// Whether the model sees this value as missing (NaN and infinities count as missing, as in
    /// training).
    pub fn is_missing(&self) -> bool {
        match self {
            Self::Missing => true,
            Self::Number(n) => !n.is_finite(),
            Self::Category(_) => false,
        }
    }
}

/// Where a model input comes from when a request is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum InputSource {
    /// A computed feature, read from the online store for the request's entity.
    Feature {
        /// The feature view.
        view: String,
        /// The feature's name in the view.
        feature: String,
    },
    /// A field of the event being scored, taken from the request.
    Field {
        /// The source the model read the field from in training.
        source: String,
        /// The field's name.
        field: String,
    },
}

impl InputSource {
    /// Classifies an input name as the learner names it (`view.feature` or `source.field`):
    /// a feature when the part before the first dot is a view name, else an event field. `None`
    /// when the name has no dot.
    pub fn of(input: &str, is_view: impl Fn(&str) -> bool) -> Option<Self> {
        let (head, tail) = input.split_once('.')?;
        Some(if is_view(head) {
            Self::Feature {
                view: head.to_owned(),
                feature: tail.to_owned(),
            }
        } else {
            Self::Field {
                source: head.to_owned(),
                field: tail.to_owned(),
            }
        })
    }
}

/// One model input: its name (as in the pipeline's `features`) and where serving gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInput {
    /// Input name, e.g. `card.txn_count_5m` or `transactions.amount`.
    pub name: String,
    /// Where its value comes from.
    #[serde(flatten)]
    pub source: InputSource,
}

/// What a served model reads and produces; fixed for the model's life (every version has the
/// same inputs and outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDescription {
    /// Model name.
    pub name: String,
    /// Model kind.
    pub kind: ModelKind,
    /// Inputs, in the order a row's values follow.
    pub inputs: Vec<ModelInput>,
    /// Scores per row: 1 (binary classifiers: P(label = 1); regressions: the prediction), or the
    /// number of classes (class probabilities).
    pub outputs: usize,
}

/// Why a version could not score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// The rows do not have one value per input.
    #[error("{values} values do not make whole rows of {inputs} inputs")]
    Shape {
        /// Values given.
        values: usize,
        /// Inputs per row.
        inputs: usize,
    },
    /// The model failed (for example a device error); retrying will not help.
    #[error("model failed: {0}")]
    Model(String),
}

/// One immutable version of a model.
pub trait ModelVersion: Send + Sync + 'static {
    /// The version number (0 for the untrained model, then one more per publication).
    fn version(&self) -> u64;

    /// Scores `rows`, given row after row with one value per input of the model's
    /// [`ModelDescription::inputs`], appending [`ModelDescription::outputs`] scores per row
    /// to `out`.
    fn score(&self, rows: &[InputValue<'_>], out: &mut Vec<f32>) -> Result<(), ScoreError>;

    /// Writes this version into `dir`, so that a later process can load it again; returns the
    /// file to load. Versions that cannot be written say why (the default).
    fn save(&self, dir: &Path) -> Result<PathBuf, String> {
        Err(format!(
            "version {} cannot be written to {}",
            self.version(),
            dir.display()
        ))
    }
}

/// How a model starts serving: its traffic policy and the versions it holds from the start
/// (loaded from files), besides those its [`Scorer`] publishes.
#[derive(Clone, Default)]
pub struct ServingStart {
    /// The policy at start; the version it names must be among `versions` or be the scorer's
    /// current one.
    pub policy: TrafficPolicy,
    /// Versions held for the process's life.
    pub versions: Vec<Arc<dyn ModelVersion>>,
}

impl fmt::Debug for ServingStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingStart")
            .field("policy", &self.policy)
            .field(
                "versions",
                &self
                    .versions
                    .iter()
                    .map(|v| v.version())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Keeps the traffic policies across restarts. Serving calls it on every policy change (admin
/// endpoint, rollback) before the change takes effect; an error refuses the change, so that
/// what serves is always what a restart would serve.
pub trait PolicyKeeper: Send + Sync + 'static {
    /// Records that `model` serves under `policy` from now on; `named` is the version the
    /// policy names (to be written, as a restart must hold it again).
    fn keep(
        &self,
        model: &str,
        policy: TrafficPolicy,
        named: Option<&Arc<dyn ModelVersion>>,
    ) -> Result<(), String>;
}

impl fmt::Debug for dyn ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelVersion({})", self.version())
    }
}

/// The served models and their current versions.
pub trait Scorer: Send + Sync + 'static {
    /// Every served model, sorted by name.
    fn models(&self) -> Vec<ModelDescription>;

    /// The current version number of `model`, cheaply (serving asks on every request and calls
    /// [`Scorer::current`] only when it changed); `None` for an unknown model or one with no
    /// published version.
    fn latest_version(&self, model: &str) -> Option<u64>;

    /// The current version of `model`.
    fn current(&self, model: &str) -> Option<Arc<dyn ModelVersion>>;
}

/// Which version of a model answers requests. Set per model at run time (the HTTP admin
/// endpoint); written in JSON as `"latest"`, `{"pin": 12}`,
/// `{"canary": {"version": 12, "percent": 10}}` or `{"shadow": 12}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TrafficPolicy {
    /// The latest published version serves everything (the default).
    #[default]
    Latest,
    /// This version serves everything, whatever the learner publishes (a rollback pins the
    /// previous version).
    Pin(u64),
    /// This version serves `percent` of the entities, chosen by [`canary_bucket`] so an entity
    /// always gets the same side; the latest version serves the rest.
    Canary {
        /// The canary version.
        version: u64,
        /// Share of the entities it serves, 0 to 100.
        percent: f64,
    },
    /// The latest version serves everything; this version scores the same rows too, and its
    /// scores are compared and counted, never returned.
    Shadow(u64),
}

impl TrafficPolicy {
    /// The policy's name: `latest`, `pin`, `canary` or `shadow`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Pin(_) => "pin",
            Self::Canary { .. } => "canary",
            Self::Shadow(_) => "shadow",
        }
    }

    /// The version the policy names besides the latest, if any.
    pub const fn version(&self) -> Option<u64> {
        match self {
            Self::Latest => None,
            Self::Pin(v) | Self::Shadow(v) | Self::Canary { version: v, .. } => Some(*v),
        }
    }

    /// Checks the canary share.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Canary { percent, .. } if !(0.0..=100.0).contains(percent) => Err(format!(
                "canary percent must be between 0 and 100, got {percent}"
            )),
            _ => Ok(()),
        }
    }

    /// Whether a request whose key falls in canary bucket `bucket` (see [`canary_bucket`]) is
    /// served by the policy's version rather than the latest: always for `pin`, for the canary
    /// share for `canary`, never for `latest` and `shadow`.
    pub fn serves_named_version(&self, bucket: u32) -> bool {
        match self {
            Self::Latest | Self::Shadow(_) => false,
            Self::Pin(_) => true,
            Self::Canary { percent, .. } => bucket < canary_threshold(*percent),
        }
    }

    /// The version scored in the shadow, if any.
    pub const fn shadow(&self) -> Option<u64> {
        match self {
            Self::Shadow(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for TrafficPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Pin(v) => write!(f, "pin {v}"),
            Self::Canary { version, percent } => write!(f, "canary {version} at {percent}%"),
            Self::Shadow(v) => write!(f, "shadow {v}"),
        }
    }
}

/// The canary bucket of a key (an entity), in `0..CANARY_BUCKETS`: a stable hash, so a key
/// stays on its side of a canary for as long as the share does not change, across processes
/// and restarts.
pub fn canary_bucket(key: &str) -> u32 {
    let bucket = xxh3_64_with_seed(key.as_bytes(), CANARY_SEED) % u64::from(CANARY_BUCKETS);
    u32::try_from(bucket).unwrap_or(0)
}

/// Buckets below this number are in a canary of `percent`.
fn canary_threshold(percent: f64) -> u32 {
    let share = (percent.clamp(0.0, 100.0) * f64::from(CANARY_BUCKETS) / 100.0).round();
    // in 0..=CANARY_BUCKETS after the clamp
    share as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_and_write_as_documented() {
        let cases = [
            (r#""latest""#, TrafficPolicy::Latest),
            (r#"{"pin":12}"#, TrafficPolicy::Pin(12)),
            (
                r#"{"canary":{"version":12,"percent":10.0}}"#,
                TrafficPolicy::Canary {
                    version: 12,
                    percent: 10.0,
                },
            ),
            (r#"{"shadow":3}"#, TrafficPolicy::Shadow(3)),
        ];
        for (text, policy) in cases {
            let parsed: TrafficPolicy = serde_json::from_str(text).expect(text);
            assert_eq!(parsed, policy);
            assert_eq!(serde_json::to_string(&policy).expect("json"), text);
        }
        let err = serde_json::from_str::<TrafficPolicy>(
            r#"{"canary":{"version":1,"percent":5,"extra":1}}"#,
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("extra"), "{err}");
        assert!(serde_json::from_str::<TrafficPolicy>(r#""newest""#).is_err());
    }

    #[test]
    fn canary_percent_is_validated() {
        let bad = TrafficPolicy::Canary {
            version: 1,
            percent: 101.0,
        };
        assert!(bad.validate().is_err());
        let nan = TrafficPolicy::Canary {
            version: 1,
            percent: f64::NAN,
        };
        assert!(nan.validate().is_err());
        assert!(TrafficPolicy::Pin(1).validate().is_ok());
    }

    /// The acceptance check of the traffic split: a 10 % canary over 20,000 entities serves
    /// between 9 % and 11 % of them, and every entity keeps its side.
    #[test]
    fn a_ten_percent_canary_takes_ten_percent_of_entities_sticky() {
        let policy = TrafficPolicy::Canary {
            version: 2,
            percent: 10.0,
        };
        let entities: Vec<String> = (0..20_000).map(|i| format!("c{i:07}")).collect();
        let canary = entities
            .iter()
            .filter(|e| policy.serves_named_version(canary_bucket(e)))
            .count();
        let share = canary as f64 / entities.len() as f64 * 100.0;
        assert!((9.0..=11.0).contains(&share), "canary share {share} %");
        for e in &entities[..100] {
            let side = policy.serves_named_version(canary_bucket(e));
            assert_eq!(side, policy.serves_named_version(canary_bucket(e)));
        }
    }

    #[test]
    fn canary_edges_and_other_policies() {
        let all = TrafficPolicy::Canary {
            version: 1,
            percent: 100.0,
        };
        let none = TrafficPolicy::Canary {
            version: 1,
            percent: 0.0,
        };
        for bucket in [0, 1, CANARY_BUCKETS / 2, CANARY_BUCKETS - 1] {
            assert!(all.serves_named_version(bucket));
            assert!(!none.serves_named_version(bucket));
            assert!(TrafficPolicy::Pin(3).serves_named_version(bucket));
            assert!(!TrafficPolicy::Latest.serves_named_version(bucket));
            assert!(!TrafficPolicy::Shadow(3).serves_named_version(bucket));
        }
        assert!((0..1000).all(|i| canary_bucket(&i.to_string()) < CANARY_BUCKETS));
    }

    #[test]
    fn inputs_are_features_of_views_or_request_fields() {
        let is_view = |name: &str| name == "card";
        assert_eq!(
            InputSource::of("card.txn_count_5m", is_view),
            Some(InputSource::Feature {
                view: "card".into(),
                feature: "txn_count_5m".into()
            })
        );
        assert_eq!(
            InputSource::of("transactions.amount.usd", is_view),
            Some(InputSource::Field {
                source: "transactions".into(),
                field: "amount.usd".into()
            })
        );
        assert_eq!(InputSource::of("amount", is_view), None);
    }

    #[test]
    fn non_finite_numbers_count_as_missing() {
        assert!(InputValue::Missing.is_missing());
        assert!(InputValue::Number(f64::NAN).is_missing());
        assert!(!InputValue::Number(0.0).is_missing());
        assert!(!InputValue::Category("x").is_missing());
    }
}
