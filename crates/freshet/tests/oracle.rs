//! Oracle test: random event streams go through `freshet replay` (1 and 3 workers) and the
//! output must equal a from-scratch batch recomputation of the window semantics stated in
//! `freshet-features/src/window.rs` and `source.rs`.
//!
//! The streams are seeded (reproducible): several partitions per source, events out of order
//! within and beyond the allowed lateness (including exactly at the boundary), duplicate
//! timestamps, many and few keys, string and integer entities, some RFC 3339 times, malformed
//! records and blank lines. Scenarios above [`freshet_features::READ_BATCH_RECORDS`] records
//! per partition make the dataflow advance its watermark mid-stream (hopping windows close and
//! the ttl sweeps before the end of input); smaller ones exercise only the end-of-input close.
//!
//! Event times of partition `p` of `P` are all `≡ p (mod P)`, so two partitions never hold the
//! same (entity, time): `last` then has one right answer whatever the interleaving of partitions.
//!
//! `FRESHET_ORACLE_EXTRA_SEEDS=N` runs N more random scenarios in `extra_seeds`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{int, replay, string, value_mismatch, ReplayOutput, QUANTILE_TOLERANCE};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z: aligned to every window length used here.
const T0: u64 = 1_767_225_600_000;
const LATENESS_MS: u64 = 2_000;
const SOURCE: &str = "events";
/// Records per partition above which the dataflow advances its watermark before the end: a
/// source reads this many per partition before it lets the watermark move.
const MID_STREAM_RECORDS: usize = freshet_features::READ_BATCH_RECORDS;

// ---------------------------------------------------------------------------------------------
// The pipeline, declared once: rendered to TOML for freshet and read by the oracle.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Stddev,
    CountDistinct,
    ApproxCountDistinct,
    Quantile(f64),
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Amount,
    Merchant,
    Country,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Amount => "amount",
            Self::Merchant => "merchant",
            Self::Country => "country",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Window {
    /// `last`: no window.
    Unbounded,
    /// `(h - length, h]`.
    Continuous(u64),
    /// `[k*slide, k*slide + length)`.
    Hopping { length: u64, slide: u64 },
}

struct Feature {
    name: &'static str,
    agg: Agg,
    field: Option<Field>,
    window: Window,
}

struct View {
    name: &'static str,
    ttl_ms: Option<u64>,
    features: Vec<Feature>,
}

const fn feature(name: &'static str, agg: Agg, field: Option<Field>, window: Window) -> Feature {
    Feature {
        name,
        agg,
        field,
        window,
    }
}

/// Every aggregate over a continuous, a tumbling and a hopping window, `last` of three field
/// kinds, a view with a ttl and one without. The ttl is at least the longest window plus the
/// lateness and a slide, so no window state is still needed when the ttl removes a key.
fn views() -> Vec<View> {
    use Agg::*;
    use Field::*;
    let c10 = Window::Continuous(10_000);
    let c60 = Window::Continuous(60_000);
    let tumbling = Window::Hopping {
        length: 5_000,
        slide: 5_000,
    };
    let hop = Window::Hopping {
        length: 20_000,
        slide: 5_000,
    };
    let hop30 = Window::Hopping {
        length: 30_000,
        slide: 10_000,
    };
    vec![
        View {
            name: "user",
            ttl_ms: Some(90_000),
            features: vec![
                feature("n_10s", Count, None, c10),
                feature("sum_10s", Sum, Some(Amount), c10),
                feature("min_10s", Min, Some(Amount), c10),
                feature("max_10s", Max, Some(Amount), c10),
                feature("mean_1m", Mean, Some(Amount), c60),
                feature("std_1m", Stddev, Some(Amount), c60),
                feature("p50_1m", Quantile(0.5), Some(Amount), c60),
                feature("p90_1m", Quantile(0.9), Some(Amount), c60),
                feature("merchants_1m", CountDistinct, Some(Merchant), c60),
                feature(
                    "merchants_approx_1m",
                    ApproxCountDistinct,
                    Some(Merchant),
                    c60,
                ),
                feature("last_country", Last, Some(Country), Window::Unbounded),
                feature("last_amount", Last, Some(Amount), Window::Unbounded),
                feature("n_5s_tumbling", Count, None, tumbling),
                feature("sum_5s_tumbling", Sum, Some(Amount), tumbling),
                feature("min_5s_tumbling", Min, Some(Amount), tumbling),
                feature("max_5s_tumbling", Max, Some(Amount), tumbling),
                feature("n_20s_hop", Count, None, hop),
                feature("sum_20s_hop", Sum, Some(Amount), hop),
                feature("mean_20s_hop", Mean, Some(Amount), hop),
                feature("std_20s_hop", Stddev, Some(Amount), hop),
                feature("min_20s_hop", Min, Some(Amount), hop),
                feature("max_20s_hop", Max, Some(Amount), hop),
                feature("p90_20s_hop", Quantile(0.9), Some(Amount), hop),
                feature("merchants_20s_hop", CountDistinct, Some(Merchant), hop),
                feature(
                    "merchants_approx_20s_hop",
                    ApproxCountDistinct,
                    Some(Merchant),
                    hop,
                ),
            ],
        },
        View {
            name: "all",
            ttl_ms: None,
            features: vec![
                feature("n_1m", Count, None, c60),
                feature("countries_1m", CountDistinct, Some(Country), c60),
                feature("n_30s_hop", Count, None, hop30),
                feature("max_30s_hop", Max, Some(Amount), hop30),
                feature("last_merchant", Last, Some(Merchant), Window::Unbounded),
            ],
        },
    ]
}

fn pipeline_toml(views: &[View], late_policy: &str) -> String {
    let mut toml = format!(
        "[[source]]\nname = \"{SOURCE}\"\nentity = \"user\"\nevent_time = \"ts\"\n\
         allowed_lateness = \"{LATENESS_MS}ms\"\nlate_policy = \"{late_policy}\"\n"
    );
    for view in views {
        toml.push_str(&format!(
            "\n[[feature_view]]\nname = \"{}\"\nsource = \"{SOURCE}\"\n",
            view.name
        ));
        if let Some(ttl) = view.ttl_ms {
            toml.push_str(&format!("ttl = \"{ttl}ms\"\n"));
        }
        toml.push_str("features = [\n");
        for f in &view.features {
            let agg = match f.agg {
                Agg::Count => "count",
                Agg::Sum => "sum",
                Agg::Mean => "mean",
                Agg::Min => "min",
                Agg::Max => "max",
                Agg::Stddev => "stddev",
                Agg::CountDistinct => "count_distinct",
                Agg::ApproxCountDistinct => "approx_count_distinct",
                Agg::Quantile(_) => "quantile",
                Agg::Last => "last",
            };
            let mut line = format!("  {{ name = \"{}\", agg = \"{agg}\"", f.name);
            if let Agg::Quantile(q) = f.agg {
                line.push_str(&format!(", q = {q}"));
            }
            if let Some(field) = f.field {
                line.push_str(&format!(", field = \"{}\"", field.name()));
            }
            match f.window {
                Window::Unbounded => {}
                Window::Continuous(l) => line.push_str(&format!(", window = \"{l}ms\"")),
                Window::Hopping { length, slide } => {
                    line.push_str(&format!(", window = \"{length}ms\", slide = \"{slide}ms\""))
                }
            }
            line.push_str(" },\n");
            toml.push_str(&line);
        }
        toml.push_str("]\n");
    }
    toml
}

// ---------------------------------------------------------------------------------------------
// Random streams.

/// SplitMix64: small, seedable, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A field value as the oracle sees it.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Scalar {
    fn json(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Str(s) => json!(s),
            Self::Num(n) => json!(n),
            Self::Bool(b) => json!(b),
        }
    }

    /// Identity for distinct counts: numbers by value, strings and booleans apart from numbers.
    fn distinct_key(&self) -> Option<String> {
        match self {
            Self::Null => None,
            Self::Str(s) => Some(format!("s:{s}")),
            Self::Num(n) => Some(format!("n:{}", n.to_bits())),
            Self::Bool(b) => Some(format!("b:{b}")),
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    entity: String,
    ts: u64,
    amount: f64,
    merchant: Scalar,
    country: Scalar,
}

impl Event {
    fn field(&self, field: Field) -> Scalar {
        match field {
            Field::Amount => Scalar::Num(self.amount),
            Field::Merchant => self.merchant.clone(),
            Field::Country => self.country.clone(),
        }
    }
}

#[derive(Debug)]
enum Record {
    Blank,
    Valid(Event),
    /// A malformed record and the start of the reason freshet must give.
    Malformed(&'static str),
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    partitions: u64,
    records_per_partition: usize,
    keys: u64,
    mean_gap_ms: u64,
    late_policy: &'static str,
}

/// RFC 3339 text of `ms` shown at UTC offset `offset_min`.
fn rfc3339(ms: u64, offset_min: i64) -> String {
    let local = ms as i64 + offset_min * 60_000;
    let (days, in_day) = (local.div_euclid(86_400_000), local.rem_euclid(86_400_000));
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000,
    );
    let zone = if offset_min == 0 {
        "Z".to_owned()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        format!(
            "{sign}{:02}:{:02}",
            offset_min.abs() / 60,
            offset_min.abs() % 60
        )
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}{zone}")
}

fn generate(sc: &Scenario) -> Vec<Vec<(String, Record)>> {
    let mut rng = Rng(sc.seed);
    let parts = sc.partitions;
    let active = (sc.keys / 4).max(1);
    // expected clock advance per record: the regular gaps plus the forward jumps below
    let span = sc.records_per_partition as u64 * (sc.mean_gap_ms * 8 / 10 + 25);
    let drift_ms = (span / (sc.keys - active + 1)).max(1);
    (0..parts)
        .map(|p| {
            // the largest time at or below `ts` in this partition's residue class
            let snap = |ts: u64| ts - (ts % parts + parts - p) % parts;
            let mut clock = snap(T0 + 20_000 + rng.below(5_000));
            let mut top: Option<u64> = None;
            let mut lines = Vec::with_capacity(sc.records_per_partition);
            for _ in 0..sc.records_per_partition {
                if rng.chance(0.01) {
                    lines.push((String::new(), Record::Blank));
                    continue;
                }
                if rng.chance(0.02) {
                    lines.push(malformed(&mut rng, clock));
                    continue;
                }
                if !rng.chance(0.3) {
                    clock = snap(clock + rng.below(2 * sc.mean_gap_ms + 1));
                }
                let reference = top.unwrap_or(clock);
                let ts = match rng.below(100) {
                    0..=69 => clock,
                    70..=81 => snap(reference - rng.below(LATENESS_MS + 1)),
                    82..=85 => reference - LATENESS_MS,
                    86..=88 => snap(reference - LATENESS_MS - 1),
                    89..=93 => snap(reference - LATENESS_MS - 1 - rng.below(30_000)),
                    94..=98 => {
                        clock = snap(clock.max(reference) + 1 + rng.below(4 * sc.mean_gap_ms));
                        clock
                    }
                    _ => {
                        clock = snap(clock.max(reference) + 1 + rng.below(5_000));
                        clock
                    }
                };
                top = Some(top.map_or(ts, |t| t.max(ts)));
                let id = (clock - T0) / drift_ms + rng.below(active);
                let (entity, entity_json) = if id.is_multiple_of(3) {
                    let json = if rng.chance(0.5) {
                        json!(id)
                    } else {
                        json!(id.to_string())
                    };
                    (id.to_string(), json)
                } else {
                    let name = format!("u{id}");
                    (name.clone(), json!(name))
                };
                let event = Event {
                    entity,
                    ts,
                    amount: 0.0,
                    merchant: Scalar::Null,
                    country: Scalar::Null,
                };
                lines.push(valid(&mut rng, event, entity_json));
            }
            lines
        })
        .collect()
}

fn valid(rng: &mut Rng, mut event: Event, entity: Value) -> (String, Record) {
    let mut obj = serde_json::Map::new();
    obj.insert("user".into(), entity);
    let ts = if rng.chance(0.05) {
        let offset = [0, 60, -300, 330][rng.below(4) as usize];
        json!(rfc3339(event.ts, offset))
    } else {
        json!(event.ts)
    };
    obj.insert("ts".into(), ts);
    // below 1000: larger means with a small spread hit the stddev bug pinned down by
    // `stddev_of_large_nearly_equal_values`
    let amount = match rng.below(20) {
        0..=10 => json!(rng.below(100_000) as f64 / 100.0),
        11..=12 => json!(-((1 + rng.below(5_000)) as f64) / 100.0),
        13 => json!(0),
        14..=15 => json!(rng.below(50)),
        _ => json!([10.5, 99.99, 0.1][rng.below(3) as usize]),
    };
    event.amount = amount.as_f64().unwrap_or(f64::NAN);
    obj.insert("amount".into(), amount);
    let merchant = match rng.below(20) {
        0..=13 => Some(json!(format!("m{}", rng.below(12)))),
        14..=15 => Some(json!(rng.below(5))),
        16 => Some(json!(rng.chance(0.5))),
        17 => Some(Value::Null),
        _ => None,
    };
    let country = match rng.below(20) {
        0..=11 => Some(json!(["US", "FR", "DE", "GB"][rng.below(4) as usize])),
        12..=13 => Some(json!(rng.below(3))),
        14 => Some(json!(rng.chance(0.5))),
        15 => Some(Value::Null),
        _ => None,
    };
    for (name, value, slot) in [
        ("merchant", merchant, &mut event.merchant),
        ("country", country, &mut event.country),
    ] {
        if let Some(v) = value {
            *slot = match &v {
                Value::String(s) => Scalar::Str(s.clone()),
                Value::Number(n) => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
                Value::Bool(b) => Scalar::Bool(*b),
                _ => Scalar::Null,
            };
            obj.insert(name.into(), v);
        }
    }
    if rng.chance(0.1) {
        obj.insert("extra".into(), json!({"nested": [1, {"deep": null}]}));
    }
    let mut text = Value::Object(obj).to_string();
    if rng.chance(0.02) {
        text = format!("  {text} \t");
    }
    (text, Record::Valid(event))
}

fn malformed(rng: &mut Rng, ts: u64) -> (String, Record) {
    let (text, reason) = match rng.below(12) {
        0 => (format!(r#"{{"user":"u1","ts":{ts},"#), "not valid JSON"),
        1 => ("[1,2,3]".to_owned(), "expected a JSON object"),
        2 => ("42".to_owned(), "expected a JSON object"),
        3 => (
            format!(r#"{{"ts":{ts},"amount":1}}"#),
            "missing field `user`",
        ),
        4 => (
            r#"{"user":"u1","amount":1}"#.to_owned(),
            "missing field `ts`",
        ),
        5 => (
            format!(r#"{{"user":"u1","ts":{ts}}}"#),
            "missing field `amount`",
        ),
        6 => (
            format!(r#"{{"user":"u1","ts":{ts},"amount":"12"}}"#),
            "field `amount`: expected a number, found a string",
        ),
        7 => (
            r#"{"user":"u1","ts":true,"amount":1}"#.to_owned(),
            "field `ts`: expected epoch milliseconds",
        ),
        8 => (
            r#"{"user":"u1","ts":"not-a-time","amount":1}"#.to_owned(),
            "field `ts`: `not-a-time` is not an RFC 3339 time",
        ),
        9 => (
            format!(r#"{{"user":1.5,"ts":{ts},"amount":1}}"#),
            "field `user`: expected a string or an integer, found a number",
        ),
        10 => (
            format!(r#"{{"user":"u1","ts":{ts},"amount":1,"merchant":["m1"]}}"#),
            "field `merchant`: expected a string, number or boolean, found an array",
        ),
        _ => (
            format!(r#"{{"user":"u1","ts":{ts},"amount":1,"country":{{"iso":"FR"}}}}"#),
            "field `country`: expected a string, number or boolean, found an object",
        ),
    };
    (text, Record::Malformed(reason))
}

// ---------------------------------------------------------------------------------------------
// The oracle: a batch recomputation from the stated semantics.

/// An accepted event and where it came from.
struct Accepted<'a> {
    event: &'a Event,
    partition: u64,
    line: u64,
}

/// A feature value the output must hold.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Exact(Value),
    /// A quantile: within [`QUANTILE_TOLERANCE`] of this value (null when empty).
    Quantile(Value),
}

impl Want {
    fn mismatch(&self, got: &Value) -> Option<String> {
        match self {
            Self::Exact(w) => value_mismatch(got, w, None),
            Self::Quantile(w) => value_mismatch(got, w, Some(QUANTILE_TOLERANCE)),
        }
    }
}

#[derive(Default)]
struct Expected {
    t_end: u64,
    events: u64,
    late: u64,
    rejected: u64,
    /// (view, entity) -> feature -> value.
    features: BTreeMap<(String, String), BTreeMap<String, Want>>,
    /// (view, entity, feature, start, end) -> value.
    changelog: BTreeMap<(String, String, String, u64, u64), Want>,
    /// (partition, offset) -> (reason prefix, record).
    dead_letters: BTreeMap<(u64, u64), (String, String)>,
}

fn aggregate(agg: Agg, field: Option<Field>, events: &[&Accepted<'_>]) -> Want {
    let numbers = || -> Vec<f64> {
        events
            .iter()
            .filter_map(|a| match field.map(|f| a.event.field(f)) {
                Some(Scalar::Num(n)) => Some(n),
                _ => None,
            })
            .collect()
    };
    let real = |x: Option<f64>| Want::Exact(x.map_or(Value::Null, |x| json!(x)));
    match agg {
        Agg::Count => Want::Exact(json!(events.len())),
        Agg::CountDistinct | Agg::ApproxCountDistinct => {
            let distinct: BTreeSet<String> = events
                .iter()
                .filter_map(|a| field.and_then(|f| a.event.field(f).distinct_key()))
                .collect();
            Want::Exact(json!(distinct.len()))
        }
        Agg::Sum => {
            let xs = numbers();
            real((!xs.is_empty()).then(|| xs.iter().sum()))
        }
        Agg::Mean => {
            let xs = numbers();
            real((!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64))
        }
        Agg::Min => real(numbers().into_iter().reduce(f64::min)),
        Agg::Max => real(numbers().into_iter().reduce(f64::max)),
        Agg::Stddev => {
            let xs = numbers();
            real((!xs.is_empty()).then(|| {
                let n = xs.len() as f64;
                let mean = xs.iter().sum::<f64>() / n;
                (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
            }))
        }
        Agg::Quantile(q) => {
            let mut xs = numbers();
            xs.sort_by(f64::total_cmp);
            let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len().max(1));
            Want::Quantile(xs.get(rank - 1).map_or(Value::Null, |x| json!(x)))
        }
        Agg::Last => {
            let latest = events
                .iter()
                .max_by_key(|a| (a.event.ts, a.partition, a.line));
            Want::Exact(latest.map_or(Value::Null, |a| {
                field.map_or(Value::Null, |f| a.event.field(f).json())
            }))
        }
    }
}

fn oracle(views: &[View], parts: &[Vec<(String, Record)>], late_policy: &str) -> Expected {
    let mut exp = Expected::default();
    let mut accepted: Vec<Accepted<'_>> = Vec::new();
    for (p, lines) in parts.iter().enumerate() {
        let mut clock: Option<u64> = None;
        for (i, (text, record)) in lines.iter().enumerate() {
            let at = (p as u64, i as u64 + 1);
            match record {
                Record::Blank => {}
                Record::Malformed(reason) => {
                    exp.rejected += 1;
                    exp.dead_letters
                        .insert(at, ((*reason).to_owned(), text.trim().to_owned()));
                }
                Record::Valid(e) => match clock {
                    Some(c) if e.ts + LATENESS_MS < c => {
                        exp.late += 1;
                        if late_policy == "dead_letter" {
                            let reason = format!(
                                "late: event time {} is more than {LATENESS_MS} ms behind its \
                                 partition's clock {c}",
                                e.ts
                            );
                            exp.dead_letters
                                .insert(at, (reason, text.trim().to_owned()));
                        }
                    }
                    _ => {
                        clock = Some(clock.map_or(e.ts, |c| c.max(e.ts)));
                        exp.events += 1;
                        accepted.push(Accepted {
                            event: e,
                            partition: at.0,
                            line: at.1,
                        });
                    }
                },
            }
        }
    }
    let Some(t_end) = accepted.iter().map(|a| a.event.ts).max() else {
        return exp;
    };
    exp.t_end = t_end;
    let mut by_entity: BTreeMap<&str, Vec<&Accepted<'_>>> = BTreeMap::new();
    for a in &accepted {
        by_entity.entry(&a.event.entity).or_default().push(a);
    }
    for view in views {
        for (entity, events) in &by_entity {
            let latest = events.iter().map(|a| a.event.ts).max().unwrap_or(0);
            let expired = view.ttl_ms.is_some_and(|ttl| t_end - latest >= ttl);
            let mut values = BTreeMap::new();
            for f in &view.features {
                let inside: Vec<&Accepted<'_>> = match f.window {
                    Window::Unbounded => events.clone(),
                    Window::Continuous(l) => events
                        .iter()
                        .copied()
                        .filter(|a| a.event.ts + l > t_end)
                        .collect(),
                    Window::Hopping { length, slide } => {
                        let end = t_end - t_end % slide;
                        events
                            .iter()
                            .copied()
                            .filter(|a| a.event.ts + length > end && a.event.ts < end)
                            .collect()
                    }
                };
                values.insert(f.name.to_owned(), aggregate(f.agg, f.field, &inside));
                if let Window::Hopping { length, slide } = f.window {
                    let mut windows: BTreeMap<u64, Vec<&Accepted<'_>>> = BTreeMap::new();
                    for a in events {
                        let mut start = a.event.ts - a.event.ts % slide;
                        while start + length > a.event.ts {
                            if start + length <= t_end {
                                windows.entry(start).or_default().push(a);
                            }
                            start -= slide;
                        }
                    }
                    for (start, members) in windows {
                        exp.changelog.insert(
                            (
                                view.name.to_owned(),
                                (*entity).to_owned(),
                                f.name.to_owned(),
                                start,
                                start + length,
                            ),
                            aggregate(f.agg, f.field, &members),
                        );
                    }
                }
            }
            if !expired {
                exp.features
                    .insert((view.name.to_owned(), (*entity).to_owned()), values);
            }
        }
    }
    exp
}

// ---------------------------------------------------------------------------------------------
// Comparison.

const MAX_REPORTED: usize = 25;

fn compare(exp: &Expected, got: &ReplayOutput, problems: &mut Vec<String>) {
    for (field, want) in [
        ("events", exp.events),
        ("late", exp.late),
        ("rejected", exp.rejected),
    ] {
        if got.summary[field].as_u64() != Some(want) {
            problems.push(format!(
                "summary `{field}`: got {}, want {want}",
                got.summary[field]
            ));
        }
    }

    let mut features: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for line in &got.features {
        let key = (
            string(line, "view").to_owned(),
            string(line, "entity").to_owned(),
        );
        if int(line, "as_of") != exp.t_end {
            problems.push(format!(
                "as_of {} != t_end {}: {line}",
                line["as_of"], exp.t_end
            ));
        }
        if features.insert(key.clone(), line).is_some() {
            problems.push(format!("features.jsonl: {key:?} twice"));
        }
    }
    for (key, wants) in &exp.features {
        let Some(line) = features.get(key) else {
            problems.push(format!("features.jsonl: missing {key:?}"));
            continue;
        };
        for (name, want) in wants {
            let got = &line["features"][name];
            if let Some(m) = want.mismatch(got) {
                problems.push(format!("feature {key:?} {name}: {m}"));
            }
        }
    }
    for key in features.keys().filter(|k| !exp.features.contains_key(*k)) {
        problems.push(format!(
            "features.jsonl: unexpected {key:?} (expired or unknown)"
        ));
    }

    let mut changelog: BTreeMap<(String, String, String, u64, u64), &Value> = BTreeMap::new();
    for line in &got.changelog {
        let key = (
            string(line, "view").to_owned(),
            string(line, "entity").to_owned(),
            string(line, "feature").to_owned(),
            int(line, "window_start"),
            int(line, "window_end"),
        );
        if changelog.insert(key.clone(), &line["value"]).is_some() {
            problems.push(format!("changelog: {key:?} reported twice"));
        }
    }
    for (key, want) in &exp.changelog {
        match changelog.get(key) {
            None => problems.push(format!("changelog: missing {key:?}, want {want:?}")),
            Some(got) => {
                if let Some(m) = want.mismatch(got) {
                    problems.push(format!("changelog {key:?}: {m}"));
                }
            }
        }
    }
    for (key, value) in changelog
        .iter()
        .filter(|(k, _)| !exp.changelog.contains_key(*k))
    {
        problems.push(format!("changelog: unexpected {key:?} = {value}"));
    }

    let mut letters: BTreeMap<(u64, u64), &Value> = BTreeMap::new();
    for line in &got.dead_letters {
        if string(line, "source") != SOURCE {
            problems.push(format!("dead letter from another source: {line}"));
        }
        letters.insert((int(line, "partition"), int(line, "offset")), line);
    }
    if letters.len() != got.dead_letters.len() {
        problems.push("dead_letter.jsonl: a (partition, offset) appears twice".to_owned());
    }
    for (at, (reason, record)) in &exp.dead_letters {
        match letters.get(at) {
            None => problems.push(format!("dead letter {at:?} missing ({reason}: {record})")),
            Some(line) => {
                if !string(line, "reason").starts_with(reason.as_str()) {
                    problems.push(format!(
                        "dead letter {at:?}: reason {}, want {reason}",
                        line["reason"]
                    ));
                }
                if string(line, "record") != record {
                    problems.push(format!(
                        "dead letter {at:?}: record {}, want {record}",
                        line["record"]
                    ));
                }
            }
        }
    }
    for (at, line) in letters
        .iter()
        .filter(|(at, _)| !exp.dead_letters.contains_key(*at))
    {
        problems.push(format!("unexpected dead letter {at:?}: {line}"));
    }
}

/// The lines of an output file as canonical JSON text (object keys sorted), sorted.
fn canonical(lines: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = lines.iter().map(Value::to_string).collect();
    out.sort();
    out
}

fn same_output(a: &ReplayOutput, b: &ReplayOutput, problems: &mut Vec<String>) {
    for (name, x, y) in [
        ("features.jsonl", &a.features, &b.features),
        ("changelog.jsonl", &a.changelog, &b.changelog),
        ("dead_letter.jsonl", &a.dead_letters, &b.dead_letters),
    ] {
        let (x, y) = (canonical(x), canonical(y));
        if x != y {
            let only_a: Vec<&String> = x.iter().filter(|l| !y.contains(l)).take(3).collect();
            let only_b: Vec<&String> = y.iter().filter(|l| !x.contains(l)).take(3).collect();
            problems.push(format!(
                "{name} differs between 1 and 3 workers: only with 1: {only_a:?}; only with 3: {only_b:?}"
            ));
        }
    }
}

fn write_partitions(dir: &Path, parts: &[Vec<(String, Record)>]) -> Vec<(&'static str, PathBuf)> {
    parts
        .iter()
        .enumerate()
        .map(|(p, lines)| {
            let path = dir.join(format!("part{p}.jsonl"));
            let mut text = String::new();
            for (line, _) in lines {
                text.push_str(line);
                text.push('\n');
            }
            std::fs::write(&path, text).expect("write input");
            (SOURCE, path)
        })
        .collect()
}

fn run_scenario(sc: &Scenario) {
    run_scenario_with(sc, &views());
}

fn run_scenario_with(sc: &Scenario, views: &[View]) {
    let parts = generate(sc);
    let exp = oracle(views, &parts, sc.late_policy);
    let dir = tempfile::Builder::new()
        .prefix("freshet-oracle-")
        .tempdir()
        .expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml(views, sc.late_policy)).expect("write pipeline");
    let inputs = write_partitions(dir.path(), &parts);

    let mut problems = Vec::new();
    let one = replay(&pipeline, &inputs, 1, &dir.path().join("out1"));
    let three = replay(&pipeline, &inputs, 3, &dir.path().join("out3"));
    for (workers, got) in [(1, &one), (3, &three)] {
        let mut found = Vec::new();
        compare(&exp, got, &mut found);
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("[{workers} workers] {p}")),
        );
    }
    same_output(&one, &three, &mut problems);

    // the scenario must exercise what it claims to
    assert!(
        exp.events > 0 && exp.late > 0 && exp.rejected > 0,
        "{sc:?}: degenerate stream"
    );
    if problems.is_empty() {
        return;
    }
    let kept = dir.keep();
    let shown: Vec<&String> = problems.iter().take(MAX_REPORTED).collect();
    panic!(
        "{sc:?}: {} differences from the oracle (inputs and outputs kept in {}):\n{}",
        problems.len(),
        kept.display(),
        shown
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[test]
fn few_keys_one_partition_dense_duplicates() {
    for seed in 1..=3 {
        run_scenario(&Scenario {
            seed,
            partitions: 1,
            records_per_partition: 400,
            keys: 4,
            mean_gap_ms: 300,
            late_policy: "dead_letter",
        });
    }
}

#[test]
fn two_partitions_late_events_dropped() {
    for seed in 11..=13 {
        run_scenario(&Scenario {
            seed,
            partitions: 2,
            records_per_partition: 400,
            keys: 30,
            mean_gap_ms: 500,
            late_policy: "drop",
        });
    }
}

#[test]
fn four_partitions_few_keys() {
    run_scenario(&Scenario {
        seed: 21,
        partitions: 4,
        records_per_partition: 300,
        keys: 6,
        mean_gap_ms: 700,
        late_policy: "dead_letter",
    });
}

#[test]
fn mid_stream_watermarks_many_keys() {
    let sc = Scenario {
        seed: 31,
        partitions: 2,
        records_per_partition: MID_STREAM_RECORDS + 900,
        keys: 200,
        mean_gap_ms: 40,
        late_policy: "dead_letter",
    };
    run_scenario(&sc);
}

#[test]
fn mid_stream_watermarks_four_partitions_drop() {
    run_scenario(&Scenario {
        seed: 41,
        partitions: 4,
        records_per_partition: MID_STREAM_RECORDS + 300,
        keys: 60,
        mean_gap_ms: 60,
        late_policy: "drop",
    });
}

#[test]
fn mid_stream_watermarks_one_partition_few_keys() {
    run_scenario(&Scenario {
        seed: 51,
        partitions: 1,
        records_per_partition: 2 * MID_STREAM_RECORDS + 500,
        keys: 12,
        mean_gap_ms: 25,
        late_policy: "dead_letter",
    });
}

#[test]
fn extra_seeds() {
    let extra: u64 = std::env::var("FRESHET_ORACLE_EXTRA_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for i in 0..extra {
        let mut rng = Rng(0x5eed ^ i);
        let partitions = [1, 2, 4][rng.below(3) as usize];
        run_scenario(&Scenario {
            seed: rng.next(),
            partitions,
            records_per_partition: 200 + rng.below(6_000) as usize,
            keys: 2 + rng.below(300),
            mean_gap_ms: 10 + rng.below(600),
            late_policy: if rng.chance(0.5) {
                "drop"
            } else {
                "dead_letter"
            },
        });
    }
}

#[test]
fn rfc3339_formatting_round_trips_known_instants() {
    assert_eq!(rfc3339(T0, 0), "2026-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(T0 + 3_250, -300), "2025-12-31T19:00:03.250-05:00");
    assert_eq!(
        rfc3339(951_782_400_000, 330),
        "2000-02-29T05:30:00.000+05:30"
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: minimal reproductions of bugs found by the cases above.

/// Same oracle with a ttl shorter than the windows: the ttl sweep that runs mid-stream must not
/// drop window state the spec still counts (see `ttl_sweep_mid_stream_drops_window_state`).
#[test]
fn ttl_shorter_than_windows() {
    let views = vec![View {
        name: "short_ttl",
        ttl_ms: Some(3_000),
        features: vec![
            feature("n_1m", Agg::Count, None, Window::Continuous(60_000)),
            feature(
                "sum_1m",
                Agg::Sum,
                Some(Field::Amount),
                Window::Continuous(60_000),
            ),
            feature(
                "n_20s_hop",
                Agg::Count,
                None,
                Window::Hopping {
                    length: 20_000,
                    slide: 5_000,
                },
            ),
            feature(
                "last_country",
                Agg::Last,
                Some(Field::Country),
                Window::Unbounded,
            ),
            feature(
                "last_merchant",
                Agg::Last,
                Some(Field::Merchant),
                Window::Unbounded,
            ),
        ],
    }];
    run_scenario_with(
        &Scenario {
            seed: 61,
            partitions: 1,
            records_per_partition: 2 * MID_STREAM_RECORDS + 500,
            keys: 12,
            mean_gap_ms: 25,
            late_policy: "dead_letter",
        },
        &views,
    );
}

/// ttl 3s, a 1m continuous and a 10s tumbling count, lateness 0, one partition:
/// `c@1s, a@1s, b@5s x4094` (one read batch: the head reaches 5s and the ttl sweep removes a
/// and c, 4s old), then `a@7.5s, b@10s`. At the end (t_end = 10s) the spec gives: a (2.5s old)
/// n_1m = 2 and n_10s = 2 for [0, 10s); c has left the store but its closed window [0, 10s)
/// held one event, so the changelog has it. (An earlier sweep dropped c's window and, depending
/// on scheduling, a's first event.)
#[test]
fn ttl_sweep_mid_stream_drops_window_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[[source]]\nname = \"events\"\nentity = \"user\"\nevent_time = \"ts\"\n\n\
         [[feature_view]]\nname = \"v\"\nsource = \"events\"\nttl = \"3s\"\nfeatures = [\n\
         { name = \"n_1m\", agg = \"count\", window = \"1m\" },\n\
         { name = \"n_10s\", agg = \"count\", window = \"10s\", slide = \"10s\" },\n]\n",
    )
    .expect("write pipeline");
    let event = |user: &str, at: u64| format!(r#"{{"user":"{user}","ts":{}}}"#, T0 + at);
    let mut lines = vec![event("c", 1_000), event("a", 1_000)];
    lines.extend(std::iter::repeat_n(
        event("b", 5_000),
        MID_STREAM_RECORDS - 2,
    ));
    lines.extend([event("a", 7_500), event("b", 10_000)]);
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    for workers in [1, 3] {
        let out = replay(
            &pipeline,
            &[(SOURCE, input.clone())],
            workers,
            &dir.path().join(format!("out{workers}")),
        );
        let window = |entity: &str| {
            out.changelog
                .iter()
                .find(|l| l["entity"] == entity)
                .map(|l| l["value"].clone())
        };
        assert_eq!(
            window("c"),
            Some(json!(1)),
            "[{workers} workers] c's closed window"
        );
        assert_eq!(
            window("a"),
            Some(json!(2)),
            "[{workers} workers] a's closed window"
        );
        let a = out
            .features
            .iter()
            .find(|l| l["entity"] == "a")
            .expect("a in the store");
        assert_eq!(
            a["features"],
            json!({"n_1m": 2, "n_10s": 2}),
            "[{workers} workers]"
        );
        assert!(
            out.features.iter().all(|l| l["entity"] != "c"),
            "c has expired"
        );
    }
}

/// Population stddev of values with a large mean and a small spread (money amounts such as
/// 123456.78): a plain `sqrt(Σx²/n - mean²)` cancels catastrophically (123456.78, 123456.79 →
/// 0.004784 instead of 0.005; 1000000.01, .02, .03 → 0.0 instead of 0.008165), in continuous
/// and tumbling windows alike; the result must stay within 1e-9 relative / 1e-6 absolute.
#[test]
fn stddev_of_large_nearly_equal_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[[source]]\nname = \"events\"\nentity = \"user\"\nevent_time = \"ts\"\n\n\
         [[feature_view]]\nname = \"v\"\nsource = \"events\"\nfeatures = [\n\
         { name = \"std_1h\", agg = \"stddev\", field = \"amount\", window = \"1h\" },\n\
         { name = \"std_10s\", agg = \"stddev\", field = \"amount\", window = \"10s\", slide = \"10s\" },\n]\n",
    )
    .expect("write pipeline");
    let cases: [(&str, &[f64], f64); 3] = [
        ("f", &[123_456.78, 123_456.79], 0.004_999_999_997_380_655),
        (
            "g",
            &[1_000_000.01, 1_000_000.02, 1_000_000.03],
            0.008_164_965_816_881_477,
        ),
        ("h", &[10_000.1, 10_000.2], 0.050_000_000_000_181_9),
    ];
    let mut lines = Vec::new();
    for (user, values, _) in &cases {
        for v in *values {
            lines.push(json!({"user": user, "ts": T0 + 1_000, "amount": v}).to_string());
        }
    }
    lines.push(json!({"user": "z", "ts": T0 + 10_000, "amount": 1}).to_string());
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    let out = replay(&pipeline, &[(SOURCE, input)], 1, &dir.path().join("out"));
    let mut problems = Vec::new();
    for (user, _, want) in &cases {
        let continuous = out
            .features
            .iter()
            .find(|l| l["entity"] == *user)
            .map(|l| l["features"]["std_1h"].clone());
        let tumbling = out
            .changelog
            .iter()
            .find(|l| l["entity"] == *user)
            .map(|l| l["value"].clone());
        for (what, got) in [("std_1h", continuous), ("std_10s", tumbling)] {
            if let Some(m) = value_mismatch(&got.unwrap_or(Value::Null), &json!(want), None) {
                problems.push(format!("{user} {what}: {m}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// approx_count_distinct is exact up to 4096 distinct values and within the HyperLogLog error
/// (1.04/sqrt(16384) ≈ 0.81 %; 4 standard errors allowed) above.
#[test]
fn approx_count_distinct_around_the_sparse_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[[source]]\nname = \"events\"\nentity = \"user\"\nevent_time = \"ts\"\n\n\
         [[feature_view]]\nname = \"v\"\nsource = \"events\"\nfeatures = [\n\
         { name = \"exact\", agg = \"count_distinct\", field = \"merchant\", window = \"1h\" },\n\
         { name = \"approx\", agg = \"approx_count_distinct\", field = \"merchant\", window = \"1h\" },\n]\n",
    )
    .expect("write pipeline");
    let sizes = [("sparse", 4_096u64), ("dense", 6_000)];
    let mut lines = Vec::new();
    for i in 0..6_000u64 {
        for (user, n) in sizes {
            if i < n {
                // each value twice, as a string and once more: duplicates must not count
                let merchant = format!("m{i}");
                lines.push(json!({"user": user, "ts": T0 + i, "merchant": merchant}).to_string());
                if i % 7 == 0 {
                    lines.push(
                        json!({"user": user, "ts": T0 + i, "merchant": merchant}).to_string(),
                    );
                }
            }
        }
    }
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    let out = replay(&pipeline, &[(SOURCE, input)], 3, &dir.path().join("out"));
    for (user, n) in sizes {
        let line = out
            .features
            .iter()
            .find(|l| l["entity"] == user)
            .unwrap_or_else(|| panic!("{user} missing"));
        assert_eq!(line["features"]["exact"], json!(n), "{line}");
        let approx = int(&line["features"], "approx");
        if n <= 4_096 {
            assert_eq!(approx, n, "{line}");
        } else {
            let error = (approx as f64 - n as f64).abs() / n as f64;
            assert!(error <= 4.0 * 0.0081, "{user}: estimate {approx} for {n}");
        }
    }
}
