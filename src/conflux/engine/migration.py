"""Moving a project's op log of record between its LMDB store alone and a shared op log on
PostgreSQL (``conflux init --store``, ``conflux store migrate``), and the lock that keeps a
daemon and a migration off one project at the same time.

Onto a shared log: the project's whole local log is appended to it (op ids the log holds
already are not appended again), what it holds from other nodes is applied here, and then a
temporary store fed from the shared log alone must reach the same position in it, the same
number of ops and the same state hash (``Engine.state_hash``) as the project: the log then
holds every op the project holds, and the project every op the log holds. Only then is the
store marked as joined and ``[store] url`` written into ``config.toml``.

Back to LMDB alone: the project catches up with the whole shared log, the same check is made,
``[store] url`` is removed, and the store forgets its place in that log (another log may be
next).

Every step can be repeated without changing anything, so a migration broken off (a crash,
PostgreSQL going away) is finished by running it again; until its last step the project is
where it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

from conflux.engine.engine import Engine
from conflux.engine.replication import open_shared_log
from conflux.engine.settings import project_root, Settings, store_url_problem, write_store_url
from conflux.errors import first_line, InputError, OpIdConflict, StoreError

__all__ = ["migrate", "catch_up", "daemon_lock", "migration_lock", "LOCK_FILE"]

#: Under ``.conflux/``: a daemon holds it shared for its lifetime, a migration exclusively.
LOCK_FILE = "daemon.lock"

#: Rounds of catching up before a check gives up on a shared log that keeps growing.
_ROUNDS = 8

_TEMPORARY = ".migrate-check-"


def _open_lock(root: str) -> int:
    return os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)


def daemon_lock(root: str) -> int:
    """Take the daemon's shared hold on the project in ``root`` (``.conflux/``): several
    daemons may serve one project, but none while its store is migrated. Returns the open
    descriptor, which the daemon keeps for its lifetime (its forked workers inherit it; the
    kernel releases it when the last of them exits, however it ends)."""
    fd = _open_lock(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"a store migration is running on {root} ('conflux store "
                         "migrate'): start the daemon once it has finished") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def migration_lock(root: str):
    """Hold the project in ``root`` for a migration: ``InputError`` while a daemon serves it."""
    fd = _open_lock(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise InputError(f"a daemon is serving {root}"
                             + (f" (pid {holder})" if holder.isdigit() else "")
                             + ", or a migration is running: stop it first; nothing was "
                               "changed") from None
        yield
    finally:
        os.close(fd)


def catch_up(engine: Engine) -> int:
    """Apply what the shared log holds to ``engine``'s store, its position kept; the number
    of ops applied."""
    import psycopg

    before = engine.last_seq()
    try:
        engine.catch_up_from(engine.store.shared_log())
    except psycopg.Error as exc:
        engine.store.drop_connection()
        raise StoreError(f"the shared op log went away while catching up "
                         f"({first_line(exc)}): the daemon's replicator finishes it") from None
    engine.keep_shared_position()
    return engine.last_seq() - before


def migrate(directory: str, target: str, *, core=None) -> dict:
    """Move the op log of record of the project in ``directory`` to ``target``: a
    PostgreSQL URL, or ``lmdb`` (its store alone). What was done: ``to``, ``ops`` (the
    project's, after), ``published`` (appended to the shared log), ``already`` (found there),
    ``applied`` (from the shared log) and ``state_hash``. ``InputError`` for a target that is
    not one, where the project is already, or a daemon serving it; nothing is changed then."""
    if target != "lmdb":
        problem = store_url_problem(target)
        if problem is not None:
            if problem.startswith("must be"):
                problem = "must be 'lmdb' or a PostgreSQL URL, postgresql://user@host:port/db"
            raise InputError(f"--to {problem}; nothing was changed")
    root = project_root(directory)
    config = os.path.join(root, "config.toml")
    with migration_lock(root):
        _sweep(root)
        current = Settings.load(config).store_url
        if target == "lmdb":
            if current is None:
                raise InputError(f"the op log of record of {root} is in its LMDB store "
                                 "already: nothing to migrate; nothing was changed")
            return _to_lmdb(directory, root, config, current, core)
        if current == target:
            raise InputError(f"the op log of record of {root} is the shared op log {target} "
                             "already: nothing to migrate; nothing was changed")
        if current is not None:
            raise InputError(f"the op log of record of {root} is the shared op log {current}:"
                             " move it back with '--to lmdb' first; nothing was changed")
        return _to_shared(directory, root, config, target, core)


def _to_shared(directory, root, config, url, core) -> dict:
    import psycopg

    unchanged = "nothing was changed"
    with Engine(directory, core=core) as engine:  # config.toml names no shared log yet
        with open_shared_log(url, engine.node, unchanged) as log:
            try:
                # the whole local log is offered again: a mark from a migration broken off
                # may be another database's
                engine.forget_shared_position()
                before = engine.last_seq()
                published = engine.publish_to(log)
                digest, published_later = _verify(engine, log, root, publish=True)
                published += published_later
            except psycopg.Error as exc:
                raise StoreError(f"the shared op log at {url} went away during the migration "
                                 f"({first_line(exc)}); config.toml is unchanged: run the "
                                 "migration again") from None
            engine.keep_shared_position()
            engine.mark_joined()
            ops = engine.last_seq()
        write_store_url(config, url)
    applied = ops - before
    return {"to": url, "ops": ops, "published": published,
            "already": ops - applied - published, "applied": applied, "state_hash": digest}


def _to_lmdb(directory, root, config, url, core) -> dict:
    import psycopg

    with Engine(directory, core=core) as engine:
        unchanged = "the project catches up with it before it leaves it: nothing was changed"
        with open_shared_log(url, engine.node, unchanged) as log:
            before = engine.last_seq()
            try:
                digest, _ = _verify(engine, log, root, publish=False)
            except psycopg.Error as exc:
                raise StoreError(f"the shared op log at {url} went away during the migration "
                                 f"({first_line(exc)}); config.toml is unchanged: run the "
                                 "migration again") from None
        engine.keep_shared_position()
        ops = engine.last_seq()
    write_store_url(config, None)
    with Engine(directory, core=core) as engine:  # its store alone now
        engine.forget_shared_position()
        engine.mark_joined(False)
    return {"to": "lmdb", "from": url, "ops": ops, "published": 0, "already": 0,
            "applied": ops - before, "state_hash": digest}


def _verify(engine: Engine, log, root: str, *, publish: bool) -> tuple[str, int]:
    """Catch ``engine`` up with ``log`` and check that a store fed from ``log`` alone
    reaches the same position, the same number of ops and the same state hash; with
    ``publish``, what was logged here meanwhile (a command run without a daemon) is
    published on each round. The hash, and the ops published."""
    scratch = tempfile.mkdtemp(prefix=_TEMPORARY, dir=root)
    published = 0
    try:
        with Engine.init(scratch, os.path.join(root, "schema.toml"), core=engine.core,
                         sync=False) as fresh:
            for _ in range(_ROUNDS):
                if publish:
                    published += engine.publish_to(log)
                try:
                    engine.catch_up_from(log)
                except OpIdConflict as exc:
                    which = exc.message.split(" already names")[0].split(": ")[-1]
                    raise StoreError(f"the shared op log holds {which} with other content "
                                     "than the project's log: they are not one history; "
                                     "config.toml is unchanged") from None
                fresh.catch_up_from(log)
                if engine.shared_position() != fresh.shared_position():
                    continue  # others appended meanwhile
                if engine.last_seq() != fresh.last_seq():
                    fresh_ops = engine.publish_to(log) if publish else 0
                    if fresh_ops:
                        published += fresh_ops
                        continue
                    raise StoreError(
                        f"the project holds {engine.last_seq()} ops, a store fed from the "
                        f"shared op log {fresh.last_seq()}: the log is not the project's; "
                        "config.toml is unchanged")
                ours, theirs = engine.state_hash(), fresh.state_hash()
                if ours != theirs:
                    raise StoreError(f"the project's state ({ours}) differs from the state "
                                     f"rebuilt from the shared op log ({theirs}); config.toml "
                                     "is unchanged")
                return ours, published
        raise StoreError(f"the shared op log kept growing through {_ROUNDS} rounds of "
                         "catching up; config.toml is unchanged: run the migration again")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sweep(root: str) -> None:
    """Remove the scratch stores of checks that were killed before they could."""
    for name in os.listdir(root):
        if name.startswith(_TEMPORARY):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
