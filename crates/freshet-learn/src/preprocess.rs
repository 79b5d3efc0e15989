//! Online preprocessing shared by every model: running standardisation of numbers (Welford, in
//! f64), missing values as learned "missing" rows, categorical values hashed into buckets.
//!
//! An example becomes a dense vector `z` with one standardised value per input (0 where the
//! input is missing or categorical) and a list of rows of the model's sparse table: row `i` for
//! "input `i` is missing", row `n + bucket` for a categorical value.

use crate::example::{bucket, Value};

/// Standardised values are clipped to `[-Z_CLIP, Z_CLIP]`, so that a value far outside what a
/// young (or constant) input has shown cannot blow up an update.
pub const Z_CLIP: f64 = 10.0;
/// Added to the variance before its root: a constant input standardises to 0, not to infinity.
const VAR_EPS: f32 = 1e-12;

/// Running count, mean and sum of squared deviations of every numeric input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Standardizer {
    pub(crate) count: Vec<f64>,
    pub(crate) mean: Vec<f64>,
    pub(crate) m2: Vec<f64>,
    scaler: Scaler,
}

/// The frozen part of a [`Standardizer`] that encoding reads: the means, then the inverse
/// standard deviations, in one buffer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scaler {
    inputs: usize,
    mean_inv: Vec<f64>,
}

/// An example's inputs split for the vectorised loops: `x` holds the numbers (0 elsewhere),
/// `present` 1 where `x` is a number and 0 elsewhere; the sparse rows go to a list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decoded {
    pub(crate) x: Vec<f64>,
    pub(crate) present: Vec<f64>,
}

impl Decoded {
    /// Decodes `values` (replacing the previous content) and appends their sparse rows.
    pub(crate) fn fill(&mut self, values: &[Value], mask: u32, rows: &mut Vec<u32>) {
        let inputs = values.len();
        self.x.resize(inputs, 0.0);
        self.present.resize(inputs, 0.0);
        let cells = self.x.iter_mut().zip(self.present.iter_mut());
        for (slot, ((x, present), value)) in cells.zip(values).enumerate() {
            (*x, *present) = match *value {
                Value::Number(v) if v.is_finite() => (v, 1.0),
                Value::Category(hash) => {
                    rows.push(category_row(inputs, bucket(hash, slot, mask)));
                    (0.0, 0.0)
                }
                Value::Number(_) | Value::Missing => {
                    rows.push(missing_row(slot));
                    (0.0, 0.0)
                }
            };
        }
    }
}

impl Standardizer {
    pub(crate) fn new(inputs: usize) -> Self {
        Self::from_state(vec![0.0; inputs], vec![0.0; inputs], vec![0.0; inputs])
    }

    pub(crate) fn from_state(count: Vec<f64>, mean: Vec<f64>, m2: Vec<f64>) -> Self {
        let mut s = Self {
            scaler: Scaler {
                inputs: count.len(),
                mean_inv: vec![1.0; 2 * count.len()],
            },
            count,
            mean,
            m2,
        };
        s.refresh();
        s
    }

    /// Adds the numbers of one decoded example to the running moments (Welford's update,
    /// branch-free so that it vectorises: absent inputs add nothing).
    pub(crate) fn observe(&mut self, decoded: &Decoded) {
        let n = self.count.len();
        let (count, mean, m2) = (&mut self.count[..n], &mut self.mean[..n], &mut self.m2[..n]);
        let (x, present) = (&decoded.x[..n], &decoded.present[..n]);
        for i in 0..n {
            let c = count[i] + present[i];
            let d = (x[i] - mean[i]) * present[i];
            let new_mean = mean[i] + d / c.max(1.0);
            m2[i] += d * (x[i] - new_mean);
            mean[i] = new_mean;
            count[i] = c;
        }
    }

    /// [`Standardizer::observe`] straight from values (allocates; for the candle path).
    pub(crate) fn observe_values(&mut self, values: &[Value]) {
        let mut decoded = Decoded::default();
        decoded.fill(values, 0, &mut Vec::new());
        self.observe(&decoded);
    }

    /// Recomputes the scaler from the moments; called once per batch.
    pub(crate) fn refresh(&mut self) {
        let n = self.count.len();
        let (mean, inv) = self.scaler.mean_inv.split_at_mut(n);
        mean.copy_from_slice(&self.mean);
        let (inv, count, m2) = (&mut inv[..n], &self.count[..n], &self.m2[..n]);
        for i in 0..n {
            // The moments are f64; the scale needs no more than f32, whose 4 lanes make this
            // loop (run once per update) twice as fast.
            #[allow(clippy::cast_possible_truncation)]
            let var = m2[i] as f32 / count[i].max(1.0) as f32;
            let scale = f64::from(1.0 / (var + VAR_EPS).sqrt());
            inv[i] = if count[i] > 0.0 { scale } else { 1.0 };
        }
    }

    pub(crate) fn scaler(&self) -> &Scaler {
        &self.scaler
    }
}

impl Scaler {
    /// A scaler from its buffer: the means, then the inverse standard deviations.
    pub(crate) fn from_mean_inv(mean_inv: Vec<f64>) -> Self {
        Self {
            inputs: mean_inv.len() / 2,
            mean_inv,
        }
    }

    /// The means, then the inverse standard deviations.
    pub(crate) fn mean_inv(&self) -> &[f64] {
        &self.mean_inv
    }

    /// Standardised numbers of a decoded example into `z` (0 where absent), clipped to
    /// `[-Z_CLIP, Z_CLIP]`.
    pub(crate) fn standardize(&self, decoded: &Decoded, z: &mut [f32]) {
        let n = self.inputs;
        let (mean, inv) = self.mean_inv.split_at(n);
        let (mean, inv) = (&mean[..n], &inv[..n]);
        let (x, present, z) = (&decoded.x[..n], &decoded.present[..n], &mut z[..n]);
        for i in 0..n {
            let v = ((x[i] - mean[i]) * inv[i]).clamp(-Z_CLIP, Z_CLIP) * present[i];
            #[allow(clippy::cast_possible_truncation)] // clipped to +-Z_CLIP
            let v = v as f32;
            z[i] = v;
        }
    }

    /// Decodes and standardises one example: `z` gets the numbers, `rows` the sparse rows.
    pub(crate) fn encode(
        &self,
        values: &[Value],
        mask: u32,
        decoded: &mut Decoded,
        z: &mut [f32],
        rows: &mut Vec<u32>,
    ) {
        decoded.fill(values, mask, rows);
        self.standardize(decoded, z);
    }
}

#[allow(clippy::cast_possible_truncation)] // inputs are counted in u32 rows (checked at build)
fn missing_row(slot: usize) -> u32 {
    slot as u32
}

#[allow(clippy::cast_possible_truncation)] // inputs + buckets < 2^32 (checked at build)
fn category_row(inputs: usize, bucket: u32) -> u32 {
    inputs as u32 + bucket
}
