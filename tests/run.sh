#!/usr/bin/env bash
# The test command (README and CI run exactly this): installs the pinned independent peers
# (Python msal + PyJWT, @azure/msal-node) if they are missing, then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/peers/setup.sh
cargo test --workspace --all-targets "$@"
