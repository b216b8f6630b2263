#!/usr/bin/env bash
# The tests that run the node the way people use it: the login flow in a real
# headless Chromium (e2e/), and Schemathesis fuzzing the HTTP API from
# docs/openapi.json (scripts/schemathesis.sh). Installs what a fresh Debian
# machine lacks (chromium, chromium-driver, node/npm, python venv; the npm
# and PyPI packages are pinned) and builds the debug binary if needed (not
# when EDGE_SESSION_BIN names one); with everything in place it installs
# nothing. Exits non-zero if either fails.
#
#   E2E_SKIP_BROWSER=1       skip the browser test
#   E2E_SKIP_SCHEMATHESIS=1  skip the fuzzing run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf 'e2e.sh: %s\n' "$*" >&2; }

# Debian packages, only those missing. `apt-get update` only when something is.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
command -v python3 >/dev/null || missing+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# playwright-core from e2e/package-lock.json (no browser download: the test
# drives Debian's chromium).
want=$(node -p "require('./e2e/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('./e2e/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    say "npm ci in e2e/"
    (cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# The debug binary (cargo does nothing when it is up to date), unless given
# (scripts/test passes the one its test build made).
if [ -z "${EDGE_SESSION_BIN:-}" ]; then
    cargo build --quiet --bin edge-session
    EDGE_SESSION_BIN=${CARGO_TARGET_DIR:-$root/target}/debug/edge-session
fi
export EDGE_SESSION_BIN

status=0
if [ -z "${E2E_SKIP_BROWSER:-}" ]; then
    say "browser test (headless Chromium)"
    (cd e2e && npm test --silent) || { status=1; say "browser test FAILED"; }
fi
if [ -z "${E2E_SKIP_SCHEMATHESIS:-}" ]; then
    say "schemathesis"
    scripts/schemathesis.sh || { status=1; say "schemathesis FAILED"; }
fi
exit "$status"
