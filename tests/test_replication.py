"""Stores converging through the shared op log on a real PostgreSQL server: each takes writes
of its own, publishes them, catches up with the others', in varying orders and with steps
repeated; all end with byte-identical state records, and so does a store fed from the shared
log alone."""

from __future__ import annotations

import random
import time

import pytest

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.store.shared_log import START, SharedLog

from conftest import EXAMPLE_SCHEMA

ACTORS = [Actor("zara", "human"), Actor("ci-pipeline", "pipeline"),
          Actor("autoscaler-7", "autoscaler")]


def _ops(rng, node: int, round_: int) -> list[dict]:
    ops = []
    for k in range(rng.randint(5, 15)):
        kind = rng.randrange(7)
        op = {"op_id": f"n{node}-r{round_}-{k}", "env": rng.choice(["production", "staging"])}
        if kind == 0:
            op |= {"type": "set_field", "entity_id": "route.api", "field": "weight",
                   "value": rng.randint(0, 100)}
            if rng.random() < 0.2:
                op["override"] = True
        elif kind == 1:
            op |= {"type": "set_field", "entity_id": "service.checkout", "field": "image",
                   "value": f"registry.local/checkout:{rng.randint(1, 9)}"}
        elif kind == 2:
            op |= {"type": "add_elements", "entity_id": "upstream.backend", "field": "targets",
                   "elements": [f"10.0.0.{rng.randint(1, 6)}"]}
        elif kind == 3:
            op |= {"type": "add_elements", "entity_id": "service.checkout", "field": "labels",
                   "elements": [rng.choice(["web", "canary", "eu"])]}
        elif kind == 4:
            op |= {"type": "set_field", "entity_id": "service.checkout", "field": "tier",
                   "value": rng.choice(["web", "batch"])}
        elif kind == 5:
            op |= {"type": "set_field", "entity_id": "route.api", "field": "timeout",
                   "value": f"{rng.randint(1, 60)}s"}
        else:
            op |= {"type": "unset_field", "entity_id": "route.api", "field": "timeout"}
        ops.append(op)
    return ops


@pytest.fixture
def cluster(tmp_path, pg_dsn):
    engines = [Engine.init(str(tmp_path / f"node{i}"), str(EXAMPLE_SCHEMA), sync=False)
               for i in range(3)]
    logs = [SharedLog(pg_dsn, engine.node) for engine in engines]
    logs[0].create()
    yield engines, logs
    for engine, log in zip(engines, logs):
        engine.close()
        log.close()


def _state(engine) -> tuple:
    return engine.records(), engine.conflicts(), engine.violations()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_stores_converge_through_the_shared_log(cluster, tmp_path, pg_dsn, seed):
    engines, logs = cluster
    rng = random.Random(seed)
    written = 0
    for round_ in range(6):
        for node, engine in enumerate(engines):
            ops = _ops(rng, node, round_)
            engine.apply(ops, rng.choice(ACTORS))
            written += len(ops)
        for node in rng.sample(range(3), rng.randint(1, 3)):
            engines[node].publish_to(logs[node])
        for node in rng.sample(range(3), rng.randint(1, 3)):
            engines[node].catch_up_from(logs[node])
            if rng.random() < 0.3:
                engines[node].catch_up_from(logs[node])  # repeated: nothing changes
    for node in range(3):
        engines[node].publish_to(logs[node])
        assert engines[node].publish_to(logs[node]) == 0  # already there
    for node in range(3):
        engines[node].catch_up_from(logs[node])
    states = [_state(engine) for engine in engines]
    assert states[0][0] and states[0] == states[1] == states[2]
    assert all(engine.last_seq() == written for engine in engines)

    rows, _ = _everything(logs[0])
    assert len(rows) == len({op_id for op_id, _, _ in rows}) == written

    # a new node, fed from the shared log alone, reaches the same state
    fresh = Engine.init(str(tmp_path / "fresh"), str(EXAMPLE_SCHEMA), sync=False)
    with SharedLog(pg_dsn, fresh.node) as log:
        assert fresh.catch_up_from(log) == written
    assert _state(fresh) == states[0]
    fresh.close()


def _everything(log):
    out, position = [], START
    while True:
        rows, position = log.tail(position)
        if not rows:
            return out, position
        out += rows


def test_catching_up_resumes_where_it_stopped(cluster):
    (a, b, _), (log_a, log_b, _) = cluster
    a.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight", "value": 5,
              "op_id": "w-1"}], ACTORS[0])
    assert a.publish_to(log_a) == 1
    assert b.catch_up_from(log_b) == 1
    assert b.catch_up_from(log_b) == 0  # its place is kept in its store
    a.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight", "value": 9,
              "op_id": "w-2"}], ACTORS[0])
    a.publish_to(log_a)
    assert b.catch_up_from(log_b) == 1
    assert b.get("route.api")["weight"]["value"] == 9
    # b's own ops are in the log once, and b skips them when it reads the log
    b.apply([{"type": "set_field", "entity_id": "route.api", "field": "path", "value": "/b",
              "op_id": "p-1"}], ACTORS[1])
    assert b.publish_to(log_b) == 1
    assert b.catch_up_from(log_b) == 1 and b.last_seq() == 3


def test_the_position_read_reaches_the_store_once_the_rows_stop(tmp_path, pg_dsn):
    # rows needing nothing (this node's own) move the position in the store at most once a
    # second; the last of a run must still get there when no row follows it, or whatever
    # reads the store's marks (a worker's status) sees this node behind the log for good
    directory = str(tmp_path / "solo")
    engine = Engine.init(directory, str(EXAMPLE_SCHEMA), sync=False)
    with SharedLog(pg_dsn, engine.node) as log:
        log.create()
        for weight in (1, 2):
            engine.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                           "value": weight, "op_id": f"w-{weight}"}], ACTORS[0])
            engine.publish_to(log)
            assert engine.catch_up_from(log) == 1  # the second within the second: not written
        time.sleep(1.1)
        assert engine.catch_up_from(log) == 0  # nothing new: the position is written now
        engine.close()
        engine = Engine(directory)
        assert engine.shared_position() == _everything(log)[1]
        engine.close()
