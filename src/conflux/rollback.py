"""Rollback: an environment (or some of its entities) returned to a milestone's values by
ordinary forward operations, never by rewriting history.

``plan`` compares what the milestone's git tree holds for the environment with what the
environment reads now, field by field, and turns every difference into the operation that
undoes it, written in that environment with the intent ``rollback to milestone N``:

- a value that differs: ``set_field`` of the milestone's value. Where the field's strategy
  would keep the current value (a ``max`` field above the milestone's value, a ``min`` field
  below it), the write is an override (``override: true``), and the preview says so;
- a value the milestone did not have: ``unset_field``;
- a ``set`` field: ``add_elements`` and ``remove_elements`` of what differs; a ``grow``
  field can only grow, so elements added since are listed as kept (``skipped``);
- an entity the milestone did not have: ``delete_entity``; one deleted since: its fields
  written again (a write stamped after a delete revives the entity).

What cannot be undone in the environment itself is listed in ``skipped`` with the reason
(a value an overlay inherits from its parent, which only rolling the parent back changes).
``run`` applies the plan as one atomic batch, as the actor, under the access rules, then
plans again: what still differs (``remaining``: a write that came in between) is answered,
never passed over. A dry run answers the plan and writes nothing.
"""

from __future__ import annotations

from conflux.engine.ops import _natural

__all__ = ["plan", "run"]


def _normal(spec, value):
    """A milestone document's value (as its file holds it) in the engine's normal form."""
    if value is None:
        return None
    if spec.is_set:
        # (in the order the engine reads a set's elements in: the two compare as lists)
        return sorted((spec.coerce_element(v) for v in value), key=_natural)
    return spec.coerce(value)


def _keeps(spec, current, wanted) -> bool:
    """Whether the field's strategy would keep ``current`` over a plain write of ``wanted``."""
    if current is None or wanted is None:
        return False
    if spec.merge == "max":
        return current > wanted
    if spec.merge == "min":
        return current < wanted
    return False


def plan(engine, milestones, ref, *, env: str | None = None,
         entities: list[str] | None = None, reader=None) -> dict:
    """What rolling ``env`` (default: the base) back to milestone ``ref`` would write:
    ``{"milestone", "env", "changes", "skipped", "ops"}``. ``changes``: per entity and
    field, the value now and at the milestone and the operation that restores it;
    ``entities``: only these (default: every entity the milestone or the environment has).
    A ``reader`` needs ``read`` on the environment."""
    schema = engine.schema
    env = env or schema.base_env
    schema.env_chain(env)  # NotFound for an unknown environment
    milestone = milestones.get(ref, reader=reader, env=env)
    then = milestones.documents(milestone, env)
    for entity_id in entities or ():
        schema.split_entity_id(entity_id)
    now = engine.state(env, sources=True)  # each value with the environment holding it
    parent = schema.parents[env]
    scope = sorted(set(entities) if entities else set(then) | set(now))
    intent = f"rollback to milestone {milestone.id}"
    ops, changes, skipped = [], [], []

    def emit(entity_id, fname, before, after, op):
        op = {"entity_id": entity_id, "env": env, "intent": intent, **op}
        ops.append(op)
        change = {"entity_id": entity_id, "field": fname, "now": before,
                  "at_milestone": after, "op": op["type"]}
        if op.get("override"):
            change["override"] = True
        changes.append(change)

    def keep(entity_id, fname, held, wanted, reason):
        skipped.append({"entity_id": entity_id, "field": fname, "now": held,
                        "at_milestone": wanted, "reason": reason})

    for entity_id in scope:
        type_name = entity_id.partition(".")[0]
        doc, current = then.get(entity_id), now.get(entity_id)
        if doc is None and current is None:
            continue
        if type_name not in schema.types:
            keep(entity_id, None, None, "exists", f"entity type {type_name!r} is no longer in "
                                                  "the schema")
            continue
        if doc is None:
            emit(entity_id, None, "exists", None, {"type": "delete_entity"})
            continue
        if current is None and not set(doc) - {"name"}:
            keep(entity_id, None, None, "exists", "it existed by its place in the entity "
                 "tree alone, which milestones do not hold: move it back (conflux move)")
            continue
        current = current or {}
        for fname, spec in schema.types[type_name].fields.items():
            wanted = _normal(spec, doc.get(fname))
            held, source = current.get(fname, (None, None))
            if wanted == held:
                continue
            if wanted is None:
                # what the environment reads once its own value is unset
                inherited = None if parent is None else engine.resolved(
                    [entity_id], parent).get(entity_id, {}).get(fname)
                if spec.merge == "grow":
                    keep(entity_id, fname, held, None, "a grow field keeps every element")
                elif inherited is not None:
                    keep(entity_id, fname, held, None, f"{env} would inherit {inherited!r} "
                                                       f"from {parent}: roll {parent} back too")
                else:
                    emit(entity_id, fname, held, None, {"type": "unset_field", "field": fname})
                continue
            if spec.is_set and source not in (None, env):
                # inherited: the environment's own elements, then, are the milestone's (its
                # own record reads instead of the parent's), unless it had none
                if wanted:
                    emit(entity_id, fname, held, wanted, {"type": "add_elements",
                                                          "field": fname, "elements": wanted})
                else:
                    keep(entity_id, fname, held, wanted, f"{env} inherits it from {source}: "
                                                         f"roll {source} back too")
                continue
            if spec.is_set:
                have = held or []
                add = [e for e in wanted if e not in have]
                extra = [e for e in have if e not in wanted]
                if add:
                    emit(entity_id, fname, held, wanted, {"type": "add_elements",
                                                          "field": fname, "elements": add})
                if extra and spec.merge == "grow":
                    keep(entity_id, fname, held, wanted, "a grow field keeps every element")
                elif extra:
                    emit(entity_id, fname, held, wanted, {"type": "remove_elements",
                                                          "field": fname, "elements": extra})
                continue
            op = {"type": "set_field", "field": fname, "value": wanted}
            if _keeps(spec, held, wanted):
                op["override"] = True
            emit(entity_id, fname, held, wanted, op)
    return {"milestone": milestone.id, "env": env, "changes": changes, "skipped": skipped,
            "ops": ops}


def run(engine, milestones, ref, actor, *, env: str | None = None,
        entities: list[str] | None = None, dry_run: bool = False) -> dict:
    """Roll back (``plan``, then its operations as one atomic batch by ``actor``); with
    ``dry_run``, the plan with nothing written. Adds ``acks`` (each op's ``Ack``)."""
    out = plan(engine, milestones, ref, env=env, entities=entities, reader=actor)
    out["acks"] = engine.apply(out["ops"], actor, dry_run=dry_run) if out["ops"] else []
    out["remaining"] = []
    if out["ops"] and not dry_run:
        # what still differs once written (a write in between, a rule the plan missed):
        # said, never passed over as done
        out["remaining"] = plan(engine, milestones, ref, env=env, entities=entities,
                                reader=actor)["changes"]
    return out
