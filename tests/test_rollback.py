"""Rollback to a milestone: the state of the chosen scope afterwards equals the milestone's,
written as forward operations (actor, intent 'rollback to milestone N'); a preview writes
nothing; what a strategy would keep is overridden, what cannot be undone is listed."""

from __future__ import annotations

import pytest
import requests

from conflux import rollback
from conflux.actors import Actor
from conflux.engine import Engine
from conflux.errors import NotFound, PermissionDenied
from conflux.milestones import Milestones
from conflux.transfer.exporting import documents_of
from conftest import add_op, AUTOSCALER, CI, EXAMPLE_SCHEMA, remove_op, run_cli, set_op, ZARA
from test_daemon import daemon, key, make_project


def seed(engine):
    engine.apply([set_op("service.api", "image", "api:1"), set_op("service.api", "replicas", 3),
                  add_op("service.api", "ports", 80, 443), add_op("service.api", "labels", "a"),
                  set_op("service.api", "tier", "web"),
                  set_op("route.r1", "path", "/r1"), set_op("route.r1", "service", "api"),
                  set_op("route.r1", "weight", 10), set_op("route.r1", "timeout", "30s"),
                  set_op("service.gone", "image", "g:1")], ZARA)


def drift(engine, actor=CI):
    engine.apply([set_op("service.api", "image", "api:2"),
                  set_op("route.r1", "weight", 90), set_op("route.r1", "timeout", "5s"),
                  remove_op("service.api", "ports", 80), add_op("service.api", "ports", 8080),
                  add_op("service.api", "labels", "b"),
                  set_op("service.api", "tier", "batch"),
                  {"type": "unset_field", "entity_id": "route.r1", "field": "path"},
                  {"type": "delete_entity", "entity_id": "service.gone"},
                  set_op("service.new", "image", "n:1"),
                  set_op("service.api", "replicas", 9, env="staging")], actor)


def docs(engine, env):
    return dict(documents_of(engine, env))


def test_rollback_returns_the_environment_to_the_milestone(engine):
    seed(engine)
    milestones = Milestones(engine)
    m = milestones.create("before the drift")
    then = milestones.documents(m, "production")
    drift(engine)
    seq = engine.last_seq()
    preview = rollback.run(engine, milestones, m.id, ZARA, dry_run=True)
    assert engine.last_seq() == seq  # a preview writes nothing
    by = {(c["entity_id"], c["field"]): c for c in preview["changes"]}
    # weight is a max field above the milestone's value: overridden, and said so
    assert by[("route.r1", "weight")]["override"] is True
    assert by[("route.r1", "weight")]["now"] == 90 and by[("route.r1", "weight")]["at_milestone"] == 10
    # timeout is a min field below it: overridden too
    assert by[("route.r1", "timeout")].get("override") is True
    assert by[("service.new", None)]["op"] == "delete_entity"
    assert [s["field"] for s in preview["skipped"]] == ["labels"]  # grow keeps 'b'
    rollback.run(engine, milestones, m.id, ZARA)
    now = docs(engine, "production")
    now["service.api"]["labels"] = ["a"]  # the one thing listed as kept
    assert now == then
    ops = engine.log(start=seq + 1, reverse=False)
    assert ops and all(o.intent == f"rollback to milestone {m.id}" and o.actor == "zara"
                       for o in ops)
    # nothing left to roll back but what was listed
    again = rollback.plan(engine, milestones, m.id)
    assert again["changes"] == [] and [s["field"] for s in again["skipped"]] == ["labels"]
    # staging had its own replicas: its rollback brings it back to the milestone too
    rollback.run(engine, milestones, m.id, ZARA, env="staging")
    assert engine.get("service.api", "staging")["replicas"]["value"] == 3


def test_a_scoped_rollback_touches_only_its_entities(engine):
    seed(engine)
    milestones = Milestones(engine)
    m = milestones.create("m")
    drift(engine)
    done = rollback.run(engine, milestones, m.id, ZARA, entities=["route.r1"])
    assert {c["entity_id"] for c in done["changes"]} == {"route.r1"}
    assert docs(engine, "production")["route.r1"] == milestones.documents(m, "production")[
        "route.r1"]
    assert engine.get("service.api")["image"]["value"] == "api:2"  # out of scope: kept


def test_rollback_needs_write_and_refuses_what_it_cannot_read(tmp_path, core):
    root = tmp_path / "p"
    eng = Engine.init(str(root), str(EXAMPLE_SCHEMA), core=core)
    seed(eng)
    m = Milestones(eng).create("m")
    drift(eng)
    eng.close()
    (root / ".conflux" / "rbac.toml").write_text(
        '[role.reader]\npermissions = [{ actions = ["read"], resource = "*" }]\n'
        '[role.admin]\npermissions = [{ actions = ["admin"], resource = "*" }]\n'
        '[[assign]]\nactor = "autoscaler:*"\nroles = ["reader"]\n'
        '[[assign]]\nactor = "human:*"\nroles = ["admin"]\n')
    eng = Engine(str(root), core=core)
    try:
        milestones = Milestones(eng)
        seq = eng.last_seq()
        # a reader may see the plan; running it, even as a dry run, needs write
        assert rollback.plan(eng, milestones, m.id, reader=AUTOSCALER)["changes"]
        for dry_run in (True, False):
            with pytest.raises(PermissionDenied):
                rollback.run(eng, milestones, m.id, AUTOSCALER, dry_run=dry_run)
        assert eng.last_seq() == seq
        with pytest.raises(NotFound):
            rollback.run(eng, milestones, 99, ZARA)
        with pytest.raises(NotFound):
            rollback.run(eng, milestones, m.id, ZARA, env="qa")
    finally:
        eng.close()


def test_the_cli_previews_and_rolls_back(tmp_path, capsys, monkeypatch):
    project = tmp_path / "p"
    eng = Engine.init(str(project), str(EXAMPLE_SCHEMA))
    seed(eng)
    Milestones(eng).create("m")
    drift(eng)
    eng.close()
    monkeypatch.chdir(project)
    code, out, err = run_cli(capsys, "rollback", "1", "--dry-run")
    assert code == 0, err
    assert "route.r1.weight: 90 → 10  (set_field [override])" in out
    assert "service.api.labels: kept" in out and "nothing was written" in out
    code, out, err = run_cli(capsys, "rollback", "1", "route.r1", "--actor", "human:ops")
    assert code == 0 and "wrote 3 operation(s)" in out, out + err
    assert "route.r1.timeout: 5s → 30s  (set_field [override])" in out
    code, out, _ = run_cli(capsys, "rollback", "1", "route.r1")
    assert "already at the milestone's values" in out
    for args, words in [(("rollback", "7"), "milestone"), (("rollback", "1", "bad id"), "bad id"),
                        (("rollback", "1", "--env", "qa"), "qa")]:
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_rollback_over_rest(tmp_path):
    project = make_project(tmp_path / "p")
    eng = Engine(project)
    seed(eng)
    Milestones(eng).create("m")
    drift(eng, ZARA)
    eng.close()
    with daemon(project) as (url, _):
        path = f"{url}/v1/milestones/1/rollback"
        seq = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()[
            "operations"]
        r = requests.post(path, json={"dry_run": True, "entities": ["route.r1"]},
                          headers=key("zara"), timeout=30)
        assert r.status_code == 200 and r.json()["written"] == 0, r.text
        assert {c["field"] for c in r.json()["changes"]} == {"weight", "timeout", "path"}
        # the autoscaler may write weights only: refused, nothing written
        r = requests.post(path, json={}, headers=key("autoscaler-7"), timeout=30)
        assert r.status_code == 403, r.text
        r = requests.post(path, json={"entities": ["route.r1"]}, headers=key("zara"),
                          timeout=30)
        assert r.status_code == 200 and r.json()["written"] == 3, r.text
        log = requests.get(f"{url}/v1/log", params={"entity_id": "route.r1", "limit": 3},
                           headers=key("zara"), timeout=10).json()["operations"]
        assert all(o["intent"] == "rollback to milestone 1" and o["actor_id"] == "zara"
                   for o in log)
        assert log[0]["seq"] > seq
        for body, status in (({"env": "qa"}, 404), ({"entities": "route.r1"}, 400),
                             ({"force": True}, 400)):
            r = requests.post(path, json=body, headers=key("zara"), timeout=30)
            assert r.status_code in (status, 422), (body, r.text)
        assert requests.post(f"{url}/v1/milestones/9/rollback", json={},
                             headers=key("zara"), timeout=30).status_code == 404


def test_the_diff_between_two_milestones(engine):
    seed(engine)
    milestones = Milestones(engine)
    first = milestones.create("first")
    drift(engine)
    second = milestones.create("second")
    engine.apply([set_op("service.api", "image", "api:3")], ZARA)  # after both
    changes = {(c["entity_id"], c["field"]): c for c in
               milestones.diff(first.id, "production", to=second.id)}
    image = changes[("service.api", "image")]
    assert (image["at_milestone"], image["now"]) == ("api:1", "api:2")  # not api:3
    assert [op["seq"] for op in image["operations"]] and all(
        op["seq"] <= second.seq for op in image["operations"])
    with pytest.raises(Exception, match="older"):
        milestones.diff(second.id, "production", to=first.id)


def test_what_a_rollback_cannot_restore_is_said(engine):
    milestones = Milestones(engine)
    engine.apply([add_op("service.p", "ports", 80), set_op("service.p", "image", "p:1"),
                  {"type": "move_entity", "entity_id": "route.bare"}], ZARA)
    m = milestones.create("m", force=True)  # (route.bare lacks its required service)
    # staging inherits ports: a rollback there gives staging its own [80]
    engine.apply([add_op("service.p", "ports", 443),
                  {"type": "delete_entity", "entity_id": "route.bare"}], ZARA)
    done = rollback.run(engine, milestones, m.id, ZARA, env="staging",
                        entities=["service.p", "route.bare"])
    assert engine.get("service.p", "staging")["ports"]["value"] == [80]
    assert engine.get("service.p")["ports"]["value"] == [80, 443]  # production untouched
    assert done["remaining"] == []
    # an entity that existed by its place alone: milestones do not hold the tree
    assert [s["entity_id"] for s in done["skipped"]] == ["route.bare"]
    assert "entity tree" in done["skipped"][0]["reason"]
