"""``GET /v1/watch``: changes as server-sent events, resumable by sequence number.

Each event's id is the operation's sequence number in the op log, so a client that
reconnects with ``Last-Event-ID`` resumes right after the last event it saw: nothing missed,
nothing repeated, whichever worker or process wrote the operations (the log is read from the
shared store on every poll).
"""

from __future__ import annotations

import json
import time

from conflux.api.params import int_param
from conflux.errors import InputError

_KEEPALIVE_S = 15.0
_MAX_SEQ = 2 ** 63


class Watch:
    def __init__(self, ctx, *, poll_s: float):
        self.ctx = ctx
        self.poll_s = poll_s

    def on_get(self, req, resp):
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
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = self._events(poll, start, timeout)

    def _events(self, poll, seq, timeout):
        engine = self.ctx.engine
        deadline = time.monotonic() + timeout if timeout else None
        quiet_since = time.monotonic()
        yield b": conflux watch\n\n"
        while deadline is None or time.monotonic() < deadline:
            ops, read_to = poll(seq)
            for op in ops:
                data = json.dumps(engine.op_dict(op), default=str, separators=(",", ":"))
                yield f"id: {op.seq}\nevent: op\ndata: {data}\n\n".encode()
                quiet_since = time.monotonic()
            if read_to > seq:
                seq = read_to
                continue
            if time.monotonic() - quiet_since > _KEEPALIVE_S:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            time.sleep(self.poll_s)
