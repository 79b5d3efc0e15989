//! Model serving over HTTP: predictions by entity (`/v1/models/{name}/predict`: features from the
//! online store, event fields from the request), the Open Inference Protocol (KServe V2) REST
//! endpoints over raw tensors, and per-model traffic policies set through an admin endpoint.
//!
//! Guarantees:
//! - **Hot swap.** A request reads one immutable routing snapshot and scores with the versions
//!   it names; the learner's next publication, or a policy change, builds a new snapshot and
//!   never fails or blocks a request in flight. Every answer names the version that scored it.
//! - **Versions.** Each model holds its last [`RECENT_VERSIONS`] versions (and the one its policy
//!   names), so `/versions/{v}`, pins, canaries, shadows and rollbacks can use them.
//! - **Traffic.** `latest` (default), `pin`, `canary` (sticky per entity: the same entity always
//!   lands on the same side), `shadow` (scored and compared, never returned).
//! - Scoring never leaves the request task: models answer in microseconds on the CPU.
//!
//! The models come through [`freshet_core::serving::Scorer`], so this crate builds no learner.

mod admin;
mod book;
mod metrics;
mod predict;
mod v2;

#[cfg(test)]
mod tests;

use std::fmt::Display;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

pub use admin::AdminToken;
pub(crate) use book::ModelBook;
pub use book::RECENT_VERSIONS;
pub(crate) use metrics::{render as render_metrics, Endpoint, ModelTiming};
pub(crate) use predict::predict_many;
pub use predict::ServedRow;

use crate::error::ApiError;
use crate::state::AppState;
use book::ServedModel;

/// The model routes, merged into [`crate::app`].
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(predict::list))
        .route("/v1/models/{name}", get(predict::describe))
        .route("/v1/models/{name}/predict", post(predict::predict))
        .route(
            "/v1/admin/models/{name}/traffic",
            get(admin::get_traffic).post(admin::set_traffic),
        )
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(v2::infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2::version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2::version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(v2::infer_version),
        )
}

/// An error with any status and a message for the caller.
fn rejected(status: StatusCode, message: String) -> ApiError {
    ApiError::Rejected { status, message }
}

/// The served model `name`, or 404.
fn lookup(state: &AppState, name: &str) -> Result<Arc<ServedModel>, ApiError> {
    state
        .models
        .as_ref()
        .and_then(|book| book.get(name))
        .cloned()
        .ok_or_else(|| rejected(StatusCode::NOT_FOUND, format!("unknown model `{name}`")))
}

/// 503: the model has not published a version yet (the learner publishes version 0 at start, so
/// this is brief).
fn no_version(name: &str) -> ApiError {
    rejected(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("model `{name}` has no published version yet, retry later"),
    )
}

/// 500 for a model that failed to score; the detail goes to the log, not to the caller.
fn score_failed(model: &ServedModel, error: &dyn Display) -> ApiError {
    tracing::error!(model = model.name(), error = %error, "scoring failed");
    ApiError::Internal
}
