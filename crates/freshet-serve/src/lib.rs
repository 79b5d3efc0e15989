//! freshet-serve: freshet's HTTP API over the online store, and the client `freshet query` uses.
//!
//! Routes (built by [`app`], served by [`serve`]):
//!
//! - `GET /v1/features/{view}/{entity}`: one entity's features;
//! - `POST /v1/features` with `{"view": .., "entities": [..]}`: many entities in one store call,
//!   answered in request order, at most [`MAX_ENTITIES_PER_REQUEST`] per request;
//! - `GET /v1/drift`: the current state of every drift monitor and feature: reference, latest
//!   window measures and alert states;
//! - `GET /healthz`: `{"status":"ok"}` (200) or `{"status":"degraded"}` (503), see
//!   [`AppState::set_health`];
//! - `GET /metrics`: Prometheus text exposition of the pipeline counters, store sizes and request
//!   latencies, and drift alert gauges and the evaluated-window counter;
//! - with models ([`AppState::with_models`]): `POST /v1/models/{name}/predict`, `GET /v1/models`,
//!   `GET /v1/models/{name}`, `GET|POST /v1/admin/models/{name}/traffic`, and the Open Inference
//!   Protocol (KServe V2) REST endpoints under `/v2` (see [`models`] and docs/serving.md).
//!
//! Guarantees: a response carries whole feature vectors as the store held them, never a
//! half-written one, each with the event time (`as_of`, epoch ms) it is valid as of. Every error
//! is a JSON `{"error": ".."}` with a status chosen in one place; store internals are logged,
//! never sent to the caller.
//!
//! The store is called on the request task: [`OnlineStore`](freshet_core::store::OnlineStore) is
//! synchronous and the embedded
//! store answers in microseconds.

pub mod client;
mod error;
mod features;
pub mod models;
pub mod requests;
mod state;
mod telemetry;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

pub use features::MAX_ENTITIES_PER_REQUEST;
pub use models::ServedRow;
pub use requests::{FeatureQuery, RequestError, RequestErrorKind};
pub use state::{AppState, HealthStatus};
pub use telemetry::LATENCY_BUCKETS_SECONDS;

/// How often [`serve`] records the current version of every model, so that versions published
/// between requests can be pinned too.
pub const VERSION_OBSERVE_INTERVAL: Duration = Duration::from_millis(100);

/// The HTTP API as a router, ready for [`serve`] or for `tower::ServiceExt::oneshot` in tests.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/features/{view}/{entity}", get(features::get_one))
        .route("/v1/features", post(features::get_many))
        .route("/v1/drift", get(state::drift))
        .route("/healthz", get(state::healthz))
        .route("/metrics", get(telemetry::metrics))
        .merge(models::routes())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::record_latency,
        ))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then lets in-flight requests finish.
/// With models, it also records their current versions every [`VERSION_OBSERVE_INTERVAL`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving http api");
    }
    let observer = state.models.is_some().then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(VERSION_OBSERVE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                state.observe_model_versions();
            }
        })
    });
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(observer) = observer {
        observer.abort();
    }
    served
}
