"""Supervision of the daemon's helper processes, beside gunicorn's workers: the commit
service (``conflux.daemon.commits``), webhook delivery (``conflux.daemon.delivery``) and the
milestone scheduler (``conflux.daemon.scheduler``).

Each is a fresh interpreter (``multiprocessing`` spawn), so no LMDB environment crosses a
fork; a thread of the daemon's master starts it again, after a pause, if it ever dies. A
helper ignores Ctrl-C (the daemon stops it, after its workers have finished their requests)
and stops by itself when the daemon that started it is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time

__all__ = ["HelperProcess", "exited", "helper_stop_event"]

log = logging.getLogger("conflux.daemon")


class HelperProcess:
    """One helper process, supervised by a thread of the process that launched it."""

    name = "conflux-helper"
    _RESTART_S = (1.0, 60.0)  # first pause before a restart, doubling up to the second

    def __init__(self, target, args: tuple):
        self._target, self._args = target, args
        self.process = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"{self.name}-supervisor")

    def launch(self) -> None:
        self._spawn()
        self._supervisor.start()

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=_run_named, args=(self.name, self._target,
                                                           *self._args),
                                  name=self.name, daemon=True)
        process.start()
        self.process = process

    def _supervise(self) -> None:
        pause = self._RESTART_S[0]
        while not self._stopping.is_set():
            started = time.monotonic()
            while not exited(self.process, 1.0):
                if self._stopping.is_set():
                    return
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 10 * self._RESTART_S[1]:
                pause = self._RESTART_S[0]  # it had been running well: no long pause
            log.error("%s (pid %d) exited; starting another in %.0f s", self.name,
                      self.process.pid, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, self._RESTART_S[1])
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM, wait up to ``grace_s`` for the work in hand, then SIGKILL."""
        with self._lock:
            self._stopping.set()
            process = self.process
        # NOTE: gunicorn's master reaps every child (waitpid(-1)), so the exit status may be
        # gone: wait on the process's sentinel, which closes when it exits, not on its pid.
        process.terminate()
        process.join(grace_s)
        if not exited(process):
            process.kill()
            process.join(5.0)
        self._supervisor.join(5.0)

    @staticmethod
    def forget_in_worker() -> None:
        """Run in each forked gunicorn worker: the worker inherited the master's record of
        its children, and multiprocessing's exit handler would otherwise SIGTERM the helpers
        (not the worker's children) whenever a worker exits or is restarted."""
        import multiprocessing.process as mp_process

        mp_process._children.clear()  # NOTE: no public API forgets an inherited child


def _run_named(name: str, target, *args) -> None:
    """In the helper: take ``name`` as the process name ``ps``/``top`` show (and that
    ``/proc/PID/comm`` holds, cut to 15 bytes), then run."""
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(name[:15])
    except OSError:
        pass  # not Linux: the name is cosmetic
    target(*args)


def exited(process, timeout: float = 0.0) -> bool:
    from multiprocessing.connection import wait

    return bool(wait([process.sentinel], timeout))


def helper_stop_event(parent: int, what: str) -> threading.Event:
    """In a helper: the event set by SIGTERM or when the daemon (``parent``) is gone."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the daemon, which stops us

    def watch_parent():
        while not stop.wait(1.0):
            if os.getppid() != parent:
                logging.getLogger(what).warning("the daemon is gone; stopping")
                stop.set()

    threading.Thread(target=watch_parent, daemon=True, name="watch-parent").start()
    return stop

