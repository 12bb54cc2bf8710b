"""``GET /v1/watch``: changes as server-sent events, resumable by sequence number.

Each event's id is the operation's sequence number in the op log, so a client that
reconnects with ``Last-Event-ID`` resumes right after the last event it saw: nothing missed,
nothing repeated, whichever worker or process wrote the operations (the log is read from the
shared store).

A watch is a stream on its worker's event loop, not a thread: an idle watcher costs its
connection and a few objects. One ``LogFollower`` per worker looks at the log's last sequence
while anyone watches and wakes the watchers when it moved; each then reads what is new to it.
"""

from __future__ import annotations

import asyncio
import time

from falcon.asgi import SSEvent

from conflux.api.media import to_json
from conflux.api.params import int_param
from conflux.errors import InputError

_KEEPALIVE_S = 15.0
_MAX_SEQ = 2 ** 63


class LogFollower:
    """Wakes a worker's watchers when the op log grows (or when the worker stops)."""

    #: Every follower of the process, ended together when the server shuts down.
    running: set["LogFollower"] = set()

    def __init__(self, engine, poll_s: float):
        self.engine = engine
        self.poll_s = poll_s
        self.closing = False
        self.watchers = 0
        self._loop = self._task = self._moved = None

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
        poll = engine.feed(entity=req.get_param("entity"), env=req.get_param("env"),
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
        resp.sse = self._events(poll, start, timeout)

    async def _events(self, poll, seq, timeout):
        engine = self.ctx.engine
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
                ops, read_to = poll(seq)
                for op in ops:
                    data = to_json(engine.op_dict(op))
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
