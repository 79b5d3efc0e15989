//! JSON-lines sinks for closed windows, drift results and dead letters, the features dump, and
//! process stats.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use freshet_core::drift::{DriftAlert, DriftWindow};
use freshet_core::store::FeatureValue;
use freshet_core::store::OnlineStore;
use freshet_features::source::DeadLetter;
use freshet_features::window::ClosedWindow;
use freshet_features::{ChangelogSink, DeadLetterSink, DriftSink};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// One line of changelog.jsonl.
#[derive(Serialize)]
struct ChangelogLine<'a> {
    view: &'a str,
    entity: &'a str,
    feature: &'a str,
    window_start: u64,
    window_end: u64,
    value: &'a FeatureValue,
}

/// A JSON-lines file shared by the workers; the first write error is kept and reported.
pub struct JsonLines {
    writer: Mutex<(BufWriter<File>, Option<std::io::Error>)>,
}

impl JsonLines {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            writer: Mutex::new((BufWriter::with_capacity(1 << 20, file), None)),
        })
    }

    fn write_lines(&self, lines: impl Iterator<Item = Value>) {
        self.write_records(lines);
    }

    fn write_records<T: Serialize>(&self, lines: impl Iterator<Item = T>) {
        let Ok(mut guard) = self.writer.lock() else {
            return;
        };
        let (writer, error) = &mut *guard;
        if error.is_some() {
            return;
        }
        for line in lines {
            let result = serde_json::to_writer(&mut *writer, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| writer.write_all(b"\n"));
            if let Err(e) = result {
                *error = Some(e);
                return;
            }
        }
    }

    /// Flushes the file and reports the first error of any write.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| anyhow::anyhow!("output writer poisoned"))?;
        let (writer, error) = &mut *guard;
        if let Some(e) = error.take() {
            return Err(e.into());
        }
        writer.flush()?;
        Ok(())
    }
}

impl ChangelogSink for JsonLines {
    fn write(&self, windows: &[ClosedWindow]) {
        self.write_records(windows.iter().map(|w| ChangelogLine {
            view: &w.view,
            entity: &w.entity,
            feature: &w.feature,
            window_start: w.window_start_ms,
            window_end: w.window_end_ms,
            value: &w.value,
        }));
    }
}

impl DeadLetterSink for JsonLines {
    fn write(&self, letter: DeadLetter) {
        self.write_lines(std::iter::once(dead_letter_json(&letter)));
    }
}

/// The JSON form of a drift window (a `"kind":"window"` line of drift.jsonl).
pub fn drift_window_json(w: &DriftWindow) -> Value {
    json!({
        "kind": "window",
        "monitor": w.monitor,
        "feature": w.feature,
        "window_start": w.window_start_ms,
        "window_end": w.window_end_ms,
        "count": w.count,
        "missing": w.missing,
        "measures": w.measures,
    })
}

/// The JSON form of an alert transition (a `"kind":"alert"` line of drift.jsonl).
pub fn drift_alert_json(a: &DriftAlert) -> Value {
    json!({
        "kind": "alert",
        "state": a.state_name(),
        "monitor": a.monitor,
        "feature": a.feature,
        "measure": a.measure.name(),
        "value": a.value,
        "threshold": a.threshold,
        "window_end": a.window_end_ms,
    })
}

/// drift.jsonl: evaluated windows and alert transitions, counted.
pub struct DriftLines {
    lines: JsonLines,
    /// Windows written.
    pub windows: AtomicU64,
    /// Alert transitions written.
    pub alerts: AtomicU64,
}

impl DriftLines {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            lines: JsonLines::create(path)?,
            windows: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
        })
    }

    /// Flushes the file and reports the first error of any write.
    pub fn finish(&self) -> anyhow::Result<()> {
        self.lines.finish()
    }
}

impl DriftSink for DriftLines {
    fn window(&self, window: &DriftWindow) {
        self.windows.fetch_add(1, Ordering::Relaxed);
        self.lines
            .write_lines(std::iter::once(drift_window_json(window)));
    }

    fn alert(&self, alert: &DriftAlert) {
        self.alerts.fetch_add(1, Ordering::Relaxed);
        self.lines
            .write_lines(std::iter::once(drift_alert_json(alert)));
    }
}

/// The JSON form of a dead letter.
pub fn dead_letter_json(letter: &DeadLetter) -> Value {
    json!({
        "source": letter.source,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason.to_string(),
        "record": String::from_utf8_lossy(&letter.record),
    })
}

/// The JSON form of one stored feature vector.
pub fn feature_json(
    store: &dyn OnlineStore,
    view: &str,
    entity: &str,
    vector: &freshet_core::store::FeatureVector,
) -> Value {
    let names = store.view(view).map(|s| s.features).unwrap_or_default();
    let features: Map<String, Value> = names
        .into_iter()
        .zip(&vector.values)
        .map(|(n, v)| (n, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    json!({"view": view, "entity": entity, "as_of": vector.as_of_ms, "features": features})
}

/// Writes every view of the store, one line per view and entity.
pub fn dump_features(store: &dyn OnlineStore, path: &Path) -> anyhow::Result<usize> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut lines = 0;
    let mut views = store.views();
    views.sort();
    for view in views {
        for (entity, vector) in store.scan(&view)? {
            serde_json::to_writer(&mut writer, &feature_json(store, &view, &entity, &vector))?;
            writer.write_all(b"\n")?;
            lines += 1;
        }
    }
    writer.flush()?;
    Ok(lines)
}

/// Peak resident set size of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
