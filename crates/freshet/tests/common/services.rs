//! The services of the tests that talk to Kafka and Redis (started by `scripts/test.sh`, which
//! exports their addresses), unique names, free ports and `freshet` runs that must succeed.
//! Outside CI a missing service skips a test; under `CI=true` it fails it.

use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
