#!/usr/bin/env bash
# Installs the independent client peers that check exosim's fidelity (and our client's):
#   tests/peers/.venv          msal-python, pypsrp and friends, pinned in requirements.txt
#   tests/peers/node_modules   @azure/msal-node, pinned by package-lock.json (npm ci)
#   sdk/js/node_modules        componentize-js for JavaScript guests, pinned by sdk/js/package-lock.json
#   sdk/python/.venv           componentize-py for the Python guests (sdk/python/setup.sh)
# Idempotent: a step is redone only when its pin file changed or its install is missing.
# Needs python3 (3.11) with venv, node (>= 20) and npm, and the PyPI and npm registries.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

npm_stamp="node_modules/.package-lock.sha256"
want_npm="$(sha256sum package-lock.json | cut -d' ' -f1)"

# The peers' venv, pinned like the guest toolchain's, by the same script.
bash "$here/../../sdk/python/setup.sh" --venv "$here"

if [ "$(cat "$npm_stamp" 2>/dev/null || true)" != "$want_npm" ]; then
    echo "setup.sh: npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want_npm" > "$npm_stamp"
fi

# The JavaScript guest toolchain (componentize-js and the bundler sdk/js/build.mjs uses),
# pinned by sdk/js/package-lock.json; tests/all/js_guests.rs builds JS plugins with it.
js_stamp="../../sdk/js/node_modules/.package-lock.sha256"
want_js="$(sha256sum ../../sdk/js/package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$js_stamp" 2>/dev/null || true)" != "$want_js" ]; then
    echo "setup.sh: npm ci in sdk/js"
    (cd ../../sdk/js && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_js" > "$js_stamp"
fi
# The Python guest toolchain (componentize-py, pinned in sdk/python/requirements.txt).
# Not fatal: its tests skip loudly without it (and fail under WARDEN_REQUIRE_GUEST_TOOLCHAINS).
bash "$here/../../sdk/python/setup.sh" ||
    echo "setup.sh: the Python guest toolchain could not be installed; its tests will say so" >&2

# Prove the peers import, and say which versions are installed.
.venv/bin/python -c 'import msal, jwt, cryptography, requests; print("setup.sh: msal", msal.__version__, "PyJWT", jwt.__version__, "cryptography", cryptography.__version__)'
.venv/bin/python -c 'import importlib.metadata as m, pypsrp.powershell, spnego; print("setup.sh: pypsrp", m.version("pypsrp"), "pyspnego", m.version("pyspnego"))'
node -e 'const p = require("./node_modules/@azure/msal-node/package.json"); console.log("setup.sh: @azure/msal-node", p.version)'
node -e 'const p = require("../../sdk/js/node_modules/@bytecodealliance/componentize-js/package.json"); console.log("setup.sh: @bytecodealliance/componentize-js", p.version)'
