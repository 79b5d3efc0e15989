//! Prequential run over the `gen.py learn` workload (learn.csv: x0..x{D-1},y), rows parsed into
//! memory first, like the peers; prints one JSON line.
//!
//! ```text
//! cargo run --release -p freshet-learn --example prequential -- --data /tmp/wl-learn \
//!     [--kind logistic_regression|mlp] [--optimizer '{ kind = "adam", lr = 0.01 }'] \
//!     [--batch 1] [--hidden 32,16] [--engine auto|candle] [--rows N] [--repeat 1] \
//!     [--set 'publish_every = 100']
//! ```
//!
//! Timed: `Learner::prequential` over chunks of 10000 rows (the `summary()` calls between chunks
//! are not). Figures: rows/s by wall clock and by this thread's CPU time (`rows_per_cpu_s`,
//! meaningful when other work shares the cores; it leaves out candle's worker threads),
//! cumulative log loss, accuracy and AUC, and the rolling (100000-row window) figures at rows
//! 500000 (rows 400000-500000) and 600000 (rows 500000-600000): the peers' `pre_drift` and
//! `post_drift` segments. `--set 'key = value'` adds a line to the `[[model]]` table.

use std::error::Error;
use std::time::{Duration, Instant};

use freshet_core::model::ModelSpec;
use freshet_learn::{EngineChoice, Example, Learner, LearnerOptions, MetricValues};

const CHUNK: usize = 10_000;
const SEGMENT: usize = 100_000;

struct Args {
    data: String,
    kind: String,
    optimizer: String,
    batch: usize,
    hidden: Option<String>,
    engine: EngineChoice,
    rows: Option<usize>,
    repeat: usize,
    extra: String,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        data: "/tmp/wl-learn".into(),
        kind: "logistic_regression".into(),
        optimizer: String::new(),
        batch: 1,
        hidden: None,
        engine: EngineChoice::Auto,
        rows: None,
        repeat: 1,
        extra: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = value()?,
            "--kind" => a.kind = value()?,
            "--optimizer" => a.optimizer = value()?,
            "--batch" => a.batch = value()?.parse()?,
            "--hidden" => a.hidden = Some(value()?),
            "--engine" => {
                a.engine = match value()?.as_str() {
                    "candle" => EngineChoice::Candle,
                    _ => EngineChoice::Auto,
                }
            }
            "--rows" => a.rows = Some(value()?.parse()?),
            "--repeat" => a.repeat = value()?.parse()?,
            "--set" => {
                a.extra.push_str(&value()?);
                a.extra.push('\n');
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

fn load(path: &str, rows: Option<usize>) -> Result<(Vec<String>, Vec<Example>), Box<dyn Error>> {
    let text = std::fs::read_to_string(format!("{path}/learn.csv"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty learn.csv")?.split(',').collect();
    let inputs: Vec<String> = header[..header.len() - 1]
        .iter()
        .map(|h| format!("samples.{h}"))
        .collect();
    let mut out = Vec::new();
    for line in lines.take(rows.unwrap_or(usize::MAX)) {
        let cells: Vec<f64> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let (x, y) = cells.split_at(cells.len() - 1);
        #[allow(clippy::cast_possible_truncation)]
        out.push(Example::dense(x, y[0] as f32));
    }
    Ok((inputs, out))
}

/// CPU time of this thread, from Linux's schedstat (None elsewhere): the rate on one core even
/// when other processes share the machine.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn values_json(v: &MetricValues) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn main() -> Result<(), Box<dyn Error>> {
    let a = args()?;
    let t0 = Instant::now();
    let (inputs, rows) = load(&a.data, a.rows)?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut toml = format!(
        "name = \"bench\"\nkind = \"{}\"\nfeatures = [\"samples.x*\"]\nlabel = {{ field = \"y\" }}\nbatch_size = {}\nrolling_window = {SEGMENT}\n",
        a.kind, a.batch
    );
    if !a.optimizer.is_empty() {
        toml.push_str(&format!("optimizer = {}\n", a.optimizer));
    }
    if let Some(h) = &a.hidden {
        toml.push_str(&format!("hidden = [{h}]\n"));
    }
    toml.push_str(&a.extra);
    let spec: ModelSpec = toml::from_str(&toml)?;
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    let mut last = String::new();
    for _ in 0..a.repeat {
        let options = LearnerOptions {
            engine: a.engine,
            checkpoint_dir: None,
        };
        let mut learner = Learner::with_options(&spec, inputs.clone(), options)?;
        let mut busy = Duration::ZERO;
        let mut cpu = Duration::ZERO;
        let mut pre = None;
        let mut post = None;
        for (i, chunk) in rows.chunks(CHUNK).enumerate() {
            let started = Instant::now();
            let cpu_started = thread_cpu();
            learner.prequential(chunk)?;
            busy += started.elapsed();
            if let (Some(a), Some(b)) = (cpu_started, thread_cpu()) {
                cpu += b.saturating_sub(a);
            }
            let done = (i + 1) * CHUNK;
            if done == 5 * SEGMENT {
                pre = Some(learner.metrics().rolling());
            } else if done == 6 * SEGMENT {
                post = Some(learner.metrics().rolling());
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = rows.len() as f64 / busy.as_secs_f64();
        rates.push(rate);
        #[allow(clippy::cast_precision_loss)]
        cpu_rates.push(rows.len() as f64 / cpu.as_secs_f64());
        let s = learner.summary();
        last = format!(
            "\"native\":{},\"updates\":{},\"all\":{},\"pre_drift\":{},\"post_drift\":{}",
            learner.is_native(),
            s.updates,
            values_json(&s.cumulative),
            pre.as_ref().map_or("null".into(), values_json),
            post.as_ref().map_or("null".into(), values_json),
        );
    }
    rates.sort_by(f64::total_cmp);
    cpu_rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let cpu_median = cpu_rates[cpu_rates.len() / 2];
    let optimizer = serde_json::to_string(&spec.optimizer)?;
    println!(
        "{{\"system\":\"freshet\",\"kind\":\"{}\",\"optimizer\":{optimizer},\"batch\":{},\"rows\":{},\"rows_per_s\":{median:.0},\"rows_per_cpu_s\":{cpu_median:.0},\"rows_per_s_runs\":{rates:.0?},\"load_s\":{load_s:.2},{last}}}",
        a.kind,
        a.batch,
        rows.len()
    );
    Ok(())
}
