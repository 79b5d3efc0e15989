//! Errors of freshet-learn, with whether retrying can help.

use std::path::PathBuf;

use freshet_core::model::{DeviceSpec, ModelSpecError};

/// Why a learner could not be built, score, learn, publish or checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// The `[[model]]` table is invalid.
    #[error(transparent)]
    Spec(#[from] ModelSpecError),
    /// `cuda:N` was asked for but this binary has no CUDA backend.
    #[error("model `{model}`: device = \"{device}\" but freshet was built without CUDA (rebuild with the `cuda` feature)")]
    BuiltWithoutCuda {
        /// The model.
        model: String,
        /// The requested device.
        device: DeviceSpec,
    },
    /// The requested device exists in the build but could not be opened.
    #[error("model `{model}`: cannot open device {device}")]
    Device {
        /// The model.
        model: String,
        /// The requested device.
        device: DeviceSpec,
        /// What the backend said.
        source: candle_core::Error,
    },
    /// An example does not have one value per input of the model.
    #[error("example {index}: {got} feature values, the model has {expected} inputs")]
    FeatureCount {
        /// Position of the example in its batch.
        index: usize,
        /// The model's number of inputs.
        expected: usize,
        /// Values in the example.
        got: usize,
    },
    /// A label that the model kind cannot learn from (e.g. 0.5 for a binary classifier).
    #[error("example {index}: label {label} is invalid: expected {expected}")]
    InvalidLabel {
        /// Position of the example in its batch.
        index: usize,
        /// The label.
        label: f32,
        /// What the kind accepts.
        expected: String,
    },
    /// A tensor operation failed (device out of memory, driver error).
    #[error("tensor computation failed")]
    Tensor(#[from] candle_core::Error),
    /// A checkpoint file could not be read or written.
    #[error("checkpoint {}: i/o error", path.display())]
    CheckpointIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// [`Learner::checkpoint`](crate::Learner::checkpoint) without a checkpoint directory.
    #[error("model `{model}`: no checkpoint directory configured")]
    NoCheckpointDir {
        /// The model.
        model: String,
    },
    /// A checkpoint was read but is not usable by this model.
    #[error("checkpoint {}: {problem}", path.display())]
    CheckpointInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl LearnError {
    /// Whether the same call may succeed later (a full disk, a busy device); configuration and
    /// data errors never do.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::CheckpointIo { .. } | Self::Tensor(_))
    }
}
