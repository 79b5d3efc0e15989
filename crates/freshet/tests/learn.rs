//! Online models through `freshet replay`: the learning issue's two acceptance pipelines, run
//! as written on `gen.py` data, and their models.jsonl.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::freshet;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn gen(args: &[&str], out: &Path) {
    let status = Command::new("python3")
        .arg(root().join("tests/oracle/gen.py"))
        .args(args)
        .arg("--out")
        .arg(out)
        .status()
        .expect("python3 runs gen.py");
    assert!(status.success());
}

fn replay(pipeline: &Path, inputs: &[String], out: &Path) -> (Value, Vec<Value>) {
    let mut args = vec![
        "replay".to_owned(),
        "--pipeline".to_owned(),
        pipeline.display().to_string(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    for i in inputs {
        args.push("--input".into());
        args.push(i.clone());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = freshet(&argv);
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).expect("summary json");
    let models = std::fs::read_to_string(out.join("models.jsonl"))
        .expect("models.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("models.jsonl line"))
        .collect();
    (summary, models)
}

#[test]
fn immediate_labels_learn_the_dense_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    gen(
        &["learn", "--rows", "20000", "--dim", "32", "--jsonl"],
        dir.path(),
    );
    let pipeline = dir.path().join("learn.toml");
    std::fs::write(
        &pipeline,
        r#"
[[source]]
name = "samples"
entity = "id"
event_time = "ts"

[[model]]
name = "clf"
kind = "logistic_regression"
features = ["samples.x*"]          # a glob over event fields
label = { field = "y" }
optimizer = { kind = "adam", lr = 0.01 }
batch_size = 1
"#,
    )
    .expect("write");
    let input = format!("samples={}", dir.path().join("learn.jsonl").display());
    let (_, models) = replay(&pipeline, &[input], &dir.path().join("out"));
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m["model"], "clf");
    assert_eq!(m["examples"], 20000);
    assert!(m["version"].as_u64().unwrap_or(0) >= 1);
    // the generator's Bayes accuracy on this stream is about 0.8; a model that learned
    // nothing scores about 0.5
    let accuracy = m["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy > 0.75, "accuracy {accuracy}");
    assert!(m["logloss"].as_f64().expect("logloss") < 0.6);
    assert!(m["auc"].as_f64().expect("auc") > 0.8);
    assert_eq!(m["rolling"]["examples"], 10000);
    assert!(m["rows_per_s"].as_f64().expect("rows/s") > 0.0);
}

#[test]
fn delayed_labels_join_the_fraud_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    gen(
        &[
            "txn", "--events", "20000", "--keys", "500", "--gap-ms", "20",
        ],
        dir.path(),
    );
    let foundation =
        std::fs::read_to_string(root().join("tests/oracle/foundation.toml")).expect("foundation");
    let pipeline = dir.path().join("fraud.toml");
    std::fs::write(
        &pipeline,
        format!(
            "{foundation}\n{}",
            r#"
[[source]]
name = "labels"
entity = "card_id"
event_time = "ts"

[[model]]
name = "fraud"
kind = "logistic_regression"
features = ["card.txn_count_5m", "card.amount_mean_1h", "card.amount_std_1h", "card.merchants_1h", "transactions.amount", "transactions.country"]
label = { source = "labels", join_key = "event_id", field = "label", max_delay = "10m" }
optimizer = { kind = "ftrl", alpha = 0.05, beta = 1.0, l1 = 0.0, l2 = 1.0 }
batch_size = 64
device = "cpu"
"#
        ),
    )
    .expect("write");
    let labels = std::fs::read_to_string(dir.path().join("labels.jsonl"))
        .expect("labels")
        .lines()
        .count();
    let inputs = [
        format!(
            "transactions={}",
            dir.path().join("transactions.jsonl").display()
        ),
        format!("labels={}", dir.path().join("labels.jsonl").display()),
    ];
    let (summary, models) = replay(&pipeline, &inputs, &dir.path().join("out"));
    let m = &models[0];
    assert_eq!(m["model"], "fraud");
    // gen.py labels every transaction within its max delay: every label joins
    assert_eq!(summary["models"][0]["labels_joined"], labels);
    assert_eq!(summary["models"][0]["labels_unmatched"], 0);
    assert_eq!(summary["models"][0]["expired_unlabelled"], 0);
    assert_eq!(summary["models"][0]["pending_at_end"], 0);
    assert_eq!(m["examples"], labels);
    assert!(m["accuracy"].as_f64().expect("accuracy") > 0.5);
    assert!(m["auc"].as_f64().is_some());
    // the join pairs the same examples and labels with three workers (the served feature
    // values themselves follow each worker's head, so the metrics may differ slightly)
    let out3 = dir.path().join("out3");
    let mut args = vec![
        "replay".to_owned(),
        "--pipeline".to_owned(),
        pipeline.display().to_string(),
        "--out".to_owned(),
        out3.display().to_string(),
        "--workers".to_owned(),
        "3".to_owned(),
    ];
    for i in &inputs {
        args.extend(["--input".to_owned(), i.clone()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = freshet(&argv);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let three: Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).expect("summary json");
    for field in [
        "examples",
        "labels_joined",
        "labels_unmatched",
        "expired_unlabelled",
    ] {
        assert_eq!(
            three["models"][0][field], summary["models"][0][field],
            "{field}"
        );
    }
}

#[test]
fn a_label_source_keyed_by_its_join_key_joins_every_label() {
    // the label source's entity is the join key: the decoder reads the key from the entity
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        r#"
[[source]]
name = "transactions"
entity = "card_id"
event_time = "ts"

[[source]]
name = "labels"
entity = "event_id"
event_time = "ts"

[[model]]
name = "fraud"
kind = "logistic_regression"
features = ["transactions.amount"]
label = { source = "labels", join_key = "event_id", field = "label", max_delay = "1m" }
batch_size = 4
device = "cpu"
"#,
    )
    .expect("write");
    let (mut txns, mut labels) = (String::new(), String::new());
    for i in 0..40u64 {
        let ts = 1_000_000 + i * 1_000;
        let amount = (i % 7) as f64 * 10.0;
        txns.push_str(&format!(
            "{{\"event_id\":{i},\"card_id\":\"c{}\",\"ts\":{ts},\"amount\":{amount}}}\n",
            i % 3
        ));
        labels.push_str(&format!(
            "{{\"event_id\":{i},\"ts\":{},\"label\":{}}}\n",
            ts + 5_000,
            u8::from(amount > 30.0)
        ));
    }
    std::fs::write(dir.path().join("t.jsonl"), txns).expect("write");
    std::fs::write(dir.path().join("l.jsonl"), labels).expect("write");
    let inputs = [
        format!("transactions={}", dir.path().join("t.jsonl").display()),
        format!("labels={}", dir.path().join("l.jsonl").display()),
    ];
    let (summary, models) = replay(&pipeline, &inputs, &dir.path().join("out"));
    assert_eq!(summary["models"][0]["labels_joined"], 40, "{summary}");
    assert_eq!(summary["models"][0]["labels_unmatched"], 0, "{summary}");
    assert_eq!(models[0]["examples"], 40);
}

#[test]
fn cuda_without_the_feature_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("gpu.toml");
    std::fs::write(
        &pipeline,
        r#"
[[source]]
name = "samples"
entity = "id"
event_time = "ts"

[[model]]
name = "clf"
kind = "mlp"
features = ["samples.a"]
label = { field = "y" }
optimizer = { kind = "adam", lr = 0.01 }
device = "cuda:0"
"#,
    )
    .expect("write");
    let data = dir.path().join("d.jsonl");
    std::fs::write(&data, "{\"id\":1,\"ts\":1,\"a\":1.0,\"y\":1}\n").expect("write");
    let out = freshet(&[
        "replay",
        "--pipeline",
        &pipeline.display().to_string(),
        "--input",
        &format!("samples={}", data.display()),
        "--out",
        &dir.path().join("out").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "cuda") {
        return;
    }
    assert!(!out.status.success());
    assert!(
        stderr.contains("cuda") || stderr.contains("CUDA"),
        "{stderr}"
    );
}

#[test]
fn a_model_resumes_from_its_checkpoint_and_is_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    gen(
        &["learn", "--rows", "6000", "--dim", "8", "--jsonl"],
        dir.path(),
    );
    let all = std::fs::read_to_string(dir.path().join("learn.jsonl")).expect("data");
    let lines: Vec<&str> = all.lines().collect();
    let (first, second) = lines.split_at(3000);
    let write = |name: &str, part: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, part.join("\n") + "\n").expect("write");
        format!("samples={}", path.display())
    };
    let (a, b, whole) = (
        write("a.jsonl", first),
        write("b.jsonl", second),
        write("all.jsonl", &lines),
    );
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        r#"
[[source]]
name = "samples"
entity = "id"
event_time = "ts"

[[model]]
name = "clf"
kind = "logistic_regression"
features = ["samples.x*"]
label = { field = "y" }
optimizer = { kind = "sgd", lr = 0.05 }
batch_size = 8
"#,
    )
    .expect("write");
    let models = dir.path().join("models");
    let with_dir = |input: &str, out: &str| {
        let args = [
            "replay",
            "--pipeline",
            &pipeline.display().to_string(),
            "--input",
            input,
            "--out",
            &dir.path().join(out).display().to_string(),
            "--models-dir",
            &models.display().to_string(),
        ];
        let output = freshet(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    with_dir(&a, "o1");
    with_dir(&b, "o2");
    let (_, straight) = replay(&pipeline, &[whole], &dir.path().join("o3"));
    let resumed: Value = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("o2/models.jsonl"))
            .expect("models.jsonl")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("json");
    assert_eq!(resumed["examples"], 6000, "the metrics continue");
    assert_eq!(resumed["accuracy"], straight[0]["accuracy"]);
    let (r, s) = (
        resumed["logloss"].as_f64().expect("logloss"),
        straight[0]["logloss"].as_f64().expect("logloss"),
    );
    assert!((r - s).abs() < 1e-6, "resumed {r} vs straight {s}");
    let listed = freshet(&["models", "list", "--dir", &models.display().to_string()]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.starts_with("clf: version"), "{text}");
    let missing = freshet(&[
        "models",
        "show",
        "nope",
        "--dir",
        &models.display().to_string(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no checkpoint of model `nope`"));
}
