"""The engine API on both core twins: writes, reads, environments, strategies, overrides,
review conflicts, sets, deletes, promotion, the log, idempotence, clocks and validation."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import time

import pytest

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.errors import (ClockSkewError, InputError, NotFound, PreconditionFailed,
                            SchemaError, ValidationError)
from conftest import AUTOSCALER, CI, EXAMPLE_SCHEMA, ZARA, add_op, remove_op, set_op


def value(engine, entity, field, env=None):
    return engine.get(entity, env, field)[field]["value"]


def seed(engine):
    engine.apply([set_op("service.checkout", "image", "shop:1"),
                  set_op("route.api", "service", "checkout"),
                  set_op("route.api", "weight", 50)], ZARA)


def test_set_and_get_with_defaults(engine):
    seed(engine)
    fields = engine.get("service.checkout")
    assert fields["image"]["value"] == "shop:1"
    assert fields["image"]["env"] == "production"
    assert fields["replicas"] == {"value": 1, "env": None, "default": True}
    assert value(engine, "route.api", "service") == "service.checkout"


def test_acks_carry_op_id_hlc_and_dense_sequence(engine):
    acks = engine.apply([set_op("service.a", "image", "x"), set_op("service.b", "image", "y")],
                        ZARA)
    assert [a.seq for a in acks] == [1, 2]
    assert acks[0].hlc < acks[1].hlc
    assert acks[0].op_id != acks[1].op_id
    more = engine.apply([set_op("service.a", "image", "z")], ZARA)
    assert more[0].seq == 3


def test_max_min_and_lww(engine):
    engine.apply([set_op("route.api", "weight", 50)], AUTOSCALER)
    engine.apply([set_op("route.api", "weight", 90)], AUTOSCALER)
    engine.apply([set_op("route.api", "weight", 70)], AUTOSCALER)
    assert value(engine, "route.api", "weight") == 90
    engine.apply([set_op("route.api", "timeout", "30s")], ZARA)
    engine.apply([set_op("route.api", "timeout", "1m")], ZARA)
    assert value(engine, "route.api", "timeout") == 30_000
    engine.apply([set_op("route.api", "path", "/a")], ZARA)
    engine.apply([set_op("route.api", "path", "/b")], CI)
    assert value(engine, "route.api", "path") == "/b"


def test_override_brings_max_down_and_later_writes_compete_in_its_epoch(engine):
    engine.apply([set_op("route.api", "weight", 90)], AUTOSCALER)
    engine.apply([set_op("route.api", "weight", 80, override=True)], ZARA)
    assert value(engine, "route.api", "weight") == 80
    engine.apply([set_op("route.api", "weight", 60)], AUTOSCALER)
    assert value(engine, "route.api", "weight") == 80
    engine.apply([set_op("route.api", "weight", 85)], AUTOSCALER)
    assert value(engine, "route.api", "weight") == 85


def test_unset_reverts_overlay_to_inherited_value(engine):
    engine.apply([set_op("service.s", "image", "base:1")], ZARA)
    engine.apply([set_op("service.s", "image", "stage:1", env="staging")], ZARA)
    assert engine.get("service.s", "development")["image"] == {
        **engine.get("service.s", "development")["image"], "value": "stage:1", "env": "staging"}
    engine.apply([{"type": "unset_field", "entity_id": "service.s", "field": "image",
                   "env": "staging"}], ZARA)
    assert engine.get("service.s", "staging")["image"]["env"] == "production"
    assert value(engine, "service.s", "image", "development") == "base:1"


def test_unset_on_max_field_hides_the_maximum_until_a_write_reaches_it(engine):
    engine.apply([set_op("service.s", "replicas", 9), set_op("service.s", "image", "i")], ZARA)
    unset = {"type": "unset_field", "entity_id": "service.s", "field": "replicas"}
    engine.apply([unset], ZARA)
    assert engine.get("service.s", field="replicas")["replicas"]["default"]
    engine.apply([set_op("service.s", "replicas", 2)], ZARA)
    assert engine.get("service.s", field="replicas")["replicas"]["default"]
    engine.apply([set_op("service.s", "replicas", 9)], ZARA)
    assert value(engine, "service.s", "replicas") == 9
    # an unset with --override opens an epoch: a reset, after which writes compete afresh
    engine.apply([{**unset, "override": True}], ZARA)
    engine.apply([set_op("service.s", "replicas", 2)], ZARA)
    assert value(engine, "service.s", "replicas") == 2


def _client_ops(engine, *ops):
    """Client-stamped ops: ``(offset seconds, op id, op dict)`` stamped a minute ago + offset."""
    t = engine.core.hlc_pack(int(time.time() * 1000) - 60_000, 0)
    return [{**op, "op_id": op_id, "hlc": t + (offset * 1000 << 16)}
            for offset, op_id, op in ops]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_stale_unset_loses_to_the_last_writer_whatever_the_order(engine, order):
    unset = {"type": "unset_field", "entity_id": "service.s", "field": "image"}
    ops = _client_ops(engine, (5, "w-new", set_op("service.s", "image", "new")),
                      (0, "u-stale", unset),
                      (1, "w-older", set_op("service.s", "image", "older")))
    for i in order:
        engine.apply([ops[i]], ZARA)
    assert value(engine, "service.s", "image") == "new"
    assert engine.get("service.s")["image"]["op_id"] == "w-new"


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_delete_is_ordered_by_hlc_and_a_later_write_revives(engine, order):
    delete = {"type": "delete_entity", "entity_id": "service.s"}
    ops = _client_ops(engine, (0, "w-image", set_op("service.s", "image", "before")),
                      (2, "d", delete),
                      (1, "w-stale", set_op("service.s", "tier", "web", base=[])),
                      (3, "w-after", add_op("service.s", "ports", 80, observed=[[]])))
    for i in order:
        engine.apply([ops[i]], ZARA)
    got = engine.get("service.s")
    assert got["ports"]["value"] == [80]
    assert "image" not in got and "tier" not in got


def test_review_conflict_then_resolve(engine):
    engine.apply([set_op("service.s", "tier", "web", base=[])], ZARA)
    engine.apply([set_op("service.s", "tier", "batch", base=[])], CI)
    [conflict] = engine.conflicts()
    assert conflict["entity_id"] == "service.s" and conflict["field"] == "tier"
    assert [c["value"] for c in conflict["candidates"]] == ["web", "batch"]
    assert conflict["effective"] == "batch"
    assert value(engine, "service.s", "tier") == "batch"
    engine.resolve("service.s", "tier", "web", ZARA, intent="agreed")
    assert engine.conflicts() == []
    assert value(engine, "service.s", "tier") == "web"
    with pytest.raises(InputError, match="no conflict"):
        engine.resolve("service.s", "tier", "web", ZARA)


def test_review_write_that_saw_the_value_supersedes_it(engine):
    engine.apply([set_op("service.s", "tier", "web")], ZARA)
    engine.apply([set_op("service.s", "tier", "batch")], CI)  # base bound: saw "web"
    assert engine.conflicts() == []
    assert value(engine, "service.s", "tier") == "batch"


def test_precondition_base_on_register(engine):
    [ack] = engine.apply([set_op("service.s", "image", "a")], ZARA)
    engine.apply([set_op("service.s", "image", "b", base=[ack.op_id])], ZARA)
    before = engine.records()
    with pytest.raises(PreconditionFailed):
        engine.apply([set_op("service.s", "image", "c", base=[ack.op_id])], CI)
    assert engine.records() == before


def test_or_set_add_wins_over_concurrent_remove(engine):
    engine.apply([add_op("service.s", "ports", 80, 443)], ZARA)
    assert value(engine, "service.s", "ports") == [80, 443]
    engine.apply([remove_op("service.s", "ports", 80)], ZARA)
    assert value(engine, "service.s", "ports") == [443]
    [added] = engine.apply([add_op("service.s", "ports", 443)], CI)
    # CI's re-add superseded the first add of 443: a remove naming only that one (no longer
    # live here, so dropped from its observed) leaves 443 in
    first_tag = [op for op in engine.log(entity="service.s")
                 if op.elements == [80, 443]][0].op_id
    engine.apply([remove_op("service.s", "ports", 443, observed=[[first_tag]])], ZARA)
    assert value(engine, "service.s", "ports") == [443]
    engine.apply([remove_op("service.s", "ports", 443)], ZARA)
    with pytest.raises(NotFound):
        engine.get("service.s", field="ports")
    assert added.seq > 0


def _second_store(engine, tmp_path):
    return Engine.init(str(tmp_path / "second"), str(EXAMPLE_SCHEMA), core=engine.core,
                       sync=False)


def _exchange(src, dst):
    dst.apply_entries([entry for _, entry in src.entries()])


def test_or_set_add_wins_across_stores(engine, tmp_path):
    other = _second_store(engine, tmp_path)
    try:
        engine.apply([add_op("service.s", "ports", 443)], ZARA)
        _exchange(engine, other)
        # concurrently: a remove here, a re-add there (which supersedes the first add)
        engine.apply([remove_op("service.s", "ports", 443)], ZARA)
        other.apply([add_op("service.s", "ports", 443)], CI)
        _exchange(engine, other)
        _exchange(other, engine)
        assert value(engine, "service.s", "ports") == value(other, "service.s", "ports") == [443]
        assert engine.records() == other.records()
        # a remove that saw the re-add removes it everywhere
        engine.apply([remove_op("service.s", "ports", 443)], ZARA)
        _exchange(engine, other)
        for store in (engine, other):
            with pytest.raises(NotFound):
                store.get("service.s", field="ports")
    finally:
        other.close()


def test_or_set_record_stays_small_under_a_reconcile_loop(engine):
    """An operator re-asserting the same targets every minute: one tag per element."""
    key = engine._key("production", "upstream.u", "targets")
    sizes = []
    for _ in range(50):
        engine.apply([add_op("upstream.u", "targets", "10.0.1.5", "10.0.1.6")], CI)
        with engine.store.read() as txn:
            sizes.append(len(txn.get(key, db=engine.store.dbs["state"])))
    assert max(sizes[1:]) - min(sizes[1:]) <= 2  # hex sequence numbers may grow by a digit
    assert sizes[-1] < 160
    assert value(engine, "upstream.u", "targets") == ["10.0.1.5", "10.0.1.6"]


def test_client_observed_names_only_what_this_store_holds(engine, tmp_path):
    other = _second_store(engine, tmp_path)
    try:
        engine.apply([add_op("service.s", "ports", 80)], ZARA)
        # a remove naming a made-up future op of the other store: that part is dropped
        forged = f"{other.node}-ffffffff"
        engine.apply([remove_op("service.s", "ports", 80, observed=[[forged]])], ZARA)
        assert value(engine, "service.s", "ports") == [80]
        [entry] = [op for op in engine.log(entity="service.s") if op.type == 4]
        assert entry.observed == [[]]
        other.apply([add_op("service.s", "ports", 8080)], CI)
        _exchange(other, engine)
        assert value(engine, "service.s", "ports") == [80, 8080]
    finally:
        other.close()


@pytest.mark.parametrize("op_id", ["0badf00d-1", "0badf00d-ffffffffffff"])
def test_client_op_ids_in_the_stores_own_form_are_refused(engine, op_id):
    with pytest.raises(ValidationError, match="reserved for the ids stores generate") as err:
        engine.apply([add_op("service.s", "ports", 80, op_id=op_id)], ZARA)
    assert err.value.field == "op_id"
    # look-alikes are plain ids, and fine
    for ok in ["0badf00d-01", "0BADF00D-1", "0badf00d-1x", "deploy-42"]:
        engine.apply([add_op("service.s", "ports", 80, op_id=ok)], ZARA)


def test_grow_set_refuses_removal(engine):
    engine.apply([add_op("service.s", "labels", "a", "b")], ZARA)
    with pytest.raises(ValidationError, match="grow"):
        engine.apply([remove_op("service.s", "labels", "a")], ZARA)
    assert value(engine, "service.s", "labels") == ["a", "b"]


def test_delete_entity_hides_it_and_a_later_write_revives(engine):
    seed(engine)
    engine.apply([{"type": "delete_entity", "entity_id": "service.checkout"}], ZARA)
    with pytest.raises(NotFound):
        engine.get("service.checkout")
    assert "service.checkout" not in engine.state()
    # the route's ref now dangles: a violation, in every environment inheriting it
    messages = {(v["env"], v["field"]) for v in engine.violations()}
    assert ("production", "service") in messages and ("staging", "service") in messages
    engine.apply([set_op("service.checkout", "replicas", 3)], ZARA)
    assert engine.get("service.checkout")["replicas"]["value"] == 3
    assert "image" not in engine.get("service.checkout")
    assert engine.violations() == []


def test_delete_in_overlay_stops_inheritance(engine):
    seed(engine)
    engine.apply([{"type": "delete_entity", "entity_id": "service.checkout",
                   "env": "staging"}], ZARA)
    assert engine.get("service.checkout")["image"]["value"] == "shop:1"
    for env in ("staging", "development"):
        with pytest.raises(NotFound):
            engine.get("service.checkout", env)


def test_violations_are_recorded_after_merge(engine):
    # what only the merged state can break: a required field, a ref to a missing entity
    engine.apply([set_op("route.r", "weight", 20), set_op("route.r", "path", "/r")], ZARA)
    found = {(v["env"], v["field"]): v["message"] for v in engine.violations("production")}
    assert list(found) == [("production", "service")]
    assert "required field 'service'" in found[("production", "service")]
    engine.apply([set_op("route.r", "service", "s")], ZARA)
    assert [v["field"] for v in engine.violations("production")] == ["service"]  # dangling
    engine.apply([set_op("service.s", "image", "x")], ZARA)
    assert engine.violations() == []


def test_promote_copies_resolved_values_as_one_operation(engine):
    seed(engine)
    engine.apply([set_op("service.checkout", "image", "shop:2", env="staging"),
                  set_op("service.checkout", "replicas", 1, env="staging"),
                  add_op("service.checkout", "ports", 8080, env="staging")], CI)
    engine.apply([set_op("service.checkout", "replicas", 5)], ZARA)
    ack = engine.promote("staging", "production", ["service.checkout"], ZARA,
                         intent="canary ok")
    fields = engine.get("service.checkout")
    assert fields["image"]["value"] == "shop:2"
    assert fields["replicas"]["value"] == 1  # a max field: promotion overrides
    assert fields["ports"]["value"] == [8080]
    [op] = engine.log(limit=1)
    assert op.op_id == ack.op_id and op.value["from"] == "staging"
    assert {c.field for c in op.children} == {"image", "replicas", "ports"}
    assert engine.blame("service.checkout")["image"]["intent"] == "canary ok"
    with pytest.raises(InputError, match="nothing to promote"):
        engine.promote("staging", "production", ["service.checkout"], ZARA)


def test_blame_and_log(engine):
    engine.apply([set_op("route.api", "weight", 50, intent="initial")], ZARA)
    engine.apply([set_op("route.api", "weight", 90, intent="load-response")], AUTOSCALER)
    blame = engine.blame("route.api")["weight"]
    assert (blame["actor"], blame["actor_class"], blame["intent"]) == (
        "autoscaler-7", "autoscaler", "load-response")
    assert blame["seq"] == 2
    log = engine.log()
    assert [op.seq for op in log] == [2, 1]
    assert log[0].prev is not None
    assert [op.seq for op in engine.log(actor="zara")] == [1]
    assert [op.seq for op in engine.log(actor="autoscaler:autoscaler-7")] == [2]
    assert [op.seq for op in engine.log(since=2)] == [2]
    assert [op.seq for op in engine.log(limit=1)] == [2]
    assert engine.log(entity="route.other") == []


def test_retry_with_same_op_id_is_acknowledged_once(engine):
    [first] = engine.apply([set_op("service.s", "image", "a", op_id="deploy-42")], CI)
    [again] = engine.apply([set_op("service.s", "image", "a", op_id="deploy-42")], CI)
    assert again.duplicate and again.seq == first.seq and again.hlc == first.hlc
    acks = engine.apply([set_op("service.s", "image", "b", op_id="x1"),
                         set_op("service.s", "image", "b", op_id="x1")], CI)
    assert acks[1].duplicate and acks[1].seq == acks[0].seq
    assert engine.status()["operations"] == 2


def test_client_hlc_accepted_and_far_future_refused(engine):
    now = engine.core.hlc_parse(engine.status()["clock"] or "hlc:1.0000")
    past = engine.core.hlc_pack(1_700_000_000_000, 7)
    [ack] = engine.apply([set_op("service.s", "image", "old", hlc="hlc:1700000000000.0007")],
                         CI)
    assert ack.hlc == past
    import time
    future = int(time.time() * 1000) + 60_000
    with pytest.raises(ClockSkewError, match="ahead"):
        engine.apply([set_op("service.s", "image", "f", hlc=f"hlc:{future}.0000")], CI)
    assert engine.status()["operations"] == 1
    assert now is not None


def test_bad_batch_is_refused_whole_naming_the_op(engine):
    seed(engine)
    before = engine.records()
    with pytest.raises(ValidationError, match="op 1: .*expected int"):
        engine.apply([set_op("route.api", "weight", 10), set_op("route.api", "weight", "x")],
                     ZARA)
    for bad, pattern in [
        (set_op("nothing.x", "a", 1), "unknown entity type"),
        (set_op("route.api", "colour", 1), "colour"),
        (set_op("route.api", "weight", 2 ** 70), "64-bit|range"),
        (set_op("route.api", "weight", 1, env="qa"), "unknown environment"),
        (add_op("route.api", "weight", 1), "set or grow"),
        ({"type": "frobnicate", "entity_id": "route.api"}, "not an operation type"),
        ({**set_op("route.api", "weight", 1), "surprise": 1}, "unknown key"),
        (set_op("route.api", "weight", None), "needs a value"),
        (set_op("service.s", "ports", [1]), "add_elements"),
        ({"type": "resolve", "entity_id": "route.api", "field": "path", "value": "/x"},
         "review"),
    ]:
        with pytest.raises(ValidationError, match=pattern):
            engine.apply([bad], ZARA)
    assert engine.records() == before
    assert engine.status()["operations"] == 3


def test_dry_run_writes_nothing_and_describes_the_change(engine):
    seed(engine)
    before = engine.records()
    [ack] = engine.apply([set_op("route.api", "weight", 70)], ZARA, dry_run=True)
    assert ack.change == {"type": "set_field", "env": "production", "entity_id": "route.api",
                          "field": "weight", "before": 50, "after": 70}
    assert engine.records() == before
    assert engine.status()["operations"] == 3


def test_compaction_refuses_ops_older_than_its_horizon(engine):
    engine.apply([add_op("service.s", "ports", 1)], ZARA)
    engine.apply([remove_op("service.s", "ports", 1)], ZARA)
    clock = engine.core.hlc_parse(engine.status()["clock"])
    stats = engine.compact(clock + 1)
    assert stats["deleted"] >= 1
    with pytest.raises(ValidationError, match="horizon"):
        engine.apply([set_op("service.s", "image", "x", hlc=clock - 5)], ZARA)


def test_map_grows_by_itself(tmp_path, core):
    from conflux.store import Store
    eng = Engine.init(str(tmp_path / "p"), str(EXAMPLE_SCHEMA), core=core, sync=False)
    eng.store.env.set_mapsize(1 << 20)  # 1 MiB: full after a few thousand ops
    before = eng.store.env.info()["map_size"]
    for batch in range(6):
        eng.apply([set_op(f"service.s{batch}-{i}", "image", "x" * 200) for i in range(1000)],
                  ZARA)
    assert eng.store.env.info()["map_size"] > before
    assert eng.status()["operations"] == 6000
    assert isinstance(eng.store, Store)
    eng.close()


def test_the_map_grows_before_a_write_fills_it(tmp_path, core, monkeypatch):
    eng = Engine.init(str(tmp_path / "p"), str(EXAMPLE_SCHEMA), core=core, sync=False)
    eng.store.env.set_mapsize(1 << 20)
    thrown_away = []
    real_begin = eng.store.env.begin

    def begin(**kw):  # count the write transactions a full map threw away
        txn = real_begin(**kw)
        real_abort = txn.abort

        def abort():
            if kw.get("write"):
                thrown_away.append(1)
            real_abort()
        return _TxnProxy(txn, abort)
    monkeypatch.setattr(eng.store, "env", _EnvProxy(eng.store.env, begin))
    for batch in range(12):  # each batch well under half the map
        eng.apply([set_op(f"service.s{batch}-{i}", "image", "x" * 200) for i in range(300)],
                  ZARA)
    assert eng.store.env.info()["map_size"] >= 4 << 20
    assert eng.status()["operations"] == 3600
    assert not thrown_away
    eng.close()


class _EnvProxy:
    def __init__(self, env, begin):
        self._env, self.begin = env, begin

    def __getattr__(self, name):
        return getattr(self._env, name)


class _TxnProxy:
    def __init__(self, txn, abort):
        self._txn, self.abort = txn, abort

    def __getattr__(self, name):
        return getattr(self._txn, name)


def test_init_refuses_bad_schema_and_existing_project(tmp_path, schema_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[entity.route]\nfields = [{ name = "w", type = "string", merge = "max" }]\n')
    with pytest.raises(SchemaError, match="route.*w|w.*route"):
        Engine.init(str(tmp_path / "p1"), str(bad))
    assert not (tmp_path / "p1" / ".conflux" / "store").exists()
    Engine.init(str(tmp_path / "p2"), schema_path).close()
    with pytest.raises(InputError, match="already"):
        Engine.init(str(tmp_path / "p2"), schema_path)


def _writer(path, who, n):
    eng = Engine(path)
    for i in range(n):
        eng.apply([set_op("route.api", "weight", i % 100),
                   set_op(f"service.{who}-{i}", "image", "x")], Actor(who, "pipeline"))
    eng.close()


def test_several_processes_share_one_store(tmp_path, schema_path, small_ranges):
    path = str(tmp_path / "p")
    Engine.init(path, schema_path).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, f"w{k}", 40)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    eng = Engine(path)
    assert eng.status()["operations"] == 240
    seqs = sorted(op.seq for op in eng.log())
    assert seqs == list(range(1, 241))
    hlcs = [op.hlc for op in sorted(eng.log(), key=lambda o: o.seq)]
    assert hlcs == sorted(hlcs) and len(set(hlcs)) == len(hlcs)  # one shared clock
    assert value(eng, "route.api", "weight") == 39
    # each process kept the entity index in step, whoever wrote last
    for entity in ("route.api", "service.w0-3", "service.w2-39", "service.w9-0"):
        assert _entity_log(eng, entity) == _scanned(eng, entity)
    eng.close()
    assert os.path.exists(os.path.join(path, ".conflux", "store", "data.mdb"))


SIMPLE_SCHEMA = """
[environments]
base = "prod"
overlays = [{ name = "dev", inherits = "prod" }]

[entity.svc]
fields = [
    { name = "replicas", type = "int",          merge = "max", min = 1, max = 10 },
    { name = "tier",     type = "string",       merge = "lww", one_of = ["web", "batch"] },
    { name = "ports",    type = "list<int>",    merge = "set", max = 1024 },
    { name = "note",     type = "string",       merge = "lww" },
]
"""


def _tightened(tmp_path, core, writes):
    """A project whose values were written before the schema gained its constraints
    (SIMPLE_SCHEMA): they stay, and are checked when their record changes."""
    loose = re.sub(r", (min|max|one_of) = [^}]*", " ", SIMPLE_SCHEMA)
    path = tmp_path / "schema.toml"
    path.write_text(loose)
    eng = Engine.init(str(tmp_path / "p"), str(path), core=core, sync=False)
    eng.apply(writes, ZARA)
    eng.close()
    (tmp_path / "p" / ".conflux" / "schema.toml").write_text(SIMPLE_SCHEMA)
    return Engine(str(tmp_path / "p"), core=core, sync=False)


def test_values_breaking_their_field_constraints_are_refused(tmp_path, core):
    path = tmp_path / "schema.toml"
    path.write_text(SIMPLE_SCHEMA)
    eng = Engine.init(str(tmp_path / "p"), str(path), core=core, sync=False)
    for ops, message in [
            ([set_op("svc.a", "replicas", 20, env="dev")],
             "svc.a.replicas: value 20 is above max 10"),
            ([set_op("svc.a", "replicas", 0)], "svc.a.replicas: value 0 is below min 1"),
            ([set_op("svc.a", "tier", "x")], "svc.a.tier: value 'x' is not one of 'web', "
                                             "'batch'"),
            ([add_op("svc.a", "ports", 80, 8080)], "svc.a.ports: element 8080 is above max "
                                                   "1024"),
            ([set_op("svc.a", "note", "fine"), set_op("svc.a", "replicas", 11)],
             "op 1: svc.a.replicas: value 11 is above max 10")]:
        with pytest.raises(ValidationError) as exc:
            eng.apply(ops, ZARA)
        assert exc.value.message == message
    assert eng.last_seq() == 0 and eng.records() == {}  # nothing was written
    eng.apply([remove_op("svc.a", "ports", 8080)], ZARA)  # a removal is never refused
    eng.close()


def test_violations_of_fields_checked_from_their_record(tmp_path, core):
    """In an environment nothing inherits from, a constrained field of a type with no
    cross-entity rules is checked straight from its new record."""
    eng = _tightened(tmp_path, core, [
        set_op("svc.a", "replicas", 20, env="dev"), set_op("svc.a", "tier", "x", env="dev"),
        add_op("svc.a", "ports", 80, 8080, env="dev"), add_op("svc.b", "ports", 2000)])
    assert eng.violations() == []  # checked when written again
    eng.apply([set_op("svc.a", "note", "anything", env="dev"),
               add_op("svc.a", "ports", 81, env="dev")], ZARA)
    found = {v["field"]: v["message"] for v in eng.violations("dev")}
    assert set(found) == {"ports"} and "8080" in found["ports"]
    eng.apply([remove_op("svc.a", "ports", 8080, env="dev")], ZARA)
    assert eng.violations() == []
    # the base environment is inherited by dev: checked the full way, in both
    eng.apply([add_op("svc.b", "ports", 80)], ZARA)
    assert {(v["env"], v["entity_id"]) for v in eng.violations()} == {
        ("prod", "svc.b"), ("dev", "svc.b")}
    eng.close()


def test_readers_in_other_threads_survive_the_map_growing(tmp_path, core):
    # LMDB remaps when its map grows, and a read transaction of another thread of the same
    # process must not be open meanwhile (a daemon worker reads in many threads)
    import threading
    eng = Engine.init(str(tmp_path / "p"), str(EXAMPLE_SCHEMA), core=core, sync=False)
    eng.store.env.set_mapsize(1 << 20)
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                eng.state()
                eng.log(limit=20)
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for batch in range(30):
            eng.apply([set_op(f"service.g{batch}-{i}", "image", "x" * 300)
                       for i in range(200)], ZARA)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert reads[0] > 0
    assert eng.store.env.info()["map_size"] >= 8 << 20
    assert eng.status()["operations"] == 6000
    eng.close()


# ------------------------------------------------------------------------------------------
# The per-entity index of the op log (conflux/store/lmdb_store.py: ``entities``)


def _entity_log(engine, entity, **kw):
    return [op.seq for op in engine.log(entity=entity, **kw)]


def _scanned(engine, entity, **kw):
    """What ``log --entity`` must answer, found by reading every logged op."""
    return [op.seq for op in engine.log(**kw)
            if op.entity == entity or any(c.entity == entity for c in op.children or ())]


@pytest.fixture
def small_ranges(monkeypatch):
    from conflux.store import Store

    monkeypatch.setattr(Store, "ENTITY_RANGE", 8)  # small commits wait for 8 logged ops
    monkeypatch.setattr(Store, "ENTITY_BATCH", 4)  # commits of 4 ops or more write at once


def test_entity_log_reads_only_the_ranges_naming_the_entity(engine, small_ranges):
    import random

    rng = random.Random(7)
    names = [f"service.s{i}" for i in range(12)]
    for round_ in range(40):
        size = rng.choice([1, 1, 1, 2, 3, 9, 20])  # single ops, small and large batches
        engine.apply([set_op(rng.choice(names), "image", f"img:{round_}.{i}")
                      for i in range(size)], ZARA)
        if round_ % 13 == 5:
            engine.apply([set_op(names[0], "image", f"stage:{round_}", env="staging")], CI)
            engine.promote("staging", "production", [names[0]], ZARA)
    store = engine.store
    with store.read() as txn:
        first, covered = store.entity_index_tail(txn)
        last = store.log_tail(txn)[0]
        never = store.entity_ranges(txn, "service.never")
    assert first == 1 and last - covered < store.ENTITY_RANGE and covered > last // 2
    assert never == [(covered + 1, 2 ** 64 - 1)]  # only what the index does not cover yet
    for entity in names + ["service.never"]:
        assert _entity_log(engine, entity) == _scanned(engine, entity)
        assert _entity_log(engine, entity, reverse=False) == \
            _scanned(engine, entity, reverse=False)
        assert _entity_log(engine, entity, start=last // 2) == \
            _scanned(engine, entity, start=last // 2)
        assert _entity_log(engine, entity, limit=3) == _scanned(engine, entity)[:3]
        assert _entity_log(engine, entity, since=last // 3) == \
            _scanned(engine, entity, since=last // 3)
    assert _entity_log(engine, "service.never") == []
    promoted = [op for op in engine.log(entity=names[0]) if op.children]
    assert promoted and all(c.entity == names[0] for op in promoted for c in op.children)


def test_entity_log_on_a_store_made_before_the_index(engine, small_ranges):
    names = [f"service.s{i}" for i in range(5)]
    for i in range(30):
        engine.apply([set_op(names[i % 5], "image", f"a{i}")], ZARA)
    store = engine.store

    def forget(txn):  # as a store from before the index: no meta, nothing indexed
        txn.delete(b"entities_from", db=store.dbs["meta"])
        txn.drop(store.dbs["entities"], delete=False)
    store.write(forget)
    engine._indexed = -(1 << 62)
    for entity in names:
        assert _entity_log(engine, entity) == _scanned(engine, entity)
    for i in range(40):
        engine.apply([set_op(names[i % 3], "image", f"b{i}")], ZARA)
    with store.read() as txn:
        assert store.entity_index_tail(txn)[0] == 31  # from its first commit since
    for entity in names:
        assert _entity_log(engine, entity) == _scanned(engine, entity)
        assert _entity_log(engine, entity, reverse=False) == \
            _scanned(engine, entity, reverse=False)


def test_entity_blobs_twins_agree(engine):
    from conflux.kernel import _core_py

    ops = engine.core.prepare_ops(
        [set_op(f"service.{'n' * (i % 40)}{i}", "image", "x") for i in range(300)],
        engine._table, "zara", "human", lambda raw, i: engine.prepare(raw, ZARA))
    for twin in {engine.core, _core_py}:  # the pure twin reads either twin's ops
        blobs = twin.entity_blobs(ops, 200)
        names = [n for blob in blobs for n in blob.split(b"\n")]
        assert sorted(names) == sorted({op.entity.encode() for op in ops})
        assert all(len(blob) <= 200 for blob in blobs)


def test_acks_tell_whether_the_op_won_and_the_value_after_it(engine):
    def outcome(ops, actor=ZARA):
        return [(a.applied, a.value) for a in engine.apply(ops, actor)]

    assert outcome([set_op("route.r", "weight", 80)], AUTOSCALER) == [(True, 80)]
    assert outcome([set_op("route.r", "weight", 70)], AUTOSCALER) == [(False, 80)]
    assert outcome([set_op("route.r", "weight", 60, override=True)]) == [(True, 60)]
    # an overlay's unset: the value it inherits now
    assert outcome([set_op("route.r", "weight", 90, env="staging")]) == [(True, 90)]
    assert outcome([{"type": "unset_field", "entity_id": "route.r", "field": "weight",
                     "env": "staging"}]) == [(True, 60)]
    # a last-writer-wins write stamped before the value it meets: recorded, not shown
    first = engine.apply([set_op("service.s", "image", "a")], ZARA)[0]
    older = first.hlc - (1000 << 16)
    assert outcome([set_op("service.s", "image", "b", hlc=older)]) == [(False, "a")]
    assert outcome([add_op("service.s", "ports", 443, 80)]) == [(True, [80, 443])]
    assert outcome([remove_op("service.s", "ports", 80)]) == [(True, [443])]
    assert outcome([{"type": "delete_entity", "entity_id": "service.s"}]) == [(True, None)]
    # a retry is told too; a batch over OUTCOME_OPS ops is not told (it stays fast)
    assert outcome([set_op("route.q", "weight", 5, op_id="q-1")] * 2) == [(True, 5)] * 2
    acks = engine.apply([set_op(f"route.b{i}", "weight", 1) for i in range(65)], ZARA)
    assert acks[0].applied is None and "applied" not in acks[0].to_dict(engine.core)
