//! Drift alerts from `freshet run` to the alert topic, against a real Kafka-protocol broker
//! started by `scripts/test.sh` (`FRESHET_TEST_KAFKA_BROKERS`). Skipped with a message when it
//! is missing, except under `CI=true`, where the test fails.
//!
//! `gen.py drift --rows 100000` (one row per ms, value and category mix shifting at row 50 000)
//! is produced to a one-partition topic; `freshet run` monitors it with a 50 s reference and
//! `alert_topic` set. Every alert transition read back from the alert topic must be a JSON
//! object with the documented fields, keyed `monitor/feature`, and must equal the transition
//! `freshet replay` writes to drift.jsonl for the same input and monitor.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use freshet_kafka::client::consumer_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use common::services::{brokers, free_port, run_ok, terminate, unique};
use common::{read_jsonl, FRESHET};

/// gen.py's first event time: 2026-01-01T00:00:00Z.
const BASE_MS: u64 = 1_767_225_600_000;
const ROWS: u64 = 100_000;
/// Event time of the shift (row ROWS / 2).
const MIDPOINT_MS: u64 = BASE_MS + ROWS / 2;

fn generate(dir: &Path) -> PathBuf {
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oracle/gen.py"))
        .args(["drift", "--rows", &ROWS.to_string(), "--jsonl", "--out"])
        .arg(dir)
        .status()
        .expect("python3 runs tests/oracle/gen.py (python3 is required for this test)");
    assert!(status.success(), "gen.py drift failed");
    dir.join("drift.jsonl")
}

/// The monitor of the test: the acceptance monitor with a 50 s reference (the shift is at 50 s).
fn monitor(alert_topic: &str) -> String {
    format!(
        r#"[[source]]
name = "stream"
entity = "id"
event_time = "ts"
{{topic}}

[[drift]]
name = "d"
features = ["stream.value", "stream.category"]
reference = {{ kind = "first", duration = "50s" }}
window = "10s"
methods = ["psi", "ks", "jensen_shannon", "wasserstein", "chi_square"]
alert = {{ psi = 0.1, ks_p = 0.001, chi_square_p = 0.001, fire_after = 2, clear_after = 3 }}
alert_topic = "{alert_topic}"
"#
    )
}

/// Every message of `topic` (one partition) until `want` messages or `timeout`.
fn consume(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<(String, Value)> {
    let consumer: BaseConsumer = consumer_config(brokers, &unique("alerts-reader"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value: Value = serde_json::from_slice(m.payload().unwrap_or_default())
                .expect("an alert message is JSON");
            out.push((key, value));
        }
    }
    out
}

#[test]
fn run_produces_alert_transitions_to_the_alert_topic() {
    let Some(brokers) = brokers() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    let (topic, changelog, alerts) = (unique("drift"), unique("changelog"), unique("alerts"));
    let topics_dir = dir.path().join("topics");
    std::fs::create_dir_all(&topics_dir).expect("mkdir");
    for name in [&topic, &changelog, &alerts] {
        std::fs::write(
            topics_dir.join(format!("{name}.toml")),
            format!("name = \"{name}\"\npartitions = 1\nreplication_factor = 1\n"),
        )
        .expect("topic file");
    }
    let dir_arg = topics_dir.display().to_string();
    run_ok(&["topics", "apply", "--brokers", &brokers, "--dir", &dir_arg]);
    let input_arg = input.display().to_string();
    run_ok(&[
        "produce",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--key-field",
        "id",
        &input_arg,
    ]);

    // what replay writes for the same monitor: the expected transitions
    let replay_pipeline = dir.path().join("replay.toml");
    std::fs::write(&replay_pipeline, monitor(&alerts).replace("{topic}", "")).expect("write");
    let out = dir.path().join("replay");
    run_ok(&[
        "replay",
        "--pipeline",
        &replay_pipeline.display().to_string(),
        "--input",
        &format!("stream={input_arg}"),
        "--out",
        &out.display().to_string(),
    ]);
    let expected: Vec<Value> = read_jsonl(&out.join("drift.jsonl"))
        .into_iter()
        .filter(|l| l["kind"] == "alert")
        .collect();
    // KS on the value, chi-square and PSI on the category fire at the second window after
    // the shift (replay's drift tests check this in detail)
    let firing: Vec<&Value> = expected
        .iter()
        .filter(|a| a["state"] == "firing" && a["window_end"] == MIDPOINT_MS + 20_000)
        .collect();
    assert_eq!(firing.len(), 3, "{expected:?}");

    let port = free_port();
    let pipeline = dir.path().join("run.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{}\"\n\n[serve]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
            unique("drift-run"),
            monitor(&alerts).replace("{topic}", &format!("topic = \"{topic}\""))
        ),
    )
    .expect("write pipeline");
    let child = Command::new(FRESHET)
        .args(["run", "--pipeline", &pipeline.display().to_string()])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--checkpoint-interval",
            "500ms",
            "--changelog-topic",
            &changelog,
        ])
        .args(["--topics-dir", &dir_arg])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("freshet run starts");
    // the live run evaluates a window once the watermark passes its end; the input's last
    // window is not closed without later events, so every transition but those of the last
    // window comes
    let closed: Vec<&Value> = expected
        .iter()
        .filter(|a| a["window_end"].as_u64().is_some_and(|e| e < BASE_MS + ROWS))
        .collect();
    let got = consume(&brokers, &alerts, closed.len(), Duration::from_secs(120));
    // the board agrees while the service runs
    let drift: Value = ureq::get(&format!("http://127.0.0.1:{port}/v1/drift"))
        .call()
        .expect("GET /v1/drift")
        .into_body()
        .read_json()
        .expect("JSON");
    terminate(child);
    assert_eq!(got.len(), closed.len(), "{got:?}\nexpected {closed:?}");
    assert!(drift["monitors"].is_array(), "{drift}");
    for ((key, message), want) in got.iter().zip(&closed) {
        let feature = want["feature"].as_str().expect("feature");
        assert_eq!(key, &format!("d/{feature}"));
        let mut fields: Vec<&str> = message
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "feature",
                "kind",
                "measure",
                "monitor",
                "reference",
                "state",
                "threshold",
                "value",
                "window"
            ]
        );
        assert_eq!(message["kind"], "alert");
        assert_eq!(message["monitor"], "d");
        for field in ["feature", "measure", "state", "value", "threshold"] {
            assert_eq!(message[field], want[field], "{field}: {message} vs {want}");
        }
        assert_eq!(message["window"]["end"], want["window_end"]);
        assert_eq!(
            message["window"]["start"].as_u64(),
            want["window_end"].as_u64().map(|e| e - 10_000)
        );
        // the reference: the first 50 s of the input
        assert_eq!(message["reference"]["start"], BASE_MS);
        assert_eq!(message["reference"]["end"], BASE_MS + 50_000);
    }
}
