"""Writing: a batch of prepared operations merged and logged in one transaction, answered
per operation (``Ack``), with the entity index kept up to date."""

from __future__ import annotations

from conflux.actors import Actor
from conflux.codec import packb
from conflux.engine.acks import _small, Ack, Acks, OUTCOME_OPS
from conflux.engine.checks import _marker_hlc
from conflux.engine.settings import now_ms
from conflux.errors import OpIdConflict, StoreError, ValidationError
from conflux.store import LogChunk, state_key
from conflux.store.base import LoggedElsewhere

#: Runs of a commit whose op ids another node logged meanwhile, each time another's.
_ELSEWHERE_ATTEMPTS = 8


class Commits:
    """Committing batches (a part of ``Engine``)."""

    def apply(self, raw_ops: list[dict], actor: Actor, *, dry_run: bool = False) -> list[Ack]:
        """Validate and apply a batch of operations atomically (one synced commit).

        A bad operation refuses the whole batch, naming its index; nothing is written. An op
        whose op id is already in the log is acknowledged again without being applied twice.
        The access rules must grant ``actor`` every op of the batch (``PermissionDenied``).
        """
        return self._write(self._maker(raw_ops, actor), dry_run=dry_run)

    def admit(self, raw_ops: list[dict], actor: Actor) -> None:
        """What a daemon worker checks before it hands a batch to the commit service
        (``validated(..., admitted=True)`` there): the access rules, and the signatures.
        PERF: Ed25519 in the workers, in parallel, not in the one commit process."""
        self.policy.require_ops(actor, raw_ops)
        self._require_moves(raw_ops, actor)
        if self.signatures_to_check(raw_ops, actor):
            self.check_signatures(raw_ops, actor)

    def _maker(self, raw_ops, actor, *, admitted: bool = False):
        """A function building the batch's ops afresh (validating them) on each call;
        ``admitted``: a daemon worker checked access and signatures already (``admit``)."""
        if not isinstance(raw_ops, list):
            raise ValidationError("a batch must be a list of operations")
        if not admitted:
            self.policy.require_ops(actor, raw_ops)
            self._require_moves(raw_ops, actor)
        single = len(raw_ops) == 1

        def slow(raw, i):
            return self.prepare(raw, actor, "" if single else f"op {i}: ")

        def make():
            ops = self.core.prepare_ops(raw_ops, self._table, actor.id, actor.cls, slow)
            if not admitted:
                self._check_signatures(ops, actor)
            return ops
        return make

    def validated(self, raw_ops: list[dict], actor: Actor, *, admitted: bool = False):
        """Validate a batch now, for a commit later (``commit_validated``): returns the maker
        of its ops. Group commit validates each request's batch before queueing it, so a bad
        batch fails alone."""
        make = self._maker(raw_ops, actor, admitted=admitted)
        first = [make()]
        return lambda: first.pop() if first else make()

    def commit_validated(self, makers) -> list:
        """Commit several validated batches in one synced transaction, all or nothing;
        returns each batch's acknowledgements."""
        pending = [make() for make in makers]

        def body(txn):
            # run again after the map grew: build fresh ops (merging bound the first ones)
            batches = pending[:] if pending else [make() for make in makers]
            pending.clear()
            if len(batches) == 1:
                return [self._commit(txn, batches[0], False, _small(batches[0]))]
            # PERF: one pass over the whole group (one log tail, one merge, one log append)
            # instead of one per batch; a repeated op id is a duplicate either way.
            merged = [op for ops in batches for op in ops]
            small, lo = [], 0
            for ops in batches:
                if len(ops) <= OUTCOME_OPS:
                    small.append((lo, lo + len(ops)))
                lo += len(ops)
            return self._commit(txn, merged, False, small).split([len(ops) for ops in batches])
        return self._store_write(body)

    def _store_write(self, body, *, commit: bool = True):
        """``store.write``; when a shared op log holds some of the commit's op ids already
        (another node bound them first), their logged entries are applied and the commit run
        again, so that it acknowledges them as retries rather than binding them twice."""
        for _ in range(_ELSEWHERE_ATTEMPTS):
            try:
                return self.store.write(body, commit=commit)
            except LoggedElsewhere as taken:
                self.apply_entries(taken.entries, logged=True)
        raise StoreError("other nodes kept logging this commit's op ids first; nothing was "
                         "written: retry with the same op ids")

    def apply_entries(self, entries: list[bytes], *, logged: bool = False,
                      marks: dict[str, int] | None = None) -> list[Ack]:
        """Apply op-log entries exported by another store (their context already bound);
        ``logged``: they come from the shared op log of record (not published again);
        ``marks``: meta values to write in the same commit.

        This is how replicas converge: the same entries in any order, with duplicates, give
        the same state records.
        """
        def make_ops():
            ops = []
            for data in entries:
                op = self.core.decode_entry(data)
                self._rekey(op)
                ops.append(op)
            return ops
        def put_marks(txn, ops):  # where the entries were read up to, in their commit
            for key, value in marks.items():
                self.store.meta_put_int(txn, key, value)
        return self._write(make_ops, logged=entries if logged else None,
                           expand=put_marks if marks else None)

    def _rekey(self, op) -> None:
        """Fill the derived parts of an op read from a log (kind, packed values)."""
        core = self.core
        if op.type == core.PROMOTE:
            for child in op.children:
                self._rekey(child)
            return
        if op.type == core.DELETE_ENTITY:
            op.kind = core.ENTITY
            op.key = self._key(op.env, op.entity, None)
            return
        if op.type == core.MOVE_ENTITY:
            parent, position = op.value
            if parent is not None:
                self.schema.split_entity_id(parent)
            self._place(op, [parent, position])
            return
        type_name = op.entity.partition(".")[0]
        spec = self.schema.field(type_name, op.field)
        op.key = self._key(op.env, op.entity, op.field)
        op.kind = self._kinds[(type_name, op.field)]
        if op.value is not None:
            # a peer's entry is validated like a client's op: a value this schema would refuse
            # (a NaN in a max register, say) must not enter through replication
            op.value = spec.coerce(op.value)
            op.vbytes = packb(op.value, use_bin_type=True)
            if op.kind in (core.MAX, core.MIN):
                op.num_tag = core.NUM_FLOAT if spec.kind == "float" else core.NUM_INT
        if op.elements is not None:
            op.elements = [spec.coerce_element(e) for e in op.elements]
            op.ebytes = [packb(e, use_bin_type=True) for e in op.elements]

    def _write(self, make_ops, *, dry_run=False, expand=None, logged=False):
        """Commit the ops ``make_ops()`` builds, in one synced write transaction.

        They are built (and so validated) before the transaction opens. If the transaction
        has to run again (the map grew), fresh ops are built: merging binds context into them.
        """
        pending = [make_ops()]

        def body(txn):
            ops = pending.pop() if pending else make_ops()
            if expand is not None:
                expand(txn, ops)
            return self._commit(txn, ops, dry_run, _small(ops), logged)
        return self._store_write(body, commit=not dry_run)

    def _commit(self, txn, ops, dry_run, small=(), logged=False):
        """Log and merge ``ops`` in ``txn``; ``small``: the ``(start, end)`` index ranges of
        the requests (``OUTCOME_OPS`` ops or fewer) whose acks tell each op's outcome;
        ``logged``: the entries ``ops`` were read from, when they come from the shared op
        log of record: they are logged byte for byte as the node that bound them wrote them
        (the log is the same on every node), and this node's own ids among them (ops it
        bound and lost in a crash) are taken as they are."""
        core, store = self.core, self.store
        wall = now_ms()
        seq, clock = store.log_tail(txn)
        horizon = store.meta_int(txn, "horizon")
        offset = self.settings.max_clock_offset_ms
        own_prefix = self.node + "-"
        acks: list[Ack | None] = [None] * len(ops)
        fresh = []
        in_batch: dict[str, int] = {}
        opid_seq = None
        for i, op in enumerate(ops):
            if op.op_id:
                first = in_batch.get(op.op_id)
                if first is not None:
                    if not self._repeats(ops[first], op):
                        raise OpIdConflict(
                            f"{f'op {i}: ' if len(ops) > 1 else ''}op_id {op.op_id!r} is "
                            f"also op {first}'s, with other content: an op id names one "
                            "operation", field="op_id")
                    acks[i] = first
                    continue
                if op.op_id.startswith(own_prefix):
                    found = self._seq_of(txn, op.op_id)
                else:  # PERF: the index's lookup itself, not one more call per op around it
                    if opid_seq is None:
                        opid_seq = store.opid_getter(txn)
                    found = opid_seq(op.op_id)
                if found is not None:
                    acks[i] = self._ack_existing(txn, op, found, i if len(ops) > 1 else None)
                    continue
                if op.op_id.startswith(own_prefix) and not logged:
                    raise ValidationError(f"op_id {op.op_id!r}: ids starting with "
                                          f"{own_prefix!r} are reserved for this store",
                                          field="op_id")
                in_batch[op.op_id] = i
            fresh.append(op)
        clock = core.stamp_ops(fresh, clock, wall, offset, own_prefix, horizon, seq + 1)
        leaves = []
        for op in fresh:
            if op.type == core.PROMOTE:
                for n, child in enumerate(op.children):
                    child.op_id, child.hlc = f"{op.op_id}/{n}", op.hlc
                leaves.extend(op.children)
            else:
                leaves.append(op)
        moves = [op for op in leaves if op.type == core.MOVE_ENTITY]
        # a client's moves are checked; those read from another store's log come bound
        asked = [op for op in moves if not op.bound]
        before = self._before_moves(txn, asked) if asked else None  # (places, tree)
        merged = store.merge_batch(txn, leaves, core.apply_batch)
        placed = None
        if moves:
            if asked:
                placed = self._check_moves(txn, asked, before)
            # tree reads of every process see that the tree changed (Tree._placed)
            store.meta_put_int(txn, "tree", moves[-1].seq)
        changes = self._post_merge(txn, merged, dry_run)
        outcomes = {}
        get = store.state_getter(txn) if small else None
        for lo, hi in small:
            for i in range(lo, hi):
                if ops[i].type != core.PROMOTE:
                    ack = acks[i]  # a retry: the hlc is the logged op's
                    hlc = (ops[i].hlc if ack is None else ops[ack].hlc if isinstance(ack, int)
                           else ack.hlc)
                    if ops[i].type == core.MOVE_ENTITY and placed is None:
                        placed = self._placed(txn, cached=False)[0]
                    outcomes[i] = self._outcome(txn, ops[i], hlc, merged, get, placed)
        if fresh:
            if logged:
                # the fresh ops are those not acknowledged as retries, in order
                kept = [logged[i] for i, ack in enumerate(acks) if ack is None]
                store.log_append(txn, LogChunk.pack(kept, fresh[0].seq, clock,
                                                    store.CHUNK_LIMIT))
            else:
                store.log_append(txn, core.encode_chunks(fresh, clock, store.CHUNK_LIMIT),
                                 [op.op_id for op in fresh] if store.shares_log else None)
            if not dry_run:  # (a dry run's transaction is thrown away)
                self._index_entities(txn, fresh)
            # the ops that came with an op id of their own (the store's ids need no index)
            if in_batch:
                store.index_opids(txn, [(op_id, ops[i].seq) for op_id, i in in_batch.items()])
        return Acks(ops, acks, changes, outcomes=outcomes)

    def _index_entities(self, txn, fresh) -> None:
        """Bring the per-entity index (``Store.index_entities``) up to this commit when it has
        ``ENTITY_BATCH`` ops or more (its ops are at hand), or once ``ENTITY_RANGE`` logged
        ops wait for it (those of small commits are read back from the log): one range."""
        store = self.store
        last = fresh[-1].seq
        small = len(fresh) < store.ENTITY_BATCH
        if small and last - self._indexed < store.ENTITY_RANGE:
            # PERF: what this process last saw of the index, without reading it; it only
            # grows (another process may have moved it on since: it is read before writing)
            return
        first, covered = store.entity_index_tail(txn)
        if not first:  # a store made before the index: it starts with this commit
            covered = fresh[0].seq - 1
            store.entity_index_begin(txn, fresh[0].seq)
        self._indexed = covered
        if small and last - covered < store.ENTITY_RANGE:
            return
        ops = []
        if covered + 1 < fresh[0].seq:  # logged by earlier (small) commits
            for seq, entry in store.log_entries(txn, covered + 1):
                if seq >= fresh[0].seq:
                    break
                ops.append(self.core.decode_entry(entry))
        ops.extend(fresh)
        store.index_entities(txn, last, self.core.entity_blobs(ops, store.CHUNK_LIMIT))
        self._indexed = last

    #: The last sequence number this process knows the entity index to cover.
    _indexed = -(1 << 62)

    def _seq_of(self, txn, op_id: str) -> int | None:
        """The sequence number of a logged op id: this store's own ids carry it (see
        ``stamp_ops``), others are in the op-id index."""
        prefix = self.node + "-"
        if op_id.startswith(prefix):
            digits = op_id[len(prefix):]
            if digits and all(c in "0123456789abcdef" for c in digits) and digits[0] != "0":
                seq = int(digits, 16)
                entry = self.store.log_entry(txn, seq)
                if entry is not None and self.core.decode_entry(entry).op_id == op_id:
                    return seq
            if self.store.shares_log:  # one lost in a crash, applied from the shared log
                return self.store.opid_getter(txn)(op_id)
            return None
        return self.store.opid_getter(txn)(op_id)

    def _ack_existing(self, txn, op, seq: int, index: int | None) -> Ack:
        """The ack of a retry of the logged op ``seq``; an op that reuses its id without
        being that op (another actor's, or other content) is refused, naming the op that
        holds the id (its content is not the caller's to read)."""
        entry = self.store.log_entry(txn, seq)
        held = self.core.decode_entry(entry) if entry else None
        if held is not None and not self._repeats(held, op):
            whose = ("yours, with other content" if (held.actor, held.actor_class) ==
                     (op.actor, op.actor_class) else f"by {held.actor_class}:{held.actor}")
            raise OpIdConflict(f"{'' if index is None else f'op {index}: '}op_id "
                               f"{op.op_id!r} already names the operation of seq {seq} "
                               f"({whose}): an op id names one operation; send a new op id "
                               "for a new operation", field="op_id")
        return Ack(op.op_id, held.hlc if held else 0, seq, duplicate=True)

    def _repeats(self, held, op) -> bool:
        """Whether ``op`` is a retry of ``held`` (logged, or earlier in the batch): the same
        actor and the same canonical content (``conflux.signing.op_content``: op id, type,
        environment, entity, field, value, intent, hlc, base, override). What the retry
        leaves to the store, its hlc and a review write's base, is taken as ``held``'s."""
        if (held.actor, held.actor_class, held.type) != (op.actor, op.actor_class, op.type):
            return False
        from conflux.signing import content_of_op

        hlc, base = op.hlc, op.base
        try:
            op.hlc = hlc or held.hlc
            op.base = held.base if base is None else base
            return content_of_op(self, op) == content_of_op(self, held)
        finally:
            op.hlc, op.base = hlc, base

    def _outcome(self, txn, op, hlc: int, merged, get, placed=None) -> tuple[bool, object]:
        """``(applied, value)`` of an op merged in ``txn`` (``merged``: what ``apply_batch``
        returned): whether its write is what the field shows in the op's environment (for a
        delete, whether it is the entity's latest delete), and the field's resolved value
        there, inherited included (None if none); ``get``: the store's ``state_getter``. ``log``
        tells the same afterwards from the logged op (``describe``)."""
        core = self.core
        _, _, changed, markers = merged
        ekey = op.key[:-2] + b"\x00\x00"
        d = markers.get(ekey)
        if d is None:  # a retry: its entity was not touched
            d = _marker_hlc(get(ekey))
        if op.type == core.DELETE_ENTITY:
            return d == hlc, None
        if op.type == core.MOVE_ENTITY:  # the move in force for its entity (``placed``: the
            held = placed.get(op.entity)  # tree), stamped after the entity's delete
            return held is not None and held[3] == op.op_id and held[2] > d, None
        rec = changed.get(op.key) or get(op.key)
        present, held, winner = (
            (False, None, None) if rec is None else core.resolve_record(rec, d))
        value = None
        if present:
            value = self._decode_value(op.entity.partition(".")[0], op.field, held)
        elif not d:  # nothing of its own, and no delete marker: inherited
            value = self._inherited(get, op.env, op.entity, op.field)
        if op.type in (core.SET_FIELD, core.RESOLVE):
            applied = present and winner[2] == op.op_id
        elif op.type == core.UNSET_FIELD:
            applied = not present
        elif op.type == core.ADD_ELEMENTS:
            applied = present and set(op.ebytes) <= set(held)
        else:  # remove_elements
            applied = not present or not set(op.ebytes) & set(held)
        return bool(applied), value

    def _inherited(self, get, env, entity_id, field_name):
        """The value of a field ``env`` inherits from its parents (None if none); ``get``:
        the store's ``state_getter``."""
        for level in self.schema.env_chain(env)[1:]:
            key = self._key(level, entity_id, field_name)
            d = _marker_hlc(get(key[:-2] + b"\x00\x00"))
            rec = get(key)
            if rec is not None:
                present, value, _ = self.core.resolve_record(rec, d)
                if present:
                    return self._decode_value(entity_id.partition(".")[0], field_name, value)
            if d:
                return None
        return None

    def _key(self, env, entity_id, field_name) -> bytes:
        """The state key of a field (or, with no field, of the entity's delete marker)."""
        type_name, _, name = entity_id.partition(".")
        return state_key(self._env_ids[env], self._type_ids[type_name], name,
                         self._field_ids[(type_name, field_name)] if field_name else 0)
