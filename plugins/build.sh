#!/usr/bin/env bash
# Builds every example plugin for wasm32-wasip2 into plugins/target/wasm32-wasip2/release/,
# after running the SDK's own tests natively (its packed-head readers and each world's glue).
# One package per cargo invocation: each plugin enables exactly one world of the SDK.
set -euo pipefail
cd "$(dirname "$0")"
# Always here, whatever CARGO_TARGET_DIR the caller uses: the tests and configs look here.
export CARGO_TARGET_DIR="$PWD/target"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
host=$(rustc -vV | sed -n 's/^host: //p')
for world in router filter balancer health-check; do
  cargo test -q -p wasmesh-plugin-sdk --features "$world" --target "$host"
done
for p in canary-router header-filter fault-filter json-health zone-balancer; do
  cargo build --release -p "$p"
done
