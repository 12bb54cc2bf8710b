"""The on-disk format holds across releases: a store written by an earlier Conflux opens and
reads back identically, and takes new writes.

``fixtures/store-v1.tar.gz`` is the demo project (``examples/demo.sh``) plus a dangling
reference, a delete, an unset, an open review conflict and an overlay write, written by
Conflux at commit 80d2eb4; ``readback.json`` in it is what that Conflux read back through
``fixtures/readback.py``.
"""

import importlib.util
import json
import os
import tarfile

import pytest

from conflux.actors import Actor
from conflux.engine import Engine

HERE = os.path.dirname(os.path.abspath(__file__))


def _readback_module():
    spec = importlib.util.spec_from_file_location(
        "conflux_fixture_readback", os.path.join(HERE, "fixtures", "readback.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def old_project(tmp_path):
    with tarfile.open(os.path.join(HERE, "fixtures", "store-v1.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


def test_a_store_written_by_the_previous_release_reads_back_identically(old_project):
    with open(old_project / "readback.json") as f:
        expected = json.load(f)
    with Engine(str(old_project), sync=False) as engine:
        got = _readback_module().readback(engine)
    assert got["last_seq"] == expected["last_seq"] == 90
    assert got["entries"] == expected["entries"]
    assert got["records"] == expected["records"]
    assert got == expected


def test_a_store_written_by_the_previous_release_takes_new_writes(old_project):
    with Engine(str(old_project), sync=False) as engine:
        before = engine.get("service.checkout")
        acks = engine.apply([{"type": "set_field", "entity_id": "service.checkout",
                              "field": "replicas", "value": 9}], Actor("fixture", "human"))
        assert acks[0].seq == 91
        after = engine.get("service.checkout")
        assert after["replicas"]["value"] == 9
        assert {k: v for k, v in after.items() if k != "replicas"} \
            == {k: v for k, v in before.items() if k != "replicas"}
        # the open conflict and the violations written by the old release are still there
        assert [c["entity_id"] for c in engine.conflicts()] == ["service.gateway"]
        assert any("service.ghost" in v["message"] for v in engine.violations())
