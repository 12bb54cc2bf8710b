"""Commit-service benchmark: the work of the daemon's one writer, in one process, no HTTP.

What ``conflux.daemon.commits.CommitService`` does with a group of requests, step for step and
synced, on the workload of bench/ingest.py (5,000 ``svc`` entities x 20 fields, the bench
schema): unpack the workers' frames, validate each batch, commit the group in one
transaction (``commit_group``), and pack each request's answer. Timed per step, per op.

(a) groups of 1,000-op batches, 1 to 16 per group (16 is what the daemon's default threads
    give at 64 connections), with Python's garbage collector paused during each group as the
    service pauses it, and (a-gc) running, as it did before; the post-merge checks' share is
    timed apart (they are part of the commit).
(b) small commits, what single-op requests make: 1 and 2 requests per group on a store of
    100,000 records, wall and CPU time per commit, synced and not; beside raw py-lmdb
    committing the least the same needs (two small puts and a log record) in the same run.

Each case runs on a store grown first to every field of the workload (100,000 records), so
that it measures the steady state. Run ``python bench/commit_service.py`` (about half a
minute) or ``--quick``; figures go to ``bench/results/commit_service.json``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shutil
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:  # an installed Conflux first; else the source tree this script sits in
    import conflux  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)

import msgpack  # noqa: E402

from conflux.actors import Actor  # noqa: E402
from conflux.daemon.commits import _answer_frame, commit_group  # noqa: E402
from conflux.engine import Engine  # noqa: E402
from conflux.kernel import IMPLEMENTATION  # noqa: E402
from conflux.store import open_env  # noqa: E402

SCHEMA = os.path.join(HERE, "schema.toml")
RESULTS = os.path.join(HERE, "results", "commit_service.json")
CLIENT = Actor("bench-pipeline", "pipeline")


def _workload():
    spec = importlib.util.spec_from_file_location("conflux_bench_ingest",
                                                  os.path.join(HERE, "ingest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Workload


class Service:
    """An engine on a fresh store holding every field of the workload, and the service's
    steps over it."""

    def __init__(self, workdir: str, sync: bool, workload):
        self.path = tempfile.mkdtemp(prefix="commits-", dir=workdir)
        self.engine = Engine.init(self.path, SCHEMA, sync=sync)
        for _ in range(20):  # 200,000 ops: all 100,000 fields written
            self.engine.apply(workload.batch(10_000)[0], CLIENT)
        self.times = dict.fromkeys(("unpack", "validate", "commit", "post_merge", "answer"),
                                   0.0)
        post_merge = self.engine._post_merge

        def timed(*args):
            t = time.perf_counter()
            try:
                return post_merge(*args)
            finally:
                self.times["post_merge"] += time.perf_counter() - t
        self.engine._post_merge = timed

    def group(self, frames, *, pause_gc: bool) -> None:
        """One group, as ``CommitService._commit`` handles it."""
        t = self.times
        if pause_gc:
            gc.disable()
        try:
            t0 = time.perf_counter()
            requests = [msgpack.unpackb(f, raw=False) for f in frames]
            t1 = time.perf_counter()
            makers = [self.engine.validated(r[2], CLIENT, admitted=bool(r[3]))
                      for r in requests]
            t2 = time.perf_counter()
            outcomes = commit_group(self.engine, makers)
            t3 = time.perf_counter()
            for acks, error in outcomes:
                if error is not None:
                    raise error
                _answer_frame(0, [0, acks.rows()])
            t4 = time.perf_counter()
        finally:
            if pause_gc:
                gc.enable()
        t["unpack"] += t1 - t0
        t["validate"] += t2 - t1
        t["commit"] += t3 - t2
        t["answer"] += t4 - t3

    def close(self):
        self.engine.close()
        shutil.rmtree(self.path, ignore_errors=True)


def frames_of(batches):
    return [msgpack.packb([CLIENT.id, CLIENT.cls, ops, True], use_bin_type=True)
            for ops in batches]


def group_of(frames: list, g: int, size: int) -> list:
    """The ``g``-th group of ``size`` frames, cycling through ``frames``."""
    return [frames[(g * size + i) % len(frames)] for i in range(size)]


def measure_groups(args, workload_cls, workdir) -> list[dict]:
    wl = workload_cls(args.seed)
    frames = frames_of([wl.batch(1_000)[0] for _ in range(64)])
    out = []
    for per_group, pause_gc in [(1, True), (4, True), (8, True), (16, True), (8, False)]:
        svc = Service(workdir, True, workload_cls(args.seed + 1))
        try:
            n_groups = max(2, args.group_ops // (1_000 * per_group))
            for g in range(2):  # warm-up
                svc.group(group_of(frames, g, per_group), pause_gc=pause_gc)
            svc.times = dict.fromkeys(svc.times, 0.0)
            t = time.perf_counter()
            for g in range(n_groups):
                svc.group(group_of(frames, g, per_group), pause_gc=pause_gc)
            wall = time.perf_counter() - t
        finally:
            svc.close()
        ops = n_groups * per_group * 1_000
        us = {k: round(1e6 * v / ops, 2) for k, v in svc.times.items()}
        row = {"batches_per_group": per_group, "gc_paused": pause_gc, "ops": ops,
               "ops_per_s": round(ops / wall), "us_per_op": round(1e6 * wall / ops, 2),
               "steps_us_per_op": us}
        out.append(row)
        print(f"(a{'' if pause_gc else '-gc'}) {per_group:>2} x 1,000 ops per group, "
              f"collector {'paused ' if pause_gc else 'running'}: "
              f"{row['ops_per_s']:>9,} ops/s  {row['us_per_op']:5.2f} us/op  "
              f"(unpack {us['unpack']:.2f}, validate {us['validate']:.2f}, commit "
              f"{us['commit']:.2f} of which post-merge {us['post_merge']:.2f}, answer "
              f"{us['answer']:.2f})", flush=True)
    return out


def measure_small(args, workload_cls, workdir) -> list[dict]:
    singles = workload_cls(args.seed + 2).batch(40_000)[0]
    frames = frames_of([[op] for op in singles])
    out = []
    for sync in (True, False):
        for per_group in (1, 2):
            svc = Service(workdir, sync, workload_cls(args.seed + 1))
            try:
                for g in range(200):  # warm-up
                    svc.group(group_of(frames, g, per_group), pause_gc=True)
                w0, c0 = time.perf_counter(), time.process_time()
                for g in range(200, 200 + args.commits):
                    svc.group(group_of(frames, g, per_group), pause_gc=True)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            finally:
                svc.close()
            out.append(_small_row("conflux", per_group, sync, args.commits, wall, cpu))
        wall, cpu = raw_small(workdir, sync, args.commits)
        out.append(_small_row("raw py-lmdb, 2 puts + a log record", 2, sync, args.commits,
                              wall, cpu))
    return out


def _small_row(what, per_group, sync, commits, wall, cpu) -> dict:
    row = {"what": what, "requests_per_commit": per_group, "synced": sync,
           "commits": commits, "us_per_commit": round(1e6 * wall / commits, 1),
           "cpu_us_per_commit": round(1e6 * cpu / commits, 1)}
    print(f"(b) {what}, {per_group} op(s) per commit, {'synced' if sync else 'unsynced'}: "
          f"{row['us_per_commit']:7.1f} us, CPU {row['cpu_us_per_commit']:6.1f} us "
          "per commit", flush=True)
    return row


def raw_small(workdir: str, sync: bool, commits: int) -> tuple[float, float]:
    """The least a commit of two single-field writes needs: two small puts in a table of
    100,000 records and one log record, in one (synced) transaction."""
    path = tempfile.mkdtemp(prefix="raw-", dir=workdir)
    env = open_env(path, map_size=1 << 30, max_dbs=2, sync=sync)
    try:
        state, log = env.open_db(b"state"), env.open_db(b"log")
        rnd = os.urandom
        with env.begin(write=True) as txn:
            for _ in range(100_000):
                txn.put(rnd(24), rnd(60), db=state)
        keys = [rnd(24) for _ in range(5_000)]
        seq = struct.Struct(">Q")
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(commits):
            with env.begin(write=True) as txn:
                txn.put(keys[i % 5_000], rnd(60), db=state)
                txn.put(keys[(i * 7) % 5_000], rnd(60), db=state)
                txn.put(seq.pack(i + 1), rnd(240), db=log, append=True)
        return time.perf_counter() - w0, time.process_time() - c0
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--group-ops", type=int, default=None,
                        help="ops per group case in (a) (default 200,000; --quick 48,000)")
    parser.add_argument("--commits", type=int, default=None,
                        help="commits per small case in (b) (default 3,000; --quick 500)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--tmpdir", default=None,
                        help="where the stores go (a real disk: fsync matters)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    args.group_ops = args.group_ops or (48_000 if args.quick else 200_000)
    args.commits = args.commits or (500 if args.quick else 3_000)
    workdir = tempfile.mkdtemp(prefix="conflux-commit-bench-", dir=args.tmpdir)
    workload_cls = _workload()
    print(f"Conflux commit-service benchmark: Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, engine core {IMPLEMENTATION}", flush=True)
    t0 = time.perf_counter()
    try:
        groups = measure_groups(args, workload_cls, workdir)
        small = measure_small(args, workload_cls, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    paused = next(r for r in groups if r["batches_per_group"] == 8 and r["gc_paused"])
    running = next(r for r in groups if r["batches_per_group"] == 8 and not r["gc_paused"])
    print(f"\ngroups of eight 1,000-op batches: {paused['us_per_op']:.2f} us/op with the "
          f"collector paused, {running['us_per_op']:.2f} with it running "
          f"({running['us_per_op'] / paused['us_per_op']:.2f} x)")
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"python": platform.python_version(), "cpus": os.cpu_count(),
                   "settings": {"quick": args.quick, "group_ops": args.group_ops,
                                "commits": args.commits, "seed": args.seed},
                   "groups": groups, "small_commits": small}, fh, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
