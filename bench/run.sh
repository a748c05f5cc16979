#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: builds what the benchmarks need (release), runs the harness against
# exosim, the criterion benches of the hot paths and (when `perf` is usable) a profile of the
# 1,000-call plugin run, then writes BENCHMARKS.md from the results and bench/notes.md.
#
#   bash bench/run.sh              # everything (about 30 minutes on a 2-core machine)
#   bash bench/run.sh --quick      # fewer repetitions, no scale run, short criterion runs
#   bash bench/run.sh --no-perf    # skip the profile
#   bash bench/run.sh --no-fleet   # skip the fleet benchmark (1,000 tenants; a few minutes, needs
#                                  # PostgreSQL's server binaries: initdb, postgres)
#   bash bench/run.sh --no-callgrind # skip the instruction counts (bench/callgrind/all.sh, about
#                                  # 10 minutes; they need valgrind)
#   bash bench/run.sh --reuse      # keep the results already in bench/results (harness.md,
#                                  # criterion.txt, perf.data), measure only what is missing
#   bash bench/run.sh --report-only # build and measure nothing: rewrite BENCHMARKS.md from
#                                  # bench/results and bench/notes.md
#
# Nothing here fails on a number: the benchmarks only fail when a contender did not do the work.
# Needs: the Rust toolchain with the wasm32-wasip2 target, python3 with venv (the Python
# baseline), /usr/bin/time (peak RSS of the warden binary), the guest toolchains of
# bench/guests/run.sh (`bash tests/peers/setup.sh`), optionally perf.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
quick=0
perf_wanted=1
fleet_wanted=1
callgrind_wanted=1
reuse=0
report_only=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --reuse) reuse=1 ;;
        --no-perf) perf_wanted=0 ;;
        --no-fleet) fleet_wanted=0 ;;
        --no-callgrind) callgrind_wanted=0 ;;
        --report-only) report_only=1 ;;
        *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-$root/target}"
results="$root/bench/results"
mkdir -p "$results"

# The load when measuring starts, kept with the results so --report-only does not write its own.
if [ "$report_only" = 0 ]; then
cut -d' ' -f1-3 /proc/loadavg > "$results/load.txt"
# The commit measured, kept with the results for the same reason.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- host emulator bench ':!bench/results' 2>/dev/null || echo " (with uncommitted changes)")" > "$results/commit.txt"
echo "run.sh: building the probe guest (wasm32-wasip2)" >&2
CARGO_TARGET_DIR="$target/guests" cargo build --release --quiet --target wasm32-wasip2 \
    --manifest-path tests/guests/Cargo.toml -p probe
probe="$target/guests/wasm32-wasip2/release/probe.wasm"

echo "run.sh: building warden, exosim and the harness (release)" >&2
cargo build --release --quiet -p warden -p exosim -p bench-harness
fi
bin="$target/release"

# Python with the pinned msal + requests: bench/python/.venv if present, else tests/peers/.venv
# when it has exactly these versions, else create bench/python/.venv from requirements.txt.
want_check='import msal, requests, sys; sys.exit(0 if (msal.__version__, requests.__version__) == ("1.39.0", "2.34.2") else 1)'
if [ -x bench/python/.venv/bin/python ] && bench/python/.venv/bin/python -c "$want_check" 2>/dev/null; then
    python="$root/bench/python/.venv/bin/python"
elif [ -x tests/peers/.venv/bin/python ] && tests/peers/.venv/bin/python -c "$want_check" 2>/dev/null; then
    python="$root/tests/peers/.venv/bin/python"
else
    echo "run.sh: creating bench/python/.venv" >&2
    python3 -m venv bench/python/.venv
    bench/python/.venv/bin/python -m pip install --disable-pip-version-check --no-input --quiet \
        -r bench/python/requirements.txt
    python="$root/bench/python/.venv/bin/python"
fi

harness_args=()
criterion_args=(--warm-up-time 2 --measurement-time 5)
if [ "$quick" = 1 ]; then
    harness_args=(--reps 3 --cold-reps 5 --start-runs 400 --no-scale)
    criterion_args=(--warm-up-time 1 --measurement-time 2)
fi

if [ "$report_only" = 1 ] || { [ "$reuse" = 1 ] && [ -s "$results/harness.md" ]; }; then
    echo "run.sh: reusing $results/harness.md" >&2
else
echo "run.sh: harness" >&2
"$bin/warden-bench" all --exosim "$bin/exosim" --warden "$bin/warden" --probe "$probe" \
    --python "$python" --markdown "$results/harness.md" --json "$results/harness.json" \
    "${harness_args[@]}"
fi

if [ "$report_only" = 1 ] || { [ "$reuse" = 1 ] && [ -s "$results/transports.md" ]; }; then
    echo "run.sh: reusing $results/transports.md" >&2
else
echo "run.sh: transports (REST vs Remote PowerShell)" >&2
transport_args=()
[ "$quick" = 1 ] && transport_args=(--reps 3 --calls 100 --mailboxes 2000)
"$bin/warden-bench" transports --exosim "$bin/exosim" --markdown "$results/transports.md" \
    --json "$results/transports.json" "${transport_args[@]}"
fi

if [ "$report_only" = 1 ] || { [ "$reuse" = 1 ] && [ -s "$results/serve.md" ]; }; then
    echo "run.sh: reusing $results/serve.md" >&2
else
echo "run.sh: the service (warden serve: the API vs warden eval, concurrent delegates)" >&2
serve_args=()
[ "$quick" = 1 ] && serve_args=(--reps 5 --delegates 20 --seconds 5)
"$bin/warden-bench" serve --exosim "$bin/exosim" --warden "$bin/warden" --markdown "$results/serve.md" \
    --json "$results/serve.json" "${serve_args[@]}"
fi

if [ "$fleet_wanted" = 0 ] || [ "$report_only" = 1 ] || { [ "$reuse" = 1 ] && [ -s "$results/fleet.md" ]; }; then
    echo "run.sh: fleet benchmark skipped or reused" >&2
else
echo "run.sh: fleets (1,000 tenants × one read; 1, 2 and 4 warden worker processes on PostgreSQL)" >&2
fleet_args=()
[ "$quick" = 1 ] && fleet_args=(--tenants 200 --workers 1,2)
"$bin/warden-bench" fleet --exosim "$bin/exosim" --warden "$bin/warden" --markdown "$results/fleet.md" \
    --json "$results/fleet.json" "${fleet_args[@]}"
fi

if [ "$report_only" = 1 ] || { [ "$reuse" = 1 ] && [ -s "$results/guests.md" ]; }; then
    echo "run.sh: reusing $results/guests.md" >&2
else
echo "run.sh: guest languages (Rust, Python, JavaScript)" >&2
guest_args=()
[ "$quick" = 1 ] && guest_args=(--start-runs 5 --loop-runs 1)
bash bench/guests/run.sh --warden "$bin/warden" --exosim "$bin/exosim" "${guest_args[@]}" >/dev/null
fi

if [ "$report_only" = 1 ] || { [ "$reuse" = 1 ] && [ -s "$results/criterion.txt" ]; }; then
    echo "run.sh: reusing $results/criterion.txt" >&2
else
echo "run.sh: criterion benches" >&2
cargo bench --quiet -p warden-policy -p warden-audit -p warden-exchange -p warden-auth \
    --bench check --bench record --bench codec --bench token_cache -- "${criterion_args[@]}" \
    > "$results/criterion.txt" 2> "$results/criterion.stderr" \
    || { echo "run.sh: cargo bench failed; see $results/criterion.stderr" >&2; exit 1; }
fi
[ -s "$results/criterion.txt" ] && python3 bench/criterion_table.py "$results/criterion.txt" > "$results/criterion.md"

if [ "$callgrind_wanted" = 0 ] || [ "$quick" = 1 ] || [ "$report_only" = 1 ] \
    || { [ "$reuse" = 1 ] && [ -s "$results/callgrind.md" ]; }; then
    echo "run.sh: instruction counts skipped or reused" >&2
else
    echo "run.sh: instruction counts (callgrind)" >&2
    bash bench/callgrind/all.sh
fi

profile_md="$results/profile.md"
if [ "$report_only" = 1 ] && [ -s "$profile_md" ] && [ ! -s "$results/perf.data" ]; then
    : # keep the profile summary already written
elif [ "$perf_wanted" = 1 ] && command -v perf >/dev/null \
    && perf record -q -o /dev/null -- true >/dev/null 2>&1; then
    if { [ "$reuse" = 1 ] || [ "$report_only" = 1 ]; } && [ -s "$results/perf.data" ]; then
        echo "run.sh: reusing $results/perf.data" >&2
    else
        echo "run.sh: perf profile of the 1,000-call plugin run" >&2
        perf record -q --no-inherit -F 499 --call-graph dwarf,16384 -o "$results/perf.data" -- \
            "$bin/warden-bench" profile --exosim "$bin/exosim" --probe "$probe" --reps 3 2>/dev/null
    fi
    {
        echo '```text'
        echo "# self time by shared object (perf report --no-children --sort dso)"
        perf report -i "$results/perf.data" --no-children --sort dso --stdio --percent-limit 1 -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -20 || true
        echo
        echo "# self time by symbol, top 30 (perf report --no-children --sort dso,sym)"
        perf report -i "$results/perf.data" --no-children --sort dso,sym --stdio --percent-limit 0.7 -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -30 || true
        echo
        echo "# time including callees, our entry points and the big libraries (perf report --children)"
        perf report -i "$results/perf.data" --children --sort sym --stdio -g none 2>/dev/null \
            | grep -v '^#' | grep -v '^$' \
            | grep -E '\] (warden_broker::Broker::(next_page|next_page_json|next_shaped|invoke_json|stream|record|finish)|warden_audit::AuditTrail::record|warden_policy::grant::Grant::(check|judge|shape)|<warden_exchange::session::ResultStream as|warden_exchange::session::ExchangeSession::send|<warden_auth::transport::ReqwestTransport as|warden_exchange::response::parse_page|warden_exchange::response::strip_annotations|warden_runtime::component::host::bindings::warden::plugin::exchange::add_to_linker_instance|warden_auth::provider::TokenProvider::get_token|alloc::collections::btree::map::BTreeMap<K,V,A>::insert|<serde_json::map::Map<alloc::string::String,serde_json::value::Value> as serde_core::ser::Serialize>::serialize|rustls::conn|hyper::proto::h1::dispatch)' \
            | cut -c1-170 | head -30 || true
        echo '```'
    } > "$profile_md"
else
    echo "_No profile: \`perf\` is missing or not permitted here (run with it installed, or see bench/notes.md for the instrumented breakdown)._" > "$profile_md"
fi

echo "run.sh: writing BENCHMARKS.md" >&2
{
    cat <<HEAD
# Benchmarks

Generated by \`bash bench/run.sh\` on $(date -u +%Y-%m-%d) at commit $(cat "$results/commit.txt" 2>/dev/null || echo "$(git rev-parse --short HEAD) (not recorded with the results)"). Regenerate with the same command; \`--quick\` for a short run.
These are measurements, not tests: nothing here fails CI on speed. Ratios are computed within
one run, contenders interleaved, so they hold better than the absolute numbers, which move with
the machine's load.

## Machine

| | |
|---|---|
| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores visible |
| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |
| kernel | $(uname -sr) |
| Rust | $(rustc --version) (release profile: opt-level 3, line tables) |
| Python | $("$python" --version 2>&1), msal $("$python" -c 'import msal; print(msal.__version__)'), requests $("$python" -c 'import requests; print(requests.__version__)') |
| load average at the start | $(cat "$results/load.txt" 2>/dev/null || cut -d' ' -f1-3 /proc/loadavg) (1, 5 and 15 minutes; what else ran: §7) |

## Commands

\`\`\`sh
bash bench/run.sh                                   # all of the below, then this file
# what it runs:
CARGO_TARGET_DIR=target/guests cargo build --release --target wasm32-wasip2 --manifest-path tests/guests/Cargo.toml -p probe
cargo build --release -p warden -p exosim -p bench-harness
bash bench/guests/run.sh --warden target/release/warden --exosim target/release/exosim
target/release/warden-bench all --exosim target/release/exosim --warden target/release/warden \\
    --probe target/guests/wasm32-wasip2/release/probe.wasm --python <venv>/bin/python \\
    --markdown bench/results/harness.md --json bench/results/harness.json
target/release/warden-bench transports --exosim target/release/exosim \\
    --markdown bench/results/transports.md --json bench/results/transports.json
target/release/warden-bench serve --exosim target/release/exosim --warden target/release/warden \\
    --markdown bench/results/serve.md --json bench/results/serve.json
target/release/warden-bench fleet --exosim target/release/exosim --warden target/release/warden \\
    --tenants 1000 --latency-ms 100 --workers 1,2,4 --concurrency 16 \\
    --markdown bench/results/fleet.md --json bench/results/fleet.json
cargo bench -p warden-policy -p warden-audit -p warden-exchange -p warden-auth \\
    --bench check --bench record --bench codec --bench token_cache
bash bench/callgrind/all.sh                          # instruction counts: P1, P3, P4, P9
perf record --no-inherit -F 499 --call-graph dwarf,16384 -- target/release/warden-bench profile --exosim … --probe … --reps 3
\`\`\`

exosim runs as its own process (\`exosim serve\`, HTTPS on loopback, the demo tenant); every
contender talks to it over TLS. Raw numbers: \`bench/results/harness.json\`.

## Goals

The cost goals of the broker (issue 22), each figure from this run, its section below:

HEAD
    python3 bench/goals.py "$results"
    echo
    if [ -s "$results/callgrind.md" ]; then
        echo "### The repeatable figures: instruction counts"
        echo
        echo "Wall-clock figures move with the machine's load; instruction counts (valgrind --tool=callgrind, user space only) do not. \`bash bench/callgrind/all.sh\` (run by this script unless \`--quick\` or \`--no-callgrind\`)."
        cat "$results/callgrind.md"
        echo
    fi
    echo "## Results"
    echo
    cat "$results/harness.md"
    echo
    echo "### Criterion benches of the hot paths"
    echo
    echo "Time per iteration: criterion's point estimate, with its 95% confidence interval. Commands above; \`target/criterion/\` keeps the history, so a regression shows as \"Performance has regressed\" on the next run."
    echo
    cat "$results/criterion.md"
    echo
    echo "### 7. Where the time of (1) goes"
    echo
    cat bench/notes.md
    echo
    echo "#### The profile of this run"
    echo
    cat "$profile_md"
    [ -s "$results/transports.md" ] && cat "$results/transports.md"
    if [ -s "$results/guests.md" ]; then echo; cat "$results/guests.md"; fi
    if [ -s "$results/serve.md" ]; then echo; cat "$results/serve.md"; fi
    if [ -s "$results/fleet.md" ]; then echo; cat "$results/fleet.md"; fi
} > BENCHMARKS.md
echo "run.sh: wrote BENCHMARKS.md" >&2
