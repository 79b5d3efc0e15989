//! The timely dataflow: sources read their partitions, records are exchanged by entity to the
//! worker that owns the key, and a keyed-state window operator per feature view keeps the
//! windows, driven by the frontier.
//!
//! A source with `[[drift]]` monitors also feeds a drift operator (see [`crate::drift`]), which
//! gathers that source's events on worker 0.
//!
//! Progress: a source holds its capability at `watermark + 1` (time 0 means "no head yet"), so
//! the frontier at the window operators is the global watermark (the minimum over every
//! worker's partitions). At end of input each source reports its largest event time to every
//! worker and releases its capability; the window operators then close with `h = w = t_end`,
//! the largest event time of the whole input. Results do not depend on the number of workers:
//! each key lives on one worker and sees its events in partition order.
//!
//! Live runs ([`run_live`]) never end by themselves: their inputs (Kafka partitions) only go
//! idle. They take consistent checkpoints through a [`Control`] (see [`crate::checkpoint`]),
//! start from a restored checkpoint, retry store writes without limit (the pipeline waits for
//! the store to come back), and stop at a checkpoint without end-of-input, so no window closes
//! early. A worker that reads no partition of a source does not hold that source's watermark
//! back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet_core::event::{Decoded, Scalar};
use freshet_core::metrics::PipelineMetrics;
use freshet_core::store::{OnlineStore, StoreError, StoreWrite};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Concatenate, Exchange};

use crate::checkpoint::{Checkpoint, Control, PartitionPosition, SourcePositions, ViewSnapshot};
use crate::drift::{drift_operator, DriftSink};
use crate::join::delayed_join;
use crate::model::{
    row_of, Delayed, JoinTally, LabelRef, LabelRow, ModelFeed, ModelInput, ModelSink, Ready,
    Release,
};
use crate::plan::{SourcePlan, ViewPlan};
use crate::served::{with_served, ServedRows};
use crate::source::{
    head, keep_late, poll_partition, Classified, DeadLetter, Partition, PartitionReader, ReadState,
};
use crate::window::{ClosedWindow, ViewState};

/// Records read per partition per source activation.
pub const READ_BATCH_RECORDS: usize = 4096;
/// At most this many keys that only time changed (a window closing over every key) are written
/// per activation of a view; keys changed by events are written at every flush, ahead of them.
const TIME_WRITES_PER_ACTIVATION: usize = 512;
/// How often, at most, changed feature vectors are written to the store (wall time).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts at a store write that fails with a retryable error before giving up.
const STORE_WRITE_ATTEMPTS: u32 = 20;

/// Receives closed hopping/tumbling windows (the feature changelog).
pub trait ChangelogSink: Send + Sync {
    /// Called with the windows closed by one watermark advance of one worker.
    fn write(&self, windows: &[ClosedWindow]);
}

/// Receives records that were rejected or arrived late.
pub trait DeadLetterSink: Send + Sync {
    /// Called once per dead letter.
    fn write(&self, letter: DeadLetter);
}

/// The partitions a worker reads: (partition id, reader).
pub type Partitions = Vec<(u32, Box<dyn PartitionReader>)>;

/// Builds the readers of one source for worker `index` of `peers`.
pub type ReaderFactory = Arc<dyn Fn(usize, usize) -> std::io::Result<Partitions> + Send + Sync>;

/// Everything the dataflow writes to.
#[derive(Clone)]
pub struct Outputs {
    /// The online store.
    pub store: Arc<dyn OnlineStore>,
    /// Closed windows.
    pub changelog: Arc<dyn ChangelogSink>,
    /// Rejected and late records.
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// Drift windows, alerts and frozen references.
    pub drift: Arc<dyn DriftSink>,
    /// Examples and labels of online models.
    pub models: Arc<dyn ModelSink>,
    /// Counters.
    pub metrics: Arc<PipelineMetrics>,
    /// How often changed vectors are flushed to the store.
    pub flush_interval: Duration,
    /// Rows a serving layer answered with, for the label joins of delayed-label models
    /// ([`crate::served`]); `None` where nothing is served.
    pub served: Option<Arc<ServedRows>>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A partition could not be opened or read.
    #[error("input: {0}")]
    Input(std::io::Error),
    /// The store refused writes.
    #[error("store: {0}")]
    Store(StoreError),
    /// The dataflow could not start or a worker failed.
    #[error("dataflow: {0}")]
    Dataflow(String),
}

/// Summary of a finished run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Keys held per view at the end (over all workers).
    pub entities: HashMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Record {
    Event(Decoded),
    /// End of input of one source worker, sent to worker `to`.
    End {
        to: u64,
        clock_ms: Option<u64>,
    },
    /// The cut of checkpoint `epoch` by one source worker, sent to worker `to`.
    Barrier {
        to: u64,
        epoch: u64,
    },
}

/// What makes a run live: checkpoint control and the checkpoint to start from.
#[derive(Clone)]
pub struct Live {
    /// Checkpoint and stop control shared with the caller.
    pub control: Arc<Control>,
    /// The checkpoint to restore (its positions must also be where the readers start).
    pub restore: Option<Arc<Checkpoint>>,
}

fn key_hash(entity: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(entity.as_bytes())
}

/// Writes a batch, retrying retryable errors with exponential backoff (10 ms to 2 s):
/// [`STORE_WRITE_ATTEMPTS`] times, or without limit when `forever` (a live run waits for the
/// store). Marks the store degraded in `metrics` while it fails.
fn write_with_retry(
    store: &dyn OnlineStore,
    view: &str,
    writes: Vec<StoreWrite>,
    metrics: &PipelineMetrics,
    forever: bool,
) -> Result<(), StoreError> {
    let mut backoff = Duration::from_millis(10);
    let mut attempt = 1;
    let start = Instant::now();
    loop {
        match store.write_batch(view, writes.clone()) {
            Err(e) if e.is_retryable() && (forever || attempt < STORE_WRITE_ATTEMPTS) => {
                metrics.store_degraded.store(true, Ordering::Relaxed);
                PipelineMetrics::add(&metrics.store_retries_total, 1);
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(view, attempt, error = %e, "store write failed, retrying");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            other => {
                if other.is_ok() {
                    metrics.store_degraded.store(false, Ordering::Relaxed);
                    metrics.record_store_write(start.elapsed());
                }
                return other;
            }
        }
    }
}

/// Runs the sources and views of `plans` on `workers` threads until every input ends.
pub fn run(
    plans: Vec<SourcePlan>,
    inputs: HashMap<String, ReaderFactory>,
    workers: usize,
    outputs: Outputs,
) -> Result<RunStats, RunError> {
    run_inner(plans, inputs, workers, outputs, None)
}

/// Runs a live dataflow (module doc) until [`Control::stop`] and the checkpoint after it.
pub fn run_live(
    plans: Vec<SourcePlan>,
    inputs: HashMap<String, ReaderFactory>,
    workers: usize,
    outputs: Outputs,
    live: Live,
) -> Result<RunStats, RunError> {
    let workers = workers.max(1);
    if let Some(cp) = &live.restore {
        if cp.workers != workers {
            return Err(RunError::Dataflow(format!(
                "the checkpoint was written by {} workers; restart with --workers {} (or remove the checkpoint to start over)",
                cp.workers, cp.workers
            )));
        }
    }
    let views: usize = plans.iter().map(|p| p.views.len()).sum();
    live.control
        .expect(workers, plans.len() * workers, views * workers);
    run_inner(plans, inputs, workers, outputs, Some(live))
}

fn run_inner(
    plans: Vec<SourcePlan>,
    inputs: HashMap<String, ReaderFactory>,
    workers: usize,
    outputs: Outputs,
    live: Option<Live>,
) -> Result<RunStats, RunError> {
    for plan in &plans {
        for view in &plan.views {
            outputs
                .store
                .register_view(view.schema.clone())
                .map_err(RunError::Store)?;
        }
    }
    // the delayed-label models: their join's settings and the counts their workers share
    let mut delayed: HashMap<String, (u64, freshet_core::model::Unlabeled, Arc<JoinTally>)> =
        HashMap::new();
    for feed in plans.iter().flat_map(|p| &p.models) {
        if let LabelRef::Delayed {
            max_delay_ms,
            unlabeled,
            ..
        } = feed.label
        {
            delayed.insert(
                feed.model.clone(),
                (max_delay_ms, unlabeled, Arc::new(JoinTally::default())),
            );
        }
    }
    let plans: Vec<Arc<SourcePlan>> = plans.into_iter().map(Arc::new).collect();
    let failure: Arc<Mutex<Option<RunError>>> = Arc::new(Mutex::new(None));
    let entities: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let config = timely::Config::process(workers.max(1));
    let shared = (
        plans,
        inputs,
        outputs,
        failure.clone(),
        entities.clone(),
        live,
        delayed,
    );
    let guards = timely::execute(config, move |worker| {
        let (plans, inputs, outputs, failure, entities, live, delayed) = &shared;
        let index = worker.index();
        let peers = worker.peers();
        let mut all_parts: Vec<Vec<Partition>> = Vec::new();
        for plan in plans {
            let parts: Vec<Partition> = match inputs.get(&plan.name).map(|f| f(index, peers)) {
                None => Vec::new(),
                Some(Ok(parts)) => {
                    let restored = live
                        .as_ref()
                        .and_then(|l| l.restore.as_ref())
                        .map(|cp| cp.positions(&plan.name))
                        .unwrap_or_default();
                    parts
                        .into_iter()
                        .map(|(id, reader)| {
                            let mut part = Partition::new(id, reader);
                            if let Some(p) = restored.get(&id) {
                                part.restore_clock(p.clock_ms);
                            }
                            part
                        })
                        .collect()
                }
                Some(Err(e)) => {
                    fail(failure, RunError::Input(e));
                    Vec::new()
                }
            };
            all_parts.push(parts);
        }
        // one dataflow for every source, so that models can join streams of two sources
        worker.dataflow::<u64, _, _>(|scope| {
            let mut model_streams: HashMap<String, Vec<ModelStream<'_>>> = HashMap::new();
            for (plan, parts) in plans.iter().zip(all_parts) {
                let records =
                    source_operator(scope, plan.clone(), parts, outputs, failure, live.clone());
                if !plan.drift.is_empty() {
                    drift_operator(
                        &records,
                        plan.clone(),
                        outputs.drift.clone(),
                        failure.clone(),
                    );
                }
                for feed in plan.models.iter().filter(|f| f.view.is_none()) {
                    let model = feed.model.clone();
                    let feed = feed.clone();
                    let rows = records.clone().flat_map(move |r: Record| match r {
                        Record::Event(e) => Some(ModelInput::Row(row_of(&feed, &e, None))),
                        _ => None,
                    });
                    model_streams.entry(model).or_default().push(rows);
                }
                for label in &plan.labels {
                    let label = label.clone();
                    let model = label.model.clone();
                    let rows = records.clone().flat_map(move |r: Record| match r {
                        Record::Event(e) => Some(ModelInput::Label(LabelRow {
                            ts_ms: e.ts_ms,
                            key: e
                                .values
                                .get(label.join_slot)
                                .cloned()
                                .unwrap_or(Scalar::Null),
                            label: e
                                .values
                                .get(label.label_slot)
                                .cloned()
                                .unwrap_or(Scalar::Null),
                        })),
                        _ => None,
                    });
                    model_streams.entry(model).or_default().push(rows);
                }
                let exchanged = records.exchange(|r: &Record| match r {
                    Record::Event(e) => key_hash(&e.entity),
                    Record::End { to, .. } | Record::Barrier { to, .. } => *to,
                });
                for view in &plan.views {
                    let feeds: Vec<ModelFeed> = plan
                        .models
                        .iter()
                        .filter(|f| f.view.as_deref() == Some(view.schema.name.as_str()))
                        .cloned()
                        .collect();
                    let names: Vec<String> = feeds.iter().map(|f| f.model.clone()).collect();
                    let rows = window_operator(
                        &exchanged,
                        plan.clone(),
                        Arc::new(view.clone()),
                        feeds,
                        outputs,
                        failure,
                        entities,
                        live.clone(),
                    );
                    for name in names {
                        model_streams.entry(name).or_default().push(rows.clone());
                    }
                }
            }
            for (model, streams) in model_streams {
                let inputs = scope.concatenate(streams);
                let (ready, release) = match delayed.get(&model) {
                    Some((max_delay_ms, unlabeled, tally)) => (
                        {
                            let inputs = match &outputs.served {
                                Some(served) if served.accepts(&model) => {
                                    with_served(&model, inputs, served.clone())
                                }
                                _ => inputs,
                            };
                            delayed_join(&model, inputs, *max_delay_ms, tally.clone())
                        },
                        Release::new(Some(Delayed {
                            unlabeled: *unlabeled,
                            tally: tally.clone(),
                        })),
                    ),
                    None => {
                        let name = model.clone();
                        let rows = inputs.flat_map(move |item: ModelInput| match item {
                            ModelInput::Row(r) if r.model == name => Some(Ready::Row(r)),
                            _ => None,
                        });
                        (rows, Release::new(None))
                    }
                };
                model_operator(model, ready, release, outputs.models.clone());
            }
        });
    })
    .map_err(|e| RunError::Dataflow(e.to_string()))?;
    for result in guards.join() {
        result.map_err(RunError::Dataflow)?;
    }
    if let Some(e) = failure.lock().map_or(None, |mut f| f.take()) {
        return Err(e);
    }
    let entities = entities.lock().map(|e| e.clone()).unwrap_or_default();
    Ok(RunStats { entities })
}

pub(crate) fn fail(slot: &Mutex<Option<RunError>>, error: RunError) {
    if let Ok(mut slot) = slot.lock() {
        slot.get_or_insert(error);
    }
}

type Scope<'a> = timely::dataflow::Scope<'a, u64>;
pub(crate) type RecordStream<'a> = timely::dataflow::Stream<'a, u64, Vec<Record>>;
type ModelStream<'a> = timely::dataflow::Stream<'a, u64, Vec<ModelInput>>;

/// Gathers one model's labelled examples on worker 0 and releases them to the sink in
/// event-time order (see [`crate::model`]).
fn model_operator(
    model: String,
    ready: timely::dataflow::Stream<'_, u64, Vec<Ready>>,
    mut release: Release,
    sink: Arc<dyn ModelSink>,
) {
    // everything goes to worker 0; the operator elsewhere only drains its (empty) input
    let gathers = ready.scope().index() == 0;
    ready.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
        timely::dataflow::channels::pact::Exchange::new(|_: &Ready| 0u64),
        &format!("Model({model})"),
        move |_capability, _info| {
            let mut last_frontier: Option<u64> = Some(0);
            let mut finished = false;
            move |(input, frontier), _output| {
                input.for_each(|_cap, data| {
                    for item in data.drain(..) {
                        release.push(item);
                    }
                });
                if finished || !gathers {
                    return;
                }
                let now = frontier.frontier().first().copied();
                if now.is_none() {
                    finished = true;
                    release.release(&model, None, &sink);
                } else if now > last_frontier {
                    last_frontier = now;
                    release.release(&model, now, &sink);
                }
            }
        },
    );
}

fn source_operator<'a>(
    scope: Scope<'a>,
    plan: Arc<SourcePlan>,
    mut parts: Vec<Partition>,
    outputs: &Outputs,
    failure: &Arc<Mutex<Option<RunError>>>,
    live: Option<Live>,
) -> RecordStream<'a> {
    let outputs = outputs.clone();
    let failure = failure.clone();
    let peers = scope.peers() as u64;
    let worker = scope.index();
    source(
        scope,
        &format!("Source({})", plan.name),
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut cap = Some(capability);
            let keep_late = keep_late(&plan);
            // live: the epoch of the last cut, and whether it was the final one (a stop)
            let mut cut_epoch = 0u64;
            let mut final_cut = false;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if let Some(live) = &live {
                    let control = &live.control;
                    let requested = control.requested();
                    if requested > cut_epoch {
                        cut_epoch = requested;
                        final_cut = control.stopping();
                        control.deliver_source(SourcePositions {
                            source: plan.name.clone(),
                            worker,
                            partitions: parts
                                .iter()
                                .map(|p| PartitionPosition {
                                    partition: p.id,
                                    next_offset: p.position(),
                                    clock_ms: p.clock(),
                                })
                                .collect(),
                        });
                        let mut session = output.session(&*c);
                        for to in 0..peers {
                            session.give(Record::Barrier {
                                to,
                                epoch: requested,
                            });
                        }
                    }
                    if !control.resumed(cut_epoch) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    if final_cut {
                        cap = None; // a live stop: no end-of-input, no window closes early
                        return;
                    }
                    if parts.is_empty() {
                        // nothing to read here: do not hold the source's watermark back
                        if *c.time() < u64::MAX - 1 {
                            c.downgrade(&(u64::MAX - 1));
                        }
                        activator.activate_after(Duration::from_millis(5));
                        return;
                    }
                }
                let metrics = &outputs.metrics;
                let (mut accepted, mut late, mut rejected) = (0u64, 0u64, 0u64);
                let mut idle = true;
                {
                    let mut session = output.session(&*c);
                    for part in parts.iter_mut().filter(|p| !p.done) {
                        let result = poll_partition(
                            &plan,
                            part,
                            READ_BATCH_RECORDS,
                            peers as usize,
                            &mut |r| match r {
                                Classified::Accepted(event) => {
                                    accepted += 1;
                                    session.give(Record::Event(event));
                                }
                                Classified::Late(letter) => {
                                    late += 1;
                                    if keep_late {
                                        outputs.dead_letters.write(letter);
                                    }
                                }
                                Classified::Rejected(letter) => {
                                    rejected += 1;
                                    outputs.dead_letters.write(letter);
                                }
                            },
                        );
                        match result {
                            Ok(ReadState::More) => idle = false,
                            Ok(ReadState::Idle | ReadState::Unreachable) => {}
                            Ok(ReadState::End) => idle = false,
                            Err(e) => {
                                part.done = true;
                                fail(&failure, RunError::Input(e));
                            }
                        }
                    }
                }
                PipelineMetrics::add(&metrics.events_total, accepted);
                PipelineMetrics::add(&metrics.late_total, late);
                PipelineMetrics::add(&metrics.rejected_total, rejected);
                let lettered = rejected + if keep_late { late } else { 0 };
                PipelineMetrics::add(&metrics.dead_letters_total, lettered);
                if live.is_none() && parts.iter().all(|p| p.done) {
                    let clock_ms = parts.iter().filter_map(|p| p.clock()).max();
                    let mut session = output.session(&*c);
                    for to in 0..peers {
                        session.give(Record::End { to, clock_ms });
                    }
                    drop(session);
                    cap = None;
                    return;
                }
                if let Some(h) = head(&plan, &parts) {
                    let time = h.saturating_sub(plan.lateness_ms) + 1;
                    if time > *c.time() {
                        c.downgrade(&time);
                    }
                }
                if idle {
                    activator.activate_after(Duration::from_millis(5));
                } else {
                    activator.activate();
                }
            }
        },
    )
}

/// Hands closed windows to the changelog and writes pending vectors to the store (retried;
/// without limit in a live run).
fn emit(
    outputs: &Outputs,
    view: &str,
    closed: &mut Vec<ClosedWindow>,
    writes: &mut Vec<StoreWrite>,
    forever: bool,
    failure: &Mutex<Option<RunError>>,
) {
    if !closed.is_empty() {
        PipelineMetrics::add(&outputs.metrics.closed_windows_total, closed.len() as u64);
        outputs.changelog.write(closed);
        closed.clear();
    }
    if !writes.is_empty() {
        let batch = std::mem::take(writes);
        if let Err(e) = write_with_retry(&*outputs.store, view, batch, &outputs.metrics, forever) {
            fail(failure, RunError::Store(e));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn window_operator<'a>(
    records: &RecordStream<'a>,
    plan: Arc<SourcePlan>,
    view: Arc<ViewPlan>,
    feeds: Vec<ModelFeed>,
    outputs: &Outputs,
    failure: &Arc<Mutex<Option<RunError>>>,
    entities: &Arc<Mutex<HashMap<String, usize>>>,
    live: Option<Live>,
) -> ModelStream<'a> {
    let outputs = outputs.clone();
    let failure = failure.clone();
    let entities = entities.clone();
    let scope = records.scope();
    let worker = scope.index();
    let peers = scope.peers();
    let source_name = plan.name.clone();
    let forever = live.is_some();
    let last_fields: Vec<usize> = view.last.iter().map(|(_, slot)| *slot).collect();
    let name = view.schema.name.clone();
    let lateness = plan.lateness_ms;
    records
        .clone()
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<ModelInput>>, _, _, _>(
            Pipeline,
            &format!("Window({name})"),
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                let mut t_end: Option<u64> = None;
                let mut watermark: Option<u64> = None;
                let restored = live
                    .as_ref()
                    .and_then(|l| l.restore.as_ref())
                    .and_then(|cp| cp.view(&source_name, &name, worker));
                let mut state = match restored {
                    Some(snap) => {
                        t_end = snap.t_end_ms;
                        watermark = snap.watermark_ms;
                        ViewState::restore(view.clone(), &snap.state).unwrap_or_else(|e| {
                            fail(&failure, RunError::Dataflow(e));
                            ViewState::new(view)
                        })
                    }
                    None => ViewState::new(view),
                };
                let mut finished = false;
                // end of input seen (replay): close every window at the end; a live stop has none
                let mut ended = false;
                let mut barriers = (0u64, 0usize);
                let mut last_flush = Instant::now();
                let mut closed: Vec<ClosedWindow> = Vec::new();
                let mut writes: Vec<StoreWrite> = Vec::new();
                let mut rows: Vec<ModelInput> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for record in data.drain(..) {
                            match record {
                                Record::Event(event) => {
                                    t_end = Some(t_end.map_or(event.ts_ms, |t| t.max(event.ts_ms)));
                                    if !feeds.is_empty() {
                                        // as served before the event itself is applied
                                        let served = state.served(&event.entity);
                                        for feed in &feeds {
                                            rows.push(ModelInput::Row(row_of(
                                                feed,
                                                &event,
                                                served.as_deref(),
                                            )));
                                        }
                                    }
                                    state.ingest(&event, &last_fields);
                                }
                                Record::End { clock_ms, .. } => {
                                    ended = true;
                                    if let Some(c) = clock_ms {
                                        t_end = Some(t_end.map_or(c, |t| t.max(c)));
                                    }
                                }
                                Record::Barrier { epoch, .. } => {
                                    if barriers.0 != epoch {
                                        barriers = (epoch, 0);
                                    }
                                    barriers.1 += 1;
                                    if barriers.1 < peers {
                                        continue;
                                    }
                                    // every source worker has cut: flush, then snapshot; at
                                    // a stop every vector is written as of the final head
                                    let all = live.as_ref().is_some_and(|l| l.control.stopping());
                                    state.flush(all, usize::MAX, &mut writes);
                                    emit(
                                        &outputs,
                                        &name,
                                        &mut closed,
                                        &mut writes,
                                        forever,
                                        &failure,
                                    );
                                    let Some(live) = &live else { continue };
                                    match state.snapshot() {
                                        Ok(bytes) => live.control.deliver_view(ViewSnapshot {
                                            source: source_name.clone(),
                                            view: name.clone(),
                                            worker,
                                            watermark_ms: watermark,
                                            t_end_ms: t_end,
                                            state: bytes,
                                        }),
                                        Err(e) => fail(
                                            &failure,
                                            RunError::Dataflow(format!(
                                                "cannot encode view `{name}` state: {e}"
                                            )),
                                        ),
                                    }
                                }
                            }
                        }
                        if !rows.is_empty() {
                            output.session(&cap).give_iterator(rows.drain(..));
                        }
                    });
                    if finished {
                        return;
                    }
                    let frontier = frontier.frontier();
                    let flush_all = match frontier.first() {
                        None if !ended => {
                            finished = true; // a live stop: the checkpoint flushed everything
                            false
                        }
                        None => {
                            finished = true;
                            if let Some(t) = t_end {
                                state.advance(t, t, &mut closed, &mut writes);
                                state.sweep_now(t, &mut writes);
                            }
                            true
                        }
                        Some(&time) if time > 0 && watermark.is_none_or(|w| time - 1 > w) => {
                            let w = time - 1;
                            watermark = Some(w);
                            state.advance(w.saturating_add(lateness), w, &mut closed, &mut writes);
                            false
                        }
                        Some(_) => false,
                    };
                    let due = last_flush.elapsed() >= outputs.flush_interval;
                    // a backlog of keys that only time changed is written a slice per
                    // activation, so the input (and its fresh keys) is read in between
                    let backlog = state.has_backlog();
                    if flush_all || due || backlog {
                        state.flush(flush_all, TIME_WRITES_PER_ACTIVATION, &mut writes);
                        if flush_all || due {
                            last_flush = Instant::now();
                        }
                    }
                    if state.has_backlog() {
                        activator.activate();
                    } else if state.has_dirty() {
                        activator.activate_after(outputs.flush_interval);
                    }
                    emit(&outputs, &name, &mut closed, &mut writes, forever, &failure);
                    if let Some(h) = state.head() {
                        outputs
                            .metrics
                            .head_ms
                            .store(i64::try_from(h).unwrap_or(i64::MAX), Ordering::Relaxed);
                        if let Some(w) = watermark {
                            outputs
                                .metrics
                                .watermark_ms
                                .store(i64::try_from(w).unwrap_or(i64::MAX), Ordering::Relaxed);
                        }
                    }
                    if finished {
                        if let Ok(mut e) = entities.lock() {
                            *e.entry(name.clone()).or_insert(0) += state.key_count();
                        }
                    }
                }
            },
        )
}
