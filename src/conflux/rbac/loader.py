"""``rbac.toml`` read and checked: unknown keys, actions and roles, inheritance cycles and bad
patterns are refused naming the file and line, and, given the project's schema, patterns that
name an entity type, field or environment it does not declare."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

from conflux._tomlfile import TomlFile
from conflux.actors import ACTOR_CLASSES
from conflux.rbac.roles import ACTIONS, Assignment, Permission, Resource, Role, _check_glob

__all__ = ["RBAC_FILE"]

#: The file's name inside ``.conflux/``.
RBAC_FILE = "rbac.toml"

_TOP_KEYS = ("rbac", "role", "assignment", "assign")
_SETTINGS_KEYS = ("version", "default_authenticated", "default_anonymous")
_ROLE_KEYS = ("inherits", "permissions", "description")
_PERMISSION_KEYS = ("actions", "resource")
#: ``[[assignment]]`` (the documented form) and the older ``[[assign]]``: each names its actors
#: by ``actor`` (an id or ``class:id``) or ``actor_pattern`` (a glob of either), optionally
#: only those of ``actor_class``.
_ASSIGN_KEYS = ("actor", "actor_pattern", "actor_class", "roles", "description")
#: The original Conflux's actions that Conflux has no separate action for, and why.
_FOLDED_ACTIONS = {
    "create": "writing a field creates its entity, so 'write' grants it",
    "delete": "deleting an entity needs 'write' on the entity as a whole (a resource without "
              "/FIELD)",
    "move": "entities have no hierarchy to move in",
}

_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WILDCARDS = re.compile(r"[*?\[]")


class _Loader:
    """Turns an ``rbac.toml`` document into the roles and assignments of an
    :class:`~conflux.rbac.Rbac`, refusing anything wrong with the file and line."""

    def __init__(self, doc: TomlFile, schema=None):
        self.doc = doc
        self.schema = schema

    def load(self) -> tuple[dict[str, Role], list[Assignment]]:
        doc = self.doc
        for key in doc.data:
            if key not in _TOP_KEYS:
                doc.fail(f"unknown top-level key {key!r} (allowed: [rbac], [role.NAME] tables "
                         "and [[assignment]])", line=doc.top_key(key))
        roles = self._roles(doc.data.get("role", {}))
        self._check_cycles(roles)
        assignments = self._defaults(doc.data.get("rbac", {}), roles)
        for section in ("assignment", "assign"):
            assignments += self._assignments(section, doc.data.get(section, []), roles)
        return roles, assignments

    def _known_keys(self, table: dict, allowed: tuple[str, ...], prefix: str, span,
                    line) -> None:
        """Refuse a key of ``table`` that is not ``allowed``, at its line inside ``span``."""
        doc = self.doc
        for key in table:
            if key not in allowed:
                doc.fail(prefix + f"unknown key {key!r} (allowed: {', '.join(allowed)})",
                         line=doc.first_line(doc.key(key, span), line))

    def _defaults(self, table: Any, roles: dict[str, Role]) -> list[Assignment]:
        """``[rbac]``: ``default_authenticated`` roles are held by every actor (the daemon
        serves only authenticated ones, so ``default_anonymous`` must stay empty)."""
        doc = self.doc
        line = doc.top_key("rbac")
        span = doc.table("rbac")
        if not isinstance(table, dict):
            doc.fail("'rbac' must be a table, written [rbac]", line=line)
        self._known_keys(table, _SETTINGS_KEYS, "[rbac]: ", span, line)
        version = table.get("version", "")
        if not isinstance(version, (str, int, float)) or isinstance(version, bool):
            doc.fail("[rbac]: 'version' must be text or a number, e.g. version = \"1.0\"",
                     line=doc.first_line(doc.key("version", span), line))
        anonymous = table.get("default_anonymous", [])
        if anonymous != []:
            doc.fail("[rbac]: default_anonymous must be empty: the daemon serves no "
                     "unauthenticated request (give roles to actors of API keys or "
                     "certificates instead)",
                     line=doc.first_line(doc.key("default_anonymous", span), line))
        names = table.get("default_authenticated", [])
        where = doc.first_line(doc.key("default_authenticated", span), line)
        if not isinstance(names, list) or not all(isinstance(r, str) for r in names):
            doc.fail("[rbac]: 'default_authenticated' must be a list of role names",
                     line=where)
        for name in names:
            if name not in roles:
                doc.fail(f"[rbac]: default_authenticated names unknown role {name!r} "
                         f"(declared: {', '.join(roles) or 'none'})",
                         line=doc.first_line(doc.literal(name, span), where))
        if not names:
            return []
        return [Assignment("*", tuple(dict.fromkeys(names)), "every authenticated actor",
                           where, source="[rbac] default_authenticated")]

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
            self._known_keys(raw, _ROLE_KEYS, f"role {name!r}: ", span, line)
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
        self._known_keys(raw, _PERMISSION_KEYS, prefix, span, line)
        actions = raw.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, str) for a in actions):
            doc.fail(prefix + f"'actions' must be a non-empty list of {', '.join(ACTIONS)}",
                     line=line)
        for action in actions:
            if action in _FOLDED_ACTIONS:
                doc.fail(prefix + f"Conflux has no {action!r} action: "
                         f"{_FOLDED_ACTIONS[action]}",
                         line=doc.first_line(doc.literal(action, span), line))
            if action not in ACTIONS and action != "*":
                doc.fail(prefix + f"unknown action {action!r} (actions: {', '.join(ACTIONS)}, "
                         "or \"*\" for all)",
                         line=doc.first_line(doc.literal(action, span), line))
        if "*" in actions:
            actions = list(ACTIONS)
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

    def _assignments(self, section: str, entries: Any,
                     roles: dict[str, Role]) -> list[Assignment]:
        doc = self.doc
        if not isinstance(entries, list):
            doc.fail(f"'{section}' must be a list of tables, written [[{section}]]",
                     line=doc.top_key(section))
        out = []
        for index, raw in enumerate(entries):
            span = doc.table(section, occurrence=index + 1, array=True)
            line = doc.line_at(span[0]) if span else doc.top_key(section)
            prefix = f"assignment {index + 1}: "
            if not isinstance(raw, dict):
                doc.fail(prefix + "must be a table with actor_pattern (or actor) and roles",
                         line=line)
            self._known_keys(raw, _ASSIGN_KEYS, prefix, span, line)
            given = [key for key in ("actor", "actor_pattern") if key in raw]
            if len(given) != 1:
                doc.fail(prefix + ("give one of 'actor' (an id) and 'actor_pattern' (a glob), "
                                   "not both" if given else
                                   "names no actor: add actor_pattern = \"ci-*\" (a glob over "
                                   "actor ids, or class:id) or actor = \"alice\""),
                         line=line)
            key = given[0]
            pattern = raw[key]
            where = doc.first_line(doc.key(key, span), line)
            if not isinstance(pattern, str):
                doc.fail(prefix + f"'{key}' must be text, e.g. {key} = \"autoscaler-*\" or "
                         "\"pipeline:*\"", line=where)
            try:
                _check_actor_pattern(pattern)
            except ValueError as exc:
                doc.fail(prefix + f"{key} {pattern!r}: {exc}", line=where)
            cls = raw.get("actor_class")
            if cls is not None and cls not in ACTOR_CLASSES:
                doc.fail(prefix + f"actor_class {cls!r} is not one of "
                         f"{', '.join(ACTOR_CLASSES)}",
                         line=doc.first_line(doc.key("actor_class", span), line))
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
            source = f"{key} = {pattern!r}" + (f", actor_class = {cls!r}" if cls else "")
            out.append(Assignment(pattern, tuple(dict.fromkeys(names)), description, line,
                                  cls, source))
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
