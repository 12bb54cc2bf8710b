"""What an import reads: the files under a path (or an export tree's, which must keep to its
layout), held to the tree they are in, read and parsed, their documents held to the limits
(``conflux.limits``). A file that cannot be read or parsed is refused, naming it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from conflux import formats
from conflux.errors import InputError
from conflux.limits import MAX_EXPANSION, check_parsed, value_problem

__all__ = ["ImportFailed", "Source", "files_of", "is_export_tree", "export_files",
           "read_sources", "bounded"]


class ImportFailed(InputError):
    """A document that cannot be imported: names file, line, entity and field."""


@dataclass
class Source:
    """One parsed file (its bytes are read again only to locate an error)."""

    path: str
    serializer: object
    data: bytes | None = None
    docs: list = field(default_factory=list)
    env: str | None = None  # in an export tree: the environment and type its place names
    entity_type: str | None = None

    def where(self, index: int, key: str | None = None) -> tuple[str, int | None]:
        """``path[:line]`` of a document (and a key of it), and the line."""
        line = None
        if key is not None:
            try:
                if self.data is None:
                    with open(self.path, "rb") as handle:
                        self.data = handle.read()
                line = self.serializer.locate(self.data, index, key)
            except Exception:  # a plugin's locate is a nicety, never a failure
                line = None
        label = self.path if line is None else f"{self.path}:{line}"
        if len(self.docs) > 1:
            label += f" (document {index + 1})"
        return label, line


def _top(path: str) -> str:
    """The real place of PATH itself: a link given as PATH is followed (the user named it),
    and the tree under it is then held to that place (see ``_admit``)."""
    try:
        return os.path.realpath(path, strict=True)
    except OSError as exc:
        if os.path.islink(path):
            raise InputError(f"{path}: a symbolic link that leads nowhere (a loop, or a "
                             "missing target)", path=path) from None
        raise InputError(f"{path}: no such file or directory", path=path) from None


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _admit(full: str, top: str) -> str:
    """``"file"`` or ``"dir"`` for an entry of the imported tree (``top``: its real place), or
    ``"link-dir"`` for a link to a directory inside it, which is not followed (its files are
    read where they are, once). Refused, naming the entry and never reading it: a link whose
    target is outside the tree (an import must not read, and then quote in an error, a file
    such as /etc/passwd that someone linked into a tree), a link that leads nowhere, and
    anything but regular files and directories (a FIFO or a device would block the read)."""
    try:
        st = os.lstat(full)
        linked = stat.S_ISLNK(st.st_mode)
        if linked:
            real = os.path.realpath(full, strict=True)
            if os.path.commonpath([real, top]) != top:
                raise InputError(f"{full}: a symbolic link to a place outside the imported "
                                 "tree; import reads only files inside PATH (link the tree "
                                 "itself, or copy the file in)", path=full)
            st = os.stat(real)
    except OSError:
        raise InputError(f"{full}: a symbolic link that leads nowhere (a loop, or a missing "
                         "target)", path=full) from None
    if stat.S_ISDIR(st.st_mode):
        return "link-dir" if linked else "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    what = next((name for test, name in _SPECIAL if test(st.st_mode)), "not a regular file")
    raise InputError(f"{full}: {what}, not a regular file: import reads only regular files",
                     path=full)


def files_of(path: str, fmt: str | None) -> tuple[list[tuple[str, object]], int]:
    """The files to import under ``path`` with their serializers, in path order, and how many
    were skipped (no known extension). Hidden files and directories are skipped; links are
    held to the tree (``_admit``)."""
    registry = formats.registry()
    forced = registry.get(fmt, readable=True) if fmt else None
    top = _top(path)
    if not os.path.isdir(top):
        _admit(top, top)  # a FIFO or device given as PATH is refused as in a tree
        serializer = forced or registry.for_path(path)
        if serializer is None:
            raise InputError(f"{path}: cannot tell the format from the extension (readable: "
                             f"{', '.join(registry.names(readable=True))}); give --format")
        return [(path, serializer)], 0
    found, skipped = [], 0
    for root, dirs, names in os.walk(path):  # links to directories are not descended
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and
                         _admit(os.path.join(root, d), top) == "dir")
        for name in sorted(names):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            _admit(full, top)
            if forced is None:
                serializer = registry.for_path(full)
            else:  # a directory read as F: only the files with F's extensions
                serializer = forced if os.path.splitext(name)[1].lower() in forced.extensions \
                    else None
            if serializer is None:
                skipped += 1
            else:
                found.append((full, serializer))
    return found, skipped


def _visible(directory: str) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def is_export_tree(schema, path: str) -> bool:
    """Whether ``path`` is laid out as ``conflux export`` writes a directory: an environment
    of the schema at the top that holds a directory named for an entity type. One such pair
    is enough to tell; ``export_files`` then holds the rest of the tree to the layout."""
    if not os.path.isdir(path):
        return False
    for env in _visible(path):
        env_dir = os.path.join(path, env)
        if env in schema.parents and os.path.isdir(env_dir) and any(
                name in schema.types and os.path.isdir(os.path.join(env_dir, name))
                for name in _visible(env_dir)):
            return True
    return False


def export_files(schema, path: str, fmt: str | None, *, envs=None, types=None
                 ) -> tuple[list[Source], int]:
    """The files of an export tree (``ENV/TYPE/NAME.EXT``) as sources that know their
    environment and type, in environment, type and path order, and how many files were
    skipped (another readable format than ``fmt``). The whole tree must fit the layout: a
    stray file, a directory that is not an environment or entity type of the schema, or a file
    no format reads is refused, naming it. ``envs`` and ``types`` restrict what is returned."""
    registry = formats.registry()
    forced = registry.get(fmt, readable=True) if fmt else None
    layout = (f"an export tree holds only ENV/TYPE/NAME files, ENV one of "
              f"{', '.join(schema.environments)} and TYPE one of {', '.join(schema.types)}")
    found, skipped, seen_envs, seen_types = [], 0, set(), set()
    top = _top(path)

    def isdir(entry):
        return _admit(entry, top) != "file"

    def level(parent, name, known, what):
        """The directory ``parent/name``, which must be one of ``known`` (the schema's)."""
        full = os.path.join(parent, name)
        if not isdir(full):
            raise InputError(f"{full}: a stray file: {layout}", path=full)
        if name not in known:
            raise InputError(f"{full}: {name!r} is not {what} of the schema: {layout}",
                             path=full)
        return full

    for env in _visible(path):
        env_dir = level(path, env, schema.parents, "an environment")
        for type_name in _visible(env_dir):
            type_dir = level(env_dir, type_name, schema.types, "an entity type")
            for name in _visible(type_dir):
                full = os.path.join(type_dir, name)
                if isdir(full):
                    raise InputError(f"{full}: a directory inside an entity type directory: "
                                     f"{layout}", path=full)
                serializer = registry.for_path(full)
                if forced is not None and os.path.splitext(name)[1].lower() in \
                        forced.extensions:
                    serializer = forced
                elif serializer is None:
                    raise InputError(f"{full}: a stray file (no readable format has its "
                                     f"extension: {', '.join(registry.names(readable=True))})"
                                     f": {layout}", path=full)
                elif forced is not None:
                    skipped += 1
                    continue
                seen_envs.add(env)
                seen_types.add(type_name)
                if (envs and env not in envs) or (types and type_name not in types):
                    continue
                found.append(Source(full, serializer, env=env, entity_type=type_name))
    for wanted, seen, what in ((envs, seen_envs, "environment"), (types, seen_types, "type")):
        for name in wanted or ():
            if name not in seen:
                raise InputError(f"{path}: this export tree has no files for {what} {name!r} "
                                 f"(it has {', '.join(sorted(seen)) or 'none'})", path=path)
    return found, skipped


#: Parsing moves to a pool of processes (one per core) from this many files on...
_POOL_MIN_FILES = 200
#: ...unless every file is in a format whose parser is faster than shipping its documents back.
_FAST_FORMATS = frozenset({"json"})
_POOL_CHUNK = 64


def read_sources(files, progress=None, *, max_value: int | None = None) -> list[Source]:
    """Read and parse every file (``(path, serializer)`` or a ``Source``), in order. A big
    tree of a slow format (YAML, TOML, KDL, Jsonnet) is parsed on every core; a format with
    ``load_many`` gets its files at once. Every file's documents are held to the limits
    (``bounded``; field values to ``max_value`` bytes) before anything else reads them."""
    from conflux.limits import DEFAULT_MAX_VALUE_BYTES

    max_value = max_value or DEFAULT_MAX_VALUE_BYTES
    sources = [item if isinstance(item, Source) else Source(*item) for item in files]
    batched, single = {}, []
    for i, source in enumerate(sources):
        if hasattr(source.serializer, "load_many"):
            batched.setdefault(id(source.serializer), (source.serializer, []))[1].append(i)
        else:
            single.append(i)
    workers = min(os.cpu_count() or 1, 8)
    if workers > 1 and len(single) >= _POOL_MIN_FILES and any(
            sources[i].serializer.name not in _FAST_FORMATS for i in single):
        _parse_in_pool(sources, single, workers, progress, max_value)
    else:
        for i in single:
            source = sources[i]
            source.data = _read(source.path)
            source.docs = _load(source.serializer, source.data, source.path, max_value)
            if progress is not None:
                progress(1)
    for serializer, indexes in batched.values():
        for i in indexes:
            sources[i].data = _read(sources[i].path)
        try:
            loaded = serializer.load_many([(sources[i].data, sources[i].path)
                                           for i in indexes])
        except RecursionError:
            raise ImportFailed(f"{serializer.name}: a file is nested too deeply to read "
                               f"(one of {sources[indexes[0]].path}, ...)") from None
        for i, docs in zip(indexes, loaded):
            sources[i].docs = bounded(serializer, sources[i].data, sources[i].path,
                                      _checked(serializer, docs, sources[i].path), max_value)
        if progress is not None:
            progress(len(indexes))
    return sources


def _parse_in_pool(sources, indexes, workers, progress, max_value) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [indexes[i:i + _POOL_CHUNK] for i in range(0, len(indexes), _POOL_CHUNK)]
    work = [[(sources[i].path, sources[i].serializer.name, max_value) for i in chunk]
            for chunk in chunks]
    # fork: the workers inherit the format registry, plugins included
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for chunk, parsed in zip(chunks, pool.map(_parse_chunk, work)):
            for i, (docs, error) in zip(chunk, parsed):
                if error is not None:
                    message, line = error
                    raise ImportFailed(message, path=sources[i].path, line=line)
                sources[i].docs = docs
            if progress is not None:
                progress(len(chunk))


def _parse_chunk(items) -> list:
    """In a pool worker: ``(documents, None)`` or ``(None, (message, line))`` per file."""
    out = []
    for path, name, max_value in items:
        try:
            out.append((_load(formats.for_name(name), _read(path), path, max_value), None))
        except InputError as exc:
            out.append((None, (str(exc), exc.line)))
    return out


def _read(path: str) -> bytes:
    # O_NONBLOCK: a file swapped for a FIFO since the walk is refused, not waited on
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read: {exc.strerror or exc}", path=path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImportFailed(f"{path}: not a regular file: import reads only regular files",
                               path=path)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read: {exc.strerror or exc}", path=path) from None
    finally:
        os.close(fd)


def _load(serializer, data: bytes, path: str, max_value: int) -> list:
    try:
        docs = serializer.load(data, path)
    except InputError:
        raise
    except RecursionError:
        raise ImportFailed(f"{path}: {serializer.name}: nested too deeply to read",
                           path=path) from None
    except Exception as exc:  # a plugin's parser: still one clear line, naming the file
        raise ImportFailed(f"{path}: {serializer.name}: {type(exc).__name__}: {exc}",
                           path=path) from None
    return bounded(serializer, data, path, _checked(serializer, docs, path), max_value)


def _checked(serializer, docs, path: str) -> list:
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        raise ImportFailed(f"{path}: format {serializer.name!r} did not give a list of "
                           "mappings", path=path)
    return docs


def bounded(serializer, data: bytes, path: str, docs: list, max_value: int) -> list:
    """``docs`` if they keep to the limits, else ``ImportFailed`` naming the file (and the
    line of the field, where the format can tell it): a file's documents, YAML aliases
    expanded, hold at most its own size or ``MAX_EXPANSION`` bytes, nest at most
    ``MAX_NESTING`` levels, and each field value is at most ``max_value`` bytes. The checks
    walk no further than their bounds, so a few hundred bytes of nested aliases that would
    expand to gigabytes are refused at once, before any copy or encoding of them."""
    check_parsed(docs, path, budget=max(len(data), MAX_EXPANSION), error=ImportFailed)
    for index, doc in enumerate(docs):
        for key, value in doc.items():
            problem = value_problem(value, max_value)
            if problem is not None:
                line = None
                try:
                    line = serializer.locate(data, index, str(key))
                except Exception:  # a plugin's locate is a nicety, never a failure
                    pass
                label = path if line is None else f"{path}:{line}"
                if len(docs) > 1:
                    label += f" (document {index + 1})"
                raise ImportFailed(f"{label}: field {str(key)[:64]!r}: {problem}", path=path,
                                   line=line, field=str(key)[:64])
    return docs
