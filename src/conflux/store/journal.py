"""The commit journal: one synced write per commit for the daemon's commit service.

A synced LMDB commit is two ordered disk writes: the transaction's pages, then the meta page
that points at them (measured on this project's machine: about 290 us against 130 us for one
write and ``fdatasync`` of a file whose blocks are allocated). The commit service, which makes
every one-op write of the daemon durable, instead commits to LMDB without syncing and first
appends the transaction's changes to a journal (``store/journal.wal``), synced: one disk
write per group commit. A commit is answered after both.

LMDB without sync keeps everything across a *process* crash (the writes are in the kernel's
page cache), but a *system* crash may leave a meta page on disk whose pages are not: the
store would be corrupt. So the journal keeps a **checkpoint** the store can be returned to:

* A checkpoint syncs the store (every committed page and meta page on disk), copies its two
  meta pages into ``store/journal.state`` (synced) and holds a read transaction on that
  snapshot for as long as the journal runs from it: LMDB reuses no page a reader can still
  see, so the checkpoint's pages stay on disk unchanged however many commits follow. The
  journal then restarts (a new generation: older records no longer count).
* Each journaled commit appends one record, every key it put or deleted with its value, and
  syncs it before the commit.
* After a system crash (the kernel's boot id differs from the one the state names) a store
  whose state is *dirty* has its two meta pages written back from the checkpoint, which
  returns LMDB to the checkpoint's snapshot exactly, and the journal's records of that
  generation are replayed, in order, up to the first that is torn or missing. The result is
  every commit whose record was synced: every answered commit.

Other writers (the CLI, resolve and promote in the daemon's workers, milestones) keep synced
commits. Before one commits, if the state is dirty, it syncs the store and marks the state
clean: its own commit is then an ordinary synced LMDB commit over a store fully on disk, and
a system crash needs nothing restored. The journal notices (the state's generation is no
longer its own) and makes a new checkpoint before its next commit. Both happen in write
transactions, so LMDB's writer lock orders them; a process opening the store checks the
state under an exclusive ``flock`` on the state file, so only one restores.

The state file holds two slots, written alternately (the one of the generation's parity),
each with a checksum: a write torn by a crash leaves the other, older slot, which is still
true (its checkpoint is still pinned, or its generation's commits still journaled).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib

from conflux.errors import StoreError

__all__ = ["Journal", "STATE_FILE", "JOURNAL_FILE", "boot_id", "open_store_env", "mark_clean"]

STATE_FILE = "journal.state"
JOURNAL_FILE = "journal.wal"

_STATE_MAGIC = b"CFXJST01"
#: magic, generation, dirty, boot id, pages' crc, header crc
_HEADER = struct.Struct("<8sQB16sII")
#: The state slot: header, then the checkpoint's two meta pages (zeros when clean).
_SLOT_HEAD = 64

_RECORD_MAGIC = b"CFXJ"
#: magic, generation, record number (from 1 in each generation), payload length, crc of the
#: generation, number, length and payload
_RECORD = struct.Struct("<4sQQII")
#: One change: database index, key length, value length (``_DELETE``: a delete)
_CHANGE = struct.Struct("<BII")
_DELETE = 0xFFFFFFFF

#: The journal's file starts this big and doubles when a record does not fit.
INITIAL_SIZE = 16 << 20
#: A checkpoint is due when the journal holds this much, or ``CHECKPOINT_S`` after the last.
#: When one is due, a thread first writes the store's dirty pages out (commits go on
#: meanwhile); the checkpoint follows at the next commit and syncs only what came since.
#: Often, because until the next one every commit writes new pages (none is reused): at
#: 0.25 s the store's file stays near 30 MiB under 10,000 one-op commits a second and the
#: writes of the pages spread out (every 4 s: 250 MiB, and a p99 of 21 ms against 9 at 8
#: connections, bench/http_ingest.py's (b) workload).
CHECKPOINT_BYTES = 32 << 20
CHECKPOINT_S = 0.25


def boot_id() -> bytes | None:
    """The kernel's id of this boot (16 bytes), or None where there is none (not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return bytes.fromhex(fh.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return None


class _State:
    __slots__ = ("gen", "dirty", "boot", "pages", "pages_crc")

    def __init__(self, gen=0, dirty=False, boot=b"\0" * 16, pages=b"", pages_crc=0):
        self.gen, self.dirty, self.boot, self.pages = gen, dirty, boot, pages
        self.pages_crc = pages_crc


def _slot_size(psize: int) -> int:
    return _SLOT_HEAD + 2 * psize


def _pack_slot(state: _State, psize: int) -> bytes:
    pages = state.pages.ljust(2 * psize, b"\0")
    head = _HEADER.pack(_STATE_MAGIC, state.gen, state.dirty, state.boot, zlib.crc32(pages), 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    return head.ljust(_SLOT_HEAD, b"\0") + pages


def _unpack_head(raw: bytes) -> _State | None:
    if len(raw) < _HEADER.size:
        return None
    magic, gen, dirty, boot, pages_crc, crc = _HEADER.unpack_from(raw)
    if magic != _STATE_MAGIC or crc != zlib.crc32(raw[:_HEADER.size - 4]):
        return None
    return _State(gen, bool(dirty), boot, pages_crc=pages_crc)


class StateFile:
    """``journal.state``: the newest valid slot wins."""

    def __init__(self, path: str, psize: int):
        self.path, self.psize = path, psize
        self.size = _slot_size(psize)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def ensure(self) -> None:
        """A new (or empty) file gets a clean state in both slots (there is no older one to
        fall back to); under the lock."""
        if os.fstat(self.fd).st_size == 0:
            os.pwrite(self.fd, _pack_slot(_State(), self.psize) * 2, 0)
            os.fsync(self.fd)
            _sync_dir(os.path.dirname(self.path))

    def close(self) -> None:
        os.close(self.fd)

    def lock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def head(self) -> _State:
        """The newest slot's header (what writers check before each commit)."""
        best = None
        for slot in (0, 1):
            found = _unpack_head(os.pread(self.fd, _HEADER.size, slot * self.size))
            if found is not None and (best is None or found.gen > best.gen):
                best = found
        if best is None:
            raise StoreError(f"{self.path} has no readable slot")
        return best

    def full(self) -> _State:
        """The newest slot whose pages are whole too (recovery)."""
        best = None
        for slot in (0, 1):
            raw = os.pread(self.fd, self.size, slot * self.size)
            found = _unpack_head(raw)
            if found is None:
                continue
            pages = raw[_SLOT_HEAD:]
            if found.pages_crc != zlib.crc32(pages):
                continue
            found.pages = pages
            if best is None or found.gen > best.gen:
                best = found
        if best is None:
            raise StoreError(f"{self.path} has no readable slot")
        return best

    def write(self, state: _State) -> None:
        """Into the slot of the generation's parity, synced."""
        os.pwrite(self.fd, _pack_slot(state, self.psize), (state.gen % 2) * self.size)
        os.fdatasync(self.fd)


def _sync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_clean(env, state_file: StateFile) -> None:
    """A synced writer's step before its commit, in its write transaction: a dirty store is
    synced whole and its state marked clean."""
    head = state_file.head()
    if head.dirty:
        env.sync(True)
        state_file.write(_State(head.gen + 1, False))


def _encode(changes: list) -> bytes:
    """A record's payload: ``(database index, key, value or None)`` in the order made."""
    pack, parts = _CHANGE.pack, []
    add = parts.append
    for db, key, value in changes:
        if value is None:
            add(pack(db, len(key), _DELETE))
            add(key)
        else:
            add(pack(db, len(key), len(value)))
            add(key)
            add(value)
    return b"".join(parts)


def _decode(payload: bytes):
    at, end, unpack = 0, len(payload), _CHANGE.unpack_from
    while at < end:
        db, klen, vlen = unpack(payload, at)
        at += _CHANGE.size
        key = payload[at:at + klen]
        at += klen
        if vlen == _DELETE:
            yield db, key, None
        else:
            yield db, key, payload[at:at + vlen]
            at += vlen


def read_records(path: str, gen: int):
    """The payloads of generation ``gen``'s records, in order, up to the first that is torn,
    missing or of another generation."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        at, number = 0, 1
        while True:
            head = os.pread(fd, _RECORD.size, at)
            if len(head) < _RECORD.size:
                return
            magic, rgen, rnum, length, crc = _RECORD.unpack(head)
            if magic != _RECORD_MAGIC or rgen != gen or rnum != number:
                return
            payload = os.pread(fd, length, at + _RECORD.size)
            if len(payload) != length or zlib.crc32(payload, zlib.crc32(head[4:24])) != crc:
                return
            yield payload
            at += _RECORD.size + length
            number += 1
    finally:
        os.close(fd)


def open_store_env(path: str, psize: int, open_env, apply):
    """Open a store's environment with ``open_env()``, under the state file's lock, first
    returning it to its checkpoint after a system crash (its state dirty, the boot another)
    and replaying its journal, ``apply(changes)`` writing every record's changes, in order,
    in one write transaction. Returns the environment and the state file (made clean if
    missing), which every writer checks before it commits."""
    state_file = StateFile(os.path.join(path, STATE_FILE), psize)
    try:
        state_file.lock()
        try:
            state_file.ensure()
            # PERF: the common case (clean, or dirty in this boot) reads a header and no more
            if not state_file.head().dirty:
                return open_env(), state_file
            state = state_file.full()
            now = boot_id()
            if not state.dirty or now is None or state.boot == now:
                return open_env(), state_file
            fd = os.open(os.path.join(path, "data.mdb"), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, state.pages, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            env = open_env()
            # one transaction: it reuses none of the pages it frees, so a crash before the
            # sync below leaves the checkpoint's pages whole for the next try
            apply(change for payload in read_records(os.path.join(path, JOURNAL_FILE),
                                                     state.gen)
                  for change in _decode(payload))
            env.sync(True)
            state_file.write(_State(state.gen + 1, False))
            return env, state_file
        finally:
            state_file.unlock()
    except BaseException:
        state_file.close()
        raise


class Journal:
    """The commit service's journal over one LMDB environment opened without sync."""

    def __init__(self, env, path: str, state: StateFile, boot: bytes):
        """``boot``: this boot's id (``boot_id``), which the checkpoints name."""
        self.env, self.path, self.state, self.psize = env, path, state, state.psize
        self.boot = boot
        self.data_path = os.path.join(path, "data.mdb")
        wal = os.path.join(path, JOURNAL_FILE)
        self.fd = os.open(wal, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
        if self.size < INITIAL_SIZE:
            self._grow(INITIAL_SIZE)
            _sync_dir(path)
        self.gen = None  # the generation of this journal's checkpoint, once made
        self._data_fd = os.open(self.data_path, os.O_RDONLY | os.O_CLOEXEC)
        self._flush: threading.Thread | None = None
        self._pin = None
        self._at = 0
        self._number = 0
        self._since = 0.0
        self.records = 0
        self.checkpoints = 0

    def close(self) -> None:
        """Sync the store and mark it clean (nothing to restore), then let go."""
        self.settle()
        if self._flush is not None:
            self._flush.join()
        os.close(self.fd)
        os.close(self._data_fd)

    def settle(self) -> None:
        """The store synced and marked clean, the checkpoint let go; the next commit makes
        a new one. Before the map is resized (LMDB's map may not change under an open
        transaction of this process, the checkpoint's reader included), and at close.

        Outside a write transaction (one may not begin while this process's map is behind
        the store's): no other writer commits without sync, and one that marks the store
        clean at the same time writes what this does."""
        if self.gen is not None:
            mark_clean(self.env, self.state)
        self._unpin()
        self.gen = None

    def commit(self, txn, changes: list) -> None:
        """Journal a write transaction's ``changes`` (synced), then commit it (not synced).
        In the transaction: LMDB's writer lock is held."""
        payload = _encode(changes)
        need = _RECORD.size + len(payload)
        head = self.state.head()
        if head.gen != self.gen or not head.dirty or self._at + need > self.size:
            self._checkpoint(head)  # not its own, or full: now
            if need > self.size:
                self._grow(max(need, 2 * self.size))
        elif self._at >= CHECKPOINT_BYTES or time.monotonic() - self._since >= CHECKPOINT_S:
            if self._flush is None:
                self._flush = threading.Thread(target=os.fdatasync, args=(self._data_fd,),
                                               name="conflux-journal-flush", daemon=True)
                self._flush.start()
            elif not self._flush.is_alive():
                self._checkpoint(head)
        self._number += 1
        header = _RECORD.pack(_RECORD_MAGIC, self.gen, self._number, len(payload), 0)
        crc = zlib.crc32(payload, zlib.crc32(header[4:24]))
        header = header[:-4] + struct.pack("<I", crc)
        at = self._at
        os.pwrite(self.fd, header + payload, at)
        os.fdatasync(self.fd)
        try:
            txn.commit()
        except BaseException:
            # not committed: the record must not be replayed after a crash
            os.pwrite(self.fd, b"\0" * _RECORD.size, at)
            os.fdatasync(self.fd)
            self._number -= 1
            raise
        self._at = at + len(header) + len(payload)
        self.records += 1

    def _checkpoint(self, head) -> None:
        env = self.env
        env.sync(True)
        pages = os.pread(self._data_fd, 2 * self.psize, 0)  # the meta pages, now on disk
        if len(pages) != 2 * self.psize:
            raise StoreError(f"{self.data_path} is shorter than its meta pages")
        pin = env.begin()  # the snapshot the meta pages name: no other writer can commit now
        gen = head.gen + 1
        try:
            self.state.write(_State(gen, True, self.boot, pages))
        except BaseException:
            pin.abort()
            raise
        self._unpin()
        self._pin = pin
        if self._flush is not None:
            self._flush.join()
            self._flush = None
        self.gen, self._at, self._number = gen, 0, 0
        self._since = time.monotonic()
        self.checkpoints += 1

    def _unpin(self) -> None:
        if self._pin is not None:
            self._pin.abort()
            self._pin = None

    def _grow(self, size: int) -> None:
        os.posix_fallocate(self.fd, 0, size)
        os.fsync(self.fd)
        self.size = size
