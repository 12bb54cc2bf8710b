"""What a command costs before it does anything: the modules it imports, and what a project's
opening reads.

``conflux get`` and ``conflux set`` are run as a user runs them (the installed console script,
a fresh process each) with ``PYTHONPROFILEIMPORTTIME``, which lists every module the process
imported; the heavy ones other commands need must not be among them. Timings are measured by
``bench/cli.py``, not here.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys

import pytest

from conflux.actors import Actor
from conflux.cli import UsageError, get_parser, main
from conflux.engine import Engine, Settings
from conflux.errors import SchemaError

from conftest import EXAMPLE_SCHEMA

CONSOLE_SCRIPT = pathlib.Path(sys.executable).with_name("conflux")

#: Modules a read or a single write has no use for: the HTTP stack, git, signatures, the
#: daemon, the formats and import/export, progress bars, access rules without an rbac.toml,
#: and what the engine stopped importing (TOML parsing and typing come from the cache).
NOT_FOR_GET_OR_SET = (
    "http.client", "urllib.request", "urllib.parse", "email", "ssl", "socket",
    "pygit2", "nacl", "falcon", "gunicorn", "yaml", "tqdm", "ckdl", "_jsonnet", "hcl2",
    "multiprocessing", "concurrent.futures", "dataclasses", "inspect", "typing", "tomllib",
    "uuid", "secrets", "hashlib", "importlib.metadata",
    "conflux.transfer", "conflux.formats", "conflux.milestones", "conflux.signing",
    "conflux.rbac", "conflux.auth", "conflux.audit", "conflux.daemon", "conflux.webhooks",
    "conflux.status", "conflux.api",
    "conflux.cli.import_", "conflux.cli.export", "conflux.cli.watch", "conflux.cli.daemon",
    "conflux.cli.milestone", "conflux.cli.keys", "conflux.cli.audit", "conflux.cli.rbac",
    "conflux.cli.auth", "conflux.cli._progress",
)


def console(*args: str, cwd: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``conflux *args`` through the installed console script: the finished process, and
    every module it imported."""
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT}: Conflux is not installed here"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CONFLUX_ACTOR", "CONFLUX_PROJECT", "PYTHONPATH")}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    done = subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    imported, errors = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[1].strip())
        else:
            errors.append(line)
    done.stderr = "\n".join(errors)
    return done, imported


def heavy(imported: set[str]) -> list[str]:
    return sorted(name for name in imported
                  if any(name == h or name.startswith(h + ".") for h in NOT_FOR_GET_OR_SET))


@pytest.fixture
def made(tmp_path) -> str:
    """A project made with the sample schema, as a user makes it."""
    done, _ = console("init", "--schema", str(EXAMPLE_SCHEMA), cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    return str(tmp_path)


def test_get_imports_only_what_it_needs(made):
    done, imported = console("set", "route.api-v1", "weight", "70", "--actor",
                             "autoscaler:autoscaler-7", cwd=made)
    assert done.returncode == 0, done.stderr
    done, imported = console("get", "route.api-v1", cwd=made)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["route.api-v1 in production", "  weight  70"]
    assert {"conflux.cli.get", "conflux.engine.engine", "lmdb", "argparse"} <= imported
    assert heavy(imported) == []


def test_set_imports_only_what_it_needs(made):
    done, imported = console("set", "service.checkout", "replicas", "3", "--intent", "scale",
                             cwd=made)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: service.checkout.replicas = 3 in production")
    assert {"conflux.cli.set", "conflux.engine.engine", "lmdb"} <= imported
    assert heavy(imported) == []
    with Engine(made) as engine:
        assert engine.get("service.checkout", "production", "replicas")["replicas"]["value"] == 3


def test_set_with_access_rules_loads_and_obeys_them(made):
    """Without an rbac.toml a write checks nothing (and skips loading the rules); with one,
    the rules are loaded and a write they do not grant is refused."""
    with open(os.path.join(made, ".conflux", "rbac.toml"), "w") as handle:
        handle.write('[role.reader]\npermissions = [{ actions = ["read"], resource = "*" }]\n\n'
                     '[[assign]]\nactor = "*"\nroles = ["reader"]\n')
    done, imported = console("set", "service.checkout", "replicas", "3", cwd=made)
    assert done.returncode == 2
    assert "conflux.rbac" in imported
    assert done.stderr.count("\n") == 0 and "write" in done.stderr
    with Engine(made) as engine:
        assert engine.status()["operations"] == 0


def test_help_imports_no_handler_dependencies(made):
    done, imported = console("--help", cwd=made)
    assert done.returncode == 0, done.stderr
    assert all(f"    {name}" in done.stdout for name in ("get", "set", "import", "watch"))
    assert not [name for name in imported if name.split(".")[0] in
                ("http", "urllib", "pygit2", "nacl", "falcon", "gunicorn", "yaml", "tqdm",
                 "lmdb", "msgpack") or name in ("conflux.transfer", "conflux.engine.engine")]


# ------------------------------------------------------------------------------------------
# one command's parser is the whole tree's

def _subcommands(parser, path=()):
    """Every command path of the tree: ("get",), ("rbac",), ("rbac", "check"), ..."""
    for action in parser._actions:
        if action.dest != "help" and hasattr(action, "choices") and isinstance(
                action.choices, dict):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def _main_output(capsys, argv):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, *capsys.readouterr()


@pytest.mark.parametrize("path", [p for p, _ in _subcommands(get_parser())],
                         ids=" ".join)
def test_every_help_is_the_whole_trees(capsys, monkeypatch, path):
    """``main`` builds only the parser of the command it runs: each --help must be what the
    whole tree (the man page's) shows."""
    monkeypatch.setenv("COLUMNS", "100")
    expected = dict(_subcommands(get_parser()))[path].format_help()
    code, out, err = _main_output(capsys, [*path, "--help"])
    assert (code, out, err) == (0, expected, "")
    code, out, err = _main_output(capsys, ["--dir", "elsewhere", *path, "--help"])
    assert (code, out, err) == (0, expected, "")


@pytest.mark.parametrize("argv", [
    ["set"], ["get", "--bogus", "route.a"], ["set", "route.a"], ["log", "--limit", "x"],
    ["rbac"], ["rbac", "check", "a", "b", "c", "d"], ["milestone", "nope"], ["--dir"], ["gte", "route.a"],
    ["--dir", "p", "diff", "--format", "yaml"], ["-h", "get"], ["--version", "get"],
])
def test_usage_errors_are_the_whole_trees(capsys, argv):
    try:
        get_parser().parse_args(argv)
    except UsageError as exc:
        expected = (2, "", f"{exc}\n")
    except SystemExit as exc:  # --help, --version
        expected = (exc.code, *capsys.readouterr())
    else:
        pytest.fail(f"{argv} parsed")
    assert _main_output(capsys, argv) == expected


def test_top_level_help_lists_every_command_after_dir(capsys):
    code, out, _ = _main_output(capsys, ["--dir", "p", "--help"])
    assert code == 0 and out == get_parser().format_help()


# ------------------------------------------------------------------------------------------
# the kept TOML documents

def _cache(made, name):
    return os.path.join(made, ".conflux", "cache", f"{name}.json")


def test_opening_a_project_keeps_its_parsed_toml(made):
    for name in ("schema.toml", "config.toml"):
        with open(_cache(made, name), encoding="utf-8") as handle:
            kept = json.load(handle)
        with open(os.path.join(made, ".conflux", name), encoding="utf-8") as handle:
            assert kept["text"] == handle.read()
    assert kept["document"]["clock"]["max_clock_offset_ms"] == 500


def test_an_edited_schema_is_read_again(made, capsys):
    assert main(["--dir", made, "set", "upstream.pool", "targets", "10.0.1.3", "--add"]) == 0
    path = os.path.join(made, ".conflux", "schema.toml")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace('{ name = "targets",', '{ name = "zone", type = "string", '
                                  'merge = "lww", default = "eu-1" },\n    '
                                  '{ name = "targets",'))
    capsys.readouterr()
    assert main(["--dir", made, "get", "upstream.pool", "zone"]) == 0
    assert capsys.readouterr().out == "eu-1\n"
    # a refusal still names the line, though the previous text's document is kept
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace('merge = "max", default = 1', 'merge = "sideways"'))
    with pytest.raises(SchemaError, match=r"schema\.toml:25: .*'replicas': unknown merge "
                                          r"strategy 'sideways'"):
        Engine(made)


def test_an_edited_config_is_read_again(made):
    path = os.path.join(made, ".conflux", "config.toml")
    with Engine(made) as engine:
        assert engine.settings.max_clock_offset_ms == 500
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("max_clock_offset_ms = 500", "max_clock_offset_ms = 1234"))
    with Engine(made) as engine:
        assert engine.settings == Settings(1234)


def test_a_damaged_entry_is_replaced(made):
    entry = _cache(made, "schema.toml")
    with open(entry, "w", encoding="utf-8") as handle:
        handle.write('{"layout": 1, "text": ')
    with Engine(made) as engine:
        assert engine.schema.base_env == "production"
    with open(entry, encoding="utf-8") as handle:
        assert json.load(handle)["document"]["name"] == "my-infrastructure"


def test_a_project_whose_cache_cannot_be_written_opens(made):
    cache = os.path.join(made, ".conflux", "cache")
    for name in os.listdir(cache):
        os.unlink(os.path.join(cache, name))
    os.rmdir(cache)
    with open(cache, "w") as handle:  # a file where the directory would be
        handle.write("not a directory")
    with Engine(made) as engine:
        assert engine.schema.field("route", "weight").merge == "max"
        assert engine.settings == Settings()


def test_an_entry_is_no_more_readable_than_its_file(made):
    config = os.path.join(made, ".conflux", "config.toml")
    os.chmod(config, 0o600)
    os.unlink(_cache(made, "config.toml"))
    Engine(made).close()
    assert os.stat(_cache(made, "config.toml")).st_mode & 0o777 == 0o600
    assert os.stat(_cache(made, "schema.toml")).st_mode & 0o777 == \
        os.stat(os.path.join(made, ".conflux", "schema.toml")).st_mode & 0o777


def test_a_bad_config_is_refused_in_one_line(made, capsys):
    with open(os.path.join(made, ".conflux", "config.toml"), "wb") as handle:
        handle.write(b"[clock]\nmax_clock_offset_ms = \xff\n")
    assert main(["--dir", made, "get", "route.api-v1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conflux get: error: ") and "config.toml" in err
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------------------
# the value classes that replaced dataclasses

def test_actor_is_an_immutable_value():
    actor = Actor("autoscaler-7", "autoscaler")
    assert actor == Actor.parse("autoscaler:autoscaler-7") != Actor("autoscaler-7")
    assert len({actor, Actor("autoscaler-7", "autoscaler"), Actor("zara")}) == 2
    assert repr(actor) == "Actor(id='autoscaler-7', cls='autoscaler')"
    assert str(actor) == "[autoscaler:autoscaler-7]"
    assert pickle.loads(pickle.dumps(actor)) == actor
    with pytest.raises(AttributeError):
        actor.id = "other"
    with pytest.raises(ValueError, match="actor class 'robot'"):
        Actor("r2", "robot")


def test_settings_are_an_immutable_value():
    settings = Settings(250, 60, frozenset({"human"}))
    assert settings == Settings(250, 60, frozenset({"human"})) != Settings()
    assert (Settings().max_clock_offset_ms, Settings.stability_window_s) == (500, 604800)
    with pytest.raises(AttributeError):
        settings.max_clock_offset_ms = 1
