#!/usr/bin/env bash
# Memory over a long replay: runs `freshet replay` and samples its resident set size every
# second, printing one line per sample and the summary line at the end. Flat RSS after the
# longest window has filled means expired window state is dropped.
#   scripts/bench-memory.sh PIPELINE TRANSACTIONS.jsonl [WORKERS]
set -euo pipefail
pipeline=$1
input=$2
workers=${3:-1}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
freshet=${FRESHET:-$root/target/release/freshet}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$freshet" replay --pipeline "$pipeline" --input "transactions=$input" --out "$out" \
  --workers "$workers" >"$out/summary.json" &
pid=$!
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$rss_kb" ] && printf 'rss t=%ss %s MB\n' "$(($(date +%s) - start))" "$((rss_kb / 1024))"
  sleep 1
done
wait "$pid"
cat "$out/summary.json"
