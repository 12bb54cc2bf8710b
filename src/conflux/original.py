"""The original Conflux's vocabulary, in Conflux's terms.

Teams come from the original (Rust) Conflux with clients that speak its operations: its gRPC
messages (``conflux.rpc``) and its REST bodies. They name operations differently:

=================================  ================================================
the original                       Conflux
=================================  ================================================
``set_field``                      ``set_field`` in the base environment
``set_override`` + ``environment`` ``set_field`` in that environment
``remove_entity``                  ``delete_entity``
``resolve_conflict`` +             ``resolve`` (in ``environment``, else the base)
``chosen_value``
``insert_entity`` + initial fields one ``set_field`` per field and, with ``parent_id`` or
                                   ``position`` (or no field), a ``move_entity`` placing
                                   it (a root without ``parent_id``), applied together
``move_entity`` + ``new_parent_id`` ``move_entity`` with ``parent`` and ``position``
and ``new_position``
=================================  ================================================

Conflux's own types (``unset_field``, ``add_elements``, ``remove_elements``, its own
``move_entity`` with ``parent``, and the others) pass through as they are. An
``insert_entity``'s ``entity_type`` must be the type its id names (``service`` for
``service.api``); with no initial fields, the entity exists by its place in the tree.

Everything here is translation: the engine checks the ops it returns like any other.
"""

from __future__ import annotations

from conflux.errors import ValidationError

__all__ = ["ORIGINAL_TYPES", "conflux_ops", "expand", "answers", "entity_state",
           "log_entry", "original_type", "environments", "env_diff"]

#: The operation types only the original names (``set_field`` is both's).
ORIGINAL_TYPES = frozenset({"insert_entity", "remove_entity", "move_entity", "set_override",
                            "resolve_conflict"})

#: Keys every operation may carry besides its own (the engine checks them).
_COMMON = ("intent", "op_id", "hlc", "signature", "key_id")


def conflux_ops(raw: dict, base_env: str, *, where: str = "") -> list[dict]:
    """The Conflux operations ``raw`` stands for: itself when it is one of Conflux's, else
    its translation (``ValidationError`` naming what cannot be translated). ``where``
    prefixes messages (``"op 3: "``)."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if not isinstance(kind, str) or kind not in ORIGINAL_TYPES:
        return [raw]  # Conflux's own (or not an op: the engine's check says what is wrong)
    common = {k: raw[k] for k in _COMMON if k in raw}
    if kind == "set_override":
        _need(raw, ("entity_id", "field", "environment", "value"), kind, where)
        return [{"type": "set_field", "entity_id": raw["entity_id"], "field": raw["field"],
                 "value": raw["value"], "env": raw["environment"], **common}]
    if kind == "remove_entity":
        _need(raw, ("entity_id",), kind, where)
        return [{"type": "delete_entity", "entity_id": raw["entity_id"],
                 "env": raw.get("environment") or base_env, **common}]
    if kind == "resolve_conflict":
        _need(raw, ("entity_id", "field", "chosen_value"), kind, where)
        return [{"type": "resolve", "entity_id": raw["entity_id"], "field": raw["field"],
                 "value": raw["chosen_value"], "env": raw.get("environment") or base_env,
                 **common}]
    if kind == "move_entity":
        if "new_parent_id" not in raw and "new_position" not in raw:
            return [raw]  # Conflux's own: parent and position
        _need(raw, ("entity_id",), kind, where)
        for key in ("parent", "position"):
            if key in raw:
                raise ValidationError(f"{where}move_entity: {key} is Conflux's spelling of "
                                      f"new_{'parent_id' if key == 'parent' else key}: give "
                                      "one of them", field=key)
        if "new_parent_id" not in raw:
            raise ValidationError(f"{where}move_entity needs 'new_parent_id' (null: a root)",
                                  field="new_parent_id")
        return [{"type": "move_entity", "entity_id": raw["entity_id"],
                 "parent": raw["new_parent_id"], "position": raw.get("new_position"),
                 **common}]
    return _insert(raw, base_env, common, where)


def _insert(raw: dict, base_env: str, common: dict, where: str) -> list[dict]:
    _need(raw, ("entity_id", "entity_type"), "insert_entity", where)
    entity_id, entity_type = raw["entity_id"], raw["entity_type"]
    if not isinstance(entity_id, str) or not isinstance(entity_type, str) or \
            entity_id.partition(".")[0] != entity_type or "." not in entity_id:
        raise ValidationError(f"{where}insert_entity: entity_type {entity_type!r} is not the "
                              f"type entity_id {entity_id!r} names (ids are <type>.<name>)",
                              field="entity_type")
    fields = raw.get("fields")
    if fields is None:
        fields = raw.get("initial_fields")
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise ValidationError(f"{where}insert_entity: fields must be an object {{name: value, "
                              "...}}; nothing was written", field="fields")
    env = raw.get("environment") or base_env
    op_id = common.pop("op_id", None)
    out = [{"type": "set_field", "entity_id": entity_id, "field": name,
            "value": fields[name], "env": env, **common} for name in sorted(fields)]
    if raw.get("parent_id") is not None or raw.get("position") is not None or not fields:
        # its place in the tree (kept in the base environment): under parent_id, else a
        # root; an entity inserted with no fields exists by it. Last, so that the answer
        # (the first op's) is a field's when there is one.
        out.append({"type": "move_entity", "entity_id": entity_id,
                    "parent": raw.get("parent_id"), "position": raw.get("position"),
                    **common})
    if op_id is not None:  # one id per op, derived: a retry repeats them all
        for op in out:  # ('~' is in no field name)
            op["op_id"] = op_id if len(out) == 1 else \
                f"{op_id}/{op.get('field') or '~place'}"
    return out


def _need(raw: dict, keys: tuple, kind: str, where: str) -> None:
    for key in keys:
        if raw.get(key) is None:
            raise ValidationError(f"{where}{kind} needs {key!r}", field=key)


def expand(raw_ops: list, base_env: str) -> tuple[list, list[int] | None]:
    """A request's ops as Conflux's, and how many Conflux ops each became (None when every
    op was Conflux's own: one each)."""
    if not any(type(op) is dict and isinstance(op.get("type"), str) and
               op["type"] in ORIGINAL_TYPES for op in raw_ops):
        return raw_ops, None
    out, groups = [], []
    for index, op in enumerate(raw_ops):
        made = conflux_ops(op, base_env, where=f"op {index}: " if len(raw_ops) > 1 else "")
        out += made
        groups.append(len(made))
    return out, groups


def _conflicted(engine, ops: list, reader=None) -> dict[int, list | None]:
    """The ops (committed) whose ``review`` field now holds concurrent candidates: the
    original's ``conflict``, by index, with the candidates' values."""
    if not engine.schema.review_fields:  # PERF: the one-op write path, most schemas
        return {}
    base = engine.schema.base_env
    found = [(i, (op.get("env") or base, op["entity_id"], op["field"]))
             for i, op in enumerate(ops) if op.get("type") in _REVIEW_WRITES]
    values = engine.contending([item for _, item in found])
    may_read = engine.policy.may_read
    # the competing values are other actors' writes: shown to a ``reader`` who may read them
    return {i: v if reader is None or may_read(reader, item[1], item[2], item[0]) else None
            for (i, item), v in zip(found, values) if v is not None}


_REVIEW_WRITES = frozenset({"set_field", "unset_field", "resolve"})


def answers(engine, ops: list, groups: list[int] | None, acks: list[dict], reader=None
            ) -> list[dict]:
    """One answer per op of the request: the answer of the first Conflux op it became, with
    the original's keys added (``operation_id``, ``timestamp``, ``conflict``, and
    ``conflict_info`` when there is one: its contending values only when ``reader`` may read
    the field) and ``operation_ids`` when it became several."""
    hit = _conflicted(engine, ops, reader)
    out, at = [], 0
    for size in groups or [1] * len(acks):
        answer = acks[at]
        answer["operation_id"], answer["timestamp"] = answer["op_id"], answer["hlc"]
        answer["conflict"] = any(i in hit for i in range(at, at + size))
        if size > 1 and not all(a.get("duplicate") for a in acks[at:at + size]):
            answer.pop("duplicate", None)  # a retry is one only if all of it was
        if answer["conflict"]:
            i = next(i for i in range(at, at + size) if i in hit)
            answer["conflict_info"] = {"entity_id": ops[i]["entity_id"],
                                       "field": ops[i]["field"]}
            if hit[i] is not None:
                answer["conflict_info"]["contending_values"] = hit[i]
        if size > 1:
            answer["operation_ids"] = [a["op_id"] for a in acks[at:at + size]]
        out.append(answer)
        at += size
    return out


# -- reads in the original's shapes -------------------------------------------------------------

def entity_state(entity_id: str, fields: dict, sources: dict | None = None,
                 place: dict | None = None) -> dict:
    """One entity as the original shows it, with its ``place`` in the tree
    (``Engine.place``). Conflux lists no deleted entity (``tombstoned`` is always false)."""
    place = place or {}
    out = {"entity_id": entity_id, "entity_type": entity_id.partition(".")[0],
           "fields": fields, "parent_id": place.get("parent"),
           "children": place.get("children", []), "tombstoned": False}
    if place.get("position") is not None:
        out["position"] = place["position"]
    if sources is not None:
        out["field_sources"] = sources
    return out


def log_entry(op: dict, base_env: str) -> dict:
    """A logged operation (``Engine.op_dict``) as the original's log shows it, in its
    vocabulary where it has one (Conflux's own types keep their names), with Conflux's
    ``seq`` and ``env``."""
    kind, env = op["type"], op["env"]
    out = {"id": op["op_id"], "timestamp": op["hlc"], "actor_id": op["actor"],
           "actor_class": op["actor_class"], "intent": op["intent"] or None,
           "seq": op["seq"], "env": env, "entity_id": op["entity_id"],
           "type": original_type(kind, env, base_env)}
    if out["type"] == "set_field":
        out.update(field=op["field"], value=op.get("value"))
    elif out["type"] == "set_override":
        out.update(field=op["field"], environment=env, value=op.get("value"))
    elif out["type"] == "resolve_conflict":
        out.update(field=op["field"], environment=None if env == base_env else env,
                   chosen_value=op.get("value"))
    elif out["type"] == "move_entity":
        out.update(new_parent_id=op["parent"], new_position=op["position"])
    elif out["type"] != "remove_entity":
        for key in ("field", "value", "elements", "operations"):
            if key in op:
                out[key] = op[key]
    return out


def original_type(kind: str, env: str, base_env: str) -> str:
    """The original's name of a Conflux operation type in ``env`` (a write to another
    environment than the base is its ``set_override``); Conflux's own types keep theirs."""
    if kind == "set_field":
        return "set_field" if env == base_env else "set_override"
    return _ORIGINAL_NAMES.get(kind, kind)


_ORIGINAL_NAMES = {"delete_entity": "remove_entity", "resolve": "resolve_conflict"}


def environments(schema) -> dict:
    """The environments as the original lists them: the base, all of them, and each
    overlay's parent."""
    return {"base": schema.base_env, "environments": list(schema.environments),
            "inheritance": {env: parent for env, parent in schema.parents.items()
                            if parent is not None}}


def env_diff(engine, source: str, target: str, reader=None) -> dict:
    """Field by field, where the resolved values of two environments differ (defaults
    included; a value absent on one side is null)."""
    one = engine.state(source, reader=reader)
    two = engine.state(target, reader=reader)
    differences = []
    for entity_id in sorted(set(one) | set(two)):
        a, b = one.get(entity_id, {}), two.get(entity_id, {})
        for field in [f for f in engine.schema.types[entity_id.partition(".")[0]].fields
                      if f in a or f in b]:
            if a.get(field) != b.get(field):
                differences.append({"entity_id": entity_id, "field": field,
                                    "from_value": a.get(field), "to_value": b.get(field)})
    return {"from_env": source, "to_env": target, "differences": differences}
