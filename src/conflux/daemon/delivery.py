"""Webhook delivery beside the daemon: one process (``conflux.daemon.supervisor``) runs the
``conflux.webhooks.Deliverer`` loop, so that gunicorn's workers deliver nothing themselves."""

from __future__ import annotations

import fcntl
import logging
import os

from conflux.daemon.supervisor import HelperProcess, helper_stop_event
from conflux.engine import Engine
from conflux.errors import InputError, StoreError
from conflux.webhooks import WEBHOOKS_FILE, Deliverer, load_webhooks, start_cursors
from conflux.webhooks_shared import ClusterDeliverer

__all__ = ["DeliveryProcess"]

#: In ``.conflux/``: held by the process delivering the project's webhooks.
_LOCK_FILE = "webhooks.lock"

log = logging.getLogger("conflux.webhooks")


class DeliveryProcess(HelperProcess):
    """The daemon's one delivery process."""

    name = "conflux-webhooks"

    @classmethod
    def start(cls, directory: str) -> "DeliveryProcess | None":
        """Check ``webhooks.toml`` and start delivering; None when there is no such file.

        Bad configuration is refused here, before the daemon serves anything. The cursors of
        new webhooks are recorded before this returns, so every operation the daemon accepts
        afterwards is delivered, however long the new interpreter takes to start.
        """
        with Engine(directory) as engine:
            hooks = load_webhooks(os.path.join(engine.root, WEBHOOKS_FILE),
                                  schema=engine.schema)
            if not hooks:
                return None
            try:
                start_cursors(engine, hooks)
            except StoreError as exc:  # the holder records them when it takes the lease
                log.error("webhooks: %s", exc)
        self = cls(_serve, (os.path.abspath(directory), os.getpid()))
        self.launch()
        log.info("webhooks: delivering to %s (pid %d)", ", ".join(h.name for h in hooks),
                 self.process.pid)
        return self


def _serve(directory: str, parent: int) -> None:
    """The delivery process: hold the project's delivery lock (with a shared op log: the
    cluster's lease), then deliver until SIGTERM or until the daemon that started it is
    gone."""
    logging.basicConfig(level=logging.INFO, format="[conflux-webhooks %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    engine = Engine(directory)
    try:
        if engine.store.shares_log:
            _serve_cluster(engine, stop)
            return
        lock = open(os.path.join(engine.root, _LOCK_FILE), "a+")
        waiting = False
        while not stop.is_set():
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log.warning("another process delivers this project's webhooks; waiting")
                    waiting = True
                stop.wait(1.0)
        if stop.is_set():
            return
        try:
            hooks = load_webhooks(os.path.join(engine.root, WEBHOOKS_FILE),
                                  schema=engine.schema)
        except InputError as exc:
            hooks = []
            log.error("%s; delivering nothing until the daemon is restarted", exc)
        if not hooks:  # edited since the daemon started: idle rather than exit and be restarted
            while not stop.wait(1.0):
                pass
            return
        Deliverer(engine, hooks).run(stop)
    finally:
        engine.close()


def _serve_cluster(engine: Engine, stop) -> None:
    """With a shared op log: deliver while this daemon holds the cluster's ``webhooks``
    lease, wait for it otherwise (``conflux.store.lease``)."""
    from conflux.store.lease import hold

    try:
        hooks = load_webhooks(os.path.join(engine.root, WEBHOOKS_FILE), schema=engine.schema)
    except InputError as exc:
        log.error("%s; delivering nothing until the daemon is restarted", exc)
        hooks = []
    if not hooks:
        while not stop.wait(1.0):
            pass
        return
    hold(engine.settings.store_url, "webhooks", engine.node, stop,
         lambda lease, halt: ClusterDeliverer(engine, hooks, lease).run(halt))
