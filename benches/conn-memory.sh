#!/usr/bin/env bash
# conn-memory.sh - memory per downstream connection, wasmesh beside nginx (one worker each),
# in two states: a connection that has sent nothing, and a kept-alive connection idle after
# one request. For each proxy and state, a fresh proxy is started over three nginx backends
# (127.0.0.1:9001-9003), warmed with a few requests, then COUNT connections are opened and
# held (benches/lib/hold_conns.py); the proxy's RSS growth divided by COUNT is printed.
# wasmesh runs with MIMALLOC_ALLOW_THP=0: by default its allocator asks for transparent huge
# pages, so its RSS grows in 2 MiB steps, 0.4 KiB per connection at COUNT=5000, more than the
# figure measured; nginx (glibc) does not ask for them.
#   cargo build --release && ./benches/conn-memory.sh
# Knobs: COUNT=5000 BIN=target/release/wasmesh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-5000}; BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/wasmesh}
for tool in nginx python3 curl; do command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
[[ -x $BIN ]] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }
ulimit -n $((COUNT * 2 + 1024))

source benches/lib/backends.sh
bench_scratch 0
cat >"$dir/nginx-proxy.conf" <<CONF
worker_processes 1; daemon off; master_process on; pid $dir/nginx-proxy.pid; error_log $dir/proxy-error.log warn;
worker_rlimit_nofile $((COUNT * 2 + 1024));
events { worker_connections $((COUNT * 2)); }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  upstream backends {
    server 127.0.0.1:9001; server 127.0.0.1:9002; server 127.0.0.1:9003;
    keepalive 512; keepalive_requests 1000000; keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:8081 backlog=4096;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
# wasmesh as benches/peers.toml runs it, with room for the connections and a header-read
# timeout that outlasts the measurement.
sed -e 's/^idle_timeout = .*/idle_timeout = "120s"\nheader_read_timeout = "60s"\nmax_connections = 100000/' \
  benches/peers.toml >"$dir/wasmesh.toml"

traffic() { for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$1/"; done; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Prints the KiB per connection for the proxy started by "$@" on PORT, whose serving process
# is found by PICK (a command printing its pid), in STATE (silent or request).
measure() {
  local port=$1 state=$2 pick=$3 before after flag=
  shift 3
  "$@" >"$dir/proxy.log" 2>&1 & proxy=$!
  wait_http "$port"
  traffic "$port"; sleep 1.5; traffic "$port"
  local pid; pid=$($pick)
  before=$(rss_kib "$pid")
  [[ $state == request ]] && flag=--request
  coproc hold { python3 benches/lib/hold_conns.py "$port" "$COUNT" $flag; }
  read -r _ <&"${hold[0]}"
  # Quiet connections park within two seconds; the allocator (mimalloc) gives freed pages back
  # to the system on later allocation activity, which a serving proxy always has: some
  # traffic on other connections, as before the first reading.
  sleep 3
  traffic "$port"; sleep 1.5; traffic "$port"
  after=$(rss_kib "$pid")
  exec {hold[1]}>&-
  wait "$hold_PID" 2>/dev/null || true
  kill "$proxy"; wait "$proxy" 2>/dev/null || true; proxy=
  awk -v b="$before" -v a="$after" -v n="$COUNT" 'BEGIN {printf "%.2f", (a - b) * 1024 / n / 1024}'
}
nginx_worker() { pgrep -P "$(cat "$dir/nginx-proxy.pid")" | head -1; }
wasmesh_pid() { echo "$proxy"; }

printf '%-8s %-24s %s\n' proxy state "KiB per connection (RSS growth / $COUNT)"
for state in silent request; do
  label=$([[ $state == silent ]] && echo "sent nothing" || echo "idle after one request")
  w=$(measure 8090 "$state" wasmesh_pid env MIMALLOC_ALLOW_THP=0 "$BIN" run --config "$dir/wasmesh.toml")
  n=$(measure 8081 "$state" nginx_worker nginx -c "$dir/nginx-proxy.conf")
  printf '%-8s %-24s %s\n' wasmesh "$label" "$w" nginx "$label" "$n"
done
