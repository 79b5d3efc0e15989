#!/usr/bin/env bash
# Drift benchmark: freshet's drift monitoring against the peer scripts (River, scipy, Evidently)
# on the same generated workload, in the same run, plus the monitors' overhead on a replayed
# pipeline and their memory over 10M values per feature. Prints markdown tables (medians).
#
#   scripts/bench-drift.sh [ROWS]          (default 1000000: gen.py drift, shift at ROWS/2)
#
# Environment:
#   BENCH_REPEAT=N          repeats per measurement (default 3); tables show medians
#   BENCH_DIR=DIR           data, builds and results (default: target/bench)
#   BENCH_EVIDENTLY=0       skip Evidently (about a minute per repeat)
#   BENCH_OVERHEAD_EVENTS=N transactions for the overhead replays (default 1000000; 0 skips)
#   BENCH_RSS_VALUES=N      values per feature for the memory runs (default 10000000; 0 skips)
#   FRESHET_BIN=PATH        freshet binary (default: cargo build --release -p freshet)
#   FRESHET_PEERS_DIR=DIR   peer scripts (default: ../shared/peers beside the checkout)
#   FRESHET_WORKLOADS=DIR   gen.py (default: ../shared/workloads beside the checkout)
#   PEERS_VENV=DIR          Python venv with river, scipy, pandas, evidently (default
#                           /tmp/drift-venv; created and filled with pip when missing)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROWS=${1:-1000000}
[[ "$ROWS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [ROWS]" >&2; exit 2; }
REPEAT=${BENCH_REPEAT:-3}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
SHARED=$(cd "$ROOT/.." && pwd)/shared
PEERS=${FRESHET_PEERS_DIR:-$SHARED/peers}
WORKLOADS=${FRESHET_WORKLOADS:-$SHARED/workloads}
PEERS_VENV=${PEERS_VENV:-/tmp/drift-venv}
OVERHEAD_EVENTS=${BENCH_OVERHEAD_EVENTS:-1000000}
RSS_VALUES=${BENCH_RSS_VALUES:-10000000}

log() { printf '[bench-drift %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

RUN_DIR=$BENCH_DIR/runs/drift-$ROWS-$(date +%Y%m%dT%H%M%S)
mkdir -p "$RUN_DIR"
RESULTS=$RUN_DIR/results.jsonl
: >"$RESULTS"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/freshet-bench-drift.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# runs a command, adds its CPU seconds (user + sys of the process tree), wall seconds and max
# RSS to the JSON summary line it prints: timed CMD...
timed() {
  python3 -c 'import json, resource, subprocess, sys, time
t0 = time.perf_counter(); r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True, check=True).stdout
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
lines = [l for l in out.splitlines() if l.startswith("{")]
d = json.loads(lines[-1]) if lines else {}
d["cpu_s"] = round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 3)
d["wall_s"] = round(time.perf_counter() - t0, 3)
d["maxrss_mb"] = round(r1.ru_maxrss / 1024, 1)
print(json.dumps(d))' "$@"
}

# one JSON line per measurement, tagged: record TAG < line
record() {
  python3 -c 'import json,sys; t=sys.argv[1]
for line in sys.stdin:
    line=line.strip()
    if line.startswith("{"):
        d=json.loads(line); d["tag"]=t; print(json.dumps(d))' "$1" >>"$RESULTS"
}

# --- Python peers -------------------------------------------------------------------------
if ! "$PEERS_VENV/bin/python" -c 'import river, scipy, pandas, numpy' 2>/dev/null; then
  log "installing river, scipy, numpy, pandas, evidently into $PEERS_VENV"
  python3 -m venv "$PEERS_VENV"
  "$PEERS_VENV/bin/pip" install -q river==0.26.1 scipy==1.17.1 numpy "pandas<3" evidently==0.7.23
fi
PY=$PEERS_VENV/bin/python

# --- data ---------------------------------------------------------------------------------
DATA=$BENCH_DIR/data/drift-$ROWS
if [ ! -f "$DATA/drift.jsonl" ]; then
  log "generating $ROWS drift rows into $DATA"
  rm -rf "$DATA.partial"
  python3 "$WORKLOADS/gen.py" drift --rows "$ROWS" --jsonl --out "$DATA.partial"
  mv "$DATA.partial" "$DATA"
fi
DRIFT_AT=$((ROWS / 2))

# --- builds -------------------------------------------------------------------------------
log "building the drift bench example and freshet (release)"
cargo build --release -q -p freshet-drift --example drift_bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_BIN=$TARGET/release/examples/drift_bench
if [ -z "${FRESHET_BIN:-}" ]; then
  cargo build --release -q -p freshet
  FRESHET_BIN=$TARGET/release/freshet
fi

# --- 1. freshet-drift and the peers on drift.csv ----------------------------------------------
log "freshet-drift: detectors, profiles, window tests (repeat $REPEAT)"
"$BENCH_BIN" --data "$DATA" --repeat "$REPEAT" --drift-at "$DRIFT_AT" | record freshet
log "River ADWIN + PageHinkley (repeat $REPEAT)"
(cd "$PEERS" && "$PY" drift_river.py --data "$DATA" --repeat "$REPEAT" --drift-at "$DRIFT_AT" \
  --detectors ADWIN PageHinkley) | record river
log "scipy window tests (repeat $REPEAT)"
(cd "$PEERS" && "$PY" drift_windows.py --data "$DATA" --impl scipy --repeat "$REPEAT" \
  --drift-at "$DRIFT_AT") | record scipy
# scipy has no JS or Wasserstein unit in drift_windows.py: the same protocol for those two
log "scipy jensenshannon + wasserstein_distance (repeat $REPEAT)"
"$PY" - "$DATA" "$REPEAT" "$DRIFT_AT" <<'EOF' | record scipy-extra
import json, sys, time
import numpy as np, pandas as pd, scipy
from scipy import stats
from scipy.spatial import distance
data, repeat, drift_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
df = pd.read_csv(f"{data}/drift.csv", usecols=["value"])
v = df["value"].to_numpy()
ref, windows = v[:100_000], [v[s:s + 10_000] for s in range(100_000, len(v) - 10_000 + 1, 10_000)]
starts = [100_000 + 10_000 * k for k in range(len(windows))]
edges = np.quantile(ref, np.linspace(0, 1, 11)[1:-1])
p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10) / len(ref)
sd = max(float(np.std(ref)), 1e-3)
units = {
    "jensenshannon_q10(value)": lambda w: float(distance.jensenshannon(
        p, np.bincount(np.searchsorted(edges, w, side="right"), minlength=10) / len(w), base=2)),
    "wasserstein_distance_normed(value)": lambda w: float(stats.wasserstein_distance(ref, w)) / sd,
}
tests = {}
for name, score in units.items():
    runs = []
    for _ in range(repeat):
        times, scores = [], []
        for w in windows:
            t0 = time.perf_counter(); scores.append(score(w)); times.append(time.perf_counter() - t0)
        runs.append((sum(times), times, scores))
    runs.sort(key=lambda r: r[0])
    total, times, scores = runs[(len(runs) - 1) // 2]
    pre = [s >= 0.1 for st, s in zip(starts, scores) if st + 10_000 <= drift_at]
    post = [st for st, s in zip(starts, scores) if st >= drift_at and s >= 0.1]
    tests[name] = {"values_per_s": round(10_000 * len(windows) / total, 1),
                   "window_s_median": float(np.median(times)),
                   "checks": {"score": {"rule": "score>=0.1", "false_alarm_windows": f"{sum(pre)}/{len(pre)}",
                                        "detection_delay_rows": post[0] + 10_000 - drift_at if post else None}}}
print(json.dumps({"system": "scipy", "version": scipy.__version__, "task": "drift_windows_extra", "tests": tests}))
EOF
if [ "${BENCH_EVIDENTLY:-1}" != 0 ]; then
  log "Evidently window presets (repeat 1: about a minute)"
  (cd "$PEERS" && "$PY" drift_windows.py --data "$DATA" --impl evidently --repeat 1 \
    --drift-at "$DRIFT_AT") | record evidently || log "evidently failed; skipped"
fi

# --- 2. the acceptance example through the pipeline ------------------------------------------
log "freshet replay of deploy/pipelines/drift.toml (+ adwin) on $ROWS rows"
sed 's/methods = \["psi", "ks", "jensen_shannon", "wasserstein", "chi_square"\]/methods = ["psi", "ks", "jensen_shannon", "wasserstein", "chi_square", "adwin"]/' \
  deploy/pipelines/drift.toml >"$SCRATCH/drift.toml"
"$FRESHET_BIN" replay --pipeline "$SCRATCH/drift.toml" --input "stream=$DATA/drift.jsonl" \
  --out "$SCRATCH/acceptance" | record replay-acceptance
python3 - "$SCRATCH/acceptance/drift.jsonl" "$DRIFT_AT" <<'EOF' | record acceptance
import json, sys
base = 1767225600000
lines = [json.loads(l) for l in open(sys.argv[1])]
mid = base + int(sys.argv[2])
fired = [l for l in lines if l["kind"] == "alert" and l["state"] == "firing"]
first = {}
for a in fired:
    first.setdefault(f'{a["feature"]}/{a["measure"]}', a["window_end"] - mid)
print(json.dumps({"task": "acceptance", "windows": sum(l["kind"] == "window" for l in lines),
                  "alerts_before_shift": sum(a["window_end"] <= mid for a in fired),
                  "first_alert_after_shift_ms": first}))
EOF

# --- 3. overhead of monitors on a replayed pipeline -----------------------------------------
if [ "$OVERHEAD_EVENTS" != 0 ]; then
  TXN=$BENCH_DIR/data/txn-$OVERHEAD_EVENTS
  if [ ! -f "$TXN/transactions.jsonl" ]; then
    log "generating $OVERHEAD_EVENTS transactions into $TXN"
    rm -rf "$TXN.partial"
    python3 "$WORKLOADS/gen.py" txn --events "$OVERHEAD_EVENTS" --out "$TXN.partial"
    mv "$TXN.partial" "$TXN"
  fi
  cp deploy/pipelines/foundation.toml "$SCRATCH/plain.toml"
  { cat deploy/pipelines/foundation.toml; cat <<'EOF'

[[drift]]
name = "txn"
features = ["transactions.amount", "transactions.country"]
reference = { kind = "first", duration = "10m" }
window = "1m"
methods = ["psi", "ks", "jensen_shannon", "wasserstein", "chi_square", "adwin"]
alert = { psi = 0.2, ks_p = 0.001, chi_square_p = 0.001 }
EOF
  } >"$SCRATCH/monitored.toml"
  { cat "$SCRATCH/monitored.toml"; cat <<'EOF'

[[drift]]
name = "computed"
features = ["card.amount_sum_1m_tumbling", "card.amount_mean_1h"]
reference = { kind = "first", duration = "10m" }
window = "1m"
methods = ["psi", "ks"]
EOF
  } >"$SCRATCH/computed.toml"
  # interleaved, so that load from elsewhere on the machine hits every variant alike
  for i in $(seq $((REPEAT + 2))); do
    for variant in plain monitored computed; do
      log "overhead: $variant, run $i/$((REPEAT + 2))"
      timed "$FRESHET_BIN" replay --pipeline "$SCRATCH/$variant.toml" \
        --input "transactions=$TXN/transactions.jsonl" --out "$SCRATCH/o-$variant" \
        | record "overhead-$variant"
    done
  done
fi

# --- 4. memory over RSS_VALUES values per feature -------------------------------------------
if [ "$RSS_VALUES" != 0 ]; then
  log "memory: $RSS_VALUES values per feature through in-memory monitors"
  "$BENCH_BIN" --rss-values "$RSS_VALUES" --win 10000 | record rss-in-memory
  BIG=$BENCH_DIR/data/drift-$RSS_VALUES
  if [ ! -f "$BIG/drift.jsonl" ]; then
    log "generating $RSS_VALUES drift rows into $BIG (a few minutes)"
    rm -rf "$BIG.partial"
    python3 "$WORKLOADS/gen.py" drift --rows "$RSS_VALUES" --jsonl --out "$BIG.partial"
    mv "$BIG.partial" "$BIG"
  fi
  log "memory: freshet replay of the acceptance monitor (+ adwin) over $RSS_VALUES events"
  "$FRESHET_BIN" replay --pipeline "$SCRATCH/drift.toml" --input "stream=$BIG/drift.jsonl" \
    --out "$SCRATCH/big" >"$SCRATCH/big.json" &
  pid=$!
  start=$(date +%s)
  samples=()
  while kill -0 "$pid" 2>/dev/null; do
    rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss_kb" ] && samples+=("[$(($(date +%s) - start)),$((rss_kb / 1024))]")
    sleep 1
  done
  wait "$pid"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s["rss_samples_s_mb"]=json.loads(sys.argv[2]); print(json.dumps(s))' \
    "$SCRATCH/big.json" "[$(IFS=,; echo "${samples[*]}")]" | record rss-pipeline
fi

# --- report -------------------------------------------------------------------------------
cp "$RESULTS" "$RUN_DIR/results.jsonl.bak" 2>/dev/null || true
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["tag"], []).append(r)
def one(tag):
    return by.get(tag, [None])[0]
def m(x):
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"
fr, river, scipy_, extra, ev = one("freshet"), one("river"), one("scipy"), one("scipy-extra"), one("evidently")
print(f"\n## Drift benchmark ({fr['rows']} rows, shift at {fr['drift_at']}; {fr['machine']})\n")
print("### Detectors, one update per value (median of runs)\n")
print("| detector | freshet values/s | River values/s | ratio | freshet false alarms / delay | River false alarms / delay |")
print("|---|---|---|---|---|---|")
for name in ["ADWIN", "PageHinkley"]:
    f, r = fr["detectors"][name], (river or {}).get("detectors", {}).get(name)
    rv = r["values_per_s"] if r else None
    print(f"| {name} | {m(f['values_per_s'])} | {m(rv) if rv else '-'} | {f['values_per_s'] / rv:.1f}x | "
          f"{f['false_alarms']} / {f['detection_delay']} | {(r or {}).get('false_alarms', '-')} / {(r or {}).get('detection_delay', '-')} |"
          if rv else f"| {name} | {m(f['values_per_s'])} | - | - | {f['false_alarms']} / {f['detection_delay']} | - |")
print("\n### Profile updates in memory, one core (median of runs)\n")
print("| update | values/s |")
print("|---|---|")
for k, v in fr["profiles"].items():
    print(f"| {k} | {m(v['values_per_s'])} |")
print("\n### Window tests: reference 100k rows, windows of 10k rows (values/s = window rows x columns / compute s, median run)\n")
print("| test | freshet values/s | peer | peer values/s | ratio | freshet false alarms, delay | peer false alarms, delay |")
print("|---|---|---|---|---|---|---|")
pairs = [
    ("ks_2samp(value)", "scipy ks_2samp", scipy_, "ks_2samp(value)", "p", "p"),
    ("psi_q10(value)", "scipy PSI q10", scipy_, "psi_q10(value)", "psi", "psi"),
    ("jensen_shannon_q10(value)", "scipy jensenshannon q10", extra, "jensenshannon_q10(value)", "js", "score"),
    ("wasserstein_normed(value)", "scipy wasserstein_distance", extra, "wasserstein_distance_normed(value)", "w", "score"),
    ("chi_square_gof(category)", "scipy chi2_contingency", scipy_, "chi2_contingency(category)", "p", "p"),
    ("chi_square_2samp(category)", "scipy chi2_contingency", scipy_, "chi2_contingency(category)", "p", "p"),
    ("psi(category)", "scipy PSI(category)", scipy_, "psi(category)", "psi", "psi"),
    ("pipeline_profile_all4(value)", "Evidently DataDriftPreset()", ev, "DataDriftPreset()", "ks_p", "value"),
]
for ours, label, peer, theirs, check, peer_check in pairs:
    f = fr["tests"][ours]
    p = (peer or {}).get("tests", {}).get(theirs)
    fc = f["checks"].get(check, {})
    cell = lambda c: f"{c.get('false_alarm_windows', '-')}, {c.get('detection_delay_rows', '-')}"
    if p:
        pc = p["checks"].get(peer_check, {})
        print(f"| {ours} | {m(f['values_per_s'])} | {label} | {m(p['values_per_s'])} | {f['values_per_s'] / p['values_per_s']:.1f}x | {cell(fc)} | {cell(pc)} |")
    else:
        print(f"| {ours} | {m(f['values_per_s'])} | {label} | - | - | {cell(fc)} | - |")
acc = one("acceptance")
if acc:
    print(f"\n### Acceptance pipeline (deploy/pipelines/drift.toml + adwin) through `freshet replay`\n")
    rep = one("replay-acceptance")
    print(f"{rep['events']} events in {rep['seconds']} s ({m(rep['events_per_s'])} events/s), {acc['windows']} window lines, "
          f"{acc['alerts_before_shift']} alerts before the shift; first alert after the shift (ms = rows): {acc['first_alert_after_shift_ms']}")
ov = {k: by.get(f"overhead-{k}", []) for k in ["plain", "monitored", "computed"]}
if ov["plain"]:
    print("\n### Overhead of drift monitors on `freshet replay` (foundation.toml, 1 worker, interleaved runs; medians)\n")
    print("| pipeline | CPU s per run | median CPU s | CPU overhead | median wall s | wall overhead | events/s |")
    print("|---|---|---|---|---|---|---|")
    base_cpu = statistics.median(r["cpu_s"] for r in ov["plain"])
    base_wall = statistics.median(r["seconds"] for r in ov["plain"])
    for k, label in [("plain", "foundation.toml"), ("monitored", "+ [[drift]] amount, country: 5 measures + adwin"),
                     ("computed", "+ also computed features (1m tumbling sum, 1h continuous mean): psi, ks")]:
        if not ov[k]:
            continue
        cpu = [r["cpu_s"] for r in ov[k]]
        med_cpu = statistics.median(cpu)
        med_wall = statistics.median(r["seconds"] for r in ov[k])
        ev_s = statistics.median(r["events_per_s"] for r in ov[k])
        print(f"| {label} | {', '.join(f'{s:.2f}' for s in cpu)} | {med_cpu:.2f} | {100 * (med_cpu / base_cpu - 1):+.1f}% | "
              f"{med_wall:.2f} | {100 * (med_wall / base_wall - 1):+.1f}% | {m(ev_s)} |")
rss = one("rss-in-memory")
if rss:
    r = rss["rss"]
    print(f"\n### Memory: {r['values_per_feature']} values per feature through in-memory monitors "
          f"(numeric window profile + categorical + ADWIN + Page-Hinkley, windows of {r['window_values']})\n")
    print("| values | VmRSS MB | VmHWM MB |")
    print("|---|---|---|")
    for s in r["samples"]:
        print(f"| {s['values']} | {s['rss_mb']} | {s['hwm_mb']} |")
    print(f"\nADWIN buckets at the end: {r['adwin_buckets']}; {r['windows']} windows evaluated in {r['seconds']} s.")
rp = one("rss-pipeline")
if rp:
    s = rp["rss_samples_s_mb"]
    print(f"\n### Memory: freshet replay of the acceptance monitor over {rp['events']} events\n")
    print(f"{rp['seconds']} s, peak RSS {rp['peak_rss_mb']} MB; VmRSS every second (s, MB): {s}")
EOF
log "results: $RESULTS"
