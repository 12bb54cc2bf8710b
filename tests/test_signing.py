"""Signed operations, the key registry and the audit trail (conflux.signing, conflux.audit,
'conflux keys', 'conflux audit', 'conflux set --sign-key', the daemon)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest
from nacl.signing import SigningKey

from conflux.actors import Actor
from conflux.audit import export_lines, summary
from conflux.audit_verify import verify
from conflux.engine import Engine
from conflux.errors import InputError
from conflux.signing import (Registry, SignatureRefused, canonical, load_private_key, op_content,
                             sign_op, write_private_key)

from conftest import EXAMPLE_SCHEMA, run_cli

ZARA = Actor("zara", "human")
CI = Actor("ci-pipeline", "pipeline")
BOT = Actor("autoscaler-7", "autoscaler")


# ---------------------------------------------------------------------------------------------
# the canonical encoding


def test_canonical_encoding_is_one_per_content():
    assert canonical({"b": 1, "a": [1.0, "x"]}) == canonical({"a": [1.0, "x"], "b": 1})
    assert canonical(1.0) == bytes.fromhex("cb3ff0000000000000")  # always 64-bit
    assert canonical(5) == b"\x05" and canonical(-1) == b"\xff" and canonical(300) == b"\xcd\x01\x2c"
    assert canonical({"é": 1, "z": 2}) == bytes.fromhex("82") + canonical("z") + b"\x02" + \
        canonical("é") + b"\x01"  # keys by UTF-8 bytes: 'z' (7a) before 'é' (c3 a9)
    for bad in (float("nan"), float("inf"), b"raw", {1: "x"}, 1 << 64, {"k": object()}):
        with pytest.raises(InputError):
            canonical(bad)


from hypothesis import given, settings, strategies as st  # noqa: E402

_flat = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(_flat, st.lists(_flat, max_size=4),
                       st.dictionaries(st.text(max_size=3), _flat, max_size=3)),
       kind=st.sampled_from(["set_field", "add_elements"]))
def test_op_content_is_the_canonical_encoding(value, kind):
    """The fast path (msgpack's own encoding, without maps) gives the canonical bytes."""
    if kind == "add_elements" and not isinstance(value, list):
        value = [value]
    expected_value = value
    if kind == "add_elements":
        unique = {canonical(v): v for v in value}
        expected_value = [unique[k] for k in sorted(unique)]
    expected = canonical(["conflux-op/1", "o", kind, "production", "service.a", "f",
                          expected_value, "zara", "", 7, None, False])
    assert op_content(op_id="o", type=kind, env="production", entity_id="service.a",
                      field="f", value=value, actor="zara", intent="", hlc=7, base=None,
                      override=False) == expected


def test_op_content_normalises_sets_and_base():
    common = dict(op_id="o1", type="add_elements", env="production", entity_id="service.a",
                  field="ports", actor="zara", intent="", hlc=5 << 16, override=False)
    assert op_content(value=[443, 80, 443], base=None, **common) == \
        op_content(value=[80, 443], base=None, **common)
    assert op_content(value=[80], base=["b", "a", "b"], **common) == \
        op_content(value=[80], base=["a", "b"], **common)
    assert op_content(value=[80], base=None, **common) != \
        op_content(value=[80], base=None, **{**common, "op_id": "o2"})


# ---------------------------------------------------------------------------------------------
# keys and the registry


def test_key_file_is_private_and_never_overwritten(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = SigningKey.generate()
    path = str(tmp_path / "k.pem")
    write_private_key(path, bytes(key))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(InputError, match="never overwritten"):
        write_private_key(path, bytes(key))
    assert bytes(load_private_key(path)) == bytes(key)
    # an ordinary PKCS#8 key, as OpenSSL and other libraries read it
    loaded = serialization.load_pem_private_key(open(path, "rb").read(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert loaded.public_key().public_bytes_raw() == bytes(key.verify_key)


def test_registry_register_revoke(tmp_path):
    registry = Registry(str(tmp_path / "keys.json"))
    pub = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    key = registry.register("zara-1", "human:zara", pub)
    assert key.created.endswith("Z") and key.revoked is None
    with pytest.raises(InputError, match="already registered"):
        registry.register("zara-1", "human:zara", pub)
    with pytest.raises(InputError, match="already registered as 'zara-1'"):
        registry.register("zara-2", "human:zara", pub)
    with pytest.raises(InputError, match="32 bytes"):
        registry.register("short", "zara", base64.b64encode(b"x" * 5).decode())
    with pytest.raises(InputError, match="not base64"):
        registry.register("bad", "zara", "!!!")
    revoked = registry.revoke("zara-1", "laptop lost")
    assert revoked.revoked and revoked.reason == "laptop lost"
    again = Registry(str(tmp_path / "keys.json")).get("zara-1")
    assert again.revoked == revoked.revoked
    assert json.load(open(tmp_path / "keys.json"))["keys"][0]["key_id"] == "zara-1"


# ---------------------------------------------------------------------------------------------
# the engine refuses forgeries


@pytest.fixture
def signed(tmp_path, core):
    engine = Engine.init(str(tmp_path / "project"), str(EXAMPLE_SCHEMA), core=core)
    keys = {name: SigningKey.generate() for name in ("zara", "ci")}
    engine.signatures.register("zara-1", "human:zara",
                               base64.b64encode(bytes(keys["zara"].verify_key)).decode())
    engine.signatures.register("ci-1", "ci-pipeline",
                               base64.b64encode(bytes(keys["ci"].verify_key)).decode())
    engine.keys = keys
    yield engine
    engine.close()


def wire(engine, entity, field, value, *, op_id, key="zara", key_id="zara-1", actor=ZARA,
         **extra):
    op = {"type": "set_field", "entity_id": entity, "field": field, "value": value,
          "env": "production", "op_id": op_id, "hlc": engine.next_hlc(), **extra}
    return sign_op(op, engine.keys[key], key_id, actor.id)


def test_a_signed_op_is_accepted_and_logged_with_its_signature(signed):
    op = wire(signed, "route.api", "weight", 50, op_id="w-1", intent="load")
    [ack] = signed.apply([op], ZARA)
    [logged] = signed.log(limit=1)
    assert logged.signature == op["signature"] and logged.key_id == "zara-1"
    assert signed.op_dict(logged)["signature"] == op["signature"]
    assert not ack.duplicate


def test_the_engine_completes_and_signs_a_client_op(signed):
    """What a signature covers (environment, op id, HLC, a review field's base) is filled in
    by the engine, for every client alike; a key outside the registry is refused."""
    signed.apply([{"type": "set_field", "entity_id": "service.api", "field": "tier",
                   "value": "web"}], ZARA)
    op = signed.sign({"type": "set_field", "entity_id": "service.api", "field": "tier",
                      "value": "batch"}, ZARA, signed.keys["zara"])
    assert op["env"] == "production" and op["op_id"].startswith("cli-")
    assert op["base"] == [signed.log(limit=1)[0].op_id] and op["key_id"] == "zara-1"
    [ack] = signed.apply([op], ZARA)
    assert signed.get("service.api")["tier"]["value"] == "batch" and ack.applied
    again = signed.sign({"type": "set_field", "entity_id": "service.api", "field": "tier",
                         "value": "batch", "op_id": op["op_id"]}, ZARA, signed.keys["zara"])
    assert (again["hlc"], again["signature"]) == (op["hlc"], op["signature"])  # a retry
    assert signed.apply([again], ZARA)[0].duplicate
    with pytest.raises(InputError, match="not in the registry"):
        signed.sign({"type": "set_field", "entity_id": "route.api", "field": "weight",
                     "value": 1}, ZARA, SigningKey.generate())


@pytest.mark.parametrize("forge,reason", [
    (lambda e, op: op.update(value=51), "does not match"),                       # tampered
    (lambda e, op: op.update(op_id="w-2"), "does not match"),                    # swapped id
    (lambda e, op: op.update(key_id="nobody"), "unknown key 'nobody'"),
    (lambda e, op: op.update(signature="c2lnbg=="), "does not match"),
    (lambda e, op: op.update(hlc=op["hlc"] + 1), "does not match"),
    (lambda e, op: op.update(intent="other"), "does not match"),
])
def test_forged_operations_are_refused_and_nothing_is_written(signed, forge, reason):
    op = wire(signed, "route.api", "weight", 50, op_id="w-1")
    forge(signed, op)
    with pytest.raises(SignatureRefused, match=reason):
        signed.apply([op], ZARA)
    assert signed.last_seq() == 0


def test_replay_of_a_signature_on_a_new_op_is_refused(signed):
    first = wire(signed, "route.api", "weight", 50, op_id="w-1")
    signed.apply([first], ZARA)
    replay = dict(first, op_id="w-9", value=99)
    with pytest.raises(SignatureRefused, match="does not match"):
        signed.apply([replay], ZARA)
    # the same op again is a retry: acknowledged, not applied twice
    [ack] = signed.apply([first], ZARA)
    assert ack.duplicate and signed.last_seq() == 1


def test_revoked_and_other_actors_keys_are_refused(signed):
    other = wire(signed, "route.api", "weight", 50, op_id="w-1", key="ci", key_id="ci-1")
    with pytest.raises(SignatureRefused, match="belongs to ci-pipeline, not human:zara"):
        signed.apply([other], ZARA)
    signed.signatures.revoke("zara-1", "rotated")
    revoked = wire(signed, "route.api", "weight", 50, op_id="w-2")
    with pytest.raises(SignatureRefused, match="revoked"):
        signed.apply([revoked], ZARA)
    # one bad op refuses the whole batch
    good = wire(signed, "service.a", "image", "a:1", op_id="c-1", key="ci", key_id="ci-1",
                actor=CI)
    bad = dict(wire(signed, "service.a", "replicas", 2, op_id="c-2", key="ci", key_id="ci-1",
                    actor=CI), value=3)
    with pytest.raises(SignatureRefused, match="op 1: signature refused"):
        signed.apply([good, bad], CI)
    assert signed.last_seq() == 0


def test_required_signatures_per_actor_class(signed, tmp_path):
    config = os.path.join(signed.root, "config.toml")
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:  # the line 'conflux init' writes, switched on
        handle.write(text.replace('# require = ["human", "pipeline"]',
                                  'require = ["human", "pipeline"]'))
    signed.close()
    engine = Engine(os.path.join(tmp_path, "project"), core=signed.core)
    engine.keys = signed.keys
    unsigned = {"type": "set_field", "entity_id": "route.api", "field": "weight", "value": 5}
    with pytest.raises(SignatureRefused, match="human actors must be signed"):
        engine.apply([unsigned], ZARA)
    engine.apply([unsigned], BOT)  # autoscalers need not sign
    engine.apply([wire(engine, "route.api", "weight", 9, op_id="w-1")], ZARA)
    assert engine.last_seq() == 2
    engine.close()


def test_values_are_signed_in_normal_form(signed):
    op = wire(signed, "route.api", "timeout", "30s", op_id="t-1")  # logged as 30000 ms
    with pytest.raises(SignatureRefused, match="normal form"):
        signed.apply([op], ZARA)
    signed.apply([wire(signed, "route.api", "timeout", 30000, op_id="t-2")], ZARA)


# ---------------------------------------------------------------------------------------------
# the audit trail


def audit_file(engine, path):
    with open(path, "wb") as handle:
        for line in export_lines(engine):
            handle.write(line)
    return path


def test_audit_export_and_verify(signed, tmp_path):
    signed.apply([wire(signed, "route.api", "weight", 50, op_id="w-1", intent="load")], ZARA)
    signed.apply([{"type": "add_elements", "entity_id": "service.a", "field": "ports",
                   "elements": [443, 80]}], BOT)
    signed.apply([sign_op({"type": "add_elements", "entity_id": "service.a", "field": "ports",
                           "elements": [8080, 80], "env": "production", "op_id": "p-1",
                           "hlc": signed.next_hlc()}, signed.keys["zara"], "zara-1", "zara")],
                 ZARA)
    signed.apply([wire(signed, "service.a", "env_vars", {"B": [1, 2.5], "A": None},
                       op_id="m-1")], ZARA)
    path = audit_file(signed, tmp_path / "audit.jsonl")
    *lines, checkpoint = [json.loads(x) for x in open(path)]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4] and checkpoint["checkpoint"]["count"] == 4
    assert lines[0]["actor"] == "zara" and lines[0]["new"] == 50 and lines[0]["intent"] == "load"
    assert lines[0]["key_id"] == "zara-1" and "signature" not in lines[1]
    report = verify(open(path, "rb"), signed.signatures)
    assert report.ok and report.signed_ok == 3 and report.unsigned == [(2, 2)]
    # revoking the key later does not invalidate what it signed while valid
    signed.signatures.revoke("zara-1")
    assert verify(open(path, "rb"), Registry(signed.signatures.path)).ok


def test_a_changed_byte_fails_at_its_line_and_a_removed_line_is_a_gap(signed, tmp_path):
    for i in range(5):
        signed.apply([wire(signed, "route.api", "weight", 10 + i, op_id=f"w-{i}")], ZARA)
    path = audit_file(signed, tmp_path / "audit.jsonl")
    text = open(path).read().splitlines(keepends=True)
    tampered = list(text)
    tampered[2] = tampered[2].replace('"new":12', '"new":13')
    report = verify(tampered, signed.signatures)
    assert {(n, s) for n, s, _ in report.failures} == {(3, 3)} and not report.sequence
    assert [r for _, _, r in report.failures] == [
        "hash mismatch: the line was changed, or a line before it removed, added or moved",
        "the signature does not match the operation"]
    removed = text[:1] + text[2:]
    report = verify(removed, signed.signatures)
    assert report.sequence == [(2, "gap: seq 2 missing before seq 3")] and not report.ok
    reordered = [text[0], text[2], text[1], text[3]]
    assert any("reordered" in p for _, p in verify(reordered, signed.signatures).sequence)


def test_a_filtered_export_elides_runs_and_still_verifies(signed):
    signed.apply([wire(signed, "route.api", "weight", 1, op_id="z-1")], ZARA)
    for i in range(3):
        signed.apply([{"type": "set_field", "entity_id": "route.web", "field": "weight",
                       "value": 10 + i}], BOT)
    signed.apply([wire(signed, "route.api", "weight", 2, op_id="z-2")], ZARA)
    signed.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                   "value": 3}], BOT)
    text = list(export_lines(signed, actor="zara"))
    *lines, checkpoint = [json.loads(x) for x in text]
    assert [x.get("seq", x.get("elided")) for x in lines] == [1, [2, 4], 5, [6, 6]]
    cp = checkpoint["checkpoint"]
    assert (cp["count"], cp["elided"], cp["filter"], cp["first_seq"], cp["last_seq"]) == (
        2, 4, {"actor": "zara"}, 1, 6)
    # the chain is the whole log's: the head is the unfiltered export's
    full = [json.loads(x) for x in export_lines(signed)]
    assert cp["head_hash"] == full[-1]["checkpoint"]["head_hash"]
    assert lines[2]["hash"] == full[4]["hash"]
    report = verify(text, signed.signatures)
    assert report.ok, report.problems()
    assert (report.lines, report.elided, report.signed_ok) == (2, 4, 2)
    # an entity prefix; the class:id form of an actor
    *lines, _ = [json.loads(x) for x in export_lines(signed, entity="route.w")]
    assert [x.get("seq", x.get("elided")) for x in lines] == [[1, 1], 2, 3, 4, [5, 6]]
    *lines, _ = [json.loads(x) for x in export_lines(signed, actor="autoscaler:autoscaler-7",
                                                     entity="route.api")]
    assert [x.get("seq", x.get("elided")) for x in lines] == [[1, 5], 6]
    # tampering still shows: a changed kept line, a changed or dropped elided run
    changed = list(text)
    changed[2] = changed[2].replace(b'"new":2', b'"new":7')
    assert any("hash mismatch" in r for _, _, r in verify(changed, signed.signatures).failures)
    widened = list(text)
    widened[1] = widened[1].replace(b"[2,4]", b"[2,5]")
    assert not verify(widened, signed.signatures).ok
    dropped = text[:1] + text[2:]
    report = verify(dropped, signed.signatures)
    assert not report.ok and report.sequence
    rehashed = list(text)
    rehashed[1] = rehashed[1][:-67] + b'"' + b"0" * 64 + b'"}\n'
    assert any("hash mismatch" in r for _, _, r in verify(rehashed, signed.signatures).failures)
    # a kept line before an elided run, edited and its hash recomputed: the chain after it
    # starts from the run's claimed hash, but the signed lines_hash covers every line
    from conflux.audit import line_digest
    first = json.loads(text[0])
    first["intent"] = "forged"
    first.pop("hash")
    first["hash"] = line_digest(dict(first), bytes(32)).hex()
    forged = [json.dumps(first, separators=(",", ":")).encode() + b"\n"] + text[1:]
    report = verify(forged, signed.signatures)
    assert any("lines_hash" in r for _, _, r in report.failures), report.problems()
    # a kept line swapped with an elided one (counts unchanged): refused
    swapped = [b'{"elided":[1,1],"hash":"' + json.loads(text[0])["hash"].encode() + b'"}\n',
               text[1]] + text[2:]
    assert not verify(swapped, signed.signatures).ok


def test_the_summary_counts_and_verifies_what_an_export_holds(signed):
    signed.apply([wire(signed, "route.api", "weight", 1, op_id="z-1")], ZARA)
    signed.apply([{"type": "set_field", "entity_id": "route.web", "field": "weight",
                   "value": 10}], BOT)
    assert summary(signed) == (2, 0)
    assert summary(signed, actor="zara", registry=signed.signatures) == (1, 0)
    signed.signatures.revoke("zara-1", now_ms=1)  # as if never valid: its signature fails
    assert summary(signed, registry=Registry(signed.signatures.path)) == (2, 1)


def test_export_since_and_until(signed):
    for i in range(6):
        signed.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                       "value": i}], BOT)
    *lines, checkpoint = [json.loads(x) for x in export_lines(signed, since=3, until=5)]
    assert [x["seq"] for x in lines] == [3, 4, 5]
    assert checkpoint["checkpoint"]["prev_seq"] == 2 and checkpoint["checkpoint"]["count"] == 3
    for bad in ("yesterday", "³", "٣"):
        with pytest.raises(InputError, match="not a sequence number"):
            export_lines(signed, since=bad)


_json_values = st.recursive(
    _flat, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                   st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(old=_json_values, new=_json_values, intent=st.text(max_size=5))
def test_an_audit_line_hashes_the_same_written_and_read_back(old, new, intent):
    """The exporter hashes the line it builds (msgpack's own encoding when flat), the verifier
    the line it parses (the same, or canonical()): the same bytes either way."""
    from conflux.audit import _chained, line_digest

    line = {"seq": 7, "op_id": "o", "intent": intent, "old": old, "new": new, "base": None}
    prev = bytes(range(32))
    text, digest = _chained(line, prev)
    back = json.loads(text)
    assert back.pop("hash") == digest.hex()
    assert line_digest(back, prev) == digest == line_digest(json.loads(json.dumps(back)), prev)
    assert line_digest(back, prev) == hashlib.sha256(
        prev + canonical(back, max_depth=80)).digest()


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_keys_sign_export_verify(tmp_path, capsys):
    d = str(tmp_path / "p")
    assert run_cli(capsys, "--dir", d, "init", "--schema", str(EXAMPLE_SCHEMA))[0] == 0
    pem = str(tmp_path / "zara.pem")
    code, out, _ = run_cli(capsys, "--dir", d, "keys", "generate", "--actor", "human:zara",
                           "--output", pem, "--register", "--key-id", "zara-laptop")
    assert code == 0 and "registered as zara-laptop" in out
    code, _, err = run_cli(capsys, "--dir", d, "keys", "generate", "--actor", "zara",
                           "--output", pem)
    assert code == 2 and "never overwritten" in err
    code, out, _ = run_cli(capsys, "--dir", d, "set", "route.api", "weight", "40",
                           "--actor", "human:zara", "--sign-key", pem)
    assert code == 0, out
    code, _, err = run_cli(capsys, "--dir", d, "set", "route.api", "weight", "41",
                           "--actor", "human:mallory", "--sign-key", pem)
    assert code == 2 and "belongs to human:zara, not human:mallory" in err
    code, out, _ = run_cli(capsys, "--dir", d, "keys", "list")
    assert "zara-laptop" in out and "valid" in out
    audit = str(tmp_path / "audit.jsonl")
    assert run_cli(capsys, "--dir", d, "audit", "export", "--output", audit)[0] == 0
    registry = os.path.join(d, ".conflux", "keys.json")
    code, out, _ = run_cli(capsys, "--dir", d, "audit", "verify", audit,
                           "--key-registry", registry)
    assert code == 0 and out.startswith("OK: 1 lines, 1 signatures verified")
    with open(audit) as handle:
        text = handle.read()
    with open(audit, "w") as handle:
        handle.write(text.replace('"new":40', '"new":90'))
    code, out, _ = run_cli(capsys, "--dir", d, "audit", "verify", audit,
                           "--key-registry", registry)
    assert code == 1 and "FAIL line 1 (seq 1): the signature does not match" in out
    code, out, _ = run_cli(capsys, "--dir", d, "keys", "revoke", "zara-laptop", "--reason",
                           "lost")
    assert code == 0 and "revoked zara-laptop" in out
    code, _, err = run_cli(capsys, "--dir", d, "set", "route.api", "weight", "42",
                           "--actor", "human:zara", "--sign-key", pem)
    assert code == 2 and "revoked" in err


# ---------------------------------------------------------------------------------------------
# the daemon


def test_daemon_verifies_signatures_and_streams_the_audit(tmp_path):
    import requests

    from test_daemon import daemon, key, make_project

    project = make_project(tmp_path / "served")
    signing = SigningKey.generate()
    Registry(os.path.join(project, ".conflux", "keys.json")).register(
        "zara-1", "zara", base64.b64encode(bytes(signing.verify_key)).decode())
    with daemon(project) as (url, _):
        def op(value, op_id):
            clock = requests.get(f"{url}/v1/status", headers=key("zara")).json()["clock"]
            hlc = 0 if clock is None else int(clock[4:].split(".")[0]) << 16
            import time as _t
            raw = {"type": "set_field", "entity_id": "route.api", "field": "weight",
                   "value": value, "env": "production", "op_id": op_id,
                   "hlc": max(int(_t.time() * 1000) << 16, hlc + 1)}
            return sign_op(raw, signing, "zara-1", "zara")
        good = op(30, "d-1")
        r = requests.post(f"{url}/v1/ops", json=good, headers=key("zara"))
        assert r.status_code == 200, r.text
        forged = dict(op(31, "d-2"), value=99)
        r = requests.post(f"{url}/v1/ops", json=forged, headers=key("zara"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "signature_refused"
        stolen = op(32, "d-3")
        r = requests.post(f"{url}/v1/ops", json=stolen, headers=key("autoscaler-7"))
        assert r.status_code == 403 and "belongs to zara" in r.json()["error"]["message"]
        r = requests.get(f"{url}/v1/audit/export", headers=key("zara"))
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
        *lines, checkpoint = [json.loads(x) for x in r.text.splitlines()]
        assert [x["op_id"] for x in lines] == ["d-1"] and lines[0]["signature"]
        assert checkpoint["checkpoint"]["head_hash"] == lines[0]["hash"]
        assert verify(r.text.splitlines(), Registry(os.path.join(
            project, ".conflux", "keys.json"))).ok
        r = requests.get(f"{url}/v1/audit/export", headers=key("reader-1"))
        assert r.status_code == 403
        r = requests.get(f"{url}/v1/audit/export?since=someday", headers=key("zara"))
        assert r.status_code == 400
