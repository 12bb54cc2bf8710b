"""The daemon's replicator: a process (``conflux.daemon.supervisor``) that keeps the project's
store and the shared op log of ``config.toml``'s ``[store] url`` in step, for as long as the
daemon runs: it publishes the ops this daemon logged and applies the ops the other daemons
published (``Engine.publish_to``, ``Engine.catch_up_from``), woken by the log's ``NOTIFY`` or
every ``POLL_S`` seconds. A PostgreSQL that cannot be reached is logged once per outage and
tried again; nothing is lost meanwhile (the local log is the outbox)."""

from __future__ import annotations

import contextlib
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


class SharedLink:
    """A daemon process's connection to the shared op log: made (and the log's table with it)
    on first use, and made again after PostgreSQL could not be reached."""

    def __init__(self, url: str, node: str):
        self.url, self.node, self.log = url, node, None

    def use(self, step):
        """``step(log)``; a ``psycopg.Error`` drops the connection and is raised."""
        import psycopg

        from conflux.store.shared_log import SharedLog

        try:
            if self.log is None:
                self.log = SharedLog(self.url, self.node)
                self.log.create()
            return step(self.log)
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        if self.log is not None:
            with contextlib.suppress(Exception):
                self.log.close()
            self.log = None


def _replicate(directory: str, url: str, parent: int) -> None:
    import psycopg

    log = logging.getLogger("conflux.replicator")
    logging.basicConfig(level=logging.INFO, format="[conflux-replicator %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    engine = Engine(directory)
    link, down = SharedLink(url, engine.node), False

    def step(shared):
        engine.publish_to(shared)
        engine.catch_up_from(shared)
        shared.wait(POLL_S)

    try:
        while not stop.is_set():
            try:
                link.use(step)
            except psycopg.Error as exc:
                if not down:
                    log.error("the shared log cannot be reached (%s); retrying", exc)
                down = True
                stop.wait(POLL_S)
                continue
            if down:
                log.info("the shared log is reachable again")
            down = False
    finally:
        link.close()
        engine.close()
