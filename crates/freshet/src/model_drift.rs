//! Drift monitors over a model's streams, run inside its learner thread: `[[drift]]` features
//! `model.NAME.score` and `model.NAME.error` (docs/drift.md, "Model scores and errors").
//!
//! Every example the learner learns yields one value of each stream: the prequential score the
//! model gave it just before learning it, and its error ([`freshet_learn::Outcome`]), at the
//! example's *outcome time*, the event time at which its label became known:
//! - a label field of the example's own event: the event's time;
//! - a delayed label joined to it: the label event's time;
//! - an example learned as negative when its label did not come (`unlabeled = "negative"`): the
//!   end of its wait, its event time plus `max_delay` plus one millisecond (the instant the
//!   dataflow's join expires it).
//!
//! That time is [`freshet_features::model::ModelRow::outcome_ms`], set where the dataflow
//! releases the row.
//!
//! Guarantees: the dataflow releases a model's rows in order of outcome time, every row of one
//! time in the same release, so when a row of outcome time `t` reaches the learner every outcome
//! before `t` is known: `t` is the monitors' watermark. The monitors advance to it only once
//! every example made ready before it has been scored (values are held and ingested sorted by
//! time, then content), so windows, detectors and alerts are those of the outcome values in
//! event-time order, whatever the batching. Scoring is not moved: the learner batches exactly as
//! without monitors. The monitors advance only as rows come: a model that receives no row keeps
//! its last windows open until one comes or the input ends.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use freshet_core::event::Scalar;
use freshet_core::spec::PipelineSpec;
use freshet_features::drift::{load_plan_references, model_plans, ReferencePlan, StreamMonitors};
use freshet_features::DriftSink;
use freshet_learn::Outcome;

/// Where model-stream monitors deliver, and where their references come from.
#[derive(Clone)]
pub struct ModelStreams {
    /// The run's drift sink (drift.jsonl, the board, webhooks, the alert topic).
    pub sink: Arc<dyn DriftSink>,
    /// Directory that relative `file` reference paths are taken from (the pipeline's).
    pub base: std::path::PathBuf,
    /// Every reference is the whole input (`freshet drift snapshot`).
    pub whole_input: bool,
}

/// The model-stream monitors of one model (module doc), owned by its learner thread.
pub struct ModelDrift {
    monitors: StreamMonitors,
    sink: Arc<dyn DriftSink>,
    /// Outcome times of the examples waiting to be scored, in the order of the learner's queue.
    times: Vec<u64>,
    /// The latest watermark not yet passed to the monitors.
    watermark: Option<u64>,
    outcomes: Vec<Option<Outcome>>,
}

impl ModelDrift {
    /// The monitors of model `model` in `spec`; `None` when no monitor reads its streams.
    pub fn for_model(
        spec: &PipelineSpec,
        model: &str,
        streams: &ModelStreams,
    ) -> anyhow::Result<Option<Self>> {
        let drift: Vec<_> = spec.drift.iter().map(|d| d.get_ref()).collect();
        let mut plans = model_plans(&drift, model);
        if plans.is_empty() {
            return Ok(None);
        }
        if streams.whole_input {
            for p in &mut plans {
                p.reference = ReferencePlan::WholeInput;
            }
        } else {
            load_plan_references(plans.iter_mut(), &streams.base)?;
        }
        let monitors = StreamMonitors::new(plans.into_iter().map(Arc::new).collect())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("drift monitors of model `{model}`"))?;
        Ok(Some(Self {
            monitors,
            sink: streams.sink.clone(),
            times: Vec::new(),
            watermark: None,
            outcomes: Vec::new(),
        }))
    }

    /// An example joined the learner's queue with outcome time `ts_ms`.
    pub fn queued(&mut self, ts_ms: u64) {
        self.times.push(ts_ms);
    }

    /// The input reached event time `ts_ms` (a row or a label).
    pub fn saw(&mut self, ts_ms: u64) {
        self.monitors.saw(ts_ms);
    }

    /// A buffer for [`freshet_learn::Learner::prequential_outcomes`], emptied.
    pub fn outcome_buffer(&mut self) -> &mut Vec<Option<Outcome>> {
        self.outcomes.clear();
        &mut self.outcomes
    }

    /// The queued examples were scored (outcomes in [`ModelDrift::outcome_buffer`], in queue
    /// order): pushes their values, then passes the latest watermark on.
    pub fn scored(&mut self) -> anyhow::Result<()> {
        for (ts, outcome) in self.times.drain(..).zip(self.outcomes.drain(..)) {
            let Some(o) = outcome else {
                continue;
            };
            self.monitors.push(
                ts,
                vec![(0, Scalar::Num(o.score)), (1, Scalar::Num(o.error))],
            );
        }
        self.flush_watermark()
    }

    /// Every outcome before `watermark_ms` is known once the queued examples are scored;
    /// `queue_empty` says whether they already are.
    pub fn watermark(&mut self, watermark_ms: u64, queue_empty: bool) -> anyhow::Result<()> {
        self.watermark = Some(watermark_ms);
        if queue_empty {
            self.flush_watermark()?;
        }
        Ok(())
    }

    fn flush_watermark(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.watermark.take() {
            self.monitors
                .advance(w, &*self.sink)
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// End of input (after the last examples were scored): evaluates what is left.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.watermark = None;
        self.monitors
            .finish(&*self.sink)
            .map_err(anyhow::Error::msg)
    }
}

/// Whether any monitor of `spec` reads a model stream.
pub fn any(spec: &PipelineSpec) -> bool {
    spec.drift
        .iter()
        .any(|d| d.get_ref().model_refs().next().is_some())
}

/// The directory relative reference paths of `pipeline` are taken from.
pub fn base_of(pipeline: &Path) -> std::path::PathBuf {
    pipeline.parent().unwrap_or(Path::new(".")).to_path_buf()
}
