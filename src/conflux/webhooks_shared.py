"""Webhook delivery when several daemons share one op log (``[store] url``): the delivery loop
of ``conflux.webhooks`` run by the one daemon holding the cluster's ``webhooks`` lease
(``conflux.store.lease``), from cursors that are positions in the shared log, kept in
PostgreSQL, and the status figures of those cursors."""

from __future__ import annotations

import hashlib
import threading
import time

from conflux.webhooks import (_SCAN, Deliverer, Webhook, _Batch, _batch_stats, _json_body,
                              _milestone_failed)

__all__ = ["ClusterDeliverer", "cluster_webhook_status"]


class ClusterDeliverer(Deliverer):
    """Delivery for a project whose op log is shared by several daemons
    (``conflux.store.shared_log``), run by the one process holding the cluster's
    ``webhooks`` lease (``conflux.store.lease``).

    Local sequence numbers differ from daemon to daemon, so a webhook's cursor here is a
    position in the shared log, kept in PostgreSQL (``conflux_webhooks``) and moved only in a
    transaction that checks the lease is still held. Operations are delivered in the shared
    log's order, each once this daemon's store has applied it (its ``seq`` in the body is
    this daemon's). Before a batch's first try its end is recorded: until the batch is done
    with, whoever holds the lease sends exactly that batch next, under the same
    ``X-Conflux-Delivery`` id (derived from the batch's op ids, so the same on every daemon).
    That batch, sent by a holder that died or lost the lease between the receiver's answer and
    the cursor's move, is the only one a receiver can get twice; no operation is ever skipped.
    """

    def __init__(self, engine, hooks: list[Webhook], lease, *, poll_s: float = 0.25):
        from conflux.store.lease import LeaseLost, WebhookRecords, webhook_start

        self._fatal = (LeaseLost,)
        self.engine = engine
        self.hooks = list(hooks)
        self.poll_s = poll_s
        self.lease = lease
        self.records = WebhookRecords(lease)
        webhook_start(lease, {hook.name: hook.from_start for hook in self.hooks})
        found = self.records.read()
        self._cursors = {h.name: found[h.name]["cursor"] for h in self.hooks}
        self._saved = dict(self._cursors)
        self._sending = {h.name: found[h.name]["sending"] for h in self.hooks}
        self._milestone = {h.name: found[h.name]["milestone"] for h in self.hooks}
        self._saved_at = {h.name: float("-inf") for h in self.hooks}
        self._lost = None

    def run(self, stop: threading.Event) -> None:
        """As ``Deliverer.run``; raises ``LeaseLost`` when the lease was lost meanwhile."""
        halt = threading.Event()

        def chain():
            while not halt.is_set():
                if stop.wait(0.2):
                    halt.set()
        threading.Thread(target=chain, daemon=True).start()
        try:
            super().run(halt)
        finally:
            halt.set()
        if self._lost is not None:
            raise self._lost

    def _serve_hook(self, hook: Webhook, stop: threading.Event) -> None:
        try:
            super()._serve_hook(hook, stop)
        except self._fatal as exc:  # every webhook stops: another daemon delivers now
            self._lost = exc
            stop.set()

    def _next_batch(self, hook: Webhook) -> _Batch | None:
        name, engine = hook.name, self.engine
        pinned = self._sending[name]
        rows = self.lease.rows(self._cursors[name], upto=pinned, limit=_SCAN)
        local = []
        with engine.store.read() as txn:
            for at, op_id, entry in rows:
                seq = engine._seq_of(txn, op_id)
                if seq is None:  # not applied here yet: deliver up to it, wait for the rest
                    break
                op = engine.core.decode_entry(entry)
                op.seq = seq
                local.append((at, op))
        if not local or (pinned is not None and local[-1][0] != pinned):
            return None
        picked = []
        scanned_to = local[-1][0]
        for at, op in local:
            if hook.wants(op):
                picked.append(op)
                if len(picked) == hook.batch_size:
                    scanned_to = at
                    break
        batch = _Batch(picked, scanned_to)
        if picked:
            batch.body = _json_body({"event": "op", "webhook": name,
                                     "ops": [engine.op_dict(op) for op in picked]})
        return batch

    def _delivery_id(self, hook: Webhook, batch: _Batch) -> str:
        digest = hashlib.sha256("\n".join(op.op_id for op in batch.ops).encode())
        return f"{hook.name}-{digest.hexdigest()[:32]}"

    def _before_send(self, hook: Webhook, batch: _Batch) -> None:
        name = hook.name
        if self._sending[name] != batch.scanned_to:
            self.records.sending(name, self._saved[name], batch.scanned_to)
            self._sending[name] = batch.scanned_to

    def _advance(self, hook: Webhook, cursor, batch: _Batch | None,
                 error: str | None = None) -> None:
        name = hook.name
        update = None if batch is None else (lambda stats: _batch_stats(stats, batch, error))
        self.records.advance(name, self._saved[name], cursor, update)
        self._cursors[name] = self._saved[name] = cursor
        self._sending[name] = None
        self._saved_at[name] = time.monotonic()

    def _milestones_due(self, hook: Webhook) -> list:
        from conflux.milestones import Milestone
        from conflux.store.lease import MilestoneRecords

        with self.lease.transaction() as conn:
            records = MilestoneRecords(conn).after(self._milestone[hook.name])
        return [Milestone.unpack(raw) for raw in records]

    def _milestone_done(self, hook: Webhook, m, error: str | None) -> None:
        update = None if error is None else (lambda stats: _milestone_failed(stats, m, error))
        self.records.milestone_done(hook.name, m.id, update)
        self._milestone[hook.name] = m.id


def cluster_webhook_status(row: dict, pending: int) -> dict:
    """``webhook_status``'s figures for one webhook of a cluster (``conflux.store.lease``
    ``webhook_rows``): its cursor is a position in the shared log, ``pending`` the rows
    beyond it."""
    stats = row["stats"]
    return {"cursor": list(row["cursor"]), "pending": pending,
            "sending": None if row["sending"] is None else list(row["sending"]),
            "delivered": stats.get("delivered", 0), "failed": stats.get("failed", 0),
            "failed_ops": stats.get("failed_ops", 0), "last_error": stats.get("last_error"),
            "last_failed_seqs": stats.get("last_failed_seqs"),
            "last_failed_at": stats.get("last_failed_at"),
            "last_delivered_at": stats.get("last_delivered_at")}
