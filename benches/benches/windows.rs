//! Window dataflow throughput: generated transactions (in memory, so no disk) through
//! `freshet_features::run` with the memory store, for the W1+W2 pipeline and the foundation
//! acceptance pipeline, on 1 and 2 workers. Throughput is events; JSON decoding is included.

// criterion's macros generate undocumented items
#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use freshet_core::metrics::PipelineMetrics;
use freshet_core::spec::PipelineSpec;
use freshet_features::source::{BytesReader, DeadLetter, PartitionReader};
use freshet_features::window::ClosedWindow;
use freshet_features::{ChangelogSink, DeadLetterSink, Outputs, ReaderFactory};

const EVENTS: u64 = 200_000;

struct Discard;

impl ChangelogSink for Discard {
    fn write(&self, windows: &[ClosedWindow]) {
        std::hint::black_box(windows.len());
    }
}

impl DeadLetterSink for Discard {
    fn write(&self, letter: DeadLetter) {
        std::hint::black_box(letter);
    }
}

fn run_once(spec: &PipelineSpec, input: &Arc<[u8]>, workers: usize) {
    let input = input.clone();
    let factory: ReaderFactory = Arc::new(move |index, _| {
        let reader: Box<dyn PartitionReader> = Box::new(BytesReader::new(input.clone()));
        Ok(if index == 0 {
            vec![(0, reader)]
        } else {
            Vec::new()
        })
    });
    let outputs = Outputs {
        store: Arc::new(freshet_store::MemoryStore::new()),
        changelog: Arc::new(Discard),
        dead_letters: Arc::new(Discard),
        drift: Arc::new(freshet_features::DiscardDrift),
        models: Arc::new(freshet_features::DiscardModels),
        metrics: Arc::new(PipelineMetrics::new()),
        flush_interval: Duration::from_secs(1),
        served: None,
    };
    let plans = freshet_features::plan::compile(spec);
    let inputs = HashMap::from([("transactions".to_owned(), factory)]);
    if let Err(e) = freshet_features::run(plans, inputs, workers, outputs) {
        panic!("benchmark run failed: {e}");
    }
}

fn windows(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // 100k cards, 1 ms apart on average: the shape of the standard 1M-event workload
    let mut generator = freshet_core::generate::TxnGenerator::new(7, 100_000);
    let input: Arc<[u8]> = generator.lines(EVENTS, 1_767_225_600_000, 1).into();
    let mut group = c.benchmark_group("windows");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, file) in [
        ("w1w2", root.join("pipelines/w1w2.toml")),
        (
            "foundation",
            root.join("../deploy/pipelines/foundation.toml"),
        ),
    ] {
        let spec = match PipelineSpec::load(&file) {
            Ok(spec) => spec,
            Err(e) => panic!("{e}"),
        };
        for workers in [1, 2] {
            group.bench_with_input(BenchmarkId::new(name, workers), &workers, |b, w| {
                b.iter(|| run_once(&spec, &input, *w));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);
