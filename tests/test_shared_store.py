"""A store whose op log of record is on a real PostgreSQL server (``SharedStore``): a write is
in the shared log before it is in the node's store, or nowhere; an op id is bound once
across nodes; an op whose local commit a crash lost comes back from the shared log; a store
holding ops the shared log lacks does not join it silently."""

from __future__ import annotations

import os

import psycopg
import pytest

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.errors import InputError, StoreError

from conftest import EXAMPLE_SCHEMA

ZARA = Actor("zara", "human")


def _url(postgres, dsn: str) -> str:
    return f"postgresql://conflux@127.0.0.1:{postgres.port}/{dsn.rsplit('dbname=', 1)[1]}"


def _node(tmp_path, name: str, url: str | None) -> Engine:
    directory = str(tmp_path / name)
    Engine.init(directory, str(EXAMPLE_SCHEMA), sync=False).close()
    if url:
        with open(os.path.join(directory, ".conflux", "config.toml"), "a") as fh:
            fh.write(f'\n[store]\nurl = "{url}"\n')
    return Engine(directory, sync=False)


def _set(weight: int, op_id: str | None = None) -> dict:
    op = {"type": "set_field", "env": "production", "entity_id": "route.api",
          "field": "weight", "value": weight}
    return op | ({"op_id": op_id} if op_id else {})


def _shared_ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT op_id FROM conflux_log ORDER BY pos")]


def _local_ids(engine) -> list[str]:
    return [engine.core.decode_entry(data).op_id for _, data in engine.entries(1)]


@pytest.fixture
def nodes(tmp_path, postgres, pg_dsn):
    url = _url(postgres, pg_dsn)
    a, b = _node(tmp_path, "a", url), _node(tmp_path, "b", url)
    yield a, b
    a.close()
    b.close()


def test_a_write_is_in_the_shared_log_when_it_returns(nodes, pg_dsn):
    a, _ = nodes
    a.apply([_set(10, "w-1"), _set(20)], ZARA)
    logged = _shared_ids(pg_dsn)
    assert logged == _local_ids(a) and logged[0] == "w-1" and logged[1].startswith(a.node)


def test_an_op_id_another_node_logged_first_is_acknowledged_not_bound_again(nodes, pg_dsn):
    a, b = nodes
    b.apply([_set(5, "w-0")], ZARA)  # b's state differs from a's: a binding would too
    [first] = a.apply([_set(30, "w-1")], ZARA)
    # b has not read the shared log: it binds w-1 against its own state, finds the id taken
    # at PostgreSQL, applies a's entry and answers the retry
    acks = b.apply([_set(30, "w-1"), _set(40, "w-2")], ZARA)
    assert acks[0].duplicate and acks[0].hlc == first.hlc
    assert not acks[1].duplicate
    assert _shared_ids(pg_dsn) == ["w-0", "w-1", "w-2"]
    assert sorted(_local_ids(b)) == ["w-0", "w-1", "w-2"]
    entry_a = dict(a.entries(1))[1]
    assert [d for _, d in b.entries(1) if b.core.decode_entry(d).op_id == "w-1"] == [entry_a]
    # and once both have read the log, they hold the same state
    for engine in (a, b):
        engine.catch_up_from(engine.store.shared_log())
    assert a.records() == b.records()
    assert sorted(_local_ids(a)) == sorted(_local_ids(b))


def test_the_same_op_id_with_other_content_is_refused_on_another_node(nodes):
    a, b = nodes
    a.apply([_set(30, "w-1")], ZARA)
    with pytest.raises(Exception, match="already names"):
        b.apply([_set(31, "w-1")], ZARA)


def test_an_op_whose_local_commit_was_lost_comes_back(nodes, pg_dsn, monkeypatch):
    a, b = nodes
    store = a.store
    published = type(store)._before_commit

    class Crash(Exception):
        pass

    def crash_after_publishing(self):
        published(self)
        raise Crash  # PostgreSQL committed; the process dies before LMDB does

    monkeypatch.setattr(type(store), "_before_commit", crash_after_publishing)
    with pytest.raises(Crash):
        a.apply([_set(11), _set(12, "w-lost")], ZARA)
    monkeypatch.undo()
    lost = _shared_ids(pg_dsn)
    assert len(lost) == 2 and lost[1] == "w-lost" and _local_ids(a) == []
    # the next write's generated id is the lost one's: that is found at PostgreSQL, the lost
    # op is applied, and the write is bound afresh under a new id
    [ack] = a.apply([_set(13)], ZARA)
    assert not ack.duplicate and ack.op_id not in lost
    assert _local_ids(a) == [lost[0], ack.op_id]
    # a client's retry of the other lost op is acknowledged; reading the log adds nothing
    [retry] = a.apply([_set(12, "w-lost")], ZARA)
    assert retry.duplicate
    a.catch_up_from(store.shared_log())
    assert _local_ids(a) == [lost[0], ack.op_id, "w-lost"]
    assert a.get("route.api", "production", "weight")["weight"]["value"] == 13
    b.catch_up_from(b.store.shared_log())
    assert a.records() == b.records()


def test_the_replicator_path_recovers_a_lost_commit_too(nodes, pg_dsn, monkeypatch):
    a, _ = nodes
    published = type(a.store)._before_commit

    def crash_after_publishing(self):
        published(self)
        raise RuntimeError("killed")

    monkeypatch.setattr(type(a.store), "_before_commit", crash_after_publishing)
    with pytest.raises(RuntimeError):
        a.apply([_set(21, "w-21")], ZARA)
    monkeypatch.undo()
    assert a.catch_up_from(a.store.shared_log()) == 1
    assert _local_ids(a) == ["w-21"]
    assert a.get("route.api", "production", "weight")["weight"]["value"] == 21


def test_a_write_the_shared_log_cannot_take_is_written_nowhere(tmp_path, postgres):
    engine = _node(tmp_path, "a", f"postgresql://conflux@127.0.0.1:{postgres.port}/nowhere")
    with engine:
        with pytest.raises(StoreError, match="same op ids"):
            engine.apply([_set(10, "w-1")], ZARA)
        assert _local_ids(engine) == []
        status = engine.replication_status()
        assert status["reachable"] is False and "nowhere" in status["error"]


def test_a_store_with_ops_of_its_own_does_not_join_a_shared_log_silently(tmp_path, postgres,
                                                                           pg_dsn):
    engine = _node(tmp_path, "a", None)
    engine.apply([_set(10, "w-1")], ZARA)
    engine.close()
    with open(tmp_path / "a" / ".conflux" / "config.toml", "a") as fh:
        fh.write(f'\n[store]\nurl = "{_url(postgres, pg_dsn)}"\n')
    with pytest.raises(StoreError, match="conflux store migrate"):
        Engine(str(tmp_path / "a"))


def test_compaction_is_refused_on_a_node_sharing_its_log(nodes):
    a, _ = nodes
    a.apply([_set(10, "w-1")], ZARA)
    before = a.records()
    with pytest.raises(InputError, match="sharing its op log"):
        a.compact()
    assert a.records() == before
