"""Putting a project on a shared op log on a real PostgreSQL server, and taking it off:
``conflux init --store`` (a new node joins, catching up at once) and ``conflux store
migrate`` (an LMDB project's whole log published and checked by state hash before
config.toml changes; and back). Refusals are one line, exit status 2, and change nothing."""

from __future__ import annotations

import os
import pathlib
import random
import socket

import psycopg
import pytest

from conflux.engine import Engine
from conflux.engine.migration import migration_lock
from conflux.engine.settings import write_store_url

from conftest import AUTOSCALER, CI, EXAMPLE_SCHEMA, ZARA, run_cli
from test_daemon import daemon, make_project


def _url(postgres, dsn: str) -> str:
    return f"postgresql://conflux@127.0.0.1:{postgres.port}/{dsn.rsplit('dbname=', 1)[1]}"


def _logged(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT op_id FROM conflux_log ORDER BY pos")]


def _config(project) -> str:
    return (pathlib.Path(project) / ".conflux" / "config.toml").read_text()


def _init(capsys, project, *extra):
    return run_cli(capsys, "--dir", str(project), "init", "--schema", str(EXAMPLE_SCHEMA),
                   *extra)


def _hash(project) -> str:
    with Engine(str(project), sync=False) as engine:
        return engine.state_hash()


def _varied_ops(rng, prefix: str, count: int) -> list[dict]:
    """Sets, unsets, adds, removes, review writes and overrides over the example schema."""
    ops = []
    for k in range(count):
        env = rng.choice(["production", "staging", "development"])
        op = {"op_id": f"{prefix}-{k}", "env": env}
        kind = rng.randrange(8)
        if kind == 0:
            op |= {"type": "set_field", "entity_id": f"route.r{rng.randrange(6)}",
                   "field": "weight", "value": rng.randint(0, 100)}
            if rng.random() < 0.2:
                op["override"] = True
        elif kind == 1:
            op |= {"type": "set_field", "entity_id": f"service.s{rng.randrange(4)}",
                   "field": "image", "value": f"registry.local/s:{rng.randint(1, 40)}"}
        elif kind == 2:
            op |= {"type": "add_elements", "entity_id": f"upstream.u{rng.randrange(3)}",
                   "field": "targets", "elements": [f"10.0.0.{rng.randint(1, 9)}"]}
        elif kind == 3:
            op |= {"type": "remove_elements", "entity_id": f"upstream.u{rng.randrange(3)}",
                   "field": "targets", "elements": [f"10.0.0.{rng.randint(1, 9)}"]}
        elif kind == 4:
            op |= {"type": "set_field", "entity_id": f"service.s{rng.randrange(4)}",
                   "field": "tier", "value": rng.choice(["web", "batch"])}
        elif kind == 5:
            op |= {"type": "add_elements", "entity_id": f"service.s{rng.randrange(4)}",
                   "field": "labels", "elements": [rng.choice(["web", "canary", "eu"])]}
        elif kind == 6:
            op |= {"type": "set_field", "entity_id": f"route.r{rng.randrange(6)}",
                   "field": "timeout", "value": f"{rng.randint(1, 60)}s"}
        else:
            op |= {"type": "unset_field", "entity_id": f"route.r{rng.randrange(6)}",
                   "field": "timeout"}
        ops.append(op)
    return ops


def _fill(engine, rng, prefix: str, count: int) -> None:
    ops = _varied_ops(rng, prefix, count)
    for lo in range(0, count, 25):
        engine.apply(ops[lo:lo + 25], rng.choice([ZARA, CI, AUTOSCALER]))
    engine.promote("staging", "production", None, ZARA, intent="release")


# -- conflux init --store ---------------------------------------------------------------------


def test_init_store_joins_the_shared_log_and_writes_land_there(tmp_path, capsys, postgres,
                                                               pg_dsn):
    url = _url(postgres, pg_dsn)
    code, out, err = _init(capsys, tmp_path / "a", "--store", url)
    assert code == 0, err
    assert "0 ops applied" in out
    config = _config(tmp_path / "a")
    assert config.endswith(f'[store]\nurl = "{url}"\n')
    assert "# Conflux settings for this project." in config  # the commented defaults stay
    code, _, err = run_cli(capsys, "--dir", str(tmp_path / "a"), "set", "route.api", "weight",
                           "30", "--op-id", "w-1")
    assert code == 0, err
    assert _logged(pg_dsn) == ["w-1"]


def test_init_store_on_a_log_holding_ops_catches_up_at_once(tmp_path, capsys, postgres,
                                                            pg_dsn):
    url = _url(postgres, pg_dsn)
    assert _init(capsys, tmp_path / "a", "--store", url)[0] == 0
    with Engine(str(tmp_path / "a"), sync=False) as a:
        _fill(a, random.Random(1), "a", 60)
        written = a.last_seq()
    code, out, err = _init(capsys, tmp_path / "b", "--store", url)
    assert code == 0, err
    assert f"caught up: {written} ops applied from the shared op log" in out
    assert _hash(tmp_path / "b") == _hash(tmp_path / "a")
    assert _hash(tmp_path / "a") in out


def test_init_without_store_is_lmdb_alone(tmp_path, capsys):
    code, out, err = _init(capsys, tmp_path / "p")
    assert code == 0, err
    assert "shared op log" not in out
    assert "\n[store]" not in _config(tmp_path / "p")


# -- conflux store migrate ------------------------------------------------------------------------


def test_an_lmdb_project_migrates_to_the_shared_log_and_back(tmp_path, capsys, postgres,
                                                             pg_dsn):
    url = _url(postgres, pg_dsn)
    rng = random.Random(7)
    # a node already on the shared log, with ops of its own
    assert _init(capsys, tmp_path / "x", "--store", url)[0] == 0
    with Engine(str(tmp_path / "x"), sync=False) as x:
        _fill(x, rng, "x", 40)
        theirs = x.last_seq()
    # the project to move: a few hundred varied ops, in LMDB alone
    project = tmp_path / "p"
    assert _init(capsys, project)[0] == 0
    with Engine(str(project), sync=False) as p:
        _fill(p, rng, "p", 300)
        ours = p.last_seq()
    config_before = _config(project)

    code, out, err = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", url)
    assert code == 0, err
    assert f"published {ours} ops to {url} (0 were there already); applied {theirs} ops" in out
    digest = _hash(project)
    assert digest in out and digest.startswith("sha256:")
    assert _config(project) == config_before + f'\n[store]\nurl = "{url}"\n'
    assert len(_logged(pg_dsn)) == ours + theirs

    # the project now opens on the shared log, and writes land there
    with Engine(str(project), sync=False) as p:
        assert p.settings.store_url == url and p.last_seq() == ours + theirs
        p.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                  "value": 55, "env": "production", "op_id": "after-1"}], ZARA)
    assert _logged(pg_dsn)[-1] == "after-1"

    # another node joins and reaches the identical state
    code, out, err = _init(capsys, tmp_path / "y", "--store", url)
    assert code == 0, err
    assert f"{ours + theirs + 1} ops applied" in out
    assert _hash(tmp_path / "y") == _hash(project)

    # migrating again to where it is: refused, nothing changed
    config_now = _config(project)
    code, out, err = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", url)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "already" in err and _config(project) == config_now

    # and back: what the others logged meanwhile comes along
    with Engine(str(tmp_path / "x"), sync=False) as x:
        x.apply(_varied_ops(rng, "x-late", 20), CI)
    code, out, err = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", "lmdb")
    assert code == 0, err
    assert "caught up with the shared op log" in out and ": 20 ops applied" in out
    assert _config(project) == config_before
    with Engine(str(project), sync=False) as p:
        assert p.settings.store_url is None
        assert type(p.store).__name__ == "LmdbStore"
        assert p.last_seq() == len(_logged(pg_dsn))
        digest = p.state_hash()
    assert digest in out
    with Engine(str(tmp_path / "x"), sync=False) as x:
        from conflux.engine.migration import catch_up

        catch_up(x)
        assert x.state_hash() == digest
    code, _, err = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", "lmdb")
    assert code == 2 and "already" in err and len(err.splitlines()) == 1


def test_a_migration_broken_off_is_finished_by_running_it_again(tmp_path, capsys, postgres,
                                                                pg_dsn, monkeypatch):
    url = _url(postgres, pg_dsn)
    project = tmp_path / "p"
    assert _init(capsys, project)[0] == 0
    with Engine(str(project), sync=False) as p:
        _fill(p, random.Random(3), "p", 80)
        ours = p.last_seq()
    config_before = _config(project)

    import conflux.engine.migration as migration

    def killed(path, url):
        raise KeyboardInterrupt  # the process stops before config.toml is written

    monkeypatch.setattr(migration, "write_store_url", killed)
    code, _, _ = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", url)
    assert code == 130
    monkeypatch.undo()
    assert _config(project) == config_before
    assert len(_logged(pg_dsn)) == ours
    assert not [n for n in os.listdir(project / ".conflux") if n.startswith(".migrate")]

    code, out, err = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", url)
    assert code == 0, err
    assert f"published 0 ops to {url} ({ours} were there already); applied 0 ops" in out
    assert f'url = "{url}"' in _config(project)
    assert len(_logged(pg_dsn)) == ours


def test_a_project_whose_log_is_not_the_shared_logs_is_not_switched(tmp_path, capsys,
                                                                    postgres, pg_dsn):
    # the shared log names an op id this project bound with other content: the check finds
    # that the log and the project disagree, and config.toml stays as it was
    url = _url(postgres, pg_dsn)
    assert _init(capsys, tmp_path / "x", "--store", url)[0] == 0
    with Engine(str(tmp_path / "x"), sync=False) as x:
        x.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                  "value": 10, "env": "production", "op_id": "same-id"}], ZARA)
    project = tmp_path / "p"
    assert _init(capsys, project)[0] == 0
    with Engine(str(project), sync=False) as p:
        p.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                  "value": 90, "env": "production", "op_id": "same-id"}], ZARA)
    before = _config(project)
    code, out, err = run_cli(capsys, "--dir", str(project), "store", "migrate", "--to", url)
    assert code == 1 and out == "" and len(err.splitlines()) == 1, err
    assert "config.toml is unchanged" in err
    assert _config(project) == before


# -- refusals -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line_refusal(result) -> str:
    code, out, err = result
    assert code == 2 and out == "" and len(err.splitlines()) == 1, (code, out, err)
    return err


def test_init_store_refuses_a_password_or_an_unreachable_server(tmp_path, capsys, postgres,
                                                                 pg_dsn):
    url = _url(postgres, pg_dsn)
    err = _one_line_refusal(_init(capsys, tmp_path / "a", "--store",
                                  url.replace("conflux@", "conflux:s3cret@")))
    assert "password" in err and "s3cret" not in err and "nothing was created" in err
    err = _one_line_refusal(_init(capsys, tmp_path / "a", "--store",
                                  f"postgresql://conflux@127.0.0.1:{_free_port()}/x"))
    assert "cannot reach the shared op log" in err and "nothing was created" in err
    _one_line_refusal(_init(capsys, tmp_path / "a", "--store", "mysql://db/x"))
    assert not (tmp_path / "a").exists()


def test_migrate_refuses_nonsense_and_changes_nothing(tmp_path, capsys, postgres, pg_dsn):
    url = _url(postgres, pg_dsn)
    project = tmp_path / "p"
    assert _init(capsys, project)[0] == 0
    with Engine(str(project), sync=False) as p:
        _fill(p, random.Random(5), "p", 30)
    before = _config(project)
    digest = _hash(project)
    for to, words in ((url.replace("conflux@", "conflux:s3cret@"), "password"),
                      ("sqlite:///x.db", "'lmdb' or a PostgreSQL URL"),
                      ("lmdb", "already"),
                      (f"postgresql://conflux@127.0.0.1:{_free_port()}/x", "cannot reach")):
        err = _one_line_refusal(run_cli(capsys, "--dir", str(project), "store", "migrate",
                                        "--to", to))
        assert words in err and "nothing was changed" in err and "s3cret" not in err, err
    assert _config(project) == before and _hash(project) == digest
    assert not _has_log(pg_dsn)
    _one_line_refusal(run_cli(capsys, "--dir", str(project), "store", "migrate"))
    # a project on one shared log is not moved to another without going back first
    write_store_url(str(project / ".conflux" / "config.toml"), url)
    err = _one_line_refusal(run_cli(capsys, "--dir", str(project), "store", "migrate", "--to",
                                    url.rsplit("/", 1)[0] + "/other"))
    assert "--to lmdb" in err


def _has_log(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass('conflux_log')").fetchone()[0] is not None


def test_a_running_daemon_and_a_migration_keep_off_each_other(tmp_path, capsys, postgres,
                                                              pg_dsn):
    url = _url(postgres, pg_dsn)
    project = make_project(tmp_path / "p")
    before = _config(project)
    with daemon(project):
        err = _one_line_refusal(run_cli(capsys, "--dir", project, "store", "migrate", "--to",
                                        url))
        assert "a daemon is serving" in err and "nothing was changed" in err
    assert _config(project) == before and not _has_log(pg_dsn)
    # and a daemon does not start while a migration holds the project
    with migration_lock(os.path.join(project, ".conflux")):
        err = _one_line_refusal(run_cli(capsys, "--dir", project, "daemon", "--port",
                                        str(_free_port())))
        assert "a store migration is running" in err
    # once the daemon is gone, the migration goes ahead
    code, _, err = run_cli(capsys, "--dir", project, "store", "migrate", "--to", url)
    assert code == 0, err


# -- config.toml edits ----------------------------------------------------------------------------


def test_store_url_edits_keep_every_other_line(tmp_path):
    path = tmp_path / "config.toml"
    text = ('# settings\n[clock]\nmax_clock_offset_ms = 500  # half a second\n\n'
            '[store]  # the cluster\n# the password is in PGPASSWORD\nurl = "postgresql://a@h/db"\n'
            '\n[limits]\nmax_value_bytes = 1000\n')
    path.write_text(text)
    write_store_url(str(path), "postgresql://b@h2/db")
    assert path.read_text() == text.replace("a@h/db", "b@h2/db")
    write_store_url(str(path), None)
    assert path.read_text() == text.replace('[store]  # the cluster\n', '').replace(
        'url = "postgresql://a@h/db"\n', '')
    write_store_url(str(path), "postgresql://c@h/db")
    assert path.read_text().endswith('max_value_bytes = 1000\n\n[store]\nurl = '
                                     '"postgresql://c@h/db"\n')
    # a URL needing escapes stays that URL
    write_store_url(str(path), 'postgresql://c@h/db?application_name=a"b\\c')
    import tomllib

    assert tomllib.loads(path.read_text())["store"]["url"].endswith('a"b\\c')


def test_the_state_hash_follows_the_ops_not_their_order(tmp_path):
    with Engine.init(str(tmp_path / "a"), str(EXAMPLE_SCHEMA), sync=False) as a, \
            Engine.init(str(tmp_path / "b"), str(EXAMPLE_SCHEMA), sync=False) as b:
        _fill(a, random.Random(11), "o", 120)
        entries = [bytes(data) for _, data in a.entries(1)]
        random.Random(12).shuffle(entries)
        for lo in range(0, len(entries), 7):
            b.apply_entries(entries[lo:lo + 7])
        assert b.state_hash() == a.state_hash()
        b.apply([{"type": "set_field", "entity_id": "route.api", "field": "path",
                  "value": "/v2", "env": "staging"}], ZARA)
        assert b.state_hash() != a.state_hash()
