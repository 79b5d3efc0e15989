//! Request/response over Kafka: a [`RequestLoop`] reads every partition of a request topic,
//! hands batches of requests to a [`RequestHandler`], produces each answer to the response topic
//! keyed by the request id, and sends a malformed request to the dead-letter topic with its
//! reason in the [`HEADER_REASON`] header (the original bytes as payload), then goes on.
//!
//! Guarantees:
//! - **Many requests in flight.** Reading goes on while answers wait for the brokers'
//!   acknowledgement, up to `max_in_flight` requests; then it pauses until acknowledgements come.
//! - **Offsets follow acknowledgements.** A partition's committed offset never passes a request
//!   whose answer (or dead letter) the brokers have not acknowledged: it is the lowest offset
//!   still in flight, or one past the last one read when none is. Commits go out every
//!   [`COMMIT_INTERVAL`] and once more at stop, after every answer in flight was acknowledged.
//!   A commit that fails (the brokers away) is followed by one of every partition once they
//!   answer; the one at stop is waited for, [`COMMIT_TIMEOUT`] at a time, and tried again.
//! - **Broker outages.** Nothing gives up: the consumer and the producer reconnect by
//!   themselves, answers wait in the producer and requests read stay in flight until the brokers
//!   take the answers, and the loop neither exits nor dead-letters anything for it.
//! - **At least once.** A crash re-reads the requests after the last committed offset, so a
//!   request may be answered twice, under the same request id; consumers of the response topic
//!   keep the first answer per id. Answers are never lost: the producer retries a message until
//!   the brokers take it (a broker outage delays answers and, through `max_in_flight`, reading).
//! - Partitions are assigned statically (every partition of the request topic to this loop), as
//!   the sources are; the loop starts at its consumer group's committed offsets (the earliest
//!   offset when there are none).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use freshet_core::metrics::{KafkaServingBoard, KafkaServingStats};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{
    consumer_config, fetch_metadata, partition_count, producer_config, CommitStatus, Committer,
    Error, COMMIT_TIMEOUT, CONNECT_TIMEOUT,
};

/// How often acknowledged offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a stopping loop waits for the answers in flight to be acknowledged.
pub const STOP_WAIT: Duration = Duration::from_secs(30);
/// How many times a stopping loop tries its last commit ([`COMMIT_TIMEOUT`] each).
const STOP_COMMIT_TRIES: u32 = 3;
/// How long a read waits for the first request of a batch when nothing is in flight.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Largest latency the histogram records (60 s); longer counts as 60 s.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// One request read from the request topic.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its payload (empty for a message without one).
    pub payload: &'a [u8],
}

/// What the handler makes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An answer for the response topic.
    Answer {
        /// The message key: the request id.
        key: Vec<u8>,
        /// The answer.
        payload: Vec<u8>,
        /// Whether the answer reports a failure (store or model), counted apart.
        failed: bool,
    },
    /// A malformed request: the original goes to the dead-letter topic with `reason`; with
    /// `answer` (when the request id could be read), an error answer goes to the response topic
    /// too, so the caller is not left waiting.
    Malformed {
        /// Why, for the `freshet.reason` header.
        reason: String,
        /// An error answer (key, payload), if the request id was readable.
        answer: Option<(Vec<u8>, Vec<u8>)>,
    },
}

/// Answers batches of requests. Runs on the loop's thread.
pub trait RequestHandler: Send {
    /// One reply per request, in order.
    fn handle(&mut self, batch: &[Request<'_>]) -> Vec<Reply>;
}

/// Where a request loop reads and writes.
#[derive(Debug, Clone)]
pub struct RequestLoopConfig {
    /// Name of the `[[serving]]` table (metrics label, dead-letter `freshet.source` header).
    pub name: String,
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group whose committed offsets the loop starts from and advances.
    pub group_id: String,
    /// The request topic.
    pub request_topic: String,
    /// The response topic.
    pub response_topic: String,
    /// The dead-letter topic.
    pub dead_letter_topic: String,
    /// Requests read and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Requests handed to the handler at once, at most.
    pub batch_size: usize,
}

/// Counters and the latency histogram of one loop.
pub struct RequestLoopStats {
    name: String,
    requests: AtomicU64,
    responses: AtomicU64,
    dead_letters: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl RequestLoopStats {
    fn new(name: &str) -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 2).unwrap_or_else(|_| {
            unreachable!("the bounds and precision are constants that hdrhistogram accepts")
        });
        Self {
            name: name.to_owned(),
            requests: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latency: Mutex::new(histogram),
        }
    }

    /// The figures `/metrics` shows.
    pub fn snapshot(&self) -> KafkaServingStats {
        let histogram = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let latency_quantiles = if histogram.is_empty() {
            Vec::new()
        } else {
            [(0.5, "0.5"), (0.99, "0.99"), (0.999, "0.999")]
                .into_iter()
                .map(|(q, label)| (label, histogram.value_at_quantile(q) as f64 / 1e9))
                .collect()
        };
        KafkaServingStats {
            name: self.name.clone(),
            requests: self.requests.load(Ordering::Relaxed),
            responses: self.responses.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_quantiles,
        }
    }
}

/// Every loop's statistics, for `/metrics`.
#[derive(Default)]
pub struct RequestLoopBoard {
    loops: Mutex<Vec<Arc<RequestLoopStats>>>,
}

impl RequestLoopBoard {
    fn add(&self, stats: Arc<RequestLoopStats>) {
        self.loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stats);
    }
}

impl KafkaServingBoard for RequestLoopBoard {
    fn snapshot(&self) -> Vec<KafkaServingStats> {
        self.loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| s.snapshot())
            .collect()
    }
}

/// What a delivery report refers to.
struct InFlight {
    partition: i32,
    offset: i64,
    read_at: Instant,
    kind: Sent,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Answer {
        failed: bool,
    },
    /// The error answer of a malformed request: its dead letter is the one counted.
    ErrorAnswer,
    DeadLetter,
}

/// One message to send for a request.
struct Outgoing {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    kind: Sent,
}

/// Sends each delivery report (acknowledged or not) back to the loop.
struct Acks {
    tx: Mutex<Sender<Report>>,
}

/// A delivery report: what was sent, and whether the brokers took it.
type Report = (Box<InFlight>, Result<(), String>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<InFlight>) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.to_string()),
        };
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        // the loop gone means it stopped: nothing waits for the report
        let _ = tx.send((sent, outcome));
    }
}

/// A running request loop.
pub struct RequestLoop {
    thread: JoinHandle<Result<(), Error>>,
}

impl RequestLoop {
    /// Connects (checking, within [`CONNECT_TIMEOUT`], that the three topics exist), then reads
    /// on a thread of its own until `stop` is set. Its statistics go to `board`.
    pub fn start(
        config: RequestLoopConfig,
        handler: Box<dyn RequestHandler>,
        stop: Arc<AtomicBool>,
        board: &RequestLoopBoard,
    ) -> Result<Self, Error> {
        let (tx, rx) = channel();
        let mut producer_settings = producer_config(&config.brokers);
        producer_settings
            // answers are latency-bound: a millisecond of batching is enough
            .set("linger.ms", "1")
            // never give an answer up; a broker outage delays it
            .set("message.timeout.ms", "0");
        let producer: ThreadedProducer<Acks> = producer_settings
            .create_with_context(Acks { tx: Mutex::new(tx) })
            .map_err(|e| Error::client("kafka producer", e))?;
        fetch_metadata(producer.client(), &config.brokers, None, CONNECT_TIMEOUT)?;
        for topic in [&config.response_topic, &config.dead_letter_topic] {
            partition_count(producer.client(), &config.brokers, topic, CONNECT_TIMEOUT)?;
        }
        let partitions = partition_count(
            producer.client(),
            &config.brokers,
            &config.request_topic,
            CONNECT_TIMEOUT,
        )?;
        let consumer: BaseConsumer = consumer_config(&config.brokers, &config.group_id)
            // a request waits in the broker at most this long for a fetch to return it
            // (librdkafka's default, 500 ms, is for throughput)
            .set("fetch.wait.max.ms", "5")
            .create()
            .map_err(|e| Error::client(format!("topic `{}`", config.request_topic), e))?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let p = i32::try_from(p).unwrap_or(i32::MAX);
            assignment
                .add_partition_offset(&config.request_topic, p, Offset::Stored)
                .map_err(|e| Error::client(format!("topic `{}`", config.request_topic), e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| Error::client(format!("topic `{}`", config.request_topic), e))?;
        let consumer = Arc::new(consumer);
        let committer = Committer::new(consumer.clone(), &format!("commit-{}", config.name))?;
        let stats = Arc::new(RequestLoopStats::new(&config.name));
        board.add(stats.clone());
        tracing::info!(
            serving = %config.name,
            request_topic = %config.request_topic,
            response_topic = %config.response_topic,
            partitions,
            "kafka serving started"
        );
        let worker = Worker {
            config,
            producer,
            committer,
            acks: rx,
            stats,
            in_flight: BTreeMap::new(),
            read_to: BTreeMap::new(),
            committed: BTreeMap::new(),
        };
        let name = format!("serve-{}", worker.config.name);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run(&consumer, handler, &stop))
            .map_err(|e| Error::Io {
                path: "request loop thread".to_owned(),
                error: e,
            })?;
        Ok(Self { thread })
    }

    /// Waits for the loop to stop (after its `stop` flag was set).
    pub fn join(self) -> Result<(), Error> {
        self.thread.join().unwrap_or_else(|_| {
            Err(Error::Io {
                path: "request loop thread".to_owned(),
                error: std::io::Error::other("panicked"),
            })
        })
    }

    /// Whether the loop's thread has ended (it stops only when told to, or on an error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

struct Worker {
    config: RequestLoopConfig,
    producer: ThreadedProducer<Acks>,
    /// Commits the request topic's offsets on a thread of its own.
    committer: Committer,
    acks: Receiver<Report>,
    stats: Arc<RequestLoopStats>,
    /// Per partition: offset → messages of that request not yet acknowledged.
    in_flight: BTreeMap<i32, BTreeMap<i64, u8>>,
    /// Per partition: one past the last offset read.
    read_to: BTreeMap<i32, i64>,
    /// Per partition: the offset last committed.
    committed: BTreeMap<i32, i64>,
}

impl Worker {
    fn run(
        mut self,
        consumer: &BaseConsumer,
        mut handler: Box<dyn RequestHandler>,
        stop: &AtomicBool,
    ) -> Result<(), Error> {
        let mut next_commit = Instant::now() + COMMIT_INTERVAL;
        while !stop.load(Ordering::Relaxed) {
            self.drain_acks(Duration::ZERO);
            let pending = self.pending();
            if pending + self.config.batch_size <= self.config.max_in_flight.max(1) {
                let wait = if pending == 0 {
                    IDLE_POLL
                } else {
                    Duration::from_millis(1)
                };
                self.read_batch(consumer, &mut *handler, wait)?;
            } else {
                self.drain_acks(Duration::from_millis(5));
            }
            if Instant::now() >= next_commit {
                self.commit();
                next_commit = Instant::now() + COMMIT_INTERVAL;
            }
        }
        let deadline = Instant::now() + STOP_WAIT;
        while self.pending() > 0 && Instant::now() < deadline {
            self.drain_acks(Duration::from_millis(10));
        }
        if self.pending() > 0 {
            tracing::warn!(
                serving = %self.config.name,
                in_flight = self.pending(),
                "answers not acknowledged at stop; their requests are read again at restart"
            );
        }
        self.last_commit();
        Ok(())
    }

    fn pending(&self) -> usize {
        self.in_flight.values().map(BTreeMap::len).sum()
    }

    fn read_batch(
        &mut self,
        consumer: &BaseConsumer,
        handler: &mut dyn RequestHandler,
        wait: Duration,
    ) -> Result<(), Error> {
        let mut messages = Vec::with_capacity(self.config.batch_size);
        let mut timeout = wait;
        while messages.len() < self.config.batch_size {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(message)) => messages.push(message),
                Some(Err(e)) => {
                    // librdkafka reconnects by itself; a fatal error ends the loop
                    if let KafkaError::MessageConsumptionFatal(_) = e {
                        return Err(Error::client(
                            format!("topic `{}`", self.config.request_topic),
                            e,
                        ));
                    }
                    tracing::warn!(serving = %self.config.name, error = %e, "request topic read failed, retrying");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let read_at = Instant::now();
        let requests: Vec<Request<'_>> = messages
            .iter()
            .map(|m| Request {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                payload: m.payload().unwrap_or_default(),
            })
            .collect();
        self.stats
            .requests
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        let replies = handler.handle(&requests);
        let mut replies = replies.into_iter();
        for request in &requests {
            let reply = replies.next().unwrap_or_else(|| Reply::Malformed {
                reason: "the handler gave no answer".to_owned(),
                answer: None,
            });
            self.read_to.insert(request.partition, request.offset + 1);
            let mut sends: Vec<Outgoing> = Vec::with_capacity(2);
            match reply {
                Reply::Answer {
                    key,
                    payload,
                    failed,
                } => sends.push(Outgoing {
                    topic: self.config.response_topic.clone(),
                    key: Some(key),
                    payload,
                    headers: None,
                    kind: Sent::Answer { failed },
                }),
                Reply::Malformed { reason, answer } => {
                    sends.push(Outgoing {
                        topic: self.config.dead_letter_topic.clone(),
                        key: request.key.map(<[u8]>::to_vec),
                        payload: request.payload.to_vec(),
                        headers: Some(self.dead_letter_headers(&reason, request)),
                        kind: Sent::DeadLetter,
                    });
                    if let Some((key, payload)) = answer {
                        sends.push(Outgoing {
                            topic: self.config.response_topic.clone(),
                            key: Some(key),
                            payload,
                            headers: None,
                            kind: Sent::ErrorAnswer,
                        });
                    }
                }
            }
            for Outgoing {
                topic,
                key,
                payload,
                headers,
                kind,
            } in sends
            {
                let sent = Box::new(InFlight {
                    partition: request.partition,
                    offset: request.offset,
                    read_at,
                    kind,
                });
                *self
                    .in_flight
                    .entry(request.partition)
                    .or_default()
                    .entry(request.offset)
                    .or_insert(0) += 1;
                self.send(&topic, key.as_deref(), &payload, headers, sent)?;
            }
        }
        self.stats
            .in_flight
            .store(self.pending() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn dead_letter_headers(&self, reason: &str, request: &Request<'_>) -> OwnedHeaders {
        crate::sink::dead_letter_headers(
            reason,
            &self.config.name,
            &self.config.request_topic,
            request.partition,
            request.offset,
        )
    }

    /// Queues one message; while librdkafka's queue is full, takes acknowledgements and retries.
    fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        sent: Box<InFlight>,
    ) -> Result<(), Error> {
        let mut record =
            BaseRecord::<[u8], [u8], Box<InFlight>>::with_opaque_to(topic, sent).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.drain_acks(Duration::from_millis(5));
                }
                Err((error, back)) => {
                    // the brokers will never take it (too large, unknown topic): count it as
                    // done so the partition's offsets move on
                    tracing::error!(serving = %self.config.name, topic, error = %error, "answer not sent");
                    self.acknowledged(&back.delivery_opaque, Err(error.to_string()));
                    return Ok(());
                }
            }
        }
    }

    fn drain_acks(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.acks.try_recv().ok()
        } else {
            self.acks.recv_timeout(wait).ok()
        };
        let Some(first) = first else { return };
        let mut next = Some(first);
        while let Some((sent, outcome)) = next {
            self.acknowledged(&sent, outcome);
            next = self.acks.try_recv().ok();
        }
        self.stats
            .in_flight
            .store(self.pending() as u64, Ordering::Relaxed);
    }

    fn acknowledged(&mut self, sent: &InFlight, outcome: Result<(), String>) {
        if let Err(e) = &outcome {
            tracing::error!(serving = %self.config.name, partition = sent.partition, offset = sent.offset, error = %e, "answer not delivered");
        }
        match sent.kind {
            Sent::Answer { failed } => {
                if outcome.is_ok() {
                    self.stats.responses.fetch_add(1, Ordering::Relaxed);
                }
                if failed || outcome.is_err() {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Sent::ErrorAnswer => {
                if outcome.is_ok() {
                    self.stats.responses.fetch_add(1, Ordering::Relaxed);
                }
            }
            Sent::DeadLetter => {
                self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(offsets) = self.in_flight.get_mut(&sent.partition) {
            if let Some(count) = offsets.get_mut(&sent.offset) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    offsets.remove(&sent.offset);
                    let ns = u64::try_from(sent.read_at.elapsed().as_nanos())
                        .unwrap_or(u64::MAX)
                        .clamp(1, MAX_LATENCY_NS);
                    self.stats
                        .latency
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .saturating_record(ns);
                }
            }
        }
    }

    /// Per partition, the offset to commit: the lowest offset still in flight, or one past the
    /// last read when none is.
    fn commit_points(&self) -> Vec<(i32, i64)> {
        self.read_to
            .iter()
            .map(|(&partition, &read_to)| {
                let upto = self
                    .in_flight
                    .get(&partition)
                    .and_then(|o| o.keys().next().copied())
                    .unwrap_or(read_to);
                (partition, upto)
            })
            .collect()
    }

    fn offsets(&self, points: &[(i32, i64)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &(partition, upto) in points {
            // only fails for an offset librdkafka cannot represent, which these are not
            let _ = list.add_partition_offset(
                &self.config.request_topic,
                partition,
                Offset::Offset(upto),
            );
        }
        list
    }

    /// Commits, without waiting, the partitions whose commit point moved. A commit that failed
    /// (the brokers were away) makes the next one commit every partition again; while one is
    /// still unanswered, none is asked for.
    fn commit(&mut self) {
        match self.committer.status() {
            CommitStatus::Running => return,
            CommitStatus::Done(Err(e)) => {
                tracing::warn!(serving = %self.config.name, error = %e, "offset commit failed, retried at the next one");
                self.committed.clear();
            }
            CommitStatus::Idle | CommitStatus::Done(Ok(())) => {}
        }
        let advanced: Vec<(i32, i64)> = self
            .commit_points()
            .into_iter()
            .filter(|(p, upto)| self.committed.get(p).is_none_or(|c| c < upto))
            .collect();
        if advanced.is_empty() {
            return;
        }
        if self.committer.start(&self.offsets(&advanced)) {
            self.committed.extend(advanced);
        }
    }

    /// The commit at stop: every partition, waited for (and tried again while the brokers do
    /// not answer, [`STOP_COMMIT_TRIES`] times).
    fn last_commit(&mut self) {
        let points = self.commit_points();
        if points.is_empty() {
            return;
        }
        let list = self.offsets(&points);
        for attempt in 1..=STOP_COMMIT_TRIES {
            match self.committer.commit(&list, COMMIT_TIMEOUT) {
                Ok(()) => {
                    self.committed.extend(points);
                    return;
                }
                Err(e) if attempt < STOP_COMMIT_TRIES => {
                    tracing::warn!(serving = %self.config.name, error = %e, attempt, "offset commit at stop failed, trying again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    tracing::warn!(serving = %self.config.name, error = %e, "offsets not committed at stop; the requests since the last commit are answered again at restart");
                }
            }
        }
    }
}

/// The partitions and their committed offsets of `group_id` on `topic`, for tests and tools.
pub fn committed_offsets(
    brokers: &str,
    group_id: &str,
    topic: &str,
) -> Result<BTreeSet<(i32, i64)>, Error> {
    let consumer: BaseConsumer = consumer_config(brokers, group_id)
        .create()
        .map_err(|e| Error::client(format!("topic `{topic}`"), e))?;
    let partitions = partition_count(consumer.client(), brokers, topic, CONNECT_TIMEOUT)?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, i32::try_from(p).unwrap_or(i32::MAX));
    }
    let committed = consumer
        .committed_offsets(list, CONNECT_TIMEOUT)
        .map_err(|e| Error::client(format!("committed offsets of `{topic}`"), e))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
