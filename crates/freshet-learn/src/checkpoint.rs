//! Checkpoints: every number that training depends on, so that a resumed learner continues
//! bit for bit where the checkpointed one was.
//!
//! `<dir>/<model>.json` holds the metadata (format, version, update and example counts, the
//! spec, the engine, the inputs, integer metric counters, a readable summary) and names the
//! tensor file `<dir>/<model>-<updates>-<examples>.safetensors`, which holds weights, optimizer
//! state, the standardisation moments (f64), the metric sums and rolling window, and the scored
//! examples of an unfinished mini-batch. The tensor file is written first and the metadata is
//! renamed into place after it, so a crash leaves the previous checkpoint readable; the tensor
//! file of the previous checkpoint is then removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use freshet_core::model::{Activation, ModelKind, ModelSpec};
use serde::{Deserialize, Serialize};

use crate::error::LearnError;
use crate::example::{Example, Value};
use crate::head::Head;
use crate::learner::{Engine, Learner};
use crate::linear::{LinearWeights, State, GROUPS};
use crate::metrics::{Entry, MetricCounts, ModelSummary};
use crate::net::NetWeights;
use crate::preprocess::{Scaler, Standardizer};
use crate::registry::{Frozen, PublishedModel};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    model: String,
    version: u64,
    updates: u64,
    learned: u64,
    engine: String,
    inputs: Vec<String>,
    spec: ModelSpec,
    tensors: String,
    metrics: MetricCounts,
    pending: usize,
    summary: ModelSummary,
}

fn meta_path(dir: &Path, model: &str) -> PathBuf {
    dir.join(format!("{model}.json"))
}

/// Whether `dir` holds a checkpoint of `model`.
pub(crate) fn exists(dir: &Path, model: &str) -> bool {
    meta_path(dir, model).is_file()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LearnError + '_ {
    move |source| LearnError::CheckpointIo {
        path: path.to_owned(),
        source,
    }
}

fn invalid(path: &Path, problem: impl Into<String>) -> LearnError {
    LearnError::CheckpointInvalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn engine_name(engine: &Engine) -> &'static str {
    match engine {
        Engine::Linear(_) => "native",
        Engine::Net(_) => "candle",
    }
}

fn host(data: Vec<f32>) -> candle_core::Result<Tensor> {
    let n = data.len();
    Tensor::from_vec(data, n, &Device::Cpu)
}

fn host64(data: Vec<f64>) -> candle_core::Result<Tensor> {
    let n = data.len();
    Tensor::from_vec(data, n, &Device::Cpu)
}

#[allow(clippy::cast_possible_wrap)] // stored bit for bit
fn host_u64(data: &[u64]) -> candle_core::Result<Tensor> {
    let v: Vec<i64> = data.iter().map(|&x| x as i64).collect();
    Tensor::from_vec(v, data.len(), &Device::Cpu)
}

fn stats_tensors(
    stats: &Standardizer,
    out: &mut HashMap<String, Tensor>,
) -> candle_core::Result<()> {
    out.insert("pre.count".into(), host64(stats.count.clone())?);
    out.insert("pre.mean".into(), host64(stats.mean.clone())?);
    out.insert("pre.m2".into(), host64(stats.m2.clone())?);
    Ok(())
}

/// Writes the checkpoint of `learner` into `dir`; returns the metadata path.
pub(crate) fn save(learner: &Learner, dir: &Path) -> Result<PathBuf, LearnError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = &learner.spec.name;
    let updates = learner.engine.updates();
    let examples = learner.metrics.examples();
    let tensors_name = format!("{name}-{updates}-{examples}.safetensors");
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    match &learner.engine {
        Engine::Linear(m) => {
            for ((group, weights), state) in GROUPS.iter().zip(m.group_weights()).zip(&m.state) {
                if !weights.is_empty() {
                    tensors.insert(format!("w.{group}"), host(weights.to_vec())?);
                }
                for (i, s) in [&state.s1, &state.s2].into_iter().enumerate() {
                    if !s.is_empty() {
                        tensors.insert(format!("opt.{group}.s{}", i + 1), host(s.clone())?);
                    }
                }
            }
            stats_tensors(&m.stats, &mut tensors)?;
        }
        Engine::Net(m) => {
            for (name, t) in m.tensors() {
                tensors.insert(name, t.to_device(&Device::Cpu)?);
            }
            stats_tensors(&m.stats, &mut tensors)?;
        }
    }
    let metrics = &learner.metrics;
    tensors.insert(
        "metrics.sums".into(),
        host64(vec![metrics.sum_loss, metrics.sum_sq])?,
    );
    if !metrics.auc_hist.is_empty() {
        tensors.insert("metrics.auc_hist".into(), host_u64(&metrics.auc_hist)?);
    }
    if !metrics.ring.is_empty() {
        let ring = &metrics.ring;
        tensors.insert(
            "metrics.ring.score".into(),
            host(ring.iter().map(|e| e.score).collect())?,
        );
        tensors.insert(
            "metrics.ring.label".into(),
            host(ring.iter().map(|e| e.label).collect())?,
        );
        let hits: Vec<u8> = ring.iter().map(|e| u8::from(e.hit)).collect();
        tensors.insert(
            "metrics.ring.hit".into(),
            Tensor::from_vec(hits, ring.len(), &Device::Cpu)?,
        );
    }
    if !learner.pending.is_empty() {
        pending_tensors(&learner.pending, &mut tensors)?;
    }
    let tensors_path = dir.join(&tensors_name);
    candle_core::safetensors::save(&tensors, &tensors_path)
        .map_err(|e| invalid(&tensors_path, format!("cannot write tensors: {e}")))?;
    let meta = Meta {
        format: FORMAT,
        model: name.clone(),
        version: learner.version,
        updates,
        learned: learner.learned,
        engine: engine_name(&learner.engine).to_owned(),
        inputs: learner.inputs.to_vec(),
        spec: learner.spec.clone(),
        tensors: tensors_name.clone(),
        metrics: metrics.counts(),
        pending: learner.pending.len(),
        summary: learner.summary(),
    };
    let path = meta_path(dir, name);
    let previous = read_meta(&path).ok().map(|m| m.tensors);
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| invalid(&path, format!("cannot encode metadata: {e}")))?;
    let tmp = dir.join(format!("{name}.json.tmp"));
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Some(previous) = previous.filter(|p| *p != tensors_name) {
        // A leftover file wastes space but harms nothing: the metadata no longer names it.
        let _ = std::fs::remove_file(dir.join(previous));
    }
    Ok(path)
}

fn pending_tensors(
    pending: &[Example],
    out: &mut HashMap<String, Tensor>,
) -> candle_core::Result<()> {
    let cells: usize = pending.iter().map(|e| e.values.len()).sum();
    let mut kind = Vec::with_capacity(cells);
    let mut number = Vec::with_capacity(cells);
    let mut category = Vec::with_capacity(cells);
    for e in pending {
        for v in &e.values {
            let (k, x, c) = match *v {
                Value::Missing => (0u8, 0.0, 0u64),
                Value::Number(x) => (1, x, 0),
                Value::Category(h) => (2, 0.0, h),
            };
            kind.push(k);
            number.push(x);
            category.push(c);
        }
    }
    out.insert(
        "pending.kind".into(),
        Tensor::from_vec(kind, cells, &Device::Cpu)?,
    );
    out.insert("pending.number".into(), host64(number)?);
    out.insert("pending.category".into(), host_u64(&category)?);
    out.insert(
        "pending.label".into(),
        host(pending.iter().map(|e| e.label).collect())?,
    );
    Ok(())
}

fn read_meta(path: &Path) -> Result<Meta, LearnError> {
    let text = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|e| invalid(path, format!("bad metadata: {e}")))
}

/// Learning-relevant parts of a spec: what must not change across a resume (the device, the
/// publication and checkpoint schedules may).
fn comparable(spec: &ModelSpec) -> ModelSpec {
    let mut s = spec.clone();
    s.device = freshet_core::model::DeviceSpec::Cpu;
    s.publish_every = 1;
    s.checkpoint_every = 0;
    s.serving = freshet_core::model::ModelServingSpec::default();
    s
}

struct Tensors {
    path: PathBuf,
    map: HashMap<String, Tensor>,
}

impl Tensors {
    /// Reads a safetensors file onto the CPU.
    fn open(path: PathBuf) -> Result<Self, LearnError> {
        let map = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| invalid(&path, format!("cannot read tensors: {e}")))?;
        Ok(Self { path, map })
    }

    fn take(&mut self, name: &str) -> Result<Tensor, LearnError> {
        self.map
            .remove(name)
            .ok_or_else(|| invalid(&self.path, format!("tensor `{name}` missing")))
    }

    fn f32s(&mut self, name: &str, len: usize) -> Result<Vec<f32>, LearnError> {
        let v = self.take(name)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        self.check(name, v.len(), len)?;
        Ok(v)
    }

    fn f64s(&mut self, name: &str, len: usize) -> Result<Vec<f64>, LearnError> {
        let v = self.take(name)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        self.check(name, v.len(), len)?;
        Ok(v)
    }

    #[allow(clippy::cast_sign_loss)] // stored bit for bit
    fn u64s(&mut self, name: &str, len: usize) -> Result<Vec<u64>, LearnError> {
        let v = self.take(name)?.to_vec1::<i64>()?;
        self.check(name, v.len(), len)?;
        Ok(v.into_iter().map(|x| x as u64).collect())
    }

    fn optional_f32s(&mut self, name: &str, len: usize) -> Result<Vec<f32>, LearnError> {
        if self.map.contains_key(name) {
            self.f32s(name, len)
        } else {
            Ok(Vec::new())
        }
    }

    fn check(&self, name: &str, got: usize, expected: usize) -> Result<(), LearnError> {
        if got == expected {
            Ok(())
        } else {
            Err(invalid(
                &self.path,
                format!("tensor `{name}` has {got} values, the model needs {expected}"),
            ))
        }
    }
}

/// Replaces the state of `learner` by its checkpoint in `dir`.
pub(crate) fn load(learner: &mut Learner, dir: &Path) -> Result<(), LearnError> {
    let path = meta_path(dir, &learner.spec.name);
    let meta = read_meta(&path)?;
    if meta.format != FORMAT {
        return Err(invalid(
            &path,
            format!("format {} (this build reads {FORMAT})", meta.format),
        ));
    }
    if comparable(&meta.spec) != comparable(&learner.spec) {
        return Err(invalid(
            &path,
            "the model's spec changed since the checkpoint (only device, publish_every, checkpoint_every and [model.serving] may)",
        ));
    }
    if meta.inputs != *learner.inputs {
        return Err(invalid(
            &path,
            "the model's resolved inputs changed since the checkpoint",
        ));
    }
    if meta.engine != engine_name(&learner.engine) {
        return Err(invalid(
            &path,
            format!(
                "written by the {} engine, this learner uses {}",
                meta.engine,
                engine_name(&learner.engine)
            ),
        ));
    }
    let mut t = Tensors::open(dir.join(&meta.tensors))?;
    let n = learner.inputs.len();
    let stats = Standardizer::from_state(
        t.f64s("pre.count", n)?,
        t.f64s("pre.mean", n)?,
        t.f64s("pre.m2", n)?,
    );
    match &mut learner.engine {
        Engine::Linear(m) => {
            let k = m.outputs();
            let hashed_len = if t.map.contains_key("w.hashed") {
                m.buckets * k
            } else {
                0
            };
            let lens = [k * n, k, n * k, hashed_len];
            let mut weights: [Vec<f32>; 4] = Default::default();
            let mut states: [State; 4] = Default::default();
            for (i, group) in GROUPS.iter().enumerate() {
                weights[i] = if lens[i] == 0 {
                    Vec::new()
                } else {
                    t.f32s(&format!("w.{group}"), lens[i])?
                };
                let arrays = m.arrays();
                let len = if arrays >= 1 { lens[i] } else { 0 };
                states[i].s1 = t.optional_f32s(&format!("opt.{group}.s1"), len)?;
                let len = if arrays >= 2 { lens[i] } else { 0 };
                states[i].s2 = t.optional_f32s(&format!("opt.{group}.s2"), len)?;
                for (s, want) in [(&states[i].s1, arrays >= 1), (&states[i].s2, arrays >= 2)] {
                    if want && s.len() != lens[i] {
                        return Err(invalid(
                            &t.path,
                            format!("optimizer state of `{group}` missing"),
                        ));
                    }
                }
            }
            m.restore(weights, states, stats, meta.updates);
        }
        Engine::Net(m) => {
            let device = m.device().clone();
            let path = t.path.clone();
            m.restore(|name, like| {
                let tensor = t
                    .map
                    .remove(name)
                    .ok_or_else(|| format!("tensor `{name}` missing"))?;
                if tensor.shape() != like.shape() {
                    return Err(format!(
                        "tensor `{name}` has shape {:?}, the model needs {:?}",
                        tensor.shape(),
                        like.shape()
                    ));
                }
                tensor
                    .to_dtype(like.dtype())
                    .and_then(|x| x.to_device(&device))
                    .map_err(|e| e.to_string())
            })
            .map_err(|problem| invalid(&path, problem))?;
            m.stats = stats;
            m.updates = meta.updates;
        }
    }
    let sums = t.f64s("metrics.sums", 2)?;
    let hist_len = learner.metrics.auc_hist.len();
    let auc_hist = if hist_len > 0 {
        t.u64s("metrics.auc_hist", hist_len)?
    } else {
        Vec::new()
    };
    let ring_len = usize::try_from(meta.metrics.examples)
        .unwrap_or(usize::MAX)
        .min(learner.metrics.window);
    let ring = if ring_len > 0 {
        let scores = t.f32s("metrics.ring.score", ring_len)?;
        let labels = t.f32s("metrics.ring.label", ring_len)?;
        let hits = t.take("metrics.ring.hit")?.to_vec1::<u8>()?;
        t.check("metrics.ring.hit", hits.len(), ring_len)?;
        scores
            .into_iter()
            .zip(labels)
            .zip(hits)
            .map(|((score, label), hit)| Entry {
                score,
                label,
                hit: hit != 0,
            })
            .collect()
    } else {
        Vec::new()
    };
    learner
        .metrics
        .restore(meta.metrics, [sums[0], sums[1]], auc_hist, ring);
    learner.pending = if meta.pending > 0 {
        read_pending(&mut t, meta.pending, n)?
    } else {
        Vec::new()
    };
    learner.version = meta.version;
    learner.learned = meta.learned;
    Ok(())
}

fn read_pending(t: &mut Tensors, count: usize, inputs: usize) -> Result<Vec<Example>, LearnError> {
    let cells = count * inputs;
    let kind = t.take("pending.kind")?.to_vec1::<u8>()?;
    t.check("pending.kind", kind.len(), cells)?;
    let number = t.f64s("pending.number", cells)?;
    let category = t.u64s("pending.category", cells)?;
    let labels = t.f32s("pending.label", count)?;
    let mut out = Vec::with_capacity(count);
    for (i, label) in labels.into_iter().enumerate() {
        let span = i * inputs..(i + 1) * inputs;
        let values = kind[span.clone()]
            .iter()
            .zip(&number[span.clone()])
            .zip(&category[span])
            .map(|((&k, &x), &c)| match k {
                1 => Value::Number(x),
                2 => Value::Category(c),
                _ => Value::Missing,
            })
            .collect();
        out.push(Example { values, label });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Version files: one published version, frozen, for serving (no optimizer state, no metrics).

const VERSION_FORMAT: u32 = 1;

/// The metadata of a version file, `<dir>/<model>.v<version>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct VersionMeta {
    format: u32,
    model: String,
    kind: ModelKind,
    version: u64,
    updates: u64,
    examples: u64,
    engine: String,
    inputs: Vec<String>,
    head: Head,
    mask: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activation: Option<Activation>,
    #[serde(default)]
    layers: usize,
    tensors: String,
}

/// The metadata path of version `version` of `model` in `dir`.
pub(crate) fn version_path(dir: &Path, model: &str, version: u64) -> PathBuf {
    dir.join(format!("{model}.v{version}.json"))
}

/// Writes `model` as a version file into `dir` (tensors first, then the metadata renamed into
/// place); returns the metadata path. Writing a version that is already there rewrites it.
pub(crate) fn save_version(model: &PublishedModel, dir: &Path) -> Result<PathBuf, LearnError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let stem = format!("{}.v{}", model.name, model.version);
    let tensors_name = format!("{stem}.safetensors");
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let (engine, head, mask, activation, layers, scaler) = match &model.frozen {
        Frozen::Linear(scaler, w) => {
            tensors.insert("w.params".into(), host(w.params.clone())?);
            if !w.hashed.is_empty() {
                tensors.insert("w.hashed".into(), host(w.hashed.clone())?);
            }
            ("native", w.head, w.mask, None, 0, scaler)
        }
        Frozen::Net(scaler, w) => {
            for (i, (weight, bias)) in w.layers.iter().enumerate() {
                tensors.insert(format!("net.{i}.w"), weight.to_device(&Device::Cpu)?);
                tensors.insert(format!("net.{i}.b"), bias.to_device(&Device::Cpu)?);
            }
            tensors.insert("net.emb".into(), w.emb.to_device(&Device::Cpu)?);
            (
                "candle",
                w.head,
                w.mask,
                Some(w.activation),
                w.layers.len(),
                scaler,
            )
        }
    };
    tensors.insert(
        "scaler.mean_inv".into(),
        host64(scaler.mean_inv().to_vec())?,
    );
    let tensors_path = dir.join(&tensors_name);
    candle_core::safetensors::save(&tensors, &tensors_path)
        .map_err(|e| invalid(&tensors_path, format!("cannot write tensors: {e}")))?;
    let meta = VersionMeta {
        format: VERSION_FORMAT,
        model: model.name.to_string(),
        kind: model.kind,
        version: model.version,
        updates: model.updates,
        examples: model.examples,
        engine: engine.to_owned(),
        inputs: model.inputs.to_vec(),
        head,
        mask,
        activation,
        layers,
        tensors: tensors_name,
    };
    let path = version_path(dir, &model.name, model.version);
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| invalid(&path, format!("cannot encode metadata: {e}")))?;
    let tmp = dir.join(format!("{stem}.json.tmp"));
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Reads a version file (its metadata path); the tensors are loaded on the CPU.
pub(crate) fn load_version(path: &Path) -> Result<PublishedModel, LearnError> {
    let text = std::fs::read(path).map_err(io(path))?;
    let meta: VersionMeta = serde_json::from_slice(&text)
        .map_err(|e| invalid(path, format!("not a model version file: {e}")))?;
    if meta.format != VERSION_FORMAT {
        return Err(invalid(
            path,
            format!("format {} (this build reads {VERSION_FORMAT})", meta.format),
        ));
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut t = Tensors::open(dir.join(&meta.tensors))?;
    let n = meta.inputs.len();
    let k = meta.head.outputs();
    let scaler = Scaler::from_mean_inv(t.f64s("scaler.mean_inv", 2 * n)?);
    let frozen = match meta.engine.as_str() {
        "native" => {
            let params = t.f32s("w.params", k * (2 * n + 1))?;
            let buckets = meta.mask as usize + 1;
            let hashed = t.optional_f32s("w.hashed", buckets * k)?;
            Frozen::Linear(
                scaler,
                LinearWeights {
                    head: meta.head,
                    inputs: n,
                    mask: meta.mask,
                    params,
                    hashed,
                },
            )
        }
        "candle" => {
            let layers = (0..meta.layers)
                .map(|i| {
                    Ok((
                        t.take(&format!("net.{i}.w"))?,
                        t.take(&format!("net.{i}.b"))?,
                    ))
                })
                .collect::<Result<Vec<_>, LearnError>>()?;
            Frozen::Net(
                scaler,
                NetWeights {
                    head: meta.head,
                    inputs: n,
                    mask: meta.mask,
                    activation: meta.activation.unwrap_or_default(),
                    layers,
                    emb: t.take("net.emb")?,
                },
            )
        }
        other => return Err(invalid(path, format!("unknown engine `{other}`"))),
    };
    Ok(PublishedModel {
        name: meta.model.as_str().into(),
        kind: meta.kind,
        version: meta.version,
        updates: meta.updates,
        examples: meta.examples,
        inputs: meta.inputs.into(),
        frozen,
    })
}
