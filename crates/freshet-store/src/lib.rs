//! freshet-store: online stores behind [`freshet_core::store::OnlineStore`].
//!
//! - [`memory`]: the embedded default, an in-process sharded map;
//! - [`redis`]: Redis or Redis Cluster, shared between processes (docs/redis.md);
//! - [`open`]: the one registry that turns a pipeline's `[store]` section into a store.
//!
//! The dataflow writes through the trait and the serving layer reads through it, so neither
//! depends on a backend's client library.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use freshet_core::spec::{StoreBackend, StoreSpec};
use freshet_core::store::{OnlineStore, StoreError};

pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore};

/// Store backends this build can open, by their `[store] backend` name.
pub const AVAILABLE_BACKENDS: &[&str] = &["memory", "redis"];

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The `[store]` section does not describe a usable Redis store.
    #[error("[store]: {0}")]
    RedisConfig(#[from] redis::ConfigError),
    /// The backend was configured but could not be reached or refused us;
    /// [`StoreError::is_retryable`] tells whether trying again later may help.
    #[error("[store]: {0}")]
    Store(#[from] StoreError),
}

impl OpenError {
    /// Whether retrying the open later may succeed (the server was unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}

/// Opens the online store a pipeline's `[store]` section asks for.
///
/// `memory` returns an empty [`MemoryStore`]; `redis` connects to `url` (and PINGs it) and sees
/// the views already registered there. Views are registered by the caller.
pub fn open(spec: &StoreSpec) -> Result<Arc<dyn OnlineStore>, OpenError> {
    match spec.backend {
        StoreBackend::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreBackend::Redis => {
            let url = spec.url.as_deref().ok_or(redis::ConfigError::MissingUrl)?;
            let mut config = RedisConfig::from_url(url)?;
            if let Some(prefix) = &spec.key_prefix {
                config = config.with_key_prefix(prefix.clone());
            }
            Ok(Arc::new(RedisStore::open(config)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_backend_opens_empty() {
        let store = open(&StoreSpec::default()).expect("memory opens");
        assert!(store.views().is_empty());
    }

    #[test]
    fn redis_without_url_is_a_config_error() {
        let spec = StoreSpec {
            backend: StoreBackend::Redis,
            url: None,
            key_prefix: None,
        };
        let err = open(&spec).err().expect("no url");
        assert!(matches!(
            err,
            OpenError::RedisConfig(redis::ConfigError::MissingUrl)
        ));
        assert!(!err.is_retryable());
    }

    #[test]
    fn unreachable_redis_is_a_retryable_open_error() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let spec = StoreSpec {
            backend: StoreBackend::Redis,
            url: Some("redis://127.0.0.1:1/0".to_owned()),
            key_prefix: None,
        };
        let err = open(&spec).err().expect("unreachable");
        assert!(err.is_retryable(), "{err}");
    }
}
