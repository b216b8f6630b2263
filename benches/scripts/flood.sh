#!/usr/bin/env bash
# A wrong-password login flood against a release node, and what it does to
# the node: peak RSS, p99 of GET /whoami and of POST /logout for signed-in
# sessions during the flood, and the share of 429s.
#
#   benches/scripts/flood.sh [SECONDS] [CONCURRENCY]     (default 60 s at 256)
#
# CONCURRENCY 0 runs no flood: the same reads and logouts on a quiet node,
# the baseline to quote beside a flood run.
#
# Needs wrk (apt-get install wrk), curl, and a release build
# (cargo build --release). Every guess claims a random client address and
# username (the node trusts 127.0.0.1 as its proxy), so the budgets never
# stop it: this measures the hash threads and their bounded queue, the
# attacker's best case. Nothing is asserted; the figures are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-60}
CONC=${2:-256}
BIN=${CARGO_TARGET_DIR:-target}/release/edge-session
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v wrk >/dev/null || { echo "install wrk: apt-get install wrk" >&2; exit 1; }

WORK=$(mktemp -d)
KEY=flood-api-key-0123456789abcdef
cleanup() { [ -n "${NODE:-}" ] && kill "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

EDGE_SESSION__DATA_DIR="$WORK/data" EDGE_SESSION__SERVER__LISTEN=127.0.0.1:0 \
EDGE_SESSION__SERVER__TRUSTED_PROXIES='["127.0.0.1"]' EDGE_SESSION__API__KEYS=$KEY \
EDGE_SESSION__LOG__LEVEL=warn \
  "$BIN" serve --config config.toml >"$WORK/out" 2>"$WORK/err" &
NODE=$!
for _ in $(seq 300); do grep -q "listening on" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^edge-session listening on //p' "$WORK/out")
[ -n "$URL" ] || { cat "$WORK/err" >&2; exit 1; }
echo "node $NODE at $URL"

# Signed-in sessions to read and log out during the flood (via /v1, so
# the budgets of the login page are not spent on them), each of its own user
# (one user's sessions past session.max_per_user would evict the oldest).
session() {
  local anon
  anon=$(curl -sf -X POST "$URL/v1/sessions" -H "Authorization: Bearer $KEY" | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -sf -X POST "$URL/v1/session/regenerate" -H "Authorization: Bearer $KEY" \
    -H "X-Session-Token: $anon" -H 'Content-Type: application/json' -d "{\"user_id\":\"$1\"}" |
    sed 's/.*"token":"\([^"]*\)".*/\1/'
}
READER=$(session reader)
LOGOUTS=$((DURATION * 4))
for i in $(seq "$LOGOUTS"); do session "demo-$i"; echo; done >"$WORK/tokens"
echo "$(wc -l <"$WORK/tokens") sessions to log out during the flood"

if [ "$CONC" -gt 0 ]; then
  wrk -t2 -c"$CONC" -d"${DURATION}s" --timeout 30s -s benches/scripts/flood.lua "$URL/login" >"$WORK/wrk" 2>&1 &
else
  { sleep "$DURATION"; echo "no flood (baseline)"; } >"$WORK/wrk" &
fi
WRK=$!
sleep 2
END=$((SECONDS + DURATION - 4))
( while [ $SECONDS -lt $END ]; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Cookie: __Host-sid=$READER" "$URL/whoami"
    sleep 0.02
  done ) >"$WORK/whoami" &
READS=$!
( while read -r t && [ $SECONDS -lt $END ]; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H "Cookie: __Host-sid=$t" "$URL/logout"
    sleep 0.2
  done <"$WORK/tokens" ) >"$WORK/logout" &
OUTS=$!
wait "$WRK" "$READS" "$OUTS"

p99() { awk '{print $2}' "$1" | sort -n | awk '{a[NR]=$1} END {h=int(NR/2); if (h<1) h=1; i=int(NR*0.99); if (i<1) i=1; printf "%d samples, p50 %.1f ms, p99 %.1f ms, max %.1f ms", NR, a[h]*1000, a[i]*1000, a[NR]*1000}'; }
codes() { awk '{print $1}' "$1" | sort | uniq -c | tr '\n' ' '; }
echo "--- wrk (POST /login, wrong password, c=$CONC, ${DURATION}s)"
cat "$WORK/wrk"
echo "--- GET /whoami during the flood: $(p99 "$WORK/whoami"); statuses: $(codes "$WORK/whoami")"
echo "--- POST /logout during the flood: $(p99 "$WORK/logout"); statuses: $(codes "$WORK/logout")"
echo "--- node peak RSS: $(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' /proc/$NODE/status)"
