"""Conflux's merge core in clear Python: the reference semantics and the fallback.

This module is the executable specification of how Conflux merges operations. The compiled
twin (``_core_c.pyx``) exports the same names and must produce the same bytes; the tests run
every engine test on both and check that they agree on random operation streams.

Every stored record is a *join-semilattice* element: applying an operation is ``join(record,
candidate(op))``, and ``join`` is commutative, associative and idempotent, so the resolved state
is a function of the *set* of operations applied, in any order, with any duplicates. The byte
layouts are described in ``FORMAT.md``; records hold only what is the same on every replica
(HLCs, actor ids, op ids, values), never a local sequence number or interned id.

Context binding. Some operations depend on what their writer had seen: a ``remove_elements``
removes exactly the add tags it observed, an ``add_elements`` supersedes the tags of its
elements it observed, a ``review`` write supersedes exactly the candidates named in its
``base``, an ordinary write competes in the override epoch it was written in. That context is
*bound* once, when the operation is accepted (``op.bound`` becomes true), and stored with it in
the op log, so replaying the log anywhere reaches the same state. A client may name what a
remove or an add observed (``_bind_observed``) and what a review write supersedes (``base``).

Unset and delete are ordered by their HLC, not by when they arrive, so independent stores fed
the same client-stamped operations (their own ``hlc`` and ``op_id``) in any order, with
duplicates, hold the same bytes:

* ``delete_entity`` is the entity's lww tombstone: its marker keeps the latest delete, and
  every field reads only what was stamped after the marker's hlc (a delete wins an hlc tie).
  A write stamped later revives the entity whenever it arrives; one stamped earlier stays
  hidden. In an overlay, a marker also stops inheritance from the parent.
* ``lww``: an unset is a write of no value, ordered with the writes by (epoch, hlc, actor,
  op id) (``_merge_register``).
* ``review``: an unset is a candidate of no value, superseding its ``base`` like a write.
  Order-independent across stores when the client sends ``base`` (signed review writes
  must); without it the base is bound to the candidates the accepting store holds.
* ``max``/``min``: the register keeps the greatest (least) number ever written and the hlc
  of the latest unset; the value is read when stamped after that unset and after the
  delete marker, so after an unset or a delete the field has no value until a write reaches
  the old extreme (or an override opens an epoch). See ``_merge_register`` for why.
* ``set``: an unset removes every element the accepting store holds, observing their live
  tags (a concurrent add survives it). This one is not order-independent across stores: it
  kills exactly the add tags live at the accepting store when it arrives, so a store that
  had not yet applied an add, or that applies the unset before an add stamped earlier,
  keeps that element. (Replaying the log converges: the observed tags are logged.) A client
  that needs the same result everywhere sends ``remove_elements`` naming what it observed.
  ``grow``: no unset (refused).

Override epochs are the one arrival-ordered rule: an ``--override`` write opens an epoch
bound at accept and beats every write the accepting store had, and writes accepted later
compete in it. Without overrides every epoch is 0.
"""

from __future__ import annotations

import re

import msgpack

from conflux.errors import ClockSkewError, PreconditionFailed, ValidationError
from conflux.kernel import _layout
from conflux.kernel._layout import (
    ADD_ELEMENTS, DELETE_ENTITY, ENTITY, F_ABSENT, F_CUTOFF, F_OVERRIDE, FORMAT_VERSION, GROW,
    LWW, MAX, MIN, MOVE_ENTITY, NUM_FLOAT, NUM_INT, NUM_NONE, OP_NAMES, OP_TYPES, ORSET, PLACE,
    PROMOTE, REMOVE_ELEMENTS, RESOLVE, REVIEW, SET_FIELD, STRATEGY_KINDS, UNSET_FIELD, VALUE_BOOL,
    VALUE_DURATION, VALUE_ELEMENTS, VALUE_FLOAT, VALUE_INT, VALUE_KINDS, VALUE_MAP,
    VALUE_OTHER, VALUE_STRING)

__all__ = [
    "IMPLEMENTATION", "FORMAT_VERSION",
    "LWW", "MAX", "MIN", "REVIEW", "ORSET", "GROW", "ENTITY", "PLACE", "STRATEGY_KINDS",
    "SET_FIELD", "UNSET_FIELD", "ADD_ELEMENTS", "REMOVE_ELEMENTS", "DELETE_ENTITY", "RESOLVE",
    "PROMOTE", "MOVE_ENTITY", "OP_TYPES", "OP_NAMES",
    "hlc_pack", "hlc_unpack", "hlc_format", "hlc_parse", "hlc_tick", "hlc_receive",
    "Op", "merge_op", "merge_ops", "join", "resolve_record", "review_candidates", "tree_replay",
    "compact_record", "record_kind", "encode_entry", "decode_entry",
    "prepare_ops", "stamp_ops", "apply_batch", "encode_chunks", "entity_blobs",
    "value_extent",
]

IMPLEMENTATION = "py"

# The constants and byte layouts are _layout's, shared with the compiled twin (FORMAT.md
# describes them).
# PERF: the structs are bound by assignment, not imported by name: CPython 3.11 compiles a
# method call on an imported name (``_REG.unpack_from(rec)``) as an attribute load that
# makes a bound method per call, on an assigned one as a plain method call. Imported, they
# cost the max-register merge 13% and the or-set add 9% more instructions (callgrind).
_REG = _layout.REGISTER
_U64 = _layout.CUTOFF
_I64 = _layout.NUMBER_INT
_F64 = _layout.NUMBER_FLOAT
_REV_HEAD = _layout.REVIEW_HEAD
_REV_CAND = _layout.REVIEW_CAND
_SET_HEAD = _layout.SET_HEAD
_SET_ELEM = _layout.ORSET_ELEM
_TAG = _layout.LIVE_TAG
_TOMB = _layout.TOMBSTONE
_WATERMARK = _layout.WATERMARK
_GROW_ELEM = _layout.GROW_ELEM
_PLACE_HEAD = _layout.PLACE_HEAD
_MOVE = _layout.MOVE
_ENTRY_VERSION = _layout.ENTRY_VERSION
# Derived once, for the hot paths.
_REG_END = _REG.size                    # where a register's variable parts start
_REG_CUTOFF_END = _REG.size + _U64.size  # the same with F_CUTOFF
_NO_NUMBER = bytes(_I64.size)           # the number of a register with NUM_NONE

# --------------------------------------------------------------------------------------------
# Hybrid logical clock (Kulkarni et al. 2014): 48 bits of wall milliseconds, 16 bits counter.

_COUNTER = 0xFFFF
_HLC_MAX = (1 << 64) - 1


def hlc_pack(ms: int, counter: int) -> int:
    return (ms << 16) | counter


def hlc_unpack(h: int) -> tuple[int, int]:
    return h >> 16, h & _COUNTER


def hlc_format(h: int) -> str:
    """``hlc:<wall ms>.<counter, 4 digits>`` (the counter may exceed 4 digits when large)."""
    return f"hlc:{h >> 16}.{h & _COUNTER:04d}"


def hlc_parse(value) -> int:
    """Read an HLC given as its text form or as the packed 64-bit integer."""
    if isinstance(value, bool):
        raise ValidationError(f"hlc: expected 'hlc:<ms>.<counter>' or an integer, got {value!r}",
                              field="hlc")
    if isinstance(value, int):
        if 0 <= value <= _HLC_MAX:
            return value
        raise ValidationError(f"hlc: {value} is outside the 64-bit range", field="hlc")
    if isinstance(value, str) and value.startswith("hlc:"):
        ms, dot, counter = value[4:].partition(".")
        if (dot and ms.isascii() and ms.isdigit() and counter.isascii() and counter.isdigit()
                and len(ms) <= 15 and len(counter) <= 5):
            ms_i, c_i = int(ms), int(counter)
            if ms_i < (1 << 48) and c_i <= _COUNTER:
                return (ms_i << 16) | c_i
    raise ValidationError(f"hlc: expected 'hlc:<ms>.<counter>' or an integer, got {value!r}",
                          field="hlc")


def hlc_tick(last: int, wall_ms: int) -> int:
    """The clock after a local event (stamping an operation)."""
    ms = last >> 16
    if wall_ms > ms:
        return wall_ms << 16
    if last & _COUNTER == _COUNTER:
        # NOTE: counter overflow borrows the next millisecond rather than wrapping, so the
        # clock stays strictly increasing; it runs at most a few ms ahead under huge bursts.
        return (ms + 1) << 16
    return last + 1


def hlc_receive(last: int, remote: int, wall_ms: int, max_offset_ms: int) -> int:
    """The clock after receiving an operation stamped ``remote`` elsewhere.

    A timestamp more than ``max_offset_ms`` ahead of our wall clock is refused: it would win
    every LWW merge until the real clock caught up.
    """
    rms = remote >> 16
    if rms > wall_ms + max_offset_ms:
        raise ClockSkewError(
            f"hlc: {hlc_format(remote)} is {rms - wall_ms} ms ahead of this store's clock "
            f"(max_clock_offset is {max_offset_ms} ms)", field="hlc")
    lms = last >> 16
    ms = max(lms, rms, wall_ms)
    if ms == lms and ms == rms:
        c = max(last & _COUNTER, remote & _COUNTER) + 1
    elif ms == lms:
        c = (last & _COUNTER) + 1
    elif ms == rms:
        c = (remote & _COUNTER) + 1
    else:
        c = 0
    if c > _COUNTER:
        ms, c = ms + 1, 0
    return (ms << 16) | c


# --------------------------------------------------------------------------------------------
# Operations


class Op:
    """One operation as the core sees it: validated, normalised, keyed.

    The engine fills the identity and content; ``merge_op`` fills the bound context
    (``epoch``, ``base``, ``observed``) unless ``bound`` is already true, and ``prev``.
    """

    __slots__ = ("op_id", "type", "env", "entity", "field", "value", "vbytes", "elements",
                 "ebytes", "actor", "actor_class", "intent", "hlc", "base", "observed",
                 "override", "epoch", "bound", "prev", "signature", "key_id", "children",
                 "kind", "num_tag", "key", "entity_epoch", "seq")

    def __init__(self):
        self.op_id = ""
        self.type = SET_FIELD
        self.env = ""
        self.entity = ""
        self.field = ""
        self.value = None
        self.vbytes = b""
        self.elements = None
        self.ebytes = None
        self.actor = ""
        self.actor_class = ""
        self.intent = ""
        self.hlc = 0
        self.base = None
        self.observed = None
        self.override = False
        self.epoch = 0
        self.bound = False
        self.prev = None
        self.signature = None
        self.key_id = None
        self.children = None
        self.kind = LWW
        self.num_tag = NUM_NONE
        self.key = b""
        self.entity_epoch = 0
        self.seq = 0

    def __repr__(self) -> str:
        return (f"Op({self.op_id!r}, {OP_NAMES.get(self.type)}, {self.env}:{self.entity}."
                f"{self.field}, hlc={hlc_format(self.hlc)})")


# --------------------------------------------------------------------------------------------
# Registers: lww, max, min, and the entity delete marker.


def _pack_register(kind, flags, epoch, hlc, actor, op_id, num_tag, num, value, cutoff=0):
    if num_tag == NUM_INT:
        numb = _I64.pack(num)
    elif num_tag == NUM_FLOAT:
        numb = _F64.pack(num)
    else:
        numb = _NO_NUMBER
    if cutoff:
        flags |= F_CUTOFF
        return (_REG.pack(FORMAT_VERSION, kind, flags, num_tag, len(actor), len(op_id), 0,
                          epoch, hlc, numb) + _U64.pack(cutoff) + actor + op_id + value)
    return (_REG.pack(FORMAT_VERSION, kind, flags & ~F_CUTOFF, num_tag, len(actor),
                      len(op_id), 0, epoch, hlc, numb) + actor + op_id + value)


def _unpack_register(rec):
    """(kind, flags, epoch, hlc, actor, op_id, num, value bytes, cutoff)."""
    _, kind, flags, tag, alen, olen, _, epoch, hlc, numb = _REG.unpack_from(rec)
    pos, cutoff = _REG_END, 0
    if flags & F_CUTOFF:
        cutoff = _U64.unpack_from(rec, _REG_END)[0]
        pos = _REG_CUTOFF_END
    actor = rec[pos:pos + alen]
    op_id = rec[pos + alen:pos + alen + olen]
    if tag == NUM_INT:
        num = _I64.unpack(numb)[0]
    elif tag == NUM_FLOAT:
        num = _F64.unpack(numb)[0]
    else:
        num = 0
    return kind, flags, epoch, hlc, actor, op_id, num, rec[pos + alen + olen:], cutoff


def _register_order(rec):
    """The total order registers merge by: override epoch first, then the strategy.

    ``lww`` and the entity marker: (epoch, hlc, actor, op id), an unset competing like any
    write. ``max``: (epoch, present, number, hlc, actor, op id); ``min`` the same with the
    number negated: within an epoch any number beats an unset, which instead raises the
    register's cutoff (``_merge_register``).
    """
    kind, flags, epoch, hlc, actor, op_id, num, _, _ = _unpack_register(rec)
    if kind == MAX or kind == MIN:
        present = 0 if flags & F_ABSENT else 1
        if not present:
            num = 0
        return (epoch, present, num if kind == MAX else -num, hlc, actor, op_id)
    return (epoch, hlc, actor, op_id)


def _join_register(a, b):
    win = a if _register_order(a) >= _register_order(b) else b
    if a[1] != MAX and a[1] != MIN:
        return win
    ca, cb = _unpack_register(a)[8], _unpack_register(b)[8]
    if ca == cb or (win is a and ca > cb) or (win is b and cb > ca):
        return win
    kind, flags, epoch, hlc, actor, op_id, num, value, _ = _unpack_register(win)
    return _pack_register(kind, flags, epoch, hlc, actor, op_id, win[3], num, value,
                          max(ca, cb))


def _register_visible(flags, hlc, cutoff, d):
    """Whether a register's winner is read: a value stamped after the register's cutoff and
    after the entity's delete marker ``d`` (an hlc tie goes to the unset or the delete)."""
    return not flags & F_ABSENT and hlc > cutoff and hlc > d


def _merge_register(rec, op):
    """An lww, max or min register: the winner by ``_register_order``, and for max/min the
    *cutoff*, the greatest hlc of the unsets applied to it.

    Unset and delete are tombstones ordered by hlc, not by arrival:

    * ``lww``: an unset is a write of no value; the register holds the last write by
      (epoch, hlc, actor, op id), so a stale unset loses to a later-stamped write whatever
      the order they arrive in.
    * ``max``/``min``: the register holds the greatest (least) number ever written, and an
      unset raises the cutoff instead of competing: the value is read only when it was
      stamped after the cutoff (and after the entity's delete marker). A max register never
      forgets its maximum, so after an unset or a delete the field has no value until a
      write stamped after it reaches the old maximum (ties go to the later write), or an
      ``--override`` opens a new epoch. Keeping the winner and one hlc makes this a join,
      order-independent for client-stamped ops; the reading "the greatest number written
      since the unset" would need every write that could become that value once a
      late-stamped unset arrives (for a falling series, all of them): unbounded history.

    An ``--override`` write (and an unset with override) opens an epoch, bound at accept:
    ``max(hlc, cur_epoch)``, so it beats every write the accepting store had, and writes
    accepted after it compete in its epoch (``cur_epoch``). Without overrides every epoch is
    0 and the register is a pure function of the set of operations.
    """
    d = op.entity_epoch
    if rec is not None:
        _, flags, cur_epoch, cur_hlc, _, cur_id, _, cur_value, cutoff = _unpack_register(rec)
        visible = _register_visible(flags, cur_hlc, cutoff, d)
    else:
        cur_epoch, cur_id, visible, cur_value = 0, b"", False, b""
    if not op.bound:
        if op.base is not None:
            expected = [cur_id.decode()] if visible else []
            if sorted(op.base) != sorted(expected):
                raise PreconditionFailed(
                    f"{op.entity}.{op.field}: base {list(op.base)} does not match the current "
                    f"value's op {expected}", field=op.field)
        op.epoch = max(op.hlc, cur_epoch) if op.override else cur_epoch
        op.bound = True
    op.prev = cur_value if visible else None
    if op.type == UNSET_FIELD:
        cand = _pack_register(op.kind, F_ABSENT, op.epoch, op.hlc, op.actor.encode(),
                              op.op_id.encode(), NUM_NONE, 0, b"",
                              op.hlc if op.kind != LWW else 0)
    else:
        cand = _pack_register(op.kind, F_OVERRIDE if op.override else 0, op.epoch, op.hlc,
                              op.actor.encode(), op.op_id.encode(), op.num_tag,
                              op.value if op.num_tag else 0, op.vbytes)
    return cand if rec is None else _join_register(rec, cand)


def _merge_entity(rec, op):
    """A delete is the entity's lww tombstone: the marker keeps the latest delete by (hlc,
    actor, op id), and every field reads only what was stamped after its hlc. A write stamped
    later revives the entity, whenever it arrives; one stamped earlier stays hidden."""
    op.bound = True
    op.prev = None
    cand = _pack_register(ENTITY, F_ABSENT, 0, op.hlc, op.actor.encode(), op.op_id.encode(),
                          NUM_NONE, 0, b"")
    return cand if rec is None else _join_register(rec, cand)


# --------------------------------------------------------------------------------------------
# Review: a multi-value register. Candidates live until a write names them in its base;
# named ids are remembered as tombstones (with the latest remover's hlc) until compaction.
#
# NOTE: a tombstone cannot be dropped when the op it names arrives: a second, concurrent
# writer may name the same op later, and the bytes would then depend on arrival order. So
# tombstones stay until causally stable and ``compact_record`` drops them.


def _decode_review(rec):
    cands, tombs = {}, {}
    if rec is None:
        return cands, tombs
    _, _, ncand, ntomb, _ = _REV_HEAD.unpack_from(rec)
    pos = _REV_HEAD.size
    for _ in range(ncand):
        flags, alen, olen, _, vlen, epoch, hlc = _REV_CAND.unpack_from(rec, pos)
        pos += _REV_CAND.size
        actor = rec[pos:pos + alen]
        pos += alen
        op_id = rec[pos:pos + olen]
        pos += olen
        cands[op_id] = (epoch, hlc, actor, flags, rec[pos:pos + vlen])
        pos += vlen
    for _ in range(ntomb):
        hlc, olen = _TOMB.unpack_from(rec, pos)
        pos += _TOMB.size
        tombs[rec[pos:pos + olen]] = hlc
        pos += olen
    return cands, tombs


def _encode_review(cands, tombs):
    parts = [_REV_HEAD.pack(FORMAT_VERSION, REVIEW, len(cands), len(tombs), 0)]
    for op_id, (epoch, hlc, actor, flags, value) in sorted(
            cands.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[1][2], kv[0])):
        parts.append(_REV_CAND.pack(flags, len(actor), len(op_id), 0, len(value), epoch, hlc))
        parts += (actor, op_id, value)
    for op_id in sorted(tombs):
        parts.append(_TOMB.pack(tombs[op_id], len(op_id)))
        parts.append(op_id)
    return b"".join(parts)


def _join_review_parts(cands, tombs, cands2, tombs2):
    for op_id, hlc in tombs2.items():
        if tombs.get(op_id, -1) < hlc:
            tombs[op_id] = hlc
    for op_id, cand in cands2.items():
        cands[op_id] = cand
    for op_id in [i for i in cands if i in tombs]:
        del cands[op_id]
    return cands, tombs


def _review_winner(cands, d):
    """The effective candidate: the LWW winner among the visible ones (stamped after the
    entity's delete marker ``d``)."""
    best = None
    for op_id, (epoch, hlc, actor, flags, value) in cands.items():
        if hlc <= d:
            continue
        order = (epoch, hlc, actor, op_id)
        if best is None or order > best[0]:
            best = (order, flags, value)
    return best


def _merge_review(rec, op):
    """A review write (or unset: a candidate of no value) supersedes the candidates named in
    its ``base`` (bound at accept to every candidate the store holds unless the client sent
    one) and becomes a candidate. The effective one is the last by (epoch, hlc, actor, op
    id) among those stamped after the entity's delete marker; an unset is an lww tombstone
    like any other candidate. Its epoch is its hlc with ``--override``, else 0."""
    cands, tombs = _decode_review(rec)
    d = op.entity_epoch
    if not op.bound:
        if op.base is None:
            op.base = sorted(i.decode() for i in cands)
        op.epoch = op.hlc if op.override else 0
        op.bound = True
    best = _review_winner(cands, d)
    op.prev = best[2] if best is not None and not best[1] & F_ABSENT else None
    flags = F_ABSENT if op.type == UNSET_FIELD else (F_OVERRIDE if op.override else 0)
    value = b"" if op.type == UNSET_FIELD else op.vbytes
    new_cand = {op.op_id.encode(): (op.epoch, op.hlc, op.actor.encode(), flags, value)}
    new_tombs = {b.encode(): op.hlc for b in op.base}
    return _encode_review(*_join_review_parts(cands, tombs, new_cand, new_tombs))


# --------------------------------------------------------------------------------------------
# Observed-remove set. Per element: live add tags (the adding op's id, with its bound epoch and
# hlc), tombstones of killed *plain* tags and watermarks of killed *sequenced* tags. An op kills
# exactly the tags its writer observed, so a concurrent add (a tag it did not see) survives:
# add wins.
#
# Sequenced tags. A store generates op ids ``<node>-<seq>`` (``stamp_ops``): the node, 8
# lowercase hex digits, and the store's dense log sequence number in lowercase hex without
# leading zeros. Within one node, seq order is that node's own causal order: when a store
# accepts its op (node, s) it has applied every op of its own with a smaller seq, and an add
# binds every live tag of its elements (below). So an op that observed (node, s) on an element
# may kill every (node, s') with s' <= s there too: each of those is dead already, or killed
# by (node, s) itself, or by an op the node applied before (node, s). Those kills fold into one
# *watermark* per node and element, the greatest seq killed and the greatest killer's hlc:
# bounded by the number of stores however often an element is re-added and removed. Any other
# tag (a client-supplied op id, a promotion's part ``parent/3``) is plain: it is killed by a
# tombstone of its own. Compaction drops both kinds once causally stable (``compact_record``).
#
# An add supersedes the tags of its elements that it observed: re-adding a present element
# replaces its tag instead of piling up one more, and a concurrent remove, which cannot have
# observed the new tag, still loses to it (add wins).
#
# Observing is a join: per element, tombstones keep their greatest hlc, watermarks their
# greatest seq and hlc, and the live tags are the union of the adds minus every dead tag (a
# tag is dead when tombstoned or under its node's watermark; an add whose tag is dead arrives
# dead). So the merge stays commutative, associative and idempotent.

_SEQUENCED = re.compile(rb"([0-9a-f]{8})-([1-9a-f][0-9a-f]{0,15})")


def _sequenced(tag):
    """``(node, seq)`` of a store-generated op id (as bytes), or None for a plain one."""
    m = _SEQUENCED.fullmatch(tag)
    return None if m is None else (m.group(1), int(m.group(2), 16))


def _dead(tag, tombs, wms):
    """Whether ``tag`` is dead on an element: tombstoned, or under its node's watermark."""
    if tag in tombs:
        return True
    s = _sequenced(tag)
    return s is not None and s[0] in wms and s[1] <= wms[s[0]][0]


def _raise_watermark(wms, node, seq, hlc):
    old = wms.get(node)
    wms[node] = (seq, hlc) if old is None else (max(old[0], seq), max(old[1], hlc))


def _kill(tombs, wms, tag, hlc):
    """An op stamped ``hlc`` observed ``tag``: raise its node's watermark, or tombstone it."""
    s = _sequenced(tag)
    if s is None:
        if tombs.get(tag, -1) < hlc:
            tombs[tag] = hlc
    else:
        _raise_watermark(wms, s[0], s[1], hlc)


def _drop_dead(entry):
    live, tombs, wms = entry
    for t in [t for t in live if _dead(t, tombs, wms)]:
        del live[t]


def _decode_orset(rec):
    """``{element: (live {tag: (epoch, hlc)}, tombstones {tag: hlc}, watermarks {node: (seq,
    hlc)})}``."""
    elems = {}
    if rec is None:
        return elems
    _, _, _, n = _SET_HEAD.unpack_from(rec)
    pos = _SET_HEAD.size
    for _ in range(n):
        elen, nlive, ntomb, nwm = _SET_ELEM.unpack_from(rec, pos)
        pos += _SET_ELEM.size
        elem = rec[pos:pos + elen]
        pos += elen
        live, tombs, wms = {}, {}, {}
        for _ in range(nlive):
            epoch, hlc, olen = _TAG.unpack_from(rec, pos)
            pos += _TAG.size
            live[rec[pos:pos + olen]] = (epoch, hlc)
            pos += olen
        for _ in range(ntomb):
            hlc, olen = _TOMB.unpack_from(rec, pos)
            pos += _TOMB.size
            tombs[rec[pos:pos + olen]] = hlc
            pos += olen
        for _ in range(nwm):
            node, seq, hlc = _WATERMARK.unpack_from(rec, pos)
            pos += _WATERMARK.size
            wms[node] = (seq, hlc)
        elems[elem] = (live, tombs, wms)
    return elems


def _encode_orset(elems):
    body = []
    n = 0
    for elem in sorted(elems):
        live, tombs, wms = elems[elem]
        if not live and not tombs and not wms:
            continue
        n += 1
        body.append(_SET_ELEM.pack(len(elem), len(live), len(tombs), len(wms)))
        body.append(elem)
        for op_id in sorted(live):
            epoch, hlc = live[op_id]
            body.append(_TAG.pack(epoch, hlc, len(op_id)))
            body.append(op_id)
        for op_id in sorted(tombs):
            body.append(_TOMB.pack(tombs[op_id], len(op_id)))
            body.append(op_id)
        for node in sorted(wms):
            body.append(_WATERMARK.pack(node, *wms[node]))
    return _SET_HEAD.pack(FORMAT_VERSION, ORSET, 0, n) + b"".join(body)


def _bind_observed(elems, ebytes, supplied, own):
    """What an op observed, per element of ``ebytes``, sorted: without a client's list, the
    element's live tags in this record (the origin's); none of an element it does not have.

    A client-supplied list (``supplied``, one list per element, for a remove or an add) keeps
    its *plain* tags as named, live here or not, so that an op naming an add it saw kills
    that add whether it arrives before or after it: the same client ops give the same record
    in any order. Its *sequenced* tags are cut down to the tags live here: a client cannot
    kill what the accepting store does not hold (a crafted id such as
    ``deadbeef-ffffffffffff`` would otherwise raise that node's watermark and kill its future
    adds for good), while a plain tombstone kills one op id and nothing else. ``own``, an
    add's own tag, is never observed: an op cannot see itself.
    """
    out = []
    for elem, names in zip(ebytes, [None] * len(ebytes) if supplied is None else supplied):
        live = elems[elem][0] if elem in elems else {}
        if names is None:
            seen = {t for t in live if t != own}
        else:
            seen = set()
            for name in names:
                t = name.encode()
                if t != own and (t in live or _sequenced(t) is None):
                    seen.add(t)
        out.append([t.decode() for t in sorted(seen)])
    return out


def _merge_orset(rec, op):
    """Bind (at the origin: an unset's elements, every element with a live tag; every op's
    ``observed``, see ``_bind_observed``), then kill what the op observed and, for an add,
    add its tag to each of its elements unless that tag is dead there.

    A remove or an add may carry the client's ``observed``; without it the op observes every
    live tag of its elements here. An unset observes every live tag of every element here:
    it is a remove of what the accepting store holds, so a concurrent add survives it, and
    its effect depends on what that store had applied (a client that needs the same result
    in any order sends ``remove_elements`` with ``observed``). Add epochs are 0: a delete of
    the entity hides the tags stamped at or before it, by hlc (``resolve_record``)."""
    elems = _decode_orset(rec)
    op.prev = None
    tag = op.op_id.encode()
    adding = op.type == ADD_ELEMENTS
    if not op.bound:
        if adding:
            op.epoch = 0
        elif op.type == UNSET_FIELD:
            op.ebytes = [e for e in sorted(elems) if elems[e][0]]
            op.elements = [msgpack.unpackb(e) for e in op.ebytes]
            op.observed = None
        op.observed = _bind_observed(elems, op.ebytes, op.observed, tag if adding else None)
        op.bound = True
    touched = []
    for elem, observed in zip(op.ebytes, op.observed or ()):
        entry = elems.setdefault(elem, ({}, {}, {}))
        for t in observed:
            _kill(entry[1], entry[2], t.encode(), op.hlc)
        touched.append(entry)
    if adding:
        for elem in op.ebytes:
            entry = elems.setdefault(elem, ({}, {}, {}))
            if not _dead(tag, entry[1], entry[2]):
                entry[0][tag] = (op.epoch, op.hlc)
            touched.append(entry)
    for entry in touched:
        _drop_dead(entry)
    return _encode_orset(elems)


# --------------------------------------------------------------------------------------------
# Grow-only set: per element, the greatest (epoch, hlc, op id) among its adds.


def _decode_grow(rec):
    elems = {}
    if rec is None:
        return elems
    _, _, _, n = _SET_HEAD.unpack_from(rec)
    pos = _SET_HEAD.size
    for _ in range(n):
        elen, epoch, hlc, olen = _GROW_ELEM.unpack_from(rec, pos)
        pos += _GROW_ELEM.size
        op_id = rec[pos:pos + olen]
        pos += olen
        elems[rec[pos:pos + elen]] = (epoch, hlc, op_id)
        pos += elen
    return elems


def _encode_grow(elems):
    parts = [_SET_HEAD.pack(FORMAT_VERSION, GROW, 0, len(elems))]
    for elem in sorted(elems):
        epoch, hlc, op_id = elems[elem]
        parts.append(_GROW_ELEM.pack(len(elem), epoch, hlc, len(op_id)))
        parts += (op_id, elem)
    return b"".join(parts)


def _merge_grow(rec, op):
    """Each element keeps its greatest (epoch, hlc, op id); adds have epoch 0, so that is
    its latest add, read when stamped after the entity's delete marker. A grow field cannot
    be unset (the engine refuses it)."""
    elems = _decode_grow(rec)
    if not op.bound:
        op.epoch = 0
        op.bound = True
    op.prev = None
    mark = (op.epoch, op.hlc, op.op_id.encode())
    for elem in op.ebytes:
        if elem not in elems or elems[elem] < mark:
            elems[elem] = mark
    return _encode_grow(elems)


# --------------------------------------------------------------------------------------------
# Place: an entity's moves in the entity tree, every one kept (a grow-only set of moves by op
# id). Where an entity is is not a register of its own: it is decided by every move of the
# tree together (``tree_replay``), so a record keeps what the replay needs.


def _decode_place(rec):
    """``{op id: (hlc, actor, value)}`` (a repeated op id keeps the last one read)."""
    moves = {}
    if rec is None:
        return moves
    rec = bytes(rec)  # op ids are dict keys: bytes, whatever bytes-like object was given
    _, _, _, n = _PLACE_HEAD.unpack_from(rec)
    pos = _PLACE_HEAD.size
    for _ in range(n):
        hlc, alen, olen, vlen = _MOVE.unpack_from(rec, pos)
        pos += _MOVE.size
        actor = rec[pos:pos + alen]
        op_id = rec[pos + alen:pos + alen + olen]
        pos += alen + olen
        moves[op_id] = (hlc, actor, rec[pos:pos + vlen])
        pos += vlen
    return moves


def _keep_move(moves, op_id, move):
    """Add a move; two moves of one op id (only a damaged or forged record has them) keep
    the greater ``(hlc, actor, value)``, so that the join stays one."""
    held = moves.get(op_id)
    if held is None or held < move:
        moves[op_id] = move


def _move_order(item):
    op_id, (hlc, actor, _) = item
    return (hlc, actor, op_id)


def _encode_place(moves):
    parts = [_PLACE_HEAD.pack(FORMAT_VERSION, PLACE, 0, len(moves))]
    for op_id, (hlc, actor, value) in sorted(moves.items(), key=_move_order):
        parts.append(_MOVE.pack(hlc, len(actor), len(op_id), len(value)))
        parts += (actor, op_id, value)
    return b"".join(parts)


def _merge_place(rec, op):
    """A move joins the entity's moves. Nothing is bound: a move's effect is decided by its
    hlc among every move of the tree (``tree_replay``), wherever it arrives. ``prev``: the
    place the entity's latest move asked for before this one."""
    moves = _decode_place(rec)
    op.epoch = 0
    op.bound = True
    op.prev = max(moves.items(), key=_move_order)[1][2] if moves else None
    _keep_move(moves, op.op_id.encode(), (op.hlc, op.actor.encode(), op.vbytes))
    return _encode_place(moves)


def tree_replay(places):
    """The entity tree that a set of place records make, by the move operation of Kleppmann
    et al., "A highly-available move operation for replicated trees" (2021).

    ``places``: ``(entity id, place record)`` pairs. Every move of every record is applied
    in hlc order (ties by actor, then op id): a move puts its entity under its parent (None:
    a root) at its position, unless the parent is the entity itself or one of its
    descendants at that point, in which case the move is skipped (it would make a cycle) and
    the entity stays where it was. The paper applies moves as they arrive by undoing the
    later ones, doing the new one and redoing them; the tree it reaches is the tree of this
    replay in timestamp order, which this function computes from the records alone, so it
    is a function of the set of moves, in any order, with duplicates.

    Returns ``(placed, skipped)``: ``placed[entity] = (parent, position, hlc, op id)`` of
    the move in force for each entity some move placed, and the op ids of skipped moves.
    """
    moves = []
    for entity, rec in places:
        for op_id, (hlc, actor, value) in _decode_place(rec).items():
            moves.append((hlc, actor, op_id, entity, value))
    moves.sort()
    placed, skipped = {}, set()
    for hlc, actor, op_id, child, value in moves:
        parent, position = msgpack.unpackb(value, raw=False)
        up = parent
        while up is not None and up != child:
            up = placed[up][0] if up in placed else None
        if up is not None:  # the parent is the entity or below it
            skipped.add(op_id.decode())
            continue
        placed[child] = (parent, position, hlc, op_id.decode())
    return placed, skipped


# --------------------------------------------------------------------------------------------
# The kernel entry points.


def record_kind(rec) -> int:
    return rec[1]


def merge_op(rec, op):
    """Apply one operation to one record: bind its context, set ``op.prev``, return the new
    record (the same object when nothing changed is not promised: compare bytes)."""
    kind = op.kind
    if kind == LWW or kind == MAX or kind == MIN:
        return _merge_register(rec, op)
    if kind == REVIEW:
        return _merge_review(rec, op)
    if kind == ORSET:
        return _merge_orset(rec, op)
    if kind == GROW:
        return _merge_grow(rec, op)
    if kind == ENTITY:
        return _merge_entity(rec, op)
    if kind == PLACE:
        return _merge_place(rec, op)
    raise ValueError(f"unknown record kind {kind}")


def merge_ops(records, groups):
    """The batch loop: ``groups[i]`` is the list of ops (in batch order) for the key whose
    current record is ``records[i]`` (or None). Returns the new records, None where the
    record did not change."""
    out = []
    for rec, ops in zip(records, groups):
        new = rec
        for op in ops:
            new = merge_op(new, op)
        out.append(None if new == rec else new)
    return out


def join(a, b):
    """The least upper bound of two records of the same kind (None is the bottom)."""
    if a is None:
        return b
    if b is None:
        return a
    kind = a[1]
    if kind != b[1]:
        raise ValueError(f"cannot join records of kinds {kind} and {b[1]}")
    if kind in (LWW, MAX, MIN, ENTITY):
        return _join_register(a, b)
    if kind == REVIEW:
        ca, ta = _decode_review(a)
        cb, tb = _decode_review(b)
        return _encode_review(*_join_review_parts(ca, ta, cb, tb))
    if kind == ORSET:
        ea, eb = _decode_orset(a), _decode_orset(b)
        for elem, (live_b, tombs_b, wms_b) in eb.items():
            entry = live, tombs, wms = ea.setdefault(elem, ({}, {}, {}))
            for t, hlc in tombs_b.items():
                if tombs.get(t, -1) < hlc:
                    tombs[t] = hlc
            for node, (seq, hlc) in wms_b.items():
                _raise_watermark(wms, node, seq, hlc)
            for t, mark in live_b.items():
                if live.get(t, mark) <= mark:
                    live[t] = mark
            _drop_dead(entry)
        return _encode_orset(ea)
    if kind == GROW:
        ea, eb = _decode_grow(a), _decode_grow(b)
        for elem, mark in eb.items():
            if elem not in ea or ea[elem] < mark:
                ea[elem] = mark
        return _encode_grow(ea)
    if kind == PLACE:
        moves = _decode_place(a)
        for op_id, move in _decode_place(b).items():
            _keep_move(moves, op_id, move)
        return _encode_place(moves)
    raise ValueError(f"unknown record kind {kind}")


# --------------------------------------------------------------------------------------------
# Reading


def resolve_record(rec, d):
    """The record's own value as seen through an entity delete marker at hlc ``d``: what was
    stamped at or before ``d`` is hidden (a delete wins an hlc tie), whenever it arrived.

    Returns ``(present, value, winner)``: ``value`` is the msgpack bytes of the value (for
    sets, a list of the visible elements' msgpack bytes), ``winner`` is ``(hlc, actor, op id,
    override)`` of the operation that decided it (for sets the latest visible add), or None.
    """
    kind = rec[1]
    if kind in (LWW, MAX, MIN, ENTITY):
        _, flags, epoch, hlc, actor, op_id, _, value, cutoff = _unpack_register(rec)
        if not _register_visible(flags, hlc, cutoff, d):
            return False, None, None
        return True, value, (hlc, actor.decode(), op_id.decode(), bool(flags & F_OVERRIDE))
    if kind == REVIEW:
        best = _review_winner(_decode_review(rec)[0], d)
        if best is None or best[1] & F_ABSENT:
            return False, None, None
        epoch, hlc, actor, op_id = best[0]
        return True, best[2], (hlc, actor.decode(), op_id.decode(), bool(best[1] & F_OVERRIDE))
    if kind == ORSET:
        out, latest = [], None
        for elem, (live, _, _) in sorted(_decode_orset(rec).items()):
            marks = [(hlc, op_id) for op_id, (epoch, hlc) in live.items() if hlc > d]
            if marks:
                out.append(elem)
                top = max(marks)
                if latest is None or top > latest:
                    latest = top
        if not out:
            return False, None, None
        return True, out, (latest[0], None, latest[1].decode(), False)
    if kind == GROW:
        out, latest = [], None
        for elem, (epoch, hlc, op_id) in sorted(_decode_grow(rec).items()):
            if hlc > d:
                out.append(elem)
                if latest is None or (hlc, op_id) > latest:
                    latest = (hlc, op_id)
        if not out:
            return False, None, None
        return True, out, (latest[0], None, latest[1].decode(), False)
    if kind == PLACE:
        # the latest move stamped after the marker: the entity exists by it (where it is,
        # is the tree's business: tree_replay)
        seen = [item for item in _decode_place(rec).items() if item[1][0] > d]
        if not seen:
            return False, None, None
        op_id, (hlc, actor, value) = max(seen, key=_move_order)
        return True, value, (hlc, actor.decode(), op_id.decode(), False)
    raise ValueError(f"unknown record kind {kind}")


def review_candidates(rec, d):
    """The visible candidates of a review record, effective one last:
    a list of ``(hlc, actor, op id, present, value bytes)``."""
    cands, _ = _decode_review(rec)
    out = []
    for op_id, (epoch, hlc, actor, flags, value) in sorted(
            cands.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[1][2], kv[0])):
        if hlc > d:
            out.append((hlc, actor.decode(), op_id.decode(), not flags & F_ABSENT, value))
    return out


def compact_record(rec, horizon, d):
    """Drop what is causally stable (older than ``horizon``) and cannot change the resolved
    state any more: tombstones and or-set watermarks, unset registers, max/min cutoffs below
    their value, and anything stamped at or before an entity delete marker ``d`` older than
    the horizon. Returns the new record, or None to delete it.

    A max/min value stays even when hidden (by its cutoff or a marker): a later write is
    read only once it reaches that value, so dropping it would change what later ops do.

    NOTE: a watermark goes as a tombstone does. Every tag it kills belongs to an op its node
    stamped before the tag some op with the watermark's hlc observed, so that op is older than
    the horizon too: it has arrived here, and elsewhere it is refused from now on.
    """
    kind = rec[1]
    hidden_below = d if 0 < d < horizon else 0
    if kind in (LWW, MAX, MIN):
        _, flags, epoch, hlc, actor, op_id, num, value, cutoff = _unpack_register(rec)
        if flags & F_ABSENT and hlc < horizon:
            return None
        if kind == LWW:
            return None if hlc <= hidden_below else rec
        if cutoff and cutoff < horizon and hlc > cutoff:
            # every op still to come is stamped after the cutoff, and so is the value
            return _pack_register(kind, flags, epoch, hlc, actor, op_id, rec[3], num, value)
        return rec
    if kind == ENTITY:
        return rec  # the engine drops markers once nothing behind them is left
    if kind == PLACE:
        return rec  # every move stays: an older one decides where a skipped one leaves it
    if kind == REVIEW:
        cands, tombs = _decode_review(rec)
        cands = {i: c for i, c in cands.items() if c[1] > hidden_below}
        tombs = {i: h for i, h in tombs.items() if h >= horizon}
        return _encode_review(cands, tombs) if cands or tombs else None
    if kind == ORSET:
        elems = {}
        for elem, (live, tombs, wms) in _decode_orset(rec).items():
            live = {t: m for t, m in live.items() if m[1] > hidden_below}
            tombs = {t: h for t, h in tombs.items() if h >= horizon}
            wms = {n: m for n, m in wms.items() if m[1] >= horizon}
            elems[elem] = (live, tombs, wms)
        out = _encode_orset(elems)
        return out if _SET_HEAD.unpack_from(out)[3] else None
    if kind == GROW:
        elems = {e: m for e, m in _decode_grow(rec).items() if m[1] > hidden_below}
        return _encode_grow(elems) if elems else None
    raise ValueError(f"unknown record kind {kind}")


# --------------------------------------------------------------------------------------------
# Op log entries: one msgpack array per operation, with its bound context.

def _entry_fields(op):
    return [_ENTRY_VERSION, op.op_id, op.type, op.env, op.entity, op.field, op.value,
            op.elements, op.actor, op.actor_class, op.intent, op.hlc, op.base, op.observed,
            op.epoch, op.override, op.prev, op.signature, op.key_id,
            None if op.children is None else [_entry_fields(c) for c in op.children],
            op.kind]


def encode_entry(op) -> bytes:
    return msgpack.packb(_entry_fields(op), use_bin_type=True)


def _op_from_fields(f):
    op = Op()
    (_, op.op_id, op.type, op.env, op.entity, op.field, op.value, op.elements, op.actor,
     op.actor_class, op.intent, op.hlc, op.base, op.observed, op.epoch, op.override, op.prev,
     op.signature, op.key_id, children, op.kind) = f
    if children is not None:
        op.children = [_op_from_fields(c) for c in children]
    op.bound = True
    return op


def decode_entry(data: bytes):
    return _op_from_fields(msgpack.unpackb(data, raw=False, strict_map_key=False))


# --------------------------------------------------------------------------------------------
# The batch path around the merge: building ops, stamping them, logging them.


def prepare_ops(raws, table, actor, actor_class, slow):
    """Client operation dicts -> ``Op`` objects, in order, written by ``actor``.

    ``slow(raw, index)`` is the engine's full validator: the reference for every shape and
    the source of every error message, and of every refusal of a value that breaks its
    field's own constraints. This twin sends every op through it. The compiled twin
    builds the common shape itself (a ``set_field`` of a scalar, described by ``table``: see
    ``Engine._fast_table``) and sends the rest to ``slow``; both give equal ops.
    """
    return [slow(raw, i) for i, raw in enumerate(raws)]


def stamp_ops(ops, clock, wall_ms, max_offset_ms, prefix, horizon, first_seq):
    """Give each op its sequence number, its HLC and, if the client sent none, its op id;
    return the clock after the batch.

    An op without an HLC is stamped by the clock (a local event); one with an HLC advances the
    clock by the receive rule, refused if it is too far ahead of ``wall_ms`` or older than the
    compaction ``horizon``. A generated op id is ``prefix`` (the store's node id and a dash)
    followed by the op's sequence number in hex: unique across stores by the prefix, and
    found in the log without an index (PERF: no op-id index write for most ops).
    """
    seq = first_seq
    for op in ops:
        if op.hlc:
            if op.hlc < horizon:
                raise ValidationError(
                    f"hlc {hlc_format(op.hlc)} is older than this store's compaction horizon "
                    f"{hlc_format(horizon)}", field="hlc")
            clock = hlc_receive(clock, op.hlc, wall_ms, max_offset_ms)
        else:
            clock = hlc_tick(clock, wall_ms)
            op.hlc = clock
        op.seq = seq
        if not op.op_id:
            op.op_id = f"{prefix}{seq:x}"
        seq += 1
    return clock


def apply_batch(leaves, cursor):
    """Merge a batch of (field and entity) ops into the state table through an LMDB cursor
    of it: one read and at most one write per distinct key, keys in order.

    Each op first learns the entity delete marker in force when it is accepted (the stored
    one, or a delete earlier in the batch). Returns ``(keys, groups, changed, markers)``: the
    distinct keys in order, their ops in batch order, the new records of the keys that
    changed, and every touched entity's marker hlc after the batch.
    """
    markers = {}
    groups = {}
    for op in leaves:
        key = op.key
        ekey = key[:-2] + b"\x00\x00"
        d = markers.get(ekey)
        if d is None:
            rec = cursor.get(ekey)
            d = markers[ekey] = 0 if rec is None else _REG.unpack_from(rec)[8]
        op.entity_epoch = d
        if op.type == DELETE_ENTITY and op.hlc > d:
            markers[ekey] = op.hlc
        group = groups.get(key)
        if group is None:
            groups[key] = [op]
        else:
            group.append(op)
    keys = sorted(groups)
    changed = {}
    for key in keys:
        rec = cursor.get(key)
        new = rec
        for op in groups[key]:
            new = merge_op(new, op)
        if new != rec:
            changed[key] = new
    if changed:
        cursor.putmulti(list(changed.items()))
    return keys, groups, changed, markers


def entity_blobs(ops, limit):
    """The ids of the entities ``ops`` write (a promotion: its children's), each once, in
    no particular order, as UTF-8 joined by newlines into blobs of at most ``limit`` bytes
    (unless one id alone is longer): the values of the store's entity index."""
    names = set()
    for op in ops:
        for leaf in op.children or (op,):
            names.add(leaf.entity)
    out, part, size = [], [], 0
    for name in names:
        data = name.encode()
        if part and size + 1 + len(data) > limit:
            out.append(b"\n".join(part))
            part, size = [], -1
        part.append(data)
        size += 1 + len(data)
    if part:
        out.append(b"\n".join(part))
    return out


def encode_chunks(ops, clock, limit):
    """The op-log chunks of one commit, as ``[(first seq, chunk bytes)]``. A chunk is
    ``count (u32) · clock (u64) · offsets (u32 each) · entries``; the store's clock after the
    commit travels in every chunk, so the last one tells the clock and the last sequence.

    PERF: a commit's entries go in chunks of at most ``limit`` bytes (unless one entry alone
    is larger). Keeping the clock and sequence in the log spares every commit a write to
    another table; keeping chunks within an LMDB page keeps them off overflow pages, which
    need contiguous free space that grows costly to find as the store ages (measured: a
    single chunk per 10,000-op commit cost 1.4x more per op at 10^7 ops than at 10^6).
    """
    if not ops:
        return []
    return _layout.pack_chunks([encode_entry(op) for op in ops], ops[0].seq, clock, limit)


# ---------------------------------------------------------------------------------------------
# Parsed input: how deep and how big, before anything encodes it


def value_extent(value, max_depth, budget):
    """How deep and how big a parsed value (as a parser gives it: None, bool, numbers, text,
    bytes, lists and maps) is, without encoding it.

    The size is a lower bound of the value's msgpack encoding: one byte for each scalar, list
    and map, plus the characters of each text (map keys included). A part reached twice (a
    YAML alias) counts each time it is reached, as an encoder would write it again. Returns the
    size, or -1 as soon as a list or map lies deeper than ``max_depth`` levels (the value
    itself, if a list or map, is level 1), or -2 as soon as the size passes ``budget``. The
    walk stops there: a value whose aliases expand to gigabytes costs at most ``budget`` steps
    and ``max_depth`` frames. Both twins walk in the same order and stop at the same place.
    """
    return _extent(value, 1, max_depth, budget, 0)


def _extent(value, depth, max_depth, budget, size):
    if isinstance(value, str):
        size += len(value) + 1
    elif isinstance(value, bytes):
        size += len(value) + 1
    elif isinstance(value, (list, tuple)):
        if depth > max_depth:
            return -1
        size += 1
        if size > budget:
            return -2
        for item in value:
            size = _extent(item, depth + 1, max_depth, budget, size)
            if size < 0:
                return size
        return size
    elif isinstance(value, dict):
        if depth > max_depth:
            return -1
        size += 1
        if size > budget:
            return -2
        for key, item in value.items():
            size += len(key) + 1 if isinstance(key, str) else 1
            if size > budget:
                return -2
            size = _extent(item, depth + 1, max_depth, budget, size)
            if size < 0:
                return size
        return size
    else:
        size += 1
    return -2 if size > budget else size
