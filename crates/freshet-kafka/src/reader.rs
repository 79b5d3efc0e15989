//! Kafka partitions as [`PartitionReader`]s: one consumer per assigned topic partition.
//!
//! Assignment is static, as in Bytewax and Arroyo: partition `p` of a topic is read by timely
//! worker `p % peers`; no group rebalancing moves partitions under a running dataflow. A reader
//! starts at its group's committed offset for the partition, or at the earliest offset when there
//! is none. Offsets handed to the dataflow are Kafka offsets. Nothing is committed automatically:
//! [`KafkaPartitionReader::commit`] commits an offset once the caller knows that the writes it
//! covers have landed. A message without a payload (a tombstone) is sent to the dead letters.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use freshet_core::event::Rejection;
use freshet_features::source::{DeadLetter, PartitionReader, ReadState};
use freshet_features::{DeadLetterSink, ReaderFactory};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{consumer_config, partition_count, Error, CONNECT_TIMEOUT};

/// Set to make every reader sharing it report [`ReadState::End`] (a graceful stop).
pub type StopFlag = Arc<AtomicBool>;

/// Reads one topic partition with a consumer of its own.
pub struct KafkaPartitionReader {
    consumer: BaseConsumer,
    source: String,
    topic: String,
    partition: i32,
    dead_letters: Arc<dyn DeadLetterSink>,
    stop: StopFlag,
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
        })
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
        Ok(if read == 0 {
            ReadState::Idle
        } else {
            ReadState::More
        })
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
        let (dead_letters, stop) = (dead_letters.clone(), stop.clone());
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
                .map_err(io::Error::other)?;
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
