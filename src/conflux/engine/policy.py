"""Who may do what: the engine asks the project's access rules (``rbac.toml``, read by
``conflux.rbac``) for the actor each call is given.

The engine's methods authorize themselves: a write checks its whole batch before anything is
written, a read given a ``reader`` checks (or filters what it answers by) ``read``, a
promotion ``promote``, a milestone ``milestone``, an audit export ``admin``. So every shell —
the CLI, the REST API, any to come — gets the same rules by handing the engine its actor, and
none calls the rules itself. A read without a reader is the project owner's own (the CLI
reads the store's files directly; the rules guard the daemon's clients).

Without ``rbac.toml`` every actor may do everything, and ``conflux.rbac`` is not imported.
The rules are read when first needed. A long-lived engine (a daemon worker) calls
:meth:`Policy.refresh` every second or so: a changed file is read again, and a file that has
become bad is logged, once per change, while the last good rules stay in force — a typo never
locks everyone out, nor lets everyone in.
"""

from __future__ import annotations

import logging
import os

from conflux._tomlfile import file_stamp
from conflux.errors import ConfluxError

__all__ = ["Policy", "RBAC_FILE", "load_rules", "explain"]

log = logging.getLogger("conflux.access")

#: The access rules' file in ``.conflux/``.
RBAC_FILE = "rbac.toml"


class _Unrestricted:
    """The rules without an ``rbac.toml``: every check passes. PERF: a command that writes
    without rules does not import ``conflux.rbac`` (and the dataclasses module it needs):
    they were about a tenth of a ``conflux set`` (python -X importtime)."""

    enforced = False

    def check(self, actor, action, entity_id=None, field=None, env=None) -> bool:
        return True

    def require(self, actor, action, entity_id=None, field=None, env=None) -> None:
        pass

    def require_ops(self, actor, ops, *, base_env) -> None:
        pass

    def require_promote(self, actor, target, entities) -> None:
        pass

    def require_milestone(self, actor, envs) -> None:
        pass


_UNRESTRICTED = _Unrestricted()


class Policy:
    """The access rules of one project, as the engine applies them."""

    def __init__(self, root: str, schema):
        self.path = os.path.join(root, RBAC_FILE)
        self.schema = schema
        self._rules = None
        self._stamp = None

    @property
    def rules(self):
        """The rules in force (``conflux.rbac.Rbac``, or the unrestricted rules)."""
        if self._rules is None:
            self.load()
        return self._rules

    def load(self):
        """Read ``rbac.toml`` now; ``InputError`` naming file and line if it is wrong."""
        stamp = file_stamp(self.path)
        self._rules = self._read(stamp)
        self._stamp = stamp
        return self._rules

    def _read(self, stamp):
        if stamp is None:
            return _UNRESTRICTED
        from conflux.rbac import Rbac

        return Rbac.load(self.path, schema=self.schema)

    def refresh(self) -> bool:
        """Read the file again if it changed since it was read; True when new rules are in
        force. A bad file is logged and the rules in force are kept."""
        stamp = file_stamp(self.path)
        if stamp == self._stamp and self._rules is not None:
            return False
        self._stamp = stamp  # a bad version is reported once, not at every look
        try:
            self._rules = self._read(stamp)
        except ConfluxError as exc:
            log.error("%s; the daemon keeps the access rules it had until the file is fixed",
                      exc)
            return False
        log.info("reloaded %s", RBAC_FILE)
        return True

    # -- the questions the engine asks ----------------------------------------------------------

    def may_read(self, reader, entity_id, field, env) -> bool:
        return reader is None or self.rules.check(reader, "read", entity_id, field, env)

    def require_read(self, reader, entity_id=None, field=None, env=None) -> None:
        if reader is not None:
            self.rules.require(reader, "read", entity_id, field, env)

    def require(self, actor, action, entity_id=None, field=None, env=None) -> None:
        self.rules.require(actor, action, entity_id, field, env)

    def require_ops(self, actor, raw_ops) -> None:
        """A batch with one denied op is refused whole, before anything is written."""
        self.rules.require_ops(actor, raw_ops, base_env=self.schema.base_env)

    def require_promote(self, actor, target, entities) -> None:
        self.rules.require_promote(actor, target, entities)

    def require_milestone(self, actor, envs) -> None:
        self.rules.require_milestone(actor, envs)


# -- the rules file for 'conflux rbac' ----------------------------------------------------------

def load_rules(project_dir: str, path: str | None = None, *, missing_ok: bool = True):
    """``(rules, schema or None, path)``: ``path``, or the project's own ``rbac.toml``
    (which alone may be missing: everything allowed), checked against the project's schema
    when there is one."""
    from conflux.engine.settings import CONFLUX_DIR
    from conflux.rbac import Rbac
    from conflux.schema import load_schema

    schema_path = os.path.join(project_dir, CONFLUX_DIR, "schema.toml")
    schema = load_schema(schema_path) if os.path.exists(schema_path) else None
    if path:
        missing_ok = False
    else:
        path = os.path.join(project_dir, CONFLUX_DIR, RBAC_FILE)
    return Rbac.load(path, missing_ok=missing_ok, schema=schema), schema, path


def explain(rules, schema, actor, action: str, resource: str):
    """Whether ``actor`` may do ``action`` on ``resource`` (``type/name``, ``type.name/field``,
    ``...@env``) under ``rules``, and why: a ``conflux.rbac.Decision``."""
    from conflux.actors import Actor
    from conflux.rbac import parse_target

    entity, field, env = parse_target(resource, schema.base_env if schema else None)
    return rules.decide(Actor.parse(actor), action, entity, field, env)
