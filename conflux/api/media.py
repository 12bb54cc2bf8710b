"""Request and response bodies: JSON by default, msgpack when the client asks for it."""

from __future__ import annotations

import json

import falcon
import msgpack

from conflux.errors import InputError

MSGPACK = "application/msgpack"
JSON = "application/json"


class BodyTooLarge(InputError):
    http_status = 413
    code = "body_too_large"


def read_body(req, limit: int):
    """The request's body, parsed by its content type; 413 past ``limit`` bytes."""
    length = req.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"the body is {length} bytes; this server takes at most {limit}")
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(f"the body is over {limit} bytes, the most this server takes")
    if not data:
        raise InputError("the request has no body")
    kind = (req.content_type or JSON).split(";")[0].strip().lower()
    try:
        if kind in (MSGPACK, "application/x-msgpack"):
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        if kind in (JSON, "text/json") or kind.endswith("+json"):
            return json.loads(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError) as exc:
        raise InputError(f"the body is not valid {kind}: {exc}") from None
    raise UnsupportedMedia(f"content type {kind!r} is not supported (use {JSON} or {MSGPACK})")


class UnsupportedMedia(InputError):
    http_status = 415
    code = "unsupported_media_type"


def write_body(req, resp, data, status: int = 200) -> None:
    """Answer with ``data`` as msgpack if the client accepts it, else JSON."""
    resp.status = status
    if MSGPACK in (req.accept or ""):
        resp.content_type = MSGPACK
        resp.data = msgpack.packb(data, use_bin_type=True)
    else:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps(data, default=str, separators=(",", ":")).encode()
