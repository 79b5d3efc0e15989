//! Client settings shared by consumers, producers and the admin client, and the crate's errors.
//!
//! Every client is created with bounded timeouts; the first broker round trip of each entry point
//! is a metadata request bounded by [`CONNECT_TIMEOUT`], so an unreachable broker is reported as
//! [`Error::Unreachable`] naming the address instead of a hang.

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

/// How long to wait for the brokers to answer the first request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Consumer group session timeout: short, so that a group forms and fails over quickly (the
/// broker's `group.min.session.timeout.ms` is 6000 by default, the floor this can go to).
pub const SESSION_TIMEOUT_MS: u32 = 6_000;
/// How long a produced message may wait for delivery before it is reported as failed.
pub const MESSAGE_TIMEOUT_MS: u32 = 30_000;

/// Why a Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No broker answered within the connect timeout.
    #[error("cannot reach Kafka brokers `{brokers}` within {}s: {error}", timeout.as_secs())]
    Unreachable {
        /// The bootstrap servers asked.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// What librdkafka reported (in the message, not as a source: its own source repeats it).
        error: KafkaError,
    },
    /// The topic is not on the brokers.
    #[error(
        "topic `{topic}` does not exist on `{brokers}` (create it with `freshet topics apply`)"
    )]
    NoSuchTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers asked.
        brokers: String,
    },
    /// A client could not be created or a request failed.
    #[error("{context}: {error}")]
    Client {
        /// What was being done.
        context: String,
        /// What librdkafka reported.
        error: KafkaError,
    },
    /// The broker refused an admin operation on one topic.
    #[error("topic `{topic}`: {operation} failed: {code}")]
    Admin {
        /// The topic.
        topic: String,
        /// The operation (`create`, `create partitions`, `describe configs`).
        operation: &'static str,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The producer's queue stayed full, or messages could not be delivered.
    #[error("produce to `{topic}`: {reason}")]
    Produce {
        /// The topic (`*` when about several).
        topic: String,
        /// What went wrong.
        reason: String,
        /// Whether sending again later may succeed (a full queue, undelivered messages), as
        /// opposed to a message the brokers will never take (too large, bad topic).
        retryable: bool,
    },
    /// A topic file is unreadable or invalid.
    #[error(transparent)]
    TopicFile(#[from] crate::topics::TopicFileError),
    /// A local file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl Error {
    /// Whether trying again later may succeed (the broker was away, a queue was full), as
    /// opposed to a mistake that retrying cannot fix (bad config, missing topic, bad file).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Produce { retryable, .. } => *retryable,
            Self::Client { error, .. } => error.rdkafka_error_code().is_some_and(is_transient_code),
            Self::Admin { code, .. } => is_transient_code(*code),
            Self::NoSuchTopic { .. } | Self::TopicFile(_) | Self::Io { .. } => false,
        }
    }

    pub(crate) fn client(context: impl Into<String>, error: KafkaError) -> Self {
        Self::Client {
            context: context.into(),
            error,
        }
    }
}

/// Whether a librdkafka or broker error code is worth retrying.
pub(crate) fn is_transient_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NetworkException
    )
}

/// How long a consumer's fetch may wait on the broker for records: the bound it adds to an
/// event's produce-to-visible time when the partition was idle.
pub const FETCH_WAIT_MAX_MS: u64 = 10;

/// Settings every client gets: the brokers and bounded connection set-up.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Topics come from `topics apply`, never from a typo in a topic name.
        .set("allow.auto.create.topics", "false")
        .set(
            "socket.connection.setup.timeout.ms",
            CONNECT_TIMEOUT.as_millis().to_string(),
        )
        // librdkafka logs connection failures itself at every retry; our errors say it once.
        .set("log_level", "3");
    config
}

/// Consumer settings: manual offset commits (freshet commits only what the store holds),
/// start at the earliest offset when the group has no committed one, short group timeouts.
pub fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut config = base_config(brokers);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("max.poll.interval.ms", SESSION_TIMEOUT_MS.to_string())
        // librdkafka's default (500 ms) is how long a fetch may wait on the broker for data; a
        // broker that holds fetches that long (tansu does) adds it to every event's freshness.
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string());
    config
}

/// Producer settings: acknowledged by all in-sync replicas, bounded delivery time.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = base_config(brokers);
    config
        .set("acks", "all")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("linger.ms", "5");
    config
}

/// Fetches metadata (of one topic, or of all), waiting at most `timeout` for the brokers.
pub fn fetch_metadata<C: ClientContext>(
    client: &Client<C>,
    brokers: &str,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata, Error> {
    client
        .fetch_metadata(topic, timeout)
        .map_err(|error| Error::Unreachable {
            brokers: brokers.to_owned(),
            timeout,
            error,
        })
}

/// The partition count of `topic`, or [`Error::NoSuchTopic`].
pub fn partition_count<C: ClientContext>(
    client: &Client<C>,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<u32, Error> {
    // Metadata of all topics: asking for one topic by name makes some brokers (tansu) create
    // it, whatever `allow.auto.create.topics` says.
    let metadata = fetch_metadata(client, brokers, None, timeout)?;
    let missing = || Error::NoSuchTopic {
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
    };
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(missing)?;
    if found.error().is_some() || found.partitions().is_empty() {
        return Err(missing());
    }
    u32::try_from(found.partitions().len()).map_err(|_| missing())
}
