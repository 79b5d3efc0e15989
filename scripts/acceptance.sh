#!/usr/bin/env bash
# Window-semantics acceptance: `freshet replay` of the foundation pipeline on generated
# transactions must equal the from-scratch Python recomputation in tests/oracle/, with 1 and 3
# workers. Every verdict must be MATCH.
#
#   scripts/acceptance.sh
#
# Environment:
#   FRESHET_BIN=PATH        use this binary instead of building target/release/freshet
#   ACCEPTANCE_EVENTS=N     events to generate (default 20000)
#   ACCEPTANCE_WORKERS="W.." worker counts to try (default "1 3")
#   KEEP_WORK=1             keep the work directory (printed) instead of deleting it
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ORACLE=$ROOT/tests/oracle
EVENTS=${ACCEPTANCE_EVENTS:-20000}
WORKERS=${ACCEPTANCE_WORKERS:-1 3}
LATENESS_MS=2000      # foundation.toml: allowed_lateness = "2s"
TTL_MS=172800000      # foundation.toml: ttl = "2d"

log() { printf '[acceptance %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/freshet-acceptance.XXXXXX")
cleanup() {
  if [ "${KEEP_WORK:-0}" = "1" ]; then
    log "work directory kept: ${WORK}"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

if [ -n "${FRESHET_BIN:-}" ]; then
  BIN=$FRESHET_BIN
else
  log "building: cargo build --release -p freshet"
  start=$(date +%s)
  cargo build --release -p freshet
  log "built in $(($(date +%s) - start))s"
  BIN=$ROOT/target/release/freshet
fi
[ -x "$BIN" ] || { log "ERROR: ${BIN} is not an executable"; exit 1; }

log "generating ${EVENTS} transactions (500 keys, 20 ms mean gap)"
python3 "$ORACLE/gen.py" txn --events "$EVENTS" --keys 500 --gap-ms 20 --out "$WORK/data" >/dev/null
INPUT=$WORK/data/transactions.jsonl
mkdir -p "$WORK/oracle"
python3 "$ORACLE/oracle_windows.py" "$INPUT" "$LATENESS_MS" "$TTL_MS" "$WORK/oracle"
log "oracle: $(cat "$WORK/oracle/oracle_meta.json")"

failed=0
summary=()
for w in $WORKERS; do
  out=$WORK/out-w$w
  mkdir -p "$out"
  log "freshet replay --workers ${w}"
  start=$(date +%s)
  rc=0
  "$BIN" replay --workers "$w" --pipeline "$ORACLE/foundation.toml" \
    --input "transactions=$INPUT" --out "$out" >"$WORK/replay-w$w.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$WORK/replay-w$w.log" >&2
    summary+=("workers=${w}: replay FAILED (exit ${rc})")
    failed=1
    continue
  fi
  tail -n 3 "$WORK/replay-w$w.log"
  rc=0
  verdict=$(python3 "$ORACLE/compare_windows.py" "$WORK/oracle" "$out" card) || rc=$?
  printf '%s\n' "$verdict"
  last=$(printf '%s\n' "$verdict" | tail -n 1)
  if [ "$rc" -ne 0 ] || [[ "$last" != *"-> MATCH" ]]; then
    failed=1
  fi
  summary+=("workers=${w} ($(($(date +%s) - start))s): ${last}")
done

log "summary (${EVENTS} events):"
for line in "${summary[@]}"; do
  log "  ${line}"
done
if [ "$failed" -ne 0 ]; then
  KEEP_WORK=1
  log "FAILED: not every verdict is MATCH"
  exit 1
fi
log "all verdicts MATCH"
