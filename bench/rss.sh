#!/usr/bin/env bash
# Resident memory of `mongo-sse serve` around bursts of large documents, per allocator.
#
# Starts the mongo-sim binary and one gateway per run, writes 600 documents of 1 MB with
# pymongo (the ring evicts by bytes), then the same again while 8 readers that never read hold
# connections open (closed as slow consumers), sampling VmRSS from /proc/<pid>/status every
# 50 ms. Runs alternate between the variants so that a drift of the (shared) machine spreads
# over all of them. One JSON line per run on stdout, medians at the end. Not a test: nothing
# here asserts a figure.
#
#   bench/rss.sh [ROUNDS]        (default 3)
#
# Variants: `glibc` (the binary as built), `jemalloc` and `mimalloc` (Debian's libjemalloc2 and
# libmimalloc2.0 through LD_PRELOAD), and `counts` (glibc, byte budgets set to their maximum:
# the ring and queues bounded by event counts only, as before SSE_HISTORY_BYTES). Environment:
#   MONGO_SSE, MONGO_SIM   binaries (default target/release/…; build them with
#                          `cargo build --release --bin mongo-sse -p mongo-sse` and
#                          `cargo build --release -p mongo-sim`)
#   PYTHON                 an interpreter with pymongo (default .venv/bin/python)
#   VARIANTS               space-separated subset of the variants above
#   DOCS, DOC_BYTES, READERS, SETTLE_SECS   the load (600, 1000000, 8, 10)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
MONGO_SSE=${MONGO_SSE:-target/release/mongo-sse}
MONGO_SIM=${MONGO_SIM:-target/release/mongo-sim}
PYTHON=${PYTHON:-.venv/bin/python}
VARIANTS=${VARIANTS:-glibc jemalloc mimalloc counts}
export DOCS=${DOCS:-600} DOC_BYTES=${DOC_BYTES:-1000000} READERS=${READERS:-8} SETTLE_SECS=${SETTLE_SECS:-10}
LIBDIR=/usr/lib/$(uname -m)-linux-gnu

for f in "$MONGO_SSE" "$MONGO_SIM" "$PYTHON"; do
    [[ -x $f ]] || { echo "rss.sh: $f is missing (see the header of this script)" >&2; exit 1; }
done

work=$(mktemp -d)
sim_pid=""
gw_pid=""
cleanup() {
    [[ -n $gw_pid ]] && kill "$gw_pid" 2>/dev/null || true
    [[ -n $sim_pid ]] && kill "$sim_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

run_one() { # variant round
    local variant=$1 round=$2 preload="" extra=()
    case $variant in
        glibc) ;;
        jemalloc) preload=$LIBDIR/libjemalloc.so.2
                  extra=(MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000) ;;
        mimalloc) preload=$LIBDIR/libmimalloc.so.2 ;;
        counts) extra=(SSE_HISTORY_BYTES=68719476736 SSE_QUEUE_BYTES=68719476736) ;;
        *) echo "rss.sh: unknown variant $variant" >&2; exit 1 ;;
    esac
    [[ -z $preload || -e $preload ]] || { echo "rss.sh: $preload missing (apt-get install libjemalloc2 libmimalloc2.0)" >&2; exit 1; }

    # A fresh mongo-sim per run: its memory and oplog do not carry over.
    "$MONGO_SIM" --bind 127.0.0.1:0 >"$work/sim.out" 2>"$work/sim.err" &
    sim_pid=$!
    local addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/^mongo-sim listening on //p' "$work/sim.out")
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "rss.sh: mongo-sim did not start" >&2; cat "$work/sim.err" >&2; exit 1; }
    local port; port=$(free_port)
    env -i PATH="$PATH" ${preload:+LD_PRELOAD=$preload} "${extra[@]}" \
        SSE_AUTH=none SSE_BIND="127.0.0.1:$port" MONGODB_DB=bench RUST_LOG=warn \
        MONGODB_URI="mongodb://$addr/?directConnection=true" \
        "$MONGO_SSE" serve >"$work/gw.out" 2>"$work/gw.err" &
    gw_pid=$!
    VARIANT=$variant ROUND=$round "$PYTHON" - "$gw_pid" "http://127.0.0.1:$port" \
        "mongodb://$addr/?directConnection=true" <<'PY'
import json, os, socket, sys, threading, time, urllib.request
from pymongo import MongoClient

pid, base, uri = int(sys.argv[1]), sys.argv[2], sys.argv[3]
docs, size = int(os.environ["DOCS"]), int(os.environ["DOC_BYTES"])
readers, settle = int(os.environ["READERS"]), float(os.environ["SETTLE_SECS"])

def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("gateway gone")

peak = [0.0]
def sample():
    while True:
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()

def metric(name):
    """The sum of the samples named exactly `name`, over their labels unless it has some."""
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name or ("{" not in name and key.startswith(name + "{")):
            total += float(value)
    return total

def until(what, pred, limit=600):
    deadline = time.time() + limit
    while not pred():
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)

def ready():
    try:
        return urllib.request.urlopen(base + "/readyz", timeout=2).status == 200
    except Exception:
        return False
until("the gateway to be ready", ready, 60)

coll = MongoClient(uri)["bench"]["logs"]
pad = "x" * size
def burst(first):
    for i in range(first, first + docs, 10):
        coll.insert_many([{"workspace_id": "w1", "workflow_id": "f1", "seq": j, "pad": pad}
                          for j in range(i, min(i + 10, first + docs))])

out = {"variant": os.environ["VARIANT"], "round": int(os.environ["ROUND"])}
time.sleep(2)
out["baseline_mb"] = rss_mb()

# 1. A burst the ring must evict by bytes.
peak[0] = 0.0
burst(0)
until("the first burst to be published", lambda: metric("mongo_sse_events_in_total") >= docs)
out["ring_peak_mb"] = peak[0]
time.sleep(settle)
out["ring_after_mb"] = rss_mb()

# 2. The same while readers that never read hold connections: closed as slow consumers.
socks = []
for _ in range(readers):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    s.sendall(b"GET /v1/stream?channel=logs:w1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    s.recv(1024)  # the response head; nothing after it is read
    socks.append(s)
until("the readers to be connected", lambda: metric("mongo_sse_connections_open") >= readers, 30)
peak[0] = 0.0
closed0 = metric('mongo_sse_connections_closed_total{reason="slow_consumer"}')
burst(docs)
until("the second burst to be published", lambda: metric("mongo_sse_events_in_total") >= 2 * docs)
out["slow_peak_mb"] = peak[0]
out["slow_closed"] = int(metric('mongo_sse_connections_closed_total{reason="slow_consumer"}') - closed0)
for s in socks:
    s.close()
until("the readers to be gone", lambda: metric("mongo_sse_connections_open") == 0, 60)
time.sleep(settle)
out["slow_after_mb"] = rss_mb()
print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}), flush=True)
PY
    kill "$gw_pid" "$sim_pid" 2>/dev/null || true
    wait "$gw_pid" "$sim_pid" 2>/dev/null || true
    gw_pid="" sim_pid=""
}

results=$work/results.jsonl
for round in $(seq "$ROUNDS"); do
    for v in $VARIANTS; do
        run_one "$v" "$round" | tee -a "$results"
    done
done

"$PYTHON" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["baseline_mb", "ring_peak_mb", "ring_after_mb", "slow_peak_mb", "slow_after_mb", "slow_closed"]
print("\nmedians (MB)  " + "  ".join(k.removesuffix("_mb") for k in keys))
for v in dict.fromkeys(r["variant"] for r in rows):
    rs = [r for r in rows if r["variant"] == v]
    print(f"{v:<9} n={len(rs)}  " + "  ".join(f"{statistics.median(r[k] for r in rs):.0f}" for k in keys))
PY
