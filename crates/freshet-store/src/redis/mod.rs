//! The Redis online store: one string per entity, view schemas in Redis, on a server or a
//! cluster. Guarantees: a batch is one MULTI/EXEC (all of it applies or none, readers never see
//! half of it); a lookup of many entities is one MGET (one consistent read); a lost connection
//! is a retryable [`StoreError::Unavailable`], never a silent drop.
//!
//! # Key layout (`P` is the key prefix, `freshet` by default)
//!
//! | key                         | type   | holds                                          |
//! |-----------------------------|--------|------------------------------------------------|
//! | `P:{view}:v2:<entity>`      | string | the vector: `as_of` (epoch ms) and the values  |
//! | `P:{view}:schema`           | string | the view's schema (features in order, ttl)     |
//! | `P:views`                   | set    | names of registered views                      |
//!
//! `v2` is [`LAYOUT_VERSION`], bumped when the layout or value encoding changes so that a newer
//! freshet never misreads older keys (`v1` held one hash field per feature: writing 14 fields
//! cost Redis about 8 times a `SET` of the same vector, see docs/redis.md). `{view}` is a Redis
//! Cluster hash tag: every key of a view lands in one slot, which MULTI/EXEC and MGET across
//! entities and a single-node SCAN all require.
//!
//! # Value encoding
//!
//! A JSON object, `{"as_of":<epoch ms>,"values":[...]}`, values in the schema's feature order,
//! each a string: a one-byte type tag, then the payload: `n` (Null), `i<decimal i64>`, `f<f64>`
//! (Rust's shortest round-trip form; `inf`, `-inf`, `NaN`), `b1`/`b0`, `s<text>`.
//!
//! # TTL
//!
//! A view's `ttl_ms` becomes the `PX` of each key's `SET`, reset by every write: Redis drops an
//! entity that stopped receiving events after the TTL in wall time. The dataflow also deletes
//! entities whose latest event is older than the TTL in event time, so replays agree.
//!
//! See docs/redis.md for retries, cluster and AUTH.

pub mod config;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use freshet_core::store::{
    FeatureValue, FeatureVector, OnlineStore, StoreError, StoreWrite, ViewSchema,
};
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionLike, ErrorKind, FromRedisValue, Pipeline, RedisError, Value};

use config::Topology;
pub use config::{ConfigError, RedisConfig};

/// Version of the key layout and value encoding, the `v2` in `P:{view}:v2:<entity>`.
pub const LAYOUT_VERSION: u32 = 2;

/// A vector as stored: `{"as_of":..,"values":[..]}`, each value in the tagged text encoding.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredVector<'a> {
    as_of: u64,
    #[serde(borrow)]
    values: Vec<std::borrow::Cow<'a, str>>,
}

/// Idle connections kept for reuse; more concurrent callers open more and close the extra.
const MAX_IDLE_CONNECTIONS: usize = 16;
/// Keys asked per SCAN call.
const SCAN_COUNT: usize = 1000;
/// Entities read per MULTI/EXEC while scanning a view.
const SCAN_READ_CHUNK: usize = 1000;
/// Retries the cluster client makes on its own (MOVED, TRYAGAIN) before reporting an error;
/// longer outages are the caller's backoff to handle.
const CLUSTER_CLIENT_RETRIES: u32 = 2;

const SCHEMA_HEADER: &str = "freshet view schema v1";

/// The Redis [`OnlineStore`].
///
/// Every call takes an idle connection from a small pool (or opens one), and returns it only
/// after a clean reply: a connection that saw any error is dropped, so the next call reconnects.
/// A call that fails on a reused connection because it was lost (the server restarted while it
/// sat idle) is retried once on a fresh connection; that is safe because every write is an
/// idempotent MULTI/EXEC. Whatever still fails is [`StoreError::Unavailable`] for the caller's
/// backoff.
pub struct RedisStore {
    client: Client,
    config: RedisConfig,
    idle: Mutex<Vec<Conn>>,
    /// Schemas seen by this process. A schema never changes once in Redis (a different one is
    /// refused), so a cached one stays valid.
    schemas: RwLock<HashMap<String, Arc<ViewSchema>>>,
}

enum Client {
    Standalone(redis::Client),
    Cluster(ClusterClient),
}

enum Conn {
    Standalone(redis::Connection),
    // Boxed: a cluster connection is four times a standalone one, and the pool moves them.
    Cluster(Box<ClusterConnection>),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the redis crate's client would print the password.
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (checking AUTH and the database with a PING) and returns the store.
    ///
    /// An unreachable server is [`StoreError::Unavailable`], so a caller may retry start-up;
    /// refused credentials are [`StoreError::Fatal`].
    pub fn open(config: RedisConfig) -> Result<Self, StoreError> {
        let client = match &config.topology {
            Topology::Standalone(url) => redis::Client::open(url.as_str()).map(Client::Standalone),
            Topology::Cluster(nodes) => ClusterClient::builder(nodes.clone())
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.io_timeout)
                .retries(CLUSTER_CLIENT_RETRIES)
                .build()
                .map(Client::Cluster),
        }
        .map_err(|e| StoreError::Fatal(format!("redis store `{config}`: {e}")))?;
        let store = Self {
            client,
            config,
            idle: Mutex::new(Vec::new()),
            schemas: RwLock::new(HashMap::new()),
        };
        store.with_conn(|conn| conn.query::<String>(&redis::cmd("PING")))?;
        Ok(store)
    }

    /// The config this store was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn prefix(&self) -> &str {
        &self.config.key_prefix
    }

    fn views_key(&self) -> String {
        format!("{}:views", self.prefix())
    }

    fn schema_key(&self, view: &str) -> String {
        format!("{}:{{{view}}}:schema", self.prefix())
    }

    /// `P:{view}:v1:`, the part of an entity key before the entity.
    fn entity_prefix(&self, view: &str) -> String {
        format!("{}:{{{view}}}:v{LAYOUT_VERSION}:", self.prefix())
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let conn = match &self.client {
            Client::Standalone(client) => client
                .get_connection_with_timeout(self.config.connect_timeout)
                .and_then(|conn| {
                    conn.set_read_timeout(Some(self.config.io_timeout))?;
                    conn.set_write_timeout(Some(self.config.io_timeout))?;
                    Ok(Conn::Standalone(conn))
                }),
            Client::Cluster(client) => client
                .get_connection()
                .map(|conn| Conn::Cluster(Box::new(conn))),
        };
        conn.map_err(|e| self.store_error("connect", &e))
    }

    /// Runs `op` on a pooled or fresh connection; see [`RedisStore`] for the retry rule.
    fn with_conn<T>(
        &self,
        mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(mut conn) = pooled {
            match op(&mut conn) {
                Ok(value) => {
                    self.release(conn);
                    return Ok(value);
                }
                Err(e) if !is_connection_lost(&e) => return Err(self.store_error("request", &e)),
                // Every idle connection predates the loss too; drop them all.
                Err(_) => self
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear(),
            }
        }
        let mut conn = self.connect()?;
        match op(&mut conn) {
            Ok(value) => {
                self.release(conn);
                Ok(value)
            }
            Err(e) => Err(self.store_error("request", &e)),
        }
    }

    fn release(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    fn store_error(&self, what: &str, e: &RedisError) -> StoreError {
        let message = format!("redis `{}`: {what} failed: {e}", self.config);
        if is_retryable(e) {
            StoreError::Unavailable(message)
        } else {
            StoreError::Fatal(message)
        }
    }

    /// The schema of `view`, from this process's cache or else from Redis.
    fn schema(&self, view: &str) -> Result<Arc<ViewSchema>, StoreError> {
        if let Some(schema) = read_lock(&self.schemas).get(view) {
            return Ok(Arc::clone(schema));
        }
        let key = self.schema_key(view);
        let stored: Option<String> =
            self.with_conn(|conn| conn.query(redis::cmd("GET").arg(&key)))?;
        let stored = stored.ok_or_else(|| StoreError::UnknownView(view.to_owned()))?;
        let schema = Arc::new(decode_schema(view, &stored)?);
        write_lock(&self.schemas).insert(view.to_owned(), Arc::clone(&schema));
        Ok(schema)
    }

    /// One MGET of every entity's key: one round trip and one consistent read.
    fn read_entities(
        &self,
        schema: &ViewSchema,
        entities: &[&str],
    ) -> Result<Vec<Option<FeatureVector>>, StoreError> {
        if entities.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = self.entity_prefix(&schema.name);
        let mut cmd = redis::cmd("MGET");
        for entity in entities {
            cmd.arg(format!("{prefix}{entity}"));
        }
        let rows: Vec<Option<Vec<u8>>> = self.with_conn(|conn| conn.query(&cmd))?;
        if rows.len() != entities.len() {
            return Err(StoreError::Fatal(format!(
                "redis `{}`: asked for {} entities, got {} replies",
                self.config,
                entities.len(),
                rows.len()
            )));
        }
        rows.into_iter()
            .zip(entities)
            .map(|(row, entity)| match row {
                None => Ok(None),
                Some(raw) => decode_vector(schema, entity, &raw).map(Some),
            })
            .collect()
    }

    /// Every entity of `view`, deduplicated (SCAN may return a key twice) and sorted.
    fn scan_entities(&self, view: &str) -> Result<BTreeSet<String>, StoreError> {
        let prefix = self.entity_prefix(view);
        let pattern = format!("{}*", escape_glob(&prefix));
        let mut entities = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                self.with_conn(|conn| conn.scan_page(&cmd, &prefix))?;
            for key in keys {
                let entity = key
                    .strip_prefix(prefix.as_bytes())
                    .and_then(|e| std::str::from_utf8(e).ok())
                    .ok_or_else(|| {
                        StoreError::Fatal(format!(
                            "redis `{}`: key {} under view `{view}` is not `{prefix}<utf-8 entity>`",
                            self.config,
                            String::from_utf8_lossy(&key)
                        ))
                    })?;
                entities.insert(entity.to_owned());
            }
            if next == 0 {
                return Ok(entities);
            }
            cursor = next;
        }
    }
}

impl Conn {
    fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self {
            Self::Standalone(conn) => cmd.query(conn),
            Self::Cluster(conn) => cmd.query(&mut **conn),
        }
    }

    /// Sends an atomic pipeline as MULTI ... EXEC and parses EXEC's reply.
    ///
    /// `Pipeline::query` refuses cluster connections; a cluster connection does route a packed
    /// MULTI block to the node of its first key, which (with the `{view}` hash tag) owns every
    /// key of the block, so both topologies take this one path.
    fn exec_atomic<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> redis::RedisResult<T> {
        let packed = pipe.get_packed_pipeline();
        let conn: &mut dyn ConnectionLike = match self {
            Self::Standalone(conn) => conn,
            Self::Cluster(conn) => &mut **conn,
        };
        // MULTI and each command answer QUEUED; only EXEC's reply (the last one) is kept.
        let mut replies = conn.req_packed_commands(&packed, pipe.len() + 1, 1)?;
        match replies.pop() {
            Some(Value::Array(items)) => {
                for item in &items {
                    if let Value::ServerError(e) = item {
                        return Err(e.clone().into());
                    }
                }
                Ok(T::from_redis_value(Value::Array(items))?)
            }
            Some(Value::Nil) => Err(RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
                "transaction aborted",
            ))),
            _ => Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "unexpected reply to EXEC",
            ))),
        }
    }

    /// One SCAN page. A cluster routes SCAN nowhere in particular, so it goes to the master of
    /// the slot that `route_key` (a view's prefix, hash tag included) hashes to.
    fn scan_page(&mut self, cmd: &Cmd, route_key: &str) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
        match self {
            Self::Standalone(conn) => cmd.query(conn),
            Self::Cluster(conn) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    route_key,
                    SlotAddr::Master,
                ));
                let value = conn.route_command(cmd, RoutingInfo::SingleNode(route))?;
                Ok(FromRedisValue::from_redis_value(value)?)
            }
        }
    }
}

impl OnlineStore for RedisStore {
    /// Stores the schema with SET NX (the first registration wins, from any process), then adds
    /// the view to `P:views`. The same schema again is a no-op; a different one is
    /// [`StoreError::Fatal`].
    fn register_view(&self, schema: ViewSchema) -> Result<(), StoreError> {
        validate_schema(&schema)?;
        if let Some(known) = read_lock(&self.schemas).get(&schema.name) {
            return if **known == schema {
                Ok(())
            } else {
                Err(conflict(&schema.name))
            };
        }
        let key = self.schema_key(&schema.name);
        let encoded = encode_schema(&schema);
        let created: Option<String> =
            self.with_conn(|conn| conn.query(redis::cmd("SET").arg(&key).arg(&encoded).arg("NX")))?;
        if created.is_none() {
            let stored = self.schema(&schema.name)?;
            if *stored != schema {
                return Err(conflict(&schema.name));
            }
        }
        let views_key = self.views_key();
        self.with_conn(|conn| {
            conn.query::<i64>(redis::cmd("SADD").arg(&views_key).arg(&schema.name))
        })?;
        write_lock(&self.schemas).insert(schema.name.clone(), Arc::new(schema));
        Ok(())
    }

    /// From the cache, else from Redis (a view another process registered). `None` also when
    /// Redis cannot be reached.
    fn view(&self, view: &str) -> Option<ViewSchema> {
        self.schema(view).ok().map(|s| ViewSchema::clone(&s))
    }

    /// The views in `P:views`, sorted; the ones this process knows when Redis cannot be reached.
    fn views(&self) -> Vec<String> {
        let key = self.views_key();
        let mut names: Vec<String> = self
            .with_conn(|conn| conn.query(redis::cmd("SMEMBERS").arg(&key)))
            .unwrap_or_else(|_| read_lock(&self.schemas).keys().cloned().collect());
        names.sort_unstable();
        names
    }

    /// Checks every vector against the schema, then sends the batch as one MULTI/EXEC: a `SET`
    /// (with `PX` when the view has a TTL) per upsert, `DEL` per delete, in batch order.
    fn write_batch(&self, view: &str, writes: Vec<StoreWrite>) -> Result<(), StoreError> {
        let schema = self.schema(view)?;
        if writes.is_empty() {
            return Ok(());
        }
        let prefix = self.entity_prefix(view);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for write in &writes {
            match write {
                StoreWrite::Upsert { entity, vector } => {
                    if vector.values.len() != schema.features.len() {
                        return Err(StoreError::Fatal(format!(
                            "view `{view}` has {} features but the vector for entity `{entity}` has {}",
                            schema.features.len(),
                            vector.values.len()
                        )));
                    }
                    let set = pipe
                        .cmd("SET")
                        .arg(format!("{prefix}{entity}"))
                        .arg(encode_vector(vector));
                    if let Some(ttl_ms) = schema.ttl_ms {
                        set.arg("PX").arg(ttl_ms);
                    }
                }
                StoreWrite::Delete { entity } => {
                    pipe.cmd("DEL").arg(format!("{prefix}{entity}"));
                }
            }
        }
        self.with_conn(|conn| conn.exec_atomic::<Value>(&pipe))?;
        Ok(())
    }

    fn get(&self, view: &str, entity: &str) -> Result<Option<FeatureVector>, StoreError> {
        let schema = self.schema(view)?;
        Ok(self.read_entities(&schema, &[entity])?.pop().flatten())
    }

    /// One MGET, one round trip whatever the number of entities.
    fn get_many(
        &self,
        view: &str,
        entities: &[&str],
    ) -> Result<Vec<Option<FeatureVector>>, StoreError> {
        let schema = self.schema(view)?;
        self.read_entities(&schema, entities)
    }

    /// Counts the view's keys with SCAN: O(keys in the database), meant for tests and
    /// operators, not the serving path.
    fn len(&self, view: &str) -> Result<usize, StoreError> {
        self.schema(view)?;
        Ok(self.scan_entities(view)?.len())
    }

    /// SCAN for the view's keys, then read them in chunks; entities that expire in between are
    /// left out.
    fn scan(&self, view: &str) -> Result<Vec<(String, FeatureVector)>, StoreError> {
        let schema = self.schema(view)?;
        let entities: Vec<String> = self.scan_entities(view)?.into_iter().collect();
        let mut all = Vec::with_capacity(entities.len());
        for chunk in entities.chunks(SCAN_READ_CHUNK) {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let vectors = self.read_entities(&schema, &names)?;
            all.extend(
                chunk
                    .iter()
                    .zip(vectors)
                    .filter_map(|(entity, vector)| vector.map(|v| (entity.clone(), v))),
            );
        }
        Ok(all)
    }
}

fn conflict(view: &str) -> StoreError {
    StoreError::Fatal(format!(
        "view `{view}` is already registered with a different schema"
    ))
}

/// Whether the connection itself is gone (as opposed to Redis refusing one request).
fn is_connection_lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Whether backing off and retrying may help: connection loss, timeouts, a loading or failing
/// over server. Refused credentials, a wrong type or a bad request will not get better.
fn is_retryable(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Server(redis::ServerErrorKind::NoPerm) => false,
        _ => !matches!(e.retry_method(), redis::RetryMethod::NoRetry),
    }
}

/// Names must keep keys unambiguous: no `{`/`}` in a view (the hash tag would end early and a
/// view's SCAN pattern could match another's keys), no newline in a feature (the schema
/// encoding is line based), no `__` feature prefix (reserved), no duplicates.
fn validate_schema(schema: &ViewSchema) -> Result<(), StoreError> {
    let bad = |why: String| Err(StoreError::Fatal(format!("view `{}`: {why}", schema.name)));
    if schema.name.is_empty() || schema.name.contains(['{', '}', '\n']) {
        return bad("a redis view name must be non-empty, without `{`, `}` or newlines".to_owned());
    }
    let mut seen = BTreeSet::new();
    for feature in &schema.features {
        if feature.is_empty() || feature.contains('\n') || feature.starts_with("__") {
            return bad(format!(
                "feature `{feature}`: names must be non-empty, without newlines, and not start with `__`"
            ));
        }
        if !seen.insert(feature.as_str()) {
            return bad(format!("feature `{feature}` appears twice"));
        }
    }
    Ok(())
}

/// `freshet view schema v1`, `ttl_ms <n>` or `ttl_ms none`, then `feature <name>` per feature.
fn encode_schema(schema: &ViewSchema) -> String {
    let mut out = String::from(SCHEMA_HEADER);
    match schema.ttl_ms {
        Some(ttl) => out.push_str(&format!("\nttl_ms {ttl}")),
        None => out.push_str("\nttl_ms none"),
    }
    for feature in &schema.features {
        out.push_str("\nfeature ");
        out.push_str(feature);
    }
    out
}

fn decode_schema(view: &str, stored: &str) -> Result<ViewSchema, StoreError> {
    let corrupt = || StoreError::Fatal(format!("view `{view}`: unreadable schema in redis"));
    let mut lines = stored.split('\n');
    if lines.next() != Some(SCHEMA_HEADER) {
        return Err(corrupt());
    }
    let ttl_ms = match lines.next().and_then(|l| l.strip_prefix("ttl_ms ")) {
        Some("none") => None,
        Some(ttl) => Some(ttl.parse().map_err(|_| corrupt())?),
        None => return Err(corrupt()),
    };
    let features = lines
        .map(|l| {
            l.strip_prefix("feature ")
                .map(str::to_owned)
                .ok_or_else(corrupt)
        })
        .collect::<Result<_, _>>()?;
    Ok(ViewSchema {
        name: view.to_owned(),
        features,
        ttl_ms,
    })
}

fn encode_value(value: &FeatureValue) -> String {
    match value {
        FeatureValue::Null => "n".to_owned(),
        FeatureValue::Int(i) => format!("i{i}"),
        // Display of f64 is the shortest string that parses back to the same bits.
        FeatureValue::Float(f) => format!("f{f}"),
        FeatureValue::Bool(b) => if *b { "b1" } else { "b0" }.to_owned(),
        FeatureValue::Str(s) => format!("s{s}"),
    }
}

/// A vector as the JSON text of [`StoredVector`].
fn encode_vector(vector: &FeatureVector) -> Vec<u8> {
    let stored = StoredVector {
        as_of: vector.as_of_ms,
        values: vector
            .values
            .iter()
            .map(|v| std::borrow::Cow::Owned(encode_value(v)))
            .collect(),
    };
    // a struct of a number and strings always serializes
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode_value(raw: &str) -> Option<FeatureValue> {
    // the tag is ASCII, so the rest starts on a character boundary
    let tag = *raw.as_bytes().first()?;
    let text = raw.get(1..)?;
    match (tag, text) {
        (b'n', "") => Some(FeatureValue::Null),
        (b'i', _) => text.parse().ok().map(FeatureValue::Int),
        (b'f', _) => text.parse().ok().map(FeatureValue::Float),
        (b'b', "1") => Some(FeatureValue::Bool(true)),
        (b'b', "0") => Some(FeatureValue::Bool(false)),
        (b's', _) => Some(FeatureValue::Str(Arc::from(text))),
        _ => None,
    }
}

/// One stored vector (the JSON text of [`StoredVector`]) of `schema`'s view.
fn decode_vector(
    schema: &ViewSchema,
    entity: &str,
    raw: &[u8],
) -> Result<FeatureVector, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Fatal(format!(
            "view `{}`, entity `{entity}`: unreadable entry in redis ({what})",
            schema.name
        ))
    };
    let stored: StoredVector<'_> =
        serde_json::from_slice(raw).map_err(|e| corrupt(&e.to_string()))?;
    if stored.values.len() != schema.features.len() {
        return Err(corrupt(&format!(
            "{} values for {} features",
            stored.values.len(),
            schema.features.len()
        )));
    }
    let values = schema
        .features
        .iter()
        .zip(&stored.values)
        .map(|(name, raw)| decode_value(raw).ok_or_else(|| corrupt(name)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FeatureVector {
        as_of_ms: stored.as_of,
        values,
    })
}

/// Escapes Redis glob metacharacters so a prefix matches only itself.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
