"""The original README's tour, run on three daemons sharing one op log on a real PostgreSQL
server, each step against another node: a change made through one daemon is read, logged,
blamed, put in a milestone and exported through the others.

Reads on a node other than the one written through wait (bounded) for its replicator: a write
is answered once the shared log has it and the node that took it has applied it; the others
apply it within their replication lag.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time

import pytest

from test_daemon import free_port
from test_original_readme import (API_KEYS, AUDIT, BIN, CONFLUX, CREATE_MILESTONE,
                                  EXPORT_AUDIT, GET_STATE, SCHEMA, Shell, SUBMIT_OP, daemon)

NODES = ("a", "b", "c")


def _eventually(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (AssertionError, KeyError, ValueError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f} s: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres):
    assert CONFLUX, f"the conflux command is not installed beside {BIN}"
    dsn = postgres.new_database()
    url = f"postgresql://conflux@127.0.0.1:{postgres.port}/{dsn.rsplit('dbname=', 1)[1]}"
    root = tmp_path_factory.mktemp("readme-cluster")
    home = root / "home"
    home.mkdir()
    shells = {}
    for name in NODES:
        project = root / name / "my-infrastructure"
        (project / "configs").mkdir(parents=True)
        (project / "schema.toml").write_text(SCHEMA)
        shells[name] = shell = Shell(project, home)
        shell("conflux init --schema schema.toml")
        with open(project / ".conflux" / "config.toml", "a") as fh:
            fh.write(f'\n[store]\nurl = "{url}"\n')
    configs = shells["a"].cwd / "configs"
    (configs / "api.yaml").write_text(
        "name: api\nimage: registry.example.com/api:1.4\nreplicas: 3\nports: [8080, 9090]\n")
    (configs / "web.json").write_text(
        '{"name": "web", "image": "registry.example.com/web:2.0", "env_vars": {"LOG": '
        '"info"}}\n')
    key_hash = shells["a"]('conflux auth hash-key "your-api-key"').stdout.strip()
    ports = {}
    with contextlib.ExitStack() as stack:
        for name, shell in shells.items():
            # configuration files are each node's own: the same on every node
            (shell.cwd / ".conflux" / "api-keys.toml").write_text(API_KEYS.format(hash=key_hash))
            ports[name] = free_port()
            stack.enter_context(daemon(shell, f"conflux daemon --port {ports[name]}",
                                       ports[name]))
        yield shells, ports


def _curl(shells, ports, node: str, snippet: str):
    return json.loads(shells[node](snippet.replace("localhost:9400",
                                                   f"localhost:{ports[node]}")).stdout)


def test_the_quick_start_across_three_nodes(cluster):
    shells, ports = cluster
    a, b, c = (shells[n] for n in NODES)
    a("conflux import ./configs/ --entity-type service")
    _eventually(lambda: "service.web" in json.loads(b("conflux get service.web --json")
                                                    .stdout)["entity_id"],
                "node b reads the import made on node a")
    b('conflux set route.api weight 80 --intent "shifting traffic for canary"')
    got = _eventually(lambda: json.loads(c("conflux get route.api --json").stdout),
                      "node c reads the change made on node b")
    assert got["fields"]["weight"]["value"] == 80
    assert "route.api" in c("conflux get route.api").stdout
    assert "shared log" in a("conflux status").stdout
    # every node holds the same log, whoever took each write
    def same_logs():
        logs = [json.loads(shells[n]("conflux log --limit 10 --json").stdout) for n in NODES]
        return logs[0] if logs[0] == logs[1] == logs[2] else None
    log = _eventually(same_logs, "the same log on every node")
    assert log[0]["intent"] == "shifting traffic for canary"
    assert {e["entity_id"] for e in log} == {"route.api", "service.api", "service.web"}
    blame = a("conflux blame route.api").stdout
    assert "human:zara" in blame and "80" in blame
    c('conflux milestone create -m "post-canary traffic shift"')
    message = c("git --git-dir .conflux/milestones.git log -1 --format=%B").stdout
    assert "  [human:zara] route.api.weight: unset → 80 (shifting traffic for canary)\n" \
        in message
    assert "  [human:zara] service.api.ports: +8080 +9090 (import ./configs/)\n" in message


def test_the_rest_api_across_three_nodes(cluster):
    shells, ports = cluster
    for node in NODES:
        state = _eventually(lambda node=node: _curl(shells, ports, node, GET_STATE),
                            f"state on {node}")
        assert state["entities"]["service.api"]["replicas"] == 3
    ack = _curl(shells, ports, "b", SUBMIT_OP)
    assert ack["seq"] > 0 and ack["op_id"]
    # read-your-writes on the node written through; the others within their lag
    assert _curl(shells, ports, "b", GET_STATE)["entities"]["service.api"]["replicas"] == 5
    for node in ("a", "c"):
        _eventually(lambda node=node: _curl(shells, ports, node, GET_STATE)["entities"][
            "service.api"]["replicas"] == 5, f"the op on node {node}")
    milestone = _curl(shells, ports, "a", CREATE_MILESTONE)
    assert milestone["title"] == "Deploy v2.0" and milestone["envs"] == ["production"]
    assert "[pipeline:ci-pipeline] service.api.replicas: 3 → 5 (Scale for traffic)" \
        in milestone["message"]
    exports = {}
    for node in NODES:
        lines = [json.loads(line) for line in shells[node](EXPORT_AUDIT.replace(
            "localhost:9400", f"localhost:{ports[node]}")).stdout.splitlines() if line.strip()]
        exports[node] = [line for line in lines if "op_id" in line]
        assert exports[node][-1]["actor"] == "ci-pipeline"
    assert exports["a"] == exports["b"] == exports["c"]
    refused = _curl(shells, ports, "c", GET_STATE.replace("your-api-key", "not-the-key"))
    assert refused["error"]["code"] == "unauthorized"


def test_audit_export_and_verify_on_another_node(cluster):
    shells, _ = cluster
    out = shells["c"](AUDIT).stdout
    assert "OK" in out
    lines = (pathlib.Path(shells["c"].cwd) / "audit.jsonl").read_text().splitlines()
    assert any('"Scale for traffic"' in line for line in lines)
