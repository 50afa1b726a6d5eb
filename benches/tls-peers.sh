#!/usr/bin/env bash
# tls-peers.sh - TLS termination side by side: nginx, HAProxy and wasmesh terminate TLS with the
# same certificate (ECDSA P-256) in front of the same three nginx backends, each proxy pinned
# to one core with one worker, as ../shared/bench/peers.sh does for cleartext (that script has
# no TLS scenario; this is a copy of its scenario with TLS on the listening side).
#
#   ./benches/tls-peers.sh          (from the project root, after cargo build --release)
#
# Two loads per proxy, wrk -t1, interleaved, REPS times, median reported:
#   kept-alive   requests/s on kept-alive TLS connections (CONNS connections)
#   handshakes   requests/s with `Connection: close`: every request is a new TCP connection
#                and a full TLS handshake, so this is handshakes/s
# Knobs (env): DURATION=5 CONNS=32 REPS=3 LOAD_CPU=0 PROXY_CPU=1 KEEP=0
set -euo pipefail

DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
REPS=${REPS:-3}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
KEEP=${KEEP:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"   # benches/peers-tls.toml names its certificate relative to the project root
WASMESH=${WASMESH:-$ROOT/target/release/wasmesh}
CERTS=$ROOT/target/tls-bench   # where benches/peers-tls.toml expects the certificate

log() { printf '[tls-peers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for c in nginx haproxy wrk openssl taskset curl; do command -v $c >/dev/null || die "$c not installed"; done
[[ -x $WASMESH ]] || die "$WASMESH not built: cargo build --release"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmesh-tls-peers.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ $KEEP == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# One certificate for all three proxies.
mkdir -p "$CERTS" "$WORK/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 -keyout "$CERTS/key.pem" -out "$CERTS/cert.pem" 2>/dev/null
cat "$CERTS/cert.pem" "$CERTS/key.pem" >"$WORK/haproxy.pem"

{
  echo "worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.log warn;"
  echo "events { worker_connections 8192; }"
  echo "http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s; client_body_temp_path $WORK/tmp/b;"
  echo "  proxy_temp_path $WORK/tmp/bp; fastcgi_temp_path $WORK/tmp/bf; uwsgi_temp_path $WORK/tmp/bu; scgi_temp_path $WORK/tmp/bs;"
  for p in 9001 9002 9003; do
    echo "  server { listen 127.0.0.1:$p backlog=4096; location / { return 200 \"backend $p $(printf '%.0s.' {1..86})\\n\"; } }"
  done
  echo "}"
} >"$WORK/backend.conf"

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.log warn;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $WORK/tmp/n; proxy_temp_path $WORK/tmp/np; fastcgi_temp_path $WORK/tmp/nf;
  uwsgi_temp_path $WORK/tmp/nu; scgi_temp_path $WORK/tmp/ns;
  upstream backends { server 127.0.0.1:9001; server 127.0.0.1:9002; server 127.0.0.1:9003; keepalive 512; }
  server {
    listen 127.0.0.1:8443 ssl backlog=4096;
    ssl_certificate $CERTS/cert.pem; ssl_certificate_key $CERTS/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:8444 ssl crt $WORK/haproxy.pem alpn http/1.1
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:9001
  server s2 127.0.0.1:9002
  server s3 127.0.0.1:9003
EOF

start() { local cpu=$1; shift; taskset -c "$cpu" "$@" >>"$WORK/out.log" 2>&1 & PIDS+=($!); }
start "$LOAD_CPU" nginx -c "$WORK/backend.conf" -p "$WORK"
start "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -p "$WORK"
start "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
start "$PROXY_CPU" "$WASMESH" run --config "$ROOT/benches/peers-tls.toml"
for port in 8443 8444 8445; do
  for _ in $(seq 50); do curl -ksf -o /dev/null "https://127.0.0.1:$port/" && break; sleep 0.1; done
  curl -ksf -o /dev/null "https://127.0.0.1:$port/" || { cat "$WORK/out.log"; die "nothing answers on $port"; }
done

declare -A RESULTS
names=(nginx haproxy wasmesh)
declare -A PORT=([nginx]=8443 [haproxy]=8444 [wasmesh]=8445)
run() { # name mode -> rps
  local extra=()
  [[ $2 == handshakes ]] && extra=(-H "Connection: close")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${extra[@]}" "https://127.0.0.1:${PORT[$1]}/" 2>/dev/null \
    | awk '/Requests\/sec/ {print int($2)}'
}
for n in "${names[@]}"; do run "$n" kept-alive >/dev/null; done   # warm-up
for ((r = 1; r <= REPS; r++)); do
  for mode in kept-alive handshakes; do
    for n in "${names[@]}"; do
      RESULTS[$n.$mode]+="$(run "$n" "$mode") "
    done
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\n%-8s %14s %14s\n' proxy "kept-alive/s" "handshakes/s"
for n in "${names[@]}"; do
  printf '%-8s %14s %14s\n' "$n" "$(echo "${RESULTS[$n.kept-alive]}" | median)" "$(echo "${RESULTS[$n.handshakes]}" | median)"
done
printf '(wrk -t1 -c%s -d%ss, median of %s; proxies pinned to cpu %s, wrk and backends to cpu %s)\n' \
  "$CONNS" "$DURATION" "$REPS" "$PROXY_CPU" "$LOAD_CPU"
