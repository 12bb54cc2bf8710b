"""Cluster benchmark: several daemons sharing one op log on PostgreSQL, against the bound
PostgreSQL itself sets, against etcd, and how soon a write on one node is seen on another.

What it measures, in one run, on loopback, against a throwaway PostgreSQL server started from
the installed binaries (``tests/pgcluster.py``: ``initdb`` in a temporary directory, default
settings, so commits are durable: ``fsync`` and ``synchronous_commit`` on):

(1) Ingest. 1,000-op batches (msgpack, ``POST /v1/ops``, every op with its own client-chosen
    op id, as a client that retries must send; bench/ingest.py's workload: ``set_field`` and
    about 5 % ``add_elements`` over 5,000 ``svc`` entities of the bench schema) through 1, 2
    and 3 daemons, each on its own project directory, sharing one database (``[store] url``).
    The clients are threads of this process (``--connections`` in all, split among the
    daemons, each sending its next batch when the last one is answered): wrk would stop with
    a batch in flight on every connection, committed all the same but not counted. Every op
    is applied on every node (the others' replicators apply it from the log), so each run is
    timed until every node has every op: reported are the acknowledged ops/s, the ops/s
    every node kept up with (all ops over the time until the last node had them: the figure
    the target and (3) use), and CPU per op from /proc (user + system of every process): the
    daemons' (by role: gunicorn workers and master, commit service, replicator, other
    helpers) and PostgreSQL's (the backends of that database and the server's shared
    background processes) separately. For reference, the 1-daemon cluster is also sent the
    same batches without op ids (the daemon chooses them).
(1b) The bound PostgreSQL sets: the same rows (log entries the engine writes, in a table made
    by ``SharedLog.create``, the same as ``conflux_log``, in a fresh database) written by bare
    psycopg clients, 1,000 rows per commit, as many client connections (one process each) as
    daemons in (1): ``COPY`` (binary), and the daemon's own statement (``SharedLog.append_whole``:
    ``INSERT ... unnest ... ON CONFLICT DO NOTHING RETURNING`` and ``NOTIFY``). (1) over the
    ``COPY`` bound with the same number of connections is the figure the target is set on.
(2) Single-op durable writes, one op per request (own op id each, made unique per request by
    wrk's Lua script), through one daemon on PostgreSQL (the 1-daemon cluster of (1)), one
    daemon on LMDB alone (reference), and etcd single-key puts through its HTTP/JSON gateway
    (``/usr/bin/etcd`` on loopback, temporary data dir; durable: it fsyncs its WAL before
    answering); the same wrk threads, connections and duration for each.
(3) Replication lag: a probe writes a field of a new entity on node A (a different pair of
    nodes each time, the 3-daemon cluster) and, once A acknowledged it, polls node B's
    ``GET /v1/entities/<id>`` until B serves it; lag = first answer from B holding the value
    minus A's acknowledgement (so it includes one GET; the poll runs every ``POLL_MS``).
    Measured idle, then under a background load of 1,000-op batches spread over the nodes at
    ``--lag-load`` (default 50 %) of the rate that cluster kept up with in (1), sent at a
    steady pace by client threads in this process.

Why the comparison is fair: every server runs for the whole run and the measurements of (1),
(1b) and (2) are interleaved: each round runs every configuration once for ``--duration``
seconds, the order reversed every other round, so a noisy neighbour on this shared machine hits
all sides alike; figures are totals over the rounds. Before each run the script waits a little
(``--quiet-wait``) for other processes to go quiet, and reports the CPUs anything else kept busy
meanwhile ("other"). The clients' own CPU is reported, not charged to a server. Each
configuration has its own database, so PostgreSQL's backends are told apart by database; its
shared background processes (WAL writer, checkpointer, ...) are charged to whatever ran. At the
end, every node of a cluster must hold every op PostgreSQL logged, and the same state.

Run ``python bench/cluster.py`` (full: 2 rounds of 6 s runs, about 5 minutes) or ``--quick``
(1 round of 2 s runs, about 1.5 minutes). The table goes to stdout; figures, targets and settings
go to ``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "cluster.json")

BATCH = 1_000                   # ops per request in (1), rows per commit in (1b)
N_BATCH_BODIES = 32             # distinct 1,000-op bodies, cycled
N_SINGLE = 20_000               # distinct single-op bodies in (2)
PLACEHOLDER = "QZQZQZQZQZQZ"    # 12 characters in every op id, replaced per request
MAX_SINGLE_RATE = 50_000        # single-op requests/s per wrk thread: the per-run count cap
CATCH_UP_S = 180                # the longest a run waits for every node to have every op
POLL_MS = 2                     # (3): pause between two reads of node B
LAG_TIMEOUT_S = 10              # (3): a probe not seen on B by then counts as lost
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets (the cluster's performance section)
TARGET_INGEST_OVER_BOUND = 0.5
TARGET_LAG_P99_MS = 100.0


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# (1b) the bare psycopg writer: a process of its own, run as ``cluster.py --bound-writer JSON``
# (kept above the heavy imports: it needs psycopg and nothing of Conflux's but SharedLog)


def bound_writer(spec: dict) -> int:
    """Write ``spec["entries"]``' rows, ``BATCH`` per commit, for ``spec["seconds"]`` after
    "go" on stdin; print the figures; wait for a line on stdin before disconnecting (the
    backend's CPU is read while it is still alive)."""
    from conflux.store.shared_log import SharedLog

    entries = read_records(spec["entries"])
    tag, node, method = spec["tag"], spec["node"], spec["method"]
    log = SharedLog(spec["dsn"], node)
    conn = log._conn  # noqa: SLF001 - COPY goes through the very connection SharedLog opens
    counter = itertools.count()
    n = len(entries)

    def rows():
        out = []
        for _ in range(BATCH):
            i = next(counter)
            out.append((f"{tag}{i:012d}", entries[i % n]))
        return out

    def commit(batch):
        if method == "copy":
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY conflux_log (op_id, node, entry) FROM STDIN "
                              "(FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "bytea"])
                    for op_id, entry in batch:
                        copy.write_row((op_id, node, entry))
        elif log.append_whole(batch):
            raise RuntimeError("an op id was in the log already")

    commit(rows())  # before the clock: the connection, the statement and the table are warm
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    commits = written = 0
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    deadline = t0 + spec["seconds"]
    while time.perf_counter() < deadline:
        batch = rows()
        commit(batch)
        commits += 1
        written += len(batch)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rows": written, "commits": commits, "seconds": seconds,
                      "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)}),
          flush=True)
    sys.stdin.readline()
    log.close()
    return 0


def read_records(path: str) -> list[bytes]:
    """The records ``http_ingest.write_bodies`` wrote (``<len>\\n<bytes>`` each)."""
    with open(path, "rb") as fh:
        data = fh.read()
    out, pos = [], 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        size = int(data[pos:nl])
        out.append(data[nl + 1:nl + 1 + size])
        pos = nl + 1 + size
    return out


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--bound-writer":
    sys.exit(bound_writer(json.loads(sys.argv[2])))


hi = _load("conflux_bench_http_ingest", os.path.join(HERE, "http_ingest.py"))
pgcluster = _load("conflux_bench_pgcluster", os.path.join(ROOT, "tests", "pgcluster.py"))

import msgpack  # noqa: E402
import psycopg  # noqa: E402

from conflux.engine import Engine  # noqa: E402
from conflux.store.shared_log import SharedLog  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Request bodies


def make_bodies(ingest, seed: int, workdir: str, n_batches: int) -> dict:
    """The 1,000-op batch bodies (msgpack), the single-op bodies (JSON) and etcd's put bodies,
    written to files; every op id holds ``PLACEHOLDER``, replaced per request. Also the log
    entries the engine makes of such ops, for the bare writers of (1b)."""
    wl = ingest.Workload(seed)
    batches = []
    for _ in range(n_batches):
        ops = wl.batch(BATCH)[0]
        for j, op in enumerate(ops):
            op["op_id"] = f"{PLACEHOLDER}-{j:04d}"
        batches.append(ops)
    singles = ingest.Workload(seed + 1).batch(N_SINGLE)[0]
    etcd = [hi.etcd_put_body(op) for op in singles]
    for op in singles:
        op["op_id"] = PLACEHOLDER
    files = {
        "batch": [msgpack.packb({"ops": ops}, use_bin_type=True) for ops in batches],
        # the reference: the same ops without op ids (the daemon chooses them)
        "batch_noid": [msgpack.packb({"ops": [{k: v for k, v in op.items() if k != "op_id"}
                                              for op in ops]}, use_bin_type=True)
                       for ops in batches],
        "single": [hi.compact_json(op) for op in singles],
        "etcd": etcd,
    }
    out = {**hi.write_body_files(workdir, files), "batch_bodies": files["batch"],
           "batch_noid_bodies": files["batch_noid"]}
    # the log entries of 4,000 such ops, as a daemon would append them
    path = tempfile.mkdtemp(prefix="entries-", dir=workdir)
    engine = Engine.init(path, hi.SCHEMA, sync=False)
    try:
        for k, ops in enumerate(batches[:4]):
            engine.apply([{**op, "op_id": op["op_id"].replace(PLACEHOLDER, f"entries{k:05d}")}
                          for op in ops], hi.CLIENT)
        entries = [bytes(data) for _, data in engine.entries(1)]
    finally:
        engine.close()
        shutil.rmtree(path, ignore_errors=True)
    out["paths"]["entries"] = os.path.join(workdir, "entries.records")
    hi.write_bodies(out["paths"]["entries"], entries)
    out["mean_bytes"]["entry"] = round(sum(map(len, entries)) / len(entries))
    return out


_run_ids = itertools.count(1)


def run_id() -> str:
    """Four base-36 characters, unique in this process (and random across processes)."""
    n = next(_run_ids) + secrets.randbelow(36 ** 3) * 36
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(4):
        n, d = divmod(n, 36)
        out = digits[d] + out
    return out


# ---------------------------------------------------------------------------------------------
# CPU: every process's user + system time, from /proc


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class CpuMeter:
    """Snapshots of the processes this run measures, and the CPU seconds between two of
    them, by group: per daemon and role, PostgreSQL per database and its shared processes."""

    def __init__(self, postmaster: int, daemons: dict[str, object], pg_user: str):
        self.postmaster, self.daemons, self.pg_user = postmaster, daemons, pg_user

    def _group(self, pid, ppid, pgrp, comm) -> str | None:
        if pid == self.postmaster or ppid == self.postmaster:
            # a backend's title: "postgres: <user> <database> <client> <state>"
            words = _cmdline(pid).split()
            if len(words) >= 3 and words[0] == "postgres:" and words[1] == self.pg_user:
                return f"pg:{words[2]}"
            return "pg:shared"
        for name, server in self.daemons.items():
            if server.proc is not None and pgrp == server.pgid:
                if pid == pgrp:
                    role = "master"
                elif comm.startswith("conflux-commit"):
                    role = "commits"
                elif comm.startswith("conflux-replic"):
                    role = "replicator"
                elif comm.startswith("conflux-"):
                    role = "helpers"
                else:
                    role = "workers"
                return f"{name}:{role}"
        return None

    def snapshot(self) -> dict:
        ticks = {}
        for pid, (ppid, pgrp, comm, utime, stime) in hi.processes().items():
            group = self._group(pid, ppid, pgrp, comm)
            if group is not None:
                ticks[pid] = (group, utime + stime)
        return {"ticks": ticks, "machine": hi.machine_cpu(), "t": time.perf_counter(),
                "children": _children_cpu()}

    @staticmethod
    def delta(s0: dict, s1: dict) -> dict:
        """CPU seconds by group between two snapshots (a process that ended in between is
        missing: the measured processes live through the run), and the machine's."""
        out: dict[str, float] = {}
        for pid, (group, t) in s1["ticks"].items():
            before = s0["ticks"].get(pid)
            d = t - (before[1] if before and before[0] == group else 0)
            out[group] = out.get(group, 0.0) + d / CLK_TCK
        wall = s1["t"] - s0["t"]
        ticks = [b - a for a, b in zip(s0["machine"], s1["machine"])]
        return {"groups": out, "wall_s": wall, "busy_cores": hi.busy_cores(ticks, wall),
                "children_cpu_s": s1["children"] - s0["children"]}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def summed(groups: dict, prefixes) -> float:
    return sum(v for k, v in groups.items() if any(k.startswith(p) for p in prefixes))


# ---------------------------------------------------------------------------------------------
# Servers


class Cluster:
    """``n`` daemons sharing the database ``db``."""

    def __init__(self, n: int, db: str, dsn: str, servers: list):
        self.n, self.db, self.dsn, self.servers = n, db, dsn, servers
        self.name = f"cluster{n}"


def start_all(makers: dict, stack) -> dict:
    """Start servers at once (each in a thread; they take seconds each to boot)."""
    started, errors = {}, []

    def one(name, make):
        try:
            started[name] = hi.start_retrying(make)
        except Exception as exc:  # noqa: BLE001 - reported below, after every thread ended
            errors.append(f"{name}: {exc}")

    threads = [threading.Thread(target=one, args=item) for item in makers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stack.callback(stop_all, list(started.values()))
    if errors:
        raise RuntimeError("; ".join(errors))
    return {name: started[name] for name in makers}


def stop_all(servers) -> None:
    """Stop servers at once (a daemon takes a second or two to leave)."""
    threads = [threading.Thread(target=s.stop) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pg_query(dsn: str, sql: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def log_mark(dsn: str) -> tuple[int, int]:
    """The last row of ``conflux_log`` (its (txid, pos)), from the primary key's index."""
    rows = pg_query(dsn, "SELECT txid::text::bigint, pos FROM conflux_log "
                         "ORDER BY txid DESC, pos DESC LIMIT 1")
    return tuple(rows[0]) if rows else (0, 0)


def rows_since(dsn: str, mark: tuple[int, int], distinct: bool = True):
    """(rows, distinct transactions) appended after ``mark`` (only rows without
    ``distinct``)."""
    if not distinct:
        return int(pg_query(dsn, "SELECT count(*) FROM conflux_log WHERE (txid, pos) > "
                                 "(%s::text::xid8, %s)", mark)[0][0])
    [(rows, commits)] = pg_query(dsn, "SELECT count(*), count(DISTINCT txid) FROM conflux_log "
                                      "WHERE (txid, pos) > (%s::text::xid8, %s)", mark)
    return int(rows), int(commits)


def log_rows(dsn: str) -> int:
    return int(pg_query(dsn, "SELECT count(*) FROM conflux_log")[0][0])


class Client:
    """One keep-alive HTTP connection (a thread's own)."""

    def __init__(self, url: str, api_key: str):
        host, port = url.split("//", 1)[1].split(":")
        self.host, self.port, self.key = host, int(port), api_key
        self.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                ctype: str = "application/json", accept: str | None = None):
        headers = {"X-API-Key": self.key}
        if body is not None:
            headers["Content-Type"] = ctype
        if accept:
            headers["Accept"] = accept
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:  # the server closed a keep-alive connection: once more
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()


def caught_up(servers, api_key: str, total: int, deadline_s: float) -> float | None:
    """Seconds until every node's log holds ``total`` ops (None: not within the deadline)."""
    t0 = time.perf_counter()
    clients = [Client(s.url, api_key) for s in servers]
    pending = list(range(len(servers)))
    try:
        while pending:
            for i in list(pending):
                status, data = clients[i].request("GET", f"/v1/ops?after={total - 1}&limit=1")
                if status == 200 and json.loads(data)["ops"]:
                    pending.remove(i)
            if not pending:
                break
            if time.perf_counter() - t0 > deadline_s:
                return None
            time.sleep(0.01)
    finally:
        for c in clients:
            c.close()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# The runs


def wrk_procs(targets: list[tuple[str, str, int]], duration: int) -> list:
    """Start one wrk per (url, script, connections, threads); returns their Popen objects."""
    procs = []
    for url, script, conns, threads in targets:
        cmd = hi.wrk_command(script, url, threads, conns, duration)
        procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)))
    return procs


def wrk_results(procs, duration: int) -> list[dict]:
    out = []
    for cmd, proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        out.append(hi.wrk_figures(cmd, proc.returncode, stdout, stderr))
    return out


def split(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def blast(servers, conns: list[int], bodies: list[bytes], api_key: str,
          seconds: float) -> dict:
    """POST 1,000-op batches from ``conns[i]`` client threads per server ``i``, each request
    as soon as the thread's last one was answered, with fresh op ids, for ``seconds``; then
    wait for the answers still due, so that every op sent is counted: wrk cannot (it stops
    with 1,000-op batches in flight on every connection, committed all the same)."""
    prefix, counter, lock = run_id(), itertools.count(), threading.Lock()
    ok, failed, latencies = [0], [0], []
    deadline = time.perf_counter() + seconds
    placeholder = PLACEHOLDER.encode()

    def work(server):
        client = Client(server.url, api_key)
        mine = []
        try:
            while time.perf_counter() < deadline:
                i = next(counter)
                body = bodies[i % len(bodies)].replace(placeholder,
                                                       f"{prefix}{i:08d}".encode())
                t = time.perf_counter()
                status, _ = client.request("POST", "/v1/ops", body, "application/msgpack",
                                           "application/msgpack")
                mine.append(time.perf_counter() - t)
                with lock:
                    if status == 200:
                        ok[0] += 1
                    else:
                        failed[0] += 1
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(server,), daemon=True)
               for server, c in zip(servers, conns) for _ in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    lat = sorted(latencies)
    return {"ops": ok[0] * BATCH, "failed_requests": failed[0],
            "seconds": time.perf_counter() - t0,
            "p50_ms": round(1000 * percentile(lat, 50), 1) if lat else None,
            "p99_ms": round(1000 * percentile(lat, 99), 1) if lat else None}


def run_cluster(cluster: Cluster, meter: CpuMeter, args, bodies, api_key,
                which: str = "batch") -> dict:
    """(1): the cluster's daemons loaded at once for ``args.duration`` s, then timed until
    every node has every op."""
    n = cluster.n
    conns = split(args.connections, n)
    before = log_rows(cluster.dsn)
    mark = log_mark(cluster.dsn)
    s0 = meter.snapshot()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    load = blast(cluster.servers, conns, bodies[f"{which}_bodies"], api_key, args.duration)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    total = before + load["ops"]
    if load["failed_requests"]:  # a failed batch wrote nothing: still, trust the log's count
        total = log_rows(cluster.dsn)
    catch = caught_up(cluster.servers, api_key, total, CATCH_UP_S)
    s1 = meter.snapshot()
    d = CpuMeter.delta(s0, s1)
    rows, commits = rows_since(cluster.dsn, mark)
    g = d["groups"]
    names = [f"{s.name}:" for s in cluster.servers]
    daemon_cpu = {role: summed({k: v for k, v in g.items() if k.endswith(":" + role)}, names)
                  for role in ("master", "workers", "commits", "replicator", "helpers")}
    pg_db = g.get(f"pg:{cluster.db}", 0.0)
    pg_shared = g.get("pg:shared", 0.0)
    client = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    measured = sum(g.values()) + client
    return {
        "ops": load["ops"], "seconds": round(load["seconds"], 3), "rows": rows,
        "errors": load["failed_requests"],
        "catch_up_s": None if catch is None else round(catch, 3),
        "window_s": round(d["wall_s"], 3),
        "daemon_cpu_s": {k: round(v, 3) for k, v in daemon_cpu.items()},
        "pg_cpu_s": {"backends": round(pg_db, 3), "shared": round(pg_shared, 3)},
        "client_cpu_s": round(client, 3),
        "other_cores": round(d["busy_cores"] - measured / d["wall_s"], 2),
        "pg_commits": commits, "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
        "connections": conns,
    }


def run_bound(method: str, k: int, db: str, dsn: str, meter: CpuMeter, args,
              bodies) -> dict:
    """(1b): ``k`` bare psycopg writers, ``BATCH`` rows per commit, for ``args.duration`` s."""
    procs = []
    try:
        for i in range(k):
            spec = {"dsn": dsn, "entries": bodies["paths"]["entries"], "method": method,
                    "tag": f"{run_id()}{i}", "node": f"bound-{i}", "seconds": args.duration}
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                           "--bound-writer", json.dumps(spec)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True, env=hi.child_env()))
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a bound writer did not start: {line!r}")
        s0 = meter.snapshot()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
        s1 = meter.snapshot()
        for p in procs:
            p.stdin.write("exit\n")
            p.stdin.flush()
        for p in procs:
            p.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    d = CpuMeter.delta(s0, s1)
    g = d["groups"]
    client = sum(r["cpu_s"] for r in results)
    measured = sum(g.values()) + client
    return {
        "rows": sum(r["rows"] for r in results), "commits": sum(r["commits"] for r in results),
        "seconds": statistics.mean(r["seconds"] for r in results),
        "pg_cpu_s": {"backends": round(g.get(f"pg:{db}", 0.0), 3),
                     "shared": round(g.get("pg:shared", 0.0), 3)},
        "client_cpu_s": round(client, 3),
        "other_cores": round(d["busy_cores"] - measured / d["wall_s"], 2),
    }


def run_single(name: str, server, meter: CpuMeter, args, bodies, api_key, workdir,
               db: str | None) -> dict:
    """(2): one op (or one etcd put) per request, wrk with the same settings for every
    server."""
    path = os.path.join(workdir, f"single-{run_id()}.lua")
    cap = args.duration * MAX_SINGLE_RATE
    if name == "etcd":
        hi.write_lua(path, bodies["paths"]["etcd"], "/v3/kv/put", cap, args.wrk_threads,
                     {"Content-Type": "application/json"}, run_id(), PLACEHOLDER)
    else:
        hi.write_lua(path, bodies["paths"]["single"], "/v1/ops", cap, args.wrk_threads,
                     {"Content-Type": "application/json", "X-API-Key": api_key}, run_id(),
                     PLACEHOLDER)
    s0 = meter.snapshot()
    [r] = wrk_results(wrk_procs([(server.url, path, args.single_connections,
                                  args.wrk_threads)], args.duration), args.duration)
    s1 = meter.snapshot()
    d = CpuMeter.delta(s0, s1)
    g = d["groups"]
    out = {"requests": r["requests"], "seconds": r["duration_us"] / 1e6, "errors": r["errors"],
           "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
           "wrk_cpu_s": round(d["children_cpu_s"], 3),
           "server_cpu_s": round(summed(g, [f"{server.name}:"]), 3),
           "server_cpu_by_role_s": {k.split(":", 1)[1]: round(v, 3) for k, v in g.items()
                                    if k.startswith(f"{server.name}:")},
           "other_cores": round(d["busy_cores"] - (sum(g.values()) + d["children_cpu_s"]) /
                                d["wall_s"], 2)}
    if db is not None:
        out["pg_cpu_s"] = round(g.get(f"pg:{db}", 0.0) + g.get("pg:shared", 0.0), 3)
    return out


# ---------------------------------------------------------------------------------------------
# (3) replication lag


class Loader:
    """Background load: 1,000-op batches at ``rate`` ops/s, spread over the nodes in turn,
    each sent at its scheduled time (late ones at once) by ``threads`` client threads."""

    def __init__(self, servers, api_key, bodies: list[bytes], rate: float, threads: int):
        self.servers, self.bodies = servers, bodies
        self.interval = BATCH / rate
        self.api_key, self.n_threads = api_key, threads
        self.stop = threading.Event()
        self.counter = itertools.count()
        self.sent = self.failed = 0
        self.late_s = []
        self.prefix = run_id()
        self.lock = threading.Lock()
        self.threads = []

    def start(self):
        self.t0 = time.perf_counter() + 0.2
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(self.n_threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        clients = [Client(s.url, self.api_key) for s in self.servers]
        try:
            while not self.stop.is_set():
                i = next(self.counter)
                at = self.t0 + i * self.interval
                wait = at - time.perf_counter()
                if wait > 0 and self.stop.wait(wait):
                    return
                body = self.bodies[i % len(self.bodies)].replace(
                    PLACEHOLDER.encode(), f"{self.prefix}{i:08d}".encode())
                status, _ = clients[i % len(clients)].request(
                    "POST", "/v1/ops", body, "application/msgpack", "application/msgpack")
                with self.lock:
                    self.late_s.append(max(0.0, -wait))
                    if status == 200:
                        self.sent += 1
                    else:
                        self.failed += 1
        finally:
            for c in clients:
                c.close()

    def finish(self) -> dict:
        self.stop.set()
        for t in self.threads:
            t.join(120)
        seconds = time.perf_counter() - self.t0
        late = sorted(self.late_s)
        return {"ops": self.sent * BATCH, "failed_requests": self.failed,
                "seconds": round(seconds, 2), "ops_per_s": round(self.sent * BATCH / seconds),
                "late_p50_ms": round(1000 * late[len(late) // 2], 1) if late else None,
                "late_p99_ms": round(1000 * late[int(len(late) * 0.99)], 1) if late else None}


def probe_lag(servers, api_key: str, seconds: float, interval_s: float, tag: str) -> dict:
    """For ``seconds``: write a new entity's field on node A, then read node B until it
    serves it; the lag of each probe in ms (A's acknowledgement to B's first answer)."""
    clients = [Client(s.url, api_key) for s in servers]
    readers = [Client(s.url, api_key) for s in servers]
    pairs = [(a, b) for a in range(len(servers)) for b in range(len(servers)) if a != b]
    lags, lost, polls = [], 0, 0
    deadline = time.perf_counter() + seconds
    try:
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                break
            a, b = pairs[i % len(pairs)]
            entity = f"svc.lag{tag}{i}"
            body = json.dumps({"type": "set_field", "entity_id": entity, "field": "build",
                               "value": i, "op_id": f"lag-{tag}-{i}"}).encode()
            status, data = clients[a].request("POST", "/v1/ops", body)
            acked = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"a probe write answered {status}: {data[:200]!r}")
            seen = None
            while time.perf_counter() - acked < LAG_TIMEOUT_S:
                status, data = readers[b].request("GET", f"/v1/entities/{entity}")
                polls += 1
                if status == 200 and json.loads(data)["fields"].get("build", {}).get(
                        "value") == i:
                    seen = time.perf_counter()
                    break
                time.sleep(POLL_MS / 1000)
            if seen is None:
                lost += 1
            else:
                lags.append(1000 * (seen - acked))
            pause = interval_s - (time.perf_counter() - acked)
            if pause > 0:
                time.sleep(pause)
    finally:
        for c in clients + readers:
            c.close()
    return lag_summary(lags, lost, polls)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def lag_summary(lags: list[float], lost: int, polls: int) -> dict:
    s = sorted(lags)
    return {"probes": len(s) + lost, "lost": lost,
            "p50_ms": round(percentile(s, 50), 1) if s else None,
            "p90_ms": round(percentile(s, 90), 1) if s else None,
            "p99_ms": round(percentile(s, 99), 1) if s else None,
            "max_ms": round(s[-1], 1) if s else None,
            "mean_ms": round(statistics.mean(s), 1) if s else None,
            "polls_per_probe": round(polls / max(1, len(s) + lost), 1), "lags_ms":
            [round(x, 2) for x in lags]}


# ---------------------------------------------------------------------------------------------
# Reporting


fmt = hi.fmt
check = hi.check


def summarise_cluster(runs: list[dict], n: int, noid: bool = False) -> dict:
    ops = sum(r["ops"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    catch = [r["catch_up_s"] for r in runs]
    # CPU per op over every op the runs appended (those in flight at wrk's end included)
    appended = sum(r["rows"] for r in runs)
    converged_secs = sum(r["window_s"] for r in runs)
    daemon = {role: sum(r["daemon_cpu_s"][role] for r in runs)
              for role in runs[0]["daemon_cpu_s"]}
    pg_b = sum(r["pg_cpu_s"]["backends"] for r in runs)
    pg_s = sum(r["pg_cpu_s"]["shared"] for r in runs)
    us = lambda s: round(1e6 * s / appended, 2) if appended else None  # noqa: E731
    commits = sum(r["pg_commits"] for r in runs)
    return {
        "daemons": n, "op_ids": "daemon" if noid else "client", "ops": ops,
        "seconds": round(secs, 2),
        "ops_per_s": round(ops / secs, 1) if secs else None,
        "appended": appended,
        "converged_ops_per_s": round(appended / converged_secs, 1) if converged_secs else None,
        "catch_up_s": catch,
        "daemon_us_per_op": us(sum(daemon.values())),
        "daemon_us_per_op_by_role": {k: us(v) for k, v in daemon.items()},
        "pg_us_per_op": us(pg_b + pg_s),
        "pg_us_per_op_backends": us(pg_b), "pg_us_per_op_shared": us(pg_s),
        "client_us_per_op": us(sum(r["client_cpu_s"] for r in runs)),
        "rows_per_pg_commit": round(appended / commits, 1) if commits else None,
        "other_cores": round(statistics.mean(r["other_cores"] for r in runs), 2),
        "errors": sum(r["errors"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "runs": runs,
    }


def summarise_bound(runs: list[dict], method: str, k: int) -> dict:
    rows = sum(r["rows"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    pg = sum(r["pg_cpu_s"]["backends"] + r["pg_cpu_s"]["shared"] for r in runs)
    us = lambda s: round(1e6 * s / rows, 2) if rows else None  # noqa: E731
    return {"method": method, "connections": k, "rows": rows, "seconds": round(secs, 2),
            "rows_per_s": round(rows / secs, 1) if secs else None,
            "pg_us_per_row": us(pg),
            "pg_us_per_row_backends": us(sum(r["pg_cpu_s"]["backends"] for r in runs)),
            "client_us_per_row": us(sum(r["client_cpu_s"] for r in runs)),
            "other_cores": round(statistics.mean(r["other_cores"] for r in runs), 2),
            "runs": runs}


def summarise_single(runs: list[dict], name: str) -> dict:
    reqs = sum(r["requests"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    out = {"server": name, "requests": reqs, "seconds": round(secs, 2),
           "ops_per_s": round(reqs / secs, 1) if secs else None,
           "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
           "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
           "errors": sum(r["errors"] for r in runs),
           "server_us_per_op": round(1e6 * sum(r["server_cpu_s"] for r in runs) / reqs, 1)
           if reqs else None,
           "other_cores": round(statistics.mean(r["other_cores"] for r in runs), 2),
           "runs": runs}
    roles = {}
    for r in runs:
        for k, v in r["server_cpu_by_role_s"].items():
            roles[k] = roles.get(k, 0.0) + v
    out["server_us_per_op_by_role"] = {k: round(1e6 * v / reqs, 1) for k, v in roles.items()} \
        if reqs else None
    if "pg_cpu_s" in runs[0]:
        out["pg_us_per_op"] = round(1e6 * sum(r["pg_cpu_s"] for r in runs) / reqs, 1)
    return out


def _nodes(text: str) -> list[int]:
    try:
        nodes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"daemon counts must be numbers like 1,2,3: "
                                         f"{text!r}") from None
    if not nodes or nodes[0] < 1 or nodes[-1] > 8:
        raise argparse.ArgumentTypeError("daemon counts must be 1 to 8")
    return nodes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures and targets go to bench/results/cluster.json.")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 2 s runs, a short lag test (default: 2 rounds of 6 s)")
    parser.add_argument("--duration", type=int, default=None,
                        help="seconds per run in (1), (1b) and (2) (default 6; --quick 2)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 2; --quick 1)")
    parser.add_argument("--nodes", type=_nodes, default=[1, 2, 3],
                        help="daemon counts measured in (1), comma-separated (default 1,2,3)")
    parser.add_argument("--connections", type=int, default=32,
                        help="client connections in (1), in all, split among the daemons "
                             "(default 32)")
    parser.add_argument("--single-connections", type=int, default=32,
                        help="wrk connections in (2) (default 32)")
    parser.add_argument("--wrk-threads", type=int, default=2,
                        help="wrk threads in (2) (default 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers per daemon (default 2, the daemon's default)")
    parser.add_argument("--threads", type=int, default=8,
                        help="slow-work threads per worker (default 8, the daemon's default)")
    parser.add_argument("--lag-seconds", type=float, default=None,
                        help="(3) under load, seconds (default 25; --quick 6)")
    parser.add_argument("--lag-idle-seconds", type=float, default=None,
                        help="(3) with no load, seconds (default 5; --quick 2)")
    parser.add_argument("--lag-load", type=float, default=0.5,
                        help="(3) background load, a fraction of the capacity the cluster "
                             "reached in (1) (default 0.5)")
    parser.add_argument("--lag-interval-ms", type=float, default=100,
                        help="(3) time between probes (default 100)")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="before each run, wait up to this many seconds for other "
                             "processes to go quiet (default 1; --quick 0: don't)")
    parser.add_argument("--only", default="ingest,single,lag",
                        help="parts to run: ingest (with its bound), single, lag "
                             "(default all; lag needs ingest)")
    parser.add_argument("--etcd", default=hi.ETCD,
                        help=f"the etcd binary for (2) (default {hi.ETCD}; skipped when "
                             "missing)")
    hi.add_run_options(parser, RESULTS)
    args = parser.parse_args(argv)
    hi.settle_run_timing(parser, args, duration=(2, 6), rounds=(1, 2), quiet_wait=(0, 1))
    q = args.quick
    if args.lag_seconds is None:
        args.lag_seconds = 6 if q else 25
    if args.lag_idle_seconds is None:
        args.lag_idle_seconds = 2 if q else 5
    only = set(args.only.replace(" ", "").split(","))
    unknown = only - {"ingest", "single", "lag"}
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))} "
                     "(ingest, single, lag)")
    if "lag" in only and "ingest" not in only:
        parser.error("--only lag needs ingest: the lag's load is a share of the capacity "
                     "measured there")
    if args.connections < max(args.nodes) or args.single_connections < args.wrk_threads:
        parser.error("--connections must give every daemon one, and --single-connections "
                     "must not be below --wrk-threads")
    if not 0 < args.lag_load <= 1:
        parser.error("--lag-load must be above 0 and at most 1")
    if not 1 <= args.wrk_threads <= 9:
        parser.error("--wrk-threads must be 1 to 9")
    hi.daemon_options(workers=args.workers, threads=args.threads)
    if not os.path.exists(hi.WRK):
        parser.error(f"wrk is not installed ({hi.WRK}): apt-get install wrk")
    try:
        pgcluster.server_binary("initdb")
    except RuntimeError as exc:
        parser.error(str(exc))
    have_etcd = os.path.isfile(args.etcd) and os.access(args.etcd, os.X_OK)

    signal.signal(signal.SIGTERM, hi.sigterm)
    print(f"Conflux cluster benchmark: Python {platform.python_version()}, {os.cpu_count()} "
          f"CPUs, {hi.wrk_version()}, etcd {hi.etcd_version(args.etcd) if have_etcd else 'MISSING'}"
          f", {'quick' if q else 'full'} run")
    print(f"daemons: gunicorn {args.workers} workers x {args.threads} threads each; (1) "
          f"{args.connections} client connections in all; (2) wrk -t{args.wrk_threads} "
          f"-c{args.single_connections}; {args.rounds} round(s) of {args.duration} s per run")
    if "single" in only and not have_etcd:
        print(f"NOTE: {args.etcd} is missing (Debian: apt-get install etcd-server): etcd is "
              "skipped in (2).")
    print(flush=True)

    t_start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="conflux-cluster-bench-", dir=args.tmpdir)
    ingest = hi._load_ingest()
    api_key = secrets.token_urlsafe(32)
    servers, log_tails = {}, {}
    out = {"benchmark": "cluster", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "commit": ingest._git_commit(), "python": platform.python_version(),
           "platform": platform.platform(), "cpus": os.cpu_count(),
           "wrk": hi.wrk_version(), "etcd": hi.etcd_version(args.etcd) if have_etcd else None}
    clusters, bound_dbs = {}, {}
    ingest_res, bound_res, single_res, lag_res, verify = [], [], [], {}, {}
    try:
        with contextlib.ExitStack() as stack:
            bodies = make_bodies(ingest, args.seed, workdir,
                                 16 if q else N_BATCH_BODIES)
            print("  starting PostgreSQL ...", flush=True)
            pg = pgcluster.Cluster()
            stack.callback(pg.stop)
            pg.start()
            with open(os.path.join(pg.data, "postmaster.pid")) as fh:
                postmaster = int(fh.readline())
            settings = dict(pg_query(pg.dsn(), "SELECT name, setting FROM pg_settings WHERE "
                                     "name = ANY(%s)", (["server_version", "fsync",
                                                         "synchronous_commit", "shared_buffers",
                                                         "wal_sync_method", "max_wal_size",
                                                         "wal_level", "max_connections"],)))
            out["postgresql"] = settings
            print(f"  PostgreSQL {settings.get('server_version')} (fsync "
                  f"{settings.get('fsync')}, synchronous_commit "
                  f"{settings.get('synchronous_commit')})", flush=True)

            # -- servers -----------------------------------------------------------------
            makers = {}
            nodes = args.nodes if {"ingest", "single"} & only else []
            if "single" in only and 1 not in nodes:
                nodes = [1] + nodes
            for n in nodes:
                dsn = pg.new_database()
                db = dsn.rsplit("dbname=", 1)[1]
                url = f"postgresql://conflux@127.0.0.1:{pg.port}/{db}"
                names = []
                for i in range(n):
                    name = f"c{n}n{i + 1}"
                    project = hi.make_project(os.path.join(workdir, name), api_key)
                    with open(os.path.join(project, ".conflux", "config.toml"), "a") as fh:
                        fh.write(f'\n[store]\nurl = "{url}"\n')
                    makers[name] = (lambda p=project, nm=name:  # noqa: E731
                                    hi.conflux_server(nm, p, args, workdir))
                    names.append(name)
                clusters[n] = (db, dsn, names)
            if "single" in only:
                project = hi.make_project(os.path.join(workdir, "lmdb"), api_key)
                makers["lmdb"] = lambda p=project: hi.conflux_server("lmdb", p, args, workdir)
                if have_etcd:
                    makers["etcd"] = lambda: hi.etcd_server(workdir, args.etcd)
            print(f"  starting {len(makers)} servers ...", flush=True)
            servers.update(start_all(makers, stack))
            clusters = {n: Cluster(n, db, dsn, [servers[x] for x in names])
                        for n, (db, dsn, names) in clusters.items()}
            if "ingest" in only:
                for k in args.nodes:
                    for method in ("copy", "insert"):
                        dsn = pg.new_database()
                        with SharedLog(dsn, "bound") as log:
                            log.create()
                        bound_dbs[(method, k)] = (dsn.rsplit("dbname=", 1)[1], dsn)
            daemons = {name: s for name, s in servers.items() if name != "etcd"}
            meter = CpuMeter(postmaster, servers, "conflux")
            cores = {}
            for name, s in daemons.items():
                status, _, data = hi.http("GET", s.url + "/v1/health")
                cores[name] = json.loads(data).get("core")
            if set(cores.values()) != {"c"}:
                print(f"WARNING: daemons run cores {cores}, not only the compiled one: these "
                      "are not Conflux's real figures.", flush=True)
            out["daemon_cores"] = cores

            # -- sanity and warm-up ------------------------------------------------------
            print("  warming up ...", flush=True)
            warm = argparse.Namespace(**{**vars(args), "duration": 1 if q else 2})
            if "ingest" in only:
                for n, cl in clusters.items():
                    if n in args.nodes:
                        r = run_cluster(cl, meter, warm, bodies, api_key)
                        if r["errors"] or r["catch_up_s"] is None:
                            raise RuntimeError(f"{cl.name}: warm-up failed: {r}")
            if "single" in only:
                for name in ["c1n1", "lmdb"] + (["etcd"] if have_etcd else []):
                    r = run_single(name, servers[name], meter, warm, bodies, api_key,
                                   workdir, None)
                    if r["errors"]:
                        raise RuntimeError(f"{name}: warm-up answered {r['errors']} errors")

            # -- the rounds: (1), (1b) and (2) interleaved --------------------------------
            jobs = []
            if "ingest" in only:
                if 1 in args.nodes:
                    jobs.append(("noid", 1))
                for n in args.nodes:
                    jobs.append(("cluster", n))
                    jobs.append(("copy", n))
                    jobs.append(("insert", n))
            if "single" in only:
                jobs += [("single", "c1n1"), ("single", "lmdb")]
                if have_etcd:
                    jobs.append(("single", "etcd"))
            runs = {job: [] for job in jobs}
            for rnd in range(args.rounds):
                order = jobs if rnd % 2 == 0 else jobs[::-1]
                for job in order:
                    kind, what = job
                    quiet = hi.wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
                    if kind in ("cluster", "noid"):
                        r = run_cluster(clusters[what], meter, args, bodies, api_key,
                                        "batch" if kind == "cluster" else "batch_noid")
                        label = f"{what} daemon(s)" if kind == "cluster" else \
                            f"{what} daemon, no op ids"
                        line = (f"{label}: {r['ops'] / r['seconds']:>9,.0f} ops/s, "
                                f"caught up {r['catch_up_s']} s, daemons "
                                f"{1e6 * sum(r['daemon_cpu_s'].values()) / max(1, r['rows']):.1f}"
                                f" us/op, PostgreSQL "
                                f"{1e6 * sum(r['pg_cpu_s'].values()) / max(1, r['rows']):.1f} "
                                f"us/op, {r['rows'] / max(1, r['pg_commits']):,.0f} "
                                f"rows/commit")
                    elif kind in ("copy", "insert"):
                        db, dsn = bound_dbs[(kind, what)]
                        r = run_bound(kind, what, db, dsn, meter, args, bodies)
                        line = (f"bound {kind} x{what}: {r['rows'] / r['seconds']:>9,.0f} "
                                f"rows/s, PostgreSQL "
                                f"{1e6 * sum(r['pg_cpu_s'].values()) / max(1, r['rows']):.1f} "
                                f"us/row, client "
                                f"{1e6 * r['client_cpu_s'] / max(1, r['rows']):.1f} us/row")
                    else:
                        db = clusters[1].db if what == "c1n1" else None
                        r = run_single(what, servers[what], meter, args, bodies, api_key,
                                       workdir, db)
                        line = (f"single {what}: {r['requests'] / r['seconds']:>9,.0f} ops/s, "
                                f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
                    r["round"] = rnd + 1
                    r["quiet_wait"] = quiet
                    runs[job].append(r)
                    other = r.get("other_cores")
                    print(f"  round {rnd + 1}/{args.rounds} {line}"
                          + (f", other {other:.2f}" if other is not None else "")
                          + (f"  {r['errors']} ERRORS" if r.get("errors") else ""),
                          flush=True)
            for job, rs in runs.items():
                kind, what = job
                if kind in ("cluster", "noid"):
                    ingest_res.append(summarise_cluster(rs, what, kind == "noid"))
                elif kind in ("copy", "insert"):
                    bound_res.append(summarise_bound(rs, kind, what))
                else:
                    single_res.append(summarise_single(rs, what))

            # -- (3) replication lag -----------------------------------------------------
            if "lag" in only:
                n = max(args.nodes)
                cl = clusters[n]
                # the capacity every node keeps up with: what the cluster took, counted until
                # every node had it (its replicators fall behind above that)
                capacity = next(r["converged_ops_per_s"] for r in ingest_res
                                if r["daemons"] == n and r["op_ids"] == "client")
                rate = args.lag_load * capacity
                print(f"  (3) lag on the {n}-daemon cluster: idle {args.lag_idle_seconds:.0f} "
                      f"s, then {args.lag_seconds:.0f} s under {rate:,.0f} ops/s "
                      f"({args.lag_load:.0%} of {capacity:,.0f}) ...", flush=True)
                if n < 2:
                    raise RuntimeError("the lag needs at least 2 daemons (--nodes)")
                interval = args.lag_interval_ms / 1000
                idle = probe_lag(cl.servers, api_key, args.lag_idle_seconds, interval,
                                 run_id())
                loader = Loader(cl.servers, api_key, bodies["batch_bodies"], rate,
                                threads=2 * n)
                s0 = meter.snapshot()
                loader.start()
                try:
                    time.sleep(1.0)  # the load settles first
                    loaded = probe_lag(cl.servers, api_key, args.lag_seconds, interval,
                                       run_id())
                finally:
                    load = loader.finish()
                s1 = meter.snapshot()
                d = CpuMeter.delta(s0, s1)
                load["busy_cores"] = round(d["busy_cores"], 2)
                load["daemon_cores"] = round(summed(d["groups"], [f"{s.name}:" for s in
                                                                  cl.servers]) / d["wall_s"], 2)
                load["pg_cores"] = round((d["groups"].get(f"pg:{cl.db}", 0) +
                                          d["groups"].get("pg:shared", 0)) / d["wall_s"], 2)
                lag_res = {"daemons": n, "capacity_ops_per_s": capacity,
                           "target_load_ops_per_s": round(rate), "load": load,
                           "idle": idle, "loaded": loaded, "poll_ms": POLL_MS,
                           "probe_interval_ms": args.lag_interval_ms}
                total = log_rows(cl.dsn)
                if caught_up(cl.servers, api_key, total, CATCH_UP_S) is None:
                    raise RuntimeError("after (3) the nodes did not catch up")
                print(f"  (3) idle p50 {idle['p50_ms']} ms p99 {idle['p99_ms']} ms; loaded "
                      f"({load['ops_per_s']:,} ops/s sent) p50 {loaded['p50_ms']} ms p99 "
                      f"{loaded['p99_ms']} ms, {loaded['lost']} lost", flush=True)

            # -- nothing acknowledged is missing; every node the same --------------------
            for n, cl in clusters.items():
                total = log_rows(cl.dsn)
                catch = caught_up(cl.servers, api_key, total, CATCH_UP_S)
                # at least what wrk counted as answered in the measured runs
                answered = sum(r["ops"] for r in ingest_res if r["daemons"] == n)
                states = []
                for s in cl.servers:
                    status, _, data = hi.http("GET", s.url + "/v1/state?env=production",
                                              headers={"X-API-Key": api_key}, timeout=300)
                    states.append(data if status == 200 else None)
                verify[cl.name] = {"log_rows": total, "answered_ops": answered,
                                   "caught_up": catch is not None,
                                   "same_state": None not in states and len(set(states)) == 1}
    finally:
        log_tails = {name: s.log_tail(15) for name, s in servers.items()}
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    return report(args, out, ingest_res, bound_res, single_res, lag_res, verify, log_tails,
                  elapsed)


def report(args, out, ingest_res, bound_res, single_res, lag_res, verify, log_tails,
           elapsed) -> int:
    bound = {(b["method"], b["connections"]): b for b in bound_res}
    checks = []
    if ingest_res:
        print()
        print(f"{'(1) 1,000-op batches':<24} {'ops/s':>9} {'all nodes':>10} {'catch-up s':>10} "
              f"{'daemons us/op':>13} {'(workers/commits/replicator)':>28} {'PG us/op':>9} "
              f"{'rows/commit':>11} {'other':>5}")
        print("-" * 128)
        for r in ingest_res:
            roles = r["daemon_us_per_op_by_role"]
            catch = "/".join(f"{c:.1f}" if c is not None else "-" for c in r["catch_up_s"])
            label = (f"{r['daemons']} daemon(s)" if r["op_ids"] == "client" else
                     f"{r['daemons']} daemon, no op ids")
            print(f"{label:<24} {fmt(r['ops_per_s']):>9} "
                  f"{fmt(r['converged_ops_per_s']):>10} {catch:>10} "
                  f"{r['daemon_us_per_op']:>13.1f} "
                  f"{roles['workers']:>12.1f} /{roles['commits']:>5.1f} /"
                  f"{roles['replicator']:>6.1f} "
                  f"{r['pg_us_per_op']:>9.1f} {fmt(r['rows_per_pg_commit']):>11} "
                  f"{r['other_cores']:>5.2f}"
                  + (f"  {r['errors']} ERRORS" if r["errors"] else ""))
        print(f"{'(1b) bare psycopg':<24} {'rows/s':>9} {'':>10} {'':>10} {'client us/row':>13} "
              f"{'':>28} {'PG us/row':>9} {'rows/commit':>11}")
        for b in bound_res:
            print(f"{b['method'] + ' x' + str(b['connections']) + ' conn.':<24} "
                  f"{fmt(b['rows_per_s']):>9} {'':>10} {'':>10} "
                  f"{b['client_us_per_row']:>13.1f} {'':>28} {b['pg_us_per_row']:>9.1f} "
                  f"{BATCH:>11,} {b['other_cores']:>5.2f}")
        print("ops/s: acknowledged; all nodes: ops/s counting the time until every node had "
              "every op (catch-up s: that time after the last answer, per round); us/op: CPU "
              "(user + system) per op, over the run and its catch-up: the daemons' processes "
              "(every node's; by role: gunicorn workers, commit service, replicator), "
              "PostgreSQL's (the database's backends and the server's shared processes); "
              "other: CPUs kept busy by anything else (other people's work on this machine).")
        for r in ingest_res:
            n = r["daemons"]
            if r["op_ids"] != "client":
                continue
            for method in ("copy", "insert"):
                b = bound.get((method, n))
                if not b:
                    continue
                ratio = r["converged_ops_per_s"] / b["rows_per_s"]
                target = method == "copy"
                checks.append(check(
                    f"(1) {n} daemon(s) vs bare {method}, {n} conn.", f"{ratio:.2f}x",
                    f">= {TARGET_INGEST_OVER_BOUND}x" if target else "info",
                    ratio >= TARGET_INGEST_OVER_BOUND if target else None,
                    f"{fmt(r['converged_ops_per_s'])} (acknowledged "
                    f"{r['ops_per_s'] / b['rows_per_s']:.2f}x) vs {fmt(b['rows_per_s'])} "
                    f"rows/s; PostgreSQL {r['pg_us_per_op']:.1f} vs {b['pg_us_per_row']:.1f} "
                    f"us per row"))
    if single_res:
        print()
        print(f"{'(2) one op per request':<34} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'server us/op':>12} {'PG us/op':>9} {'other':>5}  daemon by role (us/op)")
        print("-" * 86)
        labels = {"c1n1": "daemon on PostgreSQL", "lmdb": "daemon on LMDB alone (ref)",
                  "etcd": "etcd single-key put"}
        for s in single_res:
            print(f"{labels.get(s['server'], s['server']):<34} {fmt(s['ops_per_s']):>9} "
                  f"{s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {fmt(s['server_us_per_op']):>12} "
                  f"{fmt(s.get('pg_us_per_op'), 1):>9} {s['other_cores']:>5.2f}  "
                  + (", ".join(f"{k} {v:,.0f}" for k, v in
                               sorted(s["server_us_per_op_by_role"].items())
                               if s["server"] != "etcd" and v >= 0.5))
                  + (f"  {s['errors']} ERRORS" if s["errors"] else ""))
        by = {s["server"]: s for s in single_res}
        if "c1n1" in by and "etcd" in by:
            ratio = by["c1n1"]["ops_per_s"] / by["etcd"]["ops_per_s"]
            checks.append(check("(2) daemon on PostgreSQL vs etcd, 1 op", f"{ratio:.2f}x",
                                "report", None, f"{fmt(by['c1n1']['ops_per_s'])} vs "
                                f"{fmt(by['etcd']['ops_per_s'])} ops/s"))
        if "c1n1" in by and "lmdb" in by:
            ratio = by["c1n1"]["ops_per_s"] / by["lmdb"]["ops_per_s"]
            checks.append(check("(2) daemon on PostgreSQL vs on LMDB", f"{ratio:.2f}x",
                                "info", None))
    if lag_res:
        print()
        load = lag_res["load"]
        print(f"(3) replication lag, {lag_res['daemons']} daemons, A's acknowledgement to B "
              f"serving the value (poll every {POLL_MS} ms):")
        for what, r in (("idle", lag_res["idle"]), ("under load", lag_res["loaded"])):
            print(f"    {what:<11} {r['probes']:>4} probes: p50 {r['p50_ms']} ms, p90 "
                  f"{r['p90_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, "
                  f"{r['lost']} lost, {r['polls_per_probe']} reads per probe")
        print(f"    load: {load['ops_per_s']:,} ops/s sent (target "
              f"{lag_res['target_load_ops_per_s']:,}: {args.lag_load:.0%} of "
              f"{fmt(lag_res['capacity_ops_per_s'])}), machine {load['busy_cores']} CPUs busy "
              f"(daemons {load['daemon_cores']}, PostgreSQL {load['pg_cores']}), requests "
              f"late p50 {load['late_p50_ms']} ms, p99 {load['late_p99_ms']} ms")
        p99 = lag_res["loaded"]["p99_ms"]
        ok = p99 is not None and p99 <= TARGET_LAG_P99_MS and not lag_res["loaded"]["lost"]
        checks.append(check("(3) lag p99 under load", f"{p99} ms",
                            f"<= {TARGET_LAG_P99_MS:.0f} ms", ok,
                            f"p50 {lag_res['loaded']['p50_ms']} ms at "
                            f"{load['ops_per_s']:,} ops/s"))
    for name, v in verify.items():
        checks.append(check(f"{name}: every node has every op, same state",
                            f"{v['log_rows']:,} ops", f">= {v['answered_ops']:,}",
                            v["caught_up"] and v["same_state"]
                            and v["log_rows"] >= v["answered_ops"]))
    print()
    print(f"{'check':<46} {'figure':>10} {'target':>10}  status")
    print("-" * 100)
    for ch in checks:
        print(f"{ch['check']:<46} {ch['figure']:>10} {ch['target']:>10}  {ch['status']}"
              + (f"  ({ch['note']})" if ch["note"] else ""))
    if args.keep_logs:
        for name, tail in log_tails.items():
            print(f"\n--- {name} log (tail) ---\n{tail}")
    print()
    print(f"wall time {elapsed:,.0f} s")
    out.update({
        "settings": {"quick": args.quick, "duration_s": args.duration, "rounds": args.rounds,
                     "nodes": args.nodes, "connections": args.connections,
                     "single_connections": args.single_connections,
                     "wrk_threads": args.wrk_threads, "workers": args.workers,
                     "threads": args.threads, "batch": BATCH, "seed": args.seed,
                     "lag_seconds": args.lag_seconds, "lag_idle_seconds": args.lag_idle_seconds,
                     "lag_load": args.lag_load, "quiet_wait": args.quiet_wait},
        "ingest": ingest_res, "bound": bound_res, "single": single_res, "lag": lag_res,
        "verify": verify, "checks": checks, "wall_seconds": round(elapsed, 1),
    })
    hi.write_results(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
