//! freshet-store: online stores behind [`freshet_core::store::OnlineStore`].
//!
//! - [`memory`]: the embedded default, an in-process sharded map;
//! - [`open`]: the one registry that turns a pipeline's `[store]` section into a store.
//!
//! The dataflow writes through the trait and the serving layer reads through it, so neither
//! depends on a backend's client library.

pub mod memory;

use std::sync::Arc;

use freshet_core::spec::{StoreBackend, StoreSpec};
use freshet_core::store::OnlineStore;

pub use memory::MemoryStore;

/// Store backends this build can open, by their `[store] backend` name.
pub const AVAILABLE_BACKENDS: &[&str] = &["memory"];

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The pipeline names a backend that this build of freshet does not include yet.
    #[error(
        "the `{backend}` store backend is not built yet ({reason}); available backends: {}",
        AVAILABLE_BACKENDS.join(", ")
    )]
    NotBuilt {
        /// The backend named in the pipeline file.
        backend: &'static str,
        /// When it is expected and what to use meanwhile.
        reason: &'static str,
    },
}

/// Opens the online store a pipeline's `[store]` section asks for.
///
/// `memory` returns an empty [`MemoryStore`]; views are registered by the caller.
pub fn open(spec: &StoreSpec) -> Result<Arc<dyn OnlineStore>, OpenError> {
    match spec.backend {
        StoreBackend::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreBackend::Redis => Err(OpenError::NotBuilt {
            backend: "redis",
            reason: "it arrives with Kafka support; use backend = \"memory\" meanwhile",
        }),
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
    fn redis_backend_is_a_typed_not_built_error() {
        let spec = StoreSpec {
            backend: StoreBackend::Redis,
            url: Some("redis://127.0.0.1:6379/0".to_owned()),
        };
        let err = open(&spec).err().expect("redis is not built");
        assert!(matches!(
            err,
            OpenError::NotBuilt {
                backend: "redis",
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains("`redis` store backend is not built yet"),
            "{message}"
        );
        assert!(message.contains("available backends: memory"), "{message}");
    }
}
