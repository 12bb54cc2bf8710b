"""The bare baseline of bench/http_ingest.py: Falcon under gunicorn, parsing and not storing.

``POST /v1/ops`` reads the body exactly as the daemon does (``conflux.api.media.read_body``:
the same size limit, JSON or msgpack by content type), checks the same single-op/batch shape
and answers 202 with ``{"accepted": n}`` through the daemon's own ``write_body``. Nothing is
authenticated, validated against the schema or stored: this is what HTTP, gunicorn, Falcon
and the body's parse cost on their own. ``GET /v1/health`` answers 200 (readiness probe).

The gunicorn settings are ``conflux.daemon.daemon_options`` (gthread, the same workers,
threads, timeouts, keep-alive and limits as ``conflux daemon``, and the same garbage
collector settings in each worker once the app is loaded); only the process title differs,
so the baseline can be told apart from the daemon in ``ps``.

With ``--hop`` each request also makes one round trip to a writer process beside the
workers, over a Unix socket, with the frames the daemon's workers send its commit service
(``conflux.daemon.commits``). Like that service, the writer reads every frame waiting, makes
the least a durable LMDB commit can be for the group (one put of a few bytes in a synced
write transaction, with ``conflux.store``'s environment flags) and answers each frame: no
validation, no merge, no op log. It is the ceiling of any design that hands durable writes
to one writer process, as ``conflux daemon`` does, before any of Conflux's own work.

With ``--local-commit`` each worker commits for itself instead, as the daemon's workers did
before the commit service: a committer thread per worker takes every request waiting in
that worker, makes the same one-put synced commit in one LMDB environment shared by the
workers, and lets them answer. It is the ceiling of the other design.

Run by bench/http_ingest.py as ``python bench/http_bare_app.py --port N [--workers W]
[--threads T] [--hop]``; it stops on SIGTERM like the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:  # an installed Conflux first; else the source tree this script sits in
    import conflux  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)

import falcon  # noqa: E402
import msgpack  # noqa: E402
from gunicorn.app.base import BaseApplication  # noqa: E402

from conflux.api.app import DEFAULT_BODY_LIMIT  # noqa: E402
from conflux.api.media import read_body, write_body  # noqa: E402
from conflux.daemon.commits import _frame, _read_frame, take_frames  # noqa: E402
from conflux.daemon import daemon_options  # noqa: E402
from conflux.errors import ConfluxError  # noqa: E402
from conflux.store import open_env  # noqa: E402


class BareOps:
    def __init__(self, hop: Hop | LocalCommit | None = None):
        self.hop = hop

    def on_post(self, req, resp):
        body = read_body(req, DEFAULT_BODY_LIMIT)
        single = not (isinstance(body, dict) and "ops" in body and "type" not in body)
        ops = [body] if single else body["ops"] if isinstance(body["ops"], list) else []
        if self.hop is not None:
            self.hop.round_trip(ops)
        write_body(req, resp, {"accepted": len(ops)}, 202)


class Hop:
    """A worker's round trip to the writer process, as ``CommitClient`` makes it: one
    connection per thread, a frame out, a frame back."""

    def __init__(self, path: str):
        self.path = path
        self.local = threading.local()

    def round_trip(self, ops) -> list:
        sock = getattr(self.local, "sock", None)
        if sock is None:
            sock = self.local.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
        sock.sendall(_frame(["bench", "pipeline", ops, True]))
        return msgpack.unpackb(_read_frame(sock), raw=False)


class LocalCommit:
    """``--local-commit``: the worker's own committer thread; a request waits for the
    synced commit of the group it joined."""

    def __init__(self, store: str):
        self.env = open_env(store, map_size=1 << 30, max_dbs=0)
        self.waiting: queue.SimpleQueue[threading.Event] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="bench-committer", daemon=True).start()

    def round_trip(self, ops) -> None:
        done = threading.Event()
        self.waiting.put(done)
        done.wait()

    def _run(self) -> None:
        key, groups = f"worker-{os.getpid()}".encode(), 0
        while True:
            group = [self.waiting.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    group.append(self.waiting.get_nowait())
            groups += 1
            with self.env.begin(write=True) as txn:
                txn.put(key, groups.to_bytes(8, "big"))
            for done in group:
                done.set()


def writer_serve(path: str, store: str) -> None:
    """The process beside the workers: like the commit service, it reads every frame waiting
    on every connection, commits one put, synced, and answers each frame (an acknowledgement
    per op); nothing else."""
    env = open_env(store, map_size=1 << 30, max_dbs=0)
    groups = 0
    for ready in frame_rounds(path):
        groups += 1
        with env.begin(write=True) as txn:
            txn.put(b"groups", groups.to_bytes(8, "big"))
        for sock, frames in ready:
            for frame in frames:
                _, _, ops, _ = msgpack.unpackb(frame, raw=False)
                sock.sendall(_frame([0, [[f"bench-{i}", 1, i, False]
                                         for i in range(len(ops))]]))


def frame_rounds(path: str):
    """Listen on the Unix socket ``path``; yield, each time some connections have whole
    frames waiting, ``[(connection, [frame, ...]), ...]``: every frame waiting on every
    connection, read as the commit service reads one group."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(512)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytearray] = {}
    while True:
        ready: list[tuple[socket.socket, list[bytes]]] = []
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = bytearray()
                continue
            data = sock.recv(1 << 20)
            if not data:
                sel.unregister(sock)
                buffers.pop(sock).clear()
                sock.close()
                continue
            buf = buffers[sock]
            buf += data
            frames = take_frames(buf)
            if frames:
                ready.append((sock, frames))
        if ready:
            yield ready


class BareHealth:
    def on_get(self, req, resp):
        write_body(req, resp, {"status": "ok", "bare": True})


def _conflux_error(req, resp, exc, params):
    write_body(req, resp, exc.to_dict(), exc.http_status)


def create_bare_app(hop: Hop | LocalCommit | None = None) -> falcon.App:
    app = falcon.App(cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    app.add_route("/v1/ops", BareOps(hop))
    app.add_route("/v1/health", BareHealth())
    app.add_error_handler(ConfluxError, _conflux_error)
    return app


class BareApp(BaseApplication):
    def __init__(self, options: dict, *, hop: str | None = None, local: str | None = None):
        self.options = options
        self.hop, self.local = hop, local
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:  # as the daemon does
            self.cfg.set("control_socket_disable", True)

    def load(self):
        # in each worker, after the fork (LMDB environments must not cross one)
        if self.local is not None:
            return create_bare_app(LocalCommit(self.local))
        return create_bare_app(Hop(self.hop) if self.hop is not None else None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, help="default: the daemon's")
    parser.add_argument("--threads", type=int, help="default: the daemon's")
    parser.add_argument("--hop", action="store_true",
                        help="one round trip per request to a writer process that commits "
                             "one synced put per group (see above)")
    parser.add_argument("--local-commit", action="store_true",
                        help="each worker commits one synced put per group itself")
    args = parser.parse_args(argv)
    options = daemon_options(host=args.host, port=args.port, **{
        k: v for k, v in (("workers", args.workers), ("threads", args.threads)) if v})
    options["proc_name"] = "conflux-bench-bare"
    if not (args.hop or args.local_commit):
        BareApp(options).run()
        return 0
    import multiprocessing

    master, writer = os.getpid(), None
    private = tempfile.mkdtemp(prefix="conflux-bench-hop-")
    store = os.path.join(private, "store")
    os.mkdir(store)
    try:
        if args.local_commit:
            BareApp(options, local=store).run()
            return 0
        path = os.path.join(private, "writer.sock")
        writer = multiprocessing.get_context("spawn").Process(target=writer_serve,
                                                              args=(path, store), daemon=True)
        writer.start()
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if not writer.is_alive() or time.monotonic() > deadline:
                raise SystemExit("the writer process did not start")
            time.sleep(0.02)
        BareApp(options, hop=path).run()
        return 0
    finally:
        if os.getpid() == master:  # the workers' exit unwinds through here too
            if writer is not None:
                writer.terminate()
            shutil.rmtree(private, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
