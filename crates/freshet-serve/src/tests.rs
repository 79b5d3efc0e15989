use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::store::{FeatureValue, FeatureVector, OnlineStore, StoreWrite, ViewSchema};
use freshet_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

fn state() -> AppState {
    let store = MemoryStore::new();
    store
        .register_view(ViewSchema {
            name: "card".to_owned(),
            features: vec![
                "txn_count_5m".to_owned(),
                "amount_mean_1h".to_owned(),
                "last_country".to_owned(),
            ],
            ttl_ms: None,
        })
        .expect("register");
    let upsert = |entity: &str, as_of_ms, count, mean: FeatureValue| StoreWrite::Upsert {
        entity: entity.to_owned(),
        vector: FeatureVector {
            as_of_ms,
            values: vec![
                FeatureValue::Int(count),
                mean,
                FeatureValue::Str("FR".into()),
            ],
        },
    };
    store
        .write_batch(
            "card",
            vec![
                upsert("c1", 1_000, 3, FeatureValue::Float(12.5)),
                upsert("c2", 2_000, 0, FeatureValue::Null),
            ],
        )
        .expect("write");
    AppState::new(Arc::new(store), Arc::new(PipelineMetrics::new()))
}

async fn send(app: &Router, request: Request<Body>) -> Response {
    app.clone().oneshot(request).await.expect("infallible")
}

async fn get(app: &Router, uri: &str) -> Response {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn post_json(app: &Router, body: &str) -> Response {
    let request = Request::post("/v1/features")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    send(app, request).await
}

async fn body_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let json = serde_json::from_str(&body_text(response).await).expect("json body");
    (status, json)
}

#[tokio::test]
async fn get_one_returns_named_features_in_schema_order() {
    let app = app(state());
    let response = get(&app, "/v1/features/card/c1").await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let text = body_text(response).await;
    assert_eq!(
        text,
        r#"{"view":"card","entity":"c1","as_of":1000,"features":{"txn_count_5m":3,"amount_mean_1h":12.5,"last_country":"FR"}}"#
    );
    let (status, body) = json_of(get(&app, "/v1/features/card/c2").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["features"]["amount_mean_1h"], Value::Null);
}

#[tokio::test]
async fn get_one_says_whether_the_view_or_the_entity_is_missing() {
    let app = app(state());
    let (status, body) = json_of(get(&app, "/v1/features/nope/c1").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "unknown feature view `nope`"}));

    let (status, body) = json_of(get(&app, "/v1/features/card/c9").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "entity `c9` not found in feature view `card`"})
    );
}

#[tokio::test]
async fn get_one_decodes_percent_encoded_entities() {
    let state = state();
    state
        .store()
        .write_batch(
            "card",
            vec![StoreWrite::Upsert {
                entity: "a b/c".to_owned(),
                vector: FeatureVector {
                    as_of_ms: 5,
                    values: vec![FeatureValue::Int(1), FeatureValue::Null, FeatureValue::Null],
                },
            }],
        )
        .expect("write");
    let (status, body) = json_of(get(&app(state), "/v1/features/card/a%20b%2Fc").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entity"], "a b/c");
}

#[tokio::test]
async fn post_answers_in_request_order_with_missing_entities_marked() {
    let app = app(state());
    let (status, body) =
        json_of(post_json(&app, r#"{"view":"card","entities":["c2","c9","c1"]}"#).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "view": "card",
            "results": [
                {"entity": "c2", "as_of": 2000,
                 "features": {"txn_count_5m": 0, "amount_mean_1h": null, "last_country": "FR"}},
                {"entity": "c9", "found": false},
                {"entity": "c1", "as_of": 1000,
                 "features": {"txn_count_5m": 3, "amount_mean_1h": 12.5, "last_country": "FR"}},
            ]
        })
    );

    let (status, body) = json_of(post_json(&app, r#"{"view":"card","entities":[]}"#).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"view": "card", "results": []}));
}

#[tokio::test]
async fn post_errors_name_the_bad_field() {
    let app = app(state());
    let cases = [
        (r#"{"entities":["c1"]}"#, "missing field `view`"),
        (r#"{"view":"card"}"#, "missing field `entities`"),
        (r#"{"view":"card","entities":"c1"}"#, "entities"),
        (r#"{"view":"card","entities":[1]}"#, "entities"),
        (
            r#"{"view":"card","entities":[],"extra":1}"#,
            "unknown field `extra`",
        ),
        (r#"{"view":"card","#, "invalid request body"),
    ];
    for (request, expected) in cases {
        let (status, body) = json_of(post_json(&app, request).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let message = body["error"].as_str().expect("error message");
        assert!(message.contains(expected), "{request}: {message}");
        assert!(message.starts_with("invalid request body: "), "{message}");
    }
}

#[tokio::test]
async fn post_without_json_content_type_is_415_with_json_error() {
    let app = app(state());
    let request = Request::post("/v1/features")
        .body(Body::from(r#"{"view":"card","entities":[]}"#))
        .expect("request");
    let (status, body) = json_of(send(&app, request).await).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"]
        .as_str()
        .expect("message")
        .contains("application/json"));
}

#[tokio::test]
async fn post_rejects_unknown_view_and_too_many_entities() {
    let app = app(state());
    let (status, body) =
        json_of(post_json(&app, r#"{"view":"nope","entities":["c1"]}"#).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "unknown feature view `nope`"}));

    let entities: Vec<String> = (0..=MAX_ENTITIES_PER_REQUEST)
        .map(|i| format!("c{i}"))
        .collect();
    let request = json!({"view": "card", "entities": entities}).to_string();
    let (status, body) = json_of(post_json(&app, &request).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"].as_str().expect("message");
    assert!(message.contains("`entities`"), "{message}");
    assert!(message.contains("10000"), "{message}");

    let entities: Vec<String> = (0..MAX_ENTITIES_PER_REQUEST)
        .map(|i| format!("c{i}"))
        .collect();
    let request = json!({"view": "card", "entities": entities}).to_string();
    let (status, body) = json_of(post_json(&app, &request).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["results"].as_array().map(Vec::len),
        Some(MAX_ENTITIES_PER_REQUEST)
    );
}

#[tokio::test]
async fn healthz_follows_the_settable_status() {
    let state = state();
    let app = app(state.clone());
    let (status, body) = json_of(get(&app, "/healthz").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));

    state.set_health(HealthStatus::Degraded);
    let (status, body) = json_of(get(&app, "/healthz").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"status": "degraded"}));

    state.set_health(HealthStatus::Ok);
    assert_eq!(get(&app, "/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = app(state());
    let (status, body) = json_of(get(&app, "/v2/nothing").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "no route for GET /v2/nothing"}));

    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/healthz")
        .body(Body::empty())
        .expect("request");
    let (status, body) = json_of(send(&app, request).await).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, json!({"error": "method DELETE not allowed here"}));
}

#[tokio::test]
async fn metrics_expose_pipeline_store_and_request_latency() {
    let state = state();
    let pipeline = state.pipeline_metrics();
    PipelineMetrics::add(&pipeline.events_total, 42);
    PipelineMetrics::add(&pipeline.late_total, 3);
    PipelineMetrics::add(&pipeline.rejected_total, 2);
    PipelineMetrics::add(&pipeline.closed_windows_total, 7);
    pipeline.head_ms.store(5_000, Ordering::Relaxed);
    pipeline.watermark_ms.store(3_000, Ordering::Relaxed);
    let app = app(state);

    get(&app, "/v1/features/card/c1").await;
    get(&app, "/v1/features/card/c9").await;
    get(&app, "/v2/nothing").await;
    let response = get(&app, "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = body_text(response).await;

    for line in [
        "# TYPE freshet_pipeline_events_total counter",
        "freshet_pipeline_events_total 42",
        "freshet_pipeline_late_total 3",
        "freshet_pipeline_rejected_total 2",
        "freshet_pipeline_closed_windows_total 7",
        "# TYPE freshet_pipeline_head_ms gauge",
        "freshet_pipeline_head_ms 5000",
        "freshet_pipeline_watermark_ms 3000",
        "freshet_store_entities{view=\"card\"} 2",
        "# TYPE freshet_http_request_duration_seconds histogram",
        "freshet_http_request_duration_seconds_count{route=\"/v1/features/{view}/{entity}\",status=\"2xx\"} 1",
        "freshet_http_request_duration_seconds_count{route=\"/v1/features/{view}/{entity}\",status=\"4xx\"} 1",
        "freshet_http_request_duration_seconds_count{route=\"unmatched\",status=\"4xx\"} 1",
        "freshet_http_request_duration_seconds_bucket{route=\"unmatched\",status=\"4xx\",le=\"+Inf\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    let lag = text
        .lines()
        .find_map(|l| l.strip_prefix("freshet_pipeline_watermark_lag_ms "))
        .and_then(|v| v.parse::<i64>().ok())
        .expect("lag gauge");
    assert!(lag > 1_000_000, "wall clock minus a 1970 watermark: {lag}");
    // Every sample line is `name{labels} value` with a numeric value.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let value = l.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "bad sample line `{l}`");
    }
}

#[tokio::test]
async fn serve_answers_the_blocking_client_and_shuts_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state(), async {
        let _ = stopped.await;
    }));

    let client_addr = addr.clone();
    let (found, unknown_view) = tokio::task::spawn_blocking(move || {
        let entities = ["c1".to_owned(), "c9".to_owned()];
        (
            client::get_features(&client_addr, "card", &entities),
            client::get_features(&format!("http://{client_addr}/"), "nope", &entities),
        )
    })
    .await
    .expect("client thread");

    let found = found.expect("query succeeds");
    assert_eq!(found["view"], "card");
    assert_eq!(found["results"][0]["features"]["txn_count_5m"], 3);
    assert_eq!(found["results"][1], json!({"entity": "c9", "found": false}));

    let err = unknown_view.expect_err("unknown view");
    assert!(
        matches!(err, client::ClientError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("freshet at http://{addr} answered 404: unknown feature view `nope`")
    );
    assert!(!err.is_retryable());

    stop.send(()).expect("server still running");
    server.await.expect("server task").expect("serve");
}

#[tokio::test]
async fn drift_state_and_metrics() {
    use freshet_core::drift::{DriftAlert, DriftBoard, DriftWindow};
    use freshet_core::spec::{DriftFieldKind, Measure, PipelineSpec};
    let spec = PipelineSpec::from_toml(
        r#"
[[source]]
name = "s"
entity = "id"
event_time = "ts"

[[drift]]
name = "d"
features = ["s.value", "s.category"]
reference = { kind = "first", events = 100 }
window = "10s"
alert = { psi = 0.1, ks_p = 0.001, chi_square_p = 0.001 }
"#,
        std::path::Path::new("p.toml"),
    )
    .expect("valid pipeline");
    let board = Arc::new(DriftBoard::new(&spec));
    board.reference_ready("d", "s.category", DriftFieldKind::Categorical, 100);
    board.record_window(&DriftWindow {
        monitor: "d".into(),
        feature: "s.category".into(),
        window_start_ms: 10_000,
        window_end_ms: 20_000,
        count: 5,
        missing: 0,
        measures: [("psi", 0.3), ("chi_square_p", 1e-9)].into_iter().collect(),
    });
    board.record_alert(&DriftAlert {
        monitor: "d".into(),
        feature: "s.category".into(),
        measure: Measure::Psi,
        transition: freshet_core::drift::Transition::Fired,
        value: 0.3,
        threshold: 0.1,
        window_start_ms: 10_000,
        window_end_ms: 20_000,
        reference: None,
    });
    let app = app(state().with_drift(board));

    let (status, body) = json_of(get(&app, "/v1/drift").await).await;
    assert_eq!(status, StatusCode::OK);
    let features = &body["monitors"][0]["features"];
    assert_eq!(features[0]["feature"], "s.value");
    assert_eq!(features[0]["kind"], Value::Null);
    let category = &features[1];
    assert_eq!(category["kind"], "categorical");
    assert_eq!(category["latest"]["measures"]["psi"], 0.3);
    let alerts: Vec<(&str, &str)> = category["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["measure"].as_str().unwrap_or(""),
                a["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(alerts, [("psi", "firing"), ("chi_square", "ok")]);

    let metrics = body_text(get(&app, "/metrics").await).await;
    assert!(
        metrics.contains("freshet_drift_windows_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "freshet_drift_alerts_firing{monitor=\"d\",feature=\"s.category\",measure=\"psi\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "freshet_drift_alerts_firing{monitor=\"d\",feature=\"s.value\",measure=\"ks\"} 0\n"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn drift_without_monitors_is_empty() {
    let app = app(state());
    let (_, body) = json_of(get(&app, "/v1/drift").await).await;
    assert_eq!(body, json!({"monitors": []}));
}
