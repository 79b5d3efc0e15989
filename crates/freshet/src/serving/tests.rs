//! Serving real learner versions over real HTTP: scores equal the learner's own, and requests
//! never fail while the learner publishes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet_core::generate::Rng;
use freshet_core::serving::{InputSource, InputValue};
use freshet_core::store::FeatureValue;
use freshet_learn::{Example, Value};
use serde_json::{json, Value as Json};

use super::bench::{answered_version, load, Server, Setup, DENSE_INPUTS, FEATURES};

fn post(addr: std::net::SocketAddr, path: &str, body: &Json) -> Json {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("http://{addr}{path}"))
        .send_json(body)
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    response.body_mut().read_json().expect("json answer")
}

#[test]
fn the_scorer_tells_features_from_request_fields() {
    let setup = Setup::new(10).expect("setup");
    let models = setup.scorer.models();
    assert_eq!(
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["dense", "fraud"]
    );
    let fraud = &models[1];
    assert_eq!(fraud.inputs.len(), FEATURES + 2);
    assert_eq!(
        fraud.inputs[0].source,
        InputSource::Feature {
            view: "card".into(),
            feature: "f0".into()
        }
    );
    assert_eq!(
        fraud.inputs[FEATURES + 1].source,
        InputSource::Field {
            source: "transactions".into(),
            field: "country".into()
        }
    );
    assert_eq!(models[0].inputs.len(), DENSE_INPUTS);
    assert_eq!(fraud.outputs, 1);
}

/// A request scores exactly as the published version scores the same example built the way
/// training builds it (numbers as numbers, strings hashed as categories, null as missing).
#[test]
fn served_scores_equal_the_learners_own() {
    let setup = Setup::new(50).expect("setup");
    let server = Server::start(&setup, "127.0.0.1:0".parse().expect("addr"), 2).expect("server");
    let fraud = setup
        .learners
        .iter()
        .find(|l| l.name() == "fraud")
        .expect("fraud");
    let published = fraud.registry().current().expect("published");
    let vector = setup
        .store
        .get("card", "c0000003")
        .expect("store")
        .expect("entity");
    let mut values: Vec<Value> = vector
        .values
        .iter()
        .map(|v| match v {
            FeatureValue::Float(f) => Value::Number(*f),
            other => panic!("bench features are floats, got {other:?}"),
        })
        .collect();
    values.push(Value::Number(250.0));
    values.push(Value::category("NG"));
    let expected = published
        .predict(&[Example { values, label: 0.0 }])
        .expect("predict")
        .values[0];
    let answer = post(
        server.addr,
        "/v1/models/fraud/predict",
        &json!({"entity": "c0000003", "fields": {"amount": 250.0, "country": "NG"}}),
    );
    let p = &answer["predictions"][0];
    assert_eq!(p["missing"], json!([]));
    assert_eq!(p["version"], published.version);
    assert_eq!(p["score"].as_f64().map(|s| s as f32), Some(expected));

    // an entity the store does not hold takes the missing-value path of every view input
    let mut missing = vec![Value::Missing; FEATURES];
    missing.push(Value::Number(250.0));
    missing.push(Value::Missing);
    let expected = published
        .predict(&[Example {
            values: missing,
            label: 0.0,
        }])
        .expect("predict")
        .values[0];
    let answer = post(
        server.addr,
        "/v1/models/fraud/predict",
        &json!({"entity": "nobody", "fields": {"amount": 250}}),
    );
    let p = &answer["predictions"][0];
    assert_eq!(p["score"].as_f64().map(|s| s as f32), Some(expected));
    assert_eq!(p["missing"].as_array().map(Vec::len), Some(FEATURES + 1));

    let dense = setup
        .learners
        .iter()
        .find(|l| l.name() == "dense")
        .expect("dense");
    let mut rng = Rng::new(5);
    let row: Vec<f64> = (0..DENSE_INPUTS)
        .map(|_| f64::from(rng.gauss() as f32))
        .collect();
    let expected = dense
        .registry()
        .current()
        .expect("published")
        .predict(&[Example::dense(&row, 0.0)])
        .expect("predict")
        .values[0];
    let answer = post(
        server.addr,
        "/v2/models/dense/infer",
        &json!({"inputs": [{"name": "input", "shape": [1, DENSE_INPUTS], "datatype": "FP32", "data": row}]}),
    );
    assert_eq!(answer["outputs"][0]["shape"], json!([1, 1]));
    assert_eq!(
        answer["outputs"][0]["data"][0].as_f64().map(|s| s as f32),
        Some(expected)
    );
    server.stop().expect("stop");
}

#[test]
fn served_versions_convert_inputs_as_training_does() {
    let setup = Setup::new(1).expect("setup");
    let current = setup.scorer.current("fraud").expect("fraud");
    let mut rows = vec![InputValue::Number(0.5); FEATURES];
    rows.push(InputValue::Missing);
    rows.push(InputValue::Category("GB"));
    let mut served = Vec::new();
    current.score(&rows, &mut served).expect("score");
    let fraud = setup
        .learners
        .iter()
        .find(|l| l.name() == "fraud")
        .expect("fraud");
    let mut values = vec![Value::Number(0.5); FEATURES];
    values.push(Value::Missing);
    values.push(Value::category("GB"));
    let direct = fraud
        .predict(&[Example { values, label: 0.0 }])
        .expect("predict");
    assert_eq!(served, direct.values);
    let mut out = Vec::new();
    assert!(current.score(&rows[..5], &mut out).is_err());
}

/// The acceptance check of the hot swap: new versions of both models are published every
/// 100 ms during 20,000 requests; none fails, and every answer names a version that was
/// published.
#[test]
fn requests_never_fail_while_versions_are_published() {
    let mut setup = Setup::new(2_000).expect("setup");
    let server = Server::start(&setup, "127.0.0.1:0".parse().expect("addr"), 2).expect("server");
    let published: Arc<Mutex<HashMap<String, BTreeSet<u64>>>> = Arc::default();
    for learner in &setup.learners {
        published
            .lock()
            .expect("published")
            .entry(learner.name().to_owned())
            .or_default()
            .insert(learner.version());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, published) = (Arc::clone(&stop), Arc::clone(&published));
        std::thread::spawn(move || {
            let mut rng = Rng::new(3);
            let mut publications = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                for (model, version) in setup.publish(&mut rng).expect("publish") {
                    published
                        .lock()
                        .expect("published")
                        .entry(model)
                        .or_default()
                        .insert(version);
                }
                publications += 1;
            }
            publications
        })
    };
    let predict =
        load(server.addr, Setup::predict_requests(2_000), 10_000, 8, true).expect("predict load");
    let infer = load(server.addr, Setup::infer_requests(), 10_000, 8, true).expect("infer load");
    stop.store(true, Ordering::Relaxed);
    let publications = publisher.join().expect("publisher");
    server.stop().expect("stop");

    let published = published.lock().expect("published");
    for (model, report) in [("fraud", &predict), ("dense", &infer)] {
        assert_eq!(report.requests, 10_000, "{model}");
        assert_eq!(report.errors, 0, "{model}: {:?}", report.first_error);
        let known = &published[model];
        let unknown: Vec<&u64> = report.versions.difference(known).collect();
        assert!(
            unknown.is_empty(),
            "{model} answered with unpublished versions {unknown:?}"
        );
        assert!(
            report.versions.len() >= 2,
            "{model}: only versions {:?} served over {publications} publications",
            report.versions
        );
    }
}

#[test]
fn versions_are_read_from_either_api() {
    assert_eq!(
        answered_version(br#"{"model":"fraud","version":12,"predictions":[]}"#),
        Some(12)
    );
    assert_eq!(
        answered_version(br#"{"model_name":"dense","model_version":"7","outputs":[]}"#),
        Some(7)
    );
    assert_eq!(answered_version(b"{}"), None);
}
