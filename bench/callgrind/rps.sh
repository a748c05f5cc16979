#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of the codec work of one small Remote
# PowerShell call (`Get-Mailbox -ResultSize 10`: Command, CommandResponse, Receive, a
# ReceiveResponse of ten mailboxes), for the client side and the server side separately: the
# CPU that P9 of BENCHMARKS.md adds over REST besides the second round trip, as figures that
# repeat on a busy machine.
#
#   bash bench/callgrind/rps.sh [N1 N2]
#
# Runs the `small_call` example of warden-psrp (bench profile) with N1 and N2 calls per side,
# counting only its `measured` function; prints (Ir(N2) - Ir(N1)) / (N2 - N1), the
# instructions of one call, setup and first-use costs cancelled. KEEP_PROFILE=client|server also
# prints that side's inclusive split by function (its N2 run). EXE=path runs another build of
# the example (a baseline). See README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-20}
n2=${2:-60}
target=${CARGO_TARGET_DIR:-target}
if [[ -z "${EXE:-}" ]]; then
    cargo build --quiet --profile bench --example small_call -p warden-psrp
fi
exe=${EXE:-"$target/release/examples/small_call"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # side n -> total Ir of `measured`
    local file="$out/cg.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        --toggle-collect='*measured*' "$exe" "$@" 2>"$file.log" >/dev/null
    awk '/Collected :/ {print $NF}' "$file.log"
}
printf '%-8s %14s %14s %12s\n' "side" "Ir(N=$n1)" "Ir(N=$n2)" "Ir per call"
for side in client server; do
    a=$(count "$side" "$n1")
    b=$(count "$side" "$n2")
    printf '%-8s %14s %14s %12s\n' "$side" "$a" "$b" "$(( (b - a) / (n2 - n1) ))"
done
if [[ -n "${KEEP_PROFILE:-}" ]]; then
    callgrind_annotate --inclusive=yes "$out/cg.${KEEP_PROFILE}.$n2" | sed -n 1,80p
fi
