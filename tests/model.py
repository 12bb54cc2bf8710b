"""A deliberately naive model of Conflux's merge semantics, independent of the core.

It computes the resolved state straight from the *set* of (bound) operations, with no records,
no tombstones and no incremental merging: for every field, look at every operation that ever
touched it. The engine, which merges incrementally into packed records, must agree with it.
"""

from __future__ import annotations

from collections import defaultdict

import msgpack

SET_FIELD, UNSET_FIELD, ADD, REMOVE, DELETE, RESOLVE, PROMOTE = range(1, 8)


def leaves(ops):
    """Promotions expand into their field operations."""
    for op in ops:
        if op.type == PROMOTE:
            yield from op.children
        else:
            yield op


def resolve_state(schema, ops, env):
    """``{entity id: {field: value}}`` of ``env`` (defaults filled in), from a set of ops."""
    ops = list({op.op_id: op for op in leaves(ops)}.values())
    markers = defaultdict(int)
    by_field = defaultdict(list)
    for op in ops:
        if op.type == DELETE:
            markers[(op.env, op.entity)] = max(markers[(op.env, op.entity)], op.hlc)
        else:
            by_field[(op.env, op.entity, op.field)].append(op)
    entities = {entity for (_, entity, _) in by_field} | {e for (_, e) in markers}
    state = {}
    for entity in sorted(entities):
        type_name = entity.partition(".")[0]
        view = {}
        for level in schema.env_chain(env):
            d = markers[(level, entity)]
            for fname, spec in schema.types[type_name].fields.items():
                if fname in view:
                    continue
                present, value = _field(spec.merge, by_field[(level, entity, fname)], d)
                if present:
                    view[fname] = value
            if d:
                break
        if not view:
            continue
        out = {}
        for fname, spec in schema.types[type_name].fields.items():
            if fname in view:
                out[fname] = view[fname]
            elif spec.default is not None:
                out[fname] = spec.default
        state[entity] = out
    return state


def _order(op):
    return (op.epoch, op.hlc, op.actor.encode(), op.op_id.encode())


def _field(merge, ops, d):
    """A field's value from every op that touched it, ``d`` the hlc of the latest delete of
    the entity: whatever was stamped at or before ``d`` is hidden."""
    if merge in ("lww", "max", "min"):
        writes = [op for op in ops if op.type in (SET_FIELD, UNSET_FIELD, RESOLVE)]
        if not writes:
            return False, None

        def key(op):
            present = op.type != UNSET_FIELD
            if merge == "lww":
                return _order(op)
            num = op.value if present else 0
            return (op.epoch, int(present), num if merge == "max" else -num, op.hlc,
                    op.actor.encode(), op.op_id.encode())
        win = max(writes, key=key)
        # max/min: an unset hides the extreme stamped before it, which is not forgotten
        cutoff = max([op.hlc for op in writes if op.type == UNSET_FIELD and merge != "lww"],
                     default=0)
        if win.type == UNSET_FIELD or win.hlc <= max(d, cutoff):
            return False, None
        return True, win.value
    if merge == "review":
        writes = [op for op in ops if op.type in (SET_FIELD, UNSET_FIELD, RESOLVE)]
        superseded = {b for op in writes for b in op.base}
        live = [op for op in writes if op.op_id not in superseded and op.hlc > d]
        if not live:
            return False, None
        win = max(live, key=_order)
        return (False, None) if win.type == UNSET_FIELD else (True, win.value)
    if merge == "set":
        # An add's tag is removed when some op observed it on that element (adds observe too:
        # they supersede what they saw), or observed a later tag of the same store there.
        named, latest = set(), {}
        for op in ops:
            if op.type in (ADD, REMOVE, UNSET_FIELD) and op.observed:
                for elem, tags in zip(op.elements, op.observed):
                    for t in tags:
                        named.add((_b(elem), t))
                        node, seq = _store_seq(t)
                        if node is not None:
                            key = (_b(elem), node)
                            latest[key] = max(latest.get(key, 0), seq)
        present = {}
        for op in ops:
            if op.type == ADD and op.hlc > d:
                node, seq = _store_seq(op.op_id)
                for elem in op.elements:
                    if (_b(elem), op.op_id) in named:
                        continue
                    if node is not None and seq <= latest.get((_b(elem), node), 0):
                        continue
                    present[_b(elem)] = elem
        if not present:
            return False, None
        return True, _sorted(present.values())
    if merge == "grow":
        present = {}
        for op in ops:
            if op.type == ADD and op.hlc > d:
                for elem in op.elements:
                    present[_b(elem)] = elem
        if not present:
            return False, None
        return True, _sorted(present.values())
    raise ValueError(merge)


def _store_seq(op_id):
    """(node, seq) of an op id a store generated (``<8 hex>-<hex seq>``), else (None, None)."""
    node, dash, seq = op_id.partition("-")
    hexdigits = set("0123456789abcdef")
    if (dash and len(node) == 8 and set(node) <= hexdigits and 1 <= len(seq) <= 16
            and set(seq) <= hexdigits and seq[0] != "0"):
        return node, int(seq, 16)
    return None, None


def _b(value):
    return msgpack.packb(value, use_bin_type=True)


def _sorted(values):
    return sorted(values, key=lambda v: (type(v).__name__, v))


class MoveTree:
    """The move operation of Kleppmann et al., "A highly-available move operation for
    replicated trees" (2021), as the paper gives it: a replica applies each move as it
    arrives, keeping a log of the moves it applied in timestamp order, each with the parent
    the entity had before it; a move older than the newest logged one undoes the newer ones
    (newest first), is done, and they are redone. ``do``: a move whose parent is the entity
    or one of its descendants leaves the tree as it is. Nothing here is shared with the core,
    which replays every move of its records in timestamp order instead."""

    def __init__(self):
        self.parent = {}   # entity -> (parent, position): where it is now
        self.log = []      # [(timestamp, move, where the entity was before)], oldest first

    def apply(self, timestamp, child, parent, position):
        if any(entry[0] == timestamp for entry in self.log):
            return  # a duplicate
        undone = []
        while self.log and self.log[-1][0] > timestamp:
            entry = self.log.pop()
            self._undo(entry)
            undone.append(entry)
        self.log.append(self._do(timestamp, (child, parent, position)))
        for old_ts, move, _ in reversed(undone):
            self.log.append(self._do(old_ts, move))

    def _ancestor(self, a, b):
        """Whether ``a`` is ``b``'s ancestor."""
        up = self.parent.get(b, (None,))[0]
        while up is not None:
            if up == a:
                return True
            up = self.parent.get(up, (None,))[0]
        return False

    def _do(self, timestamp, move):
        child, parent, position = move
        before = self.parent.get(child)
        if parent is not None and (parent == child or self._ancestor(child, parent)):
            return (timestamp, move, before)  # skipped: the tree stays as it is
        self.parent[child] = (parent, position)
        return (timestamp, move, before)

    def _undo(self, entry):
        _, (child, _, _), before = entry
        if before is None:
            self.parent.pop(child, None)
        else:
            self.parent[child] = before
