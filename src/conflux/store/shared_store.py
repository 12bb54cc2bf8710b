"""A store whose op log of record is shared by several nodes, on PostgreSQL
(``conflux.store.shared_log``): the node's resolved state, indexes and local copy of the log
stay in LMDB (``LmdbStore``); what the node binds itself is appended to the shared log
before the local commit, inside the write transaction.

Why before: an op is then in the log of record before any node (this one included) can have
applied it, so a write that PostgreSQL did not take is written nowhere (the caller gets a
``StoreError``, 503, and may retry), and an op id is bound once across the cluster: a commit
naming an op id that another node logged first is thrown away whole (``LoggedElsewhere``),
and the engine applies that node's entry and runs the commit again, acknowledging it.

A crash between PostgreSQL's commit and LMDB's leaves an op in the shared log that this
node's store lacks: the replicator applies every row of the log, this node's own included,
so it comes back. Holding LMDB's writer lock over PostgreSQL's commit keeps the replicator
from applying a row of this node's while the commit that bound it is still open.
"""

from __future__ import annotations

import threading

from conflux.errors import first_line, StoreError
from conflux.store.base import LoggedElsewhere
from conflux.store.layout import LogChunk
from conflux.store.lmdb_store import LmdbStore

__all__ = ["SharedStore"]


class SharedStore(LmdbStore):
    """The node's LMDB store under ``path``, its op log of record at ``url``."""

    shares_log = True

    def __init__(self, path: str, url: str, *, sync: bool = True):
        super().__init__(path, sync=sync)
        self.url = url
        self._log = None
        self._local = threading.local()
        self._connect = threading.Lock()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        super().close()

    def shared_log(self):
        """This store's connection to the shared log (made, with the log's tables, on first
        use; made again after a failure)."""
        import psycopg

        from conflux.store.shared_log import SharedLog

        with self._connect:
            if self._log is None:
                with self.read() as txn:
                    node = self.meta_get(txn, "node").decode()
                try:
                    log = SharedLog(self.url, node)
                    log.create()
                except psycopg.Error as exc:
                    raise _unreachable(exc) from None
                self._log = log
            return self._log

    def drop_connection(self) -> None:
        with self._connect:
            if self._log is not None:
                try:
                    self._log.close()
                finally:
                    self._log = None

    def log_append(self, txn, chunks, publish=None) -> None:
        super().log_append(txn, chunks)
        if publish:
            entries = [entry for _, chunk in chunks for entry in LogChunk.unpack(chunk)]
            self._outbox().extend(zip(publish, entries))

    def _outbox(self) -> list:
        outbox = getattr(self._local, "outbox", None)
        if outbox is None:
            outbox = self._local.outbox = []
        return outbox

    def _attempt(self, body, commit, pending):
        self._local.outbox = []
        try:
            return super()._attempt(body, commit, pending)
        finally:
            self._local.outbox = []

    def _before_commit(self) -> None:
        import psycopg

        outbox = self._outbox()
        if not outbox:
            return
        log = self.shared_log()
        try:
            logged = log.append_whole(outbox)
        except psycopg.Error as exc:
            self.drop_connection()
            raise _unreachable(exc) from None
        if logged:
            raise LoggedElsewhere(logged)


def _unreachable(exc) -> StoreError:
    return StoreError(f"the shared op log cannot be reached ({type(exc).__name__}: "
                      f"{first_line(exc)})"
                      ": nothing was written on this node; retry with the same op ids (an "
                      "op the log took already is acknowledged, not applied twice)")
