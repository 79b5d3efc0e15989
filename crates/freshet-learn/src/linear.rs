//! The native CPU path of the linear kinds (logistic, linear, softmax regression): plain f32
//! loops over slices, no tensors, no allocation per example.
//!
//! `logits[k] = b[k] + sum_j w[k][j] * z[j] + sum_{r in rows} table[r][k]`, where `z` are the
//! standardised numbers and `rows` the sparse rows of the example (missing inputs, hashed
//! categories). Dense weights and biases are updated every step; a sparse row only in the steps
//! whose batch touches it (lazy updates, as in FTRL or Vowpal Wabbit).

use freshet_core::model::ModelSpec;

use crate::example::Example;
use crate::head::Head;
use crate::optim::{state_arrays, Optimizer, StepRule};
use crate::preprocess::{Decoded, Scaler, Standardizer};

/// The optimizer's state arrays of one parameter group (empty where the rule keeps none).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct State {
    pub(crate) s1: Vec<f32>,
    pub(crate) s2: Vec<f32>,
}

impl State {
    pub(crate) fn new(len: usize, arrays: usize) -> Self {
        Self {
            s1: vec![0.0; if arrays >= 1 { len } else { 0 }],
            s2: vec![0.0; if arrays >= 2 { len } else { 0 }],
        }
    }

    fn apply(&mut self, rule: &StepRule, w: &mut [f32], g: &[f32]) {
        rule.apply(w, g, &mut self.s1, &mut self.s2);
    }

    fn apply_row(&mut self, rule: &StepRule, w: &mut [f32], row: usize, k: usize, g: &[f32]) {
        let span = row * k..(row + 1) * k;
        let s1 = if self.s1.is_empty() {
            &mut [][..]
        } else {
            &mut self.s1[span.clone()]
        };
        let s2 = if self.s2.is_empty() {
            &mut [][..]
        } else {
            &mut self.s2[span.clone()]
        };
        rule.apply(&mut w[span], g, s1, s2);
    }
}

/// The weights a prediction needs (cloned into published versions).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinearWeights {
    pub(crate) head: Head,
    pub(crate) inputs: usize,
    pub(crate) mask: u32,
    /// `[outputs][inputs]` dense weights, then `[outputs]` biases, then `[inputs][outputs]`
    /// weights of "input i is missing", in one buffer (one allocation per published copy).
    pub(crate) params: Vec<f32>,
    /// `[buckets][outputs]`, empty until the first categorical value is learned.
    pub(crate) hashed: Vec<f32>,
}

impl LinearWeights {
    /// Dense weights, biases, missing-input weights.
    pub(crate) fn split(&self) -> (&[f32], &[f32], &[f32]) {
        let k = self.head.outputs();
        let (dense, rest) = self.params.split_at(k * self.inputs);
        let (bias, missing) = rest.split_at(k);
        (dense, bias, missing)
    }

    fn split_mut(&mut self) -> (&mut [f32], &mut [f32], &mut [f32]) {
        let k = self.head.outputs();
        let (dense, rest) = self.params.split_at_mut(k * self.inputs);
        let (bias, missing) = rest.split_at_mut(k);
        (dense, bias, missing)
    }

    fn row(&self, row: u32) -> Option<&[f32]> {
        let k = self.head.outputs();
        let row = row as usize;
        let (table, r) = if row < self.inputs {
            (self.split().2, row)
        } else {
            (&self.hashed[..], row - self.inputs)
        };
        table.get(r * k..(r + 1) * k)
    }

    /// Scores of one encoded example into `out` (`outputs` values).
    pub(crate) fn score_encoded(&self, z: &[f32], rows: &[u32], out: &mut [f32]) {
        let n = self.inputs;
        let (dense, bias, _) = self.split();
        for (k, o) in out.iter_mut().enumerate() {
            *o = bias[k] + dot(&dense[k * n..(k + 1) * n], z);
        }
        for &r in rows {
            if let Some(row) = self.row(r) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
        }
        self.head.link(out);
    }

    /// Scores of a batch, `outputs` per example, appended to `out`.
    pub(crate) fn score(&self, scaler: &Scaler, examples: &[Example], out: &mut Vec<f32>) {
        let k = self.head.outputs();
        let mut z = vec![0.0; self.inputs];
        let mut rows = Vec::new();
        let mut decoded = Decoded::default();
        let start = out.len();
        out.resize(start + examples.len() * k, 0.0);
        for (e, o) in examples.iter().zip(out[start..].chunks_exact_mut(k)) {
            rows.clear();
            scaler.encode(&e.values, self.mask, &mut decoded, &mut z, &mut rows);
            self.score_encoded(&z, &rows, o);
        }
    }
}

/// Eight independent partial sums: the compiler vectorises this where it would not reorder a
/// single running sum.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8).zip(b.chunks_exact(8));
    for (x, y) in chunks {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail = a.len() - a.len() % 8;
    let mut sum = 0.0;
    for (x, y) in a[tail..].iter().zip(&b[tail..]) {
        sum += x * y;
    }
    sum + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Per-batch buffers, kept between batches.
#[derive(Debug, Clone, Default)]
struct Scratch {
    z: Vec<f32>,
    rows: Vec<u32>,
    row_ends: Vec<usize>,
    d: Vec<f32>,
    decoded: Vec<Decoded>,
    grad_dense: Vec<f32>,
    grad_bias: Vec<f32>,
    grad_row: Vec<f32>,
    touched: Vec<(u32, u32)>,
}

/// A linear model trained on the CPU without tensors.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weights: LinearWeights,
    /// Optimizer state of `dense`, `bias`, `missing`, `hashed`, in that order.
    pub(crate) state: [State; 4],
    pub(crate) buckets: usize,
    pub(crate) stats: Standardizer,
    pub(crate) optimizer: Optimizer,
    pub(crate) updates: u64,
    l2: f32,
    arrays: usize,
    scratch: Scratch,
}

/// Names of the parameter groups, in the order of [`Linear::state`].
pub(crate) const GROUPS: [&str; 4] = ["dense", "bias", "missing", "hashed"];

/// A gradient of the batch loss, for the tests' finite-difference checks.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct LinearGradient {
    pub(crate) dense: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) rows: Vec<(u32, Vec<f32>)>,
}

impl Linear {
    pub(crate) fn new(spec: &ModelSpec, inputs: usize) -> Self {
        let head = Head::of(spec);
        let k = head.outputs();
        let arrays = state_arrays(&spec.optimizer);
        #[allow(clippy::cast_possible_truncation)] // l2 is a rate, f32 by design
        let l2 = spec.l2 as f32;
        Self {
            weights: LinearWeights {
                head,
                inputs,
                mask: spec.hash_buckets() - 1,
                params: vec![0.0; k * inputs + k + inputs * k],
                hashed: Vec::new(),
            },
            state: [
                State::new(k * inputs, arrays),
                State::new(k, arrays),
                State::new(inputs * k, arrays),
                State::default(),
            ],
            buckets: spec.hash_buckets() as usize,
            stats: Standardizer::new(inputs),
            optimizer: Optimizer {
                spec: spec.optimizer,
                schedule: spec.lr_schedule,
            },
            updates: 0,
            l2,
            arrays,
            scratch: Scratch::default(),
        }
    }

    /// Weights of the groups, in the order of [`GROUPS`].
    pub(crate) fn group_weights(&self) -> [&[f32]; 4] {
        let (dense, bias, missing) = self.weights.split();
        [dense, bias, missing, &self.weights.hashed]
    }

    /// Restores what a checkpoint holds; shapes were checked by the caller.
    pub(crate) fn restore(
        &mut self,
        weights: [Vec<f32>; 4],
        state: [State; 4],
        stats: Standardizer,
        updates: u64,
    ) {
        let [dense, bias, missing, hashed] = weights;
        self.weights.params = [dense, bias, missing].concat();
        self.weights.hashed = hashed;
        self.state = state;
        self.stats = stats;
        self.updates = updates;
    }

    pub(crate) fn arrays(&self) -> usize {
        self.arrays
    }

    pub(crate) fn outputs(&self) -> usize {
        self.weights.head.outputs()
    }

    pub(crate) fn score(&self, examples: &[Example], out: &mut Vec<f32>) {
        self.weights.score(self.stats.scaler(), examples, out);
    }

    /// Encodes the batch with the current scaler and computes the batch gradient into the
    /// scratch buffers; appends the scores to `scored` when given.
    fn gradient(&mut self, examples: &[Example], mut scored: Option<&mut Vec<f32>>) {
        let Self {
            weights,
            scratch: s,
            stats,
            l2,
            ..
        } = self;
        let (n, k) = (weights.inputs, weights.head.outputs());
        let batch = examples.len();
        s.z.resize(batch * n, 0.0);
        s.rows.clear();
        s.row_ends.clear();
        s.d.resize(batch * k, 0.0);
        if s.decoded.len() < batch {
            s.decoded.resize_with(batch, Decoded::default);
        }
        let scaler = stats.scaler();
        let mut scores = [0.0f32; 1];
        let mut scores_multi = Vec::new();
        for (i, e) in examples.iter().enumerate() {
            let z = &mut s.z[i * n..(i + 1) * n];
            let start = s.rows.len();
            scaler.encode(&e.values, weights.mask, &mut s.decoded[i], z, &mut s.rows);
            s.row_ends.push(s.rows.len());
            let out: &mut [f32] = if k == 1 {
                &mut scores
            } else {
                scores_multi.resize(k, 0.0);
                &mut scores_multi
            };
            weights.score_encoded(z, &s.rows[start..], out);
            if let Some(scored) = scored.as_deref_mut() {
                scored.extend_from_slice(out);
            }
            weights
                .head
                .dlogits(out, e.label, &mut s.d[i * k..(i + 1) * k]);
        }
        #[allow(clippy::cast_precision_loss)] // batch <= 65536
        let inv_batch = 1.0 / batch as f32;
        s.grad_dense.clear();
        s.grad_dense.resize(k * n, 0.0);
        s.grad_bias.clear();
        s.grad_bias.resize(k, 0.0);
        for i in 0..batch {
            let z = &s.z[i * n..(i + 1) * n];
            for kk in 0..k {
                let d = s.d[i * k + kk] * inv_batch;
                s.grad_bias[kk] += d;
                for (g, &zj) in s.grad_dense[kk * n..(kk + 1) * n].iter_mut().zip(z) {
                    *g += d * zj;
                }
            }
        }
        if *l2 > 0.0 {
            for (g, &w) in s.grad_dense.iter_mut().zip(weights.split().0) {
                *g += *l2 * w;
            }
        }
        s.touched.clear();
        let mut start = 0;
        for (i, &end) in s.row_ends.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)] // batch <= 65536
            let example = i as u32;
            s.touched
                .extend(s.rows[start..end].iter().map(|&r| (r, example)));
            start = end;
        }
        s.touched.sort_unstable();
    }

    /// Applies the gradient in the scratch buffers: one update.
    fn step(&mut self, batch: usize) {
        let rule = self.optimizer.rule(self.updates);
        let k = self.weights.head.outputs();
        let n = self.weights.inputs;
        let [dense, bias, missing, hashed] = &mut self.state;
        let (w_dense, w_bias, _) = self.weights.split_mut();
        dense.apply(&rule, w_dense, &self.scratch.grad_dense);
        bias.apply(&rule, w_bias, &self.scratch.grad_bias);
        let touches_hashed = self
            .scratch
            .touched
            .last()
            .is_some_and(|&(r, _)| r as usize >= n);
        if touches_hashed && self.weights.hashed.is_empty() {
            self.weights.hashed = vec![0.0; self.buckets * k];
            *hashed = State::new(self.buckets * k, self.arrays);
        }
        #[allow(clippy::cast_precision_loss)] // batch <= 65536
        let inv_batch = 1.0 / batch as f32;
        let s = &mut self.scratch;
        for group in s.touched.chunk_by(|a, b| a.0 == b.0) {
            let row = group[0].0 as usize;
            s.grad_row.clear();
            s.grad_row.resize(k, 0.0);
            for &(_, example) in group {
                let e = example as usize;
                for (g, &dk) in s.grad_row.iter_mut().zip(&s.d[e * k..(e + 1) * k]) {
                    *g += dk * inv_batch;
                }
            }
            let (w, state, r) = if row < n {
                (self.weights.split_mut().2, &mut *missing, row)
            } else {
                (&mut self.weights.hashed[..], &mut *hashed, row - n)
            };
            if self.l2 > 0.0 {
                for (g, &wk) in s.grad_row.iter_mut().zip(&w[r * k..(r + 1) * k]) {
                    *g += self.l2 * wk;
                }
            }
            state.apply_row(&rule, w, r, k, &s.grad_row);
        }
        self.updates += 1;
    }

    /// One update from a batch of validated examples: the gradient at the scaler that scored
    /// them, then the batch joins the moments. Appends the scores (taken before the update) to
    /// `scored` when given, so the prequential loop needs one forward pass, not two.
    pub(crate) fn learn(&mut self, examples: &[Example], scored: Option<&mut Vec<f32>>) {
        if examples.is_empty() {
            return;
        }
        self.gradient(examples, scored);
        self.step(examples.len());
        for decoded in &self.scratch.decoded[..examples.len()] {
            self.stats.observe(decoded);
        }
        self.stats.refresh();
    }

    /// The gradient of the batch loss (mean over the batch, plus `l2/2 |w|^2` over the dense
    /// and touched sparse weights) at the current weights and scaler, without updating.
    #[cfg(test)]
    pub(crate) fn batch_gradient(&mut self, examples: &[Example]) -> LinearGradient {
        self.gradient(examples, None);
        let (n, k) = (self.weights.inputs, self.outputs());
        #[allow(clippy::cast_precision_loss)]
        let inv_batch = 1.0 / examples.len() as f32;
        let mut rows = Vec::new();
        for group in self.scratch.touched.chunk_by(|a, b| a.0 == b.0) {
            let row = group[0].0;
            let mut g = vec![0.0; k];
            for &(_, e) in group {
                for (gk, &dk) in g.iter_mut().zip(&self.scratch.d[e as usize * k..]) {
                    *gk += dk * inv_batch;
                }
            }
            let r = row as usize;
            let w = if r < n {
                self.weights.split().2.get(r * k..(r + 1) * k)
            } else {
                self.weights.hashed.get((r - n) * k..(r - n + 1) * k)
            };
            if let Some(w) = w {
                for (gk, &wk) in g.iter_mut().zip(w) {
                    *gk += self.l2 * wk;
                }
            }
            rows.push((row, g));
        }
        LinearGradient {
            dense: self.scratch.grad_dense.clone(),
            bias: self.scratch.grad_bias.clone(),
            rows,
        }
    }

    /// Only the moments: for the tests, which then take gradients at a fixed scaler.
    #[cfg(test)]
    pub(crate) fn observe(&mut self, examples: &[Example]) {
        for e in examples {
            self.stats.observe_values(&e.values);
        }
        self.stats.refresh();
    }

    /// Overwrites a published copy in place (reusing its buffers).
    pub(crate) fn refreeze(&self, scaler: &mut Scaler, weights: &mut LinearWeights) {
        scaler.clone_from(self.stats.scaler());
        weights.clone_from(&self.weights);
    }

    /// The scaler and weights a published version needs.
    pub(crate) fn frozen(&self) -> (Scaler, LinearWeights) {
        (self.stats.scaler().clone(), self.weights.clone())
    }
}
