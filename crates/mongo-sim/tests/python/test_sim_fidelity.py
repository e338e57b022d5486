"""pymongo against the `mongo-sim` binary: MongoDB 7.0 behaviours pymongo users meet, from
issue 13 (the initial resume token, pre-images, split events, TTL expiry, validators).

Like `tests/python/test_pymongo_sim.py` (run together by `crates/mongo-sim/tests/pymongo.rs`),
every wait is bounded by a deadline; nothing sleeps to synchronise except the bounded polls.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from bson import Timestamp
from pymongo import MongoClient
from pymongo.errors import OperationFailure, WriteError

LISTENING = re.compile(r"^mongo-sim listening on (\S+):(\d+)$")
WAIT_S = 30


class Sim:
    """One `mongo-sim` process on an ephemeral loopback port."""

    def __init__(self, *args):
        binary = os.environ.get("MONGO_SIM_BIN")
        if not binary:
            pytest.skip("MONGO_SIM_BIN is not set (cargo test -p mongo-sim --test pymongo sets it)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=WAIT_S)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError("mongo-sim printed no address in time")
        m = LISTENING.match(line.rstrip("\n"))
        assert m, f"unexpected first line from mongo-sim: {line!r}"
        self.uri = f"mongodb://{m.group(1)}:{m.group(2)}/?replicaSet=rs0"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=WAIT_S)


@pytest.fixture(scope="module")
def client():
    # A one-second TTL monitor, so expiry is seen in a test.
    sim = Sim("--ttl-monitor-sleep-secs", "1")
    c = MongoClient(sim.uri, serverSelectionTimeoutMS=10_000)
    yield c
    c.close()
    sim.stop()


def next_changes(stream, n, timeout=WAIT_S):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        change = stream.try_next()
        if change is not None:
            out.append(change)
    return out


def test_start_at_the_initial_token_time_after_drop_and_recreate(client):
    db = client.fid_recreate
    db.c.insert_one({"_id": 0})
    db.c.drop()
    db.create_collection("c")
    with db.c.watch(max_await_time_ms=100) as cs:
        data = cs.resume_token["_data"]
    # The initial token is a high-water mark one tick past the drop, as MongoDB's.
    at = Timestamp(int(data[2:10], 16), int(data[10:18], 16))
    db.c.insert_many([{"_id": 1}, {"_id": 2}])
    with db.c.watch(start_at_operation_time=at, max_await_time_ms=100) as cs:
        changes = next_changes(cs, 2)
    assert [c["operationType"] for c in changes] == ["insert", "insert"]
    assert [c["documentKey"]["_id"] for c in changes] == [1, 2]


def test_pre_images_with_change_stream_pre_and_post_images(client):
    db = client.fid_images
    db.create_collection("c", changeStreamPreAndPostImages={"enabled": True})
    db.c.insert_one({"_id": 1, "v": 1})
    with db.c.watch(full_document_before_change="required", full_document="required") as cs:
        db.c.update_one({"_id": 1}, {"$set": {"v": 2}})
        (change,) = next_changes(cs, 1)
    assert change["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}
    assert change["fullDocument"] == {"_id": 1, "v": 2}


def test_read_concern_local_on_a_change_stream_is_invalid_options(client):
    from pymongo.read_concern import ReadConcern

    coll = client.fid_rc.get_collection("c", read_concern=ReadConcern("local"))
    with pytest.raises(OperationFailure) as e:
        coll.watch()
    assert e.value.code == 72


def test_split_large_event_fragments(client):
    db = client.fid_split
    half = "h" * 8_000_000
    db.c.insert_one({"_id": 1, "a": half})
    with db.c.watch([{"$changeStreamSplitLargeEvent": {}}], full_document="updateLookup") as cs:
        db.c.update_one({"_id": 1}, {"$set": {"b": half}})
        fragments = next_changes(cs, 2)
    assert [f["splitEvent"] for f in fragments] == [
        {"fragment": 1, "of": 2},
        {"fragment": 2, "of": 2},
    ]
    assert fragments[0]["operationType"] == "update"
    assert len(fragments[1]["fullDocument"]["b"]) == len(half)


def test_ttl_index_expires_documents(client):
    db = client.fid_ttl
    db.c.create_index("at", expireAfterSeconds=30)
    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    db.c.insert_many([{"_id": 1, "at": old}, {"_id": 2, "at": datetime.now(timezone.utc)}])
    deadline = time.monotonic() + WAIT_S
    while db.c.count_documents({}) > 1:
        assert time.monotonic() < deadline, "the TTL monitor deleted nothing"
        time.sleep(0.05)
    assert [d["_id"] for d in db.c.find()] == [2]


def test_validator_refuses_with_121(client):
    db = client.fid_validator
    db.create_collection("c", validator={"a": {"$exists": True}})
    with pytest.raises(WriteError) as e:
        db.c.insert_one({"_id": 1})
    assert e.value.code == 121
    assert e.value.details["errInfo"]["failingDocumentId"] == 1
    db.c.insert_one({"_id": 2, "a": 1})


def test_resize_oplog_shrink_loses_history():
    # A sim of its own: the shrink must not reach the other tests' streams.
    sim = Sim()
    c = MongoClient(sim.uri, serverSelectionTimeoutMS=10_000)
    try:
        db = c.fid_resize
        with db.c.watch(max_await_time_ms=100) as cs:
            db.c.insert_one({"_id": 0})
            (first,) = next_changes(cs, 1)
        db.c.insert_many([{"_id": i} for i in range(1, 11)])
        with pytest.raises(OperationFailure) as e:
            c.admin.command("replSetResizeOplog", 1, size=900.0)
        assert e.value.code == 51024
        c.admin.command("replSetResizeOplog", 1, size=990.0, simMaxEvents=3)
        assert c.local.command("collStats", "oplog.rs")["count"] == 3
        oldest = c.local.oplog.rs.find().sort("$natural", 1).limit(1).next()
        assert oldest["ts"] > first["clusterTime"]
        with pytest.raises(OperationFailure) as e:
            with db.c.watch(resume_after=first["_id"]):
                pass
        assert e.value.code == 286
    finally:
        c.close()
        sim.stop()


def test_split_large_event_outside_a_change_stream_is_illegal_operation(client):
    with pytest.raises(OperationFailure) as e:
        list(client.fid_split_plain.c.aggregate([{"$changeStreamSplitLargeEvent": {}}]))
    assert e.value.code == 20
