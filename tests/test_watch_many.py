"""Many idle watch streams on a real daemon: each costs its connection, not a thread; each of
them still gets every op it asked for and no other; the daemon keeps answering; a SIGTERM ends
them all."""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import time

import requests

from test_daemon import _workers, daemon, key, make_project, op, wait_until

WATCHERS = 1000


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _read_until(socks, done, timeout: float = 60.0) -> dict:
    """Read every socket until ``done(data)`` holds for what it sent so far (or it closed);
    what each sent, by socket."""
    got = {s: b"" for s in socks}
    waiting = set(socks)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while waiting and time.monotonic() < deadline:
            for k, _ in sel.select(0.5):
                s = k.fileobj
                data = s.recv(65536)
                got[s] += data
                if not data or done(got[s]):
                    waiting.discard(s)
                    sel.unregister(s)
    finally:
        sel.close()
    return got


def test_a_thousand_idle_watchers_hold_no_thread_each_and_all_get_every_op(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * WATCHERS  # this process's sockets, and the daemon's (which it inherits)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    project = make_project(tmp_path)
    with daemon(project) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        workers = wait_until(lambda: len(w := _workers(proc.pid)) == 2 and w)
        assert workers, "the daemon's two workers did not start"
        before = {w: _threads(w) for w in workers}
        def request(query):
            return (f"GET /v1/watch{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"X-API-Key: {key('reader-1')['X-API-Key']}\r\n\r\n").encode()
        socks = []
        try:
            # half of them watch one entity, the other half everything
            for i in range(WATCHERS):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                s.sendall(request("?entity=route.many" if i % 2 else ""))
                socks.append(s)
            one, every = socks[1::2], socks[0::2]
            opened = _read_until(socks, lambda d: b": conflux watch" in d)
            assert all(b" 200 " in d.split(b"\r\n", 1)[0] and b": conflux watch" in d
                       for d in opened.values()), "not every watch stream opened"
            # every stream is open and idle: the workers hold them without a thread each
            after = {w: _threads(w) for w in workers}
            assert all(after[w] - before[w] < 10 for w in workers), (before, after)
            # the daemon keeps answering; a write to another entity reaches the watchers of
            # everything only, then one to route.many reaches every watcher
            h = key("zara")
            assert requests.get(f"{url}/v1/health", timeout=10).status_code == 200
            other = requests.post(f"{url}/v1/ops", json=op("route.other", "weight", 7),
                                  headers=h, timeout=10).json()
            ack = requests.post(f"{url}/v1/ops", json=op("route.many", "weight", 42),
                                headers=h, timeout=10).json()
            before, marker = f"id: {other['seq']}\n".encode(), f"id: {ack['seq']}\n".encode()
            events = _read_until(socks, lambda d: marker in d)
            assert all(marker in d for d in events.values()), \
                sum(marker in d for d in events.values())
            assert all(before in events[s] for s in every)
            assert not any(before in events[s] for s in one)
            sample = events[socks[-1]].split(b"data: ", 1)[1].split(b"\n", 1)[0]
            assert json.loads(sample)["op_id"] == ack["op_id"]
            # SIGTERM ends the streams (their clients resume elsewhere with Last-Event-ID)
            # instead of waiting for them until the graceful stop's timeout
            proc.send_signal(signal.SIGTERM)
            ended = _read_until(socks, lambda d: False, timeout=25)
            assert all(d.endswith(b"0\r\n\r\n") for d in ended.values()), \
                "not every stream was ended cleanly"
            proc.wait(30)
        finally:
            for s in socks:
                s.close()
