"""Signing benchmark: what signatures cost ingestion, and the audit export's memory.

In one run, on temporary projects with synced commits:

(a) unsigned batched ingestion: ``Engine.apply`` of 1,000-op batches of ``set_field`` ops that
    carry their own op id and HLC (as signed ones must), ``--ops`` in all;
(b) the same ops signed (Ed25519, signatures made before the clock starts: a client's cost is
    not the engine's), verified against the key registry on the way in; reported as the ratio
    (b)/(a) in ops/s, and as the cost per op beyond (a) next to
(c) pynacl's own verification of the same signatures, alone: the floor of (b)'s extra cost;
(d) ``audit export`` of a log of 1,000,000 operations (and of 100,000), each in a fresh
    process writing to /dev/null: time and peak RSS, to show the memory does not grow with
    the log.

Figures go to stdout and ``bench/results/signing.json``.

    python bench/signing.py                 # about a minute
    python bench/signing.py --export-ops 200000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "signing.json")
ROOT = os.path.dirname(HERE)
SCHEMA = os.path.join(ROOT, "examples", "schema.toml")
BATCH = 1000


def make_ops(engine, n: int, prefix: str) -> list[dict]:
    first = engine.next_hlc()
    return [{"type": "set_field", "entity_id": f"service.s{i % 5000}", "field": "replicas",
             "value": i % 400, "env": "production", "op_id": f"{prefix}-{i}",
             "hlc": first + i, "intent": "scale"} for i in range(n)]


def ingest(engine, ops, actor) -> float:
    import gc

    gc.collect()
    t0 = time.perf_counter()
    for i in range(0, len(ops), BATCH):
        engine.apply(ops[i:i + BATCH], actor)
    return time.perf_counter() - t0


def measure_ingest(work: str, n: int) -> dict:
    from nacl.signing import SigningKey

    from conflux.actors import Actor
    from conflux.engine import Engine
    from conflux.signing import content_of_op, public_key_text, sign_op

    actor = Actor("ci-pipeline", "pipeline")
    plain = Engine.init(os.path.join(work, "plain"), SCHEMA)
    signed = Engine.init(os.path.join(work, "signed"), SCHEMA)
    key = SigningKey.generate()
    signed.signatures.register("ci-1", "ci-pipeline", public_key_text(key))
    unsigned_ops = make_ops(plain, n, "u")
    signed_ops = [sign_op(op, key, "ci-1", actor.id) for op in make_ops(signed, n, "s")]
    t_plain = ingest(plain, unsigned_ops, actor)
    t_signed = ingest(signed, signed_ops, actor)
    # (c) the signature checks alone, over the same bytes the engine checks
    logged = signed.log(limit=n)
    contents = [(content_of_op(signed, op), base64.b64decode(op.signature)) for op in logged]
    verify = key.verify_key.verify
    t0 = time.perf_counter()
    for content, sig in contents:
        verify(content, sig)
    t_verify = time.perf_counter() - t0
    plain.close()
    signed.close()
    return {"ops": n, "batch": BATCH, "unsigned_ops_per_s": n / t_plain,
            "signed_ops_per_s": n / t_signed, "ratio": (n / t_signed) / (n / t_plain),
            "extra_us_per_op": 1e6 * (t_signed - t_plain) / n,
            "verify_alone_us_per_op": 1e6 * t_verify / len(contents)}


def fill(path: str, n: int) -> None:
    from conflux.actors import Actor
    from conflux.engine import Engine

    engine = Engine.init(path, SCHEMA)
    actor = Actor("autoscaler-7", "autoscaler")
    for start in range(0, n, 10_000):
        engine.apply([{"type": "set_field", "entity_id": f"route.r{i % 2000}",
                       "field": "weight", "value": i % 100, "intent": "load-response"}
                      for i in range(start, min(n, start + 10_000))], actor)
    engine.close()


def export_in_child(path: str) -> dict:
    """``conflux audit export`` in a fresh process: seconds, lines and peak RSS."""
    code = ("import sys, time; from conflux.engine import Engine; from conflux.audit import "
            "export_lines; e = Engine(sys.argv[1]); out = open('/dev/null', 'wb')\n"
            "def status(key):\n"
            "    return int([l for l in open('/proc/self/status') if l.startswith(key)][0]"
            ".split()[1])\n"
            "t = time.perf_counter(); n = 0; anon = 0\n"
            "for line in export_lines(e):\n"
            "    out.write(line); n += 1\n"
            "    if n % 20000 == 0: anon = max(anon, status('RssAnon'))\n"
            "seconds = time.perf_counter() - t\n"
            "print(n, seconds, status('VmHWM'), max(anon, status('RssAnon')))")
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    if proc.wait():
        raise SystemExit("the export failed")
    lines, seconds, hwm_kb, anon_kb = out.split()
    # VmHWM of the child itself (getrusage's maxrss would count the pages it shared with this
    # bigger process between fork and exec); it includes the store's pages LMDB maps in as
    # they are read (file-backed, reclaimable). RssAnon, sampled every 20,000 lines, is the
    # process's own memory.
    return {"lines": int(lines), "seconds": float(seconds),
            "peak_rss_mb": round(int(hwm_kb) / 1024, 1),
            "peak_anon_rss_mb": round(int(anon_kb) / 1024, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--export-ops", type=int, default=1_000_000)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="conflux-bench-signing-", dir=args.tmpdir)
    try:
        print(f"Conflux signing benchmark: Python {platform.python_version()}, "
              f"{os.cpu_count()} CPUs", flush=True)
        ingestion = measure_ingest(work, args.ops)
        small, big = max(1, args.export_ops // 10), args.export_ops
        exports = {}
        for n in (small, big):
            path = os.path.join(work, f"log-{n}")
            fill(path, n)
            exports[n] = export_in_child(path)
            shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    i = ingestion
    print()
    print(f"  (a) unsigned, {BATCH}-op batches          {i['unsigned_ops_per_s']:>12,.0f} ops/s")
    print(f"  (b) signed and verified                   {i['signed_ops_per_s']:>12,.0f} ops/s"
          f" = {i['ratio']:.2f} x (a); {i['extra_us_per_op']:.1f} us more per op")
    print(f"  (c) Ed25519 verification alone            {i['verify_alone_us_per_op']:>12.1f} us"
          f" per op (the floor of (b)'s extra cost)")
    for n, e in exports.items():
        print(f"  (d) audit export of {n:>9,} ops            {e['seconds']:>8.1f} s, "
              f"{e['lines'] / e['seconds']:,.0f} lines/s, own memory {e['peak_anon_rss_mb']:,.0f}"
              f" MiB (peak RSS {e['peak_rss_mb']:,.0f} MiB with the mapped store)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"ingestion": ingestion, "export": {str(k): v for k, v in exports.items()},
                   "python": platform.python_version(), "cpus": os.cpu_count()}, handle,
                  indent=2)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
