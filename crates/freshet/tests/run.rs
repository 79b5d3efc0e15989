//! `freshet run` end to end against a real Kafka-protocol broker and a real Redis, both started
//! by `scripts/test.sh` (`FRESHET_TEST_KAFKA_BROKERS`, `FRESHET_TEST_REDIS_URL`). Skipped with a
//! message when they are missing, except under `CI=true`, where the test fails.
//!
//! One workload (`gen.py txn` plus malformed records) is produced to a fresh topic; then:
//! - an uninterrupted run until caught up, stopped by SIGTERM;
//! - a run killed with SIGKILL at a random point and restarted from its checkpoint;
//! - a run whose Redis is stopped and restarted mid-stream;
//! - a run whose broker (a durable tansu of the test's own, `FRESHET_TEST_TANSU_BIN`, sqlite
//!   storage) is killed with SIGKILL and restarted mid-stream.
//!
//! Each time the Redis contents must equal the independent oracle (`tests/oracle/`) as of the
//! service's head `h` with hopping windows closed at `h - allowed_lateness`, the HTTP answers
//! must carry the same values, the changelog topic must hold every closed window (repeats with
//! identical values), and every malformed or late record must be in the dead-letter topic.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer;
use serde_json::Value;

use common::services::{
    degraded_while_the_broker_is_down, durable_tansu, free_port, health, metrics,
    reader_from_beginning, run_ok, services, spawn_tansu, terminate, topic_message, unique,
    TopicMessage,
};
use common::FRESHET;

const EVENTS: usize = 30_000;
const PARTITIONS: u32 = 4;
const LATENESS_MS: u64 = 2_000;
const TTL_MS: u64 = 172_800_000;
/// How long one phase may take to catch up.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Malformed records mixed into the stream: (line, what is wrong).
const MALFORMED: &[&str] = &[
    "this is not json",
    r#"{"event_id":1,"ts":1767225600000,"amount":1.0}"#,
    r#"{"event_id":2,"card_id":"c1","ts":"yesterday","amount":1.0}"#,
    r#"{"event_id":3,"card_id":"c1","ts":1767225600000,"amount":"lots"}"#,
    r#"[1,2,3]"#,
    r#"{"event_id":4,"card_id":null,"ts":1767225600000,"amount":2.0}"#,
];

/// Records that violate only the topic schema (the pipeline reads neither `event_id` nor
/// `country`): the oracle, which knows no schema, does not see them.
const SCHEMA_VIOLATIONS: &[&str] = &[
    r#"{"event_id":"five","card_id":"c1","ts":1767225600000,"amount":2.0}"#,
    r#"{"event_id":6,"card_id":"c1","ts":1767225600000,"amount":2.0,"country":7}"#,
];

/// The data topic's schema (checked by `freshet run --topics-dir`).
const SCHEMA: &str = r#"
[schema]
fields = [
  { name = "event_id", type = "integer",   required = true },
  { name = "card_id",  type = "string",    required = true },
  { name = "ts",       type = "timestamp", required = true },
  { name = "amount",   type = "number",    required = true },
  { name = "country",  type = "string" },
]
"#;

struct Workload {
    dir: tempfile::TempDir,
    file: PathBuf,
    /// The same records without the schema violations: the oracle's input.
    oracle_file: PathBuf,
    malformed: usize,
}

fn workload() -> Workload {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("python3")
        .arg(root.join("tests/oracle/gen.py"))
        .args([
            "txn",
            "--events",
            &EVENTS.to_string(),
            "--keys",
            "1500",
            "--gap-ms",
            "20",
        ])
        .arg("--out")
        .arg(dir.path())
        .status()
        .expect("python3 runs gen.py");
    assert!(status.success());
    let clean = std::fs::read_to_string(dir.path().join("transactions.jsonl")).expect("data");
    let file = dir.path().join("mixed.jsonl");
    let oracle_file = dir.path().join("oracle.jsonl");
    let mut out = std::fs::File::create(&file).expect("create");
    let mut oracle = std::fs::File::create(&oracle_file).expect("create");
    let mut malformed = 0;
    for (i, line) in clean.lines().enumerate() {
        if i % 5_000 == 2_500 {
            for bad in MALFORMED {
                writeln!(out, "{bad}").expect("write");
                writeln!(oracle, "{bad}").expect("write");
                malformed += 1;
            }
            for bad in SCHEMA_VIOLATIONS {
                writeln!(out, "{bad}").expect("write");
                malformed += 1;
            }
        }
        writeln!(out, "{line}").expect("write");
        writeln!(oracle, "{line}").expect("write");
    }
    Workload {
        dir,
        file,
        oracle_file,
        malformed,
    }
}

struct Names {
    topic: String,
    changelog: String,
    dead_letters: String,
}

fn pipeline(
    dir: &Path,
    brokers: &str,
    redis: &str,
    names: &Names,
    tag: &str,
    port: u16,
) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let foundation =
        std::fs::read_to_string(root.join("tests/oracle/foundation.toml")).expect("foundation");
    // the foundation pipeline with its memory [store] replaced
    let body: String = foundation
        .lines()
        .filter(|l| !l.starts_with("[store]") && !l.starts_with("backend"))
        .map(|l| format!("{l}\n"))
        .collect();
    let body = body.replace(
        "event_time = \"ts\"",
        &format!("topic = \"{}\"\nevent_time = \"ts\"", names.topic),
    );
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{tag}\"\n\n[store]\nbackend = \"redis\"\nurl = \"{redis}\"\nkey_prefix = \"{tag}\"\n\n[serve]\nlisten = \"127.0.0.1:{port}\"\n\n{body}"
        ),
    )
    .expect("write pipeline");
    path
}

fn start(pipeline: &Path, state: &Path, names: &Names, topics_dir: &Path) -> Child {
    Command::new(FRESHET)
        .args(["run", "--pipeline"])
        .arg(pipeline)
        .arg("--state-dir")
        .arg(state)
        .args([
            "--checkpoint-interval",
            "300ms",
            "--changelog-topic",
            &names.changelog,
        ])
        .args(["--dead-letter-topic", &names.dead_letters])
        .arg("--topics-dir")
        .arg(topics_dir)
        .env("RUST_LOG", "warn,freshet_kafka::reader=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("freshet run starts")
}

fn get(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// Waits until every partition has been read to its end for a second and the head stopped
/// moving; returns the head. (Not a count of checkpoints: an idle service takes none.)
fn wait_caught_up(child: &mut Child, port: u16) -> u64 {
    let deadline = Instant::now() + CATCH_UP;
    let mut seen_all_at: Option<Instant> = None;
    // the head and since when it has not moved
    let mut last_head: Option<(u64, Instant)> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "not caught up within {CATCH_UP:?}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("freshet run exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
        let Some(m) = metrics(port) else { continue };
        let lags: Vec<f64> = m
            .iter()
            .filter(|(k, _)| k.starts_with("freshet_kafka_consumer_lag{"))
            .map(|(_, v)| *v)
            .collect();
        let head = get(&m, "freshet_pipeline_head_ms") as u64;
        if last_head.is_none_or(|(h, _)| h != head) {
            last_head = Some((head, Instant::now()));
        }
        // partitions go idle after 5 s; the head is final once they have
        let settled = last_head.is_some_and(|(_, since)| since.elapsed() > Duration::from_secs(6));
        if lags.len() == PARTITIONS as usize && lags.iter().all(|l| *l == 0.0) {
            match seen_all_at {
                None => seen_all_at = Some(Instant::now()),
                Some(t) if t.elapsed() >= Duration::from_secs(1) && settled => return head,
                Some(_) => {}
            }
        }
    }
}

/// Every message of `topic`.
fn consume_all(brokers: &str, topic: &str) -> Vec<TopicMessage> {
    let (consumer, partitions) = reader_from_beginning(brokers, topic);
    let mut ends = 0i64;
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        ends += high;
    }
    // tansu 0.6 reports a high watermark that leaves out the newest batch, so read until the
    // watermarks are reached and then nothing more arrives for 3 s
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_message = Instant::now();
    while Instant::now() < deadline
        && ((out.len() as i64) < ends || last_message.elapsed() < Duration::from_secs(3))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            last_message = Instant::now();
            out.push(topic_message(&m));
        }
    }
    assert!(out.len() as i64 >= ends, "read all of `{topic}`");
    out
}

/// Checks one run's outputs against the oracle as of `head`.
fn check_outputs(
    w: &Workload,
    brokers: &str,
    pipeline: &Path,
    names: &Names,
    head: u64,
    tag: &str,
    port_values: &[(String, Value)],
) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let odir = w.dir.path().join(format!("oracle-{tag}"));
    let fdir = w.dir.path().join(format!("out-{tag}"));
    std::fs::create_dir_all(&odir).expect("mkdir");
    std::fs::create_dir_all(&fdir).expect("mkdir");
    let status = Command::new("python3")
        .arg(root.join("tests/oracle/oracle_windows.py"))
        .arg(&w.oracle_file)
        .args([LATENESS_MS.to_string(), TTL_MS.to_string()])
        .arg(&odir)
        .args([
            head.to_string(),
            LATENESS_MS.to_string(),
            PARTITIONS.to_string(),
        ])
        .status()
        .expect("oracle runs");
    assert!(status.success());
    let features = fdir.join("features.jsonl");
    run_ok(&[
        "store",
        "dump",
        "--pipeline",
        &pipeline.display().to_string(),
        "--out",
        &features.display().to_string(),
    ]);

    // the changelog: every closed window, a repeat only with identical values
    let mut windows: BTreeMap<(String, String, u64, u64), Value> = BTreeMap::new();
    for (key, payload, _) in consume_all(brokers, &names.changelog) {
        let v: Value = serde_json::from_slice(&payload).expect("changelog JSON");
        assert_eq!(key.as_deref(), v["entity"].as_str(), "keyed by entity");
        let k = (
            v["entity"].as_str().expect("entity").to_owned(),
            v["feature"].as_str().expect("feature").to_owned(),
            v["window_start"].as_u64().expect("start"),
            v["window_end"].as_u64().expect("end"),
        );
        if let Some(previous) = windows.insert(k.clone(), v["value"].clone()) {
            assert_eq!(
                previous, v["value"],
                "a repeated window {k:?} changed value"
            );
        }
    }
    let mut cl = std::fs::File::create(fdir.join("changelog.jsonl")).expect("create");
    for ((entity, feature, start, end), value) in &windows {
        let line = serde_json::json!({"view": "card", "entity": entity, "feature": feature,
            "window_start": start, "window_end": end, "value": value});
        writeln!(cl, "{line}").expect("write");
    }
    drop(cl);
    let verdict = Command::new("python3")
        .arg(root.join("tests/oracle/compare_windows.py"))
        .arg(&odir)
        .arg(&fdir)
        .arg("card")
        .output()
        .expect("compare runs");
    let text = String::from_utf8_lossy(&verdict.stdout).into_owned();
    if !verdict.status.success() {
        let mut ends: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for (_, feature, _, end) in windows.keys() {
            *ends.entry((feature.clone(), *end)).or_default() += 1;
        }
        let mut missing: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for l in std::fs::read_to_string(odir.join("oracle_changelog.jsonl"))
            .unwrap_or_default()
            .lines()
        {
            let v: Value = serde_json::from_str(l).expect("json");
            let k = (
                v["entity"].as_str().unwrap_or_default().to_owned(),
                v["feature"].as_str().unwrap_or_default().to_owned(),
                v["window_start"].as_u64().unwrap_or_default(),
                v["window_end"].as_u64().unwrap_or_default(),
            );
            if !windows.contains_key(&k) {
                *missing.entry((k.1, k.3)).or_default() += 1;
            }
        }
        eprintln!("{tag}: head {head}, missing per (feature, end): {missing:?}");
        // more dead letters than malformed + late records point at events judged late
        let late: Value = std::fs::read_to_string(odir.join("oracle_meta.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let letters = consume_all(brokers, &names.dead_letters);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for (_, _, h) in &letters {
            let reason = h.get("freshet.reason").map_or("", String::as_str);
            *reasons
                .entry(reason.chars().take(30).collect())
                .or_default() += 1;
        }
        eprintln!(
            "{tag}: {} dead letters ({} malformed records, {} late in the oracle): {reasons:?}",
            letters.len(),
            w.malformed,
            late["late"]
        );
    }
    assert!(
        verdict.status.success(),
        "{tag}: store/changelog differ from the oracle:\n{text}"
    );

    // HTTP answers taken while running carry the oracle's values
    let want: HashMap<String, Value> = std::fs::read_to_string(odir.join("oracle_features.jsonl"))
        .expect("oracle")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            (
                v["entity"].as_str().expect("entity").to_owned(),
                v["features"].clone(),
            )
        })
        .collect();
    for (entity, got) in port_values {
        let want = &want[entity];
        for name in [
            "txn_count_5m",
            "amount_sum_5m",
            "merchants_1h",
            "txn_count_1m_tumbling",
        ] {
            let (a, b) = (want[name].as_f64(), got[name].as_f64());
            assert!(
                matches!((a, b), (Some(a), Some(b)) if (a - b).abs() <= 1e-6 * a.abs().max(1.0)),
                "{tag}: HTTP {entity}.{name} = {b:?}, oracle {a:?}"
            );
        }
    }

    // dead letters: every malformed record and every late event, with a reason
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(odir.join("oracle_meta.json")).expect("meta"),
    )
    .expect("meta json");
    let letters = consume_all(brokers, &names.dead_letters);
    let late = meta["late"].as_u64().expect("late") as usize;
    assert!(
        letters.len() >= w.malformed + late,
        "{tag}: {} dead letters, want {} malformed + {late} late",
        letters.len(),
        w.malformed
    );
    assert!(letters
        .iter()
        .all(|(_, _, h)| h.get("freshet.reason").is_some_and(|r| !r.is_empty())));
    std::fs::read_to_string(features).expect("dump")
}

fn sample_http(port: u16, entities: &[&str]) -> Vec<(String, Value)> {
    entities
        .iter()
        .map(|e| {
            let body: Value = ureq::get(&format!("http://127.0.0.1:{port}/v1/features/card/{e}"))
                .call()
                .expect("http answer")
                .into_body()
                .read_json()
                .expect("json");
            ((*e).to_owned(), body["features"].clone())
        })
        .collect()
}

/// Writes topic files for `n` (the data topic with [`SCHEMA`]) and applies them.
fn create_topics(w: &Workload, brokers: &str, tag: &str, n: &Names) -> PathBuf {
    let topics_dir = w.dir.path().join(format!("topics-{tag}"));
    std::fs::create_dir_all(&topics_dir).expect("mkdir");
    for (name, partitions) in [
        (&n.topic, PARTITIONS),
        (&n.changelog, 2),
        (&n.dead_letters, 1),
    ] {
        let schema = if *name == n.topic { SCHEMA } else { "" };
        std::fs::write(
            topics_dir.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\npartitions = {partitions}\nreplication_factor = 1\n{schema}"
            ),
        )
        .expect("topic file");
    }
    run_ok(&[
        "topics",
        "apply",
        "--brokers",
        brokers,
        "--dir",
        &topics_dir.display().to_string(),
    ]);
    topics_dir
}

fn names(tag: &str) -> Names {
    Names {
        topic: unique(&format!("txn-{tag}")),
        changelog: unique(&format!("changelog-{tag}")),
        dead_letters: unique(&format!("dead-{tag}")),
    }
}

/// A redis-server of the test's own, with an append-only file so that a restart keeps its data.
fn spawn_redis(dir: &Path, port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (scripts/test.sh installs it)");
    let url = format!("redis://127.0.0.1:{port}/0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "redis-server not ready on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop_redis(mut redis: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &redis.id().to_string()])
        .status();
    let _ = redis.wait();
}

#[test]
fn a_redis_restart_mid_stream_degrades_health_and_loses_nothing() {
    let Some((brokers, _)) = services() else {
        return;
    };
    let w = workload();
    let redis_dir = w.dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("mkdir");
    let redis_port = free_port();
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    let mut redis = spawn_redis(&redis_dir, redis_port);
    let tag = "redis";
    let n = names(tag);
    let topics_dir = create_topics(&w, &brokers, tag, &n);
    let port = free_port();
    let pipeline = pipeline(w.dir.path(), &brokers, &redis_url, &n, &unique(tag), port);
    let state = w.dir.path().join("state-redis");
    let mut child = start(&pipeline, &state, &n, &topics_dir);
    // traffic keeps flowing while Redis is away
    let mut producer = Command::new(FRESHET)
        .args(["produce", "--brokers", &brokers, "--topic", &n.topic])
        .args(["--key-field", "card_id", "--rate", "5000/s"])
        .arg(&w.file)
        .stdout(Stdio::null())
        .spawn()
        .expect("produce");
    let deadline = Instant::now() + CATCH_UP;
    while metrics(port).is_none_or(|m| get(&m, "freshet_pipeline_events_total") < 3_000.0) {
        assert!(Instant::now() < deadline, "no events flowing");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_redis(redis);
    let mut degraded = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !degraded && Instant::now() < deadline {
        degraded = health(port) == Some(503);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        degraded,
        "/healthz never reported degraded while Redis was down"
    );
    std::thread::sleep(Duration::from_secs(1));
    redis = spawn_redis(&redis_dir, redis_port);
    assert!(producer.wait().expect("produce").success());
    let head = wait_caught_up(&mut child, port);
    assert_eq!(health(port), Some(200), "healthy again once Redis is back");
    let http = sample_http(port, &["c0000000", "c0000001", "c0000017", "c0000300"]);
    terminate(child);
    check_outputs(&w, &brokers, &pipeline, &n, head, tag, &http);
    stop_redis(redis);
}

/// Splits `file` into its first `first` lines and the rest (order kept).
fn split_lines(file: &Path, first: usize) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(file).expect("workload");
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = lines.split_at(first.min(lines.len()));
    let dir = file.parent().expect("a directory");
    let (pa, pb) = (dir.join("first-half.jsonl"), dir.join("second-half.jsonl"));
    std::fs::write(&pa, a.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
    std::fs::write(&pb, b.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
    (pa, pb)
}

#[test]
fn a_broker_restart_mid_stream_degrades_health_and_loses_nothing() {
    let Some((_, redis)) = services() else {
        return;
    };
    let Some(tansu) = durable_tansu() else {
        return;
    };
    let w = workload();
    let broker_dir = w.dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    let kafka_port = free_port();
    let brokers = format!("127.0.0.1:{kafka_port}");
    let mut broker = spawn_tansu(&tansu, &broker_dir, kafka_port);
    let tag = "broker";
    let n = names(tag);
    let topics_dir = create_topics(&w, &brokers, tag, &n);
    let (first, second) = split_lines(&w.file, EVENTS / 2);
    let produce = |file: &Path| {
        run_ok(&[
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            &n.topic,
            "--key-field",
            "card_id",
            &file.display().to_string(),
        ])
    };
    // the first half is on the broker before freshet starts, so that the broker goes away while
    // partitions still hold unread records
    produce(&first);
    let port = free_port();
    let pipeline = pipeline(w.dir.path(), &brokers, &redis, &n, &unique(tag), port);
    // A long idle timeout keeps every partition holding the head back across the outage, so the
    // oracle's per-partition semantics apply unchanged. (A partition whose brokers are
    // unreachable is not idle anyway, `source::tests::an_unreachable_partition_is_not_idle`; but
    // with the default 5 s this test once failed under a loaded suite with closed windows missing
    // from the changelog while the store was right, which is not explained yet.)
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    std::fs::write(
        &pipeline,
        text.replacen(
            "event_time = \"ts\"",
            "event_time = \"ts\"\nidle_timeout = \"300s\"",
            1,
        ),
    )
    .expect("pipeline");
    let state = w.dir.path().join("state-broker");
    let mut child = start(&pipeline, &state, &n, &topics_dir);
    let deadline = Instant::now() + CATCH_UP;
    while metrics(port).is_none_or(|m| get(&m, "freshet_pipeline_events_total") < 2_000.0) {
        assert!(Instant::now() < deadline, "no events flowing");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("freshet run exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let read_at_kill = metrics(port).map_or(0.0, |m| get(&m, "freshet_pipeline_events_total"));
    broker.kill().expect("SIGKILL the broker");
    let _ = broker.wait();
    eprintln!("killed the broker after {read_at_kill} events read");
    // freshet waits (it neither exits nor reads on) while the broker is away
    degraded_while_the_broker_is_down(&mut child, port, Duration::from_secs(2));
    broker = spawn_tansu(&tansu, &broker_dir, kafka_port);
    produce(&second);
    let head = wait_caught_up(&mut child, port);
    assert_eq!(
        health(port),
        Some(200),
        "healthy again once the broker is back"
    );
    let http = sample_http(port, &["c0000000", "c0000001", "c0000017", "c0000300"]);
    terminate(child);
    check_outputs(&w, &brokers, &pipeline, &n, head, tag, &http);
    let _ = broker.kill();
    let _ = broker.wait();
}

#[test]
fn kafka_to_redis_converges_with_and_without_a_crash() {
    let Some((brokers, redis)) = services() else {
        return;
    };
    let w = workload();
    let mut dumps = Vec::new();
    // one topic for both runs; each run has its own changelog, dead-letter topic and group
    let shared_topic = unique("txn");
    for (tag, crash) in [("plain", false), ("crash", true)] {
        let mut n = names(tag);
        n.topic = shared_topic.clone();
        let topics_dir = create_topics(&w, &brokers, tag, &n);
        if tag == "plain" {
            run_ok(&[
                "produce",
                "--brokers",
                &brokers,
                "--topic",
                &n.topic,
                "--key-field",
                "card_id",
                &w.file.display().to_string(),
            ]);
        }
        let port = free_port();
        let group = unique(tag);
        let pipeline = pipeline(w.dir.path(), &brokers, &redis, &n, &group, port);
        let state = w.dir.path().join(format!("state-{tag}"));
        let mut child = start(&pipeline, &state, &n, &topics_dir);
        if crash {
            // SIGKILL somewhere between a tenth and nine tenths of the input ...
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            // FRESHET_TEST_KILL_AT=N reproduces a run killed at a given point
            let at = std::env::var("FRESHET_TEST_KILL_AT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(EVENTS / 10 + (nanos as usize) % (EVENTS * 8 / 10));
            // ... and after a checkpoint that holds offsets: the first one completed after events
            // were seen (sources read only between checkpoints, and the count of checkpoints
            // grows before they read on, so that one was cut after some events were read).
            // Reading is fast enough that a kill point alone often comes before any such
            // checkpoint, and the restart would then read from the beginning.
            let deadline = Instant::now() + CATCH_UP;
            let (mut seen_events, mut flowing_at): (bool, Option<f64>) = (false, None);
            let (events, checkpoints) = loop {
                assert!(Instant::now() < deadline, "never reached {at} events");
                if let Some(m) = metrics(port) {
                    let events = get(&m, "freshet_pipeline_events_total");
                    let checkpoints = get(&m, "freshet_checkpoints_total");
                    // the count from the scrape after the one that saw events: a scrape reads
                    // the checkpoint count before the event count
                    if flowing_at.is_none() {
                        if seen_events {
                            flowing_at = Some(checkpoints);
                        }
                        seen_events = events > 0.0;
                    }
                    if events as usize >= at && flowing_at.is_some_and(|c| checkpoints >= c + 1.0) {
                        break (events, checkpoints);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            eprintln!(
                "killed freshet run after {events}+ events (kill point {at}) and {checkpoints} \
                 checkpoints; restarting"
            );
            child = start(&pipeline, &state, &n, &topics_dir);
        }
        let head = wait_caught_up(&mut child, port);
        if crash {
            // the restart read on from the checkpoint's offsets, not from the beginning
            let read = metrics(port).map_or(0.0, |m| get(&m, "freshet_pipeline_events_total"));
            eprintln!("the restarted run read {read} events");
            assert!(
                (read as usize) < EVENTS,
                "the restarted run read {read} events: it restored no offsets"
            );
        }
        let http = sample_http(port, &["c0000000", "c0000001", "c0000017", "c0000300"]);
        terminate(child);
        let dump = check_outputs(&w, &brokers, &pipeline, &n, head, tag, &http);
        dumps.push((head, dump));
    }
    if dumps[0].0 == dumps[1].0 {
        let sort = |s: &str| {
            let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
            v.sort();
            v
        };
        assert_eq!(
            sort(&dumps[0].1),
            sort(&dumps[1].1),
            "identical store contents"
        );
    }
}
