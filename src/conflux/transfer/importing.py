"""The import planner: the operations that bring an environment (or, for an export tree, every
environment) to what the documents say, and ``import_tree``, which reads a path, plans and
applies the batch, telling an engine refusal as the file and line the operation came from."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from conflux import formats
from conflux._gcpause import without_gc
from conflux.codec import packb
from conflux.errors import InputError, ValidationError
from conflux.transfer.reading import (ImportFailed, Source, _visible, export_files, files_of,
                                      is_export_tree, read_sources)

__all__ = ["import_tree", "plan_import", "plan_export_import", "ImportResult"]

_OP_INDEX = re.compile(r"^op (\d+): ")


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
                name_from: str | None, intent: str, prefix: bool = False) -> ImportResult:
    """The operations that bring ``env`` to what the documents say (nothing for fields that
    already hold it)."""
    schema = engine.schema
    etype = schema.entity_type(entity_type)
    result = ImportResult(files=len(sources))
    wanted: dict[str, tuple] = {}  # entity id -> (source, index, fields)
    for entity_id, source, index, doc in _entity_docs(schema, sources, name_from,
                                                      lambda source: entity_type,
                                                      prefix=prefix):
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
                 key_of=lambda source, entity_id: entity_id, prefix: bool = False):
    """Each document of ``sources`` as ``(entity id, source, index, document)``: named (by
    ``name_from``) as an entity of ``type_of(source)``, its id checked, and refused when
    another document names the same entity (``key_of`` says what counts as the same: the id,
    or the environment and the id). With ``prefix``, each name is ``<file stem>.<name>``
    (the original Conflux's ``--use-filename-prefix``)."""
    seen: dict = {}
    for source in sources:
        if name_from == "file" and len(source.docs) > 1:
            raise ImportFailed(f"{source.path}: {len(source.docs)} documents in one file, but "
                               "--name-from file names one entity per file; name them with "
                               "--name-from KEY", path=source.path)
        entity_type = type_of(source)
        for index, doc in enumerate(source.docs):
            doc = dict(doc)
            name = _name_of(source, index, doc, name_from)
            if prefix:
                name = f"{os.path.splitext(os.path.basename(source.path))[0]}.{name}"
            entity_id = f"{entity_type}.{name}"
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
                progress=None, extensions=None, pattern: str | None = None,
                prefix: bool = False) -> ImportResult:
    """Import ``path`` (a file or a tree). ``check(ops)`` may refuse the batch (access rules)
    before anything is written; ``progress`` is a ``Progress`` (or None).

    A directory that ``conflux export`` wrote (``ENV/TYPE/NAME.EXT``, see ``is_export_tree``)
    imports each environment into that environment and each type as that type (see
    ``plan_export_import``); ``env`` and ``entity_type`` then only restrict which of its
    directories are read. Any other file or tree is of one ``entity_type``, imported into
    ``env`` (default: the base). ``extensions`` (without dots) and ``pattern`` (a glob over
    file names) keep only some files; ``prefix`` names each entity ``<file stem>.<name>``."""
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
    if extensions or pattern:
        files, dropped = _chosen(files, extensions, pattern)
        skipped += dropped
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
                             env=env or schema.base_env, name_from=name_from, intent=intent,
                             prefix=prefix)
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


def _chosen(files: list, extensions, pattern: str | None) -> tuple[list, int]:
    """The files whose extension is one of ``extensions`` and whose name matches ``pattern``
    (``fnmatch``), and how many others there were."""
    from fnmatch import fnmatchcase

    wanted = {e.lower().lstrip(".") for e in extensions or ()}
    kept = [f for f in files
            if (not wanted or os.path.splitext(_file_path(f))[1].lower().lstrip(".") in wanted)
            and (pattern is None or fnmatchcase(os.path.basename(_file_path(f)), pattern))]
    return kept, len(files) - len(kept)


def _file_path(entry) -> str:
    """A file to import: ``(path, serializer)`` from a tree, a ``Source`` from an export."""
    return entry[0] if isinstance(entry, tuple) else entry.path


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
