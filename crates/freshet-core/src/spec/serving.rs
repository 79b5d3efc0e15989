//! `[[serving]]`: answering requests read from a Kafka topic, on another topic.
//!
//! ```toml
//! [[serving]]
//! name = "fraud_kafka"
//! model = "fraud"                      # kind = "predict" (the default) scores this [[model]]
//! request_topic = "fraud.requests"
//! response_topic = "fraud.responses"
//!
//! [[serving]]
//! name = "card_features"
//! kind = "features"                    # feature queries: {request_id, view, entities}
//! request_topic = "features.requests"
//! response_topic = "features.responses"
//! ```

use serde::Deserialize;

/// Requests read whose responses are not yet acknowledged, at most, when the table does not say.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Requests answered together (one store call per view) when the table does not say.
pub const DEFAULT_SERVING_BATCH: usize = 256;
/// Suffix of a request topic's default dead-letter topic.
pub const SERVING_DEAD_LETTER_SUFFIX: &str = ".dead_letter";

/// What a `[[serving]]` table answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingKind {
    /// Predictions of `model`: requests `{request_id, entity | entities, fields}`, responses
    /// `{request_id, model, version, score | scores, features_as_of, predictions}`.
    #[default]
    Predict,
    /// Feature queries: requests `{request_id, view, entities}`, responses
    /// `{request_id, view, results: [{entity, as_of, features}]}`.
    Features,
}

impl ServingKind {
    /// The name written in the pipeline file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::Features => "features",
        }
    }
}

const fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

const fn default_batch() -> usize {
    DEFAULT_SERVING_BATCH
}

const fn default_true() -> bool {
    true
}

/// `[[serving]]`: a Kafka request topic answered on a response topic (needs `[kafka]`; run by
/// `freshet run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingSpec {
    /// Name, unique among the `[[serving]]` tables: letters, digits, `_`, `-`. It labels the
    /// table's metrics and names its consumer group, `<[kafka] group_id>.serving.<name>`.
    pub name: String,
    /// `predict` (default) or `features`.
    #[serde(default)]
    pub kind: ServingKind,
    /// The `[[model]]` a `predict` table scores; not allowed for `features`.
    #[serde(default)]
    pub model: Option<String>,
    /// The topic requests are read from (every partition, from the group's committed offsets).
    pub request_topic: String,
    /// The topic responses are written to, keyed by the request id.
    pub response_topic: String,
    /// Where malformed requests go, with the reason in a header; default
    /// `<request_topic>.dead_letter`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Requests read whose responses the brokers have not acknowledged yet, at most (default
    /// 1024); reading pauses at the limit.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Requests answered together, at most (default 256): one store call per feature view for
    /// every entity in the batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `predict` only: hand every served feature vector to the model's label join (the feature
    /// log), keyed by the request's label join key field (or its `request_id`), so a delayed
    /// label joins to what was served. Default `true`.
    #[serde(default = "default_true")]
    pub log_features: bool,
}

impl ServingSpec {
    /// The dead-letter topic: the configured one or `<request_topic>.dead_letter`.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}{SERVING_DEAD_LETTER_SUFFIX}", self.request_topic))
    }

    /// Checks of the table alone; `models` are the pipeline's model names.
    pub(crate) fn validate(&self, models: &[&str]) -> Result<(), String> {
        for (field, topic) in [
            ("request_topic", Some(&self.request_topic)),
            ("response_topic", Some(&self.response_topic)),
            ("dead_letter_topic", self.dead_letter_topic.as_ref()),
        ] {
            if topic.is_some_and(|t| !is_topic_name(t)) {
                return Err(format!(
                    "{field}: expected a Kafka topic name (letters, digits, `.`, `_`, `-`)"
                ));
            }
        }
        if self.request_topic == self.response_topic {
            return Err("request_topic and response_topic must differ".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if self.max_in_flight < self.batch_size {
            return Err(format!(
                "max_in_flight ({}) must be at least batch_size ({})",
                self.max_in_flight, self.batch_size
            ));
        }
        match (self.kind, &self.model) {
            (ServingKind::Predict, None) => Err(
                "kind = \"predict\" needs model = \"<a [[model]] name>\" (or kind = \"features\")"
                    .into(),
            ),
            (ServingKind::Predict, Some(m)) if !models.contains(&m.as_str()) => Err(format!(
                "model `{m}` is not a [[model]]; expected one of: {}",
                if models.is_empty() {
                    "(no [[model]] declared)".to_owned()
                } else {
                    models.join(", ")
                }
            )),
            (ServingKind::Features, Some(_)) => {
                Err("kind = \"features\" answers feature queries and takes no model".into())
            }
            _ => Ok(()),
        }
    }
}

/// Whether `t` is a usable Kafka topic name.
pub(crate) fn is_topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
