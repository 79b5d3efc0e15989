//! The versions each served model holds and the traffic policy that picks among them.
//!
//! Requests read an immutable [`Routing`] snapshot with one atomic load and keep it (and so the
//! versions in it) alive until they answer: a version change never fails or blocks a request.
//! The snapshot is rebuilt, under a mutex that requests never take on the fast path, when the
//! scorer reports a new version or the policy changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use freshet_core::serving::{
    ModelDescription, ModelVersion, PolicyKeeper, Scorer, ServingStart, TrafficPolicy,
};

use super::metrics::ModelStats;
use super::predict::InputPlan;

/// Recent versions a model keeps besides the one its policy names: the last this many versions
/// seen (published and observed by a request or the 100 ms observer), so `/versions/{v}`,
/// pins, canaries, shadows and rollbacks can name them.
pub const RECENT_VERSIONS: usize = 16;

/// Every served model, by name.
pub(crate) struct ModelBook {
    models: BTreeMap<String, Arc<ServedModel>>,
}

impl ModelBook {
    /// The models of `scorer`, each starting as `starts` says (default: `latest`, no loaded
    /// versions); policy changes go to `keeper` first when there is one. Fails when a start
    /// policy names a version the model does not hold.
    pub(crate) fn new(
        scorer: &Arc<dyn Scorer>,
        starts: &HashMap<String, ServingStart>,
        keeper: Option<&Arc<dyn PolicyKeeper>>,
    ) -> Result<Self, String> {
        let models = scorer
            .models()
            .into_iter()
            .map(|description| {
                let name = description.name.clone();
                let start = starts.get(&name).cloned().unwrap_or_default();
                let model =
                    ServedModel::new(description, Arc::clone(scorer), start, keeper.cloned())?;
                Ok((name, Arc::new(model)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { models })
    }

    /// One model.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ServedModel>> {
        self.models.get(name)
    }

    /// Every model, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.models.values()
    }

    /// Records the current version of every model (called periodically, so versions published
    /// between requests are held too).
    pub(crate) fn observe_all(&self) {
        for model in self.models.values() {
            model.routing();
        }
    }
}

/// Which versions serve, as of one moment. Immutable; requests share it.
pub(crate) struct Routing {
    /// The policy.
    pub(crate) policy: TrafficPolicy,
    /// The current version, `None` before the first publication.
    pub(crate) latest: Option<Arc<dyn ModelVersion>>,
    /// The version the policy names (pin, canary or shadow).
    named: Option<Arc<dyn ModelVersion>>,
    /// Every held version, ascending, distinct.
    held: Vec<Arc<dyn ModelVersion>>,
}

impl Routing {
    /// The version that serves a request in canary bucket `bucket`.
    pub(crate) fn for_bucket(&self, bucket: u32) -> Option<&Arc<dyn ModelVersion>> {
        if self.policy.serves_named_version(bucket) {
            self.named.as_ref().or(self.latest.as_ref())
        } else {
            self.latest.as_ref()
        }
    }

    /// The version that scores in the shadow, if the policy is `shadow`.
    pub(crate) fn shadow(&self) -> Option<&Arc<dyn ModelVersion>> {
        self.policy.shadow().and(self.named.as_ref())
    }

    /// A held version by number.
    pub(crate) fn version(&self, version: u64) -> Option<&Arc<dyn ModelVersion>> {
        self.held
            .binary_search_by_key(&version, |m| m.version())
            .ok()
            .map(|i| &self.held[i])
    }

    /// The held version numbers, ascending.
    pub(crate) fn held(&self) -> Vec<u64> {
        self.held.iter().map(|m| m.version()).collect()
    }

    /// The latest version number.
    pub(crate) fn latest_version(&self) -> Option<u64> {
        self.latest.as_ref().map(|m| m.version())
    }
}

/// What a policy change could not do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyError {
    #[error("invalid traffic policy: {0}")]
    Invalid(String),
    #[error("model `{model}` does not hold version {version} (held versions: {held})")]
    NotHeld {
        model: String,
        version: u64,
        held: String,
    },
    #[error("model `{model}` holds no version older than {version} to roll back to")]
    NothingToRollBackTo { model: String, version: u64 },
    #[error("model `{0}` has no published version yet")]
    NoVersion(String),
    #[error("model `{model}`: the policy could not be kept for restarts, so it was not changed: {reason}")]
    NotKept { model: String, reason: String },
}

/// The versions a model holds, changed under [`ServedModel::history`].
#[derive(Default)]
struct History {
    latest: Option<Arc<dyn ModelVersion>>,
    /// The last [`RECENT_VERSIONS`] versions seen, ascending, distinct.
    recent: Vec<Arc<dyn ModelVersion>>,
    /// Versions loaded at start, held for the process's life.
    loaded: Vec<Arc<dyn ModelVersion>>,
    policy: TrafficPolicy,
    named: Option<Arc<dyn ModelVersion>>,
}

impl History {
    fn observe(&mut self, current: Arc<dyn ModelVersion>) {
        let version = current.version();
        if let Err(at) = self.recent.binary_search_by_key(&version, |m| m.version()) {
            self.recent.insert(at, Arc::clone(&current));
            if self.recent.len() > RECENT_VERSIONS {
                self.recent.remove(0);
            }
        }
        self.latest = Some(current);
    }

    fn find(&self, version: u64) -> Option<Arc<dyn ModelVersion>> {
        self.held().into_iter().find(|m| m.version() == version)
    }

    fn held(&self) -> Vec<Arc<dyn ModelVersion>> {
        let mut held: Vec<Arc<dyn ModelVersion>> = self.recent.clone();
        held.extend(self.loaded.iter().cloned());
        held.extend(self.latest.iter().cloned());
        held.extend(self.named.iter().cloned());
        held.sort_by_key(|m| m.version());
        held.dedup_by_key(|m| m.version());
        held
    }

    fn routing(&self) -> Routing {
        Routing {
            policy: self.policy,
            latest: self.latest.clone(),
            named: self.named.clone(),
            held: self.held(),
        }
    }
}

/// One served model: what it reads, its versions and policy, and its serving statistics.
pub(crate) struct ServedModel {
    /// Inputs and outputs.
    pub(crate) description: ModelDescription,
    /// How a request's entities and fields become input rows.
    pub(crate) plan: InputPlan,
    /// Latencies, row counts, missing inputs and shadow comparisons.
    pub(crate) stats: ModelStats,
    scorer: Arc<dyn Scorer>,
    routing: ArcSwap<Routing>,
    history: Mutex<History>,
    /// Spreads V2 requests without an `id` over a canary.
    requests: AtomicU64,
    /// Told of every policy change first.
    keeper: Option<Arc<dyn PolicyKeeper>>,
}

impl ServedModel {
    fn new(
        description: ModelDescription,
        scorer: Arc<dyn Scorer>,
        start: ServingStart,
        keeper: Option<Arc<dyn PolicyKeeper>>,
    ) -> Result<Self, String> {
        let plan = InputPlan::new(&description);
        let stats = ModelStats::new(&description);
        let mut loaded = start.versions;
        loaded.sort_by_key(|m| m.version());
        loaded.dedup_by_key(|m| m.version());
        let history = History {
            loaded,
            ..History::default()
        };
        let model = Self {
            description,
            plan,
            stats,
            scorer,
            routing: ArcSwap::from_pointee(history.routing()),
            history: Mutex::new(history),
            requests: AtomicU64::new(0),
            keeper,
        };
        model.refresh();
        if start.policy != TrafficPolicy::Latest {
            // the start policy is what the keeper already holds (or the pipeline file's)
            model
                .change_policy(start.policy, false)
                .map_err(|e| e.to_string())?;
        }
        Ok(model)
    }

    /// The model's name.
    pub(crate) fn name(&self) -> &str {
        &self.description.name
    }

    /// The routing now: the snapshot, rebuilt first when the scorer has a newer version.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        let routing = self.routing.load_full();
        if self.scorer.latest_version(self.name()) == routing.latest_version() {
            routing
        } else {
            self.refresh()
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh(&self) -> Arc<Routing> {
        let mut history = self.history();
        self.observe_current(&mut history);
        self.publish(&history)
    }

    fn observe_current(&self, history: &mut History) {
        if let Some(current) = self.scorer.current(self.name()) {
            history.observe(current);
        }
    }

    fn publish(&self, history: &History) -> Arc<Routing> {
        let routing = Arc::new(history.routing());
        self.routing.store(Arc::clone(&routing));
        let held = routing.held();
        self.stats
            .retain_versions(|v| held.binary_search(&v).is_ok());
        routing
    }

    /// Sets the policy; the version it names must be held. Returns the previous policy and the
    /// new routing.
    pub(crate) fn set_policy(
        &self,
        policy: TrafficPolicy,
    ) -> Result<(TrafficPolicy, Arc<Routing>), PolicyError> {
        self.change_policy(policy, true)
    }

    /// [`ServedModel::set_policy`], telling the keeper first when `keep`.
    fn change_policy(
        &self,
        policy: TrafficPolicy,
        keep: bool,
    ) -> Result<(TrafficPolicy, Arc<Routing>), PolicyError> {
        policy.validate().map_err(PolicyError::Invalid)?;
        let mut history = self.history();
        self.observe_current(&mut history);
        let named = match policy.version() {
            None => None,
            Some(version) => Some(history.find(version).ok_or_else(|| {
                PolicyError::NotHeld {
                    model: self.name().to_owned(),
                    version,
                    held: version_list(
                        &history
                            .held()
                            .iter()
                            .map(|m| m.version())
                            .collect::<Vec<_>>(),
                    ),
                }
            })?),
        };
        if let Some(keeper) = self.keeper.as_ref().filter(|_| keep) {
            keeper
                .keep(self.name(), policy, named.as_ref())
                .map_err(|reason| PolicyError::NotKept {
                    model: self.name().to_owned(),
                    reason,
                })?;
        }
        let previous = std::mem::replace(&mut history.policy, policy);
        history.named = named;
        let routing = self.publish(&history);
        Ok((previous, routing))
    }

    /// Pins the newest held version older than the one serving now (the pinned one under a pin,
    /// else the latest).
    pub(crate) fn roll_back(&self) -> Result<(TrafficPolicy, Arc<Routing>), PolicyError> {
        let target = {
            let mut history = self.history();
            self.observe_current(&mut history);
            let serving = match history.policy {
                TrafficPolicy::Pin(v) => v,
                _ => history
                    .latest
                    .as_ref()
                    .map(|m| m.version())
                    .ok_or_else(|| PolicyError::NoVersion(self.name().to_owned()))?,
            };
            history
                .held()
                .iter()
                .map(|m| m.version())
                .filter(|&v| v < serving)
                .max()
                .ok_or_else(|| PolicyError::NothingToRollBackTo {
                    model: self.name().to_owned(),
                    version: serving,
                })?
        };
        self.set_policy(TrafficPolicy::Pin(target))
    }

    /// A canary bucket for a request without an entity or id: successive requests spread
    /// evenly over the buckets.
    pub(crate) fn next_request_bucket(&self) -> u32 {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // splitmix64's finaliser: consecutive counters land far apart
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        u32::try_from(z % u64::from(freshet_core::serving::CANARY_BUCKETS)).unwrap_or(0)
    }
}

/// `1, 2, 5` (or `none`).
pub(crate) fn version_list(held: &[u64]) -> String {
    if held.is_empty() {
        return "none".to_owned();
    }
    held.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
