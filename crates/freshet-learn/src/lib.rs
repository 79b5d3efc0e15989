//! freshet-learn: online models trained example by example as labels arrive, with prequential
//! metrics, published versions and checkpoints.
//!
//! What is where, and why:
//! - The linear kinds (`logistic_regression`, `linear_regression`, `softmax`) on the CPU run on
//!   a **native f32 path** ([`Learner::is_native`]): loops over slices, no tensors. A candle op
//!   costs microseconds of dispatch and allocation, which at one to 64 rows per update is
//!   hundreds of times the arithmetic; the native path reaches millions of rows per second on
//!   one core (docs/learning.md has the measured figures).
//! - The `mlp`, and every kind on `cuda:N`, run on **candle** tensors with candle's autograd;
//!   the linear kinds on candle are the same model as the native one (tests compare them).
//! - Checkpoints are safetensors files (written and read through candle) plus JSON metadata.
//!
//! Both paths share the preprocessing: running
//! standardisation (Welford, f64) of numbers, a learned weight (or embedding) for each missing
//! input, and categorical values hashed into buckets: weights in linear models, learned
//! embeddings summed per example in the `mlp`.
//!
//! Entry points: [`Learner`] (build from a [`ModelSpec`](freshet_core::model::ModelSpec) and the
//! resolved input names, then [`Learner::prequential`] per batch of labelled [`Example`]s,
//! [`Learner::summary`] for models.jsonl, [`Learner::checkpoint`] at shutdown) and its
//! [`ModelRegistry`] for serving. Delayed labels are joined to their examples upstream, in the
//! dataflow (freshet-features), so a learner only ever sees labelled examples.
//!
//! Devices: `cpu` always; `cuda:N` with the `cuda` cargo feature, otherwise
//! [`LearnError::BuiltWithoutCuda`].

mod checkpoint;
mod error;
mod example;
mod head;
mod learner;
mod linear;
mod metrics;
mod net;
mod optim;
mod preprocess;
mod registry;

#[cfg(test)]
mod tests;

pub use error::LearnError;
pub use example::{hash_category, Example, Predictions, Value};
pub use head::Outcome;
pub use learner::{select_device, EngineChoice, Learner, LearnerOptions, StepReport};
pub use metrics::{MetricValues, ModelSummary, Prequential, AUC_BINS};
pub use preprocess::Z_CLIP;
pub use registry::{ModelRegistry, PublishedModel};
