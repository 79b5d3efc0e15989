//! The label join: examples logged when they are scored wait, keyed by the join key, for a
//! label from another source; one that waits longer than `max_delay` of event time expires,
//! dropped or learned as a negative (`label.unlabeled`).
//!
//! Guarantees: each logged example yields at most one labelled example; memory holds only the
//! examples still waiting. A label whose key is not waiting (never logged, already labelled or
//! expired) is counted and ignored; a second example logged under a waiting key replaces the
//! first (counted).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use freshet_core::model::{LabelSpec, Unlabeled, DEFAULT_MAX_LABEL_DELAY};

use crate::example::{Example, Value};

/// What a label did.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// It completed a waiting example.
    Joined(Example),
    /// No example waited under its key.
    Unmatched,
}

/// Examples waiting for their labels (module doc).
#[derive(Debug)]
pub struct LabelJoin<K> {
    max_delay_ms: u64,
    unlabeled: Unlabeled,
    waiting: HashMap<K, (u64, Vec<Value>)>,
    by_time: BTreeMap<(u64, u64), K>,
    seq: u64,
    /// Labels joined to an example.
    pub joined: u64,
    /// Labels with no waiting example.
    pub unmatched: u64,
    /// Examples that expired without a label.
    pub expired: u64,
    /// Examples replaced by a later one under the same key.
    pub replaced: u64,
}

impl<K: Hash + Eq + Clone> LabelJoin<K> {
    /// A join with this wait and expiry policy.
    pub fn new(max_delay_ms: u64, unlabeled: Unlabeled) -> Self {
        Self {
            max_delay_ms,
            unlabeled,
            waiting: HashMap::new(),
            by_time: BTreeMap::new(),
            seq: 0,
            joined: 0,
            unmatched: 0,
            expired: 0,
            replaced: 0,
        }
    }

    /// The join a `label = { .. }` table describes.
    pub fn from_spec(label: &LabelSpec) -> Self {
        let delay = label.max_delay().unwrap_or(DEFAULT_MAX_LABEL_DELAY);
        Self::new(delay.as_ms(), label.unlabeled)
    }

    /// Logs an example scored at event time `ts_ms`, to wait for the label keyed `key`.
    pub fn log(&mut self, key: K, ts_ms: u64, values: Vec<Value>) {
        self.seq += 1;
        // The replaced example's time entry stays until it expires; `expire` skips it because
        // its sequence number no longer matches.
        if self
            .waiting
            .insert(key.clone(), (self.seq, values))
            .is_some()
        {
            self.replaced += 1;
        }
        self.by_time.insert((ts_ms, self.seq), key);
    }

    /// Delivers the label for `key`.
    pub fn label(&mut self, key: &K, label: f32) -> JoinOutcome {
        match self.waiting.remove(key) {
            Some((_, values)) => {
                self.joined += 1;
                JoinOutcome::Joined(Example { values, label })
            }
            None => {
                self.unmatched += 1;
                JoinOutcome::Unmatched
            }
        }
    }

    /// Expires every example logged before `watermark_ms - max_delay`; with
    /// `unlabeled = "negative"` they come back labelled 0, otherwise they are dropped.
    pub fn expire(&mut self, watermark_ms: u64) -> Vec<Example> {
        self.expire_timed(watermark_ms)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// [`LabelJoin::expire`], each example with the event time it was logged at.
    pub fn expire_timed(&mut self, watermark_ms: u64) -> Vec<(u64, Example)> {
        let horizon = watermark_ms.saturating_sub(self.max_delay_ms);
        let mut out = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            let (ts, seq) = *entry.key();
            if ts >= horizon {
                break;
            }
            let key = entry.remove();
            let still_waiting = self.waiting.get(&key).is_some_and(|(s, _)| *s == seq);
            if !still_waiting {
                continue;
            }
            if let Some((_, values)) = self.waiting.remove(&key) {
                self.expired += 1;
                if self.unlabeled == Unlabeled::Negative {
                    out.push((ts, Example { values, label: 0.0 }));
                }
            }
        }
        out
    }

    /// How long an example waits for its label, in event time.
    pub fn max_delay_ms(&self) -> u64 {
        self.max_delay_ms
    }

    /// Examples waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_expires_and_counts() {
        let mut join = LabelJoin::new(1_000, Unlabeled::Negative);
        join.log(1u64, 0, vec![Value::Number(1.0)]);
        join.log(2, 100, vec![Value::Number(2.0)]);
        join.log(3, 2_000, vec![Value::Number(3.0)]);
        assert_eq!(
            join.label(&2, 1.0),
            JoinOutcome::Joined(Example {
                values: vec![Value::Number(2.0)],
                label: 1.0
            })
        );
        assert_eq!(join.label(&2, 1.0), JoinOutcome::Unmatched);
        let expired = join.expire(1_500);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].values, [Value::Number(1.0)]);
        assert_eq!(expired[0].label, 0.0);
        assert_eq!(join.waiting(), 1);
        assert_eq!((join.joined, join.unmatched, join.expired), (1, 1, 1));
        let mut drop = LabelJoin::new(10, Unlabeled::Drop);
        drop.log("a", 0, vec![Value::Missing]);
        drop.log("a", 5, vec![Value::Missing]);
        assert_eq!(drop.replaced, 1);
        assert!(drop.expire(100).is_empty());
        assert_eq!((drop.expired, drop.waiting()), (1, 0));
    }
}
