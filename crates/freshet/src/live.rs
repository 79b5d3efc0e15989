//! Online models and Kafka serving in `freshet run`: the learner threads (the same
//! [`ModelRunner`] as `replay` and `demo`), their checkpoints in `--state-dir/models`, the HTTP
//! model endpoints over their registries, and the `[[serving]]` request loops.
//!
//! Checkpoints: at every dataflow checkpoint, once the cut is assembled (sources paused), each
//! learner learns every example handed to it so far and writes its checkpoint (weights,
//! optimizer state, metrics, the partial mini-batch) before the dataflow checkpoint is written
//! and the offsets are committed; at stop, the learners take the last examples the dataflow
//! releases and write a final checkpoint. A restart resumes every model from its checkpoint and
//! the dataflow from its own. What a checkpoint does not hold: examples still waiting for their
//! delayed label, and examples read before the cut but not yet released in event-time order
//! (within the allowed lateness of the head), so after a crash those are not learned; nothing
//! is learned twice.
//!
//! Served rows: every row a `predict` table of a delayed-label model serves goes to that model's
//! label join in the dataflow through [`ServedRows`] (see [`freshet_features::served`]), so a
//! label joins to the vector that was served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use freshet_core::spec::PipelineSpec;
use freshet_features::ServedRows;
use freshet_kafka::{RequestLoop, RequestLoopBoard, RequestLoopConfig};
use freshet_serve::AppState;

use crate::learn::ModelRunner;

/// How long a checkpoint waits for a learner to catch up and write.
const LEARNER_CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

/// The models of a live run.
pub struct LiveModels {
    runner: Arc<ModelRunner>,
    served: Arc<ServedRows>,
    state_dir: PathBuf,
    count: usize,
}

impl LiveModels {
    /// Starts a learner per `[[model]]`, each resumed from its checkpoint in `state_dir/models`
    /// when there is one; the drift monitors over their scores and errors run as `streams` say
    /// (delivering to the run's alert delivery).
    pub fn start(
        spec: &PipelineSpec,
        state_dir: &Path,
        streams: &crate::model_drift::ModelStreams,
    ) -> anyhow::Result<Self> {
        if let Some(m) = spec
            .models
            .iter()
            .map(|m| m.get_ref())
            .find(|m| m.features.iter().any(|f| f.contains('*')))
        {
            bail!(
                "model `{}`: `freshet run` needs the features named one by one (globs such as `source.x*` are expanded from replay input files)",
                m.name
            );
        }
        let dir = state_dir.join("models");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let runner = Arc::new(ModelRunner::start(
            spec,
            crate::learn::RunnerOptions {
                checkpoints: Some(&dir),
                on_request: true,
                streams: Some(streams),
            },
        )?);
        for (name, registry) in runner.registries() {
            tracing::info!(model = %name, version = registry.version().unwrap_or(0), "model learner started");
        }
        // the delayed-label models take the rows `[[serving]]` answers with into their joins
        let served = Arc::new(ServedRows::new(
            spec.models
                .iter()
                .map(|m| m.get_ref())
                .filter(|m| m.label.source.is_some())
                .map(|m| m.name.clone()),
        ));
        Ok(Self {
            runner,
            served,
            state_dir: state_dir.to_owned(),
            count: spec.models.len(),
        })
    }

    /// The sink the dataflow feeds.
    pub fn runner(&self) -> Arc<ModelRunner> {
        self.runner.clone()
    }

    /// The rows served to the delayed-label models' label joins (the dataflow's
    /// [`freshet_features::Outputs::served`]).
    pub fn served(&self) -> Arc<ServedRows> {
        self.served.clone()
    }

    /// `state` serving the models over HTTP, with their learning metrics in `/metrics`.
    pub fn serve(&self, spec: &PipelineSpec, state: AppState) -> anyhow::Result<AppState> {
        let mut state = state.with_learners(Arc::new(crate::serving::SummaryBoard::new(
            &self.runner,
            Some(self.served.clone()),
        )));
        if self.count > 0 {
            let registries = self.runner.registries();
            let scorer = crate::serving::RegistryScorer::new(spec, registries);
            let (starts, keeper) =
                crate::serving::traffic::serving_starts(spec, registries, Some(&self.state_dir))?;
            let keeper = keeper.map(|k| k as Arc<dyn freshet_core::serving::PolicyKeeper>);
            state = state
                .with_served_models(Arc::new(scorer), &starts, keeper)
                .map_err(|e| anyhow::anyhow!("[model.serving] traffic: {e}"))?;
            if let Some(token) = crate::serving::admin_token_from_env()? {
                state = state.with_admin_token(token);
            }
        }
        Ok(state)
    }

    /// Checkpoints every model (part of a dataflow checkpoint).
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        self.runner.checkpoint(LEARNER_CHECKPOINT_WAIT)
    }

    /// Waits for the learners (the dataflow has ended their input) and their final checkpoints;
    /// writes `models.jsonl` beside them.
    pub fn finish(&self) -> anyhow::Result<()> {
        let reports = self
            .runner
            .finish(&self.state_dir.join("models").join("models.jsonl"))?;
        for r in reports {
            tracing::info!(
                model = %r.summary.model,
                version = r.summary.version,
                examples = r.summary.cumulative.examples,
                "model checkpointed at stop"
            );
        }
        Ok(())
    }
}

/// The running `[[serving]]` loops.
pub struct KafkaServing {
    loops: Vec<(String, RequestLoop)>,
    stop: Arc<AtomicBool>,
}

impl KafkaServing {
    /// Starts a request loop per `[[serving]]` table; each reads with the consumer group
    /// `<group_id>.serving.<name>`.
    pub fn start(
        spec: &PipelineSpec,
        state: &AppState,
        models: &LiveModels,
        board: &RequestLoopBoard,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::new();
        let Some(kafka) = &spec.kafka else {
            return Ok(Self { loops, stop });
        };
        for table in spec.serving.iter().map(|t| t.get_ref()) {
            let config = RequestLoopConfig {
                name: table.name.clone(),
                brokers: kafka.brokers.clone(),
                group_id: format!("{}.serving.{}", kafka.group_id, table.name),
                request_topic: table.request_topic.clone(),
                response_topic: table.response_topic.clone(),
                dead_letter_topic: table.dead_letter_topic(),
                max_in_flight: table.max_in_flight,
                batch_size: table.batch_size,
            };
            let handler =
                crate::serving::kafka::handler(spec, table, state.clone(), Some(models.served()));
            let running = RequestLoop::start(config, handler, stop.clone(), board)
                .with_context(|| format!("serving `{}`", table.name))?;
            loops.push((table.name.clone(), running));
        }
        Ok(Self { loops, stop })
    }

    /// Stops the loops: each waits for its answers in flight and commits.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut errors = BTreeMap::new();
        for (name, running) in self.loops {
            if let Err(e) = running.join() {
                errors.insert(name, e);
            }
        }
        match errors.into_iter().next() {
            Some((name, e)) => Err(anyhow::anyhow!("serving `{name}`: {e}")),
            None => Ok(()),
        }
    }
}
