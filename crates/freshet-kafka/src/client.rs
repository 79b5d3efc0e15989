//! Client settings shared by consumers, producers and the admin client, and the crate's errors.
//!
//! Every client is created with bounded timeouts; the first broker round trip of each entry point
//! is a metadata request bounded by [`CONNECT_TIMEOUT`], so an unreachable broker is reported as
//! [`Error::Unreachable`] naming the address instead of a hang.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::TopicPartitionList;

/// How long to wait for the brokers to answer the first request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Consumer group session timeout: short, so that a group forms and fails over quickly (the
/// broker's `group.min.session.timeout.ms` is 6000 by default, the floor this can go to).
pub const SESSION_TIMEOUT_MS: u32 = 6_000;
/// How long a produced message may wait for delivery before it is reported as failed.
pub const MESSAGE_TIMEOUT_MS: u32 = 30_000;
/// How long [`Committer::commit`]'s callers wait for an offset commit to be answered.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

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
        // Reconnection attempts at least every second (librdkafka's default backs off to 10 s):
        // a partition reader reports the failed attempts as an outage, not idleness, and catches
        // up within a second of the brokers' return.
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX_MS.to_string(),
        );
    config
}

/// The longest wait between a consumer's reconnection attempts while the brokers are away.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;

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

/// A commit for the committer's thread, and where its result goes.
type CommitJob = (TopicPartitionList, Sender<KafkaResult<()>>);

/// Offset commits of one consumer on a thread of their own, so that the caller waits for an
/// answer at most as long as it chooses. librdkafka's synchronous commit waits without limit
/// while the group coordinator is away (a broker outage), and its asynchronous one reports
/// nothing back to a consumer without an offset-commit callback: a caller that keeps `/healthz`
/// up to date, watches for SIGTERM or must know whether its offsets landed can use neither
/// directly. One commit runs at a time; none is asked for while one is still unanswered, so
/// commits do not pile up behind a coordinator that is away.
pub struct Committer {
    jobs: Sender<CommitJob>,
    /// The result of the commit asked for last, while it has not been taken.
    running: Mutex<Option<Receiver<KafkaResult<()>>>>,
}

/// What became of the commit asked for last.
#[derive(Debug)]
pub enum CommitStatus {
    /// None asked for, or its result was taken already.
    Idle,
    /// Still waiting for the brokers.
    Running,
    /// Answered (taken now).
    Done(KafkaResult<()>),
}

impl Committer {
    /// A committer for `consumer`, whose thread is named `name`.
    pub fn new<C: rdkafka::consumer::ConsumerContext + 'static>(
        consumer: Arc<BaseConsumer<C>>,
        name: &str,
    ) -> Result<Self, Error> {
        let (jobs, requests) = channel::<CommitJob>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // ends once the committer is dropped and the commit under way returned
                for (offsets, reply) in requests {
                    let _ = reply.send(consumer.commit(&offsets, CommitMode::Sync));
                }
            })
            .map_err(|e| Error::Io {
                path: format!("{name} thread"),
                error: e,
            })?;
        Ok(Self {
            jobs,
            running: Mutex::new(None),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Receiver<KafkaResult<()>>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What became of the commit asked for last (a finished result is taken).
    pub fn status(&self) -> CommitStatus {
        let mut running = self.running();
        let Some(rx) = running.as_ref() else {
            return CommitStatus::Idle;
        };
        let result = match rx.try_recv() {
            Ok(result) => result,
            Err(TryRecvError::Empty) => return CommitStatus::Running,
            Err(TryRecvError::Disconnected) => {
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail))
            }
        };
        *running = None;
        CommitStatus::Done(result)
    }

    /// Asks for a commit of `offsets` without waiting for it, unless one is still running
    /// (then returns `false` and asks for nothing). A result not taken yet is dropped.
    pub fn start(&self, offsets: &TopicPartitionList) -> bool {
        let mut running = self.running();
        if let Some(rx) = running.as_ref() {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => return false,
                Ok(_) | Err(TryRecvError::Disconnected) => *running = None,
            }
        }
        let (reply, rx) = channel();
        if self.jobs.send((offsets.clone(), reply)).is_ok() {
            *running = Some(rx);
        }
        true
    }

    /// Commits `offsets` and waits for the answer at most `timeout`, counting the wait for a
    /// commit still running from before. A commit not answered in time goes on, and may still
    /// land later.
    pub fn commit(&self, offsets: &TopicPartitionList, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            Error::client(
                format!(
                    "commit offsets: no answer from the group coordinator within {}s",
                    timeout.as_secs_f32()
                ),
                KafkaError::ConsumerCommit(RDKafkaErrorCode::OperationTimedOut),
            )
        };
        let wait = |rx: &Receiver<KafkaResult<()>>| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        };
        let mut running = self.running();
        if let Some(rx) = running.as_ref() {
            match wait(rx) {
                Err(RecvTimeoutError::Timeout) => return Err(timed_out()),
                Ok(_) | Err(RecvTimeoutError::Disconnected) => *running = None,
            }
        }
        let (reply, rx) = channel();
        self.jobs.send((offsets.clone(), reply)).map_err(|_| {
            Error::client(
                "commit offsets: the committer thread is gone",
                KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail),
            )
        })?;
        match wait(&rx) {
            Ok(result) => result.map_err(|e| Error::client("commit offsets", e)),
            Err(RecvTimeoutError::Timeout) => {
                *running = Some(rx);
                Err(timed_out())
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::client(
                "commit offsets: the committer thread is gone",
                KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Offset;

    /// A port on which nothing listens (bound, then released).
    fn dead_brokers() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        format!("127.0.0.1:{port}")
    }

    #[test]
    fn a_commit_without_brokers_times_out_instead_of_blocking() {
        let consumer: BaseConsumer = consumer_config(&dead_brokers(), "commit-test")
            .create()
            .expect("consumer");
        let committer = Committer::new(Arc::new(consumer), "commit-test").expect("committer");
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("requests", 0, Offset::Offset(7))
            .expect("offsets");
        let started = Instant::now();
        let error = committer
            .commit(&offsets, Duration::from_millis(300))
            .expect_err("no coordinator to answer");
        assert!(error.is_retryable(), "{error}");
        assert!(error.to_string().contains("no answer"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // the first is still waiting: neither a second commit nor a background one piles up
        assert!(matches!(committer.status(), CommitStatus::Running));
        assert!(!committer.start(&offsets));
        let started = Instant::now();
        assert!(committer
            .commit(&offsets, Duration::from_millis(300))
            .is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
