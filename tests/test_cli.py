"""The ``conflux`` command line, driven in-process through ``conflux.cli.main`` (and a few
times through a real subprocess).

Every in-process test runs on both merge-core twins: the engine the CLI opens picks the
``core`` fixture's twin as its default.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

import conflux
from conflux.actors import default_actor
from conflux.cli import COMMANDS, get_parser, main
from conflux.engine import Engine

from conftest import EXAMPLE_SCHEMA, ROOT

CLI_REFERENCE = ROOT / "docs" / "cli.md"
PACKAGE_PARENT = str(pathlib.Path(conflux.__file__).resolve().parent.parent)
CLI_CODE = "import sys; from conflux.cli import main; sys.exit(main(sys.argv[1:]))"

EXTRA_SCHEMA = """\
name = "extra"
version = "2.0.0"

[environments]
base = "prod"
overlays = [ { name = "dev", inherits = "prod" } ]

[entity.flag]
fields = [
    { name = "enabled", type = "bool",           merge = "lww" },
    { name = "ratio",   type = "float",          merge = "max" },
    { name = "hosts",   type = "list<string>",   merge = "lww" },
    { name = "waits",   type = "list<duration>", merge = "set" },
]
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def json(self):
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    """No actor or project from the caller's environment."""
    monkeypatch.delenv("CONFLUX_ACTOR", raising=False)
    monkeypatch.delenv("CONFLUX_PROJECT", raising=False)


@pytest.fixture
def on_core(monkeypatch, core):
    """The engine the CLI opens runs on the twin under test."""
    engine_module = importlib.import_module("conflux.engine.engine")
    monkeypatch.setattr(engine_module, "default_core", core)
    return core


@pytest.fixture
def project(tmp_path) -> str:
    return str(tmp_path / "project")


@pytest.fixture
def cli(capsys, project):
    """``cli(*args)`` runs ``conflux --dir <project> *args`` in-process."""

    def run(*args: str, directory: str | None = None) -> Result:
        capsys.readouterr()
        argv = ["--dir", directory or project, *args]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def ok(cli):
    """Like ``cli``, asserting success and a quiet stderr."""

    def run(*args: str, **kw) -> Result:
        res = cli(*args, **kw)
        assert res.code == 0, (args, res.err)
        assert res.err == "", (args, res.err)
        return res

    return run


@pytest.fixture
def initialised(on_core, ok, project):
    ok("init", "--schema", str(EXAMPLE_SCHEMA))
    return project


@pytest.fixture
def populated(initialised, ok):
    """A project with a service, a route and an upstream in production."""
    ok("set", "service.checkout", "image", "registry.local/checkout:1.4.2",
       "--actor", "human:zara", "--intent", "initial release")
    ok("set", "service.checkout", "ports", "8080", "8443", "--add", "--actor", "human:zara")
    ok("set", "service.checkout", "tier", "web", "--actor", "human:zara")
    ok("set", "route.api-v1", "service", "checkout", "--actor", "human:zara")
    ok("set", "route.api-v1", "weight", "50", "--actor", "autoscaler:autoscaler-7",
       "--intent", "load-response")
    ok("set", "upstream.backend", "targets", "10.0.1.3", "--add",
       "--actor", "pipeline:ci-pipeline")
    return initialised


def snapshot(project: str, core) -> dict:
    """Everything a write could change: the log, the records, the clock, the indexes."""
    with Engine(project, core=core) as engine:
        status = engine.status()
        return {"operations": status["operations"], "clock": status["clock"],
                "records": engine.records(), "entries": engine.entries(),
                "conflicts": engine.conflicts(), "violations": engine.violations()}


def run_subprocess(*args: str, cwd=None, env_extra: dict | None = None,
                   env_drop=("CONFLUX_ACTOR", "CONFLUX_PROJECT")):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH"))
                                        if p)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", CLI_CODE, *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def command_names() -> list[str]:
    parser = get_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


# ------------------------------------------------------------------------------------------
# help and documentation


def test_every_command_is_registered():
    names = command_names()
    assert len(names) == len(COMMANDS)
    assert set(names) == {"init", "import", "export", "set", "delete", "move", "tree", "get",
                          "log", "blame",
                          "status", "promote", "conflicts", "resolve", "milestone",
                          "rollback", "diff",
                          "watch", "daemon", "store", "auth", "rbac", "keys", "audit",
                          "bulk-set", "completion"}


@pytest.mark.parametrize("name", command_names())
def test_command_help(cli, name):
    res = cli(name, "--help")
    assert res.code == 0
    assert res.err == ""
    assert res.out.startswith(f"usage: conflux {name}")
    sub = next(a for a in get_parser()._actions if a.dest == "command")
    description = sub.choices[name].description
    assert description, f"'conflux {name}' has no description"
    assert " ".join(description.split()) in " ".join(res.out.split())


def test_top_level_help_lists_every_command(cli):
    res = cli("--help")
    assert res.code == 0
    for name in command_names():
        assert re.search(rf"^\s+{name}\s+\S", res.out, re.M), name


@pytest.mark.parametrize("name", command_names())
def test_command_is_in_the_reference_table(name):
    text = CLI_REFERENCE.read_text()
    documented = set(re.findall(r"^\|\s*\[`conflux ([a-z-]+)`\]", text, re.M))
    assert name in documented, (f"'conflux {name}' is missing from docs/cli.md's command "
                                "table: run 'make docs'")


def test_version(cli):
    res = cli("--version")
    assert res.code == 0
    assert res.out.strip() == f"conflux {conflux.__version__}"


# ------------------------------------------------------------------------------------------
# init


def test_init_from_example(on_core, ok, project, core):
    res = ok("init", "--schema", str(EXAMPLE_SCHEMA))
    assert "my-infrastructure" in res.out
    assert "production, staging, development" in res.out
    assert f"core: {core.IMPLEMENTATION}" in res.out
    root = pathlib.Path(project, ".conflux")
    assert (root / "schema.toml").read_text() == EXAMPLE_SCHEMA.read_text()
    assert (root / "config.toml").is_file()
    assert (root / "store" / "data.mdb").is_file()
    assert snapshot(project, core)["operations"] == 0


def test_init_twice_is_refused(on_core, ok, cli, project, core):
    ok("init", "--schema", str(EXAMPLE_SCHEMA))
    ok("set", "service.a", "image", "x")
    res = cli("init", "--schema", str(EXAMPLE_SCHEMA))
    assert res.code == 2
    assert len(res.err_lines) == 1
    assert "already" in res.err
    assert snapshot(project, core)["operations"] == 1


def test_init_from_bad_schema(on_core, cli, tmp_path, project):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n'
                   "[entity.route]\n"
                   "fields = [\n"
                   '    { name = "path", type = "string", merge = "lww" },\n'
                   '    { name = "weight", type = "string", merge = "max" },\n'
                   "]\n")
    res = cli("init", "--schema", str(bad))
    assert res.code == 2
    assert res.out == ""
    assert len(res.err_lines) == 1
    line = res.err_lines[0]
    assert line.startswith("conflux init: error: ")
    assert str(bad) in line and ":5" in line
    assert "route" in line and "weight" in line
    assert not os.path.exists(os.path.join(project, ".conflux"))


def test_init_from_missing_schema(on_core, cli, tmp_path, project):
    res = cli("init", "--schema", str(tmp_path / "nowhere.toml"))
    assert res.code == 2
    assert len(res.err_lines) == 1 and "nowhere.toml" in res.err
    assert not os.path.exists(os.path.join(project, ".conflux"))


# ------------------------------------------------------------------------------------------
# set / get round trips, every field type


def get_json(ok, entity, *extra):
    return ok("get", entity, *extra, "--json").json()


def test_string_round_trip(initialised, ok):
    res = ok("set", "service.checkout", "image", "registry.local/checkout:1.4.2")
    assert res.out.startswith("ok: service.checkout.image = registry.local/checkout:1.4.2 "
                              "in production (op ")
    assert ok("get", "service.checkout", "image").out == "registry.local/checkout:1.4.2\n"
    doc = get_json(ok, "service.checkout", "image")
    assert doc["entity_id"] == "service.checkout" and doc["env"] == "production"
    assert doc["fields"]["image"]["value"] == "registry.local/checkout:1.4.2"
    # a string that looks like a number stays a string
    ok("set", "service.checkout", "image", "42")
    assert get_json(ok, "service.checkout", "image")["fields"]["image"]["value"] == "42"


def test_int_round_trip(initialised, ok):
    ok("set", "route.api", "weight", "50")
    assert ok("get", "route.api", "weight").out == "50\n"
    assert get_json(ok, "route.api")["fields"]["weight"]["value"] == 50
    ok("set", "route.api", "weight", "3")  # a max field: 50 is kept
    assert get_json(ok, "route.api")["fields"]["weight"]["value"] == 50
    ok("set", "route.api", "weight", "70")
    assert get_json(ok, "route.api")["fields"]["weight"]["value"] == 70


def test_int64_bounds_are_accepted(on_core, ok, tmp_path):
    schema = tmp_path / "schema.toml"
    schema.write_text('[environments]\nbase = "prod"\n\n[entity.route]\nfields = [\n'
                      '    { name = "weight", type = "int", merge = "max" },\n]\n')
    ok("init", "--schema", str(schema))
    ok("set", "route.a", "weight", str(2 ** 63 - 1))
    assert get_json(ok, "route.a")["fields"]["weight"]["value"] == 2 ** 63 - 1
    ok("set", "route.b", "weight", str(-2 ** 63))
    assert get_json(ok, "route.b")["fields"]["weight"]["value"] == -2 ** 63


@pytest.mark.parametrize("text, ms, shown", [("30s", 30_000, "30s"),
                                             ("1h30m", 5_400_000, "1h30m"),
                                             ("250ms", 250, "250ms"),
                                             ("90s", 90_000, "1m30s")])
def test_duration_round_trip(initialised, ok, text, ms, shown):
    res = ok("set", "route.api", "timeout", text)
    assert f"route.api.timeout = {shown} in production" in res.out
    assert ok("get", "route.api", "timeout").out == f"{shown}\n"
    assert get_json(ok, "route.api")["fields"]["timeout"]["value"] == ms


def test_ref_round_trip(initialised, ok):
    ok("set", "service.checkout", "image", "x")
    ok("set", "route.api", "service", "checkout")
    assert ok("get", "route.api", "service").out == "service.checkout\n"
    ok("set", "route.api", "service", "service.checkout")
    assert get_json(ok, "route.api")["fields"]["service"]["value"] == "service.checkout"


def test_map_round_trip(initialised, ok):
    ok("set", "service.checkout", "env_vars", '{"LOG_LEVEL": "info", "N": 3}')
    assert ok("get", "service.checkout", "env_vars").out == '{"LOG_LEVEL":"info","N":3}\n'
    value = get_json(ok, "service.checkout")["fields"]["env_vars"]["value"]
    assert value == {"LOG_LEVEL": "info", "N": 3}


def test_set_field_add_remove(initialised, ok):
    res = ok("set", "service.checkout", "ports", "8443", "8080", "--add")
    assert "service.checkout.ports +8443 +8080 in production" in res.out
    assert get_json(ok, "service.checkout")["fields"]["ports"]["value"] == [8080, 8443]
    ok("set", "service.checkout", "ports", "9090", "--add")
    res = ok("set", "service.checkout", "ports", "8080", "--remove")
    assert "service.checkout.ports -8080" in res.out
    assert get_json(ok, "service.checkout")["fields"]["ports"]["value"] == [8443, 9090]
    assert ok("get", "service.checkout", "ports").out == "[8443,9090]\n"


def test_grow_field_only_grows(initialised, ok, cli, project, core):
    ok("set", "service.checkout", "labels", "team-a", "--add")
    ok("set", "service.checkout", "labels", "pci", "team-a", "--add")
    assert get_json(ok, "service.checkout")["fields"]["labels"]["value"] == ["pci", "team-a"]
    before = snapshot(project, core)
    res = cli("set", "service.checkout", "labels", "pci", "--remove")
    assert res.code == 2 and len(res.err_lines) == 1 and "grow" in res.err
    assert snapshot(project, core) == before


def test_bool_float_and_lists_round_trip(on_core, ok, tmp_path, project):
    schema = tmp_path / "extra.toml"
    schema.write_text(EXTRA_SCHEMA)
    ok("init", "--schema", str(schema))
    ok("set", "flag.a", "enabled", "true")
    ok("set", "flag.a", "ratio", "0.25")
    ok("set", "flag.a", "hosts", '["b.example", "a.example"]')
    ok("set", "flag.a", "waits", "30s", "1h30m", "--add")
    fields = get_json(ok, "flag.a")["fields"]
    assert fields["enabled"]["value"] is True
    assert fields["ratio"]["value"] == 0.25
    assert fields["hosts"]["value"] == ["b.example", "a.example"]  # lww list keeps order
    assert fields["waits"]["value"] == [30_000, 5_400_000]
    text = ok("get", "flag.a").out
    assert re.search(r"^\s+enabled\s+true\s*$", text, re.M)
    assert re.search(r"^\s+waits\s+\[\"30s\",\"1h30m\"\]\s*$", text, re.M)
    ok("set", "flag.a", "enabled", "false")
    assert ok("get", "flag.a", "enabled").out == "false\n"
    ok("set", "flag.a", "ratio", "0.75")
    assert ok("get", "flag.a", "ratio").out == "0.75\n"


def test_get_text_lists_fields_with_defaults(populated, ok):
    res = ok("get", "service.checkout")
    lines = res.out.splitlines()
    assert lines[0] == "service.checkout in production"
    assert re.search(r"^\s+image\s+registry.local/checkout:1.4.2\s*$", res.out, re.M)
    assert re.search(r"^\s+replicas\s+1\s+\(default\)\s*$", res.out, re.M)
    doc = get_json(ok, "service.checkout")
    assert doc["fields"]["replicas"] == {"value": 1, "env": None, "default": True,
                                         "hlc": None}
    assert doc["fields"]["image"]["hlc"].startswith("hlc:")


def test_unset(populated, ok, cli):
    ok("set", "service.checkout", "replicas", "4")
    assert ok("get", "service.checkout", "replicas").out == "4\n"
    res = ok("set", "service.checkout", "replicas", "--unset")
    assert "service.checkout.replicas unset in production" in res.out
    # back to the default
    assert re.search(r"^\s+replicas\s+1\s+\(default\)", ok("get", "service.checkout").out,
                     re.M)
    ok("set", "service.checkout", "image", "--unset")
    res = cli("get", "service.checkout", "image")
    assert res.code == 2 and len(res.err_lines) == 1 and "not set" in res.err
    assert "image" not in get_json(ok, "service.checkout")["fields"]
    # a later write revives it
    ok("set", "service.checkout", "image", "again")
    assert ok("get", "service.checkout", "image").out == "again\n"


def test_delete(populated, ok, cli):
    res = ok("delete", "route.api-v1", "--intent", "retired", "--actor", "human:zara")
    assert res.out.startswith("ok: deleted route.api-v1 in production (op ")
    res = cli("get", "route.api-v1")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "route.api-v1" in res.err and "does not exist" in res.err
    log = ok("log", "--limit", "1").out
    assert "route.api-v1 deleted" in log and "(retired)" in log
    # a later write revives the entity, without the deleted fields
    ok("set", "route.api-v1", "path", "/v2")
    fields = get_json(ok, "route.api-v1")["fields"]
    assert fields["path"]["value"] == "/v2"
    assert "weight" not in fields


def test_delete_json(populated, ok):
    doc = ok("delete", "upstream.backend", "--json").json()
    assert set(doc) >= {"op_id", "hlc", "seq"} and doc["hlc"].startswith("hlc:")


def test_set_json_ack(initialised, ok):
    doc = ok("set", "service.a", "image", "x", "--json").json()
    assert doc["seq"] == 1 and doc["hlc"].startswith("hlc:") and doc["op_id"]
    assert "duplicate" not in doc


# ------------------------------------------------------------------------------------------
# environments


def test_get_env_inheritance(populated, ok):
    res = ok("get", "service.checkout", "--env", "development")
    assert res.out.splitlines()[0] == "service.checkout in development"
    assert re.search(r"^\s+image\s+registry.local/checkout:1.4.2\s+\(from production\)",
                     res.out, re.M)
    ok("set", "service.checkout", "image", "canary", "--env", "staging")
    res = ok("get", "service.checkout", "--env", "development")
    assert re.search(r"^\s+image\s+canary\s+\(from staging\)", res.out, re.M)
    assert re.search(r"^\s+ports\s+\[8080,8443\]\s+\(from production\)", res.out, re.M)
    res = ok("get", "service.checkout", "--env", "staging")
    assert re.search(r"^\s+image\s+canary\s*$", res.out, re.M)  # its own value: no origin
    doc = ok("get", "service.checkout", "--env", "development", "--json").json()
    assert doc["env"] == "development"
    assert doc["fields"]["image"]["env"] == "staging"
    assert doc["fields"]["ports"]["env"] == "production"
    # production is untouched
    assert ok("get", "service.checkout", "image").out == "registry.local/checkout:1.4.2\n"


# ------------------------------------------------------------------------------------------
# log


def log_lines(ok, *args):
    return ok("log", *args).out.splitlines()


def test_log_newest_first_and_limit(populated, ok):
    lines = log_lines(ok)
    assert len(lines) == 6
    seqs = [int(line.split()[0]) for line in lines]
    assert seqs == [6, 5, 4, 3, 2, 1]
    assert "[pipeline:ci-pipeline]" in lines[0] and "upstream.backend.targets: +10.0.1.3" \
        in lines[0]
    assert "(initial release)" in lines[-1]
    assert re.search(r"hlc:\d{13}\.\d{4}", lines[0])
    assert [int(x.split()[0]) for x in log_lines(ok, "--limit", "2")] == [6, 5]
    assert len(log_lines(ok, "--limit", "0")) == 6


def test_log_default_limit_is_20(initialised, ok):
    for i in range(25):
        ok("set", "route.r", "weight", str(i))
    assert len(log_lines(ok)) == 20
    assert len(log_lines(ok, "--limit", "0")) == 25


def test_log_filters(populated, ok):
    lines = log_lines(ok, "--entity", "service.checkout")
    assert [int(x.split()[0]) for x in lines] == [3, 2, 1]
    lines = log_lines(ok, "--actor", "zara")
    assert [int(x.split()[0]) for x in lines] == [4, 3, 2, 1]
    lines = log_lines(ok, "--actor", "autoscaler:autoscaler-7")
    assert [int(x.split()[0]) for x in lines] == [5]
    assert "route.api-v1.weight = 50" in lines[0] and "(load-response)" in lines[0]
    assert log_lines(ok, "--actor", "pipeline:zara") == []
    assert [int(x.split()[0]) for x in log_lines(ok, "--since", "4")] == [6, 5, 4]
    assert len(log_lines(ok, "--since", "2000-01-01")) == 6
    assert log_lines(ok, "--since", "2999-01-01T00:00:00") == []
    lines = log_lines(ok, "--entity", "service.checkout", "--actor", "human:zara",
                      "--since", "2", "--limit", "1")
    assert [int(x.split()[0]) for x in lines] == [3]


def test_log_since_hlc(initialised, ok):
    ok("set", "route.r", "weight", "1")
    ack = ok("set", "route.r", "weight", "2", "--json").json()
    ok("set", "route.r", "weight", "3")
    seqs = [int(x.split()[0]) for x in log_lines(ok, "--since", ack["hlc"])]
    assert seqs == [3, 2]


def test_log_json(populated, ok):
    entries = ok("log", "--json", "--limit", "0").json()
    assert [e["seq"] for e in entries] == [6, 5, 4, 3, 2, 1]
    first = entries[-1]
    assert first["type"] == "set_field" and first["entity_id"] == "service.checkout"
    assert first["field"] == "image" and first["value"] == "registry.local/checkout:1.4.2"
    assert first["actor"] == "zara" and first["actor_class"] == "human"
    assert first["intent"] == "initial release" and first["env"] == "production"
    assert first["hlc"].startswith("hlc:") and first["override"] is False
    adds = entries[-2]
    assert adds["type"] == "add_elements" and adds["elements"] == [8080, 8443]
    hlcs = [e["hlc"] for e in entries]
    assert len(set(hlcs)) == len(hlcs)


def test_log_shows_previous_value(initialised, ok):
    ok("set", "service.a", "image", "one")
    ok("set", "service.a", "image", "two", "--intent", "upgrade")
    line = log_lines(ok, "--limit", "1")[0]
    assert "service.a.image: one → two" in line and "(upgrade)" in line
    assert ok("log", "--json", "--limit", "1").json()[0]["previous"] == "one"


# ------------------------------------------------------------------------------------------
# actors


def test_actor_option_and_env_var(initialised, ok, monkeypatch):
    ok("set", "service.a", "image", "1", "--actor", "pipeline:ci-pipeline")
    ok("set", "service.a", "image", "2", "--actor", "zara")
    monkeypatch.setenv("CONFLUX_ACTOR", "operator:k8s-op")
    ok("set", "service.a", "image", "3")
    ok("set", "service.a", "image", "4", "--actor", "policy:opa")  # the option wins
    monkeypatch.delenv("CONFLUX_ACTOR")
    ok("set", "service.a", "image", "5")
    lines = log_lines(ok)
    assert "[policy:opa]" in lines[1]
    assert "[operator:k8s-op]" in lines[2]
    assert "[human:zara]" in lines[3]
    assert "[pipeline:ci-pipeline]" in lines[4]
    me = default_actor()
    assert f"[{me.cls}:{me.id}]" in lines[0] and me.cls == "human"


# ------------------------------------------------------------------------------------------
# blame


def test_blame(populated, ok):
    ok("set", "route.api-v1", "weight", "80", "--override", "--actor", "human:zara",
       "--intent", "manual override")
    res = ok("blame", "route.api-v1")
    assert res.out.splitlines()[0] == "route.api-v1 in production"
    weight = next(x for x in res.out.splitlines() if x.strip().startswith("weight"))
    assert "80" in weight and "[human:zara]" in weight and "(manual override)" in weight
    assert re.search(r"hlc:\d{13}\.\d{4}", weight) and "seq 7" in weight
    service = next(x for x in res.out.splitlines() if x.strip().startswith("service"))
    assert "service.checkout" in service and "[human:zara]" in service and "seq 4" in service
    doc = ok("blame", "route.api-v1", "--json").json()
    assert doc["fields"]["weight"]["value"] == 80
    assert doc["fields"]["weight"]["actor"] == "zara"
    assert doc["fields"]["weight"]["actor_class"] == "human"
    assert doc["fields"]["weight"]["intent"] == "manual override"
    assert doc["fields"]["weight"]["seq"] == 7


def test_blame_in_overlay(populated, ok):
    ok("set", "service.checkout", "image", "canary", "--env", "staging",
       "--actor", "pipeline:ci-pipeline", "--intent", "canary")
    res = ok("blame", "service.checkout", "--env", "development")
    image = next(x for x in res.out.splitlines() if x.strip().startswith("image"))
    assert "(from staging)" in image and "[pipeline:ci-pipeline]" in image
    assert "(canary)" in image
    ports = next(x for x in res.out.splitlines() if x.strip().startswith("ports"))
    assert "(from production)" in ports and "[human:zara]" in ports


# ------------------------------------------------------------------------------------------
# status


def test_status_text(populated, ok, core):
    res = ok("status")
    shown = {"c": "compiled (Cython)", "py": "pure Python"}[core.IMPLEMENTATION]
    assert re.search(rf"^core\s+{re.escape(shown)}", res.out, re.M)
    assert re.search(r"^project\s+my-infrastructure 1.0.0", res.out, re.M)
    assert re.search(r"^operations\s+6\b", res.out, re.M)
    assert re.search(r"^env\s+production \(base\): 3 entities", res.out, re.M)
    assert re.search(r"^env\s+development <- staging: 3 entities", res.out, re.M)
    assert re.search(r"^conflicts\s+0", res.out, re.M)
    assert re.search(r"^violations\s+0", res.out, re.M)


def test_status_json(populated, ok, core):
    doc = ok("status", "--json").json()
    assert doc["core"] == core.IMPLEMENTATION
    assert doc["operations"] == 6
    assert doc["project"] == "my-infrastructure" and doc["schema_version"] == "1.0.0"
    assert doc["environments"]["production"] == {"entities": 3, "inherits": None}
    assert doc["environments"]["staging"]["inherits"] == "production"
    assert doc["conflicts"] == 0 and doc["violations"] == 0
    assert doc["violation_list"] == []
    assert doc["clock"].startswith("hlc:")


def test_status_shows_violations(initialised, ok):
    ok("set", "route.api", "weight", "20")  # a route without its required service
    doc = ok("status", "--json").json()
    assert doc["violations"] >= 1
    assert any(v["entity_id"] == "route.api" and v["field"] == "service"
               for v in doc["violation_list"])
    text = ok("status").out
    assert re.search(r"production: route\.api\.service: required field 'service'", text)


# ------------------------------------------------------------------------------------------
# promote


def test_promote(populated, ok, project, core):
    ok("set", "service.checkout", "image", "registry.local/checkout:1.6.0-rc1",
       "--env", "staging", "--actor", "pipeline:ci-pipeline", "--intent", "canary")
    ok("set", "service.checkout", "replicas", "2", "--env", "staging")
    ok("set", "route.api-v1", "weight", "10", "--env", "staging")
    before = snapshot(project, core)["operations"]
    res = ok("promote", "--from", "staging", "--to", "production", "service.checkout",
             "--actor", "human:zara", "--intent", "canary healthy")
    assert res.out.startswith("ok: promoted staging → production (")
    assert "field operations" in res.out
    assert snapshot(project, core)["operations"] == before + 1  # one recorded operation
    fields = get_json(ok, "service.checkout")["fields"]
    assert fields["image"]["value"] == "registry.local/checkout:1.6.0-rc1"
    assert fields["image"]["env"] == "production"
    assert fields["replicas"]["value"] == 2
    # only the named entity moved
    assert get_json(ok, "route.api-v1")["fields"]["weight"]["value"] == 50
    line = log_lines(ok, "--limit", "1")[0]
    assert "promote staging → production" in line and "[human:zara]" in line
    assert "(canary healthy)" in line
    entry = ok("log", "--json", "--limit", "1").json()[0]
    assert entry["type"] == "promote"
    assert {(o["entity_id"], o["field"]) for o in entry["operations"]} >= {
        ("service.checkout", "image"), ("service.checkout", "replicas")}


def test_promote_nothing_to_promote(populated, cli, project, core):
    before = snapshot(project, core)
    res = cli("promote", "--from", "staging", "--to", "production")
    assert res.code == 2 and len(res.err_lines) == 1 and "nothing to promote" in res.err
    assert snapshot(project, core) == before


def test_promote_dry_run(populated, ok, project, core):
    ok("set", "service.checkout", "image", "rc", "--env", "staging")
    before = snapshot(project, core)
    res = ok("promote", "--from", "staging", "--to", "production", "--dry-run")
    assert res.out.startswith("would promote staging → production")
    assert snapshot(project, core) == before
    assert ok("get", "service.checkout", "image").out == "registry.local/checkout:1.4.2\n"


# ------------------------------------------------------------------------------------------
# conflicts and resolve


def test_conflicts_and_resolve(initialised, ok, cli, project, core):
    ok("set", "service.checkout", "tier", "web", "--base", "", "--actor", "human:zara",
       "--intent", "user facing")
    ok("set", "service.checkout", "tier", "batch", "--base", "",
       "--actor", "pipeline:ci-pipeline", "--intent", "nightly jobs")
    res = ok("conflicts")
    assert "production: service.checkout.tier  (2 candidates)" in res.out
    assert re.search(r"^\s+web\s+\[human:zara\]\s+hlc:\S+\s+\(user facing\)", res.out, re.M)
    assert re.search(r"^\s+batch\s+\[pipeline:ci-pipeline\]\s+hlc:\S+\s+\(nightly jobs\)",
                     res.out, re.M)
    found = ok("conflicts", "--json").json()
    assert len(found) == 1
    assert found[0]["entity_id"] == "service.checkout" and found[0]["field"] == "tier"
    assert sorted(c["value"] for c in found[0]["candidates"]) == ["batch", "web"]
    assert found[0]["effective"] == "batch"  # the LWW winner meanwhile
    assert ok("conflicts", "--env", "staging", "--json").json() == []
    assert ok("status", "--json").json()["conflicts"] == 1
    assert "(see 'conflux conflicts')" in ok("status").out

    res = ok("resolve", "service.checkout", "tier", "web", "--actor", "human:zara",
             "--intent", "agreed in review")
    assert res.out.startswith("ok: resolved service.checkout.tier = web (op ")
    assert ok("conflicts").out == "no conflicts\n"
    assert ok("conflicts", "--json").json() == []
    assert ok("get", "service.checkout", "tier").out == "web\n"
    assert ok("status", "--json").json()["conflicts"] == 0
    line = log_lines(ok, "--limit", "1")[0]
    assert "(resolved)" in line and "(agreed in review)" in line
    # resolving again: there is no conflict any more
    before = snapshot(project, core)
    res = cli("resolve", "service.checkout", "tier", "batch")
    assert res.code == 2 and len(res.err_lines) == 1 and "no conflict" in res.err
    assert snapshot(project, core) == before


def test_sequential_review_writes_do_not_conflict(initialised, ok):
    ok("set", "service.checkout", "tier", "web")
    ok("set", "service.checkout", "tier", "batch")  # saw "web" (base bound by the store)
    assert ok("conflicts").out == "no conflicts\n"
    assert ok("get", "service.checkout", "tier").out == "batch\n"


# ------------------------------------------------------------------------------------------
# retries and dry runs


def test_op_id_retry_is_acknowledged_once(initialised, ok, project, core):
    first = ok("set", "service.a", "image", "v1", "--op-id", "deploy-42")
    assert first.out.startswith("ok: service.a.image = v1")
    assert "(op deploy-42, seq 1," in first.out
    again = ok("set", "service.a", "image", "v1", "--op-id", "deploy-42")
    assert again.out.startswith("already applied: service.a.image = v1")
    assert "(op deploy-42, seq 1," in again.out
    doc = ok("set", "service.a", "image", "v1", "--op-id", "deploy-42", "--json").json()
    assert doc["duplicate"] is True and doc["seq"] == 1 and doc["op_id"] == "deploy-42"
    assert snapshot(project, core)["operations"] == 1
    assert len(ok("log", "--json").json()) == 1
    hlc = re.search(r"(hlc:\S+)\)", first.out).group(1)
    assert hlc in again.out  # the original operation's clock, not a new one


def test_dry_run_writes_nothing(populated, ok, project, core):
    before = snapshot(project, core)
    res = ok("set", "service.checkout", "image", "would-be", "--dry-run")
    assert res.out.startswith("would write: service.checkout.image = would-be in production")
    doc = ok("set", "service.checkout", "image", "would-be", "--dry-run", "--json").json()
    assert doc["change"]["before"] == "registry.local/checkout:1.4.2"
    assert doc["change"]["after"] == "would-be"
    ok("set", "service.checkout", "ports", "1", "--add", "--dry-run")
    ok("set", "service.new", "image", "x", "--dry-run", "--op-id", "dry-1")
    assert snapshot(project, core) == before
    assert ok("get", "service.checkout", "image").out == "registry.local/checkout:1.4.2\n"
    assert "service.new" not in ok("log", "--json", "--limit", "0").out
    # the dry run's op id was not recorded: it can be used for real afterwards
    res = ok("set", "service.new", "image", "x", "--op-id", "dry-1")
    assert res.out.startswith("ok: ")


# ------------------------------------------------------------------------------------------
# bad input: exit 2, one line on stderr, nothing written


BAD_INPUT = [
    pytest.param(["set", "nope.x", "image", "a"], "nope", id="unknown-entity-type"),
    pytest.param(["set", "service.-bad", "image", "a"], "-bad", id="bad-entity-name"),
    pytest.param(["set", "service." + "n" * 600, "image", "a"], "at most 200 characters",
                 id="entity-name-too-long"),
    pytest.param(["set", "service", "image", "a"], "service", id="entity-without-name"),
    pytest.param(["set", "service.checkout", "colour", "a"], "colour", id="unknown-field"),
    pytest.param(["set", "service.checkout", "replicas", "abc"], "abc", id="wrong-type-int"),
    pytest.param(["set", "service.checkout", "replicas", "1.5"], "1.5", id="float-for-int"),
    pytest.param(["set", "route.api-v1", "timeout", "30x"], "30x", id="bad-duration"),
    pytest.param(["set", "route.api-v1", "timeout", "--", "-5s"], "negative",
                 id="negative-duration"),
    pytest.param(["set", "route.api-v1", "service", "upstream.backend"], "upstream",
                 id="ref-to-wrong-type"),
    pytest.param(["set", "service.checkout", "env_vars", "{not json"], "env_vars",
                 id="map-not-json"),
    pytest.param(["set", "service.checkout", "env_vars", "[1, 2]"], "map", id="list-for-map"),
    pytest.param(["set", "service.checkout", "replicas", str(2 ** 63)], "64-bit",
                 id="above-int64"),
    pytest.param(["set", "service.checkout", "replicas", str(-2 ** 63 - 1)], "64-bit",
                 id="below-int64"),
    pytest.param(["set", "service.checkout", "ports", "99999999999999999999", "--add"],
                 "64-bit", id="element-above-int64"),
    pytest.param(["set", "service.checkout", "image", "x", "--env", "qa"], "qa",
                 id="unknown-env"),
    pytest.param(["get", "service.checkout", "--env", "qa"], "qa", id="get-unknown-env"),
    pytest.param(["set", "service.checkout", "image", "x", "--add"], "image",
                 id="add-on-non-set-field"),
    pytest.param(["set", "service.checkout", "image", "x", "--remove"], "image",
                 id="remove-on-non-set-field"),
    pytest.param(["set", "service.checkout", "ports", "[1, 2]"], "ports",
                 id="set-on-set-field"),
    pytest.param(["set", "service.checkout", "ports", "x", "--add"], "ports",
                 id="wrong-element-type"),
    pytest.param(["set", "service.checkout", "image", "a", "b"], "VALUE",
                 id="two-values-without-add"),
    pytest.param(["set", "service.checkout", "image"], "VALUE", id="no-value"),
    pytest.param(["set", "service.checkout", "ports", "--add"], "at least one",
                 id="add-without-values"),
    pytest.param(["set", "service.checkout", "image", "x", "--unset"], "--unset",
                 id="unset-with-value"),
    pytest.param(["set", "service.checkout", "labels", "--unset"], "grow",
                 id="unset-grow-field"),
    pytest.param(["resolve", "service.checkout", "tier", "web"], "no conflict",
                 id="resolve-without-conflict"),
    pytest.param(["resolve", "service.checkout", "image", "x"], "review",
                 id="resolve-non-review-field"),
    pytest.param(["promote", "--from", "staging", "--to", "staging"], "different",
                 id="promote-same-env"),
    pytest.param(["promote", "--from", "staging", "--to", "qa"], "qa",
                 id="promote-unknown-env"),
    pytest.param(["promote", "--from", "staging", "--to", "production", "service.ghost"],
                 "service.ghost", id="promote-missing-entity"),
    pytest.param(["set", "service.checkout", "image", "x", "--actor", "robot:r2"], "robot",
                 id="unknown-actor-class"),
    pytest.param(["set", "service.checkout", "image", "x", "--actor", "human:za ra"], "za ra",
                 id="bad-actor-id"),
    pytest.param(["set", "service.checkout", "image", "x", "--op-id", "x" * 129], "op_id",
                 id="op-id-too-long"),
    pytest.param(["delete", "nope.x"], "nope", id="delete-unknown-type"),
    pytest.param(["get", "service.ghost"], "service.ghost", id="get-missing-entity"),
    pytest.param(["get", "service.checkout", "colour"], "colour", id="get-unknown-field"),
    pytest.param(["blame", "service.ghost"], "service.ghost", id="blame-missing-entity"),
    pytest.param(["log", "--since", "last tuesday"], "last tuesday", id="log-bad-since"),
]


@pytest.mark.parametrize("argv, mentions", BAD_INPUT)
def test_bad_input(populated, cli, project, core, argv, mentions):
    before = snapshot(project, core)
    res = cli(*argv)
    assert res.code == 2, res
    assert res.out == ""
    assert len(res.err_lines) == 1, res.err
    assert res.err_lines[0].startswith(f"conflux {argv[0]}: error: ")
    assert mentions in res.err_lines[0]
    assert snapshot(project, core) == before


@pytest.mark.parametrize("argv, mentions", [
    (["frobnicate"], "frobnicate"),
    (["set", "service.checkout", "image", "x", "--add", "--unset"], "not allowed"),
    (["log", "--limit", "many"], "many"),
    (["promote", "--to", "production"], "--from"),
    (["set", "service.checkout", "image", "x", "--no-such-option"], "--no-such-option"),
])
def test_usage_errors(populated, cli, project, core, argv, mentions):
    """argparse refusals: status 2, the last stderr line names the problem, nothing written."""
    before = snapshot(project, core)
    res = cli(*argv)
    assert res.code == 2
    assert res.out == ""
    assert "error:" in res.err_lines[-1] and mentions in res.err_lines[-1]
    assert snapshot(project, core) == before


def test_bad_input_with_dry_run_still_refused(populated, cli, project, core):
    before = snapshot(project, core)
    res = cli("set", "service.checkout", "replicas", "many", "--dry-run")
    assert res.code == 2 and len(res.err_lines) == 1
    assert snapshot(project, core) == before


def test_stale_base_for_non_review_field(populated, cli, project, core):
    """A ``--base`` that no longer matches the current value is a failed precondition."""
    before = snapshot(project, core)
    res = cli("set", "service.checkout", "image", "y", "--base", "no-such-op")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "does not match" in res.err and "no-such-op" in res.err
    assert snapshot(project, core) == before
    # the op id of the value in force is a base that holds
    current = cli("get", "service.checkout", "image", "--json").json()
    op_id = current["fields"]["image"]["op_id"]
    res = cli("set", "service.checkout", "image", "y", "--base", op_id)
    assert res.code == 0, res.err
    assert cli("get", "service.checkout", "image").out == "y\n"


# ------------------------------------------------------------------------------------------
# outside a project


@pytest.mark.parametrize("argv", [["status"], ["get", "service.a"], ["log"],
                                  ["set", "service.a", "image", "x"], ["conflicts"]])
def test_outside_a_project(cli, tmp_path, argv):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli(*argv, directory=str(empty))
    assert res.code != 0
    assert res.out == ""
    assert len(res.err_lines) == 1
    assert "no Conflux project" in res.err and str(empty) in res.err
    assert "conflux init" in res.err
    assert list(empty.iterdir()) == []


# ------------------------------------------------------------------------------------------
# a real process


def test_subprocess_end_to_end(tmp_path):
    proj = str(tmp_path / "proj")
    done = run_subprocess("--dir", proj, "init", "--schema", str(EXAMPLE_SCHEMA))
    assert done.returncode == 0, done.stderr
    assert "initialised" in done.stdout
    done = run_subprocess("--dir", proj, "set", "route.api-v1", "timeout", "1h30m",
                          "--intent", "slow backend",
                          env_extra={"CONFLUX_ACTOR": "autoscaler:autoscaler-7"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: route.api-v1.timeout = 1h30m in production")
    done = run_subprocess("--dir", proj, "get", "route.api-v1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fields"]["timeout"]["value"] == 5_400_000
    done = run_subprocess("--dir", proj, "log")
    assert done.returncode == 0
    assert "[autoscaler:autoscaler-7]" in done.stdout and "(slow backend)" in done.stdout
    done = run_subprocess("--dir", proj, "status", "--json")
    assert json.loads(done.stdout)["operations"] == 1


def test_subprocess_project_from_cwd_and_env(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    done = run_subprocess("init", "--schema", str(EXAMPLE_SCHEMA), cwd=str(proj))
    assert done.returncode == 0, done.stderr
    assert (proj / ".conflux" / "store" / "data.mdb").is_file()
    done = run_subprocess("set", "service.a", "image", "x", cwd=str(tmp_path),
                          env_extra={"CONFLUX_PROJECT": str(proj)})
    assert done.returncode == 0, done.stderr
    done = run_subprocess("get", "service.a", "image", cwd=str(proj))
    assert done.returncode == 0 and done.stdout == "x\n"


def test_subprocess_outside_a_project(tmp_path):
    done = run_subprocess("status", cwd=str(tmp_path))
    assert done.returncode == 1
    assert done.stdout == ""
    errors = [x for x in done.stderr.splitlines() if x.startswith("conflux ")]
    assert len(errors) == 1 and "no Conflux project" in errors[0]
    assert not (tmp_path / ".conflux").exists()


def test_subprocess_bad_input_exit_status(tmp_path):
    proj = str(tmp_path / "proj")
    assert run_subprocess("--dir", proj, "init", "--schema",
                          str(EXAMPLE_SCHEMA)).returncode == 0
    done = run_subprocess("--dir", proj, "set", "service.a", "replicas", str(2 ** 64))
    assert done.returncode == 2
    errors = [x for x in done.stderr.splitlines() if x.startswith("conflux ")]
    assert len(errors) == 1 and "64-bit" in errors[0]
    done = run_subprocess("--dir", proj, "status", "--json")
    assert json.loads(done.stdout)["operations"] == 0


def test_subprocess_help():
    done = run_subprocess("--help")
    assert done.returncode == 0
    for name in command_names():
        assert name in done.stdout


def test_man_page_documents_every_command(tmp_path):
    """The man page is built with argparse-manpage from the same parser as --help."""
    from build_manpages.manpage import Manpage

    from conflux.cli import COMMANDS, get_parser

    page = str(Manpage(get_parser()))
    assert ".SH NAME" in page
    for module in COMMANDS:
        name = module.__name__.rsplit(".", 1)[1].rstrip("_")  # import_: 'import' is a keyword
        name = name.replace("_", "\\-")  # bulk_set: 'conflux bulk-set', '-' escaped
        assert f"conflux\\fR \\fI\\,{name}\\/" in page, name


# ------------------------------------------------------------------------------------------
# the original Conflux's commands and flags


@pytest.fixture
def routes(ok, project):
    ok("init", "--schema", str(EXAMPLE_SCHEMA))
    for name, weight in (("api-a", 10), ("api-b", 20), ("web", 30)):
        ok("set", f"route.{name}", "service", "cart")
        ok("set", f"route.{name}", "weight", str(weight))
    ok("set", "service.api-x", "image", "x:1")
    return ok


def test_bulk_set_writes_every_match_in_one_batch(routes, cli, project):
    res = routes("bulk-set", "route.api-*", "weight", "50", "--intent", "even out",
                 "--dry-run")
    assert "would set weight on 2 entities" in res.out and "route.api-a.weight: 10 -> 50" \
        in res.out
    assert routes("get", "route.api-a", "weight").out.strip() == "10"
    res = routes("bulk-set", "*.api-*", "weight", "50", "-t", "route", "--json")
    ops = res.json()["ops"]
    assert [o["entity_id"] for o in ops] == ["route.api-a", "route.api-b"]
    assert ops[1]["seq"] == ops[0]["seq"] + 1  # one batch
    assert routes("get", "route.api-b", "weight").out.strip() == "50"
    assert routes("get", "route.web", "weight").out.strip() == "30"
    # a max field keeps the higher value, and says so
    res = routes("bulk-set", "route.*", "weight", "25")
    assert "route.web.weight: 30 -> 25  (the merge keeps 30)" in res.out
    before = cli("log", "--limit", "0", "-o", "json").json()
    for args, words in ((("route.nothing-*", "weight", "1"), "no entity"),
                        (("*", "weight", "1"), "not a field of type service"),
                        (("route.*", "weight", "500"), "above max 100"),
                        (("route.*", "weight", "1", "-t", "nope"), "nope")):
        res = cli("bulk-set", *args)
        assert res.code == 2 and words in res.err and res.out == "", (args, res.err)
        assert len(res.err.strip().splitlines()) == 1
    assert cli("log", "--limit", "0", "-o", "json").json() == before


def test_get_everything_and_its_output_forms(routes, cli):
    res = routes("get")
    assert res.out.startswith("4 entities in production")
    assert "route.api-a  path=" not in res.out and "route.api-a  weight=10" in res.out
    every = cli("get", "-o", "json").json()
    assert every["entities"]["route.web"] == {"weight": 30, "service": "service.cart"}
    assert list(cli("get", "-t", "service", "-o", "json").json()["entities"]) == ["service.api-x"]
    import yaml

    assert yaml.safe_load(cli("get", "-o", "yaml").out)["route.api-b"]["weight"] == 20
    assert yaml.safe_load(cli("get", "route.web", "-o", "yaml").out) == {
        "route.web": {"weight": 30, "service": "service.cart"}}


def test_log_output_forms_and_verbose(routes, cli):
    entries = cli("log", "--limit", "2", "-o", "json").json()
    assert [e["entity_id"] for e in entries] == ["service.api-x", "route.web"]
    res = routes("log", "--limit", "2", "--verbose")
    assert f"op_id: {entries[0]['op_id']}" in res.out
    assert "previous: 30" not in res.out  # a first write has no previous value
    routes("set", "route.web", "weight", "40")
    assert "previous: 30" in routes("log", "--limit", "1", "-v").out


def test_rbac_show_roles_is_list_roles(routes, cli, project):
    with open(os.path.join(project, ".conflux", "rbac.toml"), "w") as fh:
        fh.write('[role.reader]\npermissions = [{ actions = ["read"], resource = "*" }]\n')
    assert cli("rbac", "show-roles").out == cli("rbac", "list-roles").out
    assert "role reader" in cli("rbac", "show-roles").out


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_and_completions(shell, tmp_path):
    script = subprocess.run([sys.executable, "-c", CLI_CODE, "completion", shell],
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "conflux" in script.stdout and len(script.stdout) > 200
    out = tmp_path / "completions"

    def complete(line: str) -> list[str]:
        env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
               "_ARGCOMPLETE_IFS": "\n", "_ARGCOMPLETE_SHELL": shell}
        subprocess.run([sys.executable, "-c", CLI_CODE], env=env, capture_output=True,
                       timeout=60)
        return [w.split(":")[0].strip() for w in out.read_text().split("\n") if w]

    assert "bulk-set" in complete("conflux bul")
    assert {"list-roles", "show-roles"} <= set(complete("conflux rbac "))
    assert "--grpc" in complete("conflux watch --gr")


def test_promote_as_the_original_takes_it(routes, cli):
    routes("set", "route.api-a", "weight", "70", "--env", "staging")
    routes("set", "route.api-a", "service", "checkout", "--env", "staging")
    routes("set", "route.web", "weight", "90", "--env", "staging")
    # FROM TO positional, one entity, one field
    res = routes("promote", "staging", "production", "-e", "route.api-a", "-f", "weight",
                 "-i", "canary done")
    assert "ok: promoted staging → production (1 field operations" in res.out
    assert routes("get", "route.api-a", "weight").out.strip() == "70"
    assert routes("get", "route.api-a", "service").out.strip() == "service.cart"
    assert routes("get", "route.web", "weight").out.strip() == "30"
    logged = cli("log", "--limit", "1", "-o", "json").json()[0]
    assert logged["type"] == "promote" and logged["intent"] == "canary done"
    assert logged["value"]["fields"] == ["weight"]
    # and the old way still works
    routes("promote", "--from", "staging", "--to", "production", "route.web")
    assert routes("get", "route.web", "weight").out.strip() == "90"
    for args, words in ((("staging",), "needs FROM and TO"),
                        (("--from", "staging", "route.web"), "--from and --to go together"),
                        (("staging", "production", "-f", "nope"), "nope")):
        res = cli("promote", *args)
        assert res.code == 2 and words in res.err, (args, res.err)


def test_milestone_create_dry_run_commits_nothing(routes, cli, project):
    # the routes name a service that does not exist: a dry run says so, as create would
    res = cli("milestone", "create", "-m", "first cut", "--dry-run")
    assert res.code == 2 and "schema violation" in res.err
    res = routes("milestone", "create", "-m", "first cut", "--dry-run", "--force")
    assert res.out.startswith("would make milestone 1 (")
    assert "nothing was committed" in res.out and "first cut" in res.out
    assert cli("milestone", "list").out.strip() == "no milestone yet"
    preview = cli("milestone", "create", "-m", "first cut", "--dry-run", "--force",
                  "--json").json()
    assert preview["dry_run"] is True and preview["commit"] == "" and preview["id"] == 1
    made = cli("milestone", "create", "-m", "first cut", "--force", "--json").json()
    assert made["id"] == 1 and made["operations"] == preview["operations"] and made["commit"]
    res = cli("milestone", "create", "-m", "again", "--dry-run", "--force")
    assert res.code != 0 and "nothing to commit" in res.err


def test_init_as_the_original_takes_it(cli, tmp_path):
    target = tmp_path / "fresh"
    res = cli("init", str(target), "--name", "payments")
    assert res.code == 0, res.err
    assert "wrote a starter schema" in res.out and (target / "schema.toml").exists()
    ok = cli("set", "route.a", "weight", "5", directory=str(target))
    assert ok.code == 0, ok.err
    status = cli("status", "--json", directory=str(target)).json()
    assert "payments" in json.dumps(status)
    again = cli("init", str(target), "--schema", str(target / "schema.toml"))
    assert again.code == 2 and "already holds a Conflux project" in again.err
    # --force puts another schema in force and keeps the store
    grown = (target / "schema.toml").read_text().replace(
        '{ name = "timeout",', '{ name = "retries", type = "int", merge = "max" },\n'
                               '    { name = "timeout",')
    (tmp_path / "v2.toml").write_text(grown)
    res = cli("init", str(target), "--schema", str(tmp_path / "v2.toml"), "--force")
    assert res.code == 0 and "the store and its log are kept" in res.out, res.err
    assert cli("set", "route.a", "retries", "3", directory=str(target)).code == 0
    assert cli("get", "route.a", "weight", directory=str(target)).out.strip() == "5"
    (tmp_path / "bad.toml").write_text(grown.replace('type = "int"', 'type = "integer"', 1))
    before = (target / ".conflux" / "schema.toml").read_text()
    bad = cli("init", str(target), "--schema", str(tmp_path / "bad.toml"), "--force")
    assert bad.code == 2 and "unknown type 'integer'" in bad.err
    assert (target / ".conflux" / "schema.toml").read_text() == before  # nothing replaced


def test_diff_between_environments_and_its_summary(routes, cli):
    routes("set", "route.api-a", "weight", "70", "--env", "staging")
    routes("set", "service.api-x", "image", "x:2", "--env", "staging")
    res = routes("diff", "--from-env", "production", "--to-env", "staging")
    assert "route.api-a.weight: 10 → 70" in res.out and "service.api-x.image" in res.out
    assert "2 fields differ between production and staging" in res.out
    res = routes("diff", "--from-env", "production", "--to-env", "staging", "-e", "route.")
    assert "service.api-x" not in res.out and "1 field differ" in res.out
    res = routes("diff", "--from-env", "production", "--to-env", "staging", "--summary")
    assert res.out.strip() == "2 fields differ between production and staging"
    data = cli("diff", "--from-env", "production", "--to-env", "staging", "--json").json()
    assert {"entity_id": "route.api-a", "field": "weight", "from_value": 10,
            "to_value": 70} in data["differences"]
    # against a milestone: --milestone, --entity and --summary
    routes("milestone", "create", "-m", "m1", "--force")
    routes("set", "route.web", "weight", "40")
    res = routes("diff", "--milestone", "1", "-e", "route.web", "--summary")
    assert res.out.strip() == "production since milestone 1: 1 field changed in 1 entity"
    for args, words in ((("--from-env", "production"), "go together"),
                        (("--from-env", "production", "--to-env", "qa"), "qa"),
                        (("1", "--milestone", "1"), "once")):
        res = cli("diff", *args)
        assert res.code == 2 and words in res.err, (args, res.err)


def test_import_chooses_files_and_prefixes_names(ok, cli, project, tmp_path):
    ok("init", "--schema", str(EXAMPLE_SCHEMA))
    tree = tmp_path / "tree"
    (tree / "team-a").mkdir(parents=True)
    (tree / "team-b").mkdir()
    (tree / "team-a" / "web.yaml").write_text("name: api\nimage: a:1\n")
    (tree / "team-b" / "batch.yaml").write_text("name: api\nimage: b:1\n")
    (tree / "team-b" / "extra.json").write_text('{"name": "x", "image": "x:1"}')
    (tree / "team-b" / "notes.txt").write_text("not config")
    res = ok("import", str(tree), "-t", "service", "--extensions", "yaml",
             "--use-filename-prefix")
    assert "2 files (2 skipped: not chosen)" in res.out
    assert ok("get", "service.web.api", "image").out.strip() == "a:1"
    assert ok("get", "service.batch.api", "image").out.strip() == "b:1"
    assert cli("get", "service.x").code == 2
    res = ok("import", str(tree), "-t", "service", "--pattern", "ext*")
    assert res.out.startswith("1 file") and ok("get", "service.x", "image").out.strip() == \
        "x:1"
    # without a prefix the two 'api' documents are the same entity: refused, naming both
    res = cli("import", str(tree), "-t", "service", "--extensions", "yaml")
    assert res.code == 2 and "also defined in" in res.err
    res = cli("import", str(tree), "-t", "service", "--pattern", "*.toml")
    assert res.code == 2 and "no files to import" in res.err


@pytest.mark.parametrize("text", [
    '[schema]\nname = "old"\nversion = "1"\n\n[entity.svc]\nfields = [{ name = "name", '
    'type = "string", merge = "lww" }]\n',
    '[entity.svc]\nfields = [{ name = "image", type = "string", merge = "lww" }]\n'
    '[[entity.svc.x]]\nname = "not the schema\'s"\n',
])
def test_init_name_sets_the_schemas_name_only(cli, tmp_path, text):
    from conflux.engine.engine import _named_schema

    source = tmp_path / "s.toml"
    source.write_text(text.replace("[[entity.svc.x]]\nname = \"not the schema's\"\n", ""))
    schema, written = _named_schema(str(source), "payments")
    assert schema.name == "payments"
    assert [f for f in schema.types["svc"].fields] in (["name"], ["image"])
