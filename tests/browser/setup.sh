#!/usr/bin/env bash
# Installs playwright-core for the browser test (pinned by package-lock.json; it never downloads
# a browser: the test drives Debian's `chromium`). Idempotent, like tests/peers/setup.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp="node_modules/.package-lock.sha256"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "tests/browser/setup.sh: npm ci"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi
node -e 'console.log("tests/browser/setup.sh: playwright-core", require("./node_modules/playwright-core/package.json").version)'
