//! What the dataflow feeds to models: examples carry the entity's features as served when their
//! event arrived (never values from later events, even when those arrive before the label), and
//! examples and labels reach the sink in event-time order whatever the number of workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet_core::event::Scalar;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_features::model::{LabelRow, ModelRow};
use freshet_features::source::{BytesReader, PartitionReader};
use freshet_features::{
    ChangelogSink, DeadLetterSink, DiscardDrift, ModelSink, Outputs, ReaderFactory,
};

const PIPELINE: &str = r#"
[[source]]
name = "tx"
entity = "card"
event_time = "ts"
allowed_lateness = "0s"

[[source]]
name = "labels"
entity = "card"
event_time = "ts"

[[feature_view]]
name = "card"
source = "tx"
features = [
  { name = "n_5m", agg = "count", window = "5m" },
  { name = "sum_5m", agg = "sum", field = "amount", window = "5m" },
]

[[model]]
name = "m"
kind = "logistic_regression"
features = ["card.n_5m", "card.sum_5m", "tx.amount"]
label = { source = "labels", join_key = "id", field = "y", max_delay = "10m" }
optimizer = { kind = "sgd", lr = 0.1 }
"#;

#[derive(Default)]
struct Recorder {
    items: Mutex<Vec<String>>,
    rows: Mutex<Vec<ModelRow>>,
}

impl ModelSink for Recorder {
    fn row(&self, _: &str, row: ModelRow) {
        if let Ok(mut items) = self.items.lock() {
            items.push(format!("row {:?} @{}", row.key, row.ts_ms));
        }
        if let Ok(mut rows) = self.rows.lock() {
            rows.push(row);
        }
    }
    fn label(&self, _: &str, label: LabelRow) {
        if let Ok(mut items) = self.items.lock() {
            items.push(format!("label {:?} @{}", label.key, label.ts_ms));
        }
    }
    fn watermark(&self, _: &str, _: u64) {}
    fn end(&self, _: &str) {
        if let Ok(mut items) = self.items.lock() {
            items.push("end".into());
        }
    }
}

struct Nothing;
impl ChangelogSink for Nothing {
    fn write(&self, _: &[freshet_features::window::ClosedWindow]) {}
}
impl DeadLetterSink for Nothing {
    fn write(&self, _: freshet_features::source::DeadLetter) {}
}

fn input(text: &'static str) -> ReaderFactory {
    let bytes: Arc<[u8]> = Arc::from(text.as_bytes());
    Arc::new(move |index, _peers| {
        let mut parts: Vec<(u32, Box<dyn PartitionReader>)> = Vec::new();
        if index == 0 {
            parts.push((0, Box::new(BytesReader::new(bytes.clone()))));
        }
        Ok(parts)
    })
}

fn run(tx: &'static str, labels: &'static str, workers: usize) -> Arc<Recorder> {
    let spec = PipelineSpec::from_toml(PIPELINE, Path::new("models.toml")).expect("pipeline");
    let plans = freshet_features::plan::compile(&spec);
    let recorder = Arc::new(Recorder::default());
    let outputs = Outputs {
        store: Arc::new(freshet_store_stub::Store::default()),
        changelog: Arc::new(Nothing),
        dead_letters: Arc::new(Nothing),
        drift: Arc::new(DiscardDrift),
        models: recorder.clone(),
        metrics: Arc::new(PipelineMetrics::new()),
        flush_interval: Duration::from_millis(10),
    };
    let inputs: HashMap<String, ReaderFactory> = HashMap::from([
        ("tx".to_owned(), input(tx)),
        ("labels".to_owned(), input(labels)),
    ]);
    freshet_features::run(plans, inputs, workers, outputs).expect("run");
    recorder
}

/// A minimal in-memory store for these tests (the real ones live in freshet-store).
mod freshet_store_stub {
    use std::sync::Mutex;

    use freshet_core::store::{FeatureVector, OnlineStore, StoreError, StoreWrite, ViewSchema};

    #[derive(Default)]
    pub struct Store {
        views: Mutex<Vec<ViewSchema>>,
    }

    impl OnlineStore for Store {
        fn register_view(&self, schema: ViewSchema) -> Result<(), StoreError> {
            if let Ok(mut v) = self.views.lock() {
                v.push(schema);
            }
            Ok(())
        }
        fn view(&self, view: &str) -> Option<ViewSchema> {
            self.views
                .lock()
                .ok()?
                .iter()
                .find(|v| v.name == view)
                .cloned()
        }
        fn views(&self) -> Vec<String> {
            self.views
                .lock()
                .map(|v| v.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default()
        }
        fn write_batch(&self, _: &str, _: Vec<StoreWrite>) -> Result<(), StoreError> {
            Ok(())
        }
        fn get(&self, _: &str, _: &str) -> Result<Option<FeatureVector>, StoreError> {
            Ok(None)
        }
        fn get_many(
            &self,
            _: &str,
            entities: &[&str],
        ) -> Result<Vec<Option<FeatureVector>>, StoreError> {
            Ok(vec![None; entities.len()])
        }
        fn len(&self, _: &str) -> Result<usize, StoreError> {
            Ok(0)
        }
        fn scan(&self, _: &str) -> Result<Vec<(String, FeatureVector)>, StoreError> {
            Ok(Vec::new())
        }
    }
}

const TX: &str = r#"{"id":1,"card":"c","ts":1000,"amount":5}
{"id":2,"card":"c","ts":2000,"amount":100}
{"id":3,"card":"d","ts":2500,"amount":7}
{"id":4,"card":"c","ts":4000,"amount":1}
"#;
// the label of event 1 arrives after event 2 has changed card c's features
const LABELS: &str = r#"{"id":1,"card":"c","ts":3000,"y":1}
{"id":3,"card":"d","ts":3500,"y":0}
"#;

#[test]
fn an_example_carries_the_features_served_at_its_event_not_later_ones() {
    for workers in [1, 3] {
        let recorder = run(TX, LABELS, workers);
        let rows = recorder.rows.lock().expect("rows").clone();
        let row = |id: f64| {
            rows.iter()
                .find(|r| r.key == Scalar::Num(id))
                .unwrap_or_else(|| panic!("row of event {id}"))
                .clone()
        };
        // event 1: nothing was served for card c before it: its features are missing
        assert_eq!(
            row(1.0).values,
            vec![Scalar::Null, Scalar::Null, Scalar::Num(5.0)]
        );
        // event 2: card c as served when it arrived: at most event 1 (count 0 or 1 depending
        // on how far the head had come), never event 2's own amount or event 4's
        let two = row(2.0).values;
        assert!(
            matches!(
                (&two[0], &two[1]),
                (Scalar::Num(n), Scalar::Null) if *n == 0.0
            ) || two[..2] == [Scalar::Num(1.0), Scalar::Num(5.0)],
            "event 2 saw {two:?}"
        );
        assert_eq!(two[2], Scalar::Num(100.0));
        // event 4 never sees itself: the sum is at most events 1 and 2
        let four = row(4.0).values;
        assert!(
            !matches!(four[1], Scalar::Num(s) if s > 105.0),
            "event 4 saw {four:?}"
        );
        let items = recorder.items.lock().expect("items").clone();
        assert_eq!(
            items,
            vec![
                "row Num(1.0) @1000",
                "row Num(2.0) @2000",
                "row Num(3.0) @2500",
                "label Num(1.0) @3000",
                "label Num(3.0) @3500",
                "row Num(4.0) @4000",
                "end",
            ],
            "event-time order with {workers} workers"
        );
    }
}
