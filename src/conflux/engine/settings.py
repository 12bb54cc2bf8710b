"""A project's directory and its settings (``.conflux/config.toml``)."""

from __future__ import annotations

import os
import time

from conflux._tomlfile import TomlFile
from conflux.actors import ACTOR_CLASSES
from conflux.errors import InputError, StoreError
from conflux.limits import DEFAULT_MAX_VALUE_BYTES


CONFLUX_DIR = ".conflux"


_DEFAULT_CONFIG = """\
# Conflux settings for this project.

[clock]
# An operation stamped further than this ahead of the store's wall clock is refused.
max_clock_offset_ms = {max_clock_offset_ms}

[compaction]
# Tombstones older than this are causally stable and may be dropped by 'compaction'.
stability_window_s = {stability_window_s}

[limits]
# The largest field value, in bytes as stored (a set's elements of one operation together):
# a bigger one is refused, whichever way it comes (REST, command line, import).
max_value_bytes = {max_value_bytes}

[signatures]
# Actor classes whose operations must be signed (keys in keys.json: 'conflux keys').
# require = ["human", "pipeline"]

# [milestones]
# repository = "milestones.git"   # inside .conflux/, or any path
# branch = "main"
# format = "yaml"
# remote = "/srv/git/infra-config.git"   # pushed after scheduled milestones
# every_ops = 1000                # the daemon makes a milestone every N operations...
# every_seconds = 3600            # ...or every T seconds, when something changed

# [daemon]
# grpc_port = 9401                # also serve the gRPC service (docs/grpc.md)
# auth = "none"                   # local use only: callers name themselves (loopback only)

# [store]
# The shared op log of several daemons, on PostgreSQL (docs/architecture.md). The password
# comes from the daemon's environment (PGPASSWORD) or ~/.pgpass, never from this file.
# url = "postgresql://conflux@db.internal:5432/conflux"
"""


class Settings:
    """The project's settings (``config.toml``); immutable."""

    # PERF: Settings and Ack are plain classes rather than dataclasses: the dataclasses
    # module imports inspect, about 10 ms of every command's start (python -X importtime)
    max_clock_offset_ms: int = 500
    stability_window_s: int = 7 * 24 * 3600
    require_signatures: frozenset = frozenset()
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    store_url: str | None = None
    grpc_port: int | None = None
    auth: str = "keys"

    def __init__(self, max_clock_offset_ms: int = max_clock_offset_ms,
                 stability_window_s: int = stability_window_s,
                 require_signatures: frozenset = require_signatures,
                 max_value_bytes: int = max_value_bytes, store_url: str | None = store_url,
                 grpc_port: int | None = grpc_port, auth: str = auth):
        self.__dict__.update(max_clock_offset_ms=max_clock_offset_ms,
                             stability_window_s=stability_window_s,
                             require_signatures=require_signatures,
                             max_value_bytes=max_value_bytes, store_url=store_url,
                             grpc_port=grpc_port, auth=auth)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}: Settings are immutable")

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self):
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"

    @classmethod
    def load(cls, path: str) -> "Settings":
        """The settings of ``config.toml`` (the defaults without one). Unknown tables and keys
        and values of the wrong kind are refused with the file and line: a misspelt setting
        would otherwise be ignored in silence."""
        try:
            doc = TomlFile(path, keep=True)  # config.toml: kept parsed for the next command
        except FileNotFoundError:
            return cls()
        data = doc.data
        for table, keys in CONFIG_KEYS.items():
            if table not in data:
                continue
            if not isinstance(data[table], dict):
                doc.fail(f"{table!r} must be a table, written [{table}]",
                         line=doc.top_key(table))
            for key in data[table]:
                if keys is not None and key not in keys:
                    # (lines are looked up only to report: every command reads this file)
                    doc.fail(f"[{table}]: unknown key {key!r} (known: {', '.join(keys)})",
                             line=doc.first_line(doc.key(key, doc.table(table)),
                                                 doc.top_key(table)))
        for table in data:
            if table not in CONFIG_KEYS:
                doc.fail(f"unknown table {table!r} (known: "
                         f"{', '.join(f'[{t}]' for t in CONFIG_KEYS)})", line=doc.top_key(table))

        def number(table, key, default):
            value = data.get(table, {}).get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                doc.fail(f"[{table}] {key} must be a whole number, 0 or more (got {value!r})",
                         line=doc.first_line(doc.key(key, doc.table(table)),
                                             doc.top_key(table)))
            return value

        required = data.get("signatures", {}).get("require", [])
        if not isinstance(required, list) or not all(c in ACTOR_CLASSES for c in required):
            doc.fail(f"[signatures] require must list actor classes ({', '.join(ACTOR_CLASSES)})",
                     line=doc.first_line(doc.key("require", doc.table("signatures")),
                                         doc.top_key("signatures")))
        max_value = number("limits", "max_value_bytes", cls.max_value_bytes)
        if not 1 <= max_value <= _MAX_VALUE_CEILING:
            doc.fail(f"[limits] max_value_bytes must be 1 to {_MAX_VALUE_CEILING:,} (got "
                     f"{max_value!r})", line=doc.first_line(doc.key(
                         "max_value_bytes", doc.table("limits")), doc.top_key("limits")))
        store_url = _store_url(doc) if "store" in data else None
        grpc_port = data.get("daemon", {}).get("grpc_port")
        if grpc_port is not None and (type(grpc_port) is not int or not 1 <= grpc_port <= 65535):
            doc.fail(f"[daemon] grpc_port must be a TCP port, 1 to 65535 (got {grpc_port!r})",
                     line=doc.first_line(doc.key("grpc_port", doc.table("daemon")),
                                         doc.top_key("daemon")))
        auth = data.get("daemon", {}).get("auth", "keys")
        if auth not in ("keys", "none"):
            doc.fail(f"[daemon] auth must be \"keys\" (API keys and certificates) or \"none\" "
                     f"(local use: callers name themselves), not {auth!r}",
                     line=doc.first_line(doc.key("auth", doc.table("daemon")),
                                         doc.top_key("daemon")))
        return cls(number("clock", "max_clock_offset_ms", cls.max_clock_offset_ms),
                   number("compaction", "stability_window_s", cls.stability_window_s),
                   frozenset(required), max_value, store_url, grpc_port, auth)


def _store_url(doc) -> str | None:
    """``[store] url``: a PostgreSQL URL without a password (the daemon's environment,
    ``PGPASSWORD`` or ``~/.pgpass``, holds it: config.toml is read by every command)."""
    url = doc.data["store"].get("url")
    if url is None:
        return None
    problem = store_url_problem(url)
    if problem is not None:
        doc.fail(f"[store] url {problem}", line=doc.first_line(
            doc.key("url", doc.table("store")), doc.top_key("store")))
    return url


def store_url_problem(url) -> str | None:
    """What is wrong with ``url`` as the shared op log's URL (``[store] url``, ``conflux init
    --store``, ``conflux store migrate --to``), said after the words naming it; None when
    nothing is."""
    from urllib.parse import urlsplit  # PERF: only for a project that has a [store]

    if not isinstance(url, str) or urlsplit(url).scheme not in ("postgresql", "postgres"):
        return "must be a PostgreSQL URL, postgresql://user@host:port/database"
    try:
        password = urlsplit(url).password
    except ValueError as exc:
        return f"is not a URL: {exc}"
    if password is not None or "password=" in url:
        return ("holds a password: keep it out of config.toml and give it to the daemon in "
                "PGPASSWORD or ~/.pgpass")
    return None


def write_store_url(path: str, url: str | None) -> None:
    """Set ``[store] url`` in the ``config.toml`` at ``path`` (None: remove it, and the
    ``[store]`` header when nothing else is under it), leaving every other line as written:
    the comments are the operator's. The file is replaced whole or not at all."""
    import re
    import tomllib

    from conflux.destination import open_destination

    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    header = re.compile(r"\s*\[\s*store\s*\]\s*(#.*)?$")
    table_start = re.compile(r"\s*\[")
    url_key = re.compile(r"""\s*(url|"url"|'url')\s*=""")
    content = re.compile(r"\s*[^\s#]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if table_start.match(lines[i])),
                   len(lines))
        at = next((i for i in range(start + 1, end) if url_key.match(lines[i])), None)
    setting = None if url is None else f"url = {_toml_string(url)}\n"
    if url is not None and start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n", "[store]\n", setting]
    elif url is not None:
        if at is None:
            lines.insert(start + 1, setting)
        else:
            lines[at] = setting
    elif start is not None and at is not None:
        del lines[at]
        if not any(content.match(line) for line in lines[start + 1:end - 1]):
            del lines[start]
            if start and not lines[start - 1].strip() and (start == len(lines)
                                                           or not lines[start].strip()):
                del lines[start - 1]  # the blank line the table was set off by
    text = "".join(lines)
    try:
        written = tomllib.loads(text).get("store", {}).get("url")
    except tomllib.TOMLDecodeError:
        written = False
    if written != url:
        raise InputError(f"{path}: [store] url could not be {'set' if url else 'removed'} "
                         "without rewriting the file (is it written as a dotted key?): "
                         "edit it by hand; nothing was changed")
    with open_destination(path) as fh:
        fh.write(text.encode("utf-8"))


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}"
                         for c in escaped) + '"'


#: The tables of ``config.toml`` and their keys (``[milestones]``'s are checked by
#: ``conflux.milestones.MilestoneSettings``).
CONFIG_KEYS = {
    "clock": ("max_clock_offset_ms",),
    "compaction": ("stability_window_s",),
    "signatures": ("require",),
    "limits": ("max_value_bytes",),
    "store": ("url",),
    "daemon": ("grpc_port", "auth"),
    "milestones": None,
}


#: A field value is one LMDB record with its merge metadata, read whole on every get: keep
#: even a configured limit well below what a request body may carry.
_MAX_VALUE_CEILING = 64 << 20


def project_root(directory: str) -> str:
    """The ``.conflux`` directory of the project in ``directory``, which must have one."""
    root = os.path.join(directory, CONFLUX_DIR)
    if not os.path.isdir(root):
        raise StoreError(f"no Conflux project in {os.path.abspath(directory)} "
                         f"(run 'conflux init --schema schema.toml' there, or pass --dir)")
    return root


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def starter_schema(name: str) -> str:
    """A schema to begin with (``conflux init`` without ``--schema``): two environments and
    two entity types, each field's merge strategy explained."""
    import json

    return f"""# Conflux schema: the environments and the entity types (docs/configuration.md).
name = {json.dumps(name)}
version = "0.1.0"

[environments]
base = "production"
overlays = [{{ name = "staging", inherits = "production" }}]

[entity.service]
fields = [
    {{ name = "image",    type = "string",       merge = "lww" }},  # last writer wins
    {{ name = "replicas", type = "int",          merge = "max", default = 1 }},  # highest wins
    {{ name = "ports",    type = "list<int>",    merge = "set" }},  # add and remove elements
]

[entity.route]
fields = [
    {{ name = "path",     type = "string",       merge = "lww", pattern = "^/" }},
    {{ name = "weight",   type = "int",          merge = "max", min = 0, max = 100 }},
    {{ name = "timeout",  type = "duration",     merge = "min" }},  # the shortest wins
    {{ name = "service",  type = "ref<service>", merge = "lww" }},
]
"""
