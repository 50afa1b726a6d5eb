#!/usr/bin/env bash
# Quickstart: build wasmesh, start three demo backends on 127.0.0.1:9101-9103, and run the
# proxy on 127.0.0.1:8080 with examples/quickstart/wasmesh.toml. Ctrl-C stops everything.
#   curl -s localhost:8080/            # answered by alpha, beta, gamma in turn
#   curl -s localhost:8080/api/echo    # routed with /api stripped
#   curl -s localhost:10010/metrics    # Prometheus metrics
set -euo pipefail
cd "$(dirname "$0")/../.."
.ci/deps build
cargo build --release --bin wasmesh --bin demo-backend
target=${CARGO_TARGET_DIR:-target}/release
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for pair in alpha:9101 beta:9102 gamma:9103; do
  "$target/demo-backend" --name "${pair%%:*}" --listen "127.0.0.1:${pair##*:}" &
  pids+=($!)
done
"$target/wasmesh" run --config examples/quickstart/wasmesh.toml "$@" &
pids+=($!)
wait "${pids[-1]}"
