"""The store: the storage interface the engine talks to (``Store``), the byte layouts every
backend shares (``layout``), and its LMDB implementation (``LmdbStore``)."""

from conflux.store.base import Store
from conflux.store.layout import (entity_prefix, LogChunk, PLACE_FIELD, PLACE_KEY, SEQ,
                                  split_state_key, state_key)
from conflux.store.lmdb_store import LmdbStore, open_env

__all__ = ["Store", "LmdbStore", "LogChunk", "SEQ", "state_key", "entity_prefix",
           "split_state_key", "open_env", "PLACE_FIELD", "PLACE_KEY"]
