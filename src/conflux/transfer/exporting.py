"""Export: the resolved state written as files, one per entity (``<env>/<type>/<name>.<ext>``),
or as one stream, in any writable format (``conflux.formats``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from conflux import formats
from conflux.errors import InputError
from conflux._gcpause import without_gc
from conflux.schema import format_duration

__all__ = ["export_state", "ExportResult", "documents_of", "document"]


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
