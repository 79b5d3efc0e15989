//! [`Learner`]: one model with its preprocessing, optimizer, prequential metrics, published
//! versions and checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use freshet_core::model::{DeviceSpec, ModelKind, ModelSpec};

use crate::error::LearnError;
use crate::example::{Example, Predictions};
use crate::head::{Head, Outcome};
use crate::linear::Linear;
use crate::metrics::{ModelSummary, Prequential};
use crate::net::Net;
use crate::registry::{Frozen, ModelRegistry, PublishedModel};

/// Which implementation trains a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// Linear kinds on the CPU use the native path; everything else candle.
    #[default]
    Auto,
    /// Always candle (tests compare it with the native path; never faster on the CPU).
    Candle,
}

/// Options of a learner that are not part of the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct LearnerOptions {
    /// Which implementation trains the model.
    pub engine: EngineChoice,
    /// Where checkpoints go (`<dir>/<model>.json` and its tensors); none: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
}

/// The implementation behind a learner.
#[allow(clippy::large_enum_variant)] // one per learner; a box would only add a hop per update
pub(crate) enum Engine {
    Linear(Linear),
    Net(Net),
}

impl Engine {
    fn score(&self, examples: &[Example], out: &mut Vec<f32>) -> Result<(), LearnError> {
        match self {
            Self::Linear(m) => {
                m.score(examples, out);
                Ok(())
            }
            Self::Net(m) => Ok(m.score(examples, out)?),
        }
    }

    /// One update from `examples`; appends their scores before the update to `scored` when
    /// given.
    fn learn(
        &mut self,
        examples: &[Example],
        scored: Option<&mut Vec<f32>>,
    ) -> Result<(), LearnError> {
        match self {
            Self::Linear(m) => {
                m.learn(examples, scored);
                Ok(())
            }
            Self::Net(m) => {
                if let Some(out) = scored {
                    m.score(examples, out)?;
                }
                Ok(m.learn(examples)?)
            }
        }
    }

    pub(crate) fn updates(&self) -> u64 {
        match self {
            Self::Linear(m) => m.updates,
            Self::Net(m) => m.updates,
        }
    }

    fn frozen(&self) -> Result<Frozen, LearnError> {
        Ok(match self {
            Self::Linear(m) => {
                let (scaler, weights) = m.frozen();
                Frozen::Linear(scaler, weights)
            }
            Self::Net(m) => {
                let (scaler, weights) = m.frozen()?;
                Frozen::Net(scaler, weights)
            }
        })
    }
}

/// The candle device of a spec; `cuda:N` without the `cuda` feature is a typed error.
pub fn select_device(spec: &ModelSpec) -> Result<Device, LearnError> {
    match spec.device {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            if cfg!(feature = "cuda") {
                Device::new_cuda(ordinal).map_err(|source| LearnError::Device {
                    model: spec.name.clone(),
                    device: spec.device,
                    source,
                })
            } else {
                Err(LearnError::BuiltWithoutCuda {
                    model: spec.name.clone(),
                    device: spec.device,
                })
            }
        }
    }
}

/// Checks that every example has one value per input.
pub(crate) fn check_inputs(examples: &[Example], inputs: usize) -> Result<(), LearnError> {
    match examples.iter().position(|e| e.values.len() != inputs) {
        Some(index) => Err(LearnError::FeatureCount {
            index,
            expected: inputs,
            got: examples[index].values.len(),
        }),
        None => Ok(()),
    }
}

/// What one [`Learner::prequential`] call did.
#[derive(Debug, Default)]
pub struct StepReport {
    /// Examples scored (and learned, or waiting in the current mini-batch).
    pub scored: usize,
    /// Updates applied.
    pub updates: u64,
    /// Examples skipped for an invalid label, with the first such error.
    pub rejected: usize,
    /// The first rejection.
    pub first_rejection: Option<LearnError>,
    /// A periodic checkpoint that failed (learning went on; the next one retries).
    pub checkpoint_error: Option<LearnError>,
}

/// One online model: preprocessing, weights, optimizer, prequential metrics, versions and
/// checkpoints. Not shared between threads; readers use its [`ModelRegistry`].
pub struct Learner {
    pub(crate) spec: ModelSpec,
    name: Arc<str>,
    pub(crate) inputs: Arc<[String]>,
    pub(crate) head: Head,
    pub(crate) engine: Engine,
    pub(crate) metrics: Prequential,
    /// Scored examples waiting for their mini-batch to fill.
    pub(crate) pending: Vec<Example>,
    pub(crate) version: u64,
    /// Examples learned (in applied updates).
    pub(crate) learned: u64,
    registry: ModelRegistry,
    /// The previously current version, reused by the next publication if no reader holds it.
    spare: Option<Arc<PublishedModel>>,
    checkpoint_dir: Option<PathBuf>,
    scores: Vec<f32>,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("model", &self.spec.name)
            .field("kind", &self.spec.kind)
            .field("version", &self.version)
            .field("updates", &self.engine.updates())
            .finish_non_exhaustive()
    }
}

impl Learner {
    /// A new, untrained learner for `spec` whose examples carry one value per name of `inputs`
    /// (the spec's features after [`ModelSpec::resolve_features`]). Publishes version 0.
    pub fn new(spec: &ModelSpec, inputs: Vec<String>) -> Result<Self, LearnError> {
        Self::with_options(spec, inputs, LearnerOptions::default())
    }

    /// [`Learner::new`] with options.
    pub fn with_options(
        spec: &ModelSpec,
        inputs: Vec<String>,
        options: LearnerOptions,
    ) -> Result<Self, LearnError> {
        spec.validate()?;
        let spec_error = |problem: String| freshet_core::model::ModelSpecError {
            model: spec.name.clone(),
            field: "features".to_owned(),
            problem,
        };
        if inputs.is_empty() {
            return Err(spec_error("no inputs after resolving the features".to_owned()).into());
        }
        if inputs.len() > 1 << 20 {
            return Err(spec_error(format!("{} inputs: at most 2^20", inputs.len())).into());
        }
        let device = select_device(spec)?;
        let native =
            spec.kind.is_linear() && device.is_cpu() && options.engine == EngineChoice::Auto;
        let engine = if native {
            Engine::Linear(Linear::new(spec, inputs.len()))
        } else {
            Engine::Net(Net::new(spec, inputs.len(), &device, DType::F32)?)
        };
        let head = Head::of(spec);
        let mut learner = Self {
            spec: spec.clone(),
            name: spec.name.as_str().into(),
            inputs: inputs.into(),
            head,
            engine,
            metrics: Prequential::new(head, spec.rolling_window),
            pending: Vec::new(),
            version: 0,
            learned: 0,
            registry: ModelRegistry::new(),
            spare: None,
            checkpoint_dir: options.checkpoint_dir,
            scores: Vec::new(),
        };
        learner.publish_current()?;
        Ok(learner)
    }

    /// Like [`Learner::with_options`], but continues from the checkpoint in
    /// `options.checkpoint_dir` when there is one.
    pub fn resume(
        spec: &ModelSpec,
        inputs: Vec<String>,
        options: LearnerOptions,
    ) -> Result<Self, LearnError> {
        let dir = options.checkpoint_dir.clone();
        let mut learner = Self::with_options(spec, inputs, options)?;
        if let Some(dir) = dir {
            if crate::checkpoint::exists(&dir, &spec.name) {
                crate::checkpoint::load(&mut learner, &dir)?;
                learner.publish_current()?;
            }
        }
        Ok(learner)
    }

    /// The spec the learner was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The model's kind.
    pub fn kind(&self) -> ModelKind {
        self.spec.kind
    }

    /// Input names, in the order of [`Example::values`].
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        self.engine.updates()
    }

    /// The latest published version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the model runs on the native CPU path (linear kinds on the CPU).
    pub fn is_native(&self) -> bool {
        matches!(self.engine, Engine::Linear(_))
    }

    /// The slot that serving reads the published versions from.
    pub fn registry(&self) -> ModelRegistry {
        self.registry.clone()
    }

    /// The prequential metrics.
    pub fn metrics(&self) -> &Prequential {
        &self.metrics
    }

    /// Scores of `examples` by the current weights (labels are ignored).
    pub fn predict(&self, examples: &[Example]) -> Result<Predictions, LearnError> {
        check_inputs(examples, self.inputs.len())?;
        let mut values = Vec::with_capacity(examples.len() * self.head.outputs());
        self.engine.score(examples, &mut values)?;
        Ok(Predictions {
            outputs: self.head.outputs(),
            values,
        })
    }

    /// One update from `examples` as one mini-batch (whatever `batch_size` says), without
    /// scoring them; publishes and checkpoints on schedule.
    pub fn learn(&mut self, examples: &[Example]) -> Result<(), LearnError> {
        check_inputs(examples, self.inputs.len())?;
        for (index, e) in examples.iter().enumerate() {
            self.head.check_label(index, e.label)?;
        }
        if examples.is_empty() {
            return Ok(());
        }
        self.engine.learn(examples, None)?;
        self.learned += examples.len() as u64;
        self.after_update()?;
        Ok(())
    }

    /// The prequential step: every example is scored by the model as it is, the score counts
    /// in the metrics, and the example joins the current mini-batch, which is learned once it
    /// holds `batch_size` examples. Examples with an invalid label are skipped and counted.
    pub fn prequential(&mut self, examples: &[Example]) -> Result<StepReport, LearnError> {
        self.prequential_inner(examples, None)
    }

    /// [`Learner::prequential`], also appending to `outcomes` one entry per example, in order:
    /// the [`Outcome`] (score and error) of its prequential score, or `None` for an example
    /// skipped for its label. Learning is the same as [`Learner::prequential`]'s.
    pub fn prequential_outcomes(
        &mut self,
        examples: &[Example],
        outcomes: &mut Vec<Option<Outcome>>,
    ) -> Result<StepReport, LearnError> {
        let mut valid = Vec::with_capacity(examples.len());
        let report = self.prequential_inner(examples, Some(&mut valid))?;
        if report.rejected == 0 {
            outcomes.extend(valid.into_iter().map(Some));
        } else {
            let mut valid = valid.into_iter();
            for (i, e) in examples.iter().enumerate() {
                let ok = self.head.check_label(i, e.label).is_ok();
                outcomes.push(if ok { valid.next() } else { None });
            }
        }
        Ok(report)
    }

    fn prequential_inner(
        &mut self,
        examples: &[Example],
        mut outcomes: Option<&mut Vec<Outcome>>,
    ) -> Result<StepReport, LearnError> {
        let started = Instant::now();
        check_inputs(examples, self.inputs.len())?;
        let mut report = StepReport::default();
        let invalid = examples
            .iter()
            .enumerate()
            .find_map(|(i, e)| self.head.check_label(i, e.label).err());
        let owned: Vec<Example>;
        let valid: &[Example] = match invalid {
            None => examples,
            Some(first) => {
                owned = examples
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| self.head.check_label(*i, e.label).is_ok())
                    .map(|(_, e)| e.clone())
                    .collect();
                report.rejected = examples.len() - owned.len();
                report.first_rejection = Some(first);
                &owned
            }
        };
        let batch = self.spec.batch_size;
        let updates_before = self.engine.updates();
        let mut rest = valid;
        while !rest.is_empty() {
            let take = (batch - self.pending.len()).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            self.scores.clear();
            if self.pending.is_empty() && take == batch {
                // A whole mini-batch in hand: one forward pass scores it and feeds the update.
                self.engine.learn(chunk, Some(&mut self.scores))?;
                self.metrics
                    .record(&self.scores, chunk.iter().map(|e| e.label));
                self.outcomes(chunk, outcomes.as_deref_mut());
            } else {
                self.engine.score(chunk, &mut self.scores)?;
                self.metrics
                    .record(&self.scores, chunk.iter().map(|e| e.label));
                self.outcomes(chunk, outcomes.as_deref_mut());
                self.pending.extend_from_slice(chunk);
                if self.pending.len() < batch {
                    continue;
                }
                let full = std::mem::take(&mut self.pending);
                self.engine.learn(&full, None)?;
                self.pending = full;
                self.pending.clear();
            }
            self.learned += batch as u64;
            if let Err(e) = self.after_update() {
                if report.checkpoint_error.is_none() {
                    report.checkpoint_error = Some(e);
                }
            }
        }
        report.scored = valid.len();
        report.updates = self.engine.updates() - updates_before;
        self.metrics.add_time(started.elapsed(), valid.len());
        Ok(report)
    }

    /// Appends the outcomes of `chunk` from the scores just computed for it.
    fn outcomes(&self, chunk: &[Example], out: Option<&mut Vec<Outcome>>) {
        let Some(out) = out else {
            return;
        };
        let k = self.head.outputs();
        out.extend(
            self.scores
                .chunks_exact(k)
                .zip(chunk)
                .map(|(row, e)| self.head.outcome(row, e.label)),
        );
    }

    /// Publishes and checkpoints when their schedules say so.
    fn after_update(&mut self) -> Result<(), LearnError> {
        let updates = self.engine.updates();
        if updates.is_multiple_of(self.spec.publish_every) {
            self.publish()?;
        }
        let every = self.spec.checkpoint_every;
        if every > 0 && updates.is_multiple_of(every) && self.checkpoint_dir.is_some() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Publishes the current weights as the next version now; returns its number.
    pub fn publish(&mut self) -> Result<u64, LearnError> {
        self.version += 1;
        self.publish_current()?;
        Ok(self.version)
    }

    fn publish_current(&mut self) -> Result<(), LearnError> {
        // The version replaced last time is recycled when no reader holds it any more: then
        // publishing copies the weights into its buffers and allocates nothing.
        let recycled = self.spare.take().and_then(|mut spare| {
            let model = Arc::get_mut(&mut spare)?;
            match (&mut model.frozen, &self.engine) {
                (Frozen::Linear(scaler, weights), Engine::Linear(m)) => {
                    m.refreeze(scaler, weights);
                }
                _ => return None,
            }
            model.version = self.version;
            model.updates = self.engine.updates();
            model.examples = self.learned;
            Some(spare)
        });
        let next = match recycled {
            Some(model) => model,
            None => Arc::new(PublishedModel {
                name: Arc::clone(&self.name),
                kind: self.spec.kind,
                version: self.version,
                updates: self.engine.updates(),
                examples: self.learned,
                inputs: Arc::clone(&self.inputs),
                frozen: self.engine.frozen()?,
            }),
        };
        self.spare = self.registry.swap(next);
        Ok(())
    }

    /// One models.jsonl line.
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            model: self.spec.name.clone(),
            version: self.version,
            updates: self.engine.updates(),
            cumulative: self.metrics.cumulative(),
            rolling: self.metrics.rolling(),
        }
    }

    /// Writes a checkpoint into the configured directory (call it at shutdown too); returns the
    /// metadata file.
    pub fn checkpoint(&mut self) -> Result<PathBuf, LearnError> {
        match self.checkpoint_dir.clone() {
            Some(dir) => self.checkpoint_to(&dir),
            None => Err(LearnError::NoCheckpointDir {
                model: self.spec.name.clone(),
            }),
        }
    }

    /// Writes a checkpoint into `dir`; returns the metadata file.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<PathBuf, LearnError> {
        crate::checkpoint::save(self, dir)
    }

    /// Replaces this learner's state by the checkpoint of its model in `dir` and republishes.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), LearnError> {
        crate::checkpoint::load(self, dir)?;
        self.publish_current()
    }

    /// The directory checkpoints go to.
    pub fn checkpoint_dir(&self) -> Option<&Path> {
        self.checkpoint_dir.as_deref()
    }
}
