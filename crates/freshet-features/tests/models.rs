//! What the dataflow feeds to models: examples carry the entity's features as served when their
//! event arrived (never values from later events, even when those arrive before the label);
//! delayed labels are joined in the dataflow within `max_delay` (late ones counted and dropped,
//! unlabelled examples dropped or learned as negatives); examples reach the sink in event-time
//! order, the same whatever the number of workers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet_core::event::Scalar;
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_features::model::ModelRow;
use freshet_features::source::{BytesReader, PartitionReader};
use freshet_features::{
    ChangelogSink, DeadLetterSink, DiscardDrift, JoinCounts, ModelSink, Outputs, ReaderFactory,
    ServedCounts, ServedRows,
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

/// Event fields only (exact values whatever the timing), a one-second wait, and unlabelled
/// examples learned as negatives.
const SHORT_WAIT: &str = r#"
[[source]]
name = "tx"
entity = "card"
event_time = "ts"
allowed_lateness = "0s"

[[source]]
name = "labels"
entity = "card"
event_time = "ts"

[[model]]
name = "m"
kind = "logistic_regression"
features = ["tx.amount"]
label = { source = "labels", join_key = "id", field = "y", max_delay = "1s", unlabeled = "negative" }
optimizer = { kind = "sgd", lr = 0.1 }
"#;

#[derive(Default)]
struct Recorder {
    items: Mutex<Vec<String>>,
    rows: Mutex<Vec<ModelRow>>,
    counts: Mutex<Option<JoinCounts>>,
}

impl Recorder {
    fn items(&self) -> Vec<String> {
        self.items.lock().expect("items").clone()
    }
    fn rows(&self) -> Vec<ModelRow> {
        self.rows.lock().expect("rows").clone()
    }
    fn counts(&self) -> JoinCounts {
        self.counts
            .lock()
            .expect("counts")
            .expect("join counts reported")
    }
}

impl ModelSink for Recorder {
    fn row(&self, _: &str, row: ModelRow) {
        if let Ok(mut items) = self.items.lock() {
            items.push(format!("{:?} @{} y={:?}", row.key, row.ts_ms, row.label));
        }
        if let Ok(mut rows) = self.rows.lock() {
            rows.push(row);
        }
    }
    fn joins(&self, _: &str, counts: JoinCounts) {
        if let Ok(mut c) = self.counts.lock() {
            *c = Some(counts);
        }
    }
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

fn input(text: &str) -> ReaderFactory {
    let bytes: Arc<[u8]> = Arc::from(text.as_bytes());
    Arc::new(move |index, _peers| {
        let mut parts: Vec<(u32, Box<dyn PartitionReader>)> = Vec::new();
        if index == 0 {
            parts.push((0, Box::new(BytesReader::new(bytes.clone()))));
        }
        Ok(parts)
    })
}

fn run(pipeline: &str, tx: &str, labels: &str, workers: usize) -> Arc<Recorder> {
    run_served(pipeline, tx, labels, workers, None)
}

/// [`run`] with rows served for the models' label joins (queued before the run starts).
fn run_served(
    pipeline: &str,
    tx: &str,
    labels: &str,
    workers: usize,
    served: Option<Arc<ServedRows>>,
) -> Arc<Recorder> {
    let spec = PipelineSpec::from_toml(pipeline, Path::new("models.toml")).expect("pipeline");
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
        served,
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
// the label of event 1 arrives after events 2 and 4 have changed card c's features
const LABELS: &str = r#"{"id":1,"card":"c","ts":4500,"y":1}
{"id":3,"card":"d","ts":4600,"y":0}
{"id":2,"card":"c","ts":5000,"y":1}
"#;

#[test]
fn a_label_joins_the_features_served_at_its_event_not_later_ones() {
    for workers in [1, 3] {
        let recorder = run(PIPELINE, TX, LABELS, workers);
        let rows = recorder.rows();
        let row = |id: f64| {
            rows.iter()
                .find(|r| r.key == Scalar::Num(id))
                .unwrap_or_else(|| panic!("row of event {id}"))
                .clone()
        };
        // event 1: nothing was served for card c before it: its features are missing, although
        // events 2 and 4 had changed them (count 3, sum 106) before its label came
        assert_eq!(
            row(1.0).values,
            vec![Scalar::Null, Scalar::Null, Scalar::Num(5.0)]
        );
        assert_eq!(row(1.0).label, Some(Scalar::Num(1.0)));
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
        // joined examples come at their labels' times; event 4 has no label yet and its wait
        // reaches past the end of input: pending, not learned
        assert_eq!(
            recorder.items(),
            vec![
                "Num(1.0) @1000 y=Some(Num(1.0))",
                "Num(3.0) @2500 y=Some(Num(0.0))",
                "Num(2.0) @2000 y=Some(Num(1.0))",
                "end",
            ],
            "event-time order with {workers} workers"
        );
        assert_eq!(
            recorder.counts(),
            JoinCounts {
                labels: 3,
                joined: 3,
                unmatched: 0,
                expired: 0,
                pending: 1,
                superseded: 0,
            }
        );
    }
}

#[test]
fn late_labels_are_counted_and_dropped_and_unlabelled_examples_become_negatives() {
    let tx = r#"{"id":1,"card":"c","ts":1000,"amount":5}
{"id":2,"card":"d","ts":1500,"amount":7}
{"id":3,"card":"c","ts":5000,"amount":9}
{"id":5,"card":"d","ts":9000,"amount":11}
"#;
    // 1's label is 1.5 s late; 2's comes exactly at max_delay (in time); 9 has no example; 3
    // gets its label before its event (too early: no join); 5's wait outlives the input
    let labels = r#"{"id":1,"card":"c","ts":2500,"y":1}
{"id":2,"card":"d","ts":2500,"y":1}
{"id":9,"card":"x","ts":3000,"y":1}
{"id":3,"card":"c","ts":4000,"y":1}
"#;
    let mut outputs = Vec::new();
    for workers in [1, 3] {
        let recorder = run(SHORT_WAIT, tx, labels, workers);
        assert_eq!(
            recorder.items(),
            vec![
                "Num(1.0) @1000 y=Some(Num(0.0))",
                "Num(2.0) @1500 y=Some(Num(1.0))",
                "Num(3.0) @5000 y=Some(Num(0.0))",
                "end",
            ],
            "{workers} workers"
        );
        assert_eq!(
            recorder.counts(),
            JoinCounts {
                labels: 4,
                joined: 1,
                unmatched: 3,
                expired: 2,
                pending: 1,
                superseded: 0,
            },
            "{workers} workers"
        );
        outputs.push(recorder.rows());
    }
    assert_eq!(outputs[0], outputs[1]);
}

fn served_row(id: f64, ts_ms: u64, amount: f64) -> ModelRow {
    ModelRow {
        model: "m".into(),
        ts_ms,
        outcome_ms: ts_ms,
        entity: "served".into(),
        key: Scalar::Num(id),
        values: vec![Scalar::Num(amount)],
        label: None,
        served: true,
    }
}

#[test]
fn served_rows_join_their_labels_within_max_delay_and_take_precedence_over_events() {
    // event 1 was also served (with other values: served wins); 2 is an event alone; 10 and 11
    // were only served: 10's label comes in time, 11's 1.1 s after it (max_delay is 1 s); 5's
    // wait outlives the input
    let tx = r#"{"id":1,"card":"c","ts":1000,"amount":5}
{"id":2,"card":"d","ts":1500,"amount":7}
{"id":5,"card":"d","ts":9000,"amount":11}
"#;
    let labels = r#"{"id":1,"card":"c","ts":1800,"y":1}
{"id":2,"card":"d","ts":2000,"y":1}
{"id":10,"card":"x","ts":2100,"y":1}
{"id":11,"card":"x","ts":2400,"y":1}
"#;
    let mut outputs = Vec::new();
    for workers in [1, 3] {
        let served = Arc::new(ServedRows::new(["m".to_owned()]));
        for row in [
            served_row(1.0, 1000, 50.0),
            served_row(10.0, 1200, 70.0),
            served_row(11.0, 1300, 80.0),
        ] {
            assert!(served.push(row));
        }
        let recorder = run_served(SHORT_WAIT, tx, labels, workers, Some(served.clone()));
        assert_eq!(
            recorder.items(),
            vec![
                "Num(1.0) @1000 y=Some(Num(1.0))",
                "Num(2.0) @1500 y=Some(Num(1.0))",
                "Num(10.0) @1200 y=Some(Num(1.0))",
                // not joined: its label came after max_delay; expired (a negative here)
                "Num(11.0) @1300 y=Some(Num(0.0))",
                "end",
            ],
            "{workers} workers"
        );
        let rows = recorder.rows();
        let values: Vec<(bool, Vec<Scalar>)> =
            rows.iter().map(|r| (r.served, r.values.clone())).collect();
        assert_eq!(
            values,
            vec![
                (true, vec![Scalar::Num(50.0)]),
                (false, vec![Scalar::Num(7.0)]),
                (true, vec![Scalar::Num(70.0)]),
                (true, vec![Scalar::Num(80.0)]),
            ],
            "the served values are learned, the event's example of 1 is not ({workers} workers)"
        );
        assert_eq!(
            recorder.counts(),
            JoinCounts {
                labels: 4,
                joined: 3,
                unmatched: 1,
                expired: 1,
                pending: 1,
                superseded: 1,
            },
            "{workers} workers"
        );
        assert_eq!(
            served.counts("m"),
            ServedCounts {
                logged: 3,
                late: 0,
                dropped: 0
            }
        );
        outputs.push(rows);
    }
    assert_eq!(outputs[0], outputs[1]);
}

/// A small deterministic generator (xorshift), so the test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn the_join_matches_a_brute_force_reference_with_one_and_three_workers() {
    // 400 events over 40 s; labels 0..2.5 s after their event (max_delay 1 s): some in time,
    // some late, some missing, some twice, plus labels for keys that have no event
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tx = String::new();
    let mut labels: Vec<(u64, u64, u64)> = Vec::new();
    let mut events: Vec<(u64, u64, u64)> = Vec::new();
    for i in 0..400u64 {
        let ts = 1_000 + i * 100;
        let id = if rng.next(20) == 0 { i - i.min(3) } else { i }; // a few repeated keys
        let amount = rng.next(1000);
        tx.push_str(&format!(
            r#"{{"id":{id},"card":"c{}","ts":{ts},"amount":{amount}}}"#,
            rng.next(7)
        ));
        tx.push('\n');
        events.push((ts, id, amount));
        for _ in 0..rng.next(3) {
            labels.push((ts + rng.next(2_500), id, rng.next(2)));
        }
        if rng.next(10) == 0 {
            labels.push((ts + rng.next(500), 10_000 + i, 1));
        }
    }
    labels.sort();
    let label_text: String = labels
        .iter()
        .map(|(ts, id, y)| format!("{{\"id\":{id},\"card\":\"l\",\"ts\":{ts},\"y\":{y}}}\n"))
        .collect();
    // the reference: each example takes its first label (earliest, then smallest) within
    // [e, e + 1000]; without one it expires as a negative once event time passes e + 1000
    let last = labels
        .iter()
        .map(|l| l.0)
        .chain(events.iter().map(|e| e.0))
        .max()
        .unwrap_or(0);
    let mut expected: Vec<(u64, u64, u64, u64)> = Vec::new(); // (at, id, event ts, label)
    let mut used = std::collections::BTreeSet::new();
    let (mut expired, mut pending) = (0u64, 0u64);
    for &(e, id, _) in &events {
        let first = labels
            .iter()
            .filter(|(l, lid, _)| *lid == id && e <= *l && *l <= e + 1_000)
            .min();
        match first {
            Some(&(l, _, y)) => {
                used.insert((l, id, y));
                expected.push((l, id, e, y));
            }
            None if e + 1_001 <= last => {
                expired += 1;
                expected.push((e + 1_001, id, e, 0));
            }
            None => pending += 1,
        }
    }
    expected.sort();
    let joined = used.len() as u64;
    let reference = JoinCounts {
        labels: labels.len() as u64,
        joined,
        unmatched: labels.len() as u64 - joined,
        expired,
        pending,
        superseded: 0,
    };
    assert!(
        expired > 10 && joined > 100 && reference.unmatched > 50,
        "{reference:?}"
    );
    let mut outputs = Vec::new();
    for workers in [1, 3] {
        let recorder = run(SHORT_WAIT, &tx, &label_text, workers);
        let rows = recorder.rows();
        let mut got: Vec<(u64, u64, u64, u64)> = rows
            .iter()
            .map(|r| {
                let num = |s: &Scalar| match s {
                    Scalar::Num(n) => *n as u64,
                    other => panic!("not a number: {other:?}"),
                };
                let label = num(r.label.as_ref().expect("labelled"));
                let e = r.ts_ms;
                // when it happened: at its label, or at its expiry
                let at = labels
                    .iter()
                    .filter(|(l, lid, y)| {
                        *lid == num(&r.key) && e <= *l && *l <= e + 1_000 && *y == label
                    })
                    .map(|l| l.0)
                    .min()
                    .unwrap_or(e + 1_001);
                (at, num(&r.key), e, label)
            })
            .collect();
        let times: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "event-time order");
        got.sort();
        assert_eq!(got, expected, "{workers} workers");
        assert_eq!(recorder.counts(), reference, "{workers} workers");
        outputs.push(rows);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the same examples in the same order"
    );
}
