#!/usr/bin/env bash
# callgrind.sh - instructions the whole wasmesh process executes per proxied request, counted by
# callgrind (deterministic for a given binary, config and load, however busy the machine is).
#
# Starts three nginx backends on 127.0.0.1:9001-9003, runs wasmesh under callgrind with
# instrumentation off, warms it up with wrk for 2 s, switches instrumentation on for one
# `wrk -t1 -c$CONNS -d${DURATION}s` run, and prints the instructions counted divided by the
# requests wrk completed. The config must listen on :$PORT (benches/peers.toml: 8090,
# benches/peers-plugins.toml: 8091).
#   cargo build --release && ./benches/callgrind.sh benches/peers.toml
#   PORT=8091 ./benches/callgrind.sh benches/peers-plugins.toml
# Knobs: CONNS=32 DURATION=10 PORT=8090 BIN=target/release/wasmesh WRK_ARGS="" (e.g. a header)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-benches/peers.toml}
CONNS=${CONNS:-32}; DURATION=${DURATION:-10}; PORT=${PORT:-8090}; BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/wasmesh}
WRK_ARGS=${WRK_ARGS:-}
for tool in nginx wrk valgrind callgrind_control; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[[ -x $BIN ]] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }

source benches/lib/backends.sh
bench_scratch 0

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  "$BIN" run --config "$CONFIG" >"$dir/proxy.log" 2>&1 & proxy=$!
wait_http "$PORT"
# shellcheck disable=SC2086
wrk -t1 -c"$CONNS" -d2s $WRK_ARGS "http://127.0.0.1:$PORT/" >/dev/null
callgrind_control -i on "$proxy" >/dev/null 2>&1
# shellcheck disable=SC2086
requests=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" $WRK_ARGS "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
callgrind_control -i off "$proxy" >/dev/null 2>&1
kill -TERM "$proxy"
wait "$proxy" 2>/dev/null || true
proxy=
total=$(awk '/Collected :/ {print $NF}' "$dir/proxy.log")
awk -v t="$total" -v n="$requests" 'BEGIN {printf "%d instructions / %d requests = %.0f per request\n", t, n, t / n}'
