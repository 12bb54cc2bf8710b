"""After the merge: review conflicts and the constraints a merge can break although every
operation was valid (violations, recorded per environment; docs/concepts.md)."""

from __future__ import annotations

import struct

from conflux.codec import unpackb
from conflux.store import PLACE_KEY, split_state_key


_HLC_AT = struct.Struct("<Q")


def _marker_hlc(rec) -> int:
    """The hlc of an entity delete marker (register layout, FORMAT.md)."""
    return 0 if rec is None else _HLC_AT.unpack_from(rec, 16)[0]


def _rules(schema) -> dict:
    """Per entity type, which fields post-merge validation and conflict tracking look at."""
    out = {}
    for type_name, et in schema.types.items():
        fields = et.fields.values()
        out[type_name] = {
            "review": [f.name for f in fields if f.merge == "review"],
            "checked": [f.name for f in fields
                        if f.min is not None or f.max is not None or f.pattern is not None
                        or f.one_of is not None or f.required or f.ref_type is not None],
            "required": [f.name for f in fields if f.required and f.default is None],
            "referrers": [(t, f.name) for t, other in schema.types.items()
                          for f in other.fields.values() if f.ref_type == type_name],
        }
    return out


def _plan_id(key: bytes) -> bytes:
    """The environment, type and field ids of a state key (``conflux.store.state_key``)."""
    return key[:4] + key[-2:]


def _plans(schema, rules) -> dict:
    """What a changed record of ``(env, type, field)`` needs after the merge: ``None`` for
    nothing, else ``(review, check, general)``: a review field's conflict to update; the
    field spec to check from the record alone; or the full, cross-entity check (overlays
    inheriting the value, required fields, refs)."""
    out = {}
    for env in schema.environments:
        inherited = bool(schema.children(env))
        for type_name, et in schema.types.items():
            r = rules[type_name]
            cross = bool(r["required"] or r["referrers"])
            for f in et.fields.values():
                constrained = f.name in r["checked"]
                review = f.merge == "review"
                general = cross or (constrained and (inherited or f.ref_type is not None))
                check = f if constrained and not general else None
                out[(env, type_name, f.name)] = (
                    (review, check, general) if (review or check or general) else None)
    return out


class _Validation:
    """Post-merge validation of one batch (docs/concepts.md): constraints a merge can break although
    every op was valid, recorded as violations per environment.

    PERF: only fields with constraints are looked at, only for the entities the batch touched,
    in their environment and the ones inheriting from it; lookups are cached for the batch, and
    an overlay with no records of an entity is known to inherit it with one range probe.
    Dangling refs are indexed by target (``Store.dangling_referrers``) so that creating the
    target clears them without a scan.
    """

    def __init__(self, engine, txn, changed, markers):
        self.engine, self.txn = engine, txn
        self.store, self.schema, self.core = engine.store, engine.schema, engine.core
        self.changed, self.markers = changed, markers
        self.records: dict[tuple[str, str], dict | None] = {}
        self.views: dict[tuple[str, str], bool] = {}  # whether each entity exists
        # PERF: with no violations on record there are none to look up and clear
        self.any_recorded = self.store.violation_count(txn) > 0
        self._record_key = self.store.violation_recorder(txn, self.any_recorded)
        self._read = None  # the store's entity reader, once a check needs one

    def run_simple(self, simple):
        """Fields checked from their new record alone: ``(key, record, field spec)``."""
        resolve, unpack = self.core.resolve_record, unpackb
        markers, any_recorded = self.markers, self.any_recorded
        for key, rec, spec in simple:
            present, value, _ = resolve(rec, markers[key[:-2] + b"\x00\x00"])
            if present:
                value = ([unpack(e) for e in value] if isinstance(value, list)
                         else unpack(value))
                messages = spec.violations(value)
            else:
                messages = []
            if messages or any_recorded:
                self._record_key(key, messages, [])

    def run(self, touched_fields):
        schema, rules = self.schema, self.engine._rules
        checks: dict[tuple[str, str, str], None] = {}
        for (env, entity_id), names in touched_fields.items():
            type_name = entity_id.partition(".")[0]
            r = rules[type_name]
            if None in names:
                fields = r["checked"]
            else:
                fields = [f for f in r["checked"] if f in names] + r["required"]
            envs = [env, *schema.children(env)]
            for e in envs:
                for fname in fields:
                    checks[(e, entity_id, fname)] = None
            if r["referrers"]:
                for e in envs:
                    for other, fname in self._dangling_to(e, entity_id):
                        checks[(e, other, fname)] = None
                    if None in names:  # deleted: whoever points at it now dangles
                        for other, fname in self._pointing_at(e, entity_id, r["referrers"]):
                            checks[(e, other, fname)] = None
        for env, entity_id, fname in checks:
            self._check(env, entity_id, fname)

    # -- reading through the batch cache ------------------------------------------------------

    def _level(self, env, entity_id):
        """``{field id: record}`` of one entity in one environment (None if it has none)."""
        key = (env, entity_id)
        if key not in self.records:
            if self._read is None:
                self._read = self.store.entity_reader(self.txn)
            self.records[key] = self._read(self.engine._key(env, entity_id, None)[:-2]) or None
        return self.records[key]

    def _field(self, env, entity_id, fname):
        """(present, value) of one field resolved through the chain."""
        type_name = entity_id.partition(".")[0]
        key = self.engine._key(env, entity_id, fname)
        rec = self.changed.get(key)
        if rec is not None:  # just merged: its own value decides unless it has none
            present, value, _ = self.core.resolve_record(rec, self.markers[key[:-2] + b"\0\0"])
            if present:
                return True, self.engine._decode_value(type_name, fname, value)
        fid = self.engine._field_ids[(type_name, fname)]
        for level in self.schema.env_chain(env):
            records = self._level(level, entity_id)
            if not records:
                continue
            d = _marker_hlc(records.get(0))
            rec = records.get(fid)
            if rec is not None:
                present, value, _ = self.core.resolve_record(rec, d)
                if present:
                    return True, self.engine._decode_value(type_name, fname, value)
            if d:
                break
        return False, None

    def _exists(self, env, entity_id):
        key = (env, entity_id)
        if key not in self.views:
            if self._read is None:
                self._read = self.store.entity_reader(self.txn)
            self.views[key] = self.engine._exists(self.txn, env, entity_id, self._read)
        return self.views[key]

    # -- checking -----------------------------------------------------------------------------

    def _check(self, env, entity_id, fname):
        type_name, _, name = entity_id.partition(".")
        spec = self.schema.types[type_name].fields[fname]
        present, value = self._field(env, entity_id, fname)
        messages, targets = [], []
        if not present:
            if spec.required and spec.default is None and self._exists(env, entity_id):
                messages.append(f"required field '{fname}' is not set")
        else:
            messages.extend(spec.violations(value))
            if spec.ref_type is not None:
                for target in (value if isinstance(value, list) else [value]):
                    if not self._exists(env, target):
                        messages.append(f"{fname} refers to {target}, which does not exist in "
                                        f"{env}")
                        targets.append(target)
        self._record(env, entity_id, fname, messages, targets)

    def _record(self, env, entity_id, fname, messages, targets):
        if messages or self.any_recorded:
            self._record_key(self.engine._key(env, entity_id, fname), messages, targets)

    def _dangling_to(self, env, entity_id):
        """(referrer entity id, field) whose violation says they point at a missing
        ``entity_id`` in ``env``."""
        return [self._names_of(key) for key in self.store.dangling_referrers(
            self.txn, self.engine._env_ids[env], entity_id)]

    def _pointing_at(self, env, entity_id, referrers):
        """(entity id, field) in ``env`` whose ref fields name ``entity_id`` (a scan: only
        after a delete)."""
        out = []
        types = {t for t, _ in referrers}
        for other in self.engine._entity_ids(self.txn, env, types):
            for t, fname in referrers:
                if other.startswith(t + "."):
                    present, value = self._field(env, other, fname)
                    if present and (value == entity_id or
                                    (isinstance(value, list) and entity_id in value)):
                        out.append((other, fname))
        return out

    def _names_of(self, key):
        _, type_id, name, fid = split_state_key(key)
        if not hasattr(self, "_type_names"):
            self._type_names = self.store.names(self.txn, "t")
            self._field_names = self.store.names(self.txn, "f")
        return (f"{self._type_names[type_id]}.{name}",
                self._field_names[fid].partition(".")[2])


class PostMerge:
    """Conflicts and violations after a commit (a part of ``Engine``)."""

    def _post_merge(self, txn, merged, dry_run):
        """Keep the conflict and violation indexes in step with the merged state; returns the
        per-op change descriptions of a dry run.

        PERF: only records that changed can change a conflict or a violation, so only they
        are looked at; a constrained field of a type with no cross-entity rules, in an
        environment nothing inherits from, is checked right from its new record.
        """
        keys, groups, changed, markers = merged
        plans = self._plans
        touched: dict[tuple[str, str], set] = {}
        simple = []
        for key, rec in changed.items():
            if key.endswith(b"\x00\x00"):  # an entity's delete marker (fields have ids > 0)
                op = groups[key][0]
                touched.setdefault((op.env, op.entity), set()).add(None)
                for fname in self._rules[op.entity.partition(".")[0]]["review"]:
                    self._mark_conflict(txn, self._key(op.env, op.entity, fname),
                                        markers[key])
                continue
            if key.endswith(PLACE_KEY):  # a move may make the entity exist: check it whole
                op = groups[key][0]
                touched.setdefault((op.env, op.entity), set()).add(None)
                continue
            plan = plans[_plan_id(key)]
            if plan is None:
                continue
            review, check, general = plan
            if review:
                self._mark_conflict(txn, key, markers[key[:-2] + b"\x00\x00"], rec)
            if general:
                op = groups[key][0]
                touched.setdefault((op.env, op.entity), set()).add(op.field)
            elif check is not None:
                simple.append((key, rec, check))
        validation = _Validation(self, txn, changed, markers)
        validation.run_simple(simple)
        if touched:
            validation.run(touched)
        if not dry_run:
            return {}
        return {id(op): self._describe(op) for key in keys for op in groups[key]}

    def _mark_conflict(self, txn, key, d, rec=None):
        rec = rec if rec is not None else self.store.state_getter(txn)(key)
        self.store.mark_conflict(
            txn, key, rec is not None and len(self.core.review_candidates(rec, d)) > 1)

    def _describe(self, op) -> dict:
        core = self.core
        out = {"type": core.OP_NAMES[op.type], "env": op.env, "entity_id": op.entity}
        if op.field:
            out["field"] = op.field
        if op.type in (core.SET_FIELD, core.RESOLVE):
            out["before"] = None if op.prev is None else unpackb(op.prev)
            out["after"] = op.value
        elif op.type == core.UNSET_FIELD:
            out["before"] = None if op.prev is None else unpackb(op.prev)
            out["after"] = None
        elif op.type == core.MOVE_ENTITY:
            out.update(self._describe_move(op))
        elif op.elements is not None:
            out["elements"] = op.elements
        return out
