//! Served rows in the label join: the vectors a serving layer answered with (Kafka `predict`
//! requests in `freshet run`) enter a delayed-label model's feature log, so that a label joins
//! to what was served.
//!
//! Design: the serving side pushes each served [`ModelRow`] into [`ServedRows`], a queue per
//! delayed-label model shared with the dataflow. In the dataflow, an operator on the model's
//! input stream (the events' examples and the label events, before the join) passes that stream
//! through and, on worker 0, also emits the queued rows into it. It holds one capability, which
//! it keeps at its input's frontier (the watermark of the model's sources, plus one): it never
//! holds the dataflow back (the frontier it holds is already there), and a row it emits
//! enters the join at its own event time, as an event's example would.
//!
//! Guarantees:
//! - **On time or counted.** A served row whose event time is at or after the watermark when
//!   the operator takes it (at most a few milliseconds after it was pushed) enters the feature
//!   log at its event time `e` and waits for a label in `[e, e + max_delay]` exactly like an
//!   event's example. A row whose event time is already behind the watermark would change
//!   times the dataflow has closed: it is counted as late ([`ServedCounts::late`]) and not
//!   logged, as a late event is not. A queue that reaches [`MAX_QUEUED_ROWS`] (the dataflow
//!   stopped taking rows) counts further rows as dropped.
//! - **A served vector takes precedence.** When the same label joins both an event's example and
//!   a served row under the same join key (or both expire together: same key and event time),
//!   only the served row(s) are learned; the event's example is counted as superseded
//!   ([`crate::JoinCounts::superseded`]). A label thus teaches the model the vector it scored,
//!   once, whether or not the model's source also carried the event.
//! - **Determinism.** Once on time, what a served row joins and when depends on its data alone
//!   (its values, key and event time), not on the number of workers or on when it arrived.
//!   What is not deterministic: which rows are on time (wall-clock arrival against the
//!   watermark), and the values themselves (serving reads the store, which follows each
//!   worker's head). A row without an event time takes the wall clock when served.
//! - **Not checkpointed.** Served rows waiting for their label are not in a live checkpoint:
//!   after a restart they are lost, as the join's other state is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::model::{ModelInput, ModelRow};

/// Rows that may wait in one model's queue for the dataflow to take them.
pub const MAX_QUEUED_ROWS: usize = 1_000_000;
/// How often worker 0 looks for served rows while it has none to forward.
const POLL: Duration = Duration::from_millis(5);

/// What became of one model's served rows so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedCounts {
    /// Rows that entered the feature log (on time).
    pub logged: u64,
    /// Rows whose event time was behind the watermark when they reached the dataflow.
    pub late: u64,
    /// Rows refused because the queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Queue {
    rows: Mutex<Vec<ModelRow>>,
    logged: AtomicU64,
    late: AtomicU64,
    dropped: AtomicU64,
}

/// The served rows of the delayed-label models of one run, on their way to the label join
/// (module doc). Shared by the serving side, which pushes, and the dataflow, which takes.
#[derive(Default)]
pub struct ServedRows {
    queues: HashMap<String, Queue>,
}

impl ServedRows {
    /// A queue for each of `models` (the models with delayed labels).
    pub fn new<I: IntoIterator<Item = String>>(models: I) -> Self {
        Self {
            queues: models.into_iter().map(|m| (m, Queue::default())).collect(),
        }
    }

    /// Whether rows of `model` are taken.
    pub fn accepts(&self, model: &str) -> bool {
        self.queues.contains_key(model)
    }

    /// Queues a served row for its model's label join (`row.model`); marks it served. Returns
    /// whether it was queued: not for a model without a queue, nor when the queue is full.
    pub fn push(&self, mut row: ModelRow) -> bool {
        let Some(queue) = self.queues.get(&row.model) else {
            return false;
        };
        row.served = true;
        match queue.rows.lock() {
            Ok(mut rows) if rows.len() < MAX_QUEUED_ROWS => {
                rows.push(row);
                true
            }
            _ => {
                queue.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// What became of `model`'s served rows so far.
    pub fn counts(&self, model: &str) -> ServedCounts {
        self.queues
            .get(model)
            .map(|q| ServedCounts {
                logged: q.logged.load(Ordering::Relaxed),
                late: q.late.load(Ordering::Relaxed),
                dropped: q.dropped.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    fn take(&self, model: &str) -> Vec<ModelRow> {
        self.queues
            .get(model)
            .and_then(|q| {
                q.rows
                    .lock()
                    .ok()
                    .map(|mut rows| std::mem::take(&mut *rows))
            })
            .unwrap_or_default()
    }

    fn count(&self, model: &str, logged: u64, late: u64) {
        if let Some(q) = self.queues.get(model) {
            q.logged.fetch_add(logged, Ordering::Relaxed);
            q.late.fetch_add(late, Ordering::Relaxed);
        }
    }
}

type ModelStream<'a> = timely::dataflow::Stream<'a, u64, Vec<ModelInput>>;

/// `inputs` (a model's examples and labels) with `model`'s served rows added on worker 0, each
/// at its event time plus one (the dataflow's clock); late rows are counted, not added.
pub(crate) fn with_served<'a>(
    model: &str,
    inputs: ModelStream<'a>,
    served: Arc<ServedRows>,
) -> ModelStream<'a> {
    let scope = inputs.scope();
    let takes = scope.index() == 0;
    let model = model.to_owned();
    inputs.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<ModelInput>>, _, _, _>(
        Pipeline,
        &format!("Served({model})"),
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            // only worker 0 emits served rows; elsewhere the operator only forwards
            let mut cap = takes.then_some(capability);
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    output.session(&cap).give_iterator(data.drain(..));
                });
                let Some(c) = cap.as_mut() else { return };
                let rows = served.take(&model);
                if !rows.is_empty() {
                    // a row is on time when its clock time (event time + 1) is not before
                    // the capability, which is never ahead of what downstream has closed
                    let floor = *c.time();
                    let (on_time, late): (Vec<ModelRow>, Vec<ModelRow>) = rows
                        .into_iter()
                        .partition(|r| r.ts_ms.saturating_add(1) >= floor);
                    served.count(&model, on_time.len() as u64, late.len() as u64);
                    if !late.is_empty() {
                        tracing::debug!(model = %model, late = late.len(), watermark_ms = floor.saturating_sub(1), "served rows behind the watermark not logged");
                    }
                    if !on_time.is_empty() {
                        output
                            .session(&*c)
                            .give_iterator(on_time.into_iter().map(ModelInput::Row));
                    }
                }
                match frontier.frontier().first() {
                    None => cap = None, // the input ended: nothing can join any more
                    Some(&t) => {
                        if t > *c.time() {
                            c.downgrade(&t);
                        }
                        activator.activate_after(POLL);
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use freshet_core::event::Scalar;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::InputHandle;

    use super::*;

    fn row(model: &str, ts_ms: u64) -> ModelRow {
        ModelRow {
            model: model.to_owned(),
            ts_ms,
            outcome_ms: ts_ms,
            entity: "e".into(),
            key: Scalar::Num(ts_ms as f64),
            values: vec![Scalar::Num(1.0)],
            label: None,
            served: false,
        }
    }

    /// (message time, row event time, served) of every row that came out of the operator.
    type Seen = Arc<Mutex<Vec<(u64, u64, bool)>>>;

    #[test]
    fn rows_enter_at_their_time_late_ones_are_counted_and_the_frontier_is_never_held() {
        let served = Arc::new(ServedRows::new(["m".to_owned()]));
        let seen: Seen = Arc::default();
        assert!(!served.push(row("other", 5)), "no queue for other models");
        assert!(served.push(row("m", 50)));
        let (rows, out) = (served.clone(), seen.clone());
        timely::execute_directly(move |worker| {
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<ModelInput>>>::new();
            let probe = timely::dataflow::ProbeHandle::new();
            worker.dataflow::<u64, _, _>(|scope| {
                let stream = input.to_stream(scope);
                with_served("m", stream, rows.clone())
                    .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                        Pipeline,
                        "Record",
                        move |_, _| {
                            move |input, _output| {
                                input.for_each(|cap, data| {
                                    let mut seen = out.lock().expect("seen");
                                    for item in data.drain(..) {
                                        if let ModelInput::Row(r) = item {
                                            seen.push((
                                                cap.least().copied().unwrap_or(0),
                                                r.ts_ms,
                                                r.served,
                                            ));
                                        }
                                    }
                                });
                            }
                        },
                    )
                    .probe_with(&probe);
            });
            let mut step_until = |done: &dyn Fn() -> bool| {
                for _ in 0..2000 {
                    if done() {
                        return;
                    }
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
                panic!("the dataflow did not get there");
            };
            // an event's row passes through; the served row queued before the start enters
            input.send(ModelInput::Row(row("m", 7)));
            input.advance_to(10);
            step_until(&|| !probe.less_than(&10));
            // the frontier follows the input: the operator holds nothing back
            input.advance_to(100);
            step_until(&|| !probe.less_than(&100));
            // behind the watermark (98 + 1 < 100): late; at it or after: logged
            for ts in [98, 99, 500] {
                assert!(rows.push(row("m", ts)));
            }
            step_until(&|| {
                let c = rows.counts("m");
                c.logged + c.late == 4
            });
            drop(input);
            step_until(&|| probe.done());
        });
        assert_eq!(
            served.counts("m"),
            ServedCounts {
                logged: 3,
                late: 1,
                dropped: 0
            }
        );
        let mut seen = seen.lock().expect("seen").clone();
        seen.sort_by_key(|s| s.1);
        assert_eq!(
            seen.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
            vec![(7, false), (50, true), (99, true), (500, true)]
        );
        // every row comes at a time no later than its event time plus one (its clock time)
        for (time, ts, _) in seen {
            assert!(time <= ts + 1, "row of {ts} came at {time}");
        }
    }
}
