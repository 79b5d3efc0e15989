//! `freshet demo` shows drift alerts firing after its generator shifts amounts and countries
//! (`--shift-at`) and clearing after it shifts back (`--shift-back-at`). A 50 s run in wall
//! time: event time runs 10× faster, so the 2 min reference is ready after 12 s and a 30 s
//! window closes every 3 s.

mod common;

use common::freshet;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Seconds since the start printed at the head of a demo line (`[ 12.3s] ...`).
fn at(line: &str) -> f64 {
    line.trim_start_matches('[')
        .split_once("s]")
        .and_then(|(s, _)| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no time in `{line}`"))
}

#[test]
fn demo_alert_fires_after_the_shift_and_clears_after_the_shift_back() {
    let port = free_port().to_string();
    let out = freshet(&[
        "demo",
        "--duration",
        "50s",
        "--shift-at",
        "15s",
        "--shift-back-at",
        "27s",
        "--port",
        &port,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let find = |needle: &str| lines.iter().find(|l| l.contains(needle)).copied();
    let shifted = find("generator: SHIFTED").expect("the generator announces the shift");
    let back = find("generator: shifted BACK").expect("the generator announces the shift back");
    assert!((at(shifted) - 15.0).abs() < 1.0, "{shifted}");
    assert!((at(back) - 27.0).abs() < 1.0, "{back}");
    let firing: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("DRIFT ALERT FIRING: card_drift"))
        .collect();
    let cleared: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("DRIFT ALERT CLEARED: card_drift"))
        .collect();
    assert!(!firing.is_empty(), "no alert fired:\n{stdout}");
    // the fraud model's error is monitored too (ADWIN, in its learner thread)
    assert!(
        find("drift fraud_model: reference of model.fraud.error ready").is_some(),
        "{stdout}"
    );
    // every alert fires after the shift (two shifted windows: about 6 s) and clears after the
    // shift back (three calm windows: about 9 s more)
    for f in &firing {
        assert!(at(f) > 15.0, "fired before the shift: {f}");
    }
    assert_eq!(firing.len(), cleared.len(), "{firing:?}\n{cleared:?}");
    for c in &cleared {
        assert!(at(c) > 27.0, "cleared before the shift back: {c}");
    }
}
