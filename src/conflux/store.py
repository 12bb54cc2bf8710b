"""The LMDB store under ``.conflux/``: the only module that talks to lmdb.

Named databases:

``state``       state key -> packed record (see ``kernel/FORMAT.md``)
``log``         first sequence number (u64 big-endian) -> a chunk of op-log entries
``opids``       op id -> sequence number (u64 big-endian), for idempotent retries and blame
``names``       interned names: ``e:<env>``, ``t:<type>``, ``f:<type>.<field>`` -> u16 id
``meta``        clock, last sequence number, node id, compaction horizon, settings
``conflicts``   state key of a review field with concurrent candidates -> b""
``violations``  state key of a field breaking a constraint -> msgpack ``[message, [dangling
                ref targets]]``
``dangling``    ``env id · target entity id · 0x00 · referrer state key`` -> b"": the
                violations a new entity may clear
``milestones``  milestone number (u32 big-endian) -> msgpack record: the git commit, the last
                sequence number it covers, its environments and their git trees
``entities``    the per-entity index of the op log: ``last seq (u64 BE) · part (u16 BE)`` ->
                the ids of the entities written by the ops after the previous key's last seq
                up to this one, joined by newlines (a value stays within a page, hence the
                parts). ``log --entity`` reads only the ranges naming the entity. Keys grow
                with the log (appends); a commit of ``ENTITY_BATCH`` ops or more writes its
                range, smaller ones wait until ``ENTITY_RANGE`` ops do, so a single-op
                commit rarely writes it. Meta
                ``entities_from`` is the first sequence number it covers (a store made before
                the index: its first commit since)

State keys are ``env id (u16 BE) · type id (u16 BE) · name · 0x00 · field id (u16 BE)``, so
the fields of an entity are adjacent (one cursor range per ``get``) and one environment is one
sequential scan. Field id 0 holds the entity's delete marker.

Commits are synced (LMDB's default): an acknowledged batch survives ``kill -9`` and power
loss. LMDB serialises writers across processes, so the CLI and every daemon worker may use one
store at once. The map grows by itself: a write that fills it is retried on a larger map.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading

import lmdb

from conflux.errors import StoreError

__all__ = ["Store", "LogChunk", "SEQ", "state_key", "entity_prefix", "open_env"]

SEQ = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_U32 = struct.Struct("<I")
_LAST_SEQ = 2 ** 64 - 1

_DATABASES = (b"state", b"log", b"opids", b"names", b"meta", b"conflicts", b"violations",
              b"dangling", b"milestones", b"entities")
_INITIAL_MAP = 64 << 20
_MAX_ATTEMPTS = 40
#: A write transaction starts only with at least this share of the map free (doubled before
#: it otherwise): a write that finds the map full midway is thrown away and run again.
_HEADROOM = 0.5


def entity_prefix(env_id: int, type_id: int, name: str) -> bytes:
    return _U16.pack(env_id) + _U16.pack(type_id) + name.encode() + b"\x00"


def state_key(env_id: int, type_id: int, name: str, field_id: int) -> bytes:
    return entity_prefix(env_id, type_id, name) + _U16.pack(field_id)


def split_state_key(key: bytes) -> tuple[int, int, str, int]:
    """(env id, type id, name, field id)."""
    return (_U16.unpack_from(key, 0)[0], _U16.unpack_from(key, 2)[0],
            key[4:-3].decode(), _U16.unpack_from(key, len(key) - 2)[0])


class LogChunk:
    """The op-log entries of one commit: ``count (u32) · clock (u64) · offsets (u32 each) ·
    entries`` (written by the core's ``encode_chunks``).

    PERF: one LMDB record per page-sized run of entries instead of one per operation, which is
    what lets a skewed batch (the same fields rewritten) cost little more than its distinct
    fields; sequence numbers stay dense. The clock after the commit rides in every chunk, so
    a commit writes no other table.
    """

    HEAD = struct.Struct("<IQ")

    @classmethod
    def unpack(cls, data: bytes) -> list[bytes]:
        n = cls.HEAD.unpack_from(data)[0]
        offsets = struct.unpack_from(f"<{n}I", data, cls.HEAD.size)
        base = cls.HEAD.size + 4 * n
        ends = offsets[1:] + (len(data) - base,)
        return [bytes(data[base + a:base + b]) for a, b in zip(offsets, ends)]

    @classmethod
    def tail(cls, first_seq: int, data: bytes) -> tuple[int, int]:
        """(last sequence number, clock) after the commit that wrote this chunk."""
        n, clock = cls.HEAD.unpack_from(data)
        return first_seq + n - 1, clock


class _MapGate:
    """LMDB may resize its map (``set_mapsize``) only while no transaction of this process is
    open, and does not check: py-lmdb then fails the other threads' transactions. Every
    transaction enters the gate; a resize waits until none is open, and new ones wait for
    it. A thread may enter again while it is in (a nested read)."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._open = 0
        self._resizing = False
        self._local = threading.local()

    def enter(self) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        if not depth:
            with self._cond:
                while self._resizing:
                    self._cond.wait()
                self._open += 1
        local.depth = depth + 1

    def leave(self) -> None:
        local = self._local
        local.depth -= 1
        if not local.depth:
            with self._cond:
                self._open -= 1
                if not self._open and self._resizing:
                    self._cond.notify_all()

    def resize(self, change) -> None:
        if getattr(self._local, "depth", 0):
            raise StoreError("the store's map cannot be resized inside an open transaction")
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            try:
                while self._open:
                    self._cond.wait()
                change()
            finally:
                self._resizing = False
                self._cond.notify_all()


def open_env(path: str, *, map_size: int, max_dbs: int, sync: bool = True):
    """An LMDB environment with the store's flags: synced commits (data and meta pages) unless
    ``sync`` is false, no read-ahead (reads are random), room for many reader processes. The
    benchmarks' raw baselines open theirs with it too."""
    return lmdb.open(path, map_size=map_size, max_dbs=max_dbs, sync=sync, metasync=sync,
                     readahead=False, max_readers=512)


class Store:
    """One LMDB environment, opened after any fork, shared with other processes (and with
    the threads of this one)."""

    def __init__(self, path: str, *, create: bool = False, map_size: int = _INITIAL_MAP,
                 sync: bool = True):
        self.path = path
        if not create and not os.path.exists(os.path.join(path, "data.mdb")):
            raise StoreError(f"no Conflux store at {path} (run 'conflux init' first)")
        try:
            os.makedirs(path, exist_ok=True)
            self.env = open_env(path, map_size=max(map_size, _current_size(path)),
                                max_dbs=len(_DATABASES), sync=sync)
            self.dbs = {name.decode(): self.env.open_db(name) for name in _DATABASES}
            self._page = self.env.stat()["psize"]
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from exc
        self._names: dict[bytes, int] = {}
        self._gate = _MapGate()

    def close(self) -> None:
        self.env.close()

    # -- transactions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self):
        """A read transaction (a consistent snapshot)."""
        gate = self._gate
        for _ in range(_MAX_ATTEMPTS):
            gate.enter()
            try:
                try:
                    txn = self.env.begin(buffers=False)
                except lmdb.MapResizedError:
                    txn = None  # another process grew the map: adopt its size, below
                except lmdb.Error as exc:
                    raise StoreError(f"cannot read the store at {self.path}: {exc}") from exc
                if txn is not None:
                    try:
                        yield txn
                    finally:
                        txn.abort()
                    return
            finally:
                gate.leave()
            gate.resize(self._adopt_size)
        raise StoreError(f"cannot read the store at {self.path}: its map keeps changing")

    def write(self, body, *, commit: bool = True):
        """Run ``body(txn)`` in one write transaction and commit it (synced).

        ``body`` may be run more than once: when the map is full the transaction is thrown
        away, the map doubled and ``body`` run again from the start, so it must derive
        everything it writes from the transaction. With ``commit=False`` (dry runs) the
        transaction is always aborted.
        """
        for _ in range(_MAX_ATTEMPTS):
            pending: dict[bytes, int] = {}
            self._gate.enter()
            try:
                resize, result = self._attempt(body, commit, pending)
            finally:
                self._gate.leave()
            if resize is not None:  # outside the gate: a resize waits for it to empty
                self._gate.resize(resize)
                continue
            if commit:
                self._names.update(pending)  # only committed ids may be cached
            return result
        raise StoreError(f"the store at {self.path} could not grow enough to take this write")

    def _attempt(self, body, commit: bool, pending: dict):
        """One try of ``write``, in the gate: ``(None, result)``, or ``(resize, None)`` when
        the map must change first (nothing written)."""
        if self._full():
            return self._grow, None
        txn = None
        self._pending = pending
        try:
            txn = self.env.begin(write=True)
            result = body(txn)
            if commit:
                txn.commit()
                txn = None
            return None, result
        except lmdb.MapFullError:
            return self._grow, None
        except lmdb.MapResizedError:
            return self._adopt_size, None
        except lmdb.Error as exc:
            raise StoreError(f"cannot write the store at {self.path}: {exc}") from exc
        finally:
            self._pending = None
            if txn is not None:
                txn.abort()  # a dry run, or a failure

    def _grow(self) -> None:
        size = self.env.info()["map_size"]
        self.env.set_mapsize(size * 2)

    def _adopt_size(self) -> None:
        self.env.set_mapsize(0)

    def _full(self) -> bool:
        """Whether the map has less than its headroom free (in the gate: the size is read
        from the map)."""
        info = self.env.info()
        return (info["last_pgno"] + 1) * self._page > (1 - _HEADROOM) * info["map_size"]

    # -- interned names -----------------------------------------------------------------------

    def name_id(self, txn, kind: str, name: str, *, create: bool) -> int | None:
        """The small integer id of an environment (``e``), type (``t``) or field (``f``).

        Ids are assigned in write transactions and never change; ``create`` only inside
        ``write``. Field ids start at 1 (0 is the entity marker).
        """
        key = f"{kind}:{name}".encode()
        found = self._names.get(key)
        if found is not None:
            return found
        if self._pending is not None and key in self._pending:
            return self._pending[key]
        raw = txn.get(key, db=self.dbs["names"])
        if raw is not None:
            found = _U16.unpack(raw)[0]
            self._names[key] = found
            return found
        if not create:
            return None
        counter = f"#{kind}".encode()
        last = txn.get(counter, db=self.dbs["names"])
        new = (_U16.unpack(last)[0] if last else 0) + 1
        if new > 0xFFFF:
            raise StoreError(f"too many {kind} names in the store")
        txn.put(counter, _U16.pack(new), db=self.dbs["names"])
        txn.put(key, _U16.pack(new), db=self.dbs["names"])
        self._pending[key] = new
        return new

    def names(self, txn, kind: str) -> dict[int, str]:
        """id -> name for every interned name of a kind."""
        out = {}
        prefix = f"{kind}:".encode()
        with txn.cursor(db=self.dbs["names"]) as cur:
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out[_U16.unpack(value)[0]] = key[len(prefix):].decode()
        return out

    _pending: dict | None = None

    # -- meta ---------------------------------------------------------------------------------

    def meta_get(self, txn, key: str, default=None):
        raw = txn.get(key.encode(), db=self.dbs["meta"])
        return default if raw is None else raw

    def meta_put(self, txn, key: str, value: bytes) -> None:
        txn.put(key.encode(), value, db=self.dbs["meta"])

    def meta_int(self, txn, key: str) -> int:
        raw = txn.get(key.encode(), db=self.dbs["meta"])
        return SEQ.unpack(raw)[0] if raw else 0

    def meta_put_int(self, txn, key: str, value: int) -> None:
        txn.put(key.encode(), SEQ.pack(value), db=self.dbs["meta"])

    # -- op log -------------------------------------------------------------------------------

    def log_tail(self, txn) -> tuple[int, int]:
        """(last sequence number, clock) of the store: both live in the last log chunk."""
        with txn.cursor(db=self.dbs["log"]) as cur:
            if not cur.last():
                return 0, 0
            return LogChunk.tail(SEQ.unpack(cur.key())[0], cur.value())

    #: Chunks are kept within an LMDB page (4 KiB: at most about 2 KiB a value stays inline).
    CHUNK_LIMIT = 2000

    def log_append(self, txn, chunks: list[tuple[int, bytes]]) -> None:
        """Append a commit's chunks, ``(first seq, chunk)``, in order."""
        with txn.cursor(db=self.dbs["log"]) as cur:
            cur.putmulti([(SEQ.pack(seq), chunk) for seq, chunk in chunks], append=True)

    def log_entries(self, txn, start: int = 1, *, reverse: bool = False):
        """Yield ``(seq, entry bytes)`` from sequence ``start`` on (or down, when reversed)."""
        with txn.cursor(db=self.dbs["log"]) as cur:
            if not cur.set_range(SEQ.pack(start)):
                if not cur.last():
                    return
            first = SEQ.unpack(cur.key())[0]
            if first > start and not cur.prev():
                if reverse:
                    return
                cur.first()
            while True:
                first = SEQ.unpack(cur.key())[0]
                entries = LogChunk.unpack(cur.value())
                seqs = range(first, first + len(entries))
                pairs = zip(seqs, entries)
                if reverse:
                    for seq, entry in reversed(list(pairs)):
                        if seq <= start:
                            yield seq, entry
                    if not cur.prev():
                        return
                else:
                    for seq, entry in pairs:
                        if seq >= start:
                            yield seq, entry
                    if not cur.next():
                        return

    # -- the per-entity index -------------------------------------------------------------------

    #: The index is written by a commit of at least ``ENTITY_BATCH`` ops, and else once
    #: ``ENTITY_RANGE`` logged ops wait for it: a single-op commit would otherwise dirty its
    #: pages each time (a small synced commit costs what its pages cost to flush).
    ENTITY_BATCH = 64
    ENTITY_RANGE = 4096

    def entity_index_tail(self, txn) -> tuple[int, int]:
        """``(first, last)`` sequence numbers the entity index covers; ``(0, 0)`` when the
        store has none yet (made before it, and not written to since)."""
        first = self.meta_int(txn, "entities_from")
        if not first:
            return 0, 0
        with txn.cursor(db=self.dbs["entities"]) as cur:
            last = SEQ.unpack(cur.key()[:8])[0] if cur.last() else first - 1
        return first, last

    def index_entities(self, txn, last: int, blobs: list[bytes]) -> None:
        """Record the entities of the ops up to sequence ``last`` since the previous range
        (``core.entity_blobs``)."""
        head = SEQ.pack(last)
        with txn.cursor(db=self.dbs["entities"]) as cur:
            cur.putmulti([(head + _U16.pack(i), blob) for i, blob in enumerate(blobs)],
                         append=True)

    def entity_ranges(self, txn, entity_id: str) -> list[tuple[int, int]]:
        """The sequence ranges ``(first, last)``, ascending, outside which no logged op
        writes ``entity_id``: the index's ranges naming it, and what it does not cover."""
        first = self.meta_int(txn, "entities_from")
        if not first:
            return [(1, _LAST_SEQ)]
        wanted = b"\n" + entity_id.encode() + b"\n"
        out = [(1, first - 1)] if first > 1 else []
        end, named = first - 1, False  # the last seq of the range being read
        with txn.cursor(db=self.dbs["entities"]) as cur:
            for key, blob in cur:
                seq = SEQ.unpack(key[:8])[0]
                if seq != end:  # the first part of a range, which starts after the last one
                    start, end, named = end + 1, seq, False
                if not named and wanted in b"\n" + blob + b"\n":
                    out.append((start, end))
                    named = True
        out.append((end + 1, _LAST_SEQ))  # what the index does not cover yet
        return out

    def log_entry(self, txn, seq: int) -> bytes | None:
        for found, entry in self.log_entries(txn, seq):
            return entry if found == seq else None
        return None


def _current_size(path: str) -> int:
    try:
        return os.path.getsize(os.path.join(path, "data.mdb"))
    except OSError:
        return 0
