"""The shared op log on a real PostgreSQL server (started by the suite, ``pgcluster.py``):
op ids once across nodes, durable appends, and a tail that never skips a row that commits
late."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from conflux.store.shared_log import START, SharedLog


@pytest.fixture
def nodes(pg_dsn):
    a, b = SharedLog(pg_dsn, "node-a"), SharedLog(pg_dsn, "node-b")
    a.create()
    b.create()  # a second node finds the table made
    yield a, b
    a.close()
    b.close()


def tail_all(log, after=START):
    out = []
    while True:
        rows, after = log.tail(after, limit=7)
        if not rows:
            return out, after
        out += rows


def test_appends_are_read_back_in_order_by_every_node(nodes):
    a, b = nodes
    assert a.append([("a-1", b"one"), ("a-2", b"two")]) == [True, True]
    assert b.append([("b-1", b"three")]) == [True]
    for log in (a, b):
        rows, _ = tail_all(log)
        assert rows == [("a-1", "node-a", b"one"), ("a-2", "node-a", b"two"),
                        ("b-1", "node-b", b"three")]


def test_an_op_id_is_logged_once_across_nodes_and_within_a_batch(nodes):
    a, b = nodes
    assert a.append([("op-1", b"x")]) == [True]
    # a retry sent to the other node, and a batch naming one id twice
    assert b.append([("op-1", b"x"), ("op-2", b"y"), ("op-2", b"y")]) == [False, True, False]
    rows, _ = tail_all(a)
    assert [r[0] for r in rows] == ["op-1", "op-2"]
    assert rows[0][1] == "node-a"


def test_a_reader_resumes_from_its_position(nodes):
    a, _ = nodes
    a.append([(f"op-{i}", bytes([i])) for i in range(20)])
    first, position = a.tail(START, limit=5)
    rest, end = tail_all(a, position)
    assert [r[0] for r in first + rest] == [f"op-{i}" for i in range(20)]
    assert a.tail(end) == ([], end)


def _open_writer(dsn, op_id, *, insert_now=True):
    """A transaction that holds its id (and, with ``insert_now``, its row) uncommitted."""
    conn = psycopg.connect(dsn)
    conn.execute("SELECT pg_current_xact_id()")  # the transaction id is taken now
    if insert_now:
        conn.execute("INSERT INTO conflux_log (op_id, node, entry) VALUES (%s, 'slow', "
                     "'late')", (op_id,))
    return conn


def test_a_row_committed_late_is_never_skipped(nodes, pg_dsn):
    a, b = nodes
    slow = _open_writer(pg_dsn, "slow-1")  # numbered before the others, commits after
    b.append([("b-1", b"1"), ("b-2", b"2")])
    # a reader by row number alone would return b-1 and b-2 now and pass slow-1 for good
    assert a.tail(START) == ([], START)
    slow.commit()
    slow.close()
    rows, _ = tail_all(a)
    assert [r[0] for r in rows] == ["slow-1", "b-1", "b-2"]


def test_a_transaction_older_than_the_rows_it_writes_holds_the_readers_back(nodes, pg_dsn):
    a, b = nodes
    slow = _open_writer(pg_dsn, None, insert_now=False)  # its id taken before b's rows
    b.append([("b-1", b"1")])
    assert a.tail(START) == ([], START)
    slow.execute("INSERT INTO conflux_log (op_id, node, entry) VALUES ('slow-1', 'slow', 'x')")
    slow.commit()
    slow.close()
    rows, _ = tail_all(a)
    assert [r[0] for r in rows] == ["slow-1", "b-1"]  # in transaction order, none skipped


def test_concurrent_writers_and_a_tailer_see_every_op_once(nodes, pg_dsn):
    a, _ = nodes
    ids = [f"op-{i}" for i in range(600)]
    seen, stop, failures = [], threading.Event(), []

    def writer(seed):
        rng = random.Random(seed)
        try:
            with SharedLog(pg_dsn, f"w{seed}") as log:
                for _ in range(40):
                    # overlapping, in any order: retries sent to other nodes meanwhile
                    batch = rng.sample(ids, rng.randint(1, 25))
                    log.append([(op_id, op_id.encode()) for op_id in batch])
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    def tailer():
        position = START
        with SharedLog(pg_dsn, "reader") as log:
            while not stop.is_set():
                rows, position = log.tail(position, limit=50)
                seen.extend(r[0] for r in rows)
                if not rows:
                    log.wait(0.05)
            rows, position = tail_all(log, position)
            seen.extend(r[0] for r in rows)

    reader = threading.Thread(target=tailer)
    reader.start()
    writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join(timeout=60)
    assert failures == []
    logged, _ = tail_all(a)
    assert len(seen) == len(set(seen)) == len(logged)
    assert set(seen) == {r[0] for r in logged}


def test_a_waiting_tailer_is_woken_by_another_nodes_append(nodes):
    a, b = nodes
    assert a.wait(0.2) is False
    timer = threading.Timer(0.3, lambda: b.append([("b-1", b"x")]))
    started = time.monotonic()
    timer.start()
    assert a.wait(10) is True
    assert time.monotonic() - started < 5
    timer.join()
