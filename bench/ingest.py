"""Ingestion benchmark: how fast Conflux accepts durable writes, against raw LMDB, in one run.

What it measures (all on temporary directories, all with synced commits, one process, one run):

(a) raw py-lmdb baseline. The same op stream, in write transactions of ``--batch`` ops: one
    ``txn.get`` + ``txn.put`` (a ~100-byte record) per distinct state key the batch touches, in
    key order, plus one sequential ``put(append=True)`` per op into a second named database
    keyed by a big-endian u64 sequence (the op-log append); one synced commit per transaction.
(b) the engine: ``Engine.apply`` of the same batches (same keys, same sync setting), on the
    compiled merge core when it is built.
(c) the same engine on the pure-Python core (fewer ops, compared per op).
(d) bench/kernel.py's measurement, when that file exists and exposes a measurement function.
(e) growth: one store fed up to 10^4, 10^5, 10^6 (and 10^7) ops over the same key space; the
    per-op cost at each size (the mean of the last few batches before it) as the store grows,
    with raw py-lmdb fed the same ops alongside (the (a) baseline's calls): LMDB's own growth.
(f) one op per synced commit: single-op ``Engine.apply`` calls against raw single-put commits.
(g) a skewed workload: an autoscaler rewriting the same 1,000 int fields (max and lww) over and
    over, in the same batches.

Why the baselines are fair (if anything they are strict):

* The raw baseline does only the LMDB calls a store for this workload cannot avoid: it reads
  and rewrites every distinct touched record and appends every op to a log, with the same
  environment flags as ``conflux.store.LmdbStore`` (sync, metasync, no readahead) and the same
  state key layout. Its keys and values are computed before the clock starts, so the raw side
  pays no Python work beyond the LMDB calls, and its map is sized up front (no regrowth).
  Everything the engine does beyond that floor (validation, merging, HLCs, op ids, the op-id
  index, conflict and violation indexes) is what the ratio measures.
* The op dicts are built before each timed batch: a client's cost is not the engine's.
* (a)/(b) and the two sides of (f) are interleaved batch by batch (alternating which side goes
  first), so a noisy neighbour on a shared machine hits both sides alike. Every figure that is
  judged is a ratio against a figure taken in the same run.
* The cyclic GC is off inside timed sections (and run between them, untimed), on both sides.

Run ``python bench/ingest.py`` (full; (e) goes to 10^7 ops, a few minutes) or ``--quick``
(skips 10^7 and scales the rest down). The table goes to stdout; the figures, the targets and
the environment go to ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib.util
import inspect
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:  # an installed Conflux first; else the source tree this script sits in
    import conflux  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)

import lmdb  # noqa: E402
import msgpack  # noqa: E402

with warnings.catch_warnings(record=True) as _import_warnings:
    warnings.simplefilter("always")
    from conflux.actors import Actor  # noqa: E402
    from conflux.engine import Engine  # noqa: E402
    from conflux.kernel import TWINS  # noqa: E402
    from conflux.store import open_env, state_key  # noqa: E402

SCHEMA = os.path.join(HERE, "schema.toml")
RESULTS = os.path.join(HERE, "results", "ingest.json")

SEQ = struct.Struct(">Q")
STATE_VALUE = bytes(range(100))            # a realistic register record: ~100 bytes
LOG_VALUE = bytes(range(120))              # a realistic op-log entry: ~120 bytes
RAW_MAP_SIZE = 1 << 36                     # sparse; sized up front so the baseline never grows

N_ENTITIES = 5_000
FIELDS = ["image", "owner", "region", "tier", "commit", "runbook", "port", "priority", "build",
          "replicas", "cpu_millis", "memory_mb", "max_conns", "error_budget", "rate_limit",
          "timeout", "drain", "retry_after", "interval", "ports"]
SET_FIELD = "ports"
# (g): 200 entities x 5 int fields = 1,000 fields; three max fields, two lww ints.
SKEW_ENTITIES = 200
SKEW_MAX_FIELDS = ("cpu_millis", "memory_mb", "max_conns")
SKEW_LWW_FIELDS = ("build", "priority")

WRITER = Actor("ci-pipeline", "pipeline")
AUTOSCALER = Actor("autoscaler-7", "autoscaler")


# ---------------------------------------------------------------------------------------------
# The workload


class Workload:
    """A seeded stream of ``set_field``/``add_elements`` ops over ``entities x 20`` fields, keys
    uniform at random. Each batch comes with the raw baseline's sorted distinct state keys."""

    REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"]
    TIERS = ["web", "batch", "worker", "edge"]
    DURATIONS = ["250ms", "500ms", "1s", "2s", "5s", "10s", "30s", "1m", "1m30s", "5m", "15m",
                 "1h"]

    def __init__(self, seed: int, entities: int = N_ENTITIES, fields=FIELDS):
        self.rng = random.Random(seed)
        self.entities = [f"svc.s{i}" for i in range(entities)]
        self.fields = list(fields)
        # the baseline's keys, in the engine's layout (env 1, type 1, field ids from 1)
        self.keys = [[state_key(1, 1, f"s{i}", f + 1) for f in range(len(self.fields))]
                     for i in range(entities)]
        rng = random.Random(seed ^ 0x5EED)
        hexes = "0123456789abcdef"
        self.pool = {
            "image": [f"registry.example.com/team-{rng.randrange(40)}/svc-{rng.randrange(5000)}"
                      f":v1.{rng.randrange(50)}.{rng.randrange(1000)}" for _ in range(512)],
            "owner": [f"team-{rng.randrange(200)}@example.com" for _ in range(256)],
            "commit": ["".join(rng.choice(hexes) for _ in range(40)) for _ in range(512)],
            "runbook": [f"https://runbooks.example.com/svc/{rng.randrange(5000)}/oncall"
                        for _ in range(256)],
        }

    def value(self, field: str):
        r = self.rng
        if field in self.pool:
            return r.choice(self.pool[field])
        if field == "region":
            return r.choice(self.REGIONS)
        if field == "tier":
            return r.choice(self.TIERS)
        if field == "port":
            return r.randrange(1, 65536)
        if field == "priority":
            return r.randrange(0, 1001)
        if field == "build":
            return r.randrange(10_000_000)
        if field == "replicas":
            return r.randrange(1, 500)
        if field in ("cpu_millis", "memory_mb", "max_conns", "error_budget", "rate_limit"):
            return r.randrange(1, 1 << 20)
        if field in ("timeout", "drain", "retry_after", "interval"):
            return r.choice(self.DURATIONS)
        raise KeyError(field)

    def batch(self, size: int):
        """(ops, sorted distinct state keys) for the next ``size`` ops."""
        r = self.rng
        n_e, n_f = len(self.entities), len(self.fields)
        ops, touched = [], set()
        for _ in range(size):
            e, f = r.randrange(n_e), r.randrange(n_f)
            field = self.fields[f]
            if field == SET_FIELD:
                ops.append({"type": "add_elements", "entity_id": self.entities[e],
                            "field": field, "elements": [r.choice((80, 443, 8080, 8443, 9090,
                                                                   9100, 5432, 6379))]})
            else:
                ops.append({"type": "set_field", "entity_id": self.entities[e], "field": field,
                            "value": self.value(field)})
            touched.add(self.keys[e][f])
        return ops, sorted(touched)


class SkewedWorkload:
    """(g): an autoscaler rewriting the same 1,000 int fields. Max fields get rising values (so
    every write wins and rewrites its record, the costly case for ``max``); lww ints random."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.targets = [(f"svc.s{i}", f) for i in range(SKEW_ENTITIES)
                        for f in SKEW_MAX_FIELDS + SKEW_LWW_FIELDS]
        self.tick = 0

    def batch(self, size: int):
        r, ops = self.rng, []
        for _ in range(size):
            entity, field = r.choice(self.targets)
            self.tick += 1
            value = (self.tick if field in SKEW_MAX_FIELDS else
                     r.randrange(0, 1001) if field == "priority" else r.randrange(10_000_000))
            ops.append({"type": "set_field", "entity_id": entity, "field": field,
                        "value": value})
        return ops, None


# ---------------------------------------------------------------------------------------------
# Stores


@contextlib.contextmanager
def tempdir(args, label: str):
    path = tempfile.mkdtemp(prefix=f"conflux-bench-{label}-", dir=args.tmpdir)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def engine_in(args, label: str, core):
    with tempdir(args, label) as path:
        engine = Engine.init(path, SCHEMA, core=core, sync=True)
        try:
            yield engine
        finally:
            engine.close()


class RawStore:
    """The baseline: py-lmdb with Conflux's environment flags, a state DB and a log DB."""

    def __init__(self, path: str):
        self.env = open_env(path, map_size=RAW_MAP_SIZE, max_dbs=2)
        self.state = self.env.open_db(b"state")
        self.log = self.env.open_db(b"log")
        self.seq = 0

    def apply_batch(self, keys, n_ops: int) -> None:
        """One synced transaction: get + put per distinct key, one log append per op."""
        state, log, pack = self.state, self.log, SEQ.pack
        txn = self.env.begin(write=True)
        get, put = txn.get, txn.put
        for k in keys:
            get(k, db=state)
            put(k, STATE_VALUE, db=state)
        seq = self.seq
        for s in range(seq + 1, seq + 1 + n_ops):
            put(pack(s), LOG_VALUE, db=log, append=True)
        txn.commit()
        self.seq = seq + n_ops

    def put_one(self, key) -> None:
        """One put, one synced commit."""
        txn = self.env.begin(write=True)
        txn.put(key, STATE_VALUE, db=self.state)
        txn.commit()

    def close(self) -> None:
        self.env.close()


@contextlib.contextmanager
def raw_in(args, label: str):
    with tempdir(args, label) as path:
        raw = RawStore(path)
        try:
            yield raw
        finally:
            raw.close()


@contextlib.contextmanager
def no_gc():
    """The cyclic GC off for a timed section (collected first, re-enabled after)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rate(ops: int, seconds: float) -> float:
    return ops / seconds if seconds > 0 else float("nan")


def batches(total: int, size: int):
    """Batch sizes adding up to ``total``."""
    full, rest = divmod(total, size)
    return [size] * full + ([rest] if rest else [])


def timed_apply(engine, ops, actor) -> float:
    t0 = time.perf_counter()
    engine.apply(ops, actor)
    return time.perf_counter() - t0


def timed_raw(raw, keys, n_ops) -> float:
    t0 = time.perf_counter()
    raw.apply_batch(keys, n_ops)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Measurements


def preflight(args, core):
    """None if ``core`` runs one small batch on this engine, else what went wrong (the twins
    are written by different people; a stale build must not crash the whole run)."""
    try:
        with engine_in(args, "preflight", core) as engine:
            engine.apply(Workload(args.seed).batch(200)[0], WRITER)
    except Exception as exc:  # noqa: BLE001 - reported, and the run goes on without it
        return f"{type(exc).__name__}: {exc}"
    return None


def measure_raw_vs_engine(args, core) -> tuple[dict, dict]:
    """(a) and (b), interleaved batch by batch over the same op stream."""
    work = Workload(args.seed)
    raw_times, eng_times, distinct = [], [], []
    with raw_in(args, "a") as raw, engine_in(args, "b", core) as engine:
        for i, size in enumerate(batches(args.ops, args.batch)):
            ops, keys = work.batch(size)
            distinct.append(len(keys))
            with no_gc():
                if i % 2 == 0:
                    raw_times.append(timed_raw(raw, keys, size))
                    eng_times.append(timed_apply(engine, ops, WRITER))
                else:
                    eng_times.append(timed_apply(engine, ops, WRITER))
                    raw_times.append(timed_raw(raw, keys, size))
            del ops
        sizes = record_sizes(engine)
    n = args.ops
    a = {"ops": n, "seconds": sum(raw_times), "ops_per_s": rate(n, sum(raw_times)),
         "batch": args.batch, "mean_distinct_keys_per_batch": sum(distinct) / len(distinct),
         "state_value_bytes": len(STATE_VALUE), "log_value_bytes": len(LOG_VALUE),
         "batch_seconds": [round(t, 6) for t in raw_times]}
    b = {"ops": n, "seconds": sum(eng_times), "ops_per_s": rate(n, sum(eng_times)),
         "batch": args.batch, "fields": N_ENTITIES * len(FIELDS),
         "engine_record_sizes": sizes, "batch_seconds": [round(t, 6) for t in eng_times]}
    return a, b


def record_sizes(engine) -> dict:
    """The engine's real mean state-record and log-entry sizes (to check the baseline's)."""
    store = engine.store
    with store.read() as txn:
        n, total = 0, 0
        with txn.cursor(db=store.dbs["state"]) as cur:
            for _, rec in cur:
                n += 1
                total += len(rec)
        ops = store.log_tail(txn)[0]
        log_bytes = 0
        with txn.cursor(db=store.dbs["log"]) as cur:
            for _, chunk in cur:
                log_bytes += len(chunk)
    return {"state_records": n, "mean_state_record_bytes": round(total / n, 1) if n else None,
            "mean_log_entry_bytes": round(log_bytes / ops, 1) if ops else None}


def measure_engine(args, core, total: int, label: str, workload, actor) -> dict:
    """An engine on a fresh store, fed ``total`` ops in batches; per-batch times kept."""
    times = []
    with engine_in(args, label, core) as engine:
        for size in batches(total, args.batch):
            ops, _ = workload.batch(size)
            with no_gc():
                times.append(timed_apply(engine, ops, actor))
            del ops
    return {"ops": total, "seconds": sum(times), "ops_per_s": rate(total, sum(times)),
            "batch": args.batch, "core": core.IMPLEMENTATION,
            "batch_seconds": [round(t, 6) for t in times]}


def measure_growth(args, core) -> dict:
    """(e): one store fed up to the largest size; the per-op cost at each size is the mean over
    the last (up to) 10 batches before the store reached it.

    Raw py-lmdb (the (a) baseline) is fed the same op stream alongside, batch by batch
    (alternating which side goes first), so the run also shows how much of the growth is
    LMDB's own: the floor of the engine's curve, on the same keys, in the same run.

    The smallest size is only a batch or two, so one timing of it is at the mercy of whatever
    else the machine does for those milliseconds: it is measured on five more fresh stores as
    well, and the median of the six is its figure (the samples are in the JSON).
    """
    sizes = sorted(args.sizes)
    sides = ("engine", "raw")
    opening = {side: [] for side in sides}
    for _ in range(5):
        spent = _grow(args, core, sizes[0], [])[0]
        for side in sides:
            opening[side].append(1e6 * sum(spent[side]) / sizes[0])
    points = []
    started = time.perf_counter()

    def checkpoint(n, done, times, engine, raw):
        w = min(10, len(times["engine"]))
        window_ops = sum(batches(sizes[-1], args.batch)[len(times["engine"]) - w:
                                                         len(times["engine"])])
        us = {side: 1e6 * sum(times[side][-w:]) / window_ops for side in sides}
        points.append({"size": n, "ops_done": done, "window_batches": w,
                       "us_per_op": us["engine"], "ops_per_s": 1e6 / us["engine"],
                       "raw_us_per_op": us["raw"],
                       "cumulative_ops_per_s": rate(done, sum(times["engine"])),
                       "state_records": state_records(engine),
                       "store_bytes": (engine.store.env.info()["last_pgno"] + 1)
                       * engine.store.env.stat()["psize"],
                       "raw_store_bytes": (raw.env.info()["last_pgno"] + 1)
                       * raw.env.stat()["psize"],
                       "peak_rss_mb": round(peak_rss_mb(), 1)})
        if args.verbose:
            p = points[-1]
            print(f"    (e) {n:>12,} ops: {p['us_per_op']:8.2f} us/op "
                  f"({p['ops_per_s']:,.0f} ops/s; raw py-lmdb {p['raw_us_per_op']:.2f}), "
                  f"{p['state_records']:,} records, {p['store_bytes'] / 2**20:,.0f} MiB, "
                  f"{time.perf_counter() - started:.0f} s so far", flush=True)

    _grow(args, core, sizes[-1], list(sizes), checkpoint)
    if points and points[0]["window_batches"] * args.batch <= sizes[0]:
        first = points[0]
        for side, key in (("engine", "us_per_op"), ("raw", "raw_us_per_op")):
            samples = sorted(opening[side] + [first[key]])
            first[f"samples_{key}"] = [round(x, 3) for x in samples]
            first[key] = samples[len(samples) // 2]
        first["ops_per_s"] = 1e6 / first["us_per_op"]
    return {"points": points, "batch": args.batch, "core": core.IMPLEMENTATION,
            "fields": N_ENTITIES * len(FIELDS)}


def _grow(args, core, total: int, checkpoints: list, checkpoint=None):
    """Feed ``total`` ops of the seeded stream to a fresh engine and a fresh raw store,
    interleaved; ``checkpoint`` is called as the stores pass each of ``checkpoints``."""
    work = Workload(args.seed)
    times = {"engine": [], "raw": []}
    done = 0
    with engine_in(args, "e", core) as engine, raw_in(args, "e-raw") as raw:
        for i, size in enumerate(batches(total, args.batch)):
            ops, keys = work.batch(size)
            with no_gc():
                if i % 2 == 0:
                    times["engine"].append(timed_apply(engine, ops, WRITER))
                    times["raw"].append(timed_raw(raw, keys, size))
                else:
                    times["raw"].append(timed_raw(raw, keys, size))
                    times["engine"].append(timed_apply(engine, ops, WRITER))
            del ops
            done += size
            while checkpoints and done >= checkpoints[0]:
                checkpoint(checkpoints.pop(0), done, times, engine, raw)
    return times, done


def state_records(engine) -> int:
    with engine.store.read() as txn:
        return txn.stat(engine.store.dbs["state"])["entries"]


def measure_single(args, core) -> tuple[dict, dict]:
    """(f): ``--single`` single-op synced commits, engine vs raw, in alternating rounds."""
    work = Workload(args.seed + 7)
    n, rounds = args.single, 4
    per_round = batches(n, max(1, n // rounds))
    raw_t, eng_t = 0.0, 0.0
    with raw_in(args, "f-raw") as raw, engine_in(args, "f", core) as engine:
        # warm both (untimed): first commits, name interning, page cache
        for _ in range(20):
            ops, keys = work.batch(1)
            raw.put_one(keys[0])
            engine.apply(ops, WRITER)
        for r, count in enumerate(per_round):
            stream = [work.batch(1) for _ in range(count)]
            sides = ("raw", "engine") if r % 2 == 0 else ("engine", "raw")
            for side in sides:
                with no_gc():
                    t0 = time.perf_counter()
                    if side == "raw":
                        for _, keys in stream:
                            raw.put_one(keys[0])
                        raw_t += time.perf_counter() - t0
                    else:
                        for ops, _ in stream:
                            engine.apply(ops, WRITER)
                        eng_t += time.perf_counter() - t0
    raw_r = {"commits": n, "seconds": raw_t, "commits_per_s": rate(n, raw_t),
             "us_per_commit": 1e6 * raw_t / n}
    eng_r = {"commits": n, "seconds": eng_t, "commits_per_s": rate(n, eng_t),
             "us_per_commit": 1e6 * eng_t / n, "core": core.IMPLEMENTATION}
    return raw_r, eng_r


def measure_kernel(args) -> dict:
    """(d): bench/kernel.py's measurement function, when it exists."""
    path = os.path.join(HERE, "kernel.py")
    if not os.path.exists(path):
        return {"skipped": "bench/kernel.py does not exist"}
    try:
        spec = importlib.util.spec_from_file_location("conflux_bench_kernel", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - someone else's file: report, do not crash
        return {"skipped": f"bench/kernel.py did not import: {type(exc).__name__}: {exc}"}
    names = ("measure", "measure_kernel", "run_measurements", "run_kernel", "run", "bench")
    fn = next((getattr(module, n) for n in names if callable(getattr(module, n, None))), None)
    kwargs = {}
    if fn is not None:
        params = inspect.signature(fn).parameters
        if "quick" in params:
            kwargs["quick"] = args.quick
    elif callable(getattr(module, "main", None)) and \
            "argv" in inspect.signature(module.main).parameters:
        # a script's main(argv): called with an explicit, empty argv (its defaults), so it
        # never parses this script's command line
        fn, kwargs, params = module.main, {"argv": []}, {}
    else:
        return {"skipped": f"bench/kernel.py exposes none of {', '.join(names)}, nor a "
                           "main(argv)"}
    missing = [p.name for p in params.values() if p.default is p.empty and p.name not in kwargs
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        return {"skipped": f"bench/kernel.py:{fn.__name__} needs {', '.join(missing)}"}
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            result = fn(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: report, do not crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"skipped": f"bench/kernel.py:{fn.__name__} failed: {type(exc).__name__}: "
                           f"{exc}", "output": captured.getvalue()}
    out = {"function": fn.__name__, "output": captured.getvalue()}
    results_file = getattr(module, "RESULTS", None)
    if fn.__name__ == "main" and isinstance(results_file, str) and os.path.exists(results_file):
        with open(results_file) as fh:
            out["result"] = json.load(fh)
    else:
        out["result"] = _jsonable(result)
    return out


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def profile_batch(args, core, warm_batches: int = 10, top: int = 15) -> list[dict]:
    """cProfile of one (b) batch on a store already holding ``warm_batches`` batches."""
    work = Workload(args.seed)
    with engine_in(args, "profile", core) as engine:
        for _ in range(warm_batches):
            engine.apply(work.batch(args.batch)[0], WRITER)
        ops, _ = work.batch(args.batch)
        prof = cProfile.Profile()
        with no_gc():
            prof.enable()
            engine.apply(ops, WRITER)
            prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        where = f"{os.path.relpath(file, ROOT) if file.startswith(ROOT) else file}:{line}"
        rows.append({"function": f"{func} ({where})", "ncalls": nc, "tottime": tt,
                     "cumtime": ct})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    total = sum(r["tottime"] for r in rows)
    return {"batch": args.batch, "warm_batches": warm_batches, "total_s": total,
            "top": rows[:top]}


# ---------------------------------------------------------------------------------------------
# Reporting


def check(name, figure, target, ok, provisional, note=""):
    status = "PASS" if ok else "MISS"
    return {"check": name, "figure": figure, "target": target,
            "status": status + ("*" if provisional else ""), "note": note}


def fmt_rate(x):
    return f"{x:,.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures and targets go to bench/results/ingest.json.")
    parser.add_argument("--quick", action="store_true",
                        help="skip 10^7 in (e) and scale (b), (c), (f), (g) down")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="(e) sizes, comma-separated (default 1e4,1e5,1e6,1e7; --quick "
                             "drops 1e7)")
    parser.add_argument("--ops", type=int, default=None,
                        help="ops for (a)/(b) (default 1,000,000; --quick 100,000)")
    parser.add_argument("--py-ops", type=int, default=None,
                        help="ops for (c) (default 200,000; --quick 20,000)")
    parser.add_argument("--single", type=int, default=None,
                        help="single-op commits per side in (f) (default 2,000; --quick 400)")
    parser.add_argument("--skew-ops", type=int, default=None,
                        help="ops for (g) (default 1,000,000; --quick 100,000)")
    parser.add_argument("--batch", type=int, default=10_000, help="ops per batch (10,000)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--core", choices=("auto", "c", "py"), default="auto",
                        help="the engine core for (b)/(e)/(f)/(g): the compiled twin when "
                             "built (auto), or forced")
    parser.add_argument("--only", default="a,b,c,d,e,f,g",
                        help="measurements to run, e.g. 'a,b,f' ((a) and (b) run together)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one (b) batch and print the top 15 by tottime")
    parser.add_argument("--tmpdir", default=None,
                        help="where the temporary stores go (must be a real disk: fsync "
                             "matters)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("-q", "--quiet", dest="verbose", action="store_false")
    args = parser.parse_args(argv)

    q = args.quick
    args.sizes = args.sizes or ([10**4, 10**5, 10**6] if q else [10**4, 10**5, 10**6, 10**7])
    args.ops = args.ops or (100_000 if q else 1_000_000)
    args.py_ops = args.py_ops or (20_000 if q else 200_000)
    args.single = args.single or (400 if q else 2_000)
    args.skew_ops = args.skew_ops or (100_000 if q else 1_000_000)
    only = set(args.only.replace(" ", "").split(","))

    compiled = TWINS.get("c")
    pure = TWINS["py"]
    if args.core == "c" and compiled is None:
        parser.error("--core c: the compiled twin conflux.kernel._core_c is not built")
    broken = None
    if compiled is not None and args.core != "py":
        broken = preflight(args, compiled)
        if broken is not None:
            if args.core == "c":
                parser.error(f"--core c: the compiled twin does not work with this engine: "
                             f"{broken}")
            compiled_unusable, compiled = compiled, None
    core = pure if args.core == "py" else (compiled or pure)
    provisional = core is not compiled
    say = print if args.verbose else (lambda *a, **k: None)

    print(f"Conflux ingest benchmark: Python {platform.python_version()} "
          f"({platform.python_implementation()}), lmdb {lmdb.__version__}, "
          f"{os.cpu_count()} CPUs, {'quick' if q else 'full'} run")
    twin = (f"built ({compiled.__file__})" if compiled else "UNUSABLE" if broken else
            "MISSING")
    print(f"engine core: {core.IMPLEMENTATION} ({core.__name__}); pure twin: "
          f"{pure.IMPLEMENTATION}; compiled twin: {twin}")
    if broken is not None:
        print(f"WARNING: the compiled core {compiled_unusable.__file__} is built but fails "
              f"with this engine ({broken}): running on the pure-Python twin instead. The "
              "'engine' figures below are marked '*' and are not Conflux's real figures.")
    elif compiled is None:
        print("WARNING: the compiled core conflux.kernel._core_c is not built: the 'engine' "
              "figures below are the pure-Python twin's, marked '*', and are not Conflux's "
              "real figures (build it with 'pip install .' or 'make install').")
    elif core is pure:
        print("WARNING: --core py: the 'engine' figures are the pure-Python twin's, marked '*'.")
    tmp = args.tmpdir or tempfile.gettempdir()
    print(f"temporary stores under {tmp}; batches of {args.batch:,}; synced commits")
    print(flush=True)

    results, t_start = {}, time.perf_counter()

    if only & {"a", "b"}:
        say(f"  (a)+(b) {args.ops:,} ops, raw and engine interleaved ...", flush=True)
        results["a"], results["b"] = measure_raw_vs_engine(args, core)
    if "c" in only:
        say(f"  (c) {args.py_ops:,} ops on the pure-Python twin ...", flush=True)
        results["c"] = measure_engine(args, pure, args.py_ops, "c", Workload(args.seed), WRITER)
    if "d" in only:
        say("  (d) bench/kernel.py ...", flush=True)
        results["d"] = measure_kernel(args)
    if "e" in only:
        say(f"  (e) growth to {max(args.sizes):,} ops ...", flush=True)
        results["e"] = measure_growth(args, core)
    if "f" in only:
        say(f"  (f) {args.single:,} single-op synced commits per side ...", flush=True)
        results["f_raw"], results["f"] = measure_single(args, core)
    if "g" in only:
        say(f"  (g) skewed: {args.skew_ops:,} ops over 1,000 fields ...", flush=True)
        results["g"] = measure_engine(args, core, args.skew_ops, "g", SkewedWorkload(args.seed),
                                      AUTOSCALER)
    profile = None
    if args.profile:
        say("  profiling one (b) batch ...", flush=True)
        profile = profile_batch(args, core)
    elapsed = time.perf_counter() - t_start

    # -- the table -------------------------------------------------------------------------
    star = "*" if provisional else ""
    rows = []
    if "a" in results:
        a, b = results["a"], results["b"]
        rows.append((f"(a) raw py-lmdb, batches of {args.batch:,}", a["ops"], a["seconds"],
                     a["ops_per_s"]))
        rows.append((f"(b) engine [{core.IMPLEMENTATION}]{star}, batches of {args.batch:,}",
                     b["ops"], b["seconds"], b["ops_per_s"]))
    if "c" in results:
        c = results["c"]
        rows.append(("(c) engine [py twin]", c["ops"], c["seconds"], c["ops_per_s"]))
    if "e" in results:
        for p in results["e"]["points"]:
            rows.append((f"(e) engine{star} at {p['size']:,} ops ({p['state_records']:,} "
                         "records)", None, None, p["ops_per_s"]))
        for p in results["e"]["points"]:
            rows.append((f"(e) raw py-lmdb, same ops, at {p['size']:,} ops", None, None,
                         1e6 / p["raw_us_per_op"]))
    if "f" in results:
        fr, fe = results["f_raw"], results["f"]
        rows.append(("(f) raw: one put per synced commit", fr["commits"], fr["seconds"],
                     fr["commits_per_s"]))
        rows.append((f"(f) engine{star}: one op per apply (synced)", fe["commits"],
                     fe["seconds"], fe["commits_per_s"]))
    if "g" in results:
        g = results["g"]
        rows.append((f"(g) engine{star}, skewed (1,000 fields)", g["ops"], g["seconds"],
                     g["ops_per_s"]))

    print()
    print(f"{'measurement':<52} {'ops':>11} {'seconds':>9} {'ops/s':>11} {'us/op':>9}")
    print("-" * 96)
    for name, ops, secs, r in rows:
        print(f"{name:<52} {'' if ops is None else f'{ops:,}':>11} "
              f"{'' if secs is None else f'{secs:.2f}':>9} {fmt_rate(r):>11} {1e6 / r:>9.2f}")
    if "b" in results and results["b"]["engine_record_sizes"]:
        s = results["b"]["engine_record_sizes"]
        print(f"engine's own sizes after (b): {s['state_records']:,} state records of "
              f"{s['mean_state_record_bytes']} bytes on average, {s['mean_log_entry_bytes']} "
              f"bytes per log entry (baseline: {len(STATE_VALUE)} and {len(LOG_VALUE)})")
    if "d" in results:
        d = results["d"]
        if "skipped" in d:
            print(f"(d) kernel: skipped: {d['skipped']}")
        else:
            print(f"(d) kernel, bench/kernel.py:{d['function']}() in this run:")
            for line in d["output"].rstrip().splitlines():
                print(f"    {line}")

    # -- the checks -------------------------------------------------------------------------
    checks = []
    if "a" in results:
        ratio = results["b"]["ops_per_s"] / results["a"]["ops_per_s"]
        checks.append(check("(b) engine batched vs (a) raw py-lmdb", f"{ratio:.2f}x",
                            ">= 0.5x", ratio >= 0.5, provisional))
    if "b" in results and "c" in results:
        b, c = results["b"], results["c"]
        # compare over the same prefix of the same op stream (same store sizes)
        k = min(len(b["batch_seconds"]), len(c["batch_seconds"]))
        b_prefix = rate(sum(batches(c["ops"], args.batch)[:k]), sum(b["batch_seconds"][:k]))
        c_prefix = rate(sum(batches(c["ops"], args.batch)[:k]), sum(c["batch_seconds"][:k]))
        ratio = b_prefix / c_prefix
        note = (f"over the first {k} batches of the same stream: {fmt_rate(b_prefix)} vs "
                f"{fmt_rate(c_prefix)} ops/s")
        if core is pure:
            note += "; the engine IS the py twin here, so this ratio says nothing"
        checks.append(check("(b) engine vs (c) pure-Python twin", f"{ratio:.2f}x", ">= 2x",
                            ratio >= 2, provisional, note))
    if "e" in results and len(results["e"]["points"]) >= 2:
        pts = results["e"]["points"]
        lo, hi = pts[0], pts[-1]
        ratio = hi["us_per_op"] / lo["us_per_op"]
        note = f"{lo['us_per_op']:.2f} us/op at {lo['size']:,}, {hi['us_per_op']:.2f} at " \
               f"{hi['size']:,}"
        if lo["state_records"] < 0.9 * hi["state_records"]:
            note += (f"; the store went from {lo['state_records']:,} to "
                     f"{hi['state_records']:,} records, so entities were sparser at "
                     f"{lo['size']:,} (whole-entity work per op grows with them)")
        raw_ratio = hi["raw_us_per_op"] / lo["raw_us_per_op"]
        note += (f"; raw py-lmdb on the same ops: {lo['raw_us_per_op']:.2f} -> "
                 f"{hi['raw_us_per_op']:.2f} us/op = {raw_ratio:.2f}x, LMDB's own growth")
        if hi["size"] < 10**7:
            note += "; 10^7 not measured (--quick or --sizes): not the real check"
        checks.append(check(f"(e) per-op cost at {hi['size']:,} vs {lo['size']:,}",
                            f"{ratio:.2f}x", "<= 2x", ratio <= 2, provisional, note))
    if "f" in results:
        ratio = results["f"]["commits_per_s"] / results["f_raw"]["commits_per_s"]
        checks.append(check("(f) single-op commits, engine vs raw", f"{ratio:.2f}x", ">= 0.8x",
                            ratio >= 0.8, provisional,
                            f"{results['f']['us_per_commit']:.0f} vs "
                            f"{results['f_raw']['us_per_commit']:.0f} us per commit"))
    if "g" in results and "b" in results:
        ratio = results["g"]["ops_per_s"] / results["b"]["ops_per_s"]
        checks.append(check("(g) skewed vs (b) uniform", f"{ratio:.2f}x", ">= 3x", ratio >= 3,
                            provisional))

    print()
    print(f"{'check':<44} {'figure':>8} {'target':>8}  status")
    print("-" * 96)
    for ch in checks:
        print(f"{ch['check']:<44} {ch['figure']:>8} {ch['target']:>8}  {ch['status']}"
              + (f"  ({ch['note']})" if ch["note"] else ""))
    if provisional:
        reason = ("the compiled twin fails with this engine" if broken else
                  "the compiled twin is missing" if compiled is None else "--core py")
        print(f"* the engine ran on the pure-Python twin ({reason}): these are not Conflux's "
              "real figures.")

    if profile is not None:
        print()
        print(f"cProfile of one (b) batch of {profile['batch']:,} ops after "
              f"{profile['warm_batches']} warm batches (profiled total "
              f"{profile['total_s']:.2f} s), top {len(profile['top'])} by tottime:")
        print(f"{'ncalls':>10} {'tottime':>8} {'cumtime':>8}  function")
        for r in profile["top"]:
            print(f"{r['ncalls']:>10,} {r['tottime']:>8.3f} {r['cumtime']:>8.3f}  "
                  f"{r['function']}")

    rss = peak_rss_mb()
    print()
    print(f"peak RSS {rss:,.0f} MiB; wall time {elapsed:,.0f} s")

    # -- JSON -------------------------------------------------------------------------------
    out = {
        "benchmark": "ingest",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "lmdb": lmdb.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "engine_core": core.IMPLEMENTATION,
        "compiled_twin": twin,
        "provisional": provisional,
        "provisional_reason": (f"compiled twin unusable: {broken}" if broken else
                               "compiled twin missing" if compiled is None else
                               "--core py" if provisional else None),
        "import_warnings": [str(w.message) for w in _import_warnings],
        "settings": {"quick": q, "batch": args.batch, "ops": args.ops, "py_ops": args.py_ops,
                     "single": args.single, "skew_ops": args.skew_ops, "sizes": args.sizes,
                     "seed": args.seed, "sync": True, "entities": N_ENTITIES,
                     "fields_per_entity": len(FIELDS), "tmpdir": tmp},
        "results": results,
        "checks": checks,
        "profile": profile,
        "peak_rss_mb": round(rss, 1),
        "wall_seconds": round(elapsed, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"wrote {os.path.abspath(args.out)}")
    return 0


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(float(s)) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers like 1e4,1e5: {text!r}")
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
