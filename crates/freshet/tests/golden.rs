//! Golden cases: every directory under `tests/golden/` (workspace root) is replayed with 1 and 3
//! workers and its output compared, order-insensitively, with the hand-computed expected files.
//! The conventions are in `tests/golden/README.md`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{int, read_jsonl, replay, string, value_mismatch, ReplayOutput, QUANTILE_TOLERANCE};
use serde_json::Value;

const SOURCE: &str = "events";

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// Quantile features (`q` then a digit, e.g. `q50_10s`) hold a sketch's answer.
fn tolerance(feature: &str) -> Option<f64> {
    let mut chars = feature.chars();
    (chars.next() == Some('q') && chars.next().is_some_and(|c| c.is_ascii_digit()))
        .then_some(QUANTILE_TOLERANCE)
}

/// `input.jsonl` is partition 0, `input.N.jsonl` partition N.
fn inputs(case: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut numbered: Vec<(u32, PathBuf)> = std::fs::read_dir(case)
        .expect("read case directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let middle = name.strip_prefix("input")?.strip_suffix(".jsonl")?;
            let n = match middle {
                "" => 0,
                m => m.strip_prefix('.')?.parse().ok()?,
            };
            Some((n, p))
        })
        .collect();
    numbered.sort();
    for (i, (n, p)) in numbered.iter().enumerate() {
        assert_eq!(
            *n as usize,
            i,
            "{}: partitions must be numbered 0, 1, ...",
            p.display()
        );
    }
    numbered.into_iter().map(|(_, p)| (SOURCE, p)).collect()
}

fn keyed<K: Ord>(lines: &[Value], key: impl Fn(&Value) -> K) -> (BTreeMap<K, &Value>, bool) {
    let mut map = BTreeMap::new();
    let mut unique = true;
    for line in lines {
        unique &= map.insert(key(line), line).is_none();
    }
    (map, unique)
}

fn diff_features(got: &[Value], want: &[Value], problems: &mut Vec<String>) {
    let key = |l: &Value| (string(l, "view").to_owned(), string(l, "entity").to_owned());
    let (got, unique) = keyed(got, key);
    let (want, _) = keyed(want, key);
    if !unique {
        problems.push("features.jsonl holds an entity twice".into());
    }
    for (k, w) in &want {
        let Some(g) = got.get(k) else {
            problems.push(format!("features: missing {k:?}"));
            continue;
        };
        if g["as_of"] != w["as_of"] {
            problems.push(format!(
                "features {k:?}: as_of {}, want {}",
                g["as_of"], w["as_of"]
            ));
        }
        let (gf, wf) = (&g["features"], &w["features"]);
        for (name, wv) in wf.as_object().into_iter().flatten() {
            if let Some(m) = value_mismatch(&gf[name], wv, tolerance(name)) {
                problems.push(format!("features {k:?} {name}: {m}"));
            }
        }
        let extra: Vec<&String> = gf
            .as_object()
            .into_iter()
            .flatten()
            .map(|(n, _)| n)
            .filter(|n| wf.get(n.as_str()).is_none())
            .collect();
        if !extra.is_empty() {
            problems.push(format!("features {k:?}: unexpected features {extra:?}"));
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        problems.push(format!("features: unexpected {k:?}"));
    }
}

fn diff_changelog(got: &[Value], want: &[Value], problems: &mut Vec<String>) {
    let key = |l: &Value| {
        (
            string(l, "view").to_owned(),
            string(l, "entity").to_owned(),
            string(l, "feature").to_owned(),
            int(l, "window_start"),
            int(l, "window_end"),
        )
    };
    let (got, unique) = keyed(got, key);
    let (want, _) = keyed(want, key);
    if !unique {
        problems.push("changelog.jsonl reports a window twice".into());
    }
    for (k, w) in &want {
        match got.get(k) {
            None => problems.push(format!("changelog: missing {k:?} = {}", w["value"])),
            Some(g) => {
                if let Some(m) = value_mismatch(&g["value"], &w["value"], tolerance(&k.2)) {
                    problems.push(format!("changelog {k:?}: {m}"));
                }
            }
        }
    }
    for (k, g) in got.iter().filter(|(k, _)| !want.contains_key(*k)) {
        problems.push(format!("changelog: unexpected {k:?} = {}", g["value"]));
    }
}

/// Dead letters match on source, partition, offset and record; the reason must start with the
/// expected text (serde_json's own wording after "not valid JSON" is not part of the contract).
fn diff_dead_letters(got: &[Value], want: &[Value], problems: &mut Vec<String>) {
    let key = |l: &Value| {
        (
            string(l, "source").to_owned(),
            int(l, "partition"),
            int(l, "offset"),
        )
    };
    let (got, unique) = keyed(got, key);
    let (want, _) = keyed(want, key);
    if !unique {
        problems.push("dead_letter.jsonl holds a record twice".into());
    }
    for (k, w) in &want {
        let Some(g) = got.get(k) else {
            problems.push(format!("dead letters: missing {k:?} ({})", w["reason"]));
            continue;
        };
        if !string(g, "reason").starts_with(string(w, "reason")) {
            problems.push(format!(
                "dead letter {k:?}: reason {}, want {}",
                g["reason"], w["reason"]
            ));
        }
        if g["record"] != w["record"] {
            problems.push(format!(
                "dead letter {k:?}: record {}, want {}",
                g["record"], w["record"]
            ));
        }
    }
    for (k, g) in got.iter().filter(|(k, _)| !want.contains_key(*k)) {
        problems.push(format!("dead letters: unexpected {k:?}: {}", g["reason"]));
    }
}

fn diff_summary(got: &Value, case: &Path, problems: &mut Vec<String>) {
    let path = case.join("expected_summary.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let want: Value = serde_json::from_str(&text).expect("expected_summary.json is JSON");
    for (field, w) in want.as_object().into_iter().flatten() {
        if &got[field] != w {
            problems.push(format!("summary {field}: {}, want {w}", got[field]));
        }
    }
}

fn check_case(case: &Path, workers: usize, problems: &mut Vec<String>) {
    let out = tempfile::tempdir().expect("temp dir");
    let got: ReplayOutput = replay(
        &case.join("pipeline.toml"),
        &inputs(case),
        workers,
        out.path(),
    );
    let mut found = Vec::new();
    diff_features(
        &got.features,
        &read_jsonl(&case.join("expected_features.jsonl")),
        &mut found,
    );
    diff_changelog(
        &got.changelog,
        &read_jsonl(&case.join("expected_changelog.jsonl")),
        &mut found,
    );
    diff_dead_letters(
        &got.dead_letters,
        &read_jsonl(&case.join("expected_dead_letter.jsonl")),
        &mut found,
    );
    diff_summary(&got.summary, case, &mut found);
    let name = case
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    problems.extend(
        found
            .into_iter()
            .map(|p| format!("{name} [{workers} workers]: {p}")),
    );
}

#[test]
fn golden_cases() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("pipeline.toml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    let mut problems = Vec::new();
    for case in &cases {
        for workers in [1, 3] {
            check_case(case, workers, &mut problems);
        }
    }
    assert!(
        problems.is_empty(),
        "{} golden differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_golden_pipeline_passes_check() {
    for entry in std::fs::read_dir(golden_root()).expect("tests/golden exists") {
        let pipeline = entry.expect("dir entry").path().join("pipeline.toml");
        if !pipeline.is_file() {
            continue;
        }
        let out = common::freshet(&["check", "--pipeline", &pipeline.display().to_string()]);
        assert!(
            out.status.success(),
            "{}: {}",
            pipeline.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
