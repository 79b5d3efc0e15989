//! `freshet demo`: the pipeline of `deploy/pipelines/foundation.toml` plus a drift monitor
//! ([`DEMO_DRIFT`]), a fraud model ([`DEMO_MODEL`]) and ADWIN on its error ([`DEMO_MODEL_DRIFT`]),
//! on generated card transactions (zipf-distributed cards and merchants, 5 % out of order by up
//! to 3 s so some are late, a few malformed records, and a shift of amounts and countries during
//! the middle third of a `--duration` run, or from `--shift-at` to `--shift-back-at`), with the
//! embedded store, the HTTP API on 127.0.0.1, live progress, a few feature vectors and drift
//! alerts as they fire and clear.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use freshet_core::drift::{DriftAlert, DriftBoard, DriftWindow};
use freshet_core::generate::TxnGenerator;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_core::store::OnlineStore;
use freshet_core::HumanDuration;
use freshet_features::drift::FeatureReference;
use freshet_features::source::{PartitionReader, ReadState};
use freshet_features::{ChangelogSink, DeadLetterSink, DriftSink, Outputs, ReaderFactory};

use crate::output::{dead_letter_json, feature_json};

/// The drift monitor the demo adds to the foundation pipeline. Event time runs `--speed` (10)
/// times faster than wall time, so the reference is the first 12 s of wall time and a window 3 s.
/// The reference is four windows long because the chi-square test takes the reference
/// proportions as exact: its statistic is inflated by about 1 + window / reference under no
/// drift, and a reference as short as a window would give false alarms.
const DEMO_DRIFT: &str = r#"
[[drift]]
name = "card_drift"
features = ["transactions.amount", "transactions.country"]
reference = { kind = "first", duration = "2m" }
window = "30s"
methods = ["psi", "ks", "jensen_shannon", "wasserstein", "chi_square"]
alert = { psi = 0.2, ks_p = 0.001, chi_square_p = 0.001, fire_after = 2, clear_after = 3 }
"#;

/// A monitor of the demo's fraud model: ADWIN on its prequential error (`model.fraud.error`,
/// docs/drift.md), which fires when the error rate changes — as the model learns at the start,
/// and when the generator's shift changes what fraud looks like.
const DEMO_MODEL_DRIFT: &str = r#"
[[drift]]
name = "fraud_model"
features = ["model.fraud.error"]
reference = { kind = "first", duration = "2m" }
window = "30s"
methods = ["adwin"]
alert = { clear_after = 3 }
"#;

/// The foundation acceptance example; the demo appends [`DEMO_DRIFT`] to it.
/// The fraud model the demo trains as traffic flows: the generator marks each transaction
/// `is_fraud` (more likely for large amounts and some countries), an immediate label.
const DEMO_MODEL: &str = r#"
[[model]]
name = "fraud"
kind = "logistic_regression"
features = ["card.txn_count_5m", "card.amount_mean_1h", "card.amount_std_1h", "card.merchants_1h", "transactions.amount", "transactions.country"]
label = { field = "is_fraud" }
optimizer = { kind = "ftrl", alpha = 0.05, beta = 1.0, l1 = 0.0, l2 = 1.0 }
batch_size = 64
rolling_window = 2000
"#;

const FOUNDATION_PIPELINE: &str = include_str!("../../../deploy/pipelines/foundation.toml");

/// Arguments of `freshet demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// HTTP port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Stop after this long (e.g. `30s`); without it, run until Ctrl-C.
    #[arg(long, value_parser = HumanDuration::parse)]
    duration: Option<HumanDuration>,
    /// Generated events per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// Distinct cards.
    #[arg(long, default_value_t = 500)]
    cards: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Event time runs this many times faster than wall time, so that minutes of windows
    /// open and close within a short demo.
    #[arg(long, default_value_t = 10)]
    speed: u32,
    /// Shift amounts and countries this long (wall time) after the start. Default: a third of
    /// `--duration`; without `--duration`, every other minute.
    #[arg(long, value_parser = HumanDuration::parse)]
    shift_at: Option<HumanDuration>,
    /// Shift back to the reference distribution this long after the start (after
    /// `--shift-at`). Default: two thirds of `--duration`; never, when only `--shift-at` is
    /// given without `--duration`.
    #[arg(long, value_parser = HumanDuration::parse)]
    shift_back_at: Option<HumanDuration>,
}

/// When the generator's distribution is shifted, as offsets from the start (wall time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shift {
    /// Shifted in `[from, to)` (`to`: `None`, for good).
    Between(Duration, Option<Duration>),
    /// Shifted every other minute.
    Alternating,
}

impl Shift {
    fn of(args: &DemoArgs) -> anyhow::Result<Self> {
        let duration = args.duration.map(|d| d.as_duration());
        let at = args.shift_at.map(|d| d.as_duration());
        let back = args.shift_back_at.map(|d| d.as_duration());
        let shift = match (at, back, duration) {
            (None, None, None) => Self::Alternating,
            (None, None, Some(d)) => Self::Between(d / 3, Some(d * 2 / 3)),
            (Some(a), back, _) => Self::Between(a, back),
            (None, Some(_), _) => anyhow::bail!("--shift-back-at needs --shift-at"),
        };
        if let Self::Between(a, Some(b)) = shift {
            anyhow::ensure!(b > a, "--shift-back-at must come after --shift-at");
        }
        Ok(shift)
    }

    fn describe(self) -> String {
        match self {
            Self::Alternating => "every other minute".to_owned(),
            Self::Between(a, None) => format!("from {:.0}s on", a.as_secs_f64()),
            Self::Between(a, Some(b)) => format!(
                "from {:.0}s, back at {:.0}s",
                a.as_secs_f64(),
                b.as_secs_f64()
            ),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Generates transactions paced to wall time.
struct Generator {
    events: TxnGenerator,
    rate: f64,
    speed: f64,
    base_ms: u64,
    started: Instant,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    produced: u64,
    line: Vec<u8>,
    shift: Shift,
    /// Whether the last batch was shifted (to announce changes).
    was_shifted: bool,
}

impl Generator {
    /// Whether events are generated shifted now ([`Shift`]).
    fn shifted(&self) -> bool {
        let elapsed = self.started.elapsed();
        match self.shift {
            Shift::Between(from, to) => elapsed >= from && to.is_none_or(|t| elapsed < t),
            Shift::Alternating => (elapsed.as_secs() / 60) % 2 == 1,
        }
    }
}

impl PartitionReader for Generator {
    fn read(&mut self, max: usize, record: &mut dyn FnMut(u64, &[u8])) -> io::Result<ReadState> {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ReadState::End);
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let due = (elapsed * self.rate) as u64;
        let n = due.saturating_sub(self.produced).min(max as u64);
        let shifted = self.shifted();
        if shifted != self.was_shifted {
            self.was_shifted = shifted;
            println!(
                "[{:>5.1}s] generator: {} (event time {})",
                elapsed,
                if shifted {
                    "SHIFTED amounts and countries"
                } else {
                    "shifted BACK to the reference distribution"
                },
                self.base_ms + (elapsed * self.speed * 1000.0) as u64
            );
        }
        let ts_ms = self.base_ms + (elapsed * self.speed * 1000.0) as u64;
        for _ in 0..n {
            self.produced += 1;
            self.line.clear();
            self.events.write_event(ts_ms, shifted, &mut self.line);
            record(self.produced, &self.line);
        }
        Ok(if n == 0 {
            ReadState::Idle
        } else {
            ReadState::More
        })
    }
}

struct CountingSink {
    changelog: std::sync::atomic::AtomicU64,
    shown: std::sync::atomic::AtomicU64,
}

impl ChangelogSink for CountingSink {
    fn write(&self, windows: &[freshet_features::window::ClosedWindow]) {
        self.changelog
            .fetch_add(windows.len() as u64, Ordering::Relaxed);
    }
}

impl DeadLetterSink for CountingSink {
    fn write(&self, letter: freshet_features::source::DeadLetter) {
        if self.shown.fetch_add(1, Ordering::Relaxed) < 3 {
            println!("dead letter: {}", dead_letter_json(&letter));
        }
    }
}

/// Prints drift references and alert transitions as they happen and keeps the board that
/// `/v1/drift` serves.
struct DemoDrift {
    board: Arc<DriftBoard>,
    started: Instant,
}

impl DriftSink for DemoDrift {
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        self.board
            .reference_ready(monitor, feature, reference.kind(), reference.count());
        println!(
            "[{:>5.1}s] drift {monitor}: reference of {feature} ready ({}, {} values)",
            self.started.elapsed().as_secs_f64(),
            reference.kind().name(),
            reference.count()
        );
    }

    fn window(&self, window: &DriftWindow) {
        self.board.record_window(window);
    }

    fn alert(&self, alert: &DriftAlert) {
        self.board.record_alert(alert);
        let comparison = if alert.measure.is_detector() {
            format!(
                "{} detection: {:+.4} (parameter {})",
                alert.measure.name(),
                alert.value,
                alert.threshold
            )
        } else if alert.measure.fires_above() {
            format!(
                "{} = {:.4} (threshold {})",
                alert.measure.name(),
                alert.value,
                alert.threshold
            )
        } else {
            format!(
                "{} p-value = {:.2e} (threshold {})",
                alert.measure.name(),
                alert.value,
                alert.threshold
            )
        };
        println!(
            "[{:>5.1}s] DRIFT ALERT {}: {} {} {comparison}, window ending {}",
            self.started.elapsed().as_secs_f64(),
            alert.state_name().to_uppercase(),
            alert.monitor,
            alert.feature,
            alert.window_end_ms
        );
    }
}

/// Runs `freshet demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let pipeline = format!("{FOUNDATION_PIPELINE}{DEMO_DRIFT}{DEMO_MODEL}{DEMO_MODEL_DRIFT}");
    let spec = PipelineSpec::from_toml(&pipeline, Path::new("<demo pipeline>"))?;
    let board = Arc::new(DriftBoard::new(&spec));
    let drift = Arc::new(DemoDrift {
        board: board.clone(),
        started: Instant::now(),
    });
    let streams = crate::model_drift::ModelStreams {
        sink: drift.clone(),
        base: std::path::PathBuf::from("."),
        whole_input: false,
    };
    let models = Arc::new(crate::learn::ModelRunner::start(
        &spec,
        crate::learn::RunnerOptions {
            streams: Some(&streams),
            ..Default::default()
        },
    )?);
    let summaries = models.summaries();
    let store: Arc<dyn OnlineStore> = Arc::new(freshet_store::MemoryStore::new());
    let metrics = Arc::new(PipelineMetrics::new());
    let sink = Arc::new(CountingSink {
        changelog: 0.into(),
        shown: 0.into(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    let scorer = crate::serving::RegistryScorer::new(&spec, models.registries());
    let mut state = freshet_serve::AppState::new(store.clone(), metrics.clone())
        .with_drift(board.clone())
        .with_models(Arc::new(scorer))
        .with_learners(Arc::new(crate::serving::SummaryBoard::new(&models, None)));
    if let Some(token) = crate::serving::admin_token_from_env()? {
        state = state.with_admin_token(token);
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(freshet_serve::serve(listener, state, async {
        let _ = shutdown_rx.await;
    }));
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    println!(
        "freshet demo: {} events/s over {} cards, event time at {}x wall time, HTTP on http://{addr}",
        args.rate, args.cards, args.speed
    );
    println!("  try: curl http://{addr}/v1/features/card/c0000000   |   freshet query --view card c0000000 c0000001");
    let shift = Shift::of(args)?;
    println!(
        "       curl http://{addr}/v1/drift   (amounts and countries shift {})",
        shift.describe()
    );
    println!(
        "       curl -H 'content-type: application/json' -d '{}' http://{addr}/v1/models/fraud/predict",
        crate::serving::DEMO_PREDICT_BODY
    );
    let deadline = args.duration.map(|d| Instant::now() + d.as_duration());
    let generator_args = (args.rate, args.cards, args.speed.max(1), stop.clone());
    let factory: ReaderFactory = Arc::new(move |index, _peers| {
        if index != 0 {
            return Ok(Vec::new());
        }
        let (rate, cards, speed, stop) = generator_args.clone();
        let mut events = TxnGenerator::new(7, cards);
        events.disorder_ms = 3_000;
        events.malformed_fraction = 0.001;
        let reader: Box<dyn PartitionReader> = Box::new(Generator {
            events,
            rate: f64::from(rate),
            speed: f64::from(speed),
            base_ms: now_ms(),
            started: Instant::now(),
            deadline,
            stop,
            produced: 0,
            line: Vec::with_capacity(160),
            shift,
            was_shifted: false,
        });
        Ok(vec![(0, reader)])
    });
    let outputs = Outputs {
        store: store.clone(),
        changelog: sink.clone(),
        dead_letters: sink.clone(),
        drift,
        models: models.clone(),
        metrics: metrics.clone(),
        flush_interval: Duration::from_millis(100),
        served: None,
    };
    let plans = freshet_features::plan::compile(&spec);
    let workers = args.workers;
    let dataflow = std::thread::spawn(move || {
        freshet_features::run(
            plans,
            HashMap::from([("transactions".to_owned(), factory)]),
            workers,
            outputs,
        )
    });
    let started = Instant::now();
    let mut last_vectors = Instant::now();
    while !dataflow.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed().as_millis() % 1000 < 200 {
            print_progress(&metrics, &*store, &sink, started);
        }
        if started.elapsed().as_millis() % 5000 < 200 {
            print_models(&summaries);
            crate::serving::print_sample_prediction(addr, "fraud");
        }
        if last_vectors.elapsed() >= Duration::from_secs(10) {
            print_vectors(&*store);
            last_vectors = Instant::now();
        }
    }
    let stats = dataflow
        .join()
        .map_err(|_| anyhow::anyhow!("dataflow thread panicked"))??;
    print_progress(&metrics, &*store, &sink, started);
    print_vectors(&*store);
    models.finish(&std::env::temp_dir().join("freshet-demo-models.jsonl"))?;
    print_models(&summaries);
    println!(
        "demo finished: {} entities in the store",
        stats.entities.values().sum::<usize>()
    );
    let _ = shutdown_tx.send(());
    runtime.block_on(server)??;
    Ok(())
}

fn print_progress(
    metrics: &PipelineMetrics,
    store: &dyn OnlineStore,
    sink: &CountingSink,
    started: Instant,
) {
    let events = PipelineMetrics::get(&metrics.events_total);
    let head = metrics.head_ms.load(Ordering::Relaxed);
    let watermark = metrics.watermark_ms.load(Ordering::Relaxed);
    println!(
        "[{:>5.1}s] events {events} ({:.0}/s), late {}, rejected {}, entities {}, closed windows {}, head - watermark {} ms",
        started.elapsed().as_secs_f64(),
        events as f64 / started.elapsed().as_secs_f64().max(1e-9),
        PipelineMetrics::get(&metrics.late_total),
        PipelineMetrics::get(&metrics.rejected_total),
        store.len("card").unwrap_or(0),
        sink.changelog.load(Ordering::Relaxed),
        if watermark >= 0 { head - watermark } else { -1 },
    );
}

/// One line per model: prequential metrics, cumulative and over the rolling window.
fn print_models(summaries: &crate::learn::Summaries) {
    let Ok(board) = summaries.lock() else { return };
    for s in board.values() {
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        println!(
            "  model {} v{}: {} examples, accuracy {} (last {}: {}), logloss {} (last: {}), auc {} (last: {})",
            s.model,
            s.version,
            s.cumulative.examples,
            f(s.cumulative.accuracy),
            s.rolling.examples,
            f(s.rolling.accuracy),
            f(s.cumulative.logloss),
            f(s.rolling.logloss),
            f(s.cumulative.auc),
            f(s.rolling.auc),
        );
    }
}

fn print_vectors(store: &dyn OnlineStore) {
    let entities = ["c0000000", "c0000001", "c0000002"];
    if let Ok(vectors) = store.get_many("card", &entities) {
        for (entity, vector) in entities.iter().zip(vectors) {
            if let Some(v) = vector {
                println!("  {}", feature_json(store, "card", entity, &v));
            }
        }
    }
}
