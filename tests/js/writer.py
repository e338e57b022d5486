"""The log writer of the browser tests: real pymongo, inserting Datashop-shaped log documents.

Reads one JSON command per line on stdin and answers one JSON line on stdout when it is done,
so the Node tests can await each step instead of sleeping:

    {"cmd": "insert", "workspace": "w1", "workflow": "f1", "from": 0, "count": 2000,
     "batch": 100, "rate": 0}        -> {"ok": true, "inserted": 2000, "seconds": 0.8}

`rate` > 0 paces the writes at that many lines per second (the load of the 500 lines/s
measurement); 0 writes as fast as MongoDB takes them. Every document carries `seq`, and its
message names it, so a test can compare what the page shows with what was inserted.
"""

import datetime
import json
import sys
import time

from pymongo import MongoClient

LEVELS = ["info", "info", "info", "debug", "info", "warning", "info", "error", "info", "debug"]
STEPS = ["extract", "transform", "validate", "load", "publish"]


def message(level, step, seq):
    rows = (seq * 7919) % 10000
    batch = seq // 10
    if level == "error":
        return f"batch {batch}: upstream timed out after 30 s, retrying (attempt {seq % 4 + 1}/5)"
    if level == "critical":
        return f"batch {batch}: giving up after 5 attempts; run marked as failed"
    if level == "warning":
        return f"slow query: {1 + seq % 7}.{seq % 10} s for batch {batch} ({rows} rows)"
    if level == "debug":
        return f"{step}: cursor at offset {seq * 500}, {rows % 97} rows buffered"
    return {
        "extract": f"fetched {rows} rows from orders_2024 (page {batch})",
        "transform": f"normalised {rows} rows, {rows % 13} rejected by the currency rule",
        "validate": f"schema check passed for batch {batch}",
        "load": f"upserted {rows} rows into warehouse.orders",
        "publish": f"published batch {batch} to 3 subscribers",
    }[step]


def doc(ws, wf, seq, run_id):
    level = LEVELS[seq % len(LEVELS)]
    if seq % 997 == 0 and seq:
        level = "critical"
    step = STEPS[(seq // 40) % len(STEPS)]
    return {
        "workspace_id": ws,
        "workflow_id": wf,
        "date": datetime.datetime.now(datetime.timezone.utc),
        "level": level,
        "message": f"line {seq}: {message(level, step, seq)}",
        "step": step,
        "run_id": run_id,
        "seq": seq,
    }


def main():
    uri, db_name = sys.argv[1], sys.argv[2]
    client = MongoClient(uri)
    coll = client[db_name]["logs"]
    client.admin.command("ping")
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for raw in sys.stdin:
        cmd = json.loads(raw)
        started = time.monotonic()
        if cmd["cmd"] == "insert":
            ws, wf = cmd["workspace"], cmd["workflow"]
            first, count = cmd["from"], cmd["count"]
            batch = max(1, cmd.get("batch", 100))
            rate = cmd.get("rate", 0)
            run_id = cmd.get("run_id", "run-1")
            done = 0
            while done < count:
                n = min(batch, count - done)
                coll.insert_many([doc(ws, wf, first + done + i, run_id) for i in range(n)], ordered=True)
                done += n
                if rate > 0:
                    # Pacing the load, not synchronizing: the line is due at done/rate seconds.
                    due = started + done / rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
            print(json.dumps({"ok": True, "inserted": done, "seconds": time.monotonic() - started}), flush=True)
        elif cmd["cmd"] == "quit":
            break
        else:
            print(json.dumps({"ok": False, "error": f"unknown command {cmd['cmd']}"}), flush=True)


if __name__ == "__main__":
    main()
