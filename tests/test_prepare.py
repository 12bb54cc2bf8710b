"""The compiled core builds common operations itself (``prepare_ops``' fast path); the
engine's full validator is the reference. Both must give equal ops, and anything the fast
path is unsure of must reach the validator, so errors read the same on both twins."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.errors import ValidationError
from conftest import EXAMPLE_SCHEMA, load_twin

ATTRS = ("op_id", "type", "env", "entity", "field", "value", "vbytes", "elements", "ebytes",
         "actor", "actor_class", "intent", "hlc", "base", "observed", "override", "epoch",
         "bound", "prev", "signature", "key_id", "children", "kind", "num_tag", "key",
         "entity_epoch", "seq")
ACTOR = Actor("as7", "autoscaler")

values = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                   st.text(max_size=8), st.booleans(), st.none(), st.lists(st.integers(),
                                                                          max_size=2),
                   st.sampled_from(["\ud800", "30s", "web", "/x", "1h30m", "250ms", "0",
                                    "5m5m", "1s1m", "-5s", " 5s", "5", "ms", "1d2h3m4s5ms",
                                    "٣s", "99999999999999999d", ""]),
                   st.from_regex(r"\A[0-9]{1,4}(d|h|m|s|ms)([0-9]{1,3}(h|m|s|ms))?\Z"))
raw_ops = st.fixed_dictionaries(
    {"type": st.sampled_from(["set_field", "set_field", "unset_field", "bogus", 3]),
     "entity_id": st.sampled_from(["service.a", "route.r-1", "route.", "route", ".x",
                                   "service.a/b", "nothing.a", "service.ä", "service._x",
                                   "service.a.b", 7]),
     "field": st.sampled_from(["image", "replicas", "weight", "path", "tier", "timeout",
                               "ports", "nope", 1]),
     "value": values},
    optional={"env": st.sampled_from(["production", "staging", "", None, "qa", 0]),
              "intent": st.one_of(st.text(max_size=5), st.none(), st.just("x" * 5000),
                                  st.just(3)),
              "override": st.booleans(), "surprise": st.just(1),
              "op_id": st.one_of(st.text(max_size=6), st.none(), st.just(3),
                                 st.just("x" * 129), st.just("é" * 60),
                                 st.sampled_from(["deploy-42", "0123abcd-1f", "0123abcd-0",
                                                  "a b", "tab\t", "x" * 128]))})


scalars = st.one_of(st.integers(-2 ** 65, 2 ** 65), st.floats(allow_nan=True), st.booleans(),
                    st.none(), st.text(max_size=6), st.sampled_from(["\ud800", "30s", "1h"]))
json_like = st.recursive(
    scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.sampled_from(["\udc80", 1, None])),
                        inner, max_size=3)), max_leaves=12)
deep = {"a": 1}
for _ in range(70):
    deep = {"d": deep}
raw_adds = st.fixed_dictionaries(
    {"type": st.sampled_from(["add_elements", "add_elements", "set_field", "remove_elements"]),
     "entity_id": st.sampled_from(["service.a", "upstream.u", "route.r", "service.bad/x"]),
     "field": st.sampled_from(["ports", "labels", "targets", "env_vars", "image", "nope"]),
     "elements": st.one_of(st.lists(st.one_of(scalars, st.integers(0, 70000)), max_size=4),
                           scalars)},
    optional={"env": st.sampled_from(["staging", "qa"]), "intent": st.text(max_size=3),
              "value": st.just(1), "observed": st.just([["x"]])})
raw_maps = st.fixed_dictionaries(
    {"type": st.just("set_field"),
     "entity_id": st.sampled_from(["service.a", "route.r"]),
     "field": st.sampled_from(["env_vars", "env_vars", "ports", "replicas"]),
     "value": st.one_of(st.dictionaries(st.text(max_size=5), json_like, max_size=4),
                        json_like, st.just(deep), st.just({"k": [1, 2.5, {"x": None}]}))},
    optional={"env": st.sampled_from(["production", "development"])})


def _attrs(op):
    out = {}
    for a in ATTRS:
        v = getattr(op, a)
        out[a] = "nan" if isinstance(v, float) and math.isnan(v) else v
    return out


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    made = {twin: Engine.init(str(tmp_path_factory.mktemp(twin)), str(EXAMPLE_SCHEMA),
                              core=load_twin(twin), sync=False) for twin in ("c", "py")}
    yield made
    for eng in made.values():
        eng.close()


def _prepare(engine, raw):
    core = engine.core
    try:
        [op] = core.prepare_ops([raw], engine._table, ACTOR.id, ACTOR.cls,
                                lambda r, i: engine.prepare(r, ACTOR))
    except ValidationError as exc:
        return ("error", str(exc))
    return _attrs(op)


@settings(max_examples=600, deadline=None)
@given(raw=st.one_of(raw_ops, raw_adds, raw_maps))
def test_fast_path_builds_what_the_validator_builds(engines, raw):
    compiled = _prepare(engines["c"], raw)
    reference = _prepare(engines["py"], raw)
    try:
        direct = _attrs(engines["c"].prepare(raw, ACTOR))
    except ValidationError as exc:
        direct = ("error", str(exc))
    assert compiled == reference == direct


def test_fast_path_is_taken_for_common_ops(engines):
    """The fast path must really run: an op it builds never reaches the validator."""
    engine = engines["c"]
    calls = []

    def slow(raw, i):
        calls.append(i)
        return engine.prepare(raw, ACTOR)
    raws = [{"type": "set_field", "entity_id": "route.r", "field": "weight", "value": 5},
            {"type": "set_field", "entity_id": "service.s", "field": "image", "value": "i",
             "env": "staging", "intent": "why"},
            {"type": "set_field", "entity_id": "route.r", "field": "timeout", "value": "5s"},
            {"type": "set_field", "entity_id": "service.s", "field": "env_vars",
             "value": {"A": "1", "B": {"c": [1, 2.5, None, True]}}},
            {"type": "add_elements", "entity_id": "service.s", "field": "ports",
             "elements": [443, 80, 443]}]
    ops = engine.core.prepare_ops(raws, engine._table, ACTOR.id, ACTOR.cls, slow)
    assert calls == []
    assert [op.value for op in ops[:4]] == [5, "i", 5000, raws[3]["value"]]
    assert ops[4].elements == [80, 443] and ops[4].ebytes == [b"\x50", b"\xcd\x01\xbb"]


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(
    st.from_regex(r"\A[0-9]{1,17}(d|h|m|s|ms)([0-9]{1,3}(d|h|m|s|ms)){0,3}\Z"),
    st.sampled_from(["0", "", "ms", "5", "-5s", " 5s", "5s ", "٣s", "5M", "1h30m"]),
    st.integers(-5, 2 ** 64), st.floats()))
def test_durations_parse_alike(engines, value):
    raw = {"type": "set_field", "entity_id": "route.r", "field": "timeout", "value": value}
    assert _prepare(engines["c"], raw) == _prepare(engines["py"], raw)


def test_fast_path_refuses_nothing_it_should_not_and_passes_no_breach(tmp_path):
    """A value (or element) within its field's constraints is built by the fast path; one
    breaking them reaches the validator, which refuses it, on both twins alike."""
    schema = tmp_path / "schema.toml"
    schema.write_text(EXAMPLE_SCHEMA.read_text().replace(
        '{ name = "ports",    type = "list<int>",    merge = "set" }',
        '{ name = "ports",    type = "list<int>",    merge = "set", min = 1, max = 65535 }'))
    for twin in ("c", "py"):
        engine = Engine.init(str(tmp_path / twin), str(schema), core=load_twin(twin),
                             sync=False)
        calls = []

        def slow(raw, i):
            calls.append(i)
            return engine.prepare(raw, ACTOR)
        good = [{"type": "set_field", "entity_id": "route.r", "field": "weight", "value": 100},
                {"type": "set_field", "entity_id": "route.r", "field": "path", "value": "/a"},
                {"type": "set_field", "entity_id": "service.s", "field": "tier",
                 "value": "web"},
                {"type": "add_elements", "entity_id": "service.s", "field": "ports",
                 "elements": [1, 65535]}]
        engine.core.prepare_ops(good, engine._table, ACTOR.id, ACTOR.cls, slow)
        assert calls == ([] if twin == "c" else [0, 1, 2, 3])
        for raw, message in [
                ({**good[0], "value": 101}, "route.r.weight: value 101 is above max 100"),
                ({**good[0], "value": -1}, "route.r.weight: value -1 is below min 0"),
                ({**good[1], "value": "a"}, "route.r.path: value 'a' does not match pattern "
                                            "'^/'"),
                ({**good[2], "value": "gpu"}, "service.s.tier: value 'gpu' is not one of "
                                              "'web', 'batch'"),
                ({**good[3], "elements": [80, 0]}, "service.s.ports: element 0 is below min 1")]:
            with pytest.raises(ValidationError) as exc:
                engine.core.prepare_ops([raw], engine._table, ACTOR.id, ACTOR.cls, slow)
            assert exc.value.message == message
        engine.close()
