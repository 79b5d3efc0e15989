//! Freshness of `freshet run`: how long after Kafka acknowledges an event its effect is visible
//! through the HTTP API, while background traffic flows at a fixed rate. The freshness probe of
//! `scripts/bench-kafka.sh`.
//!
//! ```sh
//! cargo run --release -p freshet --example kafka_freshness -- --brokers 127.0.0.1:9092 \
//!     --topic transactions --http 127.0.0.1:8080 --data /tmp/txn/transactions.jsonl \
//!     --rate 100000 [--probes 1000]
//! ```
//!
//! One thread replays `--data` (a `gen.py txn` file) as background traffic at `--rate` events/s,
//! keyed by `card_id`, so the stream is the throughput benchmark's workload at a set rate; it loops
//! over the file, shifting event times by the file's span on every pass so that nothing turns
//! late. Meanwhile probes go one at a time to a probe entity of their own: a probe event carries
//! the largest event time sent so far (never late, and the head reaches it as soon as every
//! partition has caught up) and a unique `country`. Once its delivery is acknowledged
//! (`acks=all`), `GET /v1/features/{view}/{probe}` is sent at once and repeated every `--poll-us`
//! until `last_country` (`--feature`) shows that marker. Both producers use
//! `client::producer_config`, as `freshet produce` does. Prints one JSON line with the
//! ack -> visible and send -> visible latencies (ms: p50, p90, p99, p99.9, max) and the background
//! rate achieved. Every loop is bounded: `--probe-timeout-s` per probe, `--max-s` in all.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet_kafka::client::producer_config;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde_json::Value;

struct Args {
    brokers: String,
    topic: String,
    http: String,
    view: String,
    feature: String,
    data: String,
    rate: f64,
    probes: usize,
    probe_every: Duration,
    poll: Duration,
    warmup: Duration,
    probe_timeout: Duration,
    max: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        brokers: String::new(),
        topic: String::new(),
        http: String::new(),
        view: "card".into(),
        feature: "last_country".into(),
        data: String::new(),
        rate: 0.0,
        probes: 1000,
        probe_every: Duration::from_millis(10),
        poll: Duration::from_micros(200),
        warmup: Duration::from_secs(3),
        probe_timeout: Duration::from_secs(5),
        max: Duration::from_secs(240),
    };
    let mut args = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<f64, String> {
        v.ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<f64>()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--brokers" => a.brokers = args.next().unwrap_or_default(),
            "--topic" => a.topic = args.next().unwrap_or_default(),
            "--http" => a.http = args.next().unwrap_or_default(),
            "--view" => a.view = args.next().unwrap_or_default(),
            "--feature" => a.feature = args.next().unwrap_or_default(),
            "--data" => a.data = args.next().unwrap_or_default(),
            "--rate" => a.rate = num(&flag, args.next())?,
            "--probes" => a.probes = num(&flag, args.next())? as usize,
            "--probe-every-ms" => {
                a.probe_every = Duration::from_secs_f64(num(&flag, args.next())? / 1e3);
            }
            "--poll-us" => a.poll = Duration::from_secs_f64(num(&flag, args.next())? / 1e6),
            "--warmup-s" => a.warmup = Duration::from_secs_f64(num(&flag, args.next())?),
            "--probe-timeout-s" => {
                a.probe_timeout = Duration::from_secs_f64(num(&flag, args.next())?);
            }
            "--max-s" => a.max = Duration::from_secs_f64(num(&flag, args.next())?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.brokers.is_empty() || a.topic.is_empty() || a.http.is_empty() || a.data.is_empty() {
        return Err("--brokers, --topic, --http and --data are required".into());
    }
    Ok(a)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counts deliveries; remembers when the latest one was acknowledged, and its error if any.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Option<(Instant, Option<String>)>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let error = match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Some(e.to_string())
            }
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), error));
        }
    }
}

fn producer(brokers: &str, linger_ms: &str) -> Result<BaseProducer<Deliveries>, String> {
    producer_config(brokers)
        .set("linger.ms", linger_ms)
        .create_with_context(Deliveries::default())
        .map_err(|e| format!("producer: {e}"))
}

/// The value of the number or string field `name` in a flat JSON object line, as bytes.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = line[at..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// The background events: each line with its key and event time.
struct Replay {
    lines: Vec<(String, String, u64)>,
    span: u64,
}

fn load(path: &str) -> Result<Replay, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let lines: Vec<(String, String, u64)> = text
        .lines()
        .filter_map(|l| {
            let key = field(l, "card_id")?.to_owned();
            let ts = field(l, "ts")?.parse().ok()?;
            Some((l.to_owned(), key, ts))
        })
        .collect();
    let (lo, hi) = lines.iter().fold((u64::MAX, 0), |(lo, hi), (_, _, t)| {
        (lo.min(*t), hi.max(*t))
    });
    if lines.is_empty() {
        return Err(format!(
            "{path}: no events with `card_id` and an integer `ts`"
        ));
    }
    Ok(Replay {
        lines,
        span: hi - lo + 1_000,
    })
}

/// Background traffic at `rate` events/s until `stop`; keeps `clock` at the largest event time
/// sent. Returns (sent, seconds).
fn background(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    rate: f64,
    replay: &Replay,
    clock: &AtomicU64,
    stop: &AtomicBool,
) -> (u64, f64) {
    let start = Instant::now();
    let mut sent = 0u64;
    let n = replay.lines.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let (line, key, ts) = &replay.lines[(sent % n) as usize];
            let pass = sent / n;
            let shifted;
            let (payload, ts) = if pass == 0 {
                (line.as_str(), *ts)
            } else {
                let ts2 = ts + pass * replay.span;
                shifted = line.replacen(&format!("\"ts\":{ts}"), &format!("\"ts\":{ts2}"), 1);
                (shifted.as_str(), ts2)
            };
            match producer.send(
                BaseRecord::<_, _, ()>::to(topic)
                    .key(key.as_str())
                    .payload(payload),
            ) {
                Ok(()) => {
                    sent += 1;
                    clock.fetch_max(ts, Ordering::Relaxed);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                    break;
                }
                Err((e, _)) => {
                    eprintln!("background send: {e}");
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(500));
    }
    (sent, start.elapsed().as_secs_f64())
}

/// The probe feature's value as text (`""` while the entity is not in the store).
fn probe_value(agent: &ureq::Agent, url: &str, feature: &str) -> Result<String, String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    if response.status().as_u16() == 404 {
        return Ok(String::new());
    }
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let body: Value = response
        .body_mut()
        .read_json()
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok(match &body["features"][feature] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    serde_json::json!({
        "n": xs.len(),
        "p50_ms": r(percentile(&xs, 50.0)),
        "p90_ms": r(percentile(&xs, 90.0)),
        "p99_ms": r(percentile(&xs, 99.0)),
        "p999_ms": r(percentile(&xs, 99.9)),
        "max_ms": r(xs.last().copied().unwrap_or(f64::NAN)),
    })
}

fn run(a: &Args) -> Result<Value, String> {
    let started = Instant::now();
    let replay = Arc::new(load(&a.data)?);
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(AtomicU64::new(0));
    let bg_producer = Arc::new(producer(&a.brokers, "5")?);
    let bg = {
        let (producer, stop, clock, replay, topic, rate) = (
            bg_producer.clone(),
            stop.clone(),
            clock.clone(),
            replay.clone(),
            a.topic.clone(),
            a.rate,
        );
        std::thread::spawn(move || background(&producer, &topic, rate, &replay, &clock, &stop))
    };
    let probes = producer(&a.brokers, "0")?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let probe = format!("probe-{}-{}", std::process::id(), now_ms());
    let url = format!("http://{}/v1/features/{}/{probe}", a.http, a.view);
    std::thread::sleep(a.warmup);

    let (mut after_ack, mut after_send) = (Vec::new(), Vec::new());
    let (mut timeouts, mut errors, mut polls) = (0u64, 0u64, 0u64);
    let mut next_probe = Instant::now();
    for i in 0..a.probes {
        if started.elapsed() > a.max {
            break;
        }
        if let Some(wait) = next_probe.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next_probe = Instant::now() + a.probe_every;
        let marker = format!("probe{i}");
        let payload = format!(
            r#"{{"event_id":{i},"card_id":"{probe}","ts":{},"amount":1.0,"merchant":"probe","country":"{marker}"}}"#,
            clock.load(Ordering::Relaxed)
        );
        if let Ok(mut last) = probes.context().last.lock() {
            *last = None;
        }
        let sent_at = Instant::now();
        let record = BaseRecord::<_, _, ()>::to(&a.topic)
            .key(probe.as_str())
            .payload(payload.as_str());
        if let Err((e, _)) = probes.send(record) {
            return Err(format!("probe send: {e}"));
        }
        let ack_deadline = sent_at + a.probe_timeout;
        let acked_at = loop {
            probes.poll(Duration::from_millis(1));
            let last = probes.context().last.lock().ok().and_then(|l| l.clone());
            match last {
                Some((at, None)) => break Some(at),
                Some((_, Some(e))) => return Err(format!("probe delivery: {e}")),
                None if Instant::now() > ack_deadline => break None,
                None => {}
            }
        };
        let Some(acked_at) = acked_at else {
            return Err(format!(
                "probe {i} not acknowledged within {:?}",
                a.probe_timeout
            ));
        };
        let deadline = acked_at + a.probe_timeout;
        let visible_at = loop {
            polls += 1;
            match probe_value(&agent, &url, &a.feature) {
                Ok(v) if v == marker => break Some(Instant::now()),
                Ok(_) => {}
                Err(e) => {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("kafka_freshness: {e}");
                    }
                }
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(a.poll);
        };
        match visible_at {
            Some(at) => {
                after_ack.push((at - acked_at).as_secs_f64() * 1e3);
                after_send.push((at - sent_at).as_secs_f64() * 1e3);
            }
            None => timeouts += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (bg_sent, bg_seconds) = bg.join().map_err(|_| "background thread panicked")?;
    let _ = bg_producer.flush(Duration::from_secs(30));
    let ctx = bg_producer.context();
    Ok(serde_json::json!({
        "system": "freshet-run-freshness",
        "probes_sent": after_ack.len() as u64 + timeouts,
        "probes_visible": after_ack.len(),
        "probe_timeouts": timeouts,
        "http_errors": errors,
        "http_polls": polls,
        "poll_interval_us": a.poll.as_micros() as u64,
        "ack_to_visible": summary(after_ack),
        "send_to_visible": summary(after_send),
        "background_rate_target": a.rate,
        "background_sent": bg_sent,
        "background_acked": ctx.acked.load(Ordering::Relaxed),
        "background_failed": ctx.failed.load(Ordering::Relaxed),
        "background_rate": bg_sent as f64 / bg_seconds.max(1e-9),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kafka_freshness: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kafka_freshness: {e}");
            ExitCode::FAILURE
        }
    }
}
