#!/usr/bin/env bash
# Kafka request -> response latency of `[[serving]]` at a stated rate (1,000 requests/s for 10 s),
# against tansu and Redis started by scripts/test.sh, with a release build. Prints one JSON line:
#   {"bench":"kafka_serving","rate_per_s":1000,"requests":10000,"p50_ms":..,"p99_ms":..,..}
# p50/p99 are broker timestamps (request created by the producer -> answer created by freshet);
# read_to_ack_* are freshet's own figures (request read -> answer acknowledged).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/test.sh cargo test --release -p freshet --test live -- --ignored --exact \
  --nocapture kafka_serving_latency
