//! Published model versions: immutable snapshots that serving reads with one atomic load while
//! the learner keeps training. A reader never sees half an update; a new version replaces the
//! old one with one atomic pointer swap, and the old one lives until its last reader drops it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use freshet_core::model::ModelKind;

use crate::error::LearnError;
use crate::example::{Example, Predictions};
use crate::linear::LinearWeights;
use crate::net::NetWeights;
use crate::preprocess::Scaler;

/// The frozen weights of a version.
#[derive(Debug, Clone)]
pub(crate) enum Frozen {
    Linear(Scaler, LinearWeights),
    Net(Scaler, NetWeights),
}

/// One immutable model version.
#[derive(Debug, Clone)]
pub struct PublishedModel {
    /// The model's name.
    pub name: Arc<str>,
    /// The model's kind.
    pub kind: ModelKind,
    /// Version number: 0 for the untrained model, then one more per publication.
    pub version: u64,
    /// Updates the version has learned.
    pub updates: u64,
    /// Examples the version has learned.
    pub examples: u64,
    /// Input names, in the order [`Example::values`] must follow.
    pub inputs: Arc<[String]>,
    pub(crate) frozen: Frozen,
}

impl PublishedModel {
    /// Scores of `examples` (labels are ignored).
    pub fn predict(&self, examples: &[Example]) -> Result<Predictions, LearnError> {
        crate::learner::check_inputs(examples, self.inputs.len())?;
        let mut values = Vec::with_capacity(examples.len() * self.outputs());
        match &self.frozen {
            Frozen::Linear(scaler, weights) => weights.score(scaler, examples, &mut values),
            Frozen::Net(scaler, weights) => weights.score(scaler, examples, &mut values)?,
        }
        Ok(Predictions {
            outputs: self.outputs(),
            values,
        })
    }

    /// Writes this version to `dir` as a version file, `<model>.v<version>.json` (metadata)
    /// next to `<model>.v<version>.safetensors` (weights and standardisation); returns the
    /// metadata path. [`PublishedModel::load`] reads it back, scoring bit for bit the same.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, LearnError> {
        crate::checkpoint::save_version(self, dir)
    }

    /// Reads a version file written by [`PublishedModel::save`] (its `.json` path); the weights
    /// are loaded on the CPU.
    pub fn load(path: &Path) -> Result<Self, LearnError> {
        crate::checkpoint::load_version(path)
    }

    /// The path [`PublishedModel::save`] writes version `version` of `model` to in `dir`.
    pub fn file_path(dir: &Path, model: &str, version: u64) -> PathBuf {
        crate::checkpoint::version_path(dir, model, version)
    }

    /// Scores per example: 1, or the number of classes.
    pub fn outputs(&self) -> usize {
        match &self.frozen {
            Frozen::Linear(_, w) => w.head.outputs(),
            Frozen::Net(_, w) => w.head.outputs(),
        }
    }
}

/// The current version of one model, shared between its learner and any number of readers.
/// Cloning gives another handle to the same slot.
#[derive(Debug, Clone, Default)]
pub struct ModelRegistry {
    slot: Arc<ArcSwapOption<PublishedModel>>,
}

impl ModelRegistry {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current version, if one was published.
    pub fn current(&self) -> Option<Arc<PublishedModel>> {
        self.slot.load_full()
    }

    /// The current version number, if one was published.
    pub fn version(&self) -> Option<u64> {
        self.slot.load().as_ref().map(|m| m.version)
    }

    /// Makes `model` current; returns the version it replaces.
    pub(crate) fn swap(&self, model: Arc<PublishedModel>) -> Option<Arc<PublishedModel>> {
        self.slot.swap(Some(model))
    }
}
