//! The candle path: the `mlp` on any device, and the linear kinds on CUDA.
//!
//! Inputs are the same as the native path's: standardised numbers `z` (computed on the host) and
//! sparse rows (missing inputs, hashed categories) looked up in an embedding table and summed
//! per example (an embedding bag). In an `mlp` the bag (width `embedding_dim`) is concatenated to
//! `z` before the hidden layers; in a linear kind the bag has one column per output and is added
//! to the logits, which makes it the same model as the native one. Dense tensors are updated
//! every step; embedding rows only when their batch touches them (gathered, updated, scattered
//! back), like the native path's sparse weights.

use candle_core::{DType, Device, Tensor, Var, D};
use freshet_core::model::{Activation, ModelSpec};

use crate::example::Example;
use crate::head::{class_index, Head};
use crate::optim::{state_arrays, Optimizer};
use crate::preprocess::{Decoded, Scaler, Standardizer};

/// The seed of the initial weights: the same spec always starts from the same model.
const INIT_SEED: u64 = 0x5EED_F2E5_4E70;

/// A batch after host-side preprocessing.
struct Encoded {
    batch: usize,
    z: Vec<f32>,
    /// Distinct sparse rows of the batch, sorted.
    unique: Vec<u32>,
    /// Per occurrence: its position in `unique`, and its example.
    local: Vec<u32>,
    example: Vec<u32>,
}

fn encode(scaler: &Scaler, inputs: usize, mask: u32, examples: &[Example]) -> Encoded {
    let batch = examples.len();
    let mut z = vec![0.0; batch * inputs];
    let mut rows = Vec::new();
    let mut example = Vec::new();
    let mut decoded = Decoded::default();
    for (i, (e, zi)) in examples.iter().zip(z.chunks_exact_mut(inputs)).enumerate() {
        scaler.encode(&e.values, mask, &mut decoded, zi, &mut rows);
        #[allow(clippy::cast_possible_truncation)] // batch <= 65536
        example.resize(rows.len(), i as u32);
    }
    let mut unique = rows.clone();
    unique.sort_unstable();
    unique.dedup();
    let local = rows
        .iter()
        .map(|r| {
            #[allow(clippy::cast_possible_truncation)] // fewer rows than u32::MAX
            let at = unique.partition_point(|u| u < r) as u32;
            at
        })
        .collect();
    Encoded {
        batch,
        z,
        unique,
        local,
        example,
    }
}

/// SplitMix64: a small deterministic generator for the initial weights.
struct SplitMix(u64);

impl SplitMix {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        #[allow(clippy::cast_precision_loss)] // 53 random bits
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }
}

/// One dense layer `y = x W^T + b`, with the optimizer state of `W` and `b`.
pub(crate) struct Layer {
    pub(crate) w: Var,
    pub(crate) b: Var,
    pub(crate) state_w: [Option<Tensor>; 2],
    pub(crate) state_b: [Option<Tensor>; 2],
}

/// The frozen tensors a prediction needs (deep copies in published versions).
#[derive(Clone)]
pub(crate) struct NetWeights {
    pub(crate) head: Head,
    pub(crate) inputs: usize,
    pub(crate) mask: u32,
    pub(crate) activation: Activation,
    pub(crate) layers: Vec<(Tensor, Tensor)>,
    pub(crate) emb: Tensor,
}

impl std::fmt::Debug for NetWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetWeights")
            .field("head", &self.head)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl NetWeights {
    fn logits(&self, z: &Tensor, bag: Option<&Tensor>) -> candle_core::Result<Tensor> {
        forward(&self.layers, self.activation, z, bag)
    }

    /// Scores of a batch, `outputs` per example, appended to `out`.
    pub(crate) fn score(
        &self,
        scaler: &Scaler,
        examples: &[Example],
        out: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        if examples.is_empty() {
            return Ok(());
        }
        let enc = encode(scaler, self.inputs, self.mask, examples);
        let device = self.emb.device();
        let dtype = self.emb.dtype();
        let z =
            Tensor::from_vec(enc.z.clone(), (enc.batch, self.inputs), device)?.to_dtype(dtype)?;
        let bag = if enc.unique.is_empty() {
            None
        } else {
            let unique = Tensor::from_slice(&enc.unique, enc.unique.len(), device)?;
            let rows = self.emb.index_select(&unique, 0)?;
            Some(bag_sum(&rows, &enc, device)?)
        };
        let logits = self.logits(&z, bag.as_ref())?;
        push_scores(self.head, &logits, out)
    }
}

fn push_scores(head: Head, logits: &Tensor, out: &mut Vec<f32>) -> candle_core::Result<()> {
    let start = out.len();
    out.extend(
        logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?,
    );
    for row in out[start..].chunks_exact_mut(head.outputs()) {
        head.link(row);
    }
    Ok(())
}

/// Sums the gathered rows of each example: `[unique, width]` -> `[batch, width]`.
fn bag_sum(rows: &Tensor, enc: &Encoded, device: &Device) -> candle_core::Result<Tensor> {
    let local = Tensor::from_slice(&enc.local, enc.local.len(), device)?;
    let example = Tensor::from_slice(&enc.example, enc.example.len(), device)?;
    let per_occurrence = rows.index_select(&local, 0)?;
    let width = rows.dim(1)?;
    Tensor::zeros((enc.batch, width), rows.dtype(), device)?.index_add(&example, &per_occurrence, 0)
}

fn forward(
    layers: &[(Tensor, Tensor)],
    activation: Activation,
    z: &Tensor,
    bag: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let last = layers.len() - 1;
    if last == 0 {
        // Linear kind: the bag has one column per output and adds to the logits.
        let (w, b) = &layers[0];
        let logits = z.matmul(&w.t()?)?.broadcast_add(b)?;
        return match bag {
            Some(bag) => logits + bag,
            None => Ok(logits),
        };
    }
    let mut x = match bag {
        Some(bag) => Tensor::cat(&[z, bag], 1)?,
        None => {
            let width = layers[0].0.dim(1)? - z.dim(1)?;
            let zeros = Tensor::zeros((z.dim(0)?, width), z.dtype(), z.device())?;
            Tensor::cat(&[z, &zeros], 1)?
        }
    };
    for (i, (w, b)) in layers.iter().enumerate() {
        x = x.matmul(&w.t()?)?.broadcast_add(b)?;
        if i < last {
            x = match activation {
                Activation::Relu => x.relu()?,
                Activation::Tanh => x.tanh()?,
            };
        }
    }
    Ok(x)
}

/// Mean loss of a batch of logits.
fn loss(head: Head, logits: &Tensor, labels: &[f32]) -> candle_core::Result<Tensor> {
    let device = logits.device();
    let dtype = logits.dtype();
    match head {
        Head::Binary => {
            let y = Tensor::from_slice(labels, (labels.len(), 1), device)?.to_dtype(dtype)?;
            // softplus(l) - y*l, with softplus(l) = max(l, 0) + log(1 + exp(-|l|)).
            let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            (softplus - (logits * y)?)?.mean_all()
        }
        Head::Regression => {
            let y = Tensor::from_slice(labels, (labels.len(), 1), device)?.to_dtype(dtype)?;
            ((logits - y)?.sqr()? * 0.5)?.mean_all()
        }
        Head::Multiclass(_) => {
            #[allow(clippy::cast_possible_truncation)] // classes <= 65536
            let classes: Vec<u32> = labels.iter().map(|&l| class_index(l) as u32).collect();
            let idx = Tensor::from_vec(classes, (labels.len(), 1), device)?;
            let picked = logits.gather(&idx, 1)?;
            (logits.log_sum_exp(D::Minus1)?.unsqueeze(1)? - picked)?.mean_all()
        }
    }
}

/// A model trained with candle tensors.
pub(crate) struct Net {
    pub(crate) head: Head,
    pub(crate) inputs: usize,
    pub(crate) mask: u32,
    pub(crate) activation: Activation,
    pub(crate) layers: Vec<Layer>,
    /// `[inputs + buckets, width]`: missing rows, then hashed rows.
    pub(crate) emb: Tensor,
    pub(crate) emb_state: [Option<Tensor>; 2],
    pub(crate) stats: Standardizer,
    pub(crate) optimizer: Optimizer,
    pub(crate) updates: u64,
    l2: f64,
}

impl Net {
    pub(crate) fn new(
        spec: &ModelSpec,
        inputs: usize,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let head = Head::of(spec);
        let outputs = head.outputs();
        let hidden = spec.hidden_layers();
        let width = if hidden.is_empty() {
            outputs
        } else {
            spec.embedding_dim()
        };
        let arrays = state_arrays(&spec.optimizer);
        let mut rng = SplitMix(INIT_SEED);
        let mut sizes = vec![inputs + if hidden.is_empty() { 0 } else { width }];
        sizes.extend(&hidden);
        sizes.push(outputs);
        let mut layers = Vec::new();
        for pair in sizes.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            #[allow(clippy::cast_precision_loss)] // layer sizes <= 65536
            let bound = 1.0 / (fan_in as f64).sqrt();
            let init: Vec<f64> = if hidden.is_empty() {
                vec![0.0; fan_in * fan_out]
            } else {
                (0..fan_in * fan_out)
                    .map(|_| (rng.next_unit() * 2.0 - 1.0) * bound)
                    .collect()
            };
            let w = Tensor::from_vec(init, (fan_out, fan_in), device)?.to_dtype(dtype)?;
            let b = Tensor::zeros(fan_out, dtype, device)?;
            layers.push(Layer {
                state_w: zero_state(&w, arrays)?,
                state_b: zero_state(&b, arrays)?,
                w: Var::from_tensor(&w)?,
                b: Var::from_tensor(&b)?,
            });
        }
        let rows = inputs + spec.hash_buckets() as usize;
        let emb = Tensor::zeros((rows, width), dtype, device)?;
        Ok(Self {
            head,
            inputs,
            mask: spec.hash_buckets() - 1,
            activation: spec.activation.unwrap_or_default(),
            emb_state: zero_state(&emb, arrays)?,
            emb,
            layers,
            stats: Standardizer::new(inputs),
            optimizer: Optimizer {
                spec: spec.optimizer,
                schedule: spec.lr_schedule,
            },
            updates: 0,
            l2: spec.l2,
        })
    }

    pub(crate) fn device(&self) -> &Device {
        self.emb.device()
    }

    fn layer_tensors(&self) -> Vec<(Tensor, Tensor)> {
        self.layers
            .iter()
            .map(|l| (l.w.as_tensor().clone(), l.b.as_tensor().clone()))
            .collect()
    }

    /// The weights as they are now, sharing storage (for scoring inside the learner).
    fn view(&self) -> NetWeights {
        NetWeights {
            head: self.head,
            inputs: self.inputs,
            mask: self.mask,
            activation: self.activation,
            layers: self.layer_tensors(),
            emb: self.emb.clone(),
        }
    }

    pub(crate) fn score(
        &self,
        examples: &[Example],
        out: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        self.view().score(self.stats.scaler(), examples, out)
    }

    /// Deep copies for a published version: later updates do not reach them.
    pub(crate) fn frozen(&self) -> candle_core::Result<(Scaler, NetWeights)> {
        let layers = self
            .layers
            .iter()
            .map(|l| Ok((l.w.as_tensor().copy()?, l.b.as_tensor().copy()?)))
            .collect::<candle_core::Result<_>>()?;
        Ok((
            self.stats.scaler().clone(),
            NetWeights {
                head: self.head,
                inputs: self.inputs,
                mask: self.mask,
                activation: self.activation,
                layers,
                emb: self.emb.copy()?,
            },
        ))
    }

    /// Forward and backward at the current scaler: the gradients of the dense tensors and of
    /// the touched embedding rows, l2 included.
    fn gradients(&self, examples: &[Example]) -> candle_core::Result<Gradients> {
        let enc = encode(self.stats.scaler(), self.inputs, self.mask, examples);
        let device = self.device().clone();
        let dtype = self.emb.dtype();
        let z =
            Tensor::from_vec(enc.z.clone(), (enc.batch, self.inputs), &device)?.to_dtype(dtype)?;
        let unique = Tensor::from_slice(&enc.unique, enc.unique.len(), &device)?;
        let rows = if enc.unique.is_empty() {
            None
        } else {
            Some(Var::from_tensor(&self.emb.index_select(&unique, 0)?)?)
        };
        let bag = match &rows {
            Some(rows) => Some(bag_sum(rows.as_tensor(), &enc, &device)?),
            None => None,
        };
        let logits = forward(&self.layer_tensors(), self.activation, &z, bag.as_ref())?;
        let labels: Vec<f32> = examples.iter().map(|e| e.label).collect();
        let grads = loss(self.head, &logits, &labels)?.backward()?;
        let mut dense = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let gw = match grads.get(layer.w.as_tensor()) {
                Some(g) => g.clone(),
                None => layer.w.as_tensor().zeros_like()?,
            };
            let gw = if self.l2 > 0.0 {
                (gw + layer.w.as_tensor().affine(self.l2, 0.0)?)?
            } else {
                gw
            };
            let gb = match grads.get(layer.b.as_tensor()) {
                Some(g) => g.clone(),
                None => layer.b.as_tensor().zeros_like()?,
            };
            dense.push((gw, gb));
        }
        let sparse = match &rows {
            Some(rows) => {
                let g = match grads.get(rows.as_tensor()) {
                    Some(g) => g.clone(),
                    None => rows.as_tensor().zeros_like()?,
                };
                let g = if self.l2 > 0.0 {
                    (g + rows.as_tensor().affine(self.l2, 0.0)?)?
                } else {
                    g
                };
                Some((unique, rows.as_tensor().clone(), g))
            }
            None => None,
        };
        Ok(Gradients {
            dense,
            sparse,
            unique: enc.unique,
        })
    }

    /// One update from a batch of validated examples: the gradient at the scaler that scored
    /// them, then the batch joins the moments (as in the native path).
    pub(crate) fn learn(&mut self, examples: &[Example]) -> candle_core::Result<()> {
        if examples.is_empty() {
            return Ok(());
        }
        let grads = self.gradients(examples)?;
        let rule = self.optimizer.rule(self.updates);
        for (layer, (gw, gb)) in self.layers.iter_mut().zip(&grads.dense) {
            let [s1, s2] = &layer.state_w;
            let (w, n1, n2) =
                rule.apply_tensors(layer.w.as_tensor(), gw, s1.as_ref(), s2.as_ref())?;
            layer.w.set(&w)?;
            layer.state_w = [n1, n2];
            let [s1, s2] = &layer.state_b;
            let (b, n1, n2) =
                rule.apply_tensors(layer.b.as_tensor(), gb, s1.as_ref(), s2.as_ref())?;
            layer.b.set(&b)?;
            layer.state_b = [n1, n2];
        }
        if let Some((unique, rows, g)) = &grads.sparse {
            let width = self.emb.dim(1)?;
            let index = unique
                .unsqueeze(1)?
                .broadcast_as((grads.unique.len(), width))?
                .contiguous()?;
            let gather = |t: &Option<Tensor>| -> candle_core::Result<Option<Tensor>> {
                t.as_ref().map(|t| t.index_select(unique, 0)).transpose()
            };
            let (s1, s2) = (gather(&self.emb_state[0])?, gather(&self.emb_state[1])?);
            let (new_rows, n1, n2) = rule.apply_tensors(rows, g, s1.as_ref(), s2.as_ref())?;
            self.emb.scatter_set(&index, &new_rows, 0)?;
            for (state, new) in self.emb_state.iter().zip([n1, n2]) {
                if let (Some(state), Some(new)) = (state, new) {
                    state.scatter_set(&index, &new, 0)?;
                }
            }
        }
        self.updates += 1;
        for e in examples {
            self.stats.observe_values(&e.values);
        }
        self.stats.refresh();
        Ok(())
    }

    /// Named tensors of the weights and optimizer state, for checkpoints.
    pub(crate) fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            out.push((format!("layer.{i}.w"), layer.w.as_tensor().clone()));
            out.push((format!("layer.{i}.b"), layer.b.as_tensor().clone()));
            for (j, s) in layer.state_w.iter().enumerate() {
                if let Some(s) = s {
                    out.push((format!("opt.layer.{i}.w.s{}", j + 1), s.clone()));
                }
            }
            for (j, s) in layer.state_b.iter().enumerate() {
                if let Some(s) = s {
                    out.push((format!("opt.layer.{i}.b.s{}", j + 1), s.clone()));
                }
            }
        }
        out.push(("emb".to_owned(), self.emb.clone()));
        for (j, s) in self.emb_state.iter().enumerate() {
            if let Some(s) = s {
                out.push((format!("opt.emb.s{}", j + 1), s.clone()));
            }
        }
        out
    }

    /// Replaces weights and state by the named tensors of a checkpoint; a missing name or a
    /// shape that differs is an error naming it.
    pub(crate) fn restore(
        &mut self,
        mut take: impl FnMut(&str, &Tensor) -> Result<Tensor, String>,
    ) -> Result<(), String> {
        let set = |var: &Var, t: Tensor| var.set(&t).map_err(|e| e.to_string());
        for (i, layer) in self.layers.iter_mut().enumerate() {
            set(
                &layer.w,
                take(&format!("layer.{i}.w"), layer.w.as_tensor())?,
            )?;
            set(
                &layer.b,
                take(&format!("layer.{i}.b"), layer.b.as_tensor())?,
            )?;
            for (j, s) in layer.state_w.iter_mut().enumerate() {
                if let Some(s) = s {
                    *s = take(&format!("opt.layer.{i}.w.s{}", j + 1), s)?;
                }
            }
            for (j, s) in layer.state_b.iter_mut().enumerate() {
                if let Some(s) = s {
                    *s = take(&format!("opt.layer.{i}.b.s{}", j + 1), s)?;
                }
            }
        }
        self.emb = take("emb", &self.emb)?;
        for (j, s) in self.emb_state.iter_mut().enumerate() {
            if let Some(s) = s {
                *s = take(&format!("opt.emb.s{}", j + 1), s)?;
            }
        }
        Ok(())
    }
}

fn zero_state(like: &Tensor, arrays: usize) -> candle_core::Result<[Option<Tensor>; 2]> {
    Ok([
        (arrays >= 1).then(|| like.zeros_like()).transpose()?,
        (arrays >= 2).then(|| like.zeros_like()).transpose()?,
    ])
}

struct Gradients {
    dense: Vec<(Tensor, Tensor)>,
    /// Distinct rows (tensor), their current values, their gradients.
    sparse: Option<(Tensor, Tensor, Tensor)>,
    unique: Vec<u32>,
}

/// Test access: gradients as host vectors and the loss at the current weights.
#[cfg(test)]
impl Net {
    /// Gradients by name: `layer.i.w`, `layer.i.b` and `emb.R` for each touched row R.
    pub(crate) fn batch_gradient(&self, examples: &[Example]) -> Vec<(String, Vec<f64>)> {
        let grads = self.gradients(examples).expect("gradients");
        let host = |t: &Tensor| -> Vec<f64> {
            t.to_dtype(DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("to host")
        };
        let mut out = Vec::new();
        for (i, (gw, gb)) in grads.dense.iter().enumerate() {
            out.push((format!("layer.{i}.w"), host(gw)));
            out.push((format!("layer.{i}.b"), host(gb)));
        }
        if let Some((_, _, g)) = &grads.sparse {
            let width = self.emb.dim(1).expect("2-d");
            let values = host(g);
            for (row, chunk) in grads.unique.iter().zip(values.chunks_exact(width)) {
                out.push((format!("emb.{row}"), chunk.to_vec()));
            }
        }
        out
    }

    /// The batch loss with the l2 term over the dense weights and the touched rows.
    pub(crate) fn batch_loss(&self, examples: &[Example]) -> f64 {
        let enc = encode(self.stats.scaler(), self.inputs, self.mask, examples);
        let device = self.device().clone();
        let dtype = self.emb.dtype();
        let run = || -> candle_core::Result<f64> {
            let z = Tensor::from_vec(enc.z.clone(), (enc.batch, self.inputs), &device)?
                .to_dtype(dtype)?;
            let (bag, rows) = if enc.unique.is_empty() {
                (None, None)
            } else {
                let unique = Tensor::from_slice(&enc.unique, enc.unique.len(), &device)?;
                let rows = self.emb.index_select(&unique, 0)?;
                (Some(bag_sum(&rows, &enc, &device)?), Some(rows))
            };
            let logits = forward(&self.layer_tensors(), self.activation, &z, bag.as_ref())?;
            let labels: Vec<f32> = examples.iter().map(|e| e.label).collect();
            let mut total = loss(self.head, &logits, &labels)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let mut penalty = 0.0;
            for layer in &self.layers {
                penalty += layer
                    .w
                    .as_tensor()
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
            }
            if let Some(rows) = rows {
                penalty += rows
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
            }
            total += 0.5 * self.l2 * penalty;
            Ok(total)
        };
        run().expect("loss")
    }

    /// Adds `delta` to element `index` of the named parameter (`layer.i.w`, `layer.i.b`,
    /// `emb.R`).
    pub(crate) fn nudge(&mut self, name: &str, index: usize, delta: f64) {
        let bump = |t: &Tensor, index: usize| -> Tensor {
            let shape = t.shape().clone();
            let mut v = t
                .to_dtype(DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("to host");
            v[index] += delta;
            Tensor::from_vec(v, shape, t.device())
                .and_then(|n| n.to_dtype(t.dtype()))
                .expect("from host")
        };
        if let Some(row) = name.strip_prefix("emb.") {
            let row: usize = row.parse().expect("row");
            let width = self.emb.dim(1).expect("2-d");
            self.emb = bump(&self.emb, row * width + index);
            return;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if name == format!("layer.{i}.w") {
                layer.w.set(&bump(layer.w.as_tensor(), index)).expect("set");
            } else if name == format!("layer.{i}.b") {
                layer.b.set(&bump(layer.b.as_tensor(), index)).expect("set");
            }
        }
    }

    pub(crate) fn observe(&mut self, examples: &[Example]) {
        for e in examples {
            self.stats.observe_values(&e.values);
        }
        self.stats.refresh();
    }
}
