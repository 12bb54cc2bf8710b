"""The central promise: the same set of operations gives byte-identical state, in any order,
with duplicates, on either core twin, and the state is what the naive model in ``model.py``
computes from the set of operations.

Operations are first accepted at a few *origin* stores, which bind their context (the epoch a
write competes in, the candidates a review write supersedes, the tags a remove observed); the
origins exchange some of their logs in between, so writers really do see each other. Every
logged entry is then fed to fresh replicas in different orders, with duplicates, in batches of
random sizes."""

from __future__ import annotations

import random
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from conflux.actors import Actor
from conflux.engine import Engine
from conftest import EXAMPLE_SCHEMA, load_twin
import model

ENTITIES = ["service.a", "service.b", "route.r", "upstream.u"]
ENVS = ["production", "staging", "development"]
ACTORS = [Actor("zara"), Actor("ci", "pipeline"), Actor("as7", "autoscaler")]

_VALUES = {
    ("service", "image"): st.sampled_from(["img:1", "img:2", "img:3"]),
    ("service", "replicas"): st.integers(0, 9),
    ("service", "env_vars"): st.dictionaries(st.sampled_from("xyz"), st.integers(0, 3),
                                             max_size=2),
    # within the fields' constraints (a value breaking one is refused before accept)
    ("service", "tier"): st.sampled_from(["web", "batch"]),
    ("route", "path"): st.sampled_from(["/a", "/b", "/c"]),
    ("route", "weight"): st.integers(0, 100),
    ("route", "timeout"): st.sampled_from(["1s", "5s", "250ms", "1m"]),
    ("route", "service"): st.sampled_from(["service.a", "service.b", "service.gone"]),
    ("upstream", "healthcheck"): st.sampled_from(["/h", "/ok"]),
}
_ELEMENTS = {
    ("service", "ports"): st.integers(1, 6),
    ("service", "labels"): st.sampled_from(["x", "y", "z"]),
    ("upstream", "targets"): st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
}


@st.composite
def client_op(draw):
    entity = draw(st.sampled_from(ENTITIES))
    type_name = entity.partition(".")[0]
    env = draw(st.sampled_from(ENVS))
    fields = [f for (t, f) in list(_VALUES) + list(_ELEMENTS) if t == type_name]
    fname = draw(st.sampled_from(fields))
    kind = draw(st.sampled_from(["set", "set", "set", "unset", "delete", "add", "remove"]))
    op = {"entity_id": entity, "env": env}
    if kind == "delete":
        op["type"] = "delete_entity"
        return op
    op["field"] = fname
    if (type_name, fname) in _ELEMENTS:
        if kind == "remove" and fname != "labels":
            op["type"] = "remove_elements"
        elif kind == "unset" and fname != "labels":
            op["type"] = "unset_field"
            return op
        else:
            op["type"] = "add_elements"
        op["elements"] = draw(st.lists(_ELEMENTS[(type_name, fname)], min_size=1, max_size=2))
        return op
    if kind == "unset":
        op["type"] = "unset_field"
        return op
    op["type"] = "set_field"
    op["value"] = draw(_VALUES[(type_name, fname)])
    if draw(st.integers(0, 5)) == 0:
        op["override"] = True
    if fname == "tier" and draw(st.booleans()):
        op["base"] = []  # the writer saw nothing: a concurrent candidate
    return op


steps = st.lists(
    st.one_of(
        st.tuples(st.just("op"), st.integers(0, 2), st.integers(0, 2), client_op()),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("promote"), st.integers(0, 2), st.integers(0, 2)),
    ),
    min_size=1, max_size=30)


def _exchange(src, dst):
    dst.apply_entries([entry for _, entry in src.entries()])


def run_origins(tmp, script, twins):
    origins = [Engine.init(f"{tmp}/origin{i}", str(EXAMPLE_SCHEMA), core=load_twin(twins[i]),
                           sync=False) for i in range(3)]
    try:
        for step in script:
            if step[0] == "op":
                _, origin, who, op = step
                origins[origin].apply([op], ACTORS[who])
            elif step[0] == "sync":
                _, a, b = step
                if a != b:
                    _exchange(origins[a], origins[b])
            else:
                _, origin, who = step
                try:
                    origins[origin].promote("staging", "production", None, ACTORS[who])
                except Exception as exc:  # nothing differs: refused with an InputError
                    assert "nothing to promote" in str(exc)
        entries = {}
        for origin in origins:
            for _, entry in origin.entries():
                op = origin.core.decode_entry(entry)
                entries.setdefault(op.op_id, entry)
        return origins, list(entries.values())
    except BaseException:
        for origin in origins:
            origin.close()
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=steps, seed=st.integers(0, 2 ** 32 - 1))
def test_replicas_converge_to_identical_bytes(script, seed):
    with tempfile.TemporaryDirectory() as tmp:
        origins, entries = run_origins(tmp, script, ["c", "py", "c"])
        replicas = []
        try:
            rng = random.Random(seed)
            for r, twin in enumerate(["c", "py", "c"]):
                replica = Engine.init(f"{tmp}/replica{r}", str(EXAMPLE_SCHEMA),
                                      core=load_twin(twin), sync=False)
                replicas.append(replica)
                feed = entries + rng.sample(entries, k=len(entries) // 3)  # duplicates
                rng.shuffle(feed)
                while feed:
                    size = rng.randint(1, 7)
                    replica.apply_entries(feed[:size])
                    feed = feed[size:]
            # once every origin has every op, the origins agree with the replicas too
            for a in origins:
                for b in origins:
                    if a is not b:
                        _exchange(a, b)
            reference = replicas[0].records()
            for store in replicas[1:] + origins:
                assert store.records() == reference
            ops = [replicas[0].core.decode_entry(e) for e in entries]
            for env in ENVS:
                expected = model.resolve_state(replicas[0].schema, ops, env)
                for store in (replicas[0], replicas[1]):
                    assert store.state(env) == expected, env
        finally:
            for store in origins + replicas:
                store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=steps, seed=st.integers(0, 2 ** 32 - 1))
def test_compaction_keeps_the_resolved_state(script, seed):
    with tempfile.TemporaryDirectory() as tmp:
        origins, entries = run_origins(tmp, script, ["py", "c", "py"])
        try:
            for a in origins:
                for b in origins:
                    if a is not b:
                        _exchange(a, b)
            store = origins[0]
            before = {env: store.state(env) for env in ENVS}
            conflicts = store.conflicts()
            clock = store.status()["clock"]
            horizon = store.core.hlc_parse(clock) + 1 if clock else 1
            stats = store.compact(horizon)
            assert stats["records"] >= 0
            assert {env: store.state(env) for env in ENVS} == before
            assert store.conflicts() == conflicts
            # the other origins, compacted with the compiled twin or not, agree on state
            origins[1].compact(horizon)
            assert {env: origins[1].state(env) for env in ENVS} == before
        finally:
            for origin in origins:
                origin.close()


# --------------------------------------------------------------------------------------------
# Independent stores fed client-stamped operations.
#
# Here no store binds anything another store depends on: every op carries its own hlc and op
# id, and the context that would otherwise be bound from the accepting store (a review write's
# base, what an add or a remove observed). Unset and delete are then ordered by their hlc
# alone, so fresh stores fed the same ops in any order, with duplicates, hold the same records.
# Left out: overrides (an epoch is bound at accept, by design), promotions (they copy what the
# accepting store resolves), and unset on a set field (it removes what the accepting store
# holds, like a remove without observed).

_SET_FIELDS = {("service", "ports"), ("upstream", "targets")}


@st.composite
def client_stamped_ops(draw):
    count = draw(st.integers(1, 28))
    ops, adds = [], {}
    for i in range(count):
        entity = draw(st.sampled_from(ENTITIES))
        type_name = entity.partition(".")[0]
        env = draw(st.sampled_from(ENVS))
        op = {"entity_id": entity, "env": env, "op_id": f"op-{i}"}
        # offsets in ms, with a counter: hlc ties between ops happen
        stamp = (draw(st.integers(0, 30)), draw(st.integers(0, 2)))
        who = draw(st.integers(0, 2))
        kind = draw(st.sampled_from(["set", "set", "unset", "delete", "add", "remove"]))
        if kind == "delete":
            ops.append((stamp, who, {**op, "type": "delete_entity"}))
            continue
        fields = [f for (t, f) in list(_VALUES) + list(_ELEMENTS) if t == type_name]
        fname = draw(st.sampled_from(fields))
        op["field"] = fname
        if (type_name, fname) in _ELEMENTS:
            elems = draw(st.lists(_ELEMENTS[(type_name, fname)], min_size=1, max_size=2,
                                  unique=True))
            op["elements"] = elems
            seen = adds.setdefault((env, entity, fname), [])
            if (type_name, fname) in _SET_FIELDS:
                op["type"] = "remove_elements" if kind in ("remove", "unset") else \
                    "add_elements"
                # what the client saw: some of the earlier adds of the field
                op["observed"] = [draw(st.lists(st.sampled_from(seen), unique=True))
                                  if seen else [] for _ in elems]
            else:
                op["type"] = "add_elements"
            if op["type"] == "add_elements":
                seen.append(op["op_id"])
        elif kind == "unset":
            op["type"] = "unset_field"
        else:
            op["type"] = "set_field"
            op["value"] = draw(_VALUES[(type_name, fname)])
        if fname == "tier":
            earlier = [o["op_id"] for _, _, o in ops
                       if o.get("field") == "tier" and o["entity_id"] == entity
                       and o["env"] == env]
            op["base"] = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier \
                else []
        ops.append((stamp, who, op))
    return ops


def _stamped(ops, origin_ms):
    from conflux.kernel import _core_py
    return [(who, {**op, "hlc": _core_py.hlc_pack(origin_ms + ms, counter)})
            for (ms, counter), who, op in ops]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=client_stamped_ops(), seed=st.integers(0, 2 ** 32 - 1))
def test_independent_stores_fed_client_stamped_ops_agree(ops, seed):
    import time
    stamped = _stamped(ops, int(time.time() * 1000) - 60_000)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        stores = []
        try:
            for s, twin in enumerate(["c", "py", "c"]):
                store = Engine.init(f"{tmp}/store{s}", str(EXAMPLE_SCHEMA),
                                    core=load_twin(twin), sync=False)
                stores.append(store)
                feed = stamped + rng.sample(stamped, k=len(stamped) // 3)  # duplicates
                rng.shuffle(feed)
                while feed:
                    # a batch: consecutive ops of one actor, each op id once
                    who, batch = feed[0][0], []
                    while feed and feed[0][0] == who and len(batch) < rng.randint(1, 5) and \
                            feed[0][1]["op_id"] not in {o["op_id"] for o in batch}:
                        batch.append(feed.pop(0)[1])
                    store.apply(batch, ACTORS[who])
            reference = stores[0].records()
            for store in stores[1:]:
                assert store.records() == reference
            logged = [stores[0].core.decode_entry(e) for _, e in stores[0].entries()]
            for env in ENVS:
                expected = model.resolve_state(stores[0].schema, logged, env)
                for store in stores:
                    assert store.state(env) == expected, env
            # compaction past every op keeps what is read
            before = {env: stores[0].state(env) for env in ENVS}
            horizon = stores[0].core.hlc_parse(stores[0].status()["clock"]) + 1
            for store in stores[:2]:
                store.compact(horizon)
                assert {env: store.state(env) for env in ENVS} == before
        finally:
            for store in stores:
                store.close()
