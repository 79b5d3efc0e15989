//! Per-key window state of one feature view on one worker, driven by the head and watermark.
//!
//! Guarantees (the README's window semantics):
//! - continuous window `L`: the value as of head `h` aggregates the key's events with time in
//!   `(h - L, h]`; an event enters when `h` reaches its time and leaves when `h` reaches
//!   time + L (an insertion and a scheduled retraction);
//! - hopping window `(L, S)`: windows `[k*S, k*S + L)` close, final, when the watermark `w`
//!   reaches their end; each closed window in which the key had an event is reported once, and
//!   the online value is the most recently closed window (0/null when the key had no event in it);
//! - `last`: the latest event by event time, ties to the later arrival;
//! - ttl: a key whose latest event is `ttl` or more older than `h` is removed (state and store).
//!
//! State for expired windows is dropped as the head moves, so memory is bounded by the events
//! inside the longest window plus one entry per live key.
//!
//! A view's state on one worker can be written out ([`ViewState::snapshot`]) and read back
//! bit-exactly (postcard encoding: every `f64` keeps its bits), which is what checkpoints hold.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use freshet_core::event::{Decoded, Scalar};
use freshet_core::store::{FeatureValue, FeatureVector, StoreWrite};
use serde::{Deserialize, Serialize};

use crate::agg::{read, scalar_value, Acc, Val};
use crate::plan::{Group, ViewPlan};

/// A closed hopping/tumbling window of one entity and feature: a changelog record.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// View name.
    pub view: Arc<str>,
    /// Entity key.
    pub entity: Arc<str>,
    /// Feature name.
    pub feature: Arc<str>,
    /// Window start, epoch ms (inclusive).
    pub window_start_ms: u64,
    /// Window end, epoch ms (exclusive).
    pub window_end_ms: u64,
    /// Final value of the feature over the window.
    pub value: FeatureValue,
}

/// Ends of the hopping windows `[k*slide, k*slide + length)` that contain time `ts`: the
/// windows ending after `ts`'s pane and at most `length` after its start.
pub fn window_ends(ts: u64, length: u64, slide: u64) -> impl Iterator<Item = u64> {
    let pane = ts - ts % slide;
    (1..=length / slide).map(move |i| pane + i * slide)
}

/// Events of one key in one continuous window, sorted by event time.
#[derive(Debug, Serialize, Deserialize)]
struct ContState {
    times: VecDeque<u64>,
    /// `stride` values per event, parallel to `times`.
    values: VecDeque<Val>,
    /// The first `active` events are inside the window; the rest are ahead of the head.
    active: usize,
    accs: Vec<Acc>,
    /// Due time of the newest heap entry pushed for this key (u64::MAX: none).
    scheduled: u64,
}

impl ContState {
    fn new(group: &Group) -> Self {
        Self {
            times: VecDeque::new(),
            values: VecDeque::new(),
            active: 0,
            accs: group.accs.iter().map(|(k, _)| Acc::new(*k)).collect(),
            scheduled: u64::MAX,
        }
    }

    fn apply(&mut self, group: &Group, index: usize, insert: bool) {
        let stride = group.fields.len();
        for (acc, (_, field)) in self.accs.iter_mut().zip(&group.accs) {
            let v = self.values[index * stride + field];
            if insert {
                acc.insert(v);
            } else {
                acc.remove(v);
            }
        }
    }

    fn insert(&mut self, group: &Group, ts: u64, row: &[Val], head: Option<u64>) {
        let length = group.length_ms;
        if head.is_some_and(|h| ts.saturating_add(length) <= h) {
            return; // already outside the window: it would enter and leave at once
        }
        let stride = group.fields.len();
        // most events arrive in time order: append without searching
        let pos = if self.times.back().is_none_or(|last| *last <= ts) {
            self.times.push_back(ts);
            self.values.extend(row.iter().copied());
            self.times.len() - 1
        } else {
            let pos = self.times.partition_point(|t| *t <= ts);
            self.times.insert(pos, ts);
            for (i, v) in row.iter().enumerate() {
                self.values.insert(pos * stride + i, *v);
            }
            pos
        };
        if head.is_some_and(|h| ts <= h) {
            self.apply(group, pos, true);
            self.active += 1;
        }
    }

    /// Moves the window to head `h`; returns the next head at which it changes.
    fn advance(&mut self, group: &Group, h: u64) -> u64 {
        while self.active < self.times.len() && self.times[self.active] <= h {
            self.apply(group, self.active, true);
            self.active += 1;
        }
        let stride = group.fields.len();
        while self.active > 0 && self.times[0].saturating_add(group.length_ms) <= h {
            self.apply(group, 0, false);
            self.times.pop_front();
            self.values.drain(..stride);
            self.active -= 1;
        }
        self.next_due(group)
    }

    fn next_due(&self, group: &Group) -> u64 {
        let activate = self.times.get(self.active).copied().unwrap_or(u64::MAX);
        let expire = if self.active > 0 {
            self.times[0].saturating_add(group.length_ms)
        } else {
            u64::MAX
        };
        activate.min(expire)
    }
}

/// Panes of one key in one hopping-window group.
#[derive(Debug, Serialize, Deserialize)]
struct HopState {
    /// (pane start, events, accumulators), sorted by start.
    panes: VecDeque<(u64, u64, Vec<Acc>)>,
    /// End of the window `values` belong to (0: none).
    value_end: u64,
    #[serde(with = "stored_values")]
    values: Vec<FeatureValue>,
    /// Largest window end already evaluated for this key.
    evaluated_end: u64,
}

/// Everything one worker holds for one key of one view.
#[derive(Debug, Serialize, Deserialize)]
struct KeyState {
    entity: Arc<str>,
    latest_ts: u64,
    last: Option<(u64, u64, Vec<Scalar>)>,
    cont: Vec<ContState>,
    hop: Vec<HopState>,
    dirty: bool,
    /// The ttl removed the key from the store; its window state stays until it drains, so
    /// windows still open are computed and reported as if the key had stayed.
    expired: bool,
}

/// All state of one view on one worker.
pub(crate) struct ViewState {
    plan: Arc<ViewPlan>,
    view: Arc<str>,
    keys: Vec<Option<KeyState>>,
    index: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
    /// Keys to write because time moved (windows retracted, closed, ttl), oldest first: written
    /// [`ViewState::flush`]'s `limit` at a time, so that a window closing over every key does
    /// not hold back the writes of fresh events.
    dirty: Vec<u32>,
    /// Keys to write because an event changed them: written whole at every flush.
    fresh: Vec<u32>,
    /// Per slot: whether the key is in `fresh` (not checkpointed: rebuilt empty).
    in_fresh: Vec<bool>,
    /// Per continuous group: (due head, key) entries.
    due: Vec<BinaryHeap<Reverse<(u64, u32)>>>,
    /// Per hopping group: window end -> keys to evaluate when it closes.
    closing: Vec<BTreeMap<u64, Vec<u32>>>,
    /// Per hopping group: largest window end closed so far.
    closed_end: Vec<Option<u64>>,
    head: Option<u64>,
    arrivals: u64,
    next_sweep: u64,
    row: Vec<Val>,
    /// Per hopping group: accumulators reused to merge the panes of a closing window.
    scratch: Vec<Vec<Acc>>,
}

impl ViewState {
    pub(crate) fn new(plan: Arc<ViewPlan>) -> Self {
        Self {
            view: Arc::from(plan.schema.name.as_str()),
            due: plan.continuous.iter().map(|_| BinaryHeap::new()).collect(),
            closing: plan.hopping.iter().map(|_| BTreeMap::new()).collect(),
            closed_end: plan.hopping.iter().map(|_| None).collect(),
            scratch: plan
                .hopping
                .iter()
                .map(|g| g.accs.iter().map(|(k, _)| Acc::new(*k)).collect())
                .collect(),
            plan,
            keys: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            fresh: Vec::new(),
            in_fresh: Vec::new(),
            head: None,
            arrivals: 0,
            next_sweep: 0,
            row: Vec::new(),
        }
    }

    /// Number of keys held in the store (not removed by the ttl).
    pub(crate) fn key_count(&self) -> usize {
        self.keys.iter().flatten().filter(|k| !k.expired).count()
    }

    fn key_slot(&mut self, entity: &str) -> u32 {
        if let Some(i) = self.index.get(entity) {
            return *i;
        }
        let plan = &self.plan;
        let state = KeyState {
            entity: Arc::from(entity),
            latest_ts: 0,
            last: None,
            cont: plan.continuous.iter().map(ContState::new).collect(),
            hop: plan
                .hopping
                .iter()
                .map(|g| HopState {
                    panes: VecDeque::new(),
                    value_end: 0,
                    values: vec![FeatureValue::Null; g.outputs.len()],
                    evaluated_end: 0,
                })
                .collect(),
            dirty: false,
            expired: false,
        };
        let entity = state.entity.clone();
        let slot = match self.free.pop() {
            Some(i) => {
                self.keys[i as usize] = Some(state);
                i
            }
            None => {
                self.keys.push(Some(state));
                u32::try_from(self.keys.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(entity, slot);
        slot
    }

    /// Marks a key changed by an event: written at the next flush, ahead of the keys that time
    /// changed.
    fn mark_fresh(&mut self, slot: u32) {
        let Some(Some(k)) = self.keys.get_mut(slot as usize) else {
            return;
        };
        k.dirty = true;
        let i = slot as usize;
        if self.in_fresh.len() <= i {
            self.in_fresh.resize(i + 1, false);
        }
        if !self.in_fresh[i] {
            self.in_fresh[i] = true;
            self.fresh.push(slot);
        }
    }

    /// Marks a key changed by time (a window retracted or closed, the ttl).
    fn mark_dirty(&mut self, slot: u32) {
        if let Some(Some(k)) = self.keys.get_mut(slot as usize) {
            if !k.dirty {
                k.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Applies one accepted (not late) event.
    pub(crate) fn ingest(&mut self, event: &Decoded, last_fields: &[usize]) {
        let slot = self.key_slot(&event.entity);
        self.arrivals += 1;
        let arrival = self.arrivals;
        let ts = event.ts_ms;
        let head = self.head;
        let plan = self.plan.clone();
        let Some(Some(key)) = self.keys.get_mut(slot as usize) else {
            return;
        };
        key.latest_ts = key.latest_ts.max(ts);
        key.expired = false;
        if !last_fields.is_empty() && key.last.as_ref().is_none_or(|(t, _, _)| ts >= *t) {
            let values = last_fields
                .iter()
                .map(|s| event.values[*s].clone())
                .collect();
            key.last = Some((ts, arrival, values));
        }
        for (g, group) in plan.continuous.iter().enumerate() {
            self.row.clear();
            self.row
                .extend(group.fields.iter().map(|s| Val::of(&event.values[*s])));
            let state = &mut key.cont[g];
            state.insert(group, ts, &self.row, head);
            let due = state.next_due(group);
            if due < state.scheduled {
                state.scheduled = due;
                self.due[g].push(Reverse((due, slot)));
            }
        }
        for (g, group) in plan.hopping.iter().enumerate() {
            let (length, slide) = (group.length_ms, group.slide_ms.unwrap_or(group.length_ms));
            let pane = ts - ts % slide;
            let closed = self.closed_end[g].unwrap_or(0);
            if pane + length <= closed {
                continue; // every window holding this event has closed already
            }
            let state = &mut key.hop[g];
            // events arrive nearly in time order: the newest pane is the usual target
            let pos = match state.panes.back() {
                Some((last, _, _)) if *last < pane => state.panes.len(),
                Some((last, _, _)) if *last == pane => state.panes.len() - 1,
                _ => state.panes.partition_point(|(start, _, _)| *start < pane),
            };
            if state
                .panes
                .get(pos)
                .is_none_or(|(start, _, _)| *start != pane)
            {
                let accs = group.accs.iter().map(|(k, _)| Acc::new(*k)).collect();
                state.panes.insert(pos, (pane, 0, accs));
                for end in window_ends(ts, length, slide).filter(|end| *end > closed) {
                    self.closing[g].entry(end).or_default().push(slot);
                }
            }
            let (_, n, accs) = &mut state.panes[pos];
            *n += 1;
            for (acc, (_, field)) in accs.iter_mut().zip(&group.accs) {
                acc.insert(Val::of(&event.values[group.fields[*field]]));
            }
        }
        self.mark_fresh(slot);
    }

    /// Moves the head to `h` and the watermark to `w`: retracts and activates continuous-window
    /// events, closes hopping windows (reporting them to `closed`) and applies the ttl.
    pub(crate) fn advance(
        &mut self,
        h: u64,
        w: u64,
        closed: &mut Vec<ClosedWindow>,
        writes: &mut Vec<StoreWrite>,
    ) {
        self.head = Some(self.head.map_or(h, |old| old.max(h)));
        let plan = self.plan.clone();
        for (g, group) in plan.continuous.iter().enumerate() {
            while let Some(Reverse((due, slot))) = self.due[g].peek().copied() {
                if due > h {
                    break;
                }
                self.due[g].pop();
                let Some(Some(key)) = self.keys.get_mut(slot as usize) else {
                    continue;
                };
                let state = &mut key.cont[g];
                if state.scheduled != due {
                    continue; // superseded by an earlier entry
                }
                let next = state.advance(group, h);
                state.scheduled = next;
                if next != u64::MAX {
                    self.due[g].push(Reverse((next, slot)));
                }
                self.mark_dirty(slot);
            }
        }
        for (g, group) in plan.hopping.iter().enumerate() {
            let slide = group.slide_ms.unwrap_or(group.length_ms);
            let new_closed = w - w % slide;
            if self.closed_end[g].is_some_and(|c| c >= new_closed) {
                continue;
            }
            while let Some(entry) = self.closing[g].first_entry() {
                let end = *entry.key();
                if end > new_closed {
                    break;
                }
                let slots = entry.remove();
                for slot in slots {
                    self.close_window(g, group, slot, end, closed);
                }
            }
            self.closed_end[g] = Some(new_closed);
        }
        if let Some(ttl) = plan.schema.ttl_ms {
            if h >= self.next_sweep {
                self.sweep_ttl(h, ttl, writes);
                self.next_sweep = h.saturating_add((ttl / 16).clamp(1_000, 60_000));
            }
        }
    }

    fn close_window(
        &mut self,
        g: usize,
        group: &Group,
        slot: u32,
        end: u64,
        closed: &mut Vec<ClosedWindow>,
    ) {
        let Some(Some(key)) = self.keys.get_mut(slot as usize) else {
            return;
        };
        let state = &mut key.hop[g];
        if state.evaluated_end >= end {
            return;
        }
        state.evaluated_end = end;
        let (length, slide) = (group.length_ms, group.slide_ms.unwrap_or(group.length_ms));
        let start = end.saturating_sub(length);
        let mut n = 0;
        let accs = &mut self.scratch[g];
        accs.iter_mut().for_each(Acc::clear);
        for (pane, count, pane_accs) in &state.panes {
            if *pane >= start && *pane < end {
                n += count;
                for (a, b) in accs.iter_mut().zip(pane_accs) {
                    a.merge(b);
                }
            }
        }
        let next_start = (end + slide).saturating_sub(length);
        while state.panes.front().is_some_and(|(p, _, _)| *p < next_start) {
            state.panes.pop_front();
        }
        let had_value = state.value_end != 0;
        if n > 0 {
            for (j, (position, output)) in group.outputs.iter().enumerate() {
                let value = read(*output, n, accs);
                closed.push(ClosedWindow {
                    view: self.view.clone(),
                    entity: key.entity.clone(),
                    feature: self.plan.feature_names[*position].clone(),
                    window_start_ms: start,
                    window_end_ms: end,
                    value: value.clone(),
                });
                state.values[j] = value;
            }
            state.value_end = end;
            // re-evaluate at the next close, where the value may become empty
            self.closing[g].entry(end + slide).or_default().push(slot);
        } else {
            state.value_end = 0;
        }
        if n > 0 || had_value {
            self.mark_dirty(slot);
        }
    }

    /// Removes keys whose latest event is `ttl` or more older than `h` from the store, and drops
    /// their state once no window holds their events any more.
    fn sweep_ttl(&mut self, h: u64, ttl: u64, writes: &mut Vec<StoreWrite>) {
        let mut drained = Vec::new();
        for (slot, key) in self.keys.iter_mut().enumerate() {
            let Some(key) = key else { continue };
            if h.saturating_sub(key.latest_ts) < ttl {
                continue;
            }
            if !key.expired {
                key.expired = true;
                writes.push(StoreWrite::Delete {
                    entity: key.entity.to_string(),
                });
            }
            let empty = key.cont.iter().all(|c| c.times.is_empty())
                && key.hop.iter().all(|p| p.panes.is_empty());
            if empty {
                drained.push(slot as u32);
            }
        }
        for slot in drained {
            if let Some(key) = self.keys[slot as usize].take() {
                self.index.remove(&key.entity);
                self.free.push(slot);
            }
        }
    }

    fn vector(&self, key: &KeyState, as_of_ms: u64) -> FeatureVector {
        let plan = &self.plan;
        let mut values = vec![FeatureValue::Null; plan.schema.features.len()];
        for (group, state) in plan.continuous.iter().zip(&key.cont) {
            for (position, output) in &group.outputs {
                values[*position] = read(*output, state.active as u64, &state.accs);
            }
        }
        for (g, (group, state)) in plan.hopping.iter().zip(&key.hop).enumerate() {
            let current = state.value_end != 0 && Some(state.value_end) == self.closed_end[g];
            for (j, (position, output)) in group.outputs.iter().enumerate() {
                values[*position] = if current {
                    state.values[j].clone()
                } else {
                    read(*output, 0, &[])
                };
            }
        }
        if let Some((_, _, last)) = &key.last {
            for ((position, _), scalar) in plan.last.iter().zip(last) {
                values[*position] = scalar_value(scalar);
            }
        }
        FeatureVector { as_of_ms, values }
    }

    /// Writes the changed keys as of the current head (with `all`, every key): every key an
    /// event changed, and at most `limit` of those only time changed, oldest first.
    pub(crate) fn flush(&mut self, all: bool, limit: usize, writes: &mut Vec<StoreWrite>) {
        let Some(h) = self.head else { return };
        let slots: Vec<u32> = if all {
            self.dirty.clear();
            self.fresh.clear();
            self.in_fresh.clear();
            (0..self.keys.len() as u32).collect()
        } else {
            let mut slots = std::mem::take(&mut self.fresh);
            for slot in &slots {
                if let Some(flag) = self.in_fresh.get_mut(*slot as usize) {
                    *flag = false;
                }
            }
            let n = limit.min(self.dirty.len());
            slots.extend(self.dirty.drain(..n));
            slots
        };
        for slot in slots {
            let Some(Some(key)) = self.keys.get(slot as usize) else {
                continue;
            };
            // written already (a key can wait in both lists), or removed by the ttl
            if !key.dirty && !all {
                continue;
            }
            if !key.expired {
                writes.push(StoreWrite::Upsert {
                    entity: key.entity.to_string(),
                    vector: self.vector(key, h),
                });
            }
            if let Some(Some(key)) = self.keys.get_mut(slot as usize) {
                key.dirty = false;
            }
        }
    }

    /// Whether keys that only time changed are still waiting to be written.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// The state of one view on one worker as a checkpoint holds it (plan excluded).
type SnapshotRef<'a> = (
    &'a Vec<Option<KeyState>>,
    &'a Vec<u32>,
    &'a Vec<u32>,
    &'a Vec<BinaryHeap<Reverse<(u64, u32)>>>,
    &'a Vec<BTreeMap<u64, Vec<u32>>>,
    &'a Vec<Option<u64>>,
    Option<u64>,
    u64,
    u64,
);

type SnapshotOwned = (
    Vec<Option<KeyState>>,
    Vec<u32>,
    Vec<u32>,
    Vec<BinaryHeap<Reverse<(u64, u32)>>>,
    Vec<BTreeMap<u64, Vec<u32>>>,
    Vec<Option<u64>>,
    Option<u64>,
    u64,
    u64,
);

impl ViewState {
    /// Encodes the state (not the plan) for a checkpoint.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>, postcard::Error> {
        // one list of the keys still to write (a restore writes them all alike)
        let dirty: Vec<u32> = self.fresh.iter().chain(&self.dirty).copied().collect();
        let data: SnapshotRef<'_> = (
            &self.keys,
            &self.free,
            &dirty,
            &self.due,
            &self.closing,
            &self.closed_end,
            self.head,
            self.arrivals,
            self.next_sweep,
        );
        postcard::to_allocvec(&data)
    }

    /// Rebuilds a state written by [`ViewState::snapshot`] under the same plan. Fails when the
    /// bytes do not decode or do not fit the plan's window groups (the pipeline changed).
    pub(crate) fn restore(plan: Arc<ViewPlan>, bytes: &[u8]) -> Result<Self, String> {
        let (keys, free, dirty, due, closing, closed_end, head, arrivals, next_sweep): SnapshotOwned =
            postcard::from_bytes(bytes).map_err(|e| format!("cannot decode view state: {e}"))?;
        let mut state = Self::new(plan);
        let fits = due.len() == state.due.len()
            && closing.len() == state.closing.len()
            && keys.iter().flatten().all(|k| {
                k.cont.len() == state.plan.continuous.len()
                    && k.hop.len() == state.plan.hopping.len()
            });
        if !fits {
            return Err(format!(
                "view `{}`: the checkpoint was written for different window groups",
                state.view
            ));
        }
        state.index = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((k.as_ref()?.entity.clone(), u32::try_from(i).ok()?)))
            .collect();
        state.keys = keys;
        state.free = free;
        state.dirty = dirty;
        state.due = due;
        state.closing = closing;
        state.closed_end = closed_end;
        state.head = head;
        state.arrivals = arrivals;
        state.next_sweep = next_sweep;
        Ok(state)
    }
}

/// [`FeatureValue`] in a tagged form that a non-self-describing encoding can read back.
mod stored_values {
    use std::sync::Arc;

    use freshet_core::store::FeatureValue;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    enum Stored {
        Null,
        Int(i64),
        Float(f64),
        Bool(bool),
        Str(Box<str>),
    }

    pub(super) fn serialize<S: Serializer>(
        values: &[FeatureValue],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let stored: Vec<Stored> = values
            .iter()
            .map(|v| match v {
                FeatureValue::Null => Stored::Null,
                FeatureValue::Int(i) => Stored::Int(*i),
                FeatureValue::Float(f) => Stored::Float(*f),
                FeatureValue::Bool(b) => Stored::Bool(*b),
                FeatureValue::Str(s) => Stored::Str(Box::from(&**s)),
            })
            .collect();
        stored.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<FeatureValue>, D::Error> {
        let stored = Vec::<Stored>::deserialize(deserializer)?;
        Ok(stored
            .into_iter()
            .map(|v| match v {
                Stored::Null => FeatureValue::Null,
                Stored::Int(i) => FeatureValue::Int(i),
                Stored::Float(f) => FeatureValue::Float(f),
                Stored::Bool(b) => FeatureValue::Bool(b),
                Stored::Str(s) => FeatureValue::Str(Arc::from(s)),
            })
            .collect())
    }
}

impl ViewState {
    /// Applies the ttl to every key now (end of input).
    pub(crate) fn sweep_now(&mut self, h: u64, writes: &mut Vec<StoreWrite>) {
        if let Some(ttl) = self.plan.schema.ttl_ms {
            self.sweep_ttl(h, ttl, writes);
        }
    }

    /// The vector of `entity` as it stands now (as served), if the key is held.
    pub(crate) fn served(&self, entity: &str) -> Option<Vec<FeatureValue>> {
        let slot = *self.index.get(entity)?;
        let key = self.keys.get(slot as usize)?.as_ref()?;
        Some(self.vector(key, self.head.unwrap_or(0)).values)
    }

    /// Whether some key changed since the last flush.
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.fresh.is_empty()
    }

    /// The current head, if any.
    pub(crate) fn head(&self) -> Option<u64> {
        self.head
    }
}

#[cfg(test)]
mod tests {
    use super::window_ends;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn window_ends_are_exactly_the_windows_holding_the_event(
            ts in 0u64..10_000_000,
            slide in 1u64..5_000,
            factor in 1u64..12,
        ) {
            let length = slide * factor;
            let got: Vec<u64> = window_ends(ts, length, slide).collect();
            // brute force over every window start k*slide near ts; near the epoch some windows
            // holding ts start before 0 (k < 0), so this counts in signed integers
            let mut want = Vec::new();
            let (ts_i, length_i, slide_i) = (ts as i64, length as i64, slide as i64);
            let first_k = (ts_i - length_i).div_euclid(slide_i);
            for k in first_k..=ts_i / slide_i + 1 {
                let (start, end) = (k * slide_i, k * slide_i + length_i);
                if start <= ts_i && ts_i < end {
                    want.push(end as u64);
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
