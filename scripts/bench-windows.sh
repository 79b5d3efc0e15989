#!/usr/bin/env bash
# End-to-end window benchmark: freshet and the peer systems on the same generated transactions,
# in the same run, each wrapped in /usr/bin/time -v; prints a markdown table of medians.
#
#   scripts/bench-windows.sh [EVENTS]          (default 1000000; see benches/README.md)
#
# Environment:
#   BENCH_REPEAT=N            runs per case (default 3); the table shows medians
#   BENCH_WORKERS="1 2"       worker counts for the systems that take one
#   BENCH_SYSTEMS="..."       subset of: freshet-foundation freshet-w1w2 rust-limit python
#                             bytewax pathway pyflink (default: all of them)
#   BENCH_DIR=DIR             data, builds and results (default: target/bench)
#   FRESHET_BIN=PATH          use this binary instead of `cargo build --release -p freshet`
#   FRESHET_PEERS_DIR=DIR     peer scripts (default: ../shared/peers beside the checkout)
#   PEERS_VENV=DIR            venv with bytewax and pathway (default /tmp/peers-venv)
#   PEERS_VENV_FLINK=DIR      venv with apache-flink (default /tmp/peers-venv-flink)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

EVENTS=${1:-1000000}
[[ "$EVENTS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [EVENTS]" >&2; exit 2; }
REPEAT=${BENCH_REPEAT:-3}
WORKERS=${BENCH_WORKERS:-1 2}
SYSTEMS=${BENCH_SYSTEMS:-freshet-foundation freshet-w1w2 rust-limit python bytewax pathway pyflink}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
PEERS_VENV=${PEERS_VENV:-/tmp/peers-venv}
PEERS_VENV_FLINK=${PEERS_VENV_FLINK:-/tmp/peers-venv-flink}

if [ -n "${FRESHET_PEERS_DIR:-}" ]; then
  PEERS=$FRESHET_PEERS_DIR
else
  PEERS=$(cd "$ROOT/.." && pwd)/shared/peers
fi

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

wants() { [[ " $SYSTEMS " == *" $1 "* ]]; }

RUN_DIR=$BENCH_DIR/runs/windows-$EVENTS-$(date +%Y%m%dT%H%M%S)
mkdir -p "$RUN_DIR"
RUNS=$RUN_DIR/runs.tsv
: >"$RUNS"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/freshet-bench.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

TIME_BIN=""
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
  TIME_BIN=/usr/bin/time
else
  log "/usr/bin/time (GNU time) not found: max RSS is reported only where a system prints it"
fi

# Data: generated once per size and kept; the generator is deterministic.
DATA=$BENCH_DIR/data/txn-$EVENTS
if [ ! -f "$DATA/transactions.jsonl" ]; then
  log "generating ${EVENTS} transactions into ${DATA}"
  rm -rf "$DATA.partial"
  mkdir -p "$DATA.partial"
  python3 "$ROOT/tests/oracle/gen.py" txn --events "$EVENTS" --out "$DATA.partial" >/dev/null
  rm -rf "$DATA"
  mv "$DATA.partial" "$DATA"
fi
INPUT=$DATA/transactions.jsonl
LINES=$(wc -l <"$INPUT")

# skip SYSTEM WORKERS REASON: a row without runs.
skip() {
  printf '%s\t%s\t-\tskip\t\t\t\t%s\n' "$1" "$2" "$3" >>"$RUNS"
  log "skip ${1} (workers ${2}): ${3}"
}

# run_case SYSTEM WORKERS CMD...: REPEAT timed runs. "@OUT@" in CMD becomes an empty scratch dir.
run_case() {
  local system=$1 workers=$2
  shift 2
  local i tag out err tim t0 t1 rc wall
  local -a cmd
  for i in $(seq 1 "$REPEAT"); do
    tag=$RUN_DIR/${system}-w${workers}-${i}
    out=$tag.out err=$tag.err tim=$tag.time
    rm -rf "$SCRATCH/out"
    mkdir -p "$SCRATCH/out"
    cmd=("${@//@OUT@/$SCRATCH/out}")
    if [ -n "$TIME_BIN" ]; then
      cmd=("$TIME_BIN" -v -o "$tim" "${cmd[@]}")
    fi
    log "${system} workers=${workers} run ${i}/${REPEAT}"
    t0=$(date +%s.%N)
    rc=0
    "${cmd[@]}" >"$out" 2>"$err" </dev/null || rc=$?
    t1=$(date +%s.%N)
    wall=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$t0" "$t1")
    if [ "$rc" -ne 0 ]; then
      log "  failed (exit ${rc}); last lines of ${err}:"
      tail -n 5 "$err" >&2 || true
    else
      log "  ${wall}s"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$system" "$workers" "$i" "$rc" "$wall" "$out" "$tim" >>"$RUNS"
  done
  rm -rf "$SCRATCH/out"
}

# --- freshet ---------------------------------------------------------------------------------
FRESHET=""
if wants freshet-foundation || wants freshet-w1w2; then
  if [ -n "${FRESHET_BIN:-}" ]; then
    FRESHET=$FRESHET_BIN
  else
    log "cargo build --release -p freshet"
    if cargo build --release -p freshet >"$RUN_DIR/freshet-build.log" 2>&1; then
      FRESHET=$ROOT/target/release/freshet
    else
      log "freshet build failed (see ${RUN_DIR}/freshet-build.log)"
    fi
  fi
fi
for pipeline in foundation w1w2; do
  wants "freshet-$pipeline" || continue
  case $pipeline in
    foundation) file=$ROOT/tests/oracle/foundation.toml ;;
    w1w2) file=$ROOT/benches/pipelines/w1w2.toml ;;
  esac
  for w in $WORKERS; do
    if [ -z "$FRESHET" ] || [ ! -x "$FRESHET" ]; then
      skip "freshet-$pipeline" "$w" "not built"
      continue
    fi
    run_case "freshet-$pipeline" "$w" "$FRESHET" replay --workers "$w" --pipeline "$file" \
      --input "transactions=$INPUT" --out @OUT@
  done
done

# --- peers -----------------------------------------------------------------------------------
if wants rust-limit; then
  RL=$PEERS/rust-limit/target/release/rust-limit
  if [ ! -x "$RL" ] && [ -f "$PEERS/rust-limit/Cargo.toml" ]; then
    # the peers directory is read-only: build into a target directory of our own
    RL=$BENCH_DIR/rust-limit-target/release/rust-limit
    if [ ! -x "$RL" ]; then
      log "building rust-limit into ${BENCH_DIR}/rust-limit-target"
      CARGO_TARGET_DIR=$BENCH_DIR/rust-limit-target cargo build --release --locked \
        --manifest-path "$PEERS/rust-limit/Cargo.toml" >"$RUN_DIR/rust-limit-build.log" 2>&1 \
        || log "rust-limit build failed (see ${RUN_DIR}/rust-limit-build.log)"
    fi
  fi
  if [ -x "$RL" ]; then
    run_case rust-limit 1 "$RL" --data "$DATA"
  else
    skip rust-limit 1 "not installed"
  fi
fi

if wants python; then
  if [ -f "$PEERS/windows_python.py" ]; then
    run_case python 1 python3 "$PEERS/windows_python.py" --data "$DATA"
  else
    skip python 1 "not installed"
  fi
fi

# venv_has VENV MODULE: the venv exists and imports the module.
venv_has() { [ -x "$1/bin/python" ] && "$1/bin/python" -c "import $2" >/dev/null 2>&1; }

if wants bytewax; then
  for w in $WORKERS; do
    if venv_has "$PEERS_VENV" bytewax && [ -f "$PEERS/windows_bytewax.py" ]; then
      run_case bytewax "$w" "$PEERS_VENV/bin/python" "$PEERS/windows_bytewax.py" --data "$DATA" --workers "$w"
    else
      skip bytewax "$w" "not installed (no bytewax in ${PEERS_VENV})"
    fi
  done
fi

if wants pathway; then
  for w in $WORKERS; do
    if venv_has "$PEERS_VENV" pathway && [ -f "$PEERS/windows_pathway.py" ]; then
      run_case pathway "$w" "$PEERS_VENV/bin/python" "$PEERS/windows_pathway.py" --data "$DATA" --threads "$w"
    else
      skip pathway "$w" "not installed (no pathway in ${PEERS_VENV})"
    fi
  done
fi

if wants pyflink; then
  for w in $WORKERS; do
    if venv_has "$PEERS_VENV_FLINK" pyflink && command -v java >/dev/null 2>&1 && [ -f "$PEERS/windows_pyflink.py" ]; then
      run_case pyflink "$w" "$PEERS_VENV_FLINK/bin/python" "$PEERS/windows_pyflink.py" --data "$DATA" --parallelism "$w"
    else
      skip pyflink "$w" "not installed (no pyflink in ${PEERS_VENV_FLINK}, or no java)"
    fi
  done
fi

# --- report ----------------------------------------------------------------------------------
{
  echo "# Window benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- data: \`gen.py txn --events ${EVENTS}\` (${LINES} lines, ${INPUT})"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(rustc --version 2>/dev/null || echo 'rustc: unknown'); $(python3 --version 2>&1); runs per case: ${REPEAT}; raw files: ${RUN_DIR}"
  echo
  python3 "$ROOT/scripts/bench_windows_report.py" "$RUNS" "$LINES" "$RUN_DIR/results.jsonl"
} | tee "$RUN_DIR/table.md"
log "table: ${RUN_DIR}/table.md, records: ${RUN_DIR}/results.jsonl"
