"""The daemon's replicator: a process (``conflux.daemon.supervisor``) that keeps the project's
store and the shared op log of ``config.toml``'s ``[store] url`` in step, for as long as the
daemon runs: it applies what the log holds beyond what the store has read of it
(``Engine.catch_up_from``), woken by the log's ``NOTIFY`` or every ``POLL_S`` seconds. (What
the daemon binds itself reaches the log in its own commit: ``conflux.store.shared_store``.) A
PostgreSQL that cannot be reached is logged once per outage and tried again."""

from __future__ import annotations

import logging
import os
import time

from conflux.daemon.supervisor import HelperProcess, helper_stop_event
from conflux.engine import Engine

__all__ = ["ReplicatorProcess", "replicator_start"]

#: The longest a change waits for the next look when a wake-up is missed.
POLL_S = 0.5
#: How often the daemon tells the shared log it is alive, and how far it has applied it.
HEARTBEAT_S = 1.0


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

    from conflux.errors import StoreError

    log = logging.getLogger("conflux.replicator")
    logging.basicConfig(level=logging.INFO, format="[conflux-replicator %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    engine, down = Engine(directory), False
    store, beat = engine.store, 0.0
    try:
        while not stop.is_set():
            try:
                shared = store.shared_log()
                engine.catch_up_from(shared)
                if time.monotonic() - beat >= HEARTBEAT_S:
                    shared.heartbeat(engine.shared_position())
                    beat = time.monotonic()
                shared.wait(POLL_S)
            except (psycopg.Error, StoreError) as exc:
                store.drop_connection()
                if not down:
                    log.error("the shared log cannot be reached (%s); retrying", exc)
                down = True
                stop.wait(POLL_S)
                continue
            if down:
                log.info("the shared log is reachable again")
            down = False
    finally:
        engine.close()
