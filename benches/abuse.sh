#!/usr/bin/env bash
# abuse.sh - legitimate latency with and without abuse: wrk's p50/p99 through wasmesh (one
# worker, benches/peers.toml with a 10 s idle and 5 s header-read timeout) over three nginx
# backends, first alone, then while benches/lib/abuse.py holds 2,000 idle connections, 500
# slowloris connections and an HTTP/2 flood (rapid reset, then PINGs never read) against it.
#   cargo build --release && ./benches/abuse.sh
# Knobs: CONNS=32 DURATION=10 BIN=target/release/wasmesh
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-32}; DURATION=${DURATION:-10}; BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/wasmesh}
for tool in nginx wrk python3 curl; do command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
[[ -x $BIN ]] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

source benches/lib/backends.sh
bench_scratch 0
sed -e 's/^idle_timeout = .*/idle_timeout = "10s"\nheader_read_timeout = "5s"/' benches/peers.toml >"$dir/wasmesh.toml"
"$BIN" run --config "$dir/wasmesh.toml" >"$dir/proxy.log" 2>&1 & proxy=$!
wait_http 8090

# Prints "p50 p99 requests/s" of one wrk run.
legit() {
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency http://127.0.0.1:8090/ >"$dir/wrk.txt"
  awk '/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /^Requests\/sec/ {rps=$2} END {print p50, p99, rps}' "$dir/wrk.txt"
}
rss() { awk '/^VmRSS/ {print $2 " KiB"}' "/proc/$proxy/status"; }

wrk -t1 -c"$CONNS" -d2s http://127.0.0.1:8090/ >/dev/null
printf '%-14s %-10s %-10s %-12s %s\n' load p50 p99 "requests/s" "proxy RSS after"
read -r p50 p99 rps < <(legit)
printf '%-14s %-10s %-10s %-12s %s\n' alone "$p50" "$p99" "$rps" "$(rss)"
coproc abuser { python3 benches/lib/abuse.py 8090; }
read -r _ <&"${abuser[0]}"
read -r p50 p99 rps < <(legit)
printf '%-14s %-10s %-10s %-12s %s\n' "under abuse" "$p50" "$p99" "$rps" "$(rss)"
exec {abuser[1]}>&-
read -r summary <&"${abuser[0]}" || true
echo "$summary"
