#!/usr/bin/env bash
# Installs the Python guest toolchain: sdk/python/.venv with componentize-py, pinned in
# requirements.txt. Idempotent: redone only when requirements.txt changed or the venv is missing.
#   setup.sh             the guest toolchain (sdk/python/.venv)
#   setup.sh --venv DIR  only DIR/.venv pinned by DIR/requirements.txt, the same way
#                        (tests/peers/setup.sh installs its peers with it)
# Needs python3 (>= 3.9) with venv, and the PyPI registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

# DIR/.venv with DIR/requirements.txt installed; the file's SHA-256 is stamped in the venv, so
# the install is redone only when the pins changed or the venv is missing.
pinned_venv() {
    local dir="$1" shown="${1#"$root"/}" stamp want
    stamp="$dir/.venv/.requirements.sha256"
    want="$(sha256sum "$dir/requirements.txt" | cut -d' ' -f1)"
    if [ ! -x "$dir/.venv/bin/python" ]; then
        echo "setup.sh: creating $shown/.venv"
        "$python" -m venv "$dir/.venv"
    fi
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        echo "setup.sh: installing $shown/requirements.txt"
        "$dir/.venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
            -r "$dir/requirements.txt"
        echo "$want" > "$stamp"
    fi
}

if [ "${1:-}" = "--venv" ]; then
    pinned_venv "$(cd "${2:?--venv needs a directory}" && pwd)"
    exit 0
fi
pinned_venv "$here"
echo "setup.sh: $("$here/.venv/bin/componentize-py" --version)"
