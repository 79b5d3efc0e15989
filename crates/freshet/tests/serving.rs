//! `freshet bench serve` end to end: the binary trains its models, serves them over HTTP,
//! loads both endpoints at two concurrency levels while publishing new versions, and reports
//! no error.

mod common;

use serde_json::Value;

use common::freshet;

#[test]
fn bench_serve_answers_every_request_while_models_are_published() {
    let output = freshet(&[
        "bench",
        "serve",
        "--requests",
        "400",
        "--concurrency",
        "1,4",
        "--entities",
        "200",
        "--server-threads",
        "2",
        "--publish-every",
        "20ms",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("p99 ms"), "{stdout}");
    let summary: Value = serde_json::from_str(stdout.lines().last().expect("summary line"))
        .expect("the last line is JSON");
    let results = summary["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{summary}");
    for r in results {
        assert_eq!(r["requests"], 400, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["rps"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["p99_ms"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    assert!(
        summary["versions_published_during_load"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{summary}"
    );
}
