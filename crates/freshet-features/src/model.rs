//! What the dataflow feeds to online models: for every event of a model's source, the model's
//! inputs (the entity's feature vector *as served* when the event arrives, plus event fields)
//! with its label, released on one worker in event-time order.
//!
//! An immediate label is a field of the example's own event. A delayed label comes from another
//! source and is joined to the example in the dataflow ([`crate::join`]): a differential `join`
//! of the feature log (examples keyed by join key, expired `max_delay` after their event) with
//! the label stream.
//!
//! Guarantees:
//! - **No leakage.** An example's computed features are the entity's vector at the moment its
//!   event reaches the view's operator, before the event itself is applied: the value serving
//!   would have answered for that event. The feature log keeps that vector unchanged, so a label
//!   joined later meets the features of its event's time, never ones computed from later events.
//! - **Order.** Every example of one model goes to worker 0, where they are released to the
//!   [`ModelSink`] in event-time order once the frontier guarantees that nothing earlier can
//!   still arrive: an immediate-label example at its event's time, a joined example at its
//!   label's time, an expired one (`unlabeled = "negative"`) when `max_delay` has passed. Ties
//!   are broken by content (join key, then the example), so the order depends on the data alone,
//!   not on the number of workers or on read batching.
//! - **Served rows first.** Among the join outcomes released together, an event's example that
//!   a served row ([`crate::served`]) under the same join key shares its outcome with (the same
//!   label, or the same expiry) is not handed to the sink but counted as superseded: the label
//!   teaches the vector that was served, once.
//! - **Counts.** The sink gets the join's running [`JoinCounts`] of a delayed-label model after
//!   every release, and [`ModelSink::end`] at end of input.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use freshet_core::event::Scalar;
use freshet_core::model::Unlabeled;
use freshet_core::store::FeatureValue;
use serde::{Deserialize, Serialize};

/// Where one model input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRef {
    /// A feature of the model's view, by position in the view's vector.
    View(usize),
    /// An event field, by slot in the source's decoded values.
    Field(usize),
}

/// How an example gets its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelRef {
    /// A field of the same event (slot).
    Immediate(usize),
    /// A later event of another source, joined on the value of this slot.
    Delayed {
        /// Slot of the join key in the example's event.
        join_slot: usize,
        /// How long, in event time, an example waits for its label (`label.max_delay`).
        max_delay_ms: u64,
        /// What becomes of an example whose label does not come in time.
        unlabeled: Unlabeled,
    },
}

/// The examples one source feeds to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFeed {
    /// Model name.
    pub model: String,
    /// Name of the view whose features the model reads, if any.
    pub view: Option<String>,
    /// The model's inputs, in the model's feature order.
    pub inputs: Vec<InputRef>,
    /// Where the label comes from.
    pub label: LabelRef,
}

/// The labels one source feeds to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelFeed {
    /// Model name.
    pub model: String,
    /// Slot of the join key in the label event.
    pub join_slot: usize,
    /// Slot of the label value.
    pub label_slot: usize,
}

/// One example: inputs as scalars (a view's numbers as `Num`, absent values as `Null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    /// The model the row is for.
    pub model: String,
    /// Event time of the example's event.
    pub ts_ms: u64,
    /// Outcome time: the event time at which the label became known, the order in which rows
    /// are released (module doc): the event's own time for an immediate label, the label
    /// event's time for a joined label, and the end of the wait (`ts_ms + max_delay + 1`) for
    /// an example learned as negative when its label did not come.
    pub outcome_ms: u64,
    /// Entity of the event.
    pub entity: String,
    /// The join key (delayed labels), else `Null`.
    pub key: Scalar,
    /// Input values in the model's feature order.
    pub values: Vec<Scalar>,
    /// The label: the event's label field (immediate labels), the joined label, or `0` for an
    /// example that expired unlabelled under `unlabeled = "negative"`.
    pub label: Option<Scalar>,
    /// Whether the row is a served one (logged by a serving layer, see [`crate::served`])
    /// rather than an event's example.
    #[serde(default)]
    pub served: bool,
}

/// A label event for a delayed-label model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LabelRow {
    /// Event time of the label event.
    pub(crate) ts_ms: u64,
    /// The join key.
    pub(crate) key: Scalar,
    /// The label value.
    pub(crate) label: Scalar,
}

/// What the sources and views produce for a model: its examples and (delayed) labels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ModelInput {
    Row(ModelRow),
    Label(LabelRow),
}

/// What reaches a model's release operator: a labelled example, or an outcome of the
/// delayed-label join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ready {
    /// An example of an immediate-label model (its label is in the row).
    Row(ModelRow),
    /// A joined or expired example of a delayed-label model.
    Outcome(crate::join::Outcome),
}

impl Ready {
    /// Event time at which the item happened.
    fn ts_ms(&self) -> u64 {
        match self {
            Self::Row(r) => r.ts_ms,
            Self::Outcome(o) => o.at_ms,
        }
    }

    /// Release order: event time, then content (module doc).
    fn order(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Row(a), Self::Row(b)) => (a.ts_ms, scalar_text(&a.key))
                .cmp(&(b.ts_ms, scalar_text(&b.key)))
                .then_with(|| a.entity.cmp(&b.entity)),
            (Self::Outcome(a), Self::Outcome(b)) => a.cmp(b),
            (a, b) => a.ts_ms().cmp(&b.ts_ms()),
        }
    }
}

/// Running counts of a delayed-label join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounts {
    /// Label events read.
    pub labels: u64,
    /// Labels that labelled at least one example (the first label within `max_delay`).
    pub joined: u64,
    /// Labels that labelled no example: no example under their key within `max_delay` before
    /// them (a late label, an unknown key, a label before its event), or one already labelled.
    pub unmatched: u64,
    /// Examples whose label did not come within `max_delay` (learned as negatives under
    /// `unlabeled = "negative"`, else dropped).
    pub expired: u64,
    /// Examples still waiting at end of input: their `max_delay` reaches past the last event.
    pub pending: u64,
    /// Events' examples not learned because a served row under the same join key took their
    /// outcome: joined to the same label, or expired at the same time ([`crate::served`]).
    pub superseded: u64,
}

/// Counts one delayed-label model's workers share: label events read and the largest event
/// time seen, by whichever worker reads them.
#[derive(Debug, Default)]
pub(crate) struct JoinTally {
    pub(crate) labels: AtomicU64,
    pub(crate) last_ms: AtomicU64,
}

impl JoinTally {
    pub(crate) fn saw(&self, ts_ms: u64, label: bool) {
        self.last_ms.fetch_max(ts_ms, AtomicOrdering::Relaxed);
        if label {
            self.labels.fetch_add(1, AtomicOrdering::Relaxed);
        }
    }
}

/// The join key's text: the same value read from either source gives the same key (`7` and
/// `7.0` are one key); `None` for a missing key.
pub(crate) fn join_key(s: &Scalar) -> Option<String> {
    match s {
        Scalar::Null => None,
        Scalar::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(format!("{}", *n as i64)),
        Scalar::Num(n) => Some(n.to_string()),
        Scalar::Bool(b) => Some(b.to_string()),
        Scalar::Str(s) => Some(s.to_string()),
    }
}

fn scalar_text(s: &Scalar) -> String {
    match s {
        Scalar::Null => String::new(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Num(n) => format!("{n:020.6}"),
        Scalar::Str(s) => s.to_string(),
    }
}

/// A feature value as a model input.
pub(crate) fn feature_scalar(v: &FeatureValue) -> Scalar {
    match v {
        FeatureValue::Null => Scalar::Null,
        FeatureValue::Int(i) => Scalar::Num(*i as f64),
        FeatureValue::Float(f) => Scalar::Num(*f),
        FeatureValue::Bool(b) => Scalar::Bool(*b),
        FeatureValue::Str(s) => Scalar::Str(Box::from(&**s)),
    }
}

/// Builds the row of `feed` for one event, given the view's values (if the model reads a view).
pub(crate) fn row_of(
    feed: &ModelFeed,
    event: &freshet_core::event::Decoded,
    view_values: Option<&[FeatureValue]>,
) -> ModelRow {
    let values = feed
        .inputs
        .iter()
        .map(|input| match input {
            InputRef::View(i) => view_values
                .and_then(|v| v.get(*i))
                .map_or(Scalar::Null, feature_scalar),
            InputRef::Field(slot) => event.values.get(*slot).cloned().unwrap_or(Scalar::Null),
        })
        .collect();
    let (key, label) = match feed.label {
        LabelRef::Immediate(slot) => (Scalar::Null, event.values.get(slot).cloned()),
        LabelRef::Delayed { join_slot, .. } => (
            event.values.get(join_slot).cloned().unwrap_or(Scalar::Null),
            None,
        ),
    };
    ModelRow {
        model: feed.model.clone(),
        ts_ms: event.ts_ms,
        outcome_ms: event.ts_ms,
        entity: event.entity.clone(),
        key,
        values,
        label,
        served: false,
    }
}

/// Receives each model's labelled examples in event-time order (module doc).
pub trait ModelSink: Send + Sync {
    /// A labelled example of `model`.
    fn row(&self, model: &str, row: ModelRow);
    /// The running counts of `model`'s delayed-label join (after every release).
    fn joins(&self, model: &str, counts: JoinCounts);
    /// End of input for `model`.
    fn end(&self, model: &str);
}

/// A sink for pipelines without models.
pub struct DiscardModels;

impl ModelSink for DiscardModels {
    fn row(&self, _: &str, _: ModelRow) {}
    fn joins(&self, _: &str, _: JoinCounts) {}
    fn end(&self, _: &str) {}
}

/// How a delayed-label model's join outcomes are released.
pub(crate) struct Delayed {
    pub(crate) unlabeled: Unlabeled,
    pub(crate) tally: Arc<JoinTally>,
}

/// The model operator's buffer: items wait until the frontier guarantees order.
pub(crate) struct Release {
    pending: Vec<Ready>,
    delayed: Option<Delayed>,
    counts: JoinCounts,
}

impl Release {
    pub(crate) fn new(delayed: Option<Delayed>) -> Self {
        Self {
            pending: Vec::new(),
            delayed,
            counts: JoinCounts::default(),
        }
    }

    pub(crate) fn push(&mut self, item: Ready) {
        self.pending.push(item);
    }

    /// Hands every item with `ts + 1 < frontier` (all of them when `frontier` is `None`) to
    /// the sink in order. Items carry a timely time of at most their event time plus one, so
    /// such items have all arrived.
    pub(crate) fn release(
        &mut self,
        model: &str,
        frontier: Option<u64>,
        sink: &Arc<dyn ModelSink>,
    ) {
        let mut ready: Vec<Ready> = match frontier {
            None => std::mem::take(&mut self.pending),
            Some(f) => {
                let (ready, keep) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|i| i.ts_ms().saturating_add(1) < f);
                self.pending = keep;
                ready
            }
        };
        ready.sort_by(Ready::order);
        // outcomes that a served row also had (same key, time and label): the served row's
        // wins over an event's example (crate::served)
        let served: BTreeSet<(&str, u64, Option<&crate::join::Label>)> = ready
            .iter()
            .filter_map(|i| match i {
                Ready::Outcome(o) if o.example.served => Some(o.group()),
                _ => None,
            })
            .collect();
        let superseded: Vec<bool> = ready
            .iter()
            .map(|i| match i {
                Ready::Outcome(o) => !o.example.served && served.contains(&o.group()),
                Ready::Row(_) => false,
            })
            .collect();
        let mut labels_used = BTreeSet::new();
        for (item, superseded) in ready.into_iter().zip(superseded) {
            match item {
                Ready::Row(r) => sink.row(model, r),
                Ready::Outcome(o) if superseded => {
                    if let Some(label) = o.label {
                        labels_used.insert((o.key, label.ts_ms, label.value));
                    }
                    self.counts.superseded += 1;
                }
                Ready::Outcome(o) => {
                    if let Some(row) = self.outcome(o, &mut labels_used) {
                        sink.row(model, row);
                    }
                }
            }
        }
        if let Some(d) = &self.delayed {
            // every label event is read before the frontier passes its time
            self.counts.labels = d.tally.labels.load(AtomicOrdering::Relaxed);
            self.counts.joined += labels_used.len() as u64;
            self.counts.unmatched = self.counts.labels.saturating_sub(self.counts.joined);
            sink.joins(model, self.counts);
        }
        if frontier.is_none() {
            sink.end(model);
        }
    }

    /// The example a join outcome yields, if any; counts it.
    fn outcome(
        &mut self,
        outcome: crate::join::Outcome,
        labels_used: &mut BTreeSet<(String, u64, Vec<u8>)>,
    ) -> Option<ModelRow> {
        let delayed = self.delayed.as_ref()?;
        let crate::join::Outcome {
            at_ms,
            key,
            example,
            label,
        } = outcome;
        let mut row = example.decode()?;
        row.outcome_ms = at_ms;
        match label {
            Some(label) => {
                row.label = Some(label.decode()?);
                // a label counts once, however many examples it labels (all at its time)
                labels_used.insert((key, label.ts_ms, label.value));
                Some(row)
            }
            None if at_ms > delayed.tally.last_ms.load(AtomicOrdering::Relaxed) => {
                // the input ended before this example's wait did
                self.counts.pending += 1;
                None
            }
            None => {
                self.counts.expired += 1;
                (delayed.unlabeled == Unlabeled::Negative).then(|| {
                    row.label = Some(Scalar::Num(0.0));
                    row
                })
            }
        }
    }
}
