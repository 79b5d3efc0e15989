//! Tests against a real Redis: `FRESHET_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`),
//! started by `scripts/test.sh`. Each test uses a fresh random key prefix, so tests never collide
//! with each other or with data already there. Unreachable Redis fails the test when `CI=true`
//! and skips it (with a note) otherwise. The restart and cluster tests start their own
//! `redis-server` and run only where one is on PATH (always in CI: test.sh installs it).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use freshet_core::store::{FeatureValue, FeatureVector, OnlineStore, StoreError, StoreWrite};

use super::*;

const DEFAULT_TEST_URL: &str = "redis://127.0.0.1:6379/0";
/// Short timeouts so the restart test sees a dead server quickly.
const TEST_TIMEOUT: Duration = Duration::from_secs(2);
const SERVER_START_WAIT: Duration = Duration::from_secs(15);

fn test_url() -> String {
    std::env::var("FRESHET_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A name no other test run uses: process id, clock and a per-call random value.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let random = RandomState::new().hash_one(nanos);
    format!("freshet-test-{tag}-{}-{random:016x}", std::process::id())
}

/// A store on the test Redis under a fresh key prefix; `None` (with a note) when Redis is not
/// reachable outside CI.
fn test_store(tag: &str) -> Option<RedisStore> {
    let url = test_url();
    let config = RedisConfig::from_url(&url)
        .expect("FRESHET_TEST_REDIS_URL parses")
        .with_key_prefix(unique(tag))
        .with_timeouts(TEST_TIMEOUT, TEST_TIMEOUT);
    match RedisStore::open(config) {
        Ok(store) => Some(store),
        Err(e) if in_ci() => panic!("redis at {url} is unreachable in CI: {e}"),
        Err(e) => {
            eprintln!(
                "note: skipping, redis at {url} is unreachable ({e}); run under scripts/test.sh"
            );
            None
        }
    }
}

/// A second store on the same prefix, as another process would open it.
fn reopen(store: &RedisStore) -> RedisStore {
    RedisStore::open(store.config().clone()).expect("reopen")
}

fn schema(name: &str, features: &[&str], ttl_ms: Option<u64>) -> ViewSchema {
    ViewSchema {
        name: name.to_owned(),
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        ttl_ms,
    }
}

fn card_schema() -> ViewSchema {
    schema("card", &["count", "mean"], None)
}

fn vector(as_of_ms: u64, count: i64) -> FeatureVector {
    FeatureVector {
        as_of_ms,
        values: vec![
            FeatureValue::Int(count),
            FeatureValue::Float(count as f64 / 2.0),
        ],
    }
}

fn upsert(entity: &str, as_of_ms: u64, count: i64) -> StoreWrite {
    StoreWrite::Upsert {
        entity: entity.to_owned(),
        vector: vector(as_of_ms, count),
    }
}

fn delete(entity: &str) -> StoreWrite {
    StoreWrite::Delete {
        entity: entity.to_owned(),
    }
}

/// A raw connection to the store's server, for checks the trait does not expose (PTTL).
fn raw_connection(store: &RedisStore) -> redis::Connection {
    let Topology::Standalone(url) = &store.config().topology else {
        panic!("raw connections are for standalone tests");
    };
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(TEST_TIMEOUT))
        .expect("raw connection")
}

#[test]
fn every_feature_value_kind_round_trips() {
    let Some(store) = test_store("kinds") else {
        return;
    };
    let features = [
        "null", "int_min", "int_max", "float", "neg_zero", "inf", "tiny", "yes", "no", "str",
        "empty", "tricky",
    ];
    store
        .register_view(schema("kinds", &features, None))
        .expect("register");
    let written = FeatureVector {
        as_of_ms: u64::MAX,
        values: vec![
            FeatureValue::Null,
            FeatureValue::Int(i64::MIN),
            FeatureValue::Int(i64::MAX),
            FeatureValue::Float(0.1),
            FeatureValue::Float(-0.0),
            FeatureValue::Float(f64::NEG_INFINITY),
            FeatureValue::Float(f64::MIN_POSITIVE),
            FeatureValue::Bool(true),
            FeatureValue::Bool(false),
            FeatureValue::Str(Arc::from("n")),
            FeatureValue::Str(Arc::from("")),
            FeatureValue::Str(Arc::from("i42 {card}:v1:* \n é")),
        ],
    };
    store
        .write_batch(
            "kinds",
            vec![StoreWrite::Upsert {
                entity: "e:1 {x}*".to_owned(),
                vector: written.clone(),
            }],
        )
        .expect("write");
    let read = store
        .get("kinds", "e:1 {x}*")
        .expect("get")
        .expect("present");
    assert_eq!(read, written);
    // -0.0 == 0.0 under PartialEq, so check the sign survived too.
    assert!(matches!(read.values[4], FeatureValue::Float(f) if f.is_sign_negative()));
    assert_eq!(
        store.scan("kinds").expect("scan"),
        vec![("e:1 {x}*".to_owned(), written)]
    );
}

#[test]
fn upsert_replaces_the_previous_vector() {
    let Some(store) = test_store("upsert") else {
        return;
    };
    store.register_view(card_schema()).expect("register");
    store
        .write_batch("card", vec![upsert("c1", 10, 1), upsert("c1", 20, 2)])
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(20, 2)));
    store
        .write_batch("card", vec![upsert("c1", 30, 3)])
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(30, 3)));
    assert_eq!(store.len("card").expect("len"), 1);
}

#[test]
fn delete_removes_and_writes_apply_in_batch_order() {
    let Some(store) = test_store("delete") else {
        return;
    };
    store.register_view(card_schema()).expect("register");
    store
        .write_batch("card", vec![upsert("a", 1, 1), upsert("b", 1, 1)])
        .expect("write");
    store
        .write_batch(
            "card",
            vec![
                delete("a"),
                upsert("c", 2, 2),
                delete("c"),
                delete("d"),
                upsert("d", 3, 3),
                delete("never-written"),
            ],
        )
        .expect("write");
    assert_eq!(store.get("card", "a").expect("get"), None);
    assert_eq!(store.get("card", "b").expect("get"), Some(vector(1, 1)));
    assert_eq!(store.get("card", "c").expect("get"), None);
    assert_eq!(store.get("card", "d").expect("get"), Some(vector(3, 3)));
    assert_eq!(store.len("card").expect("len"), 2);
}

#[test]
fn get_many_answers_in_the_order_asked_with_missing_entities() {
    let Some(store) = test_store("many") else {
        return;
    };
    store.register_view(card_schema()).expect("register");
    store
        .write_batch("card", vec![upsert("x", 1, 1), upsert("y", 2, 2)])
        .expect("write");
    let found = store
        .get_many("card", &["y", "missing", "x", "y"])
        .expect("get_many");
    assert_eq!(
        found,
        vec![
            Some(vector(2, 2)),
            None,
            Some(vector(1, 1)),
            Some(vector(2, 2))
        ]
    );
    assert!(store.get_many("card", &[]).expect("empty").is_empty());
}

#[test]
fn ttl_sets_a_redis_expiry_on_each_written_key() {
    let Some(store) = test_store("ttl") else {
        return;
    };
    let ttl_ms = 60_000;
    store
        .register_view(schema("card", &["count", "mean"], Some(ttl_ms)))
        .expect("register");
    store
        .register_view(schema("forever", &["count", "mean"], None))
        .expect("register");
    store
        .write_batch("card", vec![upsert("c1", 1, 1)])
        .expect("write");
    store
        .write_batch("forever", vec![upsert("c1", 1, 1)])
        .expect("write");
    let mut raw = raw_connection(&store);
    let pttl = |raw: &mut redis::Connection, key: String| -> i64 {
        redis::cmd("PTTL").arg(key).query(raw).expect("pttl")
    };
    let expiry = pttl(&mut raw, format!("{}c1", store.entity_prefix("card")));
    assert!(expiry > 0 && expiry <= ttl_ms as i64, "pttl {expiry}");
    assert_eq!(
        pttl(&mut raw, format!("{}c1", store.entity_prefix("forever"))),
        -1
    );

    // A rewrite resets the expiry; Redis drops the key once it passes.
    store
        .register_view(schema("short", &["count", "mean"], Some(50)))
        .expect("register");
    store
        .write_batch("short", vec![upsert("c1", 1, 1)])
        .expect("write");
    assert!(store.get("short", "c1").expect("get").is_some());
    thread::sleep(Duration::from_millis(200));
    assert_eq!(store.get("short", "c1").expect("get"), None);
    assert_eq!(store.len("short").expect("len"), 0);
}

#[test]
fn scan_is_sorted_by_entity_and_len_counts_only_the_view() {
    let Some(store) = test_store("scan") else {
        return;
    };
    store.register_view(card_schema()).expect("register");
    // `card2` starts with `card`: its keys must not show up in `card`'s SCAN.
    store
        .register_view(schema("card2", &["count", "mean"], None))
        .expect("register");
    store
        .write_batch("card", vec![upsert("b", 1, 1), upsert("c", 1, 3)])
        .expect("write");
    store
        .write_batch("card", vec![upsert("a", 1, 2), upsert("a:1", 1, 4)])
        .expect("write");
    store
        .write_batch("card2", vec![upsert("zz", 1, 9)])
        .expect("write");
    let many: Vec<StoreWrite> = (0..2500)
        .map(|i| upsert(&format!("bulk{i:05}"), 1, i))
        .collect();
    store.write_batch("card2", many).expect("bulk write");
    assert_eq!(
        store.scan("card").expect("scan"),
        vec![
            ("a".to_owned(), vector(1, 2)),
            ("a:1".to_owned(), vector(1, 4)),
            ("b".to_owned(), vector(1, 1)),
            ("c".to_owned(), vector(1, 3)),
        ]
    );
    assert_eq!(store.len("card").expect("len"), 4);
    assert_eq!(store.len("card2").expect("len"), 2501);
    let scanned = store.scan("card2").expect("scan");
    assert_eq!(scanned.len(), 2501);
    assert!(scanned.windows(2).all(|w| w[0].0 < w[1].0));
    store
        .write_batch("card", vec![delete("b")])
        .expect("delete");
    assert_eq!(store.len("card").expect("len"), 3);
}

#[test]
fn schemas_live_in_redis_and_a_different_one_is_refused() {
    let Some(store) = test_store("schema") else {
        return;
    };
    store.register_view(card_schema()).expect("register");
    store
        .register_view(card_schema())
        .expect("same schema again");
    let mut other = card_schema();
    other.features.push("extra".to_owned());
    let err = store
        .register_view(other.clone())
        .expect_err("different schema");
    assert!(matches!(err, StoreError::Fatal(_)), "{err}");

    // Another process sees the view and is refused a different schema by Redis, not a cache.
    let second = reopen(&store);
    assert_eq!(second.view("card"), Some(card_schema()));
    let err = second.register_view(other).expect_err("different schema");
    assert!(matches!(err, StoreError::Fatal(_)), "{err}");
    let mut ttl_changed = card_schema();
    ttl_changed.ttl_ms = Some(1);
    assert!(matches!(
        reopen(&store).register_view(ttl_changed),
        Err(StoreError::Fatal(_))
    ));
    second.register_view(card_schema()).expect("same schema");
    second
        .register_view(schema("merchant", &["n"], Some(5)))
        .expect("register");
    assert_eq!(
        store.views(),
        vec!["card".to_owned(), "merchant".to_owned()]
    );
    assert_eq!(
        store.view("merchant"),
        Some(schema("merchant", &["n"], Some(5)))
    );

    // Data written by one process is read by the other.
    second
        .write_batch("card", vec![upsert("c1", 5, 5)])
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(5, 5)));
}

#[test]
fn unknown_views_bad_vectors_and_bad_names_are_refused() {
    let Some(store) = test_store("refuse") else {
        return;
    };
    assert!(matches!(
        store.get("nope", "e"),
        Err(StoreError::UnknownView(_))
    ));
    assert!(matches!(
        store.write_batch("nope", vec![upsert("e", 1, 1)]),
        Err(StoreError::UnknownView(_))
    ));
    assert!(matches!(store.len("nope"), Err(StoreError::UnknownView(_))));
    assert_eq!(store.view("nope"), None);
    store.register_view(card_schema()).expect("register");
    let short = StoreWrite::Upsert {
        entity: "e".to_owned(),
        vector: FeatureVector {
            as_of_ms: 1,
            values: vec![FeatureValue::Null],
        },
    };
    let err = store
        .write_batch("card", vec![upsert("ok", 1, 1), short])
        .expect_err("wrong length");
    assert!(matches!(err, StoreError::Fatal(_)), "{err}");
    assert_eq!(
        store.get("card", "ok").expect("get"),
        None,
        "nothing of the batch applied"
    );
    for bad in [
        schema("a{b}", &["x"], None),
        schema("", &["x"], None),
        schema("v", &["__as_of"], None),
        schema("v", &["x", "x"], None),
    ] {
        assert!(matches!(
            store.register_view(bad),
            Err(StoreError::Fatal(_))
        ));
    }
}

#[test]
fn value_encoding_is_unambiguous() {
    let values = [
        FeatureValue::Null,
        FeatureValue::Int(-7),
        FeatureValue::Float(1e300),
        FeatureValue::Float(f64::INFINITY),
        FeatureValue::Bool(true),
        FeatureValue::Str(Arc::from("i-7")),
        FeatureValue::Str(Arc::from("n")),
    ];
    for value in values {
        let encoded = encode_value(&value);
        assert_eq!(decode_value(&encoded), Some(value.clone()), "{encoded:?}");
    }
    let nan = decode_value(&encode_value(&FeatureValue::Float(f64::NAN)));
    assert!(matches!(nan, Some(FeatureValue::Float(f)) if f.is_nan()));
    for corrupt in ["", "x1", "b2", "i1.5", "nx", "f"] {
        assert_eq!(decode_value(corrupt), None, "{corrupt:?}");
    }
    let schema = schema("v", &["a", "b"], Some(3));
    assert_eq!(
        decode_schema("v", &encode_schema(&schema)).expect("decode"),
        schema
    );
}

/// A `redis-server` this test owns on a free port; killed on drop.
struct OwnServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl OwnServer {
    /// Starts one, or returns `None` (with a note) when `redis-server` is not on PATH.
    fn start(extra: &[&str]) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("note: skipping, redis-server is not on PATH");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = spawn_server(port, dir.path(), extra);
        let server = Self {
            child,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        wait_until_up(port);
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        // Already exited is fine: either way it is gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn_server(self.port, self.dir.path(), &extra);
        wait_until_up(self.port);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_server(port: u16, dir: &Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

fn wait_until_up(port: u16) {
    let url = format!("redis://127.0.0.1:{port}/0");
    let deadline = Instant::now() + SERVER_START_WAIT;
    loop {
        let pong = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        // A refusal (NOAUTH from a server with a password) also means it is up.
        if pong.is_ok() || pong.is_err_and(|e| !e.is_io_error()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_redis_restart_is_retryable_and_writes_resume() {
    let Some(mut server) = OwnServer::start(&[]) else {
        return;
    };
    let config = RedisConfig::from_url(&server.url())
        .expect("url")
        .with_key_prefix(unique("restart"))
        .with_timeouts(TEST_TIMEOUT, TEST_TIMEOUT);
    let store = RedisStore::open(config).expect("open");
    store.register_view(card_schema()).expect("register");
    store
        .write_batch("card", vec![upsert("c1", 1, 1)])
        .expect("write");

    server.kill();
    let err = store
        .write_batch("card", vec![upsert("c1", 2, 2)])
        .expect_err("server is down");
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(
        store.get("card", "c1"),
        Err(StoreError::Unavailable(_))
    ));

    // The server comes back empty (no persistence): the caller's retry of the same batch lands,
    // through a fresh connection, and later batches follow in order.
    server.restart();
    store
        .write_batch("card", vec![upsert("c1", 2, 2)])
        .expect("retry after restart");
    store
        .write_batch("card", vec![upsert("c1", 3, 3), upsert("c2", 3, 3)])
        .expect("next batch");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(3, 3)));
    assert_eq!(store.len("card").expect("len"), 2);
}

#[test]
fn a_one_node_cluster_serves_the_whole_contract() {
    let Some(server) = OwnServer::start(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]) else {
        return;
    };
    // One master owning every slot; `redis-cli --cluster create` wants three masters.
    let mut admin = redis::Client::open(server.url().as_str())
        .and_then(|c| c.get_connection_with_timeout(TEST_TIMEOUT))
        .expect("admin connection");
    redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .exec(&mut admin)
        .expect("add slots");
    let deadline = Instant::now() + SERVER_START_WAIT;
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut admin)
            .expect("info");
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not become ok: {info}"
        );
        thread::sleep(Duration::from_millis(50));
    }

    let url = format!("redis+cluster://127.0.0.1:{}", server.port);
    let config = RedisConfig::from_url(&url)
        .expect("cluster url")
        .with_key_prefix(unique("cluster"))
        .with_timeouts(TEST_TIMEOUT, TEST_TIMEOUT);
    assert!(config.is_cluster());
    let store = RedisStore::open(config).expect("open cluster");
    store
        .register_view(schema("card", &["count", "mean"], Some(60_000)))
        .expect("register");
    store
        .write_batch(
            "card",
            vec![
                upsert("b", 1, 1),
                upsert("a", 2, 2),
                upsert("c", 3, 3),
                delete("c"),
            ],
        )
        .expect("write");
    assert_eq!(
        store.get_many("card", &["a", "c", "b"]).expect("get_many"),
        vec![Some(vector(2, 2)), None, Some(vector(1, 1))]
    );
    assert_eq!(
        store.scan("card").expect("scan"),
        vec![
            ("a".to_owned(), vector(2, 2)),
            ("b".to_owned(), vector(1, 1))
        ]
    );
    assert_eq!(store.len("card").expect("len"), 2);
    assert_eq!(store.views(), vec!["card".to_owned()]);
    let mut other = schema("card", &["count"], None);
    other.ttl_ms = None;
    assert!(matches!(
        store.register_view(other),
        Err(StoreError::Fatal(_))
    ));
}

#[test]
fn auth_through_the_url_and_a_wrong_password_is_fatal_and_unprinted() {
    let Some(server) = OwnServer::start(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/1", server.port);
    let config = RedisConfig::from_url(&url)
        .expect("url")
        .with_key_prefix(unique("auth"))
        .with_timeouts(TEST_TIMEOUT, TEST_TIMEOUT);
    let store = RedisStore::open(config).expect("open with the password");
    assert!(!format!("{store:?}").contains("s3cret-pw"));
    store.register_view(card_schema()).expect("register");
    store
        .write_batch("card", vec![upsert("c1", 1, 1)])
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(1, 1)));

    let wrong = format!("redis://:not-it@127.0.0.1:{}/1", server.port);
    let err = RedisStore::open(RedisConfig::from_url(&wrong).expect("url")).expect_err("wrong pw");
    assert!(!err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("not-it"), "{err}");
}
