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
//! keyed by `card_id`, each event stamped with the wall clock at its send (`ts`): the stream of a
//! live service, where event time runs at the speed of wall time and the allowed lateness (2 s)
//! is 2 s of wall time. (Replaying the file's own event times, 1 ms apart, at tens of thousands
//! of events/s ran event time 30 times faster than wall time, so 60 ms of broker jitter between
//! partitions already made events late by the thousand.) Meanwhile a probe is sent every
//! `--probe-every-ms` to one of `--probe-entities` entities of its own (the next one without a
//! probe in flight), stamped with the wall clock too, with a unique `country`. Every `--poll-us`
//! one `POST /v1/features` asks for the entities with
//! a probe in flight; a probe is visible once the entity's `last_country` (`--feature`) shows its
//! marker. Its ack time is when its delivery report (`acks=all`) arrives. Both producers use
//! `client::producer_config`, as `freshet produce` does. Prints one JSON line with the
//! ack -> visible and send -> visible latencies (ms: p50, p90, p99, p99.9, max) and the background
//! rate achieved, and `ack_to_consumed`: when a plain consumer of the topic (from its end, with
//! `freshet run`'s fetch wait, `--fetch-wait-ms`) received each probe, the broker's share of
//! the freshness. Every loop is bounded: `--probe-timeout-s` per probe, `--max-s` in all.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet_kafka::client::producer_config;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
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
    probe_entities: usize,
    probe_every: Duration,
    poll: Duration,
    warmup: Duration,
    probe_timeout: Duration,
    max: Duration,
    fetch_wait_ms: u64,
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
        probe_entities: 64,
        probe_every: Duration::from_millis(10),
        poll: Duration::from_micros(500),
        warmup: Duration::from_secs(3),
        probe_timeout: Duration::from_secs(10),
        max: Duration::from_secs(240),
        fetch_wait_ms: freshet_core::spec::DEFAULT_FETCH_WAIT.as_ms(),
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
            "--probe-entities" => a.probe_entities = num(&flag, args.next())?.max(1.0) as usize,
            "--probe-every-ms" => {
                a.probe_every = Duration::from_secs_f64(num(&flag, args.next())? / 1e3);
            }
            "--poll-us" => a.poll = Duration::from_secs_f64(num(&flag, args.next())? / 1e6),
            "--warmup-s" => a.warmup = Duration::from_secs_f64(num(&flag, args.next())?),
            "--probe-timeout-s" => {
                a.probe_timeout = Duration::from_secs_f64(num(&flag, args.next())?);
            }
            "--max-s" => a.max = Duration::from_secs_f64(num(&flag, args.next())?),
            "--fetch-wait-ms" => a.fetch_wait_ms = num(&flag, args.next())? as u64,
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

/// The delivery opaque of messages whose acknowledgement time is not wanted.
const UNTRACKED: usize = usize::MAX;

/// Counts deliveries and keeps the acknowledgement time (or error) of tracked messages.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    /// (opaque, when the delivery report arrived, error)
    tracked: Mutex<Vec<(usize, Instant, Option<String>)>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let at = Instant::now();
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
        if opaque != UNTRACKED {
            if let Ok(mut tracked) = self.tracked.lock() {
                tracked.push((opaque, at, error));
            }
        }
    }
}

fn producer(brokers: &str, linger_ms: &str) -> Result<BaseProducer<Deliveries>, String> {
    producer_config(brokers)
        .set("linger.ms", linger_ms)
        .create_with_context(Deliveries::default())
        .map_err(|e| format!("producer: {e}"))
}

/// The value of the number or string field `name` in a flat JSON object line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = line[at..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// The background events: each line with its key and its own event time (replaced on send).
struct Replay {
    lines: Vec<(String, String, u64)>,
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
    if lines.is_empty() {
        return Err(format!(
            "{path}: no events with `card_id` and an integer `ts`"
        ));
    }
    Ok(Replay { lines })
}

/// Background traffic at `rate` events/s until `stop`, each event stamped with the wall clock.
/// Returns (sent, seconds).
fn background(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    rate: f64,
    replay: &Replay,
    stop: &AtomicBool,
) -> (u64, f64) {
    let start = Instant::now();
    let mut sent = 0u64;
    let n = replay.lines.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let (line, key, ts) = &replay.lines[(sent % n) as usize];
            let payload =
                line.replacen(&format!("\"ts\":{ts}"), &format!("\"ts\":{}", now_ms()), 1);
            let record = BaseRecord::with_opaque_to(topic, UNTRACKED)
                .key(key.as_str())
                .payload(payload.as_str());
            match producer.send(record) {
                Ok(()) => sent += 1,
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

/// The feature `feature` of each entity found, as text, from one batch lookup.
fn lookup(
    agent: &ureq::Agent,
    url: &str,
    view: &str,
    entities: &[&str],
    feature: &str,
) -> Result<HashMap<String, String>, String> {
    let body = serde_json::json!({ "view": view, "entities": entities });
    let mut response = agent
        .post(url)
        .send_json(&body)
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("POST {url}: {}", response.status()));
    }
    let body: Value = response
        .body_mut()
        .read_json()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let mut values = HashMap::new();
    for r in body["results"].as_array().into_iter().flatten() {
        let (Some(entity), Some(value)) = (r["entity"].as_str(), r["features"].get(feature)) else {
            continue;
        };
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        values.insert(entity.to_owned(), text);
    }
    Ok(values)
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

/// One probe: which entity, its marker, when it was sent, acknowledged and seen.
struct Probe {
    entity: usize,
    marker: String,
    sent: Instant,
    acked: Option<Instant>,
    visible: Option<Instant>,
    timed_out: bool,
}

fn run(a: &Args) -> Result<Value, String> {
    let started = Instant::now();
    let replay = Arc::new(load(&a.data)?);
    let stop = Arc::new(AtomicBool::new(false));
    let bg_producer = Arc::new(producer(&a.brokers, "5")?);
    let bg = {
        let (producer, stop, replay, topic, rate) = (
            bg_producer.clone(),
            stop.clone(),
            replay.clone(),
            a.topic.clone(),
            a.rate,
        );
        std::thread::spawn(move || background(&producer, &topic, rate, &replay, &stop))
    };
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let observer = {
        let (brokers, topic, fetch_wait_ms, stop, arrivals) = (
            a.brokers.clone(),
            a.topic.clone(),
            a.fetch_wait_ms,
            stop.clone(),
            arrivals.clone(),
        );
        std::thread::spawn(move || observe(&brokers, &topic, fetch_wait_ms, &stop, &arrivals))
    };
    let result = probe_loop(a, started, &arrivals);
    stop.store(true, Ordering::Relaxed);
    let (bg_sent, bg_seconds) = bg.join().map_err(|_| "background thread panicked")?;
    observer.join().map_err(|_| "observer thread panicked")??;
    let _ = bg_producer.flush(Duration::from_secs(30));
    let mut line = result?;
    let ctx = bg_producer.context();
    line["background_rate_target"] = a.rate.into();
    line["background_sent"] = bg_sent.into();
    line["background_acked"] = ctx.acked.load(Ordering::Relaxed).into();
    line["background_failed"] = ctx.failed.load(Ordering::Relaxed).into();
    line["background_rate"] = (bg_sent as f64 / bg_seconds.max(1e-9)).into();
    line["seconds"] = started.elapsed().as_secs_f64().into();
    Ok(line)
}

/// When each probe (by index) reached the observer.
type Arrivals = Mutex<HashMap<usize, Instant>>;

/// A plain consumer of every partition of `topic` from its end, with the fetch wait of
/// `freshet run`: notes when each probe arrives, the broker's share of the freshness.
fn observe(
    brokers: &str,
    topic: &str,
    fetch_wait_ms: u64,
    stop: &AtomicBool,
    arrivals: &Arrivals,
) -> Result<(), String> {
    let group = format!("freshness-observer-{}", std::process::id());
    let consumer: BaseConsumer = freshet_kafka::client::consumer_config(brokers, &group)
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()
        .map_err(|e| format!("observer: {e}"))?;
    let partitions = freshet_kafka::client::partition_count(
        consumer.client(),
        brokers,
        topic,
        Duration::from_secs(10),
    )
    .map_err(|e| format!("observer: {e}"))?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p as i32, rdkafka::Offset::End)
            .map_err(|e| format!("observer: {e}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("observer: {e}"))?;
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let at = Instant::now();
        let Some(text) = message.payload().and_then(|p| std::str::from_utf8(p).ok()) else {
            continue;
        };
        if field(text, "merchant") == Some("probe") {
            if let Some(i) = field(text, "event_id").and_then(|v| v.parse().ok()) {
                if let Ok(mut seen) = arrivals.lock() {
                    seen.entry(i).or_insert(at);
                }
            }
        }
    }
    Ok(())
}

fn probe_loop(a: &Args, started: Instant, arrivals: &Arrivals) -> Result<Value, String> {
    let probes_producer = producer(&a.brokers, "0")?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let run_id = format!("probe-{}-{}", std::process::id(), now_ms());
    let entities: Vec<String> = (0..a.probe_entities)
        .map(|k| format!("{run_id}-{k}"))
        .collect();
    let url = format!("http://{}/v1/features", a.http);
    std::thread::sleep(a.warmup);

    let mut probes: Vec<Probe> = Vec::with_capacity(a.probes);
    // the probe in flight per entity, if any
    let mut in_flight: Vec<Option<usize>> = vec![None; a.probe_entities];
    let mut next_entity = 0usize;
    let mut next_send = Instant::now();
    let mut next_poll = Instant::now();
    let (mut errors, mut polls, mut early) = (0u64, 0u64, 0u64);
    let deadline = started + a.max;
    loop {
        let now = Instant::now();
        let pending = in_flight.iter().filter(|p| p.is_some()).count();
        if now > deadline || (probes.len() >= a.probes && pending == 0) {
            break;
        }
        // send the next probe to the next entity without one in flight
        if probes.len() < a.probes && now >= next_send {
            let free = (0..a.probe_entities)
                .map(|k| (next_entity + k) % a.probe_entities)
                .find(|&k| in_flight[k].is_none());
            if let Some(k) = free {
                let i = probes.len();
                let marker = format!("p{i}");
                let payload = format!(
                    r#"{{"event_id":{i},"card_id":"{}","ts":{},"amount":1.0,"merchant":"probe","country":"{marker}"}}"#,
                    entities[k],
                    now_ms()
                );
                let record = BaseRecord::with_opaque_to(&a.topic, i)
                    .key(entities[k].as_str())
                    .payload(payload.as_str());
                let sent = Instant::now();
                if let Err((e, _)) = probes_producer.send(record) {
                    return Err(format!("probe send: {e}"));
                }
                probes.push(Probe {
                    entity: k,
                    marker,
                    sent,
                    acked: None,
                    visible: None,
                    timed_out: false,
                });
                in_flight[k] = Some(i);
                next_entity = k + 1;
                next_send += a.probe_every;
                if next_send < now {
                    next_send = now + a.probe_every;
                }
            }
        }
        probes_producer.poll(Duration::ZERO);
        let reports: Vec<_> = probes_producer
            .context()
            .tracked
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for (i, at, error) in reports {
            if let Some(e) = error {
                return Err(format!("probe {i} not delivered: {e}"));
            }
            if let Some(p) = probes.get_mut(i) {
                p.acked = Some(at);
            }
        }
        // one batch lookup of every entity with a probe in flight
        if pending > 0 && Instant::now() >= next_poll {
            next_poll = Instant::now() + a.poll;
            let asked: Vec<&str> = in_flight
                .iter()
                .zip(&entities)
                .filter(|(slot, _)| slot.is_some())
                .map(|(_, e)| e.as_str())
                .collect();
            polls += 1;
            match lookup(&agent, &url, &a.view, &asked, &a.feature) {
                Ok(values) => {
                    let seen = Instant::now();
                    for (slot, entity) in in_flight.iter_mut().zip(&entities) {
                        let Some(i) = *slot else { continue };
                        if values.get(entity) == Some(&probes[i].marker) {
                            probes[i].visible = Some(seen);
                            early += u64::from(probes[i].acked.is_none());
                            *slot = None;
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("kafka_freshness: {e}");
                    }
                }
            }
        }
        for slot in &mut in_flight {
            if let Some(i) = *slot {
                if probes[i].sent.elapsed() > a.probe_timeout {
                    probes[i].timed_out = true;
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    // delivery reports of probes seen before their report arrived
    let _ = probes_producer.flush(Duration::from_secs(10));
    for (i, at, _) in probes_producer
        .context()
        .tracked
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default()
    {
        if let Some(p) = probes.get_mut(i) {
            p.acked = Some(at);
        }
    }
    let mut after_ack = Vec::new();
    let mut after_send = Vec::new();
    let mut consumed = Vec::new();
    if let Ok(seen) = arrivals.lock() {
        for (i, p) in probes.iter().enumerate() {
            if let (Some(at), Some(acked)) = (seen.get(&i), p.acked) {
                consumed.push(at.saturating_duration_since(acked).as_secs_f64() * 1e3);
            }
        }
    }
    for p in &probes {
        if let (Some(visible), Some(acked)) = (p.visible, p.acked) {
            // visible before the report arrived: 0 after the ack
            after_ack.push(visible.saturating_duration_since(acked).as_secs_f64() * 1e3);
            after_send.push((visible - p.sent).as_secs_f64() * 1e3);
        }
    }
    let entities_used = probes.iter().map(|p| p.entity).max().map_or(0, |k| k + 1);
    Ok(serde_json::json!({
        "system": "freshet-run-freshness",
        "probes_sent": probes.len(),
        "probes_visible": after_ack.len(),
        "probe_timeouts": probes.iter().filter(|p| p.timed_out).count(),
        "probes_visible_before_ack_report": early,
        "probe_entities": entities_used,
        "probe_interval_ms": a.probe_every.as_secs_f64() * 1e3,
        "http_errors": errors,
        "http_polls": polls,
        "poll_interval_us": a.poll.as_micros() as u64,
        "ack_to_visible": summary(after_ack),
        "send_to_visible": summary(after_send),
        "observer_fetch_wait_ms": a.fetch_wait_ms,
        "ack_to_consumed": summary(consumed),
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
