"""The parsed documents of a project's TOML files, kept for the next command.

Every command opens the project, which reads ``.conflux/schema.toml`` and
``.conflux/config.toml``. PERF: importing ``tomllib`` (and ``typing``, which it needs) and
parsing the two files took about 7 ms of a 50 ms ``conflux get`` on a laptop-class machine
(``python -X importtime``), more than anything else the command imports; reading the same
document back from JSON takes a few hundredths of that.

An entry, ``.conflux/cache/<file>.json``, holds the file's whole text beside its document and is
used only when the file's text is exactly that: an edit is seen by the next command, with no
clock or modification time involved. Entries are written whole (a temporary file renamed over
the old one) and on a best-effort basis: a project that cannot be written to, or a document
JSON cannot hold (TOML dates and times), is parsed every time, as it would be without the
cache. Removing the ``cache`` directory is always safe.
"""

from __future__ import annotations

import json
import os
import threading

__all__ = ["CACHE_DIR", "toml_document"]

#: The subdirectory of ``.conflux/`` holding the entries.
CACHE_DIR = "cache"
# bumped when an entry's layout changes, so an older Conflux's entries are parsed again
_LAYOUT = 1


def toml_document(text: str, path: str | None = None) -> dict:
    """``tomllib.loads(text)``; ``path`` names the file ``text`` was read from when it is one
    of a project's ``.conflux/`` files whose document may be kept. ``tomllib``'s errors
    (``TOMLDecodeError``, a ``ValueError``) are raised as they are."""
    entry = None if path is None else _entry_path(path)
    if entry is not None:
        try:
            with open(entry, "rb") as handle:
                kept = json.loads(handle.read())
            if kept["layout"] == _LAYOUT and kept["text"] == text:
                return kept["document"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, of another text, or unreadable: parse
    import tomllib

    document = tomllib.loads(text)
    if entry is not None:
        _keep(path, entry, text, document)
    return document


def _entry_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, CACHE_DIR, name + ".json")


def _keep(path: str, entry: str, text: str, document: dict) -> None:
    try:
        data = json.dumps({"layout": _LAYOUT, "text": text, "document": document},
                          ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return  # a date or time value: JSON has none, so this file is parsed every time
    temporary = f"{entry}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        # the entry holds the file's text: no one may read it who may not read the file
        # (a config.toml kept private for the credentials in a remote's URL)
        mode = os.stat(path).st_mode & 0o666
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode),
                       "wb") as handle:
            handle.write(data)
        os.replace(temporary, entry)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
