"""Milestones (conflux.milestones, 'conflux milestone', 'conflux diff'): real git repositories
written with pygit2 and read back with the git command line, as a person would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.errors import InputError
from conflux.milestones import LIST_LIMIT, Milestones, NothingToCommit, ViolationsPresent

from conftest import EXAMPLE_SCHEMA, ZARA, run_cli

AUTOSCALER = Actor("autoscaler", "autoscaler")
CI = Actor("ci-pipeline", "pipeline")
HLC = r"hlc:\d{13}\.\d{4}"


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def set_op(entity, field, value, **kw):
    return {"type": "set_field", "entity_id": entity, "field": field, "value": value, **kw}


@pytest.fixture
def project(tmp_path, core):
    engine = Engine.init(str(tmp_path / "project"), str(EXAMPLE_SCHEMA), core=core)
    engine.apply([set_op("service.checkout", "image", "checkout:1"),
                  set_op("service.checkout", "replicas", 2),
                  set_op("route.api-v1", "service", "checkout"),
                  set_op("route.api-v1", "path", "/api/v1"),
                  set_op("route.api-v1", "weight", 50),
                  set_op("route.api-v1", "timeout", "30s"),
                  {"type": "add_elements", "entity_id": "upstream.backend", "field": "targets",
                   "elements": ["10.0.1.3", "10.0.1.4"]}], ZARA)
    yield engine
    engine.close()


def repo_of(engine) -> str:
    return os.path.join(engine.root, "milestones.git")


def test_first_milestone_is_an_ordinary_git_repository(project):
    m = Milestones(project).create("initial state")
    repo = repo_of(project)
    assert git(repo, "rev-parse", "refs/heads/main").strip() == m.commit
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert files == sorted(f"{env}/{e}" for env in ("development", "production", "staging")
                           for e in ("route/api-v1.yaml", "service/checkout.yaml",
                                     "upstream/backend.yaml"))
    doc = yaml.safe_load(git(repo, "show", "main:production/route/api-v1.yaml"))
    assert doc == {"name": "api-v1", "path": "/api/v1", "weight": 50, "timeout": "30s",
                   "service": "service.checkout"}
    staging = yaml.safe_load(git(repo, "show", "main:staging/upstream/backend.yaml"))
    assert staging == {"name": "backend", "targets": ["10.0.1.3", "10.0.1.4"],
                       "healthcheck": "/healthz"}  # inherited, default included
    author = git(repo, "log", "-1", "--format=%an <%ae>|%cn").strip()
    assert author == "Conflux <conflux@localhost>|Conflux"
    # a human can clone it
    subprocess.run(["git", "clone", "-q", repo, str(os.path.join(project.root, "..", "clone"))],
                   check=True, timeout=60)


def test_message_has_the_shape_of_the_spec(project):
    milestones = Milestones(project)
    milestones.create("before")
    project.apply([set_op("route.api-v1", "weight", 90, intent="load-response")], AUTOSCALER)
    project.apply([set_op("route.api-v1", "weight", 80, override=True,
                          intent="manual override")], ZARA)
    project.apply([set_op("route.api-v1", "weight", 60, intent="load-response")], AUTOSCALER)
    project.apply([{"type": "add_elements", "entity_id": "upstream.backend",
                    "field": "targets", "elements": ["10.0.1.5"], "intent": "scale-out"},
                   set_op("service.checkout", "image", "checkout:2", env="staging",
                          intent="canary")], CI)
    m = milestones.create("post-canary traffic shift")
    message = git(repo_of(project), "log", "-1", "--format=%B", "main").rstrip("\n")
    expected = [
        "milestone: post-canary traffic shift",
        "",
        "Operations since last milestone:",
        "  [autoscaler:autoscaler] route.api-v1.weight: 50 → 90 (load-response)",
        "  [human:zara]            route.api-v1.weight: 90 → 80 [override] (manual override)",
        "  [autoscaler:autoscaler] route.api-v1.weight: 80 kept (60 written, max wins) "
        "(load-response)",
        "  [pipeline:ci-pipeline]  upstream.backend.targets: +10.0.1.5 (scale-out)",
        # staging had no value of its own: the line shows the field's own register there
        "  [pipeline:ci-pipeline]  service.checkout.image@staging: unset → checkout:2 (canary)",
        "",
        "Environments affected: production, staging",
        "Causal range: HLC → HLC",
        "Operations: 5",
    ]
    assert re.sub(HLC, "HLC", message).split("\n") == expected
    assert m.operations == 5 and m.affected == ["production", "staging"]
    assert message.endswith("Operations: 5") and m.hlc_from < m.hlc_to


def test_incremental_milestone_reuses_unchanged_trees(project):
    milestones = Milestones(project)
    first = milestones.create("first")
    project.apply([set_op("route.api-v1", "weight", 70)], AUTOSCALER)
    second = milestones.create("second")
    repo = repo_of(project)
    changed = git(repo, "diff", "--name-only", first.commit, second.commit).split()
    # the route changed in production, and so in the environments inheriting it
    assert changed == ["development/route/api-v1.yaml", "production/route/api-v1.yaml",
                       "staging/route/api-v1.yaml"]
    for path in ("production/service", "staging/upstream"):
        assert git(repo, "rev-parse", f"{first.commit}:{path}") == \
            git(repo, "rev-parse", f"{second.commit}:{path}")
    # a staging-only change leaves production's whole tree as it was
    project.apply([set_op("service.checkout", "replicas", 9, env="staging")], ZARA)
    third = milestones.create("third")
    assert git(repo, "rev-parse", f"{second.commit}:production") == \
        git(repo, "rev-parse", f"{third.commit}:production")
    assert git(repo, "diff", "--name-only", second.commit, third.commit).split() == [
        "development/service/checkout.yaml", "staging/service/checkout.yaml"]
    # the incremental trees equal a full projection of the same state
    with project.store.read() as txn:
        for env in project.schema.environments:
            ids = project._entity_ids(txn, env)
            docs = project._resolved(txn, env, ids)
            full = milestones._env_tree(None, {e: docs.get(e) for e in ids})
            assert str(full) == third.trees[env] == git(
                repo, "rev-parse", f"{third.commit}:{env}").strip()


def test_deleted_entity_leaves_the_tree(project):
    milestones = Milestones(project)
    first = milestones.create("first")
    project.apply([{"type": "delete_entity", "entity_id": "upstream.backend"}], ZARA)
    second = milestones.create("gone")
    assert "production/upstream/backend.yaml" in git(repo_of(project), "ls-tree", "-r",
                                                      "--name-only", first.commit)
    assert "upstream" not in git(repo_of(project), "ls-tree", "-r", "--name-only",
                                 second.commit)


def test_refusals(project):
    milestones = Milestones(project)
    milestones.create("first")
    with pytest.raises(NothingToCommit, match="no operations since milestone 1"):
        milestones.create("empty")
    project.apply([{"type": "unset_field", "entity_id": "route.api-v1", "field": "service"}],
                  ZARA)  # 'service' is required: a violation after the merge
    with pytest.raises(ViolationsPresent, match=r"route.api-v1.service.*--force"):
        milestones.create("broken")
    assert len(milestones.list()) == 1
    forced = milestones.create("broken anyway", force=True)
    assert forced.forced and "Projected with --force" in forced.message
    with pytest.raises(Exception, match="unknown environment 'qa'"):
        milestones.create("x", envs=["qa"])
    for bad in ("a\x00b", "\ud800x", "x" * 201, "two\nlines", "  "):
        with pytest.raises(InputError, match="message"):
            milestones.create(bad, force=True)
    with open(os.path.join(project.root, "config.toml"), "a") as handle:
        handle.write('\n[milestones]\nformat = "xml"\n')
    with pytest.raises(InputError, match="'xml' cannot be read back"):
        Milestones(project)


def test_long_ranges_are_summarised(project):
    milestones = Milestones(project)
    milestones.create("first")
    project.apply([set_op("route.api-v1", "weight", w % 100) for w in range(LIST_LIMIT + 50)],
                  AUTOSCALER)
    m = milestones.create("busy day")
    lines = m.message.split("\n")
    assert len(lines) < 20
    assert f"  [autoscaler:autoscaler] route.api-v1: {LIST_LIMIT + 50} operations (weight)" \
        in lines
    assert f"Operations: {LIST_LIMIT + 50}" in lines
    assert any("conflux log --since" in line for line in lines)


def test_diff_since_a_milestone(project):
    milestones = Milestones(project)
    milestones.create("first")
    project.apply([set_op("route.api-v1", "weight", 90, intent="load-response")], AUTOSCALER)
    project.apply([set_op("route.api-v1", "timeout", "10s", intent="fail fast")], ZARA)
    changes = milestones.diff(None, "production")
    assert [(c["entity_id"], c["field"], c["at_milestone"], c["now"]) for c in changes] == [
        ("route.api-v1", "timeout", "30s", "10s"), ("route.api-v1", "weight", 50, 90)]
    assert [op["intent"] for op in changes[1]["operations"]] == ["load-response"]
    # staging inherits production's change
    assert len(milestones.diff(1, "staging")) == 2


def test_push_to_a_local_remote(project, tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    with open(os.path.join(project.root, "config.toml"), "a") as handle:
        handle.write(f'\n[milestones]\nremote = "{remote}"\nformat = "json"\n')
    milestones = Milestones(project)
    m = milestones.create("pushed")
    assert milestones.push() == "refs/heads/main"
    assert git(str(remote), "rev-parse", "main").strip() == m.commit
    doc = json.loads(git(str(remote), "show", "main:production/service/checkout.json"))
    assert doc["image"] == "checkout:1"


def test_schedule(project):
    with open(os.path.join(project.root, "config.toml"), "a") as handle:
        handle.write("\n[milestones]\nevery_ops = 5\nevery_seconds = 3600\n")
    milestones = Milestones(project)
    assert milestones.due()  # 7 ops pending >= 5
    milestones.create("scheduled")
    assert not milestones.due()
    project.apply([set_op("route.api-v1", "weight", 60)], AUTOSCALER)
    assert not milestones.due()  # 1 op, and less than an hour
    last = milestones.last()
    assert milestones.due(now=last.created_ms / 1000 + 3601)


# ---------------------------------------------------------------------------------------------
# crash safety: a real process killed at each step


@pytest.mark.parametrize("point", ["milestone-objects-written", "milestone-recorded"])
def test_interrupted_milestone_is_consistent_and_retried(project, point):
    milestones = Milestones(project)
    first = milestones.create("first")
    project.apply([set_op("route.api-v1", "weight", 75)], AUTOSCALER)
    directory = os.path.dirname(project.root)
    env = dict(os.environ, CONFLUX_FAULT=point, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", "import sys; from conflux.cli import run; "
                           "sys.argv[0] = 'conflux'; run()", "--dir", directory, "milestone",
                           "create", "-m", "interrupted"], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9
    repo = repo_of(project)
    recorded = milestones.list()
    if point == "milestone-objects-written":
        assert [m.id for m in recorded] == [1]
        assert git(repo, "rev-parse", "main").strip() == first.commit
        retried = milestones.create("retried")
        assert retried.id == 2 and retried.operations == 1
    else:
        assert [m.id for m in recorded] == [1, 2]
        assert git(repo, "rev-parse", "main").strip() == first.commit  # the move was lost
        milestones.repair()
        assert git(repo, "rev-parse", "main").strip() == recorded[1].commit
        with pytest.raises(NothingToCommit):
            milestones.create("retried")
    git(repo, "fsck", "--no-dangling")


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_milestone_create_list_show_and_diff(project, capsys):
    d = os.path.dirname(project.root)
    project.close()  # one process opens a store once: the commands open their own
    code, out, err = run_cli(capsys, "--dir", d, "milestone", "create", "-m", "first")
    assert code == 0 and re.match(r"milestone 1: [0-9a-f]{12} first \(7 operations, "
                                  r"production, staging, development\)", out)
    code, out, err = run_cli(capsys, "--dir", d, "milestone", "create", "-m", "again")
    assert code == 2 and out == "" and err == (
        "conflux milestone: error: no operations since milestone 1: nothing to commit\n")
    run_cli(capsys, "--dir", d, "set", "route.api-v1", "weight", "95", "--actor",
            "autoscaler:as-1", "--intent", "surge")
    code, out, _ = run_cli(capsys, "--dir", d, "milestone", "create", "-m", "surge",
                           "--env", "production", "--json")
    created = json.loads(out)
    assert code == 0 and created["envs"] == ["production"] and created["operations"] == 1
    code, out, _ = run_cli(capsys, "--dir", d, "milestone", "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["2", "1"]
    code, out, _ = run_cli(capsys, "--dir", d, "milestone", "show", "2")
    assert "  [autoscaler:as-1] route.api-v1.weight: 50 → 95 (surge)" in out
    code, out, _ = run_cli(capsys, "--dir", d, "milestone", "show", created["commit"][:9])
    assert code == 0 and out.startswith("milestone 2")
    code, out, _ = run_cli(capsys, "--dir", d, "diff", "1")
    assert code == 0 and "  route.api-v1.weight: 50 → 95" in out and "surge" in out
    code, out, _ = run_cli(capsys, "--dir", d, "diff", "--format", "json")
    assert code == 0 and json.loads(out)["changes"] == []
    code, _, err = run_cli(capsys, "--dir", d, "milestone", "show", "99")
    assert code == 2 and "no milestone 99" in err


# ---------------------------------------------------------------------------------------------
# the daemon


def test_milestones_and_diff_through_the_daemon(tmp_path):
    import requests

    from test_daemon import daemon, key, make_project, op

    project = make_project(tmp_path / "served")
    with daemon(project) as (url, _):
        api = requests.Session()
        r = api.post(f"{url}/v1/ops", json={"ops": [op("route.api", "weight", 40),
                                                  op("route.api", "service", "web")]},
                     headers=key("zara"))
        r.raise_for_status()
        api.post(f"{url}/v1/ops", json=op("service.web", "image", "web:1"),
                 headers=key("zara")).raise_for_status()
        denied = api.post(f"{url}/v1/milestones", json={"message": "nope"},
                          headers=key("autoscaler-7"))
        assert denied.status_code == 403 and "milestone" in denied.json()["error"]["message"]
        made = api.post(f"{url}/v1/milestones", json={"message": "first"},
                        headers=key("zara"))
        assert made.status_code == 201, made.text
        first = made.json()
        assert first["id"] == 1 and first["operations"] == 3
        again = api.post(f"{url}/v1/milestones", json={"message": "again"},
                         headers=key("zara"))
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "nothing_to_commit"
        assert api.post(f"{url}/v1/milestones", json={"message": 5},
                        headers=key("zara")).status_code == 422
        api.post(f"{url}/v1/ops", json=op("route.api", "weight", 70),
                 headers=key("autoscaler-7")).raise_for_status()
        diff = api.get(f"{url}/v1/diff", headers=key("reader-1")).json()
        assert [(c["entity_id"], c["field"], c["at_milestone"], c["now"])
                for c in diff["changes"]] == [("route.api", "weight", 40, 70)]
        listed = api.get(f"{url}/v1/milestones", headers=key("reader-1")).json()
        assert [m["id"] for m in listed["milestones"]] == [1]
        one = api.get(f"{url}/v1/milestones/{first['commit'][:10]}", headers=key("reader-1"))
        assert one.json()["message"].startswith("milestone: first\n")
        assert api.get(f"{url}/v1/milestones/7", headers=key("zara")).status_code == 404
        # digits that are not ASCII (str.isdigit() says yes to '³') are not numbers here
        assert api.get(f"{url}/v1/milestones/%C2%B3", headers=key("zara")).status_code == 404
        assert api.get(f"{url}/v1/diff?milestone=%D9%A3", headers=key("zara")).status_code \
            == 404
    repo = str(tmp_path / "served" / ".conflux" / "milestones.git")
    assert git(repo, "log", "--format=%s", "main").split("\n")[0] == "milestone: first"


def test_the_daemon_makes_scheduled_milestones_once_and_pushes(tmp_path):
    import time

    import requests

    from test_daemon import daemon, key, make_project, op

    project = make_project(tmp_path / "scheduled")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    with open(os.path.join(project, ".conflux", "config.toml"), "a") as handle:
        handle.write(f'\n[milestones]\nevery_ops = 3\nremote = "{remote}"\n')

    def milestones(url):
        return requests.get(f"{url}/v1/milestones", headers=key("zara")).json()["milestones"]

    with daemon(project) as (url, _):
        for replicas in (1, 2):
            requests.post(f"{url}/v1/ops", json=op("service.web", "replicas", replicas),
                          headers=key("zara")).raise_for_status()
        time.sleep(2.5)
        assert milestones(url) == []  # 2 operations: not yet
        requests.post(f"{url}/v1/ops", json=op("service.web", "image", "web:1"),
                      headers=key("zara")).raise_for_status()
        deadline = time.monotonic() + 20
        while not milestones(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        made = milestones(url)
        assert [m["title"] for m in made] == ["scheduled: 3 operations"]
        time.sleep(2.5)
        assert len(milestones(url)) == 1  # once, though every tick looks
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if git(str(remote), "rev-parse", "main").strip() == made[0]["commit"]:
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.2)
        assert git(str(remote), "rev-parse", "main").strip() == made[0]["commit"]
