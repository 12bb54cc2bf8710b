"""The daemon's milestone scheduler: a process (``conflux.daemon.supervisor``) that makes a
milestone whenever the schedule of ``config.toml`` (``every_ops``, ``every_seconds``) calls
for one, and pushes it when a remote is configured."""

from __future__ import annotations

import logging
import os

from conflux.daemon.supervisor import HelperProcess, helper_stop_event
from conflux.engine import CONFLUX_DIR, Engine
from conflux.errors import InputError
from conflux.milestones import Milestones, MilestoneSettings

__all__ = ["SchedulerProcess", "scheduler_start"]

log = logging.getLogger("conflux.milestones")


class SchedulerProcess(HelperProcess):
    name = "conflux-milestones"


def scheduler_start(directory: str) -> SchedulerProcess | None:
    """Start the scheduler when ``config.toml`` sets ``every_ops`` or ``every_seconds``; None
    otherwise."""
    settings = MilestoneSettings.load(os.path.join(directory, CONFLUX_DIR))
    if not settings.every_ops and not settings.every_seconds:
        return None
    helper = SchedulerProcess(_schedule, (os.path.abspath(directory), os.getpid()))
    helper.launch()
    return helper


def _schedule(directory: str, parent: int) -> None:
    """The scheduler process: every second (or ``every_seconds`` if shorter), make a
    milestone if one is due, and push it when a remote is configured. With a shared op log,
    only while this daemon holds the cluster's ``milestones`` lease (``conflux.store.lease``).
    """
    logging.basicConfig(level=logging.INFO, format="[conflux-milestones %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    engine = Engine(directory)
    milestones = Milestones(engine)
    try:
        if engine.store.shares_log:
            import psycopg

            from conflux.store.lease import LeaseLost, hold

            # a broken connection ends the loop too: hold() connects again and waits for
            # the lease
            fatal = (LeaseLost, psycopg.OperationalError)
            hold(engine.settings.store_url, "milestones", engine.node, stop,
                 lambda lease, halt: _ticks(milestones, halt,
                                            lambda: milestones.create_if_due_shared(lease),
                                            fatal=fatal))
        else:
            _ticks(milestones, stop, milestones.create_if_due)
    finally:
        engine.close()


def _ticks(milestones: Milestones, stop, create_if_due, fatal: tuple = ()) -> None:
    """Until ``stop``: make a milestone when one is due, and push it. A milestone that is
    refused (schema violations) is retried at the next tick, and logged once per change;
    any other failure (the remote cannot be fetched) is retried too, and logged once until
    it changes; an exception in ``fatal`` (a lost lease) ends the loop."""
    engine = milestones.engine
    tick = min(1.0, milestones.settings.every_seconds or 1.0)
    refused_at = failed = None
    while not stop.wait(tick):
        try:
            made = create_if_due()
        except fatal:
            raise
        except InputError as exc:  # violations: wait for the next change
            seq = engine.last_seq()
            if refused_at != seq:
                log.warning("scheduled milestone refused: %s", exc)
                refused_at = seq
            continue
        except Exception as exc:
            if failed != str(exc):
                log.exception("scheduled milestone failed")
                failed = str(exc)
            continue
        failed = None
        if made is not None:
            log.info("milestone %d: %s (%d operations)", made.id, made.commit[:12],
                     made.operations)
            if milestones.settings.remote:
                try:
                    milestones.push()
                except Exception as exc:
                    log.error("push to %s failed: %s", milestones.settings.remote, exc)
