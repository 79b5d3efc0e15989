//! The raw consume rate of a topic: rdkafka consumers that only count messages, with the client
//! settings `freshet run` uses (`client::consumer_config`) and its layout (one consumer per
//! partition, partition `p` read by thread `p % threads`). The Kafka ceiling of
//! `scripts/bench-kafka.sh`.
//!
//! ```sh
//! cargo run --release -p freshet-kafka --example count_consumer -- \
//!     --brokers 127.0.0.1:9092 --topic transactions --expect 1000000 [--threads 2] [--timeout-s 120]
//! ```
//!
//! It counts until `--expect` messages have arrived, not to the high watermark: tansu 0.6 reports
//! watermarks that leave out the newest batch. Prints one JSON line; `seconds` runs from process
//! start (consumers created, partitions assigned) to the last expected message, as the
//! benchmark times `freshet run`. Exits 1 when fewer than `--expect` messages arrive in time.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet_kafka::client::{consumer_config, partition_count, CONNECT_TIMEOUT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

struct Args {
    brokers: String,
    topic: String,
    expect: u64,
    threads: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut brokers = None;
    let mut topic = None;
    let mut expect = None;
    let mut threads = 1usize;
    let mut timeout = Duration::from_secs(120);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--brokers" => brokers = Some(value()?),
            "--topic" => topic = Some(value()?),
            "--expect" => expect = Some(value()?.parse().map_err(|e| format!("--expect: {e}"))?),
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--timeout-s" => {
                timeout =
                    Duration::from_secs(value()?.parse().map_err(|e| format!("--timeout-s: {e}"))?);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args {
        brokers: brokers.ok_or("--brokers is required")?,
        topic: topic.ok_or("--topic is required")?,
        expect: expect.ok_or("--expect is required")?,
        threads: threads.max(1),
        timeout,
    })
}

/// A consumer group of its own, so that runs never share committed offsets.
fn group_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("count-consumer-{}-{nanos}", std::process::id())
}

fn consumer_for(args: &Args, group: &str, partition: i32) -> Result<BaseConsumer, String> {
    let consumer: BaseConsumer = consumer_config(&args.brokers, group)
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&args.topic, partition, Offset::Beginning)
        .map_err(|e| format!("assignment: {e}"))?;
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign partition {partition}: {e}"))?;
    Ok(consumer)
}

fn run(args: &Args) -> Result<bool, String> {
    let start = Instant::now();
    let group = group_id();
    let probe = consumer_for(args, &group, 0)?;
    let partitions = partition_count(probe.client(), &args.brokers, &args.topic, CONNECT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    drop(probe);
    let mut per_thread: Vec<Vec<BaseConsumer>> = (0..args.threads).map(|_| Vec::new()).collect();
    for p in 0..partitions {
        let partition = i32::try_from(p).map_err(|e| e.to_string())?;
        per_thread[p as usize % args.threads].push(consumer_for(args, &group, partition)?);
    }
    let counted = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let deadline = start + args.timeout;
    let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut handles = Vec::new();
    for consumers in per_thread.into_iter().filter(|c| !c.is_empty()) {
        let (counted, bytes, done, first) =
            (counted.clone(), bytes.clone(), done.clone(), first.clone());
        let expect = args.expect;
        handles.push(std::thread::spawn(move || {
            let wait = if consumers.len() == 1 {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (mut n, mut b) = (0u64, 0u64);
                for consumer in &consumers {
                    // drain what has arrived, a bounded batch at a time
                    for _ in 0..10_000 {
                        match consumer.poll(wait) {
                            Some(Ok(m)) => {
                                n += 1;
                                b += m.payload_len() as u64;
                            }
                            Some(Err(e)) => eprintln!("consume error: {e}"),
                            None => break,
                        }
                    }
                }
                if n == 0 {
                    if wait.is_zero() {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    continue;
                }
                if let Ok(mut f) = first.lock() {
                    f.get_or_insert_with(Instant::now);
                }
                bytes.fetch_add(b, Ordering::Relaxed);
                if counted.fetch_add(n, Ordering::Relaxed) + n >= expect {
                    done.store(true, Ordering::Relaxed);
                }
            }
            Instant::now()
        }));
    }
    let mut end = start;
    for h in handles {
        end = end.max(h.join().map_err(|_| "a consumer thread panicked")?);
    }
    let n = counted.load(Ordering::Relaxed);
    let seconds = (end - start).as_secs_f64();
    let from_first = first
        .lock()
        .ok()
        .and_then(|f| *f)
        .map_or(0.0, |f| (end - f).as_secs_f64());
    let line = serde_json::json!({
        "system": "rdkafka-count",
        "librdkafka": rdkafka::util::get_rdkafka_version().1,
        "topic": args.topic,
        "partitions": partitions,
        "threads": args.threads,
        "messages": n,
        "bytes": bytes.load(Ordering::Relaxed),
        "seconds": seconds,
        "seconds_from_first_message": from_first,
        "msgs_per_s": n as f64 / seconds.max(1e-9),
        "complete": n >= args.expect,
    });
    println!("{line}");
    Ok(n >= args.expect)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("count_consumer: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "count_consumer: fewer than {} messages within {:?}",
                args.expect, args.timeout
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("count_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
