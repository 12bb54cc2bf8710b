"""The commit journal (``conflux/store/journal.py``) after a system crash.

A process crash is tests/test_durability.py's (kill -9 of real writers). A system crash loses
what the kernel had not written yet, in any order: these tests make the disk such a crash
can leave and open it. The store's file is the one of the journal's last checkpoint (the
moment it was synced, copied as it was) with any of the pages written since laid over it,
chosen at random, and always the newest meta pages (which name pages that may be missing: a
store LMDB would misread). The journal and state files are as written (each write of theirs
is synced before anything depends on it). The kernel's boot id is made to differ.

What must hold: the store opens, every acknowledged commit is in it, and its state and log
are byte for byte those of the store that crashed.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.store import journal

import _writer
from conftest import EXAMPLE_SCHEMA
from test_durability import _env

PAGE = os.sysconf("SC_PAGE_SIZE")
ACTOR = Actor("writer-wj", "service")


@pytest.fixture
def project(tmp_path):
    path = str(tmp_path / "project")
    Engine.init(path, str(EXAMPLE_SCHEMA)).close()
    return path


@pytest.fixture
def checkpoints(monkeypatch, tmp_path):
    """Copies of the store's file as each checkpoint synced it (the newest last)."""
    copies: list[str] = []
    make = journal.Journal._checkpoint

    def copying(self, head):
        make(self, head)
        copy = str(tmp_path / f"checkpoint-{len(copies)}.mdb")
        shutil.copyfile(self.data_path, copy)
        copies.append(copy)
    monkeypatch.setattr(journal.Journal, "_checkpoint", copying)
    return copies


def crash_image(project: str, checkpoint: str, out: str, seed: int, *,
                wal_cut: int = 0) -> str:
    """A copy of ``project`` as a system crash could leave it (see the module's docstring);
    ``wal_cut``: bytes lost from the end of the journal's last record."""
    shutil.copytree(project, out, ignore=shutil.ignore_patterns("lock.mdb", "data.mdb"))
    rng = random.Random(seed)
    with open(checkpoint, "rb") as fh:
        old = fh.read()
    with open(os.path.join(project, ".conflux", "store", "data.mdb"), "rb") as fh:
        new = fh.read()
    pages = []
    for n in range(max(len(old), len(new)) // PAGE):
        was, now = old[n * PAGE:(n + 1) * PAGE], new[n * PAGE:(n + 1) * PAGE]
        if n < 2:
            pages.append(now)  # the newest meta pages always reached the disk
        elif not was:
            pages.append(now if rng.random() < 0.5 else b"\0" * PAGE)
        else:
            pages.append(now if rng.random() < 0.5 else was)
    with open(os.path.join(out, ".conflux", "store", "data.mdb"), "wb") as fh:
        fh.write(b"".join(pages))
    if wal_cut:
        wal = os.path.join(out, ".conflux", "store", journal.JOURNAL_FILE)
        state = journal.StateFile(os.path.join(out, ".conflux", "store", journal.STATE_FILE),
                                  PAGE).full()
        ends = [0]
        for payload in journal.read_records(wal, state.gen):
            ends.append(ends[-1] + journal._RECORD.size + len(payload))
        with open(wal, "r+b") as fh:
            fh.seek(ends[-1] - wal_cut)
            fh.write(b"\0" * wal_cut)
    return out


def snapshot(project: str) -> tuple:
    with Engine(project) as engine:
        return engine.entries(), engine.records(), engine.state()


def another_boot(monkeypatch):
    monkeypatch.setattr(journal, "boot_id", lambda: b"\xfe" * 16)


def apply_batches(engine, first: int, count: int) -> None:
    for n in range(first, first + count):
        engine.apply(_writer.batch_ops("wj", n), ACTOR)


def test_system_crash_returns_to_the_checkpoint_and_replays(project, checkpoints, tmp_path,
                                                           monkeypatch):
    with Engine(project, journal=True) as engine:
        apply_batches(engine, 0, 40)
        assert engine.store._journal.records >= 40
        assert engine.store._journal.checkpoints == len(checkpoints) >= 1
        # the crash: the images are made while the journal still runs (nothing synced since)
        images = [crash_image(project, checkpoints[-1], str(tmp_path / f"crash-{seed}"), seed)
                  for seed in range(4)]
        expected = engine.entries(), engine.records(), engine.state()
    another_boot(monkeypatch)
    for image in images:
        assert snapshot(image) == expected, image
        state = journal.StateFile(os.path.join(image, ".conflux", "store", journal.STATE_FILE),
                                  PAGE).full()
        assert not state.dirty  # restored once: opening it again restores nothing
        assert snapshot(image) == expected


def test_a_torn_last_record_loses_only_its_commit(project, checkpoints, tmp_path,
                                                  monkeypatch):
    with Engine(project, journal=True) as engine:
        apply_batches(engine, 0, 12)
        before = engine.entries(), engine.records(), engine.state()
        apply_batches(engine, 12, 1)  # its record is torn: it was never acknowledged
        image = crash_image(project, checkpoints[-1], str(tmp_path / "crash"), 7, wal_cut=5)
    another_boot(monkeypatch)
    assert snapshot(image) == before


def test_a_synced_writer_between_journaled_commits(project, checkpoints, tmp_path,
                                                   monkeypatch):
    """Another process (the CLI, a worker) commits while the journal runs: it syncs the
    store and marks it clean first; the journal makes a new checkpoint before its next
    commit, and a crash after that keeps the other process's commit too."""
    code = ("import sys\n"
            "from conflux.engine import Engine\n"
            "from conflux.actors import Actor\n"
            "with Engine(sys.argv[1]) as e:\n"
            "    e.apply([{'type': 'set_field', 'entity_id': 'service.cli',\n"
            "              'field': 'image', 'value': 'x:1', 'op_id': 'cli-1'}], Actor('zara'))\n")
    state_path = os.path.join(project, ".conflux", "store", journal.STATE_FILE)
    with Engine(project, journal=True) as engine:
        apply_batches(engine, 0, 5)
        assert journal.StateFile(state_path, PAGE).head().dirty
        made = engine.store._journal.checkpoints
        done = subprocess.run([sys.executable, "-c", code, project], capture_output=True,
                              text=True, timeout=60, env=_env())
        assert done.returncode == 0, done.stderr
        assert not journal.StateFile(state_path, PAGE).head().dirty
        apply_batches(engine, 5, 5)
        assert engine.store._journal.checkpoints == made + 1
        assert journal.StateFile(state_path, PAGE).head().dirty
        image = crash_image(project, checkpoints[-1], str(tmp_path / "crash"), 3)
        expected = engine.entries(), engine.records(), engine.state()
    another_boot(monkeypatch)
    assert snapshot(image) == expected
    assert snapshot(image)[2]["service.cli"]["image"] == "x:1"


def test_closing_the_journal_leaves_a_clean_store(project):
    state_path = os.path.join(project, ".conflux", "store", journal.STATE_FILE)
    with Engine(project, journal=True) as engine:
        apply_batches(engine, 0, 3)
        assert journal.StateFile(state_path, PAGE).head().dirty
    assert not journal.StateFile(state_path, PAGE).head().dirty


def test_the_same_boot_restores_nothing(project, tmp_path):
    """A dirty store in the boot that wrote it (its writer was killed, or still runs): LMDB's
    pages are all in the kernel's cache, newer than the checkpoint; nothing is restored."""
    with Engine(project, journal=True) as engine:
        apply_batches(engine, 0, 6)
        expected = engine.entries(), engine.records(), engine.state()
        copy = str(tmp_path / "copy")
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("lock.mdb"))
    assert snapshot(copy) == expected
