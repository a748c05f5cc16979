#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of one allowed `Get-Mailbox -ResultSize 10`
# call on the host side, and of its parts: P1 of BENCHMARKS.md as figures that repeat on a
# busy machine.
#
#   bash bench/callgrind/call.sh [N1 N2 [OBJECTS]]
#
# Runs the `calls` example of warden-broker (bench profile) in each mode — `call` (the broker,
# as a wasm guest calls it), `shaped` (the same, output shaped), `session` (the REST session
# alone), `decode` (decoding the page into objects alone), `text` (decoding it into the
# guest's JSON alone, what `call` does), `plain` (serde_json into a Value, what a plain
# client does) — against a canned transport answering OBJECTS (10) mailboxes, with N1 and N2
# calls, counting only its `measured` function; prints (Ir(N2) - Ir(N1)) / (N2 - N1), the
# instructions of one call, setup and first-use costs cancelled. MODES="call decode" picks
# modes; KEEP_PROFILE=call also prints that mode's inclusive split by function (its N2 run).
# See README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-200}
n2=${2:-600}
objects=${3:-10}
modes=${MODES:-call shaped session decode text plain}
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --profile bench --example calls -p warden-broker
exe="$target/release/examples/calls"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
source bench/callgrind/count.sh
count() { # mode n -> total Ir of `measured`
    callgrind_count "$out/cg.$1.$2" measured "$exe" "$1" "$2" "$objects"
}
printf '%-10s %14s %14s %12s\n' "mode" "Ir(N=$n1)" "Ir(N=$n2)" "Ir per call"
for mode in $modes; do
    a=$(count "$mode" "$n1")
    b=$(count "$mode" "$n2")
    printf '%-10s %14s %14s %12s\n' "$mode" "$a" "$b" "$(( (b - a) / (n2 - n1) ))"
done
if [[ -n "${KEEP_PROFILE:-}" ]]; then
    # The inclusive split by function of one mode's N2 run (KEEP_PROFILE=call, say).
    callgrind_annotate --inclusive=yes "$out/cg.${KEEP_PROFILE}.$n2" | sed -n 1,100p
fi
