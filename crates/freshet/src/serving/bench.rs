//! `freshet bench serve`: an in-process server with two small trained models and a store of
//! entities with 10 features each, under a bounded local load, closed loop over keep-alive
//! connections (the way wrk measures): `/v1/models/fraud/predict` for one entity, and V2
//! `/v2/models/dense/infer` with one row of 32 FP32 values.
//!
//! The load generator is one thread (a single-threaded tokio runtime, one task per connection);
//! the latency of a request runs from the first byte written to the last byte of its answer
//! read. `--serve-on` serves the same models without load, for wrk or curl.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use freshet_core::generate::{Rng, COUNTRIES};
use freshet_core::metrics::PipelineMetrics;
use freshet_core::serving::Scorer;
use freshet_core::spec::PipelineSpec;
use freshet_core::store::{FeatureValue, FeatureVector, OnlineStore, StoreWrite, ViewSchema};
use freshet_core::HumanDuration;
use freshet_learn::{Example, Learner, Value};
use tokio::net::TcpStream;

use super::RegistryScorer;

/// Features per entity in the bench store.
pub(crate) const FEATURES: usize = 10;
/// Inputs of the dense (V2) model.
pub(crate) const DENSE_INPUTS: usize = 32;
/// Examples each bench model is trained on before serving.
const TRAINING_EXAMPLES: usize = 20_000;
/// Distinct request bodies each connection cycles through.
const BODIES: usize = 256;
/// A run stops after this long whatever its request count.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How long a request may take before it counts as an error and its connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `freshet bench ...`.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Load-test model serving over HTTP in process and print req/s and latency percentiles.
    Serve(BenchServeArgs),
}

/// Arguments of `freshet bench serve`.
#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// Requests per endpoint and concurrency level (after a warm-up of a tenth of them).
    #[arg(long, default_value_t = 50_000)]
    requests: u64,
    /// Concurrent connections, comma-separated; each level runs both endpoints.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Server worker threads (default: the available CPUs).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Entities in the store.
    #[arg(long, default_value_t = 10_000)]
    entities: u32,
    /// Publish a new version of each model this often during the load (hot swap under load).
    #[arg(long, value_parser = HumanDuration::parse)]
    publish_every: Option<HumanDuration>,
    /// Serve the bench models on this address without load (for wrk), writing the request
    /// bodies next to the temp dir, until Ctrl-C or `--serve-for`.
    #[arg(long)]
    serve_on: Option<SocketAddr>,
    /// With `--serve-on`: stop after this long.
    #[arg(long, value_parser = HumanDuration::parse)]
    serve_for: Option<HumanDuration>,
}

/// The bench's store, models and their learners (to publish more versions).
pub(crate) struct Setup {
    pub(crate) store: Arc<dyn OnlineStore>,
    pub(crate) scorer: Arc<dyn Scorer>,
    pub(crate) learners: Vec<Learner>,
}

fn entity(i: u32) -> String {
    format!("c{i:07}")
}

fn pipeline() -> String {
    let fields: Vec<String> = (0..FEATURES)
        .map(|i| format!("{{ name = \"f{i}\", agg = \"last\", field = \"v{i}\" }}"))
        .collect();
    let card: Vec<String> = (0..FEATURES).map(|i| format!("\"card.f{i}\"")).collect();
    let dense: Vec<String> = (0..DENSE_INPUTS)
        .map(|i| format!("\"samples.x{i:02}\""))
        .collect();
    format!(
        r#"
[[source]]
name = "transactions"
entity = "card_id"
event_time = "ts"

[[source]]
name = "samples"
entity = "id"
event_time = "ts"

[[feature_view]]
name = "card"
source = "transactions"
features = [{}]

[[model]]
name = "fraud"
kind = "logistic_regression"
features = [{}, "transactions.amount", "transactions.country"]
label = {{ field = "is_fraud" }}
optimizer = {{ kind = "ftrl", alpha = 0.05, beta = 1.0, l1 = 0.0, l2 = 1.0 }}
batch_size = 64

[[model]]
name = "dense"
kind = "logistic_regression"
features = [{}]
label = {{ field = "y" }}
optimizer = {{ kind = "adam", lr = 0.01 }}
batch_size = 64
"#,
        fields.join(", "),
        card.join(", "),
        dense.join(", ")
    )
}

/// A labelled fraud example: 10 features, an amount and a country.
fn fraud_example(rng: &mut Rng) -> (Vec<f64>, f64, &'static str, f32) {
    let features: Vec<f64> = (0..FEATURES).map(|_| rng.gauss()).collect();
    let amount = (3.5 + rng.gauss()).exp();
    let country = COUNTRIES[(rng.next_u64() % COUNTRIES.len() as u64) as usize];
    let logit = features[0] - 0.5 * features[1] + 0.02 * amount - 3.0
        + if country == "NG" { 1.5 } else { 0.0 };
    let label = f32::from(u8::from(rng.unit() < 1.0 / (1.0 + (-logit).exp())));
    (features, amount, country, label)
}

fn dense_example(rng: &mut Rng) -> Example {
    let x: Vec<f64> = (0..DENSE_INPUTS).map(|_| rng.gauss()).collect();
    let logit: f64 = x
        .iter()
        .enumerate()
        .map(|(i, v)| v * if i % 2 == 0 { 0.3 } else { -0.2 })
        .sum();
    let label = f32::from(u8::from(rng.unit() < 1.0 / (1.0 + (-logit).exp())));
    Example::dense(&x, label)
}

impl Setup {
    /// Trains the two models on generated examples and fills a memory store with `entities`
    /// entities of 10 features.
    pub(crate) fn new(entities: u32) -> anyhow::Result<Self> {
        let spec = PipelineSpec::from_toml(&pipeline(), std::path::Path::new("<bench pipeline>"))?;
        let mut rng = Rng::new(42);
        let mut learners = Vec::new();
        for model in &spec.models {
            let m = model.get_ref();
            let mut learner = Learner::new(m, m.features.clone())
                .with_context(|| format!("bench model `{}`", m.name))?;
            let examples: Vec<Example> = (0..TRAINING_EXAMPLES)
                .map(|_| match m.name.as_str() {
                    "fraud" => {
                        let (features, amount, country, label) = fraud_example(&mut rng);
                        let mut values: Vec<Value> =
                            features.into_iter().map(Value::Number).collect();
                        values.push(Value::Number(amount));
                        values.push(Value::category(country));
                        Example { values, label }
                    }
                    _ => dense_example(&mut rng),
                })
                .collect();
            for batch in examples.chunks(m.batch_size.max(1)) {
                learner.learn(batch)?;
            }
            learner.publish()?;
            learners.push(learner);
        }
        let registries = learners
            .iter()
            .map(|l| (l.name().to_owned(), l.registry()))
            .collect();
        let scorer: Arc<dyn Scorer> = Arc::new(RegistryScorer::new(&spec, &registries));

        let store = freshet_store::MemoryStore::new();
        store.register_view(ViewSchema {
            name: "card".to_owned(),
            features: (0..FEATURES).map(|i| format!("f{i}")).collect(),
            ttl_ms: None,
        })?;
        let writes = (0..entities)
            .map(|i| StoreWrite::Upsert {
                entity: entity(i),
                vector: FeatureVector {
                    as_of_ms: 1_795_000_000_000,
                    values: (0..FEATURES)
                        .map(|_| FeatureValue::Float(rng.gauss()))
                        .collect(),
                },
            })
            .collect();
        store.write_batch("card", writes)?;
        Ok(Self {
            store: Arc::new(store),
            scorer,
            learners,
        })
    }

    /// Publishes one more version of every model, after one more update; returns the versions.
    pub(crate) fn publish(&mut self, rng: &mut Rng) -> anyhow::Result<Vec<(String, u64)>> {
        let mut published = Vec::new();
        for learner in &mut self.learners {
            let example = if learner.name() == "fraud" {
                let (features, amount, country, label) = fraud_example(rng);
                let mut values: Vec<Value> = features.into_iter().map(Value::Number).collect();
                values.push(Value::Number(amount));
                values.push(Value::category(country));
                Example { values, label }
            } else {
                dense_example(rng)
            };
            learner.learn(&[example])?;
            // `learn` itself publishes every `publish_every` updates: record that version too
            published.push((learner.name().to_owned(), learner.version()));
            let version = learner.publish()?;
            published.push((learner.name().to_owned(), version));
        }
        Ok(published)
    }

    /// `POST /v2/models/dense/infer` requests, one row of 32 FP32 values each.
    pub(crate) fn infer_requests() -> Vec<Vec<u8>> {
        (0..BODIES)
            .map(|i| http_post("/v2/models/dense/infer", &infer_body(i as u64)))
            .collect()
    }
}

fn infer_body(seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let data: Vec<String> = (0..DENSE_INPUTS)
        .map(|_| format!("{:.4}", rng.gauss()))
        .collect();
    format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,{DENSE_INPUTS}],"datatype":"FP32","data":[{}]}}]}}"#,
        data.join(",")
    )
}

fn http_post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What one load run measured.
pub(crate) struct LoadReport {
    /// Requests answered (successfully or not).
    pub(crate) requests: u64,
    /// Requests answered with a status other than 200, or that failed on the connection.
    pub(crate) errors: u64,
    /// Wall time of the run.
    pub(crate) seconds: f64,
    /// Latency of every request, ns, sorted.
    pub(crate) latency: Vec<u64>,
    /// The versions the answers named (only when asked to collect them).
    pub(crate) versions: BTreeSet<u64>,
    /// The first error seen.
    pub(crate) first_error: Option<String>,
}

impl LoadReport {
    /// The `q` quantile of the latencies (nearest rank), ms.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        let rank = (q * self.latency.len() as f64).ceil() as usize;
        self.latency[rank.clamp(1, self.latency.len()) - 1] as f64 / 1e6
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// The version an answer names: `"version":N` (`/v1`) or `"model_version":"N"` (V2).
pub(crate) fn answered_version(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("version\":")? + "version\":".len();
    let digits: String = text[at..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Reads one response from `stream` (the answer to the one request in flight); returns its
/// status and body.
async fn read_response(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let mut head_end = None;
    let mut content_length = 0usize;
    loop {
        if head_end.is_none() {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..at]).unwrap_or("");
                content_length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                head_end = Some(at + 4);
            }
        }
        if let Some(end) = head_end {
            if buf.len() >= end + content_length {
                let status = std::str::from_utf8(&buf[..end])
                    .ok()
                    .and_then(|h| h.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Ok((status, buf[end..end + content_length].to_vec()));
            }
        }
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct ConnectionReport {
    requests: u64,
    errors: u64,
    latency: Vec<u64>,
    versions: BTreeSet<u64>,
    first_error: Option<String>,
}

async fn connection(
    addr: SocketAddr,
    requests: Arc<[Vec<u8>]>,
    next: Arc<AtomicU64>,
    total: u64,
    deadline: Instant,
    collect_versions: bool,
) -> ConnectionReport {
    let mut report = ConnectionReport {
        requests: 0,
        errors: 0,
        latency: Vec::new(),
        versions: BTreeSet::new(),
        first_error: None,
    };
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total || Instant::now() >= deadline {
            return report;
        }
        let request = &requests[(i as usize) % requests.len()];
        let started = Instant::now();
        let attempt = async {
            if stream.is_none() {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                stream = Some(s);
            }
            let s = stream.as_ref().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "no connection")
            })?;
            write_all(s, request).await?;
            read_response(s, &mut buf).await
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, attempt).await;
        report
            .latency
            .push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        report.requests += 1;
        let error = match outcome {
            Ok(Ok((200, body))) => {
                if collect_versions {
                    match answered_version(&body) {
                        Some(v) => {
                            report.versions.insert(v);
                            None
                        }
                        None => Some(format!(
                            "answer names no version: {}",
                            String::from_utf8_lossy(&body)
                        )),
                    }
                } else {
                    None
                }
            }
            Ok(Ok((status, body))) => Some(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Ok(Err(e)) => {
                stream = None;
                Some(e.to_string())
            }
            Err(_) => {
                stream = None;
                Some(format!("no answer within {REQUEST_TIMEOUT:?}"))
            }
        };
        if let Some(e) = error {
            report.errors += 1;
            report.first_error.get_or_insert(e);
        }
    }
}

/// Sends `total` requests (cycling through `requests`) over `concurrency` keep-alive
/// connections, each with one request in flight, from one thread.
pub(crate) fn load(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    total: u64,
    concurrency: usize,
    collect_versions: bool,
) -> anyhow::Result<LoadReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let requests: Arc<[Vec<u8>]> = requests.into();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + RUN_LIMIT;
    let reports = runtime.block_on(async {
        let tasks: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                tokio::spawn(connection(
                    addr,
                    Arc::clone(&requests),
                    Arc::clone(&next),
                    total,
                    deadline,
                    collect_versions,
                ))
            })
            .collect();
        let mut reports = Vec::new();
        for task in tasks {
            reports.push(task.await);
        }
        reports
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut report = LoadReport {
        requests: 0,
        errors: 0,
        seconds,
        latency: Vec::new(),
        versions: BTreeSet::new(),
        first_error: None,
    };
    for r in reports {
        let r = r.context("a load connection panicked")?;
        report.requests += r.requests;
        report.errors += r.errors;
        report.latency.extend(r.latency);
        report.versions.extend(r.versions);
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
    }
    report.latency.sort_unstable();
    Ok(report)
}

/// A server on `addr` (port 0 picks one) over the setup's store and models, on its own runtime
/// with `threads` workers; returns the bound address and a handle that stops it when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub(crate) fn start(setup: &Setup, addr: SocketAddr, threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("bench-serve")
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let state = freshet_serve::AppState::new(
            Arc::clone(&setup.store),
            Arc::new(PipelineMetrics::new()),
        )
        .with_models(Arc::clone(&setup.scorer));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(freshet_serve::serve(listener, state, async {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            runtime: Some(runtime),
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the server and waits for it.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown_now()
    }

    fn shutdown_now(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) {
            runtime.block_on(task)??;
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown_now();
    }
}

/// Runs `freshet bench ...`.
pub fn bench(command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Serve(args) => bench_serve(args),
    }
}

fn bench_serve(args: &BenchServeArgs) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = args.server_threads.unwrap_or(cpus);
    let started = Instant::now();
    let mut setup = Setup::new(args.entities)?;
    eprintln!(
        "trained 2 models on {TRAINING_EXAMPLES} examples each and stored {} entities of {FEATURES} features in {:.1}s",
        args.entities,
        started.elapsed().as_secs_f64()
    );
    if let Some(addr) = args.serve_on {
        return serve_only(&setup, addr, threads, args.serve_for);
    }
    let server = Server::start(&setup, "127.0.0.1:0".parse()?, threads)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = args.publish_every.map(|every| {
        let stop = Arc::clone(&stop);
        let every = every.as_duration();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut rng = Rng::new(99);
            let mut published = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                setup.publish(&mut rng)?;
                published += 1;
            }
            Ok(published)
        })
    });
    let runs: Vec<(&str, Vec<Vec<u8>>)> = {
        let predict = Setup::predict_requests(args.entities);
        vec![
            ("predict (1 entity)", predict),
            ("infer (1x32 FP32)", Setup::infer_requests()),
        ]
    };
    println!(
        "freshet bench serve: {cpus} CPUs, server {threads} worker threads, load 1 client thread, {} requests per run",
        args.requests
    );
    println!(
        "{:<20} {:>5} {:>9} {:>7} {:>10} {:>8} {:>8} {:>9}",
        "endpoint", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let mut results = Vec::new();
    let mut errors = 0;
    for &c in &args.concurrency {
        for (name, requests) in &runs {
            load(server.addr, requests.clone(), args.requests / 10, c, false)?;
            let r = load(server.addr, requests.clone(), args.requests, c, false)?;
            println!(
                "{name:<20} {c:>5} {:>9} {:>7} {:>10.0} {:>8.3} {:>8.3} {:>9.3}",
                r.requests,
                r.errors,
                r.rate(),
                r.quantile_ms(0.5),
                r.quantile_ms(0.99),
                r.quantile_ms(0.999)
            );
            if let Some(e) = &r.first_error {
                eprintln!("  first error: {e}");
            }
            errors += r.errors;
            results.push(serde_json::json!({
                "endpoint": name.split(' ').next(),
                "concurrency": c,
                "requests": r.requests,
                "errors": r.errors,
                "rps": (r.rate() * 10.0).round() / 10.0,
                "p50_ms": r.quantile_ms(0.5),
                "p99_ms": r.quantile_ms(0.99),
                "p999_ms": r.quantile_ms(0.999),
            }));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = match publisher {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))??,
        ),
        None => None,
    };
    server.stop()?;
    println!(
        "{}",
        serde_json::json!({
            "system": "freshet",
            "version": env!("CARGO_PKG_VERSION"),
            "task": "serve",
            "cpus": cpus,
            "server_threads": threads,
            "load_tool": "freshet bench serve, 1 thread, closed loop",
            "versions_published_during_load": published,
            "results": results,
        })
    );
    if errors > 0 {
        anyhow::bail!("{errors} requests failed");
    }
    Ok(())
}

impl Setup {
    /// `POST /v1/models/fraud/predict` requests, one entity of the store each.
    pub(crate) fn predict_requests(entities: u32) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(7);
        (0..BODIES)
            .map(|i| {
                let e = entity((i as u32).wrapping_mul(2_654_435_761) % entities.max(1));
                let country = COUNTRIES[i % COUNTRIES.len()];
                let body = format!(
                    r#"{{"entity":"{e}","fields":{{"amount":{:.2},"country":"{country}"}}}}"#,
                    (3.5 + rng.gauss()).exp()
                );
                http_post("/v1/models/fraud/predict", &body)
            })
            .collect()
    }
}

fn serve_only(
    setup: &Setup,
    addr: SocketAddr,
    threads: usize,
    serve_for: Option<HumanDuration>,
) -> anyhow::Result<()> {
    let server = Server::start(setup, addr, threads)?;
    let dir = std::env::temp_dir().join("freshet-bench-serve");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let predict = dir.join("predict.json");
    let infer = dir.join("infer.json");
    std::fs::write(
        &predict,
        r#"{"entity":"c0000042","fields":{"amount":31.5,"country":"NG"}}"#,
    )?;
    std::fs::write(&infer, infer_body(1))?;
    let a = server.addr;
    println!("serving the bench models on http://{a} (Ctrl-C to stop)");
    println!(
        "  curl -s -H 'content-type: application/json' -d @{} http://{a}/v1/models/fraud/predict",
        predict.display()
    );
    println!(
        "  curl -s -H 'content-type: application/json' -d @{} http://{a}/v2/models/dense/infer",
        infer.display()
    );
    println!("  WRK_BODY={} wrk -t1 -c32 -d20s --timeout 5s -s /path/to/wrk_json.lua http://{a}/v2/models/dense/infer", infer.display());
    let deadline = serve_for.map(|d| Instant::now() + d.as_duration());
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    interrupted.store(true, Ordering::Relaxed);
                }
            });
        });
    }
    while !interrupted.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop()
}
