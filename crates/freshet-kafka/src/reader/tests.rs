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

/// A partition's log as record batches: `(base offset, record count)`, in order.
type Batches = Vec<(u64, u64)>;

/// Offsets a fetch from `from` delivers to the reader, as a broker that follows the protocol
/// answers it (the batch holding `from` and every later one) after the client dropped the
/// records below `from`.
fn kafka_fetch(log: &Batches, from: u64) -> Vec<u64> {
    log.iter()
        .flat_map(|&(base, n)| base..base + n)
        .filter(|o| *o >= from)
        .collect()
}

/// Offsets a fetch from `from` delivers as tansu 0.6.0 (dynostore storage) answers it: the
/// batches whose base offset is at least `from` (the rest of the batch holding `from` is
/// skipped), followed by a second pass from `from` plus the records returned, which repeats
/// batches when the first one was skipped into.
fn tansu_fetch(log: &Batches, from: u64) -> Vec<u64> {
    let pass = |at: u64| -> Vec<u64> {
        log.iter()
            .filter(|(base, _)| *base >= at)
            .flat_map(|&(base, n)| base..base + n)
            .collect()
    };
    let first = pass(from);
    let second = pass(from + first.len() as u64);
    first.into_iter().chain(second).collect()
}

/// Drives a gate started at `start` against `fetch` and returns the offsets it hands out and
/// how many fetches it took.
fn hand_out(log: &Batches, start: u64, fetch: fn(&Batches, u64) -> Vec<u64>) -> (Vec<u64>, usize) {
    let mut now = Instant::now();
    let (mut gate, mut from) = StartGate::at(start, now);
    let mut handed = Vec::new();
    let mut fetches = 0;
    'fetch: while fetches < 20 {
        fetches += 1;
        for offset in fetch(log, from) {
            match gate.admit(offset, now) {
                Admit::Hand => handed.push(offset),
                Admit::Before | Admit::Repeat => {}
                Admit::Refetch(again) => {
                    from = again;
                    continue 'fetch;
                }
            }
        }
        // nothing more arrives
        now += REFETCH_AFTER;
        match gate.idle(now) {
            Some(again) => from = again,
            None => break,
        }
    }
    assert!(gate.proving.is_none(), "the start was proven");
    (handed, fetches)
}

fn log_of(sizes: &[u64]) -> Batches {
    let mut base = 0;
    sizes
        .iter()
        .map(|&n| {
            let batch = (base, n);
            base += n;
            batch
        })
        .collect()
}

#[test]
fn a_reader_started_inside_a_batch_hands_out_every_record_from_its_start_once() {
    let logs = [
        log_of(&[1, 1, 1, 1, 1, 1]),
        log_of(&[500, 700, 300, 2000, 50]),
        log_of(&[5000, 20_000, 3000]),
        log_of(&[7500]),
    ];
    for log in &logs {
        let end = log.last().map_or(0, |(b, n)| b + n);
        let mut starts = vec![0, 1, end - 1, end];
        starts.extend(
            log.iter()
                .flat_map(|&(b, n)| [b, b + 1, b + n / 2, b + n - 1]),
        );
        for start in starts.into_iter().filter(|s| *s <= end) {
            let want: Vec<u64> = (start..end).collect();
            let (handed, fetches) = hand_out(log, start, kafka_fetch);
            assert_eq!(handed, want, "kafka, start {start}, log {log:?}");
            assert_eq!(
                fetches, 1,
                "a broker that follows the protocol is trusted at once"
            );
            let (handed, _) = hand_out(log, start, tansu_fetch);
            assert_eq!(handed, want, "tansu, start {start}, log {log:?}");
        }
    }
}

#[test]
fn a_real_gap_after_the_start_is_accepted_once_read_from_the_beginning() {
    // offsets 10..20 are gone (compaction): a fetch from 12 answers from 20 on
    let log: Batches = vec![(0, 10), (20, 10)];
    let (handed, fetches) = hand_out(&log, 12, kafka_fetch);
    assert_eq!(handed, (20..30).collect::<Vec<_>>());
    assert!(fetches > 1, "the gap made it look further back");
}

#[test]
fn a_reader_restored_inside_a_batch_starts_exactly_at_its_offset() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("batched", 1, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    // one batch of 50 records: everything is sent before the first linger expires
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "500")
        .create()
        .expect("producer");
    for i in 0..50 {
        let payload = format!("{{\"n\":{i}}}");
        producer
            .send(
                BaseRecord::<(), _>::to("batched")
                    .partition(0)
                    .payload(&payload),
            )
            .expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    for start in [0u64, 1, 20, 49] {
        let letters = Arc::new(Letters::default());
        let target = Target {
            topic: "batched",
            partition: 0,
            source: "src",
        };
        let mut reader = KafkaPartitionReader::open_at(
            &brokers,
            "g-batched",
            &target,
            StartAt::Offset(start),
            letters.clone(),
            StopFlag::default(),
        )
        .expect("reader");
        assert_eq!(
            reader.position(),
            Some(start),
            "the position before reading"
        );
        let want = usize::try_from(50 - start).expect("small");
        let got = read_n(&mut reader, &letters, want);
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (start..50).collect::<Vec<_>>(), "start {start}");
        assert_eq!(
            got.first().map(|(_, b)| b.clone()),
            Some(format!("{{\"n\":{start}}}").into_bytes())
        );
        assert_eq!(reader.position(), Some(50));
    }
}

#[test]
fn records_before_the_start_and_repeats_are_dropped() {
    let now = Instant::now();
    let (mut gate, from) = StartGate::at(100, now);
    assert_eq!(from, 99, "fetches from the record before the start");
    assert_eq!(gate.admit(95, now), Admit::Before, "proves the start");
    assert!(gate.proving.is_none());
    assert_eq!(gate.admit(99, now), Admit::Before);
    assert_eq!(gate.admit(100, now), Admit::Hand);
    assert_eq!(gate.admit(101, now), Admit::Hand);
    assert_eq!(gate.admit(100, now), Admit::Repeat);
    assert_eq!(gate.admit(101, now), Admit::Repeat);
    assert_eq!(
        gate.admit(105, now),
        Admit::Hand,
        "a gap past the proof is the log's"
    );
    assert_eq!(gate.next(), Some(106));
    // unproven: a first record past the start looks further back, nothing for a while too
    let (mut gate, _) = StartGate::at(5000, now);
    assert_eq!(gate.admit(5000, now), Admit::Refetch(5000 - 1024));
    assert_eq!(gate.idle(now), None, "not before REFETCH_AFTER");
    assert_eq!(
        gate.idle(now + REFETCH_AFTER),
        Some(0),
        "16 times further, down to 0"
    );
    assert_eq!(
        gate.admit(7000, now),
        Admit::Hand,
        "read from the beginning: a real gap"
    );
}
