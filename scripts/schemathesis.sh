#!/usr/bin/env bash
# Fuzz the HTTP API from docs/openapi.json with Schemathesis, every check on,
# against a live node: the debug binary in embedded mode on 127.0.0.1:0 over a
# temporary data_dir, with an API key and a user who can sign in.
# Exits non-zero on any 5xx, any response the spec does not describe, or a
# node that does not survive the run or exit cleanly on SIGTERM.
#
# Environment (all optional):
#   EDGE_SESSION_BIN            node binary (default target/debug/edge-session,
#                               built if missing)
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default 100)
#   SCHEMATHESIS_MAX_TIME       time budget in seconds (default 120)
#   SCHEMATHESIS_SEED           seed, to reproduce a run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

schemathesis_version=4.32.5
venv=$root/target/schemathesis-venv
bin=${EDGE_SESSION_BIN:-$root/target/debug/edge-session}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-100}
max_time=${SCHEMATHESIS_MAX_TIME:-120}

say() { printf 'schemathesis.sh: %s\n' "$*" >&2; }

# Schemathesis, pinned, in a venv under target/.
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
    say "installing schemathesis $schemathesis_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

if [ ! -x "$bin" ]; then
    say "building $bin"
    cargo build --bin edge-session
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-session-fuzz.XXXXXX")
node_pid=
cleanup() {
    if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
        kill -KILL "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

rand() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
api_key=fuzz-key-$(rand)
user=fuzz-user-$(rand | cut -c1-8)
password=fuzz-pass-$(rand)
hash=$(printf '%s\n' "$password" | "$bin" hash-password)

cat >"$work/config.toml" <<EOF
data_dir = "$work/data"
[server]
workers = 2
shutdown_timeout_secs = 5
[log]
level = "warn"
# GET /v1/events is served (with events off it only answers 404).
[events]
enabled = true
# schemathesis signs in again whenever its cookie stops working (a fuzzed
# logout ends it), far past the default login budgets; those budgets have
# their own tests (tests/integration/login_throttle.rs).
[auth]
per_ip_per_minute = 1000000
per_ip_burst = 1000000
per_account_per_minute = 1000000
per_account_burst = 1000000
[[auth.users]]
user_id = "$user"
password_hash = "$hash"
role = "user"
EOF

EDGE_SESSION__SERVER__LISTEN=127.0.0.1:0 EDGE_SESSION__API__KEYS=$api_key \
    "$bin" serve --config "$work/config.toml" >"$work/node.out" 2>"$work/node.err" &
node_pid=$!

url=
for _ in $(seq 600); do
    url=$(sed -n 's/^edge-session listening on //p' "$work/node.out")
    [ -n "$url" ] && break
    if ! kill -0 "$node_pid" 2>/dev/null; then
        say "the node exited before listening:"
        cat "$work/node.err" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$url" ]; then
    say "the node printed no listening line within 60 s"
    exit 1
fi
say "node at $url (pid $node_pid)"

status=0
(
    cd "$work"
    # Every check is on by default; scripts/schemathesis.toml says which one
    # is off for which path, and why. (`--checks all` would override that.)
    EDGE_SESSION_FUZZ_API_KEY=$api_key EDGE_SESSION_FUZZ_USER=$user \
        EDGE_SESSION_FUZZ_PASSWORD=$password \
        "$venv/bin/schemathesis" \
        --config-file "$root/scripts/schemathesis.toml" --no-color \
        run "$url/openapi.json" \
        --max-examples "$max_examples" \
        --max-time "$max_time" \
        ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
        --report junit,har --report-junit-path "$root/target/schemathesis-junit.xml" --report-har-path "$root/target/schemathesis.har"
) || status=$?

if ! kill -0 "$node_pid" 2>/dev/null; then
    say "the node died during the run:"
    tail -n 50 "$work/node.err" >&2
    exit 1
fi
kill -TERM "$node_pid"
node_status=0
wait "$node_pid" || node_status=$?
node_pid=
if [ "$node_status" -ne 0 ]; then
    say "the node exited with status $node_status after SIGTERM:"
    tail -n 50 "$work/node.err" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    say "FAILED (schemathesis exit status $status); JUnit report: target/schemathesis-junit.xml"
    say "node log (last 50 lines):"
    tail -n 50 "$work/node.err" >&2
    exit "$status"
fi
say "passed"
