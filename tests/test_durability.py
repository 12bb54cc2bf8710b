"""Durability: an acknowledged batch survives ``kill -9`` of its writer, a batch is never
half-applied, the op log stays dense, and the state is exactly a replay of the log.

Real writer processes (``tests/_writer.py``) apply batches through the Engine API and print
``ack <n>`` after each ``apply()`` returns; the test kills them with SIGKILL mid-run, reopens
the store and checks what is there. Every wait is bounded.
"""

from __future__ import annotations

import os
import pathlib
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import conflux
from conflux.actors import Actor
from conflux.engine import Engine

import _writer
from conftest import EXAMPLE_SCHEMA

HERE = pathlib.Path(__file__).resolve().parent
WRITER = HERE / "_writer.py"
# where the conflux package under test was imported from (the source tree or site-packages)
PACKAGE_PARENT = str(pathlib.Path(conflux.__file__).resolve().parent.parent)

TARGET_ACKS = 30
ACK_WAIT_S = 10.0
WRITER_LIFETIME_S = 60.0  # the writer stops by itself after this, should the test lose it


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    env.pop("CONFLUX_CORE", None)  # the writer runs on the default core
    return env


class Writer:
    """One writer subprocess and a thread collecting its stdout lines."""

    def __init__(self, project: str, tag: str, mode: str = "synced"):
        self.tag = tag
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), project, tag, str(WRITER_LIFETIME_S), mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        self.lines: queue.Queue = queue.Queue()
        self.acks: list[int] = []
        self.ready = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def drain(self, timeout: float) -> bool:
        """Take the lines that arrive within ``timeout``; False once stdout is closed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return True
            if line is None:
                return False
            if line.startswith("ready"):
                self.ready = True
            elif line.startswith("ack "):
                n = int(line.split()[1])
                assert n == len(self.acks), f"writer {self.tag}: acks out of order: {line}"
                self.acks.append(n)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        finally:
            # acks printed before the kill are still in the pipe: collect them
            self._reader.join(timeout=5)
            while True:
                try:
                    line = self.lines.get_nowait()
                except queue.Empty:
                    break
                if line and line.startswith("ack "):
                    self.acks.append(int(line.split()[1]))

    def stderr(self) -> str:
        try:
            return self.proc.stderr.read() if self.proc.poll() is not None else ""
        except ValueError:
            return ""


def run_writers(project: str, tags: list[str], target: int,
                modes: dict[str, str] | None = None) -> dict[str, list[int]]:
    """Start one writer per tag (``modes``: a tag's ``journal``), wait until each has
    ``target`` acks (or ACK_WAIT_S), kill them all with SIGKILL at a random moment, and
    return the acks each printed."""
    writers = []
    try:
        for tag in tags:
            writers.append(Writer(project, tag, (modes or {}).get(tag, "synced")))
        deadline = time.monotonic() + ACK_WAIT_S
        while time.monotonic() < deadline:
            alive = [w.drain(0.05) for w in writers]
            if all(len(w.acks) >= target for w in writers):
                break
            if not all(alive):
                break
        # kill mid-batch: a little after an ack, at a moment the test does not choose
        time.sleep(random.uniform(0, 0.03))
    finally:
        for w in writers:
            w.kill()
    for w in writers:
        assert w.proc.returncode == -signal.SIGKILL, (
            f"writer {w.tag} ended by itself ({w.proc.returncode}): {w.stderr()}")
        assert w.ready, f"writer {w.tag} never opened the store: {w.stderr()}"
        assert len(w.acks) >= 5, (
            f"writer {w.tag} acknowledged only {len(w.acks)} batches in {ACK_WAIT_S}s")
    return {w.tag: w.acks for w in writers}


def check_store(project: str, core, acks: dict[str, list[int]], tmp_path) -> int:
    """Every check of the issue on a store whose writers were killed; returns the last seq."""
    with Engine(project, core=core) as engine:
        entries = engine.entries()
        status = engine.status()
        state = engine.state()
        records = engine.records()

    # the op log: dense sequence numbers from 1, no seq lost or duplicated
    seqs = [seq for seq, _ in entries]
    assert seqs == list(range(1, len(entries) + 1))
    assert status["operations"] == len(entries)

    # which ops are in the log, by writer and batch, with their sequence numbers
    decoded = [(seq, core.decode_entry(data)) for seq, data in entries]
    op_ids = [op.op_id for _, op in decoded]
    assert len(op_ids) == len(set(op_ids)), "an op id is logged twice"
    batches: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for seq, op in decoded:
        tag, b, i = op.op_id.split("-")
        assert tag in acks, f"unexpected op {op.op_id}"
        batches.setdefault((tag, int(b[1:])), []).append((int(i), seq))

    for tag, acked in acks.items():
        present = sorted(n for (t, n) in batches if t == tag)
        # each writer applies its batches in order, so what is there is a prefix 0..m
        assert present == list(range(len(present))), f"{tag}: batches {present}"
        # every acknowledged batch survived the kill
        assert len(present) >= len(acked), (
            f"{tag}: {len(acked)} batches acknowledged, only {len(present)} in the log")
        # at most the batch in flight committed without its ack being printed
        assert len(present) <= len(acked) + 1
        for n in present:
            parts = sorted(batches[(tag, n)])
            # all or nothing: every op of the batch is logged, in one commit (adjacent seqs)
            assert [i for i, _ in parts] == list(range(_writer.BATCH_OPS)), f"{tag} batch {n}"
            first = parts[0][1]
            assert [seq for _, seq in parts] == list(range(first, first + _writer.BATCH_OPS))
            for k in range(_writer.ENTITIES_PER_BATCH):
                eid = _writer.entity_id(tag, n, k)
                assert state.get(eid) == _writer.expected_fields(tag, n, k), eid
        # nothing of a batch that is not in the log reached the state
        missing = len(present)
        for k in range(_writer.ENTITIES_PER_BATCH):
            assert _writer.entity_id(tag, missing, k) not in state
    expected_entities = {_writer.entity_id(t, n, k)
                         for (t, n) in batches for k in range(_writer.ENTITIES_PER_BATCH)}
    assert set(state) == expected_entities

    # the state is a replay of the op log: same records, byte for byte, on this core
    replay_dir = str(tmp_path / "replay")
    with Engine.init(replay_dir, str(EXAMPLE_SCHEMA), core=core) as replay:
        replay.apply_entries([entry for _, entry in entries])
        assert replay.records() == records
        assert replay.state() == state
        assert replay.status()["operations"] == len(entries)
    return len(entries)


def check_writable(project: str, last_seq: int, core, tag: str) -> None:
    """The killed writers left no lock behind: another process can write (bounded wait),
    and a retry of an acknowledged op id is acknowledged without a second log entry."""
    code = ("import sys\n"
            "from conflux.engine import Engine\n"
            "from conflux.actors import Actor\n"
            "e = Engine(sys.argv[1])\n"
            "ack = e.apply([{'type': 'set_field', 'entity_id': 'service.after-crash',\n"
            "                'field': 'image', 'value': 'x:1', 'op_id': 'after-crash'}],\n"
            "              Actor('zara'))[0]\n"
            "print(ack.seq)\n")
    done = subprocess.run([sys.executable, "-c", code, project], capture_output=True,
                          text=True, timeout=60, env=_env())
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == last_seq + 1
    with Engine(project, core=core) as engine:
        before = engine.entries()
        acks = engine.apply(_writer.batch_ops(tag, 0), Actor(f"writer-{tag}", "service"))
        assert all(a.duplicate for a in acks)
        logged = {core.decode_entry(data).op_id: seq for seq, data in before}
        assert [(a.op_id, a.seq) for a in acks] == [
            (op["op_id"], logged[op["op_id"]]) for op in _writer.batch_ops(tag, 0)]
        assert engine.entries() == before
        assert engine.status()["operations"] == last_seq + 1
        assert engine.get("service.after-crash", field="image")["image"]["value"] == "x:1"


@pytest.fixture
def project(tmp_path):
    path = str(tmp_path / "project")
    Engine.init(path, str(EXAMPLE_SCHEMA)).close()
    return path


def test_acknowledged_batches_survive_kill_9(project, core, tmp_path):
    acks = run_writers(project, ["w1"], TARGET_ACKS)
    last = check_store(project, core, acks, tmp_path)
    assert last >= len(acks["w1"]) * _writer.BATCH_OPS
    check_writable(project, last, core, "w1")


def test_two_concurrent_writers_killed(project, core, tmp_path):
    acks = run_writers(project, ["wa", "wb"], TARGET_ACKS // 2)
    last = check_store(project, core, acks, tmp_path)
    assert last >= (len(acks["wa"]) + len(acks["wb"])) * _writer.BATCH_OPS
    # the two writers really did interleave their commits in the one log
    with Engine(project, core=core) as engine:
        order = [core.decode_entry(e).op_id.split("-")[0] for _, e in engine.entries()]
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches >= 2, "the writers never interleaved"
    check_writable(project, last, core, "wb")


def test_journaled_writer_killed_beside_a_synced_one(project, core, tmp_path):
    """The daemon's commit service journals its commits and leaves LMDB unsynced; a CLI or a
    worker writing at the same time syncs its own commits. Both killed: every acknowledged
    batch of each is there, the store is whole, and it takes writes again."""
    acks = run_writers(project, ["wj", "ws"], TARGET_ACKS // 2, {"wj": "journal"})
    last = check_store(project, core, acks, tmp_path)
    assert last >= (len(acks["wj"]) + len(acks["ws"])) * _writer.BATCH_OPS
    check_writable(project, last, core, "wj")
