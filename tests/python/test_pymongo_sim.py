"""pymongo against the `mongo-sim` binary: the log writers of the design brief use pymongo, so
pymongo must talk to mongo-sim unmodified (CRUD, change streams, resume, history loss).

The binary is taken from `MONGO_SIM_BIN` (cargo's `crates/mongo-sim/tests/pymongo.rs` sets it).
Every wait is bounded by a deadline; nothing sleeps to synchronise.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import OperationFailure

LISTENING = re.compile(r"^mongo-sim listening on (\S+):(\d+)$")
START_TIMEOUT_S = 30
WAIT_S = 30


class Sim:
    """One `mongo-sim` process bound to an ephemeral port on loopback."""

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
        threading.Thread(
            target=lambda: lines.put(self.proc.stdout.readline()), daemon=True
        ).start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.kill()
            raise AssertionError("mongo-sim printed no address in time")
        m = LISTENING.match(line.rstrip("\n"))
        if not m:
            self.kill()
            raise AssertionError(f"unexpected first line from mongo-sim: {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.uri = f"mongodb://{self.host}:{self.port}/?replicaSet=rs0"

    def client(self, **kw):
        return MongoClient(self.uri, serverSelectionTimeoutMS=10_000, **kw)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self):
        """SIGTERM, then wait (bounded) for exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


@pytest.fixture(scope="module")
def sim():
    s = Sim()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(sim):
    c = sim.client()
    yield c
    c.close()


def next_changes(stream, n, timeout=WAIT_S):
    """Up to `n` changes from `stream`, polling with `try_next` until a deadline."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        change = stream.try_next()
        if change is not None:
            out.append(change)
    return out


def test_replica_set_discovery(client):
    hello = client.admin.command("hello")
    assert hello["setName"] == "rs0"
    assert hello["isWritablePrimary"] is True
    assert client.admin.command("ping")["ok"] == 1.0


def test_crud(client):
    coll = client.pytest_db.crud
    coll.drop()
    one = coll.insert_one({"n": 0, "tag": "first"})
    assert one.acknowledged and one.inserted_id is not None
    many = coll.insert_many([{"n": i, "tag": "many"} for i in range(1, 10)])
    assert len(many.inserted_ids) == 9
    assert coll.count_documents({}) == 10
    assert coll.count_documents({"tag": "many"}) == 9
    assert coll.estimated_document_count() == 10

    top = list(coll.find({}, {"_id": 0, "n": 1}).sort("n", DESCENDING).limit(3))
    assert top == [{"n": 9}, {"n": 8}, {"n": 7}]
    low = list(coll.find({"tag": "many"}).sort([("n", ASCENDING)]).limit(2))
    assert [d["n"] for d in low] == [1, 2]

    res = coll.update_one({"n": 5}, {"$set": {"tag": "updated"}, "$inc": {"n": 100}})
    assert (res.matched_count, res.modified_count) == (1, 1)
    assert coll.find_one({"tag": "updated"})["n"] == 105
    assert coll.find_one({"n": 5}) is None

    res = coll.delete_one({"tag": "first"})
    assert res.deleted_count == 1
    assert coll.count_documents({}) == 9
    assert coll.find_one({"tag": "first"}) is None


def test_watch_receives_inserts(client):
    coll = client.pytest_db.watched
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_many([{"i": i} for i in range(5)])
        coll.insert_one({"i": 5})
        changes = next_changes(stream, 6)
    assert [c["operationType"] for c in changes] == ["insert"] * 6
    assert [c["fullDocument"]["i"] for c in changes] == list(range(6))
    assert all(c["ns"] == {"db": "pytest_db", "coll": "watched"} for c in changes)
    assert all(c["documentKey"]["_id"] == c["fullDocument"]["_id"] for c in changes)


def test_resume_after_gets_exactly_what_followed(client):
    coll = client.pytest_db.resumed
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_many([{"i": i} for i in range(5)])
        seen = next_changes(stream, 2)
    assert [c["fullDocument"]["i"] for c in seen] == [0, 1]
    token = seen[-1]["_id"]
    coll.insert_many([{"i": i} for i in range(5, 7)])

    with coll.watch(resume_after=token, max_await_time_ms=200) as stream:
        rest = next_changes(stream, 5)
        assert [c["fullDocument"]["i"] for c in rest] == [2, 3, 4, 5, 6]
        # Nothing more: one more (bounded) getMore comes back empty.
        assert stream.try_next() is None
        coll.insert_one({"i": 7})
        assert [c["fullDocument"]["i"] for c in next_changes(stream, 1)] == [7]


def test_resume_from_truncated_oplog_is_history_lost():
    small = Sim("--oplog-max-events", "5")
    try:
        with small.client() as c:
            coll = c.pytest_db.truncated
            behind = coll.watch(max_await_time_ms=200)
            coll.insert_one({"i": 0})
            first = next_changes(behind, 1)
            assert len(first) == 1
            token = first[0]["_id"]
            coll.insert_many([{"i": i} for i in range(1, 20)])

            # The open stream's position was overwritten: CappedPositionLost, as MongoDB's
            # tailable oplog scan reports it; pymongo does not resume that.
            with pytest.raises(OperationFailure) as err:
                behind.try_next()
            assert err.value.code == 136
            behind.close()

            with pytest.raises(OperationFailure) as err:
                with coll.watch(resume_after=token, max_await_time_ms=200) as stream:
                    stream.try_next()
            assert err.value.code == 286
            assert err.value.details.get("codeName") == "ChangeStreamHistoryLost"
    finally:
        assert small.stop() == 0


def test_sigterm_exits_zero_with_clients_connected():
    s = Sim()
    c = s.client()
    try:
        c.pytest_db.sig.insert_one({"x": 1})
        # pymongo's monitor keeps an awaitable hello waiting on the server, and an open change
        # stream holds a cursor: neither may delay the exit.
        stream = c.pytest_db.sig.watch(max_await_time_ms=200)
        stream.try_next()
        assert s.stop() == 0
    finally:
        c.close()
        s.kill()


def test_exhaust_cursor_reads_everything(client):
    """pymongo's exhaust cursors: one getMore, a stream of moreToCome replies."""
    from pymongo import CursorType

    coll = client.pytest_db.exhaust
    coll.drop()
    coll.insert_many([{"_id": i} for i in range(25)])
    got = [d["_id"] for d in coll.find({}, cursor_type=CursorType.EXHAUST, batch_size=4).sort("_id")]
    assert got == list(range(25))
    # The connection that carried the exhaust stream is back in the pool and works.
    assert coll.count_documents({}) == 25
