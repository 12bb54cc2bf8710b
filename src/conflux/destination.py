"""Where a command writes what it produces: a path the user named, or standard output.

``open_destination(path)`` is a context manager yielding a binary file object:

- ``-``: standard output.
- ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``: that descriptor,
  written in place (its open file, with its offset and append mode: a shell's ``>>`` stays an
  append).
- a path where nothing is, or a regular file (a symbolic link is followed to its target): a
  temporary file beside it (``.NAME.partial-XXXXXXXX``, the mode of the file it replaces),
  synced and renamed over it once everything is written, so a reader sees the old file or the
  new one, never half of one.
- anything else (a FIFO, a character device, a socket): opened and written to directly, never
  replaced. A directory is refused.

A failed write (a full disk, ``/dev/full``, an I/O error, a file size limit) raises
``OutputError`` (exit status 1) with one line naming the path and the reason; the temporary
file is removed, and what was at the path is left as it was. A path that cannot be opened
(missing directory, no permission, a directory) is bad input: ``InputError``, exit status 2.
A closed pipe (``BrokenPipeError``) is passed on: the CLI treats it as the reader's choice.

``replace_file(path, data)`` writes one file of an export tree the same way, but only over a
regular file (or nothing): a link at ``path`` is not followed (nor replaced), and a FIFO, device
or directory there is refused, since the names in a tree are Conflux's, not the user's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import sys

from conflux.errors import ConfluxError, InputError, OutputError

__all__ = ["open_destination", "replace_file"]

_FD_ALIAS = re.compile(r"/dev/(?:stdout|stderr|fd/(\d+))|/proc/self/fd/(\d+)")


@contextlib.contextmanager
def open_destination(path: str):
    if path == "-":
        with _failing_as_output("standard output", stdout=True):
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        return
    alias = _FD_ALIAS.fullmatch(path)
    if alias:
        fd = int(alias[1] or alias[2] or (1 if path.endswith("stdout") else 2))
        if fd == 1:
            sys.stdout.flush()
        try:
            handle = os.fdopen(os.dup(fd), "wb")
        except OSError as exc:
            raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
        with _failing_as_output(path, stdout=fd == 1), handle:
            yield handle
            handle.flush()
        return
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a directory: name a file to write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        # a FIFO, a device: written in place; O_TRUNC means nothing to them, O_CREAT not wanted
        try:
            handle = open(os.open(target, os.O_WRONLY | os.O_NOCTTY), "wb")
        except OSError as exc:
            raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
        with _failing_as_output(path), handle:
            yield handle
            handle.flush()
        return
    handle, tmp = _temporary(path, target, st)
    try:
        with _failing_as_output(path, kept=st is not None):
            with handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            _refuse_if_not_regular(path, target)
            os.replace(tmp, target)
            tmp = None
    finally:
        if tmp is not None:
            _unlink(tmp)


def replace_file(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file renamed over it. Only a regular file
    is replaced; a link, a FIFO, a device or a directory at ``path`` is refused."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot make its directory: {exc.strerror or exc}",
                         path=path) from None
    _refuse_if_not_regular(path, path, follow=False)
    handle, tmp = _temporary(path, path, None)
    try:
        with _failing_as_output(path, kept=os.path.lexists(path)):
            with handle:
                handle.write(data)
            _refuse_if_not_regular(path, path, follow=False)
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            _unlink(tmp)


def _temporary(path: str, target: str, st):
    directory, name = os.path.split(target)
    tmp = os.path.join(directory, f".{name}.partial-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}", path=path) from None
    if st is not None:
        with contextlib.suppress(OSError):
            os.fchmod(fd, stat.S_IMODE(st.st_mode))  # the new file keeps the old one's mode
    return open(fd, "wb"), tmp


def _refuse_if_not_regular(path: str, target: str, *, follow: bool = True) -> None:
    try:
        st = os.stat(target) if follow else os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}", path=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file ({_kind(st.st_mode)}): it is not "
                         "replaced", path=path)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


@contextlib.contextmanager
def _failing_as_output(path: str, *, stdout: bool = False, kept: bool | None = None):
    """OSErrors raised while writing become one ``OutputError`` line; ``kept``: a temporary
    file was being written (and is removed), the path kept its file (True) or none (False)."""
    try:
        yield
    except (ConfluxError, BrokenPipeError):
        raise  # the store's own errors are OSErrors too; a closed pipe is the CLI's to handle
    except OSError as exc:
        if stdout:
            # what is left in the buffer would fail again when Python flushes it at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        after = "" if kept is None else "; the file there was left as it was" if kept else \
            "; nothing was written there"
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}{after}") from None


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
