"""RBAC (docs/security.md): who may do what to which entity, field and environment.

``.conflux/rbac.toml`` declares roles and assigns them to actors::

    [role.reader]
    permissions = [ { actions = ["read"], resource = "*" } ]

    [role.autoscaler]
    inherits = ["reader"]
    permissions = [
        { actions = ["write"], resource = "route.*/weight@production" },
        { actions = ["write"], resource = "service.*/replicas" },
    ]

    [role.operator]
    inherits = ["autoscaler"]
    permissions = [ { actions = ["write", "override", "resolve"], resource = "*@staging" } ]

    [role.admin]
    description = "may do everything"
    permissions = [ { actions = ["admin"], resource = "*" } ]

    [[assign]]
    actor = "autoscaler:*"          # class:id glob
    roles = ["autoscaler"]

    [[assign]]
    actor = "zara"                  # id glob, any class
    roles = ["admin"]

**Actions**: ``read``, ``write``, ``override``, ``promote``, ``resolve``, ``milestone`` and
``admin``; ``admin`` grants every action on its resource.

**Resources**: ``<entity glob>[/<field glob>][@<env glob>]`` with case-sensitive fnmatch globs
(``*``, ``?``, ``[abc]``, ``[!abc]``); ``*`` also crosses dots. A missing ``/field`` means
every field and the entity as a whole; a missing ``@env`` means every environment; ``*`` alone
is everything. Something asked about as a whole (an entity, for ``delete_entity``; an
environment, for a milestone; every environment) is matched only by a ``*`` in that place:
``route.*/weight`` lets an actor write weights, not delete routes.

**Assignments**: ``actor`` is a glob over the actor id (``autoscaler-*``, ``zara``) or, when it
holds a ``:``, over ``class:id`` (``autoscaler:*``, ``human:zara``). Every matching assignment
applies; a role brings the permissions of the roles it inherits, transitively.

**Deny by default**: once the file exists, whatever it does not grant is denied. Without the
file, every authenticated actor may do everything.

``Rbac.load`` refuses unknown keys, actions and roles, inheritance cycles and bad patterns,
naming the file and line; given the project's schema it also refuses patterns that name an
entity type, field or environment the schema does not declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dataclass_field
from fnmatch import fnmatchcase, translate
from typing import Any, Iterable

from conflux._tomlfile import TomlFile
from conflux.actors import ACTOR_CLASSES, Actor
from conflux.errors import InputError, PermissionDenied, ValidationError

__all__ = ["Rbac", "Role", "Permission", "Resource", "Assignment", "Decision", "ACTIONS",
           "RBAC_FILE", "OP_ACTIONS", "resource_text"]

#: The file's name inside ``.conflux/``.
RBAC_FILE = "rbac.toml"
#: Every action; ``admin`` implies all the others.
ACTIONS = ("read", "write", "override", "promote", "resolve", "milestone", "admin")
#: The actions an operation of each type needs (plus ``override`` when it sets override).
OP_ACTIONS = {
    "set_field": ("write",),
    "unset_field": ("write",),
    "add_elements": ("write",),
    "remove_elements": ("write",),
    "delete_entity": ("write",),
    "resolve": ("write", "resolve"),
    "promote": ("promote",),
}

_TOP_KEYS = ("role", "assign")
_ROLE_KEYS = ("inherits", "permissions", "description")
_PERMISSION_KEYS = ("actions", "resource")
_ASSIGN_KEYS = ("actor", "roles", "description")

_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_GLOB_CHARS = {
    "entity": re.compile(r"[A-Za-z0-9_.*?!\[\]-]+"),
    "field": re.compile(r"[A-Za-z0-9_*?!\[\]]+"),
    "env": re.compile(r"[A-Za-z0-9_*?!\[\]-]+"),
    "actor id": re.compile(r"[A-Za-z0-9_.@*?!\[\]-]+"),
    "actor class": re.compile(r"[a-z*?!\[\]]+"),
}
_WILDCARDS = re.compile(r"[*?\[]")


def _check_glob(text: str, what: str) -> str:
    """``text`` if it is a well-formed glob of ``what``'s characters, else ``ValueError``."""
    if not text:
        raise ValueError(f"the {what} part is empty")
    if not _GLOB_CHARS[what].fullmatch(text):
        bad = sorted({c for c in text if not _GLOB_CHARS[what].fullmatch(c)})
        raise ValueError(f"the {what} glob {text!r} has characters a {what} cannot hold "
                         f"({' '.join(map(repr, bad))})")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            start = i + 2 if text[i + 1: i + 2] == "!" else i + 1
            close = text.find("]", start)
            if close == -1 or close == start or "[" in text[start:close]:
                raise ValueError(f"the {what} glob {text!r} has an unclosed or empty '[...]'")
            i = close + 1
            continue
        if ch in "]!":
            raise ValueError(f"the {what} glob {text!r} has a stray {ch!r} (only '[...]' and "
                             "'[!...]' use it)")
        i += 1
    return text


# --------------------------------------------------------------------------------------------
# Resources, permissions, roles

@dataclass(frozen=True)
class Resource:
    """A resource pattern ``<entity glob>[/<field glob>][@<env glob>]``."""

    text: str
    entity: str = "*"
    field: str = "*"
    env: str = "*"
    # PERF: globs compiled once (None for '*'). With them and the per-actor grants cache,
    # require_ops on a 1,000-op batch costs about 1.6 µs per op here, down from 4.7 µs with
    # fnmatch per call and grants gathered per question.
    _matchers: tuple = dataclass_field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        object.__setattr__(self, "_matchers", tuple(
            None if glob == "*" else re.compile(translate(glob)).match
            for glob in (self.entity, self.field, self.env)))

    @classmethod
    def parse(cls, text: Any) -> "Resource":
        """Parse and check a pattern; ``ValueError`` says what is wrong."""
        if not isinstance(text, str):
            raise ValueError("a resource must be text like \"route.*/weight@production\"")
        if text == "*":
            return cls(text)
        if text.count("@") > 1:
            raise ValueError("more than one '@' (write <entity>[/<field>][@<env>])")
        target, at, env = text.partition("@")
        if at:
            _check_glob(env, "env")
        else:
            env = "*"
        if target.count("/") > 1:
            raise ValueError("more than one '/' (write <entity>[/<field>][@<env>])")
        entity, slash, field = target.partition("/")
        if not entity:
            raise ValueError("the entity part is empty (use '*' for every entity, e.g. "
                             f"'*{text}')")
        _check_glob(entity, "entity")
        if entity != "*" and "." not in entity and not _WILDCARDS.search(entity):
            raise ValueError(f"the entity glob {entity!r} matches no entity id (ids are "
                             f"<type>.<name>; did you mean '{entity}.*'?)")
        if slash:
            _check_glob(field, "field")
        else:
            field = "*"
        return cls(text, entity, field, env)

    def matches(self, entity_id: str | None, field: str | None, env: str | None) -> bool:
        """Whether the pattern covers this entity, field and environment. ``None`` asks about
        the whole dimension (every entity, the entity itself, every environment) and is
        matched only by ``*`` there."""
        entity_match, field_match, env_match = self._matchers
        return (_part(entity_match, entity_id) and _part(field_match, field)
                and _part(env_match, env))

    def __str__(self) -> str:
        return self.text


def _part(match, value: str | None) -> bool:
    if match is None:  # '*'
        return True
    return value is not None and match(value) is not None


@dataclass(frozen=True)
class Permission:
    """Some actions on a resource, as declared by a role."""

    actions: tuple[str, ...]
    resource: Resource
    role: str
    line: int | None = None

    def grants(self, action: str) -> bool:
        return action in self.actions or "admin" in self.actions

    def allows(self, action: str, entity_id: str | None, field: str | None,
               env: str | None) -> bool:
        return self.grants(action) and self.resource.matches(entity_id, field, env)

    def to_dict(self) -> dict:
        return {"actions": list(self.actions), "resource": self.resource.text, "role": self.role}


@dataclass(frozen=True)
class Role:
    """A named set of permissions, with the roles it inherits."""

    name: str
    inherits: tuple[str, ...] = ()
    permissions: tuple[Permission, ...] = ()
    description: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Assignment:
    """``[[assign]]``: the roles of every actor matching a pattern."""

    actor: str
    roles: tuple[str, ...]
    description: str = ""
    line: int | None = None

    def matches(self, actor: Actor) -> bool:
        if ":" in self.actor:
            return fnmatchcase(f"{actor.cls}:{actor.id}", self.actor)
        return fnmatchcase(actor.id, self.actor)


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
                    f"{perm.resource.text}{via} (assigned by actor = {self.assignment.actor!r})")
        if not self.assigned_roles:
            return "no role is assigned to this actor"
        return f"none of its roles ({', '.join(self.assigned_roles)}) grants it"

    def to_dict(self) -> dict:
        return {"allowed": self.allowed, "actor": f"{self.actor.cls}:{self.actor.id}",
                "action": self.action, "resource": self.resource,
                "role": self.permission.role if self.permission else None,
                "via": self.role, "assignment": self.assignment.actor if self.assignment
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
        return _Loader(doc, schema).load()

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
        whole for ``delete_entity``), plus ``override`` when it sets ``override``, and
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
            field = None if op_type == "delete_entity" else op.get("field")
            if field is not None and not isinstance(field, str):
                raise ValidationError(f"{where}field must be a field name", field="field")
            actions = list(OP_ACTIONS.get(op_type, ("write",)) if isinstance(op_type, str)
                           else ("write",))
            if op.get("override") is True:
                actions.append("override")
            for action in actions:
                question = (action, entity_id, field, env)
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


# --------------------------------------------------------------------------------------------
# Loading

class _Loader:
    """Turns an ``rbac.toml`` document into :class:`Rbac`, refusing anything wrong with the
    file and line."""

    def __init__(self, doc: TomlFile, schema=None):
        self.doc = doc
        self.schema = schema

    def load(self) -> Rbac:
        doc = self.doc
        for key in doc.data:
            if key not in _TOP_KEYS:
                doc.fail(f"unknown top-level key {key!r} (allowed: [role.NAME] tables and "
                         "[[assign]])", line=doc.top_key(key))
        roles = self._roles(doc.data.get("role", {}))
        self._check_cycles(roles)
        assignments = self._assignments(doc.data.get("assign", []), roles)
        return Rbac(roles, assignments, path=doc.path)

    # -- roles ---------------------------------------------------------------------------------

    def _roles(self, table: Any) -> dict[str, Role]:
        doc = self.doc
        if not isinstance(table, dict):
            doc.fail("'role' must hold tables, written [role.NAME]", line=doc.top_key("role"))
        roles = {}
        for name, raw in table.items():
            span = doc.table("role", name)
            line = doc.line_at(span[0]) if span else doc.top_key("role")
            if not _ROLE_NAME.fullmatch(name):
                doc.fail(f"role name {name!r} is not valid (letters, digits, '_', '.', '-', "
                         "starting with a letter or digit)", line=line)
            if not isinstance(raw, dict):
                doc.fail(f"role {name!r} must be a table with permissions = [...]", line=line)
            for key in raw:
                if key not in _ROLE_KEYS:
                    doc.fail(f"role {name!r}: unknown key {key!r} (allowed: "
                             f"{', '.join(_ROLE_KEYS)})",
                             line=doc.first_line(doc.key(key, span), line))
            inherits = raw.get("inherits", [])
            if not isinstance(inherits, list) or not all(isinstance(r, str) for r in inherits):
                doc.fail(f"role {name!r}: 'inherits' must be a list of role names",
                         line=doc.first_line(doc.key("inherits", span), line))
            description = raw.get("description", "")
            if not isinstance(description, str):
                doc.fail(f"role {name!r}: 'description' must be text",
                         line=doc.first_line(doc.key("description", span), line))
            permissions = raw.get("permissions", [])
            if not isinstance(permissions, list):
                doc.fail(f"role {name!r}: 'permissions' must be a list of {{ actions = [...], "
                         "resource = \"...\" }", line=doc.first_line(doc.key("permissions",
                                                                              span), line))
            perms = tuple(self._permission(name, raw_perm, index, span, line)
                          for index, raw_perm in enumerate(permissions))
            roles[name] = Role(name, tuple(dict.fromkeys(inherits)), perms, description, line)
        for role in roles.values():
            span = doc.table("role", role.name)
            for parent in role.inherits:
                if parent not in roles:
                    doc.fail(f"role {role.name!r} inherits unknown role {parent!r} (declared: "
                             f"{', '.join(roles) or 'none'})",
                             line=doc.first_line(doc.literal(parent, span), role.line))
        return roles

    def _permission(self, role: str, raw: Any, index: int, span, role_line) -> Permission:
        doc = self.doc
        line = doc.first_line(doc.key("actions", span, index + 1),
                              doc.key("resource", span, index + 1), role_line)
        prefix = f"role {role!r}: permission {index + 1}: "
        if not isinstance(raw, dict):
            doc.fail(prefix + "must be a table { actions = [...], resource = \"...\" }",
                     line=line)
        for key in raw:
            if key not in _PERMISSION_KEYS:
                doc.fail(prefix + f"unknown key {key!r} (allowed: actions, resource)",
                         line=doc.first_line(doc.key(key, span), line))
        actions = raw.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, str) for a in actions):
            doc.fail(prefix + f"'actions' must be a non-empty list of {', '.join(ACTIONS)}",
                     line=line)
        for action in actions:
            if action not in ACTIONS:
                doc.fail(prefix + f"unknown action {action!r} (actions: {', '.join(ACTIONS)})",
                         line=doc.first_line(doc.literal(action, span), line))
        text = raw.get("resource")
        if text is None:
            doc.fail(prefix + "has no 'resource' (e.g. resource = \"route.*/weight@production\""
                     ", or \"*\" for everything)", line=line)
        where = doc.first_line(doc.literal(text, span), line)
        try:
            resource = Resource.parse(text)
        except ValueError as exc:
            doc.fail(prefix + f"resource {text!r}: {exc}", line=where)
        self._check_against_schema(resource, prefix, where)
        return Permission(tuple(dict.fromkeys(actions)), resource, role, where)

    def _check_against_schema(self, resource: Resource, prefix: str, line) -> None:
        """Refuse literal names the schema does not declare: a typo would silently deny."""
        schema = self.schema
        if schema is None:
            return
        fail = self.doc.fail
        text = resource.text
        if not any(fnmatchcase(env, resource.env) for env in schema.environments):
            fail(prefix + f"resource {text!r}: no declared environment matches "
                 f"{resource.env!r} (declared: {', '.join(schema.environments)})", line=line)
        type_glob = resource.entity.partition(".")[0] if "." in resource.entity else None
        if type_glob is None or _WILDCARDS.search(type_glob):
            types = [t for t in schema.types if type_glob is None
                     or fnmatchcase(t, type_glob)]
            if type_glob is not None and not types:
                fail(prefix + f"resource {text!r}: no declared entity type matches "
                     f"{type_glob!r} (declared: {', '.join(schema.types)})", line=line)
        else:
            if type_glob not in schema.types:
                fail(prefix + f"resource {text!r}: unknown entity type {type_glob!r} "
                     f"(declared: {', '.join(schema.types)})", line=line)
            types = [type_glob]
        if _WILDCARDS.search(resource.field):
            return
        if not any(resource.field in schema.types[t].fields for t in types):
            fail(prefix + f"resource {text!r}: no field {resource.field!r} in entity type(s) "
                 f"{', '.join(types)}", line=line)

    def _check_cycles(self, roles: dict[str, Role]) -> None:
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            state[name] = "visiting"
            for parent in roles[name].inherits:
                if state.get(parent) == "visiting":
                    cycle = path[path.index(parent):] + [parent]
                    self.doc.fail(f"role inheritance cycle: {' -> '.join(cycle)}",
                                  line=roles[name].line)
                if parent not in state:
                    visit(parent, path + [parent])
            state[name] = "done"

        for name in roles:  # in file order, so the message starts where a reader would
            if name not in state:
                visit(name, [name])

    # -- assignments ---------------------------------------------------------------------------

    def _assignments(self, entries: Any, roles: dict[str, Role]) -> list[Assignment]:
        doc = self.doc
        if not isinstance(entries, list):
            doc.fail("'assign' must be a list of tables, written [[assign]]",
                     line=doc.top_key("assign"))
        out = []
        for index, raw in enumerate(entries):
            span = doc.table("assign", occurrence=index + 1, array=True)
            line = doc.line_at(span[0]) if span else doc.top_key("assign")
            prefix = f"assignment {index + 1}: "
            if not isinstance(raw, dict):
                doc.fail(prefix + "must be a table with actor and roles", line=line)
            for key in raw:
                if key not in _ASSIGN_KEYS:
                    doc.fail(prefix + f"unknown key {key!r} (allowed: "
                             f"{', '.join(_ASSIGN_KEYS)})",
                             line=doc.first_line(doc.key(key, span), line))
            pattern = raw.get("actor")
            where = doc.first_line(doc.key("actor", span), line)
            if not isinstance(pattern, str):
                doc.fail(prefix + "'actor' must be an actor pattern, e.g. actor = "
                         "\"autoscaler-*\" or \"pipeline:*\"", line=where)
            try:
                _check_actor_pattern(pattern)
            except ValueError as exc:
                doc.fail(prefix + f"actor {pattern!r}: {exc}", line=where)
            names = raw.get("roles")
            where = doc.first_line(doc.key("roles", span), line)
            if not isinstance(names, list) or not names or not all(
                    isinstance(r, str) for r in names):
                doc.fail(prefix + "'roles' must be a non-empty list of role names", line=where)
            for name in names:
                if name not in roles:
                    doc.fail(prefix + f"unknown role {name!r} (declared: "
                             f"{', '.join(roles) or 'none'})",
                             line=doc.first_line(doc.literal(name, span), where))
            description = raw.get("description", "")
            if not isinstance(description, str):
                doc.fail(prefix + "'description' must be text", line=line)
            out.append(Assignment(pattern, tuple(dict.fromkeys(names)), description, line))
        return out


def _check_actor_pattern(pattern: str) -> None:
    if pattern.count(":") > 1:
        raise ValueError("more than one ':' (write ID or CLASS:ID, globs allowed)")
    cls, colon, ident = pattern.rpartition(":")
    if colon:
        _check_glob(cls, "actor class")
        if not any(fnmatchcase(c, cls) for c in ACTOR_CLASSES):
            raise ValueError(f"class {cls!r} matches no actor class "
                             f"({', '.join(ACTOR_CLASSES)})")
    _check_glob(ident, "actor id")
