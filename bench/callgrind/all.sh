#!/usr/bin/env bash
# The repeatable figures of BENCHMARKS.md: instruction counts (valgrind --tool=callgrind) of
# P1 (the host's work per allowed call, against a plain client's decoding of the same answer),
# P3 (a per-run start against bare wasmtime), P4 (a refused call, on the calling thread and
# what it hands the trail's writer) and P9 (the Remote PowerShell codec of one small call).
# Counts do not move with the machine's load, so these are the figures to compare across
# commits. Writes bench/results/callgrind.md (each script's table, verbatim, with its
# command); bench/run.sh puts it in BENCHMARKS.md.
#
#   bash bench/callgrind/all.sh        # about 10 minutes on a 2-core machine
set -euo pipefail
cd "$(dirname "$0")/../.."
results=bench/results
mkdir -p "$results"
out="$results/callgrind.md"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
section() { # title command...
    local title=$1
    shift
    echo "callgrind/all.sh: $title" >&2
    {
        echo
        echo "#### $title"
        echo
        echo '```text'
        echo "\$ ${MODES:+MODES=\"$MODES\" }$*"
        "$@"
        echo '```'
    } >>"$tmp"
}
MODES="call session decode text plain" section "P1: one allowed call, host side (instructions per call)" \
    bash bench/callgrind/call.sh
section "P3: one per-run start of a trivial plugin (instructions per run, whole process)" \
    bash bench/callgrind/start.sh
section "P4: one refused call (instructions per refusal)" bash bench/callgrind/refusal.sh
section "P9: the Remote PowerShell codec of one small call (instructions per call)" \
    bash bench/callgrind/rps.sh
{
    echo "Counted at commit $(git rev-parse --short HEAD) with $(valgrind --version) (release/bench profile). What each mode is: \`bench/callgrind/README.md\`."
    cat "$tmp"
} >"$out"
echo "callgrind/all.sh: wrote $out" >&2
