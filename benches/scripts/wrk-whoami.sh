#!/usr/bin/env bash
# GET /whoami under wrk (default -t2 -c64), the node beside the hello-world
# ceiling, interleaved rounds: what an outside load generator sees, next to
# the project's own harness (docs/performance.md, "GET /whoami under wrk").
#
#   benches/scripts/wrk-whoami.sh [ROUNDS] [SECONDS] [CONNECTIONS]     # default 3 8 64
#
# Each round runs, one after the other: the ceiling (`edge-session-bench
# serve-hello`, 2 workers), the node's /healthz, /whoami without a cookie
# (401), /whoami signed in and /auth/check signed in (the gateway's forward
# auth), each for SECONDS after 1 s of warm-up; then the ceiling and the
# signed-in /whoami once more at one connection (wrk -t1 -c1), for their
# median latency. The node
# is the release binary on its embedded store, RUST_LOG=warn, 2 workers. It
# prints every round's requests/s and, per route, the median over rounds of
# the ratio to the same round's ceiling, and the median over rounds of the
# ratio of the c=1 p50s.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-8}
conns=${3:-64}

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
fi
cargo build --release -q -p edge-session --bin edge-session
cargo build --release -q -p edge-session-bench --bin edge-session-bench
bin=${CARGO_TARGET_DIR:-target}/release

. benches/scripts/lib/children.sh

password=wrk-bench-password
hash=$(printf '%s' "$password" | "$bin/edge-session" hash-password)
cat >"$work/config.toml" <<TOML
data_dir = "$work/data"

[server]
listen = "127.0.0.1:0"
workers = 2

[auth]
per_ip_per_minute = 1000000
per_ip_burst = 100000
per_account_per_minute = 1000000
per_account_burst = 100000

[[auth.users]]
user_id = "bench"
password_hash = "$hash"
role = "member"
TOML
start node env RUST_LOG=warn "$bin/edge-session" serve --config "$work/config.toml"
node=$url
start hello "$bin/edge-session-bench" serve-hello --workers 2
hello=$url
cookie=$(curl -s -o /dev/null -D - -X POST --data-urlencode "username=bench" \
    --data-urlencode "password=$password" "$node/login" |
    tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p' | head -1)
[ -n "$cookie" ] || { echo "wrk-whoami.sh: login gave no cookie" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$node/whoami")" = 200 ] ||
    { echo "wrk-whoami.sh: the signed-in /whoami is not 200" >&2; exit 1; }

# Requests/s of one wrk run.
rate() {
    wrk -t2 -c"$conns" -d1s "$@" >/dev/null
    wrk -t2 -c"$conns" -d"${seconds}s" "$@" | awk '/^Requests\/sec:/ { print $2 }'
}

# The p50 latency, in microseconds, of one wrk run at one connection.
p50() {
    wrk -t1 -c1 -d1s "$@" >/dev/null
    wrk -t1 -c1 -d"${seconds}s" --latency "$@" | awk '
        $1 == "50%" {
            v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
            if (unit == "ms") v *= 1000; else if (unit == "s") v *= 1000000
            print v
        }'
}

names=(ceiling healthz whoami-401 whoami check c1-ceiling c1-whoami)
declare -A ratios
printf '%-6s %12s %12s %12s %12s %12s %12s %12s\n' round "${names[@]}"
for round in $(seq 1 "$rounds"); do
    c=$(rate "$hello/")
    h=$(rate "$node/healthz")
    n=$(rate "$node/whoami")
    w=$(rate -H "Cookie: $cookie" "$node/whoami")
    k=$(rate -H "Cookie: $cookie" "$node/auth/check")
    c1=$(p50 "$hello/")
    w1=$(p50 -H "Cookie: $cookie" "$node/whoami")
    printf '%-6s %12s %12s %12s %12s %12s %10sus %10sus\n' "$round" "$c" "$h" "$n" "$w" "$k" "$c1" "$w1"
    ratios[healthz]+="$(echo "$h / $c" | bc -l) "
    ratios[whoami-401]+="$(echo "$n / $c" | bc -l) "
    ratios[whoami]+="$(echo "$w / $c" | bc -l) "
    ratios[auth-check]+="$(echo "$k / $c" | bc -l) "
    ratios[c1-p50]+="$(echo "$w1 / $c1" | bc -l) "
done
echo "median ratio to the ceiling over $rounds rounds (wrk -t2 -c$conns, ${seconds}s each;"
echo "c1-p50: the signed-in /whoami's p50 at wrk -t1 -c1 over the ceiling's):"
for name in healthz whoami-401 whoami auth-check c1-p50; do
    printf '  %-11s %s\n' "$name" "$(printf '%s\n' ${ratios[$name]} | sort -g |
        awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2fx", m }')"
done
