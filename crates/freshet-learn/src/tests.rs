//! Model tests. Tests of the candle path are written once over a `&Device` and expanded by
//! [`device_test!`] for the CPU and, with the `cuda` feature, for `cuda:0`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use freshet_core::model::{ModelSpec, OptimizerSpec};

use crate::example::{Example, Value};
use crate::head::Head;
use crate::linear::Linear;
use crate::net::Net;
use crate::optim::{state_arrays, Optimizer};
use crate::preprocess::Decoded;
use crate::{EngineChoice, LearnError, Learner, LearnerOptions};

/// Expands `fn name(device: &Device)` into `name::cpu` and, with the `cuda` feature,
/// `name::cuda` tests.
macro_rules! device_test {
    ($name:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                super::$name(&candle_core::Device::Cpu);
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                super::$name(&candle_core::Device::new_cuda(0).expect("a CUDA device"));
            }
        }
    };
}

/// SplitMix64 with Box-Muller normals: deterministic test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

fn spec(kind: &str, extra: &str) -> ModelSpec {
    let text = format!(
        "name = \"t\"\nkind = \"{kind}\"\nfeatures = [\"s.x*\"]\nlabel = {{ field = \"y\" }}\n{extra}\n"
    );
    let spec: ModelSpec = toml::from_str(&text).expect("test spec parses");
    spec.validate().expect("test spec is valid");
    spec
}

const INPUTS: usize = 4;
const COLOURS: [&str; 5] = ["red", "green", "blue", "cyan", "plum"];

fn names() -> Vec<String> {
    (0..INPUTS).map(|i| format!("s.x{i}")).collect()
}

/// Inputs: a shifted, scaled number; a number missing 20% of the time; a colour; a number.
/// The label comes from `label(logit)` of a fixed linear function of them.
fn mixed(rng: &mut Rng, n: usize, label: impl Fn(&mut Rng, f64) -> f32) -> Vec<Example> {
    (0..n)
        .map(|_| {
            let a = rng.normal() * 3.0 + 1.0;
            let b = (rng.unit() > 0.2).then(|| rng.normal());
            let colour = (rng.next_u64() % COLOURS.len() as u64) as usize;
            let d = rng.normal();
            let logit = 0.8 * (a - 1.0) / 3.0 - 1.2 * b.unwrap_or(0.5)
                + [1.0, -1.0, 0.5, 0.0, -0.5][colour]
                + 0.6 * d;
            Example {
                values: vec![
                    Value::Number(a),
                    b.map_or(Value::Missing, Value::Number),
                    Value::category(COLOURS[colour]),
                    Value::Number(d),
                ],
                label: label(rng, logit),
            }
        })
        .collect()
}

fn bernoulli(rng: &mut Rng, logit: f64) -> f32 {
    f32::from(u8::from(rng.unit() < 1.0 / (1.0 + (-logit).exp())))
}

fn three_classes(_: &mut Rng, logit: f64) -> f32 {
    if logit < -0.7 {
        0.0
    } else if logit < 0.7 {
        1.0
    } else {
        2.0
    }
}

fn regression(rng: &mut Rng, logit: f64) -> f32 {
    (2.0 * logit + 0.5 + 0.1 * rng.normal()) as f32
}

fn data_for(kind: &str, classes: bool, rng: &mut Rng, n: usize) -> Vec<Example> {
    match (kind, classes) {
        ("linear_regression", _) => mixed(rng, n, regression),
        ("softmax", _) | ("mlp", true) => mixed(rng, n, three_classes),
        _ => mixed(rng, n, bernoulli),
    }
}

// ---------------------------------------------------------------------------------------------
// Gradients against finite differences.

/// The batch loss of the native model's function, recomputed in f64 from f64 weights.
fn reference_loss(
    head: Head,
    encoded: &[(Vec<f32>, Vec<u32>, f32)],
    params: &[f64],
    hashed: &[f64],
    l2: f64,
    touched: &[u32],
) -> f64 {
    let k = head.outputs();
    let n = INPUTS;
    let (dense, rest) = params.split_at(k * n);
    let (bias, missing) = rest.split_at(k);
    let row = |r: u32, kk: usize| -> f64 {
        let r = r as usize;
        if r < n {
            missing[r * k + kk]
        } else {
            hashed.get((r - n) * k + kk).copied().unwrap_or(0.0)
        }
    };
    let mut total = 0.0;
    for (z, rows, label) in encoded {
        let logits: Vec<f64> = (0..k)
            .map(|kk| {
                bias[kk]
                    + (0..n)
                        .map(|j| dense[kk * n + j] * f64::from(z[j]))
                        .sum::<f64>()
                    + rows.iter().map(|&r| row(r, kk)).sum::<f64>()
            })
            .collect();
        let y = f64::from(*label);
        total += match head {
            Head::Binary => {
                let l = logits[0];
                l.max(0.0) + (1.0 + (-l.abs()).exp()).ln() - y * l
            }
            Head::Regression => 0.5 * (logits[0] - y).powi(2),
            Head::Multiclass(_) => {
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
                lse - logits[y as usize]
            }
        };
    }
    let mut penalty: f64 = dense.iter().map(|w| w * w).sum();
    for &r in touched {
        penalty += (0..k).map(|kk| row(r, kk).powi(2)).sum::<f64>();
    }
    total / encoded.len() as f64 + 0.5 * l2 * penalty
}

fn close(analytic: f64, numeric: f64, tol: f64) -> bool {
    (analytic - numeric).abs() <= tol * (1.0 + numeric.abs())
}

#[test]
fn native_gradients_match_finite_differences() {
    let mut missing_rows_checked = false;
    for (kind, extra) in [
        ("logistic_regression", ""),
        ("linear_regression", ""),
        ("softmax", "classes = 3"),
    ] {
        let spec = spec(kind, &format!("hash_buckets = 16\nl2 = 0.05\n{extra}"));
        let mut rng = Rng(11);
        let data = data_for(kind, true, &mut rng, 64);
        let mut model = Linear::new(&spec, INPUTS);
        for chunk in data[..48].chunks(8) {
            model.learn(chunk, None);
        }
        let batch = &data[48..56];
        model.observe(batch);
        let grad = model.batch_gradient(batch);
        let scaler = model.stats.scaler().clone();
        let encoded: Vec<_> = batch
            .iter()
            .map(|e| {
                let (mut z, mut rows, mut decoded) =
                    (vec![0.0; INPUTS], Vec::new(), Decoded::default());
                scaler.encode(
                    &e.values,
                    spec.hash_buckets() - 1,
                    &mut decoded,
                    &mut z,
                    &mut rows,
                );
                (z, rows, e.label)
            })
            .collect();
        let params: Vec<f64> = model.weights.params.iter().map(|&w| f64::from(w)).collect();
        let hashed: Vec<f64> = model.weights.hashed.iter().map(|&w| f64::from(w)).collect();
        let touched: Vec<u32> = grad.rows.iter().map(|r| r.0).collect();
        let head = Head::of(&spec);
        let k = head.outputs();
        let loss = |p: &[f64], h: &[f64]| reference_loss(head, &encoded, p, h, spec.l2, &touched);
        let eps = 1e-5;
        let analytic_params: Vec<f32> = [grad.dense.clone(), grad.bias.clone()].concat();
        for (i, &a) in analytic_params.iter().enumerate() {
            let (mut plus, mut minus) = (params.clone(), params.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (loss(&plus, &hashed) - loss(&minus, &hashed)) / (2.0 * eps);
            assert!(
                close(f64::from(a), numeric, 1e-3),
                "{kind} param {i}: {a} vs {numeric}"
            );
        }
        assert!(
            grad.rows.iter().any(|r| r.0 as usize >= INPUTS),
            "{kind}: a hashed row"
        );
        missing_rows_checked |= grad.rows.iter().any(|r| (r.0 as usize) < INPUTS);
        for (row, g) in &grad.rows {
            for (kk, &a) in g.iter().enumerate() {
                let r = *row as usize;
                let (mut p, mut h) = (params.clone(), hashed.clone());
                let bump = |p: &mut Vec<f64>, h: &mut Vec<f64>, d: f64| {
                    if r < INPUTS {
                        p[k * INPUTS + k + r * k + kk] += d;
                    } else {
                        h[(r - INPUTS) * k + kk] += d;
                    }
                };
                bump(&mut p, &mut h, eps);
                let up = loss(&p, &h);
                bump(&mut p, &mut h, -2.0 * eps);
                let down = loss(&p, &h);
                let numeric = (up - down) / (2.0 * eps);
                assert!(
                    close(f64::from(a), numeric, 1e-3),
                    "{kind} row {r}.{kk}: {a} vs {numeric}"
                );
            }
        }
    }
    assert!(missing_rows_checked, "some batch had a missing input");
}

fn candle_gradients_match_finite_differences(device: &Device) {
    let cases = [
        ("logistic_regression", ""),
        ("linear_regression", ""),
        ("softmax", "classes = 3"),
        ("mlp", "hidden = [5]\nembedding_dim = 3"),
        (
            "mlp",
            "hidden = [6, 4]\nactivation = \"tanh\"\nclasses = 3\nembedding_dim = 2",
        ),
    ];
    for (kind, extra) in cases {
        let spec = spec(
            kind,
            &format!(
                "hash_buckets = 16\nl2 = 0.05\noptimizer = {{ kind = \"sgd\", lr = 0.1 }}\n{extra}"
            ),
        );
        let mut rng = Rng(5);
        let data = data_for(kind, spec.classes.is_some(), &mut rng, 40);
        let mut net = Net::new(&spec, INPUTS, device, DType::F64).expect("net");
        for chunk in data[..32].chunks(8) {
            net.learn(chunk).expect("learn");
        }
        let batch = &data[32..40];
        net.observe(batch);
        let grads = net.batch_gradient(batch);
        let eps = 1e-6;
        for (name, values) in &grads {
            for (i, &analytic) in values.iter().enumerate().take(24) {
                net.nudge(name, i, eps);
                let up = net.batch_loss(batch);
                net.nudge(name, i, -2.0 * eps);
                let down = net.batch_loss(batch);
                net.nudge(name, i, eps);
                let numeric = (up - down) / (2.0 * eps);
                assert!(
                    close(analytic, numeric, 1e-5),
                    "{kind} {extra}: {name}[{i}]: {analytic} vs {numeric}"
                );
            }
        }
        assert!(
            grads.iter().any(|(n, _)| n.starts_with("emb.")),
            "{kind}: sparse rows"
        );
    }
}
device_test!(candle_gradients_match_finite_differences);

// ---------------------------------------------------------------------------------------------
// Optimizer steps against reference values.
//
// Reference values: w0 = [0.5, -0.25, 0.0] (FTRL starts from 0 weights and state), gradients
// g1 = [0.1, -0.2, 0.0] then g2 = [0.3, 0.1, -0.4], computed in double precision with this
// Python (textbook forms; Adam with bias correction):
//
//   import math
//   g_seq = [[0.1, -0.2, 0.0], [0.3, 0.1, -0.4]]
//   def sgd(w, lr=0.1):
//       for g in g_seq: w = [wi - lr*gi for wi, gi in zip(w, g)]
//       return w
//   def adam(w, lr=0.1, b1=0.9, b2=0.999, eps=1e-8):
//       m = [0]*3; v = [0]*3
//       for t, g in enumerate(g_seq, 1):
//           m = [b1*mi + (1-b1)*gi for mi, gi in zip(m, g)]
//           v = [b2*vi + (1-b2)*gi*gi for vi, gi in zip(v, g)]
//           w = [wi - lr*(mi/(1-b1**t))/(math.sqrt(vi/(1-b2**t)) + eps)
//                for wi, mi, vi in zip(w, m, v)]
//       return w
//   def adagrad(w, lr=0.1, eps=1e-8):
//       G = [0]*3
//       for g in g_seq:
//           G = [Gi + gi*gi for Gi, gi in zip(G, g)]
//           w = [wi - lr*gi/(math.sqrt(Gi) + eps) for wi, gi, Gi in zip(w, g, G)]
//       return w
//   def ftrl(alpha=0.5, beta=1.0, l1=0.05, l2=0.1):   # McMahan et al. 2013, Algorithm 1
//       z = [0.0]*3; n = [0.0]*3; w = [0.0]*3
//       for g in g_seq:
//           for i in range(3):
//               sigma = (math.sqrt(n[i] + g[i]**2) - math.sqrt(n[i])) / alpha
//               z[i] += g[i] - sigma*w[i]; n[i] += g[i]**2
//               w[i] = 0.0 if abs(z[i]) <= l1 else \
//                   -(z[i] - math.copysign(l1, z[i])) / ((beta + math.sqrt(n[i]))/alpha + l2)
//       return w
//   w0 = [0.5, -0.25, 0.0]
//   print(sgd(w0), adam(w0), adagrad(w0), ftrl())

const W0: [f32; 3] = [0.5, -0.25, 0.0];
const GRADS: [[f32; 3]; 2] = [[0.1, -0.2, 0.0], [0.3, 0.1, -0.4]];

fn reference_cases() -> Vec<(OptimizerSpec, [f32; 3], [f64; 3])> {
    vec![
        (OptimizerSpec::Sgd { lr: 0.1 }, W0, [0.46, -0.24, 0.04]),
        (
            OptimizerSpec::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            W0,
            [
                0.308_221_902_205_589_87,
                -0.123_366_302_718_675_73,
                0.074_413_679_726_435_13,
            ],
        ),
        (
            OptimizerSpec::Adagrad { lr: 0.1, eps: 1e-8 },
            W0,
            [
                0.305_131_683_194_947_5,
                -0.194_721_362_549_995_6,
                0.099_999_997_500_000_08,
            ],
        ),
        (
            OptimizerSpec::Ftrl {
                alpha: 0.5,
                beta: 1.0,
                l1: 0.05,
                l2: 0.1,
            },
            [0.0; 3],
            [
                -0.131_530_487_140_492_62,
                0.020_741_415_570_070_264,
                0.120_689_655_172_413_81,
            ],
        ),
    ]
}

#[test]
fn native_optimizer_steps_match_reference_values() {
    for (spec, w0, expected) in reference_cases() {
        let optimizer = Optimizer {
            spec,
            schedule: freshet_core::model::LrSchedule::Constant,
        };
        let arrays = state_arrays(&spec);
        let mut w = w0.to_vec();
        let mut s1 = vec![0.0; if arrays >= 1 { 3 } else { 0 }];
        let mut s2 = vec![0.0; if arrays >= 2 { 3 } else { 0 }];
        for (t, g) in GRADS.iter().enumerate() {
            optimizer.rule(t as u64).apply(&mut w, g, &mut s1, &mut s2);
        }
        // f32 state: `1 - 0.999` alone is off by 5e-5 relative in f32, so Adam lands within
        // about 2e-6 of the double-precision reference.
        for (got, want) in w.iter().zip(expected) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-5,
                "{spec:?}: {w:?} vs {expected:?}"
            );
        }
    }
}

fn tensor_optimizer_steps_match_reference_values(device: &Device) {
    for (spec, w0, expected) in reference_cases() {
        let optimizer = Optimizer {
            spec,
            schedule: freshet_core::model::LrSchedule::Constant,
        };
        let arrays = state_arrays(&spec);
        let mut w = Tensor::new(&w0, device).expect("tensor");
        let zeros = w.zeros_like().expect("zeros");
        let mut s1 = (arrays >= 1).then(|| zeros.clone());
        let mut s2 = (arrays >= 2).then(|| zeros.clone());
        for (t, g) in GRADS.iter().enumerate() {
            let g = Tensor::new(g, device).expect("tensor");
            let (nw, n1, n2) = optimizer
                .rule(t as u64)
                .apply_tensors(&w, &g, s1.as_ref(), s2.as_ref())
                .expect("step");
            (w, s1, s2) = (nw, n1, n2);
        }
        let got = w.to_vec1::<f32>().expect("host");
        for (got, want) in got.iter().zip(expected) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-5,
                "{spec:?}: {got} vs {want}"
            );
        }
    }
}
device_test!(tensor_optimizer_steps_match_reference_values);

#[test]
fn learning_rate_schedules_scale_the_step() {
    let optimizer = Optimizer {
        spec: OptimizerSpec::Sgd { lr: 0.1 },
        schedule: freshet_core::model::LrSchedule::InverseTime { t0: 10.0 },
    };
    let mut w = vec![0.0f32];
    optimizer.rule(10).apply(&mut w, &[1.0], &mut [], &mut []);
    assert!((w[0] + 0.05).abs() < 1e-7, "lr 0.1 / (1 + 10/10): {w:?}");
}

// ---------------------------------------------------------------------------------------------
// The candle linear model is the native one.

fn candle_linear_equals_native(device: &Device) {
    let optimizers = [
        "{ kind = \"sgd\", lr = 0.05 }",
        "{ kind = \"adam\", lr = 0.01 }",
        "{ kind = \"adagrad\", lr = 0.1 }",
        "{ kind = \"ftrl\", alpha = 0.2, l1 = 0.01, l2 = 0.1 }",
    ];
    for (kind, extra) in [
        ("logistic_regression", ""),
        ("softmax", "classes = 3"),
        ("linear_regression", ""),
    ] {
        for optimizer in optimizers {
            let spec = spec(
                kind,
                &format!("optimizer = {optimizer}\nhash_buckets = 64\nl2 = 0.01\nlr_schedule = {{ kind = \"constant\" }}\n{extra}"),
            );
            let mut rng = Rng(3);
            let data = data_for(kind, true, &mut rng, 400);
            let mut native = Linear::new(&spec, INPUTS);
            let mut net = Net::new(&spec, INPUTS, device, DType::F32).expect("net");
            for chunk in data[..360].chunks(4) {
                native.learn(chunk, None);
                net.learn(chunk).expect("learn");
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            native.score(&data[360..], &mut a);
            net.score(&data[360..], &mut b).expect("score");
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-3 * (1.0 + x.abs()),
                    "{kind} {optimizer}: score {i}: native {x}, candle {y}"
                );
            }
        }
    }
}
device_test!(candle_linear_equals_native);

// ---------------------------------------------------------------------------------------------
// Convergence.

/// Rolling accuracy after a prequential pass over `data`.
fn rolling_accuracy(learner: &mut Learner, data: &[Example]) -> f64 {
    for chunk in data.chunks(100) {
        learner.prequential(chunk).expect("prequential");
    }
    learner.summary().rolling.accuracy.expect("classifier")
}

fn separable(rng: &mut Rng, n: usize, classes: usize) -> Vec<Example> {
    (0..n)
        .map(|_| {
            let x: Vec<f64> = (0..INPUTS).map(|_| rng.normal()).collect();
            let s = 1.5 * x[0] - x[1] + 0.5 * x[2];
            let label = match classes {
                2 => f32::from(u8::from(s > 0.0)),
                _ if s < -0.6 => 0.0,
                _ if s < 0.6 => 1.0,
                _ => 2.0,
            };
            Example::dense(&x, label)
        })
        .collect()
}

fn device_name(device: &Device) -> &'static str {
    if device.is_cuda() {
        "cuda:0"
    } else {
        "cpu"
    }
}

fn converges_on_a_separable_stream(device: &Device) {
    let dev = device_name(device);
    for (kind, extra, classes, floor) in [
        ("logistic_regression", "", 2, 0.97),
        ("softmax", "classes = 3", 3, 0.93),
        ("mlp", "batch_size = 8", 2, 0.95),
        ("mlp", "batch_size = 8\nclasses = 3", 3, 0.9),
    ] {
        let spec = spec(
            kind,
            &format!("device = \"{dev}\"\nrolling_window = 1000\n{extra}"),
        );
        let options = LearnerOptions {
            engine: EngineChoice::Candle,
            checkpoint_dir: None,
        };
        let mut learner = Learner::with_options(&spec, names(), options).expect("learner");
        let acc = rolling_accuracy(&mut learner, &separable(&mut Rng(21), 6000, classes));
        assert!(
            acc > floor,
            "{kind} {extra}: rolling accuracy {acc} <= {floor}"
        );
    }
}
device_test!(converges_on_a_separable_stream);

#[test]
fn native_models_converge_on_separable_and_noisy_streams() {
    let mut learner = Learner::new(
        &spec("logistic_regression", "rolling_window = 1000"),
        names(),
    )
    .expect("learner");
    assert!(learner.is_native());
    let acc = rolling_accuracy(&mut learner, &separable(&mut Rng(8), 6000, 2));
    assert!(acc > 0.97, "separable: {acc}");

    // Noisy: labels drawn from the true probabilities; the best possible accuracy is the mean
    // of max(p, 1-p) over the window.
    let mut rng = Rng(9);
    let data = mixed(&mut rng, 20_000, bernoulli);
    let mut learner = Learner::new(
        &spec("logistic_regression", "rolling_window = 5000"),
        names(),
    )
    .expect("learner");
    let acc = rolling_accuracy(&mut learner, &data);
    let mut rng = Rng(9);
    let mut bayes = 0.0;
    let tail = mixed(&mut rng, 20_000, |_, logit| {
        let p = 1.0 / (1.0 + (-logit).exp());
        p.max(1.0 - p) as f32
    });
    for e in &tail[15_000..] {
        bayes += f64::from(e.label);
    }
    bayes /= 5000.0;
    assert!(acc > bayes - 0.02, "noisy: {acc} vs Bayes {bayes}");

    let data = mixed(&mut Rng(10), 20_000, regression);
    let spec = spec("linear_regression", "rolling_window = 5000");
    let mut learner = Learner::new(&spec, names()).expect("learner");
    for chunk in data.chunks(100) {
        learner.prequential(chunk).expect("prequential");
    }
    let rmse = learner.summary().rolling.rmse.expect("regression");
    assert!(rmse < 0.2, "noise sd 0.1, rmse {rmse}");
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

fn tensors_of(path: &Path) -> HashMap<String, Vec<u8>> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("metadata")).expect("json");
    let file = path
        .parent()
        .expect("dir")
        .join(meta["tensors"].as_str().expect("tensor file"));
    candle_core::safetensors::load(&file, &Device::Cpu)
        .expect("tensors")
        .into_iter()
        .map(|(name, t)| {
            let t = t.flatten_all().expect("flatten");
            let bytes = match t.dtype() {
                DType::F32 => t
                    .to_vec1::<f32>()
                    .expect("f32")
                    .iter()
                    .flat_map(|v| v.to_bits().to_le_bytes())
                    .collect(),
                DType::F64 => t
                    .to_vec1::<f64>()
                    .expect("f64")
                    .iter()
                    .flat_map(|v| v.to_bits().to_le_bytes())
                    .collect(),
                DType::I64 => t
                    .to_vec1::<i64>()
                    .expect("i64")
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                DType::U8 => t.to_vec1::<u8>().expect("u8"),
                _ => t
                    .flatten_all()
                    .and_then(|t| t.to_dtype(DType::F64))
                    .and_then(|t| t.to_vec1::<f64>())
                    .expect("other")
                    .iter()
                    .flat_map(|v| v.to_bits().to_le_bytes())
                    .collect(),
            };
            (name, bytes)
        })
        .collect()
}

fn without_rates(mut s: crate::ModelSummary) -> crate::ModelSummary {
    s.cumulative.rows_per_s = None;
    s.rolling.rows_per_s = None;
    s
}

/// Train on rows 0..2n straight, or on 0..n, checkpoint, resume, n..2n: every tensor of the
/// final state and every metric must be the same, bit for bit.
fn resume_is_bitwise(spec: &ModelSpec, engine: EngineChoice, data: &[Example]) {
    let half = data.len() / 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = |sub: &str| LearnerOptions {
        engine,
        checkpoint_dir: Some(dir.path().join(sub)),
    };
    let mut straight = Learner::with_options(spec, names(), options("straight")).expect("learner");
    for chunk in data.chunks(7) {
        straight.prequential(chunk).expect("prequential");
    }
    let mut first = Learner::with_options(spec, names(), options("split")).expect("learner");
    for chunk in data[..half].chunks(7) {
        first.prequential(chunk).expect("prequential");
    }
    assert!(
        !first.pending.is_empty(),
        "the split falls inside a mini-batch"
    );
    first.checkpoint().expect("checkpoint");
    drop(first);
    let mut resumed = Learner::resume(spec, names(), options("split")).expect("resume");
    assert!(resumed.updates() > 0);
    for chunk in data[half..].chunks(5) {
        resumed.prequential(chunk).expect("prequential");
    }
    assert_eq!(
        without_rates(straight.summary()),
        without_rates(resumed.summary())
    );
    let a = tensors_of(&straight.checkpoint().expect("checkpoint"));
    let b = tensors_of(&resumed.checkpoint().expect("checkpoint"));
    assert_eq!(a.keys().len(), b.keys().len());
    for (name, bytes) in &a {
        assert!(b.get(name) == Some(bytes), "tensor {name} differs");
    }
    let probe = &data[..20];
    let (pa, pb) = (
        straight.predict(probe).expect("predict"),
        resumed.predict(probe).expect("predict"),
    );
    assert_eq!(pa, pb);
}

#[test]
fn native_checkpoint_resumes_bitwise() {
    for (kind, extra) in [
        ("logistic_regression", "optimizer = { kind = \"adam\" }"),
        (
            "logistic_regression",
            "optimizer = { kind = \"ftrl\", l1 = 0.01 }",
        ),
        ("softmax", "classes = 3\noptimizer = { kind = \"adagrad\" }"),
        (
            "linear_regression",
            "optimizer = { kind = \"sgd\", lr = 0.01 }",
        ),
    ] {
        let spec = spec(
            kind,
            &format!("batch_size = 3\nrolling_window = 50\nhash_buckets = 64\n{extra}"),
        );
        let data = data_for(kind, true, &mut Rng(31), 302);
        resume_is_bitwise(&spec, EngineChoice::Auto, &data);
    }
}

fn candle_checkpoint_resumes_bitwise(device: &Device) {
    let dev = device_name(device);
    for (kind, extra) in [
        ("mlp", "hidden = [8]\nembedding_dim = 4"),
        ("logistic_regression", "optimizer = { kind = \"ftrl\" }"),
    ] {
        let spec = spec(
            kind,
            &format!("device = \"{dev}\"\nbatch_size = 4\nrolling_window = 40\nhash_buckets = 64\n{extra}"),
        );
        let data = data_for(kind, false, &mut Rng(41), 150);
        resume_is_bitwise(&spec, EngineChoice::Candle, &data);
    }
}
device_test!(candle_checkpoint_resumes_bitwise);

#[test]
fn resume_refuses_a_changed_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || LearnerOptions {
        engine: EngineChoice::Auto,
        checkpoint_dir: Some(dir.path().to_owned()),
    };
    let mut learner = Learner::with_options(&spec("logistic_regression", ""), names(), options())
        .expect("learner");
    learner
        .prequential(&separable(&mut Rng(1), 10, 2))
        .expect("prequential");
    learner.checkpoint().expect("checkpoint");
    let changed = spec("logistic_regression", "l2 = 0.5");
    let err = Learner::resume(&changed, names(), options()).expect_err("spec changed");
    assert!(err.to_string().contains("spec changed"), "{err}");
    let moved = spec("logistic_regression", "publish_every = 7");
    Learner::resume(&moved, names(), options()).expect("publish_every may change");
}

#[test]
fn periodic_checkpoints_follow_checkpoint_every() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LearnerOptions {
        engine: EngineChoice::Auto,
        checkpoint_dir: Some(dir.path().to_owned()),
    };
    let spec = spec("logistic_regression", "checkpoint_every = 10");
    let mut learner = Learner::with_options(&spec, names(), options).expect("learner");
    learner
        .prequential(&separable(&mut Rng(2), 25, 2))
        .expect("prequential");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("t.json")).expect("written"))
            .expect("json");
    assert_eq!(meta["updates"], 20);
    let files = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(files, 2, "metadata and the latest tensors only");
}

// ---------------------------------------------------------------------------------------------
// Devices, versions, labels.

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_typed_error() {
    let spec = spec("mlp", "device = \"cuda:0\"");
    let err = Learner::new(&spec, names()).expect_err("no CUDA in this build");
    assert!(
        matches!(err, LearnError::BuiltWithoutCuda { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("built without CUDA"), "{err}");
}

#[test]
fn published_versions_are_immutable_and_follow_publish_every() {
    let spec = spec("logistic_regression", "publish_every = 5");
    let mut learner = Learner::new(&spec, names()).expect("learner");
    let registry = learner.registry();
    let v0 = registry.current().expect("version 0 at start");
    assert_eq!((v0.version, v0.updates), (0, 0));
    let data = separable(&mut Rng(4), 200, 2);
    learner.prequential(&data[..12]).expect("prequential");
    let v2 = registry.current().expect("published");
    assert_eq!((v2.version, v2.updates), (2, 10));
    let before = v2.predict(&data[..5]).expect("predict");
    learner.prequential(&data[12..]).expect("prequential");
    assert_eq!(
        v2.predict(&data[..5]).expect("predict"),
        before,
        "a version never changes"
    );
    assert_eq!(registry.version(), Some(40));
    assert_eq!(v0.predict(&data[..1]).expect("predict").values, [0.5]);
}

#[test]
fn invalid_labels_are_skipped_and_counted() {
    let mut learner = Learner::new(&spec("logistic_regression", ""), names()).expect("learner");
    let mut data = separable(&mut Rng(6), 10, 2);
    data[3].label = 0.5;
    let report = learner.prequential(&data).expect("prequential");
    assert_eq!((report.scored, report.rejected), (9, 1));
    assert!(matches!(
        report.first_rejection,
        Some(LearnError::InvalidLabel { index: 3, .. })
    ));
    let err = learner.learn(&data).expect_err("learn refuses");
    assert!(err.to_string().contains("expected 0 or 1"), "{err}");
    let short = Example::dense(&[1.0], 0.0);
    let err = learner.predict(&[short]).expect_err("wrong width");
    assert!(matches!(
        err,
        LearnError::FeatureCount {
            expected: 4,
            got: 1,
            ..
        }
    ));
}

#[test]
fn summary_serialises_as_a_models_jsonl_line() {
    let mut learner = Learner::new(&spec("logistic_regression", "rolling_window = 50"), names())
        .expect("learner");
    learner
        .prequential(&separable(&mut Rng(7), 100, 2))
        .expect("prequential");
    let line = serde_json::to_value(learner.summary()).expect("json");
    for key in [
        "model",
        "version",
        "examples",
        "logloss",
        "accuracy",
        "auc",
        "rows_per_s",
        "rolling",
    ] {
        assert!(line.get(key).is_some(), "{key} in {line}");
    }
    assert_eq!(line["examples"], 100);
    assert_eq!(line["rolling"]["examples"], 50);
}

// ---------------------------------------------------------------------------------------------
// Version files.

/// A trained version written with `PublishedModel::save` and read back scores exactly as the
/// published one, for every engine and head, categorical and missing values included.
#[test]
fn version_files_score_exactly_as_the_published_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (kind, engine, extra) in [
        ("logistic_regression", EngineChoice::Auto, ""),
        ("softmax", EngineChoice::Auto, "classes = 3"),
        ("linear_regression", EngineChoice::Auto, ""),
        (
            "mlp",
            EngineChoice::Candle,
            "hidden = [8]\nembedding_dim = 4",
        ),
        (
            "mlp",
            EngineChoice::Candle,
            "hidden = [6, 4]\nclasses = 3\nactivation = \"tanh\"",
        ),
    ] {
        let spec = spec(kind, &format!("batch_size = 8\nhash_buckets = 64\n{extra}"));
        let options = LearnerOptions {
            engine,
            ..LearnerOptions::default()
        };
        let mut learner = Learner::with_options(&spec, names(), options).expect("learner");
        let data = data_for(kind, extra.contains("classes"), &mut Rng(7), 400);
        learner.learn(&data[..300]).expect("learn");
        learner.publish().expect("publish");
        let published = learner.registry().current().expect("a version");
        let sub = dir.path().join(format!("{kind}-{}", published.version));
        let path = published.save(&sub).expect("save");
        assert_eq!(
            path,
            crate::PublishedModel::file_path(&sub, "t", published.version)
        );
        let loaded = crate::PublishedModel::load(&path).expect("load");
        assert_eq!(loaded.version, published.version, "{kind}");
        assert_eq!(loaded.kind, published.kind);
        assert_eq!(loaded.updates, published.updates);
        assert_eq!(loaded.inputs, published.inputs);
        let want = published.predict(&data[300..]).expect("predict");
        let got = loaded.predict(&data[300..]).expect("predict");
        assert_eq!(got.outputs, want.outputs, "{kind}");
        assert_eq!(
            got.values, want.values,
            "{kind}: scores differ after a round trip"
        );
    }
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"format\": 1}").expect("write");
    let err = crate::PublishedModel::load(&broken).expect_err("not a version file");
    assert!(
        err.to_string().contains("not a model version file"),
        "{err}"
    );
}
