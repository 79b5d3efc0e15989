//! Kafka partitions as [`PartitionReader`]s: one consumer per assigned topic partition.
//!
//! Assignment is static, as in Bytewax and Arroyo: partition `p` of a topic is read by timely
//! worker `p % peers`; no group rebalancing moves partitions under a running dataflow. A reader
//! starts where it is told ([`StartAt`]): at a checkpoint's position (`freshet run`), at the
//! beginning, or at its group's committed offset (the earliest offset when there is none).
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

/// Reads one topic partition with a consumer of its own.
pub struct KafkaPartitionReader {
    consumer: BaseConsumer,
    source: String,
    topic: String,
    partition: i32,
    dead_letters: Arc<dyn DeadLetterSink>,
    stop: StopFlag,
    /// Offset of the next message to hand out, once known.
    next: Option<u64>,
    metrics: Option<Arc<PipelineMetrics>>,
    last_report: Option<Instant>,
}

impl KafkaPartitionReader {
    /// Opens a consumer in `group_id` assigned to `topic`/`partition`, for source `source`.
    pub fn open(
        brokers: &str,
        group_id: &str,
        source: &str,
        topic: &str,
        partition: u32,
        dead_letters: Arc<dyn DeadLetterSink>,
        stop: StopFlag,
    ) -> Result<Self, Error> {
        let context = || format!("topic `{topic}` partition {partition}");
        let partition = i32::try_from(partition).map_err(|_| {
            Error::client(context(), KafkaError::Seek("partition out of range".into()))
        })?;
        let consumer: BaseConsumer = consumer_config(brokers, group_id)
            .create()
            .map_err(|e| Error::client(context(), e))?;
        let mut assignment = TopicPartitionList::new();
        // `Stored`: the group's committed offset; `auto.offset.reset=earliest` when none.
        assignment
            .add_partition_offset(topic, partition, Offset::Stored)
            .map_err(|e| Error::client(context(), e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| Error::client(context(), e))?;
        Ok(Self {
            consumer,
            source: source.to_owned(),
            topic: topic.to_owned(),
            partition,
            dead_letters,
            stop,
            next: None,
            metrics: None,
            last_report: None,
        })
    }

    /// Moves the reader to `start` (before it has read anything).
    pub fn start_at(mut self, start: StartAt) -> Result<Self, Error> {
        let context = || format!("topic `{}` partition {}", self.topic, self.partition);
        let offset = match start {
            StartAt::Committed => Offset::Stored,
            StartAt::Beginning => Offset::Beginning,
            StartAt::Offset(o) => Offset::Offset(i64::try_from(o).map_err(|_| {
                Error::client(context(), KafkaError::Seek("offset out of range".into()))
            })?),
        };
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, self.partition, offset)
            .map_err(|e| Error::client(context(), e))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| Error::client(context(), e))?;
        self.next = match start {
            StartAt::Offset(o) => Some(o),
            _ => None,
        };
        Ok(self)
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
        if let Some(position) = self.next {
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
        let mut read = 0;
        while read < max_records {
            // Never block a timely worker: the dataflow backs off itself on `Idle`.
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => {
                    read += 1;
                    let offset = message.offset().unsigned_abs();
                    self.next = Some(offset + 1);
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
                    break;
                }
            }
        }
        self.report_lag();
        Ok(if read == 0 {
            ReadState::Idle
        } else {
            ReadState::More
        })
    }

    fn position(&self) -> Option<u64> {
        self.next
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
                let reader = KafkaPartitionReader::open(
                    &brokers,
                    &group_id,
                    &source_name,
                    &topic,
                    partition,
                    dead_letters.clone(),
                    stop.clone(),
                )
                .and_then(|r| r.start_at(options.start(&source_name, partition)))
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
