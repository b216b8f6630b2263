#!/usr/bin/env bash
# A bounded soak of one release node (not part of CI): the node in its
# default embedded mode on a fresh data_dir, a client loop of logins, reads
# and logouts (benches/scripts/soak/client.py, several threads) for SOAK_SECONDS,
# then a summary: requests served, errors, RSS at start and end.
#
#   SOAK_SECONDS=600   how long the client loop runs (default 10 minutes)
#   SOAK_WORKERS=4     client threads
#   SOAK_DIR=...       where the node's data, config and log go (default: a
#                      fresh temporary directory, removed at the end unless
#                      SOAK_KEEP=1)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${SOAK_SECONDS:-600}
workers=${SOAK_WORKERS:-4}
dir=${SOAK_DIR:-$(mktemp -d -t edge-session-soak.XXXXXX)}
mkdir -p "$dir"
say() { printf 'soak: %s\n' "$*" >&2; }

cargo build --release --bin edge-session >&2
bin=target/release/edge-session

password="soak-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
hash=$(printf '%s\n' "$password" | "$bin" hash-password)
api_key="soak-api-key-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$dir/config.toml" <<TOML
data_dir = "$dir/data"
[server]
listen = "127.0.0.1:0"
[api]
keys = ["$api_key"]
[log]
level = "warn"
[[auth.users]]
user_id = "soaker"
password_hash = "$hash"
TOML

node_pid=
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  if [ -z "${SOAK_DIR:-}" ] && [ "${SOAK_KEEP:-0}" != 1 ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT

"$bin" serve --config "$dir/config.toml" >"$dir/stdout.log" 2>"$dir/node.log" &
node_pid=$!
url=
for _ in $(seq 1 300); do
  url=$(sed -n 's/^edge-session listening on //p' "$dir/stdout.log" | head -n1)
  [ -n "$url" ] && break
  kill -0 "$node_pid" 2>/dev/null || { say "the node exited:"; cat "$dir/node.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { say "the node printed no address"; exit 1; }
curl -fsS "$url/readyz" >/dev/null

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$node_pid/status"; }
metric_sum() {
  curl -fsS "$url/metrics" | awk -v name="$1" 'index($1, name "{") == 1 || $1 == name {s += $NF} END {printf "%d\n", s}'
}

rss_start=$(rss_kib)
say "node $url (pid $node_pid), RSS ${rss_start} KiB; client: $workers threads for ${seconds}s"
: >"$dir/rss.csv"
(
  t=0
  while kill -0 "$node_pid" 2>/dev/null; do
    printf '%s,%s\n' "$t" "$(rss_kib)" >>"$dir/rss.csv"
    sleep 10
    t=$((t + 10))
  done
) &
sampler=$!

started=$(date +%s)
summary=$(python3 benches/scripts/soak/client.py "$url" soaker "$password" "$api_key" "$seconds" "$workers")
elapsed=$(( $(date +%s) - started ))
kill "$sampler" 2>/dev/null || true

rss_end=$(rss_kib)
rss_peak=$(cut -d, -f2 "$dir/rss.csv" | sort -n | tail -n1)
served=$(metric_sum edge_session_http_requests_total)
server_errors=$(curl -fsS "$url/metrics" | awk 'index($1, "edge_session_http_requests_total{") == 1 && $1 ~ /status="5/ {s += $NF} END {printf "%d\n", s}')
outbox=$(metric_sum edge_session_outbox_pending)
warnings=$(grep -c -E ' (WARN|ERROR) ' "$dir/node.log" || true)

python3 - "$summary" <<PY
import json, sys
s = json.loads(sys.argv[1])
print(f"duration            ${elapsed} s, ${workers} client threads")
print(f"requests (client)   {s['requests']}  ({s['requests'] / max(${elapsed}, 1):.0f}/s)")
print(f"requests (node)     ${served}  (edge_session_http_requests_total, incl. /metrics and /readyz)")
print(f"errors              {s['errors']}  (5xx seen by the node: ${server_errors})")
print(f"logins / logouts    {s['logins']} / {s['logouts']}, reads {s['reads']}, /v1 rounds {s['v1_rounds']}")
print(f"RSS                 start ${rss_start} KiB, end ${rss_end} KiB, peak ${rss_peak} KiB")
print(f"outbox at the end   ${outbox}; WARN/ERROR log lines ${warnings}")
for e in s["error_samples"]:
    print(f"  error: {e}")
PY
[ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$summary")" = 0 ]
