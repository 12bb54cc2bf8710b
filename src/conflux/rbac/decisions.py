"""The decisions: :class:`Rbac` answers whether an actor may do an action on an entity, field
and environment, with the :class:`Decision` that says why, and checks whole batches of
operations, promotions and milestones."""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from typing import Iterable

from conflux._tomlfile import TomlFile
from conflux.actors import Actor
from conflux.errors import InputError, PermissionDenied, ValidationError
from conflux.rbac.loader import _Loader
from conflux.rbac.roles import ACTIONS, Assignment, Permission, Role

__all__ = ["Rbac", "Decision", "OP_ACTIONS", "resource_text"]

#: The actions an operation of each type needs (plus ``override`` when it sets override).
OP_ACTIONS = {
    "set_field": ("write",),
    "unset_field": ("write",),
    "add_elements": ("write",),
    "remove_elements": ("write",),
    "delete_entity": ("write",),
    "move_entity": ("write",),
    "resolve": ("write", "resolve"),
    "promote": ("promote",),
}


@dataclass(frozen=True)
class Decision:
    """The answer to one question, with the reason: truthy when allowed."""

    allowed: bool
    actor: Actor
    action: str
    resource: str
    permission: Permission | None = None
    role: str | None = None          # the assigned role the permission came through
    assignment: Assignment | None = None
    enforced: bool = True            # False: no rbac.toml, everything is allowed
    assigned_roles: tuple[str, ...] = dataclass_field(default=())

    def __bool__(self) -> bool:
        return self.allowed

    def reason(self) -> str:
        if not self.enforced:
            return "no rbac.toml: every authenticated actor may do everything"
        if self.allowed:
            perm = self.permission
            via = "" if perm.role == self.role else f", inherited through role {self.role!r}"
            return (f"role {perm.role!r} grants {'/'.join(perm.actions)} on "
                    f"{perm.resource.text}{via} (assigned by {self.assignment})")
        if not self.assigned_roles:
            return "no role is assigned to this actor"
        return f"none of its roles ({', '.join(self.assigned_roles)}) grants it"

    def to_dict(self) -> dict:
        return {"allowed": self.allowed, "actor": f"{self.actor.cls}:{self.actor.id}",
                "action": self.action, "resource": self.resource,
                "role": self.permission.role if self.permission else None,
                "via": self.role, "assignment": str(self.assignment) if self.assignment
                else None, "permission": self.permission.to_dict() if self.permission else None,
                "enforced": self.enforced, "reason": self.reason()}


def resource_text(entity_id: str | None, field: str | None, env: str | None) -> str:
    """``route.api/weight@production``; ``*`` for a whole dimension."""
    text = entity_id or "*"
    if field:
        text += f"/{field}"
    return f"{text}@{env or '*'}"


# --------------------------------------------------------------------------------------------
# The rules

class Rbac:
    """The rules of one ``rbac.toml`` (or none: ``enforced`` is False and everything is
    allowed)."""

    def __init__(self, roles: dict[str, Role] | None = None,
                 assignments: Iterable[Assignment] = (), *, path: str | None = None,
                 enforced: bool = True):
        self.path = path
        self.enforced = enforced
        self.roles: dict[str, Role] = dict(roles or {})
        self.assignments: tuple[Assignment, ...] = tuple(assignments)
        self._closure = {name: self._inherited(name) for name in self.roles}
        self._permissions = {name: tuple(perm for inherited in self._closure[name]
                                         for perm in self.roles[inherited].permissions)
                             for name in self.roles}
        self._grants_of: dict[Actor, tuple] = {}

    @classmethod
    def allow_all(cls) -> "Rbac":
        """The rules without an ``rbac.toml``: every authenticated actor may do everything."""
        return cls(enforced=False)

    @classmethod
    def load(cls, path: str, *, missing_ok: bool = True, schema=None) -> "Rbac":
        """Read and check ``path``. A missing file gives :meth:`allow_all` (or, with
        ``missing_ok=False``, an ``InputError``). With the project's ``schema``, patterns must
        name declared entity types, fields and environments where they name one literally."""
        try:
            doc = TomlFile(str(path))
        except FileNotFoundError:
            if missing_ok:
                return cls.allow_all()
            raise InputError(f"{path}: no such file", path=str(path)) from None
        roles, assignments = _Loader(doc, schema).load()
        return cls(roles, assignments, path=doc.path)

    # -- questions -----------------------------------------------------------------------------

    def roles_of(self, actor: Actor) -> list[tuple[str, Assignment]]:
        """The roles assigned to ``actor`` (each once, in file order), with the assignment."""
        seen: dict[str, Assignment] = {}
        for assignment in self.assignments:
            if assignment.matches(actor):
                for role in assignment.roles:
                    seen.setdefault(role, assignment)
        return list(seen.items())

    def inherited(self, role: str) -> tuple[str, ...]:
        """``role`` and every role it inherits, transitively, nearest first."""
        return self._closure[role]

    def permissions(self, role: str) -> list[Permission]:
        """Every permission ``role`` has: its own, then its inherited roles'."""
        return list(self._permissions[role])

    def _grants(self, actor: Actor) -> tuple[tuple[Permission, str, Assignment], ...]:
        """Every permission ``actor`` has, with the assigned role and assignment it came
        through, in the order decisions try them (cached per actor)."""
        grants = self._grants_of.get(actor)
        if grants is None:
            grants = tuple((perm, role, assignment)
                           for role, assignment in self.roles_of(actor)
                           for perm in self._permissions[role])
            if len(self._grants_of) >= 4096:  # a bound, should actor ids be made up
                self._grants_of.clear()
            self._grants_of[actor] = grants
        return grants

    def decide(self, actor: Actor, action: str, entity_id: str | None = None,
               field: str | None = None, env: str | None = None) -> Decision:
        """Whether ``actor`` may do ``action`` on the entity, field and environment, and why.

        ``entity_id=None`` asks about every entity, ``field=None`` about the entity as a
        whole, ``env=None`` about every environment (pass the base environment's name for an
        operation without one); ``"*"`` in any of them means the same as ``None``.
        """
        entity_id = None if entity_id == "*" else entity_id
        field = None if field == "*" else field
        env = None if env == "*" else env
        if action not in ACTIONS:
            raise InputError(f"unknown action {action!r} (actions: {', '.join(ACTIONS)})",
                             field="action")
        resource = resource_text(entity_id, field, env)
        if not self.enforced:
            return Decision(True, actor, action, resource, enforced=False)
        assigned = tuple(role for role, _ in self.roles_of(actor))
        for perm, role, assignment in self._grants(actor):
            if perm.allows(action, entity_id, field, env):
                return Decision(True, actor, action, resource, perm, role, assignment,
                                assigned_roles=assigned)
        return Decision(False, actor, action, resource, assigned_roles=assigned)

    def check(self, actor: Actor, action: str, entity_id: str | None = None,
              field: str | None = None, env: str | None = None) -> bool:
        """Whether ``actor`` may do ``action`` there (see :meth:`decide`)."""
        return self.decide(actor, action, entity_id, field, env).allowed

    def require(self, actor: Actor, action: str, entity_id: str | None = None,
                field: str | None = None, env: str | None = None, *, where: str = "") -> None:
        """:meth:`check`, raising ``PermissionDenied`` (403) naming actor, action and
        resource when denied."""
        decision = self.decide(actor, action, entity_id, field, env)
        if not decision:
            raise PermissionDenied(f"{where}{actor} may not {action} {decision.resource}: "
                                   f"{decision.reason()} (rules: {self.path or 'rbac.toml'})",
                                   entity=entity_id, field=field)

    def require_ops(self, actor: Actor, ops: list, *, base_env: str) -> None:
        """Check a whole batch of operations (dicts as sent on the wire) before any is
        applied: each needs ``write`` on its entity, field and environment (the entity as a
        whole for ``delete_entity`` and ``move_entity``, whose new parent needs ``write`` as a
        whole too: its children change), plus ``override`` when it sets ``override``, and
        ``resolve`` for a ``resolve``. One denied op refuses the batch, naming its index.
        An op without ``env`` is in ``base_env``. Ops of unknown types need ``write`` (the
        engine refuses them after); a malformed op is a ``ValidationError``."""
        if not isinstance(ops, list):
            raise ValidationError("a batch must be a list of operations")
        if not self.enforced:
            return
        grants = self._grants(actor)
        allowed: set[tuple] = set()  # questions already answered yes in this batch
        single = len(ops) == 1
        for index, op in enumerate(ops):
            where = "" if single else f"op {index}: "
            if not isinstance(op, dict):
                raise ValidationError(f"{where}an operation must be an object, got "
                                      f"{type(op).__name__}")
            entity_id, env = op.get("entity_id"), op.get("env") or base_env
            if not isinstance(entity_id, str):
                raise ValidationError(f"{where}entity_id must be a string like "
                                      "'service.checkout'", field="entity_id")
            if not isinstance(env, str):
                raise ValidationError(f"{where}env must be the name of an environment",
                                      field="env")
            op_type = op.get("type")
            field = None if op_type in ("delete_entity", "move_entity") else op.get("field")
            if field is not None and not isinstance(field, str):
                raise ValidationError(f"{where}field must be a field name", field="field")
            actions = list(OP_ACTIONS.get(op_type, ("write",)) if isinstance(op_type, str)
                           else ("write",))
            if op.get("override") is True:
                actions.append("override")
            questions = [(action, entity_id, field, env) for action in actions]
            if op_type == "move_entity" and isinstance(op.get("parent"), str):
                questions.append(("write", op["parent"], None, env))
            for question in questions:
                action, entity_id, field, env = question
                if question in allowed:
                    continue
                if not any(perm.allows(action, entity_id, field, env)
                           for perm, _, _ in grants):
                    self.require(actor, action, entity_id, field, env, where=where)
                allowed.add(question)

    def require_promote(self, actor: Actor, target: str, entities: list[str] | None) -> None:
        """A promotion into ``target`` needs ``promote`` on each named entity there, or on
        every entity (``*@target``) when none are named."""
        for entity_id in entities or [None]:
            self.require(actor, "promote", entity_id, None, target)

    def require_milestone(self, actor: Actor, envs: list[str]) -> None:
        """A milestone needs ``milestone`` on every entity (``*@env``) of each environment it
        projects."""
        for env in envs:
            self.require(actor, "milestone", None, None, env)

    # -- inheritance ---------------------------------------------------------------------------

    def _inherited(self, name: str) -> tuple[str, ...]:
        order, queue = [], [name]
        while queue:
            current = queue.pop(0)
            if current in order:
                continue
            order.append(current)
            queue.extend(self.roles[current].inherits)
        return tuple(order)
