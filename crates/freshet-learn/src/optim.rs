//! The update rules, per coordinate, over f32 slices (the native linear path) and over candle
//! tensors (the mlp, and every model on CUDA). Formulas are in docs/learning.md.

use candle_core::Tensor;
use freshet_core::model::{LrSchedule, OptimizerSpec};

/// An optimizer with its schedule; [`Optimizer::rule`] gives the scalars of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Optimizer {
    pub(crate) spec: OptimizerSpec,
    pub(crate) schedule: LrSchedule,
}

/// The scalars of update `t` (1-based): rates after the schedule, Adam's bias corrections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum StepRule {
    Sgd {
        lr: f32,
    },
    /// `w -= a * m / (sqrt(v) + eps_hat)`, with `a = lr * sqrt(1 - b2^t) / (1 - b1^t)` and
    /// `eps_hat = eps * sqrt(1 - b2^t)`: the bias-corrected update, algebraically unchanged.
    Adam {
        b1: f32,
        b2: f32,
        a: f32,
        eps_hat: f32,
    },
    Adagrad {
        lr: f32,
        eps: f32,
    },
    Ftrl {
        alpha: f32,
        beta: f32,
        l1: f32,
        l2: f32,
    },
}

/// How many state arrays (of the weights' size) a rule keeps.
pub(crate) fn state_arrays(spec: &OptimizerSpec) -> usize {
    match spec {
        OptimizerSpec::Sgd { .. } => 0,
        OptimizerSpec::Adagrad { .. } => 1,
        OptimizerSpec::Adam { .. } | OptimizerSpec::Ftrl { .. } => 2,
    }
}

#[allow(clippy::cast_possible_truncation)] // rates are stored as f32 by design
fn f(x: f64) -> f32 {
    x as f32
}

/// `1 - base^t` for a beta in `[0, 1)`. Past the `t` where `base^t < 2^-60`, `1 - base^t`
/// rounds to exactly 1 in f64, so the power is skipped (it costs tens of nanoseconds per
/// update); below it, `powi` (the same result for the same `t` within a build, which resuming
/// bit for bit needs).
fn one_minus_power(base: f64, t: u64) -> f64 {
    // 0.999^t (the slowest usual beta) is below 2^-60 from t = 41570 on; the bound below is
    // conservative for every beta <= 0.999 and exact enough for larger ones via the power.
    let negligible = base <= 0.999 && t >= 41_570 || base <= 0.9 && t >= 395 || base == 0.0;
    match i32::try_from(t) {
        Ok(t) if !negligible => 1.0 - base.powi(t),
        _ => 1.0,
    }
}

impl Optimizer {
    /// The rule of update number `t` (0 for the first update).
    pub(crate) fn rule(&self, t: u64) -> StepRule {
        let factor = self.schedule.factor(t);
        match self.spec {
            OptimizerSpec::Sgd { lr } => StepRule::Sgd { lr: f(lr * factor) },
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let c1 = one_minus_power(beta1, t + 1);
                let c2 = one_minus_power(beta2, t + 1).sqrt();
                StepRule::Adam {
                    b1: f(beta1),
                    b2: f(beta2),
                    a: f(lr * factor * c2 / c1),
                    eps_hat: f(eps * c2),
                }
            }
            OptimizerSpec::Adagrad { lr, eps } => StepRule::Adagrad {
                lr: f(lr * factor),
                eps: f(eps),
            },
            OptimizerSpec::Ftrl {
                alpha,
                beta,
                l1,
                l2,
            } => StepRule::Ftrl {
                alpha: f(alpha),
                beta: f(beta),
                l1: f(l1),
                l2: f(l2),
            },
        }
    }
}

impl StepRule {
    /// One update of the weights `w` from the gradient `g`; `s1`, `s2` are the rule's state
    /// (Adam m, v; AdaGrad's sum of squares in `s1`; FTRL z, n), empty where unused.
    pub(crate) fn apply(&self, w: &mut [f32], g: &[f32], s1: &mut [f32], s2: &mut [f32]) {
        match *self {
            Self::Sgd { lr } => {
                for (w, &g) in w.iter_mut().zip(g) {
                    *w -= lr * g;
                }
            }
            Self::Adam { b1, b2, a, eps_hat } => {
                let coords = w.iter_mut().zip(g).zip(s1.iter_mut().zip(s2.iter_mut()));
                for ((w, &g), (m, v)) in coords {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= a * *m / (v.sqrt() + eps_hat);
                }
            }
            Self::Adagrad { lr, eps } => {
                for ((w, &g), acc) in w.iter_mut().zip(g).zip(s1.iter_mut()) {
                    *acc += g * g;
                    *w -= lr * g / (acc.sqrt() + eps);
                }
            }
            Self::Ftrl {
                alpha,
                beta,
                l1,
                l2,
            } => {
                let coords = w.iter_mut().zip(g).zip(s1.iter_mut().zip(s2.iter_mut()));
                for ((w, &g), (z, n)) in coords {
                    let g2 = g * g;
                    let root = n.sqrt();
                    let new_root = (*n + g2).sqrt();
                    // sqrt(n + g^2) - sqrt(n), without the cancellation of the direct form.
                    let sigma = g2 / (new_root + root).max(1e-30) / alpha;
                    *z += g - sigma * *w;
                    *n += g2;
                    *w = if z.abs() <= l1 {
                        0.0
                    } else {
                        -(*z - z.signum() * l1) / ((beta + new_root) / alpha + l2)
                    };
                }
            }
        }
    }

    /// The same update on tensors (any dtype and device); returns the new weights and state.
    pub(crate) fn apply_tensors(
        &self,
        w: &Tensor,
        g: &Tensor,
        s1: Option<&Tensor>,
        s2: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let missing = || candle_core::Error::Msg("optimizer state missing".into());
        match *self {
            Self::Sgd { lr } => Ok(((w - g.affine(f64::from(lr), 0.0)?)?, None, None)),
            Self::Adam { b1, b2, a, eps_hat } => {
                let (b1, b2) = (f64::from(b1), f64::from(b2));
                let m = (s1.ok_or_else(missing)?.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
                let v =
                    (s2.ok_or_else(missing)?.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
                let step = (m.affine(f64::from(a), 0.0)? / (v.sqrt()? + f64::from(eps_hat))?)?;
                Ok(((w - step)?, Some(m), Some(v)))
            }
            Self::Adagrad { lr, eps } => {
                let acc = (s1.ok_or_else(missing)? + g.sqr()?)?;
                let step = (g.affine(f64::from(lr), 0.0)? / (acc.sqrt()? + f64::from(eps))?)?;
                Ok(((w - step)?, Some(acc), None))
            }
            Self::Ftrl {
                alpha,
                beta,
                l1,
                l2,
            } => {
                let (alpha, beta, l1, l2) = (
                    f64::from(alpha),
                    f64::from(beta),
                    f64::from(l1),
                    f64::from(l2),
                );
                let (z, n) = (s1.ok_or_else(missing)?, s2.ok_or_else(missing)?);
                let g2 = g.sqr()?;
                let new_n = (n + &g2)?;
                let root = n.sqrt()?;
                let new_root = new_n.sqrt()?;
                // g2 / (new_root + root), with 0/0 (no gradient, no history) read as 0.
                let denom = (&new_root + &root)?;
                let safe = denom.clamp(1e-30, f64::INFINITY)?;
                let sigma = (g2 / safe)?.affine(1.0 / alpha, 0.0)?;
                let new_z = ((z + g)? - (sigma * w)?)?;
                let shrunk = (&new_z - new_z.sign()?.affine(l1, 0.0)?)?;
                let scale = new_root.affine(1.0 / alpha, beta / alpha + l2)?;
                let dense = (shrunk / scale)?.neg()?;
                let keep = new_z.abs()?.gt(l1)?;
                let new_w = keep.where_cond(&dense, &dense.zeros_like()?)?;
                Ok((new_w, Some(new_z), Some(new_n)))
            }
        }
    }
}
