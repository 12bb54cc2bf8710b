"""Actors: who submits operations."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass

from conflux.errors import InputError

__all__ = ["Actor", "ACTOR_CLASSES", "default_actor"]

#: ``system`` is the original Conflux's class for the platform's own processes.
ACTOR_CLASSES = ("human", "pipeline", "operator", "autoscaler", "policy", "service", "system")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


@dataclass(frozen=True)
class Actor:
    """An identity with a class, shown as ``[class:id]``."""

    id: str
    cls: str = "human"

    def __post_init__(self):
        if not _ID.match(self.id):
            raise InputError(f"actor id {self.id!r} is not valid (letters, digits, '_', '.', "
                             "'@', '-', starting with a letter or digit, at most 128)",
                             field="actor")
        if self.cls not in ACTOR_CLASSES:
            raise InputError(f"actor class {self.cls!r} is not one of "
                             f"{', '.join(ACTOR_CLASSES)}", field="actor")

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
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return Actor(re.sub(r"[^A-Za-z0-9_.@-]", "-", login) or "unknown")
