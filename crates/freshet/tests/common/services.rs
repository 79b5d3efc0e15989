//! The services of the tests that talk to Kafka and Redis (started by `scripts/test.sh`, which
//! exports their addresses), the durable broker that the broker-restart tests start themselves
//! (`FRESHET_TEST_TANSU_BIN`), unique names, free ports and `freshet` runs that must succeed.
//! Outside CI a missing service skips a test; under `CI=true` it fails it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet_kafka::client::consumer_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::freshet;

/// Whether the tests run under CI (`CI=true`), where a missing service is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The broker address (`FRESHET_TEST_KAFKA_BROKERS`), or `None` (skip) when it does not answer
/// outside CI.
pub fn brokers() -> Option<String> {
    let brokers =
        std::env::var("FRESHET_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if freshet_kafka::TopicAdmin::connect(&brokers, Duration::from_secs(5)).is_ok() {
        return Some(brokers);
    }
    assert!(!ci(), "CI=true but Kafka ({brokers}) is missing");
    eprintln!("skipped: needs Kafka; run through scripts/test.sh");
    None
}

/// The broker and Redis addresses, or `None` (skip) when either is missing outside CI.
pub fn services() -> Option<(String, String)> {
    let brokers =
        std::env::var("FRESHET_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let redis = std::env::var("FRESHET_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let kafka_up = freshet_kafka::TopicAdmin::connect(&brokers, Duration::from_secs(5)).is_ok();
    let redis_up = redis::Client::open(redis.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .is_ok();
    match (kafka_up, redis_up) {
        (true, true) => Some((brokers, redis)),
        _ if ci() => panic!(
            "CI=true but Kafka ({brokers}: {kafka_up}) or Redis ({redis}: {redis_up}) is missing"
        ),
        _ => {
            eprintln!("skipped: needs Kafka and Redis; run through scripts/test.sh");
            None
        }
    }
}

/// The durable broker binary (tansu built with sqlite storage) that `scripts/test.sh` exports as
/// `FRESHET_TEST_TANSU_BIN`, or `None` (skip) outside CI.
pub fn durable_tansu() -> Option<PathBuf> {
    let bin = std::env::var_os("FRESHET_TEST_TANSU_BIN").map(PathBuf::from);
    match bin {
        Some(path) if path.is_file() => Some(path),
        other if ci() => panic!(
            "CI=true but FRESHET_TEST_TANSU_BIN ({other:?}) names no durable tansu binary \
             (scripts/test.sh installs one)"
        ),
        _ => {
            eprintln!("skipped: needs a durable tansu in FRESHET_TEST_TANSU_BIN; run through scripts/test.sh");
            None
        }
    }
}

/// Starts `bin` as a broker on `127.0.0.1:port` that keeps its log in `dir/tansu.db` (sqlite), so
/// that a restart on the same directory serves every record acknowledged before; waits until it
/// answers metadata requests.
pub fn spawn_tansu(bin: &Path, dir: &Path, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .expect("tansu log");
    let mut child = Command::new(bin)
        // tansu resolves `sqlite://NAME` against its working directory
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tansu starts");
    let brokers = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while freshet_kafka::TopicAdmin::connect(&brokers, Duration::from_secs(1)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "tansu exited during start-up ({status}); log: {}",
                dir.join("tansu.log").display()
            );
        }
        assert!(Instant::now() < deadline, "tansu not ready on {brokers}");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// `prefix` made unique to this process and moment (topic names, key prefixes).
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `freshet ARGS`, requires success, and returns its standard output.
pub fn run_ok(args: &[&str]) -> String {
    let out = freshet(args);
    assert!(
        out.status.success(),
        "freshet {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends SIGTERM to a running `freshet` and requires a clean exit within 60 s.
pub fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "freshet run exited with {status} after SIGTERM"
            );
            return;
        }
        assert!(Instant::now() < deadline, "no exit within 60 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One message read back: key, payload, headers.
pub type TopicMessage = (Option<String>, Vec<u8>, BTreeMap<String, String>);

/// A consumer of every partition of `topic` from its beginning, and the partition count.
pub fn reader_from_beginning(brokers: &str, topic: &str) -> (BaseConsumer, i32) {
    let consumer: BaseConsumer = consumer_config(brokers, &unique("reader"))
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    (consumer, partitions)
}

/// `m` as key, payload and headers (text, lossily).
pub fn topic_message(m: &BorrowedMessage<'_>) -> TopicMessage {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (
        m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        m.payload().unwrap_or_default().to_vec(),
        headers,
    )
}

/// The status of a `freshet` HTTP API's `/healthz` (200 ok, 503 degraded), or `None` when it
/// does not answer.
pub fn health(port: u16) -> Option<u16> {
    match ureq::get(&format!("http://127.0.0.1:{port}/healthz")).call() {
        Ok(r) => Some(r.status().as_u16()),
        Err(ureq::Error::StatusCode(code)) => Some(code),
        Err(_) => None,
    }
}

/// Checks a `freshet run` on `port` through a broker outage that has just begun: `/healthz` turns
/// 503 within 20 s, and `hold` later the process is still running and still degraded (it waits
/// for the broker instead of exiting or going on).
pub fn degraded_while_the_broker_is_down(child: &mut Child, port: u16, hold: Duration) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut degraded = false;
    while !degraded && Instant::now() < deadline {
        degraded = health(port) == Some(503);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        degraded,
        "/healthz never reported degraded while the broker was down"
    );
    std::thread::sleep(hold);
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "freshet run exited while the broker was down"
    );
    assert_eq!(health(port), Some(503), "still degraded while down");
}

/// The samples of a `freshet` HTTP API's `/metrics` by series (name and labels), or `None` when
/// it does not answer.
pub fn metrics(port: u16) -> Option<HashMap<String, f64>> {
    let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}
