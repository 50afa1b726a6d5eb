# Sourced by the bench scripts: starts three nginx backends on 127.0.0.1:9001-9003 (as
# ../shared/bench/peers.sh starts them), each answering 200 with a ~100-byte body, pinned to
# the CPU list given, with its files in the folder given. Stop them with `stop_backends DIR`.
#   start_backends DIR CPU
start_backends() {
  local dir=$1 cpu=$2 servers="" port body
  mkdir -p "$dir/tmp"
  for port in 9001 9002 9003; do
    body="backend $port $(printf '.%.0s' $(seq 86))"
    servers+="server { listen 127.0.0.1:$port backlog=4096; location / { return 200 \"$body\n\"; } }"$'\n'
  done
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1; daemon on; pid $dir/nginx.pid; error_log $dir/error.log warn;
events { worker_connections 8192; }
http { access_log off; default_type text/plain; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
$servers}
CONF
  taskset -c "$cpu" nginx -c "$dir/nginx.conf"
}

stop_backends() {
  [[ -f $1/nginx.pid ]] && kill "$(cat "$1/nginx.pid")" 2>/dev/null || true
}

# Waits until http://127.0.0.1:PORT/ answers (up to 10 s).
wait_http() {
  local _
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  echo "nothing answers on :$1" >&2
  return 1
}

# Makes a scratch folder, $dir, starts the backends in it on CPU, and on exit kills the proxy
# whose pid the script keeps in $proxy, stops the backends and removes the folder (kept when
# KEEP_DIR is set). Benchmarks use fixed ports, so one waits for another to finish.
#   bench_scratch CPU
bench_scratch() {
  exec {bench_lock}>"${TMPDIR:-/tmp}/wasmesh-bench.lock"
  flock "$bench_lock"
  dir=$(mktemp -d)
  proxy=
  trap bench_cleanup EXIT
  start_backends "$dir" "$1"
}
bench_cleanup() {
  [[ -n ${proxy:-} ]] && kill "$proxy" 2>/dev/null || true
  stop_backends "$dir"
  [[ -n ${KEEP_DIR:-} ]] || rm -rf "$dir"
}
