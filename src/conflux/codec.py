"""msgpack, the encoding of Conflux's records, frames and binary bodies: the one module of
``conflux`` that imports it (the merge kernel, ``conflux.kernel``, packs its records itself).

The names are msgpack's own objects, bound here, not wrappers: a record packed or unpacked
through them costs no extra call. They keep msgpack 1.0's defaults, which the format relies
on: ``packb`` writes bytes as bin and text as str (``use_bin_type=True``), ``unpackb`` reads
str as ``str`` (``raw=False``) and refuses map keys other than str and bytes
(``strict_map_key=True``). A ``Packer`` holds a buffer: one per thread, never shared.
"""

from __future__ import annotations

from msgpack import ExtraData, FormatError, Packer, StackError, packb, unpackb

__all__ = ["packb", "unpackb", "Packer", "ExtraData", "FormatError", "StackError"]
