"""The project's status: the engine's figures, the last milestone and the webhooks' delivery
figures, for ``conflux status`` and ``GET /v1/status``.

Gathered here, above the engine, the milestones and the webhooks, so that none of them reaches
for another's figures.
"""

from __future__ import annotations

from conflux.milestones import last_milestone
from conflux.webhooks import webhook_status

__all__ = ["project_status"]


def project_status(engine, *, reader=None) -> dict:
    """``engine.status()`` with ``last_milestone`` (None before the first one) and
    ``webhooks`` (per webhook the store has seen: cursor, backlog, deliveries, failures) and
    ``shared_log`` (with a ``[store] url``: what is published there; else None); a
    ``reader`` needs ``read`` on everything (``Engine.status``)."""
    status = engine.status(reader=reader)
    store = engine.store
    # NOTE: a read of its own, so while others write it may see a few more operations than
    # the engine's figures did; the milestone's pending count is taken from this same read,
    # so it is never negative
    with store.read() as txn:
        seq = store.log_tail(txn)[0]
        m = last_milestone(store, txn)
        status["last_milestone"] = None if m is None else {
            "id": m.id, "commit": m.commit, "title": m.title, "seq": m.seq,
            "pending_operations": seq - m.seq}
        status["webhooks"] = webhook_status(store, txn)
    status["shared_log"] = engine.replication_status()
    return status
