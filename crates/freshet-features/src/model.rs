//! What the dataflow feeds to online models: for every event of a model's source, the model's
//! inputs (the entity's feature vector *as served* when the event arrives, plus event fields),
//! and the labels of a label source, merged on one worker in event-time order.
//!
//! Guarantees:
//! - **No leakage.** An example's computed features are the entity's vector at the moment its
//!   event reaches the view's operator, before the event itself is applied: the value serving
//!   would have answered for that event. No event that arrives after it can change them, so a
//!   label joined later sees the features of its event's time, not later ones.
//! - **Order.** Every example and label of one model goes to worker 0, where they are released
//!   to the [`ModelSink`] in event-time order (ties: examples before labels, then by join key),
//!   once the frontier guarantees that nothing earlier can still arrive. The order depends on
//!   the data alone, not on the number of workers or on read batching.
//! - The sink gets [`ModelSink::watermark`] as event time advances, so delayed-label joins can
//!   expire examples whose label did not come within `max_delay`, and [`ModelSink::end`] at end
//!   of input.

use std::sync::Arc;

use freshet_core::event::Scalar;
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
    /// Entity of the event.
    pub entity: String,
    /// The join key (delayed labels), else `Null`.
    pub key: Scalar,
    /// Input values in the model's feature order.
    pub values: Vec<Scalar>,
    /// The label of an immediate-label model.
    pub label: Option<Scalar>,
}

/// A label event for a delayed-label model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRow {
    /// Event time of the label event.
    pub ts_ms: u64,
    /// The join key.
    pub key: Scalar,
    /// The label value.
    pub label: Scalar,
}

/// What flows to a model's operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ModelInput {
    Row(ModelRow),
    Label(LabelRow),
}

impl ModelInput {
    pub(crate) fn ts_ms(&self) -> u64 {
        match self {
            Self::Row(r) => r.ts_ms,
            Self::Label(l) => l.ts_ms,
        }
    }

    /// Release order: event time, examples before labels, then the join key's text.
    pub(crate) fn order_key(&self) -> (u64, u8, String) {
        match self {
            Self::Row(r) => (r.ts_ms, 0, scalar_text(&r.key)),
            Self::Label(l) => (l.ts_ms, 1, scalar_text(&l.key)),
        }
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
        LabelRef::Delayed { join_slot } => (
            event.values.get(join_slot).cloned().unwrap_or(Scalar::Null),
            None,
        ),
    };
    ModelRow {
        model: feed.model.clone(),
        ts_ms: event.ts_ms,
        entity: event.entity.clone(),
        key,
        values,
        label,
    }
}

/// Receives each model's examples and labels in event-time order (module doc).
pub trait ModelSink: Send + Sync {
    /// An example of `model`.
    fn row(&self, model: &str, row: ModelRow);
    /// A label for `model`.
    fn label(&self, model: &str, label: LabelRow);
    /// Every example and label of `model` up to event time `watermark_ms` has been delivered.
    fn watermark(&self, model: &str, watermark_ms: u64);
    /// End of input for `model`.
    fn end(&self, model: &str);
}

/// A sink for pipelines without models.
pub struct DiscardModels;

impl ModelSink for DiscardModels {
    fn row(&self, _: &str, _: ModelRow) {}
    fn label(&self, _: &str, _: LabelRow) {}
    fn watermark(&self, _: &str, _: u64) {}
    fn end(&self, _: &str) {}
}

/// The model operator's buffer: items wait until the frontier guarantees order.
#[derive(Default)]
pub(crate) struct Release {
    pending: Vec<ModelInput>,
}

impl Release {
    pub(crate) fn push(&mut self, item: ModelInput) {
        self.pending.push(item);
    }

    /// Hands every item with `ts + 1 < frontier` (all of them when `frontier` is `None`) to
    /// the sink in order. Records carry a timely time of at most their event time plus one, so
    /// such items have all arrived.
    pub(crate) fn release(
        &mut self,
        model: &str,
        frontier: Option<u64>,
        sink: &Arc<dyn ModelSink>,
    ) {
        let ready: Vec<ModelInput> = match frontier {
            None => std::mem::take(&mut self.pending),
            Some(f) => {
                let (ready, keep) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|i| i.ts_ms().saturating_add(1) < f);
                self.pending = keep;
                ready
            }
        };
        let mut ready = ready;
        ready.sort_by_cached_key(ModelInput::order_key);
        for item in ready {
            match item {
                ModelInput::Row(r) => sink.row(model, r),
                ModelInput::Label(l) => sink.label(model, l),
            }
        }
        match frontier {
            Some(f) if f > 1 => sink.watermark(model, f - 2),
            Some(_) => {}
            None => sink.end(model),
        }
    }
}
