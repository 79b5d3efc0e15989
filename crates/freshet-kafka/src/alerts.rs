//! Drift alerts to Kafka: [`KafkaAlertSink`] wraps a drift sink and produces each alert
//! transition of the monitors that set `alert_topic` to that topic.
//!
//! Each message is one JSON object ([`freshet_core::drift::DriftAlert::message`]: `kind`,
//! `state`, `monitor`, `feature`, `measure`, `value`, `threshold`, `window {start, end}`,
//! `reference {start, end} | null`) keyed by `monitor/feature`, so the transitions of one
//! feature stay in order on one partition. Delivery goes through the shared [`KafkaProducer`]:
//! a send waits only while librdkafka's local queue is full; a failed send or delivery is
//! logged and counted ([`KafkaAlertSink::failed`], and the producer's own delivery stats), never
//! retried by hand (librdkafka retries transient errors itself).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use freshet_core::drift::{DriftAlert, DriftWindow};
use freshet_core::spec::PipelineSpec;
use freshet_features::drift::FeatureReference;
use freshet_features::DriftSink;

use crate::sink::KafkaProducer;

/// Forwards everything to the sink it wraps and produces alert transitions to each monitor's
/// `alert_topic` (module doc).
pub struct KafkaAlertSink {
    inner: Arc<dyn DriftSink>,
    producer: Arc<KafkaProducer>,
    /// Monitor name → alert topic.
    topics: BTreeMap<String, String>,
    failed: AtomicU64,
}

impl KafkaAlertSink {
    /// The alert topic of every monitor of `spec` that sets one.
    pub fn topics(spec: &PipelineSpec) -> BTreeMap<String, String> {
        spec.drift
            .iter()
            .map(|d| d.get_ref())
            .filter_map(|d| Some((d.name.clone(), d.alert_topic.clone()?)))
            .collect()
    }

    /// Wraps `inner`, producing with `producer` to the `topics` of [`KafkaAlertSink::topics`].
    pub fn new(
        inner: Arc<dyn DriftSink>,
        producer: Arc<KafkaProducer>,
        topics: BTreeMap<String, String>,
    ) -> Self {
        Self {
            inner,
            producer,
            topics,
            failed: AtomicU64::new(0),
        }
    }

    /// Alert transitions that could not be queued for sending.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl DriftSink for KafkaAlertSink {
    fn reference(&self, monitor: &str, feature: &str, reference: &FeatureReference) {
        self.inner.reference(monitor, feature, reference);
    }

    fn window(&self, window: &DriftWindow) {
        self.inner.window(window);
    }

    fn alert(&self, alert: &DriftAlert) {
        self.inner.alert(alert);
        let Some(topic) = self.topics.get(&alert.monitor) else {
            return;
        };
        let payload = alert.message().to_string();
        let key = alert.key();
        if let Err(error) =
            self.producer
                .send(topic, Some(key.as_bytes()), payload.as_bytes(), None)
        {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(topic, monitor = %alert.monitor, %error, "drift alert not produced");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use freshet_core::drift::{Measure, Transition};
    use freshet_features::DiscardDrift;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::Message;
    use serde_json::Value;

    use super::*;

    const PIPELINE: &str = r#"
[[source]]
name = "s"
entity = "id"
event_time = "ts"

[[drift]]
name = "m"
features = ["s.x"]
reference = { kind = "first", events = 10 }
window = "10s"
alert_topic = "freshet.alerts"

[[drift]]
name = "quiet"
features = ["s.x"]
reference = { kind = "first", events = 10 }
window = "10s"
"#;

    fn alert(monitor: &str, feature: &str, value: f64) -> DriftAlert {
        DriftAlert {
            monitor: monitor.into(),
            feature: feature.into(),
            measure: Measure::Adwin,
            transition: Transition::Fired,
            value,
            threshold: 0.002,
            window_start_ms: 5_000,
            window_end_ms: 5_000,
            reference: None,
        }
    }

    #[test]
    fn produces_transitions_of_monitors_with_an_alert_topic_keyed_by_monitor_and_feature() {
        let spec = PipelineSpec::from_toml(PIPELINE, std::path::Path::new("p.toml"))
            .expect("valid pipeline");
        let topics = KafkaAlertSink::topics(&spec);
        assert_eq!(
            topics,
            BTreeMap::from([("m".to_owned(), "freshet.alerts".to_owned())])
        );
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("freshet.alerts", 1, 1).expect("topic");
        let brokers = mock.bootstrap_servers();
        let producer =
            Arc::new(KafkaProducer::connect(&brokers, Duration::from_secs(10)).expect("producer"));
        let sink = KafkaAlertSink::new(Arc::new(DiscardDrift), producer.clone(), topics);
        sink.alert(&alert("m", "s.x", 0.31));
        sink.alert(&alert("quiet", "s.x", 9.0));
        sink.alert(&alert("m", "s.y", -0.2));
        producer.finish(Duration::from_secs(10)).expect("delivered");
        assert_eq!(sink.failed(), 0);

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "alerts-test")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&["freshet.alerts"]).expect("subscribe");
        let mut got: Vec<(String, Value)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 2 && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                let value: Value =
                    serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON");
                got.push((key, value));
            }
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "m/s.x");
        assert_eq!(got[1].0, "m/s.y");
        let first = &got[0].1;
        assert_eq!(first["monitor"], "m");
        assert_eq!(first["feature"], "s.x");
        assert_eq!(first["measure"], "adwin");
        assert_eq!(first["state"], "firing");
        assert_eq!(first["value"], 0.31);
        assert_eq!(first["threshold"], 0.002);
        assert_eq!(first["window"]["end"], 5_000);
        assert_eq!(first["reference"], Value::Null);
    }
}
