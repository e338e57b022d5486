#!/usr/bin/env bash
# mongo-sse against nginx + Nchan on the same workloads, alternating run by run, and one table
# of medians with their ratio. Installs nginx and libnginx-mod-nchan with apt when missing
# (as root, or through sudo), builds the release binaries, and runs every workload ROUNDS times
# per server, Nchan first then mongo-sse, back to back, so a drift of the shared machine
# spreads over both.
#
#   bash bench/side_by_side.sh [ROUNDS]          (default 3)
#
# Environment:
#   WORKLOADS   space-separated subset of: idle broadcast channels saturate light (default all)
#   QUICK=1     small versions of each workload and debug binaries: checks the script, not a
#               benchmark
#   MONGODB_URI a real replica set for mongo-sse instead of mongo-sim (Nchan needs none)
#   OUT         where the JSON reports go (default target/bench/side-by-side)
#
# mongo-sse is fed by inserting into MongoDB (loadgen's driver writer), so its latencies include
# a database hop that Nchan's (loadgen POSTing to /pub) do not. The client shares the machine's
# cores with the server: loadgen reports its own CPU time beside every figure.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
WORKLOADS=${WORKLOADS:-idle broadcast channels saturate light}
OUT=${OUT:-target/bench/side-by-side}
PROFILE=release
[[ ${QUICK:-0} == 1 ]] && PROFILE=debug
BIN=target/$PROFILE
mkdir -p "$OUT"

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
if [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]] || ! command -v nginx >/dev/null; then
    as_root apt-get install -y -q nginx libnginx-mod-nchan >/dev/null
fi
if [[ $PROFILE == release ]]; then
    cargo build --release -q -p mongo-sse --bin mongo-sse -p mongo-sim --bin mongo-sim -p loadgen --bin loadgen
else
    cargo build -q -p mongo-sse --bin mongo-sse -p mongo-sim --bin mongo-sim -p loadgen --bin loadgen
fi

# Each workload: loadgen arguments (the same for both servers).
workload_args() {
    local quick=${QUICK:-0}
    case $1 in
        # 15 000 connections held open (opened 50 at a time), one event to prove they are
        # live: RSS per connection above the zero-connection baseline, and the time to open.
        idle) if [[ $quick == 1 ]]; then echo "--connections 300 --channels 1 --events 1"
              else echo "--connections 15000 --connect-concurrency 50 --channels 1 --events 1 --source-ips 2"; fi ;;
        # One channel, many subscribers, 20 broadcasts 200 ms apart.
        broadcast) if [[ $quick == 1 ]]; then echo "--connections 300 --channels 1 --events 5 --interval-ms 200"
                   else echo "--connections 10000 --channels 1 --events 20 --interval-ms 200 --source-ips 2"; fi ;;
        # 1000 subscribers on 100 channels, 5000 events/s for 5 s.
        channels) if [[ $quick == 1 ]]; then echo "--connections 100 --channels 10 --events 20 --interval-ms 20"
                  else echo "--connections 1000 --channels 100 --events 250 --interval-ms 20 --writers 4"; fi ;;
        # The highest sustained rate: the same 1000 subscribers on 100 channels, the writers
        # as fast as they go (a 1 ms tick that bursts when behind). Compare write_rate: a
        # writer that cannot offer more caps the figure, not the server.
        saturate) if [[ $quick == 1 ]]; then echo "--connections 100 --channels 10 --events 50 --interval-ms 1"
                  else echo "--connections 1000 --channels 100 --events 300 --interval-ms 1 --writers 4"; fi ;;
        # Light load: a few subscribers, 20 events/s.
        light) if [[ $quick == 1 ]]; then echo "--connections 10 --channels 10 --events 10 --interval-ms 50"
               else echo "--connections 10 --channels 10 --events 100 --interval-ms 50"; fi ;;
        *) echo "side_by_side.sh: unknown workload $1" >&2; exit 1 ;;
    esac
}

work=$(mktemp -d)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pids=()
    if [[ -f $work/nginx/nginx.pid ]]; then
        kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
        for _ in $(seq 50); do [[ -f $work/nginx/nginx.pid ]] || break; sleep 0.1; done
    fi
    wait 2>/dev/null || true
}
trap 'stop_all; rm -rf "$work"' EXIT

wait_http() { # url what [any: any HTTP answer will do]
    local f=-sf
    [[ ${3:-} == any ]] && f=-s
    for _ in $(seq 150); do curl "$f" -o /dev/null "$1" && return 0; sleep 0.2; done
    echo "side_by_side.sh: $2 did not answer $1" >&2
    return 1
}

start_nchan() {
    rm -rf "$work/nginx"
    mkdir -p "$work/nginx/logs" "$work/nginx/tmp"
    cp bench/nchan.nginx.conf "$work/nginx/nginx.conf"
    nginx -p "$work/nginx/" -c nginx.conf
    wait_http "http://127.0.0.1:8081/pub?ch=probe" nginx any
    # The workers, not the master, hold the connections.
    SERVER_PIDS=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | tr '\n' ' ')
}

start_mongo_sse() {
    local uri=${MONGODB_URI:-}
    if [[ -z $uri ]]; then
        "$BIN/mongo-sim" --bind 127.0.0.1:0 >"$work/sim.out" 2>/dev/null &
        pids+=($!)
        for _ in $(seq 100); do grep -q 'listening on' "$work/sim.out" && break; sleep 0.1; done
        uri="mongodb://$(sed -n 's/.*listening on \(.*\)$/\1/p' "$work/sim.out")/?replicaSet=rs0"
    fi
    MONGO_URI_USED=$uri
    MONGODB_URI="$uri" MONGODB_DB=side_by_side SSE_AUTH=none SSE_BIND=127.0.0.1:8080 \
        SSE_CONNECT_RATE_PER_IP=0 SSE_LOG_FORMAT=text RUST_LOG=warn \
        "$BIN/mongo-sse" serve >"$work/gw.log" 2>&1 &
    pids+=($!)
    SERVER_PIDS=$!
    wait_http "http://127.0.0.1:8080/readyz" mongo-sse
}

run_one() { # server workload round
    local server=$1 workload=$2 round=$3 args report
    args=$(workload_args "$workload")
    report="$OUT/$workload-$server-$round.json"
    local pid_args=()
    case $server in
        nchan)
            start_nchan
            for p in $SERVER_PIDS; do pid_args+=(--server-pid "$p"); done
            # shellcheck disable=SC2086
            "$BIN/loadgen" --label "$server" $args "${pid_args[@]}" --json "$report" \
                --sub-url 'http://127.0.0.1:8081/sub?ch=c{c}' \
                --writer http --pub-url 'http://127.0.0.1:8081/pub?ch=c{c}' || true ;;
        mongo-sse)
            start_mongo_sse
            # shellcheck disable=SC2086
            "$BIN/loadgen" --label "$server" $args --server-pid "$SERVER_PIDS" --json "$report" \
                --sub-url 'http://127.0.0.1:8080/v1/stream?channel=logs:bench:c{c}' \
                --writer mongo --mongodb-uri "$MONGO_URI_USED" --db side_by_side || true ;;
    esac
    stop_all
    [[ -s $report ]] || echo "{\"label\": \"$server\", \"failed\": true}" >"$report"
}

for workload in $WORKLOADS; do
    for round in $(seq "$ROUNDS"); do
        for server in nchan mongo-sse; do
            echo "== $workload, round $round, $server" >&2
            run_one "$server" "$workload" "$round"
        done
    done
done

python3 - "$OUT" "$ROUNDS" $WORKLOADS <<'PY'
import json, statistics, sys, pathlib
out, rounds, workloads = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
figures = {
    "idle": [("rss_per_connection_kib", "idle RSS per connection, KiB"),
             ("connect_wall_s", "time to open all, s"), ("failed_connections", "not connected")],
    "broadcast": [("latency_p99_ms", "p99 ms"), ("latency_p50_ms", "p50 ms")],
    "channels": [("latency_p99_ms", "p99 ms"), ("latency_p50_ms", "p50 ms"), ("delivery_rate", "deliveries/s")],
    "saturate": [("delivery_rate", "deliveries/s"), ("write_rate", "events written/s"),
                 ("latency_p99_ms", "p99 ms")],
    "light": [("latency_p50_ms", "p50 ms"), ("latency_p99_ms", "p99 ms")],
}
print("| workload | figure | nginx + Nchan | mongo-sse | mongo-sse / Nchan | lost+dup (Nchan, mongo-sse) | client CPU s (Nchan, mongo-sse) |")
print("|---|---|---|---|---|---|---|")
for w in workloads:
    runs = {s: [json.loads((out / f"{w}-{s}-{r}.json").read_text()) for r in range(1, rounds + 1)]
            for s in ("nchan", "mongo-sse")}
    def med(s, key):
        vals = [r[key] for r in runs[s] if not r.get("failed") and key in r]
        return statistics.median(vals) if vals else float("nan")
    def bad(s):
        return sum(r.get("lost", 0) + r.get("duplicated", 0) + r.get("failed_connections", 0)
                   for r in runs[s] if not r.get("failed")) + sum(1 for r in runs[s] if r.get("failed"))
    for key, name in figures[w]:
        n, m = med("nchan", key), med("mongo-sse", key)
        ratio = m / n if n else float("nan")
        print(f"| {w} | {name} | {n:.2f} | {m:.2f} | {ratio:.2f} | {bad('nchan')}, {bad('mongo-sse')} "
              f"| {med('nchan', 'client_cpu_s'):.2f}, {med('mongo-sse', 'client_cpu_s'):.2f} |")
PY
