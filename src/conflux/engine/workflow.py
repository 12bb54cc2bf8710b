"""The writes people make about the state rather than one field: promotion between
environments, resolving a review conflict, and compaction of what every replica has seen."""

from __future__ import annotations

import struct

from conflux.actors import Actor
from conflux.engine.acks import Ack
from conflux.engine.checks import _marker_hlc
from conflux.engine.settings import now_ms
from conflux.errors import InputError, NotFound, PreconditionFailed


# What the state, not the request, makes pointless: 409, as a failed base is (the same request
# can succeed later), where a malformed one is 400/422.
class NothingToPromote(PreconditionFailed):
    code = "nothing_to_promote"


class NoConflict(PreconditionFailed):
    code = "no_conflict"


class Workflows:
    """Promotion, resolution and compaction (a part of ``Engine``)."""

    def promote(self, source: str, target: str, entities: list[str] | None, actor: Actor, *,
                intent: str = "", dry_run: bool = False, fields: list[str] | None = None
                ) -> Ack:
        """Copy the resolved values of ``source`` into ``target`` as one recorded operation
        whose parts are field operations in ``target`` (override writes, so the target ends
        with exactly the source's values whatever their strategies); only ``fields`` when
        given. ``actor`` needs ``promote`` on the entities (every entity, when none are
        named) in ``target``."""
        core = self.core
        for env in (source, target):
            self._env(env)
        if source == target:
            raise InputError("promote needs two different environments")
        for entity_id in entities or ():
            self.schema.split_entity_id(entity_id)
        for name in fields or ():
            if not any(name in t.fields for t in self.schema.types.values()):
                raise NotFound(f"no entity type has a field {name!r}", field=name)
        self.policy.require_promote(actor, target, entities or None)

        def make_parent():
            parent = core.Op()
            parent.type, parent.env, parent.entity = core.PROMOTE, target, ""
            parent.actor, parent.actor_class, parent.intent = actor.id, actor.cls, intent
            parent.value = {"from": source, "entities": sorted(entities) if entities else None}
            if fields:
                parent.value["fields"] = sorted(set(fields))
            parent.bound = True
            return [parent]

        def expand(txn, ops):
            children = []
            chosen = entities or self._entity_ids(txn, source)
            for entity_id in sorted(chosen):
                src = self._view(txn, source, entity_id)
                if not src and entities:
                    raise NotFound(f"entity {entity_id} does not exist in {source}",
                                   entity=entity_id)
                dst = self._view(txn, target, entity_id)
                for fname, item in src.items():
                    if fields and fname not in fields:
                        continue
                    spec = self.schema.field(entity_id.partition(".")[0], fname)
                    have = dst.get(fname, {}).get("value")
                    if spec.is_set:
                        add = [v for v in item["value"] if v not in (have or [])]
                        drop = [v for v in (have or []) if v not in item["value"]]
                        if add:
                            children.append(self._field_op(core.ADD_ELEMENTS, target, entity_id,
                                                           fname, {"elements": add},
                                                           constrained=False))
                        if drop and spec.merge == "set":
                            children.append(self._field_op(core.REMOVE_ELEMENTS, target,
                                                           entity_id, fname, {"elements": drop}))
                    elif have != item["value"] or fname not in dst:
                        op = self._field_op(core.SET_FIELD, target, entity_id, fname,
                                            {"value": item["value"]}, constrained=False)
                        op.override = True
                        children.append(op)
            if not children:
                raise NothingToPromote(f"nothing to promote: {target} already has {source}'s "
                                       "values")
            for child in children:
                child.actor, child.actor_class, child.intent = actor.id, actor.cls, intent
            ops[0].children = children
        return self._write(make_parent, dry_run=dry_run, expand=expand)[0]

    def resolve(self, entity_id: str, field: str, value, actor: Actor, *,
                env: str | None = None, intent: str = "") -> Ack:
        """Settle a review conflict: one write that supersedes every current candidate."""
        env = self._env(env)
        raw = {"type": "resolve", "entity_id": entity_id, "field": field, "value": value,
               "env": env, "intent": intent}
        self.policy.require_ops(actor, [raw])

        def expand(txn, ops):
            view = self._view(txn, env, entity_id, with_records=True)
            item = view.get(field)
            if item is None or item["env"] != env or len(
                    self.core.review_candidates(item["record"], item["marker"])) < 2:
                raise NoConflict(f"{entity_id}.{field} has no conflict to resolve in {env}",
                                 field=field)
        return self._write(lambda: [self.prepare(raw, actor)], expand=expand)[0]

    def compact(self, horizon: int | None = None) -> dict:
        """Drop causally stable tombstones and dead records (older than ``horizon``, by
        default now minus the stability window). The resolved state does not change; ops
        older than the horizon are refused from then on."""
        core = self.core
        if self.store.shares_log:
            # another node may still apply an op older than this node's horizon, which this
            # node would then refuse: the nodes must agree on a horizon first
            raise InputError("compaction is not available on a node sharing its op log "
                             "([store] url): nothing was changed")
        if horizon is None:
            horizon = core.hlc_pack(now_ms() - self.settings.stability_window_s * 1000, 0)
        stats = {"records": 0, "rewritten": 0, "deleted": 0}

        def body(txn):
            store = self.store
            old = store.meta_int(txn, "horizon")
            h = max(horizon, old)
            items = list(store.state_items(txn))
            markers = {k[:-2]: _marker_hlc(r) for k, r in items if k.endswith(b"\x00\x00")}
            alive = {}
            for key, rec in items:
                stats["records"] += 1
                if key.endswith(b"\x00\x00"):
                    continue
                new = core.compact_record(rec, h, markers.get(key[:-2], 0))
                if new is None:
                    store.state_delete(txn, key)
                    stats["deleted"] += 1
                else:
                    alive[key[:-2]] = True
                    if new != rec:
                        store.state_put(txn, key, new)
                        stats["rewritten"] += 1
            base = struct.pack(">H", self._env_ids[self.schema.base_env])
            for prefix, d in markers.items():
                # In the base environment, a marker older than the horizon hides nothing any
                # more once what it hid is gone: every later write is newer than it anyway.
                # In an overlay it also stops inheritance from the parent, so it stays.
                if d < h and prefix not in alive and prefix.startswith(base):
                    store.state_delete(txn, prefix + b"\x00\x00")
                    stats["deleted"] += 1
            store.meta_put_int(txn, "horizon", h)
            return h
        stats["horizon"] = core.hlc_format(self.store.write(body))
        return stats
