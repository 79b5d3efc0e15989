//! The reader against librdkafka's in-process mock cluster: no broker needed.

use std::sync::Mutex;
use std::time::Instant;

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::*;

#[derive(Default)]
struct Letters(Mutex<Vec<DeadLetter>>);

impl DeadLetterSink for Letters {
    fn write(&self, letter: DeadLetter) {
        if let Ok(mut letters) = self.0.lock() {
            letters.push(letter);
        }
    }
}

/// Reads until `want` records (plus dead letters) arrived or 10 s passed.
fn read_n(
    reader: &mut KafkaPartitionReader,
    letters: &Letters,
    want: usize,
) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() + letters.0.lock().map_or(0, |l| l.len()) < want && Instant::now() < deadline {
        let state = reader
            .read(16, &mut |offset, bytes| got.push((offset, bytes.to_vec())))
            .expect("read");
        if state == ReadState::Idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    got
}

#[test]
fn reads_one_partition_in_order_dead_letters_null_payloads_and_resumes_from_commit() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("events", 2, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    for i in 0..10 {
        let payload = format!("{{\"n\":{i}}}");
        producer
            .send(
                BaseRecord::<(), _>::to("events")
                    .partition(i % 2)
                    .payload(&payload),
            )
            .expect("send");
    }
    producer
        .send(BaseRecord::<(), ()>::to("events").partition(0))
        .expect("send tombstone");
    producer.flush(Duration::from_secs(10)).expect("flush");

    let letters = Arc::new(Letters::default());
    let stop = StopFlag::default();
    let mut reader = KafkaPartitionReader::open(
        &brokers,
        "g1",
        "src",
        "events",
        0,
        letters.clone(),
        stop.clone(),
    )
    .expect("reader");
    let got = read_n(&mut reader, &letters, 6);
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    let payloads: Vec<&[u8]> = got.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(payloads[1], br#"{"n":2}"#);
    {
        let letters = letters.0.lock().expect("letters");
        assert_eq!(letters.len(), 1);
        assert_eq!((letters[0].partition, letters[0].offset), (0, 5));
        assert!(letters[0].reason.to_string().contains("no payload"));
    }

    reader.commit(3).expect("commit");
    drop(reader);
    letters.0.lock().expect("letters").clear();
    let mut again = KafkaPartitionReader::open(
        &brokers,
        "g1",
        "src",
        "events",
        0,
        letters.clone(),
        stop.clone(),
    )
    .expect("reader");
    let got = read_n(&mut again, &letters, 3);
    assert_eq!(
        got.first().map(|(o, _)| *o),
        Some(3),
        "resumes at the committed offset"
    );

    stop.store(true, Ordering::Relaxed);
    let state = again.read(16, &mut |_, _| {}).expect("read");
    assert_eq!(state, ReadState::End);
}
