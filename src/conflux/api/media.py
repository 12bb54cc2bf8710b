"""Request and response bodies: JSON by default, msgpack when the client asks for it."""

from __future__ import annotations

import asyncio
import collections
import json

import falcon

from conflux.codec import ExtraData, FormatError, StackError, packb, unpackb
from conflux.errors import Busy, InputError
from conflux.limits import MAX_NESTING, check_parsed

MSGPACK = "application/msgpack"
JSON = "application/json"

#: Compact JSON of an answer or event (made once: ``json.dumps`` with options builds an
#: encoder per call)
to_json = json.JSONEncoder(default=str, separators=(",", ":")).encode


class BodyTooLarge(InputError):
    http_status = 413
    code = "body_too_large"


class BodyLate(InputError):
    http_status = 408
    code = "request_timeout"


#: Seconds a request's body has to arrive once its head has.
BODY_S = 30.0


async def read_body(req, bodies: "BodyBudget", limit: int):
    """The request's body, parsed by its content type (``request_body``)."""
    async with request_body(req, bodies, limit) as data:
        return parse_body(req, data)


class request_body:
    """``async with request_body(req, bodies, limit) as data``: the request's body as sent,
    held in the worker's budget of ``bodies`` from before it is read (its declared size, or
    ``limit`` when it comes chunked) until the block ends: a worker with many connections
    buffers no more than the budget at once. 413 past ``limit`` bytes, 408 if the body does
    not arrive within ``BODY_S`` seconds.

    PERF: a class, not a generator, and a timer of its own rather than ``asyncio.timeout``:
    on the one-op path those cost about 15 us of the request's 45 in the app."""

    __slots__ = ("req", "bodies", "limit", "held")

    def __init__(self, req, bodies: "BodyBudget", limit: int):
        self.req, self.bodies, self.limit, self.held = req, bodies, limit, 0

    async def __aenter__(self) -> bytes:
        length, limit = self.req.content_length, self.limit
        if length is not None and length > limit:
            raise BodyTooLarge(f"the body is {length} bytes; this server takes at most {limit}")
        self.held = await self.bodies.take(limit if length is None else length)
        try:
            return await _in_time(read_bytes(self.req, limit), BODY_S)
        except BaseException:
            self.bodies.give_back(self.held)
            raise

    async def __aexit__(self, *exc) -> None:
        self.bodies.give_back(self.held)


async def _in_time(read, seconds: float):
    """``await read``, or ``BodyLate`` after ``seconds``."""
    task = asyncio.current_task()
    late = []

    def expire():
        late.append(True)
        task.cancel()
    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await read
    except asyncio.CancelledError:
        if late and task.uncancel() == 0:
            raise BodyLate(f"the request's body did not arrive within {seconds:.0f} s"
                           ) from None
        raise
    finally:
        timer.cancel()


async def read_bytes(req, limit: int) -> bytes:
    """The request's body as sent, with a Content-Length or chunked; 413 past ``limit``
    bytes (a body is read no further than that), 400 if there is none."""
    # the server (uvicorn) decodes chunks and ends the stream at the last one
    parts, got = [], 0
    async for part in req.stream:
        got += len(part)
        if got > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes, the most this server takes")
        parts.append(part)
    if not got:
        raise InputError("the request has no body")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_body(req, data: bytes):
    """``data`` parsed by the request's content type (JSON or msgpack, named: 415 without
    one), nested at most ``MAX_NESTING`` levels (400 past that)."""
    if not req.content_type:
        # a browser sends a body without a content type cross-site with no preflight, and
        # would present a signed-in user's client certificate: a write must say what it is
        raise UnsupportedMedia(f"the request has no Content-Type: send {JSON} or {MSGPACK}")
    kind = req.content_type.split(";")[0].strip().lower()
    if kind in (MSGPACK, "application/x-msgpack"):
        def parse(data):
            return unpackb(data, raw=False, strict_map_key=True)
    elif kind in (JSON, "text/json") or kind.endswith("+json"):
        parse = json.loads
    else:
        raise UnsupportedMedia(f"content type {kind!r} is not supported (use {JSON} or "
                               f"{MSGPACK})")
    too_deep = f"the body is nested deeper than {MAX_NESTING} levels of lists and maps"
    try:
        body = parse(data)
    except RecursionError:
        raise InputError(too_deep) from None
    except StackError:
        raise InputError(too_deep) from None
    except (ValueError, ExtraData, FormatError, TypeError) as exc:
        raise InputError(f"the body is not valid {kind}: {exc}") from None
    # PERF: the compiled walk costs about 7 % of json.loads for a batch of 270,000 ops
    # (0.027 s against 0.40 s), and lets nothing below meet a hostile depth
    check_parsed(body, "the body")
    return body


class BodyBudget:
    """How many bytes of request bodies a worker parses and holds at once.

    A batch takes far more memory parsed than on the wire (a 16 MiB request of 270,000 ops,
    about 300 MB while its worker serves it), so a worker serving many big batches at once
    could run the machine out of memory. A request holds its body's size in the budget from
    parsing to its answer; one that cannot get it within ``wait_s`` is answered 503 (retry).
    Small bodies pass as long as the budget is not spent on big ones. Requests wait in the
    order they came, on their worker's event loop (no thread is held)."""

    def __init__(self, total: int, wait_s: float = 60.0):
        self.total, self.wait_s = total, wait_s
        self.used = 0
        self._waiting: collections.deque = collections.deque()

    async def take(self, n: int) -> int:
        """Hold ``n`` bytes (at most the whole budget) until ``give_back``; what is held."""
        n = min(n, self.total)
        if self._waiting or self.used + n > self.total:
            await self._wait(n)  # returns with n counted
        else:
            self.used += n
        return n

    def give_back(self, n: int) -> None:
        self.used -= n
        self._wake()

    async def _wait(self, n: int) -> None:
        granted = asyncio.get_running_loop().create_future()
        entry = (n, granted)
        self._waiting.append(entry)
        try:
            await asyncio.wait((granted,), timeout=self.wait_s)
        except asyncio.CancelledError:  # the client went away while waiting
            if granted.done():
                self.used -= n
                self._wake()
            raise
        finally:
            if not granted.done():
                granted.cancel()
                self._waiting.remove(entry)
                self._wake()  # the next in line may fit now that this one stepped aside
        if granted.cancelled():
            raise Busy("this server is busy with other large request bodies; retry "
                       "shortly (or send smaller batches)")

    def _wake(self) -> None:
        """Grant the requests first in line whose sizes fit (in order: a big body is not
        overtaken for ever by small ones)."""
        while self._waiting:
            n, granted = self._waiting[0]
            if self.used + n > self.total:
                return
            self._waiting.popleft()
            self.used += n
            granted.set_result(None)


class UnsupportedMedia(InputError):
    http_status = 415
    code = "unsupported_media_type"


def write_body(req, resp, data, status: int = 200) -> None:
    """Answer with ``data`` as msgpack if the client accepts it, else JSON."""
    resp.status = status
    if MSGPACK in (req.accept or ""):
        resp.content_type = MSGPACK
        resp.data = packb(data, use_bin_type=True)
    else:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = to_json(data).encode()
