"""Resource limits and bad input, replayed as an attacker sends them: alias bombs and huge
values, hostile nesting, over-long names, an out-of-range Last-Event-ID, chunked bodies,
server paths in error answers, and TLS files that cannot work. Against the real CLI, a real
LMDB store and a real gunicorn daemon on loopback."""

from __future__ import annotations

import re

import http.client
import json
import os
import resource
import shutil
import subprocess
import sys

import msgpack
import pytest
import requests

from conflux.engine import Engine
from conftest import EXAMPLE_SCHEMA, ZARA, run_cli, set_op
from test_daemon import KEYS, daemon, make_project

ADMIN = {"X-API-Key": KEYS["zara"][1]}
READER = {"X-API-Key": KEYS["reader-1"][1]}
CLI = [sys.executable, "-c", "import sys; from conflux.cli import main; "
       "sys.exit(main(sys.argv[1:]))"]


def cli(project, *args, limit_memory: int | None = None, timeout: float = 120):
    """``conflux --dir project *args`` as its own process (optionally with a data-segment
    limit, so that an unbounded expansion ends in MemoryError instead of filling the box)."""
    def limit():
        if limit_memory is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (limit_memory, limit_memory))
    return subprocess.run([*CLI, "--dir", str(project), *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)


def ops_logged(project) -> int:
    with Engine(str(project)) as engine:
        return engine.last_seq()


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "project"
    path.mkdir()
    Engine.init(str(path), str(EXAMPLE_SCHEMA)).close()
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon for the REST attacks: (url, project directory)."""
    path = tmp_path_factory.mktemp("served") / "project"
    path.mkdir()
    make_project(path)
    with daemon(str(path)) as (url, _):
        yield url, path


def post(url, body, *, headers=ADMIN, path="/v1/ops", content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url + path, data=data, timeout=60,
                         headers={**headers, "Content-Type": content_type})


def assert_error(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    error = resp.json()["error"]
    assert error["code"] and error["message"]
    return error


# -- 4. alias bombs and the size of one value -------------------------------------------------

BOMB = "name: bomb\nenv_vars:\n  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"  {b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_alias_bomb_is_refused_before_expansion_in_bounded_memory(project, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB.encode()) < 400  # 9**9 strings once expanded
    # 400 MB of data segment: the expansion alone would need hundreds of gigabytes
    result = cli(project, "import", str(bomb), "--entity-type", "service",
                 limit_memory=400 << 20)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(bomb) in result.stderr and "aliases are expanded" in result.stderr
    assert ops_logged(project) == 0


def test_a_smaller_alias_bomb_is_refused_by_the_value_limit_naming_file_and_line(project,
                                                                                 tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(BOMB.splitlines()[:8]) + "\n")  # 9**6 strings: ~2 MB
    code = cli(project, "import", str(bomb), "--entity-type", "service")
    assert code.returncode == 2, code.stderr
    assert f"{bomb}:2: field 'env_vars'" in code.stderr
    assert "larger than 1,048,576 bytes" in code.stderr and "max_value_bytes" in code.stderr
    assert ops_logged(project) == 0


FORMATS = {
    "yaml": lambda value: "name: big\nenv_vars: " + json.dumps(value) + "\n",
    "json": lambda value: json.dumps({"name": "big", "env_vars": value}),
    "toml": lambda value: 'name = "big"\nenv_vars = ' + _toml(value) + "\n",
    "kdl": lambda value: 'name "big"\nenv_vars ' + _kdl(value) + "\n",
    "jsonnet": lambda value: json.dumps({"name": "big", "env_vars": value}),
    "cue": lambda value: "name: \"big\"\nenv_vars: " + json.dumps(value) + "\n",
}


def _toml(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _kdl(value):
    if isinstance(value, dict):
        return "{ " + "; ".join(f"{k} {_kdl(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _nested(levels):
    value = "x"
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_import_format_keeps_to_the_value_limit_and_the_nesting_limit(project, tmp_path,
                                                                           fmt):
    (project / ".conflux" / "config.toml").write_text("[limits]\nmax_value_bytes = 1000\n")
    cases = {"big": {"k": "x" * 2000}, "deep": _nested(80), "deeper": _nested(150)}
    for name, value in cases.items():
        path = tmp_path / f"{name}.{fmt}"
        path.write_text(FORMATS[fmt](value))
        result = cli(project, "import", str(path), "--entity-type", "service")
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert str(path) in result.stderr, result.stderr
        assert {"big": "larger than 1,000 bytes", "deep": "nested deeper than 64",
                "deeper": "nested deeper than"}[name] in result.stderr, result.stderr
    assert ops_logged(project) == 0
    small = tmp_path / f"small.{fmt}"
    small.write_text(FORMATS[fmt]({"k": "x" * 500}))
    ok = cli(project, "import", str(small), "--entity-type", "service")
    assert ok.returncode == 0, ok.stderr


def test_the_value_limit_holds_at_the_command_line_and_over_rest(project, served, capsys):
    (project / ".conflux" / "config.toml").write_text("[limits]\nmax_value_bytes = 100\n")
    code, _, err = run_cli(capsys, "--dir", str(project), "set", "service.a", "image",
                           "x" * 200)
    assert code == 2 and "larger than 100 bytes" in err
    code, _, err = run_cli(capsys, "--dir", str(project), "set", "service.a", "labels",
                           "--add", *[f"l{i:040d}" for i in range(5)])
    assert code == 2 and "larger than 100 bytes" in err
    assert ops_logged(project) == 0
    code, _, err = run_cli(capsys, "--dir", str(project), "set", "service.a", "image", "x" * 50)
    assert code == 0, err
    url, _ = served  # the default: 1 MiB
    resp = post(url, set_op("service.huge", "image", "x" * ((1 << 20) + 1)))
    assert "larger than 1,048,576 bytes" in assert_error(resp, 422)["message"]
    resp = post(url, {"ops": [set_op("service.huge", "env_vars", {"k": "x" * (1 << 20)})]})
    assert_error(resp, 422)
    assert requests.get(url + "/v1/entities/service.huge", headers=ADMIN,
                        timeout=10).status_code == 404


@pytest.mark.parametrize("text, message", [
    ("[limits]\nmax_value_bytes = 0\n", "max_value_bytes must be 1 to"),
    ("[limits]\nmax_value = 10\n", "unknown key 'max_value'"),
    ('[limits]\nmax_value_bytes = "1MiB"\n', "must be a whole number"),
])
def test_the_limits_table_of_config_toml_is_checked(project, text, message):
    (project / ".conflux" / "config.toml").write_text(text)
    result = cli(project, "status")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "config.toml:2" in result.stderr


# -- 5. deep nesting ----------------------------------------------------------------------------

def test_deeply_nested_bodies_are_refused_not_answered_500(served):
    url, _ = served
    assert_error(post(url, ("[" * 100_000 + "]" * 100_000).encode()), 400)
    deep_map = '{"a":' * 5_000 + "1" + "}" * 5_000
    assert_error(post(url, deep_map.encode()), 400)
    op = '{"type":"set_field","entity_id":"service.d","field":"env_vars","value":' + \
        '{"a":' * 5_000 + "1" + "}" * 5_000 + "}"
    assert "nested deeper" in assert_error(post(url, op.encode()), 400)["message"]
    for path in ("/v1/promote", "/v1/conflicts/resolve", "/v1/milestones"):
        assert_error(post(url, deep_map.encode(), path=path), 400)
    packed = b"\x91" * 100_000 + b"\x90"
    assert_error(post(url, packed, content_type="application/msgpack"), 400)
    packed = b"\x81\xa1a" * 900 + b"\x01"  # under msgpack's own stack limit
    assert "nested deeper" in assert_error(
        post(url, packed, content_type="application/msgpack"), 400)["message"]
    # a value deeper than a value may be, in a body that is not: 422 naming the field
    for levels in (65, 80):
        resp = post(url, set_op("service.d", "env_vars", _nested(levels)))
        assert assert_error(resp, 422)["field"] == "env_vars"
    assert post(url, set_op("service.d", "env_vars", _nested(64))).status_code == 200
    assert requests.get(url + "/v1/health", timeout=10).status_code == 200


def test_deeply_nested_values_at_the_command_line_exit_2(project, capsys):
    for levels in (80, 150, 5_000):
        text = json.dumps(_nested(levels)) if levels < 900 else \
            '{"k":' * levels + '"x"' + "}" * levels
        code, _, err = run_cli(capsys, "--dir", str(project), "set", "service.a", "env_vars",
                               text)
        assert code == 2 and "nested deeper than" in err, err
        assert err.count("\n") == 1
    assert ops_logged(project) == 0


# -- 6. names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [201, 400, 600, 5_000])
def test_an_over_long_entity_name_is_refused_at_every_door(served, project, tmp_path, capsys,
                                                          length):
    url, _ = served
    name = "n" * length
    for body in (set_op(f"service.{name}", "image", "x"),
                 {"type": "add_elements", "entity_id": f"service.{name}", "field": "ports",
                  "elements": [80]},
                 {"type": "delete_entity", "entity_id": f"service.{name}"}):
        error = assert_error(post(url, body), 422)
        # the request-body schema bounds the id (its length and its pattern's name part);
        # the engine, behind it, the name
        assert re.search(r"entity_id|at most 200 characters", error["message"]), error["message"]
        assert len(error["message"]) < 1000
    code, _, err = run_cli(capsys, "--dir", str(project), "set", f"service.{name}", "image", "x")
    assert code == 2 and "at most 200 characters" in err
    doc = tmp_path / "long.json"
    doc.write_text(json.dumps({"name": name, "image": "x"}))
    result = cli(project, "import", str(doc), "--entity-type", "service")
    assert result.returncode == 2 and "at most 200 characters" in result.stderr
    assert ops_logged(project) == 0
    resp = requests.get(url + f"/v1/state", headers=ADMIN, timeout=10)
    assert not any(len(e) > 210 for e in resp.json()["entities"])


def test_a_name_of_200_characters_is_taken(served):
    url, _ = served
    resp = post(url, set_op("service." + "n" * 200, "image", "x"))
    assert resp.status_code == 200, resp.text


def test_over_long_field_and_environment_names_are_refused_with_a_short_message(served,
                                                                               tmp_path):
    url, _ = served
    error = assert_error(post(url, set_op("service.a", "f" * 100_000, 1)), 422)
    assert len(error["message"]) < 1000 and len(error.get("field", "")) <= 64
    error = assert_error(post(url, set_op("service.a", "image", "x", env="e" * 100_000)), 422)
    assert len(error["message"]) < 1000
    for schema_text in (EXAMPLE_SCHEMA.read_text().replace('name = "image"',
                                                           f'name = "{"i" * 65}"'),
                        EXAMPLE_SCHEMA.read_text().replace('name = "staging"',
                                                           f'name = "{"s" * 65}"')):
        schema = tmp_path / "schema.toml"
        schema.write_text(schema_text)
        where = tmp_path / "new"
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir()
        result = cli(where, "init", "--schema", str(schema))
        assert result.returncode == 2 and "at most 64 characters" in result.stderr, \
            result.stderr


# -- 7. Last-Event-ID ---------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["99999999999999999999999999", "18446744073709551616",
                                    "9223372036854775809", "-1", "1e9"])
def test_an_out_of_range_last_event_id_is_a_400(served, header):
    url, _ = served
    resp = requests.get(url + "/v1/watch?timeout=1", timeout=30,
                        headers={**ADMIN, "Last-Event-ID": header})
    assert "Last-Event-ID must be a sequence number" in assert_error(resp, 400)["message"]
    resp = requests.get(url + f"/v1/watch?timeout=1&after={header}", timeout=30,
                        headers=ADMIN)
    assert_error(resp, 400)


def test_the_largest_last_event_id_streams(served):
    url, _ = served
    resp = requests.get(url + "/v1/watch?timeout=1", timeout=30,
                        headers={**ADMIN, "Last-Event-ID": str(2 ** 63)})
    assert resp.status_code == 200 and resp.text.startswith(": conflux watch")


# -- 8. chunked bodies --------------------------------------------------------------------------

def _chunked(url, chunks, *, finish=True, path="/v1/ops"):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", path)
    for name, value in {**ADMIN, "Content-Type": "application/json",
                        "Transfer-Encoding": "chunked"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    for chunk in chunks:
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    if finish:
        conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_a_chunked_body_is_accepted(served):
    url, _ = served
    body = json.dumps(set_op("service.chunked", "image", "nginx:1")).encode()
    status, answer = _chunked(url, [body[:10], body[10:20], body[20:]])
    assert status == 200, answer
    got = requests.get(url + "/v1/entities/service.chunked", headers=ADMIN, timeout=10).json()
    assert got["fields"]["image"]["value"] == "nginx:1"
    # every body-taking route reads it the same way (this one: read, parsed, then judged)
    status, answer = _chunked(url, [b'{"from": "production", ', b'"to": "staging"}'],
                              path="/v1/promote")
    assert "nothing to promote" in answer["error"]["message"], answer


def test_a_chunked_body_over_the_limit_is_413_before_it_ends(served):
    url, _ = served
    piece = b" " * (1 << 20)
    # 17 MiB sent and the body never finished: the answer cannot wait for its end
    status, answer = _chunked(url, [b"[" + piece] + [piece] * 16, finish=False)
    assert status == 413 and answer["error"]["code"] == "body_too_large"


# -- 9. server paths in answers -----------------------------------------------------------------

def test_no_error_answer_names_a_server_path(tmp_path):
    path = tmp_path / "project"
    path.mkdir()
    make_project(path)
    places = {str(path), os.path.realpath(path)}
    answers = []
    with daemon(str(path)) as (url, _):
        def get(route, headers=ADMIN):
            answers.append(requests.get(url + route, headers=headers, timeout=30))

        def send(body, **kw):
            answers.append(post(url, body, **kw))

        send(set_op("service.a", "image", "x"), headers=READER)               # 403 rbac
        send(set_op("service.a", "image", "x"), headers={"X-API-Key": "no"})  # 401
        send(b"{not json")                                                     # 400
        send(b"x" * ((16 << 20) + 1))                                          # 413
        send(b"{}", content_type="text/plain")                                 # 415
        send(set_op("service.a", "replicas", "many"))                         # 422
        send(set_op("service." + "n" * 600, "image", "x"))                    # 422, not 503
        send(set_op("service.a", "image", "x", hlc="hlc:999999999999999.0"))  # 422 clock
        get("/v1/entities/service.missing")                                    # 404
        get("/v1/milestones/nope")                                             # 404
        get("/v1/watch", headers={**ADMIN, "Last-Event-ID": "9" * 30})        # 400
        # a key registry gone bad: 400 about keys.json
        (path / ".conflux" / "keys.json").write_text("not json")
        send({**set_op("service.a", "image", "y"), "op_id": "s-1", "hlc": "hlc:1.0",
              "signature": "AAAA", "key_id": "k-1"})
        # a milestone repository gone bad: the server's own failure (5xx)
        repo = path / ".conflux" / "milestones.git"
        shutil.rmtree(repo, ignore_errors=True)
        repo.write_text("not a repository")
        send({"message": "m"}, path="/v1/milestones")
    statuses = sorted({a.status_code for a in answers})
    assert {400, 401, 403, 404, 413, 415, 422} <= set(statuses), statuses
    assert any(a.status_code >= 500 for a in answers), statuses
    for answer in answers:
        assert answer.json()["error"]["message"]
        for place in places:
            assert place not in answer.text, (answer.status_code, answer.text)
    forbidden = next(a for a in answers if a.status_code == 403).json()["error"]["message"]
    assert "rbac.toml" in forbidden


# -- 10. TLS files that cannot work -------------------------------------------------------------

@pytest.fixture
def tls(tmp_path):
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    server, stranger = ca.issue_cert("127.0.0.1"), other.issue_cert("127.0.0.1")
    files = {}
    for name, blob in {"ca.pem": ca.cert_pem, "cert.pem": server.cert_chain_pems[0],
                       "key.pem": server.private_key_pem,
                       "other.key": stranger.private_key_pem}.items():
        files[name] = str(tmp_path / name)
        blob.write_to_path(files[name])
    files["garbage"] = str(tmp_path / "garbage.pem")
    with open(files["garbage"], "w") as fh:
        fh.write("-----BEGIN GARBAGE-----\nnot base64 at all\n-----END GARBAGE-----\n")
    return files


@pytest.mark.parametrize("cert, key, ca, blamed, reason", [
    ("cert.pem", "cert.pem", None, "--tls-key cert.pem", "no PEM private key"),
    ("cert.pem", "other.key", None, "--tls-key other.key", "does not belong to the certificate"),
    ("cert.pem", "garbage", None, "--tls-key garbage", "no PEM private key"),
    ("garbage", "key.pem", None, "--tls-cert garbage", "no PEM certificate"),
    ("key.pem", "key.pem", None, "--tls-cert key.pem", "no PEM certificate"),
    ("cert.pem", "key.pem", "garbage", "--client-ca garbage", "no PEM CA certificate"),
])
def test_a_daemon_with_unusable_tls_files_does_not_start(tmp_path, tls, cert, key, ca, blamed,
                                                         reason):
    path = tmp_path / "project"
    path.mkdir()
    make_project(path)
    args = ["daemon", "--port", "0", "--tls-cert", tls[cert], "--tls-key", tls[key]]
    if ca is not None:
        args += ["--client-ca", tls[ca]]
    result = cli(path, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    flag, name = blamed.split(" ")
    assert result.stderr.count("\n") == 1
    assert f"{flag} {tls[name]}" in result.stderr and reason in result.stderr, result.stderr
