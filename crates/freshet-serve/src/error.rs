//! The one place API errors become HTTP responses: a status and `{"error": ".."}`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use freshet_core::store::StoreError;

/// Everything a request can fail with. Messages are for the caller: they name what was wrong
/// with the request and never carry store internals (those are logged instead).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("unknown feature view `{0}`")]
    UnknownView(String),
    #[error("entity `{entity}` not found in feature view `{view}`")]
    UnknownEntity { view: String, entity: String },
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("invalid request path: {0}")]
    InvalidPath(String),
    #[error("expected a JSON body with `content-type: application/json`")]
    NotJson,
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("the online store is unavailable, retry later")]
    StoreUnavailable,
    #[error("internal error")]
    Internal,
    #[error("no route for {method} {path}")]
    NoRoute { method: Method, path: String },
    #[error("method {0} not allowed here")]
    MethodNotAllowed(Method),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnknownView(_) | Self::UnknownEntity { .. } | Self::NoRoute { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::InvalidBody(_) | Self::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Rejected { status, .. } => *status,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UnknownView(view) => Self::UnknownView(view),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "online store unavailable");
                Self::StoreUnavailable
            }
            StoreError::Fatal(detail) => {
                tracing::error!(error = %detail, "online store failed");
                Self::Internal
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // The inner serde error names the field and position, e.g. "missing field `view`".
            JsonRejection::JsonDataError(e) => Self::InvalidBody(inner_text(&e)),
            JsonRejection::JsonSyntaxError(e) => Self::InvalidBody(inner_text(&e)),
            JsonRejection::MissingJsonContentType(_) => Self::NotJson,
            other => Self::Rejected {
                status: other.status(),
                message: other.body_text().to_lowercase(),
            },
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::InvalidPath(rejection.body_text())
    }
}

fn inner_text(err: &dyn std::error::Error) -> String {
    err.source()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

/// Fallback for paths no route matches.
pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method,
        path: uri.path().to_owned(),
    }
}

/// Fallback for a known path asked with the wrong method.
pub(crate) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}
