//! Online models in `freshet replay`: one learner thread per `[[model]]`, fed by the dataflow's
//! model operator with labelled examples in event-time order (delayed labels are joined in the
//! dataflow, see `freshet_features::model`), learning prequentially (predict, then learn) and
//! writing `models.jsonl`.
//!
//! The sink batches what the dataflow hands it and sends the batches over a bounded channel,
//! so the learner runs beside the timely workers and slows them down only when it falls behind.
//! Drift monitors over a model's scores and errors run in its learner thread
//! ([`crate::model_drift`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::model_drift::{ModelDrift, ModelStreams};
use anyhow::Context;
use freshet_core::event::Scalar;
use freshet_core::model::ModelSpec;
use freshet_core::spec::PipelineSpec;
use freshet_features::model::ModelRow;
use freshet_features::{JoinCounts, ModelSink};
use freshet_learn::{Example, Learner, LearnerOptions, ModelSummary, Value};

/// Items sent to a learner thread in one message.
const BATCH_ITEMS: usize = 1024;
/// Messages that may wait for a learner thread.
const CHANNEL_BATCHES: usize = 64;

enum Item {
    Row(ModelRow),
    Joins(JoinCounts),
    /// Learn what is ready, write a checkpoint, and report.
    Checkpoint(SyncSender<anyhow::Result<()>>),
}

/// Items waiting to be sent, and the sender (`None` once closed).
type Outbox = (Vec<Item>, Option<SyncSender<Vec<Item>>>);

struct Channel {
    sender: Mutex<Outbox>,
}

impl Channel {
    fn push(&self, item: Item, flush: bool) {
        let Ok(mut guard) = self.sender.lock() else {
            return;
        };
        let (buffer, sender) = &mut *guard;
        buffer.push(item);
        if flush || buffer.len() >= BATCH_ITEMS {
            if let Some(s) = sender {
                // a learner that stopped (error) drops its receiver: nothing more to do
                let _ = s.send(std::mem::take(buffer));
            }
        }
    }

    fn close(&self) {
        if let Ok(mut guard) = self.sender.lock() {
            let (buffer, sender) = &mut *guard;
            if let Some(s) = sender.take() {
                if !buffer.is_empty() {
                    let _ = s.send(std::mem::take(buffer));
                }
            }
        }
    }
}

/// What one learner thread reports at the end.
pub struct ModelReport {
    /// The models.jsonl line.
    pub summary: ModelSummary,
    /// Labels joined to an example (delayed labels).
    pub joined: u64,
    /// Labels that labelled no example: late (after `max_delay`), unknown key, or duplicate.
    pub unmatched: u64,
    /// Examples whose label did not come within `max_delay`.
    pub expired: u64,
    /// Examples still waiting for their label when the input ended.
    pub pending: u64,
    /// Examples skipped for an unusable label.
    pub rejected: u64,
}

/// The latest metrics of every model, updated by the learner threads after each step.
pub type Summaries = Arc<Mutex<HashMap<String, ModelSummary>>>;

/// The running counts of every delayed-label model's label join, as the dataflow last reported
/// them (zero until its first report).
pub type JoinBoard = Arc<Mutex<HashMap<String, JoinCounts>>>;

/// The [`ModelSink`] of a replay or the demo: one learner thread per model.
pub struct ModelRunner {
    channels: HashMap<String, Channel>,
    threads: Mutex<Vec<(String, JoinHandle<anyhow::Result<ModelReport>>)>>,
    summaries: Summaries,
    joins: JoinBoard,
    registries: HashMap<String, freshet_learn::ModelRegistry>,
    /// Rows handed to the learners so far.
    rows: std::sync::atomic::AtomicU64,
}

/// How [`ModelRunner::start`] runs the learners.
#[derive(Default, Clone, Copy)]
pub struct RunnerOptions<'a> {
    /// Each model resumes from its checkpoint in this directory, checkpoints every
    /// `checkpoint_every` updates (see `on_request`) and once more at the end.
    pub checkpoints: Option<&'a Path>,
    /// The learners checkpoint only when [`ModelRunner::checkpoint`] asks (and at the end), not
    /// every `checkpoint_every` updates, so that `freshet run` can tie their checkpoints to the
    /// dataflow's.
    pub on_request: bool,
    /// The drift monitors that read a model's score and error streams run in its learner
    /// thread ([`crate::model_drift`]) and deliver there; every caller that runs a pipeline's
    /// monitors should pass them.
    pub streams: Option<&'a ModelStreams>,
}

impl ModelRunner {
    /// Starts a learner thread for every model of `spec` (features already expanded), as
    /// `options` say.
    pub fn start(spec: &PipelineSpec, options: RunnerOptions<'_>) -> anyhow::Result<Self> {
        let RunnerOptions {
            checkpoints,
            on_request,
            streams,
        } = options;
        let mut channels = HashMap::new();
        let mut threads = Vec::new();
        let summaries: Summaries = Arc::default();
        let joins: JoinBoard = Arc::default();
        let mut registries = HashMap::new();
        for model in &spec.models {
            let mut m = model.get_ref().clone();
            if m.label.source.is_some() {
                if let Ok(mut board) = joins.lock() {
                    board.insert(m.name.clone(), JoinCounts::default());
                }
            }
            if on_request {
                m.checkpoint_every = 0;
            }
            let options = LearnerOptions {
                checkpoint_dir: checkpoints.map(Path::to_path_buf),
                ..LearnerOptions::default()
            };
            let learner = Learner::resume(&m, m.features.clone(), options)
                .with_context(|| format!("model `{}`", m.name))?;
            registries.insert(m.name.clone(), learner.registry());
            if let Ok(mut board) = summaries.lock() {
                board.insert(m.name.clone(), learner.summary());
            }
            let drift = match streams {
                Some(s) => ModelDrift::for_model(spec, &m.name, s)?,
                None => None,
            };
            let (tx, rx) = sync_channel(CHANNEL_BATCHES);
            let name = m.name.clone();
            let board = summaries.clone();
            let handle = std::thread::Builder::new()
                .name(format!("learn-{name}"))
                .spawn(move || learn(m, learner, rx, &board, drift))?;
            channels.insert(
                name.clone(),
                Channel {
                    sender: Mutex::new((Vec::new(), Some(tx))),
                },
            );
            threads.push((name, handle));
        }
        Ok(Self {
            channels,
            threads: Mutex::new(threads),
            summaries,
            joins,
            registries,
            rows: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Rows handed to the learners so far (a learner learns them in batches, and at every
    /// checkpoint).
    pub fn rows_handed(&self) -> u64 {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every model's registry of published versions (what serving reads), by model name.
    pub fn registries(&self) -> &HashMap<String, freshet_learn::ModelRegistry> {
        &self.registries
    }

    /// The latest metrics of every model.
    pub fn summaries(&self) -> Summaries {
        self.summaries.clone()
    }

    /// The latest counts of every delayed-label model's label join.
    pub fn joins(&self) -> JoinBoard {
        self.joins.clone()
    }

    /// Has every learner learn what it was handed so far and write its checkpoint; returns once
    /// all have, or with the first failure (`timeout` for each learner to answer).
    pub fn checkpoint(&self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let mut waiting = Vec::new();
        for (name, channel) in &self.channels {
            let (tx, rx) = sync_channel(1);
            channel.push(Item::Checkpoint(tx), true);
            waiting.push((name, rx));
        }
        for (name, rx) in waiting {
            rx.recv_timeout(timeout).map_err(|_| {
                anyhow::anyhow!("model `{name}`: the learner did not checkpoint within {timeout:?}")
            })??;
        }
        Ok(())
    }

    /// Waits for every learner and writes `models.jsonl` (one line per model) to `path`.
    pub fn finish(&self, path: &Path) -> anyhow::Result<Vec<ModelReport>> {
        let reports = self.join()?;
        let mut text = String::new();
        for r in &reports {
            text.push_str(&serde_json::to_string(&r.summary)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(reports)
    }

    /// Waits for every learner (end of input) and returns their reports.
    pub fn join(&self) -> anyhow::Result<Vec<ModelReport>> {
        for channel in self.channels.values() {
            channel.close();
        }
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .map_err(|_| anyhow::anyhow!("model runner poisoned"))?,
        );
        let mut reports = Vec::new();
        for (name, handle) in threads {
            let report = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the learner of model `{name}` panicked"))??;
            reports.push(report);
        }
        Ok(reports)
    }
}

impl ModelSink for ModelRunner {
    fn row(&self, model: &str, row: ModelRow) {
        if let Some(c) = self.channels.get(model) {
            self.rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            c.push(Item::Row(row), false);
        }
    }

    fn joins(&self, model: &str, counts: JoinCounts) {
        if let Ok(mut board) = self.joins.lock() {
            board.insert(model.to_owned(), counts);
        }
        if let Some(c) = self.channels.get(model) {
            c.push(Item::Joins(counts), false);
        }
    }

    fn end(&self, model: &str) {
        if let Some(c) = self.channels.get(model) {
            c.close();
        }
    }
}

/// A model input from a scalar: numbers as numbers, booleans as 0/1, strings as categories.
fn value(s: &Scalar) -> Value {
    match s {
        Scalar::Null => Value::Missing,
        Scalar::Num(n) => Value::Number(*n),
        Scalar::Bool(b) => Value::Number(f64::from(u8::from(*b))),
        Scalar::Str(s) => Value::category(s),
    }
}

/// A label from a scalar: numbers (and numeric strings) as they are, booleans as 0/1.
fn label_value(s: &Scalar) -> Option<f32> {
    match s {
        Scalar::Num(n) if n.is_finite() => Some(*n as f32),
        Scalar::Bool(b) => Some(f32::from(u8::from(*b))),
        Scalar::Str(s) => s.trim().parse::<f32>().ok().filter(|v| v.is_finite()),
        _ => None,
    }
}

/// Scores then learns `ready` (prequential), handing the scores to the model's drift monitors;
/// returns the examples rejected for their label.
fn step(
    learner: &mut Learner,
    ready: &mut Vec<Example>,
    model: &str,
    drift: Option<&mut ModelDrift>,
) -> anyhow::Result<u64> {
    if ready.is_empty() {
        return Ok(0);
    }
    let report = match drift {
        Some(d) => {
            let report = learner.prequential_outcomes(ready, d.outcome_buffer());
            let report = report.with_context(|| format!("model `{model}`"))?;
            d.scored()
                .with_context(|| format!("model `{model}`: drift"))?;
            report
        }
        None => learner
            .prequential(ready)
            .with_context(|| format!("model `{model}`"))?,
    };
    ready.clear();
    Ok(report.rejected as u64)
}

fn learn(
    spec: ModelSpec,
    mut learner: Learner,
    rx: Receiver<Vec<Item>>,
    board: &Summaries,
    mut drift: Option<ModelDrift>,
) -> anyhow::Result<ModelReport> {
    let mut joins = JoinCounts::default();
    let mut ready: Vec<Example> = Vec::new();
    let mut rejected = 0u64;
    for batch in rx {
        for item in batch {
            match item {
                Item::Row(row) => {
                    if let (Some(d), Some(_)) = (drift.as_mut(), &row.label) {
                        // the dataflow releases rows in order of outcome time
                        // (`ModelRow::outcome_ms`): every outcome before this one's is known.
                        // A row without a label (served requests) is no outcome and no clock.
                        d.saw(row.outcome_ms);
                        d.watermark(row.outcome_ms, ready.is_empty())?;
                    }
                    match row.label.as_ref().and_then(label_value) {
                        Some(label) => {
                            ready.push(Example {
                                values: row.values.iter().map(value).collect(),
                                label,
                            });
                            if let Some(d) = drift.as_mut() {
                                d.queued(row.outcome_ms);
                            }
                        }
                        None => rejected += 1,
                    }
                }
                Item::Joins(counts) => joins = counts,
                Item::Checkpoint(done) => {
                    let result = step(&mut learner, &mut ready, &spec.name, drift.as_mut());
                    let result = result.and_then(|r| {
                        rejected += r;
                        learner
                            .checkpoint()
                            .map(drop)
                            .with_context(|| format!("model `{}`: checkpoint", spec.name))
                    });
                    // the caller gone means it gave up waiting: nothing to report to
                    let _ = done.send(result);
                }
            }
            if ready.len() >= spec.batch_size.max(1) * 16 {
                rejected += step(&mut learner, &mut ready, &spec.name, drift.as_mut())?;
            }
        }
        if let Ok(mut b) = board.lock() {
            b.insert(spec.name.clone(), learner.summary());
        }
    }
    rejected += step(&mut learner, &mut ready, &spec.name, drift.as_mut())?;
    if let Some(d) = drift.as_mut() {
        d.finish()
            .with_context(|| format!("model `{}`: drift", spec.name))?;
    }
    learner
        .publish()
        .with_context(|| format!("model `{}`", spec.name))?;
    if learner.checkpoint_dir().is_some() {
        learner
            .checkpoint()
            .with_context(|| format!("model `{}`: final checkpoint", spec.name))?;
    }
    if let Ok(mut b) = board.lock() {
        b.insert(spec.name.clone(), learner.summary());
    }
    Ok(ModelReport {
        summary: learner.summary(),
        joined: joins.joined,
        unmatched: joins.unmatched,
        expired: joins.expired,
        pending: joins.pending,
        rejected,
    })
}

/// `freshet models ...`: the checkpoints in a models directory.
#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// One line per model checkpoint: name, version, updates, examples, metrics.
    List {
        /// The models directory (`replay --models-dir`).
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// A model's checkpoint metadata (spec, inputs, engine, metrics) as JSON.
    Show {
        /// Model name.
        name: String,
        /// The models directory.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Copies a model's checkpoint (metadata and safetensors weights) to another directory.
    Export {
        /// Model name.
        name: String,
        /// The models directory.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Destination directory (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Reads or sets a served model's traffic policy on a running `freshet run` or `freshet
    /// demo` (its admin endpoint; the token comes from `FRESHET_ADMIN_TOKEN` when set).
    /// `freshet run` keeps the change across restarts.
    Traffic {
        /// Model name.
        name: String,
        /// `latest`, `pin=N`, `canary=N:PERCENT`, `shadow=N`, `rollback`, or the policy's JSON
        /// (`{"pin": 12}`); none: print the policy and the held versions.
        policy: Option<String>,
        /// The server's HTTP address (`[serve] listen`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
}

fn read_meta(dir: &Path, name: &str) -> anyhow::Result<serde_json::Value> {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no checkpoint of model `{name}` ({})", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a model checkpoint", path.display()))
}

/// Runs `freshet models ...`.
pub fn models(command: &ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List { dir } => {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("{}", dir.display()))?
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json").map(str::to_owned)
                })
                .collect();
            names.sort();
            for name in names {
                let Ok(meta) = read_meta(dir, &name) else {
                    continue;
                };
                let summary = &meta["summary"];
                println!(
                    "{name}: version {}, updates {}, examples {}, engine {}, accuracy {}, logloss {}, auc {}",
                    meta["version"], meta["updates"], summary["examples"], meta["engine"],
                    summary["accuracy"], summary["logloss"], summary["auc"]
                );
            }
            Ok(())
        }
        ModelsCommand::Show { name, dir } => {
            println!("{}", serde_json::to_string_pretty(&read_meta(dir, name)?)?);
            Ok(())
        }
        ModelsCommand::Export { name, dir, out } => {
            let meta = read_meta(dir, name)?;
            let tensors = meta["tensors"].as_str().ok_or_else(|| {
                anyhow::anyhow!("model `{name}`: the metadata names no tensor file")
            })?;
            std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
            for file in [format!("{name}.json"), tensors.to_owned()] {
                std::fs::copy(dir.join(&file), out.join(&file))
                    .with_context(|| format!("copy {file} to {}", out.display()))?;
            }
            println!(
                "exported `{name}` version {} to {}",
                meta["version"],
                out.display()
            );
            Ok(())
        }
        ModelsCommand::Traffic { name, policy, addr } => {
            crate::serving::traffic::traffic_command(addr, name, policy.as_deref())
        }
    }
}
