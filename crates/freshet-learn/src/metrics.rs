//! Prequential metrics: every example is scored by the model before the update that learns it,
//! and the score counts here. Cumulative figures cover every example so far; rolling figures
//! the last `rolling_window` examples, recomputed exactly from a ring buffer when a summary is
//! asked for.
//!
//! - log loss: `-ln p(true label)`, p clipped to `[1e-15, 1 - 1e-15]` (as the peers do);
//! - accuracy: binary `p >= 0.5` agrees with the label; multiclass: the most probable class is
//!   the label;
//! - ROC AUC (binary only): rolling is exact (ranks, ties averaged); cumulative comes from a
//!   histogram of 4096 equal-width score bins (ties within a bin count half), so it can be off by
//!   at most the mass of pairs that share a bin;
//! - MAE and RMSE for regression;
//! - rows/s: examples per second of time spent inside the learner (not wall time, which depends
//!   on the input rate); rolling: over the last completed block of `rolling_window` examples.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::head::{class_index, Head};

/// Score bins of the cumulative AUC histogram.
pub const AUC_BINS: usize = 4096;
const P_CLIP: f64 = 1e-15;

/// One scored example in the rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Entry {
    /// Binary: P(1); multiclass: P(true class); regression: the prediction.
    pub(crate) score: f32,
    pub(crate) label: f32,
    pub(crate) hit: bool,
}

/// Cumulative and rolling prequential metrics of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prequential {
    pub(crate) head: Head,
    pub(crate) examples: u64,
    pub(crate) hits: u64,
    /// Sum of log losses (classifiers) or of absolute errors (regression).
    pub(crate) sum_loss: f64,
    /// Sum of squared errors (regression).
    pub(crate) sum_sq: f64,
    /// Cumulative AUC histogram: `[negatives; AUC_BINS]` then `[positives; AUC_BINS]`.
    pub(crate) auc_hist: Vec<u64>,
    pub(crate) ring: Vec<Entry>,
    pub(crate) window: usize,
    /// Next ring slot to write.
    pub(crate) next: usize,
    pub(crate) busy: Duration,
    block_busy: Duration,
    block_examples: usize,
    block_rate: Option<f64>,
}

/// Metric values over a set of examples; absent metrics do not apply to the model's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricValues {
    /// Examples scored.
    pub examples: u64,
    /// Mean log loss (classifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logloss: Option<f64>,
    /// Fraction of correct predictions (classifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// ROC AUC (binary classifiers, once both labels were seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    /// Mean absolute error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Root mean squared error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Examples per second of learner time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_s: Option<f64>,
}

/// One line of models.jsonl: `{"model","version","examples","logloss","accuracy","auc",
/// "rows_per_s","rolling":{..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model's name.
    pub model: String,
    /// The latest published version (0 before the first).
    pub version: u64,
    /// Updates applied.
    pub updates: u64,
    /// Cumulative metrics.
    #[serde(flatten)]
    pub cumulative: MetricValues,
    /// Metrics over the last `rolling_window` examples.
    pub rolling: MetricValues,
}

fn clip(p: f64) -> f64 {
    p.clamp(P_CLIP, 1.0 - P_CLIP)
}

impl Prequential {
    pub(crate) fn new(head: Head, window: usize) -> Self {
        Self {
            head,
            examples: 0,
            hits: 0,
            sum_loss: 0.0,
            sum_sq: 0.0,
            auc_hist: if head == Head::Binary {
                vec![0; 2 * AUC_BINS]
            } else {
                Vec::new()
            },
            ring: Vec::with_capacity(window.min(1 << 20)),
            window,
            next: 0,
            busy: Duration::ZERO,
            block_busy: Duration::ZERO,
            block_examples: 0,
            block_rate: None,
        }
    }

    /// Records the scores (one row of `outputs` per example) of examples with these labels.
    pub(crate) fn record(&mut self, scores: &[f32], labels: impl Iterator<Item = f32>) {
        let k = self.head.outputs();
        for (row, label) in scores.chunks_exact(k).zip(labels) {
            let entry = match self.head {
                Head::Binary => {
                    let p = f64::from(row[0]);
                    let positive = label == 1.0;
                    self.sum_loss -= clip(if positive { p } else { 1.0 - p }).ln();
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let bin = ((p * AUC_BINS as f64) as usize).min(AUC_BINS - 1);
                    self.auc_hist[bin + usize::from(positive) * AUC_BINS] += 1;
                    Entry {
                        score: row[0],
                        label,
                        hit: (p >= 0.5) == positive,
                    }
                }
                Head::Multiclass(_) => {
                    let class = class_index(label);
                    let p_true = row[class];
                    self.sum_loss -= clip(f64::from(p_true)).ln();
                    let best = row
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |acc, (i, &p)| {
                                if p > acc.1 {
                                    (i, p)
                                } else {
                                    acc
                                }
                            },
                        )
                        .0;
                    Entry {
                        score: p_true,
                        label,
                        hit: best == class,
                    }
                }
                Head::Regression => {
                    let err = f64::from(row[0]) - f64::from(label);
                    self.sum_loss += err.abs();
                    self.sum_sq += err * err;
                    Entry {
                        score: row[0],
                        label,
                        hit: false,
                    }
                }
            };
            self.hits += u64::from(entry.hit);
            self.examples += 1;
            if self.ring.len() < self.window {
                self.ring.push(entry);
            } else {
                self.ring[self.next] = entry;
            }
            self.next = (self.next + 1) % self.window;
        }
    }

    /// Adds learner time spent on `examples` examples.
    pub(crate) fn add_time(&mut self, busy: Duration, examples: usize) {
        self.busy += busy;
        self.block_busy += busy;
        self.block_examples += examples;
        if self.block_examples >= self.window {
            let secs = self.block_busy.as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = (secs > 0.0).then(|| self.block_examples as f64 / secs);
            self.block_rate = rate;
            self.block_busy = Duration::ZERO;
            self.block_examples = 0;
        }
    }

    /// Examples scored so far.
    pub fn examples(&self) -> u64 {
        self.examples
    }

    /// Cumulative metrics.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    pub fn cumulative(&self) -> MetricValues {
        let n = self.examples as f64;
        let secs = self.busy.as_secs_f64();
        let mut values = self.values_from(self.examples, self.sum_loss, self.sum_sq, self.hits);
        values.auc = (self.head == Head::Binary && n > 0.0)
            .then(|| histogram_auc(&self.auc_hist))
            .flatten();
        values.rows_per_s = (secs > 0.0).then(|| n / secs);
        values
    }

    /// Metrics over the window, oldest example first.
    pub fn rolling(&self) -> MetricValues {
        // Once the ring is full, `next` is the oldest entry.
        let (newest, oldest) = self.ring.split_at(if self.ring.len() < self.window {
            0
        } else {
            self.next
        });
        let mut sum_loss = 0.0;
        let mut sum_sq = 0.0;
        let mut hits = 0;
        for e in oldest.iter().chain(newest) {
            hits += u64::from(e.hit);
            match self.head {
                Head::Binary => {
                    let p = f64::from(e.score);
                    sum_loss -= clip(if e.label == 1.0 { p } else { 1.0 - p }).ln();
                }
                Head::Multiclass(_) => sum_loss -= clip(f64::from(e.score)).ln(),
                Head::Regression => {
                    let err = f64::from(e.score) - f64::from(e.label);
                    sum_loss += err.abs();
                    sum_sq += err * err;
                }
            }
        }
        let mut values = self.values_from(self.ring.len() as u64, sum_loss, sum_sq, hits);
        if self.head == Head::Binary {
            values.auc = exact_auc(&self.ring);
        }
        values.rows_per_s = self.block_rate;
        values
    }

    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    fn values_from(&self, examples: u64, sum_loss: f64, sum_sq: f64, hits: u64) -> MetricValues {
        let n = examples as f64;
        let mean = |s: f64| (examples > 0).then(|| s / n);
        match self.head {
            Head::Binary | Head::Multiclass(_) => MetricValues {
                examples,
                logloss: mean(sum_loss),
                accuracy: mean(hits as f64),
                ..MetricValues::default()
            },
            Head::Regression => MetricValues {
                examples,
                mae: mean(sum_loss),
                rmse: mean(sum_sq).map(f64::sqrt),
                ..MetricValues::default()
            },
        }
    }

    /// Restores the counters and window of a checkpoint.
    pub(crate) fn restore(
        &mut self,
        counts: MetricCounts,
        sums: [f64; 2],
        auc_hist: Vec<u64>,
        ring: Vec<Entry>,
    ) {
        self.examples = counts.examples;
        self.hits = counts.hits;
        self.next = counts.next;
        [self.sum_loss, self.sum_sq] = sums;
        self.auc_hist = auc_hist;
        self.ring = ring;
    }

    pub(crate) fn counts(&self) -> MetricCounts {
        MetricCounts {
            examples: self.examples,
            hits: self.hits,
            next: self.next,
        }
    }
}

/// The integer counters of [`Prequential`], stored in checkpoint metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetricCounts {
    pub(crate) examples: u64,
    pub(crate) hits: u64,
    pub(crate) next: usize,
}

#[allow(clippy::cast_precision_loss)]
fn histogram_auc(hist: &[u64]) -> Option<f64> {
    let (neg, pos) = hist.split_at(AUC_BINS);
    let total_neg: u64 = neg.iter().sum();
    let total_pos: u64 = pos.iter().sum();
    if total_neg == 0 || total_pos == 0 {
        return None;
    }
    let mut below = 0.0;
    let mut sum = 0.0;
    for (&n, &p) in neg.iter().zip(pos) {
        sum += p as f64 * (below + n as f64 / 2.0);
        below += n as f64;
    }
    Some(sum / (total_neg as f64 * total_pos as f64))
}

/// Mann-Whitney AUC with average ranks for ties.
#[allow(clippy::cast_precision_loss)]
fn exact_auc(entries: &[Entry]) -> Option<f64> {
    let mut scored: Vec<(f32, bool)> = entries.iter().map(|e| (e.score, e.label == 1.0)).collect();
    let positives = scored.iter().filter(|s| s.1).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let average = (i + 1 + j) as f64 / 2.0;
        let tied_positives = scored[i..j].iter().filter(|s| s.1).count();
        rank_sum += average * tied_positives as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(f32, f32)]) -> Vec<Entry> {
        pairs
            .iter()
            .map(|&(score, label)| Entry {
                score,
                label,
                hit: false,
            })
            .collect()
    }

    #[test]
    fn exact_auc_counts_ties_half() {
        // Positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4), (0.8>0.1), (0.4=0.4: 1/2),
        // (0.4>0.1) => 3.5 / 4.
        let e = entries(&[(0.8, 1.0), (0.4, 1.0), (0.4, 0.0), (0.1, 0.0)]);
        assert_eq!(exact_auc(&e), Some(0.875));
        assert_eq!(exact_auc(&entries(&[(0.3, 1.0)])), None);
    }

    #[test]
    fn rolling_window_keeps_the_last_examples() {
        let mut m = Prequential::new(Head::Binary, 2);
        m.record(&[0.9, 0.9, 0.2], [0.0, 1.0, 0.0].into_iter());
        let rolling = m.rolling();
        assert_eq!(rolling.examples, 2);
        assert_eq!(rolling.accuracy, Some(1.0));
        let expected = -(0.9f64.ln() + 0.8f64.ln()) / 2.0;
        let got = rolling.logloss.expect("classifier");
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        let cumulative = m.cumulative();
        assert_eq!(cumulative.examples, 3);
        assert!((cumulative.accuracy.expect("classifier") - 2.0 / 3.0).abs() < 1e-12);
        // Positive 0.9; negatives 0.9 (a tie: 1/2) and 0.2 (1): (0.5 + 1) / 2.
        assert_eq!(cumulative.auc, Some(0.75));
    }

    #[test]
    fn regression_reports_mae_and_rmse() {
        let mut m = Prequential::new(Head::Regression, 10);
        m.record(&[1.0, 2.0], [2.0, 4.0].into_iter());
        let c = m.cumulative();
        assert_eq!(c.mae, Some(1.5));
        assert_eq!(c.rmse, Some((2.5f64).sqrt()));
        assert_eq!(c.logloss, None);
        let json = serde_json::to_string(&c).expect("serialises");
        assert!(!json.contains("logloss"), "{json}");
    }

    #[test]
    fn multiclass_uses_the_true_class_probability() {
        let mut m = Prequential::new(Head::Multiclass(3), 10);
        m.record(&[0.2, 0.5, 0.3, 0.6, 0.3, 0.1], [1.0, 2.0].into_iter());
        let c = m.cumulative();
        assert_eq!(c.accuracy, Some(0.5));
        let expected = -(0.5f64.ln() + f64::from(0.1f32).ln()) / 2.0;
        assert!((c.logloss.expect("classifier") - expected).abs() < 1e-6);
        assert_eq!(c.auc, None);
    }
}
