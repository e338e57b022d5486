#!/usr/bin/env bash
# A brief run of the load tool against mongo-sse on mongo-sim (the debug binaries), as a smoke
# test that the tool and the gateway agree end to end: 200 connections on 4 channels, 20
# events each, no event lost or duplicated. Not a benchmark: the figures printed are from debug
# builds on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/mongo-sim" --bind 127.0.0.1:0 >"$work/sim.out" 2>"$work/sim.err" &
pids+=($!)
for _ in $(seq 100); do
  grep -q 'listening on' "$work/sim.out" && break
  sleep 0.1
done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/sim.out")
[ -n "$port" ] || { echo "mongo-sim did not start" >&2; cat "$work/sim.err" >&2; exit 1; }
uri="mongodb://127.0.0.1:$port/?replicaSet=rs0"

gw_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MONGODB_URI="$uri" MONGODB_DB=loadgen_smoke SSE_AUTH=none SSE_BIND="127.0.0.1:$gw_port" \
  SSE_CONNECT_RATE_PER_IP=0 "$bin/mongo-sse" serve >"$work/gw.log" 2>&1 &
gw=$!
pids+=("$gw")
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null || { echo "the gateway did not become ready" >&2; cat "$work/gw.log" >&2; exit 1; }

"$bin/loadgen" --label smoke \
  --sub-url "http://127.0.0.1:$gw_port/v1/stream?channel=logs:bench:c{c}" \
  --connections 200 --channels 4 --events 20 --interval-ms 50 \
  --mongodb-uri "$uri" --db loadgen_smoke --server-pid "$gw" \
  --json "$work/report.json" --timeout-secs 120
python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["connections"] == 200 and r["failed_connections"] == 0, r
assert r["sent"] == 80 and r["deliveries"] == 4000, r
assert r["lost"] == 0 and r["duplicated"] == 0, r
print("loadgen smoke: 200 connections, 4000 deliveries, none lost or duplicated")
PY
