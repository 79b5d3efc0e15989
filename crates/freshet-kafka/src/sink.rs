//! Producers: a shared [`KafkaProducer`], and the dead-letter and changelog sinks built on it.
//!
//! A send waits only while librdkafka's local queue is full: it polls for deliveries and retries,
//! for up to [`QUEUE_FULL_WAIT`]. Any other send error, and every failed delivery, is logged and
//! kept, and [`KafkaProducer::finish`] reports it (the sinks' `write` cannot return an error). Dead letters keep the
//! original bytes as payload and carry the reason and origin in headers (see
//! [`HEADER_REASON`] and the others).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet_core::store::FeatureValue;
use freshet_features::source::DeadLetter;
use freshet_features::window::ClosedWindow;
use freshet_features::{ChangelogSink, DeadLetterSink};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;

use crate::client::{
    fetch_metadata, is_transient_code, partition_count, producer_config, Error, CONNECT_TIMEOUT,
};

/// How long a send waits for room in a full local queue before it is reported as failed.
pub const QUEUE_FULL_WAIT: Duration = Duration::from_secs(30);
/// Suffix of the default dead-letter topic of a source topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dead_letter";
/// Dead-letter header: why the record was not processed.
pub const HEADER_REASON: &str = "freshet.reason";
/// Dead-letter header: the pipeline source the record came from.
pub const HEADER_SOURCE: &str = "freshet.source";
/// Dead-letter header: the topic the record came from.
pub const HEADER_TOPIC: &str = "freshet.topic";
/// Dead-letter header: its partition, decimal.
pub const HEADER_PARTITION: &str = "freshet.partition";
/// Dead-letter header: its offset, decimal.
pub const HEADER_OFFSET: &str = "freshet.offset";

/// The default dead-letter topic of `source_topic`: `<source_topic>.dead_letter`.
pub fn dead_letter_topic(source_topic: &str) -> String {
    format!("{source_topic}{DEAD_LETTER_SUFFIX}")
}

/// Counts deliveries and keeps the first failure; tracks the messages of each send epoch that
/// are still waiting for their delivery report (see [`KafkaProducer::advance_epoch`]).
#[derive(Default)]
pub struct DeliveryTracker {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// The epoch new messages are sent in.
    epoch: AtomicU64,
    /// Per epoch: messages queued whose delivery was not reported yet (no zero entries).
    outstanding: Mutex<BTreeMap<u64, u64>>,
}

impl DeliveryTracker {
    fn queued(&self, epoch: u64) {
        if let Ok(mut o) = self.outstanding.lock() {
            *o.entry(epoch).or_insert(0) += 1;
        }
    }

    fn reported(&self, epoch: u64) {
        if let Ok(mut o) = self.outstanding.lock() {
            if let Some(n) = o.get_mut(&epoch) {
                *n -= 1;
                if *n == 0 {
                    o.remove(&epoch);
                }
            }
        }
    }

    /// Messages of epochs up to `epoch` still waiting for their delivery report.
    fn outstanding_through(&self, epoch: u64) -> u64 {
        self.outstanding
            .lock()
            .map(|o| o.range(..=epoch).map(|(_, n)| *n).sum())
            .unwrap_or(0)
    }

    fn fail(&self, topic: &str, error: &dyn std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(topic, %error, "kafka produce failed");
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("topic `{topic}`: {error}"));
        }
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    /// The send epoch of the message.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => self.fail(message.topic(), error),
        }
        self.reported(epoch as u64);
    }
}

/// Messages delivered and failed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Acknowledged by the brokers.
    pub delivered: u64,
    /// Refused, or not delivered within the message timeout.
    pub failed: u64,
}

/// A producer shared by sinks and `freshet produce`, with a background delivery thread.
pub struct KafkaProducer {
    producer: ThreadedProducer<DeliveryTracker>,
    brokers: String,
}

impl KafkaProducer {
    /// Creates a producer and checks, within `timeout`, that the brokers answer.
    pub fn connect(brokers: &str, timeout: Duration) -> Result<Self, Error> {
        Self::connect_with(producer_config(brokers), brokers, timeout)
    }

    /// Like [`KafkaProducer::connect`], but a message is never given up on: librdkafka retries
    /// it until the brokers take it (a broker restart delays deliveries instead of failing
    /// them), in order per partition. `freshet run` waits for these deliveries before it
    /// commits offsets.
    pub fn connect_durable(brokers: &str, timeout: Duration) -> Result<Self, Error> {
        let mut config = producer_config(brokers);
        config
            .set("message.timeout.ms", "0")
            .set("max.in.flight.requests.per.connection", "1");
        Self::connect_with(config, brokers, timeout)
    }

    fn connect_with(
        config: rdkafka::ClientConfig,
        brokers: &str,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let producer: ThreadedProducer<DeliveryTracker> = config
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| Error::client("kafka producer", e))?;
        fetch_metadata(producer.client(), brokers, None, timeout)?;
        Ok(Self {
            producer,
            brokers: brokers.to_owned(),
        })
    }

    /// The partition count of `topic`, or [`Error::NoSuchTopic`].
    pub fn partition_count(&self, topic: &str) -> Result<u32, Error> {
        partition_count(
            self.producer.client(),
            &self.brokers,
            topic,
            CONNECT_TIMEOUT,
        )
    }

    /// Queues one message; waits (polling for deliveries) while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), Error> {
        let tracker = self.producer.context();
        let epoch = tracker.epoch.load(Ordering::Acquire);
        tracker.queued(epoch);
        let sent = self.send_in(epoch, topic, key, payload, headers);
        if sent.is_err() {
            tracker.reported(epoch);
        }
        sent
    }

    fn send_in(
        &self,
        epoch: u64,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), Error> {
        let opaque = usize::try_from(epoch).unwrap_or(usize::MAX);
        let mut record =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, opaque).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let mut deadline = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + QUEUE_FULL_WAIT);
                    if Instant::now() >= deadline {
                        return Err(Error::Produce {
                            topic: topic.to_owned(),
                            reason: format!(
                                "local queue still full after {}s (brokers `{}` not keeping up or away)",
                                QUEUE_FULL_WAIT.as_secs(),
                                self.brokers
                            ),
                            retryable: true,
                        });
                    }
                    self.producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((error, _)) => {
                    let retryable = error.rdkafka_error_code().is_some_and(is_transient_code);
                    return Err(Error::Produce {
                        topic: topic.to_owned(),
                        reason: error.to_string(),
                        retryable,
                    });
                }
            }
        }
    }

    /// Deliveries so far.
    pub fn stats(&self) -> DeliveryStats {
        let tracker = self.producer.context();
        DeliveryStats {
            delivered: tracker.delivered.load(Ordering::Relaxed),
            failed: tracker.failed.load(Ordering::Relaxed),
        }
    }

    /// Starts a new send epoch and returns the one that ends: every message queued before this
    /// call belongs to it or to an earlier one. `freshet run` calls it once a checkpoint's cut is
    /// complete (every record the cut covers is queued), lets the dataflow read on, and waits
    /// with [`KafkaProducer::finish_through`] for the records of the cut alone.
    pub fn advance_epoch(&self) -> u64 {
        self.producer.context().epoch.fetch_add(1, Ordering::AcqRel)
    }

    /// Waits up to `timeout` for the delivery of every message sent in `epoch` or before (later
    /// ones may still be in flight), then reports the first failure, if any.
    pub fn finish_through(&self, epoch: u64, timeout: Duration) -> Result<DeliveryStats, Error> {
        let deadline = Instant::now() + timeout;
        let tracker = self.producer.context();
        loop {
            let left = tracker.outstanding_through(epoch);
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Produce {
                    topic: "*".to_owned(),
                    reason: format!(
                        "{left} message(s) not delivered within {}s",
                        timeout.as_secs_f64()
                    ),
                    retryable: true,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.failures()
    }

    /// Waits up to `timeout` for every queued message, then reports the first failure, if any.
    pub fn finish(&self, timeout: Duration) -> Result<DeliveryStats, Error> {
        self.producer.flush(timeout).map_err(|e| Error::Produce {
            topic: "*".to_owned(),
            reason: format!(
                "{} message(s) not delivered within {}s: {e}",
                self.producer.in_flight_count(),
                timeout.as_secs()
            ),
            retryable: true,
        })?;
        self.failures()
    }

    /// The delivery counts, or the first failure when any message failed.
    fn failures(&self) -> Result<DeliveryStats, Error> {
        let stats = self.stats();
        if stats.failed > 0 {
            let first = self
                .producer
                .context()
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            return Err(Error::Produce {
                topic: "*".to_owned(),
                reason: format!("{} message(s) failed, first: {first}", stats.failed),
                retryable: true,
            });
        }
        Ok(stats)
    }

    fn report(&self, topic: &str, error: &Error) {
        self.producer.context().fail(topic, error);
    }
}

/// Sends dead letters to `<source topic>.dead_letter` (or one configured topic).
pub struct KafkaDeadLetterSink {
    producer: Arc<KafkaProducer>,
    /// Source name → (source topic, dead-letter topic).
    routes: BTreeMap<String, (String, String)>,
    fallback: String,
}

impl KafkaDeadLetterSink {
    /// Routes the dead letters of each source (`source → topic`) to `topic` + `.dead_letter`,
    /// or all of them to `single_topic` when given. A source not in `topics` goes to
    /// `freshet.dead_letter` (or `single_topic`).
    pub fn new(
        producer: Arc<KafkaProducer>,
        topics: &BTreeMap<String, String>,
        single_topic: Option<String>,
    ) -> Self {
        let routes = topics
            .iter()
            .map(|(source, topic)| {
                let target = single_topic
                    .clone()
                    .unwrap_or_else(|| dead_letter_topic(topic));
                (source.clone(), (topic.clone(), target))
            })
            .collect();
        Self {
            producer,
            routes,
            fallback: single_topic.unwrap_or_else(|| dead_letter_topic("freshet")),
        }
    }
}

impl DeadLetterSink for KafkaDeadLetterSink {
    fn write(&self, letter: DeadLetter) {
        let (source_topic, target) = match self.routes.get(&letter.source) {
            Some((source_topic, target)) => (source_topic.as_str(), target.as_str()),
            None => ("", self.fallback.as_str()),
        };
        let reason = letter.reason.to_string();
        let headers = dead_letter_headers(
            &reason,
            &letter.source,
            source_topic,
            letter.partition,
            letter.offset,
        );
        if let Err(e) = self
            .producer
            .send(target, None, &letter.record, Some(headers))
        {
            self.producer.report(target, &e);
        }
    }
}

/// The headers of a dead letter: the reason, the source (or `[[serving]]` table) it came from,
/// and the topic, partition and offset of the original record.
pub(crate) fn dead_letter_headers(
    reason: &str,
    source: &str,
    topic: &str,
    partition: impl std::fmt::Display,
    offset: impl std::fmt::Display,
) -> OwnedHeaders {
    let partition = partition.to_string();
    let offset = offset.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: HEADER_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: HEADER_SOURCE,
            value: Some(source),
        })
        .insert(Header {
            key: HEADER_TOPIC,
            value: Some(topic),
        })
        .insert(Header {
            key: HEADER_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_OFFSET,
            value: Some(offset.as_str()),
        })
}

/// One changelog message: a closed window of one entity's feature.
#[derive(Serialize)]
struct ChangelogRecord<'a> {
    view: &'a str,
    entity: &'a str,
    feature: &'a str,
    window_start: u64,
    window_end: u64,
    value: &'a FeatureValue,
}

/// Sends each closed window as one JSON object keyed by entity to a changelog topic.
pub struct KafkaChangelogSink {
    producer: Arc<KafkaProducer>,
    topic: String,
}

impl KafkaChangelogSink {
    /// Writes closed windows to `topic`.
    pub fn new(producer: Arc<KafkaProducer>, topic: impl Into<String>) -> Self {
        Self {
            producer,
            topic: topic.into(),
        }
    }
}

impl ChangelogSink for KafkaChangelogSink {
    fn write(&self, windows: &[ClosedWindow]) {
        let mut buf = Vec::with_capacity(256);
        for w in windows {
            buf.clear();
            let record = ChangelogRecord {
                view: &w.view,
                entity: &w.entity,
                feature: &w.feature,
                window_start: w.window_start_ms,
                window_end: w.window_end_ms,
                value: &w.value,
            };
            let sent = serde_json::to_writer(&mut buf, &record)
                .map_err(|e| Error::Produce {
                    topic: self.topic.clone(),
                    reason: e.to_string(),
                    retryable: false,
                })
                .and_then(|()| {
                    self.producer
                        .send(&self.topic, Some(w.entity.as_bytes()), &buf, None)
                });
            if let Err(e) = sent {
                self.producer.report(&self.topic, &e);
            }
        }
    }
}
