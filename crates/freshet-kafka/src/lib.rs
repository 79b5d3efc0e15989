//! freshet-kafka: the Kafka side of freshet, and the only crate that builds librdkafka.
//!
//! - [`reader`]: [`KafkaPartitionReader`], one assigned topic partition read as a
//!   [`freshet_features::source::PartitionReader`], and [`kafka_inputs`], the reader factory that
//!   spreads a topic's partitions over the timely workers (partition `p` → worker `p % peers`);
//! - [`sink`]: a shared [`KafkaProducer`] with the dead-letter and changelog sinks built on it;
//! - [`topics`]: the `topics/*.toml` files, and `apply`/`check` through the admin API;
//! - [`produce`]: loading JSON-lines files into a topic, keyed by entity, at a bounded rate;
//! - [`serving`]: request/response loops (`[[serving]]`): a request topic answered on a response
//!   topic, malformed requests to a dead-letter topic, offsets committed after acknowledgement.
//!
//! Every call that needs a broker waits at most [`client::CONNECT_TIMEOUT`] for it and then
//! fails with an error naming the address; nothing here hangs on an unreachable broker.

pub mod alerts;
pub mod client;
pub mod produce;
pub mod reader;
pub mod serving;
pub mod sink;
pub mod topics;

pub use client::Error;
pub use reader::{
    kafka_inputs, InputOptions, KafkaPartitionReader, LagProbe, OffsetCommitter, StartAt, StopFlag,
    Target,
};
pub use serving::{
    Reply, Request, RequestHandler, RequestLoop, RequestLoopBoard, RequestLoopConfig,
};
pub use sink::{dead_letter_topic, KafkaChangelogSink, KafkaDeadLetterSink, KafkaProducer};
pub use topics::{TopicAdmin, TopicDiff, TopicFile};
