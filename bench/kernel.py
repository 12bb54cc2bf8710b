"""Is the compiled merge kernel worth it? The merge kernel alone, in memory.

One question: how many ``merge_op(record, op) -> record`` calls per second does each twin of
the core do, on the same packed records and the same operations? The pure-Python twin is the
baseline, measured in the same run; the ratio is the claim (target: compiled >= 20x pure on
the register kernel).

Cases (each a packed record and a few thousand distinct, unbound operations on it):

``lww``        last-writer-wins register; half the ops win (a new record is packed), half
               lose (the record comes back)
``max``        max register, ints; half win, half lose, like ``lww``
``orset add``  observed-remove set of 16 elements, each op adds one element

Each round re-arms the ops (``bound = False``, ``observed = None``, outside the timing) and
calls the kernel on every op through ``map`` so the interpreter's loop costs as little as
possible for both twins; the garbage collector is off while timing (as ``timeit`` does) and
the best round counts (a compiled round lasts about a millisecond, so it gets more rounds to
dodge noise from other processes). Results are printed and written to ``bench/results/kernel.json``.

    PYTHONPATH=. python bench/kernel.py [--ops N] [--rounds R]
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import json
import os
import platform
import random
import sys
import time

import msgpack

from conflux.kernel import _core_c, _core_py

TWINS = {"c": _core_c, "py": _core_py}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "kernel.json")
BASE_HLC = 1_700_000_000_000 << 16


def _op(core, desc):
    op = core.Op()
    for name, value in desc.items():
        setattr(op, name, value)
    return op


def _register_case(kind_name: str, n: int, rng: random.Random):
    """The record holds the middle hlc (and value): about half of the ops beat it."""
    kind = _core_py.STRATEGY_KINDS[kind_name]
    numeric = kind_name != "lww"

    def desc(i, hlc, value):
        d = {"op_id": f"node-{i:08x}", "actor": f"actor-{i % 7}", "hlc": hlc, "kind": kind,
             "field": "replicas", "entity": "service.checkout", "value": value,
             "vbytes": msgpack.packb(value, use_bin_type=True)}
        if numeric:
            d["num_tag"] = _core_py.NUM_INT
        return d

    seed = desc(0, BASE_HLC + n, n if numeric else "v" * 16)
    ops = []
    for i in range(1, n + 1):
        hlc = BASE_HLC + rng.randrange(2 * n)
        ops.append(desc(i, hlc, rng.randrange(2 * n) if numeric else f"value-{i:010d}"))
    return seed, ops


def _orset_case(n: int, rng: random.Random):
    kind = _core_py.ORSET
    elems = sorted(msgpack.packb(f"host-{i:03d}") for i in range(16))
    seed = {"op_id": "seed", "actor": "a", "hlc": BASE_HLC, "kind": kind,
            "type": _core_py.ADD_ELEMENTS, "ebytes": elems,
            "elements": [msgpack.unpackb(e) for e in elems]}
    ops = []
    for i in range(1, n + 1):
        e = msgpack.packb(f"host-{rng.randrange(32):03d}")
        ops.append({"op_id": f"node-{i:08x}", "actor": "a", "hlc": BASE_HLC + i, "kind": kind,
                    "type": _core_py.ADD_ELEMENTS, "ebytes": [e],
                    "elements": [msgpack.unpackb(e)]})
    return seed, ops


def _measure(core, seed, descs, rounds):
    rec = core.merge_op(None, _op(core, seed))
    ops = [_op(core, d) for d in descs]
    merge = core.merge_op
    best = float("inf")
    gc.disable()
    try:
        for _ in range(rounds):
            for op in ops:
                op.bound = False
                op.observed = None  # bound at the last round: now it would be a client's
            t0 = time.perf_counter()
            collections.deque(map(merge, itertools.repeat(rec, len(ops)), ops), maxlen=0)
            best = min(best, time.perf_counter() - t0)
    finally:
        gc.enable()
    return len(ops) / best, rec, ops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds of the pure twin (the compiled one gets 5x; best counts)")
    args = parser.parse_args(argv)
    if _core_c.IMPLEMENTATION != "c":
        raise SystemExit("the compiled core did not load")

    rng = random.Random(1234)
    cases = {
        "lww": _register_case("lww", args.ops, rng),
        "max": _register_case("max", args.ops, rng),
        "orset add": _orset_case(args.ops, rng),
    }
    results = {}
    print(f"{'kernel':<12}{'compiled ops/s':>18}{'pure ops/s':>16}{'ratio':>9}")
    for name, (seed, descs) in cases.items():
        c_rate, c_rec, c_ops = _measure(_core_c, seed, descs, 5 * args.rounds)
        py_rate, py_rec, py_ops = _measure(_core_py, seed, descs, max(2, args.rounds // 2))
        # Same run, same inputs: the twins must also agree on every result.
        for a, b in zip(c_ops[:200], py_ops[:200]):
            if _core_c.merge_op(c_rec, a) != _core_py.merge_op(py_rec, b):
                raise SystemExit(f"{name}: the twins disagree")
        ratio = c_rate / py_rate
        results[name] = {"compiled_ops_per_s": round(c_rate), "pure_ops_per_s": round(py_rate),
                         "ratio": round(ratio, 1)}
        print(f"{name:<12}{c_rate:>18,.0f}{py_rate:>16,.0f}{ratio:>8.1f}x")

    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as fh:
        json.dump({"benchmark": "kernel", "ops_per_round": args.ops, "rounds": args.rounds,
                   "python": sys.version.split()[0], "machine": platform.machine(),
                   "results": results}, fh, indent=2)
        fh.write("\n")
    print(f"wrote {os.path.relpath(RESULTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
