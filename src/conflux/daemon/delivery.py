"""Webhook delivery beside the daemon: one process (``conflux.daemon.supervisor``) runs the
``conflux.webhooks.Deliverer`` loop, so that gunicorn's workers deliver nothing themselves."""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from conflux.daemon.supervisor import HelperProcess, helper_stop_event
from conflux.engine import CONFLUX_DIR, Engine
from conflux._tomlfile import file_stamp
from conflux.errors import ConfluxError, InputError, StoreError
from conflux.webhook_registry import Registry, registered_hooks
from conflux.webhooks import WEBHOOKS_FILE, Deliverer, load_webhooks, start_cursors
from conflux.webhooks_shared import ClusterDeliverer

__all__ = ["DeliveryProcess", "Delivery"]

#: In ``.conflux/``: held by the process delivering the project's webhooks.
_LOCK_FILE = "webhooks.lock"

log = logging.getLogger("conflux.webhooks")


class DeliveryProcess(HelperProcess):
    """The daemon's one delivery process."""

    name = "conflux-webhooks"

    @classmethod
    def start(cls, directory: str) -> "DeliveryProcess | None":
        """Check ``webhooks.toml`` and start delivering; None when there is no webhook (in
        the file or registered over REST: ``conflux.webhook_registry``).

        Bad configuration is refused here, before the daemon serves anything. The cursors of
        new webhooks are recorded before this returns, so every operation the daemon accepts
        afterwards is delivered, however long the new interpreter takes to start.
        """
        with Engine(directory) as engine:
            hooks = _all_hooks(engine)
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


class Delivery:
    """In the daemon's master: the delivery process, started at once when there are webhooks,
    else as soon as one is registered over REST (``webhooks.json`` looked at every second)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        path = Registry(os.path.join(directory, CONFLUX_DIR)).path
        stamp = file_stamp(path)  # before the look: a registration meanwhile is seen
        self.process = DeliveryProcess.start(directory)  # a bad webhooks.toml: InputError
        if self.process is None:
            threading.Thread(target=self._await, args=(path, stamp), daemon=True,
                             name="webhooks-await").start()

    def _await(self, path: str, stamp) -> None:
        while not self._stopping.wait(1.0):
            if file_stamp(path) == stamp:
                continue
            stamp = file_stamp(path)
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.process = DeliveryProcess.start(self.directory)
                except Exception:  # noqa: BLE001 - logged; tried again at the next change
                    log.exception("webhooks: cannot start delivering")
                    continue
            if self.process is not None:
                return

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            if self.process is not None:
                self.process.stop()


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
        _deliver(engine, stop)
    finally:
        engine.close()


def _deliver(engine: Engine, stop) -> None:
    """Deliver to the webhooks of ``webhooks.toml`` and those registered over REST; when the
    registrations change, stop every webhook's thread where it is and start again with the
    new set (each carries on from its cursor)."""
    registry = Registry(engine.root)
    while not stop.is_set():
        stamp = file_stamp(registry.path)
        try:
            hooks = _all_hooks(engine)
        except InputError as exc:
            hooks = []
            log.error("%s; delivering nothing until the daemon is restarted", exc)
        except ConfluxError as exc:  # the registry: delivering what the file declares
            log.error("%s; delivering the webhooks of %s only", exc, WEBHOOKS_FILE)
            hooks = load_webhooks(os.path.join(engine.root, WEBHOOKS_FILE),
                                  schema=engine.schema)
        changed = threading.Event()

        def watch():
            while not stop.wait(1.0):
                if file_stamp(registry.path) != stamp:
                    changed.set()
                    return
            changed.set()
        threading.Thread(target=watch, daemon=True, name="webhooks-registry").start()
        if hooks:
            log.info("webhooks: delivering to %s", ", ".join(h.name for h in hooks))
            Deliverer(engine, hooks).run(changed)
        else:
            changed.wait()


def _all_hooks(engine: Engine) -> list:
    """The webhooks of ``webhooks.toml``, then those registered over REST and enabled (the
    file's win: ``conflux.webhook_registry``)."""
    declared = load_webhooks(os.path.join(engine.root, WEBHOOKS_FILE), schema=engine.schema)
    if engine.store.shares_log:
        return declared
    return declared + registered_hooks(Registry(engine.root).records(),
                                       {h.name for h in declared})


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
