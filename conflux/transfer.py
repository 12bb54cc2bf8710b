"""Import and export: config files in, resolved state out.

``import_tree`` reads a file or a directory tree (each document an entity of one type),
compares every field with the environment's resolved value and applies what differs as one
batch of operations: one actor, one intent, one HLC range, one synced commit, all or nothing.
A tree with one bad file imports nothing; the error names the file, the line where the
parser knows it, the entity and the field. Re-importing the same tree writes nothing.

``export_state`` writes the resolved state, one file per entity
(``<env>/<type>/<name>.<ext>``) or one stream, in any writable format
(``conflux.formats``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import msgpack

from conflux import formats
from conflux.errors import InputError, ValidationError
from conflux.schema import format_duration

__all__ = ["import_tree", "export_state", "ImportResult", "ExportResult", "documents_of"]

_OP_INDEX = re.compile(r"^op (\d+): ")


class ImportFailed(InputError):
    """A document that cannot be imported: names file, line, entity and field."""


@dataclass
class Source:
    """One parsed file."""

    path: str
    serializer: object
    data: bytes
    docs: list

    def where(self, index: int, key: str | None = None) -> tuple[str, int | None]:
        """``path[:line]`` of a document (and a key of it), and the line."""
        line = None
        if key is not None:
            try:
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
    changes: list = field(default_factory=list)  # (entity, field, old, new) for display
    acks: list = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    where: list = field(default_factory=list)  # (entity, field) of each op
    sources: dict = field(default_factory=dict)  # entity -> (Source, document index)

    def summary(self) -> dict:
        return {"files": self.files, "skipped_files": self.skipped, "entities": self.entities,
                "fields": self.fields, "unchanged_fields": self.unchanged,
                "operations": len(self.ops), "seconds": round(self.seconds, 3),
                "dry_run": self.dry_run}


# ---------------------------------------------------------------------------------------------
# reading


def files_of(path: str, fmt: str | None) -> tuple[list[tuple[str, object]], int]:
    """The files to import under ``path`` with their serializers, in path order, and how many
    were skipped (no known extension). Hidden files and directories are skipped."""
    registry = formats.registry()
    forced = registry.get(fmt, readable=True) if fmt else None
    if os.path.isfile(path):
        serializer = forced or registry.for_path(path)
        if serializer is None:
            raise InputError(f"{path}: cannot tell the format from the extension (readable: "
                             f"{', '.join(registry.names(readable=True))}); give --format")
        return [(path, serializer)], 0
    if not os.path.isdir(path):
        raise InputError(f"{path}: no such file or directory")
    found, skipped = [], 0
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            serializer = forced if forced is not None and os.path.splitext(name)[1].lower() in \
                forced.extensions else (None if forced else registry.for_path(full))
            if serializer is None:
                skipped += 1
            else:
                found.append((full, serializer))
    return found, skipped


def read_sources(files, progress=None) -> list[Source]:
    """Read and parse every file (a format with ``load_many`` gets its files at once)."""
    sources, batched = [], {}
    for path, serializer in files:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ImportFailed(f"{path}: cannot read: {exc.strerror or exc}", path=path) from None
        if hasattr(serializer, "load_many"):
            batched.setdefault(id(serializer), (serializer, []))[1].append(len(sources))
            sources.append(Source(path, serializer, data, []))
            continue
        sources.append(Source(path, serializer, data, _load(serializer, data, path)))
        if progress is not None:
            progress(1)
    for serializer, indexes in batched.values():
        loaded = serializer.load_many([(sources[i].data, sources[i].path) for i in indexes])
        for i, docs in zip(indexes, loaded):
            sources[i].docs = docs
        if progress is not None:
            progress(len(indexes))
    return sources


def _load(serializer, data: bytes, path: str) -> list:
    try:
        docs = serializer.load(data, path)
    except InputError:
        raise
    except Exception as exc:  # a plugin's parser: still one clear line, naming the file
        raise ImportFailed(f"{path}: {serializer.name}: {type(exc).__name__}: {exc}",
                           path=path) from None
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        raise ImportFailed(f"{path}: format {serializer.name!r} did not give a list of "
                           "mappings", path=path)
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
    return msgpack.packb(value, use_bin_type=True)


def plan_import(engine, sources: list[Source], *, entity_type: str, env: str,
                name_from: str | None, intent: str) -> ImportResult:
    """The operations that bring ``env`` to what the documents say (nothing for fields that
    already hold it)."""
    schema = engine.schema
    etype = schema.entity_type(entity_type)
    result = ImportResult(files=len(sources))
    wanted: dict[str, tuple] = {}  # entity id -> (source, index, fields)
    for source in sources:
        if name_from == "file" and len(source.docs) > 1:
            raise ImportFailed(f"{source.path}: {len(source.docs)} documents in one file, but "
                               "--name-from file names one entity per file; name them with "
                               "--name-from KEY", path=source.path)
        for index, doc in enumerate(source.docs):
            doc = dict(doc)
            name = _name_of(source, index, doc, name_from)
            entity_id = f"{entity_type}.{name}"
            label, line = source.where(index)
            try:
                schema.split_entity_id(entity_id)
            except InputError as exc:
                raise ImportFailed(f"{label}: {exc}", path=source.path, line=line) from None
            if entity_id in wanted:
                other = wanted[entity_id][0].where(wanted[entity_id][1])[0]
                raise ImportFailed(f"{label}: entity {entity_id} is also defined in {other}",
                                   path=source.path, line=line, entity=entity_id)
            values = {}
            for key, value in doc.items():
                spec = etype.fields.get(key) if isinstance(key, str) else None
                if spec is None:
                    label, line = source.where(index, str(key))
                    raise ImportFailed(
                        f"{label}: {entity_id}: unknown field {key!r} (fields of {entity_type}: "
                        f"{', '.join(etype.fields)})", path=source.path, line=line,
                        entity=entity_id, field=str(key))
                try:
                    values[key] = None if value is None else spec.coerce(value)
                except InputError as exc:
                    label, line = source.where(index, key)
                    message = exc.message
                    own = f"{entity_type}.{key}"  # the schema's label: name the entity instead
                    message = (f"{entity_id}.{key}{message[len(own):]}"
                               if message.startswith(own) else f"{entity_id}.{key}: {message}")
                    raise ImportFailed(f"{label}: {message}", path=source.path,
                                       line=line, entity=entity_id, field=key) from None
            wanted[entity_id] = (source, index, values)
    current = engine.resolved(list(wanted), env)
    ops, result.entities = result.ops, len(wanted)
    for entity_id, (source, index, values) in wanted.items():
        now = current.get(entity_id, {})
        for fname, value in values.items():
            result.fields += 1
            spec = etype.fields[fname]
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
                result.changes.append((entity_id, fname, old, op))
    result.where = [(entity_id, fname) for entity_id, fname, _, _ in result.changes]
    result.sources = {entity_id: (source, index) for entity_id, (source, index, _) in
                      wanted.items()}
    return result


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


def import_tree(engine, path: str, *, entity_type: str, actor, env: str | None = None,
                fmt: str | None = None, name_from: str | None = None, intent: str | None = None,
                dry_run: bool = False, check=None, progress=None) -> ImportResult:
    """Import ``path`` (a file or a tree). ``check(ops)`` may refuse the batch (access rules)
    before anything is written; ``progress`` is a ``Progress`` (or None)."""
    started = time.perf_counter()
    env = env or engine.schema.base_env
    engine.schema.entity_type(entity_type)
    if env not in engine.schema.parents:
        raise InputError(f"unknown environment {env!r} (declared: "
                         f"{', '.join(engine.schema.environments)})")
    files, skipped = files_of(path, fmt)
    if not files:
        raise InputError(f"{path}: no files to import (readable formats: "
                         f"{', '.join(formats.registry().names(readable=True))})")
    if progress is not None:
        progress.start("reading", len(files))
    sources = read_sources(files, progress.advance if progress is not None else None)
    result = plan_import(engine, sources, entity_type=entity_type, env=env,
                         name_from=name_from, intent=intent if intent is not None
                         else f"import {path}")
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
    if not found or int(found[1]) >= len(result.where):
        return exc
    entity_id, fname = result.where[int(found[1])]
    source, index = result.sources[entity_id]
    label, line = source.where(index, fname)
    return ImportFailed(f"{label}: {entity_id}.{fname}: {exc.message[found.end():]}",
                        path=source.path, line=line, entity=entity_id, field=fname)


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
    """``(entity id, document)`` for every entity of ``env``: ``name`` first, then the fields
    in schema order, durations as text (``30s``), refs as full ids."""
    for entity_id, fields in engine.state(env, types).items():
        type_name, _, name = entity_id.partition(".")
        doc = {"name": name}
        specs = engine.schema.types[type_name].fields
        for fname, value in fields.items():
            spec = specs[fname]
            if (spec.item_kind or spec.kind) == "duration":
                value = [format_duration(v) for v in value] if isinstance(value, list) \
                    else format_duration(value)
            doc[fname] = value
        yield entity_id, doc


def export_state(engine, fmt: str, *, envs: list[str] | None = None,
                 types: list[str] | None = None, output=None, progress=None) -> ExportResult:
    """Write the resolved state of ``envs`` (default: all) as ``fmt``: into the directory
    ``output`` (``<env>/<type>/<name>.<ext>``), or as one stream to the binary file object
    ``output``."""
    started = time.perf_counter()
    serializer = formats.for_name(fmt, writable=True)
    schema = engine.schema
    for env in envs or ():
        if env not in schema.parents:
            raise InputError(f"unknown environment {env!r} (declared: "
                             f"{', '.join(schema.environments)})")
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
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}", path=path) from None
