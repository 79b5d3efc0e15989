//! Bad input: malformed records are dead-lettered with their documented reason while every
//! valid record is still processed; malformed pipeline files make `freshet check` fail with
//! `file:LINE:` and what was expected; bad `--input` arguments fail with a clear message.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{freshet, int, replay, string};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

const PIPELINE: &str = r#"[[source]]
name = "events"
entity = "user"
event_time = "ts"
allowed_lateness = "1s"

[[feature_view]]
name = "v"
source = "events"
features = [
  { name = "n_1h", agg = "count", window = "1h" },
  { name = "sum_1h", agg = "sum", field = "amount", window = "1h" },
  { name = "merchants_1h", agg = "count_distinct", field = "merchant", window = "1h" },
  { name = "last_country", agg = "last", field = "country" },
]
"#;

/// Each kind of malformed record and the reason `dead_letter.jsonl` must give (the text of
/// `freshet_core::event::Rejection`; for invalid JSON, serde_json's detail follows).
fn malformed_records() -> Vec<(String, String)> {
    let t = T0 + 1_000;
    let ts_types = "field `ts`: expected epoch milliseconds (integer) or an RFC 3339 string, found";
    let user_types = "field `user`: expected a string or an integer, found";
    let scalar_types = "expected a string, number or boolean, found";
    [
        (
            r#"{"user":"a","ts":"#.to_owned(),
            "not valid JSON: ".to_owned(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":1}} x"#),
            "not valid JSON: ".into(),
        ),
        ("\u{1}\u{2}binary".into(), "not valid JSON: ".into()),
        ("[1,2]".into(), "expected a JSON object".into()),
        ("null".into(), "expected a JSON object".into()),
        ("3.5".into(), "expected a JSON object".into()),
        (r#""text""#.into(), "expected a JSON object".into()),
        (
            format!(r#"{{"ts":{t},"amount":1}}"#),
            "missing field `user`".into(),
        ),
        (
            format!(r#"{{"user":null,"ts":{t},"amount":1}}"#),
            "missing field `user`".into(),
        ),
        (
            r#"{"user":"a","amount":1}"#.into(),
            "missing field `ts`".into(),
        ),
        (
            r#"{"user":"a","ts":null,"amount":1}"#.into(),
            "missing field `ts`".into(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t}}}"#),
            "missing field `amount`".into(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":null}}"#),
            "missing field `amount`".into(),
        ),
        (
            format!(r#"{{"user":2.5,"ts":{t},"amount":1}}"#),
            format!("{user_types} a number"),
        ),
        (
            format!(r#"{{"user":false,"ts":{t},"amount":1}}"#),
            format!("{user_types} a boolean"),
        ),
        (
            format!(r#"{{"user":{{}},"ts":{t},"amount":1}}"#),
            format!("{user_types} an object"),
        ),
        (
            format!(r#"{{"user":[],"ts":{t},"amount":1}}"#),
            format!("{user_types} an array"),
        ),
        (
            r#"{"user":"a","ts":true,"amount":1}"#.into(),
            format!("{ts_types} a boolean"),
        ),
        (
            format!(r#"{{"user":"a","ts":{t}.0,"amount":1}}"#),
            format!("{ts_types} a number"),
        ),
        (
            r#"{"user":"a","ts":[1],"amount":1}"#.into(),
            format!("{ts_types} an array"),
        ),
        (
            r#"{"user":"a","ts":"soon","amount":1}"#.into(),
            "field `ts`: `soon` is not an RFC 3339 time".into(),
        ),
        (
            r#"{"user":"a","ts":"2026-01-01 00:00:01","amount":1}"#.into(),
            "field `ts`: `2026-01-01 00:00:01` is not an RFC 3339 time".into(),
        ),
        (
            r#"{"user":"a","ts":"1969-12-31T23:59:59Z","amount":1}"#.into(),
            "field `ts`: `1969-12-31T23:59:59Z` is before 1970-01-01T00:00:00Z".into(),
        ),
        (
            r#"{"user":"a","ts":-1,"amount":1}"#.into(),
            "field `ts`: -1 is before 1970-01-01T00:00:00Z".into(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":"1"}}"#),
            "field `amount`: expected a number, found a string".into(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":true}}"#),
            "field `amount`: expected a number, found a boolean".into(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":[1]}}"#),
            "field `amount`: expected a number, found an array".into(),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":1,"merchant":["m"]}}"#),
            format!("field `merchant`: {scalar_types} an array"),
        ),
        (
            format!(r#"{{"user":"a","ts":{t},"amount":1,"country":{{"iso":"FR"}}}}"#),
            format!("field `country`: {scalar_types} an object"),
        ),
    ]
    .into_iter()
    .collect()
}

#[test]
fn each_malformed_record_is_dead_lettered_with_its_reason_and_valid_records_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE).expect("write pipeline");
    // valid record, malformed record, valid record, ... ; entity `e{i}` for the i-th valid one
    let bad = malformed_records();
    let mut lines = Vec::new();
    let mut want: BTreeMap<u64, (&str, &str)> = BTreeMap::new();
    for (i, (record, reason)) in bad.iter().enumerate() {
        lines.push(format!(
            r#"{{"user":"e{i}","ts":{},"amount":{i},"merchant":"m{i}","country":"c{i}"}}"#,
            T0 + 1_000 + i as u64
        ));
        lines.push(record.clone());
        want.insert(lines.len() as u64, (reason.as_str(), record.as_str()));
    }
    // integer entity and an RFC 3339 time are valid too; a late event is dead-lettered as late
    lines.push(r#"{"user":17,"ts":"2026-01-01T00:00:05+00:00","amount":2.5}"#.into());
    lines.push(format!(
        r#"{{"user":"late","ts":{},"amount":1}}"#,
        T0 + 3_999
    ));
    let late_offset = lines.len() as u64;
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");

    let out = replay(&pipeline, &[("events", input)], 2, &dir.path().join("out"));
    let valid = bad.len() as u64 + 1;
    assert_eq!(int(&out.summary, "events"), valid, "{}", out.summary);
    assert_eq!(
        int(&out.summary, "rejected"),
        bad.len() as u64,
        "{}",
        out.summary
    );
    assert_eq!(int(&out.summary, "late"), 1, "{}", out.summary);

    let mut got: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for letter in &out.dead_letters {
        assert_eq!(string(letter, "source"), "events");
        assert_eq!(int(letter, "partition"), 0);
        let previous = got.insert(
            int(letter, "offset"),
            (
                string(letter, "reason").to_owned(),
                string(letter, "record").to_owned(),
            ),
        );
        assert!(previous.is_none(), "offset dead-lettered twice: {letter}");
    }
    for (offset, (reason, record)) in &want {
        let (got_reason, got_record) = got
            .get(offset)
            .unwrap_or_else(|| panic!("line {offset} `{record}` not dead-lettered"));
        assert!(
            got_reason.starts_with(reason),
            "line {offset} `{record}`: reason `{got_reason}`, want `{reason}`"
        );
        assert_eq!(got_record, record.trim(), "line {offset}");
    }
    let late = got.get(&late_offset).expect("late event dead-lettered");
    assert_eq!(
        late.0,
        format!(
            "late: event time {} is more than 1000 ms behind its partition's clock {}",
            T0 + 3_999,
            T0 + 5_000
        )
    );
    assert_eq!(
        got.len(),
        want.len() + 1,
        "unexpected dead letters: {got:?}"
    );

    // every valid record reached the store: one entity each, with its own values
    assert_eq!(out.features.len() as u64, valid, "{:?}", out.features);
    for line in &out.features {
        let entity = string(line, "entity");
        let f = &line["features"];
        assert_eq!(f["n_1h"], 1, "{line}");
        if let Some(i) = entity.strip_prefix('e') {
            let i: u64 = i.parse().expect("entity index");
            assert_eq!(f["sum_1h"].as_f64(), Some(i as f64), "{line}");
            assert_eq!(f["merchants_1h"], 1, "{line}");
            assert_eq!(f["last_country"], format!("c{i}"), "{line}");
        } else {
            assert_eq!(entity, "17", "{line}");
            assert_eq!(f["sum_1h"].as_f64(), Some(2.5), "{line}");
            assert_eq!(f["merchants_1h"], 0, "{line}");
            assert!(f["last_country"].is_null(), "{line}");
        }
    }
}

#[test]
fn an_input_of_only_bad_records_gives_empty_outputs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE).expect("write pipeline");
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, "not json\n\n[]\n").expect("write input");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("write input");
    let out = replay(
        &pipeline,
        &[("events", input), ("events", empty)],
        1,
        &dir.path().join("out"),
    );
    assert_eq!(int(&out.summary, "events"), 0);
    assert_eq!(int(&out.summary, "rejected"), 2);
    assert!(out.features.is_empty() && out.changelog.is_empty());
    let offsets: Vec<u64> = out.dead_letters.iter().map(|l| int(l, "offset")).collect();
    assert_eq!(offsets, [1, 3]);
}

/// One malformed pipeline: the line `freshet check` must point at, and what the message must
/// say (the fragments, e.g. what was expected).
struct BadPipeline {
    what: &'static str,
    text: String,
    lines: &'static [usize],
    fragments: &'static [&'static str],
}

/// A valid pipeline with `features` as its feature list (lines 11 and on).
fn with_features(features: &str) -> String {
    format!(
        "[[source]]\nname = \"ev\"\nentity = \"user\"\nevent_time = \"ts\"\nallowed_lateness = \"2s\"\n\n\
         [[feature_view]]\nname = \"v\"\nsource = \"ev\"\nfeatures = [\n{features}\n]\n"
    )
}

const COUNT: &str = r#"  { name = "n", agg = "count", window = "10s" },"#;

fn bad_pipelines() -> Vec<BadPipeline> {
    let valid = with_features(COUNT);
    let feature = |f: &str| with_features(&format!("{COUNT}\n{f}"));
    vec![
        BadPipeline {
            what: "unknown key in a source",
            text: valid.replace(
                "allowed_lateness = \"2s\"\n",
                "allowed_lateness = \"2s\"\ncolour = 1\n",
            ),
            lines: &[6],
            fragments: &[
                "unknown field `colour`",
                "expected one of",
                "`allowed_lateness`",
            ],
        },
        BadPipeline {
            what: "unknown key in a feature",
            text: feature(r#"  { name = "s", agg = "sum", field = "amount", windw = "1m" },"#),
            lines: &[12],
            fragments: &["unknown field `windw`", "expected one of", "`window`"],
        },
        BadPipeline {
            what: "unknown top-level table",
            text: format!("{valid}\n[modle]\nname = \"m\"\n"),
            lines: &[14],
            fragments: &["unknown field `modle`", "expected one of"],
        },
        BadPipeline {
            what: "bad duration (unit spelled out)",
            text: valid.replace("\"2s\"", "\"2 seconds\""),
            lines: &[5],
            fragments: &[
                "invalid duration `2 seconds`",
                "expected an integer followed by one of ms, s, m, h, d",
            ],
        },
        BadPipeline {
            what: "bad duration (fraction)",
            text: feature(r#"  { name = "s", agg = "sum", field = "amount", window = "1.5h" },"#),
            lines: &[12],
            fragments: &["invalid duration `1.5h`", "expected an integer"],
        },
        BadPipeline {
            what: "duration that is not a string",
            text: valid.replace("\"2s\"", "2000"),
            lines: &[5],
            fragments: &["expected a string"],
        },
        BadPipeline {
            what: "numeric aggregate without field",
            text: feature(r#"  { name = "s", agg = "sum", window = "1m" },"#),
            lines: &[12],
            fragments: &["feature `s`", "`sum` needs `field = \"...\"`"],
        },
        BadPipeline {
            what: "distinct count without field",
            text: feature(r#"  { name = "d", agg = "count_distinct", window = "1m" },"#),
            lines: &[12],
            fragments: &["feature `d`", "`count_distinct` needs `field"],
        },
        BadPipeline {
            what: "windowed aggregate without window",
            text: feature(r#"  { name = "m", agg = "mean", field = "amount" },"#),
            lines: &[12],
            fragments: &["feature `m`", "`mean` needs `window = \"...\"`"],
        },
        BadPipeline {
            what: "quantile without q",
            text: feature(
                r#"  { name = "p", agg = "quantile", field = "amount", window = "1m" },"#,
            ),
            lines: &[12],
            fragments: &["feature `p`", "`quantile` needs `q`"],
        },
        BadPipeline {
            what: "q above range",
            text: feature(
                r#"  { name = "p", agg = "quantile", q = 1.5, field = "amount", window = "1m" },"#,
            ),
            lines: &[12],
            fragments: &["q = 1.5", "expected 0 < q < 1"],
        },
        BadPipeline {
            what: "q at the excluded bound 0",
            text: feature(
                r#"  { name = "p", agg = "quantile", q = 0.0, field = "amount", window = "1m" },"#,
            ),
            lines: &[12],
            fragments: &["expected 0 < q < 1"],
        },
        BadPipeline {
            what: "q at the excluded bound 1",
            text: feature(
                r#"  { name = "p", agg = "quantile", q = 1.0, field = "amount", window = "1m" },"#,
            ),
            lines: &[12],
            fragments: &["expected 0 < q < 1"],
        },
        BadPipeline {
            what: "slide not dividing window",
            text: feature(r#"  { name = "h", agg = "count", window = "10s", slide = "3s" },"#),
            lines: &[12],
            fragments: &[
                "feature `h`",
                "window = \"10s\" is not a whole multiple of slide = \"3s\"",
            ],
        },
        BadPipeline {
            what: "slide longer than window",
            text: feature(r#"  { name = "h", agg = "count", window = "10s", slide = "20s" },"#),
            lines: &[12],
            fragments: &["expected a positive slide no longer than window"],
        },
        BadPipeline {
            what: "unknown aggregate",
            text: feature(r#"  { name = "x", agg = "median", field = "amount", window = "1m" },"#),
            lines: &[12],
            fragments: &["unknown variant `median`", "expected one of", "`quantile`"],
        },
        BadPipeline {
            what: "unknown late policy",
            text: valid.replace("allowed_lateness = \"2s\"", "late_policy = \"keep\""),
            lines: &[5],
            fragments: &["unknown variant `keep`", "expected `dead_letter` or `drop`"],
        },
        BadPipeline {
            what: "feature view reading an undeclared source",
            text: valid.replace("source = \"ev\"", "source = \"clicks\""),
            // the [[feature_view]] table or its `source` key
            lines: &[7, 9],
            fragments: &["source `clicks`", "not declared", "expected one of: ev"],
        },
        BadPipeline {
            what: "duplicate source names",
            text: format!(
                "{valid}\n[[source]]\nname = \"ev\"\nentity = \"u\"\nevent_time = \"t\"\n"
            ),
            lines: &[14, 15],
            fragments: &["duplicate source name `ev`"],
        },
        BadPipeline {
            what: "duplicate feature view names",
            text: format!(
                "{valid}\n[[feature_view]]\nname = \"v\"\nsource = \"ev\"\nfeatures = [{}]\n",
                COUNT.trim().trim_end_matches(',')
            ),
            lines: &[14, 15],
            fragments: &["duplicate feature_view name `v`"],
        },
        BadPipeline {
            what: "duplicate feature names",
            text: feature(r#"  { name = "n", agg = "count", window = "1m" },"#),
            lines: &[12],
            fragments: &["duplicate feature `n` in view `v`"],
        },
        BadPipeline {
            what: "missing required source key",
            text: valid.replace("entity = \"user\"\n", ""),
            lines: &[1],
            fragments: &["missing field `entity`"],
        },
        BadPipeline {
            what: "bad TOML syntax: unterminated string",
            text: valid.replace("name = \"v\"", "name = \"v"),
            lines: &[8],
            fragments: &["expected `\"`"],
        },
        BadPipeline {
            what: "bad TOML syntax: key without value",
            text: valid.replace("name = \"v\"", "name \"v\""),
            lines: &[8],
            fragments: &["expected `=`"],
        },
        BadPipeline {
            what: "bad TOML syntax: unclosed feature list",
            text: valid.replace("\n]\n", "\n"),
            lines: &[11, 12],
            fragments: &["expected"],
        },
    ]
}

#[test]
fn the_valid_base_pipeline_passes_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, with_features(COUNT)).expect("write pipeline");
    let out = freshet(&["check", "--pipeline", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_malformed_pipeline_fails_check_naming_file_line_and_expectation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (i, case) in bad_pipelines().iter().enumerate() {
        let path = dir.path().join(format!("pipeline{i}.toml"));
        std::fs::write(&path, &case.text).expect("write pipeline");
        let shown = path.display().to_string();
        let out = freshet(&["check", "--pipeline", &shown]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let at_line = case
            .lines
            .iter()
            .any(|line| stderr.contains(&format!("{shown}:{line}:")));
        let missing: Vec<&&str> = case
            .fragments
            .iter()
            .filter(|f| !stderr.contains(**f))
            .collect();
        if out.status.success() || !at_line || !missing.is_empty() {
            failures.push(format!(
                "{}: exit {}, want `{shown}:LINE:` with LINE in {:?} and {missing:?}; stderr: {stderr}",
                case.what, out.status, case.lines
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn replay_args<'a>(pipeline: &'a str, out: &'a str, inputs: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["replay", "--pipeline", pipeline, "--out", out];
    for input in inputs {
        args.extend(["--input", input]);
    }
    args
}

#[test]
fn input_naming_an_unknown_source_fails_listing_the_sources() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE).expect("write pipeline");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").expect("write input");
    let (p, o) = (
        pipeline.display().to_string(),
        dir.path().join("out").display().to_string(),
    );
    let arg = format!("clicks={}", input.display());
    let out = freshet(&replay_args(&p, &o, &[&arg]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--input clicks=")
            && stderr.contains("no source `clicks`")
            && stderr.contains("events"),
        "{stderr}"
    );
}

#[test]
fn input_naming_a_missing_file_fails_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE).expect("write pipeline");
    let missing = dir.path().join("nowhere.jsonl");
    let (p, o) = (
        pipeline.display().to_string(),
        dir.path().join("out").display().to_string(),
    );
    let arg = format!("events={}", missing.display());
    let out = freshet(&replay_args(&p, &o, &[&arg]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("No such file"),
        "{stderr}"
    );
    assert!(
        !Path::new(&o).join("features.jsonl").exists(),
        "no output on a bad input"
    );
}

#[test]
fn input_without_source_name_fails_with_the_expected_form() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE).expect("write pipeline");
    let (p, o) = (
        pipeline.display().to_string(),
        dir.path().join("out").display().to_string(),
    );
    for bad in ["in.jsonl", "=in.jsonl", "events="] {
        let out = freshet(&replay_args(&p, &o, &[bad]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr.contains("expected SOURCE=FILE"), "{bad}: {stderr}");
    }
}

#[test]
fn a_missing_pipeline_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.toml").display().to_string();
    let out = freshet(&["check", "--pipeline", &missing]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read pipeline file") && stderr.contains(&missing),
        "{stderr}"
    );
}
