"""Request and response bodies: JSON by default, msgpack when the client asks for it."""

from __future__ import annotations

import contextlib
import json
import threading

import falcon

from conflux.codec import ExtraData, FormatError, StackError, packb, unpackb
from conflux.errors import Busy, InputError
from conflux.limits import MAX_NESTING, check_parsed

MSGPACK = "application/msgpack"
JSON = "application/json"


class BodyTooLarge(InputError):
    http_status = 413
    code = "body_too_large"


def read_body(req, limit: int):
    """The request's body, parsed by its content type; 413 past ``limit`` bytes."""
    return parse_body(req, read_bytes(req, limit))


def read_bytes(req, limit: int) -> bytes:
    """The request's body as sent, with a Content-Length or chunked; 413 past ``limit``
    bytes (a chunked body is read no further than that), 400 if there is none."""
    length = req.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"the body is {length} bytes; this server takes at most {limit}")
    if length is None and "chunked" in (req.get_header("Transfer-Encoding") or "").lower():
        # the server (gunicorn) decodes the chunks and ends the stream at the last one;
        # Falcon's bounded stream would read nothing without a Content-Length
        stream = req.stream
    else:
        stream = req.bounded_stream
    data = _read_upto(stream, limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(f"the body is over {limit} bytes, the most this server takes")
    if not data:
        raise InputError("the request has no body")
    return data


def _read_upto(stream, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream``: a read may return less than asked before the end."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def parse_body(req, data: bytes):
    """``data`` parsed by the request's content type (JSON unless it says msgpack), nested at
    most ``MAX_NESTING`` levels (400 past that)."""
    kind = (req.content_type or JSON).split(";")[0].strip().lower()
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
    about 300 MB while its worker serves it), so a worker whose threads all took big batches
    at once could run the machine out of memory. A request holds its body's size in the
    budget from parsing to its answer; one that cannot get it within ``wait_s`` is answered
    503 (retry). Small bodies pass as long as the budget is not spent on big ones."""

    def __init__(self, total: int, wait_s: float = 60.0):
        self.total, self.wait_s = total, wait_s
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int):
        n = min(n, self.total)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + n <= self.total, self.wait_s):
                raise Busy("this server is busy with other large request bodies; retry "
                           "shortly (or send smaller batches)")
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


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
        resp.data = json.dumps(data, default=str, separators=(",", ":")).encode()
