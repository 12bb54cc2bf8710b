"""The engine API: the one place Conflux's logic lives.

The CLI and the REST API are thin over ``Engine``: they parse, call one method, and format.
An ``Engine`` owns a project's ``.conflux/`` directory: the schema in force, the settings and
the store. Its methods are written by job, one module each, and gathered here:

- ``ops``: client operations checked, completed for signing, and built into the kernel's ops;
- ``commit``: batches merged and logged in one transaction, answered per op (``acks``);
- ``checks``: review conflicts and violations after the merge;
- ``queries``: resolved state, the op log, blame, conflicts, violations;
- ``workflow``: promotion, resolution, compaction;
- ``replication``: publishing to and catching up from a shared op log (several daemons);
- ``policy``: who may do what (``rbac.toml``), asked by the methods above for the actor given.
"""

from __future__ import annotations

import json
import os

from conflux.engine.checks import _plan_id, _plans, _rules, PostMerge
from conflux.engine.commit import Commits
from conflux.engine.ops import Operations
from conflux.engine.policy import Policy
from conflux.engine.queries import Queries
from conflux.engine.replication import check_shared_log, Replication
from conflux.engine.catalog import Catalog
from conflux.engine.tree import Tree
from conflux.engine.settings import (_DEFAULT_CONFIG, CONFLUX_DIR, project_root, Settings,
                                     write_store_url)
from conflux.engine.workflow import Workflows
from conflux.errors import ConfluxError, InputError, StoreError
from conflux.kernel import core as default_core, TWINS
from conflux.schema import load_schema, Schema
from conflux.store import LmdbStore, state_key, Store


#: The store's layout (tables, keys, log chunks, record format; kernel/FORMAT.md). A store of
#: another layout is refused at open rather than misread.
STORE_LAYOUT = b"conflux-store-1"


#: Meta value of a store whose whole log is in the shared op log of ``[store] url``.
SHARED_MARK = "shared:joined"


def _open_store(path: str, url: str | None, *, sync: bool, journal: bool) -> Store:
    if url is None:
        return LmdbStore(path, sync=sync, journal=journal)
    from conflux.store.shared_store import SharedStore

    return SharedStore(path, url, sync=sync)


def _pick_core(core):
    if core is None:
        return default_core
    if isinstance(core, str):
        if core not in TWINS:
            raise ConfluxError(f"core {core!r} is not available (have: {', '.join(TWINS)})")
        return TWINS[core]
    return core


class Engine(Operations, Commits, PostMerge, Queries, Tree, Catalog, Workflows, Replication):
    """One Conflux project: schema, settings and store."""

    def __init__(self, directory: str = ".", *, core=None, sync: bool = True,
                 journal: bool = False):
        self.root = project_root(directory)
        self.core = _pick_core(core)
        self.schema: Schema = load_schema(os.path.join(self.root, "schema.toml"), cached=True)
        self.settings = Settings.load(os.path.join(self.root, "config.toml"))
        self.store: Store = _open_store(os.path.join(self.root, "store"),
                                        self.settings.store_url, sync=sync,
                                        journal=journal)
        with self.store.read() as txn:
            node = self.store.meta_get(txn, "node")
            layout = self.store.meta_get(txn, "layout")
        if node is None:
            raise StoreError(f"the store in {self.root} was never initialised")
        if layout != STORE_LAYOUT:
            written = layout.decode() if layout else "none (a development build)"
            raise StoreError(f"the store in {self.root} has layout {written}; this Conflux "
                             f"reads {STORE_LAYOUT.decode()}: open it with the Conflux that "
                             "wrote it, or start a new project with 'conflux init'")
        self.node = node.decode()
        if self.store.shares_log:
            self._check_shared()
        self.policy = Policy(self.root, self.schema)
        self._kinds = {(t, f.name): self.core.STRATEGY_KINDS[f.merge]
                       for t, et in self.schema.types.items() for f in et.fields.values()}
        self._rules = _rules(self.schema)
        self._intern_schema()

    def _intern_schema(self) -> None:
        """Give every environment, entity type and field of the schema its small id in the
        store (once; ids never change), so keys can be built without the store."""
        names = [("e", env) for env in self.schema.environments]
        for type_name, et in self.schema.types.items():
            names.append(("t", type_name))
            names.extend(("f", f"{type_name}.{f}") for f in et.fields)
        with self.store.read() as txn:
            ids = {n: self.store.name_id(txn, *n, create=False) for n in names}
        if None in ids.values():
            ids = self.store.write(lambda txn: {n: self.store.name_id(txn, *n, create=True)
                                                for n in names})
        self._env_ids = {name: i for (kind, name), i in ids.items() if kind == "e"}
        self._type_ids = {name: i for (kind, name), i in ids.items() if kind == "t"}
        self._field_ids = {tuple(name.split(".", 1)): i for (kind, name), i in ids.items()
                           if kind == "f"}
        self._field_names = {t: {self._field_ids[(t, f)]: f for f in et.fields}
                             for t, et in self.schema.types.items()}
        self._table = self._fast_table()
        # PERF: keyed by ids (``_plan_id``), the post-merge plan of a changed record is found
        # from its key alone, without touching its op
        self._plans = {
            _plan_id(state_key(self._env_ids[env], self._type_ids[t], "", self._field_ids[
                (t, f)])): plan for (env, t, f), plan in _plans(self.schema, self._rules).items()}

    def _check_shared(self) -> None:
        """A store joins a shared op log empty, or through ``conflux store migrate``, which
        publishes its log there first: ops only it holds would otherwise never reach the
        other nodes."""
        store = self.store
        with store.read() as txn:
            joined = store.meta_get(txn, SHARED_MARK)
            last = store.log_tail(txn)[0]
        if joined is not None:
            return
        if last:
            raise StoreError(
                f"the store in {self.root} holds {last} ops that are not in the shared op log "
                f"{self.settings.store_url}: run 'conflux store migrate --to "
                f"{self.settings.store_url}' (with [store] url removed from config.toml) to "
                "publish them there first")
        store.write(lambda txn: store.meta_put(txn, SHARED_MARK, b"1"))

    def mark_joined(self, joined: bool = True) -> None:
        """Record that this store's whole log is in the shared op log (``conflux store
        migrate`` does, once it has checked), or, leaving it, that it may not be."""
        store = self.store

        def body(txn):
            if joined:
                store.meta_put(txn, SHARED_MARK, b"1")
            else:
                store.meta_delete(txn, SHARED_MARK)
        store.write(body)

    @classmethod
    def init(cls, directory: str, schema_path: str, *, core=None, sync: bool = True,
             store_url: str | None = None, name: str | None = None) -> "Engine":
        """Create ``.conflux/`` in ``directory`` from a schema file (validated first). With
        ``store_url`` the project's op log of record is the shared log there (``[store] url``
        in config.toml): the URL is checked and the log's tables made before anything is
        created, and the new store joins the log empty (``conflux.engine.migration.catch_up``
        brings it level)."""
        schema, text = _named_schema(schema_path, name)
        root = os.path.join(directory, CONFLUX_DIR)
        if LmdbStore.exists(os.path.join(root, "store")):
            raise InputError(f"{root} already holds a Conflux project; nothing was changed "
                             "(--force replaces its schema)")
        if store_url is not None:
            check_shared_log(store_url)
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "schema.toml"), "w", encoding="utf-8") as fh:
            fh.write(text)
        config = os.path.join(root, "config.toml")
        if not os.path.exists(config):
            defaults = Settings()
            with open(config, "w") as fh:
                fh.write(_DEFAULT_CONFIG.format(**defaults.__dict__))
        if store_url is not None:
            write_store_url(config, store_url)
        store = LmdbStore(os.path.join(root, "store"), create=True, sync=sync)

        def body(txn):
            store.meta_put(txn, "node", os.urandom(4).hex().encode())
            store.meta_put(txn, "layout", STORE_LAYOUT)
            store.meta_put(txn, "schema_name", schema.name.encode())
            store.entity_index_begin(txn, 1)  # the entity index covers every op
        store.write(body)
        store.close()
        return cls(directory, core=core, sync=sync)

    @staticmethod
    def exists(directory: str) -> bool:
        """Whether ``directory`` holds a Conflux project."""
        return LmdbStore.exists(os.path.join(directory, CONFLUX_DIR, "store"))

    @classmethod
    def replace_schema(cls, directory: str, schema_path: str, *, name: str | None = None
                       ) -> "Engine":
        """Put another schema in force in an existing project (checked first); the store,
        its log and config.toml stay. Values already stored are held to the new schema as
        they are written again (docs/configuration.md)."""
        _, text = _named_schema(schema_path, name)
        target = os.path.join(directory, CONFLUX_DIR, "schema.toml")
        partial = target + ".partial"
        with open(partial, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, target)
        return cls(directory)

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _named_schema(schema_path: str, name: str | None):
    """The schema file checked, and its text, its ``name`` replaced by ``name`` when given."""
    import re

    from conflux.schema import parse_schema

    schema = load_schema(schema_path)
    with open(schema_path, encoding="utf-8") as fh:
        text = fh.read()
    if name is not None:
        # the top-level name (before the first table), or [schema]'s; else one at the top
        line = f"name = {json.dumps(name)}"
        header = re.search(r"(?m)^\s*\[", text)
        top = text[:header.start()] if header else text
        found = re.search(r"(?m)^name\s*=.*$", top)
        table = re.search(r"(?ms)^\[schema\]\s*$(.*?)(?=^\s*\[|\Z)", text)
        if found:
            text = text[:found.start()] + line + text[found.end():]
        elif table and re.search(r"(?m)^name\s*=.*$", table[1]):
            inner = re.sub(r"(?m)^name\s*=.*$", line, table[1], count=1)
            text = text[:table.start(1)] + inner + text[table.end(1):]
        else:
            text = line + "\n" + text
        schema = parse_schema(text, schema_path)  # the name checked like any other
    return schema, text
