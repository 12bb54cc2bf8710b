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
    at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (txid, pos)
);
CREATE UNIQUE INDEX IF NOT EXISTS conflux_log_op_id ON conflux_log (op_id);
CREATE TABLE IF NOT EXISTS conflux_nodes (
    node  text PRIMARY KEY,
    seen  timestamptz NOT NULL,
    txid  bigint NOT NULL,
    pos   bigint NOT NULL
);
"""

_HEARTBEAT = """
INSERT INTO conflux_nodes (node, seen, txid, pos) VALUES (%s, clock_timestamp(), %s, %s)
ON CONFLICT (node) DO UPDATE SET seen = excluded.seen, txid = excluded.txid, pos = excluded.pos
"""

# rows beyond a position, and the age of the oldest (a count of at most LAG_CAP rows: a node
# far behind is told "at least")
_LAG = """
SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(at)) * 1000, 0)
FROM (SELECT at FROM conflux_log WHERE (txid, pos) > (%s::text::xid8, %s) LIMIT %s) AS behind
"""

_NODES = """
SELECT node, extract(epoch FROM clock_timestamp() - seen) * 1000, txid, pos FROM conflux_nodes
WHERE seen > clock_timestamp() - make_interval(secs => %s) ORDER BY node
"""

#: The most rows ``lag`` counts.
LAG_CAP = 1_000_000

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
ORDER BY conflux_log.txid, conflux_log.pos  -- the key, not the bigint column selected
LIMIT %(limit)s
"""


#: Seconds a connection may take, unless the URL says (``connect_timeout``): a database host
#: that does not answer fails a write in this time rather than TCP's minutes.
CONNECT_TIMEOUT_S = 5


def connect(dsn: str, **params):
    """An autocommit connection to the database ``dsn`` names, with libpq's ``params`` and
    ``CONNECT_TIMEOUT_S`` unless the URL sets its own."""
    if "connect_timeout" not in dsn:
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return psycopg.connect(dsn, autocommit=True, **params)


class SharedLog:
    """The shared log in the database ``dsn`` names (a libpq connection string or URL)."""

    def __init__(self, dsn: str, node: str):
        self.dsn, self.node = dsn, node
        self._conn = connect(dsn)
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
        new = self._insert(ops, whole=False)
        first = {}
        for index, op_id in enumerate(op_ids):
            first.setdefault(op_id, index)
        return [op_id in new and first[op_id] == index for index, op_id in enumerate(op_ids)]

    def append_whole(self, ops: list[tuple[str, bytes]]) -> list[bytes]:
        """Append ``(op id, entry)`` pairs (distinct op ids) all together or not at all: when
        some op ids are in the log already nothing is appended, and their logged entries are
        returned (else ``[]``, and the pairs are committed when this returns)."""
        if not ops:
            return []
        return self._insert(ops, whole=True)

    def _insert(self, ops, *, whole: bool):
        params = {"node": self.node, "op_ids": [op_id for op_id, _ in ops],
                  "entries": [entry for _, entry in ops]}
        for attempt in range(_ATTEMPTS):
            try:
                with self._conn.transaction() as tx:
                    cur = self._conn.execute(_APPEND, params)
                    new = {row[0] for row in cur.fetchall()}
                    if whole and len(new) < len(ops):
                        # a row that conflicted was committed before ON CONFLICT answered:
                        # this statement sees it
                        logged = self.entries_of(op_id for op_id, _ in ops if op_id not in new)
                        raise psycopg.Rollback(tx)
                    self._conn.execute(f"NOTIFY {_CHANNEL}")  # delivered at commit
                    return [] if whole else new
            except psycopg.errors.DeadlockDetected:
                # two batches naming some op ids in opposite orders (a retry sent to another
                # node meanwhile): PostgreSQL rolled this one back, whole; it is run again
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            return logged
        raise AssertionError("unreachable")

    def tail(self, after: Position = START, limit: int = 10_000):
        """The rows after ``after`` that can no longer be preceded by a late commit, oldest
        first: ``([(op id, node, entry), ...], position of the last one)``."""
        rows = self._conn.execute(_TAIL, {"txid": after[0], "pos": after[1],
                                          "limit": limit}).fetchall()
        if not rows:
            return [], after
        return [(op_id, node, bytes(entry)) for _, _, op_id, node, entry in rows], \
            (rows[-1][0], rows[-1][1])

    def entries_of(self, op_ids: list[str]) -> list[bytes]:
        """The logged entries of those of ``op_ids`` that the log holds."""
        rows = self._conn.execute("SELECT entry FROM conflux_log WHERE op_id = ANY(%s::text[])",
                                  (list(op_ids),)).fetchall()
        return [bytes(entry) for entry, in rows]

    def heartbeat(self, position: Position) -> None:
        """Record that this node is alive and has applied the log up to ``position``."""
        self._conn.execute(_HEARTBEAT, (self.node, position[0], position[1]))

    def lag(self, position: Position) -> tuple[int, float]:
        """(rows the log holds beyond ``position``, at most ``LAG_CAP``; milliseconds since
        the oldest of them was appended, 0 when none)."""
        count, ms = self._conn.execute(_LAG, (position[0], position[1], LAG_CAP)).fetchone()
        return int(count), float(ms)

    def nodes(self, within_s: float = 60.0) -> list[dict]:
        """The nodes seen in the last ``within_s`` seconds: name, milliseconds since, and
        the position each has applied up to."""
        rows = self._conn.execute(_NODES, (within_s,)).fetchall()
        return [{"node": node, "seen_ms_ago": round(float(ms)), "read_position": [txid, pos]}
                for node, ms, txid, pos in rows]

    def wait(self, timeout: float) -> bool:
        """Sleep until some node appends (True) or ``timeout`` seconds pass (False)."""
        if self._listener is None:
            self._listener = connect(self.dsn)
            self._listener.execute(f"LISTEN {_CHANNEL}")
        for _ in self._listener.notifies(timeout=timeout, stop_after=1):
            return True
        return False
