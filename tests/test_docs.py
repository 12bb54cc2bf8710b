"""The documentation against the code: the generated references are current, every command,
route and configuration key is documented, links lead somewhere, and the README's tour runs
as written."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

from conflux import auth, rbac, schema, signing, webhooks
from conflux.actors import ACTOR_CLASSES
from conflux.api import create_app
from conflux.api.access import Access
from conflux.api.openapi import openapi_document
from conflux.cli import get_parser
from conflux.engine import Engine
from conflux.engine import settings as settings_module
from conflux.milestones import MilestoneSettings
from conflux.rbac import loader as rbac_loader
from conflux.schema import loader as schema_loader

from conftest import EXAMPLE_SCHEMA, ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAKE_DOCS = "make docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_docs", DOCS / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------
# generated references


@pytest.mark.parametrize("page", ["cli.md", "rest.md"])
def test_generated_page_is_current(page):
    generated = _generator().PAGES[page]()
    committed = (DOCS / page).read_text()
    assert committed == generated, (
        f"docs/{page} does not match what the code gives now: run '{MAKE_DOCS}' and commit it")


def test_generator_check_mode_tells_which_command_to_run(tmp_path, capsys):
    gen = _generator()
    gen.DOCS = tmp_path  # an empty docs directory: both pages are missing
    assert gen.main(["--check"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"docs/cli.md is out of date: run '{MAKE_DOCS}'",
        f"docs/rest.md is out of date: run '{MAKE_DOCS}'"]
    assert gen.main([]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.md", "rest.md"]
    assert gen.main(["--check"]) == 0
    (tmp_path / "rest.md").write_text("stale\n")
    assert gen.stale() == ["rest.md"]


def test_generator_check_mode_in_a_process():
    res = subprocess.run([sys.executable, str(DOCS / "gen_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""


# ------------------------------------------------------------------------------------------
# every command and route documented


def _commands(parser, path="conflux"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, helps.get(name)
                yield from _commands(sub, f"{path} {name}")


COMMANDS = list(_commands(get_parser()))


def test_the_command_tree_has_subcommands():
    names = [path for path, _, _ in COMMANDS]
    assert "conflux set" in names and "conflux rbac check" in names
    assert "conflux milestone create" in names and "conflux keys revoke" in names


@pytest.mark.parametrize("path", [path for path, _, _ in COMMANDS])
def test_every_command_has_help_and_a_section_in_cli_md(path):
    _, parser, summary = next(c for c in COMMANDS if c[0] == path)
    assert summary, f"'{path}' has no one-line help"
    assert parser.description, f"'{path}' has no description"
    text = (DOCS / "cli.md").read_text()
    found = re.search(rf"^#+ {re.escape(path)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert found, f"'{path}' has no section in docs/cli.md: run '{MAKE_DOCS}'"
    for action in parser._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}" in found[1], \
                    f"{path} {option} is not in docs/cli.md: run '{MAKE_DOCS}'"


def _route_nodes(nodes):
    for node in nodes:
        if node.resource is not None:
            yield node
        yield from _route_nodes(node.children)


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory):
    project = tmp_path_factory.mktemp("docs-app")
    engine = Engine.init(str(project), str(EXAMPLE_SCHEMA))
    try:
        app = create_app(engine, Access.load(engine.root))
        routes = set()
        for node in _route_nodes(app._router._roots):
            for method in ("get", "post", "put", "patch", "delete"):
                if hasattr(node.resource, f"on_{method}"):
                    routes.add((method.upper(), node.uri_template))
        return routes
    finally:
        engine.close()


def test_every_served_route_is_in_rest_md(app_routes):
    text = (DOCS / "rest.md").read_text()
    documented = {(m.upper(), p) for p, item in openapi_document()["paths"].items()
                  for m in item}
    assert app_routes == documented
    assert len(app_routes) >= 17
    for method, path in sorted(app_routes):
        assert f"### {method} {path}\n" in text, f"{method} {path} is not in docs/rest.md"


def test_rest_md_documents_errors_auth_and_msgpack():
    text = (DOCS / "rest.md").read_text()
    for needle in ("X-API-Key", "application/msgpack", '{"error": {"code"', "Last-Event-ID"):
        assert needle in text
    statuses = {s for item in openapi_document()["paths"].values() for op in item.values()
                for s in op["responses"]}
    for status in statuses:
        assert re.search(rf"^\| {status} \|", text, re.M), f"status {status} not explained"


# ------------------------------------------------------------------------------------------
# every configuration key documented

def _constants(module, *, skip=()) -> set[str]:
    """The names a parser accepts, from its module-level tuples named ``*_KEYS`` or
    ``*_FIELDS`` (whatever the module calls them, so new forms are picked up)."""
    found = set()
    for name, value in vars(module).items():
        if name in skip or not re.fullmatch(r"_?[A-Z_]*(KEYS|FIELDS)", name):
            continue
        if isinstance(value, (tuple, frozenset, set)) and all(isinstance(v, str) for v in value):
            found |= set(value)
    return found


def _config_toml_keys() -> set[str]:
    """config.toml's tables and keys: those of the file 'conflux init' writes (with the
    optional ones uncommented) and of the [milestones] settings."""
    text = re.sub(r"^# ?(\[?\w+\]? ?=?)", r"\1", settings_module._DEFAULT_CONFIG, flags=re.M)
    data = tomllib.loads("\n".join(line for line in text.splitlines()
                                   if re.match(r"\s*(\[\w+\]|\w+ =)", line)).format(
        **{name: 1 for name in vars(settings_module.Settings())}))
    keys = set(data)
    for table in data.values():
        keys |= set(table)
    return keys | {f.name for f in dataclasses.fields(MilestoneSettings)}


CONFIG_FILES = {
    "schema.toml": lambda: (_constants(schema_loader) | set(schema.STRATEGIES)
                            | set(schema.KINDS)),
    "config.toml": _config_toml_keys,
    # (_PLAINTEXT_FIELDS: names refused, with a pointer to hash-key)
    "api-keys.toml": lambda: _constants(auth, skip={"_PLAINTEXT_FIELDS"}) | set(ACTOR_CLASSES),
    "rbac.toml": lambda: _constants(rbac_loader) | set(rbac.ACTIONS),
    "webhooks.toml": lambda: _constants(webhooks) | set(webhooks.EVENTS) | {"webhook"},
    "keys.json": lambda: {f.name for f in dataclasses.fields(signing.Key)} | {"keys"},
}


def _section(text: str, heading: str) -> str:
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"docs/configuration.md has no '## {heading}' section"
    return found[1]


def test_config_toml_keys_are_found():
    keys = _config_toml_keys()
    assert {"clock", "max_clock_offset_ms", "stability_window_s", "require", "repository",
            "every_seconds", "remote_branch"} <= keys


@pytest.mark.parametrize("filename", sorted(CONFIG_FILES))
def test_every_config_key_is_in_configuration_md(filename):
    keys = CONFIG_FILES[filename]()
    assert len(keys) >= 5, keys
    section = _section((DOCS / "configuration.md").read_text(), filename)
    missing = sorted(k for k in keys
                     if not re.search(rf"`\[*{re.escape(k)}(\]|\.|`| =|\[|<)", section)
                     and f'"{k}"' not in section)
    assert not missing, f"docs/configuration.md, section {filename}, lacks {missing}"


# ------------------------------------------------------------------------------------------
# no pointers to documents users do not have; links that lead somewhere

_SPEC = "SPEC " + "§"  # spelled apart, so that this file does not match itself
_SCANNED = ["src", "engine", "tests", "bench", "examples", "docs"]


def test_no_spec_section_references():
    hits = []
    files = [README] + [p for d in _SCANNED for p in (ROOT / d).rglob("*") if p.is_file()]
    for path in files:
        if "__pycache__" in path.parts or path.suffix in (".so", ".c", ".pyc", ".o"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _SPEC in line:
                hits.append(f"{path.relative_to(ROOT)}:{number}")
    assert not hits, f"references to a document users do not have: {hits}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", text, re.M)}


MARKDOWN = [README, ROOT / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # http(s): and the like
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(link)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(link)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


def test_slug_matches_the_generator():
    gen = _generator()
    for heading in ("GET /v1/entities/{entity_id}", "conflux rbac list-roles",
                    "api-keys.toml", "Validation: before accept and after merge"):
        assert _slug(heading) == gen._anchor(heading)


# ------------------------------------------------------------------------------------------
# the README


def test_readme_starts_with_the_two_setup_commands():
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S)[1]
    assert first_block.startswith("make demo")
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "demo"],
                                                                      ["make", "test"]]
    assert text.index("Python 3.11") < text.index("make demo")


def test_readme_performance_table_has_a_row_per_target():
    text = README.read_text()
    section = text[text.index("## Performance"):]
    rows = [r for r in re.findall(r"^\|(.*)\|$", section, re.M) if "---" not in r][1:]
    assert len(rows) >= 12
    for row in rows:
        assert row.split("|")[-1].strip().endswith("met"), row
    assert "bench/README.md" in section


def _tour_block() -> str:
    text = README.read_text()
    return re.search(r"```sh\n(.*?)```", text[text.index("## A five-minute tour"):], re.S)[1]


def test_readme_tour_has_the_original_quick_start():
    tour = _tour_block()
    for command in ("conflux init --schema schema.toml",
                    "conflux import ./configs/ --entity-type service",
                    'conflux set route.api weight 80 --intent "shifting traffic for canary"',
                    "conflux get route.api", "conflux status", "conflux log --limit 10",
                    "conflux blame route.api",
                    'conflux milestone create -m "post-canary traffic shift"'):
        assert command + "\n" in tour, command
    assert "conflux daemon --port 8080" in README.read_text()


def test_readme_tour_runs_as_written(tmp_path):
    """The tour's commands, in bash, from a copy of the repository's root (its examples)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ['PATH']}"}
    env.pop("CONFLUX_ACTOR", None)
    env.pop("CONFLUX_PROJECT", None)
    res = subprocess.run(["bash", "-euc", _tour_block()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "route.api.weight: unset → 80 (shifting traffic for canary)" in res.stdout
    assert "milestone 1:" in res.stdout
    assert "route.api.weight: 100 → 80  (set_field [override])" in res.stdout
    assert "nothing was written" in res.stdout
    tour = Engine(str(tmp_path / "tour"))
    try:
        # rolled back: the milestone's 80, by an override written after the 100
        weight = tour.get("route.api", "production")["weight"]
        assert weight["value"] == 80 and weight["override"] is True
        assert tour.log(limit=1)[0].intent == "rollback to milestone 1"
        assert tour.status()["violations"] == 0
    finally:
        tour.close()


# ------------------------------------------------------------------------------------------
# the example files of configuration.md load with the real loaders


def _toml_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)


def test_configuration_examples_load(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFLUX_HOOK_SECRET", "a-secret-for-the-example")  # webhooks' env:VAR
    blocks = _toml_blocks(DOCS / "configuration.md")
    by_first_line = {}
    for block in blocks:
        first = block.splitlines()[0]
        name = (first.removeprefix("# .conflux/") if first.startswith("# .conflux/")
                else "schema.toml" if first.startswith("name = ") else
                "config.toml" if first == "[clock]" else
                "webhooks.toml" if first == "[[webhook]]" else None)
        assert name, f"a toml example of configuration.md is not one of the files: {first!r}"
        by_first_line[name] = block
    assert set(by_first_line) == {"schema.toml", "config.toml", "api-keys.toml", "rbac.toml",
                                  "webhooks.toml"}
    paths = {}
    for name, block in by_first_line.items():
        paths[name] = tmp_path / name
        paths[name].write_text(block)
    doc_schema = schema.load_schema(str(paths["schema.toml"]))
    settings_module.Settings.load(str(paths["config.toml"]))
    keys, certs = auth.load_credentials(str(paths["api-keys.toml"]))
    assert len(keys) >= 1
    rules = rbac.Rbac.load(str(paths["rbac.toml"]), schema=doc_schema)
    assert rules.roles
    webhooks.load_webhooks(str(paths["webhooks.toml"]), schema=doc_schema)
