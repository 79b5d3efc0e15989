//! `freshet run` with a model and `[[serving]]` tables, end to end against a real
//! Kafka-protocol broker and a real Redis (started by `scripts/test.sh`; skipped with a message
//! when they are missing, except under `CI=true`, where the test fails).
//!
//! `gen.py txn` transactions and their delayed labels are produced to two topics; `freshet run`
//! computes the card features into Redis and trains the fraud model from the label topic. Then:
//! - `/metrics` shows the model learning (examples, version, prequential log loss, accuracy,
//!   AUC, rows/s, cumulative and rolling);
//! - prediction requests on the request topic are all answered on the response topic, keyed by
//!   request id, with the model, a version, a score and the features' `as_of`; malformed ones
//!   go to the dead-letter topic with their reason (and get an error answer when their id was
//!   readable); the consumer goes on and its offsets are committed to the end of the topic;
//! - feature queries are answered with vectors and `as_of` equal to what HTTP serves;
//! - after SIGTERM the model's checkpoint is in the state directory, and a restart resumes from
//!   it (same version or later, no examples lost from the metrics).
//!
//! `kafka_serving_survives_a_broker_restart` runs the same pipeline against a durable broker of
//! its own (`FRESHET_TEST_TANSU_BIN`, tansu with sqlite storage; skipped without it, failed
//! under `CI=true`), killed with SIGKILL in the middle of a burst of requests and restarted.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::{json, Value};

use common::services::{
    self, degraded_while_the_broker_is_down, durable_tansu, free_port, health, metrics,
    reader_from_beginning, run_ok, services, spawn_tansu, topic_message, unique, TopicMessage,
};
use common::FRESHET;

const EVENTS: usize = 6_000;
const REQUESTS: usize = 300;
const FEATURE_QUERIES: usize = 20;

/// The topics of one test: `(role, name, partitions)`.
struct Topics {
    names: BTreeMap<&'static str, String>,
}

impl Topics {
    fn create(dir: &Path, brokers: &str) -> Self {
        Self::with_roles(
            dir,
            brokers,
            &[
                ("transactions", 2),
                ("labels", 1),
                ("changelog", 1),
                ("dead", 1),
                ("requests", 2),
                ("responses", 2),
                ("request_dead", 1),
                ("fq", 1),
                ("fr", 1),
            ],
        )
    }

    /// Creates a topic per `(role, partitions)`, named after the role and made unique.
    fn with_roles(dir: &Path, brokers: &str, roles: &[(&'static str, u32)]) -> Self {
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir).expect("mkdir");
        let mut names = BTreeMap::new();
        for &(role, partitions) in roles {
            let name = unique(&format!("live-{role}"));
            std::fs::write(
                topics_dir.join(format!("{name}.toml")),
                format!("name = \"{name}\"\npartitions = {partitions}\nreplication_factor = 1\n"),
            )
            .expect("topic file");
            names.insert(role, name);
        }
        run_ok(&[
            "topics",
            "apply",
            "--brokers",
            brokers,
            "--dir",
            &topics_dir.display().to_string(),
        ]);
        Self { names }
    }

    fn get(&self, role: &str) -> &str {
        &self.names[role]
    }
}

/// The `[kafka]`, `[store]` (Redis) and `[serve]` tables of a test pipeline.
fn header(brokers: &str, redis: &str, tag: &str, port: u16) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{tag}"

[store]
backend = "redis"
url = "{redis}"
key_prefix = "{tag}"

[serve]
listen = "127.0.0.1:{port}"
"#
    )
}

/// The `[[serving]]` table of the fraud model on the test's request topics.
fn fraud_serving(t: &Topics) -> String {
    format!(
        r#"[[serving]]
name = "fraud_kafka"
model = "fraud"
request_topic = "{}"
response_topic = "{}"
dead_letter_topic = "{}"
"#,
        t.get("requests"),
        t.get("responses"),
        t.get("request_dead")
    )
}

fn pipeline(dir: &Path, brokers: &str, redis: &str, t: &Topics, tag: &str, port: u16) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let foundation =
        std::fs::read_to_string(root.join("tests/oracle/foundation.toml")).expect("foundation");
    let body: String = foundation
        .lines()
        .filter(|l| !l.starts_with("[store]") && !l.starts_with("backend"))
        .map(|l| format!("{l}\n"))
        .collect();
    let body = body.replace(
        "event_time = \"ts\"",
        &format!("topic = \"{}\"\nevent_time = \"ts\"", t.get("transactions")),
    );
    let text = format!(
        r#"{head}
{body}
[[source]]
name = "labels"
topic = "{labels}"
entity = "card_id"
event_time = "ts"

[[model]]
name = "fraud"
kind = "logistic_regression"
features = ["card.txn_count_5m", "card.amount_mean_1h", "card.amount_std_1h", "card.merchants_1h", "transactions.amount", "transactions.country"]
label = {{ source = "labels", join_key = "event_id", field = "label", max_delay = "10m" }}
optimizer = {{ kind = "ftrl", alpha = 0.05, beta = 1.0, l1 = 0.0, l2 = 1.0 }}
batch_size = 64

{serving}batch_size = 32
max_in_flight = 128

[[serving]]
name = "card_features"
kind = "features"
request_topic = "{fq}"
response_topic = "{fr}"
dead_letter_topic = "{request_dead}"
"#,
        head = header(brokers, redis, tag, port),
        serving = fraud_serving(t),
        labels = t.get("labels"),
        request_dead = t.get("request_dead"),
        fq = t.get("fq"),
        fr = t.get("fr"),
    );
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// The answer of `POST /v1/models/fraud/predict` for one entity.
fn predict_over_http(port: u16) -> Value {
    ureq::post(&format!("http://127.0.0.1:{port}/v1/models/fraud/predict"))
        .header("content-type", "application/json")
        .send(r#"{"entity":"c0000001","fields":{"amount":10.0,"country":"NG"}}"#)
        .expect("http predict")
        .into_body()
        .read_json()
        .expect("json")
}

/// A running `freshet run`, killed if the test fails before it is terminated.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("running")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

fn start(pipeline: &Path, state: &Path, t: &Topics) -> Running {
    Running(Some(
        Command::new(FRESHET)
            .args(["run", "--pipeline"])
            .arg(pipeline)
            .arg("--state-dir")
            .arg(state)
            .args(["--checkpoint-interval", "300ms"])
            .args(["--changelog-topic", t.get("changelog")])
            .args(["--dead-letter-topic", t.get("dead")])
            .args(["--topics-dir", "/nonexistent"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("freshet run starts"),
    ))
}

/// Waits until `ready` holds for the metrics, or fails after `limit`.
fn wait_metrics(
    child: &mut Child,
    port: u16,
    limit: Duration,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("freshet run exited early: {status}");
        }
        if let Some(m) = metrics(port) {
            if ready(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{what} within {limit:?}: {m:?}");
        } else {
            assert!(Instant::now() < deadline, "{what}: /metrics not answering");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Generates `events` transactions with labels 500 ms behind, creates the test's topics and
/// produces both files, keyed by card; returns the topics.
fn load_traffic(dir: &Path, brokers: &str, events: usize) -> Topics {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = dir.join("data");
    let gen = Command::new("python3")
        .arg(root.join("tests/oracle/gen.py"))
        .args([
            "txn",
            "--events",
            &events.to_string(),
            "--label-delay-ms",
            "500",
            "--out",
        ])
        .arg(&data)
        .status()
        .expect("gen.py");
    assert!(gen.success());
    let topics = Topics::create(dir, brokers);
    for (role, file) in [
        ("transactions", "transactions.jsonl"),
        ("labels", "labels.jsonl"),
    ] {
        run_ok(&[
            "produce",
            "--brokers",
            brokers,
            "--topic",
            topics.get(role),
            &data.join(file).display().to_string(),
            "--key-field",
            "card_id",
            "--topics-dir",
            "/nonexistent",
        ]);
    }
    topics
}

fn terminate(mut running: Running) {
    services::terminate(running.0.take().expect("running"));
}

/// Reads `topic` from the beginning until `done` holds for what was read (or `limit` passes).
fn consume_until(
    brokers: &str,
    topic: &str,
    done: impl Fn(&[TopicMessage]) -> bool,
    limit: Duration,
) -> Vec<TopicMessage> {
    let (consumer, _) = reader_from_beginning(brokers, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !done(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(topic_message(&m));
        }
    }
    out
}

fn produce_lines(brokers: &str, topic: &str, dir: &Path, name: &str, lines: &[String]) {
    produce_keyed(brokers, topic, dir, name, lines, "request_id");
}

fn produce_keyed(
    brokers: &str,
    topic: &str,
    dir: &Path,
    name: &str,
    lines: &[String],
    key_field: &str,
) {
    let file = dir.join(name);
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    run_ok(&[
        "produce",
        "--brokers",
        brokers,
        "--topic",
        topic,
        &file.display().to_string(),
        "--key-field",
        key_field,
        "--topics-dir",
        "/nonexistent",
    ]);
}

/// The malformed prediction requests and the reason each must be dead-lettered with.
fn malformed_requests() -> Vec<(String, &'static str, Option<&'static str>)> {
    vec![
        ("this is not json".to_owned(), "not valid JSON", None),
        (
            r#"{"entity":"c0000001"}"#.to_owned(),
            "missing field `request_id`",
            None,
        ),
        (
            r#"{"request_id":"bad-entity","entity":5}"#.to_owned(),
            "`entity` must be a string",
            Some("bad-entity"),
        ),
        (
            r#"{"request_id":"bad-field","entity":"c0000001","fields":{"amount":[1]}}"#.to_owned(),
            "fields.amount",
            Some("bad-field"),
        ),
    ]
}

#[test]
fn kafka_requests_are_answered_while_the_model_learns_from_a_label_topic() {
    let Some((brokers, redis)) = services() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = load_traffic(dir.path(), &brokers, EVENTS);
    let tag = unique("live");
    let port = free_port();
    let pipeline = pipeline(dir.path(), &brokers, &redis, &topics, &tag, port);
    let state = dir.path().join("state");
    let mut child = start(&pipeline, &state, &topics);

    // the model learns from the label topic; /metrics shows it
    let model = |m: &HashMap<String, f64>, name: &str| {
        m.get(&format!("{name}{{model=\"fraud\"}}")).copied()
    };
    let m = wait_metrics(
        &mut child,
        port,
        Duration::from_secs(120),
        "the model learns",
        |m| {
            model(m, "freshet_model_examples_total").unwrap_or(0.0) >= 1000.0
                && model(m, "freshet_model_version").unwrap_or(0.0) >= 1.0
        },
    );
    // rows/s over the rolling window appears once a whole window was learned
    let rows_per_s = m.get("freshet_model_rows_per_second{model=\"fraud\",window=\"cumulative\"}");
    assert!(rows_per_s.is_some_and(|r| *r > 0.0), "{rows_per_s:?}");
    for family in ["freshet_model_logloss", "freshet_model_accuracy"] {
        for window in ["cumulative", "rolling"] {
            let key = format!("{family}{{model=\"fraud\",window=\"{window}\"}}");
            let v = m.get(&key).copied();
            assert!(v.is_some_and(f64::is_finite), "{key}: {v:?}");
        }
    }
    let mut model_lines: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.starts_with("freshet_model_"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    model_lines.sort();
    eprintln!("model metrics:\n{}", model_lines.join("\n"));
    let accuracy = m["freshet_model_accuracy{model=\"fraud\",window=\"cumulative\"}"];
    assert!((0.0..=1.0).contains(&accuracy), "accuracy {accuracy}");
    assert!(
        m.contains_key("freshet_model_auc{model=\"fraud\",window=\"cumulative\"}"),
        "AUC once both labels were seen"
    );
    assert!(model(&m, "freshet_model_updates_total").unwrap_or(0.0) >= 1.0);

    // prediction requests, with malformed ones among them
    let entities: Vec<String> = (0..50).map(|i| format!("c{i:07}")).collect();
    let mut lines: Vec<String> = (0..REQUESTS)
        .map(|i| {
            json!({
                "request_id": format!("r{i}"),
                "entity": entities[i % entities.len()],
                "fields": {"amount": 10.0 + i as f64, "country": "NG", "event_id": 1_000_000 + i},
            })
            .to_string()
        })
        .collect();
    let malformed = malformed_requests();
    for (k, (line, _, _)) in malformed.iter().enumerate() {
        lines.insert(k * 50 + 7, line.clone());
    }
    lines.push(json!({"request_id": "two", "entities": ["c0000001", "nobody"]}).to_string());
    produce_lines(
        &brokers,
        topics.get("requests"),
        dir.path(),
        "requests.jsonl",
        &lines,
    );
    let valid = REQUESTS + 1;
    let with_error_answers = malformed.iter().filter(|(_, _, id)| id.is_some()).count();
    let responses = consume_until(
        &brokers,
        topics.get("responses"),
        |out| out.len() >= valid + with_error_answers,
        Duration::from_secs(60),
    );
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for (key, payload, _) in &responses {
        let body: Value = serde_json::from_slice(payload).expect("a response is JSON");
        let id = body["request_id"].as_str().expect("request_id").to_owned();
        assert_eq!(key.as_deref(), Some(id.as_str()), "keyed by request id");
        by_id.entry(id).or_insert(body);
    }
    for i in 0..REQUESTS {
        let body = by_id
            .get(&format!("r{i}"))
            .unwrap_or_else(|| panic!("no answer to r{i}; {} answers", by_id.len()));
        assert_eq!(body["model"], "fraud", "{body}");
        assert!(body["version"].as_u64().is_some(), "{body}");
        let score = body["score"].as_f64().expect("score");
        assert!((0.0..=1.0).contains(&score), "{body}");
        assert_eq!(
            body["entity"],
            entities[i % entities.len()].as_str(),
            "{body}"
        );
        assert!(
            body["features_as_of"].as_u64().is_some(),
            "card exists: {body}"
        );
    }
    let two = &by_id["two"];
    let predictions = two["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2, "{two}");
    assert!(
        predictions[1]["features_as_of"].is_null(),
        "unknown entity: {two}"
    );
    assert!(
        two.get("score").is_none(),
        "two entities: scores per prediction"
    );
    for (_, reason, id) in &malformed {
        if let Some(id) = id {
            let error = by_id[*id]["error"].as_str().expect("error answer");
            assert!(error.contains(reason), "{id}: {error}");
        }
    }

    // the same prediction over HTTP names an existing version
    let http: Value = predict_over_http(port);
    assert!(http["predictions"][0]["score"].as_f64().is_some(), "{http}");

    // malformed requests in the dead-letter topic, with their reasons
    let dead = consume_until(
        &brokers,
        topics.get("request_dead"),
        |out| out.len() > malformed.len(),
        Duration::from_secs(60),
    );
    for (line, reason, _) in &malformed {
        let letter = dead
            .iter()
            .find(|(_, payload, _)| payload == line.as_bytes())
            .unwrap_or_else(|| panic!("`{line}` not dead-lettered"));
        let why = &letter.2["freshet.reason"];
        assert!(why.contains(reason), "{line}: {why}");
        assert_eq!(letter.2["freshet.source"], "fraud_kafka");
        assert_eq!(letter.2["freshet.topic"], topics.get("requests"));
    }

    // feature queries, answered as HTTP answers them
    let mut queries: Vec<String> = (0..FEATURE_QUERIES)
        .map(|i| {
            json!({"request_id": format!("q{i}"), "view": "card", "entities": [entities[i], "nobody"]})
                .to_string()
        })
        .collect();
    queries.push(json!({"request_id": "q-bad", "view": "nope", "entities": ["a"]}).to_string());
    produce_lines(
        &brokers,
        topics.get("fq"),
        dir.path(),
        "queries.jsonl",
        &queries,
    );
    let answers = consume_until(
        &brokers,
        topics.get("fr"),
        |out| out.len() > FEATURE_QUERIES,
        Duration::from_secs(60),
    );
    let answers: BTreeMap<String, Value> = answers
        .iter()
        .map(|(_, payload, _)| {
            let v: Value = serde_json::from_slice(payload).expect("json");
            (v["request_id"].as_str().expect("id").to_owned(), v)
        })
        .collect();
    for i in 0..FEATURE_QUERIES {
        let answer = &answers[&format!("q{i}")];
        assert_eq!(answer["view"], "card");
        let results = answer["results"].as_array().expect("results");
        assert_eq!(results[0]["entity"], entities[i].as_str());
        assert!(results[0]["as_of"].as_u64().is_some(), "{answer}");
        assert_eq!(results[1]["found"], false, "{answer}");
        let url = format!("http://127.0.0.1:{port}/v1/features/card/{}", entities[i]);
        let http: Value = ureq::get(&url)
            .call()
            .expect("http")
            .into_body()
            .read_json()
            .expect("json");
        // the same vector as HTTP serves, or an older one of it (the stream may move on
        // between the two reads)
        let names = |v: &Value| -> Vec<String> {
            v.as_object()
                .map_or_else(Vec::new, |o| o.keys().cloned().collect())
        };
        assert_eq!(names(&results[0]["features"]), names(&http["features"]));
        assert!(
            results[0]["as_of"].as_u64() <= http["as_of"].as_u64(),
            "{answer} vs {http}"
        );
    }
    assert!(answers["q-bad"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("unknown feature view `nope`")));

    // serving metrics
    let m = wait_metrics(
        &mut child,
        port,
        Duration::from_secs(30),
        "serving counted",
        |m| m.get("freshet_serving_kafka_in_flight{serving=\"fraud_kafka\"}") == Some(&0.0),
    );
    assert!(m["freshet_serving_kafka_responses_total{serving=\"fraud_kafka\"}"] >= valid as f64);
    assert_eq!(
        m["freshet_serving_kafka_dead_letters_total{serving=\"fraud_kafka\"}"],
        malformed.len() as f64
    );
    assert!(m["freshet_serve_rows_total{model=\"fraud\",endpoint=\"kafka\"}"] >= REQUESTS as f64);
    assert!(m.contains_key(
        "freshet_serving_kafka_latency_seconds{serving=\"fraud_kafka\",quantile=\"0.99\"}"
    ));

    // pin the version serving now with `freshet models traffic`: the restart below keeps it
    let addr = format!("127.0.0.1:{port}");
    let traffic = |args: &[&str]| -> Value {
        let mut all = vec!["models", "traffic", "fraud", "--addr", addr.as_str()];
        all.extend_from_slice(args);
        serde_json::from_str(&run_ok(&all)).expect("traffic answer")
    };
    let pinned = traffic(&[])["latest_version"].as_u64().expect("a version");
    let answer = traffic(&[&format!("pin={pinned}")]);
    assert_eq!(answer["policy"], json!({ "pin": pinned }), "{answer}");

    terminate(child);
    assert!(
        state
            .join(format!("serving/versions/fraud.v{pinned}.json"))
            .is_file(),
        "the pinned version is kept in the state directory"
    );
    // offsets committed to the end of the request topic once every answer was acknowledged
    let group = format!("{tag}.serving.fraud_kafka");
    let committed =
        freshet_kafka::serving::committed_offsets(&brokers, &group, topics.get("requests"))
            .expect("committed offsets");
    let total: i64 = committed.iter().map(|(_, o)| *o).sum();
    assert_eq!(total as usize, lines.len(), "committed {committed:?}");

    // the model's checkpoint, and a restart resumes from it
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("models/fraud.json")).expect("model checkpoint"),
    )
    .expect("json");
    let version = meta["version"].as_u64().expect("version");
    let examples = meta["summary"]["examples"].as_u64().expect("examples");
    assert!(version >= 1 && examples >= 1000, "{meta}");
    let mut child = start(&pipeline, &state, &topics);
    let m = wait_metrics(&mut child, port, Duration::from_secs(60), "resumed", |m| {
        model(m, "freshet_model_version").is_some()
            && m.get("freshet_checkpoints_total")
                .is_some_and(|c| *c >= 1.0)
    });
    assert!(
        model(&m, "freshet_model_version").unwrap_or(0.0) >= version as f64,
        "resumed at version {version}: {m:?}"
    );
    assert!(
        model(&m, "freshet_model_examples_total").unwrap_or(0.0) >= examples as f64,
        "resumed with {examples} examples"
    );
    // the pin survived the restart, and the pinned version answers
    assert_eq!(traffic(&[])["policy"], json!({ "pin": pinned }));
    let http: Value = predict_over_http(port);
    assert_eq!(http["predictions"][0]["version"], pinned, "{http}");
    terminate(child);
}

/// Event time of the served-rows test's first transaction (2026-01-01).
const T0: u64 = 1_767_225_600_000;
/// Prediction requests whose labels the served-rows test produces.
const LABELLED_REQUESTS: u64 = 12;

/// A pipeline with one-partition topics: a card view, a delayed-label model (10 s wait,
/// unlabelled examples dropped) and a `[[serving]]` table for it.
fn served_pipeline(
    dir: &Path,
    brokers: &str,
    redis: &str,
    t: &Topics,
    tag: &str,
    port: u16,
) -> PathBuf {
    let text = format!(
        r#"{head}
[[source]]
name = "transactions"
topic = "{transactions}"
entity = "card_id"
event_time = "ts"
allowed_lateness = "0s"

[[source]]
name = "labels"
topic = "{labels}"
entity = "card_id"
event_time = "ts"
allowed_lateness = "0s"

[[feature_view]]
name = "card"
source = "transactions"
features = [{{ name = "txn_count_5m", agg = "count", window = "5m" }}]

[[model]]
name = "fraud"
kind = "logistic_regression"
features = ["card.txn_count_5m", "transactions.amount"]
label = {{ source = "labels", join_key = "event_id", field = "label", max_delay = "10s" }}
optimizer = {{ kind = "sgd", lr = 0.1 }}
batch_size = 1

{serving}"#,
        transactions = t.get("transactions"),
        head = header(brokers, redis, tag, port),
        serving = fraud_serving(t),
        labels = t.get("labels"),
    );
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// Rows served over Kafka reach the model's label join: each labelled request is learned once
/// its label arrives (the served vector joined to its label), a request without a label is
/// not (it expires), and one whose event time is behind the watermark is counted late.
#[test]
fn rows_served_over_kafka_are_learned_when_their_labels_arrive() {
    let Some((brokers, redis)) = services() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = Topics::with_roles(
        dir.path(),
        &brokers,
        &[
            ("transactions", 1),
            ("labels", 1),
            ("changelog", 1),
            ("dead", 1),
            ("requests", 1),
            ("responses", 1),
            ("request_dead", 1),
        ],
    );
    let produce = |role: &str, name: &str, lines: &[Value], key: &str| {
        let lines: Vec<String> = lines.iter().map(Value::to_string).collect();
        produce_keyed(&brokers, topics.get(role), dir.path(), name, &lines, key);
    };
    // 20 transactions (ids 1..=20, no labels: they expire) and a label of no event, so that
    // both sources have a watermark (T0 + 1.9 s)
    let events: Vec<Value> = (0..20u64)
        .map(|i| {
            json!({"event_id": i + 1, "card_id": format!("c{}", i % 4), "ts": T0 + i * 100, "amount": 10.0 + i as f64})
        })
        .collect();
    produce("transactions", "tx.jsonl", &events, "card_id");
    produce(
        "labels",
        "labels-0.jsonl",
        &[json!({"event_id": 777, "card_id": "c0", "ts": T0 + 1_900, "label": 1})],
        "card_id",
    );
    let tag = unique("served");
    let port = free_port();
    let pipeline = served_pipeline(dir.path(), &brokers, &redis, &topics, &tag, port);
    let state = dir.path().join("state");
    let mut child = start(&pipeline, &state, &topics);
    let model = |m: &HashMap<String, f64>, name: &str| {
        m.get(&format!("{name}{{model=\"fraud\"}}"))
            .copied()
            .unwrap_or(-1.0)
    };
    let served = |m: &HashMap<String, f64>, outcome: &str| {
        m.get(&format!(
            "freshet_model_served_rows_total{{model=\"fraud\",outcome=\"{outcome}\"}}"
        ))
        .copied()
        .unwrap_or(-1.0)
    };
    wait_metrics(
        &mut child,
        port,
        Duration::from_secs(60),
        "both sources read",
        |m| {
            m.get("freshet_pipeline_watermark_ms")
                .is_some_and(|w| *w >= (T0 + 1_900) as f64)
                && model(m, "freshet_model_labels_total") >= 1.0
        },
    );

    // requests at T0 + 5 s on: LABELLED_REQUESTS to be labelled, a control that never is, and
    // one at T0 + 0.5 s, behind the watermark
    let mut requests: Vec<Value> = (0..LABELLED_REQUESTS)
        .map(|k| {
            json!({"request_id": format!("s{k}"), "entity": "c1", "fields": {
                "amount": 100.0 + k as f64, "event_id": 1_000 + k, "ts": T0 + 5_000 + k * 10}})
        })
        .collect();
    requests.push(json!({"request_id": "control", "entity": "c2", "fields": {
        "amount": 5.0, "event_id": 2_000, "ts": T0 + 5_000}}));
    requests.push(json!({"request_id": "late", "entity": "c3", "fields": {
        "amount": 6.0, "event_id": 3_000, "ts": T0 + 500}}));
    produce("requests", "requests.jsonl", &requests, "request_id");
    let answers = consume_until(
        &brokers,
        topics.get("responses"),
        |out| out.len() >= requests.len(),
        Duration::from_secs(60),
    );
    for (_, payload, _) in &answers {
        let body: Value = serde_json::from_slice(payload).expect("json");
        assert!(body["score"].as_f64().is_some(), "{body}");
    }
    let m = wait_metrics(
        &mut child,
        port,
        Duration::from_secs(30),
        "served rows logged",
        |m| served(m, "logged") >= (LABELLED_REQUESTS + 1) as f64 && served(m, "late") >= 1.0,
    );
    assert_eq!(served(&m, "logged"), (LABELLED_REQUESTS + 1) as f64);
    assert_eq!(served(&m, "late"), 1.0);
    assert_eq!(served(&m, "dropped"), 0.0);
    assert_eq!(
        model(&m, "freshet_model_examples_total"),
        0.0,
        "nothing labelled yet"
    );

    // the labels of the labelled requests (0.5 s after each), then one event per source at
    // T0 + 30 s: the watermark passes every label and every wait
    let labels: Vec<Value> = (0..LABELLED_REQUESTS)
        .map(|k| {
            json!({"event_id": 1_000 + k, "card_id": "c1", "ts": T0 + 5_500 + k * 10, "label": k % 2})
        })
        .collect();
    produce("labels", "labels-1.jsonl", &labels, "card_id");
    produce(
        "transactions",
        "tick.jsonl",
        &[json!({"event_id": 9_999, "card_id": "c0", "ts": T0 + 30_000, "amount": 1.0})],
        "card_id",
    );
    produce(
        "labels",
        "labels-2.jsonl",
        &[json!({"event_id": 778, "card_id": "c0", "ts": T0 + 30_000, "label": 0})],
        "card_id",
    );
    // the 20 transactions and the control expire (T0 + 15 s at the latest)
    let expired = 20.0 + 1.0;
    let m = wait_metrics(
        &mut child,
        port,
        Duration::from_secs(60),
        "the served rows learned",
        |m| {
            model(m, "freshet_model_examples_total") >= LABELLED_REQUESTS as f64
                && model(m, "freshet_model_examples_expired_total") >= expired
        },
    );
    let mut lines: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.starts_with("freshet_model_"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    lines.sort();
    eprintln!("model metrics:\n{}", lines.join("\n"));
    // each labelled request learned once; the control and the events expired, unlearned
    assert_eq!(
        model(&m, "freshet_model_examples_total"),
        LABELLED_REQUESTS as f64
    );
    assert_eq!(
        model(&m, "freshet_model_labels_joined_total"),
        LABELLED_REQUESTS as f64
    );
    assert_eq!(
        model(&m, "freshet_model_labels_total"),
        (LABELLED_REQUESTS + 2) as f64
    );
    assert_eq!(model(&m, "freshet_model_labels_unmatched_total"), 2.0);
    assert_eq!(model(&m, "freshet_model_examples_expired_total"), expired);
    assert_eq!(model(&m, "freshet_model_examples_superseded_total"), 0.0);
    terminate(child);
}

/// Kafka request → response latency at a stated rate: `REQUESTS_PER_S` requests per second for
/// `BENCH_SECONDS` produced by `freshet produce --rate`, each latency taken from the broker
/// timestamps (request created by the producer → answer created by freshet), printed as one
/// JSON line. Run by `scripts/bench-kafka-serving.sh` (ignored in the normal suite).
#[test]
#[ignore = "benchmark: scripts/bench-kafka-serving.sh"]
fn kafka_serving_latency() {
    const REQUESTS_PER_S: usize = 1_000;
    const BENCH_SECONDS: usize = 10;
    let Some((brokers, redis)) = services() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = load_traffic(dir.path(), &brokers, 5_000);
    let tag = unique("bench");
    let port = free_port();
    let pipeline = pipeline(dir.path(), &brokers, &redis, &topics, &tag, port);
    let mut child = start(&pipeline, &dir.path().join("state"), &topics);
    wait_metrics(
        &mut child,
        port,
        Duration::from_secs(120),
        "the model learns",
        |m| {
            m.get("freshet_model_version{model=\"fraud\"}")
                .copied()
                .unwrap_or(0.0)
                >= 1.0
        },
    );
    let total = REQUESTS_PER_S * BENCH_SECONDS;
    let lines: Vec<String> = (0..total)
        .map(|i| {
            json!({"request_id": format!("b{i}"), "entity": format!("c{:07}", i % 500),
                   "fields": {"amount": 25.0, "country": "US"}})
            .to_string()
        })
        .collect();
    let file = dir.path().join("bench.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let rate = format!("{REQUESTS_PER_S}/s");
    run_ok(&[
        "produce",
        "--brokers",
        &brokers,
        "--topic",
        topics.get("requests"),
        &file.display().to_string(),
        "--key-field",
        "request_id",
        "--rate",
        &rate,
        "--topics-dir",
        "/nonexistent",
    ]);
    let request_times = timestamps(&brokers, topics.get("requests"), total);
    let answer_times = timestamps(&brokers, topics.get("responses"), total);
    let mut latencies: Vec<i64> = request_times
        .iter()
        .filter_map(|(id, sent)| answer_times.get(id).map(|answered| answered - sent))
        .collect();
    latencies.sort_unstable();
    assert_eq!(latencies.len(), total, "every request answered");
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let m = metrics(port).unwrap_or_default();
    let internal = |q: &str| {
        m.get(&format!(
            "freshet_serving_kafka_latency_seconds{{serving=\"fraud_kafka\",quantile=\"{q}\"}}"
        ))
        .map_or(f64::NAN, |s| s * 1e3)
    };
    println!(
        "{}",
        json!({
            "bench": "kafka_serving", "rate_per_s": REQUESTS_PER_S, "requests": total,
            "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": latencies[latencies.len() - 1],
            "read_to_ack_p50_ms": internal("0.5"), "read_to_ack_p99_ms": internal("0.99"),
        })
    );
    terminate(child);
}

/// Request id → broker timestamp (ms) of the first `count` messages of `topic`.
fn timestamps(brokers: &str, topic: &str, count: usize) -> HashMap<String, i64> {
    let messages = consume_with_time(brokers, topic, count);
    let mut out = HashMap::new();
    for (key, time) in messages {
        out.entry(key).or_insert(time);
    }
    out
}

fn consume_with_time(brokers: &str, topic: &str, count: usize) -> Vec<(String, i64)> {
    let (consumer, _) = reader_from_beginning(brokers, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            if let (Some(key), Some(time)) = (m.key(), m.timestamp().to_millis()) {
                out.push((String::from_utf8_lossy(key).into_owned(), time));
            }
        }
    }
    out
}

/// Prediction requests of phase `phase` (ids `{phase}{i}`), one entity each.
fn prediction_requests(phase: &str, count: usize, entities: &[String]) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let id = format!("{phase}{i}");
            let entity = entities[i % entities.len()].clone();
            let line = json!({
                "request_id": id,
                "entity": entity,
                "fields": {"amount": 5.0 + i as f64, "country": "US"},
            })
            .to_string();
            (id, line)
        })
        .collect()
}

/// A broker of the test's own, killed if the test fails while it runs.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kafka serving across a broker outage, against a durable broker of the test's own (tansu with
/// sqlite storage, `FRESHET_TEST_TANSU_BIN`): requests answered before the outage, a burst of
/// which part is read (answers in flight) and part unread when the broker is killed with
/// SIGKILL, and requests produced after it is restarted on the same port and file. Every
/// request is answered (repeats allowed, under the same id), nothing is dead-lettered, freshet
/// waits out the outage with `/healthz` degraded, and after SIGTERM the serving group's offsets
/// are at the end of the request topic.
#[test]
fn kafka_serving_survives_a_broker_restart() {
    const EVENTS: usize = 3_000;
    const BEFORE: usize = 100;
    const BURST: usize = 2_000;
    const AFTER: usize = 200;
    let Some((_, redis)) = services() else {
        return;
    };
    let Some(tansu) = durable_tansu() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    let kafka_port = free_port();
    let brokers = format!("127.0.0.1:{kafka_port}");
    let mut broker = Broker(spawn_tansu(&tansu, &broker_dir, kafka_port));
    let topics = load_traffic(dir.path(), &brokers, EVENTS);
    let tag = unique("restart");
    let port = free_port();
    let pipeline = pipeline(dir.path(), &brokers, &redis, &topics, &tag, port);
    // few requests in flight: reading goes at the pace of the broker's acknowledgements, so the
    // broker dies with some of the burst read and unanswered and the rest not yet read
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    let text = text.replacen(
        "batch_size = 32\nmax_in_flight = 128",
        "batch_size = 4\nmax_in_flight = 16",
        1,
    );
    assert!(text.contains("max_in_flight = 16"), "{text}");
    std::fs::write(&pipeline, text).expect("pipeline");
    let state = dir.path().join("state");
    let mut child = start(&pipeline, &state, &topics);
    let serving = |m: &HashMap<String, f64>, name: &str| {
        m.get(&format!("{name}{{serving=\"fraud_kafka\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    wait_metrics(
        &mut child,
        port,
        Duration::from_secs(120),
        "the model publishes a version",
        |m| {
            m.get("freshet_model_version{model=\"fraud\"}")
                .is_some_and(|v| *v >= 1.0)
        },
    );
    let entities: Vec<String> = (0..50).map(|i| format!("c{i:07}")).collect();
    let requests = topics.get("requests");
    let produce = |name: &str, batch: &[(String, String)]| {
        let lines: Vec<String> = batch.iter().map(|(_, line)| line.clone()).collect();
        produce_lines(&brokers, requests, dir.path(), name, &lines);
    };

    // before the outage: answered
    let before = prediction_requests("a", BEFORE, &entities);
    produce("before.jsonl", &before);
    wait_metrics(
        &mut child,
        port,
        Duration::from_secs(60),
        "the first requests answered",
        |m| serving(m, "freshet_serving_kafka_responses_total") >= BEFORE as f64,
    );

    // a burst, and the broker killed while freshet works through it
    let burst = prediction_requests("b", BURST, &entities);
    produce("burst.jsonl", &burst);
    // once freshet has started on the burst
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let m = metrics(port).expect("metrics before the kill");
        if serving(&m, "freshet_serving_kafka_requests_total") > BEFORE as f64 {
            break m;
        }
        assert!(Instant::now() < deadline, "the burst is not read: {m:?}");
        std::thread::sleep(Duration::from_millis(2));
    };
    broker.0.kill().expect("SIGKILL the broker");
    let _ = broker.0.wait();
    let read = serving(&at_kill, "freshet_serving_kafka_requests_total");
    let answered = serving(&at_kill, "freshet_serving_kafka_responses_total");
    let in_flight = serving(&at_kill, "freshet_serving_kafka_in_flight");
    eprintln!(
        "killed the broker with {read} requests read, {answered} answered, {in_flight} in flight, \
         of {} produced",
        BEFORE + BURST
    );
    assert!(
        read < (BEFORE + BURST) as f64,
        "the whole burst was read before the kill: make it longer"
    );
    // freshet waits (it neither exits nor gives answers up) while the broker is away
    degraded_while_the_broker_is_down(&mut child, port, Duration::from_secs(3));
    broker = Broker(spawn_tansu(&tansu, &broker_dir, kafka_port));

    // after the restart
    let after = prediction_requests("c", AFTER, &entities);
    produce("after.jsonl", &after);
    let all: Vec<&(String, String)> = before.iter().chain(&burst).chain(&after).collect();
    let (consumer, _) = reader_from_beginning(&brokers, topics.get("responses"));
    let mut answers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while answers.len() < all.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let (key, payload, _) = topic_message(&m);
            let body: Value = serde_json::from_slice(&payload).expect("a response is JSON");
            let id = body["request_id"].as_str().expect("request_id").to_owned();
            assert_eq!(key.as_deref(), Some(id.as_str()), "keyed by request id");
            answers.entry(id).or_default().push(body);
        }
    }
    drop(consumer);
    let mut repeated = 0;
    for (i, (id, line)) in all.iter().enumerate() {
        let request: Value = serde_json::from_str(line).expect("json");
        let bodies = answers.get(id).unwrap_or_else(|| {
            panic!(
                "no answer to {id} (request {i}); {} ids answered",
                answers.len()
            )
        });
        if bodies.len() > 1 {
            repeated += 1;
        }
        for body in bodies {
            assert!(body.get("error").is_none(), "{id}: {body}");
            assert_eq!(body["model"], "fraud", "{body}");
            assert!(body["version"].as_u64().is_some(), "{body}");
            let score = body["score"].as_f64().expect("score");
            assert!((0.0..=1.0).contains(&score), "{body}");
            // a repeat answers the same request
            assert_eq!(body["entity"], request["entity"], "{body}");
        }
    }
    assert_eq!(answers.len(), all.len(), "answers to unknown ids");
    eprintln!(
        "{} requests answered, {repeated} of them more than once",
        all.len()
    );

    // nothing dead-lettered, nothing failed, nothing left in flight, healthy again
    let m = wait_metrics(
        &mut child,
        port,
        Duration::from_secs(60),
        "every answer acknowledged and healthy",
        |m| {
            m.contains_key("freshet_serving_kafka_in_flight{serving=\"fraud_kafka\"}")
                && serving(m, "freshet_serving_kafka_in_flight") == 0.0
                && health(port) == Some(200)
        },
    );
    assert_eq!(serving(&m, "freshet_serving_kafka_dead_letters_total"), 0.0);
    assert_eq!(serving(&m, "freshet_serving_kafka_failed_total"), 0.0);
    assert!(serving(&m, "freshet_serving_kafka_responses_total") >= all.len() as f64);
    let dead = consume_until(
        &brokers,
        topics.get("request_dead"),
        |_| false,
        Duration::from_secs(3),
    );
    assert!(
        dead.is_empty(),
        "{} dead letters: {:?}",
        dead.len(),
        dead.first()
    );

    terminate(child);
    let group = format!("{tag}.serving.fraud_kafka");
    let committed = freshet_kafka::serving::committed_offsets(&brokers, &group, requests)
        .expect("committed offsets");
    let total: i64 = committed.iter().map(|(_, o)| *o).sum();
    assert_eq!(total as usize, all.len(), "committed {committed:?}");
    drop(broker);
}
