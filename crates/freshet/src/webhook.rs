//! Alert delivery to a webhook: a [`DriftSink`] wrapper that forwards everything to the sink it
//! wraps and POSTs each alert transition of its monitors as JSON ([`DriftAlert::message`]) to
//! their `alert.webhook`, from a background thread.
//!
//! Guarantees: the dataflow never waits on the network. Transitions go into a bounded queue
//! ([`QUEUE_CAPACITY`]); when it is full (the endpoint is down for a long time) new transitions
//! are dropped and counted, never blocking. Each transition is retried on connection errors,
//! timeouts, 429 and 5xx with exponential backoff ([`FIRST_BACKOFF`] doubling to
//! [`MAX_BACKOFF`], [`MAX_ATTEMPTS`] attempts), then dropped and counted; other 4xx answers are
//! not retried. Transitions are delivered one at a time, in the order the monitors emitted them.
//! [`WebhookSink::finish`] waits (up to a deadline) for the queue to drain, so a replay delivers
//! its last alerts before exiting.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use freshet_core::drift::{DriftAlert, DriftWindow};
use freshet_features::drift::FeatureReference;
use freshet_features::DriftSink;

/// Transitions waiting for delivery at most; beyond, new ones are dropped.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Delivery attempts per transition.
pub const MAX_ATTEMPTS: u32 = 8;
/// Wait before the first retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Timeout of one POST (connect, send and read the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to the transitions handed to a [`WebhookSink`].
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Accepted by the endpoint (2xx).
    pub delivered: AtomicU64,
    /// Given up after the attempts ran out or a non-retryable answer.
    pub failed: AtomicU64,
    /// Not queued because the queue was full.
    pub dropped: AtomicU64,
    /// Retries made (attempts after the first).
    pub retries: AtomicU64,
}

/// Forwards everything to `inner` and POSTs each alert transition to a webhook (module doc).
pub struct WebhookSink {
    inner: Arc<dyn DriftSink>,
    /// The monitors whose transitions go to this webhook.
    monitors: HashSet<String>,
    queue: Mutex<Option<SyncSender<String>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Delivery counters.
    pub stats: Arc<WebhookStats>,
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    Retry(String),
    GiveUp(String),
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Attempt {
    match agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
    {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Attempt::Delivered
            } else if status.as_u16() == 429 || status.is_server_error() {
                Attempt::Retry(format!("status {}", status.as_u16()))
            } else {
                Attempt::GiveUp(format!("status {}", status.as_u16()))
            }
        }
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

fn deliver(url: &str, messages: &Receiver<String>, stats: &WebhookStats) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    for body in messages {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            match post(&agent, url, &body) {
                Attempt::Delivered => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Attempt::GiveUp(reason) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url, reason, "drift alert refused by the webhook, dropped");
                    break;
                }
                Attempt::Retry(reason) if attempt == MAX_ATTEMPTS => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        url,
                        reason,
                        attempts = attempt,
                        "drift alert not delivered, dropped"
                    );
                }
                Attempt::Retry(reason) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        url,
                        reason,
                        attempt,
                        "drift alert delivery failed, retrying"
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

impl WebhookSink {
    /// Starts the delivery thread for `url` (`http://host[:port]/path`, checked when the
    /// pipeline file was validated), for the transitions of `monitors`.
    pub fn start(
        url: &str,
        monitors: HashSet<String>,
        inner: Arc<dyn DriftSink>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<String>(QUEUE_CAPACITY);
        let stats = Arc::new(WebhookStats::default());
        let url = url.to_owned();
        let thread_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name("freshet-webhook".into())
            .spawn(move || deliver(&url, &receiver, &thread_stats))?;
        Ok(Self {
            inner,
            monitors,
            queue: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
            stats,
        })
    }

    /// Closes the queue and waits until every queued transition is delivered or given up, or
    /// `deadline` passes; returns whether the queue drained.
    pub fn finish(&self, deadline: Duration) -> bool {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let Some(worker) = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return true;
        };
        let until = Instant::now() + deadline;
        while !worker.is_finished() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        worker.join().is_ok()
    }
}

impl DriftSink for WebhookSink {
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        self.inner.reference(monitor, feature, reference);
    }

    fn window(&self, window: &DriftWindow) {
        self.inner.window(window);
    }

    fn alert(&self, alert: &DriftAlert) {
        self.inner.alert(alert);
        if !self.monitors.contains(&alert.monitor) {
            return;
        }
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = queue.as_ref() else {
            return;
        };
        match sender.try_send(alert.message().to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(monitor = %alert.monitor, "webhook queue full, drift alert dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use freshet_core::drift::{Measure, ReferencePeriod, Transition};
    use freshet_features::DiscardDrift;
    use serde_json::Value;

    use super::*;

    fn monitors() -> HashSet<String> {
        HashSet::from(["m".to_owned()])
    }

    fn alert(value: f64) -> DriftAlert {
        DriftAlert {
            monitor: "m".into(),
            feature: "s.x".into(),
            measure: Measure::Psi,
            transition: Transition::Fired,
            value,
            threshold: 0.1,
            window_start_ms: 10_000,
            window_end_ms: 20_000,
            reference: Some(ReferencePeriod {
                start_ms: 0,
                end_ms: 10_000,
            }),
        }
    }

    /// A one-connection-at-a-time HTTP/1.1 server: answers the first `failures` requests with
    /// 503 and the rest with 204, and hands every request body it received to the test.
    fn listener(failures: usize) -> (String, mpsc::Receiver<(u16, String)>) {
        let server = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let url = format!("http://{}/alerts", server.local_addr().expect("address"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut served = 0usize;
            for stream in server.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
                let mut length = 0usize;
                let mut line = String::new();
                let mut request_line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if request_line.is_empty() {
                        request_line = line.clone();
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                assert!(request_line.starts_with("POST /alerts "), "{request_line}");
                let status = if served < failures { 503 } else { 204 };
                served += 1;
                let reason = if status == 204 {
                    "No Content"
                } else {
                    "Service Unavailable"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.flush();
                let _ = tx.send((status, String::from_utf8_lossy(&body).into_owned()));
            }
        });
        (url, rx)
    }

    #[test]
    fn posts_each_transition_as_json_in_order_and_retries_on_503() {
        let (url, requests) = listener(2);
        let sink = WebhookSink::start(&url, monitors(), Arc::new(DiscardDrift)).expect("start");
        sink.alert(&alert(0.5));
        sink.alert(&DriftAlert {
            monitor: "another".into(),
            ..alert(0.6)
        });
        sink.alert(&alert(0.7));
        assert!(sink.finish(Duration::from_secs(20)), "queue drained");
        let got: Vec<(u16, String)> = (0..4)
            .map(|_| {
                requests
                    .recv_timeout(Duration::from_secs(5))
                    .expect("the listener saw the request")
            })
            .collect();
        assert!(
            requests.recv_timeout(Duration::from_millis(200)).is_err(),
            "nothing else"
        );
        // two 503s for the first transition, then both of monitor m delivered, in order
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [503, 503, 204, 204]
        );
        let bodies: Vec<Value> = got
            .iter()
            .map(|(_, b)| serde_json::from_str(b).expect("JSON body"))
            .collect();
        assert_eq!(bodies[0], bodies[2], "a retry sends the same body");
        assert_eq!(bodies[2]["value"], 0.5);
        assert_eq!(bodies[3]["value"], 0.7);
        let first = &bodies[2];
        assert_eq!(first["kind"], "alert");
        assert_eq!(first["state"], "firing");
        assert_eq!(first["monitor"], "m");
        assert_eq!(first["feature"], "s.x");
        assert_eq!(first["measure"], "psi");
        assert_eq!(first["threshold"], 0.1);
        assert_eq!(first["window"]["start"], 10_000);
        assert_eq!(first["window"]["end"], 20_000);
        assert_eq!(first["reference"]["end"], 10_000);
        assert_eq!(sink.stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(sink.stats.retries.load(Ordering::Relaxed), 2);
        assert_eq!(sink.stats.failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unreachable_webhook_never_blocks_the_caller() {
        // a port nobody listens on: bind, note it, close
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let sink = WebhookSink::start(
            &format!("http://127.0.0.1:{port}/x"),
            monitors(),
            Arc::new(DiscardDrift),
        )
        .expect("start");
        let started = Instant::now();
        // the delivery thread holds one transition while it retries; the queue takes the next
        // QUEUE_CAPACITY; the rest are dropped
        for i in 0..(QUEUE_CAPACITY + 101) {
            sink.alert(&alert(i as f64));
        }
        // every call returned at once, whatever the endpoint does; the overflow was counted
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(sink.stats.dropped.load(Ordering::Relaxed) >= 100);
        assert!(
            !sink.finish(Duration::from_millis(50)),
            "retries still running"
        );
    }
}
