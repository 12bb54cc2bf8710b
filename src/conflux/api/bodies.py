"""The REST API's request bodies as JSON Schemas, declared once.

The OpenAPI document (``conflux.api.openapi``) serves these schemas, and ``check`` holds every
request body to them before a resource reads it, so that what the document promises is what
the daemon takes: a client generated from the document sends nothing the daemon refuses for
its shape. The limits are the engine's own (``conflux.schema``'s name rules, the engine's
lengths), imported, not copied.

Two forms: ``body_schemas()`` is the shape any project accepts (what ``check`` validates and
docs/rest.md shows). ``body_schemas(schema)`` refines it with one project's schema (its
environments, entity types, fields, and each field's value type and constraints), built from
the same ``Field`` objects the engine coerces values with: the document a daemon serves is
that one, so that generated requests name entities, fields and values that exist.

``check`` is a small validator for the subset of JSON Schema used here (type, enum, const-like
one-value enums, properties, required, additionalProperties, pattern, min/maxLength,
min/maxItems, minimum/maximum, items, oneOf, anyOf, not, $ref to these components), written
out because no validator is among the daemon's dependencies; a test holds it to a reference
implementation on generated values. Its refusals are ``ValidationError`` (422) naming the key.
"""

from __future__ import annotations

import math
import re

from conflux.engine.ops import _MAX_INTENT, _MAX_OP_ID, _STORE_OP_ID
from conflux.errors import InputError, ValidationError
from conflux.kernel._layout import OP_TYPES as _LAYOUT_OP_TYPES
from conflux.schema import (_ENTITY_NAME_RE, _ENV_NAME_RE, _FIELD_NAME_RE, _TYPE_NAME_RE,
                            INT64_MAX, INT64_MIN)

__all__ = ["body_schemas", "check", "check_value", "OP_TYPES"]

#: The operation types a client sends: the kernel's, but ``promote`` (it has its own route).
OP_TYPES = tuple(name for name in _LAYOUT_OP_TYPES if name != "promote")

_ENTITY_NAME = _ENTITY_NAME_RE.pattern
ENTITY_ID = f"^{_TYPE_NAME_RE.pattern}\\.{_ENTITY_NAME}$"
ENV_NAME = f"^{_ENV_NAME_RE.pattern}$"
FIELD_NAME = f"^{_FIELD_NAME_RE.pattern}$"
#: An op id: printable ASCII (the engine takes printable text of at most 128 bytes; ASCII
#: makes characters and bytes the same count, so a length in the document is exact).
OP_ID = "^[ -~]{1,%d}$" % _MAX_OP_ID
#: 'hlc:<ms>.<counter>': ms from 1 (an hlc is positive) below 2**48, counter at most 65535
HLC_TEXT = (r"^hlc:[1-9][0-9]{0,13}\.([0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
            r"|655[0-2][0-9]|6553[0-5])$")
HLC_MAX = 2 ** 64 - 1
#: A duration as text: "0", or units d, h, m, s, ms, largest first, each at most once.
DURATION = r"^(0|(?=[0-9])([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$"

#: A milestone's message: one line, not blank, no control characters (the engine also refuses
#: other unprintable characters, which no pattern of this dialect can list).
_TITLE = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"

_TEXT_ENTITY_ID = "an entity id '<type>.<name>' (type: a letter, then letters, digits, '_', " \
                  "'-', at most 64; name: letters, digits, '_', '.', '-', starting with a " \
                  "letter or digit, at most 200)"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(max_length: int | None = None, pattern: str | None = None, **extra) -> dict:
    out = {"type": "string"}
    if pattern:
        out["pattern"] = pattern
    if max_length is not None:
        out["maxLength"] = max_length
    return {**out, **extra}


def _op_id() -> dict:
    return _text(_MAX_OP_ID, OP_ID, **{
        "not": {"pattern": f"^{_STORE_OP_ID.pattern}$"},
        "description": "a client id that makes retries safe; the form <8 hex digits>-<hex> "
                       "is reserved for the ids stores generate"})


def _common(env: dict) -> dict:
    """The keys every operation type takes."""
    return {
        "env": env,
        "intent": _text(_MAX_INTENT, description="why (at most 4096 characters)"),
        "op_id": _op_id(),
        "hlc": {"oneOf": [_text(pattern=HLC_TEXT),
                          {"type": "integer", "minimum": 1, "maximum": HLC_MAX}],
                "description": "'hlc:<ms>.<counter>' or the packed 64-bit integer; at most "
                               "the daemon's max_clock_offset_ms ahead of its clock"},
        "signature": _text(description="Ed25519 signature (base64) of the canonical op; "
                                       "goes with key_id"),
        "key_id": _text(description="the registered key that signed it; goes with "
                                    "signature"),
    }


# signature and key_id go together: both or neither
_SIGNED_PAIR = {"anyOf": [{"required": ["signature", "key_id"]},
                          {"not": {"anyOf": [{"required": ["signature"]},
                                             {"required": ["key_id"]}]}}]}

_OP_IDS = {"type": "array", "items": _text(_MAX_OP_ID)}


def _variant(op_type: str, entity_id: dict, field: dict | None, value: dict | None,
             env: dict, *, title: str | None = None) -> dict:
    """The schema of one operation type (``field``/``value`` as that type takes them)."""
    props = {"type": {"type": "string", "enum": [op_type]}, "entity_id": entity_id}
    required = ["type", "entity_id"]
    if field is not None:
        props["field"] = field
        required.append("field")
    if op_type in ("set_field", "resolve"):
        props["value"] = value
        required.append("value")
    elif op_type in ("add_elements", "remove_elements"):
        props["elements"] = {"type": "array", "minItems": 1, "items": value}
        required.append("elements")
    if op_type in ("set_field", "unset_field", "resolve"):
        props["base"] = {**_OP_IDS, "description": "the op ids the writer saw as the field's "
                                                   "current value (else 409)"}
    if op_type in ("add_elements", "remove_elements"):
        # an add supersedes the tags it observed as a remove kills them: sent, they make
        # the op's outcome the same on every store, whatever it holds when it arrives
        props["observed"] = {"type": "array", "items": _OP_IDS,
                             "description": "per element, the add tags the writer saw"}
    if op_type == "move_entity":
        props["parent"] = {"oneOf": [_text(None, ENTITY_ID, maxLength=265), {"type": "null"}],
                           "description": "the new parent's id (its type declares children "
                                          "of this type); null or absent: a root"}
        props["position"] = _POSITION
        props["env"] = {**env, "description": "the base environment (the tree is kept "
                                              "there; every environment shows it)"}
    elif op_type != "delete_entity":
        props["override"] = {"type": "boolean"}
    for key, value in _common(env).items():
        props.setdefault(key, value)
    out = {"type": "object", "required": required, "additionalProperties": False,
           "properties": props, "allOf": [_SIGNED_PAIR]}
    if title:
        out["title"] = title
    return out


_ANY_VALUE = {"not": {"type": "null"}, "description": "a value of the field's type"}
_POSITION = {"oneOf": [{"type": "string", "maxLength": 256},
                       {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
                       {"type": "null"}],
             "description": "where among its siblings: text (a fractional index such as "
                            "'a0', compared byte by byte) or an integer; integers come first, "
                            "then text, then those with none"}


def _original_ops(env: dict) -> dict:
    """The original Conflux's operation types that are not Conflux's own
    (``conflux.original``), in its vocabulary: ``environment``, ``chosen_value``,
    ``entity_type`` with the initial ``fields``."""
    entity = _text(None, ENTITY_ID, maxLength=265, description=_TEXT_ENTITY_ID)
    field = _text(None, FIELD_NAME)
    common = {"intent": _text(_MAX_INTENT), "op_id": _text(_MAX_OP_ID)}

    def op(kind, required, props, description):
        return {"type": "object", "additionalProperties": False, "description": description,
                "required": ["type", *required],
                "properties": {"type": {"type": "string", "enum": [kind]}, **props, **common}}
    return {
        "InsertEntityOp": op("insert_entity", ["entity_id", "entity_type"], {
            "entity_id": entity, "entity_type": _text(None, f"^{_TYPE_NAME_RE.pattern}$"),
            "fields": {"type": "object", "additionalProperties": _ANY_VALUE,
                       "description": "the initial fields: one set_field each"},
            "parent_id": {"oneOf": [entity, {"type": "null"}]}, "position": _POSITION,
            "environment": env},
            "the original's insert: a move_entity to parent_id (else a root) and its fields, "
            "written together (entity_type is the id's type)"),
        "OriginalMoveEntityOp": op("move_entity", ["entity_id", "new_parent_id",
                                                   "new_position"], {
            "entity_id": entity, "new_parent_id": {"oneOf": [entity, {"type": "null"}]},
            "new_position": _POSITION},
            "the original's move: Conflux's move_entity with parent and position"),
        "RemoveEntityOp": op("remove_entity", ["entity_id"], {"entity_id": entity},
                             "the original's remove: Conflux's delete_entity"),
        "SetOverrideOp": op("set_override", ["entity_id", "field", "environment", "value"], {
            "entity_id": entity, "field": field, "environment": env, "value": _ANY_VALUE},
            "the original's override: a set_field in that environment"),
        "ResolveConflictOp": op("resolve_conflict", ["entity_id", "field", "chosen_value"], {
            "entity_id": entity, "field": field, "environment": env,
            "chosen_value": _ANY_VALUE}, "the original's resolve: Conflux's resolve"),
    }


def _generic_ops(env: dict) -> dict:
    entity = _text(None, ENTITY_ID, maxLength=265, description=_TEXT_ENTITY_ID)
    field = _text(None, FIELD_NAME)
    out = {}
    for op_type in OP_TYPES:
        out[_name(op_type)] = _variant(op_type, entity,
                                       None if op_type in _ENTITY_OPS else field,
                                       _ANY_VALUE, env)
    return out


#: The operation types of a whole entity (no field).
_ENTITY_OPS = ("delete_entity", "move_entity")


def _name(op_type: str) -> str:
    return "".join(part.title() for part in op_type.split("_")) + "Op"


# --------------------------------------------------------------------------------------------
# one project's refinement


def _item_schema(spec) -> dict:
    """A value (or a list's item) of ``spec``'s type, as ``Field.coerce`` takes it."""
    kind = spec.item_kind or spec.kind
    if kind == "string":
        out = {"type": "string"}
        if spec.pattern is not None:
            out["pattern"] = spec.pattern.pattern
    elif kind == "bool":
        out = {"type": "boolean"}
    elif kind == "int":
        out = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
    elif kind == "float":
        out = {"type": "number", "minimum": -1.7976931348623157e308,
               "maximum": 1.7976931348623157e308}
    elif kind == "duration":
        out = {"oneOf": [{"type": "string", "pattern": DURATION, "maxLength": 40},
                         {"type": "integer", "minimum": 0, "maximum": INT64_MAX}]}
    elif kind == "ref":
        prefix = re.escape(f"{spec.ref_type}.")
        out = {"type": "string", "pattern": f"^({prefix})?{_ENTITY_NAME}$",
               "description": f"a {spec.ref_type}: its id or its bare name"}
    else:  # a map: any JSON object
        out = {"type": "object"}
    if kind in ("int", "float"):
        if spec.min is not None:
            out["minimum"] = spec.min
        if spec.max is not None:
            out["maximum"] = spec.max
    if spec.one_of is not None and kind not in ("duration",):
        out["enum"] = list(spec.one_of)
    return out


def _value_schema(spec) -> dict:
    if spec.kind == "list":
        return {"type": "array", "items": _item_schema(spec)}
    return _item_schema(spec)


def _project_ops(schema, env: dict) -> dict:
    """Per operation type, one alternative per entity type and field that type applies to."""
    out = {}
    for op_type in OP_TYPES:
        alternatives = []
        for type_name, etype in schema.types.items():
            entity = _text(None, f"^{re.escape(type_name)}\\.{_ENTITY_NAME}$",
                           maxLength=len(type_name) + 201)
            if op_type in _ENTITY_OPS:
                alternatives.append(_variant(op_type, entity, None, None, env,
                                             title=f"{op_type} {type_name}"))
                continue
            for fname, spec in _fields_of(etype).items():
                if not _applies(op_type, spec):
                    continue
                value = _item_schema(spec) if op_type in ("add_elements",
                                                           "remove_elements") \
                    else _value_schema(spec)
                alternatives.append(_variant(op_type, entity, {"type": "string",
                                                               "enum": [fname]},
                                             value, env, title=f"{op_type} "
                                                               f"{type_name}.{fname}"))
        if alternatives:
            out[_name(op_type)] = {"oneOf": alternatives}
    return out


def _fields_of(etype) -> dict:
    fields = etype.fields
    return fields if isinstance(fields, dict) else {f.name: f for f in fields}


def _applies(op_type: str, spec) -> bool:
    if op_type == "set_field":
        return not spec.is_set
    if op_type == "resolve":
        return spec.merge == "review"
    if op_type == "unset_field":
        return spec.merge != "grow"
    if op_type == "add_elements":
        return spec.is_set
    return spec.merge == "set"  # remove_elements


# --------------------------------------------------------------------------------------------
# the bodies


def body_schemas(schema=None) -> dict:
    """The component schemas of every request body: ``Op`` (one of the per-type schemas),
    ``OpBatch``, ``Promote``, ``Resolve``, ``MilestoneCreate``; refined by ``schema`` (a
    project's ``Schema``) when given."""
    if schema is None:
        env = _text(None, ENV_NAME, description="an environment (default: the base)")
        ops = _generic_ops(env)
        entity = _text(None, ENTITY_ID, maxLength=265, description=_TEXT_ENTITY_ID)
    else:
        env = {"type": "string", "enum": list(schema.environments),
               "description": "an environment (default: the base)"}
        ops = _project_ops(schema, env)
        types = "|".join(re.escape(t) for t in schema.types)
        entity = _text(None, f"^({types})\\.{_ENTITY_NAME}$", maxLength=265)
    components = dict(ops)
    components["Op"] = {"oneOf": [_ref(name) for name in ops]}
    original = _original_ops(env)
    components.update(original)
    components["OriginalOp"] = {"oneOf": [_ref(name) for name in original]}
    any_op = {"oneOf": [_ref("Op"), _ref("OriginalOp")]}
    components["OpBatch"] = {
        "type": "object", "required": ["ops"], "additionalProperties": False,
        "properties": {"ops": {"type": "array", "minItems": 1, "items": any_op}}}
    components["OriginalBatch"] = {
        "type": "object", "required": ["operations"], "additionalProperties": False,
        "properties": {"operations": {"type": "array", "minItems": 1, "items": any_op}}}
    components["Promote"] = {
        "type": "object", "required": ["from", "to"], "additionalProperties": False,
        "properties": {"from": env, "to": env,
                       "entities": {"type": "array", "items": entity},
                       "fields": {"type": "array", "items": _text(64, FIELD_NAME),
                                  "description": "only these fields (default: all)"},
                       "intent": _text(_MAX_INTENT), "dry_run": {"type": "boolean"}}}
    if schema is not None:  # from and to differ
        components["Promote"]["not"] = {"anyOf": [
            {"properties": {"from": {"enum": [e]}, "to": {"enum": [e]}}}
            for e in schema.environments]}
    resolve = ops.get("ResolveOp")
    components["Resolve"] = _without_type(resolve) if resolve else {"not": {}}
    components["MilestoneCreate"] = {
        "type": "object", "required": ["message"], "additionalProperties": False,
        "properties": {
            "message": _text(200, _TITLE, description="one printable line of at most 200 "
                                                      "characters"),
            "environments": {"type": "array", "minItems": 1, "items": env},
            "envs": {"type": "array", "minItems": 1, "items": env, "deprecated": True,
                     "description": "the older name of environments"},
            "force": {"type": "boolean"}, "push": {"type": "boolean"}},
        "not": {"required": ["environments", "envs"]}}
    components["Rollback"] = {
        "type": "object", "additionalProperties": False,
        "description": "return an environment (default: the base), or some entities, to a "
                       "milestone's values by forward operations",
        "properties": {"env": env, "entities": {"type": "array", "items": entity,
                                                "maxItems": 10000},
                       "dry_run": {"type": "boolean"}}}
    return components


def _without_type(op: dict) -> dict:
    """``POST /v1/conflicts/resolve`` takes a resolve operation without its ``type``."""
    if "oneOf" in op:
        return {"oneOf": [_without_type(alt) for alt in op["oneOf"]]}
    props = {k: v for k, v in op["properties"].items()
             if k in ("entity_id", "field", "value", "env", "intent")}
    return {"type": "object", "additionalProperties": False,
            "required": [k for k in op["required"] if k != "type"], "properties": props,
            **({"title": op["title"].replace("resolve ", "", 1)} if "title" in op else {})}


# --------------------------------------------------------------------------------------------
# checking

_GENERIC = None


def check(name: str, body, *, where: str = "") -> None:
    """Hold ``body`` to the component schema ``name`` (the generic form): ``ValidationError``
    (422) naming the first key that does not fit, prefixed with ``where``."""
    global _GENERIC
    if _GENERIC is None:
        _GENERIC = body_schemas()
    problem = _problem(_GENERIC[name], body, "", _GENERIC)
    if problem is not None:
        path, message = problem
        raise ValidationError(f"{where}{path + ': ' if path else ''}{message}",
                              field=_top_key(path))


def check_ops(engine, raw_ops: list, actor, *, batch: bool) -> None:
    """Hold each op of a request to the ``Op`` schema, but those of the common shapes, which
    the engine's compiled core checked (``Engine.common_shapes``) already; a ``batch``'s messages
    name the op (``op 3: ...``)."""
    common = engine.common_shapes(raw_ops, actor)
    for index, op in enumerate(raw_ops):
        if not common[index]:
            check("Op", op, where=f"op {index}: " if batch else "")


def check_value(schema: dict, value, name: str) -> None:
    """Hold a query parameter to its documented schema: ``InputError`` (400) naming it."""
    problem = _problem(schema, value, name, {})
    if problem is not None:
        raise InputError(f"{problem[0]}: {problem[1]}", field=name)


def _top_key(path: str) -> str | None:
    if not path:
        return None
    return re.split(r"[.\[]", path, maxsplit=1)[0] or None


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # bytes or an extension type from msgpack: fits no schema


def _is(value, kind: str) -> bool:
    actual = _json_type(value)
    if kind == "number":
        return actual in ("integer", "number") and not (
            isinstance(value, float) and not math.isfinite(value))
    if kind == "integer":
        return actual == "integer" or (actual == "number" and math.isfinite(value)
                                       and value.is_integer())
    return actual == kind


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _problem(schema: dict, value, path: str, components: dict):
    """``(path, message)`` of the first thing in ``value`` that ``schema`` refuses, or None."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    if kind is not None and not _is(value, kind):
        return path, f"expected {_KIND_WORDS.get(kind, kind)}, got {_json_type(value)}"
    if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
        allowed = ", ".join(map(repr, schema["enum"][:10]))
        return path, f"{_show(value)} is not one of {allowed}"
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return path, f"at most {schema['maxLength']} characters, got {len(value)}"
        if "minLength" in schema and len(value) < schema["minLength"]:
            return path, f"at least {schema['minLength']} characters"
        if "pattern" in schema and not _search(schema["pattern"], value):
            return path, f"{_show(value)} does not match {schema['pattern']}"
    if _json_type(value) in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return path, f"{_show(value)} is below the minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return path, f"{_show(value)} is above the maximum {schema['maximum']}"
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            return path, f"at least {schema['minItems']} item(s)"
        if "items" in schema:
            for i, item in enumerate(value):
                found = _problem(schema["items"], item, _join(path, i), components)
                if found:
                    return found
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                return _join(path, key), "missing (required)"
        props = schema.get("properties", {})
        extra = [k for k in value if k not in props]
        if extra and schema.get("additionalProperties") is False:
            key = extra[0]
            return _join(path, key) if isinstance(key, str) else path, \
                f"unknown key {_show(key)} (allowed: {', '.join(props)})"
        for key, sub in props.items():
            if key in value:
                found = _problem(sub, value[key], _join(path, key), components)
                if found:
                    return found
    for sub in schema.get("allOf", ()):
        found = _problem(sub, value, path, components)
        if found:
            return found
    if "anyOf" in schema and all(_problem(s, value, path, components)
                                 for s in schema["anyOf"]):
        if schema["anyOf"] is _SIGNED_PAIR["anyOf"]:
            return _join(path, "signature"), "signature and key_id go together"
        return path, "fits none of the allowed forms"
    if "oneOf" in schema:
        found = _one_of(schema["oneOf"], value, path, components)
        if found:
            return found
    if "not" in schema and _problem(schema["not"], value, path, components) is None:
        return path, _not_words(schema["not"], value)
    return None


_KIND_WORDS = {"string": "text", "integer": "a whole number", "number": "a number",
               "boolean": "true or false", "array": "a list", "object": "an object"}


def _not_words(schema: dict, value) -> str:
    if "anyOf" in schema and "from" in schema["anyOf"][0].get("properties", {}):
        return "from and to must be two different environments"
    if schema.get("type") == "null":
        return "a value is required here (not null)"
    if "pattern" in schema:
        return f"{_show(value)} has a reserved form ({schema['pattern']})"
    if schema.get("required"):
        return f"give only one of {', '.join(map(repr, schema['required']))}"
    return "not allowed here"


def _one_of(alternatives, value, path, components):
    """Exactly one alternative must fit; when none does, the problem of the one the value
    meant (the alternative whose one-value ``enum`` keys it matches: an operation's
    ``type``, a field's name), else a summary."""
    # PERF: alternatives told apart by one key's value (an operation's ``type``) can only fit
    # a value through the alternative its value names: check that one alone. Checking all
    # seven op forms for each op of a 1,000-op batch cost about 60 us per op, more than the
    # whole commit.
    entry = _DISCRIMINATORS.get(id(alternatives))
    if entry is None or entry[0] is not alternatives:
        key, choices = _discriminator(alternatives, components)
        unique = (key is not None and all(isinstance(c, str) for c in choices)
                  and len(set(choices)) == len(choices))
        entry = _DISCRIMINATORS[id(alternatives)] = (
            alternatives, key, {c: i for i, c in enumerate(choices)} if unique else None)
    _, key, index = entry
    if index is not None and isinstance(value, dict):
        named = value.get(key)
        if isinstance(named, str) and named in index:
            return _problem(alternatives[index[named]], value, path, components)
    problems = [_problem(alt, value, path, components) for alt in alternatives]
    fitting = problems.count(None)
    if fitting == 1:
        return None
    if fitting > 1:
        return path, "fits more than one form"
    meant = [p for alt, p in zip(alternatives, problems) if _discriminated(alt, value,
                                                                           components)]
    if meant:
        return meant[0]
    key, choices = _discriminator(alternatives, components)
    if key is not None and isinstance(value, dict):
        if key not in value:
            return _join(path, key), "missing (required)"
        return _join(path, key), f"{_show(value[key])} is not one of " + ", ".join(
            map(str, choices))
    if not isinstance(value, dict):
        kinds = {components[a["$ref"].rsplit("/", 1)[1]].get("type") if "$ref" in a
                 else a.get("type") for a in alternatives}
        if len(kinds) == 1 and None not in kinds:
            return problems[0]
    return path, "fits none of the allowed forms: " + "; ".join(
        f"{(p[0] + ': ') if p[0] else ''}{p[1]}" for p in problems[:3])


#: id of a oneOf list -> (the list, its discriminating key, {value: index} or None)
_DISCRIMINATORS: dict[int, tuple] = {}


def _discriminator(alternatives, components):
    """The key whose one value tells the alternatives apart (an operation's ``type``), and
    its values; ``(None, None)`` if there is none."""
    keys, choices = set(), []
    for alt in alternatives:
        if "$ref" in alt:
            alt = components[alt["$ref"].rsplit("/", 1)[1]]
        first = next(((k, s["enum"][0]) for k, s in alt.get("properties", {}).items()
                      if isinstance(s, dict) and len(s.get("enum", ())) == 1), None)
        if first is None:
            return None, None
        keys.add(first[0])
        choices.append(first[1])
    return (keys.pop(), choices) if len(keys) == 1 else (None, None)


def _discriminated(alt: dict, value, components) -> bool:
    if "$ref" in alt:
        alt = components[alt["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in alt:
        return any(_discriminated(a, value, components) for a in alt["oneOf"])
    if not isinstance(value, dict):
        return False
    keys = [(k, s["enum"][0]) for k, s in alt.get("properties", {}).items()
            if isinstance(s, dict) and len(s.get("enum", ())) == 1]
    return bool(keys) and all(k in value and _same(value[k], v) for k, v in keys[:1])


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (
        _json_type(a) in ("integer", "number") and _json_type(b) in ("integer", "number")
        and a == b)


_PATTERNS: dict[str, re.Pattern] = {}


def _search(pattern: str, text: str) -> bool:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        # JSON Schema's $ is the end of the text, not Python's "or before a final newline"
        compiled = _PATTERNS[pattern] = re.compile(
            re.sub(r"(?<!\\)\$$", r"\\Z", pattern))
    return compiled.search(text) is not None
