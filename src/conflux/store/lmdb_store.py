"""The LMDB store under ``.conflux/store/``: the only module of Conflux that imports lmdb, and
the one place its errors are translated.

Named databases:

``state``       state key (``layout.state_key``) -> packed record (see ``kernel/FORMAT.md``)
``log``         first sequence number (u64 big-endian) -> a chunk of op-log entries
                (``layout.LogChunk``)
``opids``       op id -> sequence number (u64 big-endian), for idempotent retries and blame
``names``       interned names: ``e:<env>``, ``t:<type>``, ``f:<type>.<field>`` -> u16 id
``meta``        clock, last sequence number, node id, compaction horizon, settings; the
                webhooks' cursors and statistics (``webhook:<name>``, ``webhook:<name>:
                milestone`` as u64 BE, ``webhook:<name>:stats`` as JSON)
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

Commits are synced (LMDB's default): an acknowledged batch survives ``kill -9`` and power
loss. The daemon's commit service opens its store with ``journal=True``: its commits are
journaled (one synced write each) and committed to LMDB without sync (``journal.py``, which
also says how the other writers keep to it). LMDB serialises writers across processes, so the
CLI and every daemon worker may use one store at once. The map grows by itself: a write that fills it is retried on a larger map.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading

import lmdb

from conflux.codec import packb, unpackb
from conflux.errors import StoreError
from conflux.store.base import Store
from conflux.store.journal import boot_id, Journal, mark_clean, open_store_env
from conflux.store.layout import LogChunk, PLACE_KEY, SEQ, split_state_key

__all__ = ["LmdbStore", "open_env"]

_U16 = struct.Struct(">H")
_MILESTONE = struct.Struct(">I")  # a milestone number as a key
_LAST_SEQ = 2 ** 64 - 1

_DATABASES = (b"state", b"log", b"opids", b"names", b"meta", b"conflicts", b"violations",
              b"dangling", b"milestones", b"entities")
_INITIAL_MAP = 64 << 20
#: A journaled store's map starts at least this big (address space, not disk): between two
#: checkpoints its commits reuse no page (``journal.py``), so its file grows by the pages of
#: about a second of commits, and each growth of the map is a full sync of the store.
_JOURNAL_MAP = 1 << 30
_MAX_ATTEMPTS = 40
#: A write transaction starts only with at least this share of the map free (doubled before
#: it otherwise): a write that finds the map full midway is thrown away and run again.
_HEADROOM = 0.5
_WEBHOOK = "webhook:"


def _dangling_key(env_id: bytes, target: str, referrer_key: bytes) -> bytes:
    """``env_id``: the environment's id as it starts a state key (u16 BE)."""
    return env_id + target.encode() + b"\x00" + referrer_key


def _under(cur, prefix: bytes, *, values: bool = False):
    """The keys (with ``values``, the items) of a cursor's table that start with ``prefix``,
    in order; the cursor stands on each as it is given (``cur.value()`` reads its value)."""
    if not cur.set_range(prefix):
        return
    for item in (cur if values else cur.iternext(values=False)):
        if not (item[0] if values else item).startswith(prefix):
            return
        yield item


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


class _RecordingCursor:
    """A cursor of a journaled write transaction: reads as LMDB's, notes what it writes."""

    __slots__ = ("_cur", "_db", "_changes", "get", "set_range", "set_key", "first", "last",
                 "next", "prev", "key", "value", "item", "iternext", "iterprev")

    def __init__(self, cur, db: int, changes: list):
        self._cur, self._db, self._changes = cur, db, changes
        self.get, self.set_range, self.set_key = cur.get, cur.set_range, cur.set_key
        self.first, self.last, self.next, self.prev = cur.first, cur.last, cur.next, cur.prev
        self.key, self.value, self.item = cur.key, cur.value, cur.item
        self.iternext, self.iterprev = cur.iternext, cur.iterprev

    def __iter__(self):
        return iter(self._cur)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._cur.close()

    def close(self) -> None:
        self._cur.close()

    def put(self, key, value, **flags):
        _plain(flags)
        done = self._cur.put(key, value, **flags)
        if done:
            self._changes.append((self._db, key, value))
        return done

    def putmulti(self, items, **flags):
        _plain(flags)
        items = items if isinstance(items, list) else list(items)
        consumed, added = self._cur.putmulti(items, **flags)
        db = self._db
        self._changes.extend([(db, k, v) for k, v in items[:consumed]])
        return consumed, added

    def delete(self, **flags):
        _plain(flags)
        key = self._cur.key()
        done = self._cur.delete()
        if done:
            self._changes.append((self._db, key, None))
        return done


class _RecordingTxn:
    """A journaled write transaction: every put and delete, with its database, is noted in
    ``changes`` (the journal's record of the commit)."""

    __slots__ = ("_txn", "_index", "_changes", "get", "stat", "id")

    def __init__(self, txn, index: dict, changes: list):
        self._txn, self._index, self._changes = txn, index, changes
        self.get, self.stat, self.id = txn.get, txn.stat, txn.id

    def cursor(self, db=None):
        return _RecordingCursor(self._txn.cursor(db=db), self._index[id(db)], self._changes)

    def put(self, key, value, db=None, **flags):
        _plain(flags)
        done = self._txn.put(key, value, db=db, **flags)
        if done:
            self._changes.append((self._index[id(db)], key, value))
        return done

    def delete(self, key, value=b"", db=None):
        if value:
            raise StoreError("a journaled transaction has no duplicate keys to delete")
        done = self._txn.delete(key, db=db)
        if done:
            self._changes.append((self._index[id(db)], key, None))
        return done


def _plain(flags: dict) -> None:
    """The journal notes a put as written: a put that may leave a key as it was
    (``overwrite=False``) or keep duplicates is not one it can replay."""
    if flags.get("overwrite") is False or flags.get("dupdata"):
        raise StoreError("a journaled transaction cannot put without overwriting")


def open_env(path: str, *, map_size: int, max_dbs: int, sync: bool = True):
    """An LMDB environment with the store's flags: synced commits (data and meta pages) unless
    ``sync`` is false, no read-ahead (reads are random), room for many reader processes. The
    benchmarks' raw baselines open theirs with it too."""
    return lmdb.open(path, map_size=map_size, max_dbs=max_dbs, sync=sync, metasync=sync,
                     readahead=False, max_readers=512)


class LmdbStore(Store):
    """One LMDB environment, opened after any fork, shared with other processes (and with
    the threads of this one)."""

    #: Chunks are kept within an LMDB page (4 KiB: at most about 2 KiB a value stays inline).
    CHUNK_LIMIT = 2000

    def __init__(self, path: str, *, create: bool = False, map_size: int = _INITIAL_MAP,
                 sync: bool = True, journal: bool = False):
        self.path = path
        if not create and not self.exists(path):
            raise StoreError(f"no Conflux store at {path} (run 'conflux init' first)")
        self._journal = None
        self._state = None
        try:
            os.makedirs(path, exist_ok=True)
            self.env, self._state = open_store_env(
                path, os.sysconf("SC_PAGE_SIZE"),
                lambda: self._open_env(max(map_size, _JOURNAL_MAP) if journal else map_size,
                                       sync=sync and not journal), self._replay)
            boot = boot_id() if journal else None
            if boot is not None:  # else synced commits (not Linux)
                self._journal = Journal(self.env, path, self._state, boot)
        except lmdb.Error as exc:
            self._close_files()
            raise StoreError(f"cannot open the store at {path}: {exc}") from exc
        except OSError as exc:
            self._close_files()
            raise StoreError(f"cannot open the store at {path}: {exc.strerror or exc}") from exc
        self._names: dict[bytes, int] = {}
        self._gate = _MapGate()

    def _open_env(self, map_size: int, *, sync: bool):
        self.env = open_env(self.path, map_size=max(map_size, _current_size(self.path)),
                            max_dbs=len(_DATABASES), sync=sync)
        self._handles = [self.env.open_db(name) for name in _DATABASES]  # the journal's order
        self.dbs = {name.decode(): db for name, db in zip(_DATABASES, self._handles)}
        self._db_index = {id(db): i for i, db in enumerate(self._handles)}
        self._page = self.env.stat()["psize"]
        # readers left by killed processes: one of them may be a commit journal's checkpoint,
        # which keeps every page written since from being reused
        self.env.reader_check()
        return self.env

    def _replay(self, changes) -> None:
        """Write the journal's changes (at open, after a system crash)."""
        handles = self._handles
        with self.env.begin(write=True) as txn:
            for db, key, value in changes:
                if value is None:
                    txn.delete(key, db=handles[db])
                else:
                    txn.put(key, value, db=handles[db])

    def _close_files(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None

    @classmethod
    def exists(cls, path: str) -> bool:
        return os.path.exists(os.path.join(path, "data.mdb"))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.env.close()
        self._close_files()

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
                if self._journal is not None:
                    self._journal.settle()  # its checkpoint's reader may not span a resize
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
            if commit and self._journal is not None:
                changes = []
                result = body(_RecordingTxn(txn, self._db_index, changes))
                self._before_commit()
                self._journal.commit(txn, changes)
            else:
                result = body(txn)
                if not commit:
                    return None, result
                self._before_commit()
                mark_clean(self.env, self._state)  # the journal's commits are all on disk
                txn.commit()
            txn = None
            return None, result
        except lmdb.MapFullError:
            return self._grow, None
        except lmdb.MapResizedError:
            return self._adopt_size, None
        except lmdb.Error as exc:
            raise StoreError(f"cannot write the store at {self.path}: {exc}") from exc
        except OSError as exc:  # the journal or the state file
            raise StoreError(f"cannot write the store at {self.path}: "
                             f"{exc.strerror or exc}") from exc
        finally:
            self._pending = None
            if txn is not None:
                txn.abort()  # a dry run, or a failure

    def _before_commit(self) -> None:
        """What must hold before a write commits (``SharedStore``: its log of record has it)."""

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
            for key, value in _under(cur, prefix, values=True):
                out[_U16.unpack(value)[0]] = key[len(prefix):].decode()
        return out

    _pending: dict | None = None

    # -- meta ---------------------------------------------------------------------------------

    def meta_get(self, txn, key: str, default=None):
        raw = txn.get(key.encode(), db=self.dbs["meta"])
        return default if raw is None else raw

    def meta_put(self, txn, key: str, value: bytes) -> None:
        txn.put(key.encode(), value, db=self.dbs["meta"])

    def meta_delete(self, txn, key: str) -> None:
        txn.delete(key.encode(), db=self.dbs["meta"])

    def meta_int(self, txn, key: str) -> int:
        raw = txn.get(key.encode(), db=self.dbs["meta"])
        return SEQ.unpack(raw)[0] if raw else 0

    def meta_put_int(self, txn, key: str, value: int) -> None:
        txn.put(key.encode(), SEQ.pack(value), db=self.dbs["meta"])

    # -- state records ------------------------------------------------------------------------

    def state_getter(self, txn):
        # PERF: a cursor's get takes the key alone; txn.get parses a db keyword on every call
        # (about 300 ns against 650 per lookup, measured with py-lmdb 3.0)
        return txn.cursor(db=self.dbs["state"]).get

    def state_put(self, txn, key: bytes, record: bytes) -> None:
        txn.put(key, record, db=self.dbs["state"])

    def state_delete(self, txn, key: bytes) -> None:
        txn.delete(key, db=self.dbs["state"])

    def entity_reader(self, txn):
        cur = txn.cursor(db=self.dbs["state"])
        set_range, field_id = cur.set_range, _U16.unpack_from

        def read(prefix: bytes) -> dict[int, bytes]:
            records = {}
            if set_range(prefix):
                for key, rec in cur:
                    if not key.startswith(prefix):
                        break
                    records[field_id(key, len(key) - 2)[0]] = rec
            return records
        return read

    def env_entities(self, txn, env_id: int) -> set[tuple[int, str]]:
        prefix = _U16.pack(env_id)
        found = set()
        with txn.cursor(db=self.dbs["state"]) as cur:
            for key in _under(cur, prefix):
                _, type_id, name, _ = split_state_key(key)
                found.add((type_id, name))
        return found

    def place_records(self, txn, env_id: int) -> list[tuple[int, str, bytes]]:
        prefix = _U16.pack(env_id)
        out = []
        with txn.cursor(db=self.dbs["state"]) as cur:
            for key in _under(cur, prefix):
                if key.endswith(PLACE_KEY):
                    _, type_id, name, _ = split_state_key(key)
                    out.append((type_id, name, cur.value()))
        return out

    def state_items(self, txn):
        with txn.cursor(db=self.dbs["state"]) as cur:
            yield from cur

    def merge_batch(self, txn, leaves: list, apply_batch):
        with txn.cursor(db=self.dbs["state"]) as cur:
            return apply_batch(leaves, cur)

    # -- op log -------------------------------------------------------------------------------

    def log_tail(self, txn) -> tuple[int, int]:
        """(last sequence number, clock) of the store: both live in the last log chunk."""
        with txn.cursor(db=self.dbs["log"]) as cur:
            if not cur.last():
                return 0, 0
            return LogChunk.tail(SEQ.unpack(cur.key())[0], cur.value())

    def log_append(self, txn, chunks: list[tuple[int, bytes]],
                   publish: list[str] | None = None) -> None:
        """Append a commit's chunks, ``(first seq, chunk)``, in order (``publish``: for a
        shared log of record, ``SharedStore``)."""
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

    def log_entry(self, txn, seq: int) -> bytes | None:
        for found, entry in self.log_entries(txn, seq):
            return entry if found == seq else None
        return None

    # -- the op-id index ------------------------------------------------------------------------

    def opid_getter(self, txn):
        get, unpack = txn.cursor(db=self.dbs["opids"]).get, SEQ.unpack

        def seq_of(op_id: str) -> int | None:
            raw = get(op_id.encode())
            return None if raw is None else unpack(raw)[0]
        return seq_of

    def index_opids(self, txn, pairs: list[tuple[str, int]]) -> None:
        items = sorted((op_id.encode(), SEQ.pack(seq)) for op_id, seq in pairs)
        with txn.cursor(db=self.dbs["opids"]) as cur:
            cur.putmulti(items)

    # -- the per-entity index -------------------------------------------------------------------

    def entity_index_tail(self, txn) -> tuple[int, int]:
        """``(first, last)`` sequence numbers the entity index covers; ``(0, 0)`` when the
        store has none yet (made before it, and not written to since)."""
        first = self.meta_int(txn, "entities_from")
        if not first:
            return 0, 0
        with txn.cursor(db=self.dbs["entities"]) as cur:
            last = SEQ.unpack(cur.key()[:8])[0] if cur.last() else first - 1
        return first, last

    def entity_index_begin(self, txn, first: int) -> None:
        self.meta_put_int(txn, "entities_from", first)

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

    # -- conflicts ------------------------------------------------------------------------------

    def conflict_keys(self, txn) -> list[bytes]:
        with txn.cursor(db=self.dbs["conflicts"]) as cur:
            return list(cur.iternext(values=False))

    def mark_conflict(self, txn, key: bytes, on: bool) -> None:
        if on:
            txn.put(key, b"", db=self.dbs["conflicts"])
        else:
            txn.delete(key, db=self.dbs["conflicts"])

    # -- violations and the dangling-reference index ----------------------------------------------

    def violation_count(self, txn) -> int:
        return txn.stat(self.dbs["violations"])["entries"]

    def violation_recorder(self, txn, any_recorded: bool):
        get, put, delete = txn.get, txn.put, txn.delete
        violations, dangling = self.dbs["violations"], self.dbs["dangling"]

        def record(key: bytes, messages: list[str], targets: list[str]) -> None:
            env_id = key[:2]
            old = get(key, db=violations) if any_recorded else None
            if old is not None:
                for target in unpackb(old)[1]:
                    delete(_dangling_key(env_id, target, key), db=dangling)
            if not messages:
                if old is not None:
                    delete(key, db=violations)
                return
            put(key, packb(["; ".join(messages), targets]), db=violations)
            for target in targets:
                put(_dangling_key(env_id, target, key), b"", db=dangling)
        return record

    def violation_items(self, txn):
        with txn.cursor(db=self.dbs["violations"]) as cur:
            for key, value in cur:
                yield key, unpackb(value)[0]

    def dangling_referrers(self, txn, env_id: int, target: str) -> list[bytes]:
        prefix = _dangling_key(_U16.pack(env_id), target, b"")
        out = []
        with txn.cursor(db=self.dbs["dangling"]) as cur:
            for k in _under(cur, prefix):
                out.append(k[len(prefix):])
        return out

    # -- milestones -----------------------------------------------------------------------------

    def milestone_put(self, txn, number: int, record: bytes) -> None:
        txn.put(_MILESTONE.pack(number), record, db=self.dbs["milestones"])

    def milestone_get(self, txn, number: int) -> bytes | None:
        return txn.get(_MILESTONE.pack(number), db=self.dbs["milestones"])

    def milestones_after(self, txn, after: int) -> list[bytes]:
        with txn.cursor(db=self.dbs["milestones"]) as cur:
            if not cur.set_range(_MILESTONE.pack(after + 1)):
                return []
            return [value for _, value in cur]

    def milestone_last(self, txn) -> bytes | None:
        with txn.cursor(db=self.dbs["milestones"]) as cur:
            return cur.value() if cur.last() else None

    # -- webhooks -------------------------------------------------------------------------------

    def webhook_cursor(self, txn, name: str, *, milestones: bool = False) -> int | None:
        raw = txn.get(_webhook_key(name, "milestone" if milestones else ""),
                      db=self.dbs["meta"])
        return None if raw is None else SEQ.unpack(raw)[0] if raw else 0

    def set_webhook_cursor(self, txn, name: str, value: int, *,
                           milestones: bool = False) -> None:
        txn.put(_webhook_key(name, "milestone" if milestones else ""), SEQ.pack(value),
                db=self.dbs["meta"])

    def webhook_stats(self, txn, name: str) -> bytes | None:
        return txn.get(_webhook_key(name, "stats"), db=self.dbs["meta"])

    def set_webhook_stats(self, txn, name: str, stats: bytes) -> None:
        txn.put(_webhook_key(name, "stats"), stats, db=self.dbs["meta"])

    def webhook_records(self, txn) -> dict[str, tuple[int | None, bytes | None]]:
        prefix = _WEBHOOK.encode()
        found: dict[str, list] = {}
        with txn.cursor(db=self.dbs["meta"]) as cur:
            for key, value in _under(cur, prefix, values=True):
                name, _, kind = key[len(prefix):].decode().partition(":")
                item = found.setdefault(name, [None, None])
                if kind == "stats":
                    item[1] = value
                elif not kind:
                    item[0] = SEQ.unpack(value)[0] if value else 0
        return {name: (cursor, stats) for name, (cursor, stats) in found.items()}

    # -- figures --------------------------------------------------------------------------------

    def figures(self, txn) -> dict[str, int]:
        dbs = self.dbs
        return {"records": txn.stat(dbs["state"])["entries"],
                "conflicts": txn.stat(dbs["conflicts"])["entries"],
                "violations": txn.stat(dbs["violations"])["entries"],
                # in the transaction: the map cannot move meanwhile
                "map_size": self.env.info()["map_size"]}


def _webhook_key(name: str, kind: str) -> bytes:
    """The meta key of a webhook's cursor (``kind`` ""), milestone cursor or statistics."""
    return (f"{_WEBHOOK}{name}:{kind}" if kind else f"{_WEBHOOK}{name}").encode()


def _current_size(path: str) -> int:
    try:
        return os.path.getsize(os.path.join(path, "data.mdb"))
    except OSError:
        return 0
