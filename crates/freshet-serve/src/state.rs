//! The state every handler shares: the store, the pipeline counters, the drift board, the health
//! flag and the request-latency histograms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use freshet_core::drift::DriftBoard;
use freshet_core::metrics::{KafkaServingBoard, LearnerBoard, PipelineMetrics};
use freshet_core::serving::{PolicyKeeper, Scorer, ServingStart};
use freshet_core::store::OnlineStore;

use crate::models::{AdminToken, ModelBook};
use crate::telemetry::HttpMetrics;

/// What `GET /healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Serving normally: 200 `{"status":"ok"}`.
    Ok,
    /// Up but impaired (for example the pipeline stalled): 503 `{"status":"degraded"}`.
    Degraded,
}

impl HealthStatus {
    /// The name sent in the `status` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Degraded => 1,
        }
    }

    fn from_u8(v: u8) -> Self {
        if v == 0 {
            Self::Ok
        } else {
            Self::Degraded
        }
    }
}

/// Shared state of the HTTP API. Cloning is cheap, and clones share everything: the binary keeps
/// one to flip [`AppState::set_health`] while the server holds another.
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Arc<dyn OnlineStore>,
    pub(crate) pipeline: Arc<PipelineMetrics>,
    pub(crate) http: Arc<HttpMetrics>,
    pub(crate) drift: Option<Arc<DriftBoard>>,
    pub(crate) models: Option<Arc<ModelBook>>,
    pub(crate) admin_token: Option<AdminToken>,
    pub(crate) learners: Option<Arc<dyn LearnerBoard>>,
    pub(crate) kafka_serving: Option<Arc<dyn KafkaServingBoard>>,
    health: Arc<AtomicU8>,
}

impl AppState {
    /// State over `store` and the pipeline's counters, healthy, with empty latency histograms.
    pub fn new(store: Arc<dyn OnlineStore>, pipeline: Arc<PipelineMetrics>) -> Self {
        Self {
            store,
            pipeline,
            http: Arc::new(HttpMetrics::default()),
            drift: None,
            models: None,
            admin_token: None,
            learners: None,
            kafka_serving: None,
            health: Arc::new(AtomicU8::new(HealthStatus::Ok.to_u8())),
        }
    }

    /// Adds the drift board that `/v1/drift` and the `freshet_drift_*` metrics read.
    #[must_use]
    pub fn with_drift(mut self, board: Arc<DriftBoard>) -> Self {
        self.drift = Some(board);
        self
    }

    /// Serves the models of `scorer` (`/v1/models/...`, `/v2/...`), each with the `latest`
    /// traffic policy.
    #[must_use]
    pub fn with_models(mut self, scorer: Arc<dyn Scorer>) -> Self {
        let book = ModelBook::new(&scorer, &HashMap::new(), None);
        // `latest` names no version, so nothing can be refused
        self.models = book.ok().map(Arc::new);
        self
    }

    /// Serves the models of `scorer`, each starting as `starts` says (by model name; default
    /// `latest`, no loaded versions), and tells `keeper` of every later policy change before it
    /// takes effect. Fails when a start policy names a version its model does not hold.
    pub fn with_served_models(
        mut self,
        scorer: Arc<dyn Scorer>,
        starts: &HashMap<String, ServingStart>,
        keeper: Option<Arc<dyn PolicyKeeper>>,
    ) -> Result<Self, String> {
        let book = ModelBook::new(&scorer, starts, keeper.as_ref())?;
        self.models = Some(Arc::new(book));
        Ok(self)
    }

    /// Adds the online models' learning metrics that `/metrics` exposes as `freshet_model_*`.
    #[must_use]
    pub fn with_learners(mut self, learners: Arc<dyn LearnerBoard>) -> Self {
        self.learners = Some(learners);
        self
    }

    /// Adds the Kafka request loops' counters that `/metrics` exposes as
    /// `freshet_serving_kafka_*`.
    #[must_use]
    pub fn with_kafka_serving(mut self, board: Arc<dyn KafkaServingBoard>) -> Self {
        self.kafka_serving = Some(board);
        self
    }

    /// Requires `authorization: Bearer <token>` on the admin endpoints (without a token they are
    /// open, for a server on loopback).
    #[must_use]
    pub fn with_admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Records the current version of every served model; [`crate::serve`] calls it every
    /// [`crate::VERSION_OBSERVE_INTERVAL`], so versions published between requests are held
    /// too.
    pub fn observe_model_versions(&self) {
        if let Some(book) = &self.models {
            book.observe_all();
        }
    }

    /// The store the API reads.
    pub fn store(&self) -> &Arc<dyn OnlineStore> {
        &self.store
    }

    /// The pipeline counters `/metrics` exposes.
    pub fn pipeline_metrics(&self) -> &Arc<PipelineMetrics> {
        &self.pipeline
    }

    /// Sets what `/healthz` reports from now on.
    pub fn set_health(&self, status: HealthStatus) {
        self.health.store(status.to_u8(), Ordering::Relaxed);
    }

    /// What `/healthz` reports now.
    pub fn health(&self) -> HealthStatus {
        HealthStatus::from_u8(self.health.load(Ordering::Relaxed))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("views", &self.store.views())
            .field("health", &self.health())
            .field(
                "models",
                &self
                    .models
                    .iter()
                    .flat_map(|b| b.iter().map(|m| m.name().to_owned()))
                    .collect::<Vec<_>>(),
            )
            .field("admin_token", &self.admin_token)
            .finish_non_exhaustive()
    }
}

/// `GET /healthz`.
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.health();
    let status = match health {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Degraded => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(serde_json::json!({ "status": health.as_str() })),
    )
        .into_response()
}

/// `GET /v1/drift`: every monitor's current state (`{"monitors": []}` without monitors).
pub(crate) async fn drift(State(state): State<AppState>) -> Response {
    let monitors = state
        .drift
        .as_ref()
        .map(|board| board.snapshot())
        .unwrap_or_default();
    Json(serde_json::json!({ "monitors": monitors })).into_response()
}
