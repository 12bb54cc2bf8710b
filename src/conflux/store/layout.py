"""The byte layouts a store shares with the engine and the merge kernel, whatever the backend.

State keys are ``env id (u16 BE) · type id (u16 BE) · name · 0x00 · field id (u16 BE)``, so
the fields of an entity are adjacent (one range per ``get``) and one environment is one
sequential scan. Field id 0 holds the entity's delete marker, field id 0xFFFF its place
in the entity tree. The records themselves are the
kernel's (``kernel/FORMAT.md``).

The op log is kept in chunks (``LogChunk``), each under the sequence number of its first
entry (``SEQ``), written by the kernel's ``encode_chunks``.
"""

from __future__ import annotations

import struct

from conflux.kernel._layout import CHUNK_HEAD, CHUNK_OFFSET, pack_chunks

__all__ = ["SEQ", "LogChunk", "state_key", "entity_prefix", "split_state_key", "PLACE_FIELD",
           "PLACE_KEY"]

#: A sequence number as stored: u64 big-endian (keys sort in log order).
SEQ = struct.Struct(">Q")
_U16 = struct.Struct(">H")


#: The field id of an entity's place record (its moves in the entity tree: the kernel's
#: PLACE), kept in the base environment; field ids are interned from 1 up and never reach it.
PLACE_FIELD = 0xFFFF
PLACE_KEY = _U16.pack(PLACE_FIELD)


def entity_prefix(env_id: int, type_id: int, name: str) -> bytes:
    return _U16.pack(env_id) + _U16.pack(type_id) + name.encode() + b"\x00"


def state_key(env_id: int, type_id: int, name: str, field_id: int) -> bytes:
    return entity_prefix(env_id, type_id, name) + _U16.pack(field_id)


def split_state_key(key: bytes) -> tuple[int, int, str, int]:
    """(env id, type id, name, field id)."""
    return (_U16.unpack_from(key, 0)[0], _U16.unpack_from(key, 2)[0],
            key[4:-3].decode(), _U16.unpack_from(key, len(key) - 2)[0])


class LogChunk:
    """The op-log entries of one commit: ``count (u32) · clock (u64) · offsets (u32 each) ·
    entries`` (written by the core's ``encode_chunks``).

    PERF: one LMDB record per page-sized run of entries instead of one per operation, which is
    what lets a skewed batch (the same fields rewritten) cost little more than its distinct
    fields; sequence numbers stay dense. The clock after the commit rides in every chunk, so
    a commit writes no other table.
    """

    HEAD = CHUNK_HEAD  # the kernel's layout (kernel/_layout.py), which writes the chunks

    @classmethod
    def unpack(cls, data: bytes) -> list[bytes]:
        n = cls.HEAD.unpack_from(data)[0]
        # the n offsets in one call: CHUNK_OFFSET's format, repeated n times
        offsets = struct.unpack_from(f"<{n}{CHUNK_OFFSET.format[1:]}", data, cls.HEAD.size)
        base = cls.HEAD.size + CHUNK_OFFSET.size * n
        ends = offsets[1:] + (len(data) - base,)
        return [bytes(data[base + a:base + b]) for a, b in zip(offsets, ends)]

    #: Chunks of entries already encoded (read from a shared log: kept byte for byte), cut
    #: as the kernel cuts them: ``pack(entries, first seq, clock, limit)``.
    pack = staticmethod(pack_chunks)

    @classmethod
    def tail(cls, first_seq: int, data: bytes) -> tuple[int, int]:
        """(last sequence number, clock) after the commit that wrote this chunk."""
        n, clock = cls.HEAD.unpack_from(data)
        return first_seq + n - 1, clock
