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
const VAR_EPS: f64 = 1e-12;

/// Running count, mean and sum of squared deviations of every numeric input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Standardizer {
    pub(crate) count: Vec<f64>,
    pub(crate) mean: Vec<f64>,
    pub(crate) m2: Vec<f64>,
    scaler: Scaler,
}

/// The frozen part of a [`Standardizer`] that encoding reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scaler {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl Standardizer {
    pub(crate) fn new(inputs: usize) -> Self {
        Self::from_state(vec![0.0; inputs], vec![0.0; inputs], vec![0.0; inputs])
    }

    pub(crate) fn from_state(count: Vec<f64>, mean: Vec<f64>, m2: Vec<f64>) -> Self {
        let mut s = Self {
            scaler: Scaler {
                mean: mean.clone(),
                inv_std: vec![1.0; count.len()],
            },
            count,
            mean,
            m2,
        };
        s.refresh();
        s
    }

    /// Adds the numbers of `values` to the running moments (Welford's update).
    pub(crate) fn observe(&mut self, values: &[Value]) {
        let moments = self
            .count
            .iter_mut()
            .zip(self.mean.iter_mut())
            .zip(self.m2.iter_mut());
        for (((count, mean), m2), value) in moments.zip(values) {
            if let Value::Number(x) = *value {
                if x.is_finite() {
                    *count += 1.0;
                    let d = x - *mean;
                    *mean += d / *count;
                    *m2 += d * (x - *mean);
                }
            }
        }
    }

    /// Recomputes the scaler from the moments; called once per batch.
    pub(crate) fn refresh(&mut self) {
        self.scaler.mean.copy_from_slice(&self.mean);
        for ((inv, &count), &m2) in self
            .scaler
            .inv_std
            .iter_mut()
            .zip(&self.count)
            .zip(&self.m2)
        {
            *inv = if count > 0.0 {
                1.0 / (m2 / count + VAR_EPS).sqrt()
            } else {
                1.0
            };
        }
    }

    pub(crate) fn scaler(&self) -> &Scaler {
        &self.scaler
    }
}

impl Scaler {
    /// Writes the standardised numbers of `values` into `z` and appends the sparse rows
    /// (missing inputs, hashed categories) to `rows`.
    pub(crate) fn encode(&self, values: &[Value], mask: u32, z: &mut [f32], rows: &mut Vec<u32>) {
        let inputs = self.mean.len();
        let cols = z.iter_mut().zip(&self.mean).zip(&self.inv_std);
        for (slot, (((zi, &mean), &inv), value)) in cols.zip(values).enumerate() {
            *zi = match *value {
                Value::Number(x) if x.is_finite() => {
                    #[allow(clippy::cast_possible_truncation)] // clipped to +-Z_CLIP
                    let v = ((x - mean) * inv).clamp(-Z_CLIP, Z_CLIP) as f32;
                    v
                }
                Value::Category(hash) => {
                    rows.push(category_row(inputs, bucket(hash, slot, mask)));
                    0.0
                }
                Value::Number(_) | Value::Missing => {
                    rows.push(missing_row(slot));
                    0.0
                }
            };
        }
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
