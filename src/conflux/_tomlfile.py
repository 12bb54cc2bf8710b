"""A settings file in TOML, and where things are written in it.

``tomllib`` keeps no positions, yet a refusal should name the line. ``TomlFile`` keeps the text
beside the parsed document and finds table headers, keys and string literals in it, so the
loaders of ``api-keys.toml`` and ``rbac.toml`` can say ``rbac.toml:12: ...``. Finding is by
pattern, so it is exact for files written in the documented shapes and falls back to the
nearest enclosing table otherwise; a line number is a pointer for a person, never a decision.
"""

from __future__ import annotations

import json
import re

from conflux._tomlcache import toml_document
from conflux.errors import InputError

# PERF: tomllib and typing are imported where they are needed (a project's config.toml and
# schema.toml come from conflux._tomlcache): they took about 7 ms of every command's start
TYPE_CHECKING = False
if TYPE_CHECKING:
    import tomllib
    from typing import Any, NoReturn

# A table header on its own line: [a.b] or [[a.b]], optionally followed by a comment.
_ANY_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*[^\]\n]*\]\]?[ \t]*(?:#.*)?$", re.MULTILINE)

Span = tuple[int, int]

_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)")


def syntax_error(exc: tomllib.TOMLDecodeError) -> tuple[str, int | None]:
    """``tomllib``'s complaint without its position, and the line it names (or None)."""
    message = str(exc)
    found = _POSITION.search(message)
    if found is None:
        return message, None
    return message[: found.start()] + message[found.end():], int(found[1])


class TomlFile:
    """The parsed document (``data``) of one TOML file, with line lookups for messages."""

    def __init__(self, path: str, text: str | None = None, *, keep: bool = False):
        """``keep``: the file is one of a project's own (``.conflux/config.toml``), whose
        parsed document ``conflux._tomlcache`` may keep for the next command."""
        self.path = str(path)
        if text is None:
            try:
                with open(self.path, "rb") as handle:
                    raw = handle.read()
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise InputError(f"{self.path}: cannot read: {exc.strerror or exc}",
                                 path=self.path) from None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.text = raw.decode("utf-8", "replace")
                self.fail(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                          line=self.line_at(len(raw[:exc.start].decode("utf-8", "replace"))))
        self.text = text
        try:
            self.data: dict[str, Any] = toml_document(text, self.path if keep else None)
        except ValueError as exc:  # tomllib.TOMLDecodeError
            message, line = syntax_error(exc)
            if line is None and message.endswith(" (at end of document)"):
                line = self.line_at(len(text.rstrip()))
            self.fail(f"invalid TOML: {message}", line=line)

    # -- refusing ------------------------------------------------------------------------------

    def fail(self, message: str, *, line: int | None = None, field: str | None = None,
             error: type[InputError] = InputError) -> NoReturn:
        where = f"{self.path}:{line}" if line else self.path
        raise error(f"{where}: {message}", path=self.path, line=line, field=field)

    # -- finding -------------------------------------------------------------------------------

    def line_at(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    @staticmethod
    def _key_re(key: str) -> str:
        escaped = re.escape(key)
        return rf"(?:{escaped}|\"{escaped}\"|'{escaped}')"

    def _header_re(self, keys: tuple[str, ...], array: bool | None) -> re.Pattern:
        dotted = r"[ \t]*\.[ \t]*".join(self._key_re(key) for key in keys)
        opening = {True: r"\[\[", False: r"\[(?!\[)", None: r"\[\[?"}[array]
        return re.compile(rf"^[ \t]*{opening}[ \t]*{dotted}[ \t]*(?=[\].])", re.MULTILINE)

    def table(self, *keys: str, occurrence: int = 1, array: bool | None = None) -> Span | None:
        """Where the ``occurrence``-th ``[keys]`` (or ``[[keys]]``) table is written: from its
        header to the next header that is not one of its own sub-tables."""
        own = self._header_re(keys, None)
        for match in self._header_re(keys, array).finditer(self.text):
            occurrence -= 1
            if occurrence:
                continue
            end = len(self.text)
            for header in _ANY_HEADER.finditer(self.text, match.end()):
                sub = own.match(self.text, header.start())
                if sub is None or self.text.startswith("]", sub.end()):
                    end = header.start()
                    break
            return match.start(), end
        return None

    def top_key(self, key: str) -> int | None:
        """Line of a top-level key: its first table header, or ``key =`` before any table."""
        span = self.table(key)
        if span:
            return self.line_at(span[0])
        first = _ANY_HEADER.search(self.text)
        return self.find(rf"^[ \t]*{self._key_re(key)}[ \t]*=", (0, first.start() if first
                                                                 else len(self.text)))

    def find(self, pattern: str, span: Span | None = None, occurrence: int = 1) -> int | None:
        """Line of the ``occurrence``-th match of ``pattern`` within ``span``, or None."""
        start, end = span or (0, len(self.text))
        for match in re.finditer(pattern, self.text[:end], re.MULTILINE):
            if match.start() < start:
                continue
            occurrence -= 1
            if occurrence == 0:
                return self.line_at(match.start())
        return None

    def key(self, key: str, span: Span | None = None, occurrence: int = 1) -> int | None:
        """Line of ``key =`` (bare or quoted, also inside an inline table) within ``span``."""
        return self.find(rf"(?<![A-Za-z0-9_\"'-]){self._key_re(key)}[ \t]*=", span, occurrence)

    def literal(self, value: Any, span: Span | None = None, occurrence: int = 1) -> int | None:
        """Line of a string value written as ``"value"`` or ``'value'`` within ``span``."""
        if not isinstance(value, str):
            return None
        quoted = re.escape(json.dumps(value, ensure_ascii=False)) + "|" + re.escape(f"'{value}'")
        return self.find(quoted, span, occurrence)

    def first_line(self, *candidates: int | None) -> int | None:
        """The first candidate line that was found."""
        return next((line for line in candidates if line), None)


def file_stamp(path: str):
    """What tells that a settings file changed (or appeared, or went: None when missing),
    for the daemon's workers, which look at ``api-keys.toml`` and ``rbac.toml`` every second:
    modification and change times, size and inode (an editor that writes a new file and
    renames it over the old one changes the inode)."""
    import os

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns
