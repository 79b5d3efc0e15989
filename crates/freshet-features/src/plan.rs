//! Compilation of a pipeline spec into per-source plans: which fields to decode, for each
//! feature view the window groups, accumulators and output order, and the drift monitors that
//! read the source.

use std::collections::HashMap;
use std::sync::Arc;

use freshet_core::event::{EventSchema, FieldKind};
use freshet_core::spec::{AggKind, LatePolicy, PipelineSpec};
use freshet_core::store::ViewSchema;

/// Accumulator kinds; one accumulator serves every feature of a group that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccKind {
    /// Sum and sum of squares (sum, mean, stddev).
    Moments,
    /// Sorted multiset of values (exact min and max under removal; continuous windows).
    MinMax,
    /// Smallest and largest value (hopping-window panes, which never remove).
    Extremes,
    /// Relative-error quantile sketch.
    Quantile,
    /// Counts per value hash (exact and approximate distinct counts).
    Distinct,
}

/// How a feature's value is read from its group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    /// Number of events in the window.
    Count,
    /// Sum, from a [`AccKind::Moments`] accumulator.
    Sum(usize),
    /// Mean, from a [`AccKind::Moments`] accumulator.
    Mean(usize),
    /// Population standard deviation, from a [`AccKind::Moments`] accumulator.
    Stddev(usize),
    /// Minimum, from a [`AccKind::MinMax`] or [`AccKind::Extremes`] accumulator.
    Min(usize),
    /// Maximum, from a [`AccKind::MinMax`] or [`AccKind::Extremes`] accumulator.
    Max(usize),
    /// Quantile `q`, from a [`AccKind::Quantile`] accumulator.
    Quantile(usize, f64),
    /// Exact distinct count, from a [`AccKind::Distinct`] accumulator.
    CountDistinct(usize),
    /// HyperLogLog estimate, from a [`AccKind::Distinct`] accumulator.
    ApproxCountDistinct(usize),
}

impl Output {
    /// Whether an empty window reads as 0 (counts) rather than null.
    pub fn zero_when_empty(self) -> bool {
        matches!(
            self,
            Self::Count | Self::CountDistinct(_) | Self::ApproxCountDistinct(_)
        )
    }
}

/// Features of a view that share one window shape.
#[derive(Debug, Clone)]
pub struct Group {
    /// Window length, ms.
    pub length_ms: u64,
    /// Slide, ms, for hopping windows; `None` for a continuous window.
    pub slide_ms: Option<u64>,
    /// Source field slots stored per event for this group.
    pub fields: Vec<usize>,
    /// Accumulators: kind and index into [`Group::fields`].
    pub accs: Vec<(AccKind, usize)>,
    /// (position in the view's output, how to read it).
    pub outputs: Vec<(usize, Output)>,
}

/// A compiled feature view.
#[derive(Debug, Clone)]
pub struct ViewPlan {
    /// Store schema of the view.
    pub schema: ViewSchema,
    /// Feature names as shared strings, in output order (for changelog records).
    pub feature_names: Vec<Arc<str>>,
    /// Continuous-window groups.
    pub continuous: Vec<Group>,
    /// Hopping/tumbling-window groups.
    pub hopping: Vec<Group>,
    /// `last` features: (position in the output, source field slot).
    pub last: Vec<(usize, usize)>,
}

/// A compiled source: how its events are decoded and which views read it.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// Source name.
    pub name: String,
    /// Fields decoded from each event.
    pub schema: EventSchema,
    /// Allowed lateness, ms.
    pub lateness_ms: u64,
    /// What to do with late events.
    pub late_policy: LatePolicy,
    /// Wall time after which a silent partition stops holding the head back.
    pub idle_timeout: std::time::Duration,
    /// Views fed by this source.
    pub views: Vec<ViewPlan>,
    /// Drift monitors reading fields of this source.
    pub drift: Vec<crate::drift::DriftPlan>,
    /// Models whose examples are this source's events.
    pub models: Vec<crate::model::ModelFeed>,
    /// Models whose delayed labels are this source's events.
    pub labels: Vec<crate::model::LabelFeed>,
}

/// Compiles a validated spec into one plan per source.
pub fn compile(spec: &PipelineSpec) -> Vec<SourcePlan> {
    spec.sources
        .iter()
        .map(|s| {
            let s = s.get_ref();
            let mut fields: Vec<(String, FieldKind)> = Vec::new();
            let mut slot_of = |name: &str, kind: FieldKind| -> usize {
                if let Some(i) = fields.iter().position(|(n, _)| n == name) {
                    if kind == FieldKind::Number {
                        fields[i].1 = FieldKind::Number;
                    }
                    i
                } else {
                    fields.push((name.to_owned(), kind));
                    fields.len() - 1
                }
            };
            let views = spec
                .feature_views
                .iter()
                .map(|v| v.get_ref())
                .filter(|v| v.source == s.name)
                .map(|v| compile_view(v, &mut slot_of))
                .collect();
            let monitors: Vec<_> = spec.drift.iter().map(|d| d.get_ref()).collect();
            let drift = crate::drift::compile(&monitors, &s.name, &mut |field| {
                slot_of(field, FieldKind::Scalar)
            });
            let (models, labels) = compile_models(spec, &s.name, &mut slot_of);
            SourcePlan {
                name: s.name.clone(),
                schema: EventSchema {
                    entity: s.entity.clone(),
                    event_time: s.event_time.clone(),
                    fields,
                    checks: Vec::new(),
                },
                lateness_ms: s.allowed_lateness.as_ms(),
                late_policy: s.late_policy,
                idle_timeout: s.idle_timeout.as_duration(),
                views,
                drift,
                models,
                labels,
            }
        })
        .collect()
}

/// The model feeds and label feeds of source `source` (the spec is validated: features name
/// existing views and fields of one source).
fn compile_models(
    spec: &PipelineSpec,
    source: &str,
    slot_of: &mut dyn FnMut(&str, FieldKind) -> usize,
) -> (Vec<crate::model::ModelFeed>, Vec<crate::model::LabelFeed>) {
    use crate::model::{InputRef, LabelFeed, LabelRef, ModelFeed};
    let mut feeds = Vec::new();
    let mut labels = Vec::new();
    for model in &spec.models {
        let m = model.get_ref();
        if m.label.source.as_deref() == Some(source) {
            let join_key = m.label.join_key.clone().unwrap_or_default();
            labels.push(LabelFeed {
                model: m.name.clone(),
                join_slot: slot_of(&join_key, FieldKind::Scalar),
                label_slot: slot_of(&m.label.field, FieldKind::Scalar),
            });
        }
        let mut view = None;
        let mut inputs = Vec::new();
        let mut reads_source = false;
        for feature in &m.features {
            let Some((table, name)) = feature.split_once('.') else {
                continue;
            };
            if let Some(v) = spec.feature_view(table) {
                let v = v.get_ref();
                reads_source |= v.source == source;
                let index = v
                    .features
                    .iter()
                    .position(|f| f.get_ref().name == name)
                    .unwrap_or(0);
                view = Some(v.name.clone());
                inputs.push(InputRef::View(index));
            } else {
                reads_source |= table == source;
                inputs.push(InputRef::Field(slot_of(name, FieldKind::Scalar)));
            }
        }
        if !reads_source {
            continue;
        }
        let label = match (&m.label.source, &m.label.join_key) {
            (Some(_), join_key) => LabelRef::Delayed {
                join_slot: slot_of(join_key.as_deref().unwrap_or_default(), FieldKind::Scalar),
                max_delay_ms: m
                    .label
                    .max_delay()
                    .unwrap_or(freshet_core::model::DEFAULT_MAX_LABEL_DELAY)
                    .as_ms(),
                unlabeled: m.label.unlabeled,
            },
            (None, _) => LabelRef::Immediate(slot_of(&m.label.field, FieldKind::Scalar)),
        };
        feeds.push(ModelFeed {
            model: m.name.clone(),
            view,
            inputs,
            label,
        });
    }
    (feeds, labels)
}

/// Expands model features with a glob (`samples.x*`) against the field names of a sample
/// event of their source ([`freshet_core::model::ModelSpec::resolve_features`]). `fields`
/// returns a source's sample field names, or `None` when no sample is available (a glob is
/// then an error naming it).
pub fn expand_feature_globs(
    spec: &mut PipelineSpec,
    fields: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<(), String> {
    for model in &mut spec.models {
        let m = model.get_mut();
        let mut available: Vec<String> = Vec::new();
        for feature in m.features.iter().filter(|f| f.contains('*')) {
            let table = feature.split_once('.').map_or("", |(t, _)| t);
            let names = fields(table).ok_or_else(|| {
                format!(
                    "model `{}`: feature `{feature}` is a glob, and no event of source `{table}` was available to expand it",
                    m.name
                )
            })?;
            available.extend(names.into_iter().map(|n| format!("{table}.{n}")));
        }
        if available.is_empty() {
            continue;
        }
        m.features = m
            .resolve_features(available.iter().map(String::as_str))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn compile_view(
    v: &freshet_core::spec::FeatureViewSpec,
    slot_of: &mut dyn FnMut(&str, FieldKind) -> usize,
) -> ViewPlan {
    let mut continuous: Vec<Group> = Vec::new();
    let mut hopping: Vec<Group> = Vec::new();
    let mut last = Vec::new();
    let mut by_shape: HashMap<(u64, Option<u64>), (bool, usize)> = HashMap::new();
    for (position, f) in v.features.iter().map(|f| f.get_ref()).enumerate() {
        let kind = if f.agg.is_numeric() {
            FieldKind::Number
        } else {
            FieldKind::Scalar
        };
        let slot = f.field.as_deref().map(|name| slot_of(name, kind));
        if f.agg == AggKind::Last {
            if let Some(slot) = slot {
                last.push((position, slot));
            }
            continue;
        }
        let length_ms = f.window.map_or(0, |w| w.as_ms());
        let slide_ms = f.slide.map(|s| s.as_ms());
        let (hop, gi) = *by_shape.entry((length_ms, slide_ms)).or_insert_with(|| {
            let list = if slide_ms.is_some() {
                &mut hopping
            } else {
                &mut continuous
            };
            list.push(Group {
                length_ms,
                slide_ms,
                fields: Vec::new(),
                accs: Vec::new(),
                outputs: Vec::new(),
            });
            (slide_ms.is_some(), list.len() - 1)
        });
        let group = if hop {
            &mut hopping[gi]
        } else {
            &mut continuous[gi]
        };
        let mut acc = |acc_kind: AccKind| -> usize {
            let Some(slot) = slot else { return 0 };
            let field = match group.fields.iter().position(|s| *s == slot) {
                Some(i) => i,
                None => {
                    group.fields.push(slot);
                    group.fields.len() - 1
                }
            };
            match group.accs.iter().position(|a| *a == (acc_kind, field)) {
                Some(i) => i,
                None => {
                    group.accs.push((acc_kind, field));
                    group.accs.len() - 1
                }
            }
        };
        let extremes = if hop {
            AccKind::Extremes
        } else {
            AccKind::MinMax
        };
        let output = match f.agg {
            AggKind::Count => Output::Count,
            AggKind::Sum => Output::Sum(acc(AccKind::Moments)),
            AggKind::Mean => Output::Mean(acc(AccKind::Moments)),
            AggKind::Stddev => Output::Stddev(acc(AccKind::Moments)),
            AggKind::Min => Output::Min(acc(extremes)),
            AggKind::Max => Output::Max(acc(extremes)),
            AggKind::Quantile => Output::Quantile(acc(AccKind::Quantile), f.q.unwrap_or(0.5)),
            AggKind::CountDistinct => Output::CountDistinct(acc(AccKind::Distinct)),
            AggKind::ApproxCountDistinct => Output::ApproxCountDistinct(acc(AccKind::Distinct)),
            // taken out above: `last` has no window group
            AggKind::Last => continue,
        };
        group.outputs.push((position, output));
    }
    let names: Vec<String> = v
        .features
        .iter()
        .map(|f| f.get_ref().name.clone())
        .collect();
    ViewPlan {
        feature_names: names.iter().map(|n| Arc::from(n.as_str())).collect(),
        schema: ViewSchema {
            name: v.name.clone(),
            features: names,
            ttl_ms: v.ttl.map(|t| t.as_ms()),
        },
        continuous,
        hopping,
        last,
    }
}
