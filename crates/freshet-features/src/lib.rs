//! freshet-features: windowed features per entity, computed by a timely dataflow.
//!
//! [`plan::compile`] turns a pipeline spec into per-source plans; [`run`] runs them on a number
//! of worker threads, writing feature vectors to an [`freshet_core::store::OnlineStore`], closed
//! windows to a [`ChangelogSink`], drift windows and alerts to a [`drift::DriftSink`], labelled
//! examples of online models to a [`ModelSink`] (delayed labels joined in the dataflow, see
//! [`model`]; rows a serving layer answered with join too, see [`served`]) and rejected or late
//! records to a [`DeadLetterSink`].
//!
//! Guarantees: event time drives every window; late events never change a window; the store
//! receives idempotent upserts only; results do not depend on the number of workers. The window
//! semantics are stated in [`window`] and in the README.

mod agg;
pub mod checkpoint;
mod dataflow;
pub mod drift;
mod join;
pub mod model;
pub mod plan;
pub mod served;
pub mod sketch;
pub mod source;
pub mod window;

pub use dataflow::{
    run, run_live, ChangelogSink, DeadLetterSink, Live, Outputs, Partitions, ReaderFactory,
    RunError, RunStats, DEFAULT_FLUSH_INTERVAL, READ_BATCH_RECORDS,
};
pub use drift::{DiscardDrift, DriftSink};
pub use model::{DiscardModels, JoinCounts, ModelSink};
pub use served::{ServedCounts, ServedRows};
