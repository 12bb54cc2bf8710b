"""The daemon, for real: gunicorn on a free loopback port, with API keys, RBAC, TLS and
mutual TLS, watch streams, size limits and a SIGTERM during a burst of writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import msgpack
import pytest
import requests

from conflux.api import create_app
from conflux.api.media import BodyBudget
from conflux.api.openapi import openapi_document
from conflux.auth import hash_key
from conflux.engine import Engine
from conflux.errors import Busy
from conftest import EXAMPLE_SCHEMA

KEYS = {"zara": ("human", "zara-key-0123456789abcdef"),
        "autoscaler-7": ("autoscaler", "autoscaler-key-0123456789"),
        "reader-1": ("service", "reader-key-0123456789abcdef")}
RBAC = """
[role.reader]
permissions = [{ actions = ["read"], resource = "*" }]

[role.autoscaler]
inherits = ["reader"]
permissions = [{ actions = ["write"], resource = "route.*/weight" }]

[role.admin]
permissions = [{ actions = ["admin"], resource = "*" }]

[[assign]]
actor = "human:*"
roles = ["admin"]

[[assign]]
actor = "autoscaler:*"
roles = ["autoscaler"]

[[assign]]
actor = "service:*"
roles = ["reader"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(path, *, rbac=True, certs=()):
    Engine.init(str(path), str(EXAMPLE_SCHEMA)).close()
    root = path / ".conflux"
    lines = []
    for actor, (cls, key) in KEYS.items():
        lines += ["[[key]]", f'hash = "{hash_key(key)}"', f'actor = "{actor}"',
                  f'class = "{cls}"', ""]
    for subject, actor, cls in certs:
        lines += ["[[certificate]]", f'subject = "{subject}"', f'actor = "{actor}"',
                  f'class = "{cls}"', ""]
    (root / "api-keys.toml").write_text("\n".join(lines))
    if rbac:
        (root / "rbac.toml").write_text(RBAC)
    return str(path)


@contextlib.contextmanager
def daemon(project, *extra, scheme="http", verify=None, cert=None, session=False):
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from conflux.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "--dir", project, "daemon", "--port", str(port),
           "--workers", "2", "--threads", "8", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            start_new_session=session)
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/v1/health", timeout=1, verify=verify, cert=cert)
                break
            except requests.exceptions.SSLError:
                break  # listening; the handshake's outcome is the test's business
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace")
                    raise AssertionError(f"the daemon did not start:\n{out}") from None
                time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


# The daemon's processes, from /proc


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    """The process name a daemon helper gives itself (conflux.daemon.supervisor)."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _delivery(pid: int) -> list[int]:
    return [p for p in _children(pid) if _comm(p) == "conflux-webhook"]


def _workers(pid: int) -> list[int]:
    return [p for p in _children(pid) if "multiprocessing" not in _cmdline(p)]


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def key(actor):
    return {"X-API-Key": KEYS[actor][1]}


def op(entity, field, value, **extra):
    return {"type": "set_field", "entity_id": entity, "field": field, "value": value, **extra}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("daemon"))
    with daemon(project) as (url, _):
        yield url, project


def status(url):
    return requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10).json()


def test_single_op_and_read_back(live):
    url, _ = live
    r = requests.post(f"{url}/v1/ops", json=op("service.s1", "image", "shop:1", intent="why"),
                      headers=key("zara"), timeout=10)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert set(ack) >= {"op_id", "hlc", "seq"} and ack["hlc"].startswith("hlc:")
    got = requests.get(f"{url}/v1/entities/service.s1", headers=key("reader-1"), timeout=10)
    assert got.json()["fields"]["image"]["value"] == "shop:1"
    blame = requests.get(f"{url}/v1/blame/service.s1", headers=key("zara"), timeout=10).json()
    assert blame["fields"]["image"]["actor"] == "zara"
    assert blame["fields"]["image"]["intent"] == "why"


def test_batch_json_and_msgpack_is_atomic(live):
    url, _ = live
    batch = {"ops": [op("route.b1", "weight", 10), op("route.b2", "weight", 20)]}
    r = requests.post(f"{url}/v1/ops", json=batch, headers=key("autoscaler-7"), timeout=10)
    assert r.status_code == 200, r.text
    seqs = [a["seq"] for a in r.json()["ops"]]
    assert seqs[1] == seqs[0] + 1
    packed = msgpack.packb({"ops": [op("route.b3", "weight", 30)]})
    r = requests.post(f"{url}/v1/ops", data=packed, timeout=10,
                      headers={**key("autoscaler-7"), "Content-Type": "application/msgpack",
                               "Accept": "application/msgpack"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/msgpack"
    assert msgpack.unpackb(r.content)["ops"][0]["seq"] == seqs[1] + 1
    before = status(url)["operations"]
    bad = {"ops": [op("route.b4", "weight", 40), op("route.b4", "weight", "x")]}
    r = requests.post(f"{url}/v1/ops", json=bad, headers=key("zara"), timeout=10)
    assert r.status_code == 422 and "op 1" in r.json()["error"]["message"]
    assert status(url)["operations"] == before


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "not-a-key-0123456789"}])
def test_no_or_bad_credentials_is_401(live, headers):
    url, _ = live
    r = requests.post(f"{url}/v1/ops", json=op("route.x", "weight", 1), headers=headers,
                      timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 200


def test_rbac_denial_writes_nothing(live):
    url, _ = live
    before = status(url)["operations"]
    denied = [{"ops": [op("route.r", "weight", 5), op("route.r", "path", "/x")]},
              op("route.r", "weight", 5, override=True),
              op("service.s", "image", "x")]
    for body in denied:
        r = requests.post(f"{url}/v1/ops", json=body, headers=key("autoscaler-7"), timeout=10)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
    r = requests.post(f"{url}/v1/ops", json=op("service.s", "image", "x"),
                      headers=key("reader-1"), timeout=10)
    assert r.status_code == 403
    assert status(url)["operations"] == before
    allowed = requests.post(f"{url}/v1/ops", json=op("route.r", "weight", 5),
                            headers=key("autoscaler-7"), timeout=10)
    assert allowed.status_code == 200


def test_errors_are_json_with_the_right_status(live):
    url, _ = live
    h = key("zara")
    cases = [
        (requests.post, "/v1/ops", {"data": b"{not json", "headers": {
            **h, "Content-Type": "application/json"}}, 400),
        (requests.post, "/v1/ops", {"json": op("nothing.x", "a", 1), "headers": h}, 422),
        (requests.get, "/v1/entities/service.ghost", {"headers": h}, 404),
        (requests.get, "/v1/state?env=qa", {"headers": h}, 404),
        (requests.post, "/v1/ops", {"data": b"x" * (17 << 20), "headers": {
            **h, "Content-Type": "application/json"}}, 413),
        (requests.post, "/v1/ops", {"data": b"a=b", "headers": {
            **h, "Content-Type": "text/plain"}}, 415),
        (requests.get, "/v1/nowhere", {"headers": h}, 404),
    ]
    for method, path, kwargs, code in cases:
        r = method(f"{url}{path}", timeout=30, **kwargs)
        assert r.status_code == code, (path, r.status_code, r.text[:200])
        assert set(r.json()["error"]) >= {"code", "message"}


@contextlib.asynccontextmanager
async def _held(budget, n):
    n = await budget.take(n)
    try:
        yield
    finally:
        budget.give_back(n)


def test_a_worker_holds_a_bounded_amount_of_request_bodies():
    async def scenario():
        budget = BodyBudget(10, wait_s=0.2)
        held, release, order = asyncio.Event(), asyncio.Event(), []

        async def hold(n, name, until=None):
            async with _held(budget, n):
                order.append(name)
                held.set()
                if until is not None:
                    await asyncio.wait_for(until.wait(), 10)
        first = asyncio.create_task(hold(6, "first", release))
        await asyncio.wait_for(held.wait(), 10)
        async with _held(budget, 4):  # fits beside it
            assert budget.used == 10
        with pytest.raises(Busy) as refused:  # does not fit, and the first is not done in time
            async with _held(budget, 6):
                pass
        assert refused.value.http_status == 503
        assert budget.used == 6 and not budget._waiting  # the refused one left no trace
        budget.wait_s = 10
        waiting = asyncio.create_task(hold(6, "second"))
        small = asyncio.create_task(hold(1, "small"))  # in line behind the second: no overtaking
        await asyncio.sleep(0.05)
        assert order == ["first"]  # the second waits for room
        release.set()
        await asyncio.wait_for(asyncio.gather(first, waiting, small), 10)
        assert order == ["first", "second", "small"] and budget.used == 0
        async with _held(budget, 50):  # a body over the whole budget waits for all of it, then passes
            assert budget.used == 10
        # a request whose client goes away while it waits gives its place (and, if it was
        # just granted, its bytes) back
        async with _held(budget, 10):
            gone = asyncio.create_task(hold(5, "gone"))
            await asyncio.sleep(0.05)
            gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert budget.used == 0 and not budget._waiting

    asyncio.run(scenario())


def test_request_heads_are_bounded_and_requests_logged(tmp_path):
    project = make_project(tmp_path / "p")
    log = tmp_path / "access.log"
    with daemon(project, "--access-log", str(log)) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        # a client that connects and sends nothing is not waited for forever
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)

        def raw(request: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(request)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data
        long_line = raw(b"GET /v1/health?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert long_line.startswith(b"HTTP/1.1 414 ")
        assert json.loads(long_line.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "uri_too_long"
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
        too_many = raw(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert too_many.startswith(b"HTTP/1.1 431 ")
        big = raw(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431 ")
        assert b"over 8190 bytes" in big
        garbage = raw(b"NOT HTTP AT ALL\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
        ok = raw(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ")
        r = requests.post(f"{url}/v1/ops", json=op("service.log", "image", "x"),
                          headers=key("zara"), timeout=10)
        assert r.status_code == 200
        idle.settimeout(25)
        assert idle.recv(1) == b""  # closed by the daemon: no request head in time
        idle.close()
        assert wait_until(lambda: log.exists() and '"POST /v1/ops HTTP/1.1" 200' in
                          log.read_text())
        assert '"GET /v1/health HTTP/1.1" 200' in log.read_text()


def test_a_big_batch_is_served_beside_the_event_loop(live):
    # over 256 KiB of JSON and 2,000 ops: parsed, checked, packed and answered in the
    # worker's threads; a dry run first (nothing written), then the commit
    url, _ = live
    ops = [op(f"route.big{i}", "weight", i % 100) for i in range(5000)]
    body = json.dumps({"ops": ops}).encode()
    assert len(body) > 256 << 10
    h = {**key("zara"), "Content-Type": "application/json"}
    before = status(url)["operations"]
    dry = requests.post(f"{url}/v1/ops", params={"dry_run": "true"}, data=body, headers=h,
                        timeout=60)
    assert dry.status_code == 200, dry.text[:300]
    assert len(dry.json()["ops"]) == 5000 and all(a["dry_run"] for a in dry.json()["ops"])
    assert status(url)["operations"] == before
    r = requests.post(f"{url}/v1/ops", data=body, headers=h, timeout=60)
    assert r.status_code == 200, r.text[:300]
    acks = r.json()["ops"]
    assert [a["seq"] for a in acks] == list(range(before + 1, before + 5001))
    got = requests.get(f"{url}/v1/entities/route.big4999", headers=key("zara"), timeout=10)
    assert got.json()["fields"]["weight"]["value"] == 99


class _SlowRequest:
    """What the body reader needs of a request: a declared length and a body stream that
    sends ``parts`` and then stalls (a client trickling its body)."""

    def __init__(self, length, parts, stall=True):
        self.content_length = length
        self.parts = parts
        self.stall = stall

    @property
    def stream(self):
        async def chunks():
            for part in self.parts:
                yield part
            if self.stall:
                await asyncio.sleep(3600)
        return chunks()


def test_a_body_is_held_in_the_budget_while_it_arrives_and_must_arrive_in_time(monkeypatch):
    from conflux.api import media

    monkeypatch.setattr(media, "BODY_S", 0.3)

    async def scenario():
        budget = BodyBudget(100, wait_s=0.2)
        seen = []

        async def slow():
            async with media.request_body(_SlowRequest(60, [b"x" * 10]), budget, 80):
                pass
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.1)
        seen.append(budget.used)  # the declared 60 bytes are held before they arrive
        with pytest.raises(media.BodyLate) as late:
            await task
        assert late.value.http_status == 408 and budget.used == 0
        with pytest.raises(media.BodyTooLarge):  # declared over the limit: refused unread
            async with media.request_body(_SlowRequest(81, []), budget, 80):
                pass
        async with media.request_body(_SlowRequest(None, [b"ab", b"cd"], stall=False),
                                      budget, 80) as data:
            seen.append(budget.used)  # sent chunked: the whole limit is held
            assert data == b"abcd"
        assert seen == [60, 80] and budget.used == 0

    asyncio.run(scenario())


def test_precondition_failure_is_409(live):
    url, _ = live
    h = key("zara")
    first = requests.post(f"{url}/v1/ops", json=op("service.p", "image", "a"), headers=h,
                          timeout=10).json()
    requests.post(f"{url}/v1/ops", json=op("service.p", "image", "b", base=[first["op_id"]]),
                  headers=h, timeout=10)
    r = requests.post(f"{url}/v1/ops", json=op("service.p", "image", "c",
                                               base=[first["op_id"]]), headers=h, timeout=10)
    assert r.status_code == 409


def _events(url, headers, params, collect, stop_after):
    with requests.get(f"{url}/v1/watch", headers=headers, params=params, stream=True,
                      timeout=30) as r:
        assert r.status_code == 200
        event = {}
        for line in r.iter_lines(decode_unicode=True):
            if line == "":
                if "id" in event:
                    collect.append((int(event["id"]), json.loads(event["data"])))
                    if len(collect) >= stop_after:
                        return
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value


def test_watch_resumes_after_a_reconnect(live):
    url, project = live
    h = key("zara")
    start = status(url)["operations"]
    first = []
    reader = threading.Thread(target=_events, args=(url, h, {"after": start, "timeout": 20,
                                                             "entity": "route.w"}, first, 3))
    reader.start()
    time.sleep(0.3)
    for w in (10, 20, 30):
        requests.post(f"{url}/v1/ops", json=op("route.w", "weight", w), headers=h, timeout=10)
    requests.post(f"{url}/v1/ops", json=op("route.other", "weight", 1), headers=h, timeout=10)
    reader.join(30)
    assert [e["value"] for _, e in first] == [10, 20, 30]
    # more writes while disconnected, one straight into the store (another process)
    for w in (40, 50):
        requests.post(f"{url}/v1/ops", json=op("route.w", "weight", w), headers=h, timeout=10)
    subprocess.run([sys.executable, "-c", "import sys; from conflux.cli import main; "
                    "sys.exit(main(sys.argv[1:]))", "--dir", project, "set", "route.w",
                    "weight", "60"], check=True, capture_output=True)
    second = []
    _events(url, {**h, "Last-Event-ID": str(first[-1][0])}, {"timeout": 20,
                                                             "entity": "route.w"}, second, 3)
    assert [e["value"] for _, e in second] == [40, 50, 60]
    assert second[0][0] > first[-1][0]


def test_openapi_describes_exactly_the_routes(tmp_path):
    project = make_project(tmp_path / "p", rbac=False)
    from conflux.api.access import Access
    engine = Engine(project)
    app = create_app(engine, Access.load(engine.root))
    served = {node.uri_template: {m for m in ("get", "post", "put", "patch", "delete")
                                  if hasattr(node.resource, f"on_{m}")}
              for node in _routes(app._router._roots)}
    documented = {path: set(item) for path, item in openapi_document()["paths"].items()}
    assert served == documented
    engine.close()


def _routes(nodes):
    for node in nodes:
        if node.resource is not None:
            yield node
        yield from _routes(node.children)


def tls_project(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (CN=ci-pipeline)
    written to ``tmp_path``, and a project mapping that certificate to the actor
    ``pipeline:ci-pipeline``: ``(files by name, project)``."""
    trustme = pytest.importorskip("trustme")
    from cryptography import x509

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("ci-pipeline@example.com", common_name="ci-pipeline")
    files = {}
    for name, blob in {"ca.pem": ca.cert_pem, "server.pem": server.cert_chain_pems[0],
                       "server.key": server.private_key_pem,
                       "client.pem": client.cert_chain_pems[0],
                       "client.key": client.private_key_pem}.items():
        blob.write_to_path(str(tmp_path / name))
        files[name] = str(tmp_path / name)
    subject = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes()).subject
    project = make_project(tmp_path / "p", rbac=False,
                           certs=[(subject.rfc4514_string(), "ci-pipeline", "pipeline")])
    return files, project


def test_tls_and_mutual_tls(tmp_path):
    files, project = tls_project(tmp_path)
    # TLS with an API key
    with daemon(project, "--tls-cert", files["server.pem"], "--tls-key", files["server.key"],
                scheme="https", verify=files["ca.pem"]) as (url, _):
        r = requests.post(f"{url}/v1/ops", json=op("service.t", "image", "x"),
                          headers=key("zara"), verify=files["ca.pem"], timeout=10)
        assert r.status_code == 200
    # mutual TLS: the certificate is the credential
    with daemon(project, "--tls-cert", files["server.pem"], "--tls-key", files["server.key"],
                "--client-ca", files["ca.pem"], scheme="https", verify=files["ca.pem"],
                cert=(files["client.pem"], files["client.key"])) as (url, _):
        r = requests.post(f"{url}/v1/ops", json=op("service.t", "image", "y"),
                          verify=files["ca.pem"], cert=(files["client.pem"],
                                                        files["client.key"]), timeout=10)
        assert r.status_code == 200, r.text
        blame = requests.get(f"{url}/v1/blame/service.t", verify=files["ca.pem"],
                             cert=(files["client.pem"], files["client.key"]), timeout=10)
        assert blame.json()["fields"]["image"]["actor"] == "ci-pipeline"
        # no client certificate: the TLS handshake is refused (TLS 1.3 clients learn it as an
        # alert or as the connection closed, before any HTTP answer)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{url}/v1/health", verify=files["ca.pem"], timeout=10)


@pytest.mark.parametrize("whom", ["the daemon", "every process of it"])
def test_sigterm_during_a_burst_loses_nothing_answered(tmp_path, whom):
    # "every process": what a service manager does (systemd's default KillMode): the
    # workers, the commit service and the daemon are signalled at once
    project = make_project(tmp_path / "p", rbac=False)
    answered = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n, url):
        session = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = session.post(f"{url}/v1/ops", json=op(f"route.w{n}-{i}", "weight", i),
                                 headers=key("zara"), timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 200:
                with lock:
                    answered.append(r.json()["op_id"])
            elif r.status_code >= 500:
                with lock:
                    failed.append(r.text)
                return
    failed = []
    with daemon(project, session=True) as (url, proc):
        threads = [threading.Thread(target=writer, args=(n, url)) for n in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        if whom == "the daemon":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        stop.set()
        for t in threads:
            t.join(15)
    assert len(answered) > 20
    assert not failed  # the commit service outlives the requests in flight
    engine = Engine(project)
    logged = {o.op_id for o in engine.log()}
    assert set(answered) <= logged
    engine.close()


def test_writes_go_through_one_commit_service_that_is_restarted(tmp_path):
    project = make_project(tmp_path / "p", rbac=False)
    with daemon(project) as (url, proc):
        helpers = [p for p in _children(proc.pid) if _comm(p) == "conflux-commits"]
        assert len(helpers) == 1
        session = requests.Session()
        for i in range(20):  # both workers' writes are answered by the one service
            r = session.post(f"{url}/v1/ops", json=op(f"route.r{i}", "weight", i),
                             headers=key("zara"), timeout=10)
            assert r.status_code == 200, r.text
        os.kill(helpers[0], signal.SIGKILL)
        # the workers commit by themselves meanwhile: nothing is refused...
        r = session.post(f"{url}/v1/ops", json=op("route.during", "weight", 1),
                         headers=key("zara"), timeout=10)
        assert r.status_code in (200, 503), r.text
        for i in range(5):
            r = session.post(f"{url}/v1/ops", json=op(f"route.after{i}", "weight", i),
                             headers=key("zara"), timeout=10)
            assert r.status_code == 200, r.text
        # ...and the service is started again
        assert wait_until(lambda: [p for p in _children(proc.pid) if p != helpers[0]
                                   and _comm(p) == "conflux-commits" and _running(p)])
        r = session.post(f"{url}/v1/ops", json=op("route.restarted", "weight", 9),
                         headers=key("zara"), timeout=10)
        assert r.status_code == 200, r.text
    engine = Engine(project)
    assert engine.get("route.restarted")["weight"]["value"] == 9
    assert engine.get("route.after4")["weight"]["value"] == 4
    engine.close()


def test_workers_of_a_killed_daemon_stop_by_themselves(tmp_path):
    """``kill -9`` of the daemon's master leaves no worker serving on (holding the port, the
    store and the project's lock): each notices its master is gone and stops."""
    project = make_project(tmp_path / "p", rbac=False)
    with daemon(project, "--timeout", "2") as (url, proc):
        workers = [p for p in _children(proc.pid) if _comm(p) not in ("conflux-commits",)]
        assert len(workers) >= 2
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not any(_running(p) for p in workers), timeout=15), (
            [(p, _comm(p)) for p in workers if _running(p)])
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/v1/health", timeout=2)


def test_the_commit_service_journals_its_commits_and_stops_clean(tmp_path):
    """One synced journal write per group (conflux/store/journal.py): while the daemon runs
    the store is dirty (its commits are on disk in the journal, LMDB's pages not yet), the
    journal holds them; a stop syncs the store and leaves nothing to restore."""
    from conflux.store import journal

    project = make_project(tmp_path / "p", rbac=False)
    store = os.path.join(project, ".conflux", "store")
    state = os.path.join(store, journal.STATE_FILE)
    page = os.sysconf("SC_PAGE_SIZE")
    with daemon(project) as (url, proc):
        session = requests.Session()
        for i in range(10):
            r = session.post(f"{url}/v1/ops", json=op(f"route.j{i}", "weight", i),
                             headers=key("zara"), timeout=10)
            assert r.status_code == 200, r.text
        head = journal.StateFile(state, page).head()
        assert head.dirty
        records = list(journal.read_records(os.path.join(store, journal.JOURNAL_FILE),
                                            head.gen))
        assert records  # the writes since the last checkpoint
    assert not journal.StateFile(state, page).head().dirty
    engine = Engine(project)
    assert engine.get("route.j9")["weight"]["value"] == 9
    engine.close()


# ------------------------------------------------------------------------------------------
# configuration files: checked before the start, reloaded while running


def _run_daemon(project, timeout=60):
    port = free_port()
    return subprocess.run([sys.executable, "-c", "import sys; from conflux.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "--dir", project, "daemon",
                           "--port", str(port)], capture_output=True, text=True,
                          timeout=timeout), port


@pytest.mark.parametrize("name, text, where, message", [
    ("api-keys.toml", '[[keys]]\nkey_hash = "sha256:abc"\nactor_id = "a"\nactor_class = "human"\n',
     "api-keys.toml:2:", "is not sha256:<64 hex digits>"),
    ("rbac.toml", '[[assignment]]\nactor_pattern = "ci-*"\nroles = ["ghost"]\n', "rbac.toml:3:",
     "unknown role 'ghost'"),
    ("webhooks.toml", '[[webhook]]\nname = "x"\nurl = "ftp://x"\n', "webhooks.toml:", "url"),
    ("config.toml", '[clock]\nmax_clock_offset = 50\n', "config.toml:2:",
     "unknown key 'max_clock_offset'"),
    ("config.toml", '[milestones]\nformat = "docx"\n', "config.toml:2:",
     "[milestones] format: unknown format 'docx'"),
    ("keys.json", '{"keys": [', "keys.json:", "not a Conflux key registry"),
    ("schema.toml", '[entity.route\n', "schema.toml:", "invalid TOML"),
])
def test_a_bad_configuration_file_stops_the_daemon_before_it_starts(tmp_path, name, text,
                                                                    where, message):
    project = make_project(tmp_path)
    path = tmp_path / ".conflux" / name
    path.write_text((path.read_text() if name == "schema.toml" else "") + text)
    out, port = _run_daemon(project)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr  # one line: no traceback, no gunicorn boot messages
    assert lines[0].startswith("conflux daemon: error: ") and where in lines[0], lines[0]
    assert message in lines[0]
    with socket.socket() as s:  # nothing was left listening
        assert s.connect_ex(("127.0.0.1", port)) != 0


def replace_file(path, text: str) -> None:
    """Write ``path`` whole, as an editor or a deployment does (a new file renamed over the
    old one): a worker looking at it meanwhile sees the old version or the new, never half."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_a_running_daemon_reloads_access_files_and_keeps_the_last_good_ones(tmp_path):
    project = make_project(tmp_path)
    keys_file = tmp_path / ".conflux" / "api-keys.toml"
    rbac_file = tmp_path / ".conflux" / "rbac.toml"
    good_keys = keys_file.read_text()
    new_key = "new-key-0123456789abcdefgh"
    with daemon(project) as (url, _):
        assert requests.get(f"{url}/v1/state", headers=key("zara")).status_code == 200
        assert requests.get(f"{url}/v1/state", headers={"X-API-Key": new_key}).status_code == 401

        # a file that has become bad: logged, and the keys in force keep working
        replace_file(keys_file, good_keys + '\n[[keys]]\nkey_hash = "oops"\n')
        time.sleep(1.5)
        for _ in range(6):  # both workers
            assert requests.get(f"{url}/v1/state", headers=key("zara")).status_code == 200

        # a good change is picked up within a second or two, by every worker
        replace_file(keys_file, good_keys + f'\n[[keys]]\nkey_hash = "{hash_key(new_key)}"\n'
                                'actor_id = "newcomer"\nactor_class = "service"\n')
        wait_until(lambda: all(requests.get(f"{url}/v1/state", headers={"X-API-Key": new_key})
                               .status_code == 200 for _ in range(6)))
        # the RBAC file the same way: service actors are readers, then no longer
        def read_status(headers):  # 403 denied; 404: allowed, and there is no such entity
            return requests.get(f"{url}/v1/entities/route.nothing", headers=headers).status_code

        newcomer = {"X-API-Key": new_key}
        assert read_status(newcomer) == 404
        replace_file(rbac_file, RBAC.replace('actor = "service:*"', 'actor = "service:nobody"'))
        wait_until(lambda: all(read_status(newcomer) == 403 for _ in range(6)))
        replace_file(rbac_file, "[role.x\n")  # bad: the last good rules stay
        time.sleep(1.5)
        for _ in range(6):
            assert read_status(newcomer) == 403
            assert read_status(key("zara")) == 404
