//! The delayed-label join, as a differential dataflow: the feature log (every example of a
//! model, keyed by its join key) is joined with the label stream, and each example ends as one
//! [`Outcome`]: joined to its first label, or expired when `max_delay` passes without one.
//!
//! Times are event times plus one (the dataflow's clock, see [`crate::dataflow`]). For an
//! example of event time `e` and a label of event time `l`, with `d = max_delay`:
//! - the feature log holds the example from `e + 1` to `e + d + 3` (inserted, then retracted:
//!   the log expires), and the label collection holds the label from `l + 1` to `l + d + 3`;
//! - `join` pairs them by key; a pair counts when `e <= l <= e + d`, so a label joins the vector
//!   logged at its event's time (never a later one: the log holds what was served then), a label
//!   after `max_delay` or before its event joins nothing;
//! - a `reduce` per example turns its pairs and an expiry marker (held from `e + d + 2` to
//!   `e + d + 3`) into the outcome: `Joined` with the first label (earliest, then smallest
//!   value) from that label's time, or `Expired` from `e + d + 2` when no label came.
//!
//! The feature log holds two kinds of examples: the events' (one per event of the model's
//! source, the vector as served when the event arrived) and, in `freshet run`, the rows a
//! serving layer answered with ([`crate::served`]), which enter at their own event time. Both
//! join alike; when a label joins a served row and an event's example under the same key, the
//! release keeps the served one ([`crate::model`]).
//!
//! Guarantees: each example yields exactly one outcome, at the event time it happened (the first
//! label's time, or `e + d + 1`); the outcome depends only on the data, not on the number of
//! workers; state holds only examples and labels younger than `max_delay` (plus two ticks).

use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use freshet_core::event::Scalar;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::model::{join_key, JoinTally, ModelInput, ModelRow, Ready};

type Stream<'a, C> = timely::dataflow::Stream<'a, u64, C>;
type Collection<'a, D> = VecCollection<'a, u64, D, isize>;

/// An example in the feature log: its event time and the encoded row (inputs as served).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Logged {
    ts_ms: u64,
    /// A served row ([`crate::served`]), not an event's example.
    pub(crate) served: bool,
    row: Vec<u8>,
}

impl Logged {
    fn new(row: &ModelRow) -> Option<Self> {
        Some(Self {
            ts_ms: row.ts_ms,
            served: row.served,
            row: postcard::to_stdvec(row).ok()?,
        })
    }

    pub(crate) fn decode(&self) -> Option<ModelRow> {
        postcard::from_bytes(&self.row).ok()
    }
}

/// A label event: its event time and the encoded label value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Label {
    pub(crate) ts_ms: u64,
    pub(crate) value: Vec<u8>,
}

impl Label {
    pub(crate) fn decode(&self) -> Option<Scalar> {
        postcard::from_bytes(&self.value).ok()
    }
}

/// What the per-example reduce sees: the labels joined to the example, and its expiry marker.
/// Labels order before the marker, the earliest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Entry {
    Label(Label),
    Expiring,
}

/// What became of one logged example.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Event time at which it happened: the label's, or the end of the example's wait.
    pub(crate) at_ms: u64,
    /// The join key.
    pub(crate) key: String,
    /// The example.
    pub(crate) example: Logged,
    /// Its first label; `None` when it expired unlabelled.
    pub(crate) label: Option<Label>,
}

impl Outcome {
    /// What a served row's outcome supersedes an event example's by: the same key, time and
    /// label (or the same expiry).
    pub(crate) fn group(&self) -> (&str, u64, Option<&Label>) {
        (&self.key, self.at_ms, self.label.as_ref())
    }
}

/// Builds the join of one model's examples and labels (`inputs`, both kinds mixed; rows of
/// other models are skipped) and returns its outcomes, each at its time (module doc).
pub(crate) fn delayed_join<'a>(
    model: &str,
    inputs: Stream<'a, Vec<ModelInput>>,
    max_delay_ms: u64,
    tally: Arc<JoinTally>,
) -> Stream<'a, Vec<Ready>> {
    let d = max_delay_ms;
    // the log and the labels leave at `+ d + 3`; the expiry marker enters at `+ d + 2`
    let (expires, leaves) = (d.saturating_add(2), d.saturating_add(3));
    let name = model.to_owned();
    let log: Collection<'a, (String, Logged)> =
        updates(&inputs, &format!("FeatureLog({model})"), {
            let name = name.clone();
            move |item, out| {
                if let ModelInput::Row(r) = item {
                    tally.saw(r.ts_ms, false);
                    if r.model != name {
                        return;
                    }
                    if let (Some(key), Some(logged)) = (join_key(&r.key), Logged::new(r)) {
                        let e = r.ts_ms;
                        out.push(((key.clone(), logged.clone()), e.saturating_add(1), 1));
                        out.push(((key, logged), e.saturating_add(leaves), -1));
                    }
                } else if let ModelInput::Label(l) = item {
                    tally.saw(l.ts_ms, true);
                }
            }
        });
    let labels: Collection<'a, (String, Label)> =
        updates(&inputs, &format!("Labels({model})"), move |item, out| {
            if let ModelInput::Label(l) = item {
                let (Some(key), Ok(value)) = (join_key(&l.key), postcard::to_stdvec(&l.label))
                else {
                    return;
                };
                let label = Label {
                    ts_ms: l.ts_ms,
                    value,
                };
                out.push(((key.clone(), label.clone()), l.ts_ms.saturating_add(1), 1));
                out.push(((key, label), l.ts_ms.saturating_add(leaves), -1));
            }
        });
    let expiring: Collection<'a, ((String, Logged), Entry)> =
        updates(&inputs, &format!("Expiry({model})"), {
            let name = name.clone();
            move |item, out| {
                let ModelInput::Row(r) = item else { return };
                if r.model != name {
                    return;
                }
                if let (Some(key), Some(logged)) = (join_key(&r.key), Logged::new(r)) {
                    let e = r.ts_ms;
                    let marker = ((key, logged), Entry::Expiring);
                    out.push((marker.clone(), e.saturating_add(expires), 1));
                    out.push((marker, e.saturating_add(leaves), -1));
                }
            }
        });
    let joined = log
        .join(labels)
        .filter(move |(_, (example, label))| {
            example.ts_ms <= label.ts_ms && label.ts_ms <= example.ts_ms.saturating_add(d)
        })
        .map(|(key, (example, label))| ((key, example), Entry::Label(label)));
    let outcomes =
        joined
            .concat(expiring)
            .reduce_named("LabelOutcome", |_example, entries, output| {
                let outcome = match entries.first() {
                    Some((Entry::Label(label), _)) => Some((*label).clone()),
                    _ => None,
                };
                output.push((outcome, 1isize));
            });
    // the reduce's output is consolidated per time: an insertion is an outcome happening
    outcomes
        .inner
        .unary::<timely::container::CapacityContainerBuilder<Vec<Ready>>, _, _, _>(
            Pipeline,
            &format!("Outcomes({model})"),
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for (((key, example), label), time, diff) in data.drain(..) {
                            if diff > 0 {
                                session.give(Ready::Outcome(Outcome {
                                    at_ms: time.saturating_sub(1),
                                    key,
                                    example,
                                    label,
                                }));
                            }
                        }
                    });
                }
            },
        )
}

/// A collection built from `inputs` by `logic`, which pushes `(data, time, diff)` updates for
/// each item; times earlier than the item's own timely time are moved up to it (they never are:
/// records carry a time of at most their event time plus one).
fn updates<'a, D, L>(
    inputs: &Stream<'a, Vec<ModelInput>>,
    name: &str,
    mut logic: L,
) -> Collection<'a, D>
where
    D: Clone + 'static,
    L: FnMut(&ModelInput, &mut Vec<(D, u64, isize)>) + 'static,
{
    inputs
        .clone()
        .unary::<timely::container::CapacityContainerBuilder<Vec<(D, u64, isize)>>, _, _, _>(
            Pipeline,
            name,
            |_, _| {
                let mut staged = Vec::new();
                move |input, output| {
                    input.for_each(|cap, data| {
                        let floor = cap.least().copied().unwrap_or(0);
                        for item in data.iter() {
                            logic(item, &mut staged);
                        }
                        let mut session = output.session(&cap);
                        for (d, t, r) in staged.drain(..) {
                            session.give((d, t.max(floor), r));
                        }
                    });
                }
            },
        )
        .as_collection()
}
