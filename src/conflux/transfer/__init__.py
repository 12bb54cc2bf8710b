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

The parts: ``reading`` (the files an import reads, held to the tree and to the limits, and
parsed), ``importing`` (the plan of operations, and ``import_tree``, which applies it) and
``exporting``.
"""

from conflux.transfer.exporting import ExportResult, document, documents_of, export_state
from conflux.transfer.importing import (ImportResult, import_tree, plan_export_import,
                                        plan_import)
from conflux.transfer.reading import (ImportFailed, Source, bounded, export_files, files_of,
                                      is_export_tree, read_sources)

__all__ = ["import_tree", "export_state", "ImportResult", "ExportResult", "documents_of",
           "document", "is_export_tree"]
