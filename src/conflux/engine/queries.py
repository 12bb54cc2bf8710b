"""Reading: resolved state through the environments' inheritance chains, the op log, blame,
conflicts, violations and the engine's own figures."""

from __future__ import annotations

import datetime as _dt

from conflux.actors import Actor
from conflux.codec import unpackb
from conflux.engine.checks import _marker_hlc
from conflux.engine.ops import _natural
from conflux.engine.settings import now_ms
from conflux.errors import InputError, NotFound
from conflux.kernel import op_parts
from conflux.store import entity_prefix, PLACE_FIELD, split_state_key, state_key


def _since(core, since) -> tuple[int, int]:
    """(lowest sequence, lowest hlc) for a ``since`` given as seq, hlc or ISO date/time."""
    if since is None or since == "":
        return 0, 0
    if isinstance(since, int) or (isinstance(since, str) and since.isascii() and
                                   since.isdigit()):
        return int(since), 0
    if isinstance(since, str) and since.startswith("hlc:"):
        return 0, core.hlc_parse(since)
    try:
        moment = _dt.datetime.fromisoformat(str(since))
    except ValueError:
        raise InputError(f"since {since!r} is not a sequence number, an hlc or an ISO date",
                         field="since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return 0, core.hlc_pack(int(moment.timestamp() * 1000), 0)


class Queries:
    """Reads (a part of ``Engine``)."""

    def _env_levels(self, txn, env):
        """(env, env id) up the inheritance chain."""
        return [(level, self._env_ids[level]) for level in self.schema.env_chain(env)]

    def _view(self, txn, env, entity_id, *, with_records=False, read=None) -> dict:
        """The resolved fields of one entity in ``env``: own value, else the parent's, up to
        the base. A delete marker in a level hides what that level inherits. Fields never set
        are absent (defaults are the caller's business). ``read``: the store's
        ``entity_reader`` for ``txn``, when the caller views many entities."""
        core = self.core
        type_name, _, name = entity_id.partition(".")
        if type_name not in self.schema.types:
            return {}
        type_id = self._type_ids[type_name]
        fields = self._field_names[type_name]
        if read is None:
            read = self.store.entity_reader(txn)
        view = {}
        for level, env_id in self._env_levels(txn, env):
            records = read(entity_prefix(env_id, type_id, name))
            d = _marker_hlc(records.pop(0, None))
            for fid, rec in records.items():
                fname = fields.get(fid)
                if fname is None or fname in view:
                    continue
                present, value, winner = core.resolve_record(rec, d)
                if not present:
                    continue
                item = {"value": self._decode_value(type_name, fname, value), "env": level,
                        "winner": winner}
                if with_records:
                    item["record"], item["marker"] = rec, d
                view[fname] = item
            if d:
                break
        return view

    def _exists(self, txn, env, entity_id, read) -> bool:
        """Whether an entity exists in ``env``: a field read there (what makes ``_view``
        non-empty, without decoding a value), or, in the base environment, a move stamped
        after its delete (an entity inserted with no fields exists by its place)."""
        type_name, _, name = entity_id.partition(".")
        if type_name not in self.schema.types:
            return False
        core = self.core
        fields = self._field_names[type_name]
        for level, env_id in self._env_levels(txn, env):
            records = read(entity_prefix(env_id, self._type_ids[type_name], name))
            d = _marker_hlc(records.pop(0, None))
            for fid, rec in records.items():
                if (fid in fields or fid == PLACE_FIELD) and core.resolve_record(rec, d)[0]:
                    return True
            if d:
                return False
        return False

    def _decode_value(self, type_name, fname, value):
        if isinstance(value, list):  # set elements
            items = [unpackb(e) for e in value]
            return sorted(items, key=_natural)
        return unpackb(value)

    def _entity_ids(self, txn, env, types=None) -> list[str]:
        """Every entity id that has records somewhere up ``env``'s chain (visible or not)."""
        type_names = self.store.names(txn, "t")
        found = set()
        for _, env_id in self._env_levels(txn, env):
            for type_id, name in self.store.env_entities(txn, env_id):
                type_name = type_names.get(type_id)
                if type_name in self.schema.types and (types is None or type_name in types):
                    found.add(f"{type_name}.{name}")
        return sorted(found)

    def get(self, entity_id: str, env: str | None = None, field: str | None = None, *,
            reader: Actor | None = None) -> dict:
        """The resolved fields of an entity: ``{field: {value, env, actor, op_id, hlc}}``, with
        defaults marked ``env: None, default: True``. Raises NotFound if it does not exist.
        A ``reader`` needs ``read`` on the entity there (``PermissionDenied``)."""
        env = self._env(env)
        self.policy.require_read(reader, entity_id, None, env)
        type_name, _ = self.schema.split_entity_id(entity_id)
        if field is not None:
            self.schema.field(type_name, field)
        with self.store.read() as txn:
            view = self._view(txn, env, entity_id)
            if not view and not self._exists(txn, env, entity_id,
                                             self.store.entity_reader(txn)):
                raise NotFound(f"entity {entity_id} does not exist in {env}",
                               entity=entity_id)
        out = {}
        for spec in self.schema.types[type_name].fields.values():
            item = view.get(spec.name)
            if item is not None:
                hlc, actor, op_id, override = item["winner"]
                out[spec.name] = {"value": item["value"], "env": item["env"], "op_id": op_id,
                                  "hlc": hlc, "override": override}
            elif spec.default is not None:
                out[spec.name] = {"value": spec.default, "env": None, "default": True}
        if field is not None:
            if field not in out:
                raise NotFound(f"{entity_id}.{field} is not set in {env}", field=field)
            return {field: out[field]}
        return out

    def state(self, env: str | None = None, types: list[str] | None = None, *,
              reader: Actor | None = None, sources: bool = False) -> dict[str, dict]:
        """The resolved state of an environment: ``{entity id: {field: value}}``, defaults
        included, entities in id order (only those of ``types`` when given; for a
        ``reader``, only those it may read). With ``sources``, each value comes with the
        environment that holds it, ``(value, env)`` (``env`` or one it inherits from; None
        for a schema default)."""
        return self.snapshot(env, types, reader=reader, sources=sources)[0]

    def snapshot(self, env: str | None = None, types: list[str] | None = None, *,
                 reader: Actor | None = None, sources: bool = False
                 ) -> tuple[dict[str, dict], int]:
        """``state`` and the log's sequence number it is at, read in one transaction: a
        watcher sent this snapshot then every op logged after that number misses nothing and
        sees nothing twice."""
        env = self._env(env)
        may_read = self.policy.may_read
        with self.store.read() as txn:
            ids = self._entity_ids(txn, env, set(types) if types is not None else None)
            if reader is not None:
                ids = [e for e in ids if may_read(reader, e, None, env)]
            return (self._resolved(txn, env, ids, sources=sources),
                    self.store.log_tail(txn)[0])

    def matching(self, pattern: str, env: str | None = None, types=None) -> list[str]:
        """The entities of ``env`` (of ``types`` when given) whose id matches the glob
        ``pattern`` (``route.*``, ``service.api-*``; case-sensitive), in id order."""
        from fnmatch import fnmatchcase

        env = self._env(env)
        with self.store.read() as txn:
            ids = self._entity_ids(txn, env, set(types) if types else None)
            read = self.store.entity_reader(txn)
            return [e for e in ids if fnmatchcase(e, pattern) and
                    self._exists(txn, env, e, read)]

    def contending(self, fields) -> list:
        """For each ``(env, entity id, field)``: its concurrent candidates' values when it is
        a review field in conflict (waiting to be resolved), else None. One record read per
        review field, whatever the number of conflicts; none when the schema has no review
        field."""
        review = self.schema.review_fields
        out = [None] * len(fields)
        wanted = [(i, item) for i, item in enumerate(fields)
                  if (item[1].partition(".")[0], item[2]) in review] if review else ()
        if not wanted:
            return out
        store, core = self.store, self.core
        with store.read() as txn:
            get = store.state_getter(txn)
            for i, (env, entity_id, field) in wanted:
                type_name, _, name = entity_id.partition(".")
                ids = (store.name_id(txn, "e", env, create=False),
                       store.name_id(txn, "t", type_name, create=False),
                       store.name_id(txn, "f", f"{type_name}.{field}", create=False))
                rec = None if None in ids else get(state_key(ids[0], ids[1], name, ids[2]))
                if rec is None:
                    continue
                marker = _marker_hlc(get(state_key(ids[0], ids[1], name, 0)))
                candidates = core.review_candidates(rec, marker)
                if len(candidates) > 1:
                    out[i] = [unpackb(value) if present else None
                              for _, _, _, present, value in candidates]
        return out

    def resolved(self, entity_ids, env: str | None = None) -> dict[str, dict]:
        """``state`` for the given entities only (those that do not exist are left out)."""
        env = self._env(env)
        with self.store.read() as txn:
            return self._resolved(txn, env, entity_ids)

    def _resolved(self, txn, env, entity_ids, *, sources: bool = False) -> dict[str, dict]:
        out = {}
        read = self.store.entity_reader(txn)
        for entity_id in entity_ids:
            view = self._view(txn, env, entity_id, read=read)
            if not view and not self._exists(txn, env, entity_id, read):
                continue  # (an entity inserted with no fields exists by its place)
            fields = {}
            for spec in self.schema.types[entity_id.partition(".")[0]].fields.values():
                item = view.get(spec.name)
                if item is not None:
                    fields[spec.name] = (item["value"], item["env"]) if sources \
                        else item["value"]
                elif spec.default is not None:
                    fields[spec.name] = (spec.default, None) if sources else spec.default
            out[entity_id] = fields
        return out

    def own_values(self, entity_ids, envs=None) -> dict[str, dict[str, tuple[bool, dict]]]:
        """What each environment holds itself, before inheritance: ``{env: {entity id: (cut,
        {field: value})}}`` with the fields whose own value is visible there (no inherited
        values, no defaults) and ``cut`` true when a delete marker in that environment hides
        everything it would inherit. Entities an environment holds nothing of are left out.
        ``envs`` defaults to every environment. An import planning several environments at
        once resolves them from this, as ``_view`` does level by level."""
        core = self.core
        envs = list(envs) if envs is not None else list(self.schema.environments)
        for env in envs:
            self._env(env)
        out = {env: {} for env in envs}
        with self.store.read() as txn:
            read = self.store.entity_reader(txn)
            for entity_id in entity_ids:
                type_name, _, name = entity_id.partition(".")
                if type_name not in self.schema.types:
                    continue
                type_id, fields = self._type_ids[type_name], self._field_names[type_name]
                for env in envs:
                    records = read(entity_prefix(self._env_ids[env], type_id, name))
                    d = _marker_hlc(records.pop(0, None))
                    own = {}
                    for fid, rec in records.items():
                        fname = fields.get(fid)
                        if fname is None:
                            continue
                        present, value, _ = core.resolve_record(rec, d)
                        if present:
                            own[fname] = self._decode_value(type_name, fname, value)
                    if own or d:
                        out[env][entity_id] = (bool(d), own)
        return out

    def records(self) -> dict[tuple, bytes]:
        """Every state record by ``(env, entity id, field)`` (field '' for the delete
        marker): what replicas compare byte for byte."""
        out = {}
        with self.store.read() as txn:
            envs, types = self.store.names(txn, "e"), self.store.names(txn, "t")
            fields = {fid: name.partition(".")[2]
                      for fid, name in self.store.names(txn, "f").items()}
            for key, rec in self.store.state_items(txn):
                env_id, type_id, name, fid = split_state_key(key)
                fname = "(place)" if fid == PLACE_FIELD else fields.get(fid, "")
                out[(envs[env_id], f"{types[type_id]}.{name}", fname)] = rec
        return out

    def state_hash(self) -> str:
        """A digest of the resolved state, ``sha256:<hex>``: in every environment, every
        visible field's value and the op that won it (its HLC, actor, op id and override
        flag), then where each entity is in the entity tree, then the review conflicts with their candidates and the violations. Two
        stores holding the same ops have the same digest whatever order they applied them
        in, and compaction does not change it (it drops only what no longer shows); it is
        what ``conflux store migrate`` compares, and what nodes of a cluster can compare."""
        import hashlib
        import json

        digest = hashlib.sha256()

        def feed(item) -> None:
            digest.update(json.dumps(item, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":"), default=repr).encode())
            digest.update(b"\n")

        with self.store.read() as txn:
            read = self.store.entity_reader(txn)
            for env in self.schema.environments:
                for entity_id in self._entity_ids(txn, env):
                    view = self._view(txn, env, entity_id, read=read)
                    for name in sorted(view):
                        item = view[name]
                        feed(["field", env, entity_id, name, item["env"], item["value"],
                              list(item["winner"])])
        for env in self.schema.environments:
            for entity_id, item in sorted(self.tree(env)["entities"].items()):
                feed(["tree", env, entity_id, item["parent"], item["position"]])
        for conflict in self.conflicts():
            feed(["conflict", conflict])
        for violation in self.violations():
            feed(["violation", violation])
        return "sha256:" + digest.hexdigest()

    def _env(self, env):
        env = env or self.schema.base_env
        self.schema.env_chain(env)  # NotFound for an unknown environment
        return env

    def log(self, *, limit: int | None = None, entity: str | None = None,
            actor: str | None = None, since=None, start: int | None = None,
            reverse: bool = True, reader: Actor | None = None):
        """Logged ops (``Op`` with its ``seq``), newest first by default; ``actor`` keeps
        those of one actor (``id`` or ``class:id``).

        ``since`` is a sequence number, an HLC (``hlc:...``) or an ISO date/time; ``start``
        begins at a sequence number (oldest first when ``reverse`` is false). The log names
        every entity of every environment: a ``reader`` needs ``read`` on all of them.
        """
        self.policy.require_read(reader, "*", None, "*")
        core = self.core
        floor_seq, floor_hlc = _since(core, since)
        out = []
        with self.store.read() as txn:
            last = self.store.log_tail(txn)[0]
            begin = (start if start is not None else last) if reverse else (start or 1)
            needle = None if entity is None else entity.encode()
            for seq, data in self._log_scan(txn, begin, reverse, entity):
                if seq < floor_seq:
                    if reverse:
                        break
                    continue
                if needle is not None and needle not in data:
                    continue  # PERF: an entry names its entities in UTF-8 (FORMAT.md)
                op = core.decode_entry(data)
                if op.hlc < floor_hlc:  # HLCs are not in log order: no early stop
                    continue
                if entity is not None and not any(p.entity == entity for p in op_parts(op)):
                    continue
                if actor is not None and op.actor != actor and f"{op.actor_class}:{op.actor}" \
                        != actor:
                    continue
                op.seq = seq
                out.append(op)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def _log_scan(self, txn, begin: int, reverse: bool, entity: str | None):
        """``(seq, entry)`` from ``begin`` on (or down); for an ``entity``, only from the
        ranges of the log the entity index does not rule out."""
        store = self.store
        if entity is None:
            yield from store.log_entries(txn, begin, reverse=reverse)
            return
        ranges = store.entity_ranges(txn, entity)
        for lo, hi in reversed(ranges) if reverse else ranges:
            if reverse and lo <= begin:
                for seq, data in store.log_entries(txn, min(hi, begin), reverse=True):
                    if seq < lo:
                        break
                    yield seq, data
            elif not reverse and hi >= begin:
                for seq, data in store.log_entries(txn, max(lo, begin)):
                    if seq > hi:
                        break
                    yield seq, data

    def next_hlc(self) -> int:
        """An HLC for an operation a client stamps itself (a signed one): after the store's
        clock and not before the wall clock."""
        with self.store.read() as txn:
            clock = self.store.log_tail(txn)[1]
        return max(self.core.hlc_pack(now_ms(), 0), clock + 1)

    def review_base(self, entity_id: str, field: str, env: str) -> list[str]:
        """The op ids a write to a review field in ``env`` supersedes if it names none: every
        concurrent candidate, or the value's own op (the store binds the same)."""
        for conflict in self.conflicts(env):
            if conflict["entity_id"] == entity_id and conflict["field"] == field and \
                    conflict["env"] == env:
                return sorted(c["op_id"] for c in conflict["candidates"])
        try:
            item = self.get(entity_id, env, field)[field]
        except NotFound:
            return []
        return [item["op_id"]] if item.get("env") == env and item.get("op_id") else []

    def last_seq(self) -> int:
        """The sequence number of the newest logged operation (0 for an empty log)."""
        with self.store.read() as txn:
            return self.store.log_tail(txn)[0]

    def changes(self, after: int, *, entity: str | None = None, env: str | None = None,
                limit: int = 500) -> tuple[list, int]:
        """One poll for watchers (``conflux watch``): the ops logged after sequence
        ``after``, at most ``limit`` read, that touch ``entity`` and ``env`` (a promotion
        touches those of its children); and the sequence number read up to."""
        ops = self.log(start=after + 1, reverse=False, limit=limit)
        keep = _touching(entity, env)
        return [op for op in ops if keep(op)], ops[-1].seq if ops else after

    def feed_filter(self, *, entity: str | None = None, env: str | None = None,
                    reader: Actor | None = None):
        """A watcher's choice of ops (``GET /v1/watch``): checks the names and the reader's
        access now, and returns ``keep(op)``: whether a logged op touches ``entity`` and
        ``env`` (as :meth:`changes`) and the reader may read its every part. The watchers
        of a daemon worker share their reads of the log and keep each what it may see."""
        if env is not None:
            self.schema.env_chain(env)
        if entity is not None:
            self.schema.split_entity_id(entity)
        self.policy.require_read(reader, entity or "*", None, env or "*")
        touching = _touching(entity, env)
        if reader is None:
            return touching
        may_read = self.policy.may_read

        move = self.core.MOVE_ENTITY

        def keep(op) -> bool:  # PERF: run for every op and watcher: a move's check inline
            return touching(op) and all(may_read(reader, p.entity or "*", p.field or None,
                                                 p.env) and
                                        (p.type != move or self._move_readable(p, reader))
                                        for p in op_parts(op))
        return keep

    def _move_readable(self, op, reader) -> bool:
        """A move names its new and previous parents: shown to who may read them too."""
        parents = [op.value[0]]
        if op.prev is not None:
            parents.append(unpackb(op.prev)[0])
        return all(p is None or self.policy.may_read(reader, p, None, op.env) for p in parents)

    def op_dict(self, op) -> dict:
        """A logged operation as the CLI, the API, watch streams and webhooks show it."""
        core = self.core
        out = {"seq": op.seq, "op_id": op.op_id, "type": core.OP_NAMES[op.type],
               "env": op.env, "entity_id": op.entity or None, "field": op.field or None,
               "actor": op.actor, "actor_class": op.actor_class, "intent": op.intent,
               "hlc": core.hlc_format(op.hlc), "override": op.override}
        if op.type == core.MOVE_ENTITY:  # the keys a move is sent with
            out["parent"], out["position"] = op.value
            if op.prev is not None:
                out["previous"] = dict(zip(("parent", "position"), unpackb(op.prev)))
        elif op.value is not None:
            out["value"] = op.value
        if op.elements is not None:
            out["elements"] = op.elements
        if op.prev is not None and "previous" not in out:
            out["previous"] = unpackb(op.prev)
        if op.base:
            out["base"] = list(op.base)
        if op.signature is not None:
            out["signature"], out["key_id"] = op.signature, op.key_id
        if op.children:
            for child in op.children:
                child.seq = op.seq
            out["operations"] = [self.op_dict(c) for c in op.children]
        return out

    def entries(self, start: int = 1):
        """Raw log entries from ``start`` on, oldest first: ``(seq, bytes)`` (replication)."""
        with self.store.read() as txn:
            return list(self.store.log_entries(txn, start))

    def describe(self, op, *, new_from_unset: bool = False) -> str:
        """One line for a logged operation, in words a reviewer reads:
        ``route.api.weight: 50 → 90``, ``upstream.b.targets: +10.0.1.5``. A first value reads
        ``route.api.weight = 50`` (or ``unset → 50`` with ``new_from_unset``)."""
        kind = self.core.OP_NAMES[op.type]
        spec = None
        if op.field:
            spec = self.schema.field(op.entity.partition(".")[0], op.field)
        target = f"{op.entity}.{op.field}" if op.field else op.entity
        if kind in ("set_field", "resolve"):
            text = (f"{target}: unset → {spec.format(op.value)}" if new_from_unset
                    else f"{target} = {spec.format(op.value)}")
            if op.prev is not None:
                old = unpackb(op.prev)
                text = f"{target}: {spec.format(old)} → {spec.format(op.value)}"
                if spec.merge in ("max", "min") and not op.override and kind == "set_field" \
                        and (old > op.value if spec.merge == "max" else old < op.value):
                    text = (f"{target}: {spec.format(old)} kept ({spec.format(op.value)} "
                            f"written, {spec.merge} wins)")
            if kind == "resolve":
                text += " (resolved)"
        elif kind == "unset_field":
            text = (f"{target}: {spec.format(unpackb(op.prev))} → unset"
                    if new_from_unset and op.prev is not None else f"{target} unset")
        elif kind in ("add_elements", "remove_elements"):
            sign = "+" if kind == "add_elements" else "-"
            text = f"{target}: " + " ".join(sign + spec.format_element(e) for e in op.elements)
        elif kind == "delete_entity":
            text = f"{op.entity} deleted"
        elif kind == "move_entity":
            parent, position = op.value
            text = f"{op.entity} moved under {parent}" if parent else f"{op.entity} placed as a root"
            if position is not None:
                text += f" at {position!r}"
        else:  # promote
            text = (f"promote {op.value['from']} → {op.env} ({len(op.children or [])} field "
                    "operations)")
        if op.override and kind != "promote":
            text += " [override]"
        return text

    def op(self, op_id: str):
        """The logged operation with this id (a promotion's part resolves to its child)."""
        with self.store.read() as txn:
            return self._find_op(txn, op_id)

    def _find_op(self, txn, op_id):
        parent, slash, part = op_id.rpartition("/")
        for candidate in ([op_id, parent] if slash else [op_id]):
            seq = self._seq_of(txn, candidate)
            if seq is None:
                continue
            op = self.core.decode_entry(self.store.log_entry(txn, seq))
            op.seq = seq
            if candidate != op_id and op.children and part.isascii() and part.isdigit() and \
                    int(part) < len(op.children):
                child = op.children[int(part)]
                child.seq = seq
                return child
            return op
        return None

    def blame(self, entity_id: str, env: str | None = None, *,
              reader: Actor | None = None) -> dict:
        """Per field: value, the environment it comes from, and the op that set it (actor,
        class, intent, hlc, op id, sequence). A ``reader`` needs ``read`` on the entity."""
        env = self._env(env)
        self.policy.require_read(reader, entity_id, None, env)
        self.schema.split_entity_id(entity_id)
        with self.store.read() as txn:
            view = self._view(txn, env, entity_id)
            if not view and not self._exists(txn, env, entity_id,
                                             self.store.entity_reader(txn)):
                raise NotFound(f"entity {entity_id} does not exist in {env}", entity=entity_id)
            out = {}
            for fname, item in view.items():
                _, _, op_id, _ = item["winner"]
                op = self._find_op(txn, op_id)
                out[fname] = {"value": item["value"], "env": item["env"], "op_id": op_id,
                              "actor": op.actor if op else None,
                              "actor_class": op.actor_class if op else None,
                              "intent": op.intent if op else None,
                              "hlc": op.hlc if op else item["winner"][0],
                              "seq": op.seq if op else None}
        order = list(self.schema.types[entity_id.partition(".")[0]].fields)
        return {f: out[f] for f in order if f in out}

    def conflicts(self, env: str | None = None, *, reader: Actor | None = None) -> list[dict]:
        """Review fields with concurrent candidates, each with its candidates (for a
        ``reader``, those of the fields it may read)."""
        core = self.core
        may_read = self.policy.may_read
        out = []
        with self.store.read() as txn:
            envs, types = self.store.names(txn, "e"), self.store.names(txn, "t")
            fields = self.store.names(txn, "f")
            get = self.store.state_getter(txn)
            for key in self.store.conflict_keys(txn):
                env_id, type_id, name, fid = split_state_key(key)
                if env is not None and envs[env_id] != env:
                    continue
                rec = get(key)
                d = _marker_hlc(get(key[:-2] + b"\x00\x00"))
                type_name, fname = types[type_id], fields[fid].partition(".")[2]
                if not may_read(reader, f"{type_name}.{name}", fname, envs[env_id]):
                    continue
                cands = []
                for hlc, actor, op_id, present, value in core.review_candidates(rec, d):
                    op = self._find_op(txn, op_id)
                    cands.append({"op_id": op_id, "actor": actor,
                                  "actor_class": op.actor_class if op else None,
                                  "intent": op.intent if op else None, "hlc": hlc,
                                  "value": unpackb(value) if present else None})
                out.append({"env": envs[env_id], "entity_id": f"{type_name}.{name}",
                            "field": fname, "candidates": cands,
                            "effective": cands[-1]["value"] if cands else None})
        return out

    def violations(self, env: str | None = None, *, entity: str | None = None,
                   reader: Actor | None = None) -> list[dict]:
        """What breaks the schema: ``{env, entity_id, field, message}`` per field (of ``env``
        and ``entity`` when given; for a ``reader``, the fields it may read)."""
        may_read = self.policy.may_read
        out = []
        with self.store.read() as txn:
            envs, types = self.store.names(txn, "e"), self.store.names(txn, "t")
            fields = self.store.names(txn, "f")
            for key, message in self.store.violation_items(txn):
                env_id, type_id, name, fid = split_state_key(key)
                if env is not None and envs[env_id] != env:
                    continue
                entity_id = f"{types[type_id]}.{name}"
                fname = fields[fid].partition(".")[2]
                if (entity is None or entity_id == entity) and \
                        may_read(reader, entity_id, fname, envs[env_id]):
                    out.append({"env": envs[env_id], "entity_id": entity_id, "field": fname,
                                "message": message})
        return out

    def status(self, *, reader: Actor | None = None) -> dict:
        """The engine's figures. They count every entity of every environment (op counts,
        violations): a ``reader`` needs ``read`` on everything, everywhere."""
        self.policy.require_read(reader, "*", None, "*")
        core = self.core
        with self.store.read() as txn:
            seq, clock = self.store.log_tail(txn)
            horizon = self.store.meta_int(txn, "horizon")
            envs = {}
            read = self.store.entity_reader(txn)
            for env in self.schema.environments:
                ids = [e for e in self._entity_ids(txn, env)]
                live = [e for e in ids if self._exists(txn, env, e, read)]
                envs[env] = {"entities": len(live),
                             "inherits": self.schema.parents.get(env)}
            figures = self.store.figures(txn)
        return {
            "project": self.schema.name, "schema_version": self.schema.version,
            "directory": self.root, "core": core.IMPLEMENTATION, "node": self.node,
            "operations": seq, "clock": core.hlc_format(clock) if clock else None,
            "compaction_horizon": core.hlc_format(horizon) if horizon else None,
            "environments": envs, "records": figures["records"],
            "conflicts": figures["conflicts"], "violations": figures["violations"],
            "store_map_bytes": figures["map_size"],
        }


def _touching(entity: str | None, env: str | None):
    """Whether an op touches ``entity`` and ``env`` (None: any); a promotion touches those of
    its children."""
    def touching(op) -> bool:
        return ((entity is None or any(p.entity == entity for p in op_parts(op)))
                and (env is None or any(p.env == env for p in op_parts(op))))
    return touching
