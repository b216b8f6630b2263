#!/usr/bin/env bash
# The whole performance comparison, end to end: build the release binaries
# (the node, edge-session, and the harness, edge-session-bench), make sure
# redis-server is there (for the actix-session + Redis peer), run
# `edge-session-bench` (GET /whoami against the HTTP ceiling and
# actix-session + Redis, login against the raw DynamoDB transaction), and
# write docs/perf/{whoami.csv,login.csv,whoami-latency.svg}.
#
#   ./scripts/bench.sh                       # defaults: 3 rounds, 6 s per scenario, c = 1 and 64
#   ./scripts/bench.sh --duration 15 --concurrency 1,16,64
#   ./scripts/bench.sh --only edge,hello     # any flag of `edge-session-bench --help`
#
# Micro-benchmarks are separate: `cargo bench -p edge-session-bench --bench lookup`.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "bench.sh: installing redis-server (apt) for the actix-session + Redis peer" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } \
            || echo "bench.sh: could not install redis-server; that peer will be skipped" >&2
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        echo "bench.sh: installing redis-server with sudo apt-get" >&2
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
            || echo "bench.sh: could not install redis-server; that peer will be skipped" >&2
    else
        echo "bench.sh: redis-server is not installed (apt-get install redis-server); that peer will be skipped" >&2
    fi
fi

# The node exactly as shipped (its own features, not unified with the
# harness's), then the harness; the harness finds the node beside itself.
cargo build --release -p edge-session --bin edge-session
cargo build --release -p edge-session-bench --bin edge-session-bench
exec "${CARGO_TARGET_DIR:-target}/release/edge-session-bench" "$@"
