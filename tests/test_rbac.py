"""RBAC: resource patterns, roles and inheritance, assignments by actor pattern, deny by
default, batch checks, the ``rbac.toml`` loader's refusals, and ``conflux rbac``."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
import shutil
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflux.actors import Actor
from conflux.cli import main
from conflux.errors import InputError, PermissionDenied, ValidationError
from conflux.rbac import ACTIONS, Rbac, Resource
from conflux.schema import load_schema

from conftest import EXAMPLE_SCHEMA

AUTOSCALER = Actor("autoscaler-7", "autoscaler")
CI = Actor("ci-pipeline", "pipeline")
ZARA = Actor("zara", "human")
OPS = Actor("olga", "operator")
NOBODY = Actor("mallory", "human")

RULES = """\
# access rules of the sample project
[role.reader]
description = "may read everything"
permissions = [ { actions = ["read"], resource = "*" } ]

[role.autoscaler]
inherits = ["reader"]
permissions = [
    { actions = ["write"], resource = "route.*/weight@production" },
    { actions = ["write"], resource = "service.*/replicas" },
]

[role.operator]
inherits = ["autoscaler"]
permissions = [
    { actions = ["write", "override", "resolve"], resource = "*@staging" },
    { actions = ["write"], resource = "upstream.*@[ps]*" },
]

[role.release]
permissions = [ { actions = ["promote", "milestone"], resource = "*@production" } ]

[role.admin]
permissions = [ { actions = ["admin"], resource = "*" } ]

[[assign]]
actor = "autoscaler:*"
roles = ["autoscaler"]

[[assign]]
actor = "operator:*"
roles = ["operator"]

[[assign]]
actor = "ci-*"
roles = ["reader", "release"]

[[assign]]
actor = "human:zara"
roles = ["admin"]
"""


def write(tmp_path, text: str, name: str = "rbac.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def rules_file(tmp_path) -> str:
    return write(tmp_path, RULES)


@pytest.fixture
def rules(rules_file) -> Rbac:
    return Rbac.load(rules_file, schema=load_schema(EXAMPLE_SCHEMA))


# ------------------------------------------------------------------------------------------
# resource patterns


@pytest.mark.parametrize("text, parts", [
    ("*", ("*", "*", "*")),
    ("route.*", ("route.*", "*", "*")),
    ("route.*/weight", ("route.*", "weight", "*")),
    ("route.*@production", ("route.*", "*", "production")),
    ("route.api-v1/weight@prod*", ("route.api-v1", "weight", "prod*")),
    ("*/replicas@*", ("*", "replicas", "*")),
    ("service.[!x]*/re?licas@[ps]*", ("service.[!x]*", "re?licas", "[ps]*")),
    # a first segment without a dot is a type, as in the original Conflux
    ("service", ("service.*", "*", "*")),
    ("service/api@staging", ("service.api", "*", "staging")),
    ("service/api-*/replicas", ("service.api-*", "replicas", "*")),
    ("serv*/api", ("serv*.api", "*", "*")),
])
def test_resource_parse(text, parts):
    res = Resource.parse(text)
    assert (res.entity, res.field, res.env) == parts and str(res) == text


@pytest.mark.parametrize("text, message", [
    ("", "entity part is empty"),
    ("@production", "entity part is empty"),
    ("route.*/@production", "field part is empty"),
    ("route.*@", "env part is empty"),
    ("route.*/a/b", "more than one '/'"),
    ("route.*@a@b", "more than one '@'"),
    ("route/", "name after 'TYPE/' is empty"),
    ("route/a/b/c", "too many '/'"),
    ("route.a b", "characters"),
    ("route.*/wei-ght", "characters"),
    ("route.[*", "unclosed or empty"),
    ("route.[]", "unclosed or empty"),
    ("route.*]", "stray"),
    (42, "must be text"),
])
def test_resource_parse_refuses(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("*", r"\*")):
        Resource.parse(text)


@pytest.mark.parametrize("pattern, entity, field, env, expected", [
    ("*", "route.api", "weight", "production", True),
    ("*", None, None, None, True),
    ("route.*", "route.api", "weight", "staging", True),
    ("route.*", "route.api", None, "staging", True),       # the entity as a whole
    ("route.*", "service.api", "weight", "staging", False),
    ("route.*", "route.api.v2", "weight", "staging", True),  # '*' crosses dots
    ("route.*/weight", "route.api", "weight", "staging", True),
    ("route.*/weight", "route.api", "path", "staging", False),
    ("route.*/weight", "route.api", None, "staging", False),  # whole entity needs field '*'
    ("route.*/w*", "route.api", "weight", "production", True),
    ("route.*@production", "route.api", "weight", "production", True),
    ("route.*@production", "route.api", "weight", "staging", False),
    ("route.*@production", "route.api", "weight", None, False),  # every env needs env '*'
    ("route.*", None, None, "production", False),           # every entity needs entity '*'
    ("*@prod*", None, None, "production", True),
    ("route.API", "route.api", None, "production", False),  # case-sensitive
    ("route.ap?", "route.api", None, "production", True),
])
def test_resource_matches(pattern, entity, field, env, expected):
    assert Resource.parse(pattern).matches(entity, field, env) is expected


@given(glob=st.text("ab.*?", min_size=1, max_size=6), name=st.text("ab.", max_size=6),
       field=st.text("ab*?", min_size=1, max_size=4), value=st.text("ab", max_size=4))
def test_compiled_globs_agree_with_fnmatchcase(glob, name, field, value):
    resource = Resource.parse(f"t.{glob}/{field}@*")
    entity = f"t.{name}"
    assert resource.matches(entity, value, "production") == (
        fnmatchcase(entity, f"t.{glob}") and fnmatchcase(value, field))


# ------------------------------------------------------------------------------------------
# decisions


@pytest.mark.parametrize("actor, action, entity, field, env, expected", [
    # own permissions, with globs on entity, field and env
    (AUTOSCALER, "write", "route.api", "weight", "production", True),
    (AUTOSCALER, "write", "route.api", "weight", "staging", False),
    (AUTOSCALER, "write", "route.api", "path", "production", False),
    (AUTOSCALER, "write", "service.checkout", "replicas", "development", True),
    (AUTOSCALER, "override", "route.api", "weight", "production", False),
    (AUTOSCALER, "write", "route.api", None, "production", False),  # cannot delete routes
    # inherited from reader
    (AUTOSCALER, "read", "upstream.backend", "targets", "staging", True),
    # operator inherits autoscaler, which inherits reader (transitively)
    (OPS, "read", "route.api", "path", "production", True),
    (OPS, "write", "route.api", "weight", "production", True),
    (OPS, "override", "route.api", "weight", "staging", True),
    (OPS, "override", "route.api", "weight", "production", False),
    (OPS, "write", "upstream.backend", None, "production", True),
    (OPS, "write", "upstream.backend", None, "development", False),
    # ci-* assigned by id pattern, whatever the class
    (CI, "promote", "route.api", None, "production", True),
    (CI, "milestone", None, None, "production", True),
    (CI, "milestone", None, None, "staging", False),
    (CI, "write", "route.api", "weight", "production", False),
    (Actor("ci-runner", "service"), "read", "route.api", None, "production", True),
    # admin implies every action, everywhere
    (ZARA, "override", "route.api", "weight", "production", True),
    (ZARA, "milestone", None, None, None, True),
    # class:id patterns do not match another class
    (Actor("zara", "pipeline"), "read", "route.api", None, "production", False),
    (Actor("autoscaler-7", "human"), "read", "route.api", None, "production", False),
    # deny by default
    (NOBODY, "read", "route.api", "weight", "production", False),
])
def test_check(rules, actor, action, entity, field, env, expected):
    assert rules.check(actor, action, entity, field, env) is expected
    assert bool(rules.decide(actor, action, entity, field, env)) is expected


def test_star_asks_about_the_whole_dimension(rules):
    assert rules.check(CI, "milestone", "*", None, "production")
    assert not rules.check(CI, "milestone", "*", "*", "*")
    assert not rules.check(AUTOSCALER, "write", "*", "weight", "production")
    assert rules.decide(ZARA, "read", "*", "*", "*").resource == "*@*"


def test_decision_names_the_granting_role(rules):
    direct = rules.decide(AUTOSCALER, "write", "route.api", "weight", "production")
    assert direct.permission.role == "autoscaler" and direct.role == "autoscaler"
    assert direct.assignment.actor == "autoscaler:*"
    assert "role 'autoscaler' grants write on route.*/weight@production" in direct.reason()
    inherited = rules.decide(OPS, "read", "route.api", "path", "production")
    assert inherited.permission.role == "reader" and inherited.role == "operator"
    assert "inherited through role 'operator'" in inherited.reason()
    assert inherited.to_dict()["role"] == "reader"


def test_require_raises_403_naming_actor_action_and_resource(rules, rules_file):
    rules.require(AUTOSCALER, "write", "route.api", "weight", "production")
    with pytest.raises(PermissionDenied) as info:
        rules.require(AUTOSCALER, "write", "route.api", "weight", "staging")
    err = info.value
    assert err.http_status == 403 and err.code == "forbidden"
    assert isinstance(err, PermissionError) and err.exit_code == 2
    assert str(err).startswith("[autoscaler:autoscaler-7] may not write "
                               "route.api/weight@staging: none of its roles (autoscaler)")
    assert rules_file in str(err)
    with pytest.raises(PermissionDenied, match=r"\[human:mallory\] may not read "
                                               r"\*@production: no role is assigned"):
        rules.require(NOBODY, "read", None, None, "production")


def test_unknown_action_is_bad_input(rules):
    with pytest.raises(InputError, match="unknown action 'wirte'"):
        rules.check(ZARA, "wirte", "route.api", "weight", "production")


def test_no_file_allows_everything(tmp_path):
    rules = Rbac.load(str(tmp_path / "rbac.toml"))
    assert not rules.enforced
    for action in ACTIONS:
        assert rules.check(NOBODY, action, "route.api", "weight", "production")
    rules.require(NOBODY, "admin")
    rules.require_ops(NOBODY, [{"type": "delete_entity", "entity_id": "route.api",
                                "override": True}], base_env="production")
    assert "no rbac.toml" in rules.decide(NOBODY, "write").reason()
    with pytest.raises(InputError, match="no such file"):
        Rbac.load(str(tmp_path / "rbac.toml"), missing_ok=False)


def test_empty_file_denies_everything(tmp_path):
    rules = Rbac.load(write(tmp_path, "# nobody may do anything yet\n"))
    assert rules.enforced
    for action in ACTIONS:
        assert not rules.check(ZARA, action, "route.api", "weight", "production")


def test_every_matching_assignment_applies(tmp_path):
    rules = Rbac.load(write(tmp_path, """\
        [role.a]
        permissions = [ { actions = ["read"], resource = "route.*" } ]
        [role.b]
        permissions = [ { actions = ["write"], resource = "route.*" } ]
        [[assign]]
        actor = "*"
        roles = ["a"]
        [[assign]]
        actor = "pipeline:ci-?"
        roles = ["b"]
        """))
    ci1 = Actor("ci-1", "pipeline")
    assert rules.check(ci1, "read", "route.x", None, "p")
    assert rules.check(ci1, "write", "route.x", None, "p")
    assert not rules.check(Actor("ci-10", "pipeline"), "write", "route.x", None, "p")
    assert [role for role, _ in rules.roles_of(ci1)] == ["a", "b"]


# ------------------------------------------------------------------------------------------
# batches


def set_op(entity, field, value, **extra):
    return {"type": "set_field", "entity_id": entity, "field": field, "value": value, **extra}


def test_batch_allowed_whole(rules):
    rules.require_ops(AUTOSCALER, [set_op("route.api", "weight", 50),
                                   set_op("service.checkout", "replicas", 3, env="staging")],
                      base_env="production")


@pytest.mark.parametrize("ops, where, message", [
    ([set_op("route.api", "weight", 50), set_op("route.api", "weight", 50, env="staging")],
     "op 1: ", "may not write route.api/weight@staging"),
    ([set_op("route.api", "weight", 50), set_op("route.api", "weight", 40, override=True)],
     "op 1: ", "may not override route.api/weight@production"),
    ([{"type": "resolve", "entity_id": "service.x", "field": "replicas", "value": 2}],
     "", "may not resolve service.x/replicas@production"),
    ([set_op("route.api", "weight", 50),
      {"type": "delete_entity", "entity_id": "route.api", "field": "weight"}],
     "op 1: ", "may not write route.api@production"),
    ([{"type": "add_elements", "entity_id": "upstream.b", "field": "targets",
       "elements": ["x"]}, set_op("route.api", "weight", 1)],
     "op 0: ", "may not write upstream.b/targets@production"),
])
def test_batch_with_one_denied_op_is_refused_whole(rules, ops, where, message):
    with pytest.raises(PermissionDenied) as info:
        rules.require_ops(AUTOSCALER, ops, base_env="production")
    assert str(info.value).startswith(where + "[autoscaler:autoscaler-7] " + message)


def test_batch_needs_write_and_override_and_resolve(rules):
    rules.require_ops(OPS, [
        set_op("route.api", "weight", 10, env="staging", override=True),
        {"type": "resolve", "entity_id": "service.x", "field": "tier", "value": "web",
         "env": "staging"},
        {"type": "delete_entity", "entity_id": "upstream.old"},
    ], base_env="production")


@pytest.mark.parametrize("ops, message", [
    ("not a list", "a batch must be a list"),
    ([42], "must be an object"),
    ([{"type": "set_field", "entity_id": 7, "field": "weight"}], "entity_id must be"),
    ([{"type": "set_field", "entity_id": "route.a", "field": ["weight"]}], "field must be"),
    ([{"type": "set_field", "entity_id": "route.a", "field": "weight", "env": 3}],
     "env must be"),
])
def test_batch_malformed_op_is_a_validation_error(rules, ops, message):
    with pytest.raises(ValidationError, match=message):
        rules.require_ops(ZARA, ops, base_env="production")


def test_require_promote(rules):
    rules.require_promote(CI, "production", ["route.api", "service.checkout"])
    rules.require_promote(CI, "production", None)
    with pytest.raises(PermissionDenied, match=r"may not promote \*@staging"):
        rules.require_promote(CI, "staging", None)
    with pytest.raises(PermissionDenied, match="may not promote route.api@production"):
        rules.require_promote(AUTOSCALER, "production", ["route.api"])


# ------------------------------------------------------------------------------------------
# loading: refusals with file and line


ADMIN = '[role.admin]\npermissions = [ { actions = ["admin"], resource = "*" } ]\n'


@pytest.mark.parametrize("text, line, message", [
    ("version = 2\n" + ADMIN, 1, "unknown top-level key 'version'"),
    (ADMIN + "colour = 'blue'\n", 3, "role 'admin': unknown key 'colour'"),
    (('[role.a]\npermissions = [\n  { actions = ["read"], resource = "*" },\n'
      '  { actions = ["wirte"], resource = "*" },\n]\n'), 4,
     "role 'a': permission 2: unknown action 'wirte'"),
    ('[role.a]\npermissions = [ { actions = ["read"], resource = "*", when = "now" } ]\n', 2,
     "permission 1: unknown key 'when'"),
    ('[role.a]\npermissions = [ { actions = [], resource = "*" } ]\n', 2,
     "'actions' must be a non-empty list"),
    ('[role.a]\npermissions = [ { actions = ["read"] } ]\n', 2, "has no 'resource'"),
    (('[role.a]\npermissions = [\n  { actions = ["read"], resource = "*" },\n'
      '  { actions = ["read"], resource = "route/" },\n]\n'), 4,
     "resource 'route/': the name after 'TYPE/' is empty"),
    ('[role.a]\npermissions = [ { actions = ["read"], resource = "route.*@a@b" } ]\n', 2,
     "more than one '@'"),
    ('[role.a]\ninherits = ["b"]\n', 2, "role 'a' inherits unknown role 'b'"),
    ('[role.a]\ninherits = "b"\n', 2, "'inherits' must be a list"),
    ('[role.a]\ninherits = ["a"]\n', 1, "role inheritance cycle: a -> a"),
    ('[role.a]\ninherits = ["b"]\n\n[role.b]\ninherits = ["c"]\n\n[role.c]\ninherits = ["a"]\n',
     7, "role inheritance cycle: a -> b -> c -> a"),
    ('[role."bad name"]\n', 1, "role name 'bad name' is not valid"),
    (ADMIN + '\n[[assign]]\nactor = "zara"\nroles = ["admin", "root"]\n', 6,
     "assignment 1: unknown role 'root'"),
    (ADMIN + '\n[[assign]]\nactor = "zara"\nroles = []\n', 6, "'roles' must be a non-empty"),
    (ADMIN + '\n[[assign]]\nactor = "zara"\nroles = ["admin"]\nwho = 1\n', 7,
     "unknown key 'who'"),
    (ADMIN + '\n[[assign]]\nactor = "zara"\nroles = ["admin"]\n\n[[assign]]\n'
     'actor = "robot:*"\nroles = ["admin"]\n', 9,
     "assignment 2: actor 'robot:*': class 'robot' matches no actor class"),
    (ADMIN + '\n[[assign]]\nactor = "a b"\nroles = ["admin"]\n', 5, "characters"),
    (ADMIN + '\n[[assign]]\nactor = "a:b:c"\nroles = ["admin"]\n', 5, "more than one ':'"),
    (ADMIN + '\n[[assign]]\nroles = ["admin"]\n', 4, "names no actor: add actor_pattern"),
    ('[role.a]\npermissions = [ { actions = ["read"], resource = "*" }\n', 2, "invalid TOML"),
    ('role = 3\n', 1, "'role' must hold tables"),
    ('assign = 3\n', 1, "'assign' must be a list of tables"),
])
def test_load_errors_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        Rbac.load(path)
    err = info.value
    assert str(err).startswith(f"{path}:{line}: "), str(err)
    assert message in str(err)
    assert (err.path, err.line, err.exit_code) == (path, line, 2)


@pytest.mark.parametrize("resource, message", [
    ("route.*/weight@prodution", "no declared environment matches 'prodution'"),
    ("rout.*", "unknown entity type 'rout'"),
    ("x*.*", "no declared entity type matches 'x*'"),
    ("route.*/replicas", "no field 'replicas' in entity type(s) route"),
    ("*/nope", "no field 'nope'"),
])
def test_load_with_schema_refuses_undeclared_names(tmp_path, resource, message):
    path = write(tmp_path, f'[role.a]\n\npermissions = [ {{ actions = ["read"], '
                           f'resource = "{resource}" }} ]\n')
    Rbac.load(path)  # without the schema the pattern is fine
    with pytest.raises(InputError) as info:
        Rbac.load(path, schema=load_schema(EXAMPLE_SCHEMA))
    assert str(info.value).startswith(f"{path}:3: role 'a': permission 1: ")
    assert message in str(info.value)


def test_sub_table_permissions_are_read(tmp_path):
    path = write(tmp_path, """\
        [role.writer]
        [[role.writer.permissions]]
        actions = ["write"]
        resource = "route.*"

        [[assign]]
        actor = "*"
        roles = ["writer"]
        """)
    assert Rbac.load(path).check(NOBODY, "write", "route.a", "weight", "production")
    bad = write(tmp_path, """\
        [role.writer]
        [[role.writer.permissions]]
        actions = ["write"]
        resource = "route.*"

        [[role.writer.permissions]]
        actions = ["nope"]
        resource = "service.*"
        """, "bad.toml")
    with pytest.raises(InputError, match=r"bad.toml:7: role 'writer': permission 2: unknown "
                                         r"action 'nope'"):
        Rbac.load(bad)


# ------------------------------------------------------------------------------------------
# conflux rbac


@pytest.fixture
def project(tmp_path):
    """A project directory with the example schema and the rules (no store needed)."""
    root = tmp_path / "project"
    (root / ".conflux").mkdir(parents=True)
    shutil.copyfile(EXAMPLE_SCHEMA, root / ".conflux" / "schema.toml")
    (root / ".conflux" / "rbac.toml").write_text(RULES)
    return str(root)


@pytest.fixture
def cli(capsys, project):
    def run(*args, directory=None):
        capsys.readouterr()
        try:
            code = main(["--dir", directory or project, *args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_cli_check_allow(cli):
    code, out, err = cli("rbac", "check", "autoscaler:autoscaler-7", "write",
                         "route.api/weight@production")
    assert (code, err) == (0, "")
    assert out.startswith("allow: [autoscaler:autoscaler-7] write route.api/weight@production:")
    assert "role 'autoscaler'" in out


def test_cli_check_deny(cli):
    code, out, err = cli("rbac", "check", "autoscaler:autoscaler-7", "write",
                         "route.api/weight@staging")
    assert (code, err) == (1, "")
    assert out.startswith("deny: [autoscaler:autoscaler-7] write route.api/weight@staging")


def test_cli_check_inherited_json(cli):
    code, out, _ = cli("rbac", "check", "operator:olga", "read", "route.api", "--json")
    decision = json.loads(out)
    assert code == 0
    assert decision["resource"] == "route.api@production"  # no @ENV: the base environment
    assert (decision["role"], decision["via"]) == ("reader", "operator")


def test_cli_check_whole_environment(cli):
    assert cli("rbac", "check", "pipeline:ci-pipeline", "milestone", "*@production")[0] == 0
    assert cli("rbac", "check", "pipeline:ci-pipeline", "milestone", "@staging")[0] == 1
    assert cli("rbac", "check", "human:zara", "admin", "*@*")[0] == 0


@pytest.mark.parametrize("args, message", [
    (("zara", "wirte", "route.a@production"), "unknown action 'wirte'"),
    (("bad actor!", "read", "route.a@production"), "actor id"),
    (("zara", "read", "route.*@production"), "is not an entity id"),
    (("zara", "read", "route.a/x/y@production"), "more than one '/'"),
    (("zara", "read", "route@production"), "is a type, not an entity"),
    (("zara", "read", "route.a@prod!"), "is not an environment name"),
])
def test_cli_check_bad_input_exit_2(cli, args, message):
    code, out, err = cli("rbac", "check", *args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("conflux rbac: error: ")
    assert message in err


def test_cli_check_outside_a_project_needs_env(cli, tmp_path, project):
    rules = f"{project}/.conflux/rbac.toml"
    code, _, err = cli("rbac", "check", "zara", "read", "route.a", "--file", rules,
                       directory=str(tmp_path))
    assert code == 2 and "names no environment" in err
    code, out, _ = cli("rbac", "check", "human:zara", "read", "route.a@anywhere", "--file",
                       rules, directory=str(tmp_path))
    assert code == 0 and out.startswith("allow:")


def test_cli_check_without_rules_allows(cli, tmp_path):
    code, out, _ = cli("rbac", "check", "mallory", "admin", "*@*", directory=str(tmp_path))
    assert code == 0 and "no rbac.toml" in out


def test_cli_named_rules_file_must_exist(cli, tmp_path):
    for args in (("list-roles",), ("check", "zara", "read", "route.a@production")):
        code, out, err = cli("rbac", *args, "--file", str(tmp_path / "typo.toml"))
        assert code == 2 and out == "" and "typo.toml: no such file" in err


def test_cli_list_roles(cli):
    code, out, err = cli("rbac", "list-roles")
    assert (code, err) == (0, "")
    assert "5 roles, 4 assignments" in out
    assert "role operator  (inherits autoscaler)" in out
    operator = out.split("role operator")[1].split("\nrole ")[0]
    assert "write, override, resolve" in operator and "*@staging" in operator
    assert "(from autoscaler)" in operator and "(from reader)" in operator
    assert re.search(r"assigned to +operator:\*$", operator)


def test_cli_list_roles_json(cli):
    code, out, _ = cli("rbac", "list-roles", "--json")
    data = json.loads(out)
    roles = {r["name"]: r for r in data["roles"]}
    assert code == 0 and data["enforced"] is True
    assert roles["operator"]["inherited"] == ["autoscaler", "reader"]
    assert roles["reader"]["assigned_to"] == ["ci-*"]
    assert {"actions": ["read"], "resource": "*", "role": "reader"} in \
        roles["operator"]["permissions"]


def test_cli_list_roles_without_rules(cli, tmp_path):
    code, out, _ = cli("rbac", "list-roles", directory=str(tmp_path))
    assert code == 0 and "every authenticated actor may do everything" in out


def test_cli_validate(cli, project):
    code, out, err = cli("rbac", "validate")
    assert (code, err) == (0, "")
    assert "ok:" in out and "5 roles, 4 assignments" in out and "my-infrastructure" in out


@pytest.mark.parametrize("text, line, message", [
    ('[role.a]\ninherits = ["b"]\n\n[role.b]\ninherits = ["a"]\n', 4, "cycle: a -> b -> a"),
    ('[role.a]\npermissions = [ { actions = ["read"], resource = "route.*@prodution" } ]\n',
     2, "no declared environment matches 'prodution'"),
    ('[[assign]]\nactor = "*"\nroles = ["ghost"]\n', 3, "unknown role 'ghost'"),
])
def test_cli_validate_refuses_with_file_and_line(cli, tmp_path, text, line, message):
    path = write(tmp_path, text, "candidate.toml")
    code, out, err = cli("rbac", "validate", path)
    assert code == 2 and out == ""
    assert err.splitlines() == [err.strip()]
    assert err.startswith(f"conflux rbac: error: {path}:{line}: ") and message in err


def test_cli_validate_missing_file(cli, tmp_path):
    code, _, err = cli("rbac", "validate", directory=str(tmp_path))
    assert code == 2 and "rbac.toml: no such file" in err


def test_cli_rbac_subcommand_help(cli):
    for sub in ("list-roles", "check", "validate"):
        code, out, _ = cli("rbac", sub, "--help")
        assert code == 0 and out.startswith(f"usage: conflux rbac {sub}")


def test_the_cli_obeys_rbac_toml_for_its_writes(tmp_path, capsys):
    """With an rbac.toml, local writes are checked like the daemon's: a denied one writes
    nothing and exits 2 naming the actor and the resource."""
    from conflux.cli import main
    from conflux.engine import Engine
    from conftest import EXAMPLE_SCHEMA

    project = tmp_path / "p"
    Engine.init(str(project), str(EXAMPLE_SCHEMA)).close()
    (project / ".conflux" / "rbac.toml").write_text(
        '[role.scaler]\npermissions = [{ actions = ["write"], resource = "route.*/weight" }]\n'
        '[[assign]]\nactor = "autoscaler:*"\nroles = ["scaler"]\n')
    base = ["--dir", str(project)]
    assert main(base + ["set", "route.a", "weight", "5", "--actor", "autoscaler:as7"]) == 0
    capsys.readouterr()
    denied = [["set", "route.a", "path", "/x", "--actor", "autoscaler:as7"],
              ["set", "route.a", "weight", "1", "--override", "--actor", "autoscaler:as7"],
              ["delete", "route.a", "--actor", "autoscaler:as7"],
              ["promote", "--from", "staging", "--to", "production", "--actor",
               "autoscaler:as7"],
              ["set", "route.a", "weight", "7", "--actor", "human:zara"]]
    for argv in denied:
        assert main(base + argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "may not" in err[0], (argv, err)
    engine = Engine(str(project))
    assert engine.status()["operations"] == 1
    engine.close()


# ------------------------------------------------------------------------------------------
# the original Conflux's rbac.toml and rbac check, as its README writes them

# the rbac.toml of the original README, as written there
from test_original_readme import RBAC as ORIGINAL_RULES  # noqa: E402


@pytest.fixture
def original(tmp_path):
    return Rbac.load(write(tmp_path, ORIGINAL_RULES), schema=load_schema(EXAMPLE_SCHEMA))


def test_original_rules_assign_by_actor_pattern(original):
    # a pattern without a class is matched against the actor id, whatever the class
    assert original.check(CI, "write", "service.api", "replicas", "development")
    assert original.check(Actor("ci-nightly", "operator"), "read", "route.a", None,
                          "development")
    assert not original.check(CI, "write", "service.api", "replicas", "staging")
    assert not original.check(Actor("cicd", "pipeline"), "read", "route.a", None,
                              "development")
    assert not original.check(ZARA, "read", "route.a", None, "development")


def test_original_type_slash_name_resources(tmp_path):
    rules = Rbac.load(write(tmp_path, """\
        [role.api]
        permissions = [
          { actions = ["write"], resource = "service/api@staging" },
          { actions = ["read"], resource = "service" },
          { actions = ["write"], resource = "route/api-*/weight" },
        ]
        [[assignment]]
        actor = "alice"
        roles = ["api"]
        """), schema=load_schema(EXAMPLE_SCHEMA))
    alice = Actor("alice", "human")
    assert rules.check(alice, "write", "service.api", "image", "staging")
    assert not rules.check(alice, "write", "service.web", "image", "staging")
    assert not rules.check(alice, "write", "service.api", "image", "production")
    assert rules.check(alice, "read", "service.web", None, "production")
    assert not rules.check(alice, "read", "route.api", None, "production")
    assert rules.check(alice, "write", "route.api-v1", "weight", "production")
    assert not rules.check(alice, "write", "route.api-v1", "path", "production")


def test_assignment_actor_class_and_exact_actor(tmp_path):
    rules = Rbac.load(write(tmp_path, """\
        [role.ci]
        permissions = [ { actions = ["read"], resource = "*" } ]
        [role.boss]
        permissions = [ { actions = ["*"], resource = "*" } ]
        [[assignment]]
        actor_pattern = "ci-*"
        actor_class = "pipeline"
        roles = ["ci"]
        [[assignment]]
        actor = "zara"
        roles = ["boss"]
        """))
    assert rules.check(CI, "read", "route.a", None, "production")
    assert not rules.check(Actor("ci-pipeline", "human"), "read", "route.a", None, "production")
    # "*" grants every action
    for action in ACTIONS:
        assert rules.check(ZARA, action, None, None, None)
    assert not rules.check(Actor("zara-2", "human"), "read", None, None, None)
    decision = rules.decide(CI, "read", "route.a", None, "production")
    assert "assigned by actor_pattern = 'ci-*', actor_class = 'pipeline'" in decision.reason()


def test_default_authenticated_roles(tmp_path):
    rules = Rbac.load(write(tmp_path, """\
        [rbac]
        version = "1.0"
        default_authenticated = ["viewer"]
        default_anonymous = []

        [role.viewer]
        description = "Read-only access"
        permissions = [ { actions = ["read"], resource = "*" } ]
        """))
    assert rules.check(NOBODY, "read", "route.a", "weight", "production")
    assert not rules.check(NOBODY, "write", "route.a", "weight", "production")
    assert "[rbac] default_authenticated" in rules.decide(NOBODY, "read").reason()


@pytest.mark.parametrize("text, line, message", [
    ('[rbac]\ndefault_anonymous = ["viewer"]\n[role.viewer]\npermissions = []\n', 2,
     "default_anonymous must be empty"),
    ('[rbac]\ndefault_authenticated = ["viewer"]\n', 2,
     "default_authenticated names unknown role 'viewer'"),
    ('[rbac]\ncolour = 1\n', 2, "[rbac]: unknown key 'colour'"),
    ('[role.a]\npermissions = [ { actions = ["create"], resource = "*" } ]\n', 2,
     "Conflux has no 'create' action: writing a field creates its entity"),
    ('[role.a]\npermissions = [ { actions = ["delete"], resource = "*" } ]\n', 2,
     "needs 'write' on the entity as a whole"),
    (ADMIN + '\n[[assignment]]\nactor = "a"\nactor_pattern = "b*"\nroles = ["admin"]\n', 4,
     "give one of 'actor' (an id) and 'actor_pattern' (a glob), not both"),
    (ADMIN + '\n[[assignment]]\nactor_pattern = "ci-*"\nactor_class = "robot"\n'
     'roles = ["admin"]\n', 6, "actor_class 'robot' is not one of"),
    (ADMIN + '\n[[assignment]]\nactor_pattern = "ci-*"\nroles = ["root"]\n', 6,
     "unknown role 'root'"),
])
def test_original_form_refusals(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        Rbac.load(path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert message in str(info.value)


@pytest.fixture
def original_project(project):
    with open(f"{project}/.conflux/rbac.toml", "w") as fh:
        fh.write(ORIGINAL_RULES + '\n[[assignment]]\nactor = "alice"\nroles = ["operator"]\n')
    return project


@pytest.mark.parametrize("resource, allowed", [
    ("service/api@staging", True),        # TYPE/NAME, as the original writes it
    ("service.api@staging", True),
    ("service.api/replicas@staging", True),
    ("service/api/replicas@staging", True),
    ("service/api@production", False),
    ("service/api", False),               # no @ENV: the base environment (production)
])
def test_cli_check_with_the_original_flags(cli, original_project, resource, allowed):
    code, out, err = cli("rbac", "check", "--actor", "alice", "--action", "write",
                         "--resource", resource)
    assert err == "" and code == (0 if allowed else 1)
    assert out.startswith("allow: [human:alice] write " if allowed else "deny: ")
    # the positional form gives the same answer
    assert cli("rbac", "check", "alice", "write", resource)[0] == code


@pytest.mark.parametrize("args, message", [
    (("--actor", "alice", "--action", "write"), "no RESOURCE"),
    (("alice", "--actor", "bob", "write", "service/api@staging"), "ACTOR is given twice"),
    (("--actor", "alice", "--action", "write", "--resource", "service@staging"),
     "is a type, not an entity"),
])
def test_cli_check_flag_errors(cli, original_project, args, message):
    code, out, err = cli("rbac", "check", *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert message in err
