//! `POST /v1/models/{name}/predict`: scores entities with their features from the store and
//! event fields from the request; `GET /v1/models` and `GET /v1/models/{name}` describe the
//! models.

use std::sync::{Arc, OnceLock};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use freshet_core::serving::{
    canary_bucket, InputSource, InputValue, ModelDescription, ModelInput, ModelVersion,
};
use freshet_core::store::{FeatureValue, FeatureVector, OnlineStore};
use serde::Serialize;
use serde_json::{Map, Value};

use super::book::{Routing, ServedModel};
use super::metrics::{Endpoint, ModelTiming, ShadowSample, ShadowSummary};
use super::{lookup, no_version, score_failed};
use crate::error::ApiError;
use crate::features::MAX_ENTITIES_PER_REQUEST;
use crate::requests::json_type_name as type_name;
use crate::state::AppState;

/// How a model's inputs are filled for `/v1` requests.
pub(crate) struct InputPlan {
    views: Vec<ViewInputs>,
    fields: Vec<FieldInput>,
}

/// The inputs a model reads from one feature view.
struct ViewInputs {
    view: String,
    /// (input index, feature name).
    inputs: Vec<(usize, String)>,
    /// The position of each input's feature in the view's vectors, resolved once the store
    /// holds the view (`None`: the view has no such feature, the input is always missing).
    positions: OnceLock<Vec<Option<usize>>>,
}

impl ViewInputs {
    fn positions(&self, store: &dyn OnlineStore) -> Option<&[Option<usize>]> {
        if let Some(p) = self.positions.get() {
            return Some(p);
        }
        let schema = store.view(&self.view)?;
        let positions = self
            .inputs
            .iter()
            .map(|(_, feature)| schema.features.iter().position(|f| f == feature))
            .collect();
        Some(self.positions.get_or_init(|| positions))
    }
}

/// An input read from the request's fields.
struct FieldInput {
    index: usize,
    /// The field name (`amount`).
    field: String,
    /// The input's full name (`transactions.amount`), also accepted as a key.
    qualified: String,
}

impl InputPlan {
    pub(crate) fn new(description: &ModelDescription) -> Self {
        let mut views: Vec<ViewInputs> = Vec::new();
        let mut fields = Vec::new();
        for (index, ModelInput { name, source }) in description.inputs.iter().enumerate() {
            match source {
                InputSource::Feature { view, feature } => {
                    match views.iter_mut().find(|v| &v.view == view) {
                        Some(v) => v.inputs.push((index, feature.clone())),
                        None => views.push(ViewInputs {
                            view: view.clone(),
                            inputs: vec![(index, feature.clone())],
                            positions: OnceLock::new(),
                        }),
                    }
                }
                InputSource::Field { field, .. } => fields.push(FieldInput {
                    index,
                    field: field.clone(),
                    qualified: name.clone(),
                }),
            }
        }
        Self { views, fields }
    }
}

/// A JSON object of request fields.
type Fields = Map<String, Value>;

/// What a view's store call found for each entity, and where the model's inputs are in it.
type Fetched<'a> = Option<(Vec<Option<FeatureVector>>, &'a [Option<usize>])>;

/// One entity to score and its own fields.
struct Row<'a> {
    entity: &'a str,
    fields: Option<&'a Map<String, Value>>,
    /// Where the row's fields are in the body, for error messages (`entities[2].fields`).
    fields_path: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidBody(message.into())
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value.as_object().ok_or_else(|| {
        invalid(format!(
            "`{path}` must be an object, got {}",
            type_name(value)
        ))
    })
}

/// Reads the body: `{"entity": E}` or `{"entities": [E | {"entity": E, "fields": {..}}, ..]}`,
/// plus optional shared `"fields": {..}`.
fn parse_rows(body: &Value) -> Result<(Vec<Row<'_>>, Option<&Fields>), ApiError> {
    let body = object(body, "body")?;
    for key in body.keys() {
        if !matches!(key.as_str(), "entity" | "entities" | "fields") {
            return Err(invalid(format!(
                "unknown field `{key}`, expected `entity`, `entities` or `fields`"
            )));
        }
    }
    let shared = body
        .get("fields")
        .map(|f| object(f, "fields"))
        .transpose()?;
    let rows = match (body.get("entity"), body.get("entities")) {
        (Some(_), Some(_)) => {
            return Err(invalid("give `entity` or `entities`, not both"));
        }
        (None, None) => return Err(invalid("missing field `entity` (or `entities`)")),
        (Some(entity), None) => vec![Row {
            entity: entity.as_str().ok_or_else(|| {
                invalid(format!(
                    "`entity` must be a string, got {}",
                    type_name(entity)
                ))
            })?,
            fields: None,
            fields_path: String::new(),
        }],
        (None, Some(entities)) => {
            let list = entities.as_array().ok_or_else(|| {
                invalid(format!(
                    "`entities` must be an array, got {}",
                    type_name(entities)
                ))
            })?;
            if list.len() > MAX_ENTITIES_PER_REQUEST {
                return Err(invalid(format!(
                    "`entities` holds {} entities, at most {MAX_ENTITIES_PER_REQUEST} are allowed per request",
                    list.len()
                )));
            }
            list.iter()
                .enumerate()
                .map(|(i, item)| entity_row(i, item))
                .collect::<Result<_, _>>()?
        }
    };
    Ok((rows, shared))
}

fn entity_row(i: usize, item: &Value) -> Result<Row<'_>, ApiError> {
    match item {
        Value::String(entity) => Ok(Row {
            entity,
            fields: None,
            fields_path: String::new(),
        }),
        Value::Object(map) => {
            for key in map.keys() {
                if !matches!(key.as_str(), "entity" | "fields") {
                    return Err(invalid(format!(
                        "entities[{i}]: unknown field `{key}`, expected `entity` or `fields`"
                    )));
                }
            }
            let entity = match map.get("entity") {
                Some(Value::String(e)) => e,
                Some(other) => {
                    return Err(invalid(format!(
                        "`entities[{i}].entity` must be a string, got {}",
                        type_name(other)
                    )))
                }
                None => return Err(invalid(format!("entities[{i}]: missing field `entity`"))),
            };
            let path = format!("entities[{i}].fields");
            let fields = map.get("fields").map(|f| object(f, &path)).transpose()?;
            Ok(Row {
                entity,
                fields,
                fields_path: path,
            })
        }
        other => Err(invalid(format!(
            "`entities[{i}]` must be a string or an object, got {}",
            type_name(other)
        ))),
    }
}

/// A request field as a model input.
fn field_value<'a>(value: &'a Value, path: &str) -> Result<InputValue<'a>, ApiError> {
    Ok(match value {
        Value::Null => InputValue::Missing,
        Value::Bool(b) => InputValue::Number(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64().map_or(InputValue::Missing, InputValue::Number),
        Value::String(s) => InputValue::Category(s),
        other => {
            return Err(invalid(format!(
                "`{path}` must be a number, string, boolean or null, got {}",
                type_name(other)
            )))
        }
    })
}

/// A stored feature as a model input, as the learner saw it in training.
fn feature_value(value: &FeatureValue) -> InputValue<'_> {
    match value {
        FeatureValue::Null => InputValue::Missing,
        FeatureValue::Int(i) => InputValue::Number(*i as f64),
        FeatureValue::Float(f) => InputValue::Number(*f),
        FeatureValue::Bool(b) => InputValue::Number(f64::from(u8::from(*b))),
        FeatureValue::Str(s) => InputValue::Category(s),
    }
}

/// One answer.
#[derive(Serialize)]
pub(crate) struct Prediction<'a> {
    entity: &'a str,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scores: Option<Vec<f32>>,
    features_as_of: Option<u64>,
    missing: Vec<&'a str>,
}

/// The answer to one predict request.
#[derive(Serialize)]
pub(crate) struct PredictResponse<'a> {
    pub(crate) model: &'a str,
    pub(crate) version: u64,
    pub(crate) predictions: Vec<Prediction<'a>>,
}

/// One row as it was scored, for the feature log.
pub struct ServedRow<'a> {
    /// Index of the request (in the batch) the row belongs to.
    pub request: usize,
    /// The entity.
    pub entity: &'a str,
    /// The version that scored it.
    pub version: u64,
    /// The model's inputs as they were scored, in the model's input order.
    pub values: &'a [InputValue<'a>],
    /// The oldest `as_of` of the feature vectors read, if any was found.
    pub features_as_of: Option<u64>,
}

/// Scores the rows `which` (row indices) of `values` (`inputs` values per row) with `version`,
/// writing each row's scores at its place in `scores` (`outputs` per row).
fn score_into(
    model: &ServedModel,
    version: &Arc<dyn ModelVersion>,
    values: &[InputValue<'_>],
    which: &[usize],
    scores: &mut [f32],
) -> Result<(), ApiError> {
    let d = model.description.inputs.len();
    let k = model.description.outputs;
    let mut out = Vec::with_capacity(which.len() * k);
    if which.len() * d == values.len() {
        version
            .score(values, &mut out)
            .map_err(|e| score_failed(model, &e))?;
    } else {
        let mut rows = Vec::with_capacity(which.len() * d);
        for &r in which {
            rows.extend_from_slice(&values[r * d..(r + 1) * d]);
        }
        version
            .score(&rows, &mut out)
            .map_err(|e| score_failed(model, &e))?;
    }
    if out.len() != which.len() * k {
        return Err(score_failed(
            model,
            &format!("{} scores for {} rows", out.len(), which.len()),
        ));
    }
    for (i, &r) in which.iter().enumerate() {
        scores[r * k..(r + 1) * k].copy_from_slice(&out[i * k..(i + 1) * k]);
    }
    Ok(())
}

/// Scores every row with the shadow version, if the policy has one, and records how far it is
/// from the served scores (`served_version` answered the first row). The answer never depends on
/// it: a failure is logged and counted.
pub(crate) fn shadow_score(
    model: &ServedModel,
    routing: &Routing,
    values: &[InputValue<'_>],
    served: &[f32],
    served_version: u64,
    entity: Option<&str>,
) {
    let Some(shadow) = routing.shadow() else {
        return;
    };
    let k = model.description.outputs;
    let mut out = Vec::with_capacity(served.len());
    match shadow.score(values, &mut out) {
        Ok(()) if out.len() == served.len() => {
            let diff: f64 = out
                .iter()
                .zip(served)
                .map(|(a, b)| f64::from((a - b).abs()))
                .sum();
            let rows = served.len() / k.max(1);
            let sample = ShadowSample {
                entity: entity.map(str::to_owned),
                served_version,
                served: served[..k.min(served.len())].to_vec(),
                shadow_version: shadow.version(),
                shadow: out[..k.min(out.len())].to_vec(),
            };
            tracing::debug!(
                model = model.name(),
                shadow_version = shadow.version(),
                rows,
                mean_abs_diff = diff / served.len().max(1) as f64,
                "shadow scored"
            );
            model.stats.record_shadow(rows, diff, sample);
        }
        Ok(()) => {
            tracing::warn!(
                model = model.name(),
                shadow_version = shadow.version(),
                "shadow version returned the wrong number of scores"
            );
            model.stats.record_shadow_error();
        }
        Err(e) => {
            tracing::warn!(model = model.name(), shadow_version = shadow.version(), error = %e, "shadow scoring failed");
            model.stats.record_shadow_error();
        }
    }
}

/// `POST /v1/models/{name}/predict`.
pub(crate) async fn predict(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let model = lookup(&state, &name)?;
    let Json(body) = body?;
    let answer = predict_many(
        &*state.store,
        &model,
        &[&body],
        Endpoint::Predict,
        &mut |_| {},
    )
    .pop()
    .unwrap_or(Err(ApiError::Internal))?;
    let version = answer.version;
    let mut response = Json(answer).into_response();
    response.extensions_mut().insert(ModelTiming {
        model: Arc::clone(&model),
        version,
        endpoint: Endpoint::Predict,
    });
    Ok(response)
}

/// Answers a batch of predict bodies (`{"entity": ..}` or `{"entities": [..]}`, plus optional
/// `"fields"`) for `model`: one store call per view for every entity of the batch, one routing
/// snapshot, rows grouped by the version that scores them. Each body gets its own answer or
/// error, in order; `log` sees every row of a successful answer as it was scored.
pub(crate) fn predict_many<'a>(
    store: &dyn OnlineStore,
    model: &'a ServedModel,
    bodies: &[&'a Value],
    endpoint: Endpoint,
    log: &mut dyn FnMut(ServedRow<'_>),
) -> Vec<Result<PredictResponse<'a>, ApiError>> {
    let name = model.name();
    let routing = model.routing();
    let description = &model.description;
    let (d, k) = (description.inputs.len(), description.outputs);
    let mut errors: Vec<Option<ApiError>> = bodies.iter().map(|_| None).collect();
    let mut rows: Vec<Row<'a>> = Vec::new();
    // the request each row belongs to
    let mut owner: Vec<usize> = Vec::new();
    let mut shared: Vec<Option<&'a Fields>> = vec![None; bodies.len()];
    for (i, body) in bodies.iter().enumerate() {
        match parse_rows(body) {
            Ok((parsed, fields)) => {
                owner.extend(std::iter::repeat_n(i, parsed.len()));
                rows.extend(parsed);
                shared[i] = fields;
            }
            Err(e) => errors[i] = Some(e),
        }
    }
    let n = rows.len();
    let fail_all = |errors: Vec<Option<ApiError>>, e: ApiError| {
        errors
            .into_iter()
            .map(|own| Err(own.unwrap_or_else(|| e.clone())))
            .collect()
    };
    if routing.latest.is_none() {
        return fail_all(errors, no_version(name));
    }

    // One store call per view the model reads, for every entity of the batch.
    let keys: Vec<&str> = rows.iter().map(|r| r.entity).collect();
    let mut fetched: Vec<Fetched<'_>> = Vec::new();
    for view in &model.plan.views {
        fetched.push(match view.positions(store) {
            Some(positions) if n > 0 => match store.get_many(&view.view, &keys) {
                Ok(vectors) => Some((vectors, positions)),
                Err(e) => return fail_all(errors, ApiError::from(e)),
            },
            _ => None,
        });
    }

    let mut values = vec![InputValue::Missing; n * d];
    let mut as_of: Vec<Option<u64>> = vec![None; n];
    for (view, found) in model.plan.views.iter().zip(&fetched) {
        let Some((vectors, positions)) = found else {
            continue;
        };
        for (r, vector) in vectors.iter().enumerate() {
            let Some(vector) = vector else { continue };
            as_of[r] = Some(as_of[r].map_or(vector.as_of_ms, |t| t.min(vector.as_of_ms)));
            for ((index, _), position) in view.inputs.iter().zip(*positions) {
                if let Some(value) = position.and_then(|p| vector.values.get(p)) {
                    values[r * d + index] = feature_value(value);
                }
            }
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let shared = shared[owner[r]];
        for input in &model.plan.fields {
            let own = row.fields.and_then(|f| {
                f.get(&input.field)
                    .map(|v| (v, &input.field, row.fields_path.as_str()))
                    .or_else(|| {
                        f.get(&input.qualified)
                            .map(|v| (v, &input.qualified, row.fields_path.as_str()))
                    })
            });
            let found = own.or_else(|| {
                shared.and_then(|f| {
                    f.get(&input.field)
                        .map(|v| (v, &input.field, "fields"))
                        .or_else(|| {
                            f.get(&input.qualified)
                                .map(|v| (v, &input.qualified, "fields"))
                        })
                })
            });
            if let Some((value, key, at)) = found {
                match field_value(value, &format!("{at}.{key}")) {
                    Ok(v) => values[r * d + input.index] = v,
                    Err(e) => {
                        errors[owner[r]].get_or_insert(e);
                    }
                }
            }
        }
    }

    // The version of each row: one for all unless a canary splits them.
    let mut versions: Vec<&Arc<dyn ModelVersion>> = Vec::with_capacity(n);
    for row in &rows {
        let bucket = match routing.policy {
            freshet_core::serving::TrafficPolicy::Canary { .. } => canary_bucket(row.entity),
            _ => 0,
        };
        match routing.for_bucket(bucket) {
            Some(v) => versions.push(v),
            None => return fail_all(errors, no_version(name)),
        }
    }
    let mut scores = vec![0.0f32; n * k];
    let mut groups: Vec<(&Arc<dyn ModelVersion>, Vec<usize>)> = Vec::new();
    for (r, version) in versions.iter().enumerate() {
        match groups.iter_mut().find(|(v, _)| Arc::ptr_eq(v, version)) {
            Some((_, members)) => members.push(r),
            None => groups.push((version, vec![r])),
        }
    }
    for (version, members) in &groups {
        if let Err(e) = score_into(model, version, &values, members, &mut scores) {
            return fail_all(errors, e);
        }
    }
    let served_versions: Vec<u64> = versions.iter().map(|v| v.version()).collect();
    shadow_score(
        model,
        &routing,
        &values,
        &scores,
        served_versions.first().copied().unwrap_or_default(),
        rows.first().map(|r| r.entity),
    );

    model.stats.add_rows(
        endpoint,
        owner.iter().filter(|&&i| errors[i].is_none()).count(),
    );
    let default_version = routing
        .for_bucket(0)
        .map(|v| v.version())
        .unwrap_or_default();
    let mut answers: Vec<Result<PredictResponse<'a>, ApiError>> = errors
        .into_iter()
        .map(|e| match e {
            Some(e) => Err(e),
            None => Ok(PredictResponse {
                model: &description.name,
                version: default_version,
                predictions: Vec::new(),
            }),
        })
        .collect();
    for (r, row) in rows.iter().enumerate() {
        let Ok(answer) = &mut answers[owner[r]] else {
            continue;
        };
        let mut missing = Vec::new();
        for (i, input) in description.inputs.iter().enumerate() {
            if values[r * d + i].is_missing() {
                missing.push(input.name.as_str());
                model.stats.add_missing(i);
            }
        }
        let row_scores = &scores[r * k..(r + 1) * k];
        if answer.predictions.is_empty() {
            answer.version = served_versions[r];
        }
        log(ServedRow {
            request: owner[r],
            entity: row.entity,
            version: served_versions[r],
            values: &values[r * d..(r + 1) * d],
            features_as_of: as_of[r],
        });
        answer.predictions.push(Prediction {
            entity: row.entity,
            version: served_versions[r],
            score: (k == 1).then(|| row_scores[0]),
            scores: (k != 1).then(|| row_scores.to_vec()),
            features_as_of: as_of[r],
            missing,
        });
    }
    answers
}

#[derive(Serialize)]
struct ModelSummary<'a> {
    name: &'a str,
    kind: &'static str,
    outputs: usize,
    latest_version: Option<u64>,
    policy: freshet_core::serving::TrafficPolicy,
}

/// `GET /v1/models`.
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let models: Vec<_> = state
        .models
        .iter()
        .flat_map(|book| book.iter())
        .map(|m| {
            let routing = m.routing();
            (Arc::clone(m), routing)
        })
        .collect();
    let summaries: Vec<ModelSummary<'_>> = models
        .iter()
        .map(|(m, routing)| ModelSummary {
            name: m.name(),
            kind: m.description.kind.name(),
            outputs: m.description.outputs,
            latest_version: routing.latest_version(),
            policy: routing.policy,
        })
        .collect();
    #[derive(Serialize)]
    struct ModelList<'a> {
        models: Vec<ModelSummary<'a>>,
    }
    Json(ModelList { models: summaries }).into_response()
}

#[derive(Serialize)]
struct ModelDetail<'a> {
    name: &'a str,
    kind: &'static str,
    inputs: &'a [ModelInput],
    outputs: usize,
    latest_version: Option<u64>,
    versions: Vec<u64>,
    policy: freshet_core::serving::TrafficPolicy,
    shadow: ShadowSummary,
}

/// `GET /v1/models/{name}`.
pub(crate) async fn describe(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let model = lookup(&state, &name)?;
    let routing = model.routing();
    let detail = ModelDetail {
        name: model.name(),
        kind: model.description.kind.name(),
        inputs: &model.description.inputs,
        outputs: model.description.outputs,
        latest_version: routing.latest_version(),
        versions: routing.held(),
        policy: routing.policy,
        shadow: model.stats.shadow_summary(model.description.outputs),
    };
    Ok((StatusCode::OK, Json(detail)).into_response())
}
