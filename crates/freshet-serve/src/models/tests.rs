//! The model endpoints through `app(state).oneshot(..)`, over a scorer whose scores say which
//! version computed them from which inputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::model::ModelKind;
use freshet_core::serving::{
    InputSource, InputValue, ModelDescription, ModelInput, ModelVersion, PolicyKeeper, ScoreError,
    Scorer, ServingStart, TrafficPolicy,
};
use freshet_core::store::{FeatureValue, FeatureVector, OnlineStore, StoreWrite, ViewSchema};
use freshet_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{AdminToken, RECENT_VERSIONS};
use crate::{app, AppState};

/// Scores `1000 * version + the sum of the numeric inputs + 0.25 * the length of each category`;
/// with `outputs > 1`, output `j` adds `j`.
struct FakeVersion {
    version: u64,
    inputs: usize,
    outputs: usize,
}

impl ModelVersion for FakeVersion {
    fn version(&self) -> u64 {
        self.version
    }

    fn score(&self, rows: &[InputValue<'_>], out: &mut Vec<f32>) -> Result<(), ScoreError> {
        if !rows.len().is_multiple_of(self.inputs) {
            return Err(ScoreError::Shape {
                values: rows.len(),
                inputs: self.inputs,
            });
        }
        for row in rows.chunks(self.inputs) {
            let mut s = 1000.0 * self.version as f64;
            for v in row {
                match v {
                    InputValue::Number(x) if x.is_finite() => s += x,
                    InputValue::Category(c) => s += 0.25 * c.len() as f64,
                    _ => {}
                }
            }
            for j in 0..self.outputs {
                out.push((s + j as f64) as f32);
            }
        }
        Ok(())
    }
}

struct FakeScorer {
    models: Vec<(ModelDescription, Mutex<Option<Arc<FakeVersion>>>)>,
}

impl FakeScorer {
    fn publish(&self, model: &str, version: u64) {
        let (description, slot) = self
            .models
            .iter()
            .find(|(d, _)| d.name == model)
            .expect("known model");
        *slot.lock().expect("slot") = Some(Arc::new(FakeVersion {
            version,
            inputs: description.inputs.len(),
            outputs: description.outputs,
        }));
    }

    fn slot(&self, model: &str) -> Option<Arc<FakeVersion>> {
        self.models
            .iter()
            .find(|(d, _)| d.name == model)
            .and_then(|(_, slot)| slot.lock().expect("slot").clone())
    }
}

impl Scorer for FakeScorer {
    fn models(&self) -> Vec<ModelDescription> {
        self.models.iter().map(|(d, _)| d.clone()).collect()
    }

    fn latest_version(&self, model: &str) -> Option<u64> {
        self.slot(model).map(|v| v.version)
    }

    fn current(&self, model: &str) -> Option<Arc<dyn ModelVersion>> {
        self.slot(model).map(|v| v as Arc<dyn ModelVersion>)
    }
}

fn input(name: &str) -> ModelInput {
    ModelInput {
        name: name.to_owned(),
        source: InputSource::of(name, |v| v == "card").expect("dotted name"),
    }
}

fn scorer() -> Arc<FakeScorer> {
    let fraud = ModelDescription {
        name: "fraud".to_owned(),
        kind: ModelKind::LogisticRegression,
        inputs: vec![
            input("card.txn_count_5m"),
            input("card.amount_mean_1h"),
            input("transactions.amount"),
            input("transactions.country"),
        ],
        outputs: 1,
    };
    let kinds = ModelDescription {
        name: "kinds".to_owned(),
        kind: ModelKind::Softmax,
        inputs: vec![input("card.txn_count_5m"), input("transactions.amount")],
        outputs: 3,
    };
    let scorer = FakeScorer {
        models: vec![(fraud, Mutex::new(None)), (kinds, Mutex::new(None))],
    };
    scorer.publish("fraud", 1);
    scorer.publish("kinds", 7);
    Arc::new(scorer)
}

fn store() -> Arc<MemoryStore> {
    let store = MemoryStore::new();
    store
        .register_view(ViewSchema {
            name: "card".to_owned(),
            features: vec![
                "amount_mean_1h".to_owned(),
                "last_country".to_owned(),
                "txn_count_5m".to_owned(),
            ],
            ttl_ms: None,
        })
        .expect("register");
    let upsert = |entity: &str, as_of_ms, mean: FeatureValue, count| StoreWrite::Upsert {
        entity: entity.to_owned(),
        vector: FeatureVector {
            as_of_ms,
            values: vec![
                mean,
                FeatureValue::Str("FR".into()),
                FeatureValue::Int(count),
            ],
        },
    };
    store
        .write_batch(
            "card",
            vec![
                upsert("c1", 1_000, FeatureValue::Float(12.5), 3),
                upsert("c2", 2_000, FeatureValue::Null, 5),
            ],
        )
        .expect("write");
    Arc::new(store)
}

fn state_with(scorer: &Arc<FakeScorer>) -> AppState {
    let scorer: Arc<dyn Scorer> = Arc::clone(scorer) as Arc<dyn Scorer>;
    AppState::new(store(), Arc::new(PipelineMetrics::new())).with_models(scorer)
}

async fn send(app: &Router, request: Request<Body>) -> Response {
    app.clone().oneshot(request).await.expect("infallible")
}

async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    json_of(send(app, request).await).await
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    json_of(send(app, Request::get(uri).body(Body::empty()).expect("request")).await).await
}

async fn metrics(app: &Router) -> String {
    let response = send(
        app,
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

async fn admin(app: &Router, model: &str, body: Value, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::post(format!("/v1/admin/models/{model}/traffic"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let request = request.body(Body::from(body.to_string())).expect("request");
    json_of(send(app, request).await).await
}

#[tokio::test]
async fn predict_reads_features_from_the_store_and_fields_from_the_request() {
    let app = app(state_with(&scorer()));
    let (status, body) = post(
        &app,
        "/v1/models/fraud/predict",
        json!({"entity": "c1", "fields": {"amount": 100.0, "country": "NG"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 1000 * 1 + 3 + 12.5 + 100 + 0.25 * 2
    assert_eq!(
        body,
        json!({"model": "fraud", "version": 1, "predictions": [
            {"entity": "c1", "version": 1, "score": 1116.0, "features_as_of": 1000, "missing": []}
        ]})
    );
}

#[tokio::test]
async fn unknown_entities_and_absent_fields_are_missing_inputs() {
    let app = app(state_with(&scorer()));
    let (status, body) = post(
        &app,
        "/v1/models/fraud/predict",
        json!({"entities": ["nobody", "c2"], "fields": {"transactions.amount": 10, "country": null}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let p = &body["predictions"];
    assert_eq!(p[0]["entity"], "nobody");
    assert_eq!(p[0]["features_as_of"], Value::Null);
    assert_eq!(
        p[0]["missing"],
        json!([
            "card.txn_count_5m",
            "card.amount_mean_1h",
            "transactions.country"
        ])
    );
    assert_eq!(p[0]["score"], 1010.0);
    // c2's mean is null in the store
    assert_eq!(
        p[1]["missing"],
        json!(["card.amount_mean_1h", "transactions.country"])
    );
    assert_eq!(p[1]["features_as_of"], 2000);
    assert_eq!(p[1]["score"], 1015.0);
    let text = metrics(&app).await;
    assert!(
        text.contains(
            "freshet_serve_missing_inputs_total{model=\"fraud\",input=\"card.amount_mean_1h\"} 2\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn per_entity_fields_override_shared_ones() {
    let app = app(state_with(&scorer()));
    let (status, body) = post(
        &app,
        "/v1/models/fraud/predict",
        json!({
            "fields": {"amount": 1.0, "country": "US"},
            "entities": [{"entity": "c1", "fields": {"amount": 2.0}}, "c1"]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["predictions"][0]["score"], 1018.0);
    assert_eq!(body["predictions"][1]["score"], 1017.0);
}

#[tokio::test]
async fn multiclass_models_answer_every_class_score() {
    let app = app(state_with(&scorer()));
    let (status, body) = post(
        &app,
        "/v1/models/kinds/predict",
        json!({"entity": "c1", "fields": {"amount": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let p = &body["predictions"][0];
    assert_eq!(p["scores"], json!([7004.0, 7005.0, 7006.0]));
    assert!(p.get("score").is_none());
}

#[tokio::test]
async fn bad_predict_requests_name_what_is_wrong() {
    let app = app(state_with(&scorer()));
    let cases = [
        (json!({"fields": {}}), "missing field `entity`"),
        (json!({"entity": 3}), "`entity` must be a string"),
        (json!({"entity": "c1", "entities": ["c2"]}), "not both"),
        (json!({"entity": "c1", "x": 1}), "unknown field `x`"),
        (
            json!({"entity": "c1", "fields": {"amount": [1]}}),
            "`fields.amount` must be a number, string, boolean or null, got an array",
        ),
        (
            json!({"entities": ["c1", {"entity": "c2", "fields": {"country": {}}}]}),
            "`entities[1].fields.country` must be",
        ),
        (
            json!({"entities": [{"fields": {}}]}),
            "entities[0]: missing field `entity`",
        ),
        (json!({"entities": "c1"}), "`entities` must be an array"),
        (json!(["c1"]), "`body` must be an object"),
    ];
    for (request, expected) in cases {
        let (status, body) = post(&app, "/v1/models/fraud/predict", request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let error = body["error"].as_str().expect("error message");
        assert!(error.contains(expected), "{request}: {error}");
    }
    let (status, body) = post(&app, "/v1/models/nope/predict", json!({"entity": "c1"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "unknown model `nope`"}));
    let response = send(
        &app,
        Request::post("/v1/models/fraud/predict")
            .body(Body::from(r#"{"entity":"c1"}"#))
            .expect("request"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn models_are_listed_and_described() {
    let app = app(state_with(&scorer()));
    let (status, body) = get(&app, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["models"][0]["name"], "fraud");
    assert_eq!(body["models"][0]["latest_version"], 1);
    assert_eq!(body["models"][0]["policy"], "latest");
    let (status, body) = get(&app, "/v1/models/fraud").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["inputs"][0],
        json!({"name": "card.txn_count_5m", "from": "feature", "view": "card", "feature": "txn_count_5m"})
    );
    assert_eq!(
        body["inputs"][2],
        json!({"name": "transactions.amount", "from": "field", "source": "transactions", "field": "amount"})
    );
    assert_eq!(body["versions"], json!([1]));
}

#[tokio::test]
async fn v2_health_and_metadata_follow_the_protocol() {
    let scorer = scorer();
    let app = app(state_with(&scorer));
    assert_eq!(
        get(&app, "/v2/health/live").await,
        (StatusCode::OK, json!({"live": true}))
    );
    assert_eq!(
        get(&app, "/v2/health/ready").await,
        (StatusCode::OK, json!({"ready": true}))
    );
    let (status, server) = get(&app, "/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server["name"], "freshet");
    assert_eq!(server["extensions"], json!([]));
    let (status, body) = get(&app, "/v2/models/fraud").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "fraud");
    assert_eq!(body["platform"], "freshet");
    assert_eq!(body["versions"], json!(["1"]));
    assert_eq!(
        body["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        body["outputs"],
        json!([{"name": "score", "datatype": "FP32", "shape": [-1, 1]}])
    );
    assert_eq!(body["parameters"]["input_names"][3], "transactions.country");
    assert_eq!(
        get(&app, "/v2/models/fraud/ready").await,
        (StatusCode::OK, json!({"name": "fraud", "ready": true}))
    );
    assert_eq!(
        get(&app, "/v2/models/fraud/versions/1/ready").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/v2/models/fraud/versions/9/ready").await,
        (
            StatusCode::BAD_REQUEST,
            json!({"name": "fraud", "ready": false})
        )
    );
    let (status, body) = get(&app, "/v2/models/fraud/versions/9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "model `fraud` has no version 9 (held versions: 1)"})
    );
    let (status, body) = get(&app, "/v2/models/fraud/versions/latest").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().expect("error").contains("`latest`"));
    assert_eq!(get(&app, "/v2/models/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn v2_infer_takes_an_n_by_d_tensor() {
    let app = app(state_with(&scorer()));
    let (status, body) = post(
        &app,
        "/v2/models/fraud/infer",
        json!({"id": "r1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
               "data": [[1, 2, 3, 4], [0.5, null, 0, 0]]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"model_name": "fraud", "model_version": "1", "id": "r1", "outputs": [
            {"name": "score", "shape": [2, 1], "datatype": "FP32", "data": [1010.0, 1000.5]}
        ]})
    );
    let (status, body) = post(
        &app,
        "/v2/models/kinds/versions/7/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}],
               "outputs": [{"name": "score"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "7");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 3]));
    assert_eq!(body["outputs"][0]["data"], json!([7003.0, 7004.0, 7005.0]));
    assert!(body.get("id").is_none());
}

#[tokio::test]
async fn v2_infer_takes_one_tensor_per_input_with_bytes_for_categories() {
    let app = app(state_with(&scorer()));
    let column = |name: &str, datatype: &str, data: Value| json!({"name": name, "shape": [2], "datatype": datatype, "data": data});
    let (status, body) = post(
        &app,
        "/v2/models/fraud/infer",
        json!({"inputs": [
            column("transactions.country", "BYTES", json!(["NG", "USA"])),
            column("card.txn_count_5m", "FP32", json!([1, 2])),
            column("card.amount_mean_1h", "FP32", json!([0, 0])),
            column("transactions.amount", "FP32", json!([10, null])),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([1011.5, 1002.75]));
}

#[tokio::test]
async fn bad_v2_requests_are_400_with_the_reason() {
    let app = app(state_with(&scorer()));
    let tensor = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let cases = [
        (
            tensor(json!([1, 3]), "FP32", json!([1, 2, 3])),
            "expected [N, 4]",
        ),
        (
            tensor(json!([2, 4]), "FP32", json!([1, 2, 3, 4])),
            "holds 8 values but data has 4",
        ),
        (
            tensor(json!([1, 4]), "FP8", json!([1, 2, 3, 4])),
            "unknown datatype `FP8`",
        ),
        (
            tensor(json!([1, 4]), "BYTES", json!(["a", "b", "c", "d"])),
            "must be numeric",
        ),
        (
            tensor(json!([1, 4]), "FP32", json!([1, "a", 3, 4])),
            "mixes strings and numbers",
        ),
        (json!({"inputs": []}), "got 0 tensors"),
        (json!({"input": []}), "missing field `inputs`"),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                   "outputs": [{"name": "proba"}]}),
            "unknown output `proba`",
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = post(&app, "/v2/models/fraud/infer", request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let error = body["error"].as_str().expect("error message");
        assert!(error.contains(expected), "{request}: {error}");
    }
    let ok = tensor(json!([1, 4]), "FP32", json!([1, 2, 3, 4]));
    let (status, body) = post(&app, "/v2/models/fraud/versions/5/infer", ok).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn admin_requires_the_bearer_token_when_configured() {
    let scorer = scorer();
    let state = state_with(&scorer).with_admin_token(AdminToken::new("t0k").expect("token"));
    let app = app(state);
    let (status, body) = admin(&app, "fraud", json!({"pin": 1}), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = admin(&app, "fraud", json!({"pin": 1}), Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = send(
        &app,
        Request::get("/v1/admin/models/fraud/traffic")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    let (status, body) = admin(&app, "fraud", json!({"pin": 1}), Some("t0k")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["policy"], json!({"pin": 1}));
    assert_eq!(body["previous"], "latest");
}

#[tokio::test]
async fn pin_holds_a_version_and_rollback_pins_the_previous_one() {
    let scorer = scorer();
    let state = state_with(&scorer);
    let app = app(state.clone());
    scorer.publish("fraud", 2);
    state.observe_model_versions();
    scorer.publish("fraud", 3);
    let predict = || post(&app, "/v1/models/fraud/predict", json!({"entity": "c1"}));
    assert_eq!(predict().await.1["version"], 3);

    let (status, body) = admin(&app, "fraud", json!("rollback"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["policy"], json!({"pin": 2}));
    assert_eq!(body["versions"], json!([1, 2, 3]));
    scorer.publish("fraud", 4);
    assert_eq!(predict().await.1["version"], 2);
    let (_, v2) = post(
        &app,
        "/v2/models/fraud/infer",
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}),
    )
    .await;
    assert_eq!(v2["model_version"], "2");
    // a second rollback goes further back
    let (_, body) = admin(&app, "fraud", json!("rollback"), None).await;
    assert_eq!(body["policy"], json!({"pin": 1}));
    let (status, body) = admin(&app, "fraud", json!("rollback"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (_, body) = admin(&app, "fraud", json!("latest"), None).await;
    assert_eq!(body["policy"], "latest");
    assert_eq!(predict().await.1["version"], 4);

    let (status, body) = admin(&app, "fraud", json!({"pin": 99}), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["error"],
        "model `fraud` does not hold version 99 (held versions: 1, 2, 3, 4)"
    );
    let (status, body) = admin(
        &app,
        "fraud",
        json!({"canary": {"version": 1, "percent": 120}}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]
        .as_str()
        .expect("error")
        .contains("between 0 and 100"));
    let (status, body) = admin(&app, "fraud", json!({"pin": "x"}), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = admin(&app, "nope", json!("latest"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The acceptance check of the canary: 10 % over 20,000 entities, through the HTTP API, lands
/// within one point of 10 %, and an entity keeps its version.
#[tokio::test]
async fn a_ten_percent_canary_serves_ten_percent_of_entities() {
    let scorer = scorer();
    let state = state_with(&scorer);
    let app = app(state.clone());
    scorer.publish("fraud", 2);
    state.observe_model_versions();
    let (status, body) = admin(
        &app,
        "fraud",
        json!({"canary": {"version": 1, "percent": 10}}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut canary = 0usize;
    let mut first_side = Vec::new();
    for batch in 0..20 {
        let entities: Vec<String> = (0..1000)
            .map(|i| format!("e{}", batch * 1000 + i))
            .collect();
        let (status, body) = post(
            &app,
            "/v1/models/fraud/predict",
            json!({ "entities": entities }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        for p in body["predictions"].as_array().expect("predictions") {
            let version = p["version"].as_u64().expect("version");
            assert!(version == 1 || version == 2);
            assert_eq!(
                p["score"].as_f64().map(|s| (s / 1000.0).floor() as u64),
                Some(version)
            );
            canary += usize::from(version == 1);
            if batch == 0 {
                first_side.push(version);
            }
        }
    }
    let share = canary as f64 / 20_000.0 * 100.0;
    assert!((9.0..=11.0).contains(&share), "canary share {share} %");
    let entities: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    let (_, again) = post(
        &app,
        "/v1/models/fraud/predict",
        json!({ "entities": entities }),
    )
    .await;
    let again: Vec<u64> = again["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(again, first_side, "canary assignment is sticky");
}

#[tokio::test]
async fn shadow_scores_are_counted_never_returned() {
    let scorer = scorer();
    let state = state_with(&scorer);
    let app = app(state.clone());
    scorer.publish("fraud", 2);
    state.observe_model_versions();
    let (status, _) = admin(&app, "fraud", json!({"shadow": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = post(
        &app,
        "/v1/models/fraud/predict",
        json!({"entities": ["c1", "c2"]}),
    )
    .await;
    assert_eq!(body["version"], 2);
    assert!(body["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .all(|p| p["version"] == 2));
    let (_, detail) = get(&app, "/v1/models/fraud").await;
    assert_eq!(detail["shadow"]["rows"], 2);
    assert_eq!(detail["shadow"]["mean_abs_diff"], 1000.0);
    assert_eq!(detail["shadow"]["recent"][0]["shadow_version"], 1);
    assert_eq!(detail["shadow"]["recent"][0]["served_version"], 2);
    let text = metrics(&app).await;
    assert!(
        text.contains("freshet_serve_shadow_rows_total{model=\"fraud\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("freshet_serve_shadow_abs_diff_sum{model=\"fraud\"} 2000\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "freshet_serve_traffic_policy{model=\"fraud\",policy=\"shadow\",version=\"1\"} 1\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_model_holds_its_recent_versions_and_the_pinned_one() {
    let scorer = scorer();
    let state = state_with(&scorer);
    let app = app(state.clone());
    let (status, _) = admin(&app, "fraud", json!({"pin": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    for v in 2..=40 {
        scorer.publish("fraud", v);
        state.observe_model_versions();
    }
    let (_, detail) = get(&app, "/v1/models/fraud").await;
    let held: Vec<u64> = detail["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v.as_u64().expect("number"))
        .collect();
    let mut expected = vec![1];
    expected.extend(41 - RECENT_VERSIONS as u64..=40);
    assert_eq!(held, expected);
    let (_, body) = post(&app, "/v1/models/fraud/predict", json!({"entity": "c1"})).await;
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn latency_quantiles_are_exposed_per_model_version_and_endpoint() {
    let app = app(state_with(&scorer()));
    for _ in 0..5 {
        let (status, _) = post(&app, "/v1/models/fraud/predict", json!({"entity": "c1"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = post(
        &app,
        "/v2/models/fraud/infer",
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics(&app).await;
    for q in ["0.5", "0.99", "0.999"] {
        let line = format!(
            "freshet_serve_latency_seconds{{model=\"fraud\",version=\"1\",endpoint=\"predict\",quantile=\"{q}\"}} "
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(
        text.contains(
            "freshet_serve_latency_seconds_count{model=\"fraud\",version=\"1\",endpoint=\"predict\"} 5\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "freshet_serve_model_latency_seconds_count{model=\"fraud\",endpoint=\"infer\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("freshet_serve_rows_total{model=\"fraud\",endpoint=\"predict\"} 5\n"));
    assert!(text.contains("freshet_serve_model_version{model=\"fraud\"} 1\n"));
}

#[tokio::test]
async fn without_models_the_model_routes_know_none() {
    let state = AppState::new(store(), Arc::new(PipelineMetrics::new()));
    let app = app(state);
    let (status, body) = post(&app, "/v1/models/fraud/predict", json!({"entity": "c1"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "unknown model `fraud`"}));
    assert_eq!(get(&app, "/v1/models").await.1, json!({"models": []}));
    assert_eq!(get(&app, "/v2/health/ready").await.0, StatusCode::OK);
}

/// The Kafka path: a batch answers each request on its own, logs the served rows of the answered
/// ones and counts them under the `kafka` endpoint.
#[tokio::test]
async fn a_batch_answers_each_request_and_logs_what_it_served() {
    let scorer = scorer();
    let state = state_with(&scorer);
    let bodies = [
        json!({"entity": "c1", "fields": {"amount": 2.0, "country": "NG"}}),
        json!({"entity": 5}),
        json!({"entities": ["c2", "nobody"], "fields": {"amount": 1.0}}),
        json!({"entity": "c1", "fields": {"amount": [1]}}),
    ];
    let refs: Vec<&Value> = bodies.iter().collect();
    let mut logged = Vec::new();
    let answers = state.predict_batch("fraud", &refs, &mut |row| {
        logged.push((
            row.request,
            row.entity.to_owned(),
            row.version,
            row.values.len(),
        ));
    });
    assert_eq!(answers.len(), 4);
    let first = answers[0].as_ref().expect("first answered");
    // version 1: 1000 + txn_count 3 + mean 12.5 + amount 2 + 0.25 * len("NG")
    assert_eq!(first["predictions"][0]["score"], json!(1018.0));
    assert_eq!(first["version"], 1);
    let second = answers[1].as_ref().expect_err("entity must be a string");
    assert_eq!(second.kind, crate::RequestErrorKind::Invalid);
    assert!(
        second.message.contains("`entity` must be a string"),
        "{}",
        second.message
    );
    let third = answers[2].as_ref().expect("third answered");
    assert_eq!(third["predictions"][1]["features_as_of"], Value::Null);
    let fourth = answers[3].as_ref().expect_err("a field of the wrong type");
    assert!(
        fourth.message.contains("fields.amount"),
        "{}",
        fourth.message
    );
    assert_eq!(
        logged,
        vec![
            (0, "c1".to_owned(), 1, 4),
            (2, "c2".to_owned(), 1, 4),
            (2, "nobody".to_owned(), 1, 4)
        ]
    );
    let text = metrics(&app(state.clone())).await;
    assert!(
        text.contains("freshet_serve_rows_total{model=\"fraud\",endpoint=\"kafka\"} 3\n"),
        "{text}"
    );
    let unknown = state.predict_batch("nope", &refs[..1], &mut |_| {});
    assert!(unknown[0]
        .as_ref()
        .is_err_and(|e| e.message == "unknown model `nope`"));
}

#[tokio::test]
async fn feature_queries_in_a_batch_share_a_store_call_per_view() {
    let state = state_with(&scorer());
    let card_a = ["c1", "nobody"];
    let card_b = ["c2"];
    let queries = [
        crate::FeatureQuery {
            view: "card",
            entities: &card_a,
        },
        crate::FeatureQuery {
            view: "nope",
            entities: &card_b,
        },
        crate::FeatureQuery {
            view: "card",
            entities: &card_b,
        },
    ];
    let answers = state.features_batch(&queries);
    let a = answers[0].as_ref().expect("card answered");
    assert_eq!(a["results"][0]["as_of"], 1_000);
    assert_eq!(a["results"][0]["features"]["txn_count_5m"], 3);
    assert_eq!(a["results"][1], json!({"entity": "nobody", "found": false}));
    let e = answers[1].as_ref().expect_err("unknown view");
    assert_eq!(e.message, "unknown feature view `nope`");
    assert_eq!(e.kind, crate::RequestErrorKind::Invalid);
    let c = answers[2].as_ref().expect("card answered");
    assert_eq!(c["results"][0]["entity"], "c2");
    assert_eq!(c["results"][0]["as_of"], 2_000);
}

struct Learners(Vec<freshet_core::metrics::LearnerMetrics>);

impl freshet_core::metrics::LearnerBoard for Learners {
    fn snapshot(&self) -> Vec<freshet_core::metrics::LearnerMetrics> {
        self.0.clone()
    }
}

#[tokio::test]
async fn learner_metrics_are_exposed_per_model_and_window() {
    use freshet_core::metrics::{LearnerMetrics, LearnerWindow};
    let classifier = LearnerMetrics {
        model: "fraud".into(),
        version: 12,
        updates: 12,
        cumulative: LearnerWindow {
            examples: 768,
            logloss: Some(0.41),
            accuracy: Some(0.81),
            auc: Some(0.88),
            rows_per_s: Some(2.0e6),
            ..LearnerWindow::default()
        },
        rolling: LearnerWindow {
            examples: 500,
            logloss: Some(0.4),
            accuracy: Some(0.82),
            auc: None,
            ..LearnerWindow::default()
        },
        join: Some(freshet_core::metrics::LabelJoinMetrics {
            labels: 9,
            joined: 7,
            unmatched: 2,
            expired: 4,
            superseded: 1,
            served_logged: 5,
            served_late: 3,
            served_dropped: 0,
        }),
    };
    let regression = LearnerMetrics {
        model: "price".into(),
        version: 3,
        updates: 3,
        cumulative: LearnerWindow {
            examples: 30,
            mae: Some(1.5),
            rmse: Some(2.0),
            ..LearnerWindow::default()
        },
        rolling: LearnerWindow::default(),
        join: None,
    };
    let state = AppState::new(store(), Arc::new(PipelineMetrics::new()))
        .with_learners(Arc::new(Learners(vec![classifier, regression])));
    let text = metrics(&app(state)).await;
    for line in [
        "freshet_model_version{model=\"fraud\"} 12\n",
        "freshet_model_examples_total{model=\"fraud\"} 768\n",
        "freshet_model_rolling_examples{model=\"fraud\"} 500\n",
        "freshet_model_logloss{model=\"fraud\",window=\"cumulative\"} 0.41\n",
        "freshet_model_logloss{model=\"fraud\",window=\"rolling\"} 0.4\n",
        "freshet_model_accuracy{model=\"fraud\",window=\"rolling\"} 0.82\n",
        "freshet_model_auc{model=\"fraud\",window=\"cumulative\"} 0.88\n",
        "freshet_model_rows_per_second{model=\"fraud\",window=\"cumulative\"} 2000000\n",
        "freshet_model_mae{model=\"price\",window=\"cumulative\"} 1.5\n",
        "freshet_model_rmse{model=\"price\",window=\"cumulative\"} 2\n",
        "freshet_model_labels_total{model=\"fraud\"} 9\n",
        "freshet_model_labels_joined_total{model=\"fraud\"} 7\n",
        "freshet_model_labels_unmatched_total{model=\"fraud\"} 2\n",
        "freshet_model_examples_expired_total{model=\"fraud\"} 4\n",
        "freshet_model_examples_superseded_total{model=\"fraud\"} 1\n",
        "freshet_model_served_rows_total{model=\"fraud\",outcome=\"logged\"} 5\n",
        "freshet_model_served_rows_total{model=\"fraud\",outcome=\"late\"} 3\n",
        "# TYPE freshet_model_examples_total counter\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("freshet_model_auc{model=\"fraud\",window=\"rolling\"}"));
    assert!(!text.contains("freshet_model_logloss{model=\"price\""));
    assert!(!text.contains("freshet_model_labels_total{model=\"price\""));
}

/// Records every policy change; refuses them while `refuse` is set.
#[derive(Default)]
struct RecordingKeeper {
    kept: Mutex<Vec<(String, TrafficPolicy, Option<u64>)>>,
    refuse: std::sync::atomic::AtomicBool,
}

impl PolicyKeeper for RecordingKeeper {
    fn keep(
        &self,
        model: &str,
        policy: TrafficPolicy,
        named: Option<&Arc<dyn ModelVersion>>,
    ) -> Result<(), String> {
        if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("disk full".to_owned());
        }
        self.kept.lock().expect("kept").push((
            model.to_owned(),
            policy,
            named.map(|v| v.version()),
        ));
        Ok(())
    }
}

#[tokio::test]
async fn start_policies_hold_loaded_versions_and_changes_are_kept_first() {
    let scorer = scorer();
    let loaded: Arc<dyn ModelVersion> = Arc::new(FakeVersion {
        version: 0,
        inputs: 4,
        outputs: 1,
    });
    let starts = HashMap::from([(
        "fraud".to_owned(),
        ServingStart {
            policy: TrafficPolicy::Pin(0),
            versions: vec![loaded],
        },
    )]);
    let keeper = Arc::new(RecordingKeeper::default());
    let as_keeper: Arc<dyn PolicyKeeper> = Arc::clone(&keeper) as Arc<dyn PolicyKeeper>;
    let state = AppState::new(store(), Arc::new(PipelineMetrics::new()))
        .with_served_models(
            Arc::clone(&scorer) as Arc<dyn Scorer>,
            &starts,
            Some(as_keeper),
        )
        .expect("start policy names a loaded version");
    let app = app(state.clone());
    let predict = || post(&app, "/v1/models/fraud/predict", json!({"entity": "c1"}));
    // the loaded version serves from the start, and is held for good
    assert_eq!(predict().await.1["version"], 0);
    for v in 2..(RECENT_VERSIONS as u64 + 5) {
        scorer.publish("fraud", v);
        state.observe_model_versions();
    }
    let (_, body) = admin(&app, "fraud", json!("latest"), None).await;
    assert_eq!(body["previous"], json!({"pin": 0}));
    assert_eq!(body["versions"][0], 0, "{body}");
    // the start policy was not reported as a change; the admin change was, before it applied
    assert_eq!(
        *keeper.kept.lock().expect("kept"),
        vec![("fraud".to_owned(), TrafficPolicy::Latest, None)]
    );
    let (status, _) = admin(&app, "fraud", json!({"shadow": 0}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keeper.kept.lock().expect("kept").last(),
        Some(&("fraud".to_owned(), TrafficPolicy::Shadow(0), Some(0)))
    );
    // a change the keeper refuses does not happen
    keeper
        .refuse
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, body) = admin(&app, "fraud", json!({"pin": 0}), None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("disk full"),
        "{body}"
    );
    let (_, body) = get(&app, "/v1/admin/models/fraud/traffic").await;
    assert_eq!(body["policy"], json!({"shadow": 0}));

    // a start policy naming a version nobody holds is refused at start
    let bad = HashMap::from([(
        "fraud".to_owned(),
        ServingStart {
            policy: TrafficPolicy::Pin(77),
            versions: Vec::new(),
        },
    )]);
    let err = AppState::new(store(), Arc::new(PipelineMetrics::new()))
        .with_served_models(scorer as Arc<dyn Scorer>, &bad, None)
        .expect_err("version 77 is not held");
    assert!(err.contains("does not hold version 77"), "{err}");
}
