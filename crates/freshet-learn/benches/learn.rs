//! Prequential throughput (score, then learn) on the CPU: logistic regression on the native
//! path at several batch sizes, and the candle `mlp`. 32 dense standard-normal inputs, labels
//! from a fixed logistic model; rows are built before the clock starts.
//!
//! `cargo bench -p freshet-learn --bench learn`

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use freshet_core::model::ModelSpec;
use freshet_learn::{Example, Learner};

const DIM: usize = 32;

fn rows(n: usize) -> Vec<Example> {
    let mut state = 0x1234_5678_u64;
    let mut unit = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_precision_loss)]
        let u = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        u
    };
    (0..n)
        .map(|_| {
            let x: Vec<f64> = (0..DIM)
                .map(|_| (-2.0 * unit().ln()).sqrt() * (std::f64::consts::TAU * unit()).cos())
                .collect();
            #[allow(clippy::cast_precision_loss)]
            let z: f64 = x
                .iter()
                .enumerate()
                .map(|(j, v)| v * ((j % 7) as f64 - 3.0) / 6.0)
                .sum();
            let label = f32::from(u8::from(unit() < 1.0 / (1.0 + (-z).exp())));
            Example::dense(&x, label)
        })
        .collect()
}

fn spec(kind: &str, batch: usize) -> ModelSpec {
    let text = format!(
        "name = \"bench\"\nkind = \"{kind}\"\nfeatures = [\"s.x*\"]\nlabel = {{ field = \"y\" }}\nbatch_size = {batch}\n"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("bench spec: {e}"))
}

fn inputs() -> Vec<String> {
    (0..DIM).map(|j| format!("s.x{j}")).collect()
}

fn run(learner: &mut Learner, data: &[Example]) {
    for chunk in data.chunks(10_000) {
        if let Err(e) = learner.prequential(chunk) {
            panic!("prequential: {e}");
        }
    }
}

fn prequential(c: &mut Criterion) {
    let data = rows(200_000);
    let mut group = c.benchmark_group("prequential_cpu");
    group.sample_size(10);
    for (kind, batch, n) in [
        ("logistic_regression", 1, 200_000),
        ("logistic_regression", 16, 200_000),
        ("logistic_regression", 64, 200_000),
        ("mlp", 64, 20_000),
    ] {
        group.throughput(Throughput::Elements(n as u64));
        let spec = spec(kind, batch);
        group.bench_with_input(
            BenchmarkId::new(kind, format!("batch{batch}")),
            &n,
            |b, &n| {
                b.iter_batched(
                    || Learner::new(&spec, inputs()).unwrap_or_else(|e| panic!("learner: {e}")),
                    |mut learner| run(&mut learner, &data[..n]),
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, prequential);
criterion_main!(benches);
