//! Configuration of the Redis backend: parsed from the pipeline's `[store] url`, checked without
//! I/O, and printed only with the password masked.

use std::fmt;
use std::time::Duration;

/// Key prefix of every key freshet writes, unless [`RedisConfig::with_key_prefix`] sets another.
pub const DEFAULT_KEY_PREFIX: &str = "freshet";

/// How long to wait for a TCP connection (and, for a cluster, the slot map) before the operation
/// fails with a retryable error.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for one request's reply. A timed-out connection is dropped (its late reply
/// would answer the wrong request) and the operation fails with a retryable error.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// URL scheme of a single Redis server (or a proxy in front of several).
pub const SCHEME_STANDALONE: &str = "redis";
/// URL scheme of a Redis Cluster: `redis+cluster://[user:pass@]host:port[,host:port...]`.
pub const SCHEME_CLUSTER: &str = "redis+cluster";

const TLS_SCHEMES: &[&str] = &["rediss", "rediss+cluster"];
const PASSWORD_MASK: &str = "***";

/// Where the Redis backend connects. Not `Debug`: the URLs hold the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server, `redis://[user[:pass]@]host[:port][/db]`, handed to the redis crate as is.
    Standalone(String),
    /// Seed nodes of a cluster, each as `redis://[user[:pass]@]host:port`.
    Cluster(Vec<String>),
}

/// The Redis backend's settings. `Debug` and `Display` mask the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub(crate) topology: Topology,
    /// The URL with its password replaced by `***`, for messages and logs.
    redacted_url: String,
    /// Prefix of every key; see docs/redis.md for the layout.
    pub(crate) key_prefix: String,
    /// Bound on establishing a connection.
    pub(crate) connect_timeout: Duration,
    /// Bound on each request's reply.
    pub(crate) io_timeout: Duration,
}

/// Why a Redis URL was refused. Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `[store] backend = "redis"` without a `url`.
    #[error("the redis store needs `url` in [store], e.g. url = \"redis://127.0.0.1:6379/0\"")]
    MissingUrl,
    /// `rediss://`: this build has no TLS support in its Redis client.
    #[error(
        "`{url}` asks for TLS, but this build of freshet has no TLS support for Redis; \
         use `redis://` (for example through a TLS-terminating proxy on localhost)"
    )]
    TlsNotBuilt {
        /// The URL, password masked.
        url: String,
    },
    /// A scheme other than `redis://` or `redis+cluster://`.
    #[error(
        "unsupported scheme `{scheme}` in redis url `{url}`; expected `{SCHEME_STANDALONE}://` \
         or `{SCHEME_CLUSTER}://`"
    )]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
        /// The URL, password masked.
        url: String,
    },
    /// The URL does not parse.
    #[error("invalid redis url `{url}`: {reason}")]
    Invalid {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RedisConfig {
    /// Parses and checks `url` without connecting.
    ///
    /// - `redis://[user[:password]@]host[:port][/db]`: one server (AUTH with the credentials,
    ///   SELECT db);
    /// - `redis+cluster://[user[:password]@]host:port[,host:port...]`: a Redis Cluster reached
    ///   through any of the listed seed nodes (the cluster has only db 0);
    /// - `rediss://`, `rediss+cluster://`: refused, this build has no TLS.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let redacted_url = redact(url);
        let invalid = |reason: &str| ConfigError::Invalid {
            url: redacted_url.clone(),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("expected `scheme://host:port`"));
        };
        if TLS_SCHEMES.contains(&scheme) {
            return Err(ConfigError::TlsNotBuilt { url: redacted_url });
        }
        let topology = match scheme {
            SCHEME_STANDALONE => {
                let (authority, _) = split_authority(rest);
                if host_part(authority).is_empty() {
                    return Err(invalid("no host"));
                }
                // The redis crate owns the grammar of a single-server URL (db, user, password,
                // percent-encoding); asking it here turns a typo into a config error at start-up.
                redis::Client::open(url).map_err(|e| invalid(&e.to_string()))?;
                Topology::Standalone(url.to_owned())
            }
            SCHEME_CLUSTER => Topology::Cluster(cluster_nodes(rest).map_err(|r| invalid(&r))?),
            other => {
                return Err(ConfigError::UnsupportedScheme {
                    scheme: other.to_owned(),
                    url: redacted_url,
                })
            }
        };
        Ok(Self {
            topology,
            redacted_url,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
        })
    }

    /// Uses `prefix` instead of [`DEFAULT_KEY_PREFIX`] for every key (tests use a fresh one each;
    /// two pipelines may share a database this way).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Bounds connecting and each reply; both default to 5 s.
    pub fn with_timeouts(mut self, connect: Duration, io: Duration) -> Self {
        self.connect_timeout = connect;
        self.io_timeout = io;
        self
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Whether this config talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url)
            .field("cluster", &self.is_cluster())
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url)
    }
}

/// Splits `rest` (after `scheme://`) into the authority and what follows it (`/db`, `?query`).
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

/// The `host:port[,host:port]` part of an authority, without `user:pass@`.
fn host_part(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts)
}

/// `url` with the password (if any) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all; it may still be a bare secret, so print none of it.
        return PASSWORD_MASK.to_owned();
    };
    let (authority, tail) = split_authority(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let masked = if userinfo.contains(':') || user.is_empty() {
                // `redis://:pass@` and `redis://user:pass@` carry a password; `redis://user@`
                // does not, and is printed as is.
                format!("{user}:{PASSWORD_MASK}")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Seed-node URLs from `[user[:pass]@]host:port[,host:port...][/0]`.
fn cluster_nodes(rest: &str) -> Result<Vec<String>, String> {
    let (authority, tail) = split_authority(rest);
    match tail {
        "" | "/" | "/0" => {}
        _ => {
            return Err(
                "a cluster URL takes no path, query or database other than /0 (a cluster has only db 0)"
                    .to_owned(),
            )
        }
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut nodes = Vec::new();
    for node in hosts.split(',') {
        let Some((host, port)) = node.rsplit_once(':') else {
            return Err(format!("cluster node `{node}` needs host:port"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("cluster node `{node}` needs host:port"));
        }
        let node_url = match userinfo {
            Some(userinfo) => format!("{SCHEME_STANDALONE}://{userinfo}@{node}"),
            None => format!("{SCHEME_STANDALONE}://{node}"),
        };
        redis::Client::open(node_url.as_str())
            .map_err(|e| format!("cluster node `{node}`: {e}"))?;
        nodes.push(node_url);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_url_parses_with_defaults() {
        let config = RedisConfig::from_url("redis://127.0.0.1:6379/0").expect("parses");
        assert!(!config.is_cluster());
        assert_eq!(config.key_prefix(), DEFAULT_KEY_PREFIX);
        assert_eq!(config.redacted_url(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn password_is_never_printed() {
        for url in [
            "redis://user:s3cret@127.0.0.1:6379/2",
            "redis://:s3cret@127.0.0.1:6379",
            "redis+cluster://user:s3cret@10.0.0.1:7000,10.0.0.2:7000",
        ] {
            let config = RedisConfig::from_url(url).expect("parses");
            for printed in [format!("{config}"), format!("{config:?}")] {
                assert!(!printed.contains("s3cret"), "{printed}");
                assert!(printed.contains("***"), "{printed}");
            }
        }
        let config = RedisConfig::from_url("redis://user:s3cret@h:1/0").expect("parses");
        assert_eq!(config.redacted_url(), "redis://user:***@h:1/0");
    }

    #[test]
    fn errors_do_not_print_the_password() {
        for url in [
            "rediss://user:s3cret@127.0.0.1:6379/0",
            "http://user:s3cret@127.0.0.1:6379/0",
            "redis://user:s3cret@127.0.0.1:notaport/0",
            "redis+cluster://user:s3cret@127.0.0.1/0",
            "s3cret",
        ] {
            let err = RedisConfig::from_url(url).expect_err(url);
            let printed = format!("{err} {err:?}");
            assert!(!printed.contains("s3cret"), "{printed}");
        }
    }

    #[test]
    fn tls_is_refused_with_a_clear_error() {
        let err = RedisConfig::from_url("rediss://127.0.0.1:6380/0").expect_err("no tls");
        assert!(matches!(err, ConfigError::TlsNotBuilt { .. }));
        assert!(err.to_string().contains("no TLS support"), "{err}");
    }

    #[test]
    fn cluster_url_lists_seed_nodes_with_credentials() {
        let config = RedisConfig::from_url("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001")
            .expect("parses");
        let expected = Topology::Cluster(vec![
            "redis://u:p@10.0.0.1:7000".to_owned(),
            "redis://u:p@10.0.0.2:7001".to_owned(),
        ]);
        assert!(config.topology == expected, "{config:?}");
        let err = RedisConfig::from_url("redis+cluster://10.0.0.1:7000/3").expect_err("db 3");
        assert!(err.to_string().contains("only db 0"), "{err}");
    }

    #[test]
    fn unknown_scheme_names_the_accepted_ones() {
        let err = RedisConfig::from_url("memcached://127.0.0.1:11211").expect_err("scheme");
        let message = err.to_string();
        assert!(message.contains("`redis://`"), "{message}");
        assert!(message.contains("`redis+cluster://`"), "{message}");
    }
}
