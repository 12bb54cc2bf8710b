"""Tests of conflux.schema: loading, refusals with locations, coercion, constraints, display."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from conflux.errors import NotFound, SchemaError, ValidationError
from conflux.schema import (
    INT64_MAX,
    INT64_MIN,
    EntityType,
    Field,
    Schema,
    format_duration,
    load_schema,
    parse_duration,
    parse_schema,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "schema.toml"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema(EXAMPLE)


def one_field(field_line: str, *, extra: str = "") -> str:
    """A schema whose field under test is on line 5 of 'route' (line 2 is its header)."""
    return (
        'name = "t"\n'                                            # 1
        "[entity.route]\n"                                        # 2
        "fields = [\n"                                            # 3
        '    { name = "path", type = "string", merge = "lww" },\n'  # 4
        f"    {field_line},\n"                                    # 5
        "]\n"                                                     # 6
        "[entity.service]\n"                                      # 7
        'fields = [ { name = "image", type = "string", merge = "lww" } ]\n'  # 8
        + extra
    )


def refused(text: str, source: str = "t.toml") -> SchemaError:
    with pytest.raises(SchemaError) as info:
        parse_schema(text, source)
    error = info.value
    assert error.message.startswith(f"{source}:"), error.message
    assert error.path == source
    return error


# ------------------------------------------------------------------------------------------
# The example


def test_example_loads(schema):
    assert schema.name == "my-infrastructure"
    assert schema.version == "1.0.0"
    assert schema.source == str(EXAMPLE)
    assert schema.base_env == "production"
    assert schema.environments == ["production", "staging", "development"]
    assert schema.parents == {"production": None, "staging": "production",
                              "development": "staging"}
    assert list(schema.types) == ["route", "service", "upstream"]
    assert all(isinstance(t, EntityType) for t in schema.types.values())
    assert list(schema.types["service"].fields) == [
        "image", "replicas", "env_vars", "ports", "tier", "labels"]


def test_example_fields(schema):
    weight = schema.field("route", "weight")
    assert (weight.kind, weight.merge, weight.min, weight.max) == ("int", "max", 0, 100)
    assert weight.is_numeric and not weight.is_set
    assert weight.entity_type == "route"

    service = schema.field("route", "service")
    assert (service.kind, service.ref_type, service.required) == ("ref", "service", True)
    assert schema.entity_type("route").required == ["service"]

    path = schema.field("route", "path")
    assert path.pattern is not None and path.pattern.pattern == "^/"

    ports = schema.field("service", "ports")
    assert (ports.type, ports.kind, ports.item_kind, ports.is_set) == (
        "list<int>", "list", "int", True)
    assert not ports.is_numeric

    assert schema.field("service", "replicas").default == 1
    assert schema.field("service", "tier").one_of == ["web", "batch"]
    assert schema.field("service", "tier").merge == "review"
    assert schema.field("service", "labels").merge == "grow"
    assert schema.field("upstream", "healthcheck").default == "/healthz"
    assert schema.field("route", "timeout").default is None


def test_env_chain_and_children(schema):
    assert schema.env_chain("development") == ["development", "staging", "production"]
    assert schema.env_chain("production") == ["production"]
    assert schema.children("production") == ["staging", "development"]
    assert schema.children("staging") == ["development"]
    assert schema.children("development") == []


def test_unknown_environment(schema):
    with pytest.raises(NotFound, match=r"unknown environment 'qa' \(known: production, "
                                       r"staging, development\)"):
        schema.env_chain("qa")
    with pytest.raises(NotFound):
        schema.children("qa")


def test_no_environments_table_means_production_only():
    s = parse_schema(one_field('{ name = "w", type = "int", merge = "lww" }'))
    assert s.base_env == "production"
    assert s.environments == ["production"]
    assert s.parents == {"production": None}
    assert s.name == "t" and s.version == ""


def test_branching_environments():
    s = parse_schema(one_field('{ name = "w", type = "int", merge = "lww" }', extra=(
        '[environments]\nbase = "prod"\noverlays = [\n'
        '  { name = "eu", inherits = "prod" },\n'
        '  { name = "eu-dev", inherits = "eu" },\n'
        '  { name = "us", inherits = "prod" },\n]\n')))
    assert s.environments == ["prod", "eu", "eu-dev", "us"]
    assert s.children("prod") == ["eu", "eu-dev", "us"]
    assert s.children("eu") == ["eu-dev"]
    assert s.env_chain("eu-dev") == ["eu-dev", "eu", "prod"]


def test_lookups(schema):
    assert schema.entity_type("route").name == "route"
    with pytest.raises(ValidationError,
                       match=r"unknown entity type 'x' \(declared: route, service, upstream\)"):
        schema.entity_type("x")
    with pytest.raises(ValidationError, match="'route' has no field 'nope'.*path, weight") as info:
        schema.field("route", "nope")
    assert info.value.field == "nope"


@pytest.mark.parametrize("entity_id, expected", [
    ("route.api", ("route", "api")),
    ("route.api.v1", ("route", "api.v1")),
    ("service.check-out_2", ("service", "check-out_2")),
    ("service." + "n" * 200, ("service", "n" * 200)),
])
def test_split_entity_id(schema, entity_id, expected):
    assert schema.split_entity_id(entity_id) == expected


@pytest.mark.parametrize("entity_id, message", [
    ("route", "must be '<type>.<name>'"),
    ("nope.api", "unknown entity type 'nope'"),
    ("route.", "not a valid entity name"),
    ("route.-x", "not a valid entity name"),
    ("route.a b", "not a valid entity name"),
    ("route." + "n" * 201, "at most 200 characters"),  # names go into LMDB keys
])
def test_split_entity_id_refuses(schema, entity_id, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        schema.split_entity_id(entity_id)


# ------------------------------------------------------------------------------------------
# Refusals: every one names the file, and where known the line, entity and field


@pytest.mark.parametrize("field_line, field, message", [
    ('{ name = "w", type = "string", merge = "max" }', "w",
     "merge strategy 'max' does not fit type 'string' (max needs int, float or duration)"),
    ('{ name = "w", type = "bool", merge = "min" }', "w", "merge strategy 'min' does not fit"),
    ('{ name = "w", type = "int", merge = "set" }', "w", "'set' does not fit type 'int'"),
    ('{ name = "w", type = "string", merge = "grow" }', "w", "'grow' does not fit"),
    ('{ name = "w", type = "list<int>", merge = "review" }', "w", "'review' does not fit"),
    ('{ name = "w", type = "list<int>", merge = "max" }', "w", "'max' does not fit"),
    ('{ name = "w", type = "int", merge = "lww", colour = 1 }', "w", "unknown key 'colour'"),
    ('{ name = "w", type = "integer", merge = "lww" }', "w", "unknown type 'integer'"),
    ('{ name = "w", type = "list<map>", merge = "lww" }', "w", "unknown type 'list<map>'"),
    ('{ name = "w", type = "list<list<int>>", merge = "lww" }', "w", "unknown type"),
    ('{ name = "w", type = "int", merge = "sum" }', "w", "unknown merge strategy 'sum'"),
    ('{ name = "w", merge = "lww" }', "w", "missing 'type'"),
    ('{ name = "w", type = "int" }', "w", "missing 'merge'"),
    ('{ name = "w", type = 3, merge = "lww" }', "w", "'type' must be a string"),
    ('{ name = "path", type = "int", merge = "lww" }', "path", "declared twice"),
    ('{ name = "w", type = "string", merge = "lww", pattern = "(" }', "w", "invalid pattern"),
    ('{ name = "w", type = "int", merge = "max", min = 5, max = 1 }', "w",
     "min 5 is greater than max 1"),
    ('{ name = "w", type = "duration", merge = "min", min = "1m", max = "30s" }', "w",
     "min 1m is greater than max 30s"),
    ('{ name = "w", type = "string", merge = "lww", min = 1 }', "w", "'min' needs a numeric"),
    ('{ name = "w", type = "bool", merge = "lww", max = 1 }', "w", "'max' needs a numeric"),
    ('{ name = "w", type = "int", merge = "lww", min = 1.5 }', "w", "is not a valid int"),
    ('{ name = "w", type = "int", merge = "lww", pattern = "^a" }', "w",
     "'pattern' needs type string"),
    ('{ name = "w", type = "int", merge = "lww", default = "x" }', "w",
     "default string 'x' does not fit type 'int'"),
    ('{ name = "w", type = "int", merge = "lww", default = 7, max = 5 }', "w",
     "default breaks its constraints: w 7 is above max 5"),
    ('{ name = "w", type = "string", merge = "lww", default = "a", pattern = "^/" }', "w",
     "does not match pattern"),
    ('{ name = "w", type = "string", merge = "lww", default = "c", one_of = ["a", "b"] }',
     "w", "is not one of 'a', 'b'"),
    ('{ name = "w", type = "list<int>", merge = "set", default = [1, 200], max = 100 }', "w",
     "w element 200 is above max 100"),
    ('{ name = "w", type = "duration", merge = "lww", default = "5x" }', "w",
     "does not fit type 'duration'"),
    ('{ name = "w", type = "int", merge = "lww", one_of = [] }', "w", "non-empty list"),
    ('{ name = "w", type = "map", merge = "lww", one_of = [1] }', "w",
     "'one_of' does not apply to a map"),
    ('{ name = "w", type = "int", merge = "lww", required = "yes" }', "w",
     "'required' must be true or false"),
    ('{ name = "w", type = "ref<nope>", merge = "lww" }', "w",
     "refers to undeclared entity type 'nope' (declared: route, service)"),
    ('{ name = "w", type = "list<ref<nope>>", merge = "set" }', "w",
     "undeclared entity type 'nope'"),
])
def test_field_refusals(field_line, field, message):
    error = refused(one_field(field_line))
    assert error.message.startswith(f"t.toml:5: entity 'route', field '{field}': ")
    assert message in error.message
    assert (error.line, error.entity, error.field) == (5, "route", field)


@pytest.mark.parametrize("field_line, line, message", [
    # Without a name to search for, the entity's header is the place to look.
    ('{ type = "int", merge = "lww" }', 2, "a field has no 'name'"),
    ('{ name = 7, type = "int", merge = "lww" }', 2, "invalid field name 7"),
    ('{ name = "9lives", type = "int", merge = "lww" }', 5, "invalid field name '9lives'"),
    ('{ name = "a-b", type = "int", merge = "lww" }', 5, "invalid field name 'a-b'"),
])
def test_field_name_refusals(field_line, line, message):
    error = refused(one_field(field_line))
    assert error.message.startswith(f"t.toml:{line}: entity 'route': ")
    assert message in error.message
    assert (error.line, error.entity) == (line, "route")


def test_refusal_line_with_array_of_tables():
    text = (
        "[entity.route]\n"          # 1
        "[[entity.route.fields]]\n"  # 2
        'name = "path"\n'           # 3
        'type = "string"\n'         # 4
        'merge = "lww"\n'           # 5
        "[[entity.route.fields]]\n"  # 6
        'name = "weight"\n'         # 7
        'type = "string"\n'         # 8
        'merge = "max"\n'           # 9
    )
    error = refused(text, "schema.toml")
    assert error.message == (
        "schema.toml:7: entity 'route', field 'weight': merge strategy 'max' does not fit "
        "type 'string' (max needs int, float or duration)")


def test_refusal_points_at_the_right_entity():
    # The same field name in two entity types: the line must be the failing entity's.
    text = one_field('{ name = "w", type = "int", merge = "lww" }', extra=(
        "[entity.upstream]\n"                                      # 9
        "fields = [\n"                                             # 10
        '    { name = "image", type = "string", merge = "max" },\n'  # 11
        "]\n"))
    error = refused(text)
    assert error.line == 11
    assert error.entity == "upstream" and error.field == "image"


def test_duplicate_field_points_at_second_declaration():
    text = ("[entity.route]\nfields = [\n"
            '  { name = "a", type = "int", merge = "lww" },\n'
            '  { name = "a", type = "int", merge = "lww" },\n]\n')
    error = refused(text)
    assert error.line == 4 and "declared twice" in error.message


@pytest.mark.parametrize("text, line, message", [
    ('name = "t"\ncolour = "red"\n[entity.a]\nfields = []\n', 2, "unknown top-level key 'colour'"),
    ('name = "t"\n[entity.a]\nfields = []\n[extras]\nx = 1\n', 4, "unknown top-level key 'extras'"),
    ('name = 3\n[entity.a]\nfields = []\n', 1, "'name' must be a string"),
    ('name = "t"\n', None, "declares no entity types"),
    ('name = "t"\n[entity]\n', 2, "declares no entity types"),
])
def test_document_refusals(text, line, message):
    error = refused(text)
    assert message in error.message
    assert error.line == line


@pytest.mark.parametrize("header, message", [
    ("[entity.\"a.b\"]", "invalid entity type name"),
    ("[entity.9a]", "invalid entity type name"),
    ("[entity.a.b]", "unknown key 'b'"),
])
def test_entity_name_refusals(header, message):
    text = 'name = "t"\n' + header + '\nfields = [ { name = "x", type = "int", merge = "lww" } ]\n'
    error = refused(text)
    assert message in error.message
    assert error.line == 2
    assert error.message.startswith("t.toml:2: entity ")


def test_entity_unknown_key_and_missing_fields():
    error = refused('[entity.a]\nfield = []\n')
    assert "unknown key 'field'" in error.message and error.entity == "a"
    error = refused('[entity.a]\ndescription = "x"\n')
    assert "needs fields = [" in error.message and error.line == 1


ENTITY = '[entity.a]\nfields = [ { name = "x", type = "int", merge = "lww" } ]\n'


@pytest.mark.parametrize("environments, line, message", [
    ('[environments]\noverlays = []\n', 1, "has no 'base'"),
    ('[environments]\nbase = "prod"\nflavour = 1\n', 3, "unknown key 'flavour'"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "qa", inherits = "nope" },\n]\n',
     4, "environment 'qa': inherits from unknown environment 'nope'"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "qa", inherits = "prod" },\n'
     '  { name = "qa", inherits = "prod" },\n]\n', 5, "environment 'qa': declared twice"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "prod", inherits = "prod" },\n]\n',
     4, "environment 'prod': declared twice"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "a", inherits = "b" },\n'
     '  { name = "b", inherits = "a" },\n]\n', 4, "inheritance cycle a -> b -> a"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "a", inherits = "a" },\n]\n',
     4, "inheritance cycle a -> a"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "a" },\n]\n', 4, "needs 'inherits'"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "a", inherits = "prod", x = 1 },\n]\n',
     4, "unknown key 'x' in overlay"),
    ('[environments]\nbase = "pro d"\n', 2, "invalid environment name 'pro d'"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "-qa", inherits = "prod" },\n]\n',
     4, "invalid environment name '-qa'"),
    ('[environments]\nbase = "prod"\noverlays = [\n  { name = "q.a", inherits = "prod" },\n]\n',
     4, "invalid environment name 'q.a'"),
])
def test_environment_refusals(environments, line, message):
    error = refused(environments + ENTITY)
    assert message in error.message
    assert error.line == line
    assert error.message.startswith(f"t.toml:{line}: ")


def test_invalid_toml_names_file_and_line():
    error = refused('name = "t"\n[entity.a]\nfields = [ { name = } ]\n', "bad.toml")
    assert error.line == 3
    assert error.message.startswith("bad.toml:3: invalid TOML: ")
    assert "(at line" not in error.message


def test_load_schema_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SchemaError, match=re.escape(str(missing))) as info:
        load_schema(missing)
    assert info.value.path == str(missing)


def test_load_schema_names_the_file_in_errors(tmp_path):
    path = tmp_path / "schema.toml"
    path.write_text(one_field('{ name = "weight", type = "string", merge = "max" }'))
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    assert info.value.message.startswith(f"{path}:5: entity 'route', field 'weight': ")


def test_load_schema_not_utf8(tmp_path):
    path = tmp_path / "schema.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(SchemaError, match="not UTF-8"):
        load_schema(path)


# ------------------------------------------------------------------------------------------
# Coercion (before accept)


def field_of(type_text: str, merge: str = "lww", **constraints) -> Field:
    extra = "".join(f", {key} = {value}" for key, value in constraints.items())
    text = one_field(f'{{ name = "f", type = "{type_text}", merge = "{merge}"{extra} }}')
    return parse_schema(text).field("route", "f")


def test_coerce_string():
    f = field_of("string")
    assert f.coerce("abc") == "abc"
    with pytest.raises(ValidationError, match=r"^route\.f: expected string, got int 5$"):
        f.coerce(5)


def test_coerce_int(schema):
    replicas = schema.field("service", "replicas")
    assert replicas.coerce(3) == 3
    assert replicas.coerce(3.0) == 3 and type(replicas.coerce(3.0)) is int
    assert replicas.coerce(INT64_MAX) == INT64_MAX
    assert replicas.coerce(INT64_MIN) == INT64_MIN
    with pytest.raises(ValidationError,
                       match=r"^service\.replicas: expected int, got string 'abc'$") as info:
        replicas.coerce("abc")
    assert info.value.field == "replicas"
    with pytest.raises(ValidationError, match="got bool true"):
        replicas.coerce(True)
    with pytest.raises(ValidationError, match="got float 2.5"):
        replicas.coerce(2.5)
    with pytest.raises(ValidationError, match="signed 64-bit"):
        replicas.coerce(INT64_MAX + 1)
    with pytest.raises(ValidationError, match="signed 64-bit"):
        replicas.coerce(INT64_MIN - 1)
    with pytest.raises(ValidationError):
        replicas.coerce(None)
    # Coercion checks the type only: max = 500 is a post-merge constraint.
    assert replicas.coerce(1000) == 1000


def test_coerce_float():
    f = field_of("float")
    assert f.coerce(1.5) == 1.5
    assert f.coerce(2) == 2.0 and type(f.coerce(2)) is float
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValidationError, match="finite"):
            f.coerce(bad)
    with pytest.raises(ValidationError, match="got bool false"):
        f.coerce(False)
    with pytest.raises(ValidationError, match="too large"):
        f.coerce(10 ** 400)
    with pytest.raises(ValidationError, match="expected float, got string '1.5'"):
        f.coerce("1.5")


def test_coerce_bool():
    f = field_of("bool")
    assert f.coerce(True) is True and f.coerce(False) is False
    with pytest.raises(ValidationError, match="expected bool, got int 1"):
        f.coerce(1)
    with pytest.raises(ValidationError, match="expected bool"):
        f.coerce("true")


@pytest.mark.parametrize("given_value, ms", [
    ("30s", 30_000), ("5m", 300_000), ("1h30m", 5_400_000), ("250ms", 250),
    ("1d", 86_400_000), ("1d2h3m4s5ms", 93_784_005), ("0s", 0), ("0", 0), ("90m", 5_400_000),
    (1500, 1500), (0, 0), (2.0, 2),
])
def test_coerce_duration(schema, given_value, ms):
    assert schema.field("route", "timeout").coerce(given_value) == ms


@pytest.mark.parametrize("bad, message", [
    ("5x", "invalid duration"), ("", "invalid duration"), ("m", "invalid duration"),
    ("30m1h", "invalid duration"), ("1h 30m", "invalid duration"), ("-5s", "negative"),
    ("1.5s", "invalid duration"), ("5s5s", "invalid duration"), (-1, "cannot be negative"),
    (True, "got bool true"), (1.5, "got float 1.5"), (None, "got null"),
])
def test_coerce_duration_refuses(schema, bad, message):
    with pytest.raises(ValidationError, match=re.escape(message)) as info:
        schema.field("route", "timeout").coerce(bad)
    assert info.value.message.startswith("route.timeout: ")


def test_coerce_ref(schema):
    f = schema.field("route", "service")
    assert f.coerce("checkout") == "service.checkout"
    assert f.coerce("service.checkout") == "service.checkout"
    # Names may contain dots; only a declared type before the first dot makes it an id.
    assert f.coerce("checkout.v2") == "service.checkout.v2"
    assert f.coerce("service.checkout.v2") == "service.checkout.v2"
    with pytest.raises(ValidationError, match=r"expected a ref to a service, got 'route\.api'"):
        f.coerce("route.api")
    with pytest.raises(ValidationError, match="not a valid entity name"):
        f.coerce("bad name")
    with pytest.raises(ValidationError, match="not a valid entity name"):
        f.coerce("service.")
    with pytest.raises(ValidationError, match=r"expected ref<service>.*got int 3"):
        f.coerce(3)


def test_coerce_map(schema):
    f = schema.field("service", "env_vars")
    value = {"B": "1", "A": {"nested": [1, 2.5, None, True, {"x": "y"}]}}
    result = f.coerce(value)
    assert result == value
    assert list(result) == ["B", "A"]  # kept as given
    assert result is not value  # a copy: later changes by the caller do not leak in
    assert f.coerce({}) == {}
    with pytest.raises(ValidationError, match="expected map, got list"):
        f.coerce([1])
    with pytest.raises(ValidationError, match="map keys must be strings"):
        f.coerce({1: "x"})
    with pytest.raises(ValidationError, match="map keys must be strings"):
        f.coerce({"a": {2: "x"}})
    with pytest.raises(ValidationError, match="not a finite number"):
        f.coerce({"a": [math.nan]})
    with pytest.raises(ValidationError, match="not a JSON value"):
        f.coerce({"a": object()})
    with pytest.raises(ValidationError, match="signed 64-bit"):
        f.coerce({"a": 2 ** 64})


def test_coerce_map_too_deep_is_a_validation_error(schema):
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ValidationError, match="nested deeper"):
        schema.field("service", "env_vars").coerce(deep)


def test_coerce_lists(schema):
    ports = schema.field("service", "ports")
    assert ports.coerce([80, 443.0]) == [80, 443]
    assert ports.coerce([80, 80, 443]) == [80, 443]  # a set field holds no repeats
    assert ports.coerce([]) == []
    with pytest.raises(ValidationError, match=r"^service\.ports\[1\]: expected int, got string"):
        ports.coerce([80, "http"])
    with pytest.raises(ValidationError, match=r"expected list<int>, got int 80"):
        ports.coerce(80)

    lww_list = field_of("list<duration>")
    assert lww_list.coerce(["1s", "1s", 5]) == [1000, 1000, 5]  # lww keeps the list as given

    refs = field_of("list<ref<service>>", "set")
    assert (refs.kind, refs.item_kind, refs.ref_type) == ("list", "ref", "service")
    assert refs.coerce(["a", "service.b"]) == ["service.a", "service.b"]


def test_coerce_element(schema):
    ports = schema.field("service", "ports")
    assert ports.coerce_element(8080) == 8080
    with pytest.raises(ValidationError, match="expected int, got bool true"):
        ports.coerce_element(True)
    assert schema.field("service", "labels").coerce_element("team-a") == "team-a"
    assert field_of("list<duration>", "grow").coerce_element("1m") == 60_000
    with pytest.raises(ValidationError, match="not a set field") as info:
        schema.field("service", "replicas").coerce_element(1)
    assert info.value.field == "replicas"
    with pytest.raises(ValidationError, match="not a set field"):
        field_of("list<int>").coerce_element(1)  # an lww list is replaced whole


def test_parse_text(schema):
    assert schema.field("service", "replicas").parse_text("42") == 42
    assert field_of("string").parse_text("42") == "42"
    assert field_of("float").parse_text("2.5") == 2.5
    assert field_of("bool").parse_text("TRUE") is True
    assert schema.field("route", "timeout").parse_text("1h30m") == 5_400_000
    assert schema.field("route", "service").parse_text("checkout") == "service.checkout"
    assert schema.field("service", "env_vars").parse_text('{"A": 1}') == {"A": 1}
    assert schema.field("service", "ports").parse_text("[80, 443]") == [80, 443]
    assert schema.field("service", "ports").parse_text("8080", element=True) == 8080
    with pytest.raises(ValidationError, match="expected int, got string 'abc'"):
        schema.field("service", "replicas").parse_text("abc")
    with pytest.raises(ValidationError, match="expected bool"):
        field_of("bool").parse_text("maybe")
    with pytest.raises(ValidationError, match="finite"):
        field_of("float").parse_text("nan")
    with pytest.raises(ValidationError, match="not a set field"):
        schema.field("service", "replicas").parse_text("1", element=True)


# ------------------------------------------------------------------------------------------
# Constraints (after merge)


def test_violations(schema):
    weight = schema.field("route", "weight")
    assert weight.violations(50) == []
    assert weight.violations(None) == []
    assert weight.violations(120) == ["weight 120 is above max 100"]
    assert weight.violations(-1) == ["weight -1 is below min 0"]

    path = schema.field("route", "path")
    assert path.violations("/api") == []
    assert path.violations("api") == ["path 'api' does not match pattern '^/'"]
    # re.search semantics: an unanchored pattern matches anywhere.
    assert field_of("string", pattern='"v[0-9]"').violations("api-v2") == []

    tier = schema.field("service", "tier")
    assert tier.violations("web") == []
    assert tier.violations("gpu") == ["tier 'gpu' is not one of 'web', 'batch'"]


def test_violations_durations_compare_milliseconds():
    timeout = field_of("duration", "min", min='"1s"', max='"1m"')
    assert (timeout.min, timeout.max) == (1000, 60_000)
    assert timeout.violations(30_000) == []
    assert timeout.violations(500) == ["f 500ms is below min 1s"]
    assert timeout.violations(90_000) == ["f 1m30s is above max 1m"]


def test_violations_check_each_set_element():
    ports = field_of("list<int>", "set", min=1, max=65535)
    assert ports.violations([80, 443]) == []
    assert ports.violations([0, 80, 70000]) == [
        "f element 0 is below min 1", "f element 70000 is above max 65535"]
    names = field_of("list<string>", "grow", one_of='["a", "b"]')
    assert names.violations(["a", "c"]) == ["f element 'c' is not one of 'a', 'b'"]


def test_constraints_are_normalized():
    f = field_of("float", "max", min=0, max=1)
    assert (f.min, f.max) == (0.0, 1.0) and type(f.min) is float
    assert f.violations(1.5) == ["f 1.5 is above max 1.0"]
    refs = field_of("ref<service>", one_of='["a", "service.b"]')
    assert refs.one_of == ["service.a", "service.b"]


def test_defaults_are_normalized():
    assert field_of("duration", default='"1m30s"').default == 90_000
    assert field_of("float", default=1).default == 1.0
    assert field_of("list<int>", "set", default="[3, 3, 4]").default == [3, 4]
    assert field_of("ref<service>", default='"web"').default == "service.web"
    assert field_of("map", default="{ a = 1 }").default == {"a": 1}


# ------------------------------------------------------------------------------------------
# Display and durations


def test_format(schema):
    assert schema.field("route", "timeout").format(5_400_000) == "1h30m"
    assert schema.field("route", "timeout").format(250) == "250ms"
    assert schema.field("route", "timeout").format(0) == "0s"
    assert field_of("bool").format(True) == "true"
    assert field_of("bool").format(False) == "false"
    assert schema.field("route", "path").format("/api") == "/api"
    assert schema.field("route", "weight").format(80) == "80"
    assert field_of("float").format(0.5) == "0.5"
    assert schema.field("route", "service").format("service.web") == "service.web"
    assert schema.field("service", "ports").format([80, 443]) == "[80,443]"
    assert schema.field("service", "labels").format(["a", "b"]) == '["a","b"]'
    assert field_of("list<duration>").format([1000, 90_000]) == '["1s","1m30s"]'
    assert schema.field("service", "env_vars").format({"A": "x", "B": 1}) == '{"A":"x","B":1}'
    assert schema.field("route", "weight").format(None) == "null"


@pytest.mark.parametrize("text", ["1h30m", "250ms", "30s", "5m", "1d", "0s", "1d1h1m1s1ms"])
def test_duration_text_round_trip(text):
    assert format_duration(parse_duration(text)) == text


def test_format_duration_refuses_non_durations():
    for bad in (-1, 1.5, True, "1s"):
        with pytest.raises(ValueError):
            format_duration(bad)


def test_parse_duration_refuses_overflow():
    with pytest.raises(ValidationError, match="too long"):
        parse_duration(f"{2 ** 63}ms")


@given(st.integers(min_value=0, max_value=INT64_MAX))
def test_duration_round_trip_property(ms):
    text = format_duration(ms)
    assert parse_duration(text) == ms
    assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?", text)


@given(st.lists(st.integers(min_value=0, max_value=10 ** 6), min_size=5, max_size=5))
def test_parse_duration_adds_units(counts):
    units = ["d", "h", "m", "s", "ms"]
    factors = [86_400_000, 3_600_000, 60_000, 1000, 1]
    text = "".join(f"{count}{unit}" for count, unit in zip(counts, units))
    assert parse_duration(text) == sum(c * f for c, f in zip(counts, factors))


# ------------------------------------------------------------------------------------------
# The original Conflux's spellings


ORIGINAL = """\
[schema]
name = "sentinel-config"
version = "1.0"

[entity.route]
fields = [
    { name = "path",     type = "string", merge = "lww", conflict = "review" },
    { name = "host",     type = "string", merge = "lww", conflict = "auto" },
    { name = "weight",   type = "int",    merge = "max", range = "0,100" },
    { name = "protocol", type = "string", merge = "lww", values = "http,https" },
    { name = "port",     type = "int",    merge = "lww", values = "80,443" },
    { name = "upstream", type = "ref",    target = "upstream", merge = "lww" },
]

[entity.upstream]
fields = [
    { name = "targets", type = "list<string>", merge = "grow-set" },
    { name = "members", type = "list<string>", merge = "or-set" },
]
"""

CONFLUX = """\
name = "sentinel-config"
version = "1.0"

[entity.route]
fields = [
    { name = "path",     type = "string", merge = "review" },
    { name = "host",     type = "string", merge = "lww" },
    { name = "weight",   type = "int",    merge = "max", min = 0, max = 100 },
    { name = "protocol", type = "string", merge = "lww", one_of = ["http", "https"] },
    { name = "port",     type = "int",    merge = "lww", one_of = [80, 443] },
    { name = "upstream", type = "ref<upstream>", merge = "lww" },
]

[entity.upstream]
fields = [
    { name = "targets", type = "list<string>", merge = "grow" },
    { name = "members", type = "list<string>", merge = "set" },
]
"""


def _shape(schema):
    return (schema.name, schema.version, {
        t: [(f.name, f.type, f.merge, f.min, f.max, f.one_of) for f in et.fields.values()]
        for t, et in schema.types.items()})


def test_the_originals_spellings_mean_conflux_s():
    assert _shape(parse_schema(ORIGINAL)) == _shape(parse_schema(CONFLUX))


@pytest.mark.parametrize("field_line, message", [
    ('{ name = "w", type = "int", merge = "max", range = "0" }', "'range' must be \"min,max\""),
    ('{ name = "w", type = "int", merge = "max", range = "0,100", min = 1 }',
     "give 'range' or 'min'/'max', not both"),
    ('{ name = "w", type = "int", merge = "max", range = "5,1" }', "greater than max"),
    ('{ name = "w", type = "int", merge = "max", conflict = "review" }',
     "merge 'max' resolves them itself"),
    ('{ name = "w", type = "int", merge = "lww", conflict = "maybe" }',
     "'conflict' must be \"auto\" or \"review\""),
    ('{ name = "w", type = "string", merge = "lww", target = "service" }',
     "'target' goes with type = \"ref\""),
    ('{ name = "w", type = "ref", merge = "lww", target = "nope" }', "undeclared entity type"),
    ('{ name = "w", type = "string", merge = "lww", values = "a", one_of = ["a"] }',
     "give 'values' or 'one_of', not both"),
    ('{ name = "w", type = "int", merge = "lww", values = "1,x" }', "is not a valid int"),
    ('{ name = "w", type = "list<int>", merge = "grow-sets" }', "unknown merge strategy"),
])
def test_the_originals_spellings_are_checked(field_line, message):
    error = refused(one_field(field_line))
    assert error.line == 5 and message in error.message, error.message


def test_the_schema_header_is_checked():
    assert refused('[schema]\nname = "a"\nowner = "b"\n').message.endswith(
        "[schema] holds the schema's name and version only")
    assert "given twice" in refused('name = "a"\n[schema]\nname = "b"\n').message


_TREE = '''name = "t"
version = "1"
[environments]
base = "prod"
[entity.route]
fields = [{ name = "path", type = "string", merge = "lww" }]
[entity.filter]
fields = [{ name = "kind", type = "string", merge = "lww" }]
'''


def test_children_say_which_types_an_entity_may_hold():
    schema = parse_schema(_TREE + '[entity.route.children]\nfilters = { type = "filter", '
                          'merge = "or-set" }\n[entity.filter.children]\nsubs = { type = '
                          '"filter" }\n')
    assert schema.types["route"].children == {"filters": "filter"}
    assert schema.parent_types("filter") == ["route", "filter"]
    assert schema.parent_types("route") == []
    assert schema.collection("route", "filter") == "filters"
    assert schema.collection("filter", "route") is None


@pytest.mark.parametrize("children, message", [
    ('filters = { type = "nope" }', "type 'nope' is not declared"),
    ('filters = { type = "filter", merge = "lww" }', "children are a set"),
    ('filters = { type = "filter", order = 1 }', "unknown key 'order'"),
    ('filters = "filter"', "must be a table"),
    ('filters = { merge = "set" }', "needs type"),
    ('"9x" = { type = "filter" }', "invalid name"),
    ('a = { type = "filter" }\nb = { type = "filter" }', "one collection per child type"),
])
def test_children_are_checked(children, message):
    error = refused(_TREE + "[entity.route.children]\n" + children + "\n")
    assert message in error.message and "entity 'route'" in error.message, error.message
