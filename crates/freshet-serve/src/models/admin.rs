//! `GET|POST /v1/admin/models/{name}/traffic`: read or set a model's traffic policy, behind a
//! bearer token when one is configured.

use std::fmt;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use freshet_core::serving::TrafficPolicy;
use serde::{Deserialize, Serialize};

use super::book::{PolicyError, Routing};
use super::{lookup, rejected};
use crate::error::ApiError;
use crate::state::AppState;

/// The bearer token the admin endpoints require. Never printed: `Debug` shows `AdminToken(***)`.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// A token; it must be non-empty and printable ASCII without spaces (it travels in an HTTP
    /// header).
    pub fn new(token: &str) -> Result<Self, String> {
        if token.is_empty() {
            return Err("the admin token is empty".to_owned());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(token.into()))
    }

    /// Whether `presented` is the token; takes the same time wherever they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut diff = u8::from(expected.len() != presented.len());
        for (i, &e) in expected.iter().enumerate() {
            diff |= e ^ presented.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// The body of `POST /v1/admin/models/{name}/traffic`: a policy, or `"rollback"`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum TrafficRequest {
    Latest,
    Pin(u64),
    Canary { version: u64, percent: f64 },
    Shadow(u64),
    Rollback,
}

#[derive(Serialize)]
struct TrafficResponse<'a> {
    model: &'a str,
    policy: TrafficPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<TrafficPolicy>,
    latest_version: Option<u64>,
    versions: Vec<u64>,
}

fn answer(model: &str, routing: &Routing, previous: Option<TrafficPolicy>) -> Response {
    Json(TrafficResponse {
        model,
        policy: routing.policy,
        previous,
        latest_version: routing.latest_version(),
        versions: routing.held(),
    })
    .into_response()
}

/// Whether the request may use the admin endpoints: it carries `Authorization: Bearer <token>`,
/// or no token is configured.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.admin_token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|presented| token.matches(presented))
}

/// 401 with the `www-authenticate` challenge.
fn unauthorized() -> Response {
    let error = rejected(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs `authorization: Bearer <admin token>`".to_owned(),
    );
    (
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"freshet admin\"")],
        error,
    )
        .into_response()
}

impl From<PolicyError> for ApiError {
    fn from(err: PolicyError) -> Self {
        let status = match err {
            PolicyError::Invalid(_) => StatusCode::BAD_REQUEST,
            PolicyError::NotHeld { .. } | PolicyError::NothingToRollBackTo { .. } => {
                StatusCode::CONFLICT
            }
            PolicyError::NoVersion(_) => StatusCode::SERVICE_UNAVAILABLE,
            PolicyError::NotKept { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        rejected(status, err.to_string())
    }
}

/// `GET /v1/admin/models/{name}/traffic`.
pub(crate) async fn get_traffic(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    if !authorized(&state, &headers) {
        return Ok(unauthorized());
    }
    let Path(name) = path?;
    let model = lookup(&state, &name)?;
    Ok(answer(model.name(), &model.routing(), None))
}

/// `POST /v1/admin/models/{name}/traffic`.
pub(crate) async fn set_traffic(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<TrafficRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !authorized(&state, &headers) {
        return Ok(unauthorized());
    }
    let Path(name) = path?;
    let model = lookup(&state, &name)?;
    let Json(request) = body?;
    let (previous, routing) = match request {
        TrafficRequest::Rollback => model.roll_back()?,
        TrafficRequest::Latest => model.set_policy(TrafficPolicy::Latest)?,
        TrafficRequest::Pin(v) => model.set_policy(TrafficPolicy::Pin(v))?,
        TrafficRequest::Canary { version, percent } => {
            model.set_policy(TrafficPolicy::Canary { version, percent })?
        }
        TrafficRequest::Shadow(v) => model.set_policy(TrafficPolicy::Shadow(v))?,
    };
    tracing::info!(
        model = model.name(),
        policy = %routing.policy,
        previous = %previous,
        latest_version = routing.latest_version(),
        "traffic policy changed"
    );
    Ok(answer(model.name(), &routing, Some(previous)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_never_print() {
        let token = AdminToken::new("s3cret").expect("token");
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b"s3cret!"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
        assert!(AdminToken::new("").is_err());
        assert!(AdminToken::new("a b").is_err());
    }
}
