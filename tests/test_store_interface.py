"""The LMDB store is a complete implementation of the storage interface (``conflux.store.Store``),
and no more: what the engine may call on a store, a second backend implements too."""

import inspect

from conflux.store import LmdbStore, Store


def _interface() -> list[str]:
    return sorted(Store.__abstractmethods__)


def _parameters(function) -> list[tuple]:
    """What a caller relies on: the names, kinds and defaults of the parameters (annotations
    are documentation)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_lmdb_store_implements_every_method_of_the_interface():
    assert not inspect.isabstract(LmdbStore), sorted(LmdbStore.__abstractmethods__)
    assert issubclass(LmdbStore, Store)
    mismatched = {name: (_parameters(getattr(Store, name)),
                         _parameters(getattr(LmdbStore, name)))
                  for name in _interface()
                  if _parameters(getattr(Store, name)) != _parameters(getattr(LmdbStore, name))}
    assert mismatched == {}


def test_the_lmdb_store_offers_nothing_beyond_the_interface():
    public = {name for name, member in inspect.getmembers(LmdbStore)
              if not name.startswith("_") and callable(member)}
    assert public - set(_interface()) == set()


def test_the_interface_names_what_the_engine_reads_of_a_store():
    # the constants the engine reads (the op-log chunk size, when the entity index is written)
    for name in ("CHUNK_LIMIT", "ENTITY_BATCH", "ENTITY_RANGE"):
        assert isinstance(getattr(LmdbStore, name), int), name
    assert "CHUNK_LIMIT" in Store.__annotations__


def test_an_engine_opens_its_store_through_the_interface(tmp_path):
    from conftest import EXAMPLE_SCHEMA

    from conflux.engine import Engine

    with Engine.init(str(tmp_path / "p"), str(EXAMPLE_SCHEMA), sync=False) as engine:
        assert isinstance(engine.store, Store)
        with engine.store.read() as txn:
            assert engine.store.figures(txn)["records"] == 0
            assert engine.store.log_tail(txn) == (0, 0)
