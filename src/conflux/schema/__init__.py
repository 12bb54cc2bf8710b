"""Schema loading and validation (docs/concepts.md, docs/configuration.md).

A schema is a TOML file declaring environments and entity types. ``load_schema`` and
``parse_schema`` turn it into a :class:`Schema`, refusing anything unknown or inconsistent with
a :class:`~conflux.errors.SchemaError` that names the file, line, entity and field.

Values are checked in two stages (docs/concepts.md): :meth:`Field.coerce` (before an operation is
accepted: the value's type and the type's own range) and :meth:`Field.violations` (after a
merge: ``min``/``max``/``pattern``/``one_of``).

The parts: ``fields`` (field types, names, durations, and the checking and display of values),
``schema`` (the loaded :class:`Schema`: the environment tree and the entity types) and
``loader`` (the schema file read and held to its rules, every refusal located).
"""

from conflux.schema.fields import (
    _ENTITY_NAME_RE,
    _ENV_NAME_RE,
    _FIELD_NAME_RE,
    _TYPE_NAME_RE,
    INT64_MAX,
    INT64_MIN,
    KINDS,
    STRATEGIES,
    Field,
    _clip,
    format_duration,
    is_utf8,
    parse_duration,
)
from conflux.schema.loader import load_schema, parse_schema
from conflux.schema.schema import EntityType, Schema

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
