//! Kafka partitions as [`PartitionReader`]s: one consumer per assigned topic partition.
//!
//! Assignment is static, as in Bytewax and Arroyo: partition `p` of a topic is read by timely
//! worker `p % peers`; no group rebalancing moves partitions under a running dataflow. A reader
//! starts where it is told ([`StartAt`]): at a checkpoint's position (`freshet run`), at the
//! beginning, or at its group's committed offset (the earliest offset when there is none).
//! A reader started at an offset does not trust the broker to answer a fetch at that offset with
//! exactly the records from it on: it fetches from before it, drops what lies before it and
//! every repeat, and proves that nothing between was skipped (`StartGate`).
//! Offsets handed to the dataflow are Kafka offsets. Nothing is committed automatically:
//! [`KafkaPartitionReader::commit`] and [`OffsetCommitter`] commit offsets once the caller knows
//! that the writes they cover have landed. A message without a payload (a tombstone) is sent to
//! the dead letters. With metrics attached, a reader reports its position and the partition's
//! high watermark (consumer lag) about once a second.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshet_core::event::Rejection;
use freshet_core::metrics::PipelineMetrics;
use freshet_features::checkpoint::Checkpoint;
use freshet_features::source::{DeadLetter, PartitionReader, ReadState};
use freshet_features::{DeadLetterSink, ReaderFactory};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{
    consumer_config, partition_count, Committer, Error, COMMIT_TIMEOUT, CONNECT_TIMEOUT,
};

/// Set to make every reader sharing it report [`ReadState::End`] (a graceful stop).
pub type StopFlag = Arc<AtomicBool>;

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset, or the earliest offset when there is none.
    Committed,
    /// The earliest offset still in the partition.
    Beginning,
    /// This offset (a checkpoint's position).
    Offset(u64),
}

/// How often a reader refreshes its lag figures.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The topic partition a reader reads, and the source it feeds.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The pipeline source the records feed (named in dead letters).
    pub source: &'a str,
}

/// How long a reader that is proving its start waits for a record before it fetches from further
/// back (a fetch inside the last batch of a partition may answer nothing at all).
const REFETCH_AFTER: Duration = Duration::from_secs(1);
/// How far back the second fetch of a start proof goes; each later one goes
/// [`REFETCH_GROWTH`] times further.
const FIRST_REFETCH_SPAN: u64 = 1024;
/// Growth of the distance fetched back by each further fetch of a start proof.
const REFETCH_GROWTH: u64 = 16;

/// What the reader does with a polled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Hand it to the dataflow.
    Hand,
    /// Drop it: it lies before the start.
    Before,
    /// Drop it: it repeats a record already handed out.
    Repeat,
    /// Drop it and fetch again from this offset (`0`: from the beginning of the partition).
    Refetch(u64),
}

/// Decides which polled records a reader hands out, so that a reader started at an offset hands
/// out every record from that offset on exactly once, in offset order, whatever the broker
/// answers to the fetch at that offset.
///
/// A Kafka broker answers a fetch at an offset inside a record batch with the whole batch, and
/// the client drops the records below the offset. Some brokers answer with the *next* batch
/// instead (tansu 0.6.0 with its object-store ("dynostore") storage, e.g. `memory://`), which
/// silently skips the rest of the batch that holds the offset, and repeat batches later in the
/// same answer. So a reader started at offset `start > 0` does not trust the broker to start
/// there: it fetches from `start - 1` and hands nothing out until it has polled a record below
/// `start` (dropped) — from then on the broker is delivering the log from before `start`, and
/// every record from `start` on follows. A first record at or past `start`, or nothing for
/// [`REFETCH_AFTER`], makes it fetch again from further back (1024 records, then 16 times
/// further each time, finally the beginning of the partition, where a gap is then real:
/// compaction, transaction markers). Past the proof, a record below the next offset to hand out
/// (a repeat) is dropped.
///
/// What tansu 0.6.0 does (crate `tansu-storage`): `DynoStore::fetch` (`src/dynostore.rs`) lists
/// the partition's batch objects, named by base offset, and keeps those with a base offset at
/// or past the fetch offset (`split_off`), so the batch that holds the offset is left out;
/// `FetchService::fetch_partition` (`src/service/fetch.rs`) then fetches again from the fetch
/// offset plus the number of records returned, which falls short of the end of what was
/// returned when the first batch was skipped, and so returns batches a second time in the same
/// answer (at offsets past the fetch offset, which librdkafka delivers).
#[derive(Debug)]
struct StartGate {
    /// The offset of the next record to hand out, once known.
    next: Option<u64>,
    /// While the start is unproven: where the current fetch starts and when it was issued.
    proving: Option<(u64, Instant)>,
    /// The first offset to hand out (0 when the broker decides).
    start: u64,
}

impl StartGate {
    /// A gate that hands out whatever comes first (the start is the broker's: beginning or
    /// committed offset).
    fn open() -> Self {
        Self {
            next: None,
            proving: None,
            start: 0,
        }
    }

    /// A gate for a reader started at `start`; returns it and the offset to fetch from.
    fn at(start: u64, now: Instant) -> (Self, u64) {
        let fetch = start.saturating_sub(1);
        let gate = Self {
            next: Some(start),
            proving: (start > 0).then_some((fetch, now)),
            start,
        };
        (gate, fetch)
    }

    /// The offset of the next record to hand out, once known.
    fn next(&self) -> Option<u64> {
        self.next
    }

    /// The fate of a polled record at `offset`.
    fn admit(&mut self, offset: u64, now: Instant) -> Admit {
        if let (Some((from, _)), Some(start)) = (self.proving, self.next) {
            if offset >= start && from > 0 {
                // the broker skipped the records up to `offset`, or there are none: look further back
                return Admit::Refetch(self.back_off(now));
            }
            // a record from before the start (or a fetch from the beginning): proven
            self.proving = None;
        }
        match self.next {
            Some(next) if offset < next && offset >= self.start => Admit::Repeat,
            Some(next) if offset < next => Admit::Before,
            _ => {
                self.next = Some(offset + 1);
                Admit::Hand
            }
        }
    }

    /// Called when a poll found nothing: the offset to fetch from again, when the start is
    /// unproven and nothing has arrived for [`REFETCH_AFTER`].
    fn idle(&mut self, now: Instant) -> Option<u64> {
        match self.proving {
            Some((from, since)) if from > 0 && now.duration_since(since) >= REFETCH_AFTER => {
                Some(self.back_off(now))
            }
            _ => None,
        }
    }

    fn back_off(&mut self, now: Instant) -> u64 {
        let start = self.start;
        let span = match self.proving {
            Some((from, _)) if start - from > 1 => (start - from).saturating_mul(REFETCH_GROWTH),
            _ => FIRST_REFETCH_SPAN,
        };
        let from = start.saturating_sub(span);
        self.proving = Some((from, now));
        from
    }
}

/// `offset` as a fetch position.
fn fetch_offset(offset: u64) -> Result<Offset, KafkaError> {
    i64::try_from(offset)
        .map(Offset::Offset)
        .map_err(|_| KafkaError::Seek("offset out of range".into()))
}

/// Reads one topic partition with a consumer of its own.
pub struct KafkaPartitionReader {
    consumer: BaseConsumer,
    source: String,
    topic: String,
    partition: i32,
    dead_letters: Arc<dyn DeadLetterSink>,
    stop: StopFlag,
    /// Which polled records are handed out (the start offset, repeats).
    gate: StartGate,
    /// Whether a repeated record was dropped yet (reported once).
    repeated: bool,
    metrics: Option<Arc<PipelineMetrics>>,
    last_report: Option<Instant>,
}

impl KafkaPartitionReader {
    /// Opens a consumer in `group_id` assigned to `topic`/`partition`, for source `source`,
    /// starting at the group's committed offset.
    pub fn open(
        brokers: &str,
        group_id: &str,
        source: &str,
        topic: &str,
        partition: u32,
        dead_letters: Arc<dyn DeadLetterSink>,
        stop: StopFlag,
    ) -> Result<Self, Error> {
        let target = Target {
            topic,
            partition,
            source,
        };
        Self::open_at(
            brokers,
            group_id,
            &target,
            StartAt::Committed,
            dead_letters,
            stop,
        )
    }

    /// Opens a consumer in `group_id` assigned once to `target`'s topic partition, starting at
    /// `start`. A reader started at an offset hands out every record from that offset on, and
    /// none before it, whatever batch the broker answers the first fetch with (see
    /// `StartGate`).
    pub fn open_at(
        brokers: &str,
        group_id: &str,
        target: &Target<'_>,
        start: StartAt,
        dead_letters: Arc<dyn DeadLetterSink>,
        stop: StopFlag,
    ) -> Result<Self, Error> {
        Self::open_with(
            consumer_config(brokers, group_id),
            target,
            start,
            dead_letters,
            stop,
        )
    }

    /// [`KafkaPartitionReader::open_at`] with a consumer of `config` (brokers and group set).
    fn open_with(
        config: rdkafka::ClientConfig,
        target: &Target<'_>,
        start: StartAt,
        dead_letters: Arc<dyn DeadLetterSink>,
        stop: StopFlag,
    ) -> Result<Self, Error> {
        let Target {
            topic,
            partition,
            source,
        } = *target;
        let context = || format!("topic `{topic}` partition {partition}");
        let partition = i32::try_from(partition).map_err(|_| {
            Error::client(context(), KafkaError::Seek("partition out of range".into()))
        })?;
        let consumer: BaseConsumer = config.create().map_err(|e| Error::client(context(), e))?;
        let (gate, offset) = match start {
            // `Stored`: the group's committed offset; `auto.offset.reset=earliest` when none.
            StartAt::Committed => (StartGate::open(), Offset::Stored),
            StartAt::Beginning => (StartGate::open(), Offset::Beginning),
            StartAt::Offset(o) => {
                let (gate, fetch) = StartGate::at(o, Instant::now());
                (
                    gate,
                    fetch_offset(fetch).map_err(|e| Error::client(context(), e))?,
                )
            }
        };
        let reader = Self {
            consumer,
            source: source.to_owned(),
            topic: topic.to_owned(),
            partition,
            dead_letters,
            stop,
            gate,
            repeated: false,
            metrics: None,
            last_report: None,
        };
        reader
            .assign(offset)
            .map_err(|e| Error::client(context(), e))?;
        Ok(reader)
    }

    /// Assigns the reader's partition to its consumer, fetching from `offset` (replacing the
    /// assignment: records fetched before are not delivered).
    fn assign(&self, offset: Offset) -> Result<(), KafkaError> {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, self.partition, offset)?;
        self.consumer.assign(&assignment)
    }

    /// Fetches again from `from` while the start is being proven (see [`StartGate`]).
    /// `first`: the record that made it look further back (none: nothing arrived).
    fn refetch(&self, from: u64, first: Option<u64>) -> io::Result<()> {
        let start = self.gate.start;
        tracing::info!(
            topic = %self.topic,
            partition = self.partition,
            start,
            first,
            from,
            "the broker answered the fetch before the start offset with no record before it; fetching from further back"
        );
        let offset = if from == 0 {
            Ok(Offset::Beginning)
        } else {
            fetch_offset(from)
        };
        offset.and_then(|o| self.assign(o)).map_err(|e| {
            io::Error::other(format!(
                "kafka topic `{}` partition {}: fetch again from {from}: {e}",
                self.topic, self.partition
            ))
        })
    }

    /// Reports position and lag to `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<PipelineMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn report_lag(&mut self) {
        let Some(metrics) = &self.metrics else { return };
        if self
            .last_report
            .is_some_and(|t| t.elapsed() < LAG_REPORT_INTERVAL)
        {
            return;
        }
        self.last_report = Some(Instant::now());
        if let Some(position) = self.gate.next() {
            // the high watermark comes from [`LagProbe`], off the worker thread
            metrics.set_position(&self.topic, self.partition.unsigned_abs(), position);
        }
    }

    /// Commits `next_offset` (the offset of the next message to read, i.e. last processed + 1)
    /// for this partition in the reader's group, synchronously.
    pub fn commit(&self, next_offset: u64) -> Result<(), Error> {
        let context = || format!("commit topic `{}` partition {}", self.topic, self.partition);
        let offset = i64::try_from(next_offset).map_err(|_| {
            Error::client(context(), KafkaError::Seek("offset out of range".into()))
        })?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
            .map_err(|e| Error::client(context(), e))?;
        self.consumer
            .commit(&offsets, CommitMode::Sync)
            .map_err(|e| Error::client(context(), e))
    }

    fn no_payload(&self, offset: u64) {
        self.dead_letters.write(DeadLetter {
            source: self.source.clone(),
            partition: self.partition.unsigned_abs(),
            offset,
            reason: Rejection::NotJson("message has no payload (null value)".to_owned()),
            record: Vec::new(),
        });
    }
}

impl PartitionReader for KafkaPartitionReader {
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, &[u8]),
    ) -> io::Result<ReadState> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(ReadState::End);
        }
        // records polled (handed out or dropped) and records handed out
        let (mut polled, mut read) = (0, 0);
        let mut unreachable = false;
        // one clock reading per read, not per record: the gate only uses it while it proves
        // the start (to time its refetches)
        let now = Instant::now();
        while polled < max_records {
            // Never block a timely worker: the dataflow backs off itself on `Idle`.
            match self.consumer.poll(Duration::ZERO) {
                None => {
                    if let Some(from) = self.gate.idle(Instant::now()) {
                        self.refetch(from, None)?;
                    }
                    break;
                }
                Some(Ok(message)) => {
                    polled += 1;
                    let offset = message.offset().unsigned_abs();
                    let proving = self.gate.proving;
                    let admitted = self.gate.admit(offset, now);
                    if let (Some((from, _)), None) = (proving, self.gate.proving) {
                        tracing::info!(
                            topic = %self.topic,
                            partition = self.partition,
                            start = self.gate.start,
                            from,
                            first = offset,
                            "start offset proven: the broker delivers the records before it"
                        );
                    }
                    match admitted {
                        Admit::Hand => {}
                        Admit::Before => continue,
                        Admit::Repeat => {
                            if !self.repeated {
                                self.repeated = true;
                                tracing::info!(
                                    topic = %self.topic,
                                    partition = self.partition,
                                    offset,
                                    next = self.gate.next().unwrap_or(0),
                                    "the broker delivered a record again; repeats are dropped"
                                );
                            }
                            continue;
                        }
                        Admit::Refetch(from) => {
                            self.refetch(from, Some(offset))?;
                            break;
                        }
                    }
                    read += 1;
                    match message.payload() {
                        Some(bytes) => record(offset, bytes),
                        None => self.no_payload(offset),
                    }
                }
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    return Err(io::Error::other(format!(
                        "kafka topic `{}` partition {}: fatal consumer error: {code}",
                        self.topic, self.partition
                    )));
                }
                Some(Err(error)) => {
                    // librdkafka reconnects and refetches by itself; a transient error is noted.
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "kafka consume error");
                    unreachable = true;
                    break;
                }
            }
        }
        self.report_lag();
        Ok(match (read == 0 && polled == 0, unreachable) {
            (true, true) => ReadState::Unreachable,
            (true, false) => ReadState::Idle,
            (false, _) => ReadState::More,
        })
    }

    fn position(&self) -> Option<u64> {
        self.gate.next()
    }
}

/// Where readers start and what they report, for [`kafka_inputs`].
#[derive(Clone, Default)]
pub struct InputOptions {
    /// Start every partition at this checkpoint's position (partitions it does not name, at
    /// the beginning); `None`: at the group's committed offsets.
    pub restore: Option<Arc<Checkpoint>>,
    /// Start at the beginning when there is no checkpoint (a live run without state).
    pub from_beginning: bool,
    /// Where readers report consumer lag.
    pub metrics: Option<Arc<PipelineMetrics>>,
    /// How long a fetch may wait on the broker for records (`fetch.wait.max.ms`); `None`:
    /// librdkafka's default.
    pub fetch_wait: Option<Duration>,
}

impl InputOptions {
    fn start(&self, source: &str, partition: u32) -> StartAt {
        if let Some(cp) = &self.restore {
            return match cp
                .positions(source)
                .get(&partition)
                .and_then(|p| p.next_offset)
            {
                Some(o) => StartAt::Offset(o),
                None => StartAt::Beginning,
            };
        }
        if self.from_beginning {
            StartAt::Beginning
        } else {
            StartAt::Committed
        }
    }
}

/// Asks the brokers for the high watermark of every partition of some topics (consumer lag).
pub struct LagProbe {
    consumer: BaseConsumer,
    brokers: String,
    topics: Vec<String>,
    metrics: Arc<PipelineMetrics>,
}

impl LagProbe {
    /// A probe of `topics` reporting to `metrics`.
    pub fn new(
        brokers: &str,
        group_id: &str,
        topics: Vec<String>,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self, Error> {
        let consumer: BaseConsumer = consumer_config(brokers, group_id)
            .create()
            .map_err(|e| Error::client("lag probe", e))?;
        Ok(Self {
            consumer,
            brokers: brokers.to_owned(),
            topics,
            metrics,
        })
    }

    /// Refreshes the high watermarks (one round trip per partition, `timeout` each); returns
    /// the total lag, or an error when the brokers do not answer.
    pub fn refresh(&self, timeout: Duration) -> Result<u64, Error> {
        for topic in &self.topics {
            let partitions =
                partition_count(self.consumer.client(), &self.brokers, topic, timeout)?;
            for partition in 0..partitions {
                let Ok(p) = i32::try_from(partition) else {
                    continue;
                };
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p, timeout)
                    .map_err(|e| Error::client(format!("watermarks of `{topic}`"), e))?;
                self.metrics
                    .set_high_watermark(topic, partition, high.max(0).unsigned_abs());
            }
        }
        Ok(self.metrics.total_lag())
    }
}

/// Commits a checkpoint's positions for a consumer group.
pub struct OffsetCommitter {
    committer: Committer,
    /// source → topic
    topics: BTreeMap<String, String>,
}

impl OffsetCommitter {
    /// A committer for `group_id`; `topics` maps each source to its topic.
    pub fn new(
        brokers: &str,
        group_id: &str,
        topics: BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        let consumer: BaseConsumer = consumer_config(brokers, group_id)
            .create()
            .map_err(|e| Error::client("offset committer", e))?;
        let committer = Committer::new(Arc::new(consumer), "offset-commit")?;
        Ok(Self { committer, topics })
    }

    /// Commits every position of `checkpoint` and waits for the answer, at most
    /// [`COMMIT_TIMEOUT`] (a broker outage makes it fail instead of blocking the caller);
    /// returns how long it took.
    pub fn commit(&self, checkpoint: &Checkpoint) -> Result<Duration, Error> {
        let start = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for positions in &checkpoint.sources {
            let Some(topic) = self.topics.get(&positions.source) else {
                continue;
            };
            for p in &positions.partitions {
                let (Some(next), Ok(partition)) = (p.next_offset, i32::try_from(p.partition))
                else {
                    continue;
                };
                let offset = Offset::Offset(i64::try_from(next).unwrap_or(i64::MAX));
                offsets
                    .add_partition_offset(topic, partition, offset)
                    .map_err(|e| Error::client(format!("commit topic `{topic}`"), e))?;
            }
        }
        if offsets.count() > 0 {
            self.committer.commit(&offsets, COMMIT_TIMEOUT)?;
        }
        Ok(start.elapsed())
    }
}

/// Builds one reader factory per source: source → topic in `topics`, each topic's partition
/// count asked from the brokers once, partition `p` read by worker `p % peers`.
pub fn kafka_inputs(
    brokers: &str,
    group_id: &str,
    topics: &BTreeMap<String, String>,
    dead_letters: Arc<dyn DeadLetterSink>,
    stop: StopFlag,
    options: &InputOptions,
) -> Result<HashMap<String, ReaderFactory>, Error> {
    let probe: BaseConsumer = consumer_config(brokers, group_id)
        .create()
        .map_err(|e| Error::client("kafka consumer", e))?;
    let mut factories = HashMap::new();
    for (source, topic) in topics {
        let partitions = partition_count(probe.client(), brokers, topic, CONNECT_TIMEOUT)?;
        let (brokers, group_id, source_name, topic) = (
            brokers.to_owned(),
            group_id.to_owned(),
            source.clone(),
            topic.clone(),
        );
        let (dead_letters, stop, options) = (dead_letters.clone(), stop.clone(), options.clone());
        let factory: ReaderFactory = Arc::new(move |index, peers| {
            let mut readers: freshet_features::Partitions = Vec::new();
            for partition in (0..partitions).filter(|p| *p as usize % peers.max(1) == index) {
                let target = Target {
                    topic: &topic,
                    partition,
                    source: &source_name,
                };
                let mut config = consumer_config(&brokers, &group_id);
                if let Some(wait) = options.fetch_wait {
                    config.set("fetch.wait.max.ms", wait.as_millis().to_string());
                }
                let reader = KafkaPartitionReader::open_with(
                    config,
                    &target,
                    options.start(&source_name, partition),
                    dead_letters.clone(),
                    stop.clone(),
                )
                .map_err(io::Error::other)?;
                let reader = match &options.metrics {
                    Some(m) => reader.with_metrics(m.clone()),
                    None => reader,
                };
                readers.push((partition, Box::new(reader)));
            }
            Ok(readers)
        });
        factories.insert(source.clone(), factory);
    }
    Ok(factories)
}

#[cfg(test)]
mod tests;
