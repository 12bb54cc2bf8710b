"""Group commit: concurrent writers in one process share one synced LMDB commit.

A synced commit costs about as much as thousands of merges (an fsync), so a daemon worker
serving many small requests at once puts them through one committer thread: each request
validates its own batch first (a bad batch fails alone, never its neighbours), queues it,
and waits; the committer takes everything queued, applies it in one write transaction,
commits once, and wakes each request with its own acknowledgements. A request is answered
only after the commit that holds its operations.
"""

from __future__ import annotations

import queue
import threading

from conflux.errors import ConfluxError

__all__ = ["GroupCommitter"]


class _Ticket:
    __slots__ = ("maker", "done", "result", "error")

    def __init__(self, maker):
        self.maker = maker
        self.done = threading.Event()
        self.result = None
        self.error = None


class GroupCommitter:
    """Shares synced commits among the threads of one process (one per engine)."""

    def __init__(self, engine, *, max_group: int = 256):
        self.engine = engine
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Ticket | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="conflux-committer",
                                        daemon=True)
        self._thread.start()
        self.commits = 0
        self.batches = 0

    def apply(self, raw_ops, actor):
        """Validate now, commit with whatever else is waiting, return this batch's acks."""
        ticket = _Ticket(self.engine.validated(raw_ops, actor))
        self._queue.put(ticket)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def close(self) -> None:
        """Commit what is queued, then stop the committer thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
            self._commit(group)
            if stop:
                return

    def _commit(self, group) -> None:
        try:
            results = self.engine.commit_validated([t.maker for t in group])
            for ticket, result in zip(group, results):
                ticket.result = result
            self.commits += 1
        except ConfluxError:
            # One batch failed inside the transaction (a precondition, a clock bound): the
            # whole group was rolled back, so commit each alone and let only it fail.
            for ticket in group:
                try:
                    ticket.result = self.engine.commit_validated([ticket.maker])[0]
                    self.commits += 1
                except ConfluxError as exc:
                    ticket.error = exc
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            for ticket in group:
                ticket.error = exc
        finally:
            self.batches += len(group)
            for ticket in group:
                ticket.done.set()
