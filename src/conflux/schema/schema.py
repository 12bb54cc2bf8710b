"""The loaded schema: the environment tree (rooted at the base) and the entity types, with the
lookups that name what is unknown."""

from __future__ import annotations

from conflux.errors import NotFound, ValidationError
from conflux.schema.fields import _ENTITY_NAME_RE, _NAME_RULE, _clip

__all__ = ["Schema", "EntityType"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conflux.schema.fields import Field


class EntityType:
    """A declared entity type: its fields in file order and which of them are required, and
    the collections of children its entities may have in the entity tree
    (``{collection: child type}``)."""

    __slots__ = ("name", "fields", "description", "children")

    def __init__(self, name: str, fields: dict[str, Field], description: str = "",
                 children: dict[str, str] | None = None):
        self.name = name
        self.fields = fields
        self.description = description
        self.children = children or {}

    @property
    def required(self) -> list[str]:
        """Names of the required fields, in file order."""
        return [name for name, field in self.fields.items() if field.required]

    def __repr__(self) -> str:
        return f"EntityType({self.name!r}, fields={list(self.fields)})"


class Schema:
    """A loaded schema: environments (a tree rooted at the base) and entity types."""

    def __init__(self, *, name: str, version: str, source: str, base_env: str,
                 parents: dict[str, str | None], environments: list[str],
                 types: dict[str, EntityType]):
        self.name = name
        self.version = version
        self.source = source
        self.base_env = base_env
        self.parents = parents
        self.environments = environments
        self.types = types
        #: ``(entity type, field)`` of every ``review`` field
        self.review_fields = frozenset(
            (type_name, spec.name) for type_name, etype in types.items()
            for spec in etype.fields.values() if spec.merge == "review")

    def parent_types(self, type_name: str) -> list[str]:
        """The entity types whose entities may be parents of a ``type_name`` entity."""
        return [name for name, etype in self.types.items()
                if type_name in etype.children.values()]

    def collection(self, parent_type: str, child_type: str) -> str | None:
        """The name of ``parent_type``'s children of ``child_type`` (None: it has none)."""
        for collection, declared in self.types[parent_type].children.items():
            if declared == child_type:
                return collection
        return None

    def __repr__(self) -> str:
        return (f"Schema({self.name!r}, version={self.version!r}, "
                f"environments={self.environments}, types={list(self.types)})")

    def env_chain(self, env: str) -> list[str]:
        """The environment, its parent, ..., the base: the order reads fall back in."""
        self._check_env(env)
        chain = []
        current: str | None = env
        while current is not None:
            chain.append(current)
            current = self.parents[current]
        return chain

    def children(self, env: str) -> list[str]:
        """Every environment that inherits from ``env``, directly or not (file order)."""
        self._check_env(env)
        return [other for other in self.environments
                if other != env and env in self.env_chain(other)]

    def entity_type(self, name: str) -> EntityType:
        """The declared entity type ``name``; ``ValidationError`` if there is none."""
        try:
            return self.types[name]
        except (KeyError, TypeError):
            raise ValidationError(
                f"unknown entity type {_clip(repr(name))} (declared: "
                f"{', '.join(self.types)})",
                entity=_clip(name) if isinstance(name, str) else None) from None

    def field(self, type_name: str, field_name: str) -> Field:
        """The declared field; ``ValidationError`` naming the type and its fields if unknown."""
        entity_type = self.entity_type(type_name)
        try:
            return entity_type.fields[field_name]
        except (KeyError, TypeError):
            raise ValidationError(
                f"entity type {type_name!r} has no field {_clip(repr(field_name))} "
                f"(fields: {', '.join(entity_type.fields) or 'none'})",
                field=_clip(field_name) if isinstance(field_name, str) else None,
                entity=type_name) from None

    def split_entity_id(self, entity_id: str) -> tuple[str, str]:
        """``"route.api.v1"`` -> ``("route", "api.v1")``: the type is before the first dot."""
        if not isinstance(entity_id, str) or "." not in entity_id:
            raise ValidationError(
                f"entity id {_clip(repr(entity_id))} must be '<type>.<name>', e.g. "
                "'route.api-v1'", entity=_clip(entity_id) if isinstance(entity_id, str) else None)
        type_name, name = entity_id.split(".", 1)
        if type_name not in self.types:
            raise ValidationError(
                f"entity id {_clip(repr(entity_id))}: unknown entity type "
                f"{_clip(repr(type_name))} (declared: {', '.join(self.types)})",
                entity=_clip(entity_id))
        if not _ENTITY_NAME_RE.fullmatch(name):
            raise ValidationError(
                f"entity id {_clip(repr(entity_id))}: {_clip(repr(name))} is not a valid "
                f"entity name ({_NAME_RULE})", entity=_clip(entity_id))
        return type_name, name

    def _check_env(self, env: str) -> None:
        if env not in self.parents:
            raise NotFound(f"unknown environment {_clip(repr(env))} "
                           f"(known: {', '.join(self.environments)})")
