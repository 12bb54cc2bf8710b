"""Webhooks: committed operations POSTed to HTTP endpoints, signed, after the commit.

``.conflux/webhooks.toml`` declares the endpoints, one ``[[webhook]]`` table each::

    [[webhook]]
    name = "audit-sink"                     # letters, digits, '_', '.', '-'; unique
    url = "https://audit.example/hook"      # http:// or https:// only
    secret = "env:CONFLUX_HOOK_SECRET"      # the HMAC key: "env:VAR" reads $VAR, else literal
    events = ["op"]                         # optional, default ["op"]
    entities = ["route.*"]                  # optional fnmatch globs over entity ids
    envs = ["production"]                   # optional globs over environments
    actors = ["autoscaler:*"]               # optional globs: CLASS:ID, or ID (any class)
    from_start = false                      # optional: deliver the whole history first
    max_attempts = 8                        # optional: tries per batch before giving up
    backoff_s = 0.5                         # optional: first retry delay, doubling...
    max_backoff_s = 60                      # ...up to this
    timeout_s = 10                          # optional: per HTTP call (connect, each read)
    batch_size = 100                        # optional: at most this many ops per POST

**Events.** ``"op"``: every committed operation that passes the filters. ``"milestone"``:
every milestone (``conflux.milestones``) that projects an environment matching ``envs`` (the
entity and actor filters are for operations), one POST each with the body ``{"event":
"milestone", "webhook": NAME, "milestone": {...}}`` (the milestone as ``GET
/v1/milestones/{id}`` shows it), ``X-Conflux-Event: milestone`` and ``X-Conflux-Delivery:
<name>-milestone-<id>``; its cursor is the last milestone number done with
(``webhook:<name>:milestone``), and it is retried and given up on like a batch of ops.

**Filters.** Globs are case-sensitive ``fnmatch`` patterns (``*`` also crosses dots). An
operation passes when its actor matches one of ``actors`` and the operation (or, for a
promotion, one of its parts) matches one of ``entities`` and one of ``envs``; a missing
filter passes everything. A promotion that passes is sent whole.

**Delivery.** ``POST url`` with the JSON body ``{"event": "op", "webhook": NAME, "ops":
[...]}``, the operations as ``GET /v1/ops`` shows them (each with its ``seq`` and
``op_id``), oldest first, at most ``batch_size`` of them, and the headers:

- ``X-Conflux-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes keyed with the
  secret (UTF-8). Receivers recompute it and compare in constant time.
- ``X-Conflux-Delivery: <name>-<first seq>-<last seq>``: the seqs of the first and last
  operation in the body; a retry of a batch sends the same bytes and the same id.
- ``X-Conflux-Event: op`` and ``Content-Type: application/json``.

Only a 2xx answer counts; redirects are not followed (a 3xx is a failure like a 5xx). Delivery
is **at least once**: each webhook has a cursor, the last sequence number it is done with,
kept in the store (``Store.webhook_cursor``) and advanced only after a 2xx, so a
restart resumes where delivery stopped and may resend the last batch. Receivers deduplicate by
``op_id`` (or ``seq``). A failed POST is retried after ``backoff_s``, doubling up to
``max_backoff_s``, with jitter (each wait is between half and all of the nominal one); after
``max_attempts`` tries the batch is recorded as failed (count, last error, seq range and time
kept beside it) and the cursor moves past it, so one dead endpoint never holds
back its own later operations, let alone other webhooks. ``conflux status`` and ``GET
/v1/status`` (``"webhooks"``) show the failures.

A webhook first seen starts at the end of the log as it is then (the history is not
replayed) unless ``from_start = true``. The cursor belongs to the name: change a hook's URL or
filters and it carries on from where it was; rename it and it starts afresh.

**Where it runs.** Never in the request path: ``conflux daemon`` starts one delivery process
(``conflux.daemon.delivery``: multiprocessing's ``spawn`` context, a fresh interpreter with
its own LMDB environment) when ``webhooks.toml`` exists, starts it again if it dies, and stops
it when the daemon exits. It tails the op log by sequence number, so it sees what every worker
and the CLI commit, and each webhook is served by its own thread, so a slow endpoint delays no
other. A lock file keeps a second daemon on the same project from delivering the same events.
The file is read when the daemon starts; restart the daemon after editing it.

**In a cluster** (a shared op log, ``[store] url``): one daemon at a time delivers, the holder
of the cluster's ``webhooks`` lease (``conflux.store.lease``), and the cursors are positions
in the shared log kept in PostgreSQL: ``conflux.webhooks_shared``. There, ``seq`` in a body is
the delivering daemon's, and ``X-Conflux-Delivery`` is ``<name>-<32 hex digits>`` derived
from the batch's op ids, the same on every daemon; the one batch a receiver may get twice (its
sender died after the receiver's answer, before the cursor moved) comes again whole under the
same id.
:class:`Deliverer` is the loop itself; ``run_once`` delivers what is pending synchronously
(tests and scripts).

Unknown keys, URLs that are not http(s), a missing secret or an unset ``env:`` variable, bad
globs, and (given the schema) environments or entity types the schema does not declare are
refused with the file and line.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import json
import logging
import os
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from fnmatch import fnmatchcase
from typing import Any

from conflux._tomlfile import TomlFile
from conflux.actors import ACTOR_CLASSES
from conflux.kernel import op_parts
from conflux.webhook_bodies import conflicting, original_payload, push_event

__all__ = ["Webhook", "Deliverer", "load_webhooks", "start_cursors", "webhook_status",
           "describe_status", "sign", "EVENTS", "WEBHOOKS_FILE"]

#: The file's name inside ``.conflux/``.
WEBHOOKS_FILE = "webhooks.toml"
#: Event kinds a webhook may ask for.
EVENTS = ("op", "milestone")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEYS = ("name", "url", "secret", "events", "entities", "envs", "actors", "from_start",
         "max_attempts", "backoff_s", "max_backoff_s", "timeout_s", "batch_size")
# How many log entries one read looks at (a batch is cut from them).
_SCAN = 1000
# How often a cursor moved only past unwanted operations is written (see _save_skipped).
_SKIP_SAVE_S = 5.0
# Response bodies are read (so keep-alive peers see a clean close) but not kept.
_MAX_RESPONSE = 64 << 10
_USER_AGENT = "conflux-webhooks/1"

log = logging.getLogger("conflux.webhooks")


# --------------------------------------------------------------------------------------------
# Configuration

@dataclass(frozen=True)
class Webhook:
    """One ``[[webhook]]`` entry."""

    name: str
    url: str
    secret: bytes = dataclass_field(repr=False)
    events: tuple[str, ...] = ("op",)
    entities: tuple[str, ...] = ()
    envs: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    from_start: bool = False
    max_attempts: int = 8
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0
    batch_size: int = 100
    line: int | None = None
    #: Registered over REST (``conflux.webhook_registry``): only changes of these fields;
    #: ``all`` changes, ``state_changes`` or ``conflicts`` only; the body's ``style``:
    #: ``conflux`` (a batch of ops, as above), ``original`` (the original Conflux's one
    #: change per POST) or ``gitops`` (a milestone as a GitHub push event).
    fields: tuple[str, ...] = ()
    only: str = "all"
    style: str = "conflux"

    def wants(self, op) -> bool:
        """Whether a logged operation passes this webhook's event kind and filters."""
        if "op" not in self.events:
            return False
        if self.actors and not any(_actor_matches(p, op.actor_class, op.actor)
                                   for p in self.actors):
            return False
        if not self.entities and not self.envs and not self.fields:
            return True
        return any(self._part_matches(part) for part in op_parts(op))

    def _part_matches(self, part) -> bool:
        if self.entities and not any(fnmatchcase(part.entity or "", p) for p in self.entities):
            return False
        if self.fields and part.field not in self.fields:
            return False
        return not self.envs or any(fnmatchcase(part.env or "", p) for p in self.envs)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1``: exponential, capped, jittered."""
        nominal = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return nominal / 2 + random.uniform(0, nominal / 2)


def _actor_matches(pattern: str, cls: str, ident: str) -> bool:
    if ":" in pattern:
        return fnmatchcase(f"{cls}:{ident}", pattern)
    return fnmatchcase(ident, pattern)


def load_webhooks(path: str, *, schema=None) -> list[Webhook]:
    """The webhooks declared in ``path`` (a ``webhooks.toml``), checked; none when the file
    does not exist. Given the project's ``schema``, environments and entity types the filters
    name must exist in it."""
    try:
        doc = TomlFile(str(path))
    except FileNotFoundError:
        return []
    return _Loader(doc, schema).load()


class _Loader:
    def __init__(self, doc: TomlFile, schema):
        self.doc = doc
        self.schema = schema

    def load(self) -> list[Webhook]:
        doc = self.doc
        for key in doc.data:
            if key != "webhook":
                doc.fail(f"unknown top-level key {key!r} (webhooks are [[webhook]] tables)",
                         line=doc.top_key(key))
        entries = doc.data.get("webhook", [])
        if not isinstance(entries, list):
            doc.fail("'webhook' must be a list of tables, written [[webhook]]",
                     line=doc.top_key("webhook"))
        hooks: list[Webhook] = []
        seen: dict[str, int | None] = {}
        for index, raw in enumerate(entries):
            hook = self._entry(index, raw)
            if hook.name in seen:
                doc.fail(f"webhook {hook.name!r} is already declared on line {seen[hook.name]}"
                         " (names must be unique: each has its own delivery cursor)",
                         line=self._at("name", index, hook.line), field="name")
            seen[hook.name] = hook.line
            hooks.append(hook)
        return hooks

    def _span(self, index: int):
        return self.doc.table("webhook", occurrence=index + 1, array=True)

    def _at(self, key: str, index: int, line: int | None) -> int | None:
        span = self._span(index)
        return self.doc.first_line(self.doc.key(key, span) if span else None, line)

    def _entry(self, index: int, raw: Any) -> Webhook:
        doc = self.doc
        span = self._span(index)
        line = doc.line_at(span[0]) if span else doc.top_key("webhook")
        prefix = f"webhook {index + 1}: "
        if not isinstance(raw, dict):
            doc.fail(prefix + "must be a table, written [[webhook]]", line=line)

        def at(key: str) -> int | None:
            return doc.first_line(doc.key(key, span) if span else None, line)

        def fail(message: str, key: str) -> None:
            doc.fail(prefix + message, line=at(key), field=key)

        for key in raw:
            if key not in _KEYS:
                fail(f"unknown key {key!r} (allowed: {', '.join(_KEYS)})", key)
        name = raw.get("name")
        if name is None:
            doc.fail(prefix + "has no 'name' (e.g. name = \"audit-sink\")", line=line,
                     field="name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            fail(f"name {name!r} is not valid (letters, digits, '_', '.', '-', starting with a "
                 "letter or digit, at most 64)", "name")
        prefix = f"webhook {name!r}: "

        url = raw.get("url")
        if url is None:
            doc.fail(prefix + "has no 'url'", line=line, field="url")
        if not isinstance(url, str):
            fail("'url' must be text", "url")
        try:
            _check_url(url)
        except ValueError as exc:
            fail(f"url {url!r}: {exc}", "url")

        secret = raw.get("secret")
        if secret is None:
            doc.fail(prefix + "has no 'secret' (the HMAC key; write secret = \"env:VAR\" to "
                     "read it from the environment)", line=line, field="secret")
        if not isinstance(secret, str) or not secret:
            fail("'secret' must be non-empty text", "secret")
        if secret.startswith("env:"):
            var = secret[4:]
            if not var:
                fail("'secret' = \"env:\" names no environment variable", "secret")
            value = os.environ.get(var)
            if not value:
                fail(f"the secret's environment variable ${var} is not set or is empty",
                     "secret")
            secret = value

        events = self._globs(raw, "events", fail, default=("op",))
        for event in events:
            if event not in EVENTS:
                fail(f"unknown event {event!r} (events: {', '.join(EVENTS)})", "events")
        entities = self._globs(raw, "entities", fail)
        for pattern in entities:
            self._check_entity(pattern, lambda m: fail(m, "entities"))
        envs = self._globs(raw, "envs", fail)
        for pattern in envs:
            self._check_env(pattern, lambda m: fail(m, "envs"))
        actors = self._globs(raw, "actors", fail)
        for pattern in actors:
            try:
                _check_actor_pattern(pattern)
            except ValueError as exc:
                fail(f"actor pattern {pattern!r}: {exc}", "actors")

        from_start = raw.get("from_start", False)
        if not isinstance(from_start, bool):
            fail("'from_start' must be true or false", "from_start")
        number = self._number
        max_attempts = number(raw, "max_attempts", 8, 1, 100, fail, integer=True)
        backoff_s = number(raw, "backoff_s", 0.5, 0.001, 3600, fail)
        max_backoff_s = number(raw, "max_backoff_s", max(60.0, backoff_s), backoff_s, 86_400,
                               fail)
        timeout_s = number(raw, "timeout_s", 10.0, 0.01, 600, fail)
        batch_size = number(raw, "batch_size", 100, 1, _SCAN, fail, integer=True)
        return Webhook(name=name, url=url, secret=secret.encode("utf-8"),
                       events=tuple(dict.fromkeys(events)), entities=entities, envs=envs,
                       actors=actors, from_start=from_start, max_attempts=max_attempts,
                       backoff_s=backoff_s, max_backoff_s=max_backoff_s, timeout_s=timeout_s,
                       batch_size=batch_size, line=line)

    @staticmethod
    def _globs(raw, key, fail, default=()) -> tuple[str, ...]:
        value = raw.get(key)
        if value is None:
            return tuple(default)
        if not isinstance(value, list) or not value or not all(
                isinstance(v, str) and v for v in value):
            fail(f"'{key}' must be a non-empty list of non-empty strings (leave it out to "
                 "match everything)", key)
        return tuple(value)

    @staticmethod
    def _number(raw, key, default, low, high, fail, *, integer=False):
        value = raw.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "a whole number" if integer else "a number"
            fail(f"'{key}' must be {kind} from {low} to {high}", key)
        return value if integer else float(value)

    def _check_entity(self, pattern: str, fail) -> None:
        type_glob, dot, _ = pattern.partition(".")
        if not dot and "*" not in pattern:
            fail(f"entity pattern {pattern!r} can match no entity id (ids are TYPE.NAME, e.g. "
                 "\"route.*\")")
        if self.schema is not None and dot and not any(
                fnmatchcase(t, type_glob) for t in self.schema.types):
            fail(f"entity pattern {pattern!r}: no declared entity type matches {type_glob!r} "
                 f"(declared: {', '.join(self.schema.types)})")

    def _check_env(self, pattern: str, fail) -> None:
        if self.schema is not None and not any(
                fnmatchcase(e, pattern) for e in self.schema.environments):
            fail(f"environment pattern {pattern!r} matches no declared environment "
                 f"({', '.join(self.schema.environments)})")


def _check_url(url: str) -> None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("contains spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("only http:// and https:// URLs are supported")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not supported (receivers authenticate "
                         "deliveries by their signature)")
    try:
        parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None


def _check_actor_pattern(pattern: str) -> None:
    if pattern.count(":") > 1:
        raise ValueError("more than one ':' (write ID or CLASS:ID, globs allowed)")
    cls, colon, ident = pattern.rpartition(":")
    if colon and not any(fnmatchcase(c, cls) for c in ACTOR_CLASSES):
        raise ValueError(f"class {cls!r} matches no actor class ({', '.join(ACTOR_CLASSES)})")
    if not ident:
        raise ValueError("the actor id part is empty (use '*' for any)")


# --------------------------------------------------------------------------------------------
# What is kept in the store: cursor and statistics per webhook

def _read_stats(store, txn, name: str) -> dict:
    raw = store.webhook_stats(txn, name)
    return json.loads(raw) if raw else {}


def webhook_status(store, txn) -> dict[str, dict]:
    """Per webhook the store has seen: its cursor, how far behind the log it is, what was
    delivered and what failed. Read inside ``txn`` (``conflux.status`` calls this)."""
    last = store.log_tail(txn)[0]
    out = {}
    for name, (cursor, stats) in sorted(store.webhook_records(txn).items()):
        cursor = cursor or 0
        stats = {} if stats is None else json.loads(stats)
        out[name] = {"cursor": cursor, "pending": max(0, last - cursor),
                     "delivered": stats.get("delivered", 0),
                     "failed": stats.get("failed", 0),
                     "failed_ops": stats.get("failed_ops", 0),
                     "last_error": stats.get("last_error"),
                     "last_failed_seqs": stats.get("last_failed_seqs"),
                     "last_failed_at": stats.get("last_failed_at"),
                     "last_delivered_at": stats.get("last_delivered_at")}
    return out


def describe_status(hooks: dict[str, dict]) -> str:
    """One line for ``conflux status``: how many webhooks, and their failed deliveries."""
    failed = {name: h for name, h in hooks.items() if h["failed"]}
    text = f"{len(hooks)} webhook{'s' * (len(hooks) != 1)}, "
    total = sum(h["failed"] for h in failed.values())
    if not total:
        pending = sum(h["pending"] for h in hooks.values())
        return text + "no failed deliveries" + (f" ({pending} ops pending)" if pending else "")
    worst = max(failed.items(), key=lambda item: item[1]["last_failed_at"] or "")
    name, h = worst
    first, last = h["last_failed_seqs"] or (None, None)
    per_hook = ", ".join(f"{n}: {x['failed']}" for n, x in failed.items())
    return (text + f"{total} failed deliver{'ies' if total != 1 else 'y'} ({per_hook}); "
            f"last: {name} seqs {first}-{last} at {h['last_failed_at']}: {h['last_error']}")


def _milestone_failed(stats: dict, m, error: str) -> dict:
    stats["failed"] = stats.get("failed", 0) + 1
    stats["last_error"] = f"milestone {m.id}: {error}"
    stats["last_failed_at"] = _now()
    return stats


def _batch_stats(stats: dict, batch, error: str | None) -> dict:
    """The statistics after a batch was delivered (``error`` None) or given up on."""
    if error is None:
        stats["delivered"] = stats.get("delivered", 0) + len(batch.ops)
        stats["last_delivered_at"] = _now()
    else:
        stats["failed"] = stats.get("failed", 0) + 1
        stats["failed_ops"] = stats.get("failed_ops", 0) + len(batch.ops)
        stats["last_error"] = error
        stats["last_failed_seqs"] = [batch.first, batch.last]
        stats["last_failed_at"] = _now()
    return stats


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Delivery

def _json_body(payload: dict) -> bytes:
    """A POST's body: compact UTF-8 JSON."""
    return json.dumps(payload, default=str, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Conflux-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@functools.cache
def _opener():
    # Imported here: urllib.request brings ssl and email along, and the project's status
    # (conflux.status: 'conflux status', GET /v1/status) imports this module.
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # urllib would turn a redirected POST into a GET without the body and report its
        # 200 as success: a redirect is a failed delivery instead.
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    return urllib.request.build_opener(NoRedirect)


@dataclass
class _Batch:
    ops: list            # logged operations, oldest first
    scanned_to: int      # the cursor once this batch is done (covers skipped ops too)
    body: bytes = b""

    @property
    def first(self) -> int:
        return self.ops[0].seq

    @property
    def last(self) -> int:
        return self.ops[-1].seq


class Deliverer:
    """Delivers committed operations to webhooks, each from its own cursor.

    ``run_once()`` delivers everything pending, retries included, and returns what happened;
    ``run(stop)`` serves every webhook from its own thread until ``stop`` is set. Creating a
    ``Deliverer`` records the starting cursor of any webhook the store has not seen.
    """

    #: Exceptions that end a webhook's thread rather than being logged and retried.
    _fatal: tuple = ()

    def __init__(self, engine, hooks: list[Webhook], *, poll_s: float = 0.25):
        self.engine = engine
        self.hooks = list(hooks)
        self.poll_s = poll_s
        self._cursors = start_cursors(engine, self.hooks)
        self._saved = dict(self._cursors)                 # the cursors as the store has them
        self._saved_at = {h.name: float("-inf") for h in self.hooks}

    # -- driving -------------------------------------------------------------------------------

    def run_once(self) -> dict[str, dict]:
        """Deliver what is pending to every webhook, in turn; per webhook ``{"deliveries",
        "ops", "attempts", "failed", "failed_ops"}``."""
        never = threading.Event()
        return {hook.name: self.drain(hook, never) for hook in self.hooks}

    def run(self, stop: threading.Event) -> None:
        """Serve every webhook, each from a thread of its own, until ``stop`` is set."""
        threads = [threading.Thread(target=self._serve_hook, args=(hook, stop), daemon=True,
                                    name=f"webhook-{hook.name}") for hook in self.hooks]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # joined in steps: the main thread must see SIGTERM
                thread.join(1.0)

    def _serve_hook(self, hook: Webhook, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                counts = self.drain(hook, stop)
            except self._fatal:
                raise
            except Exception:  # the loop outlives a bad moment (a store error, a bug)
                log.exception("webhook %s: delivery failed; retrying in %.0f s", hook.name,
                              max(self.poll_s, 5.0))
                stop.wait(max(self.poll_s, 5.0))
                continue
            if not counts["ops"] and not counts["failed"]:
                stop.wait(self.poll_s)

    def drain(self, hook: Webhook, stop: threading.Event) -> dict:
        """Deliver to one webhook until its cursor reaches the end of the log (or ``stop``)."""
        counts = {"deliveries": 0, "ops": 0, "attempts": 0, "failed": 0, "failed_ops": 0}
        if "milestone" in hook.events:
            self._drain_milestones(hook, stop, counts)
        while not stop.is_set():
            batch = self._next_batch(hook)
            if batch is None:
                self._save_skipped(hook)
                break
            if not batch.ops:  # nothing for this hook in what was read: just move on
                self._cursors[hook.name] = batch.scanned_to
                continue
            delivery = self._delivery_id(hook, batch)
            self._before_send(hook, batch)
            error, stopped = self._send(hook, batch.body, "op", delivery,
                                        f"delivery {delivery}", stop, counts)
            if stopped:
                return counts  # stopping: the batch is sent again after a restart
            if error is None:
                counts["deliveries"] += 1
                counts["ops"] += len(batch.ops)
            else:
                counts["failed"] += 1
                counts["failed_ops"] += len(batch.ops)
                log.error("webhook %s: gave up on seqs %d-%d after %d tries: %s", hook.name,
                          batch.first, batch.last, hook.max_attempts, error)
            self._advance(hook, batch.scanned_to, batch, error)
        return counts

    # -- one batch -----------------------------------------------------------------------------

    def _delivery_id(self, hook: Webhook, batch: _Batch) -> str:
        """``X-Conflux-Delivery`` of a batch of operations."""
        return f"{hook.name}-{batch.first}-{batch.last}"

    def _before_send(self, hook: Webhook, batch: _Batch) -> None:
        """Called before a batch's first try (a cluster records the batch being sent)."""

    def _drain_milestones(self, hook: Webhook, stop: threading.Event, counts: dict) -> None:
        """Deliver the milestones made since the hook's milestone cursor, one POST each."""
        for m in self._milestones_due(hook):
            if stop.is_set():
                return
            error = None
            if not hook.envs or any(fnmatchcase(env, p) for env in m.envs for p in hook.envs):
                body = _json_body(push_event(self.engine, m) if hook.style == "gitops" else
                                  {"event": "milestone", "webhook": hook.name,
                                   "milestone": m.to_dict(self.engine.core)})
                error, stopped = self._send(hook, body, "milestone",
                                            f"{hook.name}-milestone-{m.id}",
                                            f"milestone {m.id}", stop, counts)
                if stopped:
                    return
                if error is None:
                    counts["deliveries"] += 1
                    counts["milestones"] = counts.get("milestones", 0) + 1
                else:
                    counts["failed"] += 1
                    log.error("webhook %s: gave up on milestone %d after %d tries: %s",
                              hook.name, m.id, hook.max_attempts, error)

            self._milestone_done(hook, m, error)

    def _milestones_due(self, hook: Webhook) -> list:
        """The milestones made since the hook's milestone cursor, oldest first."""
        from conflux.milestones import read_milestones

        store = self.engine.store
        with store.read() as txn:
            return read_milestones(
                store, txn, store.webhook_cursor(txn, hook.name, milestones=True) or 0)

    def _milestone_done(self, hook: Webhook, m, error: str | None) -> None:
        store = self.engine.store

        def record(txn):
            store.set_webhook_cursor(txn, hook.name, m.id, milestones=True)
            if error is not None:
                store.set_webhook_stats(txn, hook.name, json.dumps(_milestone_failed(
                    _read_stats(store, txn, hook.name), m, error)).encode())
        store.write(record)

    def _next_batch(self, hook: Webhook) -> _Batch | None:
        cursor = self._cursors[hook.name]
        ops = self.engine.log(start=cursor + 1, reverse=False, limit=_SCAN)
        if not ops:
            return None
        picked = []
        scanned_to = ops[-1].seq
        for op in ops:
            if hook.wants(op) and (hook.only == "all" or
                                   (hook.only == "conflicts") == conflicting(self.engine, op)):
                picked.append(op)
                if len(picked) == hook.batch_size:
                    scanned_to = op.seq
                    break
        batch = _Batch(picked, scanned_to)
        if picked and hook.style == "original":
            batch.body = _json_body(original_payload(self.engine, picked[0]))
        elif picked:
            batch.body = _json_body({"event": "op", "webhook": hook.name,
                                     "ops": [self.engine.op_dict(op) for op in picked]})
        return batch

    def _send(self, hook: Webhook, body: bytes, event: str, delivery: str, what: str,
              stop: threading.Event, counts: dict) -> tuple[str | None, bool]:
        """POST ``body`` until it is taken or ``hook.max_attempts`` tries failed, backing off
        between them: ``(None or the last error, whether stopping cut the tries short)``."""
        error = None
        for attempt in range(1, hook.max_attempts + 1):
            counts["attempts"] += 1
            error = self._post(hook, body, event, delivery)
            if error is None:
                return None, False
            log.warning("webhook %s: %s, try %d of %d: %s", hook.name, what, attempt,
                        hook.max_attempts, error)
            if attempt < hook.max_attempts and stop.wait(hook.delay(attempt)):
                return error, True
        return error, False

    def _post(self, hook: Webhook, body: bytes, event: str, delivery: str) -> str | None:
        """POST a body once: None on a 2xx answer, else what went wrong."""
        import http.client
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT,
                   "X-Conflux-Event": event, "X-Conflux-Delivery": delivery}
        if hook.secret:  # a webhook registered over REST may have none: not signed
            headers["X-Conflux-Signature"] = sign(hook.secret, body)
        if hook.style == "gitops":
            headers.update({"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery})
            if hook.secret:
                headers["X-Hub-Signature-256"] = headers["X-Conflux-Signature"]
        request = urllib.request.Request(hook.url, data=body, method="POST", headers=headers)
        try:
            with _opener().open(request, timeout=hook.timeout_s) as response:
                response.read(_MAX_RESPONSE)
                status = response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            return f"HTTP {exc.code} {exc.reason}".rstrip()
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                return f"no answer within {hook.timeout_s:g} s"
            return f"cannot connect: {getattr(reason, 'strerror', None) or reason}"
        except TimeoutError:
            return f"no answer within {hook.timeout_s:g} s"
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        if not 200 <= status < 300:
            return f"HTTP {status}"
        return None

    def _save_skipped(self, hook: Webhook) -> None:
        """Persist a cursor moved only past operations this hook does not want.

        PERF: at most every ``_SKIP_SAVE_S``: a hook whose filters match little would
        otherwise make a synced commit per poll while operations trickle in, taking LMDB's
        writer lock from ingestion. Losing such a move costs a re-scan, never a resend.
        """
        name = hook.name
        if self._cursors[name] > self._saved[name] and \
                time.monotonic() - self._saved_at[name] >= _SKIP_SAVE_S:
            self._advance(hook, self._cursors[name], None)

    def _advance(self, hook: Webhook, cursor: int, batch: _Batch | None,
                 error: str | None = None) -> None:
        """Persist the cursor (and, after a POST, the statistics) in one commit."""
        store = self.engine.store
        name = hook.name

        def body(txn):
            store.set_webhook_cursor(txn, name, cursor)
            if batch is None:
                return
            stats = _batch_stats(_read_stats(store, txn, name), batch, error)
            store.set_webhook_stats(txn, name, json.dumps(stats).encode())
        store.write(body)
        self._cursors[name] = self._saved[name] = cursor
        self._saved_at[name] = time.monotonic()


def start_cursors(engine, hooks: list[Webhook]) -> dict[str, int]:
    """Every webhook's cursor, recording where a new one starts: the end of the log as it is
    now, or 0 (the whole history) with ``from_start``. With a shared op log the cursors are
    the cluster's, in PostgreSQL (``conflux.webhooks_shared``), and this records new ones
    there."""
    store = engine.store
    if store.shares_log:
        if hooks:
            from conflux.store.lease import webhook_start

            webhook_start(store.shared_log(), {hook.name: hook.from_start for hook in hooks})
        return {}

    from conflux.milestones import last_milestone as newest

    def body(txn):
        last = store.log_tail(txn)[0]
        found = newest(store, txn)
        last_milestone = found.id if found is not None else 0
        cursors = {}
        for hook in hooks:
            cursor = store.webhook_cursor(txn, hook.name)
            if cursor is None:
                cursor = 0 if hook.from_start else last
                store.set_webhook_cursor(txn, hook.name, cursor)
            cursors[hook.name] = cursor
            if "milestone" in hook.events and \
                    store.webhook_cursor(txn, hook.name, milestones=True) is None:
                store.set_webhook_cursor(txn, hook.name, 0 if hook.from_start else last_milestone,
                                         milestones=True)
        return cursors
    return store.write(body) if hooks else {}

