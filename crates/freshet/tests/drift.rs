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
