//! The Open Inference Protocol (KServe V2) over HTTP/REST: health, server and model metadata,
//! model readiness, and inference on raw tensors.
//!
//! An inference request carries the model's inputs already as values, in one of two forms:
//! - one numeric tensor of shape `[N, D]` (D = the model's inputs, in the order of the
//!   metadata's `parameters.input_names`), any name, datatype `FP32` (or another numeric type);
//! - one tensor per model input, named as the input (`card.txn_count_5m`), shape `[N]` or
//!   `[N, 1]`: numeric, or `BYTES` for a categorical input (strings, hashed as in training).
//!
//! `null` in numeric data means a missing value (an extension: JSON has no NaN). The answer is one
//! `FP32` tensor `score` of shape `[N, K]` (K = 1, or the number of classes).

use std::fmt;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use freshet_core::serving::{canary_bucket, InputValue, ModelVersion};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::book::{version_list, Routing, ServedModel};
use super::metrics::{Endpoint, ModelTiming};
use super::{lookup, no_version, rejected, score_failed};
use crate::error::ApiError;
use crate::features::MAX_ENTITIES_PER_REQUEST;
use crate::state::{AppState, HealthStatus};

/// The `platform` of every model in the metadata.
const PLATFORM: &str = "freshet";
/// The name of the one output tensor.
const OUTPUT_NAME: &str = "score";
/// The name the metadata gives the `[N, D]` input tensor (requests may use any name).
const INPUT_NAME: &str = "input";

/// `GET /v2`: server metadata.
pub(crate) async fn server_metadata() -> Response {
    Json(json!({
        "name": "freshet",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
    .into_response()
}

/// `GET /v2/health/live`: the server answers.
pub(crate) async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

/// `GET /v2/health/ready`: healthy, and every model has a published version (400 otherwise, as
/// the protocol asks a 4xx for "false").
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let models_ready = state
        .models
        .as_ref()
        .is_none_or(|book| book.iter().all(|m| m.routing().latest.is_some()));
    let ready = models_ready && state.health() == HealthStatus::Ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

/// A `{version}` path segment.
fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::InvalidPath(format!(
            "model version `{text}` is not a version number (versions are integers)"
        ))
    })
}

fn version_of<'a>(
    model: &ServedModel,
    routing: &'a Routing,
    version: u64,
) -> Result<&'a Arc<dyn ModelVersion>, ApiError> {
    routing.version(version).ok_or_else(|| {
        rejected(
            StatusCode::NOT_FOUND,
            format!(
                "model `{}` has no version {version} (held versions: {})",
                model.name(),
                version_list(&routing.held())
            ),
        )
    })
}

#[derive(Serialize)]
struct MetadataTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: [i64; 2],
}

/// `$metadata_model_response`, plus `parameters` (an extension): what the `[N, D]` tensor's
/// columns are, and the traffic state.
#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    versions: Vec<String>,
    platform: &'static str,
    inputs: [MetadataTensor<'static>; 1],
    outputs: [MetadataTensor<'static>; 1],
    parameters: MetadataParameters<'a>,
}

#[derive(Serialize)]
struct MetadataParameters<'a> {
    kind: &'static str,
    input_names: Vec<&'a str>,
    latest_version: Option<String>,
    traffic_policy: freshet_core::serving::TrafficPolicy,
}

fn metadata(model: &ServedModel, routing: &Routing) -> Response {
    let as_shape = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let d = as_shape(model.description.inputs.len());
    let k = as_shape(model.description.outputs);
    Json(Metadata {
        name: model.name(),
        versions: routing.held().iter().map(u64::to_string).collect(),
        platform: PLATFORM,
        inputs: [MetadataTensor {
            name: INPUT_NAME,
            datatype: "FP32",
            shape: [-1, d],
        }],
        outputs: [MetadataTensor {
            name: OUTPUT_NAME,
            datatype: "FP32",
            shape: [-1, k],
        }],
        parameters: MetadataParameters {
            kind: model.description.kind.name(),
            input_names: model
                .description
                .inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect(),
            latest_version: routing.latest_version().map(|v| v.to_string()),
            traffic_policy: routing.policy,
        },
    })
    .into_response()
}

/// `GET /v2/models/{name}`.
pub(crate) async fn model_metadata(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let model = lookup(&state, &name)?;
    let routing = model.routing();
    Ok(metadata(&model, &routing))
}

/// `GET /v2/models/{name}/versions/{version}`.
pub(crate) async fn version_metadata(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path?;
    let model = lookup(&state, &name)?;
    let version = parse_version(&version)?;
    let routing = model.routing();
    version_of(&model, &routing, version)?;
    Ok(metadata(&model, &routing))
}

fn readiness(model: &ServedModel, ready: bool) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        Json(json!({ "name": model.name(), "ready": ready })),
    )
        .into_response()
}

/// `GET /v2/models/{name}/ready`: 200 once the model has a published version, else 400.
pub(crate) async fn model_ready(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let model = lookup(&state, &name)?;
    let ready = model.routing().latest.is_some();
    Ok(readiness(&model, ready))
}

/// `GET /v2/models/{name}/versions/{version}/ready`: 200 while the model holds the version.
pub(crate) async fn version_ready(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path?;
    let model = lookup(&state, &name)?;
    let version = parse_version(&version)?;
    let ready = model.routing().version(version).is_some();
    Ok(readiness(&model, ready))
}

/// Tensor contents, flattened in row-major order.
#[derive(Debug, PartialEq)]
pub(crate) enum TensorData {
    /// Numbers (and `null` as NaN: missing; booleans as 0 and 1).
    Numbers(Vec<f64>),
    /// Strings (`BYTES`).
    Strings(Vec<String>),
}

impl TensorData {
    fn len(&self) -> usize {
        match self {
            Self::Numbers(v) => v.len(),
            Self::Strings(v) => v.len(),
        }
    }
}

/// Collects the leaves of nested arrays.
struct Flatten<'a>(&'a mut Option<TensorData>);

impl Flatten<'_> {
    fn number<E: de::Error>(self, n: f64) -> Result<(), E> {
        match self
            .0
            .get_or_insert_with(|| TensorData::Numbers(Vec::new()))
        {
            TensorData::Numbers(v) => {
                v.push(n);
                Ok(())
            }
            TensorData::Strings(_) => Err(E::custom("data mixes strings and numbers")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers, strings, booleans or null, possibly in nested arrays")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v as f64)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.number(f64::from(u8::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.number(f64::NAN)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self
            .0
            .get_or_insert_with(|| TensorData::Strings(Vec::new()))
        {
            TensorData::Strings(s) => {
                s.push(v.to_owned());
                Ok(())
            }
            TensorData::Numbers(_) => Err(E::custom("data mixes strings and numbers")),
        }
    }
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = TensorData;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tensor values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TensorData, A::Error> {
        let mut data = None;
        while seq.next_element_seed(Flatten(&mut data))?.is_some() {}
        Ok(data.unwrap_or(TensorData::Numbers(Vec::new())))
    }
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(TopLevel)
    }
}

/// `$inference_request`; `parameters` are accepted and ignored.
#[derive(Deserialize)]
pub(crate) struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: TensorData,
}

#[derive(Deserialize)]
struct RequestOutput {
    name: String,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    name: &'static str,
    shape: [usize; 2],
    datatype: &'static str,
    data: &'a [f32],
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: [ResponseOutput<'a>; 1],
}

/// What a datatype's values are.
enum Kind {
    Numeric,
    Bytes,
}

fn kind(input: &RequestInput) -> Result<Kind, ApiError> {
    match input.datatype.as_str() {
        "FP16" | "FP32" | "FP64" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16"
        | "UINT32" | "UINT64" | "BOOL" => Ok(Kind::Numeric),
        "BYTES" => Ok(Kind::Bytes),
        other => Err(ApiError::InvalidBody(format!(
            "input `{}`: unknown datatype `{other}`",
            input.name
        ))),
    }
}

fn check_rows(n: u64) -> Result<usize, ApiError> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_ENTITIES_PER_REQUEST)
        .ok_or_else(|| {
            ApiError::InvalidBody(format!(
                "{n} rows: at most {MAX_ENTITIES_PER_REQUEST} are allowed per request"
            ))
        })
}

fn check_len(input: &RequestInput, expected: usize) -> Result<(), ApiError> {
    if input.data.len() == expected {
        Ok(())
    } else {
        Err(ApiError::InvalidBody(format!(
            "input `{}`: shape {:?} holds {expected} values but data has {}",
            input.name,
            input.shape,
            input.data.len()
        )))
    }
}

/// The request's rows, `d` values each, row-major; and the number of rows.
fn rows<'a>(
    model: &ServedModel,
    inputs: &'a [RequestInput],
) -> Result<(Vec<InputValue<'a>>, usize), ApiError> {
    let names = &model.description.inputs;
    let d = names.len();
    let by_name = inputs
        .iter()
        .any(|i| names.iter().any(|n| n.name == i.name));
    if inputs.len() == 1 && !(by_name && d > 1) {
        let input = &inputs[0];
        let n = match input.shape.as_slice() {
            [n, cols] if *cols == d as u64 => check_rows(*n)?,
            _ => {
                return Err(ApiError::InvalidBody(format!(
                    "input `{}`: shape {:?} does not fit model `{}`, which has {d} inputs: expected [N, {d}]",
                    input.name,
                    input.shape,
                    model.name()
                )))
            }
        };
        check_len(input, n * d)?;
        return match (&input.data, kind(input)?) {
            (TensorData::Numbers(v), Kind::Numeric) => Ok((
                v.iter()
                    .map(|&x| {
                        if x.is_nan() {
                            InputValue::Missing
                        } else {
                            InputValue::Number(x)
                        }
                    })
                    .collect(),
                n,
            )),
            (TensorData::Strings(_), _) | (_, Kind::Bytes) => Err(ApiError::InvalidBody(format!(
                "input `{}`: an [N, {d}] tensor must be numeric (FP32); send categorical inputs as one BYTES tensor per model input, named after it",
                input.name
            ))),
        };
    }
    // One tensor per model input.
    if inputs.len() != d {
        return Err(ApiError::InvalidBody(format!(
            "model `{}` takes one [N, {d}] tensor or {d} tensors named after its inputs, got {} tensors",
            model.name(),
            inputs.len()
        )));
    }
    let mut n: Option<usize> = None;
    let mut columns: Vec<Option<&RequestInput>> = vec![None; d];
    for input in inputs {
        let Some(i) = names.iter().position(|m| m.name == input.name) else {
            return Err(ApiError::InvalidBody(format!(
                "input `{}`: model `{}` has no such input (its inputs: {})",
                input.name,
                model.name(),
                names
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if columns[i].replace(input).is_some() {
            return Err(ApiError::InvalidBody(format!(
                "input `{}` is given twice",
                input.name
            )));
        }
        let rows = match input.shape.as_slice() {
            [rows] | [rows, 1] => check_rows(*rows)?,
            _ => {
                return Err(ApiError::InvalidBody(format!(
                    "input `{}`: shape {:?}: a per-input tensor has shape [N] or [N, 1]",
                    input.name, input.shape
                )))
            }
        };
        if *n.get_or_insert(rows) != rows {
            return Err(ApiError::InvalidBody(format!(
                "input `{}`: {rows} rows, but another input has {}",
                input.name,
                n.unwrap_or_default()
            )));
        }
        check_len(input, rows)?;
        match (&input.data, kind(input)?) {
            (TensorData::Numbers(_), Kind::Numeric) | (TensorData::Strings(_), Kind::Bytes) => {}
            // an empty array parses as numbers
            (TensorData::Numbers(v), Kind::Bytes) if v.is_empty() => {}
            _ => {
                return Err(ApiError::InvalidBody(format!(
                    "input `{}`: data does not match datatype `{}` (BYTES takes strings, numeric types take numbers)",
                    input.name, input.datatype
                )))
            }
        }
    }
    let n = n.unwrap_or_default();
    let mut values = vec![InputValue::Missing; n * d];
    for (i, column) in columns.iter().enumerate() {
        let Some(column) = column else { continue };
        match &column.data {
            TensorData::Numbers(v) => {
                for (r, &x) in v.iter().enumerate() {
                    if !x.is_nan() {
                        values[r * d + i] = InputValue::Number(x);
                    }
                }
            }
            TensorData::Strings(v) => {
                for (r, s) in v.iter().enumerate() {
                    values[r * d + i] = InputValue::Category(s);
                }
            }
        }
    }
    Ok((values, n))
}

async fn infer_with(
    state: AppState,
    name: String,
    version: Option<String>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let model = lookup(&state, &name)?;
    let version = version.as_deref().map(parse_version).transpose()?;
    let Json(request) = body?;
    if let Some(outputs) = &request.outputs {
        if let Some(other) = outputs.iter().find(|o| o.name != OUTPUT_NAME) {
            return Err(ApiError::InvalidBody(format!(
                "unknown output `{}`: model `{name}` has one output, `{OUTPUT_NAME}`",
                other.name
            )));
        }
    }
    let (values, n) = rows(&model, &request.inputs)?;
    let routing = model.routing();
    let chosen = match version {
        Some(v) => version_of(&model, &routing, v)?,
        None => {
            let bucket = match routing.policy {
                freshet_core::serving::TrafficPolicy::Canary { .. } => request
                    .id
                    .as_deref()
                    .map_or_else(|| model.next_request_bucket(), canary_bucket),
                _ => 0,
            };
            routing
                .for_bucket(bucket)
                .ok_or_else(|| no_version(&name))?
        }
    };
    let k = model.description.outputs;
    let mut scores = Vec::with_capacity(n * k);
    chosen
        .score(&values, &mut scores)
        .map_err(|e| score_failed(&model, &e))?;
    if scores.len() != n * k {
        return Err(score_failed(
            &model,
            &format!("{} scores for {n} rows", scores.len()),
        ));
    }
    if version.is_none() {
        super::predict::shadow_score(&model, &routing, &values, &scores, chosen.version(), None);
    }
    model.stats.add_rows(Endpoint::Infer, n);
    let mut response = Json(InferResponse {
        model_name: &name,
        model_version: chosen.version().to_string(),
        id: request.id.as_deref(),
        outputs: [ResponseOutput {
            name: OUTPUT_NAME,
            shape: [n, k],
            datatype: "FP32",
            data: &scores,
        }],
    })
    .into_response();
    response.extensions_mut().insert(ModelTiming {
        model: Arc::clone(&model),
        version: chosen.version(),
        endpoint: Endpoint::Infer,
    });
    Ok(response)
}

/// `POST /v2/models/{name}/infer`: the version the traffic policy picks (a canary splits by the
/// request's `id`, or spreads requests without one).
pub(crate) async fn infer(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    infer_with(state, name, None, body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`: that version, whatever the policy.
pub(crate) async fn infer_version(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path?;
    infer_with(state, name, Some(version), body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> Result<TensorData, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn tensor_data_is_flattened_row_major() {
        assert_eq!(
            data("[[1, 2.5], [null, true]]").expect("nested").nan_safe(),
            TensorData::Numbers(vec![1.0, 2.5, -0.5, 1.0])
        );
        assert_eq!(
            data(r#"["a", ["b"]]"#).expect("strings"),
            TensorData::Strings(vec!["a".into(), "b".into()])
        );
        assert_eq!(data("[]").expect("empty"), TensorData::Numbers(vec![]));
        assert!(data(r#"[1, "a"]"#).is_err());
        assert!(data("3").is_err());
        assert!(data(r#"[{"a": 1}]"#).is_err());
    }

    impl TensorData {
        /// NaN != NaN: compare missing values as a sentinel.
        fn nan_safe(self) -> Self {
            match self {
                Self::Numbers(v) => Self::Numbers(
                    v.into_iter()
                        .map(|x| if x.is_nan() { -0.5 } else { x })
                        .collect(),
                ),
                s => s,
            }
        }
    }
}
