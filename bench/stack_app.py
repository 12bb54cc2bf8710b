"""The servers of bench/server_stack.py: one bare one-op endpoint under several HTTP stacks.

``POST /v1/ops`` takes a one-op JSON body like the daemon's (at most the daemon's 32 MiB body
budget, ``application/json`` only: 413 and 415 otherwise), parses it, checks it is one op (a
JSON object with a ``type``) and answers a small JSON acknowledgement; ``GET /v1/health``
answers 200 (the readiness probe). The same handler code runs under every stack:

* ``gthread``: ``falcon.App`` (WSGI) under gunicorn's threaded workers, the daemon's design
  before it served from event loops (``conflux.daemon.daemon_options`` for the rest: its
  workers, timeouts and per-worker garbage-collector settings);
* ``uvicorn``: ``falcon.asgi.App`` under gunicorn with uvicorn workers (uvloop, httptools),
  the same gunicorn settings otherwise (threads do not apply); the daemon's own worker adds
  its request-head limits and joined writes to this (``conflux.daemon.worker``);
* ``granian``: ``falcon.asgi.App`` under granian's ASGI interface (uvloop, HTTP/1.1);
* ``granian-rsgi``: no Falcon, a bare handler on granian's own RSGI interface (the floor of
  that server: what Falcon's ASGI layer costs on top of it).

``--durable`` makes the ASGI endpoint answer only once the op is durable, two ways:

* ``local``: a writer thread in each worker takes every op waiting in that worker and makes
  one synced LMDB commit for them (group commit; the workers share one environment and take
  turns on its writer lock); a request awaits an asyncio future that the writer resolves,
  for the whole group at once, through the event loop.
* ``hop``: each worker keeps one Unix-socket connection to a commit process beside the
  workers, pipelining length-prefixed frames (the body) on it; the commit process reads every
  frame waiting on every connection, makes one synced LMDB commit for them and answers each
  (8 bytes, the op's sequence number), in order, one write per connection.

Both commits are the same: each op's body under the next sequence number, and the last
sequence number under ``seq`` (what the bench checks against what it was answered), in an
environment opened with ``conflux.store``'s flags (synced data and meta pages).

* ``hop-wal``: as ``hop``, but the commit process appends the group's bodies to a write-ahead
  log instead (a file allocated ahead, one ``pwrite`` and one ``fdatasync`` per group, so a
  sync writes data blocks only): what a durable commit costs when it is one sequential write,
  against LMDB's two ordered ones (the data pages, then the meta page), the design of etcd's
  WAL. Nothing reads the log back; the bench counts its records.

Run by bench/server_stack.py as ``python bench/stack_app.py --stack S --port N
[--workers W] [--threads T] [--durable local|hop --store DIR]``; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import pathlib
import queue
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:  # an installed Conflux first; else the source tree this script sits in
    import conflux  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)

import falcon  # noqa: E402
import falcon.asgi  # noqa: E402

from conflux.api.app import DEFAULT_BODY_LIMIT  # noqa: E402
from conflux.daemon.commits import _LEN  # noqa: E402
from conflux.store import open_env  # noqa: E402

_SEQ = struct.Struct(">Q")
HEALTH = b'{"status":"ok","bare":true}'
JSON = "application/json"


class Refused(Exception):
    def __init__(self, status: int, code: int, message: str):
        self.status, self.code, self.message = status, code, message


def check_request(content_type: str | None, length: int | None) -> None:
    if not content_type or content_type.split(";", 1)[0].strip().lower() != JSON:
        raise Refused(falcon.HTTP_415, 415, "the body must be application/json")
    if length is not None and length > DEFAULT_BODY_LIMIT:
        raise Refused(falcon.HTTP_413, 413, "the body is over the limit")


def parse_op(body: bytes) -> dict:
    if len(body) > DEFAULT_BODY_LIMIT:
        raise Refused(falcon.HTTP_413, 413, "the body is over the limit")
    try:
        op = json.loads(body)
    except ValueError:
        raise Refused(falcon.HTTP_400, 400, "the body is not JSON") from None
    if not isinstance(op, dict) or not isinstance(op.get("type"), str):
        raise Refused(falcon.HTTP_400, 400, "the body is not one op")
    return op


def ack(seq: int | None) -> bytes:
    return b'{"accepted":1}' if seq is None else b'{"accepted":1,"seq":%d}' % seq


def refusal(resp, exc: Refused) -> None:
    resp.status = exc.status
    resp.content_type = JSON
    resp.data = json.dumps({"error": exc.message, "status": exc.code}).encode()


_settled = False


def settle_worker() -> None:
    """The daemon's per-worker collector settings (``conflux.daemon.server._settle_worker``),
    for the servers gunicorn's hook does not reach: once per worker, on its first request."""
    global _settled
    if not _settled:
        _settled = True
        gc.freeze()
        gc.set_threshold(20_000, 50, 50)


# ---------------------------------------------------------------------------------------------
# WSGI (gthread)


class WsgiOps:
    def on_post(self, req, resp):
        try:
            check_request(req.content_type, req.content_length)
            parse_op(req.bounded_stream.read())
        except Refused as exc:
            return refusal(resp, exc)
        resp.content_type = JSON
        resp.data = ack(None)


class WsgiHealth:
    def on_get(self, req, resp):
        resp.content_type = JSON
        resp.data = HEALTH


def wsgi_app() -> falcon.App:
    app = falcon.App(cors_enable=False)
    app.add_route("/v1/ops", WsgiOps())
    app.add_route("/v1/health", WsgiHealth())
    return app


# ---------------------------------------------------------------------------------------------
# Durability in an ASGI worker


def commit_group(env, bodies: list[bytes]) -> int:
    """One synced write transaction for ``bodies``; the sequence number of the first."""
    with env.begin(write=True) as txn:
        last = txn.get(b"seq")
        seq = _SEQ.unpack(last)[0] if last else 0
        first = seq + 1
        for body in bodies:
            seq += 1
            txn.put(_SEQ.pack(seq), body)
        txn.put(b"seq", _SEQ.pack(seq))
    return first


def _resolve(futures: list, first: int) -> None:
    for i, fut in enumerate(futures):
        if not fut.done():
            fut.set_result(first + i)


class LocalWriter:
    """``--durable local``: the worker's writer thread; one wake-up of the event loop per
    group, not per request."""

    def __init__(self, store: str):
        self.env = open_env(store, map_size=1 << 30, max_dbs=0)
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="bench-writer", daemon=True).start()

    async def commit(self, body: bytes) -> int:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting.put((loop, fut, body))
        return await fut

    def _run(self) -> None:
        while True:
            group = [self.waiting.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    group.append(self.waiting.get_nowait())
            first = commit_group(self.env, [body for _, _, body in group])
            loop = group[0][0]  # one event loop per worker
            loop.call_soon_threadsafe(_resolve, [fut for _, fut, _ in group], first)


class _HopProtocol(asyncio.Protocol):
    def __init__(self, client: HopClient):
        self.client = client
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = len(self.buf) // _SEQ.size
        waiting = self.client.waiting
        for i in range(n):
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(_SEQ.unpack_from(self.buf, i * _SEQ.size)[0])
        del self.buf[:n * _SEQ.size]

    def connection_lost(self, exc) -> None:
        while self.client.waiting:
            fut = self.client.waiting.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("the commit process closed the connection"))
        self.client.transport = None


class HopClient:
    """``--durable hop``: the worker's one connection to the commit process; answers come
    back in the order the frames went out."""

    def __init__(self, path: str):
        self.path = path
        self.transport = None
        self.connecting = None
        self.waiting: collections.deque = collections.deque()

    async def commit(self, body: bytes) -> int:
        if self.transport is None:
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
            await asyncio.shield(self.connecting)
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.transport.write(_LEN.pack(len(body)) + body)
        return await fut

    async def _connect(self) -> None:
        try:
            self.transport, _ = await asyncio.get_running_loop().create_unix_connection(
                lambda: _HopProtocol(self), self.path)
        finally:
            self.connecting = None


class WriteAheadLog:
    """``--durable hop-wal``: length-prefixed bodies appended to ``wal`` in ``store``."""

    SIZE = 1 << 30

    def __init__(self, store: str):
        self.fd = os.open(os.path.join(store, "wal"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.posix_fallocate(self.fd, 0, self.SIZE)  # zeros: a reader stops at length 0
        os.fsync(self.fd)
        self.at = self.seq = 0

    def commit(self, bodies: list[bytes]) -> int:
        data = b"".join(_LEN.pack(len(body)) + body for body in bodies)
        if self.at + len(data) > self.SIZE:
            raise SystemExit("the write-ahead log is full")
        os.pwrite(self.fd, data, self.at)
        os.fdatasync(self.fd)
        self.at += len(data)
        first, self.seq = self.seq + 1, self.seq + len(bodies)
        return first


def wal_records(path: str) -> int:
    """How many bodies a ``WriteAheadLog`` holds."""
    n = 0
    with open(path, "rb") as fh:
        while (head := fh.read(_LEN.size)) and (size := _LEN.unpack(head)[0]):
            fh.seek(size, os.SEEK_CUR)
            n += 1
    return n


def commit_process(path: str, store: str, wal: bool = False) -> None:
    """The process beside the workers for ``--durable hop`` and ``hop-wal``."""
    env = open_env(store, map_size=1 << 30, max_dbs=0)
    log = WriteAheadLog(store) if wal else None
    from http_bare_app import frame_rounds  # bench/, on the path as this script's folder

    for ready in frame_rounds(path):
        bodies = [body for _, frames in ready for body in frames]
        seq = log.commit(bodies) if log else commit_group(env, bodies)
        for sock, frames in ready:
            sock.sendall(b"".join(_SEQ.pack(seq + i) for i in range(len(frames))))
            seq += len(frames)


# ---------------------------------------------------------------------------------------------
# ASGI (uvicorn, granian) and RSGI (granian)


class AsgiOps:
    def __init__(self):
        self.writer = None

    def _writer(self):
        if self.writer is None:  # in the worker, after any fork
            settle_worker()
            mode = os.environ.get("STACK_DURABLE")
            if mode == "local":
                self.writer = LocalWriter(os.environ["STACK_STORE"])
            elif mode in ("hop", "hop-wal"):
                self.writer = HopClient(os.environ["STACK_SOCKET"])
            else:
                self.writer = False
        return self.writer

    async def on_post(self, req, resp):
        writer = self._writer()
        try:
            check_request(req.content_type, req.content_length)
            body = await req.stream.read()
            parse_op(body)
        except Refused as exc:
            return refusal(resp, exc)
        seq = await writer.commit(body) if writer else None
        resp.content_type = JSON
        resp.data = ack(seq)


class AsgiHealth:
    async def on_get(self, req, resp):
        resp.content_type = JSON
        resp.data = HEALTH


def make_asgi_app() -> falcon.asgi.App:
    app = falcon.asgi.App(cors_enable=False)
    app.add_route("/v1/ops", AsgiOps())
    app.add_route("/v1/health", AsgiHealth())
    return app


asgi_app = make_asgi_app()  # granian imports it by name in each worker


async def rsgi_app(scope, proto):
    """granian's RSGI interface, no framework: the same checks, parse and answer."""
    settle_worker()
    headers = [("content-type", JSON)]
    if scope.path == "/v1/health":
        proto.response_bytes(200, headers, HEALTH)
        return
    try:
        length = scope.headers.get("content-length")
        check_request(scope.headers.get("content-type"), int(length) if length else None)
        parse_op(await proto())
    except Refused as exc:
        proto.response_bytes(exc.code, headers,
                             json.dumps({"error": exc.message, "status": exc.code}).encode())
        return
    proto.response_bytes(200, headers, ack(None))


# ---------------------------------------------------------------------------------------------
# Launchers


def serve_gunicorn(args, worker_class: str | None) -> None:
    from gunicorn.app.base import BaseApplication

    from conflux.daemon import daemon_options

    options = daemon_options(host=args.host, port=args.port, workers=args.workers,
                             threads=args.threads)
    options["proc_name"] = f"conflux-bench-{args.stack}"
    if worker_class is not None:
        options["worker_class"] = worker_class
    else:
        options.update(worker_class="gthread", threads=args.threads)

    class App(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                if value is not None:
                    self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # as the daemon does
                self.cfg.set("control_socket_disable", True)

        def load(self):
            return wsgi_app() if args.stack == "gthread" else make_asgi_app()

    App().run()


def serve_granian(args, interface: str) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    Granian(f"stack_app:{interface}_app", address=args.host, port=args.port,
            interface=Interfaces.RSGI if interface == "rsgi" else Interfaces.ASGI,
            workers=args.workers, loop=Loops.uvloop, http=HTTPModes.http1, websockets=False,
            log_access=False, working_dir=pathlib.Path(HERE)).serve()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True,
                        choices=["gthread", "uvicorn", "granian", "granian-rsgi"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16, help="gthread only")
    parser.add_argument("--durable", choices=["local", "hop", "hop-wal"])
    parser.add_argument("--store", help="the LMDB directory of --durable")
    args = parser.parse_args(argv)
    if args.durable and (args.stack not in ("uvicorn", "granian") or not args.store):
        parser.error("--durable needs an ASGI stack (uvicorn, granian) and --store")
    # the workers read these (granian's import the app module anew)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    sys.path.insert(0, HERE)
    master, helper = os.getpid(), None
    try:
        if args.durable:
            os.makedirs(args.store, exist_ok=True)
            open_env(args.store, map_size=1 << 30, max_dbs=0).close()  # before any worker
            os.environ["STACK_DURABLE"] = args.durable
            os.environ["STACK_STORE"] = args.store
            if args.durable in ("hop", "hop-wal"):
                import multiprocessing

                path = os.path.join(args.store, "commit.sock")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                os.environ["STACK_SOCKET"] = path
                helper = multiprocessing.get_context("spawn").Process(
                    target=commit_process, args=(path, args.store, args.durable == "hop-wal"),
                    daemon=True)
                helper.start()
                deadline = time.monotonic() + 30
                while not os.path.exists(path):
                    if not helper.is_alive() or time.monotonic() > deadline:
                        raise SystemExit("the commit process did not start")
                    time.sleep(0.02)
        if args.stack == "gthread":
            serve_gunicorn(args, None)
        elif args.stack == "uvicorn":
            serve_gunicorn(args, "stack_app.UvloopWorker")
        else:
            serve_granian(args, "rsgi" if args.stack == "granian-rsgi" else "asgi")
        return 0
    finally:
        if os.getpid() == master and helper is not None:  # workers unwind through here too
            helper.terminate()


try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # the gthread and granian stacks do without it
    UvicornWorker = None
else:
    class UvloopWorker(UvicornWorker):
        """uvicorn's gunicorn worker, with uvloop and httptools asked for by name (no fallback
        to the pure-Python ones) and no access log (the daemon's default has none)."""

        CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}


if __name__ == "__main__":
    sys.exit(main())
