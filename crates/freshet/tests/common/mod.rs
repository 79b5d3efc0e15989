//! Shared helpers of the replay integration tests: run the `freshet` binary and read its output
//! files, and compare feature values with the tolerances the window semantics state.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The binary under test, built in the test profile.
pub const FRESHET: &str = env!("CARGO_BIN_EXE_freshet");

/// Relative tolerance for real-valued aggregates.
pub const REL_TOLERANCE: f64 = 1e-9;
/// Absolute tolerance for real-valued aggregates.
pub const ABS_TOLERANCE: f64 = 1e-6;
/// Relative error bound of `quantile` (DDSketch).
pub const QUANTILE_TOLERANCE: f64 = 0.01;

/// Everything one `freshet replay` run wrote.
#[derive(Debug)]
pub struct ReplayOutput {
    /// The JSON summary line printed on stdout.
    pub summary: Value,
    /// features.jsonl.
    pub features: Vec<Value>,
    /// changelog.jsonl.
    pub changelog: Vec<Value>,
    /// dead_letter.jsonl.
    pub dead_letters: Vec<Value>,
}

/// Runs `freshet` with `args` and returns its output, whatever the exit status.
pub fn freshet(args: &[&str]) -> Output {
    Command::new(FRESHET)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the freshet binary runs")
}

/// Runs `freshet replay` with `SOURCE=FILE` inputs (in partition order) and reads what it wrote
/// to `out`; panics with stderr when it fails.
pub fn replay(
    pipeline: &Path,
    inputs: &[(&str, PathBuf)],
    workers: usize,
    out: &Path,
) -> ReplayOutput {
    let mut args: Vec<String> = vec![
        "replay".into(),
        "--pipeline".into(),
        pipeline.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--workers".into(),
        workers.to_string(),
    ];
    for (source, path) in inputs {
        args.push("--input".into());
        args.push(format!("{source}={}", path.display()));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = freshet(&argv);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "freshet {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let summary_line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no summary line on stdout: {stdout}"));
    let summary: Value = serde_json::from_str(summary_line)
        .unwrap_or_else(|e| panic!("summary `{summary_line}` is not JSON: {e}"));
    ReplayOutput {
        summary,
        features: read_jsonl(&out.join("features.jsonl")),
        changelog: read_jsonl(&out.join("changelog.jsonl")),
        dead_letters: read_jsonl(&out.join("dead_letter.jsonl")),
    }
}

/// Reads a JSON-lines file (missing file: no lines).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: `{l}` is not JSON: {e}", path.display()))
        })
        .collect()
}

/// An integer field of a JSON object.
pub fn int(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not an unsigned integer in {value}"))
}

/// A string field of a JSON object.
pub fn string<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {value}"))
}

/// Whether two reals agree within the stated tolerance (1e-9 relative or 1e-6 absolute).
pub fn close(got: f64, want: f64) -> bool {
    got == want
        || (got - want).abs() <= ABS_TOLERANCE
        || (got - want).abs() <= REL_TOLERANCE * want.abs().max(got.abs())
}

/// Compares one feature value. Integers (counts) must match exactly and stay integers; reals
/// within [`close`], or within `relative` when given (sketches); everything else exactly.
/// Returns a description of the difference, if any.
pub fn value_mismatch(got: &Value, want: &Value, relative: Option<f64>) -> Option<String> {
    let differs = match (got, want) {
        (Value::Number(g), Value::Number(w)) if w.is_u64() || w.is_i64() => {
            !(g.is_u64() || g.is_i64()) || g.as_i64() != w.as_i64()
        }
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (
                g.as_f64().unwrap_or(f64::NAN),
                w.as_f64().unwrap_or(f64::NAN),
            );
            match relative {
                Some(r) => (g - w).abs() > r * w.abs() + 1e-9,
                None => !close(g, w),
            }
        }
        _ => got != want,
    };
    differs.then(|| format!("got {got}, want {want}"))
}
