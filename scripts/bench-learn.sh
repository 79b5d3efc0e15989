#!/usr/bin/env bash
# Online-learning benchmark: freshet's prequential loop (score, then learn; rows parsed into
# memory first, like the peers) and the peer learners on the same gen.py `learn` stream (dense
# 32-d classification, concept drift at the midpoint), in the same run. Prints a markdown table.
#
#   scripts/bench-learn.sh [ROWS]            (default 1000000)
#
# Environment:
#   BENCH_REPEAT=N         timed runs per freshet case, median reported (default 3)
#   PEERS_REPEAT=N         timed runs per peer (default 1)
#   BENCH_DATA=DIR         the workload (default /tmp/wl-learn; generated when missing)
#   BENCH_DIR=DIR          results (default target/bench)
#   PEERS_VENV=DIR         venv with river, scikit-learn, vowpalwabbit (default /tmp/peers-venv2;
#                          see shared/peers/README.md; peers are skipped when it is missing)
#   FRESHET_PEERS_DIR=DIR  peer scripts (default: ../shared/peers beside the checkout)
#   SKIP_PEERS=1           freshet only
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROWS=${1:-1000000}
[[ "$ROWS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [ROWS]" >&2; exit 2; }
REPEAT=${BENCH_REPEAT:-3}
PEERS_REPEAT=${PEERS_REPEAT:-1}
DATA=${BENCH_DATA:-/tmp/wl-learn}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
PEERS_VENV=${PEERS_VENV:-/tmp/peers-venv2}
if [ -n "${FRESHET_PEERS_DIR:-}" ]; then
  PEERS=$FRESHET_PEERS_DIR
else
  PEERS=$(cd "$ROOT/.." && pwd)/shared/peers
fi
GEN=$(dirname "$PEERS")/workloads/gen.py

log() { printf '[bench-learn %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

RUN_DIR=$BENCH_DIR/runs/learn-$ROWS-$(date +%Y%m%dT%H%M%S)
mkdir -p "$RUN_DIR"
RESULTS=$RUN_DIR/results.jsonl
: >"$RESULTS"

if [ ! -f "$DATA/learn.csv" ] || [ "$(($(wc -l <"$DATA/learn.csv") - 1))" -ne "$ROWS" ]; then
  log "generating $ROWS rows into $DATA"
  python3 "$GEN" learn --rows "$ROWS" --dim 32 --out "$DATA"
fi

log "building the prequential example (release)"
cargo build --release --quiet -p freshet-learn --example prequential
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/examples/prequential

freshet() {
  local label=$1
  shift
  log "freshet $label"
  "$BIN" --data "$DATA" --repeat "$REPEAT" "$@" | sed "s/^{/{\"case\":\"$label\",/" >>"$RESULTS"
}

freshet "lr adam b1" --batch 1
freshet "lr adam b16" --batch 16
freshet "lr adam b64" --batch 64
freshet "lr ftrl b1" --batch 1 --optimizer '{ kind = "ftrl" }'
freshet "lr sgd 0.05 b1" --batch 1 --optimizer '{ kind = "sgd", lr = 0.05 }'
MLP_ROWS=$((ROWS < 200000 ? ROWS : 200000))
freshet "mlp [32,16] b64 (first $MLP_ROWS rows)" --kind mlp --batch 64 --rows "$MLP_ROWS"

if [ -z "${SKIP_PEERS:-}" ]; then
  PY=$PEERS_VENV/bin/python
  if [ -x "$PY" ] && "$PY" -c "import river, sklearn, vowpalwabbit" 2>/dev/null; then
    for peer in "learn_river.py" "learn_river.py --optimizer adam" "learn_sklearn.py" "learn_sklearn.py --eta0 0.05" "learn_vw.py"; do
      log "peer $peer"
      # shellcheck disable=SC2086 # the peer's flags split on purpose
      (cd "$PEERS" && "$PY" $peer --data "$DATA" --repeat "$PEERS_REPEAT") | tail -n 1 \
        | sed "s/^{/{\"case\":\"$peer\",/" >>"$RESULTS"
    done
  else
    log "no peer venv at $PEERS_VENV (river, scikit-learn, vowpalwabbit): peers skipped"
  fi
fi

python3 - "$RESULTS" <<'EOF'
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]

def seg(r, name):
    m = r.get("metrics", r)
    key = {"all": "all", "pre": "pre_drift", "post": "post_drift"}[name]
    return m.get(key) or {}

print("| case | rows/s (wall) | rows/CPU-s | acc | acc 400k-500k | acc 500k-600k | logloss |")
print("|---|---|---|---|---|---|---|")
best = {"all": 0.0, "post": 0.0}
ours = []
for r in rows:
    a, pre, post = seg(r, "all"), seg(r, "pre"), seg(r, "post")
    system = r.get("system", "?")
    label = f"{system} {r['case']}"
    cpu = r.get("rows_per_cpu_s")
    f = lambda v, d=4: "-" if v is None else f"{v:.{d}f}"
    print(f"| {label} | {r['rows_per_s']:,.0f} | {'-' if cpu is None else f'{cpu:,.0f}'} | "
          f"{f(a.get('accuracy'))} | {f(pre.get('accuracy'))} | {f(post.get('accuracy'))} | {f(a.get('logloss'))} |")
    if system != "freshet":
        best["all"] = max(best["all"], a.get("accuracy") or 0)
        best["post"] = max(best["post"], post.get("accuracy") or 0)
    elif r["case"].startswith("lr") and ("adam" in r["case"] or "ftrl" in r["case"]):
        ours.append((r["case"], a.get("accuracy") or 0, post.get("accuracy") or 0))
if best["all"]:
    print(f"\nbest peer: accuracy {best['all']:.4f} overall, {best['post']:.4f} over rows 500000-600000")
    for case, acc, post in ours:
        ok = acc >= best["all"] - 0.005 and post >= best["post"] - 0.005
        print(f"freshet {case}: {acc:.4f} / {post:.4f} -> {'within' if ok else 'NOT within'} 0.5 points")
EOF
log "results: $RESULTS"
