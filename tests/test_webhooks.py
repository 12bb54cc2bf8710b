"""Webhooks: webhooks.toml refused with file and line, signed deliveries to real loopback
receivers, filters, batching, retries, dead endpoints, restarts, and the daemon's delivery
process end to end."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conflux.cli import main
from conflux.engine import Engine
from conflux.errors import InputError
from conflux.schema import load_schema
from conflux.status import project_status
from conflux.webhooks import Deliverer, load_webhooks
from conftest import AUTOSCALER, CI, EXAMPLE_SCHEMA, ZARA, set_op
from test_daemon import (_children, _comm, _delivery, _running, _workers, daemon,
                         free_port, key, make_project, op, wait_until)

SECRET = "s3cret-for-tests"


# --------------------------------------------------------------------------------------------
# A receiver: a real HTTP server on a loopback port, recording what it is sent


class Receiver:
    """Answers POSTs with the statuses in ``script`` (then ``default``), recording each
    request's headers and body; ``delay_s`` makes it slow."""

    def __init__(self, script=(), default=200, delay_s=0.0, on_request=None):
        self.script = list(script)
        self.default = default
        self.delay_s = delay_s
        self.on_request = on_request
        self.requests: list[tuple[dict, bytes, int]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.changed:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                # recorded before answering: once the sender has its answer, it is here
                with receiver.changed:
                    receiver.requests.append((dict(self.headers), body, status))
                    receiver.changed.notify_all()
                if receiver.on_request is not None:
                    receiver.on_request()
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout test)

            def do_GET(self):  # a followed redirect would arrive here
                with receiver.changed:
                    receiver.requests.append((dict(self.headers), b"", 200))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def delivered(self) -> list[dict]:
        """The bodies answered with a 2xx, parsed."""
        return [json.loads(body) for _, body, status in self.requests if 200 <= status < 300]

    def ops(self) -> list[dict]:
        return [o for body in self.delivered for o in body["ops"]]

    def wait_for(self, predicate, timeout=20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(*args, **kwargs):
        made.append(Receiver(*args, **kwargs))
        return made[-1]
    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def project(tmp_path):
    engine = Engine.init(str(tmp_path / "project"), str(EXAMPLE_SCHEMA))
    yield engine
    engine.close()


def write_hooks(engine_or_root, text: str) -> str:
    root = engine_or_root.root if hasattr(engine_or_root, "root") else engine_or_root
    path = os.path.join(root, "webhooks.toml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def hook(name, url, **extra) -> str:
    lines = ["[[webhook]]", f'name = "{name}"', f'url = "{url}"', f'secret = "{SECRET}"']
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n\n"


def deliverer(engine, text) -> Deliverer:
    path = write_hooks(engine, text)
    return Deliverer(engine, load_webhooks(path, schema=engine.schema))


def signature_ok(headers, body, secret=SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Conflux-Signature"], expected)


# --------------------------------------------------------------------------------------------
# The file


BAD = [
    ("unknown key", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\nretries = 3\n',
     5, "unknown key 'retries'"),
    ("ftp url", '[[webhook]]\nname = "a"\nurl = "ftp://x/h"\nsecret = "k"\n', 3,
     "only http:// and https://"),
    ("no host", '[[webhook]]\nname = "a"\nurl = "http:///h"\nsecret = "k"\n', 3, "no host"),
    ("bad port", '[[webhook]]\nname = "a"\nurl = "http://x:99999/"\nsecret = "k"\n', 3,
     "invalid port"),
    ("credentials", '[[webhook]]\nname = "a"\nurl = "https://u:p@x/"\nsecret = "k"\n', 3,
     "credentials"),
    ("no secret", '# hooks\n\n[[webhook]]\nname = "a"\nurl = "http://x/"\n', 3,
     "has no 'secret'"),
    ("empty secret", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = ""\n', 4,
     "non-empty"),
    ("unset env secret", '[[webhook]]\nname = "a"\nurl = "http://x/"\n'
     'secret = "env:CONFLUX_TEST_NO_SUCH_VAR"\n', 4, "$CONFLUX_TEST_NO_SUCH_VAR is not set"),
    ("no url", '[[webhook]]\nname = "a"\nsecret = "k"\n', 1, "has no 'url'"),
    ("no name", '[[webhook]]\nurl = "http://x/"\nsecret = "k"\n', 1, "has no 'name'"),
    ("bad name", '[[webhook]]\nname = "a b"\nurl = "http://x/"\nsecret = "k"\n', 2,
     "not valid"),
    ("top-level key", 'timeout = 3\n[[webhook]]\nname = "a"\nurl = "http://x/"\n'
     'secret = "k"\n', 1, "unknown top-level key 'timeout'"),
    ("duplicate", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n\n'
     '[[webhook]]\nname = "a"\nurl = "http://y/"\nsecret = "k"\n', 7,
     "already declared on line 1"),
    ("bad event", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'events = ["op", "commit"]\n', 5, "unknown event 'commit'"),
    ("unknown env", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'envs = ["prod"]\n', 5, "matches no declared environment"),
    ("unknown type", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'entities = ["router.*"]\n', 5, "no declared entity type"),
    ("actor class", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'actors = ["robot:*"]\n', 5, "matches no actor class"),
    ("empty filter", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'actors = []\n', 5, "non-empty list"),
    ("bool attempts", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'max_attempts = true\n', 5, "'max_attempts' must be a whole number"),
    ("zero batch", '[[webhook]]\nname = "a"\nurl = "http://x/"\nsecret = "k"\n'
     'batch_size = 0\n', 5, "'batch_size'"),
    ("not a list", 'webhook = "x"\n', 1, "list of tables"),
    ("bad toml", '[[webhook]]\nname = "a"\nurl = http://x/\n', 3, "invalid TOML"),
]


@pytest.mark.parametrize("text, line, message", [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_files_are_refused_with_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "webhooks.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_webhooks(str(path), schema=load_schema(str(EXAMPLE_SCHEMA)))
    assert caught.value.line == line, str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)


def test_a_good_file_with_defaults_and_an_env_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFLUX_TEST_HOOK_SECRET", "from-the-environment")
    path = tmp_path / "webhooks.toml"
    path.write_text('[[webhook]]\nname = "audit-sink"\nurl = "https://audit.example:8443/h?x=1"'
                    '\nsecret = "env:CONFLUX_TEST_HOOK_SECRET"\n\n'
                    '[[webhook]]\nname = "milestones"\nurl = "http://127.0.0.1/m"\n'
                    'secret = "literal"\nevents = ["milestone"]\nentities = ["route.*"]\n'
                    'envs = ["prod*"]\nactors = ["autoscaler:*", "zara"]\nfrom_start = true\n'
                    'max_attempts = 2\nbackoff_s = 1\nmax_backoff_s = 4\ntimeout_s = 3\n'
                    'batch_size = 7\n')
    first, second = load_webhooks(str(path), schema=load_schema(str(EXAMPLE_SCHEMA)))
    assert first.secret == b"from-the-environment"
    assert (first.events, first.max_attempts, first.backoff_s, first.max_backoff_s,
            first.timeout_s, first.batch_size, first.from_start) == (("op",), 8, 0.5, 60.0,
                                                                     10.0, 100, False)
    assert "from-the-environment" not in repr(first)
    assert second.events == ("milestone",) and second.secret == b"literal"
    assert second.actors == ("autoscaler:*", "zara") and second.line == 6
    assert load_webhooks(str(tmp_path / "missing.toml")) == []
    # jittered exponential backoff, capped
    assert all(0.5 <= second.delay(1) <= 1.0 for _ in range(50))
    assert all(2.0 <= second.delay(5) <= 4.0 for _ in range(50))


# --------------------------------------------------------------------------------------------
# Delivery, driven synchronously


def test_a_delivery_is_signed_and_carries_the_ops(project, receivers):
    rx = receivers()
    d = deliverer(project, hook("audit-sink", rx.url))
    acks = project.apply([set_op("service.s1", "image", "shop:1", intent="why"),
                          set_op("route.r1", "weight", 7)], ZARA)
    project.apply([set_op("route.r1", "weight", 9, env="staging")], AUTOSCALER)
    counts = d.run_once()
    assert counts["audit-sink"] == {"deliveries": 1, "ops": 3, "attempts": 1, "failed": 0,
                                    "failed_ops": 0}
    (headers, body, status), = rx.requests
    assert signature_ok(headers, body)
    assert not signature_ok(headers, body, secret="another")
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Conflux-Event"] == "op"
    first, last = acks[0].seq, acks[1].seq + 1
    assert headers["X-Conflux-Delivery"] == f"audit-sink-{first}-{last}"
    doc = json.loads(body)
    assert doc["event"] == "op" and doc["webhook"] == "audit-sink"
    assert [o["seq"] for o in doc["ops"]] == [first, first + 1, last]
    assert doc["ops"][0]["op_id"] == acks[0].op_id
    assert (doc["ops"][0]["entity_id"], doc["ops"][0]["value"], doc["ops"][0]["intent"],
            doc["ops"][0]["actor"]) == ("service.s1", "shop:1", "why", "zara")
    assert (doc["ops"][2]["env"], doc["ops"][2]["actor_class"]) == ("staging", "autoscaler")
    assert d.run_once()["audit-sink"]["attempts"] == 0  # nothing pending, nothing sent
    assert len(rx.requests) == 1
    assert project_status(project)["webhooks"]["audit-sink"]["delivered"] == 3


def test_new_hooks_start_at_the_end_of_the_log_unless_from_start(project, receivers):
    project.apply([set_op("route.old", "weight", 1)], ZARA)
    rx_new, rx_all = receivers(), receivers()
    d = deliverer(project, hook("new", rx_new.url) + hook("all", rx_all.url, from_start=True))
    project.apply([set_op("route.fresh", "weight", 2)], ZARA)
    d.run_once()
    assert [o["entity_id"] for o in rx_new.ops()] == ["route.fresh"]
    assert [o["entity_id"] for o in rx_all.ops()] == ["route.old", "route.fresh"]


def test_filters_by_entity_env_and_actor(project, receivers):
    rx = {name: receivers() for name in ("routes", "staging", "scalers", "ci_prod", "none")}
    d = deliverer(project,
                  hook("routes", rx["routes"].url, entities=["route.*"])
                  + hook("staging", rx["staging"].url, envs=["stag*"])
                  + hook("scalers", rx["scalers"].url, actors=["autoscaler:*"])
                  + hook("ci_prod", rx["ci_prod"].url, actors=["ci-*"], envs=["production"],
                         entities=["service.*"])
                  + hook("none", rx["none"].url, events=["milestone"]))
    project.apply([set_op("route.a", "weight", 1)], AUTOSCALER)
    project.apply([set_op("service.b", "image", "b:1")], CI)
    project.apply([set_op("service.c", "image", "c:1", env="staging")], CI)
    project.apply([set_op("route.d", "weight", 4, env="development")], ZARA)
    project.promote("staging", "production", ["service.c"], CI)
    d.run_once()

    def seen(name):
        out = []
        for o in rx[name].ops():
            parts = o.get("operations") or [o]
            out.append(",".join(f"{p['entity_id']}@{p['env']}" for p in parts))
        return out
    assert seen("routes") == ["route.a@production", "route.d@development"]
    assert seen("staging") == ["service.c@staging"]
    assert seen("scalers") == ["route.a@production"]
    # the promotion is matched by its parts, and sent whole
    assert seen("ci_prod") == ["service.b@production", "service.c@production"]
    assert seen("none") == [] and rx["none"].requests == []
    # a hook that skipped everything still moved its cursor to the end of the log
    status = project_status(project)
    assert status["webhooks"]["none"]["pending"] == 0
    assert status["webhooks"]["none"]["cursor"] == status["operations"]


def test_batches_are_cut_at_batch_size(project, receivers):
    rx = receivers()
    d = deliverer(project, hook("small", rx.url, batch_size=2))
    acks = project.apply([set_op(f"route.r{i}", "weight", i) for i in range(5)], ZARA)
    assert d.run_once()["small"]["deliveries"] == 3
    first = acks[0].seq
    assert [h["X-Conflux-Delivery"] for h, _, _ in rx.requests] == [
        f"small-{first}-{first + 1}", f"small-{first + 2}-{first + 3}",
        f"small-{first + 4}-{first + 4}"]
    assert [o["seq"] for o in rx.ops()] == [a.seq for a in acks]


def test_a_failing_receiver_gets_the_batch_once_after_retries(project, receivers):
    rx = receivers(script=[500, 503])
    d = deliverer(project, hook("flaky", rx.url, backoff_s=0.01, max_attempts=4))
    project.apply([set_op("route.x", "weight", 1), set_op("route.y", "weight", 2)], ZARA)
    counts = d.run_once()["flaky"]
    assert counts == {"deliveries": 1, "ops": 2, "attempts": 3, "failed": 0, "failed_ops": 0}
    assert [status for _, _, status in rx.requests] == [500, 503, 200]
    bodies = {body for _, body, _ in rx.requests}
    ids = {h["X-Conflux-Delivery"] for h, _, _ in rx.requests}
    assert len(bodies) == 1 and len(ids) == 1  # the same bytes and id each time
    assert [o["entity_id"] for o in rx.ops()] == ["route.x", "route.y"]
    status = project_status(project)["webhooks"]["flaky"]
    assert (status["delivered"], status["failed"], status["pending"]) == (2, 0, 0)


def test_a_redirect_or_a_slow_answer_is_a_failure(project, receivers):
    moved, slow = receivers(default=302), receivers(delay_s=1.0)
    d = deliverer(project, hook("moved", moved.url, max_attempts=1)
                  + hook("slow", slow.url, max_attempts=1, timeout_s=0.2))
    project.apply([set_op("route.x", "weight", 1)], ZARA)
    started = time.monotonic()
    counts = d.run_once()
    assert time.monotonic() - started < 5
    assert counts["moved"]["failed"] == 1 and counts["slow"]["failed"] == 1
    assert len(moved.requests) == 1  # the Location was not followed
    status = project_status(project)["webhooks"]
    assert status["moved"]["last_error"].startswith("HTTP 302")
    assert "no answer within 0.2 s" in status["slow"]["last_error"]


def test_a_dead_endpoint_is_marked_failed_and_blocks_nothing(project, receivers, capsys):
    live = receivers()
    dead_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    d = deliverer(project, hook("dead", dead_url, max_attempts=3, backoff_s=0.01)
                  + hook("live", live.url))
    acks = project.apply([set_op("route.a", "weight", 1), set_op("route.b", "weight", 2)],
                         ZARA)
    counts = d.run_once()
    assert counts["dead"] == {"deliveries": 0, "ops": 0, "attempts": 3, "failed": 1,
                              "failed_ops": 2}
    assert counts["live"]["ops"] == 2
    status = project_status(project)["webhooks"]["dead"]
    assert (status["failed"], status["failed_ops"], status["pending"]) == (1, 2, 0)
    assert status["last_failed_seqs"] == [acks[0].seq, acks[1].seq]
    assert status["last_error"].startswith("cannot connect") and status["last_failed_at"]

    later = project.apply([set_op("route.c", "weight", 3)], ZARA)
    counts = d.run_once()
    assert counts["live"]["ops"] == 1 and counts["dead"]["failed"] == 1
    assert [o["seq"] for o in live.ops()] == [acks[0].seq, acks[1].seq, later[0].seq]
    assert project_status(project)["webhooks"]["dead"]["failed"] == 2

    project.close()  # one LMDB environment per process: let the CLI open its own
    assert main(["--dir", os.path.dirname(project.root), "status"]) == 0
    line, = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("webhooks")]
    assert "2 webhooks, 2 failed deliveries (dead: 2)" in line
    assert f"seqs {later[0].seq}-{later[0].seq}" in line and "cannot connect" in line


def test_the_cursor_survives_a_restart_and_nothing_is_repeated(tmp_path, receivers):
    rx = receivers()
    directory = str(tmp_path / "p")
    engine = Engine.init(directory, str(EXAMPLE_SCHEMA))
    text = hook("audit", rx.url)
    deliverer(engine, text).run_once()
    engine.apply([set_op("route.a", "weight", 1), set_op("route.b", "weight", 2)], ZARA)
    deliverer(engine, text).run_once()
    engine.apply([set_op("route.c", "weight", 3)], ZARA)
    engine.close()

    engine = Engine(directory)  # a new process would do the same: reopen, reload, resume
    try:
        d = deliverer(engine, text)
        d.run_once()
        d.run_once()
        assert [o["entity_id"] for o in rx.ops()] == ["route.a", "route.b", "route.c"]
        assert len(rx.requests) == 2
        assert project_status(engine)["webhooks"]["audit"]["delivered"] == 3
    finally:
        engine.close()


def test_stopping_mid_retry_keeps_the_batch_for_the_next_run(project, receivers):
    stop = threading.Event()
    down = receivers(default=500, on_request=stop.set)
    d = deliverer(project, hook("audit", down.url, max_attempts=5, backoff_s=0.05))
    project.apply([set_op("route.a", "weight", 1)], ZARA)
    counts = d.drain(d.hooks[0], stop)
    assert (counts["attempts"], counts["failed"]) == (1, 0)
    assert project_status(project)["webhooks"]["audit"]["pending"] == 1  # not given up, not moved

    up = receivers()
    d = deliverer(project, hook("audit", up.url))  # same name: same cursor
    d.run_once()
    assert [o["entity_id"] for o in up.ops()] == ["route.a"]  # at least once


# --------------------------------------------------------------------------------------------
# The daemon's delivery process


def test_the_daemon_delivers_webhooks_after_the_commit(tmp_path, receivers, monkeypatch):
    monkeypatch.setenv("CONFLUX_TEST_HOOK_SECRET", "daemon-secret")
    project = make_project(tmp_path / "p")
    rx, every = receivers(), receivers()
    write_hooks(os.path.join(project, ".conflux"),
                '[[webhook]]\nname = "scalers"\n'
                f'url = "{rx.url}"\nsecret = "env:CONFLUX_TEST_HOOK_SECRET"\n'
                'actors = ["autoscaler:*"]\nentities = ["route.*"]\n\n'
                f'[[webhook]]\nname = "everything"\nurl = "{every.url}"\nsecret = "x"\n')
    with daemon(project) as (url, proc):
        # the delivery process names itself once its interpreter has started, which may be
        # after the daemon answers its first request
        assert wait_until(lambda: len(_delivery(proc.pid)) == 1), \
            [_comm(p) for p in _children(proc.pid)]
        delivery = _delivery(proc.pid)
        r = requests.post(f"{url}/v1/ops", json=op("service.s", "image", "x:1"),
                          headers=key("zara"), timeout=10)
        assert r.status_code == 200, r.text
        r = requests.post(f"{url}/v1/ops", timeout=10, headers=key("autoscaler-7"),
                          json={"ops": [op("route.w1", "weight", 10),
                                        op("route.w2", "weight", 20)]})
        assert r.status_code == 200, r.text
        seqs = [a["seq"] for a in r.json()["ops"]]
        assert rx.wait_for(lambda x: len(x.ops()) >= 2), rx.requests
        assert every.wait_for(lambda x: len(x.ops()) >= 3), every.requests
        for headers, body, _ in rx.requests:
            assert signature_ok(headers, body, secret="daemon-secret")
        assert [(o["seq"], o["entity_id"], o["actor"]) for o in rx.ops()] == [
            (seqs[0], "route.w1", "autoscaler-7"), (seqs[1], "route.w2", "autoscaler-7")]
        assert [o["entity_id"] for o in every.ops()] == ["service.s", "route.w1", "route.w2"]

        def caught_up():  # the cursors are written just after the receivers answered
            status = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()
            hooks = status["webhooks"]
            return status if not any(h["pending"] for h in hooks.values()) else None
        status = wait_until(caught_up)
        assert status, "the cursors did not reach the end of the log"
        assert status["webhooks"]["scalers"]["delivered"] == 2
        assert status["webhooks"]["scalers"]["failed"] == 0
        assert status["webhooks"]["everything"]["delivered"] == 3

        # a worker restarting leaves the delivery process alone...
        workers = _workers(proc.pid)
        os.kill(workers[0], signal.SIGTERM)
        assert wait_until(lambda: len([p for p in _workers(proc.pid) if p not in workers]) == 1)
        assert _running(delivery[0])
        # ...and a delivery process that dies is started again, carrying on from its cursor
        os.kill(delivery[0], signal.SIGKILL)
        assert wait_until(lambda: [p for p in _delivery(proc.pid) if p != delivery[0]
                                   and _running(p)])
        delivery += _delivery(proc.pid)
        r = requests.post(f"{url}/v1/ops", json=op("route.w3", "weight", 30),
                          headers=key("autoscaler-7"), timeout=10)
        assert r.status_code == 200, r.text
        assert rx.wait_for(lambda x: len(x.ops()) >= 3), rx.requests
    assert wait_until(lambda: not any(_running(p) for p in delivery)), \
        "the delivery process outlived the daemon"
    assert [o["entity_id"] for o in rx.ops()] == ["route.w1", "route.w2", "route.w3"]
    assert len(every.ops()) == 4  # nothing sent twice


def test_the_daemon_refuses_a_bad_webhooks_file(tmp_path, capsys):
    project = make_project(tmp_path / "p")
    write_hooks(os.path.join(project, ".conflux"),
                '[[webhook]]\nname = "a"\nurl = "gopher://x/"\nsecret = "k"\n')
    code = main(["--dir", project, "daemon", "--port", str(free_port())])
    assert code == 2
    err = capsys.readouterr().err
    assert "webhooks.toml:3:" in err and "only http:// and https://" in err


def test_without_webhooks_there_is_no_delivery_process(tmp_path):
    project = make_project(tmp_path / "p")
    with daemon(project) as (url, proc):
        assert not _delivery(proc.pid)
        assert [_comm(p) for p in _children(proc.pid) if _comm(p).startswith("conflux-")] \
            == ["conflux-commits"]
        status = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()
        assert status["webhooks"] == {}


def test_milestone_events(project, receivers):
    from conflux.milestones import Milestones

    both, only, prod = receivers(script=[503]), receivers(), receivers()
    d = deliverer(project, hook("both", both.url, events=["op", "milestone"], backoff_s=0.01)
                  + hook("only", only.url, events=["milestone"])
                  + hook("qa", prod.url, events=["milestone"], envs=["development"]))
    project.apply([set_op("service.web", "image", "web:1")], ZARA)
    milestones = Milestones(project)
    first = milestones.create("first", envs=["production"])
    project.apply([set_op("service.web", "image", "web:2")], ZARA)
    second = milestones.create("second")
    counts = d.run_once()
    assert counts["only"]["milestones"] == 2 and counts["both"]["ops"] == 2
    bodies = only.delivered
    assert [b["milestone"]["id"] for b in bodies] == [1, 2]
    assert bodies[0]["event"] == "milestone" and bodies[0]["milestone"]["commit"] == first.commit
    headers = [h for h, _, _ in only.requests]
    assert [h["X-Conflux-Event"] for h in headers] == ["milestone", "milestone"]
    assert headers[1]["X-Conflux-Delivery"] == "only-milestone-2"
    assert all(signature_ok(h, b) for h, b, _ in only.requests)
    # the first try of 'both' failed with a 503 and was retried
    assert [s for _, _, s in both.requests][:2] == [503, 200]
    assert {b["event"] for b in both.delivered} == {"op", "milestone"}
    # the envs filter: only the second milestone projects development
    assert [b["milestone"]["commit"] for b in prod.delivered] == [second.commit]
    # cursors: nothing again
    again = d.run_once()
    assert again["only"]["deliveries"] == 0 and len(only.requests) == 2
