//! `GET /v1/features/{view}/{entity}` and `POST /v1/features`: feature vectors by entity.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use freshet_core::store::FeatureValue;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ApiError;
use crate::state::AppState;

/// Most entities one `POST /v1/features` may ask for; more is a 400.
pub const MAX_ENTITIES_PER_REQUEST: usize = 10_000;

/// `POST /v1/features` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    view: String,
    entities: Vec<String>,
}

/// A vector as a JSON object, feature names in schema order.
struct Features<'a> {
    names: &'a [String],
    values: &'a [FeatureValue],
}

impl Serialize for Features<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.names.len()))?;
        for (name, value) in self.names.iter().zip(self.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct OneResponse<'a> {
    view: &'a str,
    entity: &'a str,
    as_of: u64,
    features: Features<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem<'a> {
    Found {
        entity: &'a str,
        as_of: u64,
        features: Features<'a>,
    },
    Missing {
        entity: &'a str,
        found: bool,
    },
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    view: &'a str,
    results: Vec<BatchItem<'a>>,
}

/// `GET /v1/features/{view}/{entity}`.
pub(crate) async fn get_one(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((view, entity)) = path?;
    let schema = state
        .store
        .view(&view)
        .ok_or_else(|| ApiError::UnknownView(view.clone()))?;
    let Some(vector) = state.store.get(&view, &entity)? else {
        return Err(ApiError::UnknownEntity { view, entity });
    };
    let body = OneResponse {
        view: &view,
        entity: &entity,
        as_of: vector.as_of_ms,
        features: Features {
            names: &schema.features,
            values: &vector.values,
        },
    };
    Ok(Json(body).into_response())
}

/// `POST /v1/features`.
pub(crate) async fn get_many(
    State(state): State<AppState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.entities.len() > MAX_ENTITIES_PER_REQUEST {
        return Err(ApiError::InvalidBody(format!(
            "`entities` holds {} entities, at most {MAX_ENTITIES_PER_REQUEST} are allowed per request",
            request.entities.len()
        )));
    }
    let schema = state
        .store
        .view(&request.view)
        .ok_or_else(|| ApiError::UnknownView(request.view.clone()))?;
    let asked: Vec<&str> = request.entities.iter().map(String::as_str).collect();
    let vectors = state.store.get_many(&request.view, &asked)?;
    let results = asked
        .iter()
        .zip(&vectors)
        .map(|(entity, vector)| match vector {
            Some(v) => BatchItem::Found {
                entity,
                as_of: v.as_of_ms,
                features: Features {
                    names: &schema.features,
                    values: &v.values,
                },
            },
            None => BatchItem::Missing {
                entity,
                found: false,
            },
        })
        .collect();
    let body = BatchResponse {
        view: &request.view,
        results,
    };
    Ok(Json(body).into_response())
}

/// The schema's feature names and the vectors of `keys` in `view`, for the batch paths.
pub(crate) fn lookup_many(
    store: &dyn freshet_core::store::OnlineStore,
    view: &str,
    keys: &[&str],
) -> Result<(Vec<String>, Vec<Option<freshet_core::store::FeatureVector>>), ApiError> {
    let schema = store
        .view(view)
        .ok_or_else(|| ApiError::UnknownView(view.to_owned()))?;
    let vectors = if keys.is_empty() {
        Vec::new()
    } else {
        store.get_many(view, keys)?
    };
    Ok((schema.features.clone(), vectors))
}

/// The `POST /v1/features` response body as a JSON value.
pub(crate) fn batch_json(
    view: &str,
    names: &[String],
    entities: &[&str],
    vectors: &[Option<freshet_core::store::FeatureVector>],
) -> serde_json::Value {
    let results = entities
        .iter()
        .zip(vectors)
        .map(|(entity, vector)| match vector {
            Some(v) => BatchItem::Found {
                entity,
                as_of: v.as_of_ms,
                features: Features {
                    names,
                    values: &v.values,
                },
            },
            None => BatchItem::Missing {
                entity,
                found: false,
            },
        })
        .collect();
    serde_json::to_value(BatchResponse { view, results })
        .unwrap_or_else(|_| serde_json::json!({ "view": view, "results": [] }))
}
