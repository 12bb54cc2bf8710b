"""Attacks on access: who may read the daemon's status, and what ``conflux import`` may read.

- ``GET /v1/status`` (op counts, conflicts and violations of the whole store) answered any
  authenticated actor, even one with no role at all.
- ``conflux import`` followed symbolic links out of the imported tree: a link to
  ``/etc/passwd`` was opened, parsed, and its content quoted in the error. A link loop, a
  FIFO (the read blocked for ever) and a device were no better.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from conflux.auth import hash_key
from conflux.engine import Engine
from conftest import EXAMPLE_SCHEMA, run_cli
from test_daemon import daemon, key, make_project

GUEST_KEY = "guest-key-0123456789abcdef"
PARTNER_KEY = "partner-key-0123456789abcdef"
NARROW_RBAC = """
[role.route-reader]
permissions = [{ actions = ["read"], resource = "route.*" }]

[[assign]]
actor = "operator:*"
roles = ["route-reader"]
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("access"))
    root = os.path.join(project, ".conflux")
    with open(os.path.join(root, "api-keys.toml"), "a") as fh:
        for actor, cls, secret in (("guest", "policy", GUEST_KEY),
                                   ("partner", "operator", PARTNER_KEY)):
            fh.write(f'\n[[key]]\nhash = "{hash_key(secret)}"\nactor = "{actor}"\n'
                     f'class = "{cls}"\n')
    with open(os.path.join(root, "rbac.toml"), "a") as fh:
        fh.write(NARROW_RBAC)
    with daemon(project) as (url, _):
        r = requests.post(f"{url}/v1/ops", headers=key("zara"), timeout=10, json={
            "type": "set_field", "entity_id": "route.api", "field": "weight", "value": 5})
        assert r.status_code == 200, r.text
        yield url


@pytest.mark.parametrize("secret", [GUEST_KEY, PARTNER_KEY])
def test_status_is_refused_to_an_actor_without_read_on_everything(live, secret):
    r = requests.get(f"{live}/v1/status", headers={"X-API-Key": secret}, timeout=10)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"]["code"] == "forbidden"
    assert "operations" not in body and "violation_list" not in body


def test_status_is_served_to_readers_and_narrow_readers_keep_their_reads(live):
    r = requests.get(f"{live}/v1/status", headers=key("reader-1"), timeout=10)
    assert r.status_code == 200 and r.json()["operations"] >= 1
    r = requests.get(f"{live}/v1/entities/route.api", headers={"X-API-Key": PARTNER_KEY},
                     timeout=10)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------------------------
# import and links


@pytest.fixture
def project(tmp_path):
    Engine.init(str(tmp_path / "p"), str(EXAMPLE_SCHEMA)).close()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.yaml").write_text("name: a\nreplicas: 2\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("name: stolen\nreplicas: TOP-SECRET-VALUE\n")
    return tmp_path


def _import(capsys, project, path):
    return run_cli(capsys, "--dir", str(project / "p"), "import", str(path), "-t", "service")


def _operations(project) -> int:
    with Engine(str(project / "p")) as engine:
        return engine.last_seq()


def _refused(code, out, err, project, *words):
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert _operations(project) == 0  # the good file beside it was not imported either


def test_a_link_to_a_file_outside_the_tree_is_refused_unread(capsys, project):
    os.symlink(project / "outside" / "secret.yaml", project / "tree" / "s.yaml")
    code, out, err = _import(capsys, project, project / "tree")
    _refused(code, out, err, project, "s.yaml", "outside the imported tree")
    assert "TOP-SECRET" not in err and "stolen" not in err


def test_a_link_to_etc_passwd_is_refused_and_nothing_of_it_is_quoted(capsys, project):
    os.symlink("/etc/passwd", project / "tree" / "passwd.yaml")
    code, out, err = _import(capsys, project, project / "tree")
    _refused(code, out, err, project, "passwd.yaml", "outside the imported tree")
    assert "root:" not in err and "/bin/" not in err


def test_a_link_to_a_directory_outside_the_tree_is_refused(capsys, project):
    os.symlink(project / "outside", project / "tree" / "more")
    code, out, err = _import(capsys, project, project / "tree")
    _refused(code, out, err, project, "more", "outside the imported tree")
    assert "TOP-SECRET" not in err


def test_a_link_loop_is_refused(capsys, project):
    os.symlink(project / "tree" / "loop2.yaml", project / "tree" / "loop1.yaml")
    os.symlink(project / "tree" / "loop1.yaml", project / "tree" / "loop2.yaml")
    code, out, err = _import(capsys, project, project / "tree")
    _refused(code, out, err, project, "loop", "leads nowhere")


def test_a_link_to_a_directory_inside_the_tree_is_not_walked_twice(capsys, project):
    (project / "tree" / "sub").mkdir()
    (project / "tree" / "sub" / "b.yaml").write_text("name: b\nreplicas: 3\n")
    os.symlink(project / "tree", project / "tree" / "sub" / "up")  # a cycle, if followed
    code, out, err = _import(capsys, project, project / "tree")
    assert code == 0, err
    assert "2 files" in out


def _import_in_a_process(project, path):
    """A FIFO would block an in-process read for ever: run the command, and bound it."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from conflux.cli import main; "
         "sys.exit(main(sys.argv[1:]))", "--dir", str(project / "p"), "import", str(path),
         "-t", "service", "--format", "yaml"],
        capture_output=True, text=True, timeout=60)


def test_a_fifo_in_the_tree_is_refused_without_blocking(project):
    os.mkfifo(project / "tree" / "pipe.yaml")
    done = _import_in_a_process(project, project / "tree")
    _refused(done.returncode, done.stdout, done.stderr, project, "pipe.yaml", "FIFO")


def test_a_fifo_or_a_device_given_as_path_is_refused_without_blocking(project):
    os.mkfifo(project / "pipe.yaml")
    for path in (project / "pipe.yaml", "/dev/zero"):
        done = _import_in_a_process(project, path)
        _refused(done.returncode, done.stdout, done.stderr, project, str(path),
                 "not a regular file")


def test_a_link_given_as_path_is_followed(capsys, project):
    os.symlink(project / "tree", project / "current")
    os.symlink(project / "tree" / "a.yaml", project / "one.yaml")
    code, out, err = _import(capsys, project, project / "current")
    assert code == 0, err
    assert _operations(project) == 1
    code, out, err = _import(capsys, project, project / "one.yaml")
    assert code == 0, err  # the same entity and value: nothing more to write
