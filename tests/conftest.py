"""Shared fixtures. Every engine test runs twice, on the compiled twin ``[c]`` and the
pure-Python twin ``[py]``; a missing compiled twin fails the ``[c]`` runs instead of skipping
them."""

from __future__ import annotations

import importlib
import pathlib

import pytest

from conflux.actors import Actor
from conflux.cli import main
from conflux.engine import Engine

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE_SCHEMA = ROOT / "examples" / "schema.toml"

ZARA = Actor("zara", "human")
CI = Actor("ci-pipeline", "pipeline")
AUTOSCALER = Actor("autoscaler-7", "autoscaler")


def load_twin(name: str):
    """The core twin ``c`` or ``py``, imported directly so that a broken build fails."""
    return importlib.import_module(f"conflux.kernel._core_{name}")


@pytest.fixture(params=["c", "py"])
def core(request):
    return load_twin(request.param)


@pytest.fixture
def schema_path():
    return str(EXAMPLE_SCHEMA)


@pytest.fixture
def engine(tmp_path, core):
    eng = Engine.init(str(tmp_path / "project"), str(EXAMPLE_SCHEMA), core=core)
    yield eng
    eng.close()


def set_op(entity, field, value, **extra):
    return {"type": "set_field", "entity_id": entity, "field": field, "value": value, **extra}


def add_op(entity, field, *elements, **extra):
    return {"type": "add_elements", "entity_id": entity, "field": field,
            "elements": list(elements), **extra}


def remove_op(entity, field, *elements, **extra):
    return {"type": "remove_elements", "entity_id": entity, "field": field,
            "elements": list(elements), **extra}


def run_cli(capsys, *args):
    """``conflux *args`` in-process: ``(exit status, stdout, stderr)``."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (``tests/pgcluster.py``)."""
    from pgcluster import Cluster

    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_dsn(postgres):
    """A fresh database on the session's PostgreSQL server."""
    return postgres.new_database()
