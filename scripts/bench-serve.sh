#!/usr/bin/env bash
# Model serving side by side with MLServer, in one run, with the same load tool and settings
# (wrk, 1 thread, closed loop, keep-alive, DURATION s per run, REPEAT runs, the median kept):
#   1. MLServer 1.7.1 + mlserver-sklearn (../shared/peers/serve_mlserver.sh): V2 infer of one row
#      of 32 FP64 values, a scikit-learn LogisticRegression, inference in the server process;
#   2. freshet (`freshet bench serve --serve-on`): V2 infer of one row of 32 FP32 values (a
#      logistic regression), and `/v1/models/fraud/predict` for one entity (10 features read from
#      the store, 2 fields from the request);
#   3. `freshet bench serve` with its own load generator (the table it prints).
# Prints a markdown table with the targets of the serving issue and writes the raw lines to
# $BENCH_DIR/serve-<time>.jsonl.
#
#   scripts/bench-serve.sh [--duration 10] [--repeat 2] [--conns "1 32"]
#
# Environment: FRESHET_BIN (default: cargo build --release), PEERS_VENV (default
# /tmp/peers-venv2, with mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn pandas),
# FRESHET_PEERS_DIR (default ../shared/peers), BENCH_DIR (default target/bench).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DURATION=10; REPEAT=2; CONNS="1 32"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2;; --repeat) REPEAT=$2;; --conns) CONNS=$2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac; shift 2
done
PEERS=${FRESHET_PEERS_DIR:-$(cd "$ROOT/.." && pwd)/shared/peers}
PEERS_VENV=${PEERS_VENV:-/tmp/peers-venv2}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
PORT=18280
mkdir -p "$BENCH_DIR"
OUT=$BENCH_DIR/serve-$(date -u +%Y%m%dT%H%M%SZ).jsonl
log() { printf '[bench-serve %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v wrk >/dev/null || { log "wrk is needed (apt-get install -y wrk)"; exit 1; }
[ -x "$PEERS_VENV/bin/mlserver" ] || { log "no MLServer in $PEERS_VENV (see $PEERS/README.md)"; exit 1; }
if [ -z "${FRESHET_BIN:-}" ]; then
  cargo build --release -p freshet >&2
  FRESHET_BIN=$ROOT/target/release/freshet
fi
DATA=$BENCH_DIR/wl-learn
[ -f "$DATA/learn.csv" ] || python3 "$PEERS/../workloads/gen.py" learn --rows 200000 --dim 32 --out "$DATA" >&2

log "MLServer (load1 $(cut -d' ' -f1 /proc/loadavg))"
"$PEERS/serve_mlserver.sh" --data "$DATA" --duration "$DURATION" --repeat "$REPEAT" \
  --conns "$CONNS" --workers 0 --venv "$PEERS_VENV" --work "$BENCH_DIR/mlserver" | tail -1 > "$BENCH_DIR/mlserver.json"
echo "{\"part\":\"mlserver\",\"result\":$(cat "$BENCH_DIR/mlserver.json")}" >> "$OUT"

log "freshet under wrk (load1 $(cut -d' ' -f1 /proc/loadavg))"
TMPDIR=$BENCH_DIR "$FRESHET_BIN" bench serve --serve-on "127.0.0.1:$PORT" --serve-for 900s > "$BENCH_DIR/serve-on.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && [ -f "$BENCH_DIR/freshet-bench-serve/infer.json" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$BENCH_DIR/serve-on.log" >&2; exit 1; }
  sleep 0.5
done
for target in infer predict; do
  case $target in
    infer) url=http://127.0.0.1:$PORT/v2/models/dense/infer;;
    predict) url=http://127.0.0.1:$PORT/v1/models/fraud/predict;;
  esac
  for c in $CONNS; do for r in $(seq "$REPEAT"); do
    line=$(WRK_BODY=$BENCH_DIR/freshet-bench-serve/$target.json wrk -t1 -c"$c" -d"${DURATION}s" \
      --timeout 5s -s "$PEERS/wrk_json.lua" "$url" | grep '^WRKJSON' | cut -c9-)
    echo "{\"part\":\"freshet\",\"target\":\"$target\",\"conns\":$c,\"run\":$r,\"load1\":$(cut -d' ' -f1 /proc/loadavg),\"wrk\":$line}" >> "$OUT"
  done; done
done
kill $SERVER; wait $SERVER 2>/dev/null || true
trap - EXIT

log "freshet bench serve (its own load generator)"
"$FRESHET_BIN" bench serve --requests 50000 --concurrency "${CONNS// /,}" | tee "$BENCH_DIR/bench-serve.txt" >&2
echo "{\"part\":\"bench_serve\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),\"json\":$(grep '^{' "$BENCH_DIR/bench-serve.txt" | tail -1)}" >> "$OUT"

python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ml = next(r["result"] for r in rows if r["part"] == "mlserver")["results"]["infer"]
fr = {}
for r in rows:
    if r["part"] == "freshet":
        fr.setdefault((r["target"], r["conns"]), []).append(r)
print(f"raw lines: {sys.argv[1]}\n")
print("| system, endpoint | c | req/s (median run) | p50 ms | p99 ms | p99.9 ms | errors | load1 |")
print("|---|---|---|---|---|---|---|---|")
for c in sorted({k[1] for k in fr}):
    m = ml.get(f"c{c}")
    if m:
        print(f"| MLServer, V2 infer (1 x 32) | {c} | {m['rps']:,.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['p999_ms']:.3f} | {m['errors']} | {', '.join(map(str, m['load1_runs']))} |")
    for target, name in [("infer", "freshet, V2 infer (1 x 32)"), ("predict", "freshet, /v1 predict (1 entity)")]:
        runs = sorted(fr.get((target, c), []), key=lambda r: r["wrk"]["rps"])
        if not runs:
            continue
        w = runs[len(runs) // 2]["wrk"]
        errors = sum(r["wrk"]["non2xx"] + r["wrk"]["sock_errors"] for r in runs)
        print(f"| {name} | {c} | {w['rps']:,.0f} | {w['p50_us']/1e3:.3f} | {w['p99_us']/1e3:.3f} | {w['p999_us']/1e3:.3f} | {errors} | {', '.join(str(r['load1']) for r in runs)} |")
print()
for c in sorted({k[1] for k in fr}):
    m = ml.get(f"c{c}")
    runs = sorted(fr.get(("infer", c), []), key=lambda r: r["wrk"]["rps"])
    if not m or not runs:
        continue
    w = runs[len(runs) // 2]["wrk"]
    if c == 1:
        ok = w["p99_us"] / 1e3 <= m["p99_ms"] / 2
        print(f"- c=1: freshet V2 infer p99 {w['p99_us']/1e3:.3f} ms vs MLServer's {m['p99_ms']:.3f} ms: {w['p99_us']/1e3/m['p99_ms']:.2f}x (target <= 0.5x: {'met' if ok else 'not met'})")
    else:
        ratio = w["rps"] / m["rps"]
        ok = ratio >= 10 and w["p99_us"] / 1e3 < 5
        print(f"- c={c}: freshet V2 infer {w['rps']:,.0f} req/s vs MLServer's {m['rps']:,.0f}: {ratio:.1f}x, p99 {w['p99_us']/1e3:.3f} ms (target >= 10x with p99 < 5 ms: {'met' if ok else 'not met'})")
EOF
