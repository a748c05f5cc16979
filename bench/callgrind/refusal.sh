#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of one refused call, its policy check and its
# audit line, and of a run's grant: P4 of BENCHMARKS.md as figures that repeat (within 0.1 %)
# on a busy machine.
#
#   bash bench/callgrind/refusal.sh [N1 N2]
#
# Runs the `refusals` example of warden-broker (bench profile) in each mode, for a known cmdlet
# the grant leaves out and for an unknown one (`grant` for the known one only: it has no call), with N1 and N2 iterations, counting only its
# `measured` function; prints (Ir(N2) - Ir(N1)) / (N2 - N1), the instructions of one, setup
# and first-use costs cancelled. `writer` is the work moved off the caller: the refusals' queued
# lines written by the trail's writer thread (or a run's end), counted in `refuse` runs.
# KEEP_PROFILE=refuse|writer|check|line also prints that mode's inclusive split by function
# (its N2 run). The last two rows are a wasm guest's and a Rhai script's whole refused call
# (see below). See README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-1000}
n2=${2:-3000}
# The wasm row needs both N past the broker's 256 written refusals per run (see below).
if (( n1 <= 256 || n2 <= n1 )); then
    echo "refusal.sh: give 256 < N1 < N2 (got $n1 $n2)" >&2
    exit 1
fi
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --profile bench --example refusals -p warden-broker
exe="$target/release/examples/refusals"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
source bench/callgrind/count.sh
count() { # function mode n [unknown] -> total Ir inside `function` (on any thread)
    local function=$1
    shift
    callgrind_count "$out/cg.$function.$1.$2.${3:-known}" "$function" "$exe" "$@"
}
printf '%-22s %14s %14s %12s\n' "mode (call)" "Ir(N=$n1)" "Ir(N=$n2)" "Ir per one"
for call in known unknown; do
    # `writer`: the refusals' queued lines written (serialised, bounded, MAC'd, `write`), by the
    # trail's writer thread or a run's end: `Inner::write_through`, counted in `refuse` runs.
    for mode in refuse writer check line grant; do
        [[ $call == unknown && $mode == grant ]] && continue
        extra=()
        [[ $call == unknown ]] && extra=(unknown)
        function=measured
        run_mode=$mode
        [[ $mode == writer ]] && function=write_through run_mode=refuse
        a=$(count "$function" "$run_mode" "$n1" "${extra[@]}")
        b=$(count "$function" "$run_mode" "$n2" "${extra[@]}")
        printf '%-22s %14s %14s %12s\n' "$mode ($call)" "$a" "$b" "$(( (b - a) / (n2 - n1) ))"
    done
done
# The whole wasm path (the guest's call, the component ABI, the supervisor, the broker, the error
# lowered back), as a guest that keeps asking meets it: ONE run of the probe's `call-spam` with
# N1, then N2, refused calls, both past the run's 256 written refusal lines, so the difference
# is refusals that are counted, not written. `start_count refuse` (warden-runtime's example).
probe=${PROBE:-$target/guests/wasm32-wasip2/release/probe.wasm}
if [[ ! -f $probe ]]; then
    cargo build --quiet --release --target wasm32-wasip2 -p probe \
        --manifest-path tests/guests/Cargo.toml --target-dir "$target/guests"
fi
cargo build --quiet --release --example start_count -p warden-runtime
start_count="$target/release/examples/start_count"
a=$(callgrind_count "$out/cg.wasm.$n1" measured "$start_count" "$probe" refuse "$n1")
b=$(callgrind_count "$out/cg.wasm.$n2" measured "$start_count" "$probe" refuse "$n2")
printf '%-22s %14s %14s %12s\n' "wasm guest (past cap)" "$a" "$b" "$(( (b - a) / (n2 - n1) ))"
# The same as a Rhai script (`try { exo::invoke(…) } catch` in a loop, `start_count
# refuse-rhai`): counted inside the script's evaluation, on the script thread (the Rhai loop's
# own work included; BENCHMARKS.md §4 times that share apart).
a=$(callgrind_count "$out/cg.rhai.$n1" 'warden_runtime::script::evaluate' "$start_count" "$probe" refuse-rhai "$n1")
b=$(callgrind_count "$out/cg.rhai.$n2" 'warden_runtime::script::evaluate' "$start_count" "$probe" refuse-rhai "$n2")
printf '%-22s %14s %14s %12s\n' "Rhai script (past cap)" "$a" "$b" "$(( (b - a) / (n2 - n1) ))"
if [[ -n "${KEEP_PROFILE:-}" ]]; then
    # The inclusive split by function of one mode's N2 run (KEEP_PROFILE=refuse, say).
    function=measured
    mode=$KEEP_PROFILE
    [[ $mode == writer ]] && function=write_through mode=refuse
    callgrind_annotate --inclusive=yes "$out/cg.$function.$mode.$n2.known" | sed -n 1,90p
fi
