//! The embedded online store: feature vectors in process memory, sharded by a hash of the entity.
//! Guarantees: readers see whole vectors, never half-written ones; writes to one entity apply in
//! batch order; a batch that fails validation changes nothing. A batch is not atomic across
//! entities: a concurrent reader may see some of its entities updated and others not yet.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use freshet_core::store::{FeatureVector, OnlineStore, StoreError, StoreWrite, ViewSchema};

#[cfg(test)]
mod tests;

/// Shards per view. Writers to different shards never wait on each other, and a reader blocks
/// only the shard it reads; 16 is well above the worker-thread counts freshet runs with.
pub const SHARDS: usize = 16;

type Shard = RwLock<HashMap<String, FeatureVector>>;

/// One registered view: its schema and its entities spread over [`SHARDS`] maps.
#[derive(Debug)]
struct View {
    schema: ViewSchema,
    shards: Box<[Shard]>,
}

/// The in-process [`OnlineStore`], freshet's embedded default.
///
/// Dataflow worker threads write and HTTP handlers read concurrently; each view's entities are
/// spread over [`SHARDS`] `RwLock`ed maps by a hash of the entity key.
#[derive(Debug, Default)]
pub struct MemoryStore {
    views: RwLock<HashMap<String, Arc<View>>>,
}

impl MemoryStore {
    /// An empty store with no views.
    pub fn new() -> Self {
        Self::default()
    }

    fn view_data(&self, view: &str) -> Result<Arc<View>, StoreError> {
        read(&self.views)
            .get(view)
            .cloned()
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))
    }
}

impl View {
    fn new(schema: ViewSchema) -> Self {
        Self {
            schema,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    fn check(&self, entity: &str, vector: &FeatureVector) -> Result<(), StoreError> {
        let expected = self.schema.features.len();
        if vector.values.len() == expected {
            Ok(())
        } else {
            Err(StoreError::Fatal(format!(
                "view `{}` has {expected} features but the vector for entity `{entity}` has {}",
                self.schema.name,
                vector.values.len()
            )))
        }
    }
}

/// The shard of an entity. `DefaultHasher` with its default keys is deterministic, so an entity
/// always lands in the same shard.
fn shard_of(entity: &str) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(entity);
    // The modulus is below SHARDS, so the cast back cannot truncate.
    (hash % SHARDS as u64) as usize
}

// A panic while a lock is held cannot leave a map half-updated (every critical section is a
// single insert, remove or clone), so a poisoned lock still guards consistent data.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl OnlineStore for MemoryStore {
    /// Registers `schema`; registering the same schema again is a no-op, registering a different
    /// schema under a name already taken is [`StoreError::Fatal`].
    fn register_view(&self, schema: ViewSchema) -> Result<(), StoreError> {
        let mut views = write(&self.views);
        match views.get(&schema.name) {
            Some(existing) if existing.schema == schema => Ok(()),
            Some(_) => Err(StoreError::Fatal(format!(
                "view `{}` is already registered with a different schema",
                schema.name
            ))),
            None => {
                views.insert(schema.name.clone(), Arc::new(View::new(schema)));
                Ok(())
            }
        }
    }

    fn view(&self, view: &str) -> Option<ViewSchema> {
        read(&self.views).get(view).map(|v| v.schema.clone())
    }

    fn views(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.views).keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Validates the whole batch first (vector lengths against the schema), then applies it
    /// shard by shard, taking each shard's lock once. Writes to one entity share a shard, so
    /// they apply in batch order.
    fn write_batch(&self, view: &str, writes: Vec<StoreWrite>) -> Result<(), StoreError> {
        let data = self.view_data(view)?;
        for w in &writes {
            if let StoreWrite::Upsert { entity, vector } = w {
                data.check(entity, vector)?;
            }
        }
        let mut by_shard: [Vec<StoreWrite>; SHARDS] = Default::default();
        for w in writes {
            let entity = match &w {
                StoreWrite::Upsert { entity, .. } | StoreWrite::Delete { entity } => entity,
            };
            by_shard[shard_of(entity)].push(w);
        }
        for (shard, writes) in data.shards.iter().zip(by_shard) {
            if writes.is_empty() {
                continue;
            }
            let mut map = write(shard);
            for w in writes {
                match w {
                    StoreWrite::Upsert { entity, vector } => {
                        map.insert(entity, vector);
                    }
                    StoreWrite::Delete { entity } => {
                        map.remove(&entity);
                    }
                }
            }
        }
        Ok(())
    }

    fn get(&self, view: &str, entity: &str) -> Result<Option<FeatureVector>, StoreError> {
        let data = self.view_data(view)?;
        let found = read(&data.shards[shard_of(entity)]).get(entity).cloned();
        Ok(found)
    }

    /// Reads shard by shard, taking each shard's read lock once, and answers in the order
    /// asked.
    fn get_many(
        &self,
        view: &str,
        entities: &[&str],
    ) -> Result<Vec<Option<FeatureVector>>, StoreError> {
        let data = self.view_data(view)?;
        let mut by_shard: [Vec<usize>; SHARDS] = Default::default();
        for (i, entity) in entities.iter().enumerate() {
            by_shard[shard_of(entity)].push(i);
        }
        let mut found = vec![None; entities.len()];
        for (shard, positions) in data.shards.iter().zip(by_shard) {
            if positions.is_empty() {
                continue;
            }
            let map = read(shard);
            for i in positions {
                found[i] = map.get(entities[i]).cloned();
            }
        }
        Ok(found)
    }

    fn len(&self, view: &str) -> Result<usize, StoreError> {
        let data = self.view_data(view)?;
        Ok(data.shards.iter().map(|s| read(s).len()).sum())
    }

    fn scan(&self, view: &str) -> Result<Vec<(String, FeatureVector)>, StoreError> {
        let data = self.view_data(view)?;
        let mut all: Vec<(String, FeatureVector)> = data
            .shards
            .iter()
            .flat_map(|s| {
                read(s)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}
