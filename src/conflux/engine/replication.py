"""Replication through a shared op log (``conflux.store.shared_log``): how several stores,
each a daemon's, converge on one set of operations.

What a node binds itself reaches the shared log in its own commit (``SharedStore``);
``catch_up_from`` applies what the log holds beyond what this store has read of it, in the
log's order, as bound entries (``apply_entries``: the merge rules make the order irrelevant,
and an op id already logged here is acknowledged, not applied twice). ``publish_to`` appends
a store's whole local log to a shared log, for a project moving onto one (``conflux store
migrate``). Each keeps its place in the store's meta values, written with the step it marks
or after it: a crash in between repeats the step, and repeating it changes nothing.
"""

from __future__ import annotations

import time

from conflux.errors import first_line, InputError, StoreError

__all__ = ["Replication", "open_shared_log", "check_shared_log"]

_PUBLISHED = "shared:published"     # the last local sequence number in the shared log
_READ_TXID = "shared:read_txid"     # the shared log's position this store has applied to
_READ_POS = "shared:read_pos"


def _position_marks(at) -> dict[str, int]:
    return {_READ_TXID: at[0], _READ_POS: at[1]}


class Replication:
    """Publishing to and catching up from a shared log (a part of ``Engine``)."""

    #: Where this process has read the shared log up to (None: as the store's marks say),
    #: the position the store's marks hold, and when this process last wrote them.
    _shared_at = None
    _shared_marked = None
    _shared_saved = 0.0

    def _marks(self, *keys) -> list[int]:
        store = self.store
        with store.read() as txn:
            return [store.meta_int(txn, key) for key in keys]

    def _set_marks(self, **values) -> None:
        store = self.store

        def body(txn):
            for key, value in values.items():
                store.meta_put_int(txn, key, value)
        store.write(body)

    def publish_to(self, log, *, batch: int = 1_000) -> int:
        """Append the ops logged here since the last publication to ``log``; the number
        appended (ops already there, from this node or a retry elsewhere, are not counted)."""
        core = self.core
        [published] = self._marks(_PUBLISHED)
        appended = 0
        pending = self.entries(published + 1)
        for lo in range(0, len(pending), batch):
            chunk = pending[lo:lo + batch]
            fresh = log.append([(core.decode_entry(data).op_id, bytes(data))
                                for _, data in chunk])
            appended += sum(fresh)
            self._set_marks(**{_PUBLISHED: chunk[-1][0]})
        return appended

    def catch_up_from(self, log, *, batch: int = 1_000) -> int:
        """Apply what the shared ``log`` holds beyond what this store last read of it, in the
        log's order; the number of rows read. Rows this node published are read too: one
        whose local commit a crash lost is applied like any other (the rest are found in the
        local log and skipped).

        The position read up to is written with the entries it applies, in their commit;
        after rows that needed nothing it is written at most once a second (a restart
        reads those rows again, and skips them again)."""
        at = self._shared_at
        if at is None:
            at = self._shared_marked = tuple(self._marks(_READ_TXID, _READ_POS))
        read, node = 0, self.node
        while True:
            rows, new_at = log.tail(at, limit=batch)
            if not rows:
                break
            own = [op_id for op_id, origin, _ in rows if origin == node]
            have = self._logged(own) if own else set()
            missing = [entry for op_id, origin, entry in rows
                       if origin != node or op_id not in have]
            if missing:
                self.apply_entries(missing, logged=True, marks=_position_marks(new_at))
                self._shared_marked = new_at
            at = new_at
            read += len(rows)
        self._shared_at = at
        # NOTE: compared with what the marks hold, not with where this call began: rows
        # read during the pause are written by the next call after it, even one that reads
        # nothing (else the marks, which status reads, stay behind until more rows come)
        if at != self._shared_marked and time.monotonic() - self._shared_saved >= 1.0:
            self._set_marks(**_position_marks(at))
            self._shared_marked = at
            self._shared_saved = time.monotonic()
        return read

    def forget_shared_position(self) -> None:
        """Forget how far this store has published to and read a shared log: a project
        moving onto a shared log, or off one, may be given another log next, whose
        positions these are not."""
        self._set_marks(**{_PUBLISHED: 0, _READ_TXID: 0, _READ_POS: 0})
        self._shared_at = None

    def keep_shared_position(self) -> None:
        """Write where this process has read the shared log up to into the store now (it is
        otherwise written at most once a second while rows need nothing)."""
        if self._shared_at is not None:
            self._set_marks(**_position_marks(self._shared_at))

    def _logged(self, op_ids) -> set[str]:
        """Which of ``op_ids`` this store has logged."""
        with self.store.read() as txn:
            return {op_id for op_id in op_ids if self._seq_of(txn, op_id) is not None}

    def shared_position(self) -> tuple[int, int]:
        """Where this store has applied the shared log up to."""
        if self._shared_at is not None:
            return self._shared_at
        return tuple(self._marks(_READ_TXID, _READ_POS))

    def replication_status(self) -> dict | None:
        """With a shared op log (``[store] url``): where it is (the URL as configured: it holds
        no password), this node's name, how far this store has applied it and how far behind
        that is (rows, and the age of the oldest unapplied one in milliseconds), and the nodes
        seen in the last minute; ``reachable`` False (and ``error``) while the log cannot be
        reached. None without a shared log."""
        url = self.settings.store_url
        if not url:
            return None
        import psycopg

        at = self.shared_position()
        status = {"url": url, "node": self.node, "read_position": list(at)}
        try:
            log = self.store.shared_log()
            lag_ops, lag_ms = log.lag(at)
            nodes = log.nodes()
        except (psycopg.Error, StoreError) as exc:
            self.store.drop_connection()
            return {**status, "reachable": False, "error": first_line(exc)}
        return {**status, "reachable": True, "lag_ops": lag_ops, "lag_ms": round(lag_ms),
                "nodes": nodes}


def open_shared_log(url: str, node: str, unchanged: str):
    """The shared log at ``url``, its tables made; ``InputError`` (ending with
    ``unchanged``) when PostgreSQL cannot be reached or refuses."""
    import psycopg

    from conflux.store.shared_log import SharedLog

    try:
        log = SharedLog(url, node)
    except psycopg.Error as exc:
        raise InputError(f"cannot reach the shared op log at {url} ({first_line(exc)}); "
                         f"{unchanged}") from None
    try:
        log.create()
    except psycopg.Error as exc:
        log.close()
        raise InputError(f"cannot make the shared op log's tables at {url} "
                         f"({first_line(exc)}); {unchanged}") from None
    return log


def check_shared_log(url: str) -> None:
    """Check ``url`` as ``[store] url`` and make the log's tables there (once), before
    ``conflux init --store`` creates anything: ``InputError`` when it is not a usable URL or
    PostgreSQL cannot be reached."""
    from conflux.engine.settings import store_url_problem

    problem = store_url_problem(url)
    if problem is not None:
        raise InputError(f"--store {problem}; nothing was created")
    open_shared_log(url, "init", "nothing was created").close()
