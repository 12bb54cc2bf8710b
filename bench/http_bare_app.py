"""The bare baseline of bench/http_ingest.py: Falcon under gunicorn, parsing and not storing.

``POST /v1/ops`` reads the body exactly as the daemon does (``conflux.api.media.read_body``:
the same size limit, JSON or msgpack by content type), checks the same single-op/batch shape
and answers 202 with ``{"accepted": n}`` through the daemon's own ``write_body``. Nothing is
authenticated, validated against the schema or stored: this is what HTTP, gunicorn, Falcon
and the body's parse cost on their own. ``GET /v1/health`` answers 200 (readiness probe).

The gunicorn settings are ``conflux.daemon.daemon_options`` (gthread, the same workers,
threads, timeouts, keep-alive and limits as ``conflux daemon``); only the process title
differs, so the baseline can be told apart from the daemon in ``ps``.

Run by bench/http_ingest.py as ``python bench/http_bare_app.py --port N [--workers W]
[--threads T]``; it stops on SIGTERM like the daemon.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:  # an installed Conflux first; else the source tree this script sits in
    import conflux  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)

import falcon  # noqa: E402
from gunicorn.app.base import BaseApplication  # noqa: E402

from conflux.api.app import DEFAULT_BODY_LIMIT  # noqa: E402
from conflux.api.media import read_body, write_body  # noqa: E402
from conflux.daemon import daemon_options  # noqa: E402
from conflux.errors import ConfluxError  # noqa: E402


class BareOps:
    def on_post(self, req, resp):
        body = read_body(req, DEFAULT_BODY_LIMIT)
        single = not (isinstance(body, dict) and "ops" in body and "type" not in body)
        n = 1 if single else len(body["ops"]) if isinstance(body["ops"], list) else 0
        write_body(req, resp, {"accepted": n}, 202)


class BareHealth:
    def on_get(self, req, resp):
        write_body(req, resp, {"status": "ok", "bare": True})


def _conflux_error(req, resp, exc, params):
    write_body(req, resp, exc.to_dict(), exc.http_status)


def create_bare_app() -> falcon.App:
    app = falcon.App(cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    app.add_route("/v1/ops", BareOps())
    app.add_route("/v1/health", BareHealth())
    app.add_error_handler(ConfluxError, _conflux_error)
    return app


class BareApp(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return create_bare_app()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    options = daemon_options(host=args.host, port=args.port, workers=args.workers,
                             threads=args.threads)
    options["proc_name"] = "conflux-bench-bare"
    BareApp(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
