#!/usr/bin/env bash
# Tier rule 8, measured: cookieless `GET /` (the login page) against a release
# node in embedded mode costs no write in either tier, and how fast it is
# beside the hello-world ceiling (`edge-session-bench serve-hello`), both
# started here as children and loaded by wrk (Debian's `wrk` package) in
# alternating rounds.
#
#   ./scripts/cookieless.sh                 # 3 rounds of 5 s each, 32 connections
#   DURATION=10 ROUNDS=5 CONNECTIONS=64 ./scripts/cookieless.sh
#
# Each round is long enough to send well over 10,000 requests to the node on
# a 2-core machine; the total is printed.
#
# Prints, for the node: every DynamoDB call count by op before and after,
# the sled directory's size before and after (flushed by sled on its own
# schedule, so compared after a pause), and req/s per round for both servers
# with their ratio. A figure, never a pass/fail: nothing here is asserted
# except that no DynamoDB write happened.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
target=${CARGO_TARGET_DIR:-target}

command -v wrk >/dev/null || { echo "cookieless.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }
cargo build --quiet --release -p edge-session --bin edge-session
cargo build --quiet --release -p edge-session-bench --bin edge-session-bench

. benches/scripts/lib/children.sh

cat >"$work/config.toml" <<EOF
data_dir = "$work/data"
[server]
listen = "127.0.0.1:0"
workers = $WORKERS
[log]
level = "warn"
EOF
start node "$target/release/edge-session" serve --config "$work/config.toml"
node=$url
start hello "$target/release/edge-session-bench" serve-hello --workers "$WORKERS"
hello=$url

dynamo_calls() {
    curl -fsS "$node/metrics" | grep '^edge_session_dynamodb_call_duration_seconds_count' | sort || true
}
writes() {
    # Every op that writes: anything but the reads.
    dynamo_calls | { grep -v -E 'op="(get|get_version|query|scan|describe_table|list_by_user|ping)"' || true; } \
        | awk '{s += $2} END {print s + 0}'
}
sled_bytes() { du -sb "$work/data/cache" | cut -f1; }

sleep 2
calls_before=$(dynamo_calls)
writes_before=$(writes)
sled_before=$(sled_bytes)
echo "node $node, ceiling $hello; $ROUNDS rounds of ${DURATION}s of cookieless GET / each, c=$CONNECTIONS, t=$THREADS"
rate() { awk '/^Requests\/sec:/ {print $2}' ; }
total=0
for round in $(seq "$ROUNDS"); do
    n=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "$node/" | tee "$work/node.wrk" | rate)
    sent=$(awk '/requests in/ {print $1}' "$work/node.wrk")
    total=$((total + sent))
    h=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "$hello/" | rate)
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/node.wrk")
    printf 'round %s: node %s req/s (%s requests%s), ceiling %s req/s, ratio %s\n' \
        "$round" "$n" "$sent" "${non2xx:+, $non2xx non-2xx}" "$h" "$(awk -v a="$n" -v b="$h" 'BEGIN {printf "%.2f", a / b}')"
done
sleep 2
writes_after=$(writes)
sled_after=$(sled_bytes)
echo "requests to the node: $total"
echo "DynamoDB calls before:"; echo "${calls_before:-  (none)}" | sed 's/^/  /'
calls_after=$(dynamo_calls)
echo "DynamoDB calls after:"; echo "${calls_after:-  (none)}" | sed 's/^/  /'
echo "DynamoDB writes: $writes_before before, $writes_after after"
echo "sled directory: $sled_before bytes before, $sled_after bytes after"
cached=$(curl -fsS "$node/metrics" | awk '/^edge_session_cached_sessions / {print $2}')
echo "edge_session_cached_sessions: ${cached:-(not yet reported)}"
if [ "$writes_after" != "$writes_before" ]; then
    echo "cookieless.sh: cookieless GET / wrote to DynamoDB" >&2
    exit 1
fi
