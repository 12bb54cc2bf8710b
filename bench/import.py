"""Import benchmark: how much an import of a large config tree costs beyond parsing it.

In one run, for YAML and for JSON, on a generated tree of ``--files`` service files (10,000 by
default; ~20 fields each, nested maps and lists):

(a) parse only: read every file of the tree and parse it with the same parser ``conflux
    import`` uses (libyaml's C loader; the standard json module), nothing else, in one
    process; the faster of two runs, with Python's cyclic garbage collector on and off (the
    import pauses it);
(b) ``conflux import`` end to end, as the command runs it (``conflux.transfer.import_tree``):
    read, parse, map onto the schema, compare with the store, apply every field as one synced
    batch;
(c) ``conflux export`` of the result to the same format, one file per entity;
and, for information, (d) importing the same tree again (nothing changes, nothing written),
and (e) the floor under (b): every record and op-log entry (b) stored, written again with raw
py-lmdb into a fresh store with Conflux's flags (sorted, in append mode, one synced commit),
with nothing else timed: no parsing, no validation, no packing. (b) - (a) may spend
(TARGET - 1) x (a) in all; what (e) leaves of that is what parsing-free import work could use.

Each measurement runs in a fresh process of its own (so that one's memory does not count
against another's), on the same tree, in the same run; the figure judged is the ratio (b)/(a),
target <= 1.5. Peak RSS of each process is reported. Results go to stdout and to
``bench/results/import.json``.

    python bench/import.py            # 10,000 files
    python bench/import.py --files 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "import.json")
TARGET = 1.5

SCHEMA = """\
name = "import-bench"
version = "1.0.0"

[environments]
base = "production"

[entity.service]
fields = [
    { name = "image",       type = "string",       merge = "lww" },
    { name = "version",     type = "string",       merge = "lww" },
    { name = "owner",       type = "string",       merge = "lww" },
    { name = "team",        type = "string",       merge = "lww" },
    { name = "region",      type = "string",       merge = "lww" },
    { name = "tier",        type = "string",       merge = "lww" },
    { name = "replicas",    type = "int",          merge = "max" },
    { name = "cpu_millis",  type = "int",          merge = "lww" },
    { name = "memory_mb",   type = "int",          merge = "lww" },
    { name = "port",        type = "int",          merge = "lww" },
    { name = "timeout",     type = "duration",     merge = "min" },
    { name = "drain",       type = "duration",     merge = "lww" },
    { name = "enabled",     type = "bool",         merge = "lww" },
    { name = "weight",      type = "float",        merge = "lww" },
    { name = "env_vars",    type = "map",          merge = "lww" },
    { name = "resources",   type = "map",          merge = "lww" },
    { name = "annotations", type = "map",          merge = "lww" },
    { name = "ports",       type = "list<int>",    merge = "set" },
    { name = "hosts",       type = "list<string>", merge = "set" },
    { name = "labels",      type = "list<string>", merge = "grow" },
]
"""


def service(rng: random.Random, i: int) -> dict:
    """One service document, as a team would have written it."""
    team = f"team-{rng.randrange(60)}"
    return {
        "name": f"svc-{i:05d}",
        "image": f"registry.example.com/{team}/svc-{i}:v{rng.randrange(5)}.{rng.randrange(40)}",
        "version": f"{rng.randrange(5)}.{rng.randrange(40)}.{rng.randrange(200)}",
        "owner": f"{team}@example.com",
        "team": team,
        "region": rng.choice(["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"]),
        "tier": rng.choice(["web", "batch", "worker", "edge"]),
        "replicas": rng.randrange(1, 50),
        "cpu_millis": rng.choice([250, 500, 1000, 2000, 4000]),
        "memory_mb": rng.choice([256, 512, 1024, 2048, 8192]),
        "port": rng.randrange(1024, 65536),
        "timeout": rng.choice(["500ms", "1s", "5s", "30s", "1m"]),
        "drain": rng.choice(["10s", "30s", "1m30s", "5m"]),
        "enabled": rng.random() < 0.9,
        "weight": round(rng.random(), 3),
        "env_vars": {f"VAR_{k}": f"value-{rng.randrange(1000)}" for k in range(rng.randrange(3, 9))},
        "resources": {"limits": {"cpu": f"{rng.choice([1, 2, 4])}", "memory": f"{rng.choice([1, 2, 8])}Gi"},
                      "requests": {"cpu": "500m", "memory": "512Mi"},
                      "gpus": [] if rng.random() < 0.9 else [{"kind": "a100", "count": 1}]},
        "annotations": {"prometheus.io/scrape": True, "prometheus.io/port": rng.randrange(9000, 9100),
                        "runbook": f"https://runbooks.example.com/{team}/svc-{i}"},
        "ports": sorted(rng.sample([80, 443, 8080, 8443, 9090, 9100, 5432, 6379], 3)),
        "hosts": [f"svc-{i}.{d}.example.com" for d in ("internal", "eu", "us")[:rng.randrange(1, 4)]],
        "labels": [team, rng.choice(["critical", "standard", "experimental"])],
    }


def generate(root: str, files: int, fmt: str, seed: int) -> int:
    """Write the tree (100 files a directory); returns its size in bytes."""
    import yaml

    rng = random.Random(seed)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    total = 0
    for i in range(files):
        doc = service(rng, i)
        folder = os.path.join(root, f"group-{i // 100:03d}")
        os.makedirs(folder, exist_ok=True)
        if fmt == "yaml":
            data = yaml.dump(doc, Dumper=dumper, sort_keys=False).encode()
        else:
            data = (json.dumps(doc, indent=2) + "\n").encode()
        with open(os.path.join(folder, f"svc-{i:05d}.{fmt}"), "wb") as handle:
            handle.write(data)
        total += len(data)
    return total


# ---------------------------------------------------------------------------------------------
# the measured steps, each run in a process of its own (``--step``)


def step_parse(tree: str, fmt: str, collector: str = "gc") -> dict:
    import gc

    from conflux.formats import for_name
    from conflux.transfer import files_of

    serializer = for_name(fmt, readable=True)
    if collector == "nogc":
        gc.disable()
    t0 = time.perf_counter()
    files, _ = files_of(tree, fmt)
    docs = 0
    for path, _ in files:
        with open(path, "rb") as handle:
            docs += len(serializer.load(handle.read(), path))
    return {"seconds": time.perf_counter() - t0, "documents": docs}


def step_import(tree: str, fmt: str, project: str, again: bool = False) -> dict:
    from conflux.actors import Actor
    from conflux.engine import Engine
    from conflux.transfer import import_tree

    schema = os.path.join(project, "schema.toml")
    engine = Engine(project) if again else Engine.init(project, schema)
    t0 = time.perf_counter()
    result = import_tree(engine, tree, entity_type="service", fmt=fmt,
                         actor=Actor("bench", "pipeline"), intent="bench import")
    seconds = time.perf_counter() - t0
    engine.close()
    return {"seconds": seconds, **result.summary(), "core": engine.core.IMPLEMENTATION}


def step_export(fmt: str, project: str, out: str) -> dict:
    from conflux.engine import Engine
    from conflux.transfer import export_state

    engine = Engine(project)
    t0 = time.perf_counter()
    result = export_state(engine, fmt, output=out)
    seconds = time.perf_counter() - t0
    engine.close()
    return {"seconds": seconds, **result.summary()}


def step_floor(project: str, scratch: str) -> dict:
    from conflux.engine import Engine
    from conflux.store import open_env

    engine = Engine(project)
    with engine.store.read() as txn:  # untimed: the bytes (b) stored, database by database
        dumps = {name: list(txn.cursor(db=db)) for name, db in engine.store.dbs.items()}
    engine.close()
    env = open_env(scratch, map_size=1 << 32, max_dbs=len(dumps))
    dbs = {name: env.open_db(name.encode()) for name in dumps}
    t0 = time.perf_counter()
    with env.begin(write=True) as txn:
        for name, items in dumps.items():
            if items:
                with txn.cursor(db=dbs[name]) as cur:
                    cur.putmulti(items, append=True)
    seconds = time.perf_counter() - t0
    env.close()
    return {"seconds": seconds, "records": sum(map(len, dumps.values())),
            "bytes": sum(len(k) + len(v) for items in dumps.values() for k, v in items)}


def run_step(args, *step) -> dict:
    """Run one step in a fresh interpreter; its figures, with its peak RSS."""
    cmd = [sys.executable, os.path.abspath(__file__), "--step", *step]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    if proc.wait():
        raise SystemExit(f"step {' '.join(step)} failed (exit {proc.returncode})")
    return json.loads(out)  # with the step's own peak RSS (VmHWM), measured inside it


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--formats", default="yaml,json")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tmpdir", default=None, help="where the trees and stores go (a real "
                                                       "disk: the import's commit is synced)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        kind, rest = args.step[0], args.step[1:]
        fn = {"parse": step_parse, "import": step_import, "export": step_export,
              "floor": step_floor}[kind]
        if kind == "import" and rest[-1] == "again":
            figures = step_import(*rest[:-1], again=True)
        else:
            figures = fn(*rest)
        with open("/proc/self/status") as status:  # this process's own peak, since exec
            hwm = next(line for line in status if line.startswith("VmHWM"))
        figures["peak_rss_mb"] = round(int(hwm.split()[1]) / 1024, 1)
        print(json.dumps(figures))
        return 0

    from conflux.engine import Engine  # noqa: F401  (fail early if Conflux is not installed)

    print(f"Conflux import benchmark: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{args.files:,} files per format")
    results = {"files": args.files, "target": f"(b) <= {TARGET} x (a)", "formats": {},
               "python": platform.python_version(), "cpus": os.cpu_count()}
    rows, ok = [], True
    work = tempfile.mkdtemp(prefix="conflux-bench-import-", dir=args.tmpdir)
    try:
        for fmt in args.formats.split(","):
            tree = os.path.join(work, f"tree-{fmt}")
            size = generate(tree, args.files, fmt, args.seed)
            project = os.path.join(work, f"project-{fmt}")
            os.makedirs(project)
            with open(os.path.join(project, "schema.toml"), "w") as handle:
                handle.write(SCHEMA)
            run_step(args, "parse", tree, fmt)  # warm the page cache: both sides read it warm
            # the baseline is the faster of parsing with Python's garbage collector on (as a
            # script would) and off (as the import runs): the stricter of the two
            parsed = [run_step(args, "parse", tree, fmt, collector)
                      for collector in ("gc", "nogc")]
            parse = min(parsed, key=lambda p: p["seconds"])
            parse["with_gc_seconds"], parse["without_gc_seconds"] = (p["seconds"] for p in parsed)
            imported = run_step(args, "import", tree, fmt, project)
            again = run_step(args, "import", tree, fmt, project, "again")
            exported = run_step(args, "export", fmt, project, os.path.join(work, f"out-{fmt}"))
            floor = run_step(args, "floor", project, os.path.join(work, f"floor-{fmt}"))
            ratio = imported["seconds"] / parse["seconds"]
            budget = (TARGET - 1) * parse["seconds"]
            ok = ok and ratio <= TARGET
            results["formats"][fmt] = {"tree_bytes": size, "parse": parse, "import": imported,
                                       "reimport": again, "export": exported,
                                       "floor": floor, "budget_seconds": round(budget, 4),
                                       "import_over_parse": round(ratio, 3),
                                       "met": ratio <= TARGET}
            n = imported["operations"]
            rows += [
                (f"{fmt}: (a) parse only", parse["seconds"], f"{args.files / parse['seconds']:,.0f} files/s", parse["peak_rss_mb"]),
                (f"{fmt}: (b) import ({n:,} ops)", imported["seconds"], f"{n / imported['seconds']:,.0f} ops/s", imported["peak_rss_mb"]),
                (f"{fmt}: (c) export", exported["seconds"], f"{args.files / exported['seconds']:,.0f} files/s", exported["peak_rss_mb"]),
                (f"{fmt}: (d) import again (0 ops)", again["seconds"], f"{again['operations']} ops written", again["peak_rss_mb"]),
                (f"{fmt}: (e) floor: raw LMDB writes", floor["seconds"], f"{floor['bytes'] / 2**20:,.0f} MiB: {floor['seconds'] / budget:.0%} of (b)'s budget", floor["peak_rss_mb"]),
                (f"{fmt}: (b)/(a)", ratio, f"target <= {TARGET}: {'MET' if ratio <= TARGET else 'MISS'}", None),
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'measurement':<36}{'seconds':>10}  {'rate':<30}{'peak RSS':>10}")
    print("-" * 88)
    for label, seconds, rate, rss in rows:
        figure = f"{seconds:.2f}x" if label.endswith("(b)/(a)") else f"{seconds:.2f}"
        print(f"{label:<36}{figure:>10}  {rate:<30}{'' if rss is None else f'{rss:,.0f} MiB':>10}")
    print(f"(b)'s budget: what the target lets (b) add to (a), {TARGET - 1:g} x (a); (e) spends "
          "part of it on LMDB's writes alone")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nwrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
