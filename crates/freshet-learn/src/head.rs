//! The output side of a model: link function, loss derivative and label check per kind.

use freshet_core::model::{ModelKind, ModelSpec};

use crate::error::LearnError;

/// What the outputs of a model mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Head {
    /// One logit, `p = sigmoid(logit)`, log loss.
    Binary,
    /// One output, identity link, squared loss `(y_hat - y)^2 / 2`.
    Regression,
    /// `classes` logits, softmax, cross-entropy.
    Multiclass(usize),
}

impl Head {
    pub(crate) fn of(spec: &ModelSpec) -> Self {
        match (spec.kind, spec.classes) {
            (ModelKind::LinearRegression, _) => Self::Regression,
            (ModelKind::Softmax | ModelKind::Mlp, Some(c)) => Self::Multiclass(c),
            _ => Self::Binary,
        }
    }

    pub(crate) const fn outputs(self) -> usize {
        match self {
            Self::Binary | Self::Regression => 1,
            Self::Multiclass(c) => c,
        }
    }

    pub(crate) fn check_label(self, index: usize, label: f32) -> Result<(), LearnError> {
        let (ok, expected) = match self {
            Self::Binary => (label == 0.0 || label == 1.0, "0 or 1".to_owned()),
            Self::Regression => (label.is_finite(), "a finite number".to_owned()),
            Self::Multiclass(c) => {
                #[allow(clippy::cast_precision_loss)] // classes <= 65536
                let ok = label >= 0.0 && label < c as f32 && label.fract() == 0.0;
                (ok, format!("a class index 0..{c}"))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(LearnError::InvalidLabel {
                index,
                label,
                expected,
            })
        }
    }

    /// The score and error of one example from its scores (module [`Outcome`]).
    pub(crate) fn outcome(self, scores: &[f32], label: f32) -> Outcome {
        match self {
            Self::Binary => {
                let p = f64::from(scores[0]);
                Outcome {
                    score: p,
                    error: (f64::from(label) - p).abs(),
                }
            }
            Self::Regression => {
                let y = f64::from(scores[0]);
                Outcome {
                    score: y,
                    error: (f64::from(label) - y).abs(),
                }
            }
            Self::Multiclass(_) => {
                let best = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let p_true = scores.get(class_index(label)).copied().unwrap_or(0.0);
                Outcome {
                    score: f64::from(best),
                    error: 1.0 - f64::from(p_true),
                }
            }
        }
    }

    /// Turns logits into scores in place.
    pub(crate) fn link(self, logits: &mut [f32]) {
        match self {
            Self::Binary => {
                for l in logits {
                    *l = sigmoid(*l);
                }
            }
            Self::Regression => {}
            Self::Multiclass(_) => softmax(logits),
        }
    }

    /// d(loss)/d(logits) from the scores of one example.
    pub(crate) fn dlogits(self, scores: &[f32], label: f32, out: &mut [f32]) {
        match self {
            Self::Binary | Self::Regression => {
                for (o, &s) in out.iter_mut().zip(scores) {
                    *o = s - label;
                }
            }
            Self::Multiclass(_) => {
                let class = class_index(label);
                for (k, (o, &s)) in out.iter_mut().zip(scores).enumerate() {
                    *o = if k == class { s - 1.0 } else { s };
                }
            }
        }
    }
}

/// What the model made of one labelled example when it scored it, before learning it: the
/// streams a drift monitor reads as `model.NAME.score` and `model.NAME.error`.
///
/// - `score`: a binary classifier's P(label = 1); a regression's prediction; a multiclass
///   model's probability of its predicted class (the largest one).
/// - `error`: 1 − the probability given to the true class for classifiers (for a binary one,
///   |label − P(1)|), in [0, 1]; |label − prediction| for a regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The score (see the type's doc).
    pub score: f64,
    /// The error (see the type's doc).
    pub error: f64,
}

/// The class index of a validated multiclass label.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked by check_label
pub(crate) fn class_index(label: f32) -> usize {
    label as usize
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for l in logits.iter_mut() {
        *l = (*l - max).exp();
        sum += *l;
    }
    for l in logits.iter_mut() {
        *l /= sum;
    }
}
