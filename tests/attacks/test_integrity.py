"""Attacks on the write path's integrity, replayed against a real daemon and the command line:
an op id reused by another actor or with other content, values a field's constraints forbid,
and writes the merge did not keep answered as if they had been."""

from __future__ import annotations

import threading

import pytest
import requests

from conflux.engine import Engine
from conftest import EXAMPLE_SCHEMA, run_cli
from test_daemon import daemon, key, make_project, op


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("integrity"))
    with daemon(project) as (url, _):
        yield url


def post(url, body, actor):
    return requests.post(f"{url}/v1/ops", json=body, headers=key(actor), timeout=30)


def value_of(url, entity, field):
    r = requests.get(f"{url}/v1/entities/{entity}", headers=key("zara"), timeout=10)
    return r.json()["fields"][field]["value"] if r.status_code == 200 else None


def log_after(url, seq):
    r = requests.get(f"{url}/v1/ops", params={"after": seq}, headers=key("zara"), timeout=10)
    return r.json()["ops"]


# ---------------------------------------------------------------------------------------------
# 1. an op id belongs to whoever uses it first


def test_another_actors_op_under_a_used_op_id_is_refused(live):
    first = post(live, op("route.o1", "weight", 40, op_id="release-1"), "autoscaler-7")
    assert first.status_code == 200, first.text
    seq = first.json()["seq"]
    # an admin's different change under the same id was acknowledged as a duplicate and dropped
    r = post(live, op("route.o1", "weight", 90, op_id="release-1", override=True), "zara")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "op_id_conflict" and error["field"] == "op_id"
    assert f"seq {seq}" in error["message"] and "autoscaler:autoscaler-7" in error["message"]
    assert "40" not in error["message"]  # the holder's content is not told
    assert value_of(live, "route.o1", "weight") == 40
    assert [e["seq"] for e in log_after(live, 0) if e["op_id"] == "release-1"] == [seq]


def test_same_actor_other_content_is_refused_and_a_true_retry_acknowledged(live):
    body = op("route.o2", "weight", 30, op_id="deploy-7", intent="canary")
    first = post(live, body, "autoscaler-7").json()
    for changed in ({"value": 31}, {"intent": "other"}, {"entity_id": "route.o3"}):
        r = post(live, {**body, **changed}, "autoscaler-7")
        assert r.status_code == 409 and r.json()["error"]["code"] == "op_id_conflict", changed
        assert "yours, with other content" in r.json()["error"]["message"]
    again = post(live, body, "autoscaler-7")
    assert again.status_code == 200
    assert again.json() == {**first, "duplicate": True}
    assert value_of(live, "route.o2", "weight") == 30 and value_of(live, "route.o3",
                                                                   "weight") is None


def test_two_ops_of_one_batch_under_one_op_id_are_refused(live):
    before = log_after(live, 0)[-1]["seq"] if log_after(live, 0) else 0
    r = post(live, {"ops": [op("route.o4", "weight", 10, op_id="b-1"),
                            op("route.o4", "weight", 20, op_id="b-1")]}, "autoscaler-7")
    assert r.status_code == 409 and r.json()["error"]["code"] == "op_id_conflict"
    assert r.json()["error"]["message"].startswith("op 1: ")
    assert value_of(live, "route.o4", "weight") is None
    same = post(live, {"ops": [op("route.o4", "weight", 10, op_id="b-1"),
                               op("route.o4", "weight", 10, op_id="b-1")]}, "autoscaler-7")
    assert same.status_code == 200
    acks = same.json()["ops"]
    assert acks[1]["duplicate"] and acks[0]["seq"] == acks[1]["seq"] > before


def test_a_conflict_in_a_commit_group_refuses_only_its_request(live):
    """Concurrent requests share commits: the one that reuses an id fails, never a neighbour."""
    results = {}
    start = threading.Barrier(12)

    def send(i):
        start.wait()
        if i < 6:  # six writers race for one op id, with six different values
            body = op("route.race", "weight", 10 + i, op_id="race-1")
        else:
            body = op(f"route.calm{i}", "weight", i)
        results[i] = post(live, body, "autoscaler-7")
    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    racers = [results[i] for i in range(6)]
    won = [i for i, r in enumerate(racers) if r.status_code == 200]
    assert len(won) == 1, [r.text for r in racers]
    assert all(r.status_code == 409 and r.json()["error"]["code"] == "op_id_conflict"
               for i, r in enumerate(racers) if i not in won)
    assert value_of(live, "route.race", "weight") == 10 + won[0]
    for i in range(6, 12):
        assert results[i].status_code == 200, results[i].text
        assert value_of(live, f"route.calm{i}", "weight") == i


def test_cli_op_id_reuse_exits_2(tmp_path, capsys):
    d = str(tmp_path / "p")
    run_cli(capsys, "--dir", d, "init", "--schema", str(EXAMPLE_SCHEMA))
    code, out, _ = run_cli(capsys, "--dir", d, "set", "service.s", "tier", "web", "--op-id",
                           "X", "--actor", "pipeline:ci")
    assert code == 0 and out.startswith("ok: ")
    code, out, err = run_cli(capsys, "--dir", d, "set", "service.s", "tier", "batch",
                             "--op-id", "X", "--actor", "pipeline:ci")
    assert (code, out) == (2, "") and len(err.splitlines()) == 1
    assert "op_id 'X' already names the operation of seq 1" in err
    # a signed op by another actor under the same id: refused too
    pem = str(tmp_path / "zara.pem")
    assert run_cli(capsys, "--dir", d, "keys", "generate", "--actor", "human:zara", "--output",
                   pem, "--register", "--key-id", "zara-1")[0] == 0
    code, _, err = run_cli(capsys, "--dir", d, "set", "service.s", "tier", "batch", "--op-id",
                           "X", "--actor", "human:zara", "--sign-key", pem)
    assert code == 2 and "by pipeline:ci" in err
    code, out, _ = run_cli(capsys, "--dir", d, "set", "service.s", "tier", "web", "--op-id",
                           "X", "--actor", "pipeline:ci")
    assert code == 0 and out.startswith("already applied: service.s.tier = web")
    # a signed retry signs the logged op's hlc again: the same op, acknowledged
    for _ in range(2):
        code, out, err = run_cli(capsys, "--dir", d, "set", "service.s", "image", "i:1",
                                 "--op-id", "Z", "--actor", "human:zara", "--sign-key", pem)
        assert code == 0, err
    assert out.startswith("already applied: service.s.image = i:1")
    with Engine(d) as engine:
        assert engine.get("service.s", field="tier")["tier"]["value"] == "web"
        assert engine.last_seq() == 2


# ---------------------------------------------------------------------------------------------
# 2. constraints are enforced at the door


def test_values_breaking_constraints_are_refused_over_rest(live):
    for body, words in [(op("route.c1", "weight", 150), ["route.c1.weight", "150", "max 100"]),
                        (op("route.c1", "weight", -1), ["route.c1.weight", "-1", "min 0"]),
                        (op("route.c1", "path", "api"), ["route.c1.path", "'api'", "pattern"]),
                        (op("service.c1", "tier", "gpu"), ["service.c1.tier", "'gpu'",
                                                           "one of"])]:
        r = post(live, body, "zara")
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_value" and all(w in error["message"] for w in words)
    # a batch with one such op is refused whole
    r = post(live, {"ops": [op("route.c2", "weight", 50), op("route.c2", "weight", 101)]},
             "autoscaler-7")
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("op 1: ")
    assert value_of(live, "route.c1", "weight") is None
    assert value_of(live, "route.c2", "weight") is None


def test_values_breaking_constraints_are_refused_at_the_cli(tmp_path, capsys):
    schema = tmp_path / "schema.toml"
    schema.write_text(EXAMPLE_SCHEMA.read_text().replace(
        '{ name = "ports",    type = "list<int>",    merge = "set" }',
        '{ name = "ports",    type = "list<int>",    merge = "set", min = 1, max = 65535 }'))
    d = str(tmp_path / "p")
    assert run_cli(capsys, "--dir", d, "init", "--schema", str(schema))[0] == 0
    for args, words in [(("route.r1", "weight", "150"), ["route.r1.weight", "150", "max 100"]),
                        (("service.s", "ports", "80", "70000", "--add"),
                         ["service.s.ports", "element 70000", "max 65535"]),
                        (("service.s", "replicas", "501"), ["replicas", "501", "max 500"])]:
        code, out, err = run_cli(capsys, "--dir", d, "set", *args)
        assert (code, out) == (2, "") and len(err.splitlines()) == 1, err
        assert all(w in err for w in words), err
    with Engine(d) as engine:
        assert engine.last_seq() == 0 and engine.records() == {}


def test_import_of_a_value_breaking_a_constraint_names_file_and_line(tmp_path, capsys):
    d = str(tmp_path / "p")
    run_cli(capsys, "--dir", d, "init", "--schema", str(EXAMPLE_SCHEMA))
    tree = tmp_path / "routes"
    tree.mkdir()
    (tree / "a.yaml").write_text("name: a\npath: /a\nweight: 50\n")
    (tree / "b.yaml").write_text("name: b\npath: /b\nweight: 150\n")
    code, out, err = run_cli(capsys, "--dir", d, "import", str(tree), "--entity-type", "route")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "b.yaml:3" in err and "150" in err and "max 100" in err
    with Engine(d) as engine:
        assert engine.last_seq() == 0


# ---------------------------------------------------------------------------------------------
# 3. say what happened


def test_rest_acks_tell_the_value_kept_and_whether_the_op_won(live):
    assert post(live, op("route.k1", "weight", 80), "autoscaler-7").json()["applied"] is True
    lost = post(live, op("route.k1", "weight", 70), "autoscaler-7").json()
    assert (lost["applied"], lost["value"]) == (False, 80)
    won = post(live, op("route.k1", "weight", 90), "autoscaler-7").json()
    assert (won["applied"], won["value"]) == (True, 90)
    batch = post(live, {"ops": [op("route.k2", "weight", 5), op("route.k2", "weight", 3)]},
                 "autoscaler-7").json()["ops"]
    assert [(a["applied"], a["value"]) for a in batch] == [(True, 5), (False, 5)]


def test_cli_tells_the_value_kept(tmp_path, capsys):
    d = str(tmp_path / "p")
    run_cli(capsys, "--dir", d, "init", "--schema", str(EXAMPLE_SCHEMA))
    assert run_cli(capsys, "--dir", d, "set", "route.api", "weight", "80")[0] == 0
    code, out, _ = run_cli(capsys, "--dir", d, "set", "route.api", "weight", "70")
    assert code == 0
    assert out.startswith("kept 80 (max): route.api.weight stays 80 in production; your 70 is "
                          "recorded (op ")
    assert ", seq 2, " in out
    code, out, _ = run_cli(capsys, "--dir", d, "set", "route.api", "weight", "85")
    assert code == 0 and out.startswith("ok: route.api.weight = 85 in production")
