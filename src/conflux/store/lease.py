"""Cluster-wide leases on the shared op log's PostgreSQL, and what their holders record there.

Some work must be done by one daemon of a cluster only: delivering webhooks, making scheduled
milestones. Each such *role* has a lease: a PostgreSQL session advisory lock
(``pg_try_advisory_lock``) held on a connection of its own by the one process doing the work.
Every other daemon's process for that role tries again every ``RETRY_S`` seconds. PostgreSQL
releases a session lock when its session ends, so when the holder dies (``kill -9`` closes its
socket; a host that vanishes is noticed by TCP keepalives) another daemon takes the lease
within about a second. No clock, no expiry, no home-made election: PostgreSQL decides.

Holding the lease is not enough to act on it safely: a holder whose connection broke may not
know yet. So every record a holder writes goes through ``Lease.transaction``, which checks in
the same transaction, on the lease's own connection, that this session still holds the lock
(``pg_locks``). A holder that lost its lease can still do what it was doing when it lost it
(send one webhook batch, write one git commit), but it cannot record it: the next holder
starts from the records, so it does that one piece of work again rather than skipping it.

The records (``conflux_webhooks``: each webhook's cursor as a position in the shared log, and
the batch being sent; ``conflux_milestones``: every scheduled milestone made) are read by any
daemon (status) and written only by the holder. LMDB-only projects use none of this.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading

import psycopg

from conflux.errors import first_line
from conflux.store.shared_log import connect, START, Position

__all__ = ["Lease", "LeaseLost", "ROLES", "hold", "holders", "WebhookRecords",
           "MilestoneRecords", "last_milestone_row", "webhook_rows", "webhook_start"]

#: The roles that have a lease, and the second key of each one's advisory lock.
ROLES = {"webhooks": 1, "milestones": 2}
#: The first key of every Conflux lease ('conf'): keeps clear of other users' advisory locks.
_KEY = 0x636F6E66
#: Seconds between tries of a daemon waiting for a lease.
RETRY_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conflux_leases (
    role  text PRIMARY KEY,
    node  text NOT NULL,
    pid   integer NOT NULL,
    since timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS conflux_webhooks (
    name         text PRIMARY KEY,
    txid         bigint NOT NULL,
    pos          bigint NOT NULL,
    sending_txid bigint,
    sending_pos  bigint,
    milestone    bigint NOT NULL DEFAULT 0,
    stats        text NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS conflux_milestones (
    id     bigint PRIMARY KEY,
    node   text NOT NULL,
    made   timestamptz NOT NULL,
    txid   bigint NOT NULL,
    pos    bigint NOT NULL,
    commit text NOT NULL,
    record bytea NOT NULL
);
"""

_HELD = """
SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
  AND classid = %s AND objid = %s AND objsubid = 2 AND granted
"""

_HOLDERS = """
SELECT l.role, l.node, l.since FROM conflux_leases AS l
JOIN pg_locks AS k ON k.pid = l.pid AND k.locktype = 'advisory' AND k.granted
  AND k.classid = %s AND k.objsubid = 2
  AND k.objid = CASE l.role WHEN 'webhooks' THEN 1 WHEN 'milestones' THEN 2 END
"""

# The rows of the shared log after a position, oldest first, read as ``SharedLog.tail`` reads
# them (below the oldest transaction in flight), and no further than ``upto``.
_ROWS = """
SELECT txid::text::bigint, pos, op_id, entry FROM conflux_log
WHERE (txid, pos) > (%(txid)s::text::xid8, %(pos)s)
  AND (txid, pos) <= (%(to_txid)s::text::xid8, %(to_pos)s)
  AND txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY conflux_log.txid, conflux_log.pos  -- the key, not the bigint column selected
LIMIT %(limit)s
"""
_NO_END = (1 << 62, 1 << 62)

log = logging.getLogger("conflux.lease")


class LeaseLost(Exception):
    """This process no longer holds the lease it acted under (its connection broke, or
    PostgreSQL ended its session): it must stop, and may try to take the lease again."""


def _connect(dsn: str, role: str):
    # keepalives: a holder whose database host vanished learns it within ~20 s rather than
    # TCP's hours (the server side is the server's tcp_keepalives_* settings)
    return connect(dsn, application_name=f"conflux-{role}", keepalives=1,
                   keepalives_idle=10, keepalives_interval=3, keepalives_count=3)


def create_tables(conn) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('conflux_leases schema'))")
        conn.execute(_SCHEMA)


class Lease:
    """The lease on ``role`` (a key of ``ROLES``) in the database ``dsn`` names, for this
    ``node``: a connection of its own, holding the lock or trying to."""

    def __init__(self, dsn: str, role: str, node: str):
        if role not in ROLES:
            raise ValueError(f"no lease named {role!r} (roles: {', '.join(ROLES)})")
        self.dsn, self.role, self.node = dsn, role, node
        self.conn = _connect(dsn, role)
        self._held = False
        # one transaction at a time on the connection: every webhook's thread shares it
        self._lock = threading.RLock()
        create_tables(self.conn)

    def close(self) -> None:
        """Give the lease up (closing the session releases the lock)."""
        self._held = False
        self.conn.close()

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; whether this process holds it now."""
        if self._held:
            return True
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                (_KEY, ROLES[self.role])).fetchone()[0]
        if got:
            self._held = True
            self.conn.execute(
                "INSERT INTO conflux_leases (role, node, pid, since) "
                "VALUES (%s, %s, pg_backend_pid(), clock_timestamp()) ON CONFLICT (role) DO "
                "UPDATE SET node = excluded.node, pid = excluded.pid, since = excluded.since",
                (self.role, self.node))
        return got

    @contextlib.contextmanager
    def transaction(self):
        """A transaction on the lease's connection in which this process still holds the
        lease (checked first, in it); ``LeaseLost`` when it does not, or when the connection
        fails. Records a holder writes are written in one of these."""
        if not self._held:
            raise LeaseLost(f"the {self.role} lease is not held")
        try:
            with self._lock, self.conn.transaction():
                if self.conn.execute(_HELD, (_KEY, ROLES[self.role])).fetchone() is None:
                    self._held = False
                    raise LeaseLost(f"the {self.role} lease was lost")
                yield self.conn
        except psycopg.OperationalError as exc:
            self._held = False
            raise LeaseLost(f"the {self.role} lease's connection failed: "
                            f"{first_line(exc)}") from None

    def rows(self, after: Position, *, upto: Position | None = None, limit: int = 1000):
        """The shared log's rows after ``after`` (and up to ``upto``), oldest first, that no
        late commit can precede any more: ``[((txid, pos), op id, entry), ...]``."""
        end = upto or _NO_END
        try:
            with self._lock:
                found = self.conn.execute(_ROWS, {"txid": after[0], "pos": after[1],
                                                  "to_txid": end[0], "to_pos": end[1],
                                                  "limit": limit}).fetchall()
        except psycopg.OperationalError as exc:
            self._held = False
            raise LeaseLost(f"the {self.role} lease's connection failed: {exc}") from None
        return [((txid, pos), op_id, bytes(entry)) for txid, pos, op_id, entry in found]


def hold(dsn: str, role: str, node: str, stop: threading.Event, work) -> None:
    """Until ``stop`` is set: wait for the lease on ``role``, then run ``work(lease, halt)``
    while it is held; ``halt`` is set when ``stop`` is, and ``work`` raising ``LeaseLost``
    (or the database failing) sends this process back to waiting. What a daemon's process for
    a leased role runs."""
    waiting_logged = down = False
    while not stop.is_set():
        try:
            lease = Lease(dsn, role, node)
        except psycopg.Error as exc:
            if not down:
                log.error("%s lease: the database cannot be reached (%s); retrying", role,
                          first_line(exc))
                down = True
            stop.wait(RETRY_S)
            continue
        down = False
        try:
            while not stop.is_set() and not lease.try_acquire():
                if not waiting_logged:
                    log.info("%s lease: held by another daemon; waiting", role)
                    waiting_logged = True
                stop.wait(RETRY_S)
            if stop.is_set():
                return
            log.info("%s lease: taken by this daemon (node %s, pid %d)", role, node,
                     os.getpid())
            waiting_logged = False
            halt = threading.Event()
            watcher = threading.Thread(target=_chain, args=(stop, halt), daemon=True)
            watcher.start()
            try:
                work(lease, halt)
            except LeaseLost as exc:
                log.warning("%s; stopping, then waiting for the lease again", exc)
            finally:
                halt.set()
        except psycopg.Error as exc:
            log.error("%s lease: the database failed (%s); waiting for the lease again",
                      role, first_line(exc))
            stop.wait(RETRY_S)
        finally:
            with contextlib.suppress(Exception):
                lease.close()


def _chain(stop: threading.Event, halt: threading.Event) -> None:
    while not halt.is_set():
        if stop.wait(0.2):
            halt.set()


def holders(shared) -> dict[str, dict | None]:
    """Per role, the node holding its lease now and since when (None: nobody), read through
    the shared log's connection ``shared`` (a ``SharedLog``)."""
    conn = _conn_of(shared)
    out: dict[str, dict | None] = {role: None for role in ROLES}
    if conn.execute("SELECT to_regclass('conflux_leases')").fetchone()[0] is None:
        return out
    for role, node, since in conn.execute(_HOLDERS, (_KEY,)).fetchall():
        out[role] = {"node": node, "since": since.isoformat(timespec="seconds")}
    return out


# --------------------------------------------------------------------------------------------
# Webhook cursors

def _conn_of(link):
    """The connection of a ``Lease`` or a ``SharedLog``."""
    return link.conn if isinstance(link, Lease) else link._conn


def webhook_start(link, names_from_start: dict[str, bool]) -> None:
    """Record where each webhook the cluster has not seen starts, through ``link`` (a
    ``Lease`` or a ``SharedLog``): the end of the shared log as it is now (every op accepted
    afterwards lies beyond it: its transaction id is newer) and the newest milestone, or the
    start of both; the first daemon to record a webhook wins."""
    conn = _conn_of(link)
    create_tables(conn)
    last_milestone = conn.execute("SELECT coalesce(max(id), 0) FROM conflux_milestones"
                                  ).fetchone()[0]
    end = conn.execute("SELECT txid::text::bigint, pos FROM conflux_log "
                       "ORDER BY conflux_log.txid DESC, conflux_log.pos DESC LIMIT 1").fetchone() or START
    for name, from_start in names_from_start.items():
        at = START if from_start else end
        conn.execute("INSERT INTO conflux_webhooks (name, txid, pos, milestone) "
                     "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                     (name, at[0], at[1], 0 if from_start else last_milestone))


def webhook_rows(link) -> dict[str, dict]:
    """Every webhook the cluster has a cursor for: ``{"cursor": (txid, pos), "sending":
    (txid, pos) or None, "milestone": n, "stats": {...}}``."""
    conn = _conn_of(link)
    if conn.execute("SELECT to_regclass('conflux_webhooks')").fetchone()[0] is None:
        return {}
    rows = conn.execute("SELECT name, txid, pos, sending_txid, sending_pos, milestone, stats "
                        "FROM conflux_webhooks ORDER BY name").fetchall()
    return {name: {"cursor": (txid, pos),
                   "sending": None if s_txid is None else (s_txid, s_pos),
                   "milestone": milestone, "stats": json.loads(stats)}
            for name, txid, pos, s_txid, s_pos, milestone, stats in rows}


class WebhookRecords:
    """The webhook cursors, written by the holder of the ``webhooks`` lease."""

    def __init__(self, lease: Lease):
        self.lease = lease

    def read(self) -> dict[str, dict]:
        with self.lease.transaction() as conn:
            rows = conn.execute("SELECT name, txid, pos, sending_txid, sending_pos, milestone "
                                "FROM conflux_webhooks").fetchall()
        return {name: {"cursor": (txid, pos),
                       "sending": None if s_txid is None else (s_txid, s_pos),
                       "milestone": milestone}
                for name, txid, pos, s_txid, s_pos, milestone in rows}

    def sending(self, name: str, cursor: Position, end: Position) -> None:
        """Record that the batch after ``cursor`` up to ``end`` is being sent: until it is
        done with, whoever holds the lease sends exactly that batch next."""
        with self.lease.transaction() as conn:
            done = conn.execute("UPDATE conflux_webhooks SET sending_txid = %s, "
                                "sending_pos = %s WHERE name = %s AND txid = %s AND pos = %s",
                                (end[0], end[1], name, cursor[0], cursor[1])).rowcount
        if not done:
            raise LeaseLost(f"webhook {name}: its cursor moved under this holder")

    def advance(self, name: str, cursor: Position, to: Position, update_stats=None) -> None:
        """Move the cursor from ``cursor`` to ``to`` and clear the batch being sent;
        ``update_stats(stats) -> stats`` changes the statistics in the same transaction."""
        with self.lease.transaction() as conn:
            row = conn.execute("SELECT stats FROM conflux_webhooks WHERE name = %s AND "
                               "txid = %s AND pos = %s FOR UPDATE",
                               (name, cursor[0], cursor[1])).fetchone()
            if row is None:
                raise LeaseLost(f"webhook {name}: its cursor moved under this holder")
            stats = json.loads(row[0])
            if update_stats is not None:
                stats = update_stats(stats)
            conn.execute("UPDATE conflux_webhooks SET txid = %s, pos = %s, sending_txid = "
                         "NULL, sending_pos = NULL, stats = %s WHERE name = %s",
                         (to[0], to[1], json.dumps(stats), name))

    def milestone_done(self, name: str, number: int, update_stats=None) -> None:
        with self.lease.transaction() as conn:
            row = conn.execute("SELECT stats FROM conflux_webhooks WHERE name = %s FOR UPDATE",
                               (name,)).fetchone()
            stats = json.loads(row[0]) if row else {}
            if update_stats is not None:
                stats = update_stats(stats)
            conn.execute("UPDATE conflux_webhooks SET milestone = greatest(milestone, %s), "
                         "stats = %s WHERE name = %s", (number, json.dumps(stats), name))


# --------------------------------------------------------------------------------------------
# Scheduled milestones

def last_milestone_row(link) -> dict | None:
    """The cluster's newest milestone (``MilestoneRecords.last``), None before the first."""
    conn = _conn_of(link)
    if conn.execute("SELECT to_regclass('conflux_milestones')").fetchone()[0] is None:
        return None
    return MilestoneRecords(conn).last()


class MilestoneRecords:
    """The cluster's milestones, written by the holder of the ``milestones`` lease."""

    def __init__(self, conn):
        self.conn = conn

    def last(self) -> dict | None:
        """The newest: id, node, made (epoch seconds), position, commit, record."""
        row = self.conn.execute(
            "SELECT id, node, extract(epoch FROM made), txid, pos, commit, record "
            "FROM conflux_milestones ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _milestone_row(row)

    def before(self, number: int) -> dict | None:
        """The newest milestone numbered below ``number`` (as ``last``), or None."""
        row = self.conn.execute(
            "SELECT id, node, extract(epoch FROM made), txid, pos, commit, record "
            "FROM conflux_milestones WHERE id < %s ORDER BY id DESC LIMIT 1",
            (number,)).fetchone()
        return None if row is None else _milestone_row(row)

    def after(self, number: int) -> list[bytes]:
        """The records of the milestones after number ``number``, oldest first."""
        return [bytes(r) for r, in self.conn.execute(
            "SELECT record FROM conflux_milestones WHERE id > %s ORDER BY id",
            (number,)).fetchall()]

    def count_between(self, after: Position, upto: Position) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM conflux_log WHERE (txid, pos) > (%s::text::xid8, %s) "
            "AND (txid, pos) <= (%s::text::xid8, %s)",
            (after[0], after[1], upto[0], upto[1])).fetchone()[0]

    def first_op_time(self) -> float | None:
        row = self.conn.execute("SELECT extract(epoch FROM min(at)) FROM conflux_log").fetchone()
        return None if row[0] is None else float(row[0])

    def record(self, lease: Lease, number: int, position: Position, commit: str,
               record: bytes, replacing: str | None = None) -> None:
        """Record milestone ``number`` (the holder's, checked in the same transaction).
        ``replacing``: the commit of the cluster's last milestone, which never reached anyone
        and which this one is made again in place of; its record is deleted in the same
        transaction, so the cluster never lacks it in between."""
        with lease.transaction() as conn:
            if replacing is not None and not conn.execute(
                    "DELETE FROM conflux_milestones WHERE commit = %s AND id = (SELECT max(id) "
                    "FROM conflux_milestones)", (replacing,)).rowcount:
                raise LeaseLost(f"the milestone of commit {replacing} was replaced by "
                                "another daemon")
            try:
                conn.execute("INSERT INTO conflux_milestones (id, node, made, txid, pos, "
                             "commit, record) VALUES (%s, %s, clock_timestamp(), %s, %s, %s, "
                             "%s)", (number, lease.node, position[0], position[1], commit,
                                     record))
            except psycopg.errors.UniqueViolation:
                raise LeaseLost(f"milestone {number} was recorded by another daemon") from None


def _milestone_row(row) -> dict:
    number, node, made, txid, pos, commit, record = row
    return {"id": number, "node": node, "made": float(made), "position": (txid, pos),
            "commit": commit, "record": bytes(record)}
