#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a while, with no crash, hang or runaway memory
# allowed (docs/fuzzing.md):
#   proxy/fuzz/run.sh [SECONDS] [TARGET...] [-- LIBFUZZER-FLAG...]
# SECONDS per target (default 20); every target when none is named. FUZZ_SANITIZER picks
# cargo-fuzz's sanitizer: `address` (AddressSanitizer, the default, for long runs) or `none`
# (what CI runs: a third cheaper to build, the Rust code needs no ASan to be memory-safe;
# docs/fuzzing.md has the figures). Each run starts from the
# committed corpus (corpus/TARGET) and writes what it finds to a scratch corpus beside it
# (scratch/TARGET), so the committed one changes only by hand (see docs/fuzzing.md); a crash
# is saved under artifacts/TARGET and fails the script.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
(($#)) && shift
targets=()
while (($#)) && [[ $1 != -- ]]; do targets+=("$1"); shift; done
(($#)) && shift
# cargo-fuzz passes nightly flags (-Zsanitizer=address); this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# Release with debug assertions and overflow checks (Cargo.toml leaves the dependencies the
# targets never run unoptimised); 16 codegen units build the proxy on both cores for little
# run-time cost.
build=(--codegen-units 16 --sanitizer "${FUZZ_SANITIZER:-address}")
cargo fuzz build "${build[@]}"
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "scratch/$target"
  echo "fuzz: $target for ${seconds}s" >&2
  # -timeout: one input taking 5 s is a hang. -rss_limit_mb / -malloc_limit_mb: the
  # process, or one allocation, growing past 2 GiB / 256 MiB is a leak or an unbounded
  # allocation. -max_len: the committed corpus' largest input (a configuration file) fits.
  cargo fuzz run "${build[@]}" "$target" "scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=16384 \
    -print_final_stats=1 "$@"
done
