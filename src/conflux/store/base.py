"""What the engine needs of a store: the one storage interface, whatever keeps the bytes.

A store holds, per project:

- **state records**, keyed by state key (``conflux.store.layout``): the kernel's packed
  registers and sets, one per field, plus an entity's delete marker under field id 0;
- the **op log**, in chunks under dense sequence numbers, with the clock after each commit;
- an **op-id index** (client op id -> sequence number) for idempotent retries and blame;
- an **entity index** of the log (which ranges of it wrote each entity);
- **interned names** (environment, type and field names -> small ids used in keys);
- **meta values** (node id, layout, compaction horizon, ...: small named values);
- the indexes of **conflicts** (review fields with concurrent candidates) and **violations**
  (fields breaking a constraint, with a **dangling-reference** index by missing target);
- **milestone** records, and the **webhooks'** delivery cursors and statistics.

The transaction is an opaque handle: callers get one from ``read()`` or inside
``write(body)`` and hand it back to the store's methods; nothing above the store looks into
it, opens a cursor or names a table.

PERF: where the engine looks up one record after another in a loop, the store hands out a
function bound to the transaction once (``state_getter``, ``opid_getter``, ``entity_reader``,
``violation_recorder``), so a lookup costs what the backend's own call costs and no more.
Those functions are valid while their transaction is open.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

__all__ = ["Store", "LoggedElsewhere"]


class LoggedElsewhere(Exception):
    """Raised by ``write`` when a store whose op log of record is shared (``SharedStore``)
    finds that some op ids of the commit are in that log already, bound by another node (or
    by this one before a crash lost its local commit): nothing was written. ``entries``: the
    logged entries of those op ids, to apply (``Engine.apply_entries``) before the commit is
    run again, so that it acknowledges them rather than binding them a second time."""

    def __init__(self, entries: list[bytes]):
        super().__init__(f"{len(entries)} op ids of this commit are in the shared op log")
        self.entries = entries


class Store(abc.ABC):
    """The storage interface (``LmdbStore`` implements it over LMDB)."""

    #: Where the store lives (a directory for LMDB).
    path: str

    #: Whether the op log of record is shared with other nodes (``SharedStore``): then
    #: ``log_append`` is told the op ids of what the node itself bound, which ``write``
    #: publishes before it commits.
    shares_log = False

    #: The op-log chunk size the kernel's ``encode_chunks`` is given (bytes of entries).
    CHUNK_LIMIT: int

    #: The entity index is written by a commit of at least ``ENTITY_BATCH`` ops, and else once
    #: ``ENTITY_RANGE`` logged ops wait for it: a single-op commit would otherwise dirty its
    #: pages each time (a small synced commit costs what its pages cost to flush).
    ENTITY_BATCH = 64
    ENTITY_RANGE = 4096

    @classmethod
    @abc.abstractmethod
    def exists(cls, path: str) -> bool:
        """Whether a store of this kind was made at ``path``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store (its transactions must be over)."""

    # -- transactions -------------------------------------------------------------------------

    @abc.abstractmethod
    def read(self) -> AbstractContextManager:
        """A read transaction (a consistent snapshot), as a context manager."""

    @abc.abstractmethod
    def write(self, body: Callable, *, commit: bool = True):
        """Run ``body(txn)`` in one write transaction, commit it (durably) and return what
        ``body`` returned. Writers are serialised, across processes too.

        ``body`` may be run more than once (when the store must grow first, the transaction
        is thrown away and ``body`` run again from the start), so it must derive everything
        it writes from the transaction. With ``commit=False`` (dry runs) the transaction is
        always thrown away.
        """

    # -- interned names -----------------------------------------------------------------------

    @abc.abstractmethod
    def name_id(self, txn, kind: str, name: str, *, create: bool) -> int | None:
        """The small integer id of an environment (``e``), type (``t``) or field (``f``,
        ``type.field``); None if it has none and ``create`` is false.

        Ids are assigned in write transactions and never change; ``create`` only inside
        ``write``. Field ids start at 1 (0 is the entity marker).
        """

    @abc.abstractmethod
    def names(self, txn, kind: str) -> dict[int, str]:
        """id -> name for every interned name of a kind."""

    # -- meta values --------------------------------------------------------------------------

    @abc.abstractmethod
    def meta_get(self, txn, key: str, default=None):
        """The bytes kept under ``key`` (``default`` if none)."""

    @abc.abstractmethod
    def meta_put(self, txn, key: str, value: bytes) -> None:
        """Keep ``value`` under ``key``."""

    @abc.abstractmethod
    def meta_delete(self, txn, key: str) -> None:
        """Forget the value kept under ``key`` (none there: nothing happens)."""

    @abc.abstractmethod
    def meta_int(self, txn, key: str) -> int:
        """The integer kept under ``key`` (``meta_put_int``); 0 if none."""

    @abc.abstractmethod
    def meta_put_int(self, txn, key: str, value: int) -> None:
        """Keep an unsigned 64-bit integer under ``key``."""

    # -- state records ------------------------------------------------------------------------

    @abc.abstractmethod
    def state_getter(self, txn) -> Callable[[bytes], bytes | None]:
        """A function ``get(state key) -> record or None`` reading in ``txn``."""

    @abc.abstractmethod
    def state_put(self, txn, key: bytes, record: bytes) -> None:
        """Write one state record."""

    @abc.abstractmethod
    def state_delete(self, txn, key: bytes) -> None:
        """Remove one state record (none there: nothing happens)."""

    @abc.abstractmethod
    def entity_reader(self, txn) -> Callable[[bytes], dict[int, bytes]]:
        """A function ``read(entity prefix) -> {field id: record}``: the records of one
        entity in one environment (``layout.entity_prefix``), its delete marker under 0;
        empty when it has none there."""

    @abc.abstractmethod
    def env_entities(self, txn, env_id: int) -> set[tuple[int, str]]:
        """``(type id, name)`` of every entity with a record in the environment."""

    @abc.abstractmethod
    def place_records(self, txn, env_id: int) -> list[tuple[int, str, bytes]]:
        """``(type id, name, record)`` of every place record (field id ``PLACE_FIELD``: an
        entity's moves in the entity tree) in an environment."""

    @abc.abstractmethod
    def state_items(self, txn) -> Iterator[tuple[bytes, bytes]]:
        """Every state record, ``(key, record)`` in key order."""

    @abc.abstractmethod
    def merge_batch(self, txn, leaves: list, apply_batch: Callable):
        """Merge a batch of the kernel's field and entity ops into the state records with
        the kernel's ``apply_batch(leaves, cursor)`` (which reads each key with
        ``cursor.get(key)`` and writes the changed records, in key order, with
        ``cursor.putmulti(items)``); returns what it returns."""

    # -- the op log -----------------------------------------------------------------------------

    @abc.abstractmethod
    def log_tail(self, txn) -> tuple[int, int]:
        """(last sequence number, clock) of the store; (0, 0) for an empty log."""

    @abc.abstractmethod
    def log_append(self, txn, chunks: list[tuple[int, bytes]],
                   publish: list[str] | None = None) -> None:
        """Append a commit's chunks, ``(first seq, chunk)``, in order. ``publish``: with a
        shared log of record, the op ids of the chunks' entries, in order, when this node
        bound them (None for entries read from that log)."""

    @abc.abstractmethod
    def log_entries(self, txn, start: int = 1, *, reverse: bool = False
                    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, entry bytes)`` from sequence ``start`` on (or down, when
        reversed)."""

    @abc.abstractmethod
    def log_entry(self, txn, seq: int) -> bytes | None:
        """The entry of one sequence number (None if not logged)."""

    # -- the op-id index ------------------------------------------------------------------------

    @abc.abstractmethod
    def opid_getter(self, txn) -> Callable[[str], int | None]:
        """A function ``seq_of(op id) -> sequence number or None`` reading in ``txn``."""

    @abc.abstractmethod
    def index_opids(self, txn, pairs: list[tuple[str, int]]) -> None:
        """Index the ``(op id, sequence number)`` pairs of a commit."""

    # -- the entity index -------------------------------------------------------------------------

    @abc.abstractmethod
    def entity_index_tail(self, txn) -> tuple[int, int]:
        """``(first, last)`` sequence numbers the entity index covers; ``(0, 0)`` when the
        store has none yet (made before it, and not written to since)."""

    @abc.abstractmethod
    def entity_index_begin(self, txn, first: int) -> None:
        """Start the entity index at sequence number ``first`` (no range written yet)."""

    @abc.abstractmethod
    def index_entities(self, txn, last: int, blobs: list[bytes]) -> None:
        """Record the entities of the ops up to sequence ``last`` since the previous range
        (the kernel's ``entity_blobs``)."""

    @abc.abstractmethod
    def entity_ranges(self, txn, entity_id: str) -> list[tuple[int, int]]:
        """The sequence ranges ``(first, last)``, ascending, outside which no logged op
        writes ``entity_id``: the index's ranges naming it, and what it does not cover."""

    # -- conflicts ------------------------------------------------------------------------------

    @abc.abstractmethod
    def conflict_keys(self, txn) -> list[bytes]:
        """The state keys of the review fields marked in conflict, in key order."""

    @abc.abstractmethod
    def mark_conflict(self, txn, key: bytes, on: bool) -> None:
        """Mark (``on``) or unmark the review field at ``key`` as in conflict."""

    # -- violations and the dangling-reference index ----------------------------------------------

    @abc.abstractmethod
    def violation_count(self, txn) -> int:
        """How many fields have a violation on record."""

    @abc.abstractmethod
    def violation_recorder(self, txn, any_recorded: bool
                           ) -> Callable[[bytes, list[str], list[str]], None]:
        """A function ``record(state key, messages, dangling targets)`` that puts the
        field's violation on record (its messages, and the entity ids it refers to that do
        not exist, indexed for ``dangling_referrers``), or clears it when ``messages`` is
        empty. ``any_recorded`` false (``violation_count`` was 0 in ``txn``) saves looking
        for the one on record."""

    @abc.abstractmethod
    def violation_items(self, txn) -> Iterator[tuple[bytes, str]]:
        """``(state key, message)`` of every violation on record, in key order."""

    @abc.abstractmethod
    def dangling_referrers(self, txn, env_id: int, target: str) -> list[bytes]:
        """The state keys of the fields whose violation in the environment says they refer
        to the missing entity ``target``."""

    # -- milestones -----------------------------------------------------------------------------

    @abc.abstractmethod
    def milestone_put(self, txn, number: int, record: bytes) -> None:
        """Keep the record of milestone ``number``."""

    @abc.abstractmethod
    def milestone_get(self, txn, number: int) -> bytes | None:
        """The record of milestone ``number`` (None if none)."""

    @abc.abstractmethod
    def milestones_after(self, txn, after: int) -> list[bytes]:
        """The records of the milestones numbered above ``after``, oldest first."""

    @abc.abstractmethod
    def milestone_last(self, txn) -> bytes | None:
        """The record of the newest milestone (None if none)."""

    # -- webhooks -------------------------------------------------------------------------------

    @abc.abstractmethod
    def webhook_cursor(self, txn, name: str, *, milestones: bool = False) -> int | None:
        """The last sequence number (with ``milestones``: milestone number) webhook
        ``name`` is done with; None if it has no cursor yet."""

    @abc.abstractmethod
    def set_webhook_cursor(self, txn, name: str, value: int, *,
                           milestones: bool = False) -> None:
        """Move webhook ``name``'s cursor (or its milestone cursor) to ``value``."""

    @abc.abstractmethod
    def webhook_stats(self, txn, name: str) -> bytes | None:
        """Webhook ``name``'s delivery statistics as kept (None if none)."""

    @abc.abstractmethod
    def set_webhook_stats(self, txn, name: str, stats: bytes) -> None:
        """Keep webhook ``name``'s delivery statistics."""

    @abc.abstractmethod
    def webhook_records(self, txn) -> dict[str, tuple[int | None, bytes | None]]:
        """Every webhook the store has kept anything for: name -> (cursor, statistics),
        each None when not kept."""

    # -- figures --------------------------------------------------------------------------------

    @abc.abstractmethod
    def figures(self, txn) -> dict[str, int]:
        """What ``status`` shows of the store: ``records`` (state records), ``conflicts``,
        ``violations`` and ``map_size`` (the bytes the store has room for now; it grows by
        itself)."""
