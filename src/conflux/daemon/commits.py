"""Group commit: concurrent writers share one synced LMDB commit.

A synced commit costs about as much as thousands of merges (an fsync), so concurrent requests
put their batches through one committer: each batch is validated on its own (a bad batch
fails alone, never its neighbours), the committer applies everything waiting in one write
transaction, commits once, and hands each request its own acknowledgements. A request is
answered only after the commit that holds its operations.

Two committers share that logic (``commit_group``):

* ``GroupCommitter``, a thread of one process, for an engine used by several threads.
* ``CommitService``, the daemon's one writer: a process of its own that every gunicorn
  worker's threads reach through a Unix socket (``CommitClient``). One queue for the whole
  daemon makes the groups as large as the load allows, and the process does nothing else.
  PERF: that matters because py-lmdb releases the GIL around every get and put; a writer
  thread sharing an interpreter with busy request threads waits for the GIL again after each
  of them, which made a commit of a few ops take milliseconds (see bench/http_ingest.py).
"""

from __future__ import annotations

import contextlib
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
from conflux.daemon.supervisor import HelperProcess, exited, helper_stop_event
from conflux.engine.acks import Ack
from conflux.errors import ConfluxError, StoreError

__all__ = ["GroupCommitter", "CommitService", "CommitClient", "CommitProcess", "commit_group",
           "take_frames"]

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
# The daemon's commit service. Frames on the socket: a u32 length, then msgpack.
#   request: [actor id, actor class, [op, ...]]
#   answer:  [0, [[op id, hlc, seq, duplicate(, applied, value)], ...]] (applied and value
#            for requests of at most OUTCOME_OPS ops: conflux.engine.acks)
#            [1, error class name, message, field, entity]

_LEN = struct.Struct("<I")
_MAX_FRAME = 1 << 30


def _frame(payload) -> bytes:
    data = packb(payload, use_bin_type=True)
    return _LEN.pack(len(data)) + data


def take_frames(buf: bytearray) -> list[bytes]:
    """The whole frames at the start of ``buf`` (their payloads), removed from it; a
    partial frame stays for the next read."""
    frames = []
    while len(buf) >= 4:
        (n,) = _LEN.unpack_from(buf)
        if len(buf) < 4 + n:
            break
        frames.append(bytes(buf[4:4 + n]))
        del buf[:4 + n]
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


def _read_frame(sock) -> bytes:
    """One answer, usually in one ``recv`` (a single op's answer is ~40 bytes)."""
    data, need = b"", 4
    while len(data) < need:
        more = sock.recv(max(1 << 16, need - len(data)))
        if not more:
            raise ConnectionError("the commit service closed the connection")
        data += more
        if need == 4 and len(data) >= 4:
            need += _LEN.unpack_from(data)[0]
            if need > _MAX_FRAME:
                raise ConnectionError("a malformed answer from the commit service")
    return data[4:need]


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
        """The workers' actors, checked once each (they are few: API keys and certificates)."""
        key = (actor_id, actor_cls)
        actor = self._actors.get(key)
        if actor is None:
            if len(self._actors) > 4096:
                self._actors.clear()
            actor = self._actors[key] = Actor(actor_id, actor_cls)
        return actor

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
                actor_id, actor_cls, raw_ops, checked = unpackb(frame, raw=False)
                makers.append(engine.validated(raw_ops, self._actor(actor_id, actor_cls),
                                               admitted=bool(checked)))
                waiting.append(sock)
            except ConfluxError as exc:
                self._answer(sock, _error_answer(exc))
            except Exception as exc:  # noqa: BLE001 - a malformed frame fails alone
                self._answer(sock, [1, "InputError", f"malformed commit request: {exc}",
                                    None, None])
        if not makers:
            return
        outcomes = commit_group(engine, makers)
        self.commits += 1
        for sock, (acks, error) in zip(waiting, outcomes):
            if error is not None:
                self._answer(sock, _error_answer(error))
            else:
                self._answer(sock, [0, acks.rows()])

    @staticmethod
    def _answer(sock, answer) -> None:
        try:
            sock.sendall(_frame(answer))
        except OSError:
            pass  # the worker is gone; its reader sees the socket closed


class CommitClient:
    """A worker's way to the commit service: one connection per thread, made on first use.

    When the service cannot be reached before a batch is sent, the batch is committed here,
    through ``fallback`` (the worker's own ``GroupCommitter``): slower, never refused. Once a
    batch was sent, a lost connection is a 503 (the outcome is unknown; clients that send
    their own op ids retry safely)."""

    def __init__(self, path: str, fallback):
        self.path = path
        self.fallback = fallback
        self._local = threading.local()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()

    def close(self) -> None:
        """Close every thread's connection (the service stops once no worker is left)."""
        with self._lock:
            socks, self._socks = self._socks, set()
        for sock in socks:
            sock.close()

    def apply(self, raw_ops, actor):
        engine = getattr(self.fallback, "engine", None)  # None: the service checks
        checked = engine is not None and isinstance(raw_ops, list)
        if checked:
            # PERF: access and Ed25519 in this worker, in parallel with the others, not in
            # the service; a batch so admitted spares the service its pass over the ops too
            engine.admit(raw_ops, actor)
        try:
            frame = _frame([actor.id, actor.cls, raw_ops, checked])
        except (TypeError, ValueError, OverflowError):
            # the engine names what is wrong
            return self.fallback.apply(raw_ops, actor, admitted=checked)
        sock = getattr(self._local, "sock", None)
        try:
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.path)
                self._local.sock = sock
                with self._lock:
                    self._socks.add(sock)
            sock.sendall(frame)
        except OSError:
            self._drop(sock)
            return self.fallback.apply(raw_ops, actor, admitted=checked)
        try:
            answer = unpackb(_read_frame(sock), raw=False)
        except OSError as exc:
            self._drop(sock)
            raise StoreError(f"the commit service stopped before answering ({exc}); the "
                             "batch may or may not be stored") from None
        if answer[0] != 0:
            _raise_answer(answer)
        return [Ack(*row[:4]) if len(row) == 4 else
                Ack(*row[:4], applied=row[4], value=row[5]) for row in answer[1]]

    def _drop(self, sock) -> None:
        if sock is not None:
            sock.close()
            with self._lock:
                self._socks.discard(sock)
        self._local.sock = None


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
    with Engine(directory) as engine:
        CommitService(engine, path).serve(stop)

