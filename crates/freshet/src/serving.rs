//! Serving the online models over HTTP: [`RegistryScorer`], the
//! [`Scorer`](freshet_core::serving::Scorer) over the learners' registries that freshet-serve's
//! model endpoints read, the demo's sample prediction, and `freshet bench serve`.
//!
//! A served version is the learner's immutable [`PublishedModel`]: while a request (or the
//! serving layer's list of recent versions) holds it, the learner publishes into a new one and
//! never writes to it.

mod bench;
pub mod kafka;
pub mod traffic;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use freshet_core::metrics::{LabelJoinMetrics, LearnerBoard, LearnerMetrics, LearnerWindow};
use freshet_core::serving::{
    InputSource, InputValue, ModelDescription, ModelInput, ModelVersion, ScoreError, Scorer,
};
use freshet_core::spec::PipelineSpec;
use freshet_learn::{Example, ModelRegistry, PublishedModel, Value};

pub use bench::{bench, BenchCommand};

/// The environment variable whose value, when set, becomes the admin endpoints' bearer token.
pub const ADMIN_TOKEN_ENV: &str = "FRESHET_ADMIN_TOKEN";

/// One published version, as the serving layer scores with it.
struct ServedVersion(Arc<PublishedModel>);

/// A model input as the learner reads it: the same conversion as training's, so a request and
/// a training example with the same values get the same score.
fn learner_value(value: &InputValue<'_>) -> Value {
    match value {
        InputValue::Missing => Value::Missing,
        InputValue::Number(n) => Value::Number(*n),
        InputValue::Category(text) => Value::category(text),
    }
}

impl ServedVersion {
    /// [`ModelVersion::score`] (implemented in [`traffic`] with the version files).
    fn score_rows(&self, rows: &[InputValue<'_>], out: &mut Vec<f32>) -> Result<(), ScoreError> {
        let inputs = self.0.inputs.len();
        if inputs == 0 || !rows.len().is_multiple_of(inputs) {
            return Err(ScoreError::Shape {
                values: rows.len(),
                inputs,
            });
        }
        let examples: Vec<Example> = rows
            .chunks(inputs)
            .map(|row| Example {
                values: row.iter().map(learner_value).collect(),
                label: 0.0,
            })
            .collect();
        let predictions = self
            .0
            .predict(&examples)
            .map_err(|e| ScoreError::Model(e.to_string()))?;
        out.extend_from_slice(&predictions.values);
        Ok(())
    }
}

/// The [`Scorer`] over the registries of a pipeline's models.
pub struct RegistryScorer {
    models: Vec<(ModelDescription, ModelRegistry)>,
}

impl RegistryScorer {
    /// Serves every model of `spec` that has a registry in `registries` (by model name). An input
    /// `view.feature` whose view the pipeline declares is read from the store; any other
    /// `source.field` comes from the request.
    pub fn new(spec: &PipelineSpec, registries: &HashMap<String, ModelRegistry>) -> Self {
        let views: Vec<&str> = spec
            .feature_views
            .iter()
            .map(|v| v.get_ref().name.as_str())
            .collect();
        let mut models: Vec<(ModelDescription, ModelRegistry)> = spec
            .models
            .iter()
            .filter_map(|m| {
                let m = m.get_ref();
                let registry = registries.get(&m.name)?;
                let names = resolved_inputs(m, registry);
                let description =
                    describe(&m.name, m.kind, m.outputs(), &names, |v| views.contains(&v));
                Some((description, registry.clone()))
            })
            .collect();
        models.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Self { models }
    }

    fn registry(&self, model: &str) -> Option<&ModelRegistry> {
        self.models
            .iter()
            .find(|(d, _)| d.name == model)
            .map(|(_, r)| r)
    }
}

/// A model's input names: the learner's resolved inputs (globs expanded) are the truth; the
/// spec's list stands in before the first publication.
pub fn resolved_inputs(
    model: &freshet_core::model::ModelSpec,
    registry: &ModelRegistry,
) -> Vec<String> {
    registry
        .current()
        .map_or_else(|| model.features.clone(), |p| p.inputs.to_vec())
}

/// A model's description from its input names; `is_view` tells feature views from sources.
pub fn describe(
    name: &str,
    kind: freshet_core::model::ModelKind,
    outputs: usize,
    inputs: &[String],
    is_view: impl Fn(&str) -> bool,
) -> ModelDescription {
    ModelDescription {
        name: name.to_owned(),
        kind,
        inputs: inputs
            .iter()
            .map(|input| ModelInput {
                name: input.clone(),
                // a name without a dot cannot come from a pipeline file; serve it as a field
                source: InputSource::of(input, &is_view).unwrap_or_else(|| InputSource::Field {
                    source: String::new(),
                    field: input.clone(),
                }),
            })
            .collect(),
        outputs,
    }
}

impl Scorer for RegistryScorer {
    fn models(&self) -> Vec<ModelDescription> {
        self.models.iter().map(|(d, _)| d.clone()).collect()
    }

    fn latest_version(&self, model: &str) -> Option<u64> {
        self.registry(model)?.version()
    }

    fn current(&self, model: &str) -> Option<Arc<dyn ModelVersion>> {
        let current = self.registry(model)?.current()?;
        Some(Arc::new(ServedVersion(current)))
    }
}

/// The admin token from [`ADMIN_TOKEN_ENV`], if set.
pub fn admin_token_from_env() -> anyhow::Result<Option<freshet_serve::models::AdminToken>> {
    match std::env::var(ADMIN_TOKEN_ENV) {
        Ok(text) => freshet_serve::models::AdminToken::new(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{ADMIN_TOKEN_ENV}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{ADMIN_TOKEN_ENV}: {e}")),
    }
}

/// The request the demo sends to its own `/v1/models/fraud/predict`.
pub const DEMO_PREDICT_BODY: &str =
    r#"{"entity":"c0000000","fields":{"amount":250.0,"country":"NG"}}"#;

/// Asks the demo's HTTP API for a prediction, as a client would, and prints it on one line.
pub fn print_sample_prediction(addr: SocketAddr, model: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let answer = agent
        .post(format!("http://{addr}/v1/models/{model}/predict"))
        .header("content-type", "application/json")
        .send(DEMO_PREDICT_BODY)
        .map_err(|e| e.to_string())
        .and_then(|mut r| {
            r.body_mut()
                .read_json::<serde_json::Value>()
                .map_err(|e| e.to_string())
        });
    match answer {
        Ok(body) => {
            let p = &body["predictions"][0];
            match p["score"].as_f64() {
                Some(score) => println!(
                    "  predict {model} v{} c0000000 (amount 250, country NG): score {score:.4}, features as of {}, missing {}",
                    p["version"], p["features_as_of"], p["missing"]
                ),
                None => println!("  predict {model}: {body}"),
            }
        }
        Err(e) => println!("  predict {model}: request failed: {e}"),
    }
}

/// The learners' latest metrics ([`crate::learn::Summaries`]) and label-join counts as the
/// `/metrics` board reads them.
pub struct SummaryBoard {
    summaries: crate::learn::Summaries,
    joins: crate::learn::JoinBoard,
    served: Option<Arc<freshet_features::ServedRows>>,
}

impl SummaryBoard {
    /// The board of `runner`'s models; `served`: the rows served to their label joins, if any.
    pub fn new(
        runner: &crate::learn::ModelRunner,
        served: Option<Arc<freshet_features::ServedRows>>,
    ) -> Self {
        Self {
            summaries: runner.summaries(),
            joins: runner.joins(),
            served,
        }
    }
}

fn window(values: &freshet_learn::MetricValues) -> LearnerWindow {
    LearnerWindow {
        examples: values.examples,
        logloss: values.logloss,
        accuracy: values.accuracy,
        auc: values.auc,
        mae: values.mae,
        rmse: values.rmse,
        rows_per_s: values.rows_per_s,
    }
}

impl LearnerBoard for SummaryBoard {
    fn snapshot(&self) -> Vec<LearnerMetrics> {
        let Ok(board) = self.summaries.lock() else {
            return Vec::new();
        };
        let joins = self.joins.lock().map(|j| j.clone()).unwrap_or_default();
        let mut models: Vec<LearnerMetrics> = board
            .values()
            .map(|s| LearnerMetrics {
                model: s.model.clone(),
                version: s.version,
                updates: s.updates,
                cumulative: window(&s.cumulative),
                rolling: window(&s.rolling),
                join: joins.get(&s.model).map(|j| {
                    let served = self
                        .served
                        .as_ref()
                        .map(|rows| rows.counts(&s.model))
                        .unwrap_or_default();
                    LabelJoinMetrics {
                        labels: j.labels,
                        joined: j.joined,
                        unmatched: j.unmatched,
                        expired: j.expired,
                        superseded: j.superseded,
                        served_logged: served.logged,
                        served_late: served.late,
                        served_dropped: served.dropped,
                    }
                }),
            })
            .collect();
        models.sort_by(|a, b| a.model.cmp(&b.model));
        models
    }
}
