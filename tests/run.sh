#!/usr/bin/env bash
# The test command (README and CI run exactly this): installs the pinned independent peers
# (Python msal + PyJWT, @azure/msal-node) and the wasm32-wasip2 target if they are missing, then
# runs every Rust test (which build the guest components with plain cargo), with warden's `demo`
# feature so `warden demo` is tested too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/peers/setup.sh
# The store's tests start a throwaway PostgreSQL from the system's binaries (Debian keeps
# initdb in /usr/lib/postgresql/<version>/bin, off PATH).
if ! command -v initdb >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq postgresql; } ||
    echo "tests/run.sh: could not install postgresql; its store tests skip (unless WARDEN_REQUIRE_POSTGRES)" >&2
fi
# jq: a fleet test runs the README's MSP walkthrough, whose lines use it, as written.
if ! command -v jq >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq jq; } ||
    echo "tests/run.sh: could not install jq; fleet::the_readme_msp_walkthrough_runs_as_written fails without it" >&2
fi
# playwright-core for the browser test of `warden serve`; it drives Debian's chromium.
if [ ! -x /usr/bin/chromium ]; then
  { apt-get update -qq && apt-get install -y -qq chromium; } ||
    echo "tests/run.sh: could not install chromium; the browser test skips (unless WARDEN_REQUIRE_BROWSER)" >&2
fi
bash tests/browser/setup.sh
# Guests (plugins, test guests) are real components built for WASI preview 2 by the tests.
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# One test thread more than cores: many tests wait on timers, child processes and exosim while a
# core is free. On 2 cores, 3 threads ran tests/all in 732 s where 2 took 892 s (2026-12-07).
# warden-serve's log capture raced with 3 threads (41bcec9); it no longer does.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(($(nproc) + 1))}"
cargo test --workspace --all-targets --features warden/demo "$@"
# docs/rhai-api.md is generated under a feature the product never has (Rhai's `metadata`).
cargo test -p warden-runtime --features api-reference --test api_reference
