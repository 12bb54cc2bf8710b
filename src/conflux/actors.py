"""Actors: who submits operations."""

from __future__ import annotations

import os
import re

from conflux.errors import InputError

__all__ = ["Actor", "ACTOR_CLASSES", "default_actor"]

#: ``system`` is the original Conflux's class for the platform's own processes.
ACTOR_CLASSES = ("human", "pipeline", "operator", "autoscaler", "policy", "service", "system")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class Actor:
    """An identity with a class, shown as ``[class:id]``; immutable, equal by value."""

    # PERF: a plain class rather than a frozen dataclass: the dataclasses module imports
    # inspect, which took about 10 ms of every command's start (python -X importtime)
    __slots__ = ("id", "cls")
    __match_args__ = ("id", "cls")

    def __init__(self, id: str, cls: str = "human"):
        if not _ID.match(id):
            raise InputError(f"actor id {id!r} is not valid (letters, digits, '_', '.', "
                             "'@', '-', starting with a letter or digit, at most 128)",
                             field="actor")
        if cls not in ACTOR_CLASSES:
            raise InputError(f"actor class {cls!r} is not one of "
                             f"{', '.join(ACTOR_CLASSES)}", field="actor")
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "cls", cls)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}: an Actor is immutable")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}: an Actor is immutable")

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.id == other.id and self.cls == other.cls

    def __hash__(self):
        return hash((self.id, self.cls))

    def __repr__(self) -> str:
        return f"Actor(id={self.id!r}, cls={self.cls!r})"

    def __reduce__(self):
        return Actor, (self.id, self.cls)

    @classmethod
    def parse(cls, text: str) -> "Actor":
        """``class:id`` or a bare ``id`` (class ``human``)."""
        kind, sep, ident = text.partition(":")
        return cls(ident, kind) if sep else cls(text)

    def __str__(self) -> str:
        return f"[{self.cls}:{self.id}]"


def default_actor() -> Actor:
    """``$CONFLUX_ACTOR``, else ``human:<login name>``."""
    text = os.environ.get("CONFLUX_ACTOR")
    if text:
        return Actor.parse(text)
    import getpass  # here: only a command without --actor and $CONFLUX_ACTOR needs it

    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return Actor(re.sub(r"[^A-Za-z0-9_.@-]", "-", login) or "unknown")
