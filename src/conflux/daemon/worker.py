"""The daemon's gunicorn worker: one event loop (uvloop) per process, HTTP parsed by
httptools, serving the ASGI app (``conflux.api.create_app``) through uvicorn.

No request holds a thread: a write awaits its commit's answer, a watch stream waits on its
worker's follower of the op log. What the worker adds to uvicorn's HTTP protocol:

* the verified TLS client certificate in each request's scope (mutual TLS: the actor);
* limits on the request head as the daemon has always had them: a request line of at most
  8,190 bytes (414), at most 100 header fields of at most 8,190 bytes each (431), and the
  whole head within ``HEAD_S`` seconds of the connection or of the previous answer (a client
  that trickles its head is closed, not waited for);
* at a graceful stop (SIGTERM), the watch streams end at once (their clients resume with
  ``Last-Event-ID`` elsewhere) while requests in flight are answered.

And to the worker: a stop the master was asked for while it forked this worker is not lost,
and a worker whose master is gone (killed) stops rather than serving on for ever.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from conflux.api.access import PEERCERT
from conflux.api.watch import LogFollower
from conflux.daemon.joined import JoinedWrites

__all__ = ["Worker"]

LIMIT_REQUEST_LINE = 8190
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
#: Seconds a client has to send a request's line and headers.
HEAD_S = 10.0


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Protocol(HttpToolsProtocol):
    peercert = None
    _head_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.transport = JoinedWrites(transport, self.loop)  # an answer's head and body
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.peercert = ssl_object.getpeercert() or None
        self._head_timer = self.loop.call_later(HEAD_S, self._head_late)

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.peercert:
            self.scope[PEERCERT] = self.peercert
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_S, self._head_late)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > LIMIT_REQUEST_LINE:
            raise _Refused(414, "uri_too_long",
                           f"the request line is over {LIMIT_REQUEST_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= LIMIT_REQUEST_FIELDS:
            raise _Refused(431, "request_header_fields_too_large",
                           f"the request has over {LIMIT_REQUEST_FIELDS} header fields")
        if len(name) + len(value) > LIMIT_REQUEST_FIELD_SIZE:
            raise _Refused(431, "request_header_fields_too_large",
                           f"a header field is over {LIMIT_REQUEST_FIELD_SIZE} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to what its parser refused, called while handling the parser's
        # error: a limit above (a _Refused from a callback) is answered with its own status
        status, code, message = 400, "bad_request", "the request is not valid HTTP"
        cause = sys.exc_info()[1]
        while cause is not None and not isinstance(cause, _Refused):
            cause = cause.__context__
        if cause is not None:
            status, code, message = cause.status, cause.code, cause.message
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n\r\n", body]))
        self.transport.close()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _head_late(self) -> None:
        self._head_timer = None
        if self._idle():
            self.transport.abort()  # no (whole) request head in time

    def timeout_keep_alive_handler(self) -> None:
        # NOTE: an idle connection is dropped, not closed with TLS's close_notify: a TLS
        # close waits for the client's own (uvloop: up to 30 s), which a client that already
        # went away never sends, and the graceful stop would wait for it
        if not self.transport.is_closing():
            self.transport.abort()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def shutdown(self) -> None:
        LogFollower.close_all()
        if self._idle():
            self.transport.abort()  # see timeout_keep_alive_handler
        else:
            super().shutdown()


_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def _drained(signals) -> list:
    """What this process's copy of the master's signal queue holds (gunicorn's
    ``SIG_QUEUE``: a ``queue.SimpleQueue``, a list in older versions), taken out."""
    if signals is None or isinstance(signals, list):
        return list(signals or ())
    out = []
    while True:
        try:
            out.append(signals.get_nowait())
        except queue.Empty:
            return out


class Worker(UvicornWorker):
    """gunicorn's worker for the daemon (``worker_class``): uvicorn with uvloop, httptools
    and the protocol above; gunicorn's settings carried over (TLS and mutual TLS, keep-alive,
    the graceful stop's timeout, the access log, connections per worker)."""

    # no proxy headers: the daemon reads no client address (the access log shows the peer's)
    CONFIG_KWARGS = {"loop": "uvloop", "http": _Protocol, "ws": "none", "lifespan": "off",
                     "server_header": False, "proxy_headers": False}

    #: The master's queue of signals to handle, as this worker inherited it (``post_fork``).
    master_signals = None

    def init_signals(self) -> None:
        super().init_signals()
        # NOTE: until the line above, a signal sent to this worker ran the master's handler
        # it inherited, which only queues it; and one the master had queued but not handled
        # when it forked came along too. A stop among them was meant for this worker as well
        # (the master sends its workers SIGTERM once, then waits for them until its timeout):
        # gone unnoticed, the worker served on, and the stop took the whole timeout.
        if any(sig in _STOPS for sig in _drained(self.master_signals)):
            sys.exit(0)

    async def callback_notify(self) -> None:
        await super().callback_notify()
        if os.getppid() != self.ppid:  # the master was killed: no one will stop this worker
            self.log.warning("the daemon's master is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.config
        config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        config.access_log = bool(self.cfg.accesslog)
        config.limit_concurrency = self.cfg.worker_connections
