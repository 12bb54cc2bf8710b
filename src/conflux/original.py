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
``insert_entity`` + initial fields one ``set_field`` per field, applied together
=================================  ================================================

Conflux's own types (``unset_field``, ``add_elements``, ``remove_elements``, and the others)
pass through as they are. An entity exists in Conflux once one of its fields is written, so
an ``insert_entity`` needs at least one initial field, and its ``entity_type`` must be the
type its id names (``service`` for ``service.api``). Entity trees (``parent_id``,
``position``, ``move_entity``) are refused with a clear error: Conflux does not keep them.

Everything here is translation: the engine checks the ops it returns like any other.
"""

from __future__ import annotations

from conflux.errors import ValidationError

__all__ = ["ORIGINAL_TYPES", "conflux_ops"]

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
    if kind not in ORIGINAL_TYPES:
        return [raw]
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
        raise ValidationError(f"{where}move_entity: Conflux keeps no entity tree (parents and "
                              "positions); nothing was written", field="type")
    return _insert(raw, base_env, common, where)


def _insert(raw: dict, base_env: str, common: dict, where: str) -> list[dict]:
    _need(raw, ("entity_id", "entity_type"), "insert_entity", where)
    entity_id, entity_type = raw["entity_id"], raw["entity_type"]
    if not isinstance(entity_id, str) or not isinstance(entity_type, str) or \
            entity_id.partition(".")[0] != entity_type or "." not in entity_id:
        raise ValidationError(f"{where}insert_entity: entity_type {entity_type!r} is not the "
                              f"type entity_id {entity_id!r} names (ids are <type>.<name>)",
                              field="entity_type")
    for key in ("parent_id", "position"):
        if raw.get(key) is not None:
            raise ValidationError(f"{where}insert_entity: {key}: Conflux keeps no entity tree "
                                  "(parents and positions); nothing was written", field=key)
    fields = raw.get("fields")
    if fields is None:
        fields = raw.get("initial_fields")
    if not isinstance(fields, dict) or not fields:
        raise ValidationError(f"{where}insert_entity: give the entity's initial fields "
                              "(\"fields\": {name: value, ...}): an entity exists in Conflux "
                              "once a field of it is written; nothing was written",
                              field="fields")
    env = raw.get("environment") or base_env
    op_id = common.pop("op_id", None)
    out = []
    for name in sorted(fields):
        op = {"type": "set_field", "entity_id": entity_id, "field": name,
              "value": fields[name], "env": env, **common}
        if op_id is not None:  # one id per field, derived: a retry repeats them all
            op["op_id"] = op_id if len(fields) == 1 else f"{op_id}/{name}"
        out.append(op)
    return out


def _need(raw: dict, keys: tuple, kind: str, where: str) -> None:
    for key in keys:
        if raw.get(key) is None:
            raise ValidationError(f"{where}{kind} needs {key!r}", field=key)
