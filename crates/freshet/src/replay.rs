//! `freshet replay`: the backfill and test mode. Reads JSON-lines files to the end at full speed
//! through the same dataflow as a live run, then writes the store as of the end of input.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_features::source::{FileReader, PartitionReader};
use freshet_features::{Outputs, ReaderFactory};
use serde_json::json;

use crate::output::{dump_features, peak_rss_bytes, DriftLines, JsonLines};

/// Replay writes changed vectors to the store at most this often; nothing reads the store
/// before the end of input, so fewer intermediate writes only save work.
const REPLAY_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Arguments of `freshet replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// The pipeline file.
    #[arg(long)]
    pipeline: PathBuf,
    /// `SOURCE=FILE.jsonl`; repeat for several files (each file is one partition).
    #[arg(long = "input", required = true, value_parser = parse_input)]
    inputs: Vec<(String, PathBuf)>,
    /// Directory for features.jsonl, changelog.jsonl, drift.jsonl and dead_letter.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Keep model checkpoints here: each model resumes from its checkpoint, checkpoints every
    /// `checkpoint_every` updates and at the end (`freshet models list --dir`).
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

pub fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected SOURCE=FILE"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("`{s}`: expected SOURCE=FILE"));
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

/// Builds reader factories: file `i` of a source is partition `i`, read by worker `i % peers`.
pub fn file_inputs(
    spec: &PipelineSpec,
    inputs: &[(String, PathBuf)],
) -> anyhow::Result<HashMap<String, ReaderFactory>> {
    let mut by_source: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for (name, path) in inputs {
        if spec.source(name).is_none() {
            let known: Vec<&str> = spec
                .sources
                .iter()
                .map(|s| s.get_ref().name.as_str())
                .collect();
            bail!(
                "--input {name}={}: the pipeline declares no source `{name}` (sources: {})",
                path.display(),
                known.join(", ")
            );
        }
        std::fs::metadata(path).with_context(|| format!("--input {name}={}", path.display()))?;
        by_source
            .entry(name.clone())
            .or_default()
            .push(path.clone());
    }
    Ok(by_source
        .into_iter()
        .map(|(name, paths)| {
            let factory: ReaderFactory = Arc::new(move |index, peers| {
                let mut parts = Vec::new();
                for (i, path) in paths.iter().enumerate() {
                    if i % peers == index {
                        let reader: Box<dyn PartitionReader> = Box::new(FileReader::open(path)?);
                        parts.push((i as u32, reader));
                    }
                }
                Ok(parts)
            });
            (name, factory)
        })
        .collect())
}

/// Runs `freshet replay`.
pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut spec = PipelineSpec::load(&args.pipeline)?;
    let inputs = file_inputs(&spec, &args.inputs)?;
    expand_globs(&mut spec, &args.inputs)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let store: Arc<dyn freshet_core::store::OnlineStore> =
        Arc::new(freshet_store::MemoryStore::new());
    let changelog = Arc::new(JsonLines::create(&args.out.join("changelog.jsonl"))?);
    let dead_letters = Arc::new(JsonLines::create(&args.out.join("dead_letter.jsonl"))?);
    let drift = Arc::new(DriftLines::create(&args.out.join("drift.jsonl"))?);
    let delivery = crate::drift::AlertDelivery::start(&spec, drift.clone())?;
    let streams = crate::model_drift::ModelStreams {
        sink: delivery.sink(),
        base: crate::model_drift::base_of(&args.pipeline),
        whole_input: false,
    };
    let models = Arc::new(crate::learn::ModelRunner::start(
        &spec,
        crate::learn::RunnerOptions {
            checkpoints: args.models_dir.as_deref(),
            streams: Some(&streams),
            ..Default::default()
        },
    )?);
    let metrics = Arc::new(PipelineMetrics::new());
    let outputs = Outputs {
        store: store.clone(),
        changelog: changelog.clone(),
        dead_letters: dead_letters.clone(),
        drift: delivery.sink(),
        models: models.clone(),
        metrics: metrics.clone(),
        flush_interval: REPLAY_FLUSH_INTERVAL,
        served: None,
    };
    let plans = compile(&spec, &args.pipeline)?;
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| spawn_progress(metrics.clone(), done.clone(), started));
    let result = freshet_features::run(plans, inputs, args.workers, outputs);
    done.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        let _ = handle.join();
    }
    let stats = result?;
    let reports = models.finish(&args.out.join("models.jsonl"))?;
    let seconds = started.elapsed().as_secs_f64();
    changelog.finish()?;
    dead_letters.finish()?;
    drift.finish()?;
    let webhooks = delivery.finish();
    dump_features(&*store, &args.out.join("features.jsonl"))?;
    let events = PipelineMetrics::get(&metrics.events_total);
    let mut summary = json!({
        "events": events,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "events_per_s": (events as f64 / seconds.max(1e-9)).round(),
        "late": PipelineMetrics::get(&metrics.late_total),
        "rejected": PipelineMetrics::get(&metrics.rejected_total),
        "closed_windows": PipelineMetrics::get(&metrics.closed_windows_total),
        "entities": stats.entities,
        "workers": args.workers,
        "peak_rss_mb": peak_rss_bytes().map(|b| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0),
    });
    if !reports.is_empty() {
        summary["models"] = reports
            .iter()
            .map(|r| {
                json!({"model": r.summary.model, "examples": r.summary.cumulative.examples,
                    "accuracy": r.summary.cumulative.accuracy, "labels_joined": r.joined,
                    "labels_unmatched": r.unmatched, "expired_unlabelled": r.expired,
                    "pending_at_end": r.pending,
                    "rejected": r.rejected})
            })
            .collect();
    }
    if !spec.drift.is_empty() {
        summary["drift_windows"] = drift.windows.load(Ordering::Relaxed).into();
        summary["drift_alerts"] = drift.alerts.load(Ordering::Relaxed).into();
    }
    if !webhooks.is_empty() {
        summary["webhooks"] = webhooks.into();
    }
    println!("{summary}");
    Ok(())
}

/// Expands glob model features (`samples.x*`) against the field names of the first event of
/// each source's first input file.
fn expand_globs(spec: &mut PipelineSpec, inputs: &[(String, PathBuf)]) -> anyhow::Result<()> {
    use std::io::BufRead;
    if !spec
        .models
        .iter()
        .any(|m| m.get_ref().features.iter().any(|f| f.contains('*')))
    {
        return Ok(());
    }
    let sample = |source: &str| -> Option<Vec<String>> {
        let (_, path) = inputs.iter().find(|(name, _)| name == source)?;
        let file = std::fs::File::open(path).ok()?;
        let line = std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .find(|l| !l.trim().is_empty())?;
        let value: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(value.as_object()?.keys().cloned().collect())
    };
    freshet_features::plan::expand_feature_globs(spec, &sample).map_err(anyhow::Error::msg)
}

/// Compiles `spec` and loads the pinned drift references it names (relative to the pipeline
/// file's directory).
pub fn compile(
    spec: &PipelineSpec,
    pipeline: &std::path::Path,
) -> anyhow::Result<Vec<freshet_features::plan::SourcePlan>> {
    let mut plans = freshet_features::plan::compile(spec);
    let base = pipeline.parent().unwrap_or(std::path::Path::new("."));
    freshet_features::drift::load_references(&mut plans, base)?;
    Ok(plans)
}

fn spawn_progress(
    metrics: Arc<PipelineMetrics>,
    done: Arc<AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let events = PipelineMetrics::get(&metrics.events_total);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{events} events ({:.0}/s), {} late, {} rejected   ",
                events as f64 / secs,
                PipelineMetrics::get(&metrics.late_total),
                PipelineMetrics::get(&metrics.rejected_total),
            );
        }
        eprintln!();
    })
}
