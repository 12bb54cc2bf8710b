"""Group commit: the in-process committer and the daemon's commit service (a real Unix socket,
real synced LMDB commits)."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import tempfile
import threading

import pytest
from conftest import set_op

from conflux.actors import Actor
from conflux.daemon.commits import CommitClient, CommitService, GroupCommitter, _groups
from conflux.errors import PreconditionFailed, StoreError, ValidationError

ZARA = Actor("zara", "human")
SCALER = Actor("autoscaler-7", "autoscaler")


@pytest.fixture
def sock_dir():
    path = tempfile.mkdtemp(prefix="cfx-")  # short: a socket path has at most 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Running:
    """A ``CommitService`` serving from a thread of the test."""

    def __init__(self, engine, path):
        self.service = CommitService(engine, path)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.serve, args=(self.stop,))
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(40)
        assert not self.thread.is_alive()


@pytest.fixture
def service(engine, sock_dir):
    running = Running(engine, os.path.join(sock_dir, "c.sock"))
    yield running
    running.close()


def _hammer(apply, writers=8, each=30):
    """``writers`` threads, each writing ``each`` one-op batches through ``apply``."""
    acks, errors = [], []
    lock = threading.Lock()

    def write(n):
        for i in range(each):
            try:
                got = apply([set_op(f"route.w{n}-{i}", "weight", i)], SCALER)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return
            with lock:
                acks.extend(got)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return acks, errors


def _client_hammer(client, writers=8, each=30):
    """As a worker's event loop does: ``writers`` requests in flight at once on the
    client's one connection, ``each`` one after another."""
    acks, errors = [], []

    async def write(n):
        for i in range(each):
            try:
                acks.extend(await client.apply([set_op(f"route.w{n}-{i}", "weight", i)],
                                               SCALER))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return

    async def main():
        await asyncio.wait_for(asyncio.gather(*(write(n) for n in range(writers))), 60)
        client.close()  # the worker exits
    asyncio.run(main())
    return acks, errors


def run(coro, client=None):
    """``coro`` on an event loop of its own, then ``client`` closed on it."""
    async def main():
        try:
            return await asyncio.wait_for(coro, 60)
        finally:
            if client is not None:
                client.close()
    return asyncio.run(main())


def test_group_committer_shares_commits_among_threads(engine):
    committer = GroupCommitter(engine)
    try:
        acks, errors = _hammer(committer.apply)
    finally:
        committer.close()
    assert not errors
    assert len(acks) == 240 and len({a.seq for a in acks}) == 240
    assert {a.op_id for a in acks} == {o.op_id for o in engine.log()}
    assert committer.batches == 240 and committer.commits < 240


def test_the_commit_service_groups_concurrent_writers(engine, service):
    client = CommitClient(service.service.path, engine)
    acks, errors = _client_hammer(client)
    assert not errors
    assert len(acks) == 240 and len({a.seq for a in acks}) == 240
    logged = {o.op_id: o for o in engine.log()}
    assert {a.op_id for a in acks} == set(logged)
    for ack in acks:  # what the writer was told is what the log holds
        assert (logged[ack.op_id].seq, logged[ack.op_id].hlc) == (ack.seq, ack.hlc)
    assert service.service.commits < 240
    client.close()
    assert engine.get("route.w3-7")["weight"]["value"] == 7


def test_a_group_holds_at_most_group_bytes_of_requests(engine, service):
    frames = [(None, b"x" * n) for n in (3, 3, 3, 10, 1)]
    assert [[len(f) for _, f in g] for g in _groups(frames, 7)] == [[3, 3], [3], [10], [1]]
    service.service.GROUP_BYTES = 1  # every request a group of its own
    client = CommitClient(service.service.path, engine)
    acks, errors = _client_hammer(client, writers=4, each=10)
    assert not errors and len({a.seq for a in acks}) == 40
    assert service.service.commits == 40
    client.close()


def test_a_bad_batch_fails_alone_with_its_own_error(engine, service):
    client = CommitClient(service.service.path, engine)
    batches = {
        "good": [set_op("service.b", "image", "b:1"), set_op("service.b", "replicas", 3)],
        "unknown field": [set_op("service.c", "colour", "red")],
        "stale base": [set_op("service.a", "image", "a:3", base=["someone-else"])],
        "good too": [set_op("service.d", "image", "d:1")],
    }

    async def send_all():  # all four on the one connection before any answer
        first = await client.apply([set_op("service.a", "image", "a:1")], ZARA)
        return first[0], await asyncio.gather(*(client.apply(ops, ZARA)
                                                for ops in batches.values()),
                                              return_exceptions=True)
    first, outcomes = run(send_all(), client)
    outcomes = dict(zip(batches, outcomes))
    assert isinstance(outcomes["unknown field"], ValidationError)
    assert "colour" in str(outcomes["unknown field"])
    assert outcomes["unknown field"].http_status == 422
    assert isinstance(outcomes["stale base"], PreconditionFailed)
    assert len(outcomes["good"]) == 2 and len(outcomes["good too"]) == 1
    assert engine.get("service.a")["image"]["value"] == "a:1"
    assert engine.get("service.b")["replicas"]["value"] == 3
    client.close()
    service.close()
    assert gc.isenabled()  # the service pauses the collector only while it commits a group
    assert {o.op_id for o in engine.log()} == {
        first.op_id, *(a.op_id for a in outcomes["good"]), outcomes["good too"][0].op_id}


def test_a_repeated_op_id_is_acknowledged_as_a_duplicate(engine, service):
    client = CommitClient(service.service.path, engine)

    async def twice():
        one = await client.apply([set_op("service.a", "image", "a:1", op_id="ci-run-1")], ZARA)
        again = await client.apply([set_op("service.a", "image", "a:1", op_id="ci-run-1")],
                                   ZARA)
        return one[0], again[0]
    one, again = run(twice(), client)
    assert (again.op_id, again.seq, again.duplicate) == ("ci-run-1", one.seq, True)
    assert len(list(engine.log())) == 1
    client.close()


def test_without_the_service_a_worker_commits_alone(engine, sock_dir):
    client = CommitClient(os.path.join(sock_dir, "nobody.sock"), engine)
    try:
        acks = run(client.apply([set_op("route.r", "weight", 5)], SCALER), client)
    finally:
        client.close()
    assert engine.get("route.r")["weight"]["value"] == 5
    assert acks[0].seq == engine.last_seq()


def test_a_service_lost_after_the_send_is_a_503(engine, sock_dir):
    path = os.path.join(sock_dir, "gone.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def take_and_die():
        conn, _ = listener.accept()
        conn.recv(1 << 16)
        conn.close()
    t = threading.Thread(target=take_and_die)
    t.start()
    client = CommitClient(path, engine)
    with pytest.raises(StoreError, match="may or may not be stored") as caught:
        run(client.apply([set_op("route.r", "weight", 5)], SCALER), client)
    assert caught.value.http_status == 503
    t.join(10)
    listener.close()


def test_a_stopping_service_serves_its_connected_workers_first(engine, sock_dir):
    running = Running(engine, os.path.join(sock_dir, "c.sock"))
    client = CommitClient(running.service.path, engine)

    async def worker():
        await client.apply([set_op("route.r", "weight", 1)], SCALER)
        running.stop.set()  # e.g. a service manager signalling every process of the daemon
        acks = await client.apply([set_op("route.r", "weight", 2)], SCALER)  # still served
        assert acks[0].seq == 2
        assert running.thread.is_alive()
        client.close()  # the worker exits
    run(worker())
    running.thread.join(10)
    assert not running.thread.is_alive()
    assert engine.get("route.r")["weight"]["value"] == 2


def test_a_group_is_merged_in_one_pass_and_each_batch_answered(engine):
    one = engine.validated([set_op("service.a", "image", "a:1", op_id="ci-1"),
                            set_op("service.a", "replicas", 2)], ZARA)
    two = engine.validated([set_op("service.b", "image", "b:1"),
                            set_op("service.a", "image", "a:1", op_id="ci-1")], ZARA)
    first, second = engine.commit_validated([one, two])
    rows = [first.rows(), second.rows()]  # the service's answers, before any Ack is built
    assert (len(first), len(second)) == (2, 2)
    assert [a.seq for a in first] + [second[0].seq] == [1, 2, 3]
    assert not any(a.duplicate for a in [*first, second[0]])
    assert (second[1].op_id, second[1].seq, second[1].duplicate) == ("ci-1", 1, True)
    assert [o.seq for o in engine.log(reverse=False)] == [1, 2, 3]
    # small requests are told each op's outcome: it won, and the field's value now
    assert [(a.applied, a.value) for a in [*first, *second]] == [
        (True, "a:1"), (True, 2), (True, "b:1"), (True, "a:1")]
    assert rows == [[[a.op_id, a.hlc, a.seq, a.duplicate, a.applied, a.value] for a in part]
                    for part in (first, second)]


def test_a_large_batch_and_its_answer_cross_the_socket_whole(engine, service):
    client = CommitClient(service.service.path, engine)
    ops = [set_op(f"route.big{i}", "weight", i % 100) for i in range(3000)]
    acks = run(client.apply(ops, SCALER), client)  # ~100 KB each way: several reads on both sides
    client.close()
    assert [a.seq for a in acks] == list(range(1, 3001))
    assert engine.get("route.big2999")["weight"]["value"] == 99


def test_socket_directories_of_killed_daemons_are_swept(tmp_path, monkeypatch):
    import subprocess
    import sys

    from conflux.daemon import commits

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has any more (a killed daemon's)
    for name, pid in (("dead", gone.pid), ("alive", os.getpid()), ("starting", None)):
        private = tmp_path / f"conflux-commits-{name}"
        private.mkdir()
        (private / "commits.sock").write_text("")
        if pid is not None:
            (private / "daemon.pid").write_text(str(pid))
    (tmp_path / "other-dir").mkdir()
    commits._sweep_stale()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conflux-commits-alive", "conflux-commits-starting", "other-dir"]


def test_a_peer_sending_a_malformed_frame_is_dropped_and_the_others_served(engine, service):
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(service.service.path)
    bad.sendall(b"\x03\x00\x00\x00abc")  # a frame whose payload is not a request
    bad.settimeout(10)
    assert bad.recv(16) == b""  # closed, not answered
    bad.close()
    client = CommitClient(service.service.path, engine)
    acks = run(client.apply([set_op("route.r", "weight", 3)], SCALER), client)
    assert acks[0].seq == 1 and engine.get("route.r")["weight"]["value"] == 3
