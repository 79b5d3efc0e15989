//! The topic files in `topics/` and the admin operations that make the brokers match them.
//!
//! [`TopicFile`] is one `topics/<name>.toml` (format in `topics/README.md`). [`TopicAdmin::check`]
//! compares the brokers with the files: missing topics, partition counts, replication factors and
//! the configs the files set (with `retention` as `retention.ms`). [`TopicAdmin::apply`] creates
//! the missing topics and raises partition counts; it never lowers partitions, changes
//! replication or alters configs of an existing topic: those stay reported as differences.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use freshet_core::duration::HumanDuration;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::Deserialize;

use crate::client::{base_config, fetch_metadata, Error};

/// How long an admin request may take on the brokers.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The config key `retention` becomes.
pub const RETENTION_MS: &str = "retention.ms";

/// One `topics/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFile {
    /// Topic name.
    pub name: String,
    /// Partition count, at least 1.
    pub partitions: u32,
    /// Replicas per partition: 1 for a single broker, 3 in production.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: u16,
    /// How long messages are kept; becomes `retention.ms`.
    #[serde(default)]
    pub retention: Option<HumanDuration>,
    /// Event field used as the message key, so that one entity stays in one partition.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Event field holding the event time.
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// Other topic configs, passed to Kafka verbatim.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// The fields of each message's JSON object.
    #[serde(default)]
    pub schema: Option<TopicSchema>,
}

const fn default_replication_factor() -> u16 {
    1
}

/// `[schema]`: the fields of a topic's messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSchema {
    /// Declared fields; others are allowed and passed through.
    pub fields: Vec<SchemaField>,
}

/// One declared field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaField {
    /// Field name.
    pub name: String,
    /// JSON type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Must be present and not null.
    #[serde(default)]
    pub required: bool,
}

/// Field types of a topic schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A JSON integer.
    Integer,
    /// A JSON integer or float.
    Number,
    /// A JSON string.
    String,
    /// `true` or `false`.
    Boolean,
    /// Epoch milliseconds (integer) or an RFC 3339 string.
    Timestamp,
}

/// A topic file that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TopicFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (TOML errors name the line).
    pub message: String,
}

impl TopicFile {
    /// Reads and validates one topic file.
    pub fn load(path: &Path) -> Result<Self, TopicFileError> {
        let err = |message: String| TopicFileError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: Self = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        file.validate().map_err(err)?;
        Ok(file)
    }

    /// Cross-field checks (no I/O).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("`name` must not be empty".to_owned());
        }
        if self.partitions == 0 {
            return Err("`partitions` must be at least 1".to_owned());
        }
        if self.replication_factor == 0 {
            return Err("`replication_factor` must be at least 1".to_owned());
        }
        if self.retention.is_some() && self.configs.contains_key(RETENTION_MS) {
            return Err(format!(
                "`retention` and `[configs] \"{RETENTION_MS}\"` both set the retention; keep one"
            ));
        }
        if let Some(schema) = &self.schema {
            let kind_of = |name: &str| {
                schema
                    .fields
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.kind)
            };
            if let Some(key) = &self.key_field {
                match kind_of(key) {
                    Some(FieldType::String | FieldType::Integer) => {}
                    Some(other) => {
                        return Err(format!(
                        "`key_field = \"{key}\"`: must be a string or integer field, not {other:?}"
                    ))
                    }
                    None => return Err(format!("`key_field = \"{key}\"` is not a schema field")),
                }
            }
            if let Some(ts) = &self.event_time_field {
                match kind_of(ts) {
                    Some(FieldType::Timestamp) => {}
                    Some(other) => {
                        return Err(format!(
                        "`event_time_field = \"{ts}\"`: must be a timestamp field, not {other:?}"
                    ))
                    }
                    None => {
                        return Err(format!(
                            "`event_time_field = \"{ts}\"` is not a schema field"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The topic configs to set: `[configs]` plus `retention.ms` from `retention`.
    pub fn kafka_configs(&self) -> BTreeMap<String, String> {
        let mut configs = self.configs.clone();
        if let Some(retention) = self.retention {
            configs.insert(RETENTION_MS.to_owned(), retention.as_ms().to_string());
        }
        configs
    }
}

/// Reads every `*.toml` of `dir`, in name order; two files naming one topic is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<TopicFile>, TopicFileError> {
    let err = |message: String| TopicFileError {
        path: dir.to_owned(),
        message,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut files: Vec<TopicFile> = Vec::with_capacity(paths.len());
    for path in &paths {
        let file = TopicFile::load(path)?;
        if files.iter().any(|f| f.name == file.name) {
            return Err(TopicFileError {
                path: path.clone(),
                message: format!("topic `{}` is already described by another file", file.name),
            });
        }
        files.push(file);
    }
    Ok(files)
}

/// One way the brokers differ from a topic file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicDiff {
    /// The topic does not exist.
    Missing,
    /// Partition counts differ.
    Partitions {
        /// On the brokers.
        actual: u32,
        /// In the file.
        wanted: u32,
    },
    /// Replication factors differ.
    ReplicationFactor {
        /// On the brokers.
        actual: u16,
        /// In the file.
        wanted: u16,
    },
    /// A config set by the file has another value (or none) on the brokers.
    Config {
        /// Config key.
        key: String,
        /// On the brokers.
        actual: Option<String>,
        /// In the file.
        wanted: String,
    },
}

impl fmt::Display for TopicDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "missing"),
            Self::Partitions { actual, wanted } => {
                write!(
                    f,
                    "partitions: {actual} on the brokers, {wanted} in the file"
                )
            }
            Self::ReplicationFactor { actual, wanted } => write!(
                f,
                "replication factor: {actual} on the brokers, {wanted} in the file"
            ),
            Self::Config {
                key,
                actual,
                wanted,
            } => write!(
                f,
                "config `{key}`: {} on the brokers, `{wanted}` in the file",
                actual
                    .as_deref()
                    .map_or_else(|| "unset".to_owned(), |a| format!("`{a}`"))
            ),
        }
    }
}

/// What `apply` did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicAction {
    /// Created with this many partitions.
    Created {
        /// Topic.
        topic: String,
        /// Partitions.
        partitions: u32,
    },
    /// Partition count raised.
    PartitionsRaised {
        /// Topic.
        topic: String,
        /// Before.
        from: u32,
        /// After.
        to: u32,
    },
}

impl fmt::Display for TopicAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created { topic, partitions } => {
                write!(f, "{topic}: created with {partitions} partitions")
            }
            Self::PartitionsRaised { topic, from, to } => {
                write!(f, "{topic}: partitions raised from {from} to {to}")
            }
        }
    }
}

/// The state of one topic on the brokers.
struct Actual {
    partitions: u32,
    replication_factor: u16,
}

/// An admin client bound to one set of brokers.
pub struct TopicAdmin {
    admin: AdminClient<DefaultClientContext>,
    brokers: String,
    runtime: tokio::runtime::Runtime,
}

impl TopicAdmin {
    /// Creates an admin client and checks, within `timeout`, that the brokers answer.
    pub fn connect(brokers: &str, timeout: Duration) -> Result<Self, Error> {
        let admin: AdminClient<DefaultClientContext> = base_config(brokers)
            .create()
            .map_err(|e| Error::client("kafka admin client", e))?;
        fetch_metadata(admin.inner(), brokers, None, timeout)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Io {
                path: "tokio runtime".to_owned(),
                error: e,
            })?;
        Ok(Self {
            admin,
            brokers: brokers.to_owned(),
            runtime,
        })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT))
    }

    fn actual(&self) -> Result<BTreeMap<String, Actual>, Error> {
        let metadata = fetch_metadata(self.admin.inner(), &self.brokers, None, ADMIN_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let replicas = t.partitions().first().map_or(0, |p| p.replicas().len());
                (
                    t.name().to_owned(),
                    Actual {
                        partitions: u32::try_from(t.partitions().len()).unwrap_or(u32::MAX),
                        replication_factor: u16::try_from(replicas).unwrap_or(u16::MAX),
                    },
                )
            })
            .collect())
    }

    fn configs(&self, topic: &str) -> Result<BTreeMap<String, String>, Error> {
        let specifier = [ResourceSpecifier::Topic(topic)];
        let results = self
            .runtime
            .block_on(self.admin.describe_configs(&specifier, &Self::options()))
            .map_err(|e| Error::client(format!("describe configs of topic `{topic}`"), e))?;
        let mut configs = BTreeMap::new();
        for result in results {
            let resource = result.map_err(|code| Error::Admin {
                topic: topic.to_owned(),
                operation: "describe configs",
                code,
            })?;
            for entry in resource.entries {
                if let Some(value) = entry.value {
                    configs.insert(entry.name, value);
                }
            }
        }
        Ok(configs)
    }

    /// How each file's topic differs from the brokers; an empty list means it matches.
    pub fn check(&self, files: &[TopicFile]) -> Result<Vec<(String, Vec<TopicDiff>)>, Error> {
        let actual = self.actual()?;
        let mut report = Vec::with_capacity(files.len());
        for file in files {
            let diffs = match actual.get(&file.name) {
                None => vec![TopicDiff::Missing],
                Some(a) => self.diff(file, a)?,
            };
            report.push((file.name.clone(), diffs));
        }
        Ok(report)
    }

    fn diff(&self, file: &TopicFile, actual: &Actual) -> Result<Vec<TopicDiff>, Error> {
        let mut diffs = Vec::new();
        if actual.partitions != file.partitions {
            diffs.push(TopicDiff::Partitions {
                actual: actual.partitions,
                wanted: file.partitions,
            });
        }
        if actual.replication_factor != file.replication_factor {
            diffs.push(TopicDiff::ReplicationFactor {
                actual: actual.replication_factor,
                wanted: file.replication_factor,
            });
        }
        let wanted = file.kafka_configs();
        if !wanted.is_empty() {
            let configs = self.configs(&file.name)?;
            for (key, value) in wanted {
                let have = configs.get(&key);
                if have != Some(&value) {
                    diffs.push(TopicDiff::Config {
                        key,
                        actual: have.cloned(),
                        wanted: value,
                    });
                }
            }
        }
        Ok(diffs)
    }

    /// Creates missing topics and raises partition counts; returns what it did.
    pub fn apply(&self, files: &[TopicFile]) -> Result<Vec<TopicAction>, Error> {
        let actual = self.actual()?;
        let mut actions = Vec::new();
        for file in files {
            match actual.get(&file.name) {
                None => {
                    self.create(file)?;
                    actions.push(TopicAction::Created {
                        topic: file.name.clone(),
                        partitions: file.partitions,
                    });
                }
                Some(a) if a.partitions < file.partitions => {
                    self.raise_partitions(&file.name, file.partitions)?;
                    actions.push(TopicAction::PartitionsRaised {
                        topic: file.name.clone(),
                        from: a.partitions,
                        to: file.partitions,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(actions)
    }

    /// Creates the topic a file describes.
    pub fn create(&self, file: &TopicFile) -> Result<(), Error> {
        let configs = file.kafka_configs();
        let partitions = i32::try_from(file.partitions).unwrap_or(i32::MAX);
        let mut topic = NewTopic::new(
            &file.name,
            partitions,
            TopicReplication::Fixed(i32::from(file.replication_factor)),
        );
        for (key, value) in &configs {
            topic = topic.set(key, value);
        }
        let results = self
            .runtime
            .block_on(self.admin.create_topics([&topic], &Self::options()))
            .map_err(|e| Error::client(format!("create topic `{}`", file.name), e))?;
        check_results(results, "create")
    }

    /// Raises the partition count of `topic` to `partitions`.
    pub fn raise_partitions(&self, topic: &str, partitions: u32) -> Result<(), Error> {
        let request = NewPartitions::new(topic, partitions as usize);
        let results = self
            .runtime
            .block_on(self.admin.create_partitions([&request], &Self::options()))
            .map_err(|e| Error::client(format!("create partitions of topic `{topic}`"), e))?;
        check_results(results, "create partitions")
    }

    /// Deletes topics (tests clean up with it).
    pub fn delete(&self, topics: &[&str]) -> Result<(), Error> {
        let results = self
            .runtime
            .block_on(self.admin.delete_topics(topics, &Self::options()))
            .map_err(|e| Error::client("delete topics", e))?;
        check_results(results, "delete")
    }
}

fn check_results(
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
    operation: &'static str,
) -> Result<(), Error> {
    for result in results {
        if let Err((topic, code)) = result {
            return Err(Error::Admin {
                topic,
                operation,
                code,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_topic_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topics");
        let files = load_dir(&dir).expect("topics/ parses");
        let transactions = files
            .iter()
            .find(|f| f.name == "transactions")
            .expect("transactions.toml");
        assert_eq!(transactions.partitions, 4);
        assert_eq!(transactions.key_field.as_deref(), Some("card_id"));
        let configs = transactions.kafka_configs();
        assert_eq!(
            configs.get(RETENTION_MS).map(String::as_str),
            Some("604800000")
        );
        assert_eq!(
            configs.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
    }

    #[test]
    fn unknown_keys_and_bad_fields_are_refused_with_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "name = \"t\"\npartitions = 2\npartition = 3\n").expect("write");
        let err = TopicFile::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("line 3") && err.contains("partition"), "{err}");

        std::fs::write(
            &path,
            "name = \"t\"\npartitions = 1\nkey_field = \"ts\"\n[schema]\nfields = [{ name = \"ts\", type = \"timestamp\" }]\n",
        )
        .expect("write");
        let err = TopicFile::load(&path).expect_err("bad key").to_string();
        assert!(err.contains("key_field"), "{err}");

        std::fs::write(
            &path,
            "name = \"t\"\npartitions = 1\nretention = \"1d\"\n[configs]\n\"retention.ms\" = \"5\"\n",
        )
        .expect("write");
        let err = TopicFile::load(&path)
            .expect_err("retention twice")
            .to_string();
        assert!(err.contains("retention"), "{err}");
    }
}
