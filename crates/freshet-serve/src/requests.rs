//! Serving requests that do not come over HTTP: the binary's Kafka request loops hand batches
//! of request bodies to [`AppState::predict_batch`] and [`AppState::features_batch`].
//!
//! Guarantees: the same parsing, store lookups, traffic policies (`latest`, `pin`, `canary`,
//! `shadow`, set through the admin endpoint), scoring and statistics as the HTTP routes, so a
//! request answers the same over Kafka as over HTTP. A batch makes one store call per feature
//! view for every entity in it and reads one routing snapshot, so a version change during the
//! batch never splits it. Each request gets its own answer or error, in batch order: a bad
//! request fails alone.

use std::time::Instant;

use serde_json::Value;

use crate::error::ApiError;
use crate::models::{predict_many, Endpoint, ServedRow};
use crate::state::AppState;

/// What kind of failure a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorKind {
    /// The request is malformed or names something that does not exist (an unknown model or
    /// view, a field of the wrong type): sending it again will fail again.
    Invalid,
    /// The store is unreachable or the model has no version yet: it may succeed later.
    Unavailable,
    /// The model or the store failed; the detail is in the log.
    Internal,
}

/// Why a request got no answer; `message` is for the caller and names the faulty field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// What kind of failure.
    pub kind: RequestErrorKind,
    /// What went wrong, for the caller.
    pub message: String,
}

impl RequestError {
    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: RequestErrorKind::Invalid,
            message: message.into(),
        }
    }
}

impl From<ApiError> for RequestError {
    fn from(error: ApiError) -> Self {
        let status = error.status().as_u16();
        let kind = match status {
            503 => RequestErrorKind::Unavailable,
            400..=499 => RequestErrorKind::Invalid,
            _ => RequestErrorKind::Internal,
        };
        Self {
            kind,
            message: error.to_string(),
        }
    }
}

/// One feature query: a view and its entities.
#[derive(Debug, Clone, Copy)]
pub struct FeatureQuery<'a> {
    /// The feature view.
    pub view: &'a str,
    /// The entities, answered in this order.
    pub entities: &'a [&'a str],
}

impl AppState {
    /// Whether `model` is served.
    pub fn serves_model(&self, model: &str) -> bool {
        self.models.as_ref().is_some_and(|b| b.get(model).is_some())
    }

    /// Answers a batch of predict bodies for `model`, each shaped as the body of
    /// `POST /v1/models/{model}/predict`; each answer is that route's response body. `log` sees
    /// every scored row of every answered request (the feature log). The batch's scoring time
    /// is recorded under the `kafka` endpoint.
    pub fn predict_batch(
        &self,
        model: &str,
        bodies: &[&Value],
        log: &mut dyn FnMut(ServedRow<'_>),
    ) -> Vec<Result<Value, RequestError>> {
        let started = Instant::now();
        let Some(served) = self.models.as_ref().and_then(|b| b.get(model)).cloned() else {
            let error = RequestError::invalid(format!("unknown model `{model}`"));
            return bodies.iter().map(|_| Err(error.clone())).collect();
        };
        let answers = predict_many(&*self.store, &served, bodies, Endpoint::Kafka, log);
        let elapsed = started.elapsed();
        answers
            .into_iter()
            .map(|answer| {
                let answer = answer?;
                served
                    .stats
                    .record_latency(answer.version, Endpoint::Kafka, elapsed);
                serde_json::to_value(&answer).map_err(|e| {
                    tracing::error!(model, error = %e, "cannot encode an answer");
                    RequestError::from(ApiError::Internal)
                })
            })
            .collect()
    }

    /// Answers a batch of feature queries, each with the body of `POST /v1/features`
    /// (`{"view", "results": [{"entity", "as_of", "features"} | {"entity", "found": false}]}`):
    /// one store call per view for every entity asked of it in the batch.
    pub fn features_batch(&self, queries: &[FeatureQuery<'_>]) -> Vec<Result<Value, RequestError>> {
        let mut answers: Vec<Option<Result<Value, RequestError>>> =
            queries.iter().map(|_| None).collect();
        let mut views: Vec<&str> = queries.iter().map(|q| q.view).collect();
        views.sort_unstable();
        views.dedup();
        for view in views {
            let members: Vec<usize> = (0..queries.len())
                .filter(|&i| queries[i].view == view)
                .collect();
            let keys: Vec<&str> = members
                .iter()
                .flat_map(|&i| queries[i].entities.iter().copied())
                .collect();
            let found = crate::features::lookup_many(&*self.store, view, &keys);
            let mut at = 0;
            for &i in &members {
                let count = queries[i].entities.len();
                answers[i] = Some(match &found {
                    Ok((names, vectors)) => Ok(crate::features::batch_json(
                        view,
                        names,
                        &keys[at..at + count],
                        &vectors[at..at + count],
                    )),
                    Err(e) => Err(RequestError::from(e.clone())),
                });
                at += count;
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(RequestError::from(ApiError::Internal))))
            .collect()
    }
}

/// How a JSON value's type is named in error messages ("a string", "an array", ...).
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
