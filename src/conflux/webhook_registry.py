"""Webhooks registered over REST (the original Conflux's ``/v1/webhooks``).

The original managed its webhooks over its API; Conflux declares them in ``webhooks.toml``
(``conflux.webhooks``). Both are served: a webhook registered over REST is kept in
``.conflux/webhooks.json`` (written whole, synced, readable by the daemon's user only, as it
holds the secrets), and the daemon's delivery process follows that file while it runs, so a
registration, a change or a removal takes effect within a second or two, without a restart.

A registered webhook is the original's: ``url``, ``entity_filter`` (an entity id prefix),
``field_filter`` (one field), ``secret`` (optional: without one, deliveries are not signed),
``event_filter`` (``all``, ``state_changes`` or ``conflicts``), ``format`` (``conflux`` or
``gitops``) and ``enabled``; its id is a UUID the daemon gives it.

- ``format = "conflux"``: one POST per change, the original's payload (``event_type``,
  ``entity_id``, ``field``, ``value_json``, ``actor_id``, ``actor_class``, ``timestamp``,
  ``intent``, ``operation_id``, ``has_conflict``), with Conflux's delivery headers.
  ``event_filter``: ``conflicts`` sends the writes to ``review`` fields that hold concurrent
  candidates when delivered, ``state_changes`` every other change, ``all`` both.
- ``format = "gitops"``: one POST per milestone (a git commit of the resolved state), shaped as
  a GitHub ``push`` event (``X-GitHub-Event: push``, ``X-Hub-Signature-256`` with a secret),
  which reconcilers that pull git accept as "the repository moved": Argo CD's ``/api/webhook``
  and Flux's notification-controller ``Receiver`` of type ``github``.

``webhooks.toml`` wins: its webhooks are listed over REST as read-only (``"source":
"webhooks.toml"``), and a registered webhook whose id a file's webhook also names is not
delivered. A disabled webhook keeps its place in the log: enabled again, it delivers what
came meanwhile. With a shared op log (several daemons) webhooks are declared in
``webhooks.toml`` on every daemon: registering over REST is refused there.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import uuid

from conflux.errors import ConfluxError, InputError, NotFound, ValidationError

__all__ = ["REGISTRY_FILE", "Registry", "Webhooks", "EVENT_FILTERS", "FORMATS",
           "registered_hooks"]

#: In ``.conflux/``: the webhooks registered over REST.
REGISTRY_FILE = "webhooks.json"
EVENT_FILTERS = ("all", "state_changes", "conflicts")
FORMATS = ("conflux", "gitops")

_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,265}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_SECRET = 4096
_MAX = 1000  # registered webhooks at most


class ReadOnly(ConfluxError):
    """A webhook of ``webhooks.toml`` changed over REST."""

    http_status = 409
    code = "declared_in_file"


class Registry:
    """``.conflux/webhooks.json``: read whole, written whole under a lock."""

    def __init__(self, root: str):
        self.path = os.path.join(root, REGISTRY_FILE)

    def records(self) -> list[dict]:
        """Every registered webhook (secrets included), oldest first."""
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read() or b"{}")
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfluxError(f"{REGISTRY_FILE} cannot be read: {exc}") from None
        hooks = data.get("webhooks", []) if isinstance(data, dict) else None
        if not isinstance(hooks, list):
            raise ConfluxError(f"{REGISTRY_FILE} holds no list of webhooks")
        return hooks

    def add(self, body) -> dict:
        record = {"id": str(uuid.uuid4()), **check(body, partial=False)}
        with self._locked() as records:
            if len(records) >= _MAX:
                raise InputError(f"at most {_MAX} webhooks may be registered")
            records.append(record)
        return record

    def update(self, hook_id: str, body) -> dict:
        changes = check(body, partial=True)
        with self._locked() as records:
            for record in records:
                if record["id"] == hook_id:
                    record.update(changes)
                    return record
        raise NotFound(f"webhook {hook_id} is not registered")

    def delete(self, hook_id: str) -> None:
        with self._locked() as records:
            kept = [r for r in records if r["id"] != hook_id]
            if len(kept) == len(records):
                raise NotFound(f"webhook {hook_id} is not registered")
            records[:] = kept

    def _locked(self):
        return _Locked(self)

    def _write(self, records: list[dict]) -> None:
        data = json.dumps({"webhooks": records}, indent=1).encode()
        tmp = f"{self.path}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        directory = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class _Locked:
    """``with registry._locked() as records``: the records under an exclusive lock, written
    back whole when the block ends without an error."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def __enter__(self) -> list[dict]:
        self.lock = open(self.registry.path + ".lock", "a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.records = self.registry.records()
        return self.records

    def __exit__(self, kind, exc, tb):
        try:
            if exc is None:
                self.registry._write(self.records)
        finally:
            self.lock.close()
        return False


def check(body, *, partial: bool) -> dict:
    """A registration (or, ``partial``, a change) checked: ``ValidationError`` naming the key."""
    from conflux.webhooks import _check_url

    if not isinstance(body, dict):
        raise ValidationError("a webhook is a JSON object", field="url")
    known = ("url", "entity_filter", "field_filter", "secret", "event_filter", "format",
             "enabled")
    for key in body:
        if key not in known:
            raise ValidationError(f"unknown key {key!r} (known: {', '.join(known)})",
                                  field=key)
    out = {}
    if "url" in body or not partial:
        url = body.get("url")
        if not isinstance(url, str):
            raise ValidationError("url must be an http:// or https:// URL", field="url")
        try:
            _check_url(url)
        except ValueError as exc:
            raise ValidationError(f"url {url[:200]!r}: {exc}", field="url") from None
        out["url"] = url
    for key, pattern, what in (("entity_filter", _PREFIX, "an entity id prefix"),
                               ("field_filter", _FIELD, "a field name")):
        if key in body:
            value = body[key]
            if value == "" or value is None:  # the original clears a filter with ""
                out[key] = None
            elif not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValidationError(f"{key} must be {what}", field=key)
            else:
                out[key] = value
        elif not partial:
            out[key] = None
    if "secret" in body or not partial:
        secret = body.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret or
                                   len(secret) > _MAX_SECRET):
            raise ValidationError(f"secret must be text of 1 to {_MAX_SECRET} characters",
                                  field="secret")
        out["secret"] = secret
    for key, allowed in (("event_filter", EVENT_FILTERS), ("format", FORMATS)):
        if key in body:
            value = body[key]
            if not isinstance(value, str) or value.lower() not in allowed:
                raise ValidationError(f"{key} must be one of {', '.join(allowed)}", field=key)
            out[key] = value.lower()
        elif not partial:
            out[key] = allowed[0]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise ValidationError("enabled must be true or false", field="enabled")
        out["enabled"] = body["enabled"]
    elif not partial:
        out["enabled"] = True
    return out


def registered_hooks(records: list[dict], declared: set[str]):
    """The ``conflux.webhooks.Webhook`` each enabled registration stands for (those whose
    id ``webhooks.toml`` also names are left out: the file wins)."""
    from conflux.webhooks import Webhook

    out = []
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or \
                not isinstance(record.get("url"), str):
            continue  # not one this module wrote: left alone rather than stop the others
        if not record.get("enabled", True) or record["id"] in declared:
            continue
        prefix = record.get("entity_filter")
        gitops = record.get("format") == "gitops"
        out.append(Webhook(
            name=record["id"], url=record["url"],
            secret=(record.get("secret") or "").encode(),
            events=("milestone",) if gitops else ("op",),
            entities=(prefix + "*",) if prefix else (),
            fields=(record["field_filter"],) if record.get("field_filter") else (),
            only=record.get("event_filter", "all"),
            style="gitops" if gitops else "original", batch_size=1))
    return out


class Webhooks:
    """Webhook management for an actor (``/v1/webhooks``): every webhook the project has, as
    the original shows them (never a secret); registering, changing and removing those
    registered over REST. Every call needs the ``admin`` permission."""

    def __init__(self, engine, actor):
        engine.policy.require(actor, "admin")
        self.engine = engine
        self.registry = Registry(engine.root)

    def all(self) -> list[dict]:
        from conflux.webhooks import webhook_status

        engine = self.engine
        declared = self._declared
        with engine.store.read() as txn:
            status = webhook_status(engine.store, txn)
        out = [_shown({"id": h.name, "url": h.url}, status.get(h.name), "webhooks.toml")
               for h in declared]
        names = {h.name for h in declared}
        return out + [_shown(r, status.get(r["id"]), "api")
                      for r in self.registry.records() if r["id"] not in names]

    def one(self, hook_id: str) -> dict:
        for hook in self.all():
            if hook["id"] == hook_id:
                return hook
        raise NotFound(f"webhook {hook_id} is not registered")

    def add(self, body) -> dict:
        from conflux.webhooks import start_cursors

        self._writable()
        record = self.registry.add(body)
        # its place in the log is taken now: every op committed after this answer is its
        start_cursors(self.engine, registered_hooks([record], set()))
        return {"id": record["id"], "url": record["url"], "enabled": record["enabled"]}

    def update(self, hook_id: str, body) -> dict:
        self._writable(hook_id)
        self.registry.update(hook_id, body)
        return self.one(hook_id)

    def delete(self, hook_id: str) -> dict:
        self._writable(hook_id)
        self.registry.delete(hook_id)
        return {"deleted": True, "id": hook_id}

    @functools.cached_property
    def _declared(self) -> list:
        """The webhooks of ``webhooks.toml`` (read once per call of the API)."""
        from conflux.webhooks import WEBHOOKS_FILE, load_webhooks

        return load_webhooks(os.path.join(self.engine.root, WEBHOOKS_FILE))

    def _writable(self, hook_id: str | None = None) -> None:
        if self.engine.store.shares_log:
            raise InputError("with a shared op log, webhooks are declared in webhooks.toml on "
                             "every daemon: nothing was changed")
        if hook_id is not None and any(h.name == hook_id for h in self._declared):
            raise ReadOnly(f"webhook {hook_id} is declared in webhooks.toml: change it there "
                           "(and restart the daemon)")


def _shown(record: dict, status: dict | None, source: str) -> dict:
    """A webhook as the original shows it (never its secret), and where it is declared."""
    out = {"id": record["id"], "url": record["url"], "enabled": record.get("enabled", True),
           "event_filter": record.get("event_filter") or "all",
           "format": record.get("format") or "conflux",
           "failure_count": (status or {}).get("failed", 0), "source": source}
    for key in ("entity_filter", "field_filter"):
        if record.get(key):
            out[key] = record[key]
    if status and status.get("last_error"):
        out["last_error"] = status["last_error"]
    return out

