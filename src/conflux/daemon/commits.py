"""Group commit: concurrent writers share one durable commit.

A durable commit costs about as much as thousands of merges (a disk sync), so concurrent requests
put their batches through one committer: each batch is validated on its own (a bad batch
fails alone, never its neighbours), the committer applies everything waiting in one write
transaction, commits once, and hands each request its own acknowledgements. A request is
answered only after the commit that holds its operations.

Two committers share that logic (``commit_group``):

* ``GroupCommitter``, a thread of one process, for an engine used by several threads
  (``LocalCommitter`` awaits it from an event loop).
* ``CommitService``, the daemon's one writer: a process of its own that every gunicorn
  worker reaches through one Unix-socket connection (``CommitClient``), on which the worker's
  requests are pipelined from its event loop. One queue for the whole daemon makes the groups
  as large as the load allows, and the process does nothing else. Its store is journaled
  (``conflux.store.journal``): a group is durable after one synced write. PERF: that matters because
  py-lmdb releases the GIL around every get and put; a writer thread sharing an interpreter
  with a busy event loop waits for the GIL again after each of them (bench/server_stack.py
  measured both placements: the process is as fast at 64 connections and faster at 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time

from conflux import errors
from conflux._gcpause import without_gc
from conflux.actors import Actor
from conflux.codec import packb, unpackb
from conflux.daemon.joined import JoinedWrites
from conflux.daemon.supervisor import HelperProcess, exited, helper_stop_event
from conflux.engine.acks import Ack
from conflux.errors import ConfluxError, InputError, StoreError

__all__ = ["GroupCommitter", "CommitService", "CommitClient", "LocalCommitter", "CommitProcess",
           "commit_group", "take_frames"]

log = logging.getLogger("conflux.commits")


def commit_group(engine, makers) -> list[tuple[object, BaseException | None]]:
    """Commit validated batches (``Engine.validated`` makers) in one synced transaction;
    ``(acks, None)`` or ``(None, error)`` for each, never raising (every waiting writer is
    told). When one batch fails inside the transaction (a precondition, a clock bound) the
    group was rolled back: each batch is then committed alone, so only that one fails."""
    try:
        return [(acks, None) for acks in engine.commit_validated(makers)]
    except StoreError as exc:  # the store (or the shared op log) failed: nothing was written
        return [(None, exc)] * len(makers)
    except ConfluxError as exc:
        if len(makers) == 1:
            return [(None, exc)]
    except BaseException as exc:  # noqa: BLE001 - the store failed: nothing was written
        return [(None, exc)] * len(makers)
    out = []
    for make in makers:
        try:
            out.append((engine.commit_validated([make])[0], None))
        except BaseException as exc:  # noqa: BLE001 - this batch alone
            out.append((None, exc))
    return out


class _Ticket:
    __slots__ = ("maker", "done", "result", "error")

    def __init__(self, maker):
        self.maker = maker
        self.done = threading.Event()
        self.result = None
        self.error = None


class GroupCommitter:
    """Shares synced commits among the threads of one process (one per engine)."""

    def __init__(self, engine, *, max_group: int = 256):
        self.engine = engine
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Ticket | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="conflux-committer",
                                        daemon=True)
        self._thread.start()
        self.commits = 0
        self.batches = 0

    def apply(self, raw_ops, actor, *, admitted: bool = False):
        """Validate now, commit with whatever else is waiting, return this batch's acks;
        ``admitted``: access and signatures were checked already (``Engine.admit``)."""
        ticket = _Ticket(self.engine.validated(raw_ops, actor, admitted=admitted))
        self._queue.put(ticket)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def close(self) -> None:
        """Commit what is queued, then stop the committer thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
            outcomes = commit_group(self.engine, [t.maker for t in group])
            self.commits += 1
            self.batches += len(group)
            for ticket, (result, error) in zip(group, outcomes):
                ticket.result, ticket.error = result, error
                ticket.done.set()
            if stop:
                return


# ---------------------------------------------------------------------------------------------
# The daemon's commit service. A worker pipelines its requests on one connection, so each
# carries an id its answer repeats.
#   request: a u32 length, then msgpack [request id, actor id, actor class, [op, ...],
#            admitted]
#   answer:  a u32 length, the request id as a u64, then msgpack
#            [0, [[op id, hlc, seq, duplicate(, applied, value)], ...]] (applied and value for
#            requests of at most OUTCOME_OPS ops: conflux.engine.acks), or
#            [1, error class name, message, field, entity]

_LEN = struct.Struct("<I")
_ANSWER_HEAD = struct.Struct("<IQ")


def take_frames(buf: bytearray) -> list[bytes]:
    """The whole frames at the start of ``buf`` (their payloads), removed from it; a
    partial frame stays for the next read."""
    frames = []
    at, end = 0, len(buf)
    while end - at >= 4:
        (n,) = _LEN.unpack_from(buf, at)
        if end - at < 4 + n:
            break
        frames.append(bytes(buf[at + 4:at + 4 + n]))
        at += 4 + n
    if at:
        del buf[:at]
    return frames


def _groups(requests: list, limit: int):
    """``requests`` (``(socket, frame)``) in order, in runs of at most ``limit`` frame bytes
    (a frame over it alone)."""
    group, size = [], 0
    for request in requests:
        n = len(request[1])
        if group and size + n > limit:
            yield group
            group, size = [], 0
        group.append(request)
        size += n
    if group:
        yield group


def _answer_frame(rid: int, answer: list) -> bytes:
    data = packb(answer, use_bin_type=True)
    return _ANSWER_HEAD.pack(len(data) + 8, rid) + data


def _error_answer(exc: BaseException) -> list:
    if isinstance(exc, ConfluxError):
        return [1, type(exc).__name__, exc.message, exc.field, exc.entity]
    log.error("commit failed: %r", exc)
    return [1, "StoreError", f"the commit failed: {exc}", None, None]


def _raise_answer(answer) -> None:
    _, name, message, field, entity = answer
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ConfluxError)):
        cls = StoreError
    raise cls(message, field=field, entity=entity)


class CommitService:
    """The one writer of a daemon: accepts batches from ``CommitClient`` connections on a Unix
    socket and commits whatever is waiting as one group. Single-threaded: while it commits,
    new requests wait in their sockets, and the next group takes them all."""

    def __init__(self, engine, path: str):
        self.engine = engine
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.commits = 0
        self._actors: dict[tuple[str, str], Actor] = {}

    def _actor(self, actor_id: str, actor_cls: str) -> Actor:
        """The workers' actors, checked once each."""
        return _remembered(self._actors, (actor_id, actor_cls), Actor)

    #: After ``stop``, how long the workers still connected may go on committing.
    DRAIN_S = 30.0

    #: The most request bytes one group commits together (a bigger request is a group of its
    #: own). A batch takes far more memory unpacked than on the wire (a 16 MiB request of
    #: 270,000 ops, about 1.5 GB while it commits): this keeps a group of big batches from
    #: holding several at once, and costs the usual groups nothing (sixteen 1,000-op batches
    #: are well under 1 MiB).
    GROUP_BYTES = 8 << 20

    def serve(self, stop: threading.Event) -> None:
        """Until ``stop`` is set and no worker is connected any more (gunicorn's workers
        finish their requests in flight when the daemon stops, and a service manager may
        signal every process at once), or ``DRAIN_S`` after ``stop``."""
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        buffers: dict[socket.socket, bytearray] = {}
        deadline = None
        try:
            while True:
                if stop.is_set():
                    deadline = deadline or time.monotonic() + self.DRAIN_S
                    if not buffers or time.monotonic() > deadline:
                        return
                requests = []
                for key, _ in sel.select(0.25):
                    sock = key.fileobj
                    if sock is self.listener:
                        self._accept(sel, buffers)
                    else:
                        self._read(sock, sel, buffers, requests)
                for group in _groups(requests, self.GROUP_BYTES):
                    self._commit(group)
        finally:
            sel.close()
            for sock in buffers:
                sock.close()
            self.listener.close()

    def _accept(self, sel, buffers) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(True)  # answers are sent whole; reads use MSG_DONTWAIT
            sel.register(sock, selectors.EVENT_READ)
            buffers[sock] = bytearray()

    def _read(self, sock, sel, buffers, requests) -> None:
        buf = buffers[sock]
        try:
            data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            sel.unregister(sock)
            del buffers[sock]
            sock.close()
            return
        buf += data
        requests.extend((sock, frame) for frame in take_frames(buf))

    @without_gc
    def _commit(self, requests) -> None:
        engine = self.engine
        makers, waiting = [], []
        for sock, frame in requests:
            try:
                rid, actor_id, actor_cls, raw_ops, checked = unpackb(frame, raw=False)
            except Exception:  # noqa: BLE001 - not a frame of CommitClient's: drop the peer
                log.error("a malformed commit request; closing its connection")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                continue
            try:
                makers.append(engine.validated(raw_ops, self._actor(actor_id, actor_cls),
                                               admitted=bool(checked)))
                waiting.append((sock, rid))
            except ConfluxError as exc:
                self._send(sock, _answer_frame(rid, _error_answer(exc)))
            except Exception as exc:  # noqa: BLE001 - a malformed batch fails alone
                self._send(sock, _answer_frame(rid, _error_answer(
                    InputError(f"malformed commit request: {exc}"))))
        if not makers:
            return
        outcomes = commit_group(engine, makers)
        self.commits += 1
        answers: dict[socket.socket, list[bytes]] = {}
        for (sock, rid), (acks, error) in zip(waiting, outcomes):
            answer = _error_answer(error) if error is not None else [0, acks.rows()]
            answers.setdefault(sock, []).append(_answer_frame(rid, answer))
        for sock, frames in answers.items():  # PERF: one write per worker and group
            self._send(sock, b"".join(frames))

    @staticmethod
    def _send(sock, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the worker is gone; its reader sees the socket closed


class LocalCommitter:
    """Commits from an event loop through a ``GroupCommitter`` (made on first use) in
    ``pool``'s threads: a worker's way when the commit service cannot be reached, and the
    API's own when it is served without one."""

    def __init__(self, engine, pool=None):
        self.engine = engine
        self.pool = pool
        self._committer = None

    async def apply(self, raw_ops, actor, *, admitted: bool = False):
        if self._committer is None:
            self._committer = GroupCommitter(self.engine)
        return await _in_pool(self.pool, self._committer.apply, raw_ops, actor,
                              admitted=admitted)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()


class CommitClient:
    """A worker's way to the commit service, from its event loop: one connection, made on
    first use, on which every request of the worker is sent as it comes and answered when its
    group is durable. No thread waits: a request awaits its answer's future.

    When the service cannot be reached before a batch is sent, the batch is committed by the
    worker itself (``LocalCommitter``): slower, never refused. Once a batch was sent, a lost
    connection is a 503 (the outcome is unknown; clients that send their own op ids retry
    safely)."""

    #: Batches of more ops than this are packed, and their answers read, in a thread of
    #: ``pool``: a 16 MiB batch takes a large fraction of a second either way, which the
    #: event loop spends on the worker's other requests meanwhile.
    BIG_BATCH = 2000

    def __init__(self, path: str, engine, *, pool=None):
        self.path = path
        self.engine = engine
        self.pool = pool
        self.alone = LocalCommitter(engine, pool)
        self._link: _Link | None = None
        self._connecting: asyncio.Future | None = None

    async def apply(self, raw_ops: list, actor, *, admitted: bool = False):
        """Commit the batch with whatever else is waiting and return its acks once durable;
        ``admitted``: access and signatures were checked already (``Engine.admit``)."""
        if not admitted:
            # PERF: access and Ed25519 in this worker, in parallel with the others, not in
            # the service; a batch so admitted spares the service its pass over the ops too
            self.engine.admit(raw_ops, actor)
        link = self._link
        if link is None:
            try:
                link = await self._connect()
            except OSError:
                return await self.alone.apply(raw_ops, actor, admitted=True)
        big = len(raw_ops) > self.BIG_BATCH
        try:
            ops = (await _in_pool(self.pool, _packed, raw_ops)) if big else _packed(raw_ops)
        except (TypeError, ValueError, OverflowError):
            # not packable: the engine names what is wrong
            return await self.alone.apply(raw_ops, actor, admitted=True)
        answer = await link.call(actor, ops)
        return (await _in_pool(self.pool, _acks, answer)) if big else _acks(answer)

    async def _connect(self) -> "_Link":
        # requests arriving while the connection is being made wait for the same one
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> "_Link":
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(lambda: _Link(self), self.path)
        self._link = link
        return link

    def close(self) -> None:
        """Close the connection (the service stops once no worker is left)."""
        if self._link is not None:
            self._link.transport.close()
            self._link = None
        self.alone.close()


# A request frame, built from its parts: the ops are packed apart (a big batch in a thread).
_REQUEST = b"\x95"  # a msgpack array of 5
_ADMITTED = b"\xc3"  # true: the worker checked access and signatures


def _packed(raw_ops: list) -> bytes:
    return packb(raw_ops, use_bin_type=True)


async def _in_pool(pool, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in one of ``pool``'s threads, awaited."""
    return await asyncio.get_running_loop().run_in_executor(
        pool, functools.partial(fn, *args, **kwargs))


def _remembered(cache: dict, key, make):
    """``cache[key]``, made with ``make(*key)`` on first use; a worker's actors are few (API
    keys and certificates), so the cache is only emptied if it grows past that."""
    found = cache.get(key)
    if found is None:
        if len(cache) > 4096:
            cache.clear()
        found = cache[key] = make(*key)
    return found


_RID = struct.Struct("<Q")


def _packed_actor(actor) -> bytes:
    return packb(actor.id) + packb(actor.cls)


def _acks(payload: bytes) -> list:
    """A request's acks from the service's answer (its id first), or its error raised."""
    answer = unpackb(memoryview(payload)[8:], raw=False)
    if answer[0] != 0:
        _raise_answer(answer)
    return [Ack(*row[:4]) if len(row) == 4 else
            Ack(*row[:4], applied=row[4], value=row[5]) for row in answer[1]]


class _Link(asyncio.Protocol):
    """One worker's connection to the commit service: requests written as they come, each
    answer handed to the future its id names."""

    def __init__(self, client: CommitClient):
        self.client = client
        self.transport = None
        self.buf = bytearray()
        self.waiting: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.actors: dict = {}  # actor -> its id and class, packed

    def connection_made(self, transport) -> None:
        # PERF: the requests of one turn of the event loop go in one write (one system call,
        # and the service reads them together)
        self.transport = JoinedWrites(transport, asyncio.get_running_loop())

    def call(self, actor, ops: bytes) -> asyncio.Future:
        """Send a request (``ops`` packed) and return the future of its answer's payload."""
        rid = self.next_id
        self.next_id += 1
        who = _remembered(self.actors, (actor,), _packed_actor)
        data = _REQUEST + packb(rid) + who + ops + _ADMITTED
        future = asyncio.get_running_loop().create_future()
        self.waiting[rid] = future
        self.transport.write(_LEN.pack(len(data)) + data)
        return future

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for payload in take_frames(self.buf):
            # the answer is read by whoever awaits it (a big one in a thread)
            future = self.waiting.pop(_RID.unpack_from(payload)[0], None)
            if future is not None and not future.done():
                future.set_result(payload)

    def connection_lost(self, exc) -> None:
        if self.client._link is self:
            self.client._link = None
        why = exc or "the connection was closed"
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(StoreError(
                    f"the commit service stopped before answering ({why}); the batch may or "
                    "may not be stored"))
        self.waiting.clear()


class CommitProcess(HelperProcess):
    """The daemon's commit service, in a helper process (``conflux.daemon.supervisor``)
    listening on a Unix socket in a private directory of its own (mode 0700). ``path`` is what
    the workers' ``CommitClient`` connect to."""

    name = "conflux-commits"
    START_S = 30.0

    @classmethod
    def start(cls, directory: str) -> CommitProcess:
        """Start the service and wait until it listens (its workers can commit without it
        meanwhile, only slower: see ``CommitClient``)."""
        _sweep_stale()
        private = tempfile.mkdtemp(prefix=_PREFIX)  # 0700: only this user connects
        with open(os.path.join(private, "daemon.pid"), "w") as fh:
            fh.write(str(os.getpid()))
        path = os.path.join(private, "commits.sock")
        self = cls(_serve, (os.path.abspath(directory), path, os.getpid()))
        self.private, self.path = private, path
        self.launch()
        deadline = time.monotonic() + self.START_S
        while not _listening(path):
            if exited(self.process) or time.monotonic() > deadline:
                log.error("the commit service did not start; each worker commits alone")
                break
            time.sleep(0.02)
        return self

    def stop(self, grace_s: float = 15.0) -> None:
        super().stop(grace_s)
        shutil.rmtree(self.private, ignore_errors=True)


_PREFIX = "conflux-commits-"


def _sweep_stale() -> None:
    """Remove the socket directories of daemons that were killed (SIGKILL, a crash) before
    they could: this user's, whose daemon process is gone."""
    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        private = os.path.join(root, name)
        try:
            if os.stat(private).st_uid != os.getuid():
                continue
            with open(os.path.join(private, "daemon.pid")) as fh:
                pid = int(fh.read().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(private, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge: no pid file yet, or unreadable


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _serve(directory: str, path: str, parent: int) -> None:
    """The commit process: serve until SIGTERM or until the daemon is gone, then finish the
    group in hand."""
    from conflux.engine import Engine

    logging.basicConfig(level=logging.INFO, format="[conflux-commits %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a service that died: this one takes over
    # one synced journal write per group; a shared op log keeps synced commits
    with Engine(directory, journal=True) as engine:
        CommitService(engine, path).serve(stop)

