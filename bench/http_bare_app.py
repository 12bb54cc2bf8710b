"""The bare baseline of bench/http_ingest.py: the daemon's server stack, parsing and not storing.

A ``falcon.asgi.App`` whose responders are coroutines, under gunicorn with the daemon's own
settings (``conflux.daemon.daemon_options``: its worker, ``conflux.daemon.worker.Worker``,
i.e. uvicorn with uvloop and httptools; the same workers, timeouts, keep-alive, connection
limit and per-worker garbage-collector settings, applied once the app is loaded). Only the
process title differs, so the baseline can be told apart from the daemon in ``ps``.

``POST /v1/ops`` reads the body as the daemon does (``conflux.api.media.read_bytes``: the same
size limit, a Content-Length or chunked; then ``parse_body``: JSON or msgpack by content
type, the same nesting check), on the event loop, or in the worker's thread pool for bodies
over the daemon's ``INLINE_BYTES``; it checks the same single-op/batch shape and answers 202
with ``{"accepted": n}`` through the daemon's own ``write_body``. Nothing is authenticated,
validated against the schema or stored: this is what HTTP, gunicorn, uvicorn, Falcon and the
body's parse cost on their own. ``GET /v1/health`` answers 200 (readiness probe).

Run by bench/http_ingest.py as ``python bench/http_bare_app.py --port N [--workers W]
[--threads T]``; it stops on SIGTERM like the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import selectors
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

if importlib.util.find_spec("conflux") is None:  # an installed Conflux first; else this tree
    sys.path.insert(0, ROOT)

import falcon.asgi  # noqa: E402
from gunicorn.app.base import BaseApplication  # noqa: E402

from conflux.api.app import DEFAULT_BODY_LIMIT  # noqa: E402
from conflux.api.media import parse_body, read_bytes, write_body  # noqa: E402
from conflux.api.ops import INLINE_BYTES  # noqa: E402
from conflux.daemon import daemon_options  # noqa: E402
from conflux.daemon.commits import take_frames  # noqa: E402
from conflux.errors import ConfluxError  # noqa: E402


class BareOps:
    def __init__(self, pool: ThreadPoolExecutor):
        self.pool = pool

    async def on_post(self, req, resp):
        data = await read_bytes(req, DEFAULT_BODY_LIMIT)
        if len(data) <= INLINE_BYTES:
            body = parse_body(req, data)
        else:  # as the daemon: a big body is parsed beside the event loop
            body = await asyncio.get_running_loop().run_in_executor(
                self.pool, parse_body, req, data)
        single = not (isinstance(body, dict) and "ops" in body and "type" not in body)
        ops = [body] if single else body["ops"] if isinstance(body["ops"], list) else []
        write_body(req, resp, {"accepted": len(ops)}, 202)


class BareHealth:
    async def on_get(self, req, resp):
        write_body(req, resp, {"status": "ok", "bare": True})


async def _conflux_error(req, resp, exc, params):
    write_body(req, resp, exc.to_dict(), exc.http_status)


def create_bare_app(threads: int) -> falcon.asgi.App:
    app = falcon.asgi.App(cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    pool = ThreadPoolExecutor(threads, thread_name_prefix="conflux-slow")
    app.add_route("/v1/ops", BareOps(pool))
    app.add_route("/v1/health", BareHealth())
    app.add_error_handler(ConfluxError, _conflux_error)
    return app


class BareApp(BaseApplication):
    def __init__(self, options: dict, threads: int):
        self.options, self.threads = options, threads
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:  # as the daemon does
            self.cfg.set("control_socket_disable", True)

    def load(self):
        return create_bare_app(self.threads)  # in each worker, after the fork


def frame_rounds(path: str):
    """Listen on the Unix socket ``path``; yield, each time some connections have whole
    frames waiting, ``[(connection, [frame, ...]), ...]``: every frame waiting on every
    connection, read as the commit service reads one group. (The commit process of
    bench/stack_app.py's ``--durable hop``.)"""
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers (default 2, the daemon's)")
    parser.add_argument("--threads", type=int, default=8,
                        help="slow-work threads per worker (default 8, the daemon's)")
    args = parser.parse_args(argv)
    options = daemon_options(host=args.host, port=args.port, workers=args.workers,
                             threads=args.threads)
    options["proc_name"] = "conflux-bench-bare"
    BareApp(options, args.threads).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
