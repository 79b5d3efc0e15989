//! `freshet run`: the long-running service. Kafka sources, the online store, the changelog and
//! dead-letter topics, checkpoints and the HTTP API.
//!
//! Delivery: every `--checkpoint-interval` in which anything was read, a clock moved or a row
//! reached a learner, the dataflow is cut (see
//! `freshet_features::checkpoint`); at the cut every view has written its changed vectors to the
//! store (acknowledged) and handed its closed windows to the producer. The sources then read on,
//! while the cut is made durable: every changelog record and dead letter sent up to the cut is
//! acknowledged (the producer never gives a message up; records sent after the cut are not
//! waited for), the checkpoint (positions, partition clocks, window state) is written atomically
//! to `--state-dir`, and only then are the offsets committed to the consumer group. A restart loads
//! the checkpoint and reads each partition from its recorded position. SIGTERM or SIGINT takes
//! a final checkpoint (every vector written as of the final head) and exits.
//!
//! Models (`[[model]]`) learn on threads beside the dataflow and checkpoint with it into
//! `--state-dir/models`; `[[serving]]` tables answer Kafka request topics (see [`crate::live`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use freshet_core::drift::DriftBoard;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_features::checkpoint::{Checkpoint, Control};
use freshet_features::{Live, Outputs};
use freshet_kafka::client::CONNECT_TIMEOUT;
use freshet_kafka::{
    kafka_inputs, InputOptions, KafkaChangelogSink, KafkaDeadLetterSink, KafkaProducer, LagProbe,
    OffsetCommitter, StopFlag,
};
use freshet_serve::{AppState, HealthStatus};

/// Changed vectors are written to the store at most this often.
const LIVE_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// How often health and consumer lag are refreshed.
const TICK: Duration = Duration::from_millis(250);

fn parse_duration(s: &str) -> Result<Duration, String> {
    freshet_core::duration::HumanDuration::parse(s)
        .map(|d| Duration::from_millis(d.as_ms()))
        .map_err(|e| e.to_string())
}

/// Arguments of `freshet run`.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file (needs `[kafka]`).
    #[arg(long)]
    pipeline: PathBuf,
    /// Directory of the checkpoint (created if missing). Without a checkpoint, every partition
    /// is read from its beginning.
    #[arg(long, default_value = "freshet-state")]
    state_dir: PathBuf,
    /// How often to checkpoint and commit offsets (`500ms`, `5s`, ...); an interval in which
    /// nothing was read, no clock moved and no row reached a learner takes no checkpoint.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    checkpoint_interval: Duration,
    /// Worker threads (a checkpoint can only be restored with the same number).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Topic of the feature changelog (closed windows).
    #[arg(long, default_value = "freshet.changelog")]
    changelog_topic: String,
    /// Send every dead letter to this topic instead of `<source topic>.dead_letter`.
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Directory of topic files: a source topic's `[schema]` is checked on every event, and a
    /// violation goes to the dead-letter topic naming the field.
    #[arg(long, default_value = "topics")]
    topics_dir: PathBuf,
    /// Listen address of the HTTP API (default: `[serve] listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// Runs `freshet run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let spec = PipelineSpec::load(&args.pipeline)?;
    let Some(kafka) = spec.kafka.clone() else {
        bail!(
            "{}: `freshet run` reads Kafka: add a [kafka] section with `brokers`",
            args.pipeline.display()
        );
    };
    let mut plans = crate::replay::compile(&spec, &args.pipeline)?;
    let topics: BTreeMap<String, String> = spec
        .sources
        .iter()
        .map(|s| {
            let s = s.get_ref();
            (
                s.name.clone(),
                s.topic.clone().unwrap_or_else(|| s.name.clone()),
            )
        })
        .collect();
    add_schema_checks(&mut plans, &topics, &args.topics_dir)?;
    let restore = Checkpoint::load(&args.state_dir)?.map(Arc::new);
    match &restore {
        Some(cp) => {
            tracing::info!(epoch = cp.epoch, dir = %args.state_dir.display(), "restoring checkpoint")
        }
        None => {
            tracing::info!(dir = %args.state_dir.display(), "no checkpoint: reading every partition from the beginning")
        }
    }

    let store = freshet_store::open(&spec.store)
        .with_context(|| format!("{}: [store]", args.pipeline.display()))?;
    let metrics = Arc::new(PipelineMetrics::new());
    let producer = Arc::new(KafkaProducer::connect_durable(
        &kafka.brokers,
        CONNECT_TIMEOUT,
    )?);
    producer
        .partition_count(&args.changelog_topic)
        .context("changelog topic (create it with `freshet topics apply`)")?;
    let dead_letters = Arc::new(KafkaDeadLetterSink::new(
        producer.clone(),
        &topics,
        args.dead_letter_topic.clone(),
    ));
    let changelog = Arc::new(KafkaChangelogSink::new(
        producer.clone(),
        args.changelog_topic.clone(),
    ));
    let options = InputOptions {
        restore: restore.clone(),
        from_beginning: true,
        metrics: Some(metrics.clone()),
        fetch_wait: Some(kafka.fetch_wait.as_duration()),
    };
    let inputs = kafka_inputs(
        &kafka.brokers,
        &kafka.group_id,
        &topics,
        dead_letters.clone(),
        StopFlag::default(),
        &options,
    )?;
    let committer = OffsetCommitter::new(&kafka.brokers, &kafka.group_id, topics.clone())?;
    let lag = LagProbe::new(
        &kafka.brokers,
        &kafka.group_id,
        topics.values().cloned().collect(),
        metrics.clone(),
    )?;

    // HTTP
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = args.listen.unwrap_or(spec.serve.listen);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    let board = Arc::new(DriftBoard::new(&spec));
    // drift alerts (the board, the alert topics, webhooks), created before the models: the
    // monitors over model scores and errors deliver from the learner threads
    let delivery = crate::drift::AlertDelivery::start_live(
        &spec,
        Arc::new(BoardDrift {
            board: board.clone(),
        }),
        &producer,
    )?;
    let streams = crate::model_drift::ModelStreams {
        sink: delivery.sink(),
        base: crate::model_drift::base_of(&args.pipeline),
        whole_input: false,
    };
    let models = crate::live::LiveModels::start(&spec, &args.state_dir, &streams)?;
    let serving_board = Arc::new(freshet_kafka::RequestLoopBoard::default());
    let state = models
        .serve(
            &spec,
            AppState::new(store.clone(), metrics.clone()).with_drift(board.clone()),
        )?
        .with_kafka_serving(serving_board.clone());
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(freshet_serve::serve(listener, state.clone(), async {
        let _ = shutdown_rx.await;
    }));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    // after the signal handler: a SIGTERM while the loops connect still stops at a checkpoint
    let serving = crate::live::KafkaServing::start(&spec, &state, &models, &serving_board)?;

    // dataflow
    let control = Arc::new(Control::new());
    let outputs = Outputs {
        store,
        changelog,
        dead_letters,
        drift: delivery.sink(),
        models: models.runner(),
        metrics: metrics.clone(),
        flush_interval: LIVE_FLUSH_INTERVAL,
        served: Some(models.served()),
    };
    let live = Live {
        control: control.clone(),
        restore,
    };
    let workers = args.workers;
    let dataflow = std::thread::Builder::new()
        .name("dataflow".into())
        .spawn(move || freshet_features::run_live(plans, inputs, workers, outputs, live))?;
    eprintln!(
        "freshet run: {} source(s), http on {addr}, checkpoints in {} every {:?}",
        topics.len(),
        args.state_dir.display(),
        args.checkpoint_interval
    );

    let coordinator = Coordinator {
        control: &control,
        producer: &producer,
        committer: &committer,
        lag: &lag,
        state: &state,
        metrics: &metrics,
        dir: &args.state_dir,
        dataflow: &dataflow,
        models: &models,
    };
    let result = coordinator.drive(&stop, args.checkpoint_interval);
    let served = serving.stop();
    if result.is_err() {
        // let the dataflow go: its sources release their inputs at the next resume
        control.stop();
        control.resume(u64::MAX);
    }
    let flow = dataflow
        .join()
        .map_err(|_| anyhow::anyhow!("the dataflow thread panicked"))?;
    // windows closed after the last cut (in the activation that took it) are past the
    // checkpoint, so a restart would close them again; deliver them now all the same
    if let Err(e) = producer.finish(Duration::from_secs(30)) {
        tracing::warn!(error = %e, "changelog records after the last checkpoint not delivered");
    }
    // the dataflow ended the learners' input: they learn what it released last and checkpoint
    // (their drift monitors deliver the last windows before the alerts are drained)
    let learned = if flow.is_ok() {
        models.finish()
    } else {
        Ok(())
    };
    finish_alerts(&delivery);
    let _ = shutdown_tx.send(());
    let _ = runtime.block_on(server);
    result?;
    flow?;
    served?;
    learned?;
    eprintln!(
        "freshet run: stopped at a checkpoint ({} events)",
        PipelineMetrics::get(&metrics.events_total)
    );
    Ok(())
}

/// Adds the `[schema]` of each source topic's file in `dir` (if any) to the source's checks.
fn add_schema_checks(
    plans: &mut [freshet_features::plan::SourcePlan],
    topics: &BTreeMap<String, String>,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use freshet_core::event::{CheckedType, FieldCheck};
    use freshet_kafka::topics::FieldType;
    if !dir.is_dir() {
        return Ok(());
    }
    let files = freshet_kafka::topics::load_dir(dir)?;
    for plan in plans {
        let Some(topic) = topics.get(&plan.name) else {
            continue;
        };
        let Some(schema) = files
            .iter()
            .find(|f| &f.name == topic)
            .and_then(|f| f.schema.as_ref())
        else {
            continue;
        };
        plan.schema.checks = schema
            .fields
            .iter()
            .map(|f| FieldCheck {
                name: f.name.clone(),
                ty: match f.kind {
                    FieldType::Integer => CheckedType::Integer,
                    FieldType::Number => CheckedType::Number,
                    FieldType::String => CheckedType::String,
                    FieldType::Boolean => CheckedType::Boolean,
                    FieldType::Timestamp => CheckedType::Timestamp,
                },
                required: f.required,
            })
            .collect();
        tracing::info!(source = %plan.name, topic, fields = plan.schema.checks.len(), "checking the topic schema");
    }
    Ok(())
}

/// Drains the alert webhooks and reports alert deliveries that failed.
fn finish_alerts(delivery: &crate::drift::AlertDelivery) {
    for webhook in delivery.finish() {
        tracing::info!(%webhook, "drift webhook");
    }
    let failed = delivery.kafka_failed();
    if failed > 0 {
        tracing::warn!(failed, "drift alerts not produced to their alert topic");
    }
}

/// Keeps the board `/v1/drift` serves and logs each alert transition.
struct BoardDrift {
    board: Arc<DriftBoard>,
}

impl freshet_features::DriftSink for BoardDrift {
    fn reference(
        &self,
        monitor: &str,
        feature: &str,
        reference: &freshet_features::drift::FeatureReference,
    ) {
        self.board
            .reference_ready(monitor, feature, reference.kind(), reference.count());
    }

    fn window(&self, window: &freshet_core::drift::DriftWindow) {
        self.board.record_window(window);
    }

    fn alert(&self, alert: &freshet_core::drift::DriftAlert) {
        self.board.record_alert(alert);
        tracing::warn!(
            monitor = %alert.monitor,
            feature = %alert.feature,
            measure = alert.measure.name(),
            value = alert.value,
            threshold = alert.threshold,
            window_end_ms = alert.window_end_ms,
            state = ?alert.transition,
            "drift alert"
        );
    }
}

struct Coordinator<'a> {
    control: &'a Control,
    producer: &'a KafkaProducer,
    committer: &'a OffsetCommitter,
    lag: &'a LagProbe,
    state: &'a AppState,
    metrics: &'a PipelineMetrics,
    dir: &'a std::path::Path,
    dataflow:
        &'a std::thread::JoinHandle<Result<freshet_features::RunStats, freshet_features::RunError>>,
    models: &'a crate::live::LiveModels,
}

impl Coordinator<'_> {
    /// What the dataflow has read, where its clocks stand and what it handed the learners
    /// (they learn what is left of it at a checkpoint): while this stays the same, a checkpoint
    /// would hold the same positions and state as the last one.
    fn progress(&self) -> [i64; 6] {
        let m = self.metrics;
        let count = |c: &std::sync::atomic::AtomicU64| {
            i64::try_from(PipelineMetrics::get(c)).unwrap_or(i64::MAX)
        };
        [
            count(&m.events_total),
            count(&m.late_total),
            count(&m.rejected_total),
            m.head_ms.load(Ordering::Relaxed),
            m.watermark_ms.load(Ordering::Relaxed),
            i64::try_from(self.models.runner().rows_handed()).unwrap_or(i64::MAX),
        ]
    }

    /// Checkpoints every `interval` until `stop`, then takes the final checkpoint. An interval
    /// in which nothing was read, no clock moved and no row reached a learner takes none: the
    /// last checkpoint still holds, and an idle service does not pause its views and rewrite all
    /// window state every interval. (The progress is read before the cut, so records read while
    /// a checkpoint is taken count as progress for the next one.)
    fn drive(&self, stop: &AtomicBool, interval: Duration) -> anyhow::Result<()> {
        let mut next_checkpoint = Instant::now() + interval;
        let mut checkpointed: Option<[i64; 6]> = None;
        let mut next_lag = Instant::now();
        let mut broker_ok = true;
        loop {
            if self.dataflow.is_finished() {
                return Ok(()); // it failed; its error is reported by the caller
            }
            let stopping = stop.load(Ordering::Relaxed);
            if stopping {
                self.control.stop();
            }
            if stopping || Instant::now() >= next_checkpoint {
                let progress = self.progress();
                if stopping || checkpointed != Some(progress) {
                    self.checkpoint(&mut broker_ok)?;
                    checkpointed = Some(progress);
                }
                next_checkpoint = Instant::now() + interval;
                if stopping {
                    return Ok(());
                }
            }
            if Instant::now() >= next_lag {
                broker_ok = self.lag.refresh(Duration::from_secs(2)).is_ok();
                next_lag = Instant::now() + Duration::from_secs(1);
            }
            self.update_health(broker_ok, false);
            std::thread::sleep(TICK);
        }
    }

    /// One checkpoint: cut, wait for every part (the store may be down), resume the sources,
    /// wait for the delivery of the cut's changelog records and dead letters (the broker may be
    /// down), write, commit.
    fn checkpoint(&self, broker_ok: &mut bool) -> anyhow::Result<()> {
        let started = Instant::now();
        let epoch = self.control.start();
        let checkpoint = loop {
            if let Some(cp) = self.control.wait(TICK)? {
                break cp;
            }
            if self.dataflow.is_finished() {
                bail!("the dataflow stopped during checkpoint {epoch}");
            }
            self.update_health(*broker_ok, started.elapsed() > Duration::from_secs(5));
        };
        // every record the cut covers is queued: the sources read on while the cut is made
        // durable (delivered, written, committed), and only the cut's records are waited for
        let through = self.producer.advance_epoch();
        self.control.resume(epoch);
        loop {
            match self.producer.finish_through(through, TICK) {
                Ok(_) => break,
                Err(e) if e.is_retryable() && self.producer.stats().failed == 0 => {
                    *broker_ok = false;
                    self.update_health(false, true);
                }
                Err(e) => bail!("changelog/dead-letter delivery failed: {e}"),
            }
        }
        // models first: a crash between the two leaves them a little ahead of the dataflow
        // (the examples of one interval learned twice), never behind it
        self.models
            .checkpoint()
            .with_context(|| format!("checkpoint {epoch}: models"))?;
        checkpoint.write(self.dir)?;
        PipelineMetrics::add(&self.metrics.checkpoints_total, 1);
        // the checkpoint holds the positions a restart uses; the group's offsets follow it
        // (lag tools read them), so a failed commit is retried at the next checkpoint
        match self.committer.commit(&checkpoint) {
            Ok(latency) => {
                self.metrics.record_commit(latency);
                *broker_ok = true;
            }
            Err(e) => {
                tracing::warn!(epoch, error = %e, "offset commit failed, retried at the next checkpoint");
                *broker_ok = false;
            }
        }
        tracing::debug!(
            epoch,
            took_ms = started.elapsed().as_millis() as u64,
            "checkpoint"
        );
        Ok(())
    }

    fn update_health(&self, broker_ok: bool, stalled: bool) {
        let store_down = self.metrics.store_degraded.load(Ordering::Relaxed);
        let status = if broker_ok && !store_down && !stalled {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        };
        if self.state.health() != status {
            tracing::warn!(
                status = status.as_str(),
                broker_ok,
                store_down,
                stalled,
                "health changed"
            );
        }
        self.state.set_health(status);
    }
}
