//! The services of the tests that talk to Kafka and Redis (started by `scripts/test.sh`, which
//! exports their addresses), unique names, free ports and `freshet` runs that must succeed.
//! Outside CI a missing service skips a test; under `CI=true` it fails it.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command};
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
