"""The engine authorizes: every method a shell calls checks the access rules for the actor
it is given, so the CLI, the REST API and any shell to come get the same rules without
calling them. Run against a real store and a real rbac.toml."""

from __future__ import annotations

import logging
import os

import pytest

from conflux.actors import Actor
from conflux.audit import export_lines
from conflux.errors import InputError, PermissionDenied
from conflux.milestones import Milestones

from conftest import set_op

WRITER = Actor("ci-pipeline", "pipeline")    # writes weights in production, reads all
READER = Actor("dana", "human")              # reads staging only
NOBODY = Actor("mallory", "human")

RULES = """\
[role.weights]
permissions = [ { actions = ["read"], resource = "*" },
                { actions = ["write"], resource = "route.*/weight@production" } ]

[role.staging-reader]
permissions = [ { actions = ["read"], resource = "*@staging" } ]

[[assignment]]
actor = "pipeline:ci-pipeline"
roles = ["weights"]

[[assignment]]
actor = "human:dana"
roles = ["staging-reader"]
"""


@pytest.fixture
def ruled(engine):
    engine.apply([set_op("route.api", "service", "checkout"),
                  set_op("service.checkout", "image", "x:1"),
                  set_op("route.api", "weight", 10)], WRITER)  # before the rules exist
    with open(os.path.join(engine.root, "rbac.toml"), "w") as fh:
        fh.write(RULES)
    engine.policy.refresh()
    return engine


def test_writes_are_authorized_by_the_engine_whole_batch_first(ruled):
    before = ruled.last_seq()
    ruled.apply([set_op("route.api", "weight", 20)], WRITER)
    with pytest.raises(PermissionDenied) as denied:
        ruled.apply([set_op("route.api", "weight", 30), set_op("route.api", "path", "/x")],
                    WRITER)
    assert "op 1: " in str(denied.value) and "write" in str(denied.value)
    assert ruled.last_seq() == before + 1  # the denied batch wrote nothing
    assert ruled.get("route.api")["weight"]["value"] == 20
    with pytest.raises(PermissionDenied):
        ruled.validated([set_op("route.api", "weight", 40)], NOBODY)
    with pytest.raises(PermissionDenied):
        ruled.admit([set_op("route.api", "weight", 40)], NOBODY)
    with pytest.raises(PermissionDenied):
        ruled.promote("production", "staging", None, WRITER)
    with pytest.raises(PermissionDenied):
        ruled.resolve("service.checkout", "tier", "web", WRITER)
    assert ruled.last_seq() == before + 1


def test_reads_given_a_reader_are_authorized_or_filtered(ruled):
    # the owner's own reads (no reader) see everything
    assert set(ruled.state("production")) == {"route.api", "service.checkout"}
    assert ruled.get("route.api", "production")
    # a reader of staging only
    assert set(ruled.state("staging", reader=READER)) == {"route.api", "service.checkout"}
    assert ruled.state("production", reader=READER) == {}
    assert ruled.get("route.api", "staging", reader=READER)["weight"]["value"] == 10
    for read in (lambda: ruled.get("route.api", "production", reader=READER),
                 lambda: ruled.blame("route.api", "production", reader=READER),
                 lambda: ruled.log(reader=READER),
                 lambda: ruled.status(reader=READER),
                 lambda: ruled.feed_filter(env="production", reader=READER)):
        with pytest.raises(PermissionDenied):
            read()
    assert ruled.get("route.api", reader=WRITER)
    assert len(ruled.log(reader=WRITER)) == 3


def test_a_watch_feed_keeps_only_what_its_reader_may_read(ruled):
    keep = ruled.feed_filter(env="staging", reader=READER)
    start = ruled.last_seq()
    ruled.apply([set_op("route.api", "weight", 55)], WRITER)   # production
    ops, read_to = ruled.changes(start)
    assert [op.seq for op in ops] == [start + 1] and read_to == start + 1
    assert [op for op in ops if keep(op)] == []
    everything = ruled.feed_filter(reader=WRITER)
    assert [op.seq for op in ops if everything(op)] == [start + 1]


def test_milestones_and_the_audit_trail_are_authorized(ruled):
    milestones = Milestones(ruled)
    with pytest.raises(PermissionDenied):
        milestones.create("first", actor=WRITER)
    assert milestones.list() == []
    with pytest.raises(PermissionDenied):
        milestones.list(reader=NOBODY)
    assert milestones.list(reader=WRITER) == []
    with pytest.raises(PermissionDenied):
        export_lines(ruled, reader=WRITER)
    first = next(iter(export_lines(ruled)))  # the owner's own export
    assert first.startswith(b"{")


def test_changed_rules_are_followed_and_a_bad_file_keeps_the_last_good(ruled, caplog):
    path = os.path.join(ruled.root, "rbac.toml")
    assert ruled.state("staging", reader=READER)
    with open(path, "w") as fh:
        fh.write(RULES.replace('resource = "*@staging"', 'resource = "*@development"'))
    assert ruled.policy.refresh() is True
    assert ruled.state("staging", reader=READER) == {}
    with caplog.at_level(logging.ERROR, logger="conflux.access"):
        with open(path, "w") as fh:
            fh.write("[role.x\n")
        assert ruled.policy.refresh() is False
        assert ruled.policy.refresh() is False  # reported once per change
    assert sum("rbac.toml" in r.getMessage() for r in caplog.records) == 1
    assert ruled.state("staging", reader=READER) == {}
    assert ruled.state("development", reader=READER)
    os.remove(path)  # no file: everything allowed
    assert ruled.policy.refresh() is True
    assert ruled.state("production", reader=READER)


def test_a_bad_rules_file_refuses_the_first_write_naming_file_and_line(engine):
    with open(os.path.join(engine.root, "rbac.toml"), "w") as fh:
        fh.write('[[assignment]]\nactor = "x"\nroles = ["ghost"]\n')
    with pytest.raises(InputError) as bad:
        engine.apply([set_op("route.api", "weight", 1)], WRITER)
    assert "rbac.toml:" in str(bad.value)
    assert engine.last_seq() == 0
