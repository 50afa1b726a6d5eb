#!/usr/bin/env bash
# plugin-ratio.sh - wasmesh with the bench route's router and two filters against the same
# wasmesh without them, in interleaved pairs (the ratio issue 3 asks about).
#
# Both proxies run pinned to PROXY_CPU (default 1); wrk and three nginx backends on
# 127.0.0.1:9001-9003 (as ../shared/bench/peers.sh starts them) run on LOAD_CPU (default 0).
# Each round runs `wrk -t1 -c$CONNS -d${DURATION}s` against benches/peers.toml (:8090), then
# benches/peers-plugins.toml (:8091), and prints both rates, the user and system CPU each
# proxy spent per request (from /proc), and the ratio; then the median ratio.
#   cargo build --release && ./plugins/build.sh && ./benches/plugin-ratio.sh
# Knobs: ROUNDS=5 DURATION=4 CONNS=32 LOAD_CPU=0 PROXY_CPU=1 BIN=target/release/wasmesh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-4}; CONNS=${CONNS:-32}
LOAD_CPU=${LOAD_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/wasmesh}
for tool in nginx wrk taskset; do command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
[[ -x $BIN ]] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }

source benches/lib/backends.sh
dir=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  stop_backends "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
start_backends "$dir" "$LOAD_CPU"

taskset -c "$PROXY_CPU" "$BIN" run --config benches/peers.toml >"$dir/plain.log" 2>&1 & plain=$!
taskset -c "$PROXY_CPU" "$BIN" run --config benches/peers-plugins.toml >"$dir/plugins.log" 2>&1 & plugins=$!
pids+=("$plain" "$plugins")
for port in 8090 8091; do
  wait_http "$port"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
done

hz=$(getconf CLK_TCK)
# Prints "rps user_us sys_us" per request for proxy PID on PORT.
measure() {
  local port=$1 pid=$2 u0 s0 u1 s1 out
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$port/")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  echo "$out" | awk -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v hz="$hz" '
    /requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%.0f %.2f %.2f\n", r, du / hz * 1e6 / n, ds / hz * 1e6 / n}'
}
ratios=()
for round in $(seq "$ROUNDS"); do
  read -r ra ua sa < <(measure 8090 "$plain")
  read -r rb ub sb < <(measure 8091 "$plugins")
  ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f", b / a}')
  ratios+=("$ratio")
  printf 'round %d: plain %s req/s (user %s, sys %s us/req) | plugins %s req/s (user %s, sys %s us/req) | ratio %s\n' \
    "$round" "$ra" "$ua" "$sa" "$rb" "$ub" "$sb" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR] = $1} END {printf "median ratio %s of %d rounds\n", v[int((NR + 1) / 2)], NR}'
