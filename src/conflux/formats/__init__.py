"""Serializers: how Conflux reads and writes config files.

A serializer is a small object with:

``name``
    the format's name, as given to ``--format`` (``yaml``, ``json``, ...);
``extensions``
    the file extensions it claims, with the dot (``(".yaml", ".yml")``); the first is the one
    ``export`` writes;
``load(data: bytes, path: str) -> list[dict]``
    the documents of one file, each a mapping of plain values (str, int, float, bool, None,
    list, dict). A file that does not parse raises ``FormatError`` with the line when the
    parser knows it. Omit ``load`` (set it to ``None``) for a write-only format;
``dump(document: dict) -> bytes``
    one entity's document as a file's contents. Omit it for a read-only format;
``dump_stream(documents: list[dict]) -> bytes`` (optional)
    several documents as one stream (``export --output -``);
``locate(data: bytes, index: int, key: str) -> int | None`` (optional)
    the line of a top-level key of the ``index``-th document, for error messages.

The built-in formats are such objects (``conflux.formats.builtin``). Third parties add a format
with a package that declares an entry point in the ``conflux.serializers`` group, naming a
``Serializer`` subclass or instance::

    [project.entry-points."conflux.serializers"]
    ini = "conflux_ini:IniSerializer"

A plugin's name replaces a built-in of the same name; an extension claimed twice goes to the
plugin.
"""

from __future__ import annotations

import os

from conflux.errors import InputError

__all__ = ["Serializer", "FormatError", "registry", "for_name", "for_path", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "conflux.serializers"


class FormatError(InputError):
    """A file that its format's parser refused (``line`` when the parser knows it)."""


class Serializer:
    """Base class of a format (see the module's documentation for the interface)."""

    name: str = ""
    extensions: tuple[str, ...] = ()
    load = None
    dump = None

    def dump_stream(self, documents: list[dict]) -> bytes:
        raise InputError(f"format {self.name!r} has no stream form: export to a directory")

    def locate(self, data: bytes, index: int, key: str) -> int | None:
        return None

    @property
    def readable(self) -> bool:
        return callable(self.load)

    @property
    def writable(self) -> bool:
        return callable(self.dump)


class Registry:
    """The formats known to this process: the built-ins, then the installed plugins."""

    def __init__(self, serializers):
        self.by_name: dict[str, Serializer] = {}
        for serializer in serializers:
            self.by_name[serializer.name] = serializer
        self.by_extension: dict[str, Serializer] = {}
        for serializer in self.by_name.values():
            for ext in serializer.extensions:
                self.by_extension[ext.lower()] = serializer

    def names(self, *, readable: bool = False, writable: bool = False) -> list[str]:
        return sorted(n for n, s in self.by_name.items()
                      if (not readable or s.readable) and (not writable or s.writable))

    def get(self, name: str, *, readable: bool = False, writable: bool = False) -> Serializer:
        serializer = self.by_name.get(name)
        if serializer is None or (readable and not serializer.readable) or (
                writable and not serializer.writable):
            verb = "read" if readable else "written" if writable else "used"
            known = ", ".join(self.names(readable=readable, writable=writable))
            raise InputError(f"unknown format {name!r}: formats that can be {verb} are {known}")
        return serializer

    def for_path(self, path: str) -> Serializer | None:
        """The readable format a file's extension names, or None."""
        serializer = self.by_extension.get(os.path.splitext(path)[1].lower())
        return serializer if serializer is not None and serializer.readable else None


def _plugins() -> list[Serializer]:
    from importlib import metadata  # PERF: only when a format is first needed

    found = []
    for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = entry.load()
            serializer = obj() if isinstance(obj, type) else obj
        except Exception as exc:  # a broken plugin must not break every command
            raise InputError(f"serializer plugin {entry.name!r} ({entry.value}) failed to load: "
                             f"{type(exc).__name__}: {exc}") from None
        if not getattr(serializer, "name", None) or not isinstance(
                getattr(serializer, "extensions", None), (tuple, list)):
            raise InputError(f"serializer plugin {entry.name!r} ({entry.value}) has no name or "
                             "extensions")
        found.append(serializer)
    return found


_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        from conflux.formats.builtin import BUILTIN

        _REGISTRY = Registry(list(BUILTIN) + _plugins())
    return _REGISTRY


def for_name(name: str, **kind) -> Serializer:
    return registry().get(name, **kind)


def for_path(path: str) -> Serializer | None:
    return registry().for_path(path)
