"""Schema loading and validation (docs/concepts.md, docs/configuration.md).

A schema is a TOML file declaring environments and entity types. ``load_schema`` and
``parse_schema`` turn it into a :class:`Schema`, refusing anything unknown or inconsistent with
a :class:`~conflux.errors.SchemaError` that names the file, line, entity and field.

Values are checked in two stages (docs/concepts.md): :meth:`Field.coerce` (before an operation is
accepted: the value's type and the type's own range) and :meth:`Field.violations` (after a
merge: ``min``/``max``/``pattern``/``one_of``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re

from conflux._tomlcache import toml_document
from conflux._tomlfile import TomlFile, syntax_error
from conflux.errors import NotFound, SchemaError, ValidationError

__all__ = [
    "Schema",
    "EntityType",
    "Field",
    "load_schema",
    "parse_schema",
    "parse_duration",
    "format_duration",
    "is_utf8",
    "KINDS",
    "STRATEGIES",
]

#: Field kinds; ``list`` and ``ref`` carry a parameter (``list<int>``, ``ref<service>``).
KINDS = ("string", "int", "float", "bool", "duration", "ref", "map", "list")
#: Merge strategies (docs/concepts.md).
STRATEGIES = ("lww", "max", "min", "set", "grow", "review")

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

# Entity names and type names go into LMDB keys (at most 511 bytes; a dangling-ref key holds
# two of them): hence their lengths.
_TYPE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ENV_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ENTITY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_NAME_RULE = ("letters, digits, '_', '.', '-', starting with a letter or digit, at most 200 "
              "characters")

_SCALAR_KINDS = ("string", "int", "float", "bool", "duration")
_NUMERIC_KINDS = ("int", "float", "duration")
_REF_RE = re.compile(r"ref<\s*([^<>\s]*)\s*>")
_LIST_RE = re.compile(r"list<\s*(.*?)\s*>")

_TOP_KEYS = ("name", "version", "environments", "entity")
_ENV_KEYS = ("base", "overlays")
_OVERLAY_KEYS = ("name", "inherits", "description")
_ENTITY_KEYS = ("fields", "description")
_FIELD_KEYS = ("name", "type", "merge", "default", "min", "max", "pattern", "one_of",
               "required", "description")

# NOTE: maps hold client-supplied JSON; bound the nesting so a hostile body yields a
# ValidationError rather than a RecursionError (docs/rest.md: never a 500 for client input).
_MAX_MAP_DEPTH = 64

# PERF: typing is imported for type checkers only (annotations are not evaluated); with
# tomllib (conflux._tomlcache) it took about 3 ms of every command's start
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

    #: Where a schema error is: a line number, or a function that finds it (_SchemaParser)
    Line = int | Callable[[], int | None] | None


# --------------------------------------------------------------------------------------------
# Durations

# Used with fullmatch, so "250ms" backtracks out of the minutes group into milliseconds.
_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?")
_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000),
                   ("ms", 1))


def parse_duration(text: str) -> int:
    """Parse ``"1h30m"``, ``"250ms"``, ``"1d"``... into milliseconds.

    Units ``d``, ``h``, ``m``, ``s``, ``ms`` may be combined, largest first, each at most once.
    ``"0"`` is accepted as zero. Raises ``ValidationError`` for anything else.
    """
    if not isinstance(text, str):
        raise ValidationError(f"a duration must be text, got {_describe(text)}")
    stripped = text.strip()
    if stripped == "0":
        return 0
    match = _DURATION_RE.fullmatch(stripped)
    if not stripped or match is None:
        hint = " (durations cannot be negative)" if stripped.startswith("-") else ""
        raise ValidationError(
            f"invalid duration {text!r}{hint}: use units d, h, m, s, ms, largest first, "
            f"e.g. '30s', '5m', '1h30m', '250ms'")
    ms = sum(int(match[unit]) * factor for unit, factor in _DURATION_UNITS if match[unit])
    if ms > INT64_MAX:
        raise ValidationError(f"duration {text!r} is too long (over 2**63-1 milliseconds)")
    return ms


def format_duration(ms: int) -> str:
    """The canonical text of a duration in milliseconds: ``5400000`` -> ``"1h30m"``, 0 -> ``"0s"``."""
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"a duration is a non-negative int of milliseconds, got {ms!r}")
    if ms == 0:
        return "0s"
    parts = []
    for unit, factor in _DURATION_UNITS:
        count, ms = divmod(ms, factor)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Value descriptions for messages

def _describe(value: Any) -> str:
    """What a value is, in schema terms, for error messages: ``string 'abc'``, ``bool true``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"string {_clip(repr(value))}"
    if isinstance(value, int):
        return f"int {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, (list, tuple)):
        return f"list {_clip(_to_json(list(value)))}"
    if isinstance(value, dict):
        return f"map {_clip(_to_json(value))}"
    return type(value).__name__


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored: no lone surrogates, which JSON's "\\ud800" decodes to
    and UTF-8 cannot carry."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)


# --------------------------------------------------------------------------------------------
# Field, EntityType, Schema

class Field:
    """One declared field of an entity type: its type, merge strategy, default and constraints."""

    __slots__ = ("name", "entity_type", "type", "kind", "item_kind", "ref_type", "merge",
                 "default", "min", "max", "pattern", "one_of", "required", "description",
                 "_item_type", "_declared_types")

    def __init__(self, *, name: str, entity_type: str, type: str, merge: str,
                 declared_types: frozenset[str] = frozenset(), required: bool = False,
                 description: str = ""):
        self.name = name
        self.entity_type = entity_type
        self.type = type
        self.kind, self.item_kind, self.ref_type, self._item_type = _parse_type(type)
        self.merge = merge
        self.required = required
        self.description = description
        self.default: Any = None
        self.min: int | float | None = None
        self.max: int | float | None = None
        self.pattern: re.Pattern[str] | None = None
        self.one_of: list | None = None
        # Lets a ref tell "route.api" (a wrong-typed id) from a bare name that contains a dot.
        self._declared_types = declared_types

    def __repr__(self) -> str:
        return f"Field({self.entity_type}.{self.name}: {self.type}, merge={self.merge})"

    @property
    def is_set(self) -> bool:
        """Whether the field takes add/remove of elements (merge ``set`` or ``grow``)."""
        return self.merge in ("set", "grow")

    @property
    def is_numeric(self) -> bool:
        """Whether the field holds one number (int, float or duration)."""
        return self.kind in _NUMERIC_KINDS

    @property
    def _label(self) -> str:
        return f"{self.entity_type}.{self.name}"

    # -- before accept ------------------------------------------------------------------------

    def coerce(self, value: Any) -> Any:
        """Check and normalize a whole-field value (``set_field``).

        Checks the value's type and the type's own range, not the declared constraints.
        Durations become int milliseconds, refs full ids, floats ``float``; a list becomes a
        list of coerced items (without repeats on ``set``/``grow`` fields, which are sets).
        """
        if self.kind == "list":
            if not isinstance(value, (list, tuple)):
                raise self._type_error(self._label, self.type, value)
            items = [self._coerce_item(item, f"{self._label}[{i}]")
                     for i, item in enumerate(value)]
            if self.is_set:
                items = _unique(items)
            return items
        if self.kind == "map":
            if not isinstance(value, dict):
                raise self._type_error(self._label, "map", value)
            try:
                return _normalize_json(value, self._label, 0)
            except ValidationError as exc:
                raise ValidationError(exc.message, field=self.name) from None
        return self._coerce_item(value, self._label)

    def coerce_element(self, value: Any) -> Any:
        """Check and normalize one element for ``add_elements``/``remove_elements``."""
        if not self.is_set:
            raise ValidationError(
                f"{self._label} is not a set field (type {self.type}, merge {self.merge!r}); "
                f"add and remove need merge 'set' or 'grow'", field=self.name)
        return self._coerce_item(value, self._label)

    def parse_text(self, text: str, *, element: bool = False) -> Any:
        """Turn command-line text into a coerced value (or element, for ``--add/--remove``).

        Strings, refs and durations are taken as written; numbers and bools are parsed;
        maps and whole lists are JSON. This keeps ``"42"`` a string for a string field.
        """
        if element and not self.is_set:
            return self.coerce_element(text)  # raises the "not a set field" error
        kind = "list" if self.kind == "list" and not element else (self.item_kind or self.kind)
        try:
            if kind in ("map", "list"):
                value: Any = _json_text(text, self._label, self.name)
            elif kind == "int":
                value = int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else text
            elif kind == "float":
                value = float(text)
            elif kind == "bool":
                value = {"true": True, "false": False}.get(text.strip().lower(), text)
            else:
                value = text
        except _NotText:
            raise
        except ValueError:
            value = text  # let coerce report it with the usual message
        return self.coerce_element(value) if element else self.coerce(value)

    def _coerce_item(self, value: Any, label: str) -> Any:
        """Coerce one scalar (the field itself, or a list's item) to ``item_kind``/``kind``."""
        kind = self.item_kind or self.kind
        expected = self._item_type
        if kind == "string":
            if isinstance(value, str):
                return value
        elif kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind == "int":
            number = _as_integer(value)
            if number is not None:
                return self._in_int64(number, label)
        elif kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    number = float(value)
                except OverflowError:
                    raise ValidationError(f"{label}: {value} is too large for a float",
                                          field=self.name) from None
                if not math.isfinite(number):
                    raise ValidationError(f"{label}: expected a finite float, got {value!r}",
                                          field=self.name)
                return number
        elif kind == "duration":
            return self._coerce_duration(value, label)
        elif kind == "ref":
            return self._coerce_ref(value, label)
        raise self._type_error(label, expected, value)

    def _coerce_duration(self, value: Any, label: str) -> int:
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValidationError as exc:
                raise ValidationError(f"{label}: expected duration, got {_describe(value)}: "
                                      f"{exc.message}", field=self.name) from None
        number = _as_integer(value)
        if number is None:
            raise ValidationError(
                f"{label}: expected duration (text like '30s', '1h30m', '250ms' or int "
                f"milliseconds), got {_describe(value)}", field=self.name)
        if number < 0:
            raise ValidationError(f"{label}: a duration cannot be negative, got {number}",
                                  field=self.name)
        return self._in_int64(number, label)

    def _coerce_ref(self, value: Any, label: str) -> str:
        if not isinstance(value, str):
            raise ValidationError(
                f"{label}: expected ref<{self.ref_type}> (an id '{self.ref_type}.<name>' or a "
                f"bare name), got {_describe(value)}", field=self.name)
        prefix = f"{self.ref_type}."
        if value.startswith(prefix):
            name = value[len(prefix):]
        else:
            other_type = value.split(".", 1)[0] if "." in value else None
            if other_type in self._declared_types:
                raise ValidationError(
                    f"{label}: expected a ref to a {self.ref_type}, got {value!r} "
                    f"(a {other_type})", field=self.name)
            name = value
        if not _ENTITY_NAME_RE.fullmatch(name):
            raise ValidationError(
                f"{label}: {_clip(repr(name))} is not a valid entity name ({_NAME_RULE})",
                field=self.name)
        return prefix + name

    def _in_int64(self, number: int, label: str) -> int:
        if not INT64_MIN <= number <= INT64_MAX:
            raise ValidationError(
                f"{label}: {number} is outside the signed 64-bit range", field=self.name)
        return number

    def _type_error(self, label: str, expected: str, value: Any) -> ValidationError:
        return ValidationError(f"{label}: expected {expected}, got {_describe(value)}",
                               field=self.name)

    # -- after merge --------------------------------------------------------------------------

    def violations(self, value: Any, *, label: str | None = None) -> list[str]:
        """Constraint breaches (min/max/pattern/one_of) of a resolved value; [] if none.

        A list's constraints apply to each element. ``required`` and dangling refs are the
        engine's to check, since they need the rest of the state. ``label`` names the value
        or element in the messages (default: the field's name).
        """
        if value is None:
            return []
        if self.kind == "list":
            items, label = value, label or f"{self.name} element"
        else:
            items, label = [value], label or self.name
        found = []
        for item in items:
            if not self._breaks(item):  # PERF: the common case formats nothing
                continue
            shown = self._format_item(item, quote=True)
            if self.min is not None and item < self.min:
                found.append(f"{label} {shown} is below min {self._format_item(self.min)}")
            if self.max is not None and item > self.max:
                found.append(f"{label} {shown} is above max {self._format_item(self.max)}")
            if self.pattern is not None and not self.pattern.search(item):
                found.append(f"{label} {shown} does not match pattern "
                             f"{self.pattern.pattern!r}")
            if self.one_of is not None and item not in self.one_of:
                allowed = ", ".join(self._format_item(v, quote=True) for v in self.one_of)
                found.append(f"{label} {shown} is not one of {allowed}")
        return found

    def _breaks(self, item: Any) -> bool:
        return ((self.min is not None and item < self.min)
                or (self.max is not None and item > self.max)
                or (self.pattern is not None and not self.pattern.search(item))
                or (self.one_of is not None and item not in self.one_of))

    # -- display ------------------------------------------------------------------------------

    def format(self, value: Any) -> str:
        """Human text of a normalized value: ``"1h30m"``, ``true``, compact JSON for lists and
        maps, strings as they are, ``null`` for no value."""
        if value is None:
            return "null"
        if self.kind == "map":
            return _to_json(value)
        if self.kind == "list":
            if self.item_kind == "duration":
                return _to_json([format_duration(v) for v in value])
            return _to_json(value)
        return self._format_item(value)

    def format_element(self, value: Any) -> str:
        """Human text of one element of a list field (``10.0.1.5``, ``8080``, ``30s``)."""
        return self._format_item(value)

    def _format_item(self, value: Any, *, quote: bool = False) -> str:
        kind = self.item_kind or self.kind
        if kind == "duration":
            return format_duration(value)
        if kind == "bool":
            return "true" if value else "false"
        if kind in ("string", "ref"):
            return repr(value) if quote else value
        return repr(value) if isinstance(value, float) else str(value)


class EntityType:
    """A declared entity type: its fields in file order and which of them are required."""

    __slots__ = ("name", "fields", "description")

    def __init__(self, name: str, fields: dict[str, Field], description: str = ""):
        self.name = name
        self.fields = fields
        self.description = description

    @property
    def required(self) -> list[str]:
        """Names of the required fields, in file order."""
        return [name for name, field in self.fields.items() if field.required]

    def __repr__(self) -> str:
        return f"EntityType({self.name!r}, fields={list(self.fields)})"


class Schema:
    """A loaded schema: environments (a tree rooted at the base) and entity types."""

    def __init__(self, *, name: str, version: str, source: str, base_env: str,
                 parents: dict[str, str | None], environments: list[str],
                 types: dict[str, EntityType]):
        self.name = name
        self.version = version
        self.source = source
        self.base_env = base_env
        self.parents = parents
        self.environments = environments
        self.types = types

    def __repr__(self) -> str:
        return (f"Schema({self.name!r}, version={self.version!r}, "
                f"environments={self.environments}, types={list(self.types)})")

    def env_chain(self, env: str) -> list[str]:
        """The environment, its parent, ..., the base: the order reads fall back in."""
        self._check_env(env)
        chain = []
        current: str | None = env
        while current is not None:
            chain.append(current)
            current = self.parents[current]
        return chain

    def children(self, env: str) -> list[str]:
        """Every environment that inherits from ``env``, directly or not (file order)."""
        self._check_env(env)
        return [other for other in self.environments
                if other != env and env in self.env_chain(other)]

    def entity_type(self, name: str) -> EntityType:
        """The declared entity type ``name``; ``ValidationError`` if there is none."""
        try:
            return self.types[name]
        except (KeyError, TypeError):
            raise ValidationError(
                f"unknown entity type {_clip(repr(name))} (declared: "
                f"{', '.join(self.types)})",
                entity=_clip(name) if isinstance(name, str) else None) from None

    def field(self, type_name: str, field_name: str) -> Field:
        """The declared field; ``ValidationError`` naming the type and its fields if unknown."""
        entity_type = self.entity_type(type_name)
        try:
            return entity_type.fields[field_name]
        except (KeyError, TypeError):
            raise ValidationError(
                f"entity type {type_name!r} has no field {_clip(repr(field_name))} "
                f"(fields: {', '.join(entity_type.fields) or 'none'})",
                field=_clip(field_name) if isinstance(field_name, str) else None,
                entity=type_name) from None

    def split_entity_id(self, entity_id: str) -> tuple[str, str]:
        """``"route.api.v1"`` -> ``("route", "api.v1")``: the type is before the first dot."""
        if not isinstance(entity_id, str) or "." not in entity_id:
            raise ValidationError(
                f"entity id {_clip(repr(entity_id))} must be '<type>.<name>', e.g. "
                "'route.api-v1'", entity=_clip(entity_id) if isinstance(entity_id, str) else None)
        type_name, name = entity_id.split(".", 1)
        if type_name not in self.types:
            raise ValidationError(
                f"entity id {_clip(repr(entity_id))}: unknown entity type "
                f"{_clip(repr(type_name))} (declared: {', '.join(self.types)})",
                entity=_clip(entity_id))
        if not _ENTITY_NAME_RE.fullmatch(name):
            raise ValidationError(
                f"entity id {_clip(repr(entity_id))}: {_clip(repr(name))} is not a valid "
                f"entity name ({_NAME_RULE})", entity=_clip(entity_id))
        return type_name, name

    def _check_env(self, env: str) -> None:
        if env not in self.parents:
            raise NotFound(f"unknown environment {_clip(repr(env))} "
                           f"(known: {', '.join(self.environments)})")


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


def _parse_type(text: str) -> tuple[str, str | None, str | None, str]:
    """``"list<ref<service>>"`` -> (kind, item_kind, ref_type, item type text).

    Raises ``ValueError`` for an unknown type; the ref's target is checked by the parser.
    """
    if text in _SCALAR_KINDS or text == "map":
        return text, None, None, text
    ref = _REF_RE.fullmatch(text)
    if ref:
        return "ref", None, ref[1], f"ref<{ref[1]}>"
    inner = _LIST_RE.fullmatch(text)
    if inner:
        item = inner[1]
        if item in _SCALAR_KINDS:
            return "list", item, None, item
        ref = _REF_RE.fullmatch(item)
        if ref:
            return "list", "ref", ref[1], f"ref<{ref[1]}>"
    raise ValueError(text)


def _as_integer(value: Any) -> int | None:
    """An int, or an integral float (JSON clients send 3.0); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _unique(items: list) -> list:
    """Items without repeats, first occurrence kept (order is the writer's)."""
    seen: list = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _json_text(text: str, label: str, field: str) -> Any:
    """A command-line word read as JSON (``ValueError`` if it is not JSON), refused as a
    ``ValidationError`` if nested deeper than the limit (``conflux.limits``)."""
    from conflux.limits import MAX_NESTING, check_parsed

    try:
        value = json.loads(text)
    except RecursionError:
        raise _NotText(f"{label}: the value is nested deeper than {MAX_NESTING} levels of "
                       "lists and maps", field=field) from None
    check_parsed(value, f"{label}: the value", error=_NotText)
    return value


class _NotText(ValidationError):
    """Refused outright: not to be read as plain text instead."""


def _normalize_json(value: Any, label: str, depth: int) -> Any:
    """A copy of a JSON-like value (str keys, no NaN, int64 ints), or ``ValidationError``."""
    if depth > _MAX_MAP_DEPTH:
        raise ValidationError(f"{label}: map nested deeper than {_MAX_MAP_DEPTH} levels")
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValidationError(f"{label}: {value} is outside the signed 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{label}: {value!r} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_normalize_json(item, f"{label}[{i}]", depth + 1) for i, item in
                enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{label}: map keys must be strings, got "
                                      f"{_describe(key)}")
            result[key] = _normalize_json(item, f"{label}.{key}", depth + 1)
        return result
    raise ValidationError(f"{label}: {type(value).__name__} is not a JSON value "
                          f"(string, number, bool, null, list or map)")


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
            types[type_name] = EntityType(type_name, fields, description)
        return types

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

