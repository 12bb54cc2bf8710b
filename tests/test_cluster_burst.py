"""The cluster under load, for real: three ``conflux daemon`` processes, each on its own
project, sharing one op log on a real PostgreSQL server, written to by several client threads
at once with batches of client-stamped operations (each with its ``op_id`` and ``hlc``) in
random orders, with duplicates and retries sent to other daemons.

* Fed the same operations, the three daemons end with byte-identical state and the same log,
  every op id once, and that state is what one LMDB store alone, fed the same operations,
  holds.
* ``kill -9`` of a whole daemon (its workers and helpers too) in the middle of the burst,
  again and again, restarted on its project: nothing acknowledged is lost, the restarted
  daemon catches up, nothing is applied twice.
* PostgreSQL stopped and started again in the middle of the burst: writes are answered 503
  while it is down and retried with the same op ids; nothing is lost or applied twice, and
  the daemons recover by themselves.

The operations are those whose outcome does not depend on the order they arrive in
(docs/concepts.md, "Context-bound operations"): writes, unsets and deletes are ordered by
their HLC, removes and adds name the add tags they observed, review writes name their
``base``. Overrides and promotions depend on what the accepting daemon holds, so they are
sent between bursts, when every daemon holds the same.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import msgpack
import requests

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.kernel._layout import ENTRY
from conftest import EXAMPLE_SCHEMA
from test_daemon import free_port, key, make_project

#: Operations of the convergence burst.
BURST_OPS = 100_000
#: Daemons killed, one after another, during the second burst.
KILLS = 20

ZARA = Actor("zara", "human")
ENVS = ("production", "staging")
#: Entities of each type the bursts write to: few enough that they compete for fields.
ENTITIES = 200
#: The longest a client keeps retrying one batch.
RETRY_S = 90.0


# ------------------------------------------------------------------------------------------
# daemons


class Node:
    """One daemon on its own project, in a session of its own, so that ``kill`` reaches every
    process of it (gunicorn's master and workers, the commit service, the replicator)."""

    def __init__(self, project: str):
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        # its output goes to a file: a pipe nobody reads fills up and stops the daemon
        log = open(f"{self.project}.daemon.log", "ab")
        cmd = [sys.executable, "-c", "import sys; from conflux.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "--dir", self.project, "daemon", "--port",
               str(self.port), "--workers", "2", "--threads", "8"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONWARNINGS": "ignore"},
                                     start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the daemon on {self.project} did not start:\n"
                                     + self.output()[-3000:])
            time.sleep(0.1)

    def output(self) -> str:
        try:
            with open(f"{self.project}.daemon.log", "rb") as fh:
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL to every process of the daemon at once: a crash of its host, for it."""
        _killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        _killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of its session
        self.proc.wait(30)

    def status(self) -> dict:
        r = requests.get(f"{self.url}/v1/status", headers=key("zara"), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


def _killpg(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _cluster(tmp_path, postgres, pg_dsn, n: int = 3) -> list[Node]:
    url = f"postgresql://conflux@127.0.0.1:{postgres.port}/{pg_dsn.rsplit('dbname=', 1)[1]}"
    nodes = []
    for i in range(n):
        project = make_project(tmp_path / f"node{i}", rbac=False)
        with open(f"{project}/.conflux/config.toml", "a") as fh:
            fh.write(f'\n[store]\nurl = "{url}"\n')
        nodes.append(Node(project))
    return nodes


def _settle(nodes, expected: int, timeout: float = 120.0) -> None:
    """Wait until every daemon holds ``expected`` operations and is nothing behind the
    shared log."""
    deadline = time.monotonic() + timeout
    while True:
        seen = []
        for node in nodes:
            try:
                status = node.status()
                seen.append((status["operations"], status["shared_log"].get("lag_ops")))
            except (requests.RequestException, AssertionError) as exc:
                seen.append(repr(exc))
        if all(s == (expected, 0) for s in seen):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemons did not settle at {expected} operations: "
                                 f"(operations, lag) = {seen}")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------
# clients


def _post(session, url: str, ops: list[dict], timeout: float = 60.0):
    """``POST /v1/ops`` of a batch, in msgpack: ``(status, body)``."""
    r = session.post(f"{url}/v1/ops", data=msgpack.packb({"ops": ops}), timeout=timeout,
                     headers={**key("zara"), "Content-Type": "application/msgpack",
                              "Accept": "application/msgpack"})
    return r.status_code, (msgpack.unpackb(r.content) if r.content else None)


def _deliver(session, nodes, ops, rng, tally) -> list[dict]:
    """Send a batch until a daemon acknowledges it: after a connection error or a 503, the
    same ops (same op ids) go to another daemon. Anything else is a failure."""
    deadline = time.monotonic() + RETRY_S
    last = None
    while True:
        node = rng.choice([n for n in nodes if n is not last] or nodes)
        try:
            status, body = _post(session, node.url, ops)
        except requests.RequestException:
            tally["connection"] += 1
        else:
            if status == 200:
                return body["ops"]
            if status != 503:
                raise AssertionError(f"{node.url}: {status} {body}")
            tally["503"] += 1
        assert time.monotonic() < deadline, f"no daemon took a batch in {RETRY_S} s"
        last = node
        time.sleep(0.05)


class Workload:
    """Client-stamped operations (op id and HLC set by the client) whose outcome does not
    depend on the order they arrive in, in HLC order; the client's own history supplies
    ``observed`` and ``base``."""

    def __init__(self, seed: int, prefix: str = "c"):
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.n = 0
        # HLCs from a minute ago: behind every daemon's clock, so never refused as too far
        # ahead, and in generation order
        self.t0 = int(time.time() * 1000) - 60_000
        self.adds = {}      # (env, entity, field, element) -> add op ids
        self.reviews = {}   # (env, entity) -> review op ids
        self.overridden = set()

    def _stamp(self, op: dict) -> dict:
        i = self.n
        self.n += 1
        op["op_id"] = f"{self.prefix}-{i}"
        op["hlc"] = f"hlc:{self.t0 + i // 16}.{i % 16:04d}"
        return op

    def _entity(self, kind: str) -> str:
        return f"{kind}.{kind[0]}{self.rng.randrange(ENTITIES)}"

    def _single(self):
        """(entity, field, value) of a single-value field that is not ``review``."""
        rng = self.rng
        choice = rng.randrange(8)
        if choice == 0:
            return self._entity("route"), "path", f"/p{rng.randrange(40)}"
        if choice == 1:
            return self._entity("route"), "service", f"service.s{rng.randrange(ENTITIES)}"
        if choice == 2:
            return self._entity("service"), "image", f"shop:{rng.randrange(40)}"
        if choice == 3:
            return self._entity("service"), "env_vars", {"K": rng.randrange(5)}
        if choice == 4:
            return self._entity("upstream"), "healthcheck", f"/h{rng.randrange(9)}"
        if choice == 5:
            return self._entity("route"), "weight", rng.randint(0, 100)
        if choice == 6:
            return self._entity("route"), "timeout", f"{rng.randint(1, 60)}s"
        return self._entity("service"), "replicas", rng.randint(0, 500)

    def ordinary(self) -> dict:
        rng = self.rng
        env = rng.choice(ENVS)
        r = rng.random()
        if r < 0.45:
            entity, field, value = self._single()
            op = {"type": "set_field", "entity_id": entity, "field": field, "value": value}
        elif r < 0.52:
            entity, field, _ = self._single()
            op = {"type": "unset_field", "entity_id": entity, "field": field}
        elif r < 0.70 or r < 0.80 and not self.adds:
            entity, field, elements = self._elements()
            observed = []
            for element in elements:
                tags = self.adds.get((env, entity, field, element), [])
                observed.append(rng.sample(tags, min(len(tags), rng.randrange(3))))
            op = {"type": "add_elements", "entity_id": entity, "field": field,
                  "elements": elements, "observed": observed}
        elif r < 0.80:
            env, entity, field, element = rng.choice(list(self.adds))
            tags = self.adds[(env, entity, field, element)]
            op = {"type": "remove_elements", "entity_id": entity, "field": field,
                  "elements": [element],
                  "observed": [rng.sample(tags, rng.randint(1, len(tags)))]}
        elif r < 0.85:
            op = {"type": "add_elements", "entity_id": self._entity("service"),
                  "field": "labels", "elements": [f"l{rng.randrange(12)}"]}
        elif r < 0.995:
            entity = self._entity("service")
            history = self.reviews.setdefault((env, entity), [])
            base = rng.sample(history, min(len(history), rng.randrange(4)))
            if rng.random() < 0.1:
                op = {"type": "unset_field", "entity_id": entity, "field": "tier",
                      "base": base}
            else:
                op = {"type": "set_field", "entity_id": entity, "field": "tier",
                      "value": rng.choice(["web", "batch"]), "base": base}
        else:
            op = {"type": "delete_entity",
                  "entity_id": self._entity(rng.choice(["route", "service", "upstream"]))}
        op["env"] = env
        self._stamp(op)
        if op["type"] == "add_elements" and op["field"] != "labels":
            for element in op["elements"]:
                self.adds.setdefault((env, op["entity_id"], op["field"], element),
                                     []).append(op["op_id"])
        elif op.get("field") == "tier":
            self.reviews[(env, op["entity_id"])].append(op["op_id"])
        return op

    def _elements(self):
        rng = self.rng
        if rng.random() < 0.5:
            pool = [f"10.0.0.{k}" for k in range(12)]
            entity, field = self._entity("upstream"), "targets"
        else:
            pool = list(range(1, 13))
            entity, field = self._entity("service"), "ports"
        return entity, field, rng.sample(pool, rng.randint(1, 2))

    def override(self) -> dict:
        """A write (or an unset) with ``override`` of a field no other override in this
        burst writes: an override opens an epoch, and concurrent ones on one field would
        compete by arrival."""
        while True:
            env = self.rng.choice(ENVS)
            entity, field, value = self._single()
            if (env, entity, field) not in self.overridden:
                break
        self.overridden.add((env, entity, field))
        if field in ("weight", "timeout", "replicas") and self.rng.random() < 0.2:
            op = {"type": "unset_field", "entity_id": entity, "field": field}
        else:
            op = {"type": "set_field", "entity_id": entity, "field": field, "value": value}
        return self._stamp({**op, "env": env, "override": True})


def _batches(rng, ops, lo=500, hi=1000):
    ops = ops[:]
    rng.shuffle(ops)
    out, at = [], 0
    while at < len(ops):
        size = rng.randint(lo, hi)
        out.append(ops[at:at + size])
        at += size
    return out


# ------------------------------------------------------------------------------------------
# what each node holds


def _snapshot(project: str) -> dict:
    """A store's state records, conflicts and violations of every environment, and its log
    (op id -> entry, checked to hold each op id once)."""
    with Engine(project) as engine:
        return _snapshot_of(engine)


def _snapshot_of(engine) -> dict:
    log = {}
    for _, entry in engine.entries():
        op_id = engine.core.decode_entry(entry).op_id
        assert op_id not in log, f"{engine.root}: {op_id} is logged twice"
        log[op_id] = bytes(entry)
    envs = ENVS + ("development",)
    return {"records": engine.records(),
            "conflicts": {env: engine.conflicts(env) for env in envs},
            "violations": {env: engine.violations(env) for env in envs}, "log": log}


def _without_prev(log: dict) -> dict:
    """Log entries (arrays, in the kernel's ``ENTRY`` order) without ``prev``."""
    prev = ENTRY.index("prev")
    out = {}
    for op_id, entry in log.items():
        fields = msgpack.unpackb(entry)
        fields[prev] = None
        out[op_id] = fields
    return out


def _rest_views(node) -> dict:
    out = {}
    for env in ENVS + ("development",):
        for path in ("state", "conflicts"):
            r = requests.get(f"{node.url}/v1/{path}", params={"env": env},
                             headers=key("zara"), timeout=60)
            assert r.status_code == 200, r.text
            out[(path, env)] = r.json()
    return out


# ------------------------------------------------------------------------------------------
# 1. the same operations, any node, any order, with duplicates: the same state everywhere


class Burst:
    """Client threads sending batches to random daemons; some batches also go to a second
    daemon at the same time, some are sent again to another daemon once acknowledged, and
    some carry operations other batches had acknowledged: every such repeat must be
    acknowledged as a duplicate, never applied again."""

    def __init__(self, nodes, ops, seed: int, threads: int = 6):
        self.nodes, self.threads = nodes, threads
        self.by_id = {op["op_id"]: op for op in ops}
        self.rng = random.Random(seed)
        self.acked = {}          # op id -> hlc of its first acknowledgement
        self.lock = threading.Lock()
        self.failures = []
        self.repeats = 0

    def run(self, batches) -> None:
        work = queue.Queue()
        for i, batch in enumerate(batches):
            work.put((i, batch))
        workers = [threading.Thread(target=self._client, args=(work, n))
                   for n in range(self.threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(600)
        assert not any(t.is_alive() for t in workers), "a client thread hangs"
        assert not self.failures, self.failures[:3]

    def _client(self, work, n) -> None:
        rng = random.Random(self.rng.random())
        session = requests.Session()
        try:
            while True:
                try:
                    _, batch = work.get_nowait()
                except queue.Empty:
                    return
                self._send(session, rng, batch)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self.failures.append(f"client {n}: {exc!r}")

    def _check(self, ops, acks, *, new: set, repeated: set, alone: bool = True) -> None:
        """``new``: ops sent for the first time (``alone``: to this daemon only, so each is
        applied by it); ``repeated``: ops acknowledged before, each a duplicate now."""
        assert [a["op_id"] for a in acks] == [o["op_id"] for o in ops]
        with self.lock:
            for ack in acks:
                op_id = ack["op_id"]
                if op_id in repeated:
                    assert ack.get("duplicate") is True, f"{op_id} applied again"
                    assert ack["hlc"] == self.acked[op_id]
                elif op_id in new:
                    assert not (alone and ack.get("duplicate")), f"{op_id} was not applied"
                    self.acked.setdefault(op_id, ack["hlc"])
                    assert ack["hlc"] == self.acked[op_id]

    def _send(self, session, rng, batch) -> None:
        nodes = self.nodes
        first, second = rng.sample(nodes, 2)
        extra = []
        if rng.random() < 0.1:  # with a few ops other batches had acknowledged
            with self.lock:
                done = list(self.acked)
            extra_ids = set(rng.sample(done, min(len(done), rng.randint(1, 50))))
            extra = [self.by_id[op_id] for op_id in extra_ids]
        ops = batch + extra
        repeated = {op["op_id"] for op in extra}
        if rng.random() < 0.05:
            # the same batch to two daemons at once: each op bound once, by one of them
            answers = {}

            def send(node):
                answers[node.url] = _post(requests.Session(), node.url, ops)
            both = [threading.Thread(target=send, args=(node,)) for node in (first, second)]
            for t in both:
                t.start()
            for t in both:
                t.join(120)
            (s1, b1), (s2, b2) = answers[first.url], answers[second.url]
            assert s1 == 200 and s2 == 200, (s1, b1, s2, b2)
            for a1, a2 in zip(b1["ops"], b2["ops"]):
                assert a1["hlc"] == a2["hlc"]
                if a1["op_id"] not in repeated:
                    assert bool(a1.get("duplicate")) != bool(a2.get("duplicate")), (a1, a2)
            self._check(ops, b1["ops"], new={o["op_id"] for o in batch}, repeated=repeated,
                        alone=False)
            self._check(ops, b2["ops"], new=set(), repeated=repeated)
            with self.lock:
                self.repeats += 1
            return
        status, body = _post(session, first.url, ops)
        assert status == 200, (status, body)
        self._check(ops, body["ops"], new={o["op_id"] for o in batch}, repeated=repeated)
        if rng.random() < 0.1:  # a retry of part of it, to another daemon
            again = rng.sample(ops, rng.randint(1, min(200, len(ops))))
            status, body = _post(session, second.url, again)
            assert status == 200, (status, body)
            self._check(again, body["ops"], new=set(),
                        repeated={o["op_id"] for o in again})
            with self.lock:
                self.repeats += 1


def test_three_daemons_fed_the_same_ops_converge_to_one_lmdb_stores_state(
        tmp_path, postgres, pg_dsn):
    rng = random.Random(20)
    work = Workload(20)
    # phase 1: most of the ops; phase 2: overrides, then a promotion, each with every daemon
    # holding the same; phase 3: the rest, competing in the epochs phase 2 opened
    first = [work.ordinary() for _ in range(BURST_OPS * 6 // 10)]
    overrides = [work.override() for _ in range(BURST_OPS // 100)]
    third = [work.ordinary() for _ in range(BURST_OPS - len(first) - len(overrides) - 1)]
    nodes = _cluster(tmp_path, postgres, pg_dsn)
    try:
        for node in nodes:
            node.start()
        burst = Burst(nodes, first + overrides + third, seed=21)
        burst.run(_batches(rng, first))
        _settle(nodes, len(first))
        burst.run(_batches(rng, overrides, 50, 150))
        _settle(nodes, len(first) + len(overrides))
        node = rng.choice(nodes)
        staging = requests.get(f"{node.url}/v1/state", params={"env": "staging"},
                               headers=key("zara"), timeout=60).json()["entities"]
        promoted = sorted(staging)[:25]
        r = requests.post(f"{node.url}/v1/promote", headers=key("zara"),
                          json={"from": "staging", "to": "production",
                                "entities": promoted}, timeout=60)
        assert r.status_code == 200, r.text
        promotion = r.json()["op_id"]
        _settle(nodes, len(first) + len(overrides) + 1)
        burst.run(_batches(rng, third))
        total = len(first) + len(overrides) + 1 + len(third)
        assert total == BURST_OPS
        _settle(nodes, total)
        assert len(burst.acked) == total - 1 and burst.repeats > 0
        views = [_rest_views(node) for node in nodes]
        assert views[0][("state", "production")]["entities"]
        assert views[0] == views[1] == views[2]
    finally:
        for node in nodes:
            node.stop()

    snapshots = [_snapshot(node.project) for node in nodes]
    assert len(snapshots[0]["log"]) == total
    assert snapshots[0]["log"] == _shared_log(pg_dsn)
    for other in snapshots[1:]:
        assert other["log"] == snapshots[0]["log"]  # the same entries, byte for byte
        assert other["records"] == snapshots[0]["records"]
        assert other == snapshots[0]
    assert any(snapshots[0]["conflicts"].values())  # review writes did compete

    # one LMDB store alone, fed the same operations in other batches and orders; the
    # promotion is the cluster's (a promotion is bound where it is accepted, by its op id)
    with Engine.init(str(tmp_path / "alone"), str(EXAMPLE_SCHEMA), sync=False) as alone:
        for batch in _batches(rng, first, 1000, 1000):
            alone.apply(batch, ZARA)
        for batch in _batches(rng, overrides, 1000, 1000):
            alone.apply(batch, ZARA)
        alone.apply_entries([snapshots[0]["log"][promotion]])
        for batch in _batches(rng, third, 1000, 1000):
            alone.apply(batch, ZARA)
        mine = _snapshot_of(alone)
    assert mine["records"] == snapshots[0]["records"]
    assert mine["conflicts"] == snapshots[0]["conflicts"]
    assert mine["violations"] == snapshots[0]["violations"]
    # each op bound alike, but for what the field held when it came (``prev``, shown by
    # 'conflux log'), which depends on the order
    assert _without_prev(mine["log"]) == _without_prev(snapshots[0]["log"])



def test_an_add_sent_to_the_daemon_may_name_the_tags_it_observed(tmp_path):
    # a client that names what its adds saw (nothing, for the first) gets the same record on
    # every store, whatever the store held when each add arrived: that is what lets daemons
    # fed the same ops in different orders agree
    from falcon import testing

    from conflux.api import create_app
    from conflux.api.access import Access

    ops = [{"type": "add_elements", "entity_id": "upstream.u", "field": "targets",
            "elements": ["10.0.0.1"], "observed": [[]], "op_id": "add-1",
            "hlc": "hlc:1700000000000.0001"},
           {"type": "add_elements", "entity_id": "upstream.u", "field": "targets",
            "elements": ["10.0.0.1"], "observed": [["add-1"]], "op_id": "add-2",
            "hlc": "hlc:1700000000000.0002"}]
    served = Engine(make_project(tmp_path / "served", rbac=False))
    client = testing.TestClient(create_app(served, Access.load(served.root)))
    for op in ops:  # in order: the second add saw the first
        r = client.simulate_post("/v1/ops", json=op, headers=key("zara"))
        assert r.status_code == 200, r.text
    with Engine.init(str(tmp_path / "alone"), str(EXAMPLE_SCHEMA), sync=False) as alone:
        alone.apply(ops[::-1], ZARA)  # the other way round
        assert alone.records() == served.records()
    r = client.simulate_post("/v1/ops", headers=key("zara"), json={
        "type": "add_elements", "entity_id": "service.s", "field": "labels",
        "elements": ["x"], "observed": [["add-1"]]})
    assert r.status_code == 422 and r.json["error"]["field"] == "observed"
    served.close()


# ------------------------------------------------------------------------------------------
# 2. and 3.: a burst through failures


class Writers:
    """Client threads, each writing batches of its own client-stamped ops to random daemons
    until stopped; a batch a daemon did not acknowledge (connection lost, 503) goes to
    another with the same op ids (``_deliver``) until one does."""

    def __init__(self, nodes, seed: int, threads: int = 4, size: int = 200):
        self.nodes, self.size = nodes, size
        self.stop = threading.Event()
        self.sent = []            # every op, in the order each thread made them
        self.acked = {}           # op id -> hlc
        self.tally = {"connection": 0, "503": 0}
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(seed * 100 + n, n))
                        for n in range(threads)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(RETRY_S + 30)
        assert not any(t.is_alive() for t in self.threads), "a client thread hangs"

    def _write(self, seed: int, n: int) -> None:
        rng, work = random.Random(seed), Workload(seed, prefix=f"w{n}")
        session = requests.Session()
        try:
            while not self.stop.is_set():
                ops = [work.ordinary() for _ in range(self.size)]
                with self.lock:
                    self.sent += ops
                acks = _deliver(session, self.nodes, ops, rng, self.tally)
                assert [a["op_id"] for a in acks] == [o["op_id"] for o in ops]
                with self.lock:
                    for ack in acks:
                        assert ack["op_id"] not in self.acked
                        self.acked[ack["op_id"]] = ack["hlc"]
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            self.failures.append(f"writer {n}: {exc!r}")


def _shared_log(dsn: str) -> dict:
    """The shared log in PostgreSQL: op id -> entry."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {op_id: bytes(entry) for op_id, entry in
                conn.execute("SELECT op_id, entry FROM conflux_log")}


def _check_after_failures(tmp_path, pg_dsn, nodes, writers) -> None:
    """Every op sent was acknowledged once; every daemon catches up and holds each op once,
    with the hlc it was acknowledged with; all hold the same state and log, and it is the
    state of one LMDB store fed the same ops."""
    assert not writers.failures, writers.failures[:3]
    assert len(writers.acked) == len(writers.sent)
    _settle(nodes, len(writers.sent))
    for node in nodes:
        node.stop()
    snapshots = [_snapshot(node.project) for node in nodes]
    assert set(snapshots[0]["log"]) == set(writers.acked)  # nothing lost, nothing extra
    assert snapshots[0]["log"] == _shared_log(pg_dsn)
    for other in snapshots[1:]:
        assert other == snapshots[0]
    with Engine(nodes[0].project) as engine:
        logged = {op.op_id: engine.core.hlc_format(op.hlc) for op in engine.log()}
    assert logged == writers.acked
    with Engine.init(str(tmp_path / "alone"), str(EXAMPLE_SCHEMA), sync=False) as alone:
        for at in range(0, len(writers.sent), 1000):
            alone.apply(writers.sent[at:at + 1000], ZARA)
        assert alone.records() == snapshots[0]["records"]


def test_daemons_killed_mid_burst_lose_nothing_acknowledged(tmp_path, postgres, pg_dsn):
    rng = random.Random(7)
    nodes = _cluster(tmp_path, postgres, pg_dsn)
    try:
        for node in nodes:
            node.start()
        with Writers(nodes, seed=7) as writers:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.3, 1.0))
                node = rng.choice(nodes)
                node.kill()
                assert not writers.failures, writers.failures[:3]
                node.start()
            time.sleep(1.0)
        assert writers.tally["connection"] > 0  # the kills did cut requests off
        assert sum(node.starts for node in nodes) == len(nodes) + KILLS
        _check_after_failures(tmp_path, pg_dsn, nodes, writers)
    finally:
        for node in nodes:
            node.stop()


def test_postgresql_restarted_mid_burst_loses_nothing_and_daemons_recover(
        tmp_path, postgres, pg_dsn):
    nodes = _cluster(tmp_path, postgres, pg_dsn)
    try:
        for node in nodes:
            node.start()
        pids = [node.proc.pid for node in nodes]
        with Writers(nodes, seed=11) as writers:
            for mode in ("fast", "immediate"):  # sessions cut; then as a crash
                time.sleep(2.0)
                refused = writers.tally["503"]
                postgres.halt(mode)
                try:
                    time.sleep(3.0)
                    # while it is down, writes are refused: 503, written nowhere
                    assert writers.tally["503"] > refused
                    assert all(node.status()["shared_log"]["reachable"] is False
                               for node in nodes)
                finally:
                    postgres.resume()
                assert not writers.failures, writers.failures[:3]
            time.sleep(3.0)
            accepted = len(writers.acked)
            time.sleep(1.0)
            assert len(writers.acked) > accepted  # writes go through again
        # the same daemons, never restarted
        assert [node.proc.pid for node in nodes] == pids
        assert all(node.proc.poll() is None and node.starts == 1 for node in nodes)
        _check_after_failures(tmp_path, pg_dsn, nodes, writers)
    finally:
        for node in nodes:
            node.stop()
