"""The project's status: the engine's figures, the last milestone, the webhooks' delivery
figures and the open watch streams, for ``conflux status`` and ``GET /v1/status``.

Gathered here, above the engine, the milestones and the webhooks, so that none of them reaches
for another's figures.
"""

from __future__ import annotations

import contextlib
import os

from conflux.errors import first_line
from conflux.milestones import last_milestone
from conflux.webhooks import webhook_status
from conflux.webhooks_shared import cluster_webhook_status

__all__ = ["project_status", "publish_watchers", "watcher_counts"]


#: Where each daemon process keeps its count of open watch streams (``.conflux/watchers/PID``).
WATCHERS_DIR = "watchers"


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc``), which a reused pid does not share;
    None if there is no such process (or no ``/proc``: then every count is kept)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # the fields after the command name (which may hold spaces and parentheses)
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else ""


def publish_watchers(root: str, count: int) -> None:
    """Write this process's count of open watch streams (SSE and gRPC), with the process's
    start time, where ``watcher_counts`` reads it. Best effort: the count is for people,
    never a reason to refuse a watcher. No link is followed, and the file is replaced whole."""
    folder = os.path.join(root, WATCHERS_DIR)
    pid = os.getpid()
    path = os.path.join(folder, str(pid))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        temp = f"{path}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{max(0, int(count))} {_started(pid) or ''}\n")
        os.replace(temp, path)
    except OSError:
        pass


def watcher_counts(root: str) -> dict:
    """``{"open", "processes"}``: the watch streams open in the running daemon processes of
    this project, and how many processes hold some. A count left by a process that is gone
    (or whose pid another process now has) is removed, and anything that is not a count
    written by ``publish_watchers`` is passed over."""
    folder = os.path.join(root, WATCHERS_DIR)
    total = processes = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return {"open": 0, "processes": 0}
    for name in names:
        base = name[:-4] if name.endswith(".tmp") else name
        if not (base.isascii() and base.isdigit() and 0 < len(base) <= 10):
            continue
        pid = int(base)
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                text = handle.read(100).decode("ascii", "replace").split()
        except OSError:
            continue
        started = _started(pid)
        if started is None or (len(text) > 1 and started and text[1] != started):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))  # its process is gone
            continue
        if name != base or not text or not (text[0].isascii() and text[0].isdigit()):
            continue
        count = int(text[0][:9])
        if count:
            total += count
            processes += 1
    return {"open": total, "processes": processes}


def project_status(engine, *, reader=None) -> dict:
    """``engine.status()`` with ``last_milestone`` (None before the first one) and
    ``webhooks`` (per webhook the store has seen: cursor, backlog, deliveries, failures) and
    ``shared_log`` (with a ``[store] url``: what is published there, and which daemon
    holds each lease; else None; the webhooks and the last milestone are then the
    cluster's, from PostgreSQL); a
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
    status["watchers"] = watcher_counts(engine.root)
    status["shared_log"] = shared = engine.replication_status()
    if shared is not None and shared.get("reachable"):
        _cluster_status(engine, status, shared)
    return status


def _cluster_status(engine, status: dict, shared: dict) -> None:
    """With a shared op log: which daemon holds each lease (``shared_log.leases``), the
    webhooks' cluster-wide cursors, and the cluster's last scheduled milestone."""
    import psycopg

    from conflux.milestones import Milestone
    from conflux.store.lease import holders, last_milestone_row, webhook_rows

    log = engine.store.shared_log()
    try:
        shared["leases"] = holders(log)
        rows = webhook_rows(log)
        status["webhooks"] = {name: cluster_webhook_status(row, log.lag(row["cursor"])[0])
                              for name, row in rows.items()}
        last = last_milestone_row(log)
        if last is not None:
            m = Milestone.unpack(last["record"])
            status["last_milestone"] = {
                "id": m.id, "commit": m.commit, "title": m.title, "seq": m.seq,
                "node": last["node"], "position": list(last["position"]),
                "pending_operations": log.lag(last["position"])[0]}
    except psycopg.Error as exc:
        engine.store.drop_connection()
        shared["leases_error"] = first_line(exc)
