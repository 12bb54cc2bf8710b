"""Who is calling, and what they may do: the daemon's authentication and access control.

An actor is the holder of an API key (``X-API-Key``, checked in constant time against the
hashes in ``api-keys.toml``) or of a verified TLS client certificate mapped to an actor; the
actor of every operation is the authenticated one, never one taken from the body. What an
actor may do is ``rbac.toml``'s to say (everything, while there is none). Both files are read
when a worker starts, so a broken one stops the daemon instead of failing requests.
"""

from __future__ import annotations

import os

from conflux.auth import API_KEYS_FILE, ApiKeys, CertMap, load_credentials
from conflux.errors import AuthError
from conflux.rbac import Rbac

__all__ = ["Access"]


class Access:
    def __init__(self, keys: ApiKeys, certs: CertMap, rbac: Rbac, base_env: str):
        self.keys, self.certs, self.rbac, self.base_env = keys, certs, rbac, base_env

    @classmethod
    def load(cls, root: str, schema=None) -> "Access":
        """The access rules of a project's ``.conflux/`` directory."""
        from conflux.schema import load_schema

        schema = schema or load_schema(os.path.join(root, "schema.toml"))
        keys, certs = load_credentials(os.path.join(root, API_KEYS_FILE))
        return cls(keys, certs, Rbac.load(os.path.join(root, "rbac.toml"), schema=schema),
                   schema.base_env)

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
