#!/usr/bin/env bash
# Kafka benchmark of `freshet run`, all parts in one run on one machine (README, Benchmarks):
#   1. throughput Kafka -> Redis: `freshet run` (foundation pipeline, Redis store) from process
#      start until every record of a 4-partition topic is read, beside an rdkafka consumer that
#      only counts (the raw consume rate) and Quix Streams;
#   2. freshness: produce-ack -> visible over HTTP for probe events, with background traffic at
#      half of freshet's measured rate;
#   3. lookups: HTTP GET and batch POST of 1 and 100 entities (wrk) beside redis-benchmark on the
#      same Redis and Feast's feature server.
# Starts its own tansu broker and redis-server on free loopback ports and stops them at the end.
# Prints a markdown table of medians with ratios and target verdicts.
#
#   scripts/bench-kafka.sh [EVENTS]          (default 1000000; the README run: 200000 with
#                                            BENCH_REPEAT=2 BENCH_LOOKUP_SECONDS=5 BENCH_PROBES=500
#                                            BENCH_FRESH_REPEAT=2, about 20 min on 2 loaded cores)
#
# Environment:
#   BENCH_REPEAT=N            runs per case (default 3); tables show medians
#   BENCH_WORKERS="1 2"       freshet --workers (and count-consumer threads)
#   BENCH_PARTS="..."         subset of: throughput breakdown lookups freshness quix feast
#                             (default: all; breakdown = extra throughput rows at the largest
#                             worker count: memory store, no checkpoints, `freshet replay`, and
#                             the W1+W2 pipeline that Quix runs)
#   BENCH_LOOKUP_SECONDS=S    wrk seconds per lookup run (default 10; also Feast's)
#   BENCH_PROBES=N            freshness probes per run (default 1000)
#   BENCH_FRESH_REPEAT=N      freshness runs, each on a fresh topic and service (default 3)
#   BENCH_QUIX_REPEAT=N       Quix Streams runs (default 1: about 2.5 min each for 1M events)
#   BENCH_FRESH_RATE=R        background events/s of the freshness part (default: half of the
#                             best median freshet rate of part 1, or 50000 without it)
#   BENCH_RUN_ARGS="..."      extra `freshet run` arguments for every run, e.g.
#                             "--checkpoint-interval 10s" (default: none, the defaults)
#   BENCH_DIR=DIR             data and results (default: target/bench)
#   FRESHET_BIN=PATH          use this freshet binary; then COUNT_CONSUMER_BIN and
#                             FRESHNESS_BIN must name the two example binaries (else cargo builds)
#   FRESHET_TANSU=PATH        tansu binary (default: tansu on PATH, then the durable one in
#                             ~/.cache/freshet/tansu-0.6.0-durable/bin, then .services/bin/tansu)
#   FRESHET_PEERS_DIR=DIR     peer scripts (default: ../shared/peers beside the checkout)
#   PEERS_VENV_QUIX=DIR       venv with quixstreams (default /tmp/peers-venv-quix)
#   PEERS_VENV_FEAST=DIR      venv with feast (default /tmp/peers-venv2-feast)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

EVENTS=${1:-1000000}
[[ "$EVENTS" =~ ^[0-9]+$ ]] || { echo "usage: $0 [EVENTS]" >&2; exit 2; }
REPEAT=${BENCH_REPEAT:-3}
WORKERS=${BENCH_WORKERS:-1 2}
PARTS=${BENCH_PARTS:-throughput breakdown lookups freshness quix feast}
LOOKUP_S=${BENCH_LOOKUP_SECONDS:-10}
PROBES=${BENCH_PROBES:-1000}
FRESH_REPEAT=${BENCH_FRESH_REPEAT:-3}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
PEERS_VENV_QUIX=${PEERS_VENV_QUIX:-/tmp/peers-venv-quix}
PEERS_VENV_FEAST=${PEERS_VENV_FEAST:-/tmp/peers-venv2-feast}
PEERS=${FRESHET_PEERS_DIR:-$(cd "$ROOT/.." && pwd)/shared/peers}
KB=$ROOT/benches/kafka

log() { printf '[bench-kafka %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
wants() { [[ " $PARTS " == *" $1 "* ]]; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT SECONDS: until something listens on 127.0.0.1:PORT
wait_port() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

RUN_DIR=$BENCH_DIR/runs/kafka-$EVENTS-$(date +%Y%m%dT%H%M%S)
mkdir -p "$RUN_DIR"
RESULTS=$RUN_DIR/results.jsonl
: >"$RESULTS"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/freshet-bench-kafka.XXXXXX")

# --- services (stopped by the EXIT trap, by PID) ------------------------------------------------
PIDS=()
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# the broker: $FRESHET_TANSU, tansu on PATH, the durable one scripts/test.sh builds, or the
# prebuilt one scripts/test.sh fetches (memory storage is used either way)
TANSU=${FRESHET_TANSU:-$(command -v tansu || true)}
for candidate in "${FRESHET_TANSU_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/freshet/tansu-0.6.0-durable}/bin/tansu" \
  "$ROOT/.services/bin/tansu"; do
  [ -n "$TANSU" ] || { [ -x "$candidate" ] && TANSU=$candidate; } || true
done
[ -n "$TANSU" ] && [ -x "$TANSU" ] || { log "no tansu found (set FRESHET_TANSU; scripts/test.sh installs one)"; exit 1; }
command -v redis-server >/dev/null || { log "redis-server is not on PATH"; exit 1; }

KPORT=$(free_port)
BROKERS=127.0.0.1:$KPORT
"$TANSU" broker --listener-url "tcp://$BROKERS" --advertised-listener-url "tcp://$BROKERS" \
  --storage-engine memory://tansu/ >"$RUN_DIR/tansu.log" 2>&1 &
PIDS+=($!)
RPORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --dir "$SCRATCH" \
  >"$RUN_DIR/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$KPORT" 20 || { log "tansu did not listen on ${BROKERS}"; exit 1; }
wait_port "$RPORT" 20 || { log "redis-server did not listen on ${RPORT}"; exit 1; }
REDIS_URL=redis://127.0.0.1:$RPORT/0
log "tansu on ${BROKERS} ($("$TANSU" --version 2>&1 | sed -n 1p)), $(redis-server --version | cut -d' ' -f3) on ${RPORT}"

# --- build --------------------------------------------------------------------------------------
if [ -n "${FRESHET_BIN:-}" ]; then
  FRESHET=$FRESHET_BIN
  COUNT_CONSUMER=${COUNT_CONSUMER_BIN:?with FRESHET_BIN set COUNT_CONSUMER_BIN too}
  FRESHNESS=${FRESHNESS_BIN:?with FRESHET_BIN set FRESHNESS_BIN too}
else
  log "cargo build --release (freshet, examples count_consumer and kafka_freshness)"
  cargo build --release -p freshet -p freshet-kafka --bin freshet --example count_consumer \
    --example kafka_freshness >"$RUN_DIR/build.log" 2>&1 \
    || { log "build failed (see ${RUN_DIR}/build.log)"; exit 1; }
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  FRESHET=$TARGET/release/freshet
  COUNT_CONSUMER=$TARGET/release/examples/count_consumer
  FRESHNESS=$TARGET/release/examples/kafka_freshness
fi

# --- data: generated once per size and kept (the generator is deterministic) --------------------
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

# record PART CASE WORKERS RUN RC OUT: the last JSON line of OUT (or null) as one results record.
record() {
  python3 - "$@" >>"$RESULTS" <<'EOF'
import json, os, sys
part, case, workers, run, rc, out = sys.argv[1:7]
result = None
try:
    for line in open(out, errors="replace").read().splitlines()[::-1]:
        if line.strip().startswith("{"):
            result = json.loads(line)
            break
except (OSError, ValueError):
    pass
print(json.dumps({"part": part, "case": case, "workers": int(workers), "run": int(run), "rc": int(rc),
                  "load1": os.getloadavg()[0], "result": result}))
EOF
}
note() { printf '{"part":"%s","case":"%s","note":%s}\n' "$1" "$2" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$3")" >>"$RESULTS"; }

# topics TAG DATA_TOPIC: topic files (the data topic with 4 partitions and the schema of
# topics/transactions.toml, a changelog and a dead-letter topic) applied; prints the topics dir.
topics() {
  local dir=$SCRATCH/topics-$1
  mkdir -p "$dir"
  cat >"$dir/$2.toml" <<EOF
name = "$2"
partitions = 4
replication_factor = 1
key_field = "card_id"
event_time_field = "ts"

[schema]
fields = [
  { name = "event_id", type = "integer",   required = true },
  { name = "card_id",  type = "string",    required = true },
  { name = "ts",       type = "timestamp", required = true },
  { name = "amount",   type = "number",    required = true },
  { name = "merchant", type = "string",    required = true },
  { name = "country",  type = "string",    required = true },
]
EOF
  printf 'name = "%s.changelog"\npartitions = 4\nreplication_factor = 1\nkey_field = "entity"\n' "$2" >"$dir/$2.changelog.toml"
  printf 'name = "%s.dead_letter"\npartitions = 1\nreplication_factor = 1\n' "$2" >"$dir/$2.dead_letter.toml"
  "$FRESHET" topics apply --brokers "$BROKERS" --dir "$dir" >"$RUN_DIR/topics-$1.log" 2>&1 \
    || { log "topics apply failed (see ${RUN_DIR}/topics-$1.log)"; return 1; }
  echo "$dir"
}

# pipeline TAG TOPIC PORT [redis|memory] [PIPELINE]: PIPELINE (default: the foundation pipeline)
# on TOPIC with a Redis store (key prefix TAG; the memory store with `memory`) and the HTTP API
# on PORT; prints its path.
pipeline() {
  local file=$SCRATCH/$1.toml source=${5:-$ROOT/tests/oracle/foundation.toml}
  {
    printf '[kafka]\nbrokers = "%s"\ngroup_id = "%s"\n\n' "$BROKERS" "$1"
    if [ "${4:-}" = memory ]; then
      printf '[store]\nbackend = "memory"\n\n'
    else
      printf '[store]\nbackend = "redis"\nurl = "%s"\nkey_prefix = "%s"\n\n' "$REDIS_URL" "$1"
    fi
    printf '[serve]\nlisten = "127.0.0.1:%s"\n\n' "$3"
    grep -v -e '^\[store\]' -e '^backend' "$source" \
      | sed "s/^event_time = \"ts\"/topic = \"$2\"\nevent_time = \"ts\"/"
  } >"$file"
  echo "$file"
}

# run_args TAG TOPIC TOPICS_DIR PIPELINE WORKERS: the `freshet run` arguments of one run.
run_args() {
  printf '%s\n' --pipeline "$4" --state-dir "$SCRATCH/state-$1" --workers "$5" \
    --changelog-topic "$2.changelog" --dead-letter-topic "$2.dead_letter" --topics-dir "$3"
  if [ -n "${BENCH_RUN_ARGS:-}" ]; then printf '%s\n' $BENCH_RUN_ARGS; fi
}

# http_ok PORT SECONDS: until GET /healthz answers 200
http_ok() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

TOPIC=""
TOPICS_DIR=""
LAST_TAG=""
LAST_PIPELINE=""
LAST_WORKERS=""
if wants throughput || wants lookups; then
  TOPIC=bench-txn-$$
  TOPICS_DIR=$(topics thr "$TOPIC")
  log "producing ${LINES} events to ${TOPIC} (4 partitions)"
  "$FRESHET" produce --brokers "$BROKERS" --topic "$TOPIC" --topics-dir "$TOPICS_DIR" "$INPUT" \
    | tee "$RUN_DIR/produce.out" >&2
  python3 -c '
import json, re, sys
m = re.search(r"produced (\d+) events .* in ([\d.]+)s \((\d+) events/s\)", open(sys.argv[1]).read())
print(json.dumps({"part": "produce", "case": "freshet-produce", "workers": 1, "run": 1, "rc": 0,
                  "result": {"events": int(m[1]), "seconds": float(m[2]), "events_per_s": float(m[3])} if m else None}))
' "$RUN_DIR/produce.out" >>"$RESULTS"
fi

# --- 1. throughput ------------------------------------------------------------------------------
# freshet_case CASE TAG WORKERS RUN STORE PIPELINE EXTRA_ARGS...: one timed `freshet run` on
# $TOPIC (STORE: redis or memory; PIPELINE: a pipeline file, `-` for the foundation pipeline).
freshet_case() {
  local case=$1 tag=$2 w=$3 i=$4 store=$5 source=$6 port pipe out rc
  shift 6
  [ "$source" = - ] && source=""
  port=$(free_port)
  pipe=$(pipeline "$tag" "$TOPIC" "$port" "$store" "$source")
  mapfile -t args < <(run_args "$tag" "$TOPIC" "$TOPICS_DIR" "$pipe" "$w")
  redis-cli -p "$RPORT" flushall >/dev/null
  out=$RUN_DIR/$case-w$w-$i.out
  log "${case} --workers ${w}, run ${i}/${REPEAT}"
  rc=0
  python3 "$KB/run_freshet.py" --freshet "$FRESHET" --port "$port" --expect "$LINES" \
    --timeout-s 600 --log "$RUN_DIR/$case-w$w-$i.err" -- "${args[@]}" "$@" >"$out" || rc=$?
  record throughput "$case" "$w" "$i" "$rc" "$out"
  log "  $(cat "$out")"
  LAST_TAG=$tag LAST_PIPELINE=$pipe LAST_WORKERS=$w
}

if wants throughput; then
  for i in $(seq 1 "$REPEAT"); do
    if wants breakdown; then
      # where the time goes, at the largest worker count: no Redis, no checkpoints, no Kafka;
      # and Quix's workload (W1+W2) for a like-for-like comparison with it
      bw=${WORKERS##* }
      freshet_case freshet-run-memory-store "mem-w$bw-$i-$$" "$bw" "$i" memory -
      freshet_case freshet-run-no-checkpoints "nockpt-w$bw-$i-$$" "$bw" "$i" redis - \
        --checkpoint-interval 1000h
      freshet_case freshet-run-w1w2 "w1w2-w$bw-$i-$$" "$bw" "$i" redis "$ROOT/benches/pipelines/w1w2.toml"
      out=$RUN_DIR/freshet-replay-w$bw-$i.out
      log "freshet replay (file, memory store) --workers ${bw}, run ${i}/${REPEAT}"
      rm -rf "$SCRATCH/replay-out"
      rc=0
      timeout 600 "$FRESHET" replay --workers "$bw" --pipeline "$ROOT/tests/oracle/foundation.toml" \
        --input "transactions=$INPUT" --out "$SCRATCH/replay-out" >"$out" 2>"$RUN_DIR/freshet-replay-w$bw-$i.err" || rc=$?
      record throughput freshet-replay "$bw" "$i" "$rc" "$out"
    fi
    for w in $WORKERS; do
      out=$RUN_DIR/raw-t$w-$i.out
      log "raw count consumer, threads=${w}, run ${i}/${REPEAT}"
      rc=0
      timeout 300 "$COUNT_CONSUMER" --brokers "$BROKERS" --topic "$TOPIC" --expect "$LINES" \
        --threads "$w" --timeout-s 240 >"$out" 2>"$RUN_DIR/raw-t$w-$i.err" || rc=$?
      record throughput rdkafka-count "$w" "$i" "$rc" "$out"
    done
    for w in $WORKERS; do
      freshet_case freshet-run "thr-w$w-$i-$$" "$w" "$i" redis -
    done
  done
fi

# --- 3. lookups (on the store the last throughput run left) -------------------------------------
if wants lookups; then
  if [ -z "$LAST_TAG" ]; then
    # no throughput part: one run to fill the store
    LAST_WORKERS=${WORKERS##* }
    LAST_TAG=lookup-$$
    port=$(free_port)
    LAST_PIPELINE=$(pipeline "$LAST_TAG" "$TOPIC" "$port")
    mapfile -t args < <(run_args "$LAST_TAG" "$TOPIC" "$TOPICS_DIR" "$LAST_PIPELINE" "$LAST_WORKERS")
    log "filling the store for the lookups"
    python3 "$KB/run_freshet.py" --freshet "$FRESHET" --port "$port" --expect "$LINES" \
      --timeout-s 600 -- "${args[@]}" >"$RUN_DIR/lookup-fill.out" || true
  fi
  port=$(free_port)
  mapfile -t args < <(run_args "$LAST_TAG" "$TOPIC" "$TOPICS_DIR" "$LAST_PIPELINE" "$LAST_WORKERS")
  log "freshet run restarted from its checkpoint (workers ${LAST_WORKERS}) for the lookups"
  "$FRESHET" run "${args[@]}" --listen "127.0.0.1:$port" >/dev/null 2>"$RUN_DIR/lookup-freshet.err" &
  LPID=$!
  PIDS+=("$LPID")
  IDS=$SCRATCH/entity-ids.txt
  python3 -c '
import json, sys
ids = sorted({json.loads(l)["card_id"] for l in open(sys.argv[1])})
open(sys.argv[2], "w").write("\n".join(ids) + "\n")
' "$INPUT" "$IDS"
  if http_ok "$port" 60 && command -v wrk >/dev/null; then
    sleep 3  # let the restart settle (checkpoint loaded, first lag probe) before timing
    found=$(python3 - "$port" "$IDS" <<'EOF'
import json, random, sys, urllib.request
ids = open(sys.argv[2]).read().split()
body = json.dumps({"view": "card", "entities": random.Random(1).sample(ids, 100)}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/features", body, {"content-type": "application/json"})
print(sum(1 for r in json.load(urllib.request.urlopen(req, timeout=5))["results"] if r.get("found", True)))
EOF
)
    log "lookups on $(wc -l <"$IDS") entities; a sample of 100 finds ${found}"
    note lookups freshet-sample "$found of 100 sampled entities found"
    for i in $(seq 1 "$REPEAT"); do
      for c in 1 32; do
        for n in get 1 100; do
          out=$RUN_DIR/lookup-$n-c$c-$i.out
          if [ "$n" = get ]; then envs=(LOOKUP_GET=1); else envs=(LOOKUP_N=$n); fi
          log "wrk freshet ${n} c=${c} ${LOOKUP_S}s run ${i}/${REPEAT}"
          rc=0
          env LOOKUP_IDS="$IDS" "${envs[@]}" timeout $((LOOKUP_S + 30)) wrk -t1 -c"$c" -d"${LOOKUP_S}s" \
            --timeout 5s -s "$KB/lookup.lua" "http://127.0.0.1:$port" >"$out.raw" 2>&1 || rc=$?
          grep '^WRKJSON ' "$out.raw" | sed 's/^WRKJSON //' >"$out" || true
          record lookups "freshet-$n-c$c" "$c" "$i" "$rc" "$out"
        done
      done
    done
  else
    note lookups freshet "not measured: the restarted freshet run did not answer /healthz, or wrk is missing"
  fi
  stop_pid "$LPID"

  # redis-benchmark on the same Redis: the commands under the lookups, and the peers' limits
  mapfile -t keys100 < <(redis-cli -p "$RPORT" --scan --pattern "$LAST_TAG:{card}:v2:*" 2>/dev/null | sed -n 1,100p || true)
  key=${keys100[0]:-}
  if [ -n "$key" ]; then
    size=$(redis-cli -p "$RPORT" strlen "$key")
    redis-benchmark -p "$RPORT" -q -n 100000 -r 100000 -d "$size" -t set >/dev/null
    K10=(); for _ in $(seq 10); do K10+=("key:__rand_int__"); done
    for i in $(seq 1 "$REPEAT"); do
      log "redis-benchmark run ${i}/${REPEAT}"
      rb() {  # rb NAME CLIENTS PIPELINE ARGS...
        local name=$1 c=$2 pl=$3 out=$RUN_DIR/redis-$1-$i.out
        shift 3
        timeout 120 redis-benchmark -p "$RPORT" -c "$c" -P "$pl" -n 100000 -r 100000 --csv "$@" \
          2>/dev/null | python3 -c '
import csv, json, sys
rows = list(csv.reader(sys.stdin))
h, v = rows[0], rows[-1]
r = dict(zip(h, v))
print(json.dumps({"rps": float(r["rps"]), "p50_ms": float(r["p50_latency_ms"]), "p99_ms": float(r["p99_latency_ms"]),
                  "max_ms": float(r["max_latency_ms"]), "pipeline": int(sys.argv[1])}))' "$pl" >"$out" || true
        record lookups "redis-$name" "$c" "$i" 0 "$out"
      }
      rb get-c1 1 1 -t get
      rb vec-c1 1 1 GET "$key"
      rb mget100-c1 1 1 MGET "${keys100[@]}"
      rb get-c32 32 1 -t get
      rb mget10-c50 50 1 MGET "${K10[@]}"
    done
    note lookups redis "freshet vector key ${key}: ${size} bytes; GET values of ${size} bytes; MGET of ${#keys100[@]} freshet vector keys"
  else
    note lookups redis "not measured: no freshet vector in Redis"
  fi
fi

# best_freshet rate|workers: half of the best median `freshet run` rate of part 1 (50000 without
# one), or the worker count that reached it (the last of BENCH_WORKERS without one).
best_freshet() {
  python3 - "$RESULTS" "$1" "${WORKERS##* }" <<'EOF'
import json, statistics, sys
by_w = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("case") == "freshet-run" and r.get("rc") == 0 and (r.get("result") or {}).get("events_per_s"):
        by_w.setdefault(r["workers"], []).append(r["result"]["events_per_s"])
med = {w: statistics.median(v) for w, v in by_w.items()}
best = max(med, key=med.get) if med else None
if sys.argv[2] == "rate":
    print(int(med[best] / 2) if best else 50000)
else:
    print(best if best else sys.argv[3])
EOF
}

# --- 2. freshness -------------------------------------------------------------------------------
if wants freshness; then
  rate=${BENCH_FRESH_RATE:-$(best_freshet rate)}
  fw=${BENCH_FRESH_WORKERS:-$(best_freshet workers)}
  # every run on a fresh topic and a fresh `freshet run`, so that runs do not see each other
  for i in $(seq 1 "$FRESH_REPEAT"); do
    FTOPIC=bench-fresh-$$-$i
    fdir=$(topics "fresh-$i" "$FTOPIC")
    port=$(free_port)
    tag=fresh-$i-$$
    pipe=$(pipeline "$tag" "$FTOPIC" "$port")
    mapfile -t args < <(run_args "$tag" "$FTOPIC" "$fdir" "$pipe" "$fw")
    redis-cli -p "$RPORT" flushall >/dev/null
    "$FRESHET" run "${args[@]}" >/dev/null 2>"$RUN_DIR/fresh-freshet-$i.err" &
    FPID=$!
    PIDS+=("$FPID")
    if http_ok "$port" 60; then
      out=$RUN_DIR/fresh-$i.out
      log "freshness: ${PROBES} probes, background ${rate} events/s, workers ${fw}, run ${i}/${FRESH_REPEAT}"
      rc=0
      timeout 400 "$FRESHNESS" --brokers "$BROKERS" --topic "$FTOPIC" --http "127.0.0.1:$port" \
        --data "$INPUT" --rate "$rate" --probes "$PROBES" --max-s 300 >"$out" 2>"$RUN_DIR/fresh-$i.err" || rc=$?
      record freshness freshet-freshness "$fw" "$i" "$rc" "$out"
      log "  $(cat "$out")"
      # did the service keep up? how many records it had still to read when the probes ended,
      # and how long it took to read them (at most 120 s)
      python3 - "$port" "$out" >"$out.drain" <<'EOF' || true
import json, sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
r = json.load(open(out))
sent = r["background_acked"] + r["probes_sent"]
def read():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.split(" ")[0] in ("freshet_pipeline_events_total", "freshet_pipeline_late_total",
                                      "freshet_pipeline_rejected_total"))
t0 = time.perf_counter()
behind = sent - read()
while read() < sent and time.perf_counter() - t0 < 120:
    time.sleep(0.1)
late = sum(float(l.split()[-1]) for l in urllib.request.urlopen(
    f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode().splitlines()
    if l.split(" ")[0] == "freshet_pipeline_late_total")
print(json.dumps({"behind_at_end": int(behind), "drain_s": round(time.perf_counter() - t0, 2),
                  "drained": read() >= sent, "late": int(late)}))
EOF
      record freshness freshet-freshness-drain "$fw" "$i" 0 "$out.drain"
      log "  $(cat "$out.drain")"
      curl -s "http://127.0.0.1:$port/metrics" >"$RUN_DIR/fresh-$i.metrics" || true
    else
      note freshness freshet "run ${i} not measured: freshet run did not answer /healthz"
    fi
    stop_pid "$FPID"
  done
fi

# --- 1b. Quix Streams (reads its own 1-partition topic from the same broker) --------------------
if wants quix; then
  if [ -x "$PEERS_VENV_QUIX/bin/python" ] && "$PEERS_VENV_QUIX/bin/python" -c 'import quixstreams' 2>/dev/null \
    && [ -f "$PEERS/windows_quix.py" ]; then
    for i in $(seq 1 "${BENCH_QUIX_REPEAT:-1}"); do
      out=$RUN_DIR/quix-$i.out
      log "quixstreams run ${i} (about ${EVENTS} / 7k s at the earlier rate)"
      rc=0
      # windows_quix.py as it is, with max.poll.interval.ms 300000 instead of 6000 (see quix_peer.py)
      timeout 1800 "$PEERS_VENV_QUIX/bin/python" "$KB/quix_peer.py" "$PEERS" -- --data "$DATA" \
        --broker "$BROKERS" >"$out" 2>"$RUN_DIR/quix-$i.err" || rc=$?
      record throughput quixstreams 1 "$i" "$rc" "$out"
      log "  $(tail -n 1 "$out")"
    done
  else
    note throughput quixstreams "not measured: no quixstreams in ${PEERS_VENV_QUIX} (pip install quixstreams==3.28.1 psutil)"
  fi
fi

# --- 3b. Feast feature server (its own redis-server, same binary, after the rest) ---------------
if wants feast; then
  if [ -x "$PEERS_VENV_FEAST/bin/python" ] && "$PEERS_VENV_FEAST/bin/python" -c 'import feast' 2>/dev/null \
    && [ -f "$PEERS/feast_lookup.py" ] && command -v wrk >/dev/null; then
    out=$RUN_DIR/feast.out
    log "feast_lookup.py (${REPEAT} runs per case, wrk ${LOOKUP_S}s)"
    rc=0
    timeout 1800 "$PEERS_VENV_FEAST/bin/python" "$PEERS/feast_lookup.py" --work "$SCRATCH/feast" \
      --redis-port "$(free_port)" --http-port "$(free_port)" --duration "$LOOKUP_S" \
      --repeat "$REPEAT" --sdk-seconds 3 >"$out" 2>"$RUN_DIR/feast.err" || rc=$?
    record lookups feast 1 1 "$rc" "$out"
  else
    note lookups feast "not measured: no feast in ${PEERS_VENV_FEAST} (pip install 'feast[redis]==0.67.0'), or no wrk"
  fi
fi

# --- report -------------------------------------------------------------------------------------
{
  echo "# Kafka benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- command: \`scripts/bench-kafka.sh ${EVENTS}\` (BENCH_REPEAT=${REPEAT}, BENCH_WORKERS=\"${WORKERS}\", BENCH_PARTS=\"${PARTS}\")"
  echo "- data: \`gen.py txn --events ${EVENTS}\` (${LINES} lines), produced with \`freshet produce\` to a 4-partition topic"
  echo "- broker: $("$TANSU" --version 2>&1 | sed -n 1p) (memory storage), $(redis-server --version | cut -d' ' -f1-3), loopback"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- raw files: ${RUN_DIR}"
  echo
  python3 "$KB/report.py" "$RESULTS" "$LINES"
} | tee "$RUN_DIR/table.md"
log "table: ${RUN_DIR}/table.md, records: ${RESULTS}"
