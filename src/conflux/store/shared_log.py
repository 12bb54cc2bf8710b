"""The op log of record on PostgreSQL, shared by several daemons.

Each daemon keeps its resolved state in its own store and applies the shared log to it; the
merge rules make the order irrelevant, so what the log must give is: every op exactly once per
op id (a retry sent to another daemon is found, not appended twice), durable when
``append`` returns (PostgreSQL committed it), and a tail that never skips a row.

**Never skipping a row.** Rows are numbered as they are inserted, but concurrent transactions
commit out of order: a reader that tails by number alone can pass row 7 while the transaction
inserting it is still open and never come back. So each row also carries the id of the
transaction that wrote it (``pg_current_xact_id()``), rows are read in ``(transaction id,
number)`` order, and only below the oldest transaction still in flight
(``pg_snapshot_xmin(pg_current_snapshot())``): every transaction with a smaller id has
committed or rolled back, so nothing can appear behind the reader's position any more. The
price is that a long-open writer holds readers back until it ends; Conflux's writers hold a
transaction only for one insert. Tailers are woken by ``NOTIFY`` rather than polling.

Needs PostgreSQL 13 or later (``xid8`` and ``pg_snapshot_xmin``).
"""

from __future__ import annotations

import psycopg

__all__ = ["SharedLog", "Position", "START"]

#: A reader's position: (transaction id, row number) of the last row it has read.
Position = tuple[int, int]
START: Position = (0, 0)

_CHANNEL = "conflux_log"
#: Tries of an append that PostgreSQL broke off to end a deadlock.
_ATTEMPTS = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conflux_log (
    txid  xid8   NOT NULL DEFAULT pg_current_xact_id(),
    pos   bigint GENERATED ALWAYS AS IDENTITY,
    op_id text   NOT NULL,
    node  text   NOT NULL,
    entry bytea  NOT NULL,
    PRIMARY KEY (txid, pos)
);
CREATE UNIQUE INDEX IF NOT EXISTS conflux_log_op_id ON conflux_log (op_id);
"""

_APPEND = """
INSERT INTO conflux_log (op_id, node, entry)
SELECT op_id, %(node)s, entry FROM unnest(%(op_ids)s::text[], %(entries)s::bytea[])
    AS batch (op_id, entry)
ON CONFLICT (op_id) DO NOTHING
RETURNING op_id
"""

_TAIL = """
SELECT txid::text::bigint, pos, op_id, node, entry FROM conflux_log
WHERE (txid, pos) > (%(txid)s::text::xid8, %(pos)s)
  AND txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY txid, pos
LIMIT %(limit)s
"""


class SharedLog:
    """The shared log in the database ``dsn`` names (a libpq connection string or URL)."""

    def __init__(self, dsn: str, node: str):
        self.dsn, self.node = dsn, node
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._listener = None

    def close(self) -> None:
        self._conn.close()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def create(self) -> None:
        """Make the table and its indexes (once; a second call changes nothing)."""
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('conflux_log schema'))")
            self._conn.execute(_SCHEMA)

    def append(self, ops: list[tuple[str, bytes]]) -> list[bool]:
        """Append ``(op id, entry)`` pairs in one transaction, committed when this returns;
        per pair, whether it was new (False: an op of that id is in the log already, from
        this node or another, or earlier in the same batch)."""
        if not ops:
            return []
        op_ids = [op_id for op_id, _ in ops]
        params = {"node": self.node, "op_ids": op_ids, "entries": [entry for _, entry in ops]}
        for attempt in range(_ATTEMPTS):
            try:
                with self._conn.transaction():
                    cur = self._conn.execute(_APPEND, params)
                    new = {row[0] for row in cur.fetchall()}
                    self._conn.execute(f"NOTIFY {_CHANNEL}")  # delivered at commit
                break
            except psycopg.errors.DeadlockDetected:
                # two batches naming some op ids in opposite orders (a retry sent to another
                # node meanwhile): PostgreSQL rolled this one back, whole; it is run again
                if attempt == _ATTEMPTS - 1:
                    raise
        first = {}
        for index, op_id in enumerate(op_ids):
            first.setdefault(op_id, index)
        return [op_id in new and first[op_id] == index for index, op_id in enumerate(op_ids)]

    def tail(self, after: Position = START, limit: int = 10_000):
        """The rows after ``after`` that can no longer be preceded by a late commit, oldest
        first: ``([(op id, node, entry), ...], position of the last one)``."""
        rows = self._conn.execute(_TAIL, {"txid": after[0], "pos": after[1],
                                          "limit": limit}).fetchall()
        if not rows:
            return [], after
        return [(op_id, node, bytes(entry)) for _, _, op_id, node, entry in rows], \
            (rows[-1][0], rows[-1][1])

    def wait(self, timeout: float) -> bool:
        """Sleep until some node appends (True) or ``timeout`` seconds pass (False)."""
        if self._listener is None:
            self._listener = psycopg.connect(self.dsn, autocommit=True)
            self._listener.execute(f"LISTEN {_CHANNEL}")
        for _ in self._listener.notifies(timeout=timeout, stop_after=1):
            return True
        return False
