"""Who is calling: the daemon's authentication.

An actor is the holder of an API key (``X-API-Key``, checked in constant time against the
hashes in ``api-keys.toml``) or of a verified TLS client certificate mapped to an actor; the
actor of every operation is the authenticated one, never one taken from the body. What an
actor may do is the engine's to decide (``conflux.engine.policy``), given that actor.

The file is checked before the daemon starts (a bad one stops it with the file and line).
While it runs, each worker looks at it again every second (a thread of its own, so that a
worker that serves no request still follows every version; the access rules in
``rbac.toml`` are looked at by the same thread) and reloads it when it changed, so keys can
be added, rotated and revoked without a restart. A file that has become bad is logged, once
per change, and the last good keys stay in force until it is fixed: a typo never locks
everyone out, nor lets anyone in.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from conflux._tomlfile import file_stamp
from conflux.actors import Actor
from conflux.auth import API_KEYS_FILE, ApiKeys, CertMap, load_credentials
from conflux.errors import AuthError, ConfluxError

__all__ = ["Access"]

log = logging.getLogger("conflux.access")

#: How often (seconds) a worker looks at the files for changes.
RELOAD_INTERVAL = 1.0

#: The key of a request's ASGI scope holding the TLS client certificate the server verified
#: (``ssl.SSLSocket.getpeercert()``'s dict).
PEERCERT = "conflux.peercert"


class Access:
    def __init__(self, keys: ApiKeys, certs: CertMap, *, root: str | None = None, stamp=None,
                 also=(), anonymous: bool = False):
        """``stamp``: the file's stamp as it was when read (``root``'s is looked at again by
        :meth:`refresh`); ``also``: more refreshers the watcher calls (the engine's access
        rules); ``anonymous``: ``[daemon] auth = "none"``, callers without credentials name
        themselves (``X-Conflux-Actor``, as the original Conflux's did)."""
        self.keys, self.certs = keys, certs
        self.anonymous = anonymous
        self.root = root
        self.also = list(also)
        self._stamp = stamp
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: str, *, also=(), anonymous: bool = False) -> "Access":
        """The credentials of a project's ``.conflux/`` directory; ``InputError`` naming the
        file and line of anything wrong."""
        path = os.path.join(root, API_KEYS_FILE)
        stamp = file_stamp(path)
        keys, certs = load_credentials(path)
        # stamped before reading: a change while reading is picked up at the next look
        return cls(keys, certs, root=root, stamp=stamp, also=also, anonymous=anonymous)

    # -- reloading ------------------------------------------------------------------------------

    def watch(self) -> threading.Thread:
        """Refresh every ``RELOAD_INTERVAL`` seconds, in a daemon thread, for as long as the
        process lives (each daemon worker starts one after the fork)."""
        def loop():
            while True:
                time.sleep(RELOAD_INTERVAL)
                for refresh in (self.refresh, *self.also):
                    try:
                        refresh()
                    except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                        log.exception("checking the access files")

        thread = threading.Thread(target=loop, name="conflux-access-watch", daemon=True)
        thread.start()
        return thread

    def refresh(self, now: float | None = None) -> None:
        """Reload the file if it changed since it was last read (looked at once per
        ``RELOAD_INTERVAL``); a bad file is logged and the keys in force are kept."""
        if self.root is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._checked < RELOAD_INTERVAL or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked = now
            stamp = file_stamp(os.path.join(self.root, API_KEYS_FILE))
            if stamp == self._stamp:
                return
            self._stamp = stamp  # a bad version is reported once, not at every look
            try:
                fresh = Access.load(self.root)
            except ConfluxError as exc:
                log.error("%s; the daemon keeps the keys it had until the file is fixed", exc)
                return
            self.keys, self.certs = fresh.keys, fresh.certs
            log.info("reloaded %s", API_KEYS_FILE)
        finally:
            self._lock.release()

    # -- authentication -----------------------------------------------------------------------

    def authenticate(self, req):
        key = req.get_header("X-API-Key")
        if key is not None:
            return self.keys.authenticate(key)
        # the verified client certificate, as the daemon's worker puts it in the request's
        # scope (conflux.daemon.worker)
        peercert = req.scope.get(PEERCERT)
        if peercert:
            return self.certs.actor_for(peercert)
        if self.anonymous:
            return self.named(req.get_header("X-Conflux-Actor"),
                              req.get_header("X-Conflux-Actor-Class"))
        raise AuthError("no credentials: send an API key in the X-API-Key header or use a "
                        "client certificate")

    def named(self, ident: str | None, cls: str | None) -> Actor:
        """With ``[daemon] auth = "none"``: the actor a caller names (class ``human`` by
        default); 401 without a name, 400 for a bad one."""
        if not ident:
            raise AuthError("missing actor identity: send X-Conflux-Actor (and "
                            "X-Conflux-Actor-Class), or an API key")
        return Actor(ident, (cls or "human").lower())

    def middleware(self):
        return _Authenticate(self)


class _Authenticate:
    """Falcon middleware: every resource but those marked ``auth = False`` needs an actor."""

    def __init__(self, access: Access):
        self.access = access

    async def process_resource(self, req, resp, resource, params):
        if resource is None or not getattr(resource, "auth", True):
            return
        req.context.actor = self.access.authenticate(req)
