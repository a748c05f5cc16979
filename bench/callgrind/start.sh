#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of one per-run start: P3 of BENCHMARKS.md
# ("per-run start of a trivial plugin, compiled code cached, vs bare wasmtime with the same
# engine configuration") as figures that repeat on a busy machine.
#
#   bash bench/callgrind/start.sh [N1 N2]
#
# Runs the `start_count` example of warden-runtime (release profile) for warden
# (`PluginHost::run` of the probe's `echo-args`) and bare (the same component on the same
# engine, WASI linked), with N1 and N2 runs, counting the whole process (every thread: work a
# run hands to another thread, such as a queued audit writer, still counts); prints
# (Ir(N2) - Ir(N1)) / (N2 - N1), the instructions of one run, setup, first-use and exit costs
# cancelled, and the ratio. KEEP_PROFILE=warden|bare also prints that mode's inclusive split
# by function (its N2 run). PROBE=path overrides the probe (built here if missing); FAST=1
# builds a quicker, non-release variant (see below). See README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-200}
n2=${2:-600}
target=${CARGO_TARGET_DIR:-target}
probe=${PROBE:-$target/guests/wasm32-wasip2/release/probe.wasm}
if [[ ! -f $probe ]]; then
    cargo build --quiet --release --target wasm32-wasip2 -p probe \
        --manifest-path tests/guests/Cargo.toml --target-dir "$target/guests"
fi
if [[ ${FAST:-} == 1 ]]; then
    # The dev profile with the workspace's crates at opt-level 2 (its dependencies are at 2
    # already), reusing a warm test build: minutes instead of a release build's half hour on
    # a busy machine. Debug assertions stay on, so counts are higher than release's: compare
    # FAST counts with FAST counts only.
    CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo build --quiet --example start_count -p warden-runtime
    exe="$target/debug/examples/start_count"
else
    cargo build --quiet --release --example start_count -p warden-runtime
    exe="$target/release/examples/start_count"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # mode n -> total Ir of the whole process, all threads summed
    local file="$out/cg.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$exe" "$probe" "$@" 2>"$file.log" >/dev/null
    awk '/Collected :/ {print $NF}' "$file.log"
}
printf '%-8s %14s %14s %12s\n' "mode" "Ir(N=$n1)" "Ir(N=$n2)" "Ir per run"
declare -A per
for mode in warden bare; do
    a=$(count "$mode" "$n1")
    b=$(count "$mode" "$n2")
    per[$mode]=$(( (b - a) / (n2 - n1) ))
    printf '%-8s %14s %14s %12s\n' "$mode" "$a" "$b" "${per[$mode]}"
done
awk -v w="${per[warden]}" -v b="${per[bare]}" \
    'BEGIN { printf "warden / bare: %.3f×; warden adds %d instructions per run\n", w / b, w - b }'
if [[ -n "${KEEP_PROFILE:-}" ]]; then
    callgrind_annotate --inclusive=yes "$out/cg.${KEEP_PROFILE}.$n2" | sed -n 1,120p
fi
