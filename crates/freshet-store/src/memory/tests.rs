use std::sync::Arc;
use std::thread;

use freshet_core::store::{FeatureValue, FeatureVector, OnlineStore, StoreError, StoreWrite};

use super::*;

fn schema(name: &str) -> ViewSchema {
    ViewSchema {
        name: name.to_owned(),
        features: vec!["count".to_owned(), "mean".to_owned()],
        ttl_ms: None,
    }
}

fn vector(as_of_ms: u64, count: i64) -> FeatureVector {
    FeatureVector {
        as_of_ms,
        values: vec![
            FeatureValue::Int(count),
            FeatureValue::Float(count as f64 / 2.0),
        ],
    }
}

fn upsert(entity: &str, as_of_ms: u64, count: i64) -> StoreWrite {
    StoreWrite::Upsert {
        entity: entity.to_owned(),
        vector: vector(as_of_ms, count),
    }
}

fn delete(entity: &str) -> StoreWrite {
    StoreWrite::Delete {
        entity: entity.to_owned(),
    }
}

fn store_with_card() -> MemoryStore {
    let store = MemoryStore::new();
    store.register_view(schema("card")).expect("register");
    store
}

#[test]
fn register_is_idempotent_and_rejects_a_different_schema() {
    let store = store_with_card();
    store
        .register_view(schema("card"))
        .expect("same schema again");
    let mut other = schema("card");
    other.features.push("extra".to_owned());
    let err = store.register_view(other).expect_err("different schema");
    assert!(matches!(err, StoreError::Fatal(_)), "{err}");
    assert_eq!(store.view("card"), Some(schema("card")));
    store.register_view(schema("merchant")).expect("register");
    assert_eq!(
        store.views(),
        vec!["card".to_owned(), "merchant".to_owned()]
    );
}

#[test]
fn upsert_replaces_the_previous_vector() {
    let store = store_with_card();
    store
        .write_batch("card", vec![upsert("c1", 10, 1), upsert("c1", 20, 2)])
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(20, 2)));
    store
        .write_batch("card", vec![upsert("c1", 30, 3)])
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), Some(vector(30, 3)));
    assert_eq!(store.len("card").expect("len"), 1);
}

#[test]
fn delete_removes_and_writes_apply_in_batch_order() {
    let store = store_with_card();
    store
        .write_batch(
            "card",
            vec![upsert("c1", 1, 1), upsert("c2", 1, 1), delete("c1")],
        )
        .expect("write");
    assert_eq!(store.get("card", "c1").expect("get"), None);
    assert_eq!(store.len("card").expect("len"), 1);

    store
        .write_batch("card", vec![delete("c2"), upsert("c2", 2, 5)])
        .expect("write");
    assert_eq!(store.get("card", "c2").expect("get"), Some(vector(2, 5)));

    store
        .write_batch("card", vec![delete("absent")])
        .expect("deleting nothing is fine");
}

#[test]
fn get_many_answers_in_the_order_asked() {
    let store = store_with_card();
    let writes = (0..100)
        .map(|i| upsert(&format!("c{i}"), i, i as i64))
        .collect();
    store.write_batch("card", writes).expect("write");
    let asked = ["c42", "missing", "c7", "c99", "c42", "c0"];
    let got = store.get_many("card", &asked).expect("get_many");
    assert_eq!(
        got,
        vec![
            Some(vector(42, 42)),
            None,
            Some(vector(7, 7)),
            Some(vector(99, 99)),
            Some(vector(42, 42)),
            Some(vector(0, 0)),
        ]
    );
    assert!(store.get_many("card", &[]).expect("empty").is_empty());
}

#[test]
fn scan_is_sorted_by_entity() {
    let store = store_with_card();
    let entities = ["b", "a", "d", "c", "aa", "e"];
    let writes = entities.iter().map(|e| upsert(e, 1, 1)).collect();
    store.write_batch("card", writes).expect("write");
    let scanned: Vec<String> = store
        .scan("card")
        .expect("scan")
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert_eq!(scanned, vec!["a", "aa", "b", "c", "d", "e"]);
}

#[test]
fn unknown_view_is_a_typed_error_everywhere() {
    let store = store_with_card();
    let unknown = |r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::UnknownView(ref v)) if v == "nope"),
            "{r:?}"
        );
    };
    unknown(store.write_batch("nope", vec![upsert("c1", 1, 1)]));
    unknown(store.get("nope", "c1").map(drop));
    unknown(store.get_many("nope", &["c1"]).map(drop));
    unknown(store.len("nope").map(drop));
    unknown(store.scan("nope").map(drop));
    assert_eq!(store.view("nope"), None);
}

#[test]
fn a_batch_with_a_wrong_length_vector_changes_nothing() {
    let store = store_with_card();
    let bad = StoreWrite::Upsert {
        entity: "c2".to_owned(),
        vector: FeatureVector {
            as_of_ms: 1,
            values: vec![FeatureValue::Null],
        },
    };
    let err = store
        .write_batch("card", vec![upsert("c1", 1, 1), bad])
        .expect_err("wrong length");
    assert!(matches!(err, StoreError::Fatal(_)), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.len("card").expect("len"), 0);
}

#[test]
fn concurrent_writers_and_readers_see_whole_vectors() {
    const WRITERS: usize = 4;
    const ENTITIES: usize = 200;
    const ROUNDS: i64 = 50;

    let store = Arc::new(store_with_card());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    // Each writer owns the entities with index ≡ w (mod WRITERS), like dataflow
                    // workers after the exchange by entity key.
                    let writes = (w..ENTITIES)
                        .step_by(WRITERS)
                        .map(|i| upsert(&format!("e{i}"), round as u64, round))
                        .collect();
                    store.write_batch("card", writes).expect("write");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                let names: Vec<String> = (0..ENTITIES).map(|i| format!("e{i}")).collect();
                let asked: Vec<&str> = names.iter().map(String::as_str).collect();
                for _ in 0..200 {
                    for v in store
                        .get_many("card", &asked)
                        .expect("read")
                        .into_iter()
                        .flatten()
                    {
                        // A torn vector would disagree with its own as_of.
                        assert_eq!(v, vector(v.as_of_ms, v.as_of_ms as i64));
                    }
                    assert!(store.len("card").expect("len") <= ENTITIES);
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().expect("thread panicked");
    }
    let all = store.scan("card").expect("scan");
    assert_eq!(all.len(), ENTITIES);
    for (_, v) in all {
        assert_eq!(v, vector(ROUNDS as u64 - 1, ROUNDS - 1));
    }
}
