"""The engine API: the one place Conflux's logic lives.

The CLI and the REST API are thin over ``Engine``: they parse, call one method, and format.
An ``Engine`` owns a project's ``.conflux/`` directory: the schema in force, the settings and
the LMDB store. Writes go through ``apply`` (a batch of operations, atomic); reads resolve
environments through their inheritance chain.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import struct
import time

import msgpack

from conflux._tomlfile import TomlFile
from conflux.actors import ACTOR_CLASSES, Actor
from conflux.kernel import core as default_core, op_parts, TWINS
from conflux.errors import (ConfluxError, InputError, NotFound, OpIdConflict,
                            PreconditionFailed, StoreError, ValidationError)
from conflux.limits import DEFAULT_MAX_VALUE_BYTES, value_problem
from conflux.schema import Schema, _clip, is_utf8, load_schema
from conflux.store import SEQ, Store, entity_prefix, split_state_key, state_key

__all__ = ["Engine", "Ack", "Settings", "CONFLUX_DIR", "project_root"]

CONFLUX_DIR = ".conflux"
#: The store's layout (tables, keys, log chunks, record format; kernel/FORMAT.md). A store of
#: another layout is refused at open rather than misread.
STORE_LAYOUT = b"conflux-store-1"
_HLC_AT = struct.Struct("<Q")
_OP_KEYS = frozenset({"type", "entity_id", "field", "value", "elements", "env", "intent",
                      "op_id", "hlc", "base", "observed", "override", "signature", "key_id"})
_MAX_OP_ID = 128
# The op ids stores generate (``core.stamp_ops``): node id, dash, sequence number in hex. The
# merge core reads an or-set tag of this form as the node's causal position (a remove that saw
# it kills that node's earlier adds of the element too), so clients may not send one.
_STORE_OP_ID = re.compile(r"[0-9a-f]{8}-[1-9a-f][0-9a-f]{0,15}")
_MAX_INTENT = 4096
#: Requests of at most this many ops are told, per op, whether it won and the field's value
#: after the commit (``Ack.applied``, ``Ack.value``). PERF: ``Engine._outcome`` costs about
#: 3 us of CPU per op (measured over 2,000 single-op commits of the bench workload), a third
#: of what a 1,000-op batch spends per op in all: large batches do without.
OUTCOME_OPS = 64


# What the state, not the request, makes pointless: 409, as a failed base is (the same request
# can succeed later), where a malformed one is 400/422.
class NothingToPromote(PreconditionFailed):
    code = "nothing_to_promote"


class NoConflict(PreconditionFailed):
    code = "no_conflict"

_DEFAULT_CONFIG = """\
# Conflux settings for this project.

[clock]
# An operation stamped further than this ahead of the store's wall clock is refused.
max_clock_offset_ms = {max_clock_offset_ms}

[compaction]
# Tombstones older than this are causally stable and may be dropped by 'compaction'.
stability_window_s = {stability_window_s}

[limits]
# The largest field value, in bytes as stored (a set's elements of one operation together):
# a bigger one is refused, whichever way it comes (REST, command line, import).
max_value_bytes = {max_value_bytes}

[signatures]
# Actor classes whose operations must be signed (keys in keys.json: 'conflux keys').
# require = ["human", "pipeline"]

# [milestones]
# repository = "milestones.git"   # inside .conflux/, or any path
# branch = "main"
# format = "yaml"
# remote = "/srv/git/infra-config.git"   # pushed after scheduled milestones
# every_ops = 1000                # the daemon makes a milestone every N operations...
# every_seconds = 3600            # ...or every T seconds, when something changed
"""


class Settings:
    """The project's settings (``config.toml``); immutable."""

    # PERF: Settings and Ack are plain classes rather than dataclasses: the dataclasses
    # module imports inspect, about 10 ms of every command's start (python -X importtime)
    max_clock_offset_ms: int = 500
    stability_window_s: int = 7 * 24 * 3600
    require_signatures: frozenset = frozenset()
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES

    def __init__(self, max_clock_offset_ms: int = max_clock_offset_ms,
                 stability_window_s: int = stability_window_s,
                 require_signatures: frozenset = require_signatures,
                 max_value_bytes: int = max_value_bytes):
        self.__dict__.update(max_clock_offset_ms=max_clock_offset_ms,
                             stability_window_s=stability_window_s,
                             require_signatures=require_signatures,
                             max_value_bytes=max_value_bytes)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}: Settings are immutable")

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self):
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"

    @classmethod
    def load(cls, path: str) -> "Settings":
        """The settings of ``config.toml`` (the defaults without one). Unknown tables and keys
        and values of the wrong kind are refused with the file and line: a misspelt setting
        would otherwise be ignored in silence."""
        try:
            doc = TomlFile(path, keep=True)  # config.toml: kept parsed for the next command
        except FileNotFoundError:
            return cls()
        data = doc.data
        for table, keys in CONFIG_KEYS.items():
            if table not in data:
                continue
            if not isinstance(data[table], dict):
                doc.fail(f"{table!r} must be a table, written [{table}]",
                         line=doc.top_key(table))
            for key in data[table]:
                if keys is not None and key not in keys:
                    # (lines are looked up only to report: every command reads this file)
                    doc.fail(f"[{table}]: unknown key {key!r} (known: {', '.join(keys)})",
                             line=doc.first_line(doc.key(key, doc.table(table)),
                                                 doc.top_key(table)))
        for table in data:
            if table not in CONFIG_KEYS:
                doc.fail(f"unknown table {table!r} (known: "
                         f"{', '.join(f'[{t}]' for t in CONFIG_KEYS)})", line=doc.top_key(table))

        def number(table, key, default):
            value = data.get(table, {}).get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                doc.fail(f"[{table}] {key} must be a whole number, 0 or more (got {value!r})",
                         line=doc.first_line(doc.key(key, doc.table(table)),
                                             doc.top_key(table)))
            return value

        required = data.get("signatures", {}).get("require", [])
        if not isinstance(required, list) or not all(c in ACTOR_CLASSES for c in required):
            doc.fail(f"[signatures] require must list actor classes ({', '.join(ACTOR_CLASSES)})",
                     line=doc.first_line(doc.key("require", doc.table("signatures")),
                                         doc.top_key("signatures")))
        max_value = number("limits", "max_value_bytes", cls.max_value_bytes)
        if not 1 <= max_value <= _MAX_VALUE_CEILING:
            doc.fail(f"[limits] max_value_bytes must be 1 to {_MAX_VALUE_CEILING:,} (got "
                     f"{max_value!r})", line=doc.first_line(doc.key(
                         "max_value_bytes", doc.table("limits")), doc.top_key("limits")))
        return cls(number("clock", "max_clock_offset_ms", cls.max_clock_offset_ms),
                   number("compaction", "stability_window_s", cls.stability_window_s),
                   frozenset(required), max_value)


#: The tables of ``config.toml`` and their keys (``[milestones]``'s are checked by
#: ``conflux.milestones.MilestoneSettings``).
CONFIG_KEYS = {
    "clock": ("max_clock_offset_ms",),
    "compaction": ("stability_window_s",),
    "signatures": ("require",),
    "limits": ("max_value_bytes",),
    "milestones": None,
}
#: A field value is one LMDB record with its merge metadata, read whole on every get: keep
#: even a configured limit well below what a request body may carry.
_MAX_VALUE_CEILING = 64 << 20


def _plain_extras(raw: dict) -> bool:
    env, intent = raw.get("env", "-"), raw.get("intent", "")
    return type(env) is str and env != "" and type(intent) is str


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
        super().__init__()
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
            mine = {i - lo: v for i, v in outcomes.items() if lo <= i < lo + n}
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


def project_root(directory: str) -> str:
    """The ``.conflux`` directory of the project in ``directory``, which must have one."""
    root = os.path.join(directory, CONFLUX_DIR)
    if not os.path.isdir(root):
        raise StoreError(f"no Conflux project in {os.path.abspath(directory)} "
                         f"(run 'conflux init --schema schema.toml' there, or pass --dir)")
    return root


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _marker_hlc(rec) -> int:
    """The hlc of an entity delete marker (register layout, FORMAT.md)."""
    return 0 if rec is None else _HLC_AT.unpack_from(rec, 16)[0]


class Engine:
    """One Conflux project: schema, settings and store."""

    def __init__(self, directory: str = ".", *, core=None, sync: bool = True):
        self.root = project_root(directory)
        self.core = _pick_core(core)
        self.schema: Schema = load_schema(os.path.join(self.root, "schema.toml"), cached=True)
        self.settings = Settings.load(os.path.join(self.root, "config.toml"))
        self.store = Store(os.path.join(self.root, "store"), sync=sync)
        with self.store.read() as txn:
            node = self.store.meta_get(txn, "node")
            layout = self.store.meta_get(txn, "layout")
        if node is None:
            raise StoreError(f"the store in {self.root} was never initialised")
        if layout != STORE_LAYOUT:
            written = layout.decode() if layout else "none (a development build)"
            raise StoreError(f"the store in {self.root} has layout {written}; this Conflux "
                             f"reads {STORE_LAYOUT.decode()}: open it with the Conflux that "
                             "wrote it, or start a new project with 'conflux init'")
        self.node = node.decode()
        self._kinds = {(t, f.name): self.core.STRATEGY_KINDS[f.merge]
                       for t, et in self.schema.types.items() for f in et.fields.values()}
        self._rules = _rules(self.schema)
        self._intern_schema()

    def _intern_schema(self) -> None:
        """Give every environment, entity type and field of the schema its small id in the
        store (once; ids never change), so keys can be built without the store."""
        names = [("e", env) for env in self.schema.environments]
        for type_name, et in self.schema.types.items():
            names.append(("t", type_name))
            names.extend(("f", f"{type_name}.{f}") for f in et.fields)
        with self.store.read() as txn:
            ids = {n: self.store.name_id(txn, *n, create=False) for n in names}
        if None in ids.values():
            ids = self.store.write(lambda txn: {n: self.store.name_id(txn, *n, create=True)
                                                for n in names})
        self._env_ids = {name: i for (kind, name), i in ids.items() if kind == "e"}
        self._type_ids = {name: i for (kind, name), i in ids.items() if kind == "t"}
        self._field_ids = {tuple(name.split(".", 1)): i for (kind, name), i in ids.items()
                           if kind == "f"}
        self._field_names = {t: {self._field_ids[(t, f)]: f for f in et.fields}
                             for t, et in self.schema.types.items()}
        self._table = self._fast_table()
        # PERF: keyed by ids (``_plan_id``), the post-merge plan of a changed record is found
        # from its key alone, without touching its op
        self._plans = {
            _plan_id(state_key(self._env_ids[env], self._type_ids[t], "", self._field_ids[
                (t, f)])): plan for (env, t, f), plan in _plans(self.schema, self._rules).items()}

    def common_shapes(self, raw_ops: list, actor: Actor) -> list[bool]:
        """Which of ``raw_ops`` (client op dicts) the compiled core builds as they are: the
        common shape (a ``set_field`` or ``add_elements`` of plain values with nothing but
        ``env`` and ``intent`` besides, on a declared field, within its constraints), checked
        without Python code. The REST API holds only the others to its request-body schemas:
        an op of the common shape fits them by construction. PERF: the schema check, in
        Python, cost about 27 us per op of a 1,000-op batch, more than the whole commit;
        this costs about 1 us. On the pure-Python core no op is taken here."""
        ops = self.core.prepare_ops(raw_ops, self._table, actor.id, actor.cls,
                                    lambda raw, index: None)
        # the core reads a missing, null or empty env as the base and a null intent as none;
        # the body schemas want them absent or text
        return [op is not None and _plain_extras(raw) for op, raw in zip(ops, raw_ops)]

    def _fast_table(self):
        """What the compiled ``prepare_ops`` needs to build a common op without Python:
        ``(env ids, base env, {type: (type id, {field: (field id, record kind, number tag,
        value kind, limits)})})``, the value kinds being the kernel layout's (``VALUE_KINDS``:
        int, float, string, bool, duration, map; ``VALUE_ELEMENTS`` + the item's kind for set
        and grow fields; ``VALUE_OTHER`` anything else, sent to the full validator); limits
        None, or the field's own constraints on a value (or each element) in normal form,
        ``(min, max, allowed values, pattern's search)`` with None for those it has not: a
        value breaking one goes to the full validator, which refuses it."""
        core = self.core
        vkinds = core.VALUE_KINDS
        other = core.VALUE_OTHER
        types = {}
        for type_name, et in self.schema.types.items():
            fields = {}
            for f in et.fields.values():
                kind = self._kinds[(type_name, f.name)]
                num = core.NUM_NONE
                if kind in (core.MAX, core.MIN):
                    num = core.NUM_FLOAT if f.kind == "float" else core.NUM_INT
                if f.is_set:
                    item = vkinds.get(f.item_kind, other)
                    # an item is a scalar: a map item goes to the full validator
                    vkind = core.VALUE_ELEMENTS + item if item not in (other, core.VALUE_MAP) \
                        else other
                else:
                    vkind = vkinds.get(f.kind, other)
                limits = None
                if f.min is not None or f.max is not None or f.pattern is not None or \
                        f.one_of is not None:
                    try:
                        allowed = None if f.one_of is None else frozenset(f.one_of)
                    except TypeError:  # unhashable choices: the validator compares them
                        allowed, vkind = None, other
                    limits = (f.min, f.max, allowed,
                              None if f.pattern is None else f.pattern.search)
                    if vkind == core.VALUE_MAP:
                        vkind = other
                fields[f.name] = (self._field_ids[(type_name, f.name)], kind, num, vkind,
                                  limits)
            types[type_name] = (self._type_ids[type_name], fields)
        return (dict(self._env_ids), self.schema.base_env, types,
                self.settings.max_value_bytes)

    # -- creating and opening -----------------------------------------------------------------

    @classmethod
    def init(cls, directory: str, schema_path: str, *, core=None, sync: bool = True) -> "Engine":
        """Create ``.conflux/`` in ``directory`` from a schema file (validated first)."""
        schema = load_schema(schema_path)
        root = os.path.join(directory, CONFLUX_DIR)
        if os.path.exists(os.path.join(root, "store", "data.mdb")):
            raise InputError(f"{root} already holds a Conflux project; nothing was changed")
        os.makedirs(root, exist_ok=True)
        import shutil

        shutil.copyfile(schema_path, os.path.join(root, "schema.toml"))
        config = os.path.join(root, "config.toml")
        if not os.path.exists(config):
            defaults = Settings()
            with open(config, "w") as fh:
                fh.write(_DEFAULT_CONFIG.format(**defaults.__dict__))
        store = Store(os.path.join(root, "store"), create=True, sync=sync)

        def body(txn):
            store.meta_put(txn, "node", os.urandom(4).hex().encode())
            store.meta_put(txn, "layout", STORE_LAYOUT)
            store.meta_put(txn, "schema_name", schema.name.encode())
            store.meta_put_int(txn, "entities_from", 1)  # the entity index covers every op
        store.write(body)
        store.close()
        return cls(directory, core=core, sync=sync)

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- validating operations ----------------------------------------------------------------

    def prepare(self, raw: dict, actor: Actor, where: str = ""):
        """Validate one operation as sent by a client and turn it into a core ``Op``.

        Everything that can be checked without the store is checked here, before any write
        transaction: shape, known environment, entity type and field, value types and ranges.
        """
        core = self.core
        if not isinstance(raw, dict):
            raise ValidationError(f"{where}an operation must be an object, got "
                                  f"{type(raw).__name__}")
        unknown = raw.keys() - _OP_KEYS
        if unknown:
            names = sorted(_clip(str(k)) for k in unknown)
            raise ValidationError(f"{where}unknown key(s) {_clip(', '.join(names), 200)}"
                                  f" (allowed: {', '.join(sorted(_OP_KEYS))})",
                                  field=names[0])
        type_name = raw.get("type")
        op_type = core.OP_TYPES.get(type_name) if isinstance(type_name, str) else None
        if op_type is None or op_type == core.PROMOTE:
            allowed = ", ".join(n for n in core.OP_TYPES if n != "promote")
            raise ValidationError(f"{where}type {type_name!r} is not an operation type "
                                  f"({allowed}; promotions go through promote)", field="type")
        env = raw.get("env") or self.schema.base_env
        if not isinstance(env, str) or env not in self.schema.parents:
            raise ValidationError(f"{where}unknown environment {_clip(repr(env))} (declared: "
                                  f"{', '.join(self.schema.environments)})", field="env")
        entity_id = raw.get("entity_id")
        if not isinstance(entity_id, str):
            raise ValidationError(f"{where}entity_id must be a string like 'service.checkout'",
                                  field="entity_id")
        self.schema.split_entity_id(entity_id)
        op = self._field_op(op_type, env, entity_id, raw.get("field"), raw, where)
        op.actor, op.actor_class = actor.id, actor.cls
        intent = raw.get("intent", "")
        if intent is None:
            intent = ""
        if not isinstance(intent, str) or len(intent) > _MAX_INTENT or not is_utf8(intent):
            raise ValidationError(f"{where}intent must be text of at most {_MAX_INTENT} "
                                  "characters", field="intent")
        op.intent = intent
        op_id = raw.get("op_id")
        if op_id is not None:
            if (not isinstance(op_id, str) or not op_id or len(op_id.encode()) > _MAX_OP_ID
                    or not op_id.isprintable()):
                raise ValidationError(f"{where}op_id must be a non-empty printable string of at "
                                      f"most {_MAX_OP_ID} bytes", field="op_id")
            if _STORE_OP_ID.fullmatch(op_id):
                raise ValidationError(f"{where}op_id {op_id!r}: ids of the form <node>-<seq> (8 "
                                      "hex digits, a dash, hex digits) are reserved for the ids "
                                      "stores generate; pick another form", field="op_id")
            op.op_id = op_id
        if raw.get("hlc") is not None:
            op.hlc = core.hlc_parse(raw["hlc"])
            if op.hlc == 0:
                raise ValidationError(f"{where}hlc must be positive", field="hlc")
        override = raw.get("override", False)
        if not isinstance(override, bool):
            raise ValidationError(f"{where}override must be true or false", field="override")
        op.override = override
        base = raw.get("base")
        if base is not None:
            if not isinstance(base, list) or not all(isinstance(b, str) for b in base):
                raise ValidationError(f"{where}base must be a list of op ids", field="base")
            if op_type not in (core.SET_FIELD, core.UNSET_FIELD, core.RESOLVE):
                raise ValidationError(f"{where}base applies to set_field, unset_field and "
                                      "resolve", field="base")
            op.base = sorted(set(base))
        if raw.get("signature") is not None or raw.get("key_id") is not None:
            sig, key_id = raw.get("signature"), raw.get("key_id")
            if not isinstance(sig, str) or not isinstance(key_id, str):
                raise ValidationError(f"{where}signature and key_id go together, as text",
                                      field="signature")
            op.signature, op.key_id = sig, key_id
        return op

    def _field_op(self, op_type, env, entity_id, field_name, raw, where="", *,
                  constrained=True):
        """A core ``Op`` for one entity or field, with value, kind and key material set.
        Values bigger than ``[limits] max_value_bytes`` or nested too deep are refused before
        they are copied or encoded (a YAML alias can make a small document a huge value).

        With ``constrained``, a value (or added element) that breaks its field's own
        constraints (``min``, ``max``, ``pattern``, ``one_of``) is refused: it could only ever
        be recorded as a violation. A promotion copies resolved values as they are.

        A ``remove_elements`` or an ``add_elements`` may name the add tags it observed
        (``observed``, one list per element); otherwise it observes every live tag of its
        elements in this store. A client's list is only checked for shape here: when the op
        is accepted, the core keeps its plain tags (client op ids) as named, so the op kills
        them whether it arrives before or after them, and its store-generated tags only if
        live here, so a client cannot kill what this store does not hold (see
        ``_bind_observed`` in the core).
        """
        core = self.core
        op = core.Op()
        op.type, op.env, op.entity = op_type, env, entity_id
        type_name = entity_id.partition(".")[0]
        if op_type == core.DELETE_ENTITY:
            if field_name is not None:
                raise ValidationError(f"{where}delete_entity takes no field", field="field")
            for key in ("value", "elements"):
                if raw.get(key) is not None:
                    raise ValidationError(f"{where}delete_entity takes no {key}", field=key)
            op.kind = core.ENTITY
            op.key = self._key(env, entity_id, None)
            return op
        if not isinstance(field_name, str):
            raise ValidationError(f"{where}{core.OP_NAMES[op_type]} needs a field",
                                  field="field")
        spec = self.schema.field(type_name, field_name)
        op.field = field_name
        op.kind = self._kinds[(type_name, field_name)]
        op.key = self._key(env, entity_id, field_name)
        label = f"{where}{entity_id}.{field_name}"
        if op_type in (core.SET_FIELD, core.RESOLVE):
            if spec.is_set:
                raise ValidationError(f"{label} is a {spec.merge} field: use add_elements or "
                                      "remove_elements", field=field_name)
            if op_type == core.RESOLVE and spec.merge != "review":
                raise ValidationError(f"{label} is a {spec.merge} field: only review fields "
                                      "have conflicts to resolve", field=field_name)
            if raw.get("value") is None:
                raise ValidationError(f"{label}: {core.OP_NAMES[op_type]} needs a value (use "
                                      "unset_field to remove one)", field=field_name)
            if raw.get("elements") is not None:
                raise ValidationError(f"{label}: elements go with add_elements and "
                                      "remove_elements", field=field_name)
            self._check_value(raw["value"], label, field_name)
            value = _located(spec.coerce, raw["value"], where)
            if constrained:
                _within(spec, value, label)
            op.value = value
            op.vbytes = _packed(value, label)
            self._check_stored(len(op.vbytes), label, field_name)
            if op.kind in (core.MAX, core.MIN):
                op.num_tag = core.NUM_FLOAT if spec.kind == "float" else core.NUM_INT
        elif op_type == core.UNSET_FIELD:
            if spec.merge == "grow":
                raise ValidationError(f"{label} is a grow-only field: it cannot be unset",
                                      field=field_name)
            for key in ("value", "elements"):
                if raw.get(key) is not None:
                    raise ValidationError(f"{label}: unset_field takes no {key}",
                                          field=field_name)
        else:  # add_elements / remove_elements
            name = core.OP_NAMES[op_type]
            if not spec.is_set:
                raise ValidationError(f"{label} is a {spec.merge} field: {name} needs a set or "
                                      "grow field (use set_field)", field=field_name)
            if op_type == core.REMOVE_ELEMENTS and spec.merge == "grow":
                raise ValidationError(f"{label} is grow-only: elements cannot be removed",
                                      field=field_name)
            elements = raw.get("elements")
            if raw.get("value") is not None:
                raise ValidationError(f"{label}: {name} takes elements, not value",
                                      field=field_name)
            if not isinstance(elements, list) or not elements:
                raise ValidationError(f"{label}: {name} needs a non-empty list of elements",
                                      field=field_name)
            self._check_value(elements, label, field_name)
            by_bytes = {}
            for item in elements:
                item = _located(spec.coerce_element, item, where)
                by_bytes[_packed(item, label)] = item
            op.ebytes = sorted(by_bytes)
            self._check_stored(sum(map(len, op.ebytes)), label, field_name)
            op.elements = [by_bytes[b] for b in op.ebytes]
            if constrained and op_type == core.ADD_ELEMENTS:
                _within(spec, op.elements, label)
            observed = raw.get("observed")
            if observed is not None:
                if spec.merge == "grow" or not (
                        isinstance(observed, list) and len(observed) == len(elements)
                        and all(isinstance(o, list) and all(isinstance(t, str) for t in o)
                                for o in observed)):
                    raise ValidationError(f"{label}: observed must be a list of op-id lists, "
                                          f"one per element of the {name} on a set field",
                                          field="observed")
                paired = {}
                for item, tags in zip(elements, observed):
                    key = msgpack.packb(spec.coerce_element(item), use_bin_type=True)
                    paired[key] = sorted(set(paired.get(key, [])) | set(tags))
                op.observed = [paired[b] for b in op.ebytes]
        return op

    def _check_value(self, value, label, field_name) -> None:
        """A value as sent, before anything copies or encodes it (a walk that stops at the
        bounds): the depth, and the size as a lower bound of what it will be stored as."""
        problem = value_problem(value, self.settings.max_value_bytes)
        if problem is not None:
            raise ValidationError(f"{label}: {problem}", field=field_name)

    def _check_stored(self, size: int, label, field_name) -> None:
        limit = self.settings.max_value_bytes
        if size > limit:
            raise ValidationError(f"{label}: the value is {size:,} bytes stored, larger than "
                                  f"{limit:,} bytes, the most a field value may be (config.toml: "
                                  "[limits] max_value_bytes)", field=field_name)

    # -- writing ------------------------------------------------------------------------------

    def apply(self, raw_ops: list[dict], actor: Actor, *, dry_run: bool = False) -> list[Ack]:
        """Validate and apply a batch of operations atomically (one synced commit).

        A bad operation refuses the whole batch, naming its index; nothing is written. An op
        whose op id is already in the log is acknowledged again without being applied twice.
        """
        return self._write(self._maker(raw_ops, actor), dry_run=dry_run)

    def _maker(self, raw_ops, actor, *, signatures_checked: bool = False):
        """A function building the batch's ops afresh (validating them) on each call;
        ``signatures_checked``: a daemon worker verified the signatures already."""
        if not isinstance(raw_ops, list):
            raise ValidationError("a batch must be a list of operations")
        single = len(raw_ops) == 1

        def slow(raw, i):
            return self.prepare(raw, actor, "" if single else f"op {i}: ")

        def make():
            ops = self.core.prepare_ops(raw_ops, self._table, actor.id, actor.cls, slow)
            if not signatures_checked:
                self._check_signatures(ops, actor)
            return ops
        return make

    def signatures_to_check(self, raw_ops, actor) -> bool:
        """Whether a batch has signatures to verify (or must have them)."""
        return actor.cls in self.settings.require_signatures or any(
            isinstance(op, dict) and op.get("signature") is not None for op in raw_ops)

    def check_signatures(self, raw_ops, actor) -> None:
        """Validate a batch and verify its signatures, writing nothing (a daemon worker does
        this before handing the batch to the commit service, so that the one service process
        does not spend its time on Ed25519)."""
        self._maker(raw_ops, actor)()

    def _check_signatures(self, ops, actor) -> None:
        """Refuse the batch if a signature does not hold, or if ``actor``'s class must sign
        (``[signatures] require``) and an operation is unsigned (``conflux.signing``)."""
        required = actor.cls in self.settings.require_signatures
        signed = [i for i, op in enumerate(ops) if op.signature is not None]
        if not signed and not required:
            return  # PERF: the common case costs one pass
        from conflux.signing import SignatureRefused, content_of_op

        where = (lambda i: "") if len(ops) == 1 else (lambda i: f"op {i}: ")
        if required and len(signed) < len(ops):
            i = next(i for i, op in enumerate(ops) if op.signature is None)
            raise SignatureRefused(f"{where(i)}operations by {actor.cls} actors must be signed "
                                   "(config.toml: [signatures] require)")
        registry, now = self.signatures.refresh(), now_ms()
        for i in signed:
            op = ops[i]
            if not op.op_id or not op.hlc:
                raise SignatureRefused(f"{where(i)}a signed operation carries its own op_id "
                                       "and hlc: both are signed")
            if op.base is None and op.kind == self.core.STRATEGY_KINDS["review"] and \
                    op.type in (self.core.SET_FIELD, self.core.UNSET_FIELD):
                raise SignatureRefused(f"{where(i)}a signed write to a review field carries "
                                       "its base (the op ids it saw; [] for none): the store "
                                       "would otherwise bind one the signature does not cover")
            reason = registry.check(content_of_op(self, op), op.signature, op.key_id,
                                    actor.id, actor.cls, now, refresh=False)
            if reason is not None:
                hint = (" (sign the content as the store logs it: values in normal form, "
                        "durations in ms, refs as full ids; see conflux/signing.py)"
                        if reason.startswith("the signature does not match") else "")
                raise SignatureRefused(f"{where(i)}signature refused: {reason}{hint}",
                                       field="signature")

    @property
    def signatures(self):
        """The key registry (``keys.json``), read again whenever the file changes."""
        if self._signatures is None:
            from conflux.signing import REGISTRY_FILE, Registry

            self._signatures = Registry(os.path.join(self.root, REGISTRY_FILE))
        return self._signatures

    _signatures = None

    def validated(self, raw_ops: list[dict], actor: Actor, *, signatures_checked: bool = False):
        """Validate a batch now, for a commit later (``commit_validated``): returns the maker
        of its ops. Group commit validates each request's batch before queueing it, so a bad
        batch fails alone."""
        make = self._maker(raw_ops, actor, signatures_checked=signatures_checked)
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
        return self.store.write(body)

    def apply_entries(self, entries: list[bytes]) -> list[Ack]:
        """Apply op-log entries exported by another store (their context already bound).

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
        return self._write(make_ops)

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
        type_name = op.entity.partition(".")[0]
        spec = self.schema.field(type_name, op.field)
        op.key = self._key(op.env, op.entity, op.field)
        op.kind = self._kinds[(type_name, op.field)]
        if op.value is not None:
            # a peer's entry is validated like a client's op: a value this schema would refuse
            # (a NaN in a max register, say) must not enter through replication
            op.value = spec.coerce(op.value)
            op.vbytes = msgpack.packb(op.value, use_bin_type=True)
            if op.kind in (core.MAX, core.MIN):
                op.num_tag = core.NUM_FLOAT if spec.kind == "float" else core.NUM_INT
        if op.elements is not None:
            op.elements = [spec.coerce_element(e) for e in op.elements]
            op.ebytes = [msgpack.packb(e, use_bin_type=True) for e in op.elements]

    def _write(self, make_ops, *, dry_run=False, expand=None):
        """Commit the ops ``make_ops()`` builds, in one synced write transaction.

        They are built (and so validated) before the transaction opens. If the transaction
        has to run again (the map grew), fresh ops are built: merging binds context into them.
        """
        pending = [make_ops()]

        def body(txn):
            ops = pending.pop() if pending else make_ops()
            if expand is not None:
                expand(txn, ops)
            return self._commit(txn, ops, dry_run, _small(ops))
        return self.store.write(body, commit=not dry_run)

    def _commit(self, txn, ops, dry_run, small=()):
        """Log and merge ``ops`` in ``txn``; ``small``: the ``(start, end)`` index ranges of
        the requests (``OUTCOME_OPS`` ops or fewer) whose acks tell each op's outcome."""
        core, store = self.core, self.store
        dbs = store.dbs
        wall = now_ms()
        seq, clock = store.log_tail(txn)
        horizon = store.meta_int(txn, "horizon")
        offset = self.settings.max_clock_offset_ms
        own_prefix = self.node + "-"
        acks: list[Ack | None] = [None] * len(ops)
        fresh = []
        in_batch: dict[str, int] = {}
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
                found = self._seq_of(txn, op.op_id)
                if found is not None:
                    acks[i] = self._ack_existing(txn, op, found, i if len(ops) > 1 else None)
                    continue
                if op.op_id.startswith(own_prefix):
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
        with txn.cursor(db=dbs["state"]) as cur:
            merged = core.apply_batch(leaves, cur)
        changes = self._post_merge(txn, merged, dry_run)
        outcomes = {}
        for lo, hi in small:
            for i in range(lo, hi):
                if ops[i].type != core.PROMOTE:
                    ack = acks[i]  # a retry: the hlc is the logged op's
                    hlc = (ops[i].hlc if ack is None else ops[ack].hlc if isinstance(ack, int)
                           else ack.hlc)
                    outcomes[i] = self._outcome(txn, ops[i], hlc, merged)
        if fresh:
            store.log_append(txn, core.encode_chunks(fresh, clock, store.CHUNK_LIMIT))
            if not dry_run:  # (a dry run's transaction is thrown away)
                self._index_entities(txn, fresh)
            # the ops that came with an op id of their own (the store's ids need no index)
            indexed = sorted((op_id.encode(), SEQ.pack(ops[i].seq))
                             for op_id, i in in_batch.items())
            if indexed:
                with txn.cursor(db=dbs["opids"]) as cur:
                    cur.putmulti(indexed)
        return Acks(ops, acks, changes, outcomes=outcomes)

    def _index_entities(self, txn, fresh) -> None:
        """Bring the per-entity index (``conflux.store``) up to this commit when it has
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
            store.meta_put_int(txn, "entities_from", fresh[0].seq)
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
            return None
        raw = txn.get(op_id.encode(), db=self.store.dbs["opids"])
        return None if raw is None else SEQ.unpack(raw)[0]

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

    def _outcome(self, txn, op, hlc: int, merged) -> tuple[bool, object]:
        """``(applied, value)`` of an op merged in ``txn`` (``merged``: what ``apply_batch``
        returned): whether its write is what the field shows in the op's environment (for a
        delete, whether it is the entity's latest delete), and the field's resolved value
        there, inherited included (None if none). ``log`` tells the same afterwards from the
        logged op (``describe``)."""
        core, state = self.core, self.store.dbs["state"]
        _, _, changed, markers = merged
        ekey = op.key[:-2] + b"\x00\x00"
        d = markers.get(ekey)
        if d is None:  # a retry: its entity was not touched
            d = _marker_hlc(txn.get(ekey, db=state))
        if op.type == core.DELETE_ENTITY:
            return d == hlc, None
        rec = changed.get(op.key) or txn.get(op.key, db=state)
        present, held, winner = (
            (False, None, None) if rec is None else core.resolve_record(rec, d))
        value = None
        if present:
            value = self._decode_value(op.entity.partition(".")[0], op.field, held)
        elif not d:  # nothing of its own, and no delete marker: inherited
            value = self._inherited(txn, op.env, op.entity, op.field)
        if op.type in (core.SET_FIELD, core.RESOLVE):
            applied = present and winner[2] == op.op_id
        elif op.type == core.UNSET_FIELD:
            applied = not present
        elif op.type == core.ADD_ELEMENTS:
            applied = present and set(op.ebytes) <= set(held)
        else:  # remove_elements
            applied = not present or not set(op.ebytes) & set(held)
        return bool(applied), value

    def _inherited(self, txn, env, entity_id, field_name):
        """The value of a field ``env`` inherits from its parents (None if none)."""
        state = self.store.dbs["state"]
        for level in self.schema.env_chain(env)[1:]:
            key = self._key(level, entity_id, field_name)
            d = _marker_hlc(txn.get(key[:-2] + b"\x00\x00", db=state))
            rec = txn.get(key, db=state)
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

    # -- after the merge: conflicts and violations --------------------------------------------

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
        rec = rec if rec is not None else txn.get(key, db=self.store.dbs["state"])
        if rec is not None and len(self.core.review_candidates(rec, d)) > 1:
            txn.put(key, b"", db=self.store.dbs["conflicts"])
        else:
            txn.delete(key, db=self.store.dbs["conflicts"])

    def _describe(self, op) -> dict:
        core = self.core
        out = {"type": core.OP_NAMES[op.type], "env": op.env, "entity_id": op.entity}
        if op.field:
            out["field"] = op.field
        if op.type in (core.SET_FIELD, core.RESOLVE):
            out["before"] = None if op.prev is None else msgpack.unpackb(op.prev)
            out["after"] = op.value
        elif op.type == core.UNSET_FIELD:
            out["before"] = None if op.prev is None else msgpack.unpackb(op.prev)
            out["after"] = None
        elif op.elements is not None:
            out["elements"] = op.elements
        return out

    # -- reading ------------------------------------------------------------------------------

    def _env_levels(self, txn, env):
        """(env, env id) up the inheritance chain."""
        return [(level, self._env_ids[level]) for level in self.schema.env_chain(env)]

    def _view(self, txn, env, entity_id, *, with_records=False) -> dict:
        """The resolved fields of one entity in ``env``: own value, else the parent's, up to
        the base. A delete marker in a level hides what that level inherits. Fields never set
        are absent (defaults are the caller's business)."""
        core = self.core
        type_name, _, name = entity_id.partition(".")
        if type_name not in self.schema.types:
            return {}
        type_id = self._type_ids[type_name]
        fields = self._field_names[type_name]
        state = self.store.dbs["state"]
        view = {}
        with txn.cursor(db=state) as cur:
            for level, env_id in self._env_levels(txn, env):
                prefix = entity_prefix(env_id, type_id, name)
                records = {}
                if cur.set_range(prefix):
                    for key, rec in cur:
                        if not key.startswith(prefix):
                            break
                        records[struct.unpack(">H", key[-2:])[0]] = rec
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

    def _decode_value(self, type_name, fname, value):
        if isinstance(value, list):  # set elements
            items = [msgpack.unpackb(e) for e in value]
            return sorted(items, key=_natural)
        return msgpack.unpackb(value)

    def _entity_ids(self, txn, env, types=None) -> list[str]:
        """Every entity id that has records somewhere up ``env``'s chain (visible or not)."""
        type_names = self.store.names(txn, "t")
        found = set()
        state = self.store.dbs["state"]
        with txn.cursor(db=state) as cur:
            for _, env_id in self._env_levels(txn, env):
                prefix = struct.pack(">H", env_id)
                if not cur.set_range(prefix):
                    continue
                for key in cur.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    _, type_id, name, _ = split_state_key(key)
                    type_name = type_names.get(type_id)
                    if type_name in self.schema.types and (types is None or type_name in types):
                        found.add(f"{type_name}.{name}")
        return sorted(found)

    def get(self, entity_id: str, env: str | None = None, field: str | None = None) -> dict:
        """The resolved fields of an entity: ``{field: {value, env, actor, op_id, hlc}}``, with
        defaults marked ``env: None, default: True``. Raises NotFound if it does not exist."""
        env = self._env(env)
        type_name, _ = self.schema.split_entity_id(entity_id)
        if field is not None:
            self.schema.field(type_name, field)
        with self.store.read() as txn:
            view = self._view(txn, env, entity_id)
        if not view:
            raise NotFound(f"entity {entity_id} does not exist in {env}", entity=entity_id)
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

    def state(self, env: str | None = None, types: list[str] | None = None) -> dict[str, dict]:
        """The resolved state of an environment: ``{entity id: {field: value}}``, defaults
        included, entities in id order (only those of ``types`` when given)."""
        env = self._env(env)
        with self.store.read() as txn:
            ids = self._entity_ids(txn, env, set(types) if types is not None else None)
            return self._resolved(txn, env, ids)

    def resolved(self, entity_ids, env: str | None = None) -> dict[str, dict]:
        """``state`` for the given entities only (those that do not exist are left out)."""
        env = self._env(env)
        with self.store.read() as txn:
            return self._resolved(txn, env, entity_ids)

    def _resolved(self, txn, env, entity_ids) -> dict[str, dict]:
        out = {}
        for entity_id in entity_ids:
            view = self._view(txn, env, entity_id)
            if not view:
                continue
            fields = {}
            for spec in self.schema.types[entity_id.partition(".")[0]].fields.values():
                if spec.name in view:
                    fields[spec.name] = view[spec.name]["value"]
                elif spec.default is not None:
                    fields[spec.name] = spec.default
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
        state = self.store.dbs["state"]
        out = {env: {} for env in envs}
        with self.store.read() as txn, txn.cursor(db=state) as cur:
            for entity_id in entity_ids:
                type_name, _, name = entity_id.partition(".")
                if type_name not in self.schema.types:
                    continue
                type_id, fields = self._type_ids[type_name], self._field_names[type_name]
                for env in envs:
                    prefix = entity_prefix(self._env_ids[env], type_id, name)
                    records = {}
                    if cur.set_range(prefix):
                        for key, rec in cur:
                            if not key.startswith(prefix):
                                break
                            records[struct.unpack(">H", key[-2:])[0]] = rec
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
            with txn.cursor(db=self.store.dbs["state"]) as cur:
                for key, rec in cur:
                    env_id, type_id, name, fid = split_state_key(key)
                    out[(envs[env_id], f"{types[type_id]}.{name}", fields.get(fid, ""))] = rec
        return out

    def _env(self, env):
        env = env or self.schema.base_env
        self.schema.env_chain(env)  # NotFound for an unknown environment
        return env

    def log(self, *, limit: int | None = None, entity: str | None = None,
            actor: str | None = None, since=None, start: int | None = None,
            reverse: bool = True):
        """Logged ops (``Op`` with its ``seq``), newest first by default.

        ``since`` is a sequence number, an HLC (``hlc:...``) or an ISO date/time; ``start``
        begins at a sequence number (oldest first when ``reverse`` is false).
        """
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
        """One poll for watchers (``conflux watch``, ``GET /v1/watch``): the ops logged after
        sequence ``after``, at most ``limit`` read, that touch ``entity`` and ``env`` (a
        promotion touches those of its children); and the sequence number read up to."""
        ops = self.log(start=after + 1, reverse=False, limit=limit)
        touching = [op for op in ops
                    if (entity is None or any(p.entity == entity for p in op_parts(op)))
                    and (env is None or any(p.env == env for p in op_parts(op)))]
        return touching, ops[-1].seq if ops else after

    def op_dict(self, op) -> dict:
        """A logged operation as the CLI, the API, watch streams and webhooks show it."""
        core = self.core
        out = {"seq": op.seq, "op_id": op.op_id, "type": core.OP_NAMES[op.type],
               "env": op.env, "entity_id": op.entity or None, "field": op.field or None,
               "actor": op.actor, "actor_class": op.actor_class, "intent": op.intent,
               "hlc": core.hlc_format(op.hlc), "override": op.override}
        if op.value is not None:
            out["value"] = op.value
        if op.elements is not None:
            out["elements"] = op.elements
        if op.prev is not None:
            out["previous"] = msgpack.unpackb(op.prev)
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
                old = msgpack.unpackb(op.prev)
                text = f"{target}: {spec.format(old)} → {spec.format(op.value)}"
                if spec.merge in ("max", "min") and not op.override and kind == "set_field" \
                        and (old > op.value if spec.merge == "max" else old < op.value):
                    text = (f"{target}: {spec.format(old)} kept ({spec.format(op.value)} "
                            f"written, {spec.merge} wins)")
            if kind == "resolve":
                text += " (resolved)"
        elif kind == "unset_field":
            text = (f"{target}: {spec.format(msgpack.unpackb(op.prev))} → unset"
                    if new_from_unset and op.prev is not None else f"{target} unset")
        elif kind in ("add_elements", "remove_elements"):
            sign = "+" if kind == "add_elements" else "-"
            text = f"{target}: " + " ".join(sign + spec.format_element(e) for e in op.elements)
        elif kind == "delete_entity":
            text = f"{op.entity} deleted"
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

    def blame(self, entity_id: str, env: str | None = None) -> dict:
        """Per field: value, the environment it comes from, and the op that set it (actor,
        class, intent, hlc, op id, sequence)."""
        env = self._env(env)
        self.schema.split_entity_id(entity_id)
        with self.store.read() as txn:
            view = self._view(txn, env, entity_id)
            if not view:
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

    def conflicts(self, env: str | None = None) -> list[dict]:
        """Review fields with concurrent candidates, each with its candidates."""
        core = self.core
        out = []
        with self.store.read() as txn:
            envs, types = self.store.names(txn, "e"), self.store.names(txn, "t")
            fields = self.store.names(txn, "f")
            with txn.cursor(db=self.store.dbs["conflicts"]) as cur:
                keys = list(cur.iternext(values=False))
            for key in keys:
                env_id, type_id, name, fid = split_state_key(key)
                if env is not None and envs[env_id] != env:
                    continue
                rec = txn.get(key, db=self.store.dbs["state"])
                d = _marker_hlc(txn.get(key[:-2] + b"\x00\x00", db=self.store.dbs["state"]))
                type_name, fname = types[type_id], fields[fid].partition(".")[2]
                cands = []
                for hlc, actor, op_id, present, value in core.review_candidates(rec, d):
                    op = self._find_op(txn, op_id)
                    cands.append({"op_id": op_id, "actor": actor,
                                  "actor_class": op.actor_class if op else None,
                                  "intent": op.intent if op else None, "hlc": hlc,
                                  "value": msgpack.unpackb(value) if present else None})
                out.append({"env": envs[env_id], "entity_id": f"{type_name}.{name}",
                            "field": fname, "candidates": cands,
                            "effective": cands[-1]["value"] if cands else None})
        return out

    def violations(self, env: str | None = None) -> list[dict]:
        out = []
        with self.store.read() as txn:
            envs, types = self.store.names(txn, "e"), self.store.names(txn, "t")
            fields = self.store.names(txn, "f")
            with txn.cursor(db=self.store.dbs["violations"]) as cur:
                for key, msg in cur:
                    env_id, type_id, name, fid = split_state_key(key)
                    if env is not None and envs[env_id] != env:
                        continue
                    out.append({"env": envs[env_id], "entity_id": f"{types[type_id]}.{name}",
                                "field": fields[fid].partition(".")[2],
                                "message": msgpack.unpackb(msg)[0]})
        return out

    def status(self) -> dict:
        from conflux.milestones import last_milestone as _last_milestone
        from conflux.webhooks import webhook_status  # not on every command's start

        core = self.core
        with self.store.read() as txn:
            seq, clock = self.store.log_tail(txn)
            horizon = self.store.meta_int(txn, "horizon")
            envs = {}
            for env in self.schema.environments:
                ids = [e for e in self._entity_ids(txn, env)]
                live = [e for e in ids if self._view(txn, env, e)]
                envs[env] = {"entities": len(live),
                             "inherits": self.schema.parents.get(env)}
            n_conflicts = txn.stat(self.store.dbs["conflicts"])["entries"]
            n_violations = txn.stat(self.store.dbs["violations"])["entries"]
            n_records = txn.stat(self.store.dbs["state"])["entries"]
            webhooks = webhook_status(self.store, txn)  # cursors and failures (webhooks.py)
            info = self.store.env.info()  # in the transaction: the map cannot move meanwhile
            m = _last_milestone(self.store, txn)
            last_milestone = None if m is None else {
                "id": m.id, "commit": m.commit, "title": m.title, "seq": m.seq,
                "pending_operations": seq - m.seq}
        return {
            "project": self.schema.name, "schema_version": self.schema.version,
            "directory": self.root, "core": core.IMPLEMENTATION, "node": self.node,
            "operations": seq, "clock": core.hlc_format(clock) if clock else None,
            "compaction_horizon": core.hlc_format(horizon) if horizon else None,
            "environments": envs, "records": n_records, "conflicts": n_conflicts,
            "violations": n_violations, "store_map_bytes": info["map_size"],
            "last_milestone": last_milestone, "webhooks": webhooks,
        }

    # -- promotion, resolution, compaction ----------------------------------------------------

    def promote(self, source: str, target: str, entities: list[str] | None, actor: Actor, *,
                intent: str = "", dry_run: bool = False) -> Ack:
        """Copy the resolved values of ``source`` into ``target`` as one recorded operation
        whose parts are field operations in ``target`` (override writes, so the target ends
        with exactly the source's values whatever their strategies)."""
        core = self.core
        for env in (source, target):
            self._env(env)
        if source == target:
            raise InputError("promote needs two different environments")
        for entity_id in entities or ():
            self.schema.split_entity_id(entity_id)

        def make_parent():
            parent = core.Op()
            parent.type, parent.env, parent.entity = core.PROMOTE, target, ""
            parent.actor, parent.actor_class, parent.intent = actor.id, actor.cls, intent
            parent.value = {"from": source, "entities": sorted(entities) if entities else None}
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
        if horizon is None:
            horizon = core.hlc_pack(now_ms() - self.settings.stability_window_s * 1000, 0)
        stats = {"records": 0, "rewritten": 0, "deleted": 0}

        def body(txn):
            state = self.store.dbs["state"]
            old = self.store.meta_int(txn, "horizon")
            h = max(horizon, old)
            with txn.cursor(db=state) as cur:
                items = list(cur)
            markers = {k[:-2]: _marker_hlc(r) for k, r in items if k.endswith(b"\x00\x00")}
            alive = {}
            for key, rec in items:
                stats["records"] += 1
                if key.endswith(b"\x00\x00"):
                    continue
                new = core.compact_record(rec, h, markers.get(key[:-2], 0))
                if new is None:
                    txn.delete(key, db=state)
                    stats["deleted"] += 1
                else:
                    alive[key[:-2]] = True
                    if new != rec:
                        txn.put(key, new, db=state)
                        stats["rewritten"] += 1
            base = struct.pack(">H", self._env_ids[self.schema.base_env])
            for prefix, d in markers.items():
                # In the base environment, a marker older than the horizon hides nothing any
                # more once what it hid is gone: every later write is newer than it anyway.
                # In an overlay it also stops inheritance from the parent, so it stays.
                if d < h and prefix not in alive and prefix.startswith(base):
                    txn.delete(prefix + b"\x00\x00", db=state)
                    stats["deleted"] += 1
            self.store.meta_put_int(txn, "horizon", h)
            return h
        stats["horizon"] = core.hlc_format(self.store.write(body))
        return stats


def _packed(value, label) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
        raise ValidationError(f"{label}: the value cannot be stored ({exc})") from None


def _located(fn, value, where):
    try:
        return fn(value)
    except ValidationError as exc:
        if where:
            exc.message = where + exc.message
            exc.args = (exc.message,)
        raise


def _small(ops) -> list:
    return [(0, len(ops))] if len(ops) <= OUTCOME_OPS else []


def _within(spec, value, label) -> None:
    """Refuse a value breaking its field's own constraints (docs/concepts.md, validation)."""
    if spec.min is None and spec.max is None and spec.pattern is None and spec.one_of is None:
        return
    broken = spec.violations(value, label="element" if spec.kind == "list" else "value")
    if broken:
        raise ValidationError(f"{label}: {'; '.join(broken)}", field=spec.name)


def _natural(value):
    return (type(value).__name__, value if not isinstance(value, (dict, list)) else repr(value))


def _pick_core(core):
    if core is None:
        return default_core
    if isinstance(core, str):
        if core not in TWINS:
            raise ConfluxError(f"core {core!r} is not available (have: {', '.join(TWINS)})")
        return TWINS[core]
    return core


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
    an overlay with no records of an entity is known to inherit it with one cursor probe.
    Dangling refs are indexed by target (the ``dangling`` table) so that creating the target
    clears them without a scan.
    """

    def __init__(self, engine, txn, changed, markers):
        self.engine, self.txn = engine, txn
        self.store, self.schema, self.core = engine.store, engine.schema, engine.core
        self.state = self.store.dbs["state"]
        self.changed, self.markers = changed, markers
        self.records: dict[tuple[str, str], dict | None] = {}
        self.views: dict[tuple[str, str], dict] = {}
        # PERF: with no violations on record there are none to look up and clear
        self.any_recorded = txn.stat(self.store.dbs["violations"])["entries"] > 0

    def run_simple(self, simple):
        """Fields checked from their new record alone: ``(key, record, field spec)``."""
        resolve, unpackb = self.core.resolve_record, msgpack.unpackb
        markers, any_recorded = self.markers, self.any_recorded
        for key, rec, spec in simple:
            present, value, _ = resolve(rec, markers[key[:-2] + b"\x00\x00"])
            if present:
                value = ([unpackb(e) for e in value] if isinstance(value, list)
                         else unpackb(value))
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
            prefix = self.engine._key(env, entity_id, None)[:-2]
            found = None
            with self.txn.cursor(db=self.state) as cur:
                if cur.set_range(prefix) and cur.key().startswith(prefix):
                    found = {}
                    for k, rec in cur:
                        if not k.startswith(prefix):
                            break
                        found[struct.unpack(">H", k[-2:])[0]] = rec
            self.records[key] = found
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
            self.views[key] = self.engine._view(self.txn, env, entity_id)
        return bool(self.views[key])

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

    def _record_key(self, key, messages, targets):
        txn, dbs = self.txn, self.store.dbs
        env_id = struct.unpack_from(">H", key)[0]
        old = txn.get(key, db=dbs["violations"]) if self.any_recorded else None
        if old is not None:
            for target in msgpack.unpackb(old)[1]:
                txn.delete(_dangling_key(env_id, target, key), db=dbs["dangling"])
        if not messages:
            if old is not None:
                txn.delete(key, db=dbs["violations"])
            return
        txn.put(key, msgpack.packb(["; ".join(messages), targets]), db=dbs["violations"])
        for target in targets:
            txn.put(_dangling_key(env_id, target, key), b"", db=dbs["dangling"])

    def _dangling_to(self, env, entity_id):
        """(referrer entity id, field) whose violation says they point at a missing
        ``entity_id`` in ``env``."""
        prefix = _dangling_key(self.engine._env_ids[env], entity_id, b"")
        out = []
        with self.txn.cursor(db=self.store.dbs["dangling"]) as cur:
            if cur.set_range(prefix):
                for k in cur.iternext(values=False):
                    if not k.startswith(prefix):
                        break
                    out.append(self._names_of(k[len(prefix):]))
        return out

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


def _dangling_key(env_id: int, target: str, referrer_key: bytes) -> bytes:
    return struct.pack(">H", env_id) + target.encode() + b"\x00" + referrer_key
