"""The schema file: ``load_schema`` and ``parse_schema`` read schema TOML into a
:class:`~conflux.schema.Schema`, refusing anything unknown or inconsistent with a
:class:`~conflux.errors.SchemaError` that names the file, line, entity and field."""

from __future__ import annotations

import functools
import json
import os
import re

from conflux._tomlcache import toml_document
from conflux._tomlfile import TomlFile, syntax_error
from conflux.errors import SchemaError, ValidationError
from conflux.schema.fields import (_ENV_NAME_RE, _FIELD_NAME_RE, _NUMERIC_KINDS, _TYPE_NAME_RE,
                                   STRATEGIES, Field, _clip, _describe, _parse_type)
from conflux.schema.schema import EntityType, Schema

__all__ = ["load_schema", "parse_schema"]

_TOP_KEYS = ("name", "version", "environments", "entity", "schema")
_ENV_KEYS = ("base", "overlays")
_OVERLAY_KEYS = ("name", "inherits", "description")
_ENTITY_KEYS = ("fields", "description", "children")
_CHILDREN_KEYS = ("type", "merge", "description")
_FIELD_KEYS = ("name", "type", "merge", "default", "min", "max", "pattern", "one_of",
               "required", "description",
               # the original Conflux's spellings (_original_field)
               "range", "values", "conflict", "target")
#: The original Conflux's names of merge strategies.
_ORIGINAL_MERGES = {"grow-set": "grow", "or-set": "set"}

# PERF: typing is imported for type checkers only (annotations are not evaluated); with
# tomllib (conflux._tomlcache) it took about 3 ms of every command's start
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

    #: Where a schema error is: a line number, or a function that finds it (_SchemaParser)
    Line = int | Callable[[], int | None] | None


# --------------------------------------------------------------------------------------------
# Loading

def load_schema(path: str | os.PathLike, *, cached: bool = False) -> Schema:
    """Read and parse a schema file; ``SchemaError`` if it cannot be read or is invalid.
    ``cached``: the file is a project's ``.conflux/schema.toml``, whose parsed TOML is kept
    for the next command (``conflux._tomlcache``); it is validated all the same."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SchemaError(f"{source}: cannot read schema: {exc.strerror or exc}",
                          path=source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: schema is not UTF-8 ({exc.reason} at byte {exc.start})",
                          path=source) from None
    return _SchemaParser(text, source, cached=cached).parse()


def parse_schema(text: str, source: str = "schema.toml") -> Schema:
    """Parse schema TOML text; ``source`` names the file in error messages."""
    return _SchemaParser(text, source).parse()


_STRATEGY_FITS = {
    "lww": "every type",
    "max": "int, float or duration",
    "min": "int, float or duration",
    "set": "list<T>",
    "grow": "list<T>",
    "review": "every type but list<T>",
}


def _strategy_fits(merge: str, kind: str) -> bool:
    if merge == "lww":
        return True
    if merge in ("max", "min"):
        return kind in _NUMERIC_KINDS
    if merge in ("set", "grow"):
        return kind == "list"
    return kind != "list"  # review: a multi-value register of one whole value


class _SchemaParser:
    """Turns schema TOML into a ``Schema``; every refusal says where, via ``_fail``.

    PERF: where something is written is looked up only when it is refused: a line is passed
    as a function that finds it (``Line``). Looking each entity and field up in the text
    first made parsing a valid schema several times slower, on every command's start.
    """

    def __init__(self, text: str, source: str, *, cached: bool = False):
        self.text = text
        self.source = source
        self.cached = cached

    # -- errors and line numbers --------------------------------------------------------------

    def _fail(self, message: str, *, line: Line = None, entity: str | None = None,
              field: str | None = None, env: str | None = None) -> NoReturn:
        if callable(line):
            line = line()
        where = f"{self.source}:{line}" if line else self.source
        context = []
        if entity is not None:
            context.append(f"entity {entity!r}")
        if field is not None:
            context.append(f"field {field!r}")
        if env is not None:
            context.append(f"environment {env!r}")
        prefix = f"{where}: " + (", ".join(context) + ": " if context else "")
        raise SchemaError(prefix + message, path=self.source, line=line, entity=entity,
                          field=field)

    def _line_at(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    _key_re = staticmethod(TomlFile._key_re)

    def _header_re(self, *keys: str) -> str:
        dotted = r"[ \t]*\.[ \t]*".join(self._key_re(key) for key in keys)
        return rf"[ \t]*\[\[?[ \t]*{dotted}[ \t]*[\].]"

    def _header(self, *keys: str) -> re.Match | None:
        """The first ``[a.b]`` or ``[[a.b...]]`` table header starting with these keys."""
        return re.search("^" + self._header_re(*keys), self.text, re.MULTILINE)

    def _find_after(self, pattern: str, start: int, end: int | None = None,
                    occurrence: int = 1) -> int | None:
        """Line of the n-th match of ``pattern`` in ``text[start:end]``, or None."""
        regex = re.compile(pattern, re.MULTILINE)
        for match in regex.finditer(self.text, start, len(self.text) if end is None else end):
            occurrence -= 1
            if occurrence == 0:
                return self._line_at(match.start())
        return None

    def _name_pattern(self, value: str) -> str:
        quoted = re.escape(json.dumps(value)) + "|" + re.escape(f"'{value}'")
        return rf"(?<![A-Za-z0-9_\"'-])name[ \t]*=[ \t]*(?:{quoted})"

    def _top_key_line(self, key: str) -> int | None:
        header = self._header(key)
        if header:
            return self._line_at(header.start())
        first_table = re.search(r"^[ \t]*\[", self.text, re.MULTILINE)
        end = first_table.start() if first_table else None
        return self._find_after(rf"^[ \t]*{self._key_re(key)}[ \t]*=", 0, end)

    def _block(self, *keys: str) -> tuple[int, int | None] | None:
        """Where a table is written: from its header to the next header of another table."""
        header = self._header(*keys)
        if header is None:
            return None
        own = re.compile(self._header_re(*keys))
        for match in re.finditer(r"^[ \t]*\[", self.text[header.end():], re.MULTILINE):
            start = header.end() + match.start()
            if not own.match(self.text, start):
                return header.start(), start
        return header.start(), None

    def _entity_line(self, entity: str) -> int | None:
        block = self._block("entity", entity)
        return self._line_at(block[0]) if block else self._top_key_line("entity")

    def _field_line(self, entity: str, field: Any, occurrence: int = 1) -> int | None:
        block = self._block("entity", entity)
        if block is None:
            return self._top_key_line("entity")
        if isinstance(field, str):
            line = self._find_after(self._name_pattern(field), block[0], block[1], occurrence)
            if line is not None:
                return line
        return self._line_at(block[0])

    def _env_line(self, env: str | None = None, key: str | None = None,
                  occurrence: int = 1) -> int | None:
        block = self._block("environments")
        if block is None:
            return self._top_key_line("environments")
        start, end = block
        if env is not None:
            line = self._find_after(self._name_pattern(env), start, end, occurrence)
        elif key is not None:
            line = self._find_after(rf"^[ \t]*{self._key_re(key)}[ \t]*=", start, end)
        else:
            line = None
        return line or self._line_at(start)

    # -- the document -------------------------------------------------------------------------

    def parse(self) -> Schema:
        try:
            document = toml_document(self.text, self.source if self.cached else None)
        except ValueError as exc:  # tomllib.TOMLDecodeError
            message, line = syntax_error(exc)
            self._fail(f"invalid TOML: {message}", line=line)
        for key in document:
            if key not in _TOP_KEYS:
                self._fail(f"unknown top-level key {key!r} (allowed: {', '.join(_TOP_KEYS)})",
                           line=self._top_key_line(key))
        header = document.get("schema")
        if header is not None:  # the original Conflux's [schema] name = ..., version = ...
            if not isinstance(header, dict) or set(header) - {"name", "version"}:
                self._fail("[schema] holds the schema's name and version only",
                           line=self._top_key_line("schema"))
            for key in ("name", "version"):
                if key in header and key in document:
                    self._fail(f"{key!r} is given twice: at the top and in [schema]",
                               line=self._top_key_line(key))
            document = {**document, **header}
        name = self._optional_text(document, "name")
        version = self._optional_text(document, "version")
        base, parents, environments = self._parse_environments(document.get("environments"))
        types = self._parse_entities(document)
        return Schema(name=name, version=version, source=self.source, base_env=base,
                      parents=parents, environments=environments, types=types)

    def _optional_text(self, document: dict, key: str) -> str:
        value = document.get(key, "")
        if not isinstance(value, str):
            self._fail(f"{key!r} must be a string, got {_describe(value)}",
                       line=self._top_key_line(key))
        return value

    # -- environments -------------------------------------------------------------------------

    def _parse_environments(self, table: Any) -> tuple[str, dict, list]:
        if table is None:
            return "production", {"production": None}, ["production"]
        if not isinstance(table, dict):
            self._fail("'environments' must be a table with 'base' and 'overlays'",
                       line=self._top_key_line("environments"))
        for key in table:
            if key not in _ENV_KEYS:
                self._fail(f"unknown key {key!r} in [environments] "
                           f"(allowed: {', '.join(_ENV_KEYS)})", line=self._env_line(key=key))
        base = table.get("base")
        if base is None:
            self._fail("[environments] has no 'base' (the environment every overlay "
                       "inherits from, e.g. base = \"production\")", line=self._env_line())
        self._check_env_name(base, functools.partial(self._env_line, key="base"))
        overlays = table.get("overlays", [])
        if not isinstance(overlays, list):
            self._fail("'overlays' must be a list of { name = ..., inherits = ... }",
                       line=self._env_line(key="overlays"))

        parents: dict[str, str | None] = {base: None}
        environments = [base]
        seen_count: dict[str, int] = {}
        for overlay in overlays:
            if not isinstance(overlay, dict):
                self._fail(f"each overlay must be a table {{ name = ..., inherits = ... }}, "
                           f"got {_describe(overlay)}", line=self._env_line(key="overlays"))
            name = overlay.get("name")
            if isinstance(name, str):
                seen_count[name] = seen_count.get(name, 0) + 1
                line = functools.partial(self._env_line, env=name, occurrence=seen_count[name])
            else:
                line = functools.partial(self._env_line, key="overlays")
            if name is None:
                self._fail("an overlay has no 'name'", line=line)
            self._check_env_name(name, line)
            for key in overlay:
                if key not in _OVERLAY_KEYS:
                    self._fail(f"unknown key {key!r} in overlay "
                               f"(allowed: {', '.join(_OVERLAY_KEYS)})", line=line, env=name)
            if name in parents:
                self._fail("declared twice", line=line, env=name)
            inherits = overlay.get("inherits")
            if not isinstance(inherits, str):
                self._fail("an overlay needs 'inherits' naming its parent environment",
                           line=line, env=name)
            parents[name] = inherits
            environments.append(name)

        for name in environments[1:]:
            if parents[name] not in parents:
                self._fail(f"inherits from unknown environment {parents[name]!r} "
                           f"(declared: {', '.join(environments)})",
                           line=self._env_line(env=name), env=name)
        for name in environments[1:]:
            path = [name]
            current = parents[name]
            while current is not None:
                if current in path:
                    cycle = " -> ".join(path[path.index(current):] + [current])
                    self._fail(f"inheritance cycle {cycle}", line=self._env_line(env=name),
                               env=name)
                path.append(current)
                current = parents[current]
        return base, parents, environments

    def _check_env_name(self, name: Any, line: Line) -> None:
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            self._fail(f"invalid environment name {_clip(repr(name))} (letters, digits, '_', "
                       f"'-', starting with a letter or digit, at most 64 characters)",
                       line=line)

    # -- entity types -------------------------------------------------------------------------

    def _parse_entities(self, document: dict) -> dict[str, EntityType]:
        entities = document.get("entity")
        if not isinstance(entities, dict) or not entities:
            self._fail("the schema declares no entity types (add an [entity.<type>] table "
                       "with fields = [...])", line=self._top_key_line("entity"))
        declared = tuple(entities)  # file order, for messages
        types: dict[str, EntityType] = {}
        for type_name, table in entities.items():
            line = functools.partial(self._entity_line, type_name)
            if not _TYPE_NAME_RE.fullmatch(type_name):
                self._fail("invalid entity type name (letters, digits, '_', '-', starting "
                           "with a letter; no dots)", line=line, entity=type_name)
            if not isinstance(table, dict):
                self._fail("must be a table with fields = [...]", line=line, entity=type_name)
            for key, value in table.items():
                if key not in _ENTITY_KEYS:
                    # [entity.a.b] nests a table 'b' in 'a': say so, it is the likely cause.
                    hint = (" (a dotted type name? entity type names cannot contain dots)"
                            if isinstance(value, dict) else "")
                    self._fail(f"unknown key {key!r} (allowed: {', '.join(_ENTITY_KEYS)})"
                               f"{hint}", line=line, entity=type_name)
            description = table.get("description", "")
            if not isinstance(description, str):
                self._fail("'description' must be a string", line=line, entity=type_name)
            raw_fields = table.get("fields")
            if not isinstance(raw_fields, list):
                self._fail("needs fields = [ { name = ..., type = ..., merge = ... }, ... ]",
                           line=line, entity=type_name)
            fields: dict[str, Field] = {}
            for raw in raw_fields:
                name = raw.get("name") if isinstance(raw, dict) else None
                repeated = isinstance(name, str) and name in fields
                field_line = functools.partial(self._field_line, type_name, name,
                                               2 if repeated else 1)
                if repeated:
                    self._fail("declared twice", line=field_line, entity=type_name,
                               field=name)
                field = self._parse_field(raw, type_name, declared, field_line)
                fields[field.name] = field
            children = self._parse_children(table.get("children", {}), type_name, line)
            types[type_name] = EntityType(type_name, fields, description, children)
        for type_name, etype in types.items():
            for collection, child_type in etype.children.items():
                if child_type not in types:
                    self._fail(f"children {collection!r}: type {child_type!r} is not declared "
                               f"(declared: {', '.join(declared)})",
                               line=functools.partial(self._entity_line, type_name),
                               entity=type_name)
        return types

    def _parse_children(self, raw: Any, type_name: str, line: Line) -> dict[str, str]:
        """``[entity.X.children]``: ``name = { type = "T", merge = "set" }`` per collection of
        children; returns ``{collection: child type}``. Membership follows the entity tree's
        move rules whatever ``merge`` says; only the set spellings are taken."""
        if not isinstance(raw, dict):
            self._fail("'children' must be a table of name = { type = ..., merge = \"set\" }",
                       line=line, entity=type_name)
        out: dict[str, str] = {}
        for collection, spec in raw.items():
            def fail(message: str) -> NoReturn:
                self._fail(f"children {_clip(repr(collection))}: {message}", line=line,
                           entity=type_name)
            if not _FIELD_NAME_RE.fullmatch(collection):
                fail("invalid name (letters, digits and '_', not starting with a digit)")
            if not isinstance(spec, dict):
                fail(f"must be a table {{ type = ..., merge = \"set\" }}, got {_describe(spec)}")
            for key in spec:
                if key not in _CHILDREN_KEYS:
                    fail(f"unknown key {key!r} (allowed: {', '.join(_CHILDREN_KEYS)})")
            child_type = spec.get("type")
            if not isinstance(child_type, str):
                fail("needs type = \"<entity type>\"")
            if spec.get("merge", "set") not in ("set", "or-set"):
                fail(f"merge {_clip(repr(spec.get('merge')))}: children are a set (merge = "
                     "\"set\" or \"or-set\"); where each child is follows the entity tree's "
                     "move rules")
            if child_type in out.values():
                other = next(c for c, t in out.items() if t == child_type)
                fail(f"type {child_type!r} is already the type of children {other!r} (one "
                     "collection per child type)")
            out[collection] = child_type
        return out

    def _parse_field(self, raw: Any, entity: str, declared: tuple[str, ...],
                     line: Line) -> Field:
        if not isinstance(raw, dict):
            self._fail(f"each field must be a table {{ name = ..., type = ..., merge = ... }}, "
                       f"got {_describe(raw)}", line=line, entity=entity)
        name = raw.get("name")
        if name is None:
            self._fail("a field has no 'name'", line=line, entity=entity)
        if not isinstance(name, str) or not _FIELD_NAME_RE.fullmatch(name):
            self._fail(f"invalid field name {_clip(repr(name))} (letters, digits and '_', not "
                       f"starting with a digit, at most 64 characters)", line=line,
                       entity=entity)

        def fail(message: str) -> NoReturn:
            self._fail(message, line=line, entity=entity, field=name)

        for key in raw:
            if key not in _FIELD_KEYS:
                fail(f"unknown key {key!r} (allowed: {', '.join(_FIELD_KEYS)})")
        raw = _original_field(raw, fail)
        for key in ("type", "merge"):
            if key not in raw:
                fail(f"missing {key!r}")
            if not isinstance(raw[key], str):
                fail(f"{key!r} must be a string, got {_describe(raw[key])}")
        type_text, merge = raw["type"].strip(), raw["merge"]
        try:
            _parse_type(type_text)
        except ValueError:
            fail(f"unknown type {type_text!r} (types: string, int, float, bool, duration, "
                 f"map, ref<type>, list<T> with T a scalar or ref<type>)")
        if merge not in STRATEGIES:
            fail(f"unknown merge strategy {merge!r} (strategies: {', '.join(STRATEGIES)})")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            fail(f"'required' must be true or false, got {_describe(required)}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            fail(f"'description' must be a string, got {_describe(description)}")

        field = Field(name=name, entity_type=entity, type=type_text, merge=merge,
                      declared_types=frozenset(declared), required=required, description=description)
        if not _strategy_fits(merge, field.kind):
            fail(f"merge strategy {merge!r} does not fit type {type_text!r} "
                 f"({merge} needs {_STRATEGY_FITS[merge]})")
        if field.ref_type is not None and field.ref_type not in declared:
            fail(f"type {type_text!r} refers to undeclared entity type {field.ref_type!r} "
                 f"(declared: {', '.join(declared)})")
        self._parse_constraints(raw, field, fail)
        return field

    def _parse_constraints(self, raw: dict, field: Field,
                           fail: Callable[[str], NoReturn]) -> None:
        """Fill min/max/pattern/one_of/default, each checked against the field's type."""
        # Constraints on a list apply to each element, so they follow the item's kind.
        kind = field.item_kind or field.kind
        type_text = field._item_type

        def element(key: str, value: Any) -> Any:
            try:
                return field._coerce_item(value, f"{field.entity_type}.{field.name}")
            except ValidationError:
                fail(f"{key} {_describe(value)} is not a valid {type_text}")

        for key in ("min", "max"):
            if key in raw:
                if kind not in _NUMERIC_KINDS:
                    fail(f"'{key}' needs a numeric type (int, float, duration), "
                         f"not {field.type!r}")
                setattr(field, key, element(key, raw[key]))
        if field.min is not None and field.max is not None and field.min > field.max:
            fail(f"min {field._format_item(field.min)} is greater than max "
                 f"{field._format_item(field.max)}")
        if "pattern" in raw:
            if kind != "string":
                fail(f"'pattern' needs type string or list<string>, not {field.type!r}")
            if not isinstance(raw["pattern"], str):
                fail(f"'pattern' must be a string, got {_describe(raw['pattern'])}")
            try:
                field.pattern = re.compile(raw["pattern"])
            except re.error as exc:
                fail(f"invalid pattern {raw['pattern']!r}: {exc}")
        if "one_of" in raw:
            if kind == "map":
                fail("'one_of' does not apply to a map")
            choices = raw["one_of"]
            if not isinstance(choices, list) or not choices:
                fail(f"'one_of' must be a non-empty list, got {_describe(choices)}")
            field.one_of = [element("one_of value", choice) for choice in choices]
        if "default" in raw:
            try:
                default = field.coerce(raw["default"])
            except ValidationError as exc:
                fail(f"default {_describe(raw['default'])} does not fit type "
                     f"{field.type!r}: {exc.message}")
            broken = field.violations(default)
            if broken:
                fail(f"default breaks its constraints: {'; '.join(broken)}")
            field.default = default


def _original_field(raw: dict, fail) -> dict:
    """A field written in the original Conflux's spellings, in Conflux's: ``range =
    "min,max"``, ``values = "a,b"``, ``conflict = "auto"|"review"`` (``review`` makes an
    ``lww`` field a ``review`` one), ``type = "ref"`` with ``target``, and the merge names
    ``grow-set`` and ``or-set``."""
    if not any(k in raw for k in ("range", "values", "conflict", "target")) and \
            raw.get("merge") not in _ORIGINAL_MERGES:
        return raw
    out = dict(raw)
    if out.get("merge") in _ORIGINAL_MERGES:
        out["merge"] = _ORIGINAL_MERGES[out["merge"]]
    if "range" in out:
        text = out.pop("range")
        if "min" in out or "max" in out:
            fail("give 'range' or 'min'/'max', not both")
        parts = text.split(",") if isinstance(text, str) else []
        if len(parts) != 2 or not all(p.strip() for p in parts):
            fail(f"'range' must be \"min,max\", e.g. \"0,100\", got {_describe(text)}")
        for key, part in zip(("min", "max"), parts):
            out[key] = _number_or_text(part.strip())
    if "values" in out:
        text = out.pop("values")
        if "one_of" in out:
            fail("give 'values' or 'one_of', not both")
        if not isinstance(text, str) or not text.strip():
            fail(f"'values' must be \"a,b,c\", got {_describe(text)}")
        numeric = str(out.get("type", "")).strip() in ("int", "float", "list<int>",
                                                       "list<float>")
        out["one_of"] = [_number_or_text(v.strip()) if numeric else v.strip()
                         for v in text.split(",")]
    if "target" in out:
        target = out.pop("target")
        if not isinstance(out.get("type"), str) or out["type"].strip() not in ("ref",
                                                                               "list<ref>"):
            fail("'target' goes with type = \"ref\" (or \"list<ref>\")")
        if not isinstance(target, str):
            fail(f"'target' must be an entity type, got {_describe(target)}")
        out["type"] = out["type"].strip().replace("ref", f"ref<{target}>")
    if "conflict" in out:
        conflict = out.pop("conflict")
        if conflict not in ("auto", "review"):
            fail(f"'conflict' must be \"auto\" or \"review\", got {_describe(conflict)}")
        if conflict == "review":
            if out.get("merge") not in ("lww", "review"):
                fail(f"conflict = \"review\" flags concurrent writes of a last-writer-wins "
                     f"field; merge {out.get('merge')!r} resolves them itself")
            out["merge"] = "review"
    return out


def _number_or_text(text: str):
    """A bound of ``range``: a number when it reads as one (a duration stays text)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
