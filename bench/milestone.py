"""Milestone benchmark: a milestone costs what changed, not the size of the state; and what
Conflux replaces (a YAML file edited and committed to git per change) costs far more.

In one run, on a temporary project (synced commits, one environment):

(a) a state of ``--entities`` entities (100,000 by default; 3 fields each), then the first
    milestone: every entity serialised (YAML) and written to git;
(b) milestones after 1, 100 and 10,000 changed fields: only the touched entities are
    serialised again, every other tree is the previous milestone's, reused by id. Target: the
    1-change milestone takes at most 1/50 of (a);
(c) the status quo: the same state as YAML files in a git work tree, then each change written
    to its file and committed with pygit2 (the blob, the trees on its path, the commit: the
    quickest way, with no index over the work tree), one commit per change, over
    ``--status-quo`` changes; its rate gives the time of 10,000 such changes;
(d) Conflux taking the same 10,000 changes as operations (one batch, one synced commit) plus
    one milestone; and, for information, as 10,000 single-operation synced commits. Target:
    (d) at least 100 x faster than (c) for the 10,000 changes.

Figures go to stdout and ``bench/results/milestone.json``.

    python bench/milestone.py                  # about two minutes
    python bench/milestone.py --entities 20000 --status-quo 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "milestone.json")

SCHEMA = """\
name = "milestone-bench"
version = "1.0.0"

[environments]
base = "production"

[entity.service]
fields = [
    { name = "image",    type = "string", merge = "lww" },
    { name = "replicas", type = "int",    merge = "lww" },
    { name = "tier",     type = "string", merge = "lww" },
]
"""


def initial_ops(n: int):
    rng = random.Random(1)
    for i in range(n):
        e = f"service.s{i:06d}"
        yield {"type": "set_field", "entity_id": e, "field": "image",
               "value": f"registry.example.com/s{i}:v1.{rng.randrange(100)}"}
        yield {"type": "set_field", "entity_id": e, "field": "replicas",
               "value": rng.randrange(1, 50)}
        yield {"type": "set_field", "entity_id": e, "field": "tier",
               "value": rng.choice(["web", "batch", "worker"])}


def changes(n: int, entities: int, seed: int) -> list[tuple[str, int]]:
    """``n`` changes of ``replicas`` on distinct random entities."""
    rng = random.Random(seed)
    return [(f"service.s{i:06d}", rng.randrange(50, 500))
            for i in rng.sample(range(entities), n)]


def change_ops(picked):
    return [{"type": "set_field", "entity_id": e, "field": "replicas", "value": v,
             "intent": "autoscale"} for e, v in picked]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure_conflux(work: str, entities: int, seed: int) -> dict:
    from conflux.actors import Actor
    from conflux.engine import Engine
    from conflux.milestones import Milestones

    path = os.path.join(work, "conflux")
    os.makedirs(path)
    with open(os.path.join(path, "schema.toml"), "w") as handle:
        handle.write(SCHEMA)
    engine = Engine.init(path, os.path.join(path, "schema.toml"))
    actor = Actor("autoscaler-1", "autoscaler")
    ops = list(initial_ops(entities))
    for i in range(0, len(ops), 30_000):
        engine.apply(ops[i:i + 30_000], actor)
    milestones = Milestones(engine)
    first_s, first = timed(lambda: milestones.create("the whole state"))
    out = {"entities": entities, "first": {"seconds": first_s, "operations": first.operations}}
    for n in (1, 100, 10_000):
        engine.apply(change_ops(changes(n, entities, seed + n)), actor)
        seconds, m = timed(lambda: milestones.create(f"{n} changes"))
        out[f"after_{n}"] = {"seconds": seconds, "operations": m.operations,
                             "share_of_first": seconds / first_s}
    # (d) the status quo's 10,000 changes, the Conflux way
    picked = changes(10_000, entities, seed + 7)
    apply_s, _ = timed(lambda: engine.apply(change_ops(picked), actor))
    ms_s, _ = timed(lambda: milestones.create("10,000 autoscaler changes"))
    out["ten_thousand_batch"] = {"apply_seconds": apply_s, "milestone_seconds": ms_s,
                                 "seconds": apply_s + ms_s}
    single = change_ops(changes(2_000, entities, seed + 8))
    single_s, _ = timed(lambda: [engine.apply([op], actor) for op in single])
    per_op = single_s / len(single)
    ms2_s, _ = timed(lambda: milestones.create("2,000 single commits"))
    out["ten_thousand_single"] = {"measured_ops": len(single), "seconds_per_op": per_op,
                                  "seconds": per_op * 10_000 + ms2_s}
    engine.close()
    return out


def measure_status_quo(work: str, entities: int, count: int, seed: int) -> dict:
    """YAML files in a git work tree; each change edits one file and is committed."""
    import pygit2
    import yaml

    path = os.path.join(work, "gitops")
    repo = pygit2.init_repository(path, bare=False, initial_head="main")
    folder = os.path.join(path, "production", "service")
    os.makedirs(folder)
    rng = random.Random(1)
    docs = {}
    for i in range(entities):
        name = f"s{i:06d}"
        docs[name] = {"name": name, "image": f"registry.example.com/s{i}:v1.{rng.randrange(100)}",
                      "replicas": rng.randrange(1, 50),
                      "tier": rng.choice(["web", "batch", "worker"])}
        with open(os.path.join(folder, name + ".yaml"), "w") as handle:
            yaml.safe_dump(docs[name], handle, sort_keys=False)
    from pygit2.enums import FileMode

    sig = pygit2.Signature("bench", "bench@example.com")
    index = repo.index
    index.add_all()
    index.write()
    repo.create_commit("HEAD", sig, sig, "initial", index.write_tree(), [])
    picked = changes(count, entities, seed + 9)

    def run():
        # the quickest honest way with pygit2: edit the file, then rebuild only the trees on
        # its path (no index over the whole work tree) and commit
        for entity_id, value in picked:
            name = entity_id.partition(".")[2]
            docs[name]["replicas"] = value
            rel = f"production/service/{name}.yaml"
            with open(os.path.join(path, rel), "w") as handle:
                yaml.safe_dump(docs[name], handle, sort_keys=False)
            head = repo[repo.head.target]
            blob = repo.create_blob_fromworkdir(rel)
            service = repo.TreeBuilder(head.tree / "production" / "service")
            service.insert(f"{name}.yaml", blob, FileMode.BLOB)
            production = repo.TreeBuilder(head.tree / "production")
            production.insert("service", service.write(), FileMode.TREE)
            root = repo.TreeBuilder(head.tree)
            root.insert("production", production.write(), FileMode.TREE)
            repo.create_commit("HEAD", sig, sig, f"scale {name} to {value}", root.write(),
                               [head.id])
    seconds, _ = timed(run)
    return {"changes": count, "seconds": seconds, "changes_per_s": count / seconds,
            "ten_thousand_seconds": seconds / count * 10_000}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--status-quo", type=int, default=300,
                        help="changes committed one by one in (c) (its rate is what counts)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="conflux-bench-milestone-", dir=args.tmpdir)
    try:
        print(f"Conflux milestone benchmark: Python {platform.python_version()}, "
              f"{os.cpu_count()} CPUs, {args.entities:,} entities", flush=True)
        conflux = measure_conflux(work, args.entities, args.seed)
        quo = measure_status_quo(work, args.entities, args.status_quo, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = conflux["first"]["seconds"]
    one = conflux["after_1"]["seconds"]
    batch = conflux["ten_thousand_batch"]["seconds"]
    speedup = quo["ten_thousand_seconds"] / batch
    single_speedup = quo["ten_thousand_seconds"] / conflux["ten_thousand_single"]["seconds"]
    rows = [
        (f"(a) first milestone, {args.entities:,} entities", f"{first:.2f} s"),
        ("(b) milestone after 1 changed field", f"{one * 1000:.1f} ms = 1/{first / one:,.0f} of (a)"),
        ("(b) milestone after 100 changed fields", f"{conflux['after_100']['seconds'] * 1000:.1f} ms"),
        ("(b) milestone after 10,000 changed fields", f"{conflux['after_10000']['seconds']:.2f} s"),
        (f"(c) status quo: file + git commit per change ({quo['changes']} measured)",
         f"{quo['changes_per_s']:.0f} changes/s; 10,000 changes: {quo['ten_thousand_seconds']:.0f} s"),
        ("(d) Conflux: 10,000 changes as one batch + one milestone",
         f"{batch:.2f} s = {speedup:,.0f} x faster than (c)"),
        ("(d) the same as 10,000 single-op synced commits + one milestone",
         f"{conflux['ten_thousand_single']['seconds']:.1f} s = {single_speedup:,.0f} x faster than (c)"),
    ]
    print()
    for label, figure in rows:
        print(f"  {label:<66} {figure}")
    checks = {"one_change_share": {"figure": one / first, "target": "<= 1/50",
                                   "met": one / first <= 1 / 50},
              "speedup_vs_status_quo": {"figure": speedup, "target": ">= 100",
                                        "met": speedup >= 100}}
    print()
    for name, c in checks.items():
        print(f"  {name}: {c['figure']:.4g} (target {c['target']}): "
              f"{'MET' if c['met'] else 'MISS'}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"conflux": conflux, "status_quo": quo, "checks": checks,
                   "python": platform.python_version(), "cpus": os.cpu_count()}, handle,
                  indent=2)
    print(f"\nwrote {args.out}")
    return 0 if all(c["met"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
