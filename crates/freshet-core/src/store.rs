//! The online-store contract: feature vectors per view and entity, each valid as of an event time.
//!
//! Writes are idempotent upserts (a vector replaces the previous one; nothing is incremented), so
//! replaying the same updates leaves the same contents. A backend may expire entries on its own
//! after the view's TTL (wall time); the dataflow also deletes entities whose latest event is
//! older than the TTL in event time.

use std::sync::Arc;

use serde::Serialize;

/// One feature value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// No value (for example `mean` over an empty window).
    Null,
    /// A count.
    Int(i64),
    /// A real-valued aggregate.
    Float(f64),
    /// A boolean field value (`last`).
    Bool(bool),
    /// A string field value (`last`).
    Str(Arc<str>),
}

/// The features of one entity in one view.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    /// The head (event time, epoch ms) the values are valid as of.
    pub as_of_ms: u64,
    /// Values in the order of the view's [`ViewSchema::features`].
    pub values: Vec<FeatureValue>,
}

/// The shape of a view: its name and its features in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSchema {
    /// View name.
    pub name: String,
    /// Feature names, in value order.
    pub features: Vec<String>,
    /// Time to live in the store (event time), if the view sets one.
    pub ttl_ms: Option<u64>,
}

/// A change to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// Set the entity's vector.
    Upsert {
        /// Entity key.
        entity: String,
        /// The new vector.
        vector: FeatureVector,
    },
    /// Remove the entity (its TTL passed).
    Delete {
        /// Entity key.
        entity: String,
    },
}

/// Store failures, with whether retrying may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The view was never registered.
    #[error("unknown feature view `{0}`")]
    UnknownView(String),
    /// The backend could not be reached or failed; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the request; retrying will not help.
    #[error("store error: {0}")]
    Fatal(String),
}

impl StoreError {
    /// Whether the caller should back off and retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// An online store. Implementations are shared between dataflow workers (writers) and the
/// serving layer (readers), so every method takes `&self`.
pub trait OnlineStore: Send + Sync + 'static {
    /// Declares a view; idempotent. Must precede writes to the view.
    fn register_view(&self, schema: ViewSchema) -> Result<(), StoreError>;

    /// The schema of a registered view.
    fn view(&self, view: &str) -> Option<ViewSchema>;

    /// Names of every registered view.
    fn views(&self) -> Vec<String>;

    /// Applies a batch of writes to one view, in order.
    fn write_batch(&self, view: &str, writes: Vec<StoreWrite>) -> Result<(), StoreError>;

    /// The vector of one entity.
    fn get(&self, view: &str, entity: &str) -> Result<Option<FeatureVector>, StoreError>;

    /// The vectors of many entities, in the order asked, in one call.
    fn get_many(
        &self,
        view: &str,
        entities: &[&str],
    ) -> Result<Vec<Option<FeatureVector>>, StoreError>;

    /// Number of entities held for a view.
    fn len(&self, view: &str) -> Result<usize, StoreError>;

    /// Every entity and vector of a view, sorted by entity (for `replay` output and tests).
    fn scan(&self, view: &str) -> Result<Vec<(String, FeatureVector)>, StoreError>;
}
