"""Role-based access control (docs/security.md): who may do what to which entity, field and
environment.

``.conflux/rbac.toml`` declares roles and assigns them to actors::

    [role.reader]
    permissions = [ { actions = ["read"], resource = "*" } ]

    [role.autoscaler]
    inherits = ["reader"]
    permissions = [
        { actions = ["write"], resource = "route.*/weight@production" },
        { actions = ["write"], resource = "service/*/replicas" },
    ]

    [role.operator]
    inherits = ["autoscaler"]
    permissions = [ { actions = ["write", "override", "resolve"], resource = "*@staging" } ]

    [role.admin]
    description = "may do everything"
    permissions = [ { actions = ["*"], resource = "*" } ]

    [[assignment]]
    actor_pattern = "ci-*"          # a glob over actor ids: pipeline:ci-pipeline matches
    roles = ["autoscaler"]

    [[assignment]]
    actor_pattern = "autoscaler:*"  # with a ':', a glob over class:id
    roles = ["autoscaler"]

    [[assignment]]
    actor = "zara"                  # one actor id (any class, unless actor_class says)
    actor_class = "human"
    roles = ["admin"]

    [rbac]
    default_authenticated = ["reader"]   # roles every authenticated actor holds

**Actions**: ``read``, ``write``, ``override``, ``promote``, ``resolve``, ``milestone`` and
``admin``; ``admin`` grants every action on its resource, and so does ``"*"``.

**Resources**: ``<entity glob>[/<field glob>][@<env glob>]`` with case-sensitive fnmatch globs
(``*``, ``?``, ``[abc]``, ``[!abc]``); ``*`` also crosses dots. The entity is ``type.name``;
a first segment without a dot (other than ``*``) names a type, as in the original Conflux:
``service`` is every service, ``service/api`` is ``service.api`` and ``service/api/replicas``
its field. A missing ``/field`` means every field and the entity as a whole; a missing
``@env`` means every environment; ``*`` alone is everything, ``*/weight`` the field of every
entity. Something asked about as a whole (an entity, for ``delete_entity``; an environment,
for a milestone; every environment) is matched only by a ``*`` in that place:
``route.*/weight`` lets an actor write weights, not delete routes.

**Assignments**: ``[[assignment]]`` entries name their actors by ``actor_pattern`` or
``actor``: a glob over the actor id (``ci-*`` matches ``pipeline:ci-pipeline``), or, when it
holds a ``:``, over ``class:id`` (``autoscaler:*``, ``human:zara``); ``actor_class`` keeps
only actors of that class. Every matching assignment applies; a role brings the permissions of
the roles it inherits, transitively. The older ``[[assign]]`` tables are read the same way.

**Deny by default**: once the file exists, whatever it does not grant is denied. Without the
file, every authenticated actor may do everything.

``Rbac.load`` refuses unknown keys, actions and roles, inheritance cycles and bad patterns,
naming the file and line; given the project's schema it also refuses patterns that name an
entity type, field or environment the schema does not declare.

The parts: ``roles`` (actions, resource patterns, permissions, roles and assignments),
``loader`` (``rbac.toml`` read and checked) and ``decisions`` (:class:`Rbac`: who may do what,
and why).
"""

from conflux.rbac.decisions import OP_ACTIONS, Decision, Rbac, resource_text
from conflux.rbac.loader import RBAC_FILE
from conflux.rbac.roles import (ACTIONS, Assignment, Permission, Resource, Role,
                                parse_target)

__all__ = ["Rbac", "Role", "Permission", "Resource", "Assignment", "Decision", "ACTIONS",
           "RBAC_FILE", "OP_ACTIONS", "resource_text", "parse_target"]
