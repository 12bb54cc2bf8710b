"""``GET /v1/watch``: changes as server-sent events, resumable by sequence number.

Each event's id is the operation's sequence number in the op log, so a client that
reconnects with ``Last-Event-ID`` resumes right after the last event it saw: nothing missed,
nothing repeated, whichever worker or process wrote the operations (the log is read from the
shared store).

A watch is a stream on its worker's event loop, not a thread: an idle watcher costs its
connection and a few objects. One ``LogFollower`` per worker looks at the log's last sequence
while anyone watches and wakes the watchers when it moved. The watchers share what is read:
the follower reads each page of new ops once, as events, and each watcher sends those its
filter keeps (the entity and environment it asked for, and what its reader may read).
"""

from __future__ import annotations

import asyncio
import time

from falcon.asgi import SSEvent

from conflux.api.media import to_json
from conflux.api.params import int_param
from conflux.errors import InputError
from conflux.status import publish_watchers

_KEEPALIVE_S = 15.0
_MAX_SEQ = 2 ** 63


class LogFollower:
    """Wakes a worker's watchers when the op log grows (or when the worker stops)."""

    #: Every follower of the process, ended together when the server shuts down.
    running: set["LogFollower"] = set()

    #: Ops read per page, and how many bytes of events the pages kept for the watchers
    #: still behind may hold.
    PAGE = 500
    KEPT_BYTES = 16 << 20

    def __init__(self, engine, poll_s: float):
        self.engine = engine
        self.poll_s = poll_s
        self.closing = False
        self._watchers = 0
        self._loop = self._task = self._moved = None
        self._pages: dict[int, tuple[list, int, int]] = {}
        self._kept = 0

    @property
    def watchers(self) -> int:
        """The process's open watch streams; kept in ``.conflux/watchers/<pid>`` as they
        change, so that the project's status counts every process's (``watcher_count``)."""
        return self._watchers

    @watchers.setter
    def watchers(self, count: int) -> None:
        self._watchers = count
        publish_watchers(self.engine.root, count)

    def page(self, after: int) -> tuple[list, int]:
        """The ops logged after sequence ``after`` (at most ``PAGE``) as ``(op, event
        data)``, and the sequence number read up to; read once for every watcher at
        ``after`` (the log only grows: a page read earlier is a prefix of the truth)."""
        kept = self._pages.get(after)
        if kept is not None:
            return kept[0], kept[1]
        engine = self.engine
        ops = engine.log(start=after + 1, reverse=False, limit=self.PAGE)
        if not ops:
            return [], after
        events = [(op, to_json(engine.op_dict(op))) for op in ops]
        size = sum(len(data) for _, data in events)
        while self._pages and self._kept + size > self.KEPT_BYTES:
            self._kept -= self._pages.pop(next(iter(self._pages)))[2]  # the oldest
        self._pages[after] = (events, ops[-1].seq, size)
        self._kept += size
        return events, ops[-1].seq

    async def wait(self, timeout: float) -> None:
        """Until the log has grown, the server is stopping, or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._moved = loop, loop.create_future()
            self._task = loop.create_task(self._follow(self.engine.last_seq()))
        await asyncio.wait((self._moved,), timeout=timeout)

    async def _follow(self, last: int) -> None:
        LogFollower.running.add(self)
        try:
            while self.watchers and not self.closing:
                await asyncio.sleep(self.poll_s)
                now = self.engine.last_seq()
                if now != last:
                    last = now
                    self._wake()
        finally:
            LogFollower.running.discard(self)

    def _wake(self) -> None:
        moved, self._moved = self._moved, self._loop.create_future()
        moved.set_result(None)

    def close(self) -> None:
        self.closing = True
        if self._moved is not None:
            self._wake()

    @classmethod
    def close_all(cls) -> None:
        """End every watch stream of the process (the server is stopping: the watchers
        reconnect, with ``Last-Event-ID``, to a server that runs)."""
        for follower in list(cls.running):
            follower.close()


class Watch:
    def __init__(self, ctx, *, poll_s: float):
        self.ctx = ctx
        self.follower = LogFollower(ctx.engine, poll_s)

    async def on_get(self, req, resp):
        ctx = self.ctx
        engine = ctx.engine
        actor = req.context.actor
        keep = engine.feed_filter(entity=req.get_param("entity"), env=req.get_param("env"),
                                  reader=actor)
        last = req.get_header("Last-Event-ID")
        if last is not None:
            last = last.strip()
            # the same range as ?after=: a sequence number the log's keys can hold
            if not (last.isascii() and last.isdigit() and len(last) <= 19
                    and int(last) <= _MAX_SEQ):
                raise InputError(f"Last-Event-ID must be a sequence number from 0 to "
                                 f"{_MAX_SEQ}", field="Last-Event-ID")
            start = int(last)
        else:
            start = int_param(req, "after", -1, 0, _MAX_SEQ)
            if start < 0:  # from now on
                start = engine.last_seq()
        timeout = int_param(req, "timeout", 0, 0, 86_400)
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        # Falcon sends the events as they come and ends the stream when the client is gone
        resp.sse = self._events(keep, start, timeout)

    async def _events(self, keep, seq, timeout):
        follower = self.follower
        deadline = time.monotonic() + timeout if timeout else None
        quiet_since = time.monotonic()
        follower.watchers += 1
        try:
            yield SSEvent(comment="conflux watch")
            while not follower.closing:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return
                events, read_to = follower.page(seq)
                for op, data in events:
                    if keep(op):
                        yield SSEvent(event="op", event_id=str(op.seq), text=data)
                        quiet_since = time.monotonic()
                if read_to > seq:
                    seq = read_to
                    continue
                if now - quiet_since >= _KEEPALIVE_S:
                    yield SSEvent(comment="keepalive")
                    quiet_since = now = time.monotonic()
                wake_in = quiet_since + _KEEPALIVE_S - now
                if deadline is not None:
                    wake_in = min(wake_in, deadline - now)
                await follower.wait(max(wake_in, 0.0))
        finally:
            follower.watchers -= 1
