"""Who is calling, and what they may do: the daemon's authentication and access control.

An actor is the holder of an API key (``X-API-Key``, checked in constant time against the
hashes in ``api-keys.toml``) or of a verified TLS client certificate mapped to an actor; the
actor of every operation is the authenticated one, never one taken from the body. What an
actor may do is ``rbac.toml``'s to say (everything, while there is none).

Both files are checked before the daemon starts (a bad one stops it with the file and line).
While it runs, each worker looks at them again every second (a thread of its own, so that a
worker that serves no request still follows every version) and reloads a file that changed,
so keys can be added, rotated and revoked, and roles changed, without a restart. A file that
has become bad is logged, once per change, and the last good rules stay in force until it is
fixed: a typo never locks everyone out, nor lets everyone in.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from conflux.auth import API_KEYS_FILE, ApiKeys, CertMap, load_credentials
from conflux.errors import AuthError, ConfluxError
from conflux.rbac import RBAC_FILE, Rbac

__all__ = ["Access"]

log = logging.getLogger("conflux.access")

#: How often (seconds) a worker looks at the files for changes.
RELOAD_INTERVAL = 1.0


def _stamp(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


class Access:
    def __init__(self, keys: ApiKeys, certs: CertMap, rbac: Rbac, base_env: str, *,
                 root: str | None = None, schema=None, stamps=None):
        """``stamps``: the files' stamps as they were when read (``root``'s are looked at
        again by :meth:`refresh`)."""
        self.keys, self.certs, self.rbac, self.base_env = keys, certs, rbac, base_env
        self.root, self.schema = root, schema
        self._stamps = stamps
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: str, schema=None) -> "Access":
        """The access rules of a project's ``.conflux/`` directory; ``InputError`` naming the
        file and line of anything wrong."""
        from conflux.schema import load_schema

        schema = schema or load_schema(os.path.join(root, "schema.toml"))
        stamps = cls._stamps_of(root)
        keys, certs = load_credentials(os.path.join(root, API_KEYS_FILE))
        rbac = Rbac.load(os.path.join(root, RBAC_FILE), schema=schema)
        # stamped before reading: a change while reading is picked up at the next look
        return cls(keys, certs, rbac, schema.base_env, root=root, schema=schema, stamps=stamps)

    # -- reloading ------------------------------------------------------------------------------

    @staticmethod
    def _stamps_of(root):
        if root is None:
            return None
        return (_stamp(os.path.join(root, API_KEYS_FILE)), _stamp(os.path.join(root, RBAC_FILE)))

    def watch(self) -> threading.Thread:
        """Refresh every ``RELOAD_INTERVAL`` seconds, in a daemon thread, for as long as the
        process lives (each daemon worker starts one after the fork)."""
        def loop():
            while True:
                time.sleep(RELOAD_INTERVAL)
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                    log.exception("checking %s and %s", API_KEYS_FILE, RBAC_FILE)

        thread = threading.Thread(target=loop, name="conflux-access-watch", daemon=True)
        thread.start()
        return thread

    def refresh(self, now: float | None = None) -> None:
        """Reload the files if they changed since they were last read (looked at once per
        ``RELOAD_INTERVAL``); a bad file is logged and the rules in force are kept."""
        if self.root is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._checked < RELOAD_INTERVAL or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked = now
            stamps = self._stamps_of(self.root)
            if stamps == self._stamps:
                return
            self._stamps = stamps  # a bad version is reported once, not at every look
            try:
                fresh = Access.load(self.root, self.schema)
            except ConfluxError as exc:
                log.error("%s; the daemon keeps the access rules it had until the file is "
                          "fixed", exc)
                return
            self.keys, self.certs, self.rbac = fresh.keys, fresh.certs, fresh.rbac
            log.info("reloaded %s and %s", API_KEYS_FILE, RBAC_FILE)
        finally:
            self._lock.release()

    # -- authentication -----------------------------------------------------------------------

    def authenticate(self, req):
        key = req.get_header("X-API-Key")
        if key is not None:
            return self.keys.authenticate(key)
        sock = req.env.get("gunicorn.socket")
        peercert = sock.getpeercert() if hasattr(sock, "getpeercert") else None
        if peercert:
            return self.certs.actor_for(peercert)
        raise AuthError("no credentials: send an API key in the X-API-Key header or use a "
                        "client certificate")

    def middleware(self):
        return _Authenticate(self)

    # -- authorisation ------------------------------------------------------------------------

    def allowed(self, actor, action, entity_id, field, env) -> bool:
        return self.rbac.check(actor, action, entity_id, field, env)

    def authorize(self, actor, action, entity_id, field, env) -> None:
        self.rbac.require(actor, action, entity_id, field, env)

    def authorize_ops(self, actor, raw_ops, engine) -> None:
        """A batch with one denied op is refused whole, before anything is written."""
        self.rbac.require_ops(actor, raw_ops, base_env=self.base_env)


class _Authenticate:
    """Falcon middleware: every resource but those marked ``auth = False`` needs an actor."""

    def __init__(self, access: Access):
        self.access = access

    def process_resource(self, req, resp, resource, params):
        if resource is None or not getattr(resource, "auth", True):
            return
        req.context.actor = self.access.authenticate(req)
