"""The layout Conflux's merge core writes: every constant and byte layout its two twins share.

This module is the one place they are written down. ``_core_py`` imports them; the compiled
``_core_c`` needs them as C compile-time constants, so ``setup.py`` turns ``c_constants()``
into a Cython declaration file (``cdef enum``s, ``build/cython/pxd/conflux/kernel/_layout.pxd``)
before it compiles ``_core_c.pyx``, which cimports it: the C code reads the values below as
literals, and changing one here rebuilds the compiled twin with it. ``kernel/FORMAT.md``
describes each layout; ``tests/test_layout_shared.py`` checks that no twin keeps a second copy.

It imports nothing of Conflux, so that the build can run it before Conflux is installed.
"""

from __future__ import annotations

import re
import struct

__all__ = [
    "FORMAT_VERSION", "ENTRY_VERSION",
    "LWW", "MAX", "MIN", "REVIEW", "ORSET", "GROW", "ENTITY", "PLACE", "STRATEGY_KINDS",
    "SET_FIELD", "UNSET_FIELD", "ADD_ELEMENTS", "REMOVE_ELEMENTS", "DELETE_ENTITY", "RESOLVE",
    "PROMOTE", "MOVE_ENTITY", "OP_TYPES", "OP_NAMES",
    "F_ABSENT", "F_OVERRIDE", "F_CUTOFF", "NUM_NONE", "NUM_INT", "NUM_FLOAT",
    "VALUE_OTHER", "VALUE_INT", "VALUE_FLOAT", "VALUE_STRING", "VALUE_BOOL", "VALUE_DURATION",
    "VALUE_MAP", "VALUE_ELEMENTS", "VALUE_KINDS",
    "RECORD_HEAD", "REGISTER", "CUTOFF", "NUMBER_INT", "NUMBER_FLOAT", "REVIEW_HEAD", "REVIEW_CAND",
    "SET_HEAD", "ORSET_ELEM", "LIVE_TAG", "TOMBSTONE", "WATERMARK", "GROW_ELEM", "PLACE_HEAD",
    "MOVE", "CHUNK_HEAD",
    "CHUNK_OFFSET", "pack_chunks", "ENTRY", "ENTRY_FIELDS", "LAYOUTS", "c_constants",
]

# The version byte of every record (byte 0).
FORMAT_VERSION = 1

# Record kinds (byte 1 of every record), and the kind of each merge strategy. PLACE is an
# entity's moves in the entity tree (no field's strategy).
LWW, MAX, MIN, REVIEW, ORSET, GROW, ENTITY, PLACE = 1, 2, 3, 4, 5, 6, 7, 8
STRATEGY_KINDS = {"lww": LWW, "max": MAX, "min": MIN, "review": REVIEW, "set": ORSET,
                  "grow": GROW}

# Operation types (item 2 of an op-log entry).
(SET_FIELD, UNSET_FIELD, ADD_ELEMENTS, REMOVE_ELEMENTS, DELETE_ENTITY, RESOLVE, PROMOTE,
 MOVE_ENTITY) = range(1, 9)
OP_TYPES = {"set_field": SET_FIELD, "unset_field": UNSET_FIELD, "add_elements": ADD_ELEMENTS,
            "remove_elements": REMOVE_ELEMENTS, "delete_entity": DELETE_ENTITY,
            "resolve": RESOLVE, "promote": PROMOTE, "move_entity": MOVE_ENTITY}
OP_NAMES = {v: k for k, v in OP_TYPES.items()}

# Register flags (byte 2 of a register; a review candidate's byte 0 uses the first two).
F_ABSENT = 1     # the winner is an unset (or the entity marker): no value
F_OVERRIDE = 2   # the winner was written with override=true
F_CUTOFF = 4     # max/min: a u64 cutoff (the latest unset's hlc) follows the header

# Number tags (byte 3 of a register): what its 8 number bytes hold.
NUM_NONE, NUM_INT, NUM_FLOAT = 0, 1, 2

# Value kinds of a field in the table the compiled ``prepare_ops`` builds common ops from
# (``Engine._fast_table``): the scalars and maps it checks and packs itself. Not stored.
# A set or grow field is VALUE_ELEMENTS + its item's kind (a scalar kind, int to duration);
# VALUE_OTHER sends every op of the field to the engine's full validator.
VALUE_OTHER, VALUE_INT, VALUE_FLOAT, VALUE_STRING, VALUE_BOOL, VALUE_DURATION, VALUE_MAP = range(7)
VALUE_ELEMENTS = 16
VALUE_KINDS = {"int": VALUE_INT, "float": VALUE_FLOAT, "string": VALUE_STRING,
               "bool": VALUE_BOOL, "duration": VALUE_DURATION, "map": VALUE_MAP}

# --------------------------------------------------------------------------------------------
# Fixed-size parts of records and log chunks, little-endian (FORMAT.md has each table).

# The start of every record, 2 bytes (FORMAT.md, "Conventions"): version, kind.
RECORD_HEAD = struct.Struct("<BB")
# Register header, 32 bytes (FORMAT.md, "Register"): version, kind, flags, number tag, actor
# length, op id length, reserved u16, epoch, hlc, number; then the cutoff (with F_CUTOFF),
# actor, op id, value.
REGISTER = struct.Struct("<BBBBBBHQQ8s")
CUTOFF = struct.Struct("<Q")           # the cutoff word after a register's header, 8 bytes
NUMBER_INT = struct.Struct("<q")       # a register's number with NUM_INT
NUMBER_FLOAT = struct.Struct("<d")     # a register's number with NUM_FLOAT
# Review header, 8 bytes (FORMAT.md, "Review"): version, kind, candidate count, tombstone
# count, reserved u16.
REVIEW_HEAD = struct.Struct("<BBHHH")
# Review candidate header, 24 bytes: flags, actor length, op id length, reserved u8, value
# length, epoch, hlc; then actor, op id, value.
REVIEW_CAND = struct.Struct("<BBBBIQQ")
# Or-set and grow-set header, 8 bytes (FORMAT.md, "Or-set"): version, kind, reserved u16,
# element count.
SET_HEAD = struct.Struct("<BBHI")
# Or-set element header, 10 bytes: element length, live tag, tombstone and watermark counts;
# then the element, its live tags, tombstones, watermarks.
ORSET_ELEM = struct.Struct("<IHHH")
# Or-set live tag, 17 bytes then the op id: epoch, hlc, op id length.
LIVE_TAG = struct.Struct("<QQB")
# Tombstone (review and or-set), 9 bytes then the op id (FORMAT.md, "Tombstone"): hlc of the
# latest operation that named it, op id length.
TOMBSTONE = struct.Struct("<QB")
# Or-set watermark, 24 bytes: node (8 ASCII hex bytes), seq, hlc.
WATERMARK = struct.Struct("<8sQQ")
# Grow-set element header, 21 bytes (FORMAT.md, "Grow-set"): element length, epoch, hlc, op id
# length; then the op id and the element.
GROW_ELEM = struct.Struct("<IQQB")
# Place header, 8 bytes (FORMAT.md, "Place"): version, kind, reserved u16, move count.
PLACE_HEAD = struct.Struct("<BBHI")
# A move in a place record, 14 bytes: hlc, actor length, op id length, value length; then
# the actor, the op id and the value (msgpack ``[parent, position]``).
MOVE = struct.Struct("<QBBI")
# Log chunk header, 12 bytes (FORMAT.md, "Log chunk"): entry count, the store's HLC after the
# commit; then one CHUNK_OFFSET per entry, then the entries.
CHUNK_HEAD = struct.Struct("<IQ")
CHUNK_OFFSET = struct.Struct("<I")


def pack_chunks(entries: list[bytes], first_seq: int, clock: int, limit: int
                ) -> list[tuple[int, bytes]]:
    """Encoded entries of consecutive sequence numbers as log chunks, ``[(first seq, chunk)]``:
    at most ``limit`` bytes a chunk (unless one entry alone is larger). The pure-Python twin's
    ``encode_chunks`` cuts with it, and so does a store keeping entries read from a shared
    log byte for byte; the compiled twin cuts the same way in C."""
    out, a, step = [], 0, CHUNK_OFFSET.size
    offsets_format = "<%d" + CHUNK_OFFSET.format.lstrip("<")
    while a < len(entries):
        k, size = 1, len(entries[a])
        while a + k < len(entries) and (CHUNK_HEAD.size + step * (k + 1) + size
                                        + len(entries[a + k]) <= limit):
            size += len(entries[a + k])
            k += 1
        group = entries[a:a + k]
        offsets, pos = [], 0
        for entry in group:
            offsets.append(pos)
            pos += len(entry)
        out.append((first_seq + a, CHUNK_HEAD.pack(k, clock)
                    + struct.pack(offsets_format % k, *offsets) + b"".join(group)))
        a += k
    return out

# Each layout's field names in struct order, and the prefix of its C constants: the compiled
# twin reads and writes fields in place at ``<PREFIX>_<FIELD>`` and steps ``<PREFIX>_SIZE``.
LAYOUTS = {
    "REC": (RECORD_HEAD, ("version", "kind")),
    "REG": (REGISTER, ("version", "kind", "flags", "tag", "alen", "olen", "reserved", "epoch",
                       "hlc", "number")),
    "CUTOFF": (CUTOFF, ("cutoff",)),
    "REV": (REVIEW_HEAD, ("version", "kind", "ncand", "ntomb", "reserved")),
    "CAND": (REVIEW_CAND, ("flags", "alen", "olen", "reserved", "vlen", "epoch", "hlc")),
    "SET": (SET_HEAD, ("version", "kind", "reserved", "count")),
    "ELEM": (ORSET_ELEM, ("elen", "nlive", "ntomb", "nwm")),
    "LIVE": (LIVE_TAG, ("epoch", "hlc", "olen")),
    "TOMB": (TOMBSTONE, ("hlc", "olen")),
    "WM": (WATERMARK, ("node", "seq", "hlc")),
    "GROW": (GROW_ELEM, ("elen", "epoch", "hlc", "olen")),
    "PLACE": (PLACE_HEAD, ("version", "kind", "reserved", "count")),
    "MOVE": (MOVE, ("hlc", "alen", "olen", "vlen")),
    "CHUNK_HEAD": (CHUNK_HEAD, ("count", "clock")),
    "CHUNK_OFFSET": (CHUNK_OFFSET, ("offset",)),
}

# --------------------------------------------------------------------------------------------
# Op-log entry (FORMAT.md, "Op-log entry"): a msgpack array of these items, in this order.

ENTRY_VERSION = 1
ENTRY = ("version", "op_id", "type", "env", "entity", "field", "value", "elements", "actor",
         "actor_class", "intent", "hlc", "base", "observed", "epoch", "override", "prev",
         "signature", "key_id", "children", "kind")
ENTRY_FIELDS = len(ENTRY)

# --------------------------------------------------------------------------------------------
# The compiled twin's view


def _fields(layout: struct.Struct, names: tuple) -> list:
    """``(name, offset, width, code)`` of each field of a little-endian (unpadded) struct."""
    codes = re.findall(r"(\d*)([a-zA-Z?])", layout.format.lstrip("<"))
    if len(codes) != len(names):
        raise ValueError(f"{layout.format}: {len(codes)} fields, {len(names)} names")
    out, pos = [], 0
    for name, (count, code) in zip(names, codes):
        width = struct.calcsize("<" + count + code)
        out.append((name, pos, width, code))
        pos += width
    return out


def c_constants() -> dict:
    """Every constant above the compiled twin uses, by its C name, as an int.

    The names the twins export keep their Python names, so their C names carry a prefix:
    ``K_LWW`` (record kinds), ``T_SET_FIELD`` (op types), ``FL_ABSENT`` (register flags),
    ``TAG_INT`` (number tags), ``V_INT`` (value kinds). A layout gives ``<PREFIX>_SIZE``
    and, when it has more than one field, each field's offset (``REG_HLC``) and the width of
    each byte-string field (``WM_NODE_LEN``); an entry item its index (``E_ACTOR``).
    """
    out = _Once(VERSION=FORMAT_VERSION, ENTRY_VERSION=ENTRY_VERSION, ENTRY_FIELDS=ENTRY_FIELDS)
    g = globals()
    for name in ("LWW", "MAX", "MIN", "REVIEW", "ORSET", "GROW", "ENTITY", "PLACE"):
        out["K_" + name] = g[name]
    for name, value in OP_TYPES.items():
        out["T_" + name.upper()] = value
    for name in ("ABSENT", "OVERRIDE", "CUTOFF"):
        out["FL_" + name] = g["F_" + name]
    for name in ("NONE", "INT", "FLOAT"):
        out["TAG_" + name] = g["NUM_" + name]
    for name in ("OTHER", "INT", "FLOAT", "STRING", "BOOL", "DURATION", "MAP", "ELEMENTS"):
        out["V_" + name] = g["VALUE_" + name]
    for prefix, (layout, names) in LAYOUTS.items():
        out[prefix + "_SIZE"] = layout.size
        if len(names) > 1:
            for name, offset, width, code in _fields(layout, names):
                out[f"{prefix}_{name.upper()}"] = offset
                if code == "s":
                    out[f"{prefix}_{name.upper()}_LEN"] = width
    for i, name in enumerate(ENTRY):
        out["E_" + name.upper()] = i
    return dict(out)


class _Once(dict):
    """A dict that refuses to give a name a second value (two constants, one C name)."""

    def __setitem__(self, key, value):
        if key in self:
            raise ValueError(f"two constants are called {key}")
        super().__setitem__(key, value)
