"""HTTP ingestion benchmark: the daemon on its real server stack, against a bare endpoint and etcd.

The daemon's stack: gunicorn as the process manager, its workers conflux's uvicorn worker
(``conflux.daemon.worker.Worker``: uvicorn with uvloop and httptools, one event loop per
process) serving a ``falcon.asgi.App`` whose responders are coroutines.

What it measures, in one run, on loopback (127.0.0.1 only), with wrk as the load generator in
its own process (same 2 wrk threads and the same connection counts for every server):

(a) the bare baseline: a ``falcon.asgi.App`` with async resources (bench/http_bare_app.py)
    under exactly the daemon's gunicorn settings (``conflux.daemon.daemon_options``: its
    worker class, workers, timeouts, keep-alive, connection limit and per-worker garbage
    collector settings; ``--threads`` slow-work threads per worker) that reads and parses
    the body as the daemon does (``read_bytes`` then ``parse_body``) and answers 202
    without authenticating, validating or storing anything: the floor of the stack.
(b) ``POST /v1/ops`` on ``conflux daemon``, one op per request, durable (a request is
    answered once the daemon's commit service has made the synced group commit holding its
    op), authenticated with an API key in ``X-API-Key`` as a real client would be.
(c) the same daemon (a second project), 1,000 ops per request, JSON and msgpack (the msgpack
    client also asks for msgpack answers); reported in ops/s.
(d) etcd (Debian's etcd-server, ``/usr/bin/etcd`` or ``--etcd``) on loopback with a
    temporary data dir, single-key puts through its HTTP/JSON gRPC gateway (``POST
    /v3/kv/put``, base64 key and value), durable (etcd fsyncs its WAL before answering).
    Skipped, with a note, when the binary is missing.
(ref) in this process, no HTTP: the cost of parsing the (c) bodies (JSON, msgpack) and the
    engine's own apply of the same 1,000-op batches on a fresh store (synced), split into
    validation and the commit (both done by the daemon's commit service), plus building and
    serialising the acknowledgements. This is the ceiling (c) works under.

The ops are bench/ingest.py's workload (5,000 ``svc`` entities x 20 fields, uniform, the
bench schema): (a), (b) and (d) send the same stream of single-field writes, one per request,
each wrk thread cycling through 50,000 of them from its own offset, so requests touch
different keys; (d) puts ``<entity>/<field>`` = the JSON value. (c) cycles through 64
pre-built 1,000-op bodies read from a file by the Lua script.

Why the comparison is fair:

* Every server runs at once, idle when not measured, and the measurements are interleaved:
  each round runs every (scenario, connections) pair once for ``--duration`` seconds, the
  order reversed every other round, so a noisy neighbour hits all sides alike. Figures are
  totals over the rounds (requests / seconds); p50/p99 are the medians of the rounds'.
* (a) and (b) receive byte-identical requests (API key header included, ignored by (a)).
* wrk's own cost is in every figure alike: each thread formats a request once and reuses it
  when its cycle comes round, and its init stays cheap (wrk starts a thread's load while the
  next one is still in init(), then starts its clock: a slow init inflates the rate).
* The machine is shared: before each run the script waits (``--quiet-wait``) until other
  processes keep fewer than 0.3 CPUs busy, and reports per run the CPU time of the server's
  processes and of wrk (from /proc, per request) and the CPUs anything else kept busy.
* For the daemons, the LMDB transaction counter gives the synced commits in each run, so
  the table shows how many requests a group commit served.
* Every load is bounded: ``--duration`` seconds per run, and at most a fixed number of
  requests per wrk thread (far above what these servers can do; a run that reaches it is
  flagged). Every server is started by this script and stopped by it (SIGTERM, then SIGKILL
  of its process group), on errors and interrupts too.
* After the run, the daemons' logs are checked to hold at least every op wrk counted as
  answered, and etcd's revision at least every put: nothing acknowledged is missing.

The targets of one-op writes (checked at the end, PASS or MISS each): (b) at least 1.2 x
etcd's req/s at 8 and at 64 connections, with a p99 at 64 connections no worse than etcd's;
(b) at least 0.8 x the bare endpoint's req/s at each connection count; at most 150 us of
server CPU per (b) request at each; (c) at least 150,000 ops/s at 64 connections, JSON and
msgpack, each more than 15 x etcd's ops/s; and nothing answered 2xx missing.

Run ``python bench/http_ingest.py`` (full: 3 rounds of 10 s runs, about 6 minutes) or
``--quick`` (1 round of 2 s runs, about 1 minute); ``--workers``/``--threads`` try other
settings (the daemon and the bare endpoint alike), ``--only`` a subset. The table goes to stdout;
figures, targets and settings go to ``bench/results/http_ingest.json``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

if importlib.util.find_spec("conflux") is None:  # an installed Conflux first; else this tree
    sys.path.insert(0, ROOT)


def _import_retrying(what, attempts=5):
    """The compiled core may be rebuilt by someone else while this runs: retry an import."""
    for i in range(attempts):
        try:
            return what()
        except ImportError:
            if i == attempts - 1:
                raise
            time.sleep(2)


import lmdb  # noqa: E402
import msgpack  # noqa: E402

_import_retrying(lambda: __import__("conflux.engine.engine"))
from conflux.actors import Actor  # noqa: E402
from conflux.auth import hash_key  # noqa: E402
from conflux.engine import Engine  # noqa: E402
from conflux.daemon import daemon_options  # noqa: E402
from conflux.kernel import TWINS  # noqa: E402

SCHEMA = os.path.join(HERE, "schema.toml")
BARE_APP = os.path.join(HERE, "http_bare_app.py")
RESULTS = os.path.join(HERE, "results", "http_ingest.json")
ETCD = "/usr/bin/etcd"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

BATCH = 1_000                     # ops per request in (c)
N_SINGLE = 50_000                 # distinct single-op bodies in (a), (b), (d)
N_BATCHES = 64                    # distinct 1,000-op bodies in (c)
MAX_SINGLE_RATE = 50_000          # requests/s no server here reaches: the per-run count cap
MAX_BATCH_RATE = 2_000            # 1,000-op requests/s (2M ops/s): the (c) count cap
WRK_TIMEOUT = "10s"               # a request slower than this counts as a wrk timeout error
START_DEADLINE_S = 60
QUIET_CORES = 0.3                 # "quiet": other processes keep fewer CPUs than this busy
STOP_GRACE_S = 45                 # the daemon's graceful_timeout is 30 s

CLIENT = Actor("bench-pipeline", "pipeline")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets of one-op writes: (b) against etcd and against the bare stack, the daemon's CPU per
# one-op request, (c)'s batches at TARGET_AT connections.
TARGET_B_OVER_D = 1.2
TARGET_B_OVER_A = 0.8
TARGET_B_CPU_US = 150
TARGET_AT = 64
TARGET_C_OPS = 150_000
TARGET_C_OVER_D = 15


def _load_ingest():
    """bench/ingest.py's workload generator (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("conflux_bench_ingest",
                                                  os.path.join(HERE, "ingest.py"))
    module = importlib.util.module_from_spec(spec)
    _import_retrying(lambda: spec.loader.exec_module(module))
    return module


# ---------------------------------------------------------------------------------------------
# Bodies


def write_bodies(path: str, bodies: list[bytes]) -> None:
    """Length-prefixed records (``<len>\\n<bytes>``): what the Lua script (and
    bench/cluster.py's bound writers) read."""
    with open(path, "wb") as fh:
        for body in bodies:
            fh.write(b"%d\n" % len(body))
            fh.write(body)


def write_body_files(workdir: str, files: dict[str, list[bytes]]) -> dict:
    """Each list of bodies to ``<workdir>/<name>.bodies``; their paths and mean sizes."""
    out = {"paths": {}, "mean_bytes": {}}
    for name, bodies in files.items():
        path = os.path.join(workdir, f"{name}.bodies")
        write_bodies(path, bodies)
        out["paths"][name] = path
        out["mean_bytes"][name] = round(sum(map(len, bodies)) / len(bodies))
    return out


def compact_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def etcd_put_body(op: dict) -> bytes:
    """etcd's ``/v3/kv/put`` body for an op: ``<entity>/<field>`` = the JSON value."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    value = op.get("value", op.get("elements"))
    return compact_json({"key": b64(f"{op['entity_id']}/{op['field']}".encode()),
                         "value": b64(compact_json(value))})


def make_bodies(ingest, seed: int, workdir: str) -> dict:
    """The request bodies of every scenario, written to files; returns their paths and the
    parsed (c) batches (for the in-process reference)."""
    singles, _ = ingest.Workload(seed).batch(N_SINGLE)
    wl = ingest.Workload(seed + 1)
    batches = [wl.batch(BATCH)[0] for _ in range(N_BATCHES)]
    files = {
        "single_json": [compact_json(op) for op in singles],
        "batch_json": [compact_json({"ops": ops}) for ops in batches],
        "batch_msgpack": [msgpack.packb({"ops": ops}, use_bin_type=True) for ops in batches],
        "etcd_put": [etcd_put_body(op) for op in singles],
    }
    return {"batches": batches, **write_body_files(workdir, files), **files}


LUA = r"""-- generated by bench/http_ingest.py: POST pre-built bodies, one per request, cycling
-- through the bodies file from a per-thread offset; at most CAP requests per thread.
-- Without a PLACEHOLDER each thread formats a body's request once and reuses it; with one,
-- every copy of it in the body is replaced per request by RUNID, the thread and a counter
-- (op ids unique to the request), so each request is formatted anew.
-- wrk runs each thread's init() while the threads before it already send load, and starts
-- its clock after the last one: init stays cheap, and the bodies are read on first use.
local BODIES = @BODIES@
local PATH = @PATH@
local CAP = @CAP@
local NTHREADS = @NTHREADS@
local HEADERS = @HEADERS@
local RUNID = @RUNID@
local PLACEHOLDER = @PLACEHOLDER@

local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local bodies, reqs, n, i
local sent = 0

local function load()
  local f = assert(io.open(BODIES, "rb"))
  local data = f:read("*a")
  f:close()
  bodies, reqs = {}, {}
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    bodies[#bodies + 1] = data:sub(nl + 1, nl + len)
    pos = nl + 1 + len
  end
  n = #bodies
  i = math.floor((tid or 0) * n / NTHREADS)
end

function request()
  if bodies == nil then load() end
  sent = sent + 1
  if sent >= CAP then wrk.thread:stop() end
  i = i % n + 1
  if PLACEHOLDER then
    local token = string.format("%s%d%07d", RUNID, tid or 0, sent)
    local body = bodies[i]:gsub(PLACEHOLDER, token)
    return wrk.format("POST", PATH, HEADERS, body)
  end
  local r = reqs[i]
  if r == nil then
    local headers = {}
    for k, v in pairs(HEADERS) do headers[k] = v end
    r = wrk.format("POST", PATH, headers, bodies[i])
    reqs[i] = r
  end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # ASCII paths and header values: a JSON string is a Lua string


def write_lua(path: str, bodies: str, url_path: str, cap: int, threads: int,
              headers: dict, run_id: str | None = None, placeholder: str | None = None) -> None:
    """The script for one wrk run; with ``placeholder``, it is replaced in every request by
    ``run_id`` and a per-thread counter."""
    table = "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(v)}"
                            for k, v in headers.items()) + "}"
    text = (LUA.replace("@BODIES@", lua_string(bodies)).replace("@PATH@", lua_string(url_path))
            .replace("@CAP@", str(cap)).replace("@NTHREADS@", str(threads))
            .replace("@HEADERS@", table)
            .replace("@RUNID@", "nil" if run_id is None else lua_string(run_id))
            .replace("@PLACEHOLDER@", "nil" if placeholder is None else lua_string(placeholder)))
    with open(path, "w") as fh:
        fh.write(text)


# ---------------------------------------------------------------------------------------------
# Servers: processes this script starts, each in its own process group, always stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


class Server:
    """A server process of this run: started in a new session (its own process group, so its
    workers are found and stopped with it), logging to a file, ready when ``health`` answers."""

    def __init__(self, name: str, cmd: list[str], url: str, health: str, workdir: str,
                 env=None):
        self.name, self.cmd, self.url, self.health = name, cmd, url, health
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.env = env
        self.proc = None
        self.store = None    # a Conflux store, opened read-only to count its commits

    def commits(self) -> int | None:
        """LMDB's last transaction id: the number of write commits so far."""
        return None if self.store is None else self.store.info()["last_txnid"]

    def start(self) -> Server:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                status, _, _ = http("GET", self.url + self.health, timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start (exit {self.proc.poll()}):\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n=30) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group's id

    def cpu_seconds(self) -> tuple[float, float, int]:
        """User and system CPU seconds of every live process of this server's group, and the
        voluntary context switches of all their threads (a thread blocking: on a lock, the
        GIL, a queue, a socket or an fsync)."""
        user = system = switches = 0
        for pid, (_, pgrp, _, utime, stime) in processes().items():
            if pgrp == self.pgid:
                user += utime
                system += stime
                switches += _voluntary_switches(pid)
        return user / CLK_TCK, system / CLK_TCK, switches

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                print(f"  {self.name}: no exit {STOP_GRACE_S} s after SIGTERM; killing it",
                      flush=True)
        deadline = time.monotonic() + 5
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)  # workers leave after their master
        if self._group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def processes() -> dict[int, tuple]:
    """``{pid: (ppid, process group, comm, user ticks, system ticks)}`` of every live
    process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        rest = data[data.rindex(")") + 2:].split()
        out[int(entry)] = (int(rest[1]), int(rest[2]), comm, int(rest[11]), int(rest[12]))
    return out


def _voluntary_switches(pid: int) -> int:
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def start_retrying(make, attempts=3):
    """Start a server; a worker that fails to boot (e.g. the compiled core being rebuilt under
    it) gets another try."""
    for i in range(attempts):
        server = make()
        try:
            return server.start()
        except Exception as exc:
            server.stop()
            if i == attempts - 1:
                raise
            print(f"  {server.name} failed to start ({str(exc).splitlines()[0]}); retrying",
                  flush=True)
            time.sleep(3)


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    source = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["conflux"].__file__)))
    env["PYTHONPATH"] = os.pathsep.join([source] + [p for p in
                                                    env.get("PYTHONPATH", "").split(os.pathsep)
                                                    if p and p != source])
    return env


def make_project(path: str, api_key: str) -> str:
    """A Conflux project with the bench schema and one API key (no rbac.toml: every
    authenticated actor may write)."""
    Engine.init(path, SCHEMA).close()
    with open(os.path.join(path, ".conflux", "api-keys.toml"), "w") as fh:
        fh.write(f'[[keys]]\nkey_hash = "{hash_key(api_key)}"\nactor_id = "{CLIENT.id}"\n'
                 f'actor_class = "{CLIENT.cls}"\ndisplay_name = "bench/http_ingest.py"\n')
    return path


def conflux_server(name, project, args, workdir) -> Server:
    port = free_port()
    cmd = [sys.executable, "-c",
           "import sys; from conflux.cli import main; sys.exit(main(sys.argv[1:]))",
           "--dir", project, "daemon", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(args.workers), "--threads", str(args.threads)]
    return Server(name, cmd, f"http://127.0.0.1:{port}", "/v1/health", workdir, child_env())


def bare_server(args, workdir) -> Server:
    port = free_port()
    cmd = [sys.executable, BARE_APP, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers), "--threads", str(args.threads)]
    return Server("bare", cmd, f"http://127.0.0.1:{port}", "/v1/health", workdir, child_env())


def etcd_server(workdir, etcd: str) -> Server:
    client, peer = free_port(), free_port()
    data = os.path.join(workdir, "etcd-data")
    cmd = [etcd, "--name", "bench", "--data-dir", data,
           "--listen-client-urls", f"http://127.0.0.1:{client}",
           "--advertise-client-urls", f"http://127.0.0.1:{client}",
           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
           "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"]
    return Server("etcd", cmd, f"http://127.0.0.1:{client}", "/health", workdir, child_env())


def etcd_version(etcd: str) -> str | None:
    try:
        out = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def wrk_version() -> str:
    out = subprocess.run([WRK, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].split(" [")[0]


# ---------------------------------------------------------------------------------------------
# Scenarios and the load


class Scenario:
    def __init__(self, key, label, server, bodies, ops_per_request, headers, ok_status,
                 path="/v1/ops"):
        self.key, self.label, self.server = key, label, server
        self.bodies, self.ops, self.headers = bodies, ops_per_request, headers
        self.ok_status, self.path = ok_status, path


def sanity(sc: Scenario, url: str, body: bytes) -> None:
    """One request with Python before the load: the server answers what it should."""
    status, ctype, data = http("POST", url + sc.path, body, sc.headers, timeout=30)
    if status != sc.ok_status:
        raise RuntimeError(f"{sc.label}: sanity request answered {status}: {data[:300]!r}")
    answer = msgpack.unpackb(data) if "msgpack" in ctype else json.loads(data)
    if sc.server.startswith("conflux"):
        acks = answer["ops"] if sc.ops > 1 else [answer]
        if len(acks) != sc.ops or not all("seq" in a and "op_id" in a for a in acks):
            raise RuntimeError(f"{sc.label}: the answer does not acknowledge {sc.ops} ops")
    elif sc.server == "etcd" and "revision" not in answer.get("header", {}):
        raise RuntimeError(f"{sc.label}: etcd's answer has no revision: {answer}")


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu() -> list[int]:
    """The machine's CPU time so far, by kind (/proc/stat, in clock ticks, all CPUs)."""
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:1 + len(CPU_FIELDS)]]


def busy_cores(ticks: list[int], seconds: float) -> float:
    """CPUs kept busy (not idle, not waiting for I/O) over ``seconds``, from tick deltas."""
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK / seconds


def wait_quiet(max_wait: float, threshold: float = QUIET_CORES) -> dict:
    """The machine is shared: wait (at most ``max_wait`` s) until other processes use less
    than ``threshold`` CPUs, so a run does not start in the middle of somebody else's load."""
    t0 = time.monotonic()
    load = None
    while True:
        m0 = machine_cpu()
        time.sleep(0.5)
        load = busy_cores([b - a for a, b in zip(m0, machine_cpu())], 0.5)
        if load < threshold or time.monotonic() - t0 >= max_wait:
            return {"waited_s": round(time.monotonic() - t0, 1), "load_cores": round(load, 2)}


def wrk_command(script: str, url: str, threads: int, conns: int, duration: int) -> list[str]:
    return [WRK, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
            "--timeout", WRK_TIMEOUT, "-s", script, url]


def wrk_figures(cmd: list[str], returncode: int, stdout: str, stderr: str) -> dict:
    """What the script's done() printed (the WRKJSON line), with wrk's errors summed."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({returncode}): {' '.join(cmd)}\n{stdout}\n{stderr}")
    r = json.loads(line[len("WRKJSON "):])
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return r


def run_wrk(script: str, url: str, threads: int, conns: int, duration: int,
            server: Server) -> dict:
    cmd = wrk_command(script, url, threads, conns, duration)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv0, m0, c0 = server.cpu_seconds(), machine_cpu(), server.commits()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    wall = time.perf_counter() - t0
    srv1, m1, c1 = server.cpu_seconds(), machine_cpu(), server.commits()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = wrk_figures(cmd, out.returncode, out.stdout, out.stderr)
    r["wall_s"] = round(wall, 3)
    r["server_cpu_s"] = round(srv1[0] + srv1[1] - srv0[0] - srv0[1], 3)
    r["server_sys_s"] = round(srv1[1] - srv0[1], 3)
    r["server_switches"] = srv1[2] - srv0[2]
    r["wrk_cpu_s"] = round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 3)
    ticks = [b - a for a, b in zip(m0, m1)]
    total = max(1, sum(ticks))
    r["machine_cpu"] = {k: round(t / total, 3) for k, t in zip(CPU_FIELDS, ticks)}
    r["machine_busy"] = round(1 - (ticks[3] + ticks[4]) / total, 3)
    # CPUs busy with anything but this server and wrk: other people's work on a shared
    # machine, plus kernel threads (block I/O, loopback softirqs) this benchmark causes
    r["other_cores"] = round(busy_cores(ticks, wall) - (r["server_cpu_s"] + r["wrk_cpu_s"]) /
                             wall, 2)
    r["commits"] = None if c0 is None else c1 - c0
    return r


def summarise(sc: Scenario, conns: int, runs: list[dict], cap_per_run: int) -> dict:
    reqs = sum(r["requests"] for r in runs)
    secs = sum(r["duration_us"] for r in runs) / 1e6
    rps = reqs / secs if secs else float("nan")
    return {
        "scenario": sc.key, "label": sc.label, "connections": conns,
        "ops_per_request": sc.ops, "requests": reqs, "seconds": round(secs, 3),
        "requests_per_s": round(rps, 1), "ops_per_s": round(rps * sc.ops, 1),
        "p50_ms": round(statistics.median(r["p50_us"] for r in runs) / 1000, 3),
        "p99_ms": round(statistics.median(r["p99_us"] for r in runs) / 1000, 3),
        "server_cpu_us_per_request": round(1e6 * sum(r["server_cpu_s"] for r in runs) / reqs, 1)
        if reqs else None,
        "wrk_cpu_us_per_request": round(1e6 * sum(r["wrk_cpu_s"] for r in runs) / reqs, 1)
        if reqs else None,
        "server_sys_us_per_request": round(1e6 * sum(r["server_sys_s"] for r in runs) / reqs,
                                           1) if reqs else None,
        "server_switches_per_request": round(sum(r["server_switches"] for r in runs) / reqs, 2)
        if reqs else None,
        "machine_busy": round(statistics.mean(r["machine_busy"] for r in runs), 3),
        "other_cores": round(statistics.mean(r["other_cores"] for r in runs), 2),
        "commits_per_s": round(sum(r["commits"] for r in runs) / secs, 1)
        if runs[0]["commits"] is not None and secs else None,
        "requests_per_commit": round(reqs / sum(r["commits"] for r in runs), 2)
        if runs[0]["commits"] is not None and sum(r["commits"] for r in runs) else None,
        "errors": sum(r["errors"] for r in runs),
        "capped": any(r["requests"] >= cap_per_run for r in runs),
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------
# The in-process reference: parse, validate, commit and answer the (c) batches without HTTP


def measure_reference(args, bodies: dict, workdir: str) -> dict:
    batches = bodies["batches"]
    n_ops = BATCH * len(batches)
    out = {}
    gc.collect()
    for name, parse in (("batch_json", json.loads),
                        ("batch_msgpack", lambda b: msgpack.unpackb(b, raw=False,
                                                                    strict_map_key=True))):
        data = bodies[name]
        reps = max(1, args.ref_batches // len(data))
        t0 = time.perf_counter()
        for _ in range(reps):
            for body in data:
                parse(body)
        out[f"parse_{name.split('_')[1]}_ops_per_s"] = round(reps * n_ops /
                                                             (time.perf_counter() - t0))
    path = tempfile.mkdtemp(prefix="conflux-http-ref-", dir=workdir)
    engine = Engine.init(path, SCHEMA, sync=True)
    try:
        core = engine.core
        out["engine_core"] = core.IMPLEMENTATION
        t_val = t_commit = t_commit_cpu = t_ack = t_json = t_mp = 0.0
        done = 0
        for i in range(args.ref_batches):
            ops = json.loads(bodies["batch_json"][i % len(batches)])["ops"]
            t0 = time.perf_counter()
            maker = engine.validated(ops, CLIENT)
            t1, c1 = time.perf_counter(), time.thread_time()
            acks = engine.commit_validated([maker])[0]
            t2, c2 = time.perf_counter(), time.thread_time()
            t_commit_cpu += c2 - c1
            answers = [ack.to_dict(core) for ack in acks]
            t3 = time.perf_counter()
            json.dumps({"ops": answers}, default=str, separators=(",", ":")).encode()
            t4 = time.perf_counter()
            msgpack.packb({"ops": answers}, use_bin_type=True)
            t5 = time.perf_counter()
            t_val += t1 - t0
            t_commit += t2 - t1
            t_ack += t3 - t2
            t_json += t4 - t3
            t_mp += t5 - t4
            done += len(ops)
        us = lambda t: round(1e6 * t / done, 3)  # noqa: E731
        out.update({
            "batches": args.ref_batches, "ops": done,
            "validate_us_per_op": us(t_val), "commit_us_per_op": us(t_commit),
            "commit_cpu_us_per_op": us(t_commit_cpu),
            "ack_dicts_us_per_op": us(t_ack), "answer_json_us_per_op": us(t_json),
            "answer_msgpack_us_per_op": us(t_mp),
            "engine_apply_ops_per_s": round(done / (t_val + t_commit)),
        })
        out["parse_json_us_per_op"] = round(1e6 / out["parse_json_ops_per_s"], 3)
        out["parse_msgpack_us_per_op"] = round(1e6 / out["parse_msgpack_ops_per_s"], 3)
        out["request_path_msgpack_us_per_op"] = round(
            out["parse_msgpack_us_per_op"] + out["validate_us_per_op"] +
            out["commit_us_per_op"] + out["ack_dicts_us_per_op"] +
            out["answer_msgpack_us_per_op"], 3)
        out["request_path_json_us_per_op"] = round(
            out["parse_json_us_per_op"] + out["validate_us_per_op"] +
            out["commit_us_per_op"] + out["ack_dicts_us_per_op"] +
            out["answer_json_us_per_op"], 3)
    finally:
        engine.close()
        shutil.rmtree(path, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# Reporting


def check(name, figure, target, ok, note=""):
    return {"check": name, "figure": figure, "target": target,
            "status": "info" if ok is None else "PASS" if ok else "MISS", "note": note}


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def add_run_options(parser: argparse.ArgumentParser, results: str) -> None:
    """The options every benchmark that starts servers takes last."""
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--tmpdir", default=None,
                        help="where the stores go (a real disk: fsync matters)")
    parser.add_argument("--out", default=results)
    parser.add_argument("--keep-logs", action="store_true",
                        help="print the servers' log tails at the end")


def settle_run_timing(parser, args, *, duration: tuple, rounds: tuple, quiet_wait: tuple):
    """Fill in the timing options a run did not give, each ``(with --quick, without)``, and
    refuse a run shorter than one second or one round."""
    pick = 0 if args.quick else 1
    args.duration = args.duration or duration[pick]
    args.rounds = args.rounds or rounds[pick]
    if args.quiet_wait is None:
        args.quiet_wait = quiet_wait[pick]
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration and --rounds must be at least 1")


def write_results(path: str, out: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"wrote {os.path.abspath(path)}")


def _conns(text: str) -> list[int]:
    try:
        conns = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"connections must be numbers like 8,64: {text!r}") from None
    if not conns or min(conns) < 1:
        raise argparse.ArgumentTypeError("connections must be positive")
    return conns


def sigterm(signum, frame):
    print("terminated: stopping the servers", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)  # unwind: the servers are stopped on the way out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures and targets go to bench/results/http_ingest.json.")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 2 s runs (default: 3 rounds of 10 s)")
    parser.add_argument("--duration", type=int, default=None,
                        help="seconds per wrk run (default 10; --quick 2)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--connections", type=_conns, default=[8, 64],
                        help="wrk connection counts, comma-separated (default 8,64)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers of the daemon and the bare app (default 2, "
                             "the daemon's default)")
    parser.add_argument("--threads", type=int, default=8,
                        help="slow-work threads per worker of both (default 8, the daemon's "
                             "default)")
    parser.add_argument("--only", default="a,b,c,d",
                        help="scenarios to run, e.g. 'a,b' (default a,b,c,d)")
    parser.add_argument("--ref-batches", type=int, default=None,
                        help="1,000-op batches in the in-process reference (default 200; "
                             "--quick 50; 0 skips it)")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="before each run, wait up to this many seconds for other "
                             "processes on the machine to go quiet (default 30; --quick 5; "
                             "0: don't wait)")
    parser.add_argument("--etcd", default=ETCD,
                        help=f"the etcd binary for (d) (default {ETCD}; (d) is skipped when "
                             "it is missing)")
    add_run_options(parser, RESULTS)
    args = parser.parse_args(argv)
    settle_run_timing(parser, args, duration=(2, 10), rounds=(1, 3), quiet_wait=(5, 30))
    if args.ref_batches is None:
        args.ref_batches = 50 if args.quick else 200
    if args.wrk_threads > min(args.connections):
        parser.error("--wrk-threads must not exceed the smallest connection count")
    daemon_options(workers=args.workers, threads=args.threads)  # refuse what the daemon would
    only = set(args.only.replace(" ", "").split(","))
    if not os.path.exists(WRK):
        parser.error(f"wrk is not installed ({WRK}): apt-get install wrk")

    signal.signal(signal.SIGTERM, sigterm)
    compiled = TWINS.get("c")
    have_etcd = os.path.isfile(args.etcd) and os.access(args.etcd, os.X_OK)
    print(f"Conflux HTTP ingest benchmark: Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {wrk_version()}, "
          f"etcd {etcd_version(args.etcd) if have_etcd else 'MISSING'}, "
          f"{'quick' if args.quick else 'full'} run")
    print(f"gunicorn + conflux's uvicorn worker (uvloop, httptools), falcon ASGI: "
          f"{args.workers} workers, {args.threads} slow-work threads each (daemon_options), "
          f"wrk -t{args.wrk_threads} -c{{{','.join(map(str, args.connections))}}}, "
          f"{args.rounds} round(s) of {args.duration} s per run, 127.0.0.1 only")
    if compiled is None:
        print("WARNING: the compiled core conflux.kernel._core_c is not importable here: the "
              "daemon may be running the pure-Python twin (its /v1/health says which).")
    if "d" in only and not have_etcd:
        print(f"NOTE: {args.etcd} is missing (Debian: apt-get install etcd-server): (d) is "
              "skipped, and so are the checks against it.")
        only.discard("d")
    print(flush=True)

    t_start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="conflux-http-bench-", dir=args.tmpdir)
    ingest = _load_ingest()
    api_key = secrets.token_urlsafe(32)
    results, servers, health, reference, verify = [], {}, {}, None, {}
    try:
        with contextlib.ExitStack() as stack:
            bodies = make_bodies(ingest, args.seed, workdir)
            json_h = {"Content-Type": "application/json", "X-API-Key": api_key}
            mp_h = {"Content-Type": "application/msgpack", "Accept": "application/msgpack",
                    "X-API-Key": api_key}
            scenarios = []
            if "a" in only:
                scenarios.append(Scenario("a", "(a) bare Falcon ASGI, parse + 202", "bare",
                                          "single_json", 1, json_h, 202))
            if "b" in only:
                scenarios.append(Scenario("b", "(b) /v1/ops, 1 op/request", "conflux_b",
                                          "single_json", 1, json_h, 200))
            if "c" in only:
                scenarios.append(Scenario("c_json", "(c) /v1/ops, 1,000 ops, JSON",
                                          "conflux_c", "batch_json", BATCH, json_h, 200))
                scenarios.append(Scenario("c_msgpack", "(c) /v1/ops, 1,000 ops, msgpack",
                                          "conflux_c", "batch_msgpack", BATCH, mp_h, 200))
            if "d" in only:
                scenarios.append(Scenario("d", "(d) etcd /v3/kv/put, 1 key/request", "etcd",
                                          "etcd_put", 1, {"Content-Type": "application/json"},
                                          200, path="/v3/kv/put"))
            if not scenarios:
                parser.error("--only selects nothing to run")

            # -- servers -------------------------------------------------------------------
            for name in dict.fromkeys(sc.server for sc in scenarios):
                print(f"  starting {name} ...", flush=True)
                if name == "bare":
                    make = lambda: bare_server(args, workdir)  # noqa: E731
                elif name == "etcd":
                    make = lambda: etcd_server(workdir, args.etcd)  # noqa: E731
                else:
                    project = make_project(os.path.join(workdir, name), api_key)
                    make = lambda p=project, n=name: conflux_server(n, p, args,  # noqa: E731
                                                                    workdir)
                server = start_retrying(make)
                stack.callback(server.stop)
                servers[name] = server
                if name.startswith("conflux"):
                    cores = set()
                    for _ in range(8):  # the workers answer in turn; ask a few times
                        _, _, data = http("GET", server.url + "/v1/health")
                        cores.add(json.loads(data).get("core"))
                    health[name] = sorted(map(str, cores))
                    server.store = lmdb.open(os.path.join(project, ".conflux", "store"),
                                             readonly=True, max_dbs=16, readahead=False)
                    stack.callback(server.store.close)
            provisional = any(c != ["c"] for c in health.values())
            if provisional:
                print(f"WARNING: the daemon's workers run core(s) {health}, not only the "
                      "compiled one: the Conflux figures are marked '*' and are not its real "
                      "figures.", flush=True)

            # -- scripts, sanity, warm-up --------------------------------------------------
            scripts, caps = {}, {}
            for sc in scenarios:
                rate = MAX_BATCH_RATE if sc.ops > 1 else MAX_SINGLE_RATE
                cap = math.ceil(args.duration * rate / args.wrk_threads)
                caps[sc.key] = cap * args.wrk_threads
                scripts[sc.key] = os.path.join(workdir, f"{sc.key}.lua")
                write_lua(scripts[sc.key], bodies["paths"][sc.bodies], sc.path, cap,
                          args.wrk_threads, sc.headers)
            sent = {name: 0 for name in servers}  # ops answered 2xx, for the check at the end
            for sc in scenarios:
                server = servers[sc.server]
                sanity(sc, server.url, bodies[sc.bodies][-1])
                sent[sc.server] += sc.ops
                warm = run_wrk(scripts[sc.key], server.url, args.wrk_threads,
                               min(args.connections), 1, server)
                sent[sc.server] += warm["requests"] * sc.ops
                print(f"  warm-up {sc.label}: {warm['requests'] / (warm['duration_us'] / 1e6):,.0f}"
                      f" req/s" + (f", {warm['errors']} errors" if warm["errors"] else ""),
                      flush=True)

            # -- the rounds ----------------------------------------------------------------
            runs = {(sc.key, c): [] for sc in scenarios for c in args.connections}
            for rnd in range(args.rounds):
                order = scenarios if rnd % 2 == 0 else scenarios[::-1]
                for conns in args.connections:
                    for sc in order:
                        server = servers[sc.server]
                        quiet = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
                        r = run_wrk(scripts[sc.key], server.url, args.wrk_threads, conns,
                                    args.duration, server)
                        r["round"] = rnd + 1
                        r["quiet_wait"] = quiet
                        runs[(sc.key, conns)].append(r)
                        sent[sc.server] += r["requests"] * sc.ops
                        print(f"  round {rnd + 1}/{args.rounds} -c{conns:<3} {sc.label:<36} "
                              f"{r['requests'] / (r['duration_us'] / 1e6):>10,.0f} req/s  "
                              f"p50 {r['p50_us'] / 1000:7.2f} ms  p99 "
                              f"{r['p99_us'] / 1000:7.2f} ms  other {r['other_cores']:.2f}"
                              + (f" (waited {quiet['waited_s']:.0f} s for quiet)"
                                 if quiet and quiet["waited_s"] >= 1 else "")
                              + (f"  {r['errors']} ERRORS" if r["errors"] else ""),
                              flush=True)
            for sc in scenarios:
                for conns in args.connections:
                    results.append(summarise(sc, conns, runs[(sc.key, conns)], caps[sc.key]))

            # -- nothing acknowledged is missing ---------------------------------------------
            for name, server in servers.items():
                if name.startswith("conflux"):
                    _, _, data = http("GET", server.url + "/v1/status",
                                      headers={"X-API-Key": api_key}, timeout=120)
                    stored = json.loads(data)["operations"]
                elif name == "etcd":
                    _, _, data = http("POST", server.url + "/v3/kv/range",
                                      json.dumps({"key": base64.b64encode(b"-").decode()})
                                      .encode(), {"Content-Type": "application/json"})
                    stored = int(json.loads(data)["header"]["revision"]) - 1
                else:
                    continue
                verify[name] = {"answered_ops": sent[name], "stored_ops": stored,
                                "ok": stored >= sent[name]}
        # servers stopped here (ExitStack), before the in-process reference
        if args.ref_batches > 0:
            print(f"  (ref) in-process: parse, validate, commit, answer {args.ref_batches} "
                  f"batches of {BATCH:,} ...", flush=True)
            if args.quiet_wait > 0:
                wait_quiet(args.quiet_wait)
            reference = measure_reference(args, bodies, workdir)
    finally:
        log_tails = {name: s.log_tail(15) for name, s in servers.items()}
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    # -- the table ---------------------------------------------------------------------------
    star = "*" if provisional else ""
    by = {(r["scenario"], r["connections"]): r for r in results}
    print()
    print(f"{'measurement':<38} {'conns':>5} {'req/s':>9} {'ops/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'server CPU us/req':>18} {'cs/req':>6} {'wrk':>5} {'other':>5} "
          f"{'req/commit':>10}")
    print("-" * 123)
    for r in results:
        s = star if r["scenario"] in ("b", "c_json", "c_msgpack") else ""
        flags = (f"  {r['errors']} errors" if r["errors"] else "") + \
                ("  CAPPED" if r["capped"] else "")
        srv = (f"{fmt(r['server_cpu_us_per_request'])} "
               f"({fmt(r['server_sys_us_per_request'])} sys)")
        print(f"{r['label'] + s:<38} {r['connections']:>5} {fmt(r['requests_per_s']):>9} "
              f"{fmt(r['ops_per_s']):>10} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{srv:>18} {fmt(r['server_switches_per_request'], 1):>6} "
              f"{fmt(r['wrk_cpu_us_per_request']):>5}"
              f" {r['other_cores']:>5.2f} {fmt(r['requests_per_commit'], 1):>10}{flags}")
    print("server CPU: user+system CPU time of the server's processes per request (system "
          "time in brackets); cs/req: their threads' voluntary context switches per request; "
          "wrk: the load generator's CPU per request (us); other: CPUs kept busy "
          "meanwhile by anything else (other processes on this shared machine, kernel I/O "
          "threads); req/commit: answered requests per synced LMDB commit (group commit).")
    noisy = [r for r in results if r["other_cores"] > QUIET_CORES]
    if noisy:
        print(f"WARNING: other work kept more than {QUIET_CORES} CPUs busy during "
              f"{len(noisy)} of the measurements above (up to "
              f"{max(r['other_cores'] for r in noisy):.2f} CPUs of {os.cpu_count()}): their "
              "figures are low; compare ratios within a round, or rerun on a quiet machine.")
    if verify:
        print()
        for name, v in verify.items():
            print(f"{name}: {v['stored_ops']:,} ops stored >= {v['answered_ops']:,} answered "
                  f"2xx to the load generator: {'yes' if v['ok'] else 'NO'}")
    if reference:
        ref = reference
        print()
        print(f"(ref) in this process, no HTTP, {ref['ops']:,} ops in 1,000-op batches, "
              f"synced, core {ref['engine_core']}:")
        print(f"    parse JSON {ref['parse_json_us_per_op']:.2f} us/op, msgpack "
              f"{ref['parse_msgpack_us_per_op']:.2f}; validate {ref['validate_us_per_op']:.2f};"
              f" commit {ref['commit_us_per_op']:.2f} (CPU {ref['commit_cpu_us_per_op']:.2f});"
              f" ack dicts "
              f"{ref['ack_dicts_us_per_op']:.2f}; answer JSON "
              f"{ref['answer_json_us_per_op']:.2f} / msgpack "
              f"{ref['answer_msgpack_us_per_op']:.2f}")
        print(f"    engine apply alone {fmt(ref['engine_apply_ops_per_s'])} ops/s; the whole "
              f"msgpack request path {ref['request_path_msgpack_us_per_op']:.2f} us/op = "
              f"{fmt(1e6 / ref['request_path_msgpack_us_per_op'])} ops/s on one core "
              f"(JSON {ref['request_path_json_us_per_op']:.2f} us/op)")

    # -- the checks --------------------------------------------------------------------------
    checks = []

    def rate_check(b, other, name, target, conns):
        ratio = b["requests_per_s"] / other["requests_per_s"]
        checks.append(check(f"(b) vs {name} req/s at -c{conns}", f"{ratio:.2f}x",
                            f">= {target}x", ratio >= target,
                            f"{fmt(b['requests_per_s'])} vs {fmt(other['requests_per_s'])} "
                            "req/s"))

    for conns in args.connections:
        a, b, d = by.get(("a", conns)), by.get(("b", conns)), by.get(("d", conns))
        if b and d:
            rate_check(b, d, "(d) etcd", TARGET_B_OVER_D, conns)
            if conns == TARGET_AT:
                checks.append(check(f"(b) p99 vs (d) etcd p99 at -c{conns}",
                                    f"{b['p99_ms']:.2f} ms", f"<= {d['p99_ms']:.2f} ms",
                                    b["p99_ms"] <= d["p99_ms"],
                                    f"(b) p50 {b['p50_ms']:.2f} ms, (d) p50 "
                                    f"{d['p50_ms']:.2f} ms"))
        if a and b:
            rate_check(b, a, "(a) bare", TARGET_B_OVER_A, conns)
        if b and b["server_cpu_us_per_request"] is not None:
            cpu = b["server_cpu_us_per_request"]
            note = "; ".join(f"{label} {fmt(r['server_cpu_us_per_request'])} us"
                             for label, r in (("(a) bare", a), ("(d) etcd", d)) if r)
            checks.append(check(f"(b) server CPU per request at -c{conns}", f"{cpu:.0f} us",
                                f"<= {TARGET_B_CPU_US} us", cpu <= TARGET_B_CPU_US, note))
        if conns == TARGET_AT:
            for key, kind in (("c_json", "JSON"), ("c_msgpack", "msgpack")):
                c = by.get((key, conns))
                if not c:
                    continue
                checks.append(check(f"(c) {kind} ops/s at -c{conns}", fmt(c["ops_per_s"]),
                                    f">= {TARGET_C_OPS:,}", c["ops_per_s"] >= TARGET_C_OPS))
                if d:
                    ratio = c["ops_per_s"] / d["ops_per_s"]
                    checks.append(check(f"(c) {kind} vs (d) etcd ops/s at -c{conns}",
                                        f"{ratio:.1f}x", f"> {TARGET_C_OVER_D}x",
                                        ratio > TARGET_C_OVER_D,
                                        f"{fmt(c['ops_per_s'])} vs {fmt(d['ops_per_s'])} "
                                        "ops/s"))
    for name, v in verify.items():
        checks.append(check(f"{name}: nothing answered is missing", f"{v['stored_ops']:,}",
                            f">= {v['answered_ops']:,}", v["ok"]))
    for r in results:
        if r["errors"] or r["capped"]:
            checks.append(check(f"{r['label']} -c{r['connections']}: clean run",
                                f"{r['errors']} errors", "0", False,
                                "reached the request cap: the rate is a lower bound"
                                if r["capped"] else "wrk counted errors"))
    print()
    print(f"{'check':<44} {'figure':>10} {'target':>12}  status")
    print("-" * 123)
    for ch in checks:
        status = ch["status"] + ("*" if provisional and ch["check"][:3] in ("(b)", "(c)")
                                 else "")
        print(f"{ch['check']:<44} {ch['figure']:>10} {ch['target']:>12}  {status}"
              + (f"  ({ch['note']})" if ch["note"] else ""))
    if provisional:
        print(f"* the daemon's workers ran core(s) {health}: not Conflux's real figures.")
    if args.keep_logs:
        for name, tail in log_tails.items():
            print(f"\n--- {name} log (tail) ---\n{tail}")
    print()
    print(f"wall time {elapsed:,.0f} s")

    out = {
        "benchmark": "http_ingest",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": ingest._git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "wrk": wrk_version(),
        "etcd": etcd_version(args.etcd) if have_etcd else None,
        "daemon_cores": health,
        "provisional": provisional,
        "settings": {"quick": args.quick, "duration_s": args.duration, "rounds": args.rounds,
                     "connections": args.connections, "wrk_threads": args.wrk_threads,
                     "workers": args.workers, "threads": args.threads,
                     "gunicorn": {k: getattr(v, "__qualname__", v) for k, v in daemon_options(
                         workers=args.workers, threads=args.threads).items()
                         if k not in ("bind",)},
                     "batch": BATCH, "single_bodies": N_SINGLE, "batch_bodies": N_BATCHES,
                     "mean_body_bytes": bodies["mean_bytes"], "seed": args.seed,
                     "wrk_timeout": WRK_TIMEOUT, "ref_batches": args.ref_batches},
        "results": results,
        "verify": verify,
        "reference": reference,
        "checks": checks,
        "wall_seconds": round(elapsed, 1),
    }
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
