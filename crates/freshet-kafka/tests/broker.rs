//! Against a real Kafka-protocol broker: `scripts/test.sh` starts one and exports
//! `FRESHET_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`). Without a broker these tests are
//! skipped with a message, except under `CI=true`, where they fail.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet_core::event::Rejection;
use freshet_core::store::FeatureValue;
use freshet_features::source::{DeadLetter, ReadState};
use freshet_features::window::ClosedWindow;
use freshet_features::{ChangelogSink, DeadLetterSink};
use freshet_kafka::client::consumer_config;
use freshet_kafka::produce::produce_lines;
use freshet_kafka::sink::{
    HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_SOURCE, HEADER_TOPIC,
};
use freshet_kafka::topics::{load_dir, TopicFile};
use freshet_kafka::{
    dead_letter_topic, kafka_inputs, Error, InputOptions, KafkaChangelogSink, KafkaDeadLetterSink,
    KafkaProducer, StopFlag, TopicAdmin,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

fn brokers() -> String {
    std::env::var("FRESHET_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The admin client, or `None` (skip) when no broker answers outside CI.
fn admin() -> Option<TopicAdmin> {
    match TopicAdmin::connect(&brokers(), Duration::from_secs(5)) {
        Ok(admin) => Some(admin),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and no Kafka broker: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no Kafka broker ({e}); run through scripts/test.sh");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn topic_file(name: &str, partitions: u32) -> TopicFile {
    let text = format!(
        "name = \"{name}\"\npartitions = {partitions}\nreplication_factor = 1\nretention = \"1d\"\nkey_field = \"card_id\"\n"
    );
    toml::from_str(&text).expect("topic file")
}

#[derive(Default)]
struct Letters(Mutex<Vec<DeadLetter>>);

impl DeadLetterSink for Letters {
    fn write(&self, letter: DeadLetter) {
        if let Ok(mut letters) = self.0.lock() {
            letters.push(letter);
        }
    }
}

#[test]
fn topics_apply_creates_from_the_file_and_check_then_reports_no_difference() {
    let Some(admin) = admin() else { return };
    let name = unique("freshet-apply");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(format!("{name}.toml")),
        format!("name = \"{name}\"\npartitions = 3\nreplication_factor = 1\nretention = \"1d\"\n"),
    )
    .expect("write");
    let files = load_dir(dir.path()).expect("load");

    let before = admin.check(&files).expect("check");
    assert_eq!(before[0].1, vec![freshet_kafka::TopicDiff::Missing]);
    let actions = admin.apply(&files).expect("apply");
    assert_eq!(actions.len(), 1, "{actions:?}");
    let after = admin.check(&files).expect("check");
    assert!(
        after[0].1.is_empty(),
        "differences after apply: {:?}",
        after[0].1
    );
    assert!(
        admin.apply(&files).expect("apply again").is_empty(),
        "apply is idempotent"
    );

    std::fs::write(
        dir.path().join(format!("{name}.toml")),
        format!("name = \"{name}\"\npartitions = 5\nreplication_factor = 1\nretention = \"1d\"\n"),
    )
    .expect("write");
    let files = load_dir(dir.path()).expect("load");
    assert_eq!(
        admin.check(&files).expect("check")[0].1,
        vec![freshet_kafka::TopicDiff::Partitions {
            actual: 3,
            wanted: 5
        }]
    );
    match admin.apply(&files) {
        Ok(actions) => {
            assert_eq!(actions.len(), 1, "{actions:?}");
            assert!(admin.check(&files).expect("check")[0].1.is_empty());
        }
        // tansu 0.6 has no CreatePartitions; the error must say so, naming the topic.
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&name) && text.contains("UnsupportedFeature"),
                "{text}"
            );
        }
    }
    admin.delete(&[&name]).expect("delete");
}

#[test]
fn produced_keyed_events_are_read_back_once_each_in_partition_order() {
    let Some(admin) = admin() else { return };
    let topic = unique("freshet-produce");
    admin.create(&topic_file(&topic, 3)).expect("create");
    let cards = 17;
    let lines: String = (0..1000)
        .map(|i| {
            format!(
                "{{\"event_id\":{i},\"card_id\":\"c{}\",\"ts\":{}}}\n",
                i % cards,
                1000 + i
            )
        })
        .collect();
    let producer = KafkaProducer::connect(&brokers(), Duration::from_secs(5)).expect("producer");
    let stats = produce_lines(&producer, &topic, Cursor::new(lines), Some("card_id"), None)
        .expect("produce");
    assert_eq!((stats.records, stats.unkeyed), (1000, 0));
    let missing = unique("freshet-missing");
    let err = produce_lines(&producer, &missing, Cursor::new("{}\n"), None, None)
        .expect_err("no such topic");
    assert!(matches!(err, Error::NoSuchTopic { .. }), "{err}");

    let sources = BTreeMap::from([("txn".to_owned(), topic.clone())]);
    let letters = Arc::new(Letters::default());
    let inputs = kafka_inputs(
        &brokers(),
        &unique("group"),
        &sources,
        letters.clone(),
        StopFlag::default(),
        &InputOptions::default(),
    )
    .expect("inputs");
    let peers = 2;
    let mut readers = Vec::new();
    for worker in 0..peers {
        readers.extend(inputs["txn"](worker, peers).expect("readers"));
    }
    let mut ids: Vec<u32> = readers.iter().map(|(p, _)| *p).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![0, 1, 2],
        "every partition read by exactly one worker"
    );

    // (partition, offset, event_id, card)
    let mut seen: Vec<(u32, u64, u64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 1000 && Instant::now() < deadline {
        let mut idle = true;
        for (partition, reader) in &mut readers {
            let state = reader
                .read(256, &mut |offset, bytes| {
                    let v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
                    seen.push((
                        *partition,
                        offset,
                        v["event_id"].as_u64().expect("event_id"),
                        v["card_id"].as_str().expect("card").to_owned(),
                    ));
                })
                .expect("read");
            idle &= state == ReadState::Idle;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(seen.len(), 1000, "all events read within 30 s");
    let mut event_ids: Vec<u64> = seen.iter().map(|s| s.2).collect();
    event_ids.sort_unstable();
    assert_eq!(
        event_ids,
        (0..1000).collect::<Vec<u64>>(),
        "every event exactly once"
    );

    let mut card_partition: HashMap<&str, u32> = HashMap::new();
    let mut last: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut last_event_of_card: HashMap<&str, u64> = HashMap::new();
    for (partition, offset, event_id, card) in &seen {
        assert_eq!(
            *card_partition.entry(card).or_insert(*partition),
            *partition,
            "one card, one partition"
        );
        if let Some((prev_offset, _)) = last.insert(*partition, (*offset, *event_id)) {
            assert!(*offset > prev_offset, "offsets increase within a partition");
        }
        if let Some(prev) = last_event_of_card.insert(card, *event_id) {
            assert!(*event_id > prev, "a card's events keep their produce order");
        }
    }
    assert!(letters.0.lock().expect("letters").is_empty());
    admin.delete(&[&topic]).expect("delete");
}

#[test]
fn dead_letters_carry_the_original_bytes_and_the_reason_in_headers() {
    let Some(admin) = admin() else { return };
    let source_topic = unique("freshet-dl");
    let target = dead_letter_topic(&source_topic);
    admin.create(&topic_file(&target, 1)).expect("create");
    let producer =
        Arc::new(KafkaProducer::connect(&brokers(), Duration::from_secs(5)).expect("producer"));
    let sink = KafkaDeadLetterSink::new(
        producer.clone(),
        &BTreeMap::from([("txn".to_owned(), source_topic.clone())]),
        None,
    );
    sink.write(DeadLetter {
        source: "txn".to_owned(),
        partition: 2,
        offset: 41,
        reason: Rejection::Missing("card_id".to_owned()),
        record: br#"{"event_id":1}"#.to_vec(),
    });
    producer.finish(Duration::from_secs(10)).expect("delivered");

    let message = first_message(&target);
    assert_eq!(message.payload(), Some(&br#"{"event_id":1}"#[..]));
    let headers: HashMap<String, String> = message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(headers[HEADER_REASON], "missing field `card_id`");
    assert_eq!(headers[HEADER_SOURCE], "txn");
    assert_eq!(headers[HEADER_TOPIC], source_topic);
    assert_eq!(headers[HEADER_PARTITION], "2");
    assert_eq!(headers[HEADER_OFFSET], "41");
    admin.delete(&[&target]).expect("delete");
}

/// The first message of partition 0 of `topic`, read from the beginning.
fn first_message(topic: &str) -> rdkafka::message::OwnedMessage {
    let consumer: BaseConsumer = consumer_config(&brokers(), &unique("group"))
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "no message on `{topic}` within 30 s"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => return m.detach(),
            Some(Err(e)) => eprintln!("poll: {e}"),
            None => {}
        }
    }
}

#[test]
fn closed_windows_go_to_the_changelog_topic_as_json_keyed_by_entity() {
    let Some(admin) = admin() else { return };
    let topic = unique("freshet-changelog");
    admin.create(&topic_file(&topic, 1)).expect("create");
    let producer =
        Arc::new(KafkaProducer::connect(&brokers(), Duration::from_secs(5)).expect("producer"));
    KafkaChangelogSink::new(producer.clone(), topic.clone()).write(&[ClosedWindow {
        view: "card".into(),
        entity: "c7".into(),
        feature: "txn_count_5m".into(),
        window_start_ms: 0,
        window_end_ms: 300_000,
        value: FeatureValue::Int(3),
    }]);
    producer.finish(Duration::from_secs(10)).expect("delivered");
    let message = first_message(&topic);
    assert_eq!(message.key(), Some(&b"c7"[..]));
    let value: serde_json::Value =
        serde_json::from_slice(message.payload().expect("payload")).expect("json");
    assert_eq!(value["view"], "card");
    assert_eq!(value["feature"], "txn_count_5m");
    assert_eq!(value["window_end"], 300_000);
    admin.delete(&[&topic]).expect("delete");
}

#[test]
fn an_unreachable_broker_is_a_prompt_error_naming_the_address() {
    let start = Instant::now();
    let err = match KafkaProducer::connect("127.0.0.1:1", Duration::from_secs(2)) {
        Ok(_) => panic!("connected to 127.0.0.1:1"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}
