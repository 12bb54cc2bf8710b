"""The original Conflux's README, run as written.

Users come to Conflux from the original (Rust) project with its README in hand: every command,
file and request body below is copied from it, character for character (only `cargo install`
is left out, and the placeholders it leaves to the reader, a config tree to import and an API
key, are filled in). They run with the installed ``conflux`` command, ``curl`` and a real
daemon, in a fresh project under a fresh ``$HOME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

BIN = pathlib.Path(sys.executable).parent
CONFLUX = shutil.which("conflux", path=str(BIN))

# "Schema Example"
SCHEMA = """\
name = "my-infrastructure"
version = "1.0.0"

[environments]
base = "production"
overlays = [
    { name = "staging", inherits = "production" },
    { name = "development", inherits = "staging" },
]

[entity.route]
fields = [
    { name = "path",     type = "string",       merge = "lww" },
    { name = "weight",   type = "int",          merge = "max" },
    { name = "timeout",  type = "duration",     merge = "min" },
    { name = "service",  type = "ref<service>", merge = "lww" },
]

[entity.service]
fields = [
    { name = "image",    type = "string",     merge = "lww" },
    { name = "replicas", type = "int",        merge = "max", default = 1 },
    { name = "env_vars", type = "map",        merge = "lww" },
    { name = "ports",    type = "list<int>",  merge = "set" },
]
"""

# "Quick Start" (after `cargo install conflux`)
QUICK_START = """\
# Initialize a project
conflux init --schema schema.toml

# Import existing config files
conflux import ./configs/ --entity-type service

# Make a change
conflux set route.api weight 80 --intent "shifting traffic for canary"

# View entity state
conflux get route.api

# See document status
conflux status

# View operation history
conflux log --limit 10

# See who changed what
conflux blame route.api

# Create a milestone (commit to git)
conflux milestone create -m "post-canary traffic shift"
"""

# "REST API"
GET_STATE = """\
curl -H "X-API-Key: your-api-key" \\
  http://localhost:9400/v1/state
"""
SUBMIT_OP = """\
curl -X POST http://localhost:9400/v1/ops \\
  -H "Content-Type: application/json" \\
  -H "X-API-Key: your-api-key" \\
  -d '{
    "type": "set_field",
    "entity_id": "service.api",
    "field": "replicas",
    "value": 5,
    "intent": "Scale for traffic"
  }'
"""
CREATE_MILESTONE = """\
curl -X POST http://localhost:9400/v1/milestones \\
  -H "Content-Type: application/json" \\
  -H "X-API-Key: your-api-key" \\
  -d '{"message": "Deploy v2.0", "environments": ["production"]}'
"""
EXPORT_AUDIT = """\
curl -H "X-API-Key: your-api-key" \\
  "http://localhost:9400/v1/audit/export?since=2024-01-01"
"""

# "Security"
HASH_KEY = 'conflux auth hash-key "your-secret-key"\n'
API_KEYS = """\
[[keys]]
key_hash = "{hash}"
actor_id = "ci-pipeline"
actor_class = "pipeline"
"""
SIGNING_KEYS = """\
# Generate a signing key pair
conflux keys generate --actor alice --output ~/.conflux/keys/alice.pem

# Register the public key
conflux keys register --key-id alice@2024 --actor alice \\
  --public-key "M4kJ839WYm//Jarj9Xticyn6P7z1NQb+UAy5X6Y3dv8="
"""
RBAC = """\
# rbac.toml
[role.developer]
permissions = [
  { actions = ["read", "write"], resource = "*@development" },
]

[role.operator]
inherits = ["developer"]
permissions = [
  { actions = ["write", "override"], resource = "*@staging" },
  { actions = ["promote"], resource = "*@production" },
]

[[assignment]]
actor_pattern = "ci-*"
roles = ["developer"]
"""
RBAC_CHECK = """\
# Check permissions
conflux rbac check --actor alice --action write --resource "service/api@staging"
"""
AUDIT = """\
# Export operation history as JSON Lines
conflux audit export --since 2024-01-01 --output audit.jsonl

# Verify signatures in export
conflux audit verify audit.jsonl --key-registry .conflux/keys.json
"""


class Shell:
    """Runs README snippets with bash in one project directory, as a user's shell would."""

    def __init__(self, cwd: pathlib.Path, home: pathlib.Path):
        self.cwd = cwd
        self.env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}"
                    f"{os.environ.get('PATH', '')}", "CONFLUX_ACTOR": "human:zara"}
        self.env.pop("CONFLUX_PROJECT", None)

    def __call__(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["bash", "-e", "-c", script], cwd=self.cwd, env=self.env,
                             capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"exit {out.returncode} from:\n{script}\n--- stdout\n"
                                 f"{out.stdout}\n--- stderr\n{out.stderr}")
        return out


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def daemon(shell: Shell, command: str, port: int):
    """``command`` (a README line starting the daemon) running until the block ends."""
    assert _port_free(port), f"port {port}, which the README's example uses, is taken"
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=shell.cwd, env=shell.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while _port_free(port) or shell(f"curl -sf http://localhost:{port}/v1/health",
                                        check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the daemon did not start:\n" + proc.stdout.read().decode())
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    assert CONFLUX, f"the conflux command is not installed beside {sys.executable}"
    assert shutil.which("curl"), "curl is needed to run the README's REST examples"
    root = tmp_path_factory.mktemp("original-readme")
    project, home = root / "my-infrastructure", root / "home"
    (project / "configs").mkdir(parents=True)
    home.mkdir()
    (project / "schema.toml").write_text(SCHEMA)
    # the existing config files the Quick Start imports
    (project / "configs" / "api.yaml").write_text(
        "name: api\nimage: registry.example.com/api:1.4\nreplicas: 3\nports: [8080, 9090]\n")
    (project / "configs" / "web.json").write_text(
        '{"name": "web", "image": "registry.example.com/web:2.0", "env_vars": {"LOG": "info"}}\n')
    return Shell(project, home)


def test_quick_start(shell):
    out = shell(QUICK_START).stdout
    assert "route.api in production" in out
    get = shell("conflux get route.api --json").stdout
    assert json.loads(get)["fields"]["weight"]["value"] == 80
    entries = json.loads(shell("conflux log --limit 10 --json").stdout)
    assert entries[0]["intent"] == "shifting traffic for canary"
    assert {e["entity_id"] for e in entries} == {"route.api", "service.api", "service.web"}
    message = shell("git --git-dir .conflux/milestones.git log -1 --format=%B").stdout
    assert message.startswith("milestone: post-canary traffic shift\n\nOperations since last "
                              "milestone:\n")
    assert "  [human:zara] route.api.weight: unset → 80 (shifting traffic for canary)\n" \
        in message
    assert "  [human:zara] service.api.ports: +8080 +9090 (import ./configs/)\n" in message


def test_daemon_on_the_quick_start_port(shell):
    with daemon(shell, "conflux daemon --port 8080", 8080):
        health = json.loads(shell("curl -s http://localhost:8080/v1/health").stdout)
        assert health["status"] == "ok"


def test_rest_api_with_an_api_key(shell):
    hashed = shell(HASH_KEY)
    assert hashed.stdout.startswith("sha256:") and len(hashed.stdout.strip()) == 71
    # the key the README's curl examples send, hashed the same way, in the README's form
    key_hash = shell('conflux auth hash-key "your-api-key"').stdout.strip()
    (shell.cwd / ".conflux" / "api-keys.toml").write_text(API_KEYS.format(hash=key_hash))
    with daemon(shell, "conflux daemon", 9400):
        state = json.loads(shell(GET_STATE).stdout)
        assert state["entities"]["service.api"]["replicas"] == 3

        ack = json.loads(shell(SUBMIT_OP).stdout)
        assert ack["seq"] > 0 and ack["op_id"]
        state = json.loads(shell(GET_STATE).stdout)
        assert state["entities"]["service.api"]["replicas"] == 5

        milestone = json.loads(shell(CREATE_MILESTONE).stdout)
        assert milestone["title"] == "Deploy v2.0" and milestone["envs"] == ["production"]
        assert "[pipeline:ci-pipeline] service.api.replicas: 3 → 5 (Scale for traffic)" \
            in milestone["message"]

        lines = [json.loads(line) for line in shell(EXPORT_AUDIT).stdout.splitlines()
                 if line.strip()]
        ops = [line for line in lines if "op_id" in line]
        assert ops[-1]["actor"] == "ci-pipeline" and ops[-1]["intent"] == "Scale for traffic"

        # a key the file does not hold is refused
        refused = shell(GET_STATE.replace("your-api-key", "not-the-key"))
        assert json.loads(refused.stdout)["error"]["code"] == "unauthorized"


def test_signing_keys(shell):
    shell(SIGNING_KEYS)
    pem = pathlib.Path(shell.env["HOME"]) / ".conflux" / "keys" / "alice.pem"
    assert pem.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert oct(pem.stat().st_mode & 0o777) == "0o600"
    listed = shell("conflux keys list").stdout
    assert "alice@2024" in listed


def test_rbac(shell):
    (shell.cwd / ".conflux" / "rbac.toml").write_text(RBAC)
    shell("conflux rbac validate")
    denied = shell(RBAC_CHECK, check=False)
    # the README's rules assign no role to alice: denied, with the reason
    assert denied.returncode == 1, denied.stderr
    assert denied.stdout.startswith("deny: [human:alice] write service.api@staging")
    allowed = shell(RBAC_CHECK.replace("alice", "pipeline:ci-pipeline")
                    .replace("@staging", "@development"))
    assert allowed.stdout.startswith("allow: ")
    assert "actor_pattern = 'ci-*'" in allowed.stdout


def test_audit_export_and_verify(shell):
    out = shell(AUDIT).stdout
    assert "OK" in out
    lines = (shell.cwd / "audit.jsonl").read_text().splitlines()
    assert any('"Scale for traffic"' in line for line in lines)
