//! `[[serving]]` on Kafka: the request handlers behind freshet-kafka's request loops.
//!
//! - `predict` tables read `{"request_id", "entity" | "entities", "fields"}` (the body of
//!   `POST /v1/models/{name}/predict` plus the id) and answer
//!   `{"request_id", "model", "version", "predictions": [..]}`, with the one prediction's
//!   `entity`, `score` (or `scores`), `features_as_of` and `missing` repeated at the top when
//!   the request asked for one entity. Scoring goes through the same routing snapshot and
//!   traffic policy as HTTP (freshet-serve's [`AppState::predict_batch`]).
//! - `features` tables read `{"request_id", "view", "entities"}` and answer
//!   `{"request_id", "view", "results": [{"entity", "as_of", "features"} | {"entity", "found": false}]}`.
//! - A request that is not a JSON object, has no usable `request_id`, or is refused as invalid
//!   (unknown field, wrong type, unknown view) goes to the dead-letter topic with the reason;
//!   when its id was readable, an answer `{"request_id", "error"}` goes to the response topic
//!   too. A store or model failure is answered with `{"request_id", "error"}` and counted.
//! - Feature log: for a model with delayed labels, every served row goes to the model's label
//!   join in the dataflow ([`freshet_features::served`]), keyed by the request's join-key field
//!   (in `fields`, or at the top of the request) or else by its `request_id`, at the event time
//!   of its event-time field (else the wall clock), so a label joins to the vector that was
//!   served.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use freshet_core::event::Scalar;
use freshet_core::serving::InputValue;
use freshet_core::spec::{PipelineSpec, ServingKind, ServingSpec};
use freshet_features::model::ModelRow;
use freshet_features::ServedRows;
use freshet_kafka::{Reply, Request, RequestHandler};
use freshet_serve::{AppState, FeatureQuery, RequestError, RequestErrorKind, ServedRow};
use serde_json::{Map, Value};

use freshet_serve::requests::json_type_name as type_name;

/// The handler of one `[[serving]]` table.
pub fn handler(
    spec: &PipelineSpec,
    table: &ServingSpec,
    state: AppState,
    served: Option<Arc<ServedRows>>,
) -> Box<dyn RequestHandler> {
    match table.kind {
        ServingKind::Features => Box::new(FeatureHandler { state }),
        ServingKind::Predict => {
            let model = table.model.clone().unwrap_or_default();
            let log = served
                .filter(|_| table.log_features)
                .and_then(|served| FeatureLog::of(spec, &model, served));
            Box::new(PredictHandler { model, state, log })
        }
    }
}

/// Where served rows go for the label join.
struct FeatureLog {
    served: Arc<ServedRows>,
    /// The label's join key field.
    join_key: String,
    /// The event-time field of the model's event source.
    time_field: Option<String>,
}

impl FeatureLog {
    /// The feature log of `model`, if it learns from delayed labels.
    fn of(spec: &PipelineSpec, model: &str, served: Arc<ServedRows>) -> Option<Self> {
        if !served.accepts(model) {
            return None;
        }
        let m = spec
            .models
            .iter()
            .map(|m| m.get_ref())
            .find(|m| m.name == model)?;
        m.label.source.as_ref()?;
        let join_key = m.label.join_key.clone()?;
        let time_field = m
            .features
            .iter()
            .filter_map(|f| f.split_once('.').map(|(table, _)| table))
            .find_map(|table| {
                spec.source(table).or_else(|| {
                    let view = spec.feature_view(table)?;
                    spec.source(&view.get_ref().source)
                })
            })
            .map(|s| s.event_time.clone());
        Some(Self {
            served,
            join_key,
            time_field,
        })
    }

    fn log(&self, model: &str, id: &str, body: &Value, row: &ServedRow<'_>) {
        let field = |name: &str| {
            body.get("fields")
                .and_then(|f| f.get(name))
                .or_else(|| body.get(name))
        };
        let key = match field(&self.join_key) {
            Some(Value::String(s)) => Scalar::Str(s.as_str().into()),
            Some(Value::Number(n)) => n.as_f64().map_or(Scalar::Null, Scalar::Num),
            _ => Scalar::Str(id.into()),
        };
        let ts_ms = self
            .time_field
            .as_deref()
            .and_then(field)
            .and_then(Value::as_u64)
            .unwrap_or_else(now_ms);
        let values = row
            .values
            .iter()
            .map(|v| match v {
                InputValue::Missing => Scalar::Null,
                InputValue::Number(n) => Scalar::Num(*n),
                InputValue::Category(c) => Scalar::Str((*c).into()),
            })
            .collect();
        // a full queue counts the row as dropped (the dataflow stopped taking rows)
        self.served.push(ModelRow {
            model: model.to_owned(),
            ts_ms,
            outcome_ms: ts_ms,
            entity: row.entity.to_owned(),
            key,
            values,
            label: None,
            served: true,
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A request's id and the rest of its body, or the reason it is malformed (with the id when
/// it was readable).
fn split_request(payload: &[u8]) -> Result<(String, Map<String, Value>), Reply> {
    let malformed = |reason: String| Reply::Malformed {
        reason,
        answer: None,
    };
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| malformed(format!("not valid JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(malformed(format!(
            "expected a JSON object, found {}",
            type_name(&value)
        )));
    };
    let id = match body.remove("request_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(other) => {
            return Err(malformed(format!(
                "field `request_id`: expected a non-empty string or an integer, found {}",
                type_name(&other)
            )))
        }
        None => return Err(malformed("missing field `request_id`".to_owned())),
    };
    Ok((id, body))
}

fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The reply to a request the serving layer refused or failed.
fn refused(id: &str, mut answer: Map<String, Value>, error: &RequestError) -> Reply {
    answer.insert("request_id".into(), Value::String(id.to_owned()));
    answer.insert("error".into(), Value::String(error.message.clone()));
    let payload = encode(&Value::Object(answer));
    match error.kind {
        RequestErrorKind::Invalid => Reply::Malformed {
            reason: error.message.clone(),
            answer: Some((id.as_bytes().to_vec(), payload)),
        },
        RequestErrorKind::Unavailable | RequestErrorKind::Internal => Reply::Answer {
            key: id.as_bytes().to_vec(),
            payload,
            failed: true,
        },
    }
}

struct PredictHandler {
    model: String,
    state: AppState,
    log: Option<FeatureLog>,
}

impl RequestHandler for PredictHandler {
    fn handle(&mut self, batch: &[Request<'_>]) -> Vec<Reply> {
        let split: Vec<Result<(String, Value), Reply>> = batch
            .iter()
            .map(|r| split_request(r.payload).map(|(id, body)| (id, Value::Object(body))))
            .collect();
        let bodies: Vec<&Value> = split
            .iter()
            .filter_map(|s| s.as_ref().ok().map(|(_, body)| body))
            .collect();
        let ids: Vec<&str> = split
            .iter()
            .filter_map(|s| s.as_ref().ok().map(|(id, _)| id.as_str()))
            .collect();
        let model = self.model.as_str();
        let log = self.log.as_ref();
        let answers = self.state.predict_batch(model, &bodies, &mut |row| {
            if let Some(log) = log {
                log.log(model, ids[row.request], bodies[row.request], &row);
            }
        });
        let mut answers = answers.into_iter();
        split
            .into_iter()
            .map(|s| {
                let (id, _) = match s {
                    Ok(ok) => ok,
                    Err(reply) => return reply,
                };
                let mut base = Map::new();
                base.insert("model".into(), Value::String(self.model.clone()));
                match answers.next() {
                    Some(Ok(Value::Object(mut answer))) => {
                        if let Some([one]) = answer
                            .get("predictions")
                            .and_then(Value::as_array)
                            .map(Vec::as_slice)
                        {
                            let one = one.clone();
                            for key in ["entity", "score", "scores", "features_as_of", "missing"] {
                                if let Some(v) = one.get(key) {
                                    answer.insert(key.into(), v.clone());
                                }
                            }
                        }
                        answer.insert("request_id".into(), Value::String(id.clone()));
                        Reply::Answer {
                            key: id.into_bytes(),
                            payload: encode(&Value::Object(answer)),
                            failed: false,
                        }
                    }
                    Some(Ok(_)) | None => refused(
                        &id,
                        base,
                        &RequestError {
                            kind: RequestErrorKind::Internal,
                            message: "internal error".into(),
                        },
                    ),
                    Some(Err(e)) => refused(&id, base, &e),
                }
            })
            .collect()
    }
}

struct FeatureHandler {
    state: AppState,
}

/// A feature query's view and entities, or why it is malformed.
type Query = Result<(String, Vec<String>), RequestError>;

/// Reads a feature query's body (the request without its id).
fn feature_query(body: &Map<String, Value>) -> Query {
    for key in body.keys() {
        if !matches!(key.as_str(), "view" | "entities") {
            return Err(RequestError::invalid(format!(
                "unknown field `{key}`, expected `request_id`, `view` or `entities`"
            )));
        }
    }
    let view = match body.get("view") {
        Some(Value::String(v)) => v.clone(),
        Some(other) => {
            return Err(RequestError::invalid(format!(
                "`view` must be a string, got {}",
                type_name(other)
            )))
        }
        None => return Err(RequestError::invalid("missing field `view`")),
    };
    let entities = match body.get("entities") {
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
                other => Err(RequestError::invalid(format!(
                    "`entities[{i}]` must be a string or an integer, got {}",
                    type_name(other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(RequestError::invalid(format!(
                "`entities` must be an array, got {}",
                type_name(other)
            )))
        }
        None => return Err(RequestError::invalid("missing field `entities`")),
    };
    if entities.len() > freshet_serve::MAX_ENTITIES_PER_REQUEST {
        return Err(RequestError::invalid(format!(
            "`entities` holds {} entities, at most {} are allowed per request",
            entities.len(),
            freshet_serve::MAX_ENTITIES_PER_REQUEST
        )));
    }
    Ok((view, entities))
}

impl RequestHandler for FeatureHandler {
    fn handle(&mut self, batch: &[Request<'_>]) -> Vec<Reply> {
        let parsed: Vec<Result<(String, Query), Reply>> = batch
            .iter()
            .map(|r| split_request(r.payload).map(|(id, body)| (id, feature_query(&body))))
            .collect();
        let entity_refs: Vec<Vec<&str>> = parsed
            .iter()
            .filter_map(|p| match p {
                Ok((_, Ok((_, entities)))) => Some(entities.iter().map(String::as_str).collect()),
                _ => None,
            })
            .collect();
        let queries: Vec<FeatureQuery<'_>> = parsed
            .iter()
            .filter_map(|p| match p {
                Ok((_, Ok((view, _)))) => Some(view.as_str()),
                _ => None,
            })
            .zip(&entity_refs)
            .map(|(view, entities)| FeatureQuery {
                view,
                entities: entities.as_slice(),
            })
            .collect();
        let mut answers = self.state.features_batch(&queries).into_iter();
        parsed
            .iter()
            .map(|p| {
                let (id, query) = match p {
                    Ok(ok) => ok,
                    Err(reply) => return reply.clone(),
                };
                let mut base = Map::new();
                if let Ok((view, _)) = query {
                    base.insert("view".into(), Value::String(view.clone()));
                }
                match query {
                    Err(e) => refused(id, base, e),
                    Ok(_) => match answers.next() {
                        Some(Ok(Value::Object(mut answer))) => {
                            answer.insert("request_id".into(), Value::String(id.clone()));
                            Reply::Answer {
                                key: id.as_bytes().to_vec(),
                                payload: encode(&Value::Object(answer)),
                                failed: false,
                            }
                        }
                        Some(Err(e)) => refused(id, base, &e),
                        Some(Ok(_)) | None => refused(
                            id,
                            base,
                            &RequestError {
                                kind: RequestErrorKind::Internal,
                                message: "internal error".into(),
                            },
                        ),
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_required_and_typed() {
        let reason = |payload: &str| match split_request(payload.as_bytes()) {
            Err(Reply::Malformed { reason, .. }) => reason,
            other => panic!("{payload}: {other:?}"),
        };
        assert!(reason("{nope").starts_with("not valid JSON"));
        assert_eq!(reason("[1]"), "expected a JSON object, found an array");
        assert_eq!(reason(r#"{"entity":"a"}"#), "missing field `request_id`");
        assert!(reason(r#"{"request_id":[1]}"#).contains("found an array"));
        assert!(reason(r#"{"request_id":""}"#).contains("non-empty"));
        let (id, body) = split_request(br#"{"request_id":7,"entity":"a"}"#).expect("valid");
        assert_eq!((id.as_str(), body.len()), ("7", 1));
    }

    #[test]
    fn feature_queries_name_the_faulty_field() {
        let error = |text: &str| {
            let body: Map<String, Value> = serde_json::from_str(text).expect("json");
            feature_query(&body).expect_err(text).message
        };
        assert_eq!(error(r#"{"entities":["a"]}"#), "missing field `view`");
        assert_eq!(error(r#"{"view":"card"}"#), "missing field `entities`");
        assert!(error(r#"{"view":"card","entities":[1.5]}"#).contains("`entities[0]`"));
        assert!(error(r#"{"view":"card","entities":[],"x":1}"#).contains("unknown field `x`"));
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"view":"card","entities":["a",7]}"#).expect("json");
        assert_eq!(
            feature_query(&body).expect("valid"),
            ("card".to_owned(), vec!["a".to_owned(), "7".to_owned()])
        );
    }
}
