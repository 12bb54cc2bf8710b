"""Hypothesis against every parser entry: REST bodies (JSON and msgpack, through the real
Falcon app over a real store), the six import formats' readers, and the project's files
(``schema.toml``, ``config.toml``, ``api-keys.toml``, ``rbac.toml``, ``webhooks.toml``,
``keys.json``). Whatever comes in, nothing but Conflux's own errors (``ConfluxError``) may
come out, and the API answers no 5xx.

Generated structures stay below 50 levels deep: how deep a document may nest is bounded on
its own (docs/security.md, Limits), and tested there.
"""

from __future__ import annotations

import json
import string

import msgpack
import pytest
import tomli_w
from falcon import testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conflux import formats
from conflux.api import create_app
from conflux.api.access import Access
from conflux.api.bodies import body_schemas, check
from conflux.auth import load_credentials
from conflux.engine import Engine
from conflux.engine import Settings
from conflux.errors import ConfluxError
from conflux.rbac import Rbac
from conflux.schema import load_schema
from conflux.signing import Registry
from conflux.webhooks import load_webhooks
from conftest import EXAMPLE_SCHEMA
from test_daemon import key, make_project

FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

# Values as JSON and msgpack carry them, at most a few levels deep.
_names = st.sampled_from(["type", "entity_id", "field", "value", "elements", "env", "intent",
                          "op_id", "hlc", "base", "observed", "override", "signature", "key_id",
                          "ops", "from", "to", "entities", "message", "environments", "envs",
                          "force", "push", "route.a", "weight", "ports", "tier", "staging"])
_scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
            | st.floats() | st.text(max_size=40)
            | st.sampled_from(["set_field", "unset_field", "add_elements", "remove_elements",
                               "delete_entity", "resolve", "route.api", "service.cart",
                               "weight", "ports", "tier", "production", "staging",
                               "hlc:1.0", "30s"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_names | st.text(max_size=8), inner, max_size=6),
                       max_leaves=30)
_ops = st.fixed_dictionaries(
    {"type": st.sampled_from(["set_field", "unset_field", "add_elements", "remove_elements",
                              "delete_entity", "resolve", "promote", "x"])},
    optional={"entity_id": st.sampled_from(["route.api", "service.cart", "upstream.u",
                                            "route.", "x.y", "route.a" * 50]) | st.text(),
              "field": st.sampled_from(["weight", "ports", "tier", "path", "timeout",
                                        "labels", "env_vars", "nope"]) | st.text(max_size=10),
              "value": _values, "elements": _values, "env": _values, "intent": _values,
              "op_id": _values, "hlc": _values, "base": _values, "observed": _values,
              "override": _values, "signature": _values, "key_id": _values})
_bodies = _ops | st.fixed_dictionaries({"ops": st.lists(_ops, max_size=4)}) | _values


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("fuzz"))
    engine = Engine(project)
    app = create_app(engine, Access.load(f"{project}/.conflux"))
    yield testing.TestClient(app)
    engine.close()


_ROUTES = ["/v1/ops", "/v1/promote", "/v1/conflicts/resolve", "/v1/milestones"]


@pytest.mark.parametrize("route", _ROUTES)
@pytest.mark.parametrize("kind", ["json", "msgpack"])
@FUZZ
@given(body=_bodies, dry_run=st.booleans())
def test_rest_bodies_never_escape_as_a_server_error(client, route, kind, body, dry_run):
    if kind == "json":
        data = json.dumps(body, allow_nan=True).encode()
    else:
        try:
            data = msgpack.packb(body, use_bin_type=True)
        except OverflowError:  # msgpack has no integers past 64 bits: JSON's case
            return
    query = "dry_run=true" if dry_run and route == "/v1/ops" else None
    r = client.simulate_post(route, body=data, query_string=query,
                             headers={**key("zara"), "Content-Type": f"application/{kind}"})
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert set(r.json["error"]) <= {"code", "message", "field"}, r.json


_common_ops = st.fixed_dictionaries(
    {"type": st.sampled_from(["set_field", "add_elements"]),
     "entity_id": st.sampled_from(["route.a", "service.b", "route.-x", "service." + "n" * 201]),
     "field": st.sampled_from(["weight", "ports", "tier", "path", "labels", "env_vars"])},
    optional={"value": _values, "elements": st.lists(_values, max_size=3),
              "env": st.sampled_from([None, "", "staging", "nope", 5]),
              "intent": st.sampled_from([None, "", "why", "x" * 4097, 1])})


@FUZZ
@given(op=_common_ops)
@example(op={"type": "set_field", "entity_id": "route.a", "field": "weight", "value": 5,
             "env": ""})
@example(op={"type": "set_field", "entity_id": "route.a", "field": "weight", "value": 5,
             "env": None})
@example(op={"type": "add_elements", "entity_id": "service.b", "field": "ports",
             "elements": [80], "intent": None})
def test_a_batch_holds_each_op_to_the_body_schema(client, op):
    # ops of the common shape skip the Python schema check in a batch (the compiled core
    # builds them as they are): one the schema refuses must still be refused, as it is alone
    try:
        check("Op", op)
    except ConfluxError:
        refused = True
    else:
        refused = False
    r = client.simulate_post("/v1/ops", body=json.dumps({"ops": [op]}).encode(),
                             query_string="dry_run=true",
                             headers={**key("zara"), "Content-Type": "application/json"})
    if refused:
        assert r.status_code == 422, (op, r.status_code, r.text)


@FUZZ
@given(data=st.binary(max_size=200), kind=st.sampled_from(["json", "msgpack"]))
@example(data=b"\xc1", kind="msgpack")  # a byte msgpack never uses
@example(data=b"\xd4\x01\x00", kind="msgpack")  # an extension type
@example(data=b"\x81\xc4\x01k\x01", kind="msgpack")  # a bytes key
@example(data=b"\x81\x01\x01", kind="msgpack")  # an integer key
@example(data=b'{"type": NaN}', kind="json")
@example(data=b'"\\ud800"', kind="json")
def test_rest_raw_bytes_never_escape_as_a_server_error(client, data, kind):
    r = client.simulate_post("/v1/ops", body=data,
                             headers={**key("zara"), "Content-Type": f"application/{kind}"})
    assert r.status_code < 500, (r.status_code, r.text)


_GENERIC = body_schemas()


@FUZZ
@given(body=_bodies, name=st.sampled_from(sorted(_GENERIC)))
def test_the_body_check_agrees_with_a_reference_validator(body, name):
    """``check`` (written out, the daemon has no validator among its dependencies) says what
    a JSON Schema reference implementation says of the same body and schema."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    document = json.loads(json.dumps(_GENERIC).replace("#/components/schemas/",
                                                       "#/definitions/"))
    reference = jsonschema_rs.Draft4Validator({"$ref": f"#/definitions/{name}",
                                               "definitions": document})
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        return  # NaN and infinities are not JSON: the reference cannot say
    try:
        check(name, body)
        ours = True
    except ConfluxError:
        ours = False
    assert ours == reference.is_valid(body), (name, body)


# --------------------------------------------------------------------------------------------
# the import formats

_READERS = ["yaml", "json", "toml", "kdl", "jsonnet", "cue"]
_SAMPLES = {
    "yaml": "name: a\nreplicas: 2\nports: [80, 443]\nenv_vars: {A: b}\n---\nname: b\n",
    "json": '[{"name": "a", "replicas": 2, "ports": [80, 443], "env_vars": {"A": "b"}}]',
    "toml": '[[entity]]\nname = "a"\nreplicas = 2\nports = [80, 443]\n[entity.env_vars]\nA = "b"\n',
    "kdl": 'entity {\n  name "a"\n  replicas 2\n  ports 80 443\n}\n',
    "jsonnet": 'local r = 2; {name: "a", replicas: r, ports: [80, 443]}',
    "cue": 'name: "a"\nreplicas: 2\nports: [80, 443]\n',
}
_ALPHABET = string.printable + "{}[]:,\"'-#&*!|>%@`\\\u00e9\u2028\x00"


def _mutated(sample: str):
    """The sample with a few characters inserted, deleted or replaced: text that is nearly a
    document, which gets further into a parser than random bytes do."""
    edits = st.lists(st.tuples(st.integers(0, len(sample)), st.integers(0, 3),
                               st.text(_ALPHABET, max_size=6)), max_size=4)

    def apply(steps):
        text = sample
        for at, drop, insert in steps:
            at = min(at, len(text))
            text = text[:at] + insert + text[at + drop:]
        return text
    return edits.map(apply)


def _reader_input(name):
    return st.one_of(_mutated(_SAMPLES[name]).map(str.encode),
                     st.text(_ALPHABET, max_size=80).map(str.encode),
                     st.binary(max_size=80))


def _load_or_refuse(name, data):
    serializer = formats.for_name(name)
    try:
        docs = serializer.load(data, f"fuzz.{serializer.extensions[0].lstrip('.')}")
    except ConfluxError:
        return
    assert isinstance(docs, list)


@pytest.mark.parametrize("name", ["yaml", "json", "toml", "kdl"])
@FUZZ
@given(data=st.data())
def test_format_readers_raise_only_conflux_errors(name, data):
    _load_or_refuse(name, data.draw(_reader_input(name)))


# Jsonnet and CUE evaluate programs (CUE in another process): fewer examples
@pytest.mark.parametrize("name", ["jsonnet", "cue"])
@settings(FUZZ, max_examples=3)
@given(data=st.data())
def test_evaluated_format_readers_raise_only_conflux_errors(name, data):
    _load_or_refuse(name, data.draw(_reader_input(name)))


# --------------------------------------------------------------------------------------------
# the project's files

_toml_keys = st.sampled_from([
    "name", "version", "environments", "base", "overlays", "inherits", "entity", "fields",
    "type", "merge", "default", "min", "max", "pattern", "one_of", "required", "description",
    "clock", "max_clock_offset_ms", "compaction", "stability_window_s", "signatures",
    "require", "milestones", "format", "key", "hash", "key_hash", "actor", "actor_id", "class",
    "actor_class", "certificate", "subject", "keys", "role", "roles", "permissions",
    "actions", "resource", "assign", "assignment", "actor_pattern", "webhook", "url",
    "secret", "events", "filter", "entity_types", "route", "service", "production", "staging",
    "string", "int", "lww", "max", "set", "ref<service>", "list<int>", "read", "write", "*"])
_toml_scalars = (st.booleans() | st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1)
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
                 | _toml_keys)
_toml_values = st.recursive(
    _toml_scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(_toml_keys, inner, max_size=5), max_leaves=25)
_toml_docs = st.dictionaries(_toml_keys, _toml_values, max_size=6)


def _toml_text(doc) -> bytes:
    try:
        return tomli_w.dumps(doc).encode()
    except (TypeError, ValueError):
        return b""


_file_input = st.one_of(_toml_docs.map(_toml_text), st.text(_ALPHABET, max_size=120)
                        .map(str.encode), st.binary(max_size=80))


def _schema():
    return load_schema(EXAMPLE_SCHEMA)


_LOADERS = {
    "schema.toml": load_schema,
    "config.toml": Settings.load,
    "api-keys.toml": load_credentials,
    "rbac.toml": lambda path: Rbac.load(path, schema=_schema()),
    "webhooks.toml": lambda path: load_webhooks(path, schema=_schema()),
    "keys.json": lambda path: _use_keys(Registry(path).refresh()),
}


def _use_keys(registry):
    """A registry is read when a signature is checked: what it holds must be usable then."""
    for key_id in registry.keys:
        found = registry.get(key_id)
        found.valid_at(0)
        found.verify_key()


# found by this test: a registry entry with a number for its date, or a key that is not base64,
# loaded, then failed with a TypeError when a signature was checked
_BAD_KEYS = [b'{"keys": [{"key_id": "k", "actor": "a", "public_key": "zz", "created": 5}]}',
             b'{"keys": [{"key_id": "k", "actor": "a", "public_key": "zz", '
             b'"created": "2024-01-01T00:00:00.000Z"}]}']


@pytest.mark.parametrize("content", _BAD_KEYS)
def test_a_key_registry_entry_that_cannot_be_used_is_refused_when_read(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(ConfluxError, match="not a Conflux key registry"):
        _LOADERS["keys.json"](str(path))


@pytest.mark.parametrize("name", sorted(_LOADERS))
@FUZZ
@given(data=st.data())
def test_project_files_raise_only_conflux_errors(tmp_path_factory, name, data):
    if name == "keys.json":
        keys = st.fixed_dictionaries({"keys": st.lists(st.dictionaries(
            st.sampled_from(["key_id", "actor", "public_key", "created", "revoked", "x"]),
            _values, max_size=6), max_size=3)}) | _values
        content = data.draw(st.one_of(keys.map(lambda v: json.dumps(v).encode()),
                                      st.binary(max_size=60)))
    else:
        content = data.draw(_file_input)
    path = tmp_path_factory.mktemp("files") / name
    path.write_bytes(content)
    try:
        _LOADERS[name](str(path))
    except ConfluxError:
        pass
