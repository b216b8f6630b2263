#!/usr/bin/env bash
# The tests that run the node the way people use it: the login flow in a real
# headless Chromium (tests/e2e/), and Schemathesis fuzzing the HTTP API from
# docs/openapi.json (scripts/schemathesis.sh). Installs what a fresh Debian
# machine lacks (scripts/install-test-deps.sh; the npm and PyPI packages are
# pinned) and builds the debug binary if needed (not when EDGE_SESSION_BIN
# names one); with everything in place it installs nothing. Exits non-zero
# if either fails.
#
#   E2E_SKIP_BROWSER=1       skip the browser test
#   E2E_SKIP_SCHEMATHESIS=1  skip the fuzzing run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf 'e2e.sh: %s\n' "$*" >&2; }

# Chromium, node, playwright-core, python's venv, ...: only what is missing.
scripts/install-test-deps.sh

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
    (cd tests/e2e && npm test --silent) || { status=1; say "browser test FAILED"; }
fi
if [ -z "${E2E_SKIP_SCHEMATHESIS:-}" ]; then
    say "schemathesis"
    scripts/schemathesis.sh || { status=1; say "schemathesis FAILED"; }
fi
exit "$status"
