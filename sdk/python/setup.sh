#!/usr/bin/env bash
# Installs the Python guest toolchain: sdk/python/.venv with componentize-py, pinned in
# requirements.txt. Idempotent: redone only when requirements.txt changed or the venv is missing.
# Needs python3 (>= 3.9) with venv, and the PyPI registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

python="${PYTHON:-python3}"
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"

if [ ! -x .venv/bin/python ]; then
    echo "sdk/python/setup.sh: creating sdk/python/.venv"
    "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "sdk/python/setup.sh: installing requirements.txt"
    .venv/bin/python -m pip install --disable-pip-version-check --no-input --quiet -r requirements.txt
    echo "$want" > "$stamp"
fi
echo "sdk/python/setup.sh: $(.venv/bin/componentize-py --version)"
