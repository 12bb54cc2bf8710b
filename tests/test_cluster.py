"""Two daemons, each on its own project, sharing one op log on a real PostgreSQL server
(``[store] url``): a write to either is read back from the other, and both end with the same
state; ``config.toml`` refuses a URL holding a password."""

from __future__ import annotations

import subprocess
import sys

import requests

from test_daemon import daemon, key, make_project, op, wait_until


def _share(project: str, dsn_url: str) -> None:
    with open(f"{project}/.conflux/config.toml", "a") as fh:
        fh.write(f'\n[store]\nurl = "{dsn_url}"\n')


def _url(postgres, dsn: str) -> str:
    database = dsn.rsplit("dbname=", 1)[1]
    return f"postgresql://conflux@127.0.0.1:{postgres.port}/{database}"


def _state(url, env="production"):
    r = requests.get(f"{url}/v1/state", params={"env": env}, headers=key("zara"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["entities"]


def test_two_daemons_converge_through_the_shared_log(tmp_path, postgres, pg_dsn):
    shared_url = _url(postgres, pg_dsn)
    a, b = make_project(tmp_path / "a"), make_project(tmp_path / "b")
    for project in (a, b):
        _share(project, shared_url)
    with daemon(a) as (url_a, _), daemon(b) as (url_b, _):
        r = requests.post(f"{url_a}/v1/ops", json=op("service.checkout", "image", "shop:1",
                                                      op_id="img-1"),
                          headers=key("zara"), timeout=10)
        assert r.status_code == 200, r.text
        assert wait_until(lambda: _state(url_b).get("service.checkout", {}).get("image")
                          == "shop:1")
        batch = {"ops": [op("route.api", "weight", w, op_id=f"w-{w}") for w in (30, 70, 50)]}
        assert requests.post(f"{url_b}/v1/ops", json=batch, headers=key("zara"),
                             timeout=10).status_code == 200
        assert requests.post(f"{url_a}/v1/ops", json=op("route.api", "weight", 60,
                                                         op_id="w-a"),
                             headers=key("zara"), timeout=10).status_code == 200
        assert wait_until(lambda: _state(url_a) == _state(url_b)
                          and _state(url_a).get("route.api", {}).get("weight") == 70)
        log_a = requests.get(f"{url_a}/v1/ops", headers=key("zara"), timeout=10).json()["ops"]
        assert sorted(o["op_id"] for o in log_a) == ["img-1", "w-30", "w-50", "w-70",
                                                     "w-a"]
        # each daemon's status names the shared log, itself and the other, and how far
        # behind it is: nothing, in the end
        def shared(url):
            return requests.get(f"{url}/v1/status", headers=key("zara"),
                                timeout=10).json()["shared_log"]
        assert wait_until(lambda: shared(url_a)["lag_ops"] == 0 == shared(url_b)["lag_ops"]
                          and len(shared(url_a)["nodes"]) == 2)
        status_a, status_b = shared(url_a), shared(url_b)
        assert status_a["url"] == shared_url and status_a["reachable"] is True
        assert {n["node"] for n in status_a["nodes"]} == {status_a["node"], status_b["node"]}
        assert status_a["node"] != status_b["node"]
        text = subprocess.run([sys.executable, "-c", "import sys; from conflux.cli import "
                               "main; sys.exit(main(sys.argv[1:]))", "--dir", a, "status"],
                              capture_output=True, text=True, timeout=60)
        assert text.returncode == 0, text.stderr
        assert f"node {status_a['node']}, 0 ops behind" in text.stdout
        assert status_b["node"] in text.stdout

def _logged(dsn: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT op_id FROM conflux_log ORDER BY pos")]


def test_a_write_is_answered_once_the_shared_log_has_it(tmp_path, postgres, pg_dsn):
    project = make_project(tmp_path / "p")
    _share(project, _url(postgres, pg_dsn))
    with daemon(project) as (url, _):
        r = requests.post(f"{url}/v1/ops", json=op("route.api", "weight", 10, op_id="w-1"),
                          headers=key("zara"), timeout=10)
        assert r.status_code == 200, r.text
        assert _logged(pg_dsn) == ["w-1"]  # at the answer, not later
        postgres.halt()
        try:
            r = requests.post(f"{url}/v1/ops", json=op("route.api", "weight", 20, op_id="w-2"),
                              headers=key("zara"), timeout=30)
            assert r.status_code == 503, r.text
            assert "same op ids" in r.json()["error"]["message"]
        finally:
            postgres.resume()
        # the refused write was written nowhere: the retry applies it, once
        assert requests.get(f"{url}/v1/ops", headers=key("zara"),
                            timeout=10).json()["ops"][-1]["op_id"] == "w-1"
        r = requests.post(f"{url}/v1/ops", json=op("route.api", "weight", 20, op_id="w-2"),
                          headers=key("zara"), timeout=30)
        assert r.status_code == 200, r.text
        assert not r.json().get("duplicate")
        r = requests.post(f"{url}/v1/ops", json=op("route.api", "weight", 20, op_id="w-2"),
                          headers=key("zara"), timeout=30)
        assert r.json()["duplicate"] is True
        assert _logged(pg_dsn) == ["w-1", "w-2"]
        ops = requests.get(f"{url}/v1/ops", headers=key("zara"), timeout=10).json()["ops"]
        assert [o["op_id"] for o in ops] == ["w-1", "w-2"]


def test_a_shared_log_url_holding_a_password_is_refused(tmp_path):
    project = make_project(tmp_path / "p")
    _share(project, "postgresql://conflux:s3cret@db.internal/conflux")
    done = subprocess.run([sys.executable, "-c", "import sys; from conflux.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "--dir", project, "status"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "config.toml:" in done.stderr
    assert "PGPASSWORD" in done.stderr and "s3cret" not in done.stderr
