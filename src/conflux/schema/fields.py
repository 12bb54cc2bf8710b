"""Field types and the checking of values: the kinds a field may have, the rules for names,
durations, and :class:`Field`, which checks a value before an operation is accepted
(:meth:`Field.coerce`), after a merge (:meth:`Field.violations`) and shows it."""

from __future__ import annotations

import json
import math
import re

from conflux.errors import ValidationError

__all__ = ["Field", "parse_duration", "format_duration", "is_utf8", "KINDS", "STRATEGIES",
           "INT64_MIN", "INT64_MAX"]

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

# NOTE: maps hold client-supplied JSON; bound the nesting so a hostile body yields a
# ValidationError rather than a RecursionError (docs/rest.md: never a 500 for client input).
_MAX_MAP_DEPTH = 64

# PERF: typing is imported for type checkers only (annotations are not evaluated); with
# tomllib (conflux._tomlcache) it took about 3 ms of every command's start
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
# Field

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


# --------------------------------------------------------------------------------------------
# Type text, numbers and JSON values

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
