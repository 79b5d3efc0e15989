//! Drift acceptance: `deploy/pipelines/drift.toml` on `gen.py drift --rows 200000` data (one row
//! per ms; value N(0,1) → N(0.25,1) and the category mix shift at row 100 000, which is also
//! where the 100 s reference ends), then variants with an earlier reference, a pinned snapshot
//! and a shift back, checking when alerts fire and clear and the shapes of drift.jsonl lines.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{freshet, int, read_jsonl, replay, string};
use serde_json::Value;

/// gen.py's first event time: 2026-01-01T00:00:00Z.
const BASE_MS: u64 = 1_767_225_600_000;
const ROWS: u64 = 200_000;
/// Event time of the shift (row ROWS / 2).
const MIDPOINT_MS: u64 = BASE_MS + ROWS / 2;
const WINDOW_MS: u64 = 10_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Generates the drift workload into `dir` and returns the JSON-lines file.
fn generate(dir: &Path) -> PathBuf {
    let status = std::process::Command::new("python3")
        .arg(workspace().join("tests/oracle/gen.py"))
        .args(["drift", "--rows", &ROWS.to_string(), "--jsonl", "--out"])
        .arg(dir)
        .status()
        .expect("python3 runs tests/oracle/gen.py (python3 is required for this test)");
    assert!(status.success(), "gen.py drift failed");
    dir.join("drift.jsonl")
}

fn drift_lines(out: &Path) -> Vec<Value> {
    read_jsonl(&out.join("drift.jsonl"))
}

fn alerts<'a>(lines: &'a [Value], state: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == "alert" && l["state"] == state)
        .collect()
}

/// The window end at which `feature`'s `measure` alert first fired.
fn fired_at(lines: &[Value], feature: &str, measure: &str) -> Option<u64> {
    alerts(lines, "firing")
        .into_iter()
        .find(|a| a["feature"] == feature && a["measure"] == measure)
        .map(|a| int(a, "window_end"))
}

fn check_shapes(lines: &[Value]) {
    assert!(!lines.is_empty(), "drift.jsonl is empty");
    for line in lines {
        let keys: Vec<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        match string(line, "kind") {
            "window" => {
                let mut want = [
                    "kind",
                    "monitor",
                    "feature",
                    "window_start",
                    "window_end",
                    "count",
                    "missing",
                    "measures",
                ];
                want.sort_unstable();
                let mut got = keys.clone();
                got.sort_unstable();
                assert_eq!(got, want, "{line}");
                assert_eq!(
                    int(line, "window_end") - int(line, "window_start"),
                    WINDOW_MS
                );
                assert_eq!(int(line, "window_start") % WINDOW_MS, 0, "epoch-aligned");
                let measures = line["measures"].as_object().expect("measures object");
                let mut names: Vec<&str> = measures.keys().map(String::as_str).collect();
                names.sort_unstable();
                match string(line, "feature") {
                    "stream.value" => assert_eq!(
                        names,
                        ["jensen_shannon", "ks", "ks_p", "psi", "wasserstein"],
                        "{line}"
                    ),
                    "stream.category" => assert_eq!(
                        names,
                        ["chi_square", "chi_square_p", "jensen_shannon", "psi"],
                        "{line}"
                    ),
                    "model.clf.score" | "model.clf.error" => {
                        assert_eq!(names, ["ks", "ks_p", "psi"], "{line}");
                    }
                    other => panic!("unexpected feature {other}"),
                }
                assert!(measures.values().all(Value::is_number), "{line}");
            }
            "alert" => {
                let mut want = [
                    "kind",
                    "state",
                    "monitor",
                    "feature",
                    "measure",
                    "value",
                    "threshold",
                    "window_end",
                ];
                want.sort_unstable();
                let mut got = keys.clone();
                got.sort_unstable();
                assert_eq!(got, want, "{line}");
                assert!(matches!(string(line, "state"), "firing" | "cleared"));
            }
            other => panic!("unexpected kind {other}: {line}"),
        }
    }
}

/// Windows evaluated, per feature, in order.
fn window_ends(lines: &[Value], feature: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l["kind"] == "window" && l["feature"] == feature)
        .map(|l| int(l, "window_end"))
        .collect()
}

/// Asserts what every variant shares: nothing fires before the shift; KS on the value and
/// chi-square on the category fire within two windows after it.
fn check_detection(lines: &[Value]) {
    for a in alerts(lines, "firing") {
        assert!(
            int(a, "window_end") > MIDPOINT_MS,
            "alert fired before the shift: {a}"
        );
    }
    let within_two = MIDPOINT_MS + 2 * WINDOW_MS;
    for (feature, measure) in [("stream.value", "ks"), ("stream.category", "chi_square")] {
        let at = fired_at(lines, feature, measure)
            .unwrap_or_else(|| panic!("{feature} {measure} never fired"));
        assert!(at <= within_two, "{feature} {measure} fired late, at {at}");
    }
}

#[test]
fn acceptance_pipeline_detects_the_midpoint_shift() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    let out = dir.path().join("out");
    let got = replay(
        &workspace().join("deploy/pipelines/drift.toml"),
        &[("stream", input)],
        1,
        &out,
    );
    let lines = drift_lines(&out);
    check_shapes(&lines);
    check_detection(&lines);
    // the reference is [BASE, BASE + 100 s); windows start there; the last one, ending after
    // t_end = BASE + 199 999, is never complete
    let ends: Vec<u64> = (11..=19).map(|k| BASE_MS + k * WINDOW_MS).collect();
    assert_eq!(window_ends(&lines, "stream.value"), ends);
    assert_eq!(window_ends(&lines, "stream.category"), ends);
    assert_eq!(int(&got.summary, "drift_windows"), 18);
    // a 0.25σ shift gives PSI ≈ 0.06 over 10 quantile bins: below 0.1, so PSI does not fire on
    // the value, while the category mix (PSI ≈ 0.23) does
    assert_eq!(fired_at(&lines, "stream.value", "psi"), None);
    assert!(fired_at(&lines, "stream.category", "psi").is_some());
    assert!(alerts(&lines, "cleared").is_empty());
}

fn write_pipeline(dir: &Path, reference: &str) -> PathBuf {
    let text = std::fs::read_to_string(workspace().join("deploy/pipelines/drift.toml"))
        .expect("drift.toml");
    let text = text.replace(
        r#"reference = { kind = "first", duration = "100s" }"#,
        reference,
    );
    assert!(text.contains(reference));
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// The input, then its first 60 000 rows again 200 s later: the distribution shifts back.
fn shift_back(input: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(input).expect("input");
    let path = dir.join("shift_back.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    file.write_all(text.as_bytes()).expect("write");
    for line in text.lines().take(60_000) {
        let mut event: Value = serde_json::from_str(line).expect("json");
        event["ts"] = (int(&event, "ts") + ROWS).into();
        event["id"] = (int(&event, "id") + ROWS).into();
        writeln!(file, "{event}").expect("write");
    }
    file.flush().expect("flush");
    path
}

#[test]
fn earlier_reference_stays_quiet_then_fires_and_clears_after_the_shift_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = shift_back(&generate(dir.path()), dir.path());
    let pipeline = write_pipeline(
        dir.path(),
        r#"reference = { kind = "first", events = 50000 }"#,
    );
    let out = dir.path().join("out");
    replay(&pipeline, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    check_shapes(&lines);
    // five unshifted windows [50 s, 100 s) are compared and stay quiet
    assert_eq!(
        window_ends(&lines, "stream.value").first(),
        Some(&(BASE_MS + 60_000))
    );
    check_detection(&lines);
    // back to the reference distribution at 200 s: every firing alert clears after three calm
    // windows, at the end of [220 s, 230 s)
    let cleared = alerts(&lines, "cleared");
    assert_eq!(cleared.len(), alerts(&lines, "firing").len(), "{cleared:?}");
    for c in cleared {
        assert_eq!(int(c, "window_end"), BASE_MS + 230_000, "{c}");
    }
}

#[test]
fn pinned_snapshot_reference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    let text = std::fs::read_to_string(&input).expect("input");
    let first_half: String = text
        .lines()
        .take(usize::try_from(ROWS / 2).expect("fits"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let reference_input = dir.path().join("reference.jsonl");
    std::fs::write(&reference_input, first_half).expect("write");

    let pipeline = write_pipeline(
        dir.path(),
        r#"reference = { kind = "file", path = "ref.json" }"#,
    );
    let snapshot = dir.path().join("ref.json");
    let output = freshet(&[
        "drift",
        "snapshot",
        "--pipeline",
        &pipeline.display().to_string(),
        "--input",
        &format!("stream={}", reference_input.display()),
        "--out",
        &snapshot.display().to_string(),
    ]);
    assert!(
        output.status.success(),
        "drift snapshot failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&snapshot).expect("snapshot"))
        .expect("snapshot is JSON");
    assert_eq!(written["format"], "freshet-drift-reference/1");
    assert_eq!(written["monitors"]["d"]["stream.value"]["kind"], "numeric");
    assert_eq!(
        written["monitors"]["d"]["stream.category"]["kind"],
        "categorical"
    );

    let out = dir.path().join("out");
    replay(&pipeline, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    check_shapes(&lines);
    // pinned: every window from the first event on is compared, ten of them before the shift
    assert_eq!(
        window_ends(&lines, "stream.value").first(),
        Some(&(BASE_MS + WINDOW_MS))
    );
    check_detection(&lines);
}

#[test]
fn missing_snapshot_file_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = write_pipeline(
        dir.path(),
        r#"reference = { kind = "file", path = "nope.json" }"#,
    );
    let input = dir.path().join("empty.jsonl");
    std::fs::write(&input, "").expect("write");
    let output = freshet(&[
        "replay",
        "--pipeline",
        &pipeline.display().to_string(),
        "--input",
        &format!("stream={}", input.display()),
        "--out",
        &dir.path().join("out").display().to_string(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("drift `d`") && stderr.contains("nope.json"),
        "{stderr}"
    );
}

/// The acceptance pipeline with `body` replacing its `[[drift]]` table.
fn pipeline_with(dir: &Path, body: &str) -> PathBuf {
    let text =
        format!("[[source]]\nname = \"stream\"\nentity = \"id\"\nevent_time = \"ts\"\n\n{body}\n");
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn float(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{field}` is not a number in {value}"))
}

#[test]
fn adwin_in_the_pipeline_fires_once_just_after_the_shift_with_the_mean_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    let pipeline = pipeline_with(
        dir.path(),
        r#"[[drift]]
name = "d"
features = ["stream.value", "stream.category"]
reference = { kind = "first", duration = "100s" }
window = "10s"
methods = ["ks", "adwin"]
alert = { ks_p = 0.001, fire_after = 2, clear_after = 3 }"#,
    );
    let out = dir.path().join("out");
    replay(&pipeline, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    let adwin: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "alert" && l["measure"] == "adwin")
        .collect();
    // the categorical feature gets no detector; the value's ADWIN (River's defaults) is quiet
    // for the 100 000 rows before the shift and detects once, a few hundred rows after it;
    // with no further detection the alert clears clear_after = 3 windows (30 s) later
    assert_eq!(adwin.len(), 2, "{adwin:?}");
    let fired = adwin[0];
    assert_eq!(fired["feature"], "stream.value");
    assert_eq!(fired["state"], "firing");
    let at = int(fired, "window_end");
    assert!(
        at > MIDPOINT_MS && at < MIDPOINT_MS + 2_000,
        "ADWIN fired at row {}",
        at - BASE_MS
    );
    // value: the estimated change of the mean, for a 0 -> 0.25 shift
    let change = float(fired, "value");
    assert!(change > 0.1 && change < 0.6, "{change}");
    assert_eq!(float(fired, "threshold"), 0.002);
    let cleared = adwin[1];
    assert_eq!(cleared["state"], "cleared");
    assert_eq!(int(cleared, "window_end"), at + 3 * WINDOW_MS);
    assert_eq!(float(cleared, "value"), change);
    // detector alerts come in event-time order among the windows: after the window ending
    // before the detection, before the window containing it
    let position = lines
        .iter()
        .position(|l| l["kind"] == "alert" && l["measure"] == "adwin")
        .expect("adwin alert");
    let previous_window = lines[..position]
        .iter()
        .rev()
        .find(|l| l["kind"] == "window")
        .map(|l| int(l, "window_end"));
    // (the first window is [100 s, 110 s), which holds the detection: none comes before it)
    assert!(previous_window.is_none_or(|e| e <= at));
    let next_window = lines[position..]
        .iter()
        .find(|l| l["kind"] == "window")
        .map(|l| int(l, "window_end"));
    assert!(next_window.is_some_and(|e| e > at));
}

/// A tiny input of one entity: events at the given times (s), value 1.
fn one_entity(dir: &Path, seconds: &[u64]) -> PathBuf {
    let path = dir.join("one.jsonl");
    let text: String = seconds
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{\"id\":\"a\",\"n\":{i},\"ts\":{}}}\n", BASE_MS + s * 1000))
        .collect();
    std::fs::write(&path, text).expect("write input");
    path
}

#[test]
fn computed_continuous_feature_is_monitored_at_every_change_of_its_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    // events at 1 s, 2 s and 6 s; a 2 s continuous count changes at 1 s (1), 2 s (2),
    // 3 s (1: the first event leaves), 4 s (0) and 6 s (1); the change at 8 s is after t_end
    let input = one_entity(dir.path(), &[1, 2, 6]);
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        r#"[[source]]
name = "stream"
entity = "id"
event_time = "ts"

[[feature_view]]
name = "v"
source = "stream"
features = [{ name = "count_2s", agg = "count", window = "2s" }]

[[drift]]
name = "d"
features = ["v.count_2s"]
reference = { kind = "first", events = 1 }
window = "1s"
methods = ["ks"]
"#,
    )
    .expect("write pipeline");
    let out = dir.path().join("out");
    replay(&path, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    // reference: the value at 1 s (count 1); windows from 2 s on, one value each; [5 s, 6 s)
    // had no change and [6 s, 7 s) ends after t_end
    let windows: Vec<(u64, u64, f64)> = lines
        .iter()
        .filter(|l| l["kind"] == "window")
        .map(|l| {
            (
                int(l, "window_end") - BASE_MS,
                int(l, "count"),
                l["measures"]["ks"].as_f64().expect("ks"),
            )
        })
        .collect();
    // values 2 (at 2 s), 1 (3 s), 0 (4 s) against the reference value 1: D = 1, 0, 1
    assert_eq!(
        windows,
        vec![(3_000, 1, 1.0), (4_000, 1, 0.0), (5_000, 1, 1.0)]
    );
}

#[test]
fn computed_tumbling_feature_is_monitored_per_closed_window_and_results_do_not_depend_on_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    // two partitions: odd and even rows
    let text = std::fs::read_to_string(&input).expect("input");
    let (mut even, mut odd) = (String::new(), String::new());
    for (i, line) in text.lines().enumerate() {
        let part = if i % 2 == 0 { &mut even } else { &mut odd };
        part.push_str(line);
        part.push('\n');
    }
    let (p0, p1) = (dir.path().join("p0.jsonl"), dir.path().join("p1.jsonl"));
    std::fs::write(&p0, even).expect("write");
    std::fs::write(&p1, odd).expect("write");
    // entities: the category (10 of them); a 1 s tumbling mean of the value per category
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        r#"[[source]]
name = "stream"
entity = "category"
event_time = "ts"

[[feature_view]]
name = "c"
source = "stream"
features = [
  { name = "mean_1s", agg = "mean", field = "value", window = "1s", slide = "1s" },
  { name = "mean_5s", agg = "mean", field = "value", window = "5s" },
]

[[drift]]
name = "d"
features = ["c.mean_1s"]
reference = { kind = "first", duration = "100s" }
window = "10s"
methods = ["ks", "psi"]
alert = { ks_p = 0.001, fire_after = 2, clear_after = 3 }

# every change of a continuous mean: values far from independent, so no window alerts here
[[drift]]
name = "e"
features = ["c.mean_5s"]
reference = { kind = "first", duration = "100s" }
window = "10s"
methods = ["ks", "adwin"]
"#,
    )
    .expect("write pipeline");
    let mut outputs = Vec::new();
    for workers in [1, 2] {
        let out = dir.path().join(format!("out{workers}"));
        replay(
            &path,
            &[("stream", p0.clone()), ("stream", p1.clone())],
            workers,
            &out,
        );
        outputs.push(std::fs::read_to_string(out.join("drift.jsonl")).expect("drift.jsonl"));
    }
    // each monitor's lines are the same, in the same order (lines of different monitors may
    // interleave differently, as the watermark advances in other steps)
    let by_monitor = |text: &str, monitor: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!("\"monitor\":\"{monitor}\"")))
            .map(str::to_owned)
            .collect()
    };
    for monitor in ["d", "e"] {
        let one = by_monitor(&outputs[0], monitor);
        assert!(!one.is_empty());
        assert_eq!(
            one,
            by_monitor(&outputs[1], monitor),
            "monitor {monitor}: drift.jsonl differs between 1 and 2 workers"
        );
    }
    let lines: Vec<Value> = outputs[0]
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    // every closed 1 s window of each of the 10 categories is one value: 10 windows x 10
    for l in lines
        .iter()
        .filter(|l| l["kind"] == "window" && l["feature"] == "c.mean_1s")
    {
        assert_eq!(int(l, "count"), 100, "{l}");
    }
    // the per-category means shift with the value: KS fires after the shift, never before
    let at = fired_at(&lines, "c.mean_1s", "ks").expect("c.mean_1s ks fired");
    assert!(
        at > MIDPOINT_MS && at <= MIDPOINT_MS + 3 * WINDOW_MS,
        "fired at {at}"
    );
    for a in alerts(&lines, "firing")
        .into_iter()
        .filter(|a| a["monitor"] == "d")
    {
        assert!(int(a, "window_end") > MIDPOINT_MS, "early alert {a}");
    }
    // the continuous mean is monitored too (about two values per event: one when it enters
    // the key's window, one when it leaves)
    let counts: Vec<u64> = lines
        .iter()
        .filter(|l| l["kind"] == "window" && l["feature"] == "c.mean_5s")
        .map(|l| int(l, "count"))
        .collect();
    assert_eq!(counts.len(), 9);
    assert!(
        counts.iter().all(|&c| c > 15_000 && c <= 20_000),
        "{counts:?}"
    );
}

#[test]
fn lagged_reference_compares_each_window_with_an_earlier_period_and_adapts_after_a_shift() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    let pipeline = pipeline_with(
        dir.path(),
        r#"[[drift]]
name = "d"
features = ["stream.value", "stream.category"]
reference = { kind = "lagged", lag = "10s", duration = "30s" }
window = "10s"
methods = ["ks", "psi", "chi_square"]
chi_square_test = "two_sample"
alert = { ks_p = 0.001, chi_square_p = 0.001, fire_after = 1, clear_after = 2 }"#,
    );
    let out = dir.path().join("out");
    replay(&pipeline, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    // history starts with [0 s, 10 s): the first window whose reference [e - 40 s, e - 10 s)
    // lies after it ends at 40 s; then every window up to the last complete one (190 s)
    let ends: Vec<u64> = (4..=19).map(|k| BASE_MS + k * WINDOW_MS).collect();
    assert_eq!(window_ends(&lines, "stream.value"), ends);
    assert_eq!(window_ends(&lines, "stream.category"), ends);
    // the shift at 100 s: the window [100 s, 110 s) against [60 s, 90 s) fires at once; once
    // the reference is all shifted (window [140 s, 150 s) against [100 s, 130 s)) it is calm
    // again, and the alerts clear after two calm windows
    for (feature, measure) in [("stream.value", "ks"), ("stream.category", "chi_square")] {
        let fired = fired_at(&lines, feature, measure).expect("fired");
        assert_eq!(fired, MIDPOINT_MS + WINDOW_MS, "{feature}");
        let cleared = alerts(&lines, "cleared")
            .into_iter()
            .find(|a| a["feature"] == feature && a["measure"] == measure)
            .map(|a| int(a, "window_end"))
            .expect("cleared");
        assert!(
            cleared > MIDPOINT_MS + 4 * WINDOW_MS && cleared <= MIDPOINT_MS + 7 * WINDOW_MS,
            "{feature} cleared at {}",
            cleared - BASE_MS
        );
    }
    for a in alerts(&lines, "firing") {
        assert!(int(a, "window_end") > MIDPOINT_MS, "early alert {a}");
    }
}

#[test]
fn two_sample_chi_square_is_calmer_than_goodness_of_fit_on_the_same_windows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path());
    let monitor = |name: &str, test: &str| {
        format!(
            "[[drift]]\nname = \"{name}\"\nfeatures = [\"stream.category\"]\nreference = {{ kind = \"first\", duration = \"100s\" }}\nwindow = \"10s\"\nmethods = [\"chi_square\"]\nchi_square_test = \"{test}\"\nalert = {{ chi_square_p = 0.001 }}\n"
        )
    };
    let pipeline = pipeline_with(
        dir.path(),
        &format!(
            "{}\n{}",
            monitor("gof", "goodness_of_fit"),
            monitor("two", "two_sample")
        ),
    );
    let out = dir.path().join("out");
    replay(&pipeline, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    let statistics = |m: &str| -> Vec<(u64, f64)> {
        lines
            .iter()
            .filter(|l| l["kind"] == "window" && l["monitor"] == m)
            .map(|l| {
                (
                    int(l, "window_end"),
                    l["measures"]["chi_square"].as_f64().expect("X2"),
                )
            })
            .collect()
    };
    let (gof, two) = (statistics("gof"), statistics("two"));
    assert_eq!(gof.len(), 9);
    assert_eq!(gof.len(), two.len());
    for ((end, g), (end2, t)) in gof.iter().zip(&two) {
        assert_eq!(end, end2);
        // the two-sample statistic accounts for the reference being a sample of 100 000
        // against windows of 10 000: smaller by about n_ref / (n_ref + n_win) = 0.91
        assert!(
            *t < *g && *t > 0.5 * g,
            "window {end}: two-sample {t} vs goodness of fit {g}"
        );
    }
    // both detect the shift at the second window
    for m in ["gof", "two"] {
        let at = alerts(&lines, "firing")
            .into_iter()
            .find(|a| a["monitor"] == m)
            .map(|a| int(a, "window_end"));
        assert_eq!(at, Some(MIDPOINT_MS + 2 * WINDOW_MS), "{m}");
    }
}

/// Serves HTTP/1.1 on a local port until `expected` POST bodies arrived; returns the URL and a
/// receiver of the bodies.
fn webhook_listener() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read};
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", server.local_addr().expect("address"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut line, mut length) = (String::new(), 0usize);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            }
        }
    });
    (url, rx)
}

#[test]
fn webhook_receives_every_alert_transition_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = shift_back(&generate(dir.path()), dir.path());
    let (url, bodies) = webhook_listener();
    let pipeline = pipeline_with(
        dir.path(),
        &format!(
            r#"[[drift]]
name = "d"
features = ["stream.value", "stream.category"]
reference = {{ kind = "first", events = 50000 }}
window = "10s"
methods = ["psi", "ks", "chi_square"]
alert = {{ psi = 0.1, ks_p = 0.001, chi_square_p = 0.001, fire_after = 2, clear_after = 3, webhook = "{url}" }}"#
        ),
    );
    let out = dir.path().join("out");
    let got = replay(&pipeline, &[("stream", input)], 1, &out);
    let lines = drift_lines(&out);
    let transitions: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "alert").collect();
    assert!(transitions.len() >= 4, "{transitions:?}");
    let received: Vec<Value> = (0..transitions.len())
        .map(|_| {
            let body = bodies
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the webhook got every transition");
            serde_json::from_str(&body).expect("JSON body")
        })
        .collect();
    for (line, body) in transitions.iter().zip(&received) {
        for key in [
            "state",
            "monitor",
            "feature",
            "measure",
            "value",
            "threshold",
        ] {
            assert_eq!(body[key], line[key], "{key}: {body} vs {line}");
        }
        assert_eq!(body["window"]["end"], line["window_end"]);
        assert_eq!(
            int(&body["window"], "end") - int(&body["window"], "start"),
            WINDOW_MS
        );
        // the reference is the first 50 000 events: [0 s, 50 s)
        assert_eq!(int(&body["reference"], "start"), BASE_MS);
        assert_eq!(int(&body["reference"], "end"), BASE_MS + 50_000);
    }
    let webhook = &got.summary["webhooks"][0];
    assert_eq!(
        int(webhook, "delivered"),
        transitions.len() as u64,
        "{webhook}"
    );
    assert_eq!(webhook["drained"], true);
}

// ---- model streams: `model.NAME.score` and `model.NAME.error` ----

/// Events of the model tests: one every 10 ms from BASE_MS; x uniform in [-1, 1) from a fixed
/// LCG, label y = 2x + 1 + e with noise e uniform in ±0.2 before `shift_s` and ±0.6 after it,
/// so the absolute error of a fitted regression, |e|, goes from uniform on [0, 0.2] to uniform
/// on [0, 0.6] (mean 0.1 → 0.3) while its predictions keep their distribution. With `labels`,
/// the label goes to a second file as `{"id", "event_id", "ts", "y"}` `label_delay_ms` later
/// instead.
fn model_events(
    dir: &Path,
    seconds: u64,
    shift_s: u64,
    label_delay_ms: Option<u64>,
) -> Vec<PathBuf> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut events = String::new();
    let mut labels = String::new();
    for i in 0..seconds * 100 {
        let ts = BASE_MS + i * 10;
        let x = next() * 2.0 - 1.0;
        let noise = if i < shift_s * 100 { 0.2 } else { 0.6 };
        let y = 2.0 * x + 1.0 + (next() * 2.0 - 1.0) * noise;
        match label_delay_ms {
            None => events.push_str(&format!(
                "{{\"id\":\"e{}\",\"ts\":{ts},\"x\":{x},\"y\":{y}}}\n",
                i % 7
            )),
            Some(delay) => {
                events.push_str(&format!(
                    "{{\"id\":\"e{}\",\"event_id\":{i},\"ts\":{ts},\"x\":{x}}}\n",
                    i % 7
                ));
                labels.push_str(&format!(
                    "{{\"id\":\"e{}\",\"event_id\":{i},\"ts\":{},\"y\":{y}}}\n",
                    i % 7,
                    ts + delay
                ));
            }
        }
    }
    let path = dir.join("events.jsonl");
    std::fs::write(&path, events).expect("write events");
    let mut files = vec![path];
    if label_delay_ms.is_some() {
        let path = dir.join("labels.jsonl");
        std::fs::write(&path, labels).expect("write labels");
        files.push(path);
    }
    files
}

const MODEL_PIPELINE: &str = r#"[[source]]
name = "events"
entity = "id"
event_time = "ts"

[[model]]
name = "clf"
kind = "linear_regression"
features = ["events.x"]
label = { field = "y" }
optimizer = { kind = "sgd", lr = 0.05 }
batch_size = 8

[[drift]]
name = "m"
features = ["model.clf.score", "model.clf.error"]
reference = { kind = "first", duration = "100s" }
window = "10s"
methods = ["ks", "psi", "adwin"]
alert = { ks_p = 0.001, fire_after = 2, clear_after = 3 }
"#;

fn first_firing_after(lines: &[Value], feature: &str, measure: &str, after_ms: u64) -> Option<u64> {
    alerts(lines, "firing")
        .into_iter()
        .filter(|a| a["feature"] == feature && a["measure"] == measure)
        .map(|a| int(a, "window_end"))
        .find(|t| *t >= after_ms)
}

#[test]
fn model_error_stream_fires_adwin_and_ks_after_the_label_noise_shifts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shift_ms = BASE_MS + 300_000;
    let files = model_events(dir.path(), 500, 300, None);
    let pipeline = dir.path().join("model.toml");
    std::fs::write(&pipeline, MODEL_PIPELINE).expect("write pipeline");
    let out = dir.path().join("out");
    replay(&pipeline, &[("events", files[0].clone())], 1, &out);
    let lines = drift_lines(&out);
    check_shapes(&lines);
    // every learned example gives one score and one error, at its event time: 1 000 per 10 s
    // window, compared from the first window after the 100 s reference
    for feature in ["model.clf.score", "model.clf.error"] {
        let windows: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "window" && l["feature"] == feature)
            .collect();
        // the last window, [490 s, 500 s), ends after the last event and is not evaluated
        assert_eq!(windows.len(), 39, "{feature}");
        assert_eq!(int(windows[0], "window_start"), BASE_MS + 100_000);
        assert!(windows.iter().all(|w| int(w, "count") == 1_000));
        assert!(windows[0]["measures"]["ks_p"].is_number());
    }
    // quiet from the end of the reference to the shift (the model learned within seconds)
    let early: Vec<&Value> = alerts(&lines, "firing")
        .into_iter()
        .filter(|a| {
            let t = int(a, "window_end");
            t >= BASE_MS + 130_000 && t < shift_ms
        })
        .collect();
    assert!(early.is_empty(), "false alarms before the shift: {early:?}");
    // the error's ADWIN detects the rise soon after the shift (within 50 examples here), with
    // a positive estimated change of the mean (diluted: the newer part still holds values
    // from before the shift)
    let adwin = first_firing_after(&lines, "model.clf.error", "adwin", BASE_MS + 130_000)
        .expect("ADWIN on the error fires");
    assert!(
        adwin > shift_ms && adwin < shift_ms + 5_000,
        "ADWIN fired {} ms after the shift",
        adwin as i64 - shift_ms as i64
    );
    let fired = alerts(&lines, "firing")
        .into_iter()
        .find(|a| a["measure"] == "adwin" && int(a, "window_end") == adwin)
        .expect("the ADWIN alert");
    assert!(float(fired, "value") > 0.05, "{fired}");
    // the window KS test on the error fires at the second window after the shift
    let ks = first_firing_after(&lines, "model.clf.error", "ks", BASE_MS + 130_000)
        .expect("KS on the error fires");
    assert_eq!(ks, shift_ms + 2 * WINDOW_MS);
}

#[test]
fn model_streams_do_not_depend_on_workers_and_follow_delayed_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = model_events(dir.path(), 200, 120, Some(2_000));
    let pipeline = dir.path().join("model.toml");
    let body = MODEL_PIPELINE
        .replace(
            "event_time = \"ts\"\n",
            "event_time = \"ts\"\n\n[[source]]\nname = \"labels\"\nentity = \"id\"\nevent_time = \"ts\"\n",
        )
        .replace(
            "label = { field = \"y\" }",
            "label = { source = \"labels\", join_key = \"event_id\", field = \"y\", max_delay = \"30s\" }",
        )
        .replace("duration = \"100s\"", "duration = \"60s\"");
    std::fs::write(&pipeline, body).expect("write pipeline");
    let run = |workers: usize, name: &str| {
        let out = dir.path().join(name);
        let got = replay(
            &pipeline,
            &[("events", files[0].clone()), ("labels", files[1].clone())],
            workers,
            &out,
        );
        let mut lines: Vec<String> = drift_lines(&out).iter().map(Value::to_string).collect();
        lines.sort();
        (drift_lines(&out), lines, got.summary)
    };
    let (lines, one, summary) = run(1, "w1");
    assert!(!lines.is_empty(), "{summary}");
    let (_, two, _) = run(2, "w2");
    assert_eq!(one, two, "drift.jsonl differs between 1 and 2 workers");
    // outcome time = the label's time: labels come 2 s after their events, from BASE + 2 s
    // to BASE + 202 s, so the reference is [BASE + 2 s, BASE + 62 s) and windows run from
    // BASE + 70 s to the last whole window before the last label (BASE + 200 s)
    let windows: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "window" && l["feature"] == "model.clf.error")
        .collect();
    assert!(!windows.is_empty(), "{lines:?}");
    assert_eq!(int(windows[0], "window_start"), BASE_MS + 70_000);
    assert_eq!(
        int(windows[windows.len() - 1], "window_end"),
        BASE_MS + 200_000
    );
    assert!(windows.iter().all(|w| int(w, "count") == 1_000));
    // the noise shift at 120 s reaches the error stream with the labels, 2 s later
    let adwin = first_firing_after(&lines, "model.clf.error", "adwin", BASE_MS + 70_000)
        .expect("ADWIN on the error fires");
    assert!(
        adwin > BASE_MS + 122_000 && adwin < BASE_MS + 127_000,
        "ADWIN fired at {} s",
        (adwin - BASE_MS) / 1000
    );
}

#[test]
fn model_stream_features_name_a_declared_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |body: &str| {
        let path = dir.path().join("p.toml");
        std::fs::write(&path, body).expect("write");
        let out = freshet(&["check", "--pipeline", &path.display().to_string()]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = check(&MODEL_PIPELINE.replace("model.clf.score", "model.nope.score"));
    assert!(!ok);
    assert!(
        stderr.contains("feature `model.nope.score` reads model `nope`, which is not declared; expected one of: clf"),
        "{stderr}"
    );
    // a stream other than score and error is no model stream: `model` must then be a source
    let (ok, stderr) = check(&MODEL_PIPELINE.replace("model.clf.error", "model.clf.loss"));
    assert!(!ok);
    assert!(stderr.contains("model.clf.loss"), "{stderr}");
    // a source called `model` makes `model.NAME.score` ambiguous
    let (ok, stderr) = check(&MODEL_PIPELINE.replace(
        "[[model]]",
        "[[source]]\nname = \"model\"\nentity = \"id\"\nevent_time = \"ts\"\n\n[[model]]",
    ));
    assert!(!ok);
    assert!(stderr.contains("also called `model`"), "{stderr}");
    let (ok, stderr) = check(MODEL_PIPELINE);
    assert!(ok, "{stderr}");
}

#[test]
fn model_stream_reference_pinned_by_a_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let calm = model_events(dir.path(), 100, 1_000, None);
    let calm_file = dir.path().join("calm.jsonl");
    std::fs::rename(&calm[0], &calm_file).expect("rename");
    let pipeline = dir.path().join("model.toml");
    std::fs::write(
        &pipeline,
        MODEL_PIPELINE.replace(
            "reference = { kind = \"first\", duration = \"100s\" }",
            "reference = { kind = \"file\", path = \"ref.json\" }",
        ),
    )
    .expect("write pipeline");
    let snapshot = freshet(&[
        "drift",
        "snapshot",
        "--pipeline",
        &pipeline.display().to_string(),
        "--input",
        &format!("events={}", calm_file.display()),
        "--out",
        &dir.path().join("ref.json").display().to_string(),
    ]);
    assert!(
        snapshot.status.success(),
        "{}",
        String::from_utf8_lossy(&snapshot.stderr)
    );
    let summary: Value = serde_json::from_slice(&snapshot.stdout).expect("summary JSON");
    let references = summary["references"].as_array().expect("references");
    assert_eq!(references.len(), 2, "{summary}");
    assert!(references
        .iter()
        .all(|r| r["kind"] == "numeric" && int(r, "count") == 10_000));
    // replayed against the pinned reference, the shifted traffic fires from its start on
    let files = model_events(dir.path(), 300, 150, None);
    let out = dir.path().join("out");
    replay(&pipeline, &[("events", files[0].clone())], 1, &out);
    let lines = drift_lines(&out);
    let ks = first_firing_after(&lines, "model.clf.error", "ks", BASE_MS + 30_000)
        .unwrap_or_else(|| panic!("KS on the error fires: {lines:?}"));
    assert_eq!(ks, BASE_MS + 170_000);
}
