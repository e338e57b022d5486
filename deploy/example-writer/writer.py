"""A Datashop-style job-log writer for docker-compose.yml: inserts log lines into MongoDB the way
the services do today, knowing nothing of mongo-sse. Stop with Ctrl-C (or `docker compose down`).
"""

import datetime
import os
import random
import signal
import sys
import time
import uuid

from pymongo import MongoClient

STEPS = ["extract", "transform", "load"]
MESSAGES = {
    "extract": ["reading source table", "fetched batch", "source cursor exhausted"],
    "transform": ["applied mapping", "deduplicated rows", "validated schema"],
    "load": ["upserting into warehouse", "committed batch", "refreshed materialized view"],
}


def level() -> str:
    r = random.random()
    return "ERROR" if r < 0.03 else "WARNING" if r < 0.12 else "INFO"


def main() -> int:
    uri = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
    db = MongoClient(uri)[os.environ.get("MONGODB_DB", "datashop")]
    rate = float(os.environ.get("RATE", "5"))
    max_lines = int(os.environ.get("MAX_LINES", "0"))  # 0: until stopped
    written = 0
    workspaces = ["ws-analytics", "ws-finance"]
    workflows = ["wf-daily", "wf-hourly"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        ws, wf, run = random.choice(workspaces), random.choice(workflows), uuid.uuid4().hex[:8]
        for step in STEPS:
            for message in MESSAGES[step]:
                db.logs.insert_one(
                    {
                        "date": datetime.datetime.now(datetime.timezone.utc),
                        "level": level(),
                        "message": message,
                        "step": step,
                        "workspace_id": ws,
                        "workflow_id": wf,
                        "run_id": run,
                    }
                )
                written += 1
                if written == max_lines:
                    return 0
                time.sleep(1 / rate)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
