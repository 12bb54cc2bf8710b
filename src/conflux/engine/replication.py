"""Replication through a shared op log (``conflux.store.shared_log``): how several stores,
each a daemon's, converge on one set of operations.

The local op log is the outbox: ``publish_to`` appends what this store logged since the last
publication to the shared log; ``catch_up_from`` applies what other nodes published, in the
shared log's order, as bound entries (``apply_entries``: the merge rules make the order
irrelevant, and an op id already logged here is acknowledged, not applied twice). Both keep
their place in the store's meta values, written after the step they mark: a crash in
between repeats the step, and repeating it changes nothing.
"""

from __future__ import annotations

__all__ = ["Replication"]

_PUBLISHED = "shared:published"     # the last local sequence number in the shared log
_READ_TXID = "shared:read_txid"     # the shared log's position this store has applied to
_READ_POS = "shared:read_pos"


class Replication:
    """Publishing to and catching up from a shared log (a part of ``Engine``)."""

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
        """Apply what other nodes appended to ``log`` since this store last read it; the
        number of ops read."""
        txid, pos = self._marks(_READ_TXID, _READ_POS)
        read = 0
        while True:
            rows, (txid, pos) = log.tail((txid, pos), limit=batch)
            if not rows:
                return read
            foreign = [entry for _, node, entry in rows if node != self.node]
            if foreign:
                self.apply_entries(foreign)
            self._set_marks(**{_READ_TXID: txid, _READ_POS: pos})
            read += len(rows)

    def replication_status(self) -> dict | None:
        """With a shared op log (``[store] url``): where it is (the URL as configured: it holds
        no password), the last local sequence number published there and how many local ops
        wait to be, and how many rows of it this store has applied up to; None without one."""
        url = self.settings.store_url
        if not url:
            return None
        published, txid, pos = self._marks(_PUBLISHED, _READ_TXID, _READ_POS)
        return {"url": url, "published_seq": published,
                "unpublished": self.last_seq() - published, "read_position": [txid, pos]}
