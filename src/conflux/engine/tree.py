"""The entity tree: where entities are (a parent and a position), checked when moves commit
and read through the environments (docs/concepts.md, "The entity tree").

Where an entity is, is decided by every move of the tree together, in hlc order, a move that
would make a cycle skipped (the kernel's ``tree_replay``, after Kleppmann et al. 2021). The
moves are kept in the base environment, so every environment shows one tree; what an
environment changes is which entities exist in it. An entity whose parent does not exist
(removed, in this environment or everywhere) is read under its nearest ancestor that does,
or as a root: removing a parent never removes its children, and they come back under it if
it is written again.
"""

from __future__ import annotations

from conflux.actors import Actor
from conflux.codec import packb, unpackb
from conflux.errors import NotFound, ValidationError

#: Beyond this many ops logged since the kept tree, it is replayed rather than brought up to
#: date from the log.
_CATCH_UP = 50_000


def position_order(position) -> tuple:
    """Siblings are ordered by position: integers first (by value), then text (by its bytes,
    as fractional indexes sort), then those with none; then by entity id."""
    if position is None:
        return (2, 0, "")
    if isinstance(position, int):
        return (0, position, "")
    return (1, 0, position)


class Tree:
    """The entity tree (a part of ``Engine``)."""

    def _placed(self, txn, *, cached: bool = True) -> tuple[dict, set]:
        """``tree_replay`` of every place record (``placed``, ``skipped``). Kept between
        reads until a commit with a move changes the store's ``tree`` mark (the sequence
        number of the last move logged); a commit's own check reads its transaction afresh
        (``cached=False``).

        PERF: replaying every move costs O(moves x depth). When every move logged since the
        kept tree is newer than all the moves it was made of (the usual case: moves stamped
        by this store's clock), the tree is the kept one with those moves applied after it,
        in the same order and by the same rule as ``tree_replay``; else it is replayed."""
        mark = self.store.meta_int(txn, "tree")
        held = self._tree_cache
        if cached and held is not None and held[0] == mark:
            return held[1]
        result = None
        if cached and held is not None and 0 < mark - held[0] <= _CATCH_UP:
            moves = []
            for seq, entry in self.store.log_entries(txn, held[0] + 1):
                if seq > mark:
                    break
                op = self.core.decode_entry(entry)
                if op.type == self.core.MOVE_ENTITY:
                    moves.append(op)
            result = self._after(held[1], held[2], moves)
        if result is None:
            result, top = self._replay(txn)
        else:
            result, top = result
        if cached:
            self._tree_cache = (mark, result, top)
        return result

    def _replay(self, txn) -> tuple[tuple[dict, set], int]:
        """Every move replayed (``tree_replay``), and the greatest hlc among them."""
        types = self.store.names(txn, "t")
        base = self._env_ids[self.schema.base_env]
        places = [(f"{types[type_id]}.{name}", rec)
                  for type_id, name, rec in self.store.place_records(txn, base)
                  if types.get(type_id) in self.schema.types]
        top = max((self.core.resolve_record(rec, 0)[2][0] for _, rec in places), default=0)
        return self.core.tree_replay(places), top

    def _after(self, result, top: int, moves) -> tuple[tuple[dict, set], int] | None:
        """The tree ``result`` (of moves whose greatest hlc is ``top``) with ``moves``
        applied after it, or None when one of them is not newer than ``top`` (then only a
        replay puts it in its place)."""
        moves = [op for op in moves if op.entity.partition(".")[0] in self.schema.types]
        if any(op.hlc <= top for op in moves):
            return None
        placed, skipped = dict(result[0]), set(result[1])
        for op in sorted(moves, key=lambda o: (o.hlc, o.actor.encode(), o.op_id.encode())):
            parent, position = op.value
            up = parent
            while up is not None and up != op.entity:
                up = placed[up][0] if up in placed else None
            if up is not None:  # under itself: skipped, as tree_replay skips it
                skipped.add(op.op_id)
                continue
            placed[op.entity] = (parent, position, op.hlc, op.op_id)
        return (placed, skipped), max([top] + [op.hlc for op in moves])

    _tree_cache = None

    def _require_moves(self, raw_ops, actor: Actor) -> None:
        """A move needs ``write`` on the parent its entity leaves (the parent's children
        change), as it does on the parent it joins (``Policy.require_ops``); checked with
        the access rules, before the batch is committed."""
        if not self.policy.rules.enforced:
            return
        moves = [op for op in raw_ops if isinstance(op, dict) and
                 op.get("type") == "move_entity" and isinstance(op.get("entity_id"), str)]
        if not moves:
            return
        with self.store.read() as txn:
            placed, _ = self._placed(txn)
        base = self.schema.base_env
        for op in moves:
            held = placed.get(op["entity_id"])
            if held is not None and held[0] is not None and held[0] != op.get("parent"):
                self.policy.require(actor, "write", held[0], None, base)

    def _before_moves(self, txn, moves) -> tuple[dict, tuple]:
        """Before a batch's moves merge: the place in force for each one's entity, which the
        move logs as what it replaced (``prev``), rather than the entity's latest move; and
        the tree they join, as kept (``_placed``), for ``_check_moves``."""
        placed, _ = self._placed(txn)
        return ({id(op): None if op.entity not in placed else list(placed[op.entity][:2])
                 for op in moves}, self._tree_cache)

    def _check_moves(self, txn, moves, before: tuple[dict, tuple]) -> dict:
        """Refuse a batch whose moves the store cannot take: a parent that does not exist in
        the base environment, or a move the tree would skip at its hlc (it makes a cycle).
        Returns ``placed``, for the answers.

        PERF: moves newer than every move of the tree before them are applied after it
        (``_after``: O(depth) each); others make the whole tree be replayed, O(moves x
        depth)."""
        places, (_, result, top) = before
        found = self._after(result, top, moves)
        placed, skipped = found[0] if found is not None else self._placed(txn, cached=False)
        read = self.store.entity_reader(txn)
        base = self.schema.base_env
        for op in moves:
            parent = op.value[0]
            if op.op_id in skipped:
                raise ValidationError(
                    f"{op.entity} cannot go under {parent}: {parent} is {op.entity} itself or "
                    f"below it, so the move would make a cycle; nothing was written",
                    field="parent", entity=op.entity)
            if parent is not None and not self._exists(txn, base, parent, read):
                raise ValidationError(f"{op.entity} cannot go under {parent}: {parent} does "
                                      f"not exist in {base}; nothing was written",
                                      field="parent", entity=op.entity)
            held = places[id(op)]
            op.prev = None if held is None else packb(held, use_bin_type=True)
        return placed

    def _tree_view(self, txn, env, read, reader=None) -> tuple:
        """``(placed, up, exists)``: the replayed tree; ``up(entity)``, the nearest ancestor
        of an entity that exists in ``env`` (None: a root); ``exists(entity)``, remembered
        for the read. For a ``reader``, an entity it may not read does not exist: it is
        never named, and what is below it is shown under its nearest readable ancestor."""
        placed, _ = self._placed(txn)
        alive: dict[str, bool] = {}
        may_read = self.policy.may_read

        def exists(entity_id):
            found = alive.get(entity_id)
            if found is None:
                found = alive[entity_id] = (may_read(reader, entity_id, None, env) and
                                            self._exists(txn, env, entity_id, read))
            return found

        def up(entity_id):
            parent = placed[entity_id][0] if entity_id in placed else None
            while parent is not None and not exists(parent):
                parent = placed[parent][0] if parent in placed else None
            return parent
        return placed, up, exists

    def tree(self, env: str | None = None, *, reader: Actor | None = None) -> dict:
        """The entity tree as ``env`` shows it: ``{"entities": {id: {"parent", "position",
        "children"}}, "roots": [...]}`` for every existing entity that was placed (moved or
        inserted) or has children; children and roots in sibling order. A ``reader`` sees
        the entities it may read (``read``), and their places."""
        env = self._env(env)
        with self.store.read() as txn:
            read = self.store.entity_reader(txn)
            placed, up, exists = self._tree_view(txn, env, read, reader)
            entities = {}
            for entity_id in placed:
                if exists(entity_id):
                    entities[entity_id] = up(entity_id)
        out, roots = {}, []
        for entity_id in sorted(entities):
            out[entity_id] = {"parent": entities[entity_id],
                              "position": placed[entity_id][1], "children": []}
        for entity_id, parent in entities.items():
            if parent is None:
                roots.append(entity_id)
            else:  # (up() names only parents the reader may read)
                out.setdefault(parent, {"parent": None, "position": None, "children": []})
                out[parent]["children"].append(entity_id)
                if parent not in entities:
                    roots.append(parent)  # a parent never placed is a root
        order = lambda e: (position_order(out[e]["position"]), e)  # noqa: E731
        for item in out.values():
            item["children"].sort(key=order)
        return {"env": env, "entities": out, "roots": sorted(set(roots), key=order)}

    def place(self, entity_id: str, env: str | None = None, *,
              reader: Actor | None = None) -> dict:
        """Where one entity is in ``env``: ``{"parent", "position", "children"}`` (children
        in sibling order, those a ``reader`` may read); ``NotFound`` if it does not exist
        there."""
        env = self._env(env)
        self.policy.require_read(reader, entity_id, None, env)
        self.schema.split_entity_id(entity_id)
        with self.store.read() as txn:
            read = self.store.entity_reader(txn)
            if not self._exists(txn, env, entity_id, read):
                raise NotFound(f"entity {entity_id} does not exist in {env}",
                               entity=entity_id)
            placed, up, exists = self._tree_view(txn, env, read, reader)
            below: dict[str, list] = {}
            for child, (parent, *_rest) in placed.items():
                below.setdefault(parent, []).append(child)
            children, stack = [], list(below.get(entity_id, ()))
            while stack:  # a child that does not exist here (or for the reader) hands its
                child = stack.pop()  # own children up
                if exists(child):
                    children.append(child)
                else:
                    stack.extend(below.get(child, ()))
            parent = up(entity_id)
        children.sort(key=lambda c: (position_order(placed[c][1]), c))
        return {"parent": parent,
                "position": placed[entity_id][1] if entity_id in placed else None,
                "children": children}

    def _describe_move(self, op) -> dict:
        """A move's before and after, for dry runs and the log."""
        before = None if op.prev is None else unpackb(op.prev)
        return {"before": None if before is None else {"parent": before[0],
                                                       "position": before[1]},
                "after": {"parent": op.value[0], "position": op.value[1]}}
