"""The daemon's replicator: a process (``conflux.daemon.supervisor``) that keeps the project's
store and the shared op log of ``config.toml``'s ``[store] url`` in step, for as long as the
daemon runs: it publishes the ops this daemon logged and applies the ops the other daemons
published (``Engine.publish_to``, ``Engine.catch_up_from``), woken by the log's ``NOTIFY`` or
every ``POLL_S`` seconds. A PostgreSQL that cannot be reached is logged once per outage and
tried again; nothing is lost meanwhile (the local log is the outbox)."""

from __future__ import annotations

import logging
import os

from conflux.daemon.supervisor import HelperProcess, helper_stop_event
from conflux.engine import Engine

__all__ = ["ReplicatorProcess", "replicator_start"]

#: The longest a change waits for the next look when a wake-up is missed.
POLL_S = 0.5


class ReplicatorProcess(HelperProcess):
    name = "conflux-replicator"


def replicator_start(directory: str, url: str | None) -> ReplicatorProcess | None:
    """Start the replicator when the project has a shared log; None otherwise."""
    if not url:
        return None
    helper = ReplicatorProcess(_replicate, (os.path.abspath(directory), url, os.getpid()))
    helper.launch()
    return helper


def _replicate(directory: str, url: str, parent: int) -> None:
    import psycopg

    from conflux.store.shared_log import SharedLog

    log = logging.getLogger("conflux.replicator")
    logging.basicConfig(level=logging.INFO, format="[conflux-replicator %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    engine = Engine(directory)
    shared, down = None, False
    try:
        while not stop.is_set():
            try:
                if shared is None:
                    shared = SharedLog(url, engine.node)
                    shared.create()
                    if down:
                        log.info("the shared log is reachable again")
                    down = False
                engine.publish_to(shared)
                engine.catch_up_from(shared)
                shared.wait(POLL_S)
            except psycopg.Error as exc:
                if not down:
                    log.error("the shared log cannot be reached (%s); retrying", exc)
                down = True
                if shared is not None:
                    shared.close()
                shared = None
                stop.wait(POLL_S)
    finally:
        if shared is not None:
            shared.close()
        engine.close()
