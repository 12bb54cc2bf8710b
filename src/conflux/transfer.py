"""Import and export: config files in, resolved state out.

``import_tree`` reads a file or a directory tree (each document an entity of one type),
compares every field with the environment's resolved value and applies what differs as one
batch of operations: one actor, one intent, one HLC range, one synced commit, all or nothing.
A tree with one bad file imports nothing; the error names the file, the line where the
parser knows it, the entity and the field. Re-importing the same tree writes nothing.

``export_state`` writes the resolved state, one file per entity
(``<env>/<type>/<name>.<ext>``) or one stream, in any writable format
(``conflux.formats``). Such a directory imports back whole: ``import_tree`` recognises the
layout and writes each environment's files into that environment, an overlay getting only
the values it does not inherit (``plan_export_import``).
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field

from conflux import formats
from conflux._gcpause import without_gc
from conflux.codec import packb
from conflux.errors import InputError, ValidationError
from conflux.limits import MAX_EXPANSION, check_parsed, value_problem
from conflux.schema import format_duration

__all__ = ["import_tree", "export_state", "ImportResult", "ExportResult", "documents_of",
           "document", "is_export_tree"]

_OP_INDEX = re.compile(r"^op (\d+): ")


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


@dataclass
class ImportResult:
    files: int = 0
    skipped: int = 0
    entities: int = 0
    fields: int = 0
    unchanged: int = 0
    ops: list = field(default_factory=list)
    changes: list = field(default_factory=list)  # (env, entity, field, old, op) for display
    acks: list = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    where: list = field(default_factory=list)  # (env, entity, field) of each op
    sources: dict = field(default_factory=dict)  # (env, entity) -> (Source, document index)
    envs: list = field(default_factory=list)  # the environments written into

    def summary(self) -> dict:
        return {"files": self.files, "skipped_files": self.skipped, "entities": self.entities,
                "fields": self.fields, "unchanged_fields": self.unchanged,
                "operations": len(self.ops), "environments": self.envs,
                "seconds": round(self.seconds, 3), "dry_run": self.dry_run}


# ---------------------------------------------------------------------------------------------
# reading


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


# ---------------------------------------------------------------------------------------------
# planning


def _pop_path(doc: dict, dotted: str):
    """Remove and return ``doc[a][b]...`` for ``a.b...`` (dropping a parent left empty), or
    raise KeyError."""
    keys = dotted.split(".")
    parents, node = [], doc
    for key in keys[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            raise KeyError(dotted)
        parents.append((node, key))
        node = child
    if not isinstance(node, dict) or keys[-1] not in node:
        raise KeyError(dotted)
    value = node.pop(keys[-1])
    for parent, key in reversed(parents):
        if parent[key]:
            break
        del parent[key]
    return value


def _packed(value) -> bytes:
    return packb(value, use_bin_type=True)


def plan_import(engine, sources: list[Source], *, entity_type: str, env: str,
                name_from: str | None, intent: str) -> ImportResult:
    """The operations that bring ``env`` to what the documents say (nothing for fields that
    already hold it)."""
    schema = engine.schema
    etype = schema.entity_type(entity_type)
    result = ImportResult(files=len(sources))
    wanted: dict[str, tuple] = {}  # entity id -> (source, index, fields)
    for entity_id, source, index, doc in _entity_docs(schema, sources, name_from,
                                                      lambda source: entity_type):
        for key in doc:
            if not isinstance(key, str) or key not in etype.fields:
                _unknown_field(source, index, entity_id, etype, key)
        wanted[entity_id] = (source, index, doc)
    current = engine.resolved(list(wanted), env)
    # In an overlay a set field's value is its own record's elements, or else the whole
    # inherited set: a field it does not hold itself gets every listed element, not the
    # difference from what it inherits.
    own = {} if env == schema.base_env else engine.own_values(list(current), [env])[env]
    ops, result.entities = result.ops, len(wanted)
    where = result.where
    for entity_id, (source, index, values) in wanted.items():
        now = current.get(entity_id)
        if now is None:
            # PERF: a new entity: every value goes as it is, and the engine's own validation
            # of the batch checks it (an error is traced back to its file and line below)
            for fname, value in values.items():
                result.fields += 1
                if value is None:
                    result.unchanged += 1
                    continue
                op = {"type": "add_elements" if etype.fields[fname].is_set else "set_field",
                      "env": env, "entity_id": entity_id, "field": fname, "intent": intent}
                if etype.fields[fname].is_set:
                    if isinstance(value, list) and not value:
                        result.unchanged += 1
                        continue
                    op["elements"] = value
                else:
                    op["value"] = value
                ops.append(op)
                where.append((env, entity_id, fname))
                result.changes.append((env, entity_id, fname, None, op))
            continue
        for fname, value in values.items():
            result.fields += 1
            spec = etype.fields[fname]
            if value is not None:
                try:
                    value = spec.coerce(value)
                except InputError as exc:
                    label, line = source.where(index, fname)
                    raise ImportFailed(f"{label}: {_about(entity_id, fname, exc.message)}",
                                       path=source.path, line=line, entity=entity_id,
                                       field=fname) from None
            old = now.get(fname)
            base = {"env": env, "entity_id": entity_id, "field": fname, "intent": intent}
            before = len(ops)
            if value is None:
                if old is not None:
                    if spec.merge == "grow":
                        label, line = source.where(index, fname)
                        raise ImportFailed(f"{label}: {entity_id}.{fname} is grow-only: it "
                                           "cannot be emptied", path=source.path, line=line,
                                           entity=entity_id, field=fname)
                    ops.append({**base, "type": "unset_field"})
            elif spec.is_set:
                have = {_packed(v): v for v in (old or [])}
                want = {_packed(v): v for v in value}
                if fname not in own.get(entity_id, (False, {}))[1] and \
                        env != schema.base_env and want.keys() != have.keys():
                    have = {}
                added = [want[k] for k in sorted(want.keys() - have.keys())]
                removed = [have[k] for k in sorted(have.keys() - want.keys())]
                if added:
                    ops.append({**base, "type": "add_elements", "elements": added})
                if removed and spec.merge == "set":
                    ops.append({**base, "type": "remove_elements", "elements": removed})
            elif old is None or _packed(old) != _packed(value):
                ops.append({**base, "type": "set_field", "value": value})
            if len(ops) == before:
                result.unchanged += 1
            for op in ops[before:]:
                where.append((env, entity_id, fname))
                result.changes.append((env, entity_id, fname, old, op))
    result.sources = {(env, entity_id): (source, index) for entity_id, (source, index, _) in
                      wanted.items()}
    result.envs = [env]
    return result


def _same(spec, a, b) -> bool:
    """Whether two values of a field are the same value (a set's elements in any order)."""
    if a is None or b is None:
        return a is b
    if spec.is_set:
        return {_packed(v) for v in a} == {_packed(v) for v in b}
    return _packed(a) == _packed(b)


class _Layers:
    """What each environment holds itself (``Engine.own_values``), with the import's plan laid
    over it environment by environment, so an overlay is planned against what its parent will
    hold once the batch is applied, not what it holds now."""

    def __init__(self, schema, stored: dict):
        self.schema, self.stored, self.planned = schema, stored, {}

    def own(self, env: str, entity_id: str, *, planned: bool = True) -> tuple[bool, dict]:
        if planned and (env, entity_id) in self.planned:
            return self.planned[(env, entity_id)]
        return self.stored[env].get(entity_id, (False, {}))

    def view(self, env: str, entity_id: str, *, planned: bool = True) -> dict:
        """The fields ``env`` resolves for the entity (no defaults), as ``Engine._view``."""
        fields = {}
        for level in self.schema.env_chain(env):
            cut, own = self.own(level, entity_id, planned=planned)
            for fname, value in own.items():
                fields.setdefault(fname, value)
            if cut:
                break
        return fields


def plan_export_import(engine, sources: list[Source], *, name_from: str | None,
                       intent: str) -> ImportResult:
    """The operations that make every environment of an export tree resolve to what its files
    say, environments in inheritance order (the base first).

    A file holds the entity's resolved fields, inherited values and defaults included; an
    environment is given only what differs from what it inherits once its ancestors are
    planned (the default, at the base), so an inherited value is not pinned as the overlay's
    own. A value the environment already holds itself is kept (and changed if the file says
    otherwise). A field the file leaves out is unset; if the overlay would inherit it, or an
    entity that an ancestor imported here has but the overlay's directory lacks, the overlay
    deletes the entity (it hides what it inherits) and holds its own values from then on. An
    entity whose values are all defaults at the base still gets them written, or it would
    not exist."""
    schema = engine.schema
    result = ImportResult(files=len(sources))
    wanted: dict[tuple, tuple] = {}  # (env, entity id) -> (source, index, {field: value})
    for entity_id, source, index, doc in _entity_docs(
            schema, sources, name_from, lambda source: source.entity_type,
            lambda source, entity_id: (source.env, entity_id)):
        env, entity_type = source.env, source.entity_type
        etype = schema.types[entity_type]
        values = {}
        for key, value in doc.items():
            if not isinstance(key, str) or key not in etype.fields:
                _unknown_field(source, index, entity_id, etype, key)
            result.fields += 1
            if value is not None:
                try:
                    value = etype.fields[key].coerce(value)
                except InputError as exc:
                    label, line = source.where(index, key)
                    raise ImportFailed(f"{label}: {_about(entity_id, key, exc.message)}",
                                       path=source.path, line=line, entity=entity_id,
                                       field=key) from None
            # an empty set is no value: a set field left empty resolves as unset
            values[key] = value if value != [] else None
        wanted[(env, entity_id)] = (source, index, values)
    result.entities = len(wanted)
    result.sources = {key: (source, index) for key, (source, index, _) in wanted.items()}
    envs = sorted({env for env, _ in wanted}, key=lambda e: len(schema.env_chain(e)))
    result.envs = envs
    entity_ids = sorted({entity_id for _, entity_id in wanted})
    layers = _Layers(schema, engine.own_values(entity_ids))

    def emit(env, entity_id, fname, op, old):
        result.ops.append({**op, "env": env, "entity_id": entity_id, "intent": intent})
        result.where.append((env, entity_id, fname))
        result.changes.append((env, entity_id, fname, old, result.ops[-1]))

    for env in envs:
        parent = schema.parents[env]
        ancestors = set(schema.env_chain(env)[1:])
        for entity_id in entity_ids:
            etype = schema.types[entity_id.partition(".")[0]]
            before = layers.view(env, entity_id, planned=False)
            if (env, entity_id) not in wanted:
                # an ancestor imported here has it, this environment's directory does not:
                # the environment hid it (a delete), unless it already does
                if any((a, entity_id) in wanted for a in ancestors) and \
                        layers.view(env, entity_id):
                    emit(env, entity_id, None, {"type": "delete_entity"}, None)
                    layers.planned[(env, entity_id)] = (True, {})
                continue
            source, index, values = wanted[(env, entity_id)]
            cut, own = layers.own(env, entity_id)
            inherited = {} if cut or parent is None else layers.view(parent, entity_id)
            if any(values.get(fname) is None for fname in inherited):
                emit(env, entity_id, None, {"type": "delete_entity"}, None)
                cut, own, inherited = True, {}, {}
            mine = dict(own)
            for fname, spec in etype.fields.items():
                want, have = values.get(fname), own.get(fname)
                old = before.get(fname, spec.default)
                if want is None:
                    if have is not None:
                        if spec.merge == "grow":
                            label, line = source.where(index, fname)
                            raise ImportFailed(f"{label}: {entity_id}.{fname} is grow-only: it "
                                               "cannot be emptied", path=source.path,
                                               line=line, entity=entity_id, field=fname)
                        emit(env, entity_id, fname, {"type": "unset_field", "field": fname},
                             old)
                        del mine[fname]
                    continue
                if have is None and _same(spec, want, inherited.get(fname, spec.default)):
                    continue  # inherited, or the default: not the environment's own
                mine[fname] = want
                if have is not None and _same(spec, want, have):
                    continue
                if spec.is_set:
                    held = {_packed(v) for v in have or ()}
                    added = [v for v in want if _packed(v) not in held]
                    kept = {_packed(v) for v in want}
                    removed = [v for v in have or () if _packed(v) not in kept]
                    if added:
                        emit(env, entity_id, fname, {"type": "add_elements", "field": fname,
                                                     "elements": added}, old)
                    if removed and spec.merge == "set":
                        emit(env, entity_id, fname, {"type": "remove_elements",
                                                     "field": fname, "elements": removed}, old)
                else:
                    emit(env, entity_id, fname, {"type": "set_field", "field": fname,
                                                 "value": want}, old)
            if not mine and not inherited:
                # every value is the default: without one of them written, the entity would
                # not exist (it exists once it holds a value)
                for fname, want in values.items():
                    if want is not None:
                        spec = etype.fields[fname]
                        op = {"type": "add_elements", "field": fname, "elements": want} \
                            if spec.is_set else {"type": "set_field", "field": fname,
                                                 "value": want}
                        emit(env, entity_id, fname, op, before.get(fname, spec.default))
                        mine[fname] = want
            layers.planned[(env, entity_id)] = (cut, mine)
    written = {(env, entity_id, fname) for env, entity_id, fname in result.where}
    result.unchanged = result.fields - sum(1 for *_, fname in written if fname is not None)
    return result


def _about(entity_id: str, fname: str, message: str) -> str:
    """A schema message about ``type.field`` (or ``op N: type.field``) told about the entity:
    ``service.cart.replicas: expected int, ...``."""
    own = f"{entity_id.partition('.')[0]}.{fname}"
    if message.startswith(own):
        return f"{entity_id}.{fname}{message[len(own):]}"
    return f"{entity_id}.{fname}: {message}"


def _entity_docs(schema, sources, name_from, type_of,
                 key_of=lambda source, entity_id: entity_id):
    """Each document of ``sources`` as ``(entity id, source, index, document)``: named (by
    ``name_from``) as an entity of ``type_of(source)``, its id checked, and refused when
    another document names the same entity (``key_of`` says what counts as the same: the id,
    or the environment and the id)."""
    seen: dict = {}
    for source in sources:
        if name_from == "file" and len(source.docs) > 1:
            raise ImportFailed(f"{source.path}: {len(source.docs)} documents in one file, but "
                               "--name-from file names one entity per file; name them with "
                               "--name-from KEY", path=source.path)
        entity_type = type_of(source)
        for index, doc in enumerate(source.docs):
            doc = dict(doc)
            entity_id = f"{entity_type}.{_name_of(source, index, doc, name_from)}"
            label, line = source.where(index)
            try:
                schema.split_entity_id(entity_id)
            except InputError as exc:
                raise ImportFailed(f"{label}: {exc}", path=source.path, line=line) from None
            key = key_of(source, entity_id)
            if key in seen:
                other = seen[key][0].where(seen[key][1])[0]
                raise ImportFailed(f"{label}: entity {entity_id} is also defined in {other}",
                                   path=source.path, line=line, entity=entity_id)
            seen[key] = (source, index)
            yield entity_id, source, index, doc


def _unknown_field(source, index, entity_id, etype, key):
    label, line = source.where(index, str(key))
    raise ImportFailed(f"{label}: {entity_id}: unknown field {key!r} (fields of {etype.name}: "
                       f"{', '.join(etype.fields)})", path=source.path, line=line,
                       entity=entity_id, field=str(key))


def _name_of(source: Source, index: int, doc: dict, name_from: str | None) -> str:
    if name_from == "file":
        return os.path.splitext(os.path.basename(source.path))[0]
    keys = [name_from] if name_from else ["name", "metadata.name"]
    for key in keys:
        try:
            name = _pop_path(doc, key)
        except KeyError:
            continue
        if not isinstance(name, str):
            label, line = source.where(index, key.split(".")[0])
            raise ImportFailed(f"{label}: the name ({key}) must be text, got {name!r}",
                               path=source.path, line=line)
        return name
    label, line = source.where(index)
    tried = " or ".join(repr(k) for k in keys)
    raise ImportFailed(f"{label}: no entity name: the document has no {tried} key (choose one "
                       "with --name-from KEY, or --name-from file)", path=source.path, line=line)


@without_gc
def import_tree(engine, path: str, *, actor, entity_type: str | None = None,
                env: str | None = None, fmt: str | None = None, name_from: str | None = None,
                intent: str | None = None, dry_run: bool = False, check=None,
                progress=None) -> ImportResult:
    """Import ``path`` (a file or a tree). ``check(ops)`` may refuse the batch (access rules)
    before anything is written; ``progress`` is a ``Progress`` (or None).

    A directory that ``conflux export`` wrote (``ENV/TYPE/NAME.EXT``, see ``is_export_tree``)
    imports each environment into that environment and each type as that type (see
    ``plan_export_import``); ``env`` and ``entity_type`` then only restrict which of its
    directories are read. Any other file or tree is of one ``entity_type``, imported into
    ``env`` (default: the base)."""
    started = time.perf_counter()
    schema = engine.schema
    if entity_type is not None:
        schema.entity_type(entity_type)
    if env is not None:
        schema.env_chain(env)  # NotFound for an unknown environment
    layout = is_export_tree(schema, path)
    if layout:
        files, skipped = export_files(schema, path, fmt, envs=[env] if env else None,
                                      types=[entity_type] if entity_type else None)
    elif entity_type is None:
        if os.path.isdir(path) and any(name in schema.types and os.path.isdir(
                os.path.join(path, name)) for name in _visible(path)):
            raise InputError(f"{path}: one environment of an export (TYPE/NAME files): import "
                             "the export's directory with --env ENV, or a type directory with "
                             "--entity-type", path=path)
        raise InputError(f"{path}: give --entity-type (the type of every document): only a "
                         "tree written by 'conflux export' (ENV/TYPE/NAME files) needs none",
                         path=path)
    else:
        files, skipped = files_of(path, fmt)
    if not files:
        raise InputError(f"{path}: no files to import (readable formats: "
                         f"{', '.join(formats.registry().names(readable=True))})")
    if progress is not None:
        progress.start("reading", len(files))
    sources = read_sources(files, progress.advance if progress is not None else None,
                           max_value=engine.settings.max_value_bytes)
    intent = intent if intent is not None else f"import {path}"
    if layout:
        result = plan_export_import(engine, sources, name_from=name_from, intent=intent)
    else:
        result = plan_import(engine, sources, entity_type=entity_type,
                             env=env or schema.base_env, name_from=name_from, intent=intent)
    result.skipped, result.dry_run = skipped, dry_run
    if result.ops:
        if check is not None:
            check(result.ops)
        if progress is not None:
            progress.start(f"applying {len(result.ops):,} operations", None, "")
        try:
            result.acks = engine.apply(result.ops, actor, dry_run=dry_run)
        except ValidationError as exc:
            raise _located_error(exc, result) from None
    if progress is not None:
        progress.close()
    result.seconds = time.perf_counter() - started
    return result


def _located_error(exc: InputError, result: ImportResult) -> InputError:
    """An engine refusal of op N, told as the file and line the op came from."""
    found = _OP_INDEX.match(exc.message)
    if found is None and len(result.where) != 1 or found and int(found[1]) >= len(result.where):
        return exc
    env, entity_id, fname = result.where[int(found[1]) if found else 0]
    source, index = result.sources.get((env, entity_id), (None, None))
    if source is None:  # a delete the tree implies: no file of its own to name
        return exc
    label, line = source.where(index, fname)
    rest = exc.message[found.end():] if found else exc.message
    about = _about(entity_id, fname, rest) if fname else f"{entity_id}: {rest}"
    return ImportFailed(f"{label}: {about}", path=source.path, line=line, entity=entity_id,
                        field=fname)


# ---------------------------------------------------------------------------------------------
# export


@dataclass
class ExportResult:
    files: list = field(default_factory=list)
    entities: int = 0
    fields: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"files": len(self.files), "entities": self.entities, "fields": self.fields,
                "seconds": round(self.seconds, 3)}


def documents_of(engine, env: str, types: list[str] | None = None):
    """``(entity id, document)`` for every entity of ``env`` (see ``document``)."""
    for entity_id, fields in engine.state(env, types).items():
        yield entity_id, document(engine.schema, entity_id, fields)


def document(schema, entity_id: str, fields: dict) -> dict:
    """An entity's resolved fields as a file holds them: ``name`` first, then the fields in
    schema order, durations as text (``30s``), refs as full ids."""
    type_name, _, name = entity_id.partition(".")
    doc = {"name": name}
    specs = schema.types[type_name].fields
    for fname, value in fields.items():
        spec = specs[fname]
        if (spec.item_kind or spec.kind) == "duration":
            value = [format_duration(v) for v in value] if isinstance(value, list) \
                else format_duration(value)
        doc[fname] = value
    return doc


@without_gc
def export_state(engine, fmt: str, *, envs: list[str] | None = None,
                 types: list[str] | None = None, output=None, progress=None) -> ExportResult:
    """Write the resolved state of ``envs`` (default: all) as ``fmt``: into the directory
    ``output`` (``<env>/<type>/<name>.<ext>``), or as one stream to the binary file object
    ``output``."""
    started = time.perf_counter()
    serializer = formats.for_name(fmt, writable=True)
    schema = engine.schema
    for env in envs or ():
        schema.env_chain(env)  # NotFound for an unknown environment
    for type_name in types or ():
        schema.entity_type(type_name)
    envs = list(envs) if envs else list(schema.environments)
    result = ExportResult()
    ext = serializer.extensions[0] if serializer.extensions else f".{serializer.name}"
    stream = [] if not isinstance(output, str) else None
    if progress is not None:
        progress.start("exporting", None, "entities")
    for env in envs:
        for entity_id, doc in documents_of(engine, env, types):
            result.entities += 1
            result.fields += len(doc) - 1
            if stream is not None:
                stream.append(doc)
            else:
                type_name, _, name = entity_id.partition(".")
                path = os.path.join(output, env, type_name, name + ext)
                _write_file(path, _dump(serializer, doc, entity_id))
                result.files.append(path)
            if progress is not None:
                progress.advance(1)
    if stream is not None:
        try:
            data = serializer.dump_stream(stream)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"format {fmt!r}: {type(exc).__name__}: {exc}") from None
        output.write(data)
    if progress is not None:
        progress.close()
    result.seconds = time.perf_counter() - started
    return result


def _dump(serializer, doc: dict, entity_id: str) -> bytes:
    try:
        data = serializer.dump(doc)
    except InputError as exc:
        raise InputError(f"{entity_id}: {exc}") from None
    except Exception as exc:
        raise InputError(f"{entity_id}: format {serializer.name!r} cannot write it: "
                         f"{type(exc).__name__}: {exc}") from None
    return data.encode() if isinstance(data, str) else data


def _write_file(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all; only a regular file there is replaced
    (``conflux.destination``)."""
    from conflux.destination import replace_file

    replace_file(path, data)
