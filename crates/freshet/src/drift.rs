//! `freshet drift snapshot`: reads input files through the pipeline's drift monitors with the
//! whole input as every monitor's reference, and writes the frozen reference profiles to a file
//! that `reference = { kind = "file", path = ".." }` pins. And [`AlertDelivery`]: the sinks that
//! deliver alert transitions beyond drift.jsonl (webhooks, and in `freshet run` the alert
//! topics).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use freshet_core::drift::{DriftAlert, DriftWindow};
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_features::drift::{FeatureReference, ReferenceSnapshot, SNAPSHOT_FORMAT};
use freshet_features::source::DeadLetter;
use freshet_features::window::ClosedWindow;
use freshet_features::{ChangelogSink, DeadLetterSink, DriftSink, ModelSink, Outputs};
use freshet_kafka::alerts::KafkaAlertSink;
use freshet_kafka::KafkaProducer;
use serde_json::json;

use crate::learn::ModelRunner;
use crate::replay::{file_inputs, parse_input};
use crate::webhook::WebhookSink;

/// How long the end of a replay waits for webhooks to take the last alerts.
pub const WEBHOOK_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// The drift sink of a run: the given one, wrapped by one [`WebhookSink`] per distinct
/// `alert.webhook` URL (each delivering the transitions of the monitors that name it) and, in
/// `freshet run`, by a [`KafkaAlertSink`] producing to the monitors' `alert_topic`s.
pub struct AlertDelivery {
    sink: Arc<dyn DriftSink>,
    webhooks: Vec<Arc<WebhookSink>>,
    kafka: Option<Arc<KafkaAlertSink>>,
}

impl AlertDelivery {
    /// Starts the webhook threads `spec` asks for around `sink`.
    pub fn start(spec: &PipelineSpec, sink: Arc<dyn DriftSink>) -> anyhow::Result<Self> {
        let mut by_url: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
        for d in &spec.drift {
            let d = d.get_ref();
            if let Some(url) = &d.alert.webhook {
                by_url.entry(url).or_default().insert(d.name.clone());
            }
        }
        let mut sink = sink;
        let mut webhooks = Vec::new();
        for (url, monitors) in by_url {
            let webhook = Arc::new(
                WebhookSink::start(url, monitors, sink)
                    .with_context(|| format!("cannot start the webhook thread for {url}"))?,
            );
            sink = webhook.clone();
            webhooks.push(webhook);
        }
        Ok(Self {
            sink,
            webhooks,
            kafka: None,
        })
    }

    /// [`AlertDelivery::start`] for `freshet run`: alert transitions of the monitors that set
    /// `alert_topic` are also produced there through `producer` (checked to exist first), as
    /// JSON keyed by `monitor/feature` ([`KafkaAlertSink`]).
    pub fn start_live(
        spec: &PipelineSpec,
        sink: Arc<dyn DriftSink>,
        producer: &Arc<KafkaProducer>,
    ) -> anyhow::Result<Self> {
        let topics = KafkaAlertSink::topics(spec);
        let mut kafka = None;
        let mut sink = sink;
        if !topics.is_empty() {
            let distinct: BTreeSet<&String> = topics.values().collect();
            for topic in distinct {
                producer.partition_count(topic).with_context(|| {
                    format!("alert topic `{topic}` (create it with `freshet topics apply`)")
                })?;
            }
            let k = Arc::new(KafkaAlertSink::new(sink, producer.clone(), topics));
            sink = k.clone();
            kafka = Some(k);
        }
        let mut delivery = Self::start(spec, sink)?;
        delivery.kafka = kafka;
        Ok(delivery)
    }

    /// Alert transitions that could not be queued for the alert topics.
    pub fn kafka_failed(&self) -> u64 {
        self.kafka.as_ref().map_or(0, |k| k.failed())
    }

    /// The sink to give the dataflow.
    pub fn sink(&self) -> Arc<dyn DriftSink> {
        self.sink.clone()
    }

    /// Waits for the webhooks to deliver what is queued (up to [`WEBHOOK_DRAIN_DEADLINE`]);
    /// returns a JSON summary per webhook for the run's summary line (empty without webhooks).
    pub fn finish(&self) -> Vec<serde_json::Value> {
        use std::sync::atomic::Ordering::Relaxed;
        self.webhooks
            .iter()
            .map(|w| {
                let drained = w.finish(WEBHOOK_DRAIN_DEADLINE);
                json!({
                    "drained": drained,
                    "delivered": w.stats.delivered.load(Relaxed),
                    "failed": w.stats.failed.load(Relaxed),
                    "dropped": w.stats.dropped.load(Relaxed),
                    "retries": w.stats.retries.load(Relaxed),
                })
            })
            .collect()
    }
}

/// `freshet drift ...`.
#[derive(Subcommand)]
pub enum DriftCommand {
    /// Build reference profiles from input files and write them for `kind = "file"` references.
    Snapshot(SnapshotArgs),
}

/// Arguments of `freshet drift snapshot`.
#[derive(Args)]
pub struct SnapshotArgs {
    /// The pipeline file.
    #[arg(long)]
    pipeline: PathBuf,
    /// `SOURCE=FILE.jsonl`; repeat for several files (each file is one partition).
    #[arg(long = "input", required = true, value_parser = parse_input)]
    inputs: Vec<(String, PathBuf)>,
    /// The snapshot file to write (JSON).
    #[arg(long)]
    out: PathBuf,
}

/// Collects frozen references; ignores everything else.
#[derive(Default)]
struct Collector {
    snapshot: Mutex<ReferenceSnapshot>,
}

impl DriftSink for Collector {
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .monitors
            .entry(monitor.to_owned())
            .or_default()
            .insert(feature.to_owned(), reference.clone());
    }
    fn window(&self, _window: &DriftWindow) {}
    fn alert(&self, _alert: &DriftAlert) {}
}

impl ChangelogSink for Collector {
    fn write(&self, _windows: &[ClosedWindow]) {}
}

impl DeadLetterSink for Collector {
    fn write(&self, _letter: DeadLetter) {}
}

/// Runs `freshet drift ...`.
pub fn run(command: &DriftCommand) -> anyhow::Result<()> {
    match command {
        DriftCommand::Snapshot(args) => snapshot(args),
    }
}

fn snapshot(args: &SnapshotArgs) -> anyhow::Result<()> {
    let spec = PipelineSpec::load(&args.pipeline)?;
    if spec.drift.is_empty() {
        bail!(
            "{}: the pipeline declares no [[drift]] monitor",
            args.pipeline.display()
        );
    }
    let inputs = file_inputs(&spec, &args.inputs)?;
    let collector = Arc::new(Collector::default());
    // model streams: the learners run as in a replay, every reference the whole input
    let runner = if crate::model_drift::any(&spec) {
        let streams = crate::model_drift::ModelStreams {
            sink: collector.clone(),
            base: crate::model_drift::base_of(&args.pipeline),
            whole_input: true,
        };
        Some(Arc::new(ModelRunner::start(
            &spec,
            crate::learn::RunnerOptions {
                streams: Some(&streams),
                ..Default::default()
            },
        )?))
    } else {
        None
    };
    let models: Arc<dyn ModelSink> = match &runner {
        Some(r) => r.clone(),
        None => Arc::new(freshet_features::DiscardModels),
    };
    let mut plans = freshet_features::plan::compile(&spec);
    let monitored: HashSet<&str> = spec
        .drift
        .iter()
        .flat_map(|d| d.get_ref().feature_refs())
        .map(|(owner, _)| owner)
        .collect();
    for plan in plans.iter_mut().filter(|_| runner.is_none()) {
        // only the drift monitors matter here (and the models, whose views they read): views
        // run only when a monitor reads them
        plan.views
            .retain(|v| monitored.contains(v.schema.name.as_str()));
    }
    freshet_features::drift::reference_whole_input(&mut plans);
    let metrics = Arc::new(PipelineMetrics::new());
    let outputs = Outputs {
        store: Arc::new(freshet_store::MemoryStore::new()),
        changelog: collector.clone(),
        dead_letters: collector.clone(),
        drift: collector.clone(),
        models: models.clone(),
        metrics: metrics.clone(),
        flush_interval: Duration::from_secs(1),
        served: None,
    };
    let result = freshet_features::run(plans, inputs, 1, outputs);
    if let Some(runner) = &runner {
        runner.join()?;
    }
    result?;
    let mut snapshot = std::mem::take(
        &mut *collector
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    snapshot.format = SNAPSHOT_FORMAT.to_owned();
    let mut missing = Vec::new();
    for d in &spec.drift {
        let d = d.get_ref();
        for f in &d.features {
            let has = snapshot
                .monitors
                .get(&d.name)
                .is_some_and(|m| m.contains_key(f));
            if !has {
                missing.push(format!("{}/{f}", d.name));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "no usable value in the input for: {} (is the source given with --input?)",
            missing.join(", ")
        );
    }
    let text = serde_json::to_string(&snapshot)?;
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let features: Vec<serde_json::Value> = snapshot
        .monitors
        .iter()
        .flat_map(|(m, fs)| {
            fs.iter().map(move |(f, r)| {
                json!({"monitor": m, "feature": f, "kind": r.kind().name(), "count": r.count()})
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "out": args.out.display().to_string(),
            "events": PipelineMetrics::get(&metrics.events_total),
            "references": features,
        })
    );
    Ok(())
}
