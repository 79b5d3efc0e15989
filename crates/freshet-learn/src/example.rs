//! What a model reads: one value per input, and a label.

use xxhash_rust::xxh3::xxh3_64;

/// One input value of an example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// No value (absent field, null, a feature the store does not have yet). The input counts
    /// as 0 and the model learns a "missing" weight for it instead.
    Missing,
    /// A number; NaN and infinities count as missing.
    Number(f64),
    /// A category, already hashed with [`hash_category`].
    Category(u64),
}

impl Value {
    /// A categorical value from its text.
    pub fn category(text: &str) -> Self {
        Self::Category(hash_category(text))
    }
}

/// The stable 64-bit hash of a categorical value; the model maps it into its hash buckets
/// together with the input's position, so equal strings of different inputs do not collide
/// systematically.
pub fn hash_category(text: &str) -> u64 {
    xxh3_64(text.as_bytes())
}

/// The row of the model's categorical table for `hash` seen at input `slot`; `mask` is the
/// number of buckets minus one (a power of two).
pub(crate) fn bucket(hash: u64, slot: usize, mask: u32) -> u32 {
    let salt = (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mixed = (hash ^ salt).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    #[allow(clippy::cast_possible_truncation)] // the high half, by intent
    let high = (mixed >> 32) as u32;
    high & mask
}

/// A labelled example: one [`Value`] per model input, in the order of the resolved features.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Input values.
    pub values: Vec<Value>,
    /// 0 or 1 for binary classifiers, a class index for multiclass ones, any finite number for
    /// regression. Ignored by prediction.
    pub label: f32,
}

impl Example {
    /// An example of numbers only.
    pub fn dense(values: &[f64], label: f32) -> Self {
        Self {
            values: values.iter().map(|&v| Value::Number(v)).collect(),
            label,
        }
    }
}

/// Model outputs for a batch: `outputs` scores per example, row after row. Binary classifiers
/// give P(label = 1), regressions their prediction, multiclass models one probability per class.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Scores per example.
    pub outputs: usize,
    /// `examples * outputs` scores.
    pub values: Vec<f32>,
}

impl Predictions {
    /// The scores of example `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.outputs..(i + 1) * self.outputs]
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.outputs).unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
