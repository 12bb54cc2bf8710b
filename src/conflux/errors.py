"""Conflux's one exception tree.

Every error Conflux raises is a ``ConfluxError``. Each leaf is also the builtin a Python
caller would expect (``ValueError`` for bad input, ``KeyError`` for a missing thing), and
carries what the two interfaces need: the CLI's exit status and the HTTP status, code and the
field the error is about. Foreign libraries' errors (lmdb, pygit2, nacl) are translated into
this tree in exactly one module each.
"""

from __future__ import annotations

__all__ = [
    "ConfluxError",
    "InputError",
    "SchemaError",
    "ValidationError",
    "ClockSkewError",
    "NotFound",
    "PreconditionFailed",
    "OpIdConflict",
    "AuthError",
    "PermissionDenied",
    "StoreError",
    "OutputError",
    "Busy",
    "CoreMissing",
    "first_line",
]


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (PostgreSQL's run to several), or the error's
    type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ConfluxError(Exception):
    """Base of every Conflux error. Not bad input: exit status 1."""

    exit_code = 1
    http_status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None,
                 line: int | None = None, entity: str | None = None):
        self.message = message
        self.field = field
        self.path = path
        self.line = line
        self.entity = entity
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message

    def to_dict(self) -> dict:
        """The JSON error body (docs/rest.md, "Errors")."""
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return {"error": body}


class InputError(ConfluxError, ValueError):
    """Something the user or client sent is wrong; nothing was written."""

    exit_code = 2
    http_status = 400
    code = "bad_request"


class SchemaError(InputError):
    """The schema file is not valid; the message names file, line, entity and field."""

    code = "schema_invalid"


class ValidationError(InputError):
    """An operation's value or shape does not fit the schema (refused before accept)."""

    http_status = 422
    code = "invalid_value"


class ClockSkewError(InputError):
    """An operation's HLC is too far ahead of this store's wall clock, or below its horizon."""

    http_status = 422
    code = "clock_skew"


class NotFound(InputError, KeyError):
    """An entity, field, environment, operation or milestone that does not exist."""

    http_status = 404
    code = "not_found"


class PreconditionFailed(InputError):
    """An operation's ``base`` no longer matches the field's current value."""

    http_status = 409
    code = "precondition_failed"


class OpIdConflict(InputError):
    """An operation reuses the op id of another operation (another actor's, or other
    content): an op id names one operation, so only an identical retry is acknowledged."""

    http_status = 409
    code = "op_id_conflict"


class AuthError(InputError, PermissionError):
    """No credentials, or credentials that match no configured API key or certificate."""

    http_status = 401
    code = "unauthorized"


class PermissionDenied(InputError, PermissionError):
    """The authenticated actor may not do this (RBAC); nothing was written."""

    http_status = 403
    code = "forbidden"


class StoreError(ConfluxError, OSError):
    """The store cannot be opened, read or written (not the caller's fault)."""

    http_status = 503
    code = "store_unavailable"


class OutputError(ConfluxError, OSError):
    """What a command writes to a file or stream could not be written whole (a full disk, an
    I/O error): not bad input, exit status 1; nothing was left half-written in its place."""

    http_status = 503
    code = "output_failed"


class Busy(ConfluxError):
    """The server holds as much work as it safely can right now; the client retries."""

    http_status = 503
    code = "busy"


class CoreMissing(ConfluxError, ImportError):
    """The compiled core was demanded (CONFLUX_REQUIRE_EXTENSIONS=1) but did not load."""

    code = "core_missing"
