"""``JoinedWrites``: a transport whose writes of one turn of the event loop leave together.

PERF: one system call (and, on loopback, one segment) where there would be several: uvicorn
writes an answer's head and body apart (``conflux.daemon.worker``), and a worker's requests
to the commit service come one coroutine at a time (``conflux.daemon.commits``).
"""

from __future__ import annotations

__all__ = ["JoinedWrites"]


class JoinedWrites:
    """Wraps an asyncio transport: ``write`` collects, the loop's next turn writes the lot;
    everything else is the transport's."""

    __slots__ = ("transport", "loop", "parts")

    def __init__(self, transport, loop):
        self.transport, self.loop, self.parts = transport, loop, []

    def write(self, data: bytes) -> None:
        if not self.parts:
            self.loop.call_soon(self.flush)
        self.parts.append(data)

    def flush(self) -> None:
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.parts.clear()
        self.transport.abort()

    def __getattr__(self, name):
        return getattr(self.transport, name)
