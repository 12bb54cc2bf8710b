"""What a write answers, per operation: ``Ack`` and the lazily built ``Acks`` of a batch."""

from __future__ import annotations




#: Requests of at most this many ops are told, per op, whether it won and the field's value
#: after the commit (``Ack.applied``, ``Ack.value``). PERF: ``Engine._outcome`` costs about
#: 3 us of CPU per op (measured over 2,000 single-op commits of the bench workload), a third
#: of what a 1,000-op batch spends per op in all: large batches do without.
OUTCOME_OPS = 64


class Ack:
    """What a writer is told about one accepted operation."""

    __slots__ = ("op_id", "hlc", "seq", "duplicate", "change", "applied", "value")

    def __init__(self, op_id: str, hlc: int, seq: int, duplicate: bool = False,
                 change: dict | None = None, applied: bool | None = None,
                 value: object = None):
        self.op_id = op_id
        self.hlc = hlc
        self.seq = seq
        self.duplicate = duplicate
        self.change = change
        #: whether the op's write is what its field shows after the commit (None: not
        #: computed, for requests of more than ``OUTCOME_OPS`` ops)
        self.applied = applied
        #: the field's resolved value in the op's environment after the commit (None: none)
        self.value = value

    def _values(self) -> tuple:
        return (self.op_id, self.hlc, self.seq, self.duplicate, self.change, self.applied,
                self.value)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # mutable, as a dataclass without frozen=True

    def __repr__(self) -> str:
        return ("Ack(" + ", ".join(f"{k}={v!r}" for k, v in zip(self.__slots__, self._values()))
                + ")")

    def to_dict(self, core) -> dict:
        out = {"op_id": self.op_id, "hlc": core.hlc_format(self.hlc), "seq": self.seq}
        if self.duplicate:
            out["duplicate"] = True
        if self.change is not None:
            out["change"] = self.change
        if self.applied is not None:
            out["applied"] = self.applied
            out["value"] = self.value
        return out


class Acks(list):
    """The acknowledgements of one batch, one ``Ack`` per op in order.

    PERF: built on first access; a large batch's caller that only needs the count (the
    benchmark, a bulk import) or the rows (the commit service's answer) does not pay for
    thousands of objects.
    """

    def __init__(self, ops, found, changes, group=None, outcomes=None):
        # (a new list is empty: no list.__init__, which a group's split calls once a batch)
        # found[i]: None (op i is new), an Ack (logged before), or the index in ``group``
        # (the whole committed group, by default these ops) of the op it repeats;
        # outcomes[i]: (applied, value) of op i, for the small requests (``OUTCOME_OPS``)
        self._pending = (ops, found, changes, ops if group is None else group, outcomes or {})

    def rows(self) -> list[list]:
        """``[op id, hlc, seq, duplicate]`` for each op, ``+ [applied, value]`` where known,
        without building ``Ack`` objects."""
        if self._pending is None:
            return [[a.op_id, a.hlc, a.seq, a.duplicate] if a.applied is None else
                    [a.op_id, a.hlc, a.seq, a.duplicate, a.applied, a.value]
                    for a in list.__iter__(self)]
        ops, found, _, group, outcomes = self._pending
        out = []
        for op, ack in zip(ops, found):
            if ack is None:
                out.append([op.op_id, op.hlc, op.seq, False])
            elif isinstance(ack, int):
                first = group[ack]
                out.append([first.op_id, first.hlc, first.seq, True])
            else:
                out.append([ack.op_id, ack.hlc, ack.seq, True])
        for i, outcome in outcomes.items():
            out[i].extend(outcome)
        return out

    def _build(self):
        if self._pending is None:
            return
        ops, found, changes, group, outcomes = self._pending
        self._pending = None
        out = []
        for op, ack in zip(ops, found):
            if ack is None:
                ack = Ack(op.op_id, op.hlc, op.seq, change=changes.get(id(op)))
            elif isinstance(ack, int):  # a repeat of an op earlier in this group
                first = group[ack]
                ack = Ack(first.op_id, first.hlc, first.seq, duplicate=True)
            out.append(ack)
        for i, (applied, value) in outcomes.items():
            out[i].applied, out[i].value = applied, value
        list.extend(self, out)

    def split(self, sizes) -> list["Acks"]:
        """The acknowledgements of consecutive batches (``sizes`` ops each) committed as
        one: an op repeating one of an earlier batch is that op's duplicate."""
        if self._pending is None:
            out, lo = [], 0
            for n in sizes:
                part = Acks([], [], {})
                part._build()
                list.extend(part, list.__getitem__(self, slice(lo, lo + n)))
                out.append(part)
                lo += n
            return out
        ops, found, changes, group, outcomes = self._pending
        out, lo = [], 0
        for n in sizes:
            # PERF: each batch looks up its own indexes, rather than every batch scanning
            # every outcome of the group (quadratic in the group's size)
            if n == 1:  # a one-op request, the most common in a group
                mine = {0: outcomes[lo]} if lo in outcomes else None
            else:
                mine = {i - lo: outcomes[i] for i in range(lo, lo + n) if i in outcomes}
            out.append(Acks(ops[lo:lo + n], found[lo:lo + n], changes, group, mine))
            lo += n
        return out

    def __len__(self):
        return len(self._pending[0]) if self._pending is not None else list.__len__(self)

    def __getitem__(self, index):
        self._build()
        return list.__getitem__(self, index)

    def __iter__(self):
        self._build()
        return list.__iter__(self)

    def __eq__(self, other):
        self._build()
        return list.__eq__(self, other)

    def __repr__(self):
        self._build()
        return list.__repr__(self)


def _small(ops) -> list:
    return [(0, len(ops))] if len(ops) <= OUTCOME_OPS else []
