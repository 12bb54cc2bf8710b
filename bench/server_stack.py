"""Server stacks for one-op writes: which HTTP stack and which writer placement beat etcd.

One run measures, with the same wrk settings for every server (bench/http_ingest.py's: wrk
in its own process, 2 threads, the same connection counts, the same Lua script cycling
through the same 50,000 one-op JSON bodies, interleaved rounds), a bare one-op endpoint
(bench/stack_app.py: read the body, parse it, check it is one op, answer a small JSON ack;
nothing stored) under each candidate stack, etcd as the reference, and the two durable
designs on each ASGI stack:

(a) ``falcon.App`` (WSGI) under gunicorn gthread, 16 threads per worker (the former design);
(b) ``falcon.asgi.App`` under gunicorn with uvicorn workers (uvloop, httptools);
(c) ``falcon.asgi.App`` under granian (Rust HTTP server; ASGI interface, uvloop);
(c2) a bare handler on granian's RSGI interface, no Falcon (that server's floor);
(d) etcd, single durable puts through its HTTP/JSON gateway (as bench/http_ingest.py);
(e) (b) and (c) with a writer thread in each worker: group commit into a synced LMDB
    environment, requests awaiting an asyncio future resolved when their group is durable;
(f) (b) and (c) handing each op to a commit process beside the workers over a Unix socket
    (one pipelined connection per worker), which group-commits into the same kind of
    environment and answers each op when it is durable;
(g) (f) on (b), the commit process appending each group to a write-ahead log instead (one
    sequential write and one fdatasync per group, where a synced LMDB commit makes two
    ordered writes: the data pages, then the meta page).

Every server runs the same number of workers (``--workers``, default 2, the daemon's
default: this machine has 2 cores). Per measurement: req/s, p50/p99 latency, the server's
CPU per request (user+system of all its processes, from /proc), its voluntary context
switches per request, and for (e)/(f) the requests each synced commit served. After the run
every durable store and etcd must hold at least every op answered 2xx.

The figures are judged against the design targets of one-op writes: at 8 and at 64
connections, at least 1.2 x etcd's req/s, with at most 150 us of server CPU per request
(and p99 at 64 connections no worse than etcd's).

Run ``python bench/server_stack.py`` (2 rounds of 4 s runs, about 4 minutes) or ``--quick``
(1 round of 2 s runs); ``--only`` a subset (e.g. ``a,b,d,e_uvicorn``). Needs wrk and etcd
(Debian: wrk, etcd-server) and ``pip install ".[bench]"`` (uvicorn, uvloop, httptools,
granian). Table to stdout, figures to ``bench/results/server_stack.json``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "server_stack.json")
STACK_APP = os.path.join(HERE, "stack_app.py")


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hi = _load("conflux_bench_http_ingest", os.path.join(HERE, "http_ingest.py"))
stack_app = _load("conflux_bench_stack_app", STACK_APP)

import lmdb  # noqa: E402

# Targets of one-op writes
TARGET_OVER_ETCD = 1.2
TARGET_CPU_US = 150.0

STACKS = {  # scenario key -> (label, stack_app.py --stack, --durable)
    "a": ("(a) gunicorn gthread, falcon WSGI", "gthread", None),
    "b": ("(b) gunicorn+uvicorn, falcon ASGI", "uvicorn", None),
    "c": ("(c) granian, falcon ASGI", "granian", None),
    "c2": ("(c2) granian RSGI, no Falcon", "granian-rsgi", None),
    "e_uvicorn": ("(e) uvicorn + writer thread", "uvicorn", "local"),
    "f_uvicorn": ("(f) uvicorn + commit process", "uvicorn", "hop"),
    "e_granian": ("(e) granian + writer thread", "granian", "local"),
    "f_granian": ("(f) granian + commit process", "granian", "hop"),
    "g_uvicorn": ("(g) uvicorn + commit process, WAL", "uvicorn", "hop-wal"),
}
ORDER = ["a", "b", "c", "c2", "d", "e_uvicorn", "f_uvicorn", "e_granian", "f_granian",
         "g_uvicorn"]


def stack_server(key: str, args, workdir: str) -> hi.Server:
    _, stack, durable = STACKS[key]
    port = hi.free_port()
    cmd = [sys.executable, STACK_APP, "--stack", stack, "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(args.workers), "--threads", str(args.threads)]
    server = hi.Server(key, cmd, f"http://127.0.0.1:{port}", "/v1/health", workdir,
                       hi.child_env())
    server.durable = durable
    if durable:
        server.store_path = os.path.join(workdir, f"{key}-store")
        cmd += ["--durable", durable, "--store", server.store_path]
    return server


def stored_ops(server) -> int:
    """How many ops the server's commits wrote (bench/stack_app.py): the last sequence
    number in its LMDB store, or the records of its write-ahead log."""
    if server.durable == "hop-wal":
        return stack_app.wal_records(os.path.join(server.store_path, "wal"))
    with server.store.begin() as txn:
        last = txn.get(b"seq")
    return int.from_bytes(last, "big") if last else 0


def versions() -> dict:
    out = {}
    for name in ("falcon", "gunicorn", "uvicorn", "uvloop", "httptools", "granian", "lmdb"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            out[name] = version(name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures go to bench/results/server_stack.json.")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 2 s runs (default: 2 rounds of 4 s)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--connections", type=hi._conns, default=[8, 64],
                        help="wrk connection counts, comma-separated (default 8,64)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of every stack (default 2, the daemon's)")
    parser.add_argument("--threads", type=int, default=16,
                        help="threads per gthread worker in (a) (default 16, the threaded daemon's)")
    parser.add_argument("--only", default=",".join(ORDER),
                        help=f"scenarios to run (default {','.join(ORDER)})")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="before each run, wait up to this many seconds for other "
                             "processes to go quiet (default 3; --quick 1; 0: don't wait)")
    parser.add_argument("--etcd", default=hi.ETCD, help=f"the etcd binary (default {hi.ETCD})")
    hi.add_run_options(parser, RESULTS)
    args = parser.parse_args(argv)
    hi.settle_run_timing(parser, args, duration=(2, 4), rounds=(1, 2), quiet_wait=(1, 3))
    if args.wrk_threads > min(args.connections):
        parser.error("--wrk-threads must not exceed the smallest connection count")
    only = [k for k in args.only.replace(" ", "").split(",") if k]
    unknown = [k for k in only if k not in ORDER]
    if unknown or not only:
        parser.error(f"--only: unknown scenario(s) {unknown}; choose from {','.join(ORDER)}")
    if not os.path.exists(hi.WRK):
        parser.error(f"wrk is not installed ({hi.WRK}): apt-get install wrk")
    needed = {"uvicorn": "uvicorn", "uvloop": "uvloop", "httptools": "httptools",
              "granian": "granian"}
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        parser.error(f"missing {', '.join(missing)}: pip install '.[bench]'")
    have_etcd = os.path.isfile(args.etcd) and os.access(args.etcd, os.X_OK)
    if "d" in only and not have_etcd:
        print(f"NOTE: {args.etcd} is missing (apt-get install etcd-server): (d) is skipped "
              "and nothing is compared with it.")
        only.remove("d")
    only = [k for k in ORDER if k in only]

    signal.signal(signal.SIGTERM, hi.sigterm)
    print(f"Conflux server-stack benchmark: Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {hi.wrk_version()}, "
          f"etcd {hi.etcd_version(args.etcd) if have_etcd else 'MISSING'}, "
          f"{'quick' if args.quick else 'full'} run")
    print(f"{args.workers} workers in every stack ((a): x {args.threads} threads), wrk "
          f"-t{args.wrk_threads} -c{{{','.join(map(str, args.connections))}}}, {args.rounds} "
          f"round(s) of {args.duration} s per run, 127.0.0.1 only; {versions()}")
    print(flush=True)

    t_start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="conflux-stack-bench-", dir=args.tmpdir)
    ingest = hi._load_ingest()
    results, servers, verify = [], {}, {}
    try:
        with contextlib.ExitStack() as stack:
            singles, _ = ingest.Workload(args.seed).batch(hi.N_SINGLE)
            bodies = hi.write_body_files(workdir, {
                "single_json": [hi.compact_json(op) for op in singles],
                "etcd_put": [hi.etcd_put_body(op) for op in singles]})
            json_h = {"Content-Type": "application/json"}
            scenarios = []
            for key in only:
                if key == "d":
                    scenarios.append(hi.Scenario("d", "(d) etcd /v3/kv/put, durable", "d",
                                                 "etcd_put", 1, json_h, 200,
                                                 path="/v3/kv/put"))
                else:
                    scenarios.append(hi.Scenario(key, STACKS[key][0], key, "single_json", 1,
                                                 json_h, 200))

            for sc in scenarios:
                print(f"  starting {sc.label} ...", flush=True)
                if sc.key == "d":
                    make = lambda: hi.etcd_server(workdir, args.etcd)  # noqa: E731
                else:
                    make = lambda k=sc.key: stack_server(k, args, workdir)  # noqa: E731
                server = hi.start_retrying(make)
                stack.callback(server.stop)
                servers[sc.key] = server
                if getattr(server, "store_path", None):
                    server.store = lmdb.open(server.store_path, readonly=True, max_dbs=0,
                                             map_size=1 << 30, lock=False)
                    stack.callback(server.store.close)

            scripts, caps = {}, {}
            for sc in scenarios:
                cap = math.ceil(args.duration * hi.MAX_SINGLE_RATE / args.wrk_threads)
                caps[sc.key] = cap * args.wrk_threads
                scripts[sc.key] = os.path.join(workdir, f"{sc.key}.lua")
                hi.write_lua(scripts[sc.key], bodies["paths"][sc.bodies], sc.path, cap,
                             args.wrk_threads, sc.headers)
            sent = {sc.key: 0 for sc in scenarios}
            for sc in scenarios:
                server = servers[sc.key]
                hi.sanity(sc, server.url, hi.etcd_put_body(singles[-1]) if sc.key == "d"
                          else hi.compact_json(singles[-1]))
                sent[sc.key] += 1
                warm = hi.run_wrk(scripts[sc.key], server.url, args.wrk_threads,
                                  max(args.connections), 1, server)
                sent[sc.key] += warm["requests"]
                print(f"  warm-up {sc.label}: "
                      f"{warm['requests'] / (warm['duration_us'] / 1e6):,.0f} req/s"
                      + (f", {warm['errors']} errors" if warm["errors"] else ""), flush=True)

            runs = {(sc.key, c): [] for sc in scenarios for c in args.connections}
            for rnd in range(args.rounds):
                order = scenarios if rnd % 2 == 0 else scenarios[::-1]
                for conns in args.connections:
                    for sc in order:
                        server = servers[sc.key]
                        quiet = hi.wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
                        r = hi.run_wrk(scripts[sc.key], server.url, args.wrk_threads, conns,
                                       args.duration, server)
                        r["round"], r["quiet_wait"] = rnd + 1, quiet
                        runs[(sc.key, conns)].append(r)
                        sent[sc.key] += r["requests"]
                        print(f"  round {rnd + 1}/{args.rounds} -c{conns:<3} {sc.label:<36} "
                              f"{r['requests'] / (r['duration_us'] / 1e6):>9,.0f} req/s  "
                              f"p50 {r['p50_us'] / 1000:6.2f} ms  p99 "
                              f"{r['p99_us'] / 1000:6.2f} ms  other {r['other_cores']:.2f}"
                              + (f"  {r['errors']} ERRORS" if r["errors"] else ""),
                              flush=True)
            for sc in scenarios:
                for conns in args.connections:
                    results.append(hi.summarise(sc, conns, runs[(sc.key, conns)],
                                                caps[sc.key]))

            # nothing answered 2xx is missing (non-2xx answers count as wrk errors)
            for sc in scenarios:
                server = servers[sc.key]
                if sc.key == "d":
                    _, _, data = hi.http("POST", server.url + "/v3/kv/range",
                                         json.dumps({"key": base64.b64encode(b"-").decode()})
                                         .encode(), json_h)
                    stored = int(json.loads(data)["header"]["revision"]) - 1
                elif server.store is not None:
                    stored = stored_ops(server)
                else:
                    continue
                verify[sc.key] = {"answered_ops": sent[sc.key], "stored_ops": stored,
                                  "ok": stored >= sent[sc.key]}
    finally:
        log_tails = {name: s.log_tail(15) for name, s in servers.items()}
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    # -- the table ---------------------------------------------------------------------------
    by = {(r["scenario"], r["connections"]): r for r in results}
    print()
    print(f"{'stack':<36} {'conns':>5} {'req/s':>8} {'x etcd':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>17} {'cs/req':>6} {'wrk us':>6} {'other':>5} {'req/commit':>10}")
    print("-" * 118)
    for r in results:
        d = by.get(("d", r["connections"]))
        x = f"{r['requests_per_s'] / d['requests_per_s']:.2f}" if d else "-"
        flags = (f"  {r['errors']} errors" if r["errors"] else "") + \
                ("  CAPPED" if r["capped"] else "")
        cpu = (f"{hi.fmt(r['server_cpu_us_per_request'])} "
               f"({hi.fmt(r['server_sys_us_per_request'])} sys)")
        print(f"{r['label']:<36} {r['connections']:>5} {hi.fmt(r['requests_per_s']):>8} "
              f"{x:>6} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {cpu:>17} "
              f"{hi.fmt(r['server_switches_per_request'], 1):>6} "
              f"{hi.fmt(r['wrk_cpu_us_per_request']):>6} {r['other_cores']:>5.2f} "
              f"{hi.fmt(r['requests_per_commit'], 1):>10}{flags}")
    print("CPU us/req: user+system CPU of the server's processes per request (system in "
          "brackets); cs/req: their voluntary context switches per request; wrk us: the load "
          "generator's CPU per request; other: CPUs kept busy by anything else meanwhile; "
          "req/commit: requests answered per synced LMDB commit.")
    noisy = [r for r in results if r["other_cores"] > hi.QUIET_CORES]
    if noisy:
        print(f"WARNING: other work kept more than {hi.QUIET_CORES} CPUs busy during "
              f"{len(noisy)} measurement(s) (up to {max(r['other_cores'] for r in noisy):.2f} "
              "CPUs): compare ratios, or rerun on a quiet machine.")
    if verify:
        print()
        for key, v in verify.items():
            print(f"{key}: {v['stored_ops']:,} ops stored >= {v['answered_ops']:,} answered "
                  f"2xx: {'yes' if v['ok'] else 'NO'}")

    # -- the verdict -------------------------------------------------------------------------
    checks = []
    for key in ("e_uvicorn", "f_uvicorn", "e_granian", "f_granian", "b", "c", "c2", "a"):
        rows = [(by.get((key, c)), by.get(("d", c))) for c in args.connections]
        rows = [(r, d) for r, d in rows if r and d]
        if not rows:
            continue
        ratios = [r["requests_per_s"] / d["requests_per_s"] for r, d in rows]
        worst_cpu = max(r["server_cpu_us_per_request"] for r, _ in rows)
        top = max(args.connections)
        r_top, d_top = by.get((key, top)), by.get(("d", top))
        p99_ok = r_top["p99_ms"] <= d_top["p99_ms"] if r_top and d_top else None
        ok = min(ratios) >= TARGET_OVER_ETCD and worst_cpu <= TARGET_CPU_US
        bare = {"e_uvicorn": "b", "f_uvicorn": "b", "e_granian": "c", "f_granian": "c"}.get(key)
        of_bare = [by[(key, c)]["requests_per_s"] / by[(bare, c)]["requests_per_s"]
                   for c in args.connections if bare and (key, c) in by and (bare, c) in by]
        checks.append({
            "scenario": key, "label": STACKS[key][0], "durable": STACKS[key][2] is not None,
            "x_etcd": {c: round(x, 2) for c, x in zip(args.connections, ratios)},
            "worst_cpu_us_per_request": worst_cpu,
            "p99_at_top_le_etcd": p99_ok,
            "x_own_bare": [round(x, 2) for x in of_bare],
            "meets": ok,
        })
    if checks:
        print()
        print(f"target: >= {TARGET_OVER_ETCD} x etcd req/s at "
              f"{' and '.join(map(str, args.connections))} connections, <= "
              f"{TARGET_CPU_US:.0f} us server CPU per request")
        for ch in checks:
            xs = ", ".join(f"{x:.2f} x at -c{c}" for c, x in ch["x_etcd"].items())
            print(f"  {ch['label']:<36} {xs}; CPU {ch['worst_cpu_us_per_request']:.0f} us/req"
                  + (f"; {'/'.join(f'{x:.2f}' for x in ch['x_own_bare'])} x its bare stack"
                     if ch["x_own_bare"] else "")
                  + (f"; p99 at -c{max(args.connections)} "
                     f"{'<=' if ch['p99_at_top_le_etcd'] else '>'} etcd's"
                     if ch["p99_at_top_le_etcd"] is not None else "")
                  + ("  MEETS" if ch["meets"] else "  misses")
                  + ("" if ch["durable"] else "  (not durable)"))
    if args.keep_logs:
        for name, tail in log_tails.items():
            print(f"\n--- {name} log (tail) ---\n{tail}")
    print()
    print(f"wall time {elapsed:,.0f} s")

    hi.write_results(args.out, {
        "benchmark": "server_stack",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": ingest._git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "wrk": hi.wrk_version(),
        "etcd": hi.etcd_version(args.etcd) if have_etcd else None,
        "versions": versions(),
        "settings": {"quick": args.quick, "duration_s": args.duration, "rounds": args.rounds,
                     "connections": args.connections, "wrk_threads": args.wrk_threads,
                     "workers": args.workers, "gthread_threads": args.threads,
                     "single_bodies": hi.N_SINGLE, "mean_body_bytes": bodies["mean_bytes"],
                     "seed": args.seed, "wrk_timeout": hi.WRK_TIMEOUT,
                     "quiet_wait": args.quiet_wait},
        "targets": {"x_etcd": TARGET_OVER_ETCD, "cpu_us_per_request": TARGET_CPU_US},
        "results": results,
        "verify": verify,
        "verdict": checks,
        "wall_seconds": round(elapsed, 1),
    })
    return 0 if all(v["ok"] for v in verify.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
