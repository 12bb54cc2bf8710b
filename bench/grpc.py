"""gRPC against REST: the same writes through the daemon's two doors, in one run.

One ``conflux daemon --grpc-port`` on loopback (the bench schema, one API key, a fresh store)
takes, in interleaved rounds (the order reversed every other round, so a noisy neighbour hits
both alike):

(1) one op per call: ``SubmitOperation`` (gRPC) against ``POST /v1/ops`` (REST, JSON), at 8
    and at 64 calls in flight;
(2) 1,000-op batches: ``SubmitBatch`` against ``POST /v1/ops`` with ``{"ops": [...]}``, at 8.

Both are driven by the same kind of load generator, a separate process with one asyncio event
loop and N concurrent callers cycling through the same pre-built requests (bench/ingest.py's
workload): ``grpc.aio`` for gRPC; for REST, keep-alive HTTP/1.1 connections written and read
by hand (a request's bytes are built once). Both clients are Python, so a figure is the
daemon's cost plus a Python client's; the server's CPU per op (every process of the daemon,
from /proc) and the client's are printed apart. After the run the log must hold every op that
was answered.

Run ``python bench/grpc.py`` (2 rounds of 5 s per measurement, about a minute and a half) or
``--quick`` (1 round of 2 s). Table to stdout, figures to ``bench/results/grpc.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "grpc.json")

# this file's name is the gRPC package's: its directory must not shadow the package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

if importlib.util.find_spec("conflux") is None:  # an installed Conflux first; else this tree
    sys.path.insert(0, ROOT)


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


API_KEY = "bench-grpc-key-0123456789abcdef"
BATCH = 1000
N_SINGLE = 20_000
N_BATCHES = 16


# -- the load generator (a process of its own) --------------------------------------------------

def _client_main(argv) -> int:
    """``--client MODE ADDRESS CONNS SECONDS BODIES``: drive one measurement, print its
    figures as JSON."""
    mode, address, conns, seconds, bodies = argv[0], argv[1], int(argv[2]), float(argv[3]), \
        argv[4]
    with open(bodies) as fh:
        ops = json.load(fh)
    if mode.startswith("grpc"):
        figures = asyncio.run(_grpc_load(mode, address, conns, seconds, ops))
    else:
        figures = asyncio.run(_rest_load(mode, address, conns, seconds, ops))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(figures))
    return 0


async def _drive(conns: int, seconds: float, call, count):
    """``conns`` callers each calling ``call(i)`` in turn until ``seconds`` have passed;
    requests, ops answered, latencies."""
    latencies, done = [], [0, 0]
    stop = time.monotonic() + seconds

    async def caller(k):
        i = k
        while time.monotonic() < stop:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)
            done[0] += 1
            done[1] += count(i)
            i += conns
    started = time.monotonic()
    await asyncio.gather(*(caller(k) for k in range(conns)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {"requests": done[0], "ops": done[1], "seconds": elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else None,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else None}


async def _grpc_load(mode, address, conns, seconds, ops):
    import grpc

    from conflux.rpc import conflux_pb2 as pb
    from conflux.rpc import conflux_pb2_grpc as pb_grpc

    def request(op):
        if op["type"] == "set_field":
            return pb.SubmitRequest(set_field=pb.SetFieldOp(
                entity_id=op["entity_id"], field=op["field"],
                value_json=json.dumps(op["value"])))
        return pb.SubmitRequest(add_elements=pb.ElementsOp(
            entity_id=op["entity_id"], field=op["field"],
            elements_json=json.dumps(op["elements"])))

    metadata = (("x-api-key", API_KEY),)
    async with grpc.aio.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.ConfluxServiceStub(channel)
        if mode == "grpc_single":
            requests = [request(op) for op in ops]

            async def call(i):
                await stub.SubmitOperation(requests[i % len(requests)], metadata=metadata)
            return await _drive(conns, seconds, call, lambda i: 1)
        batches = [pb.SubmitBatchRequest(operations=[request(op) for op in batch])
                   for batch in ops]

        async def call(i):
            await stub.SubmitBatch(batches[i % len(batches)], metadata=metadata)
        return await _drive(conns, seconds, call, lambda i: BATCH)


async def _rest_load(mode, address, conns, seconds, ops):
    host, port = address.rsplit(":", 1)
    if mode == "rest_single":
        bodies = [json.dumps(op, separators=(",", ":")).encode() for op in ops]
    else:
        bodies = [json.dumps({"ops": batch}, separators=(",", ":")).encode() for batch in ops]
    requests = [b"POST /v1/ops HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (address.encode(), API_KEY.encode(), len(b), b) for b in bodies]
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(conns)]
    per = BATCH if mode == "rest_batch" else 1

    async def call(i):
        reader, writer = streams[i % conns]
        writer.write(requests[i % len(requests)])
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"REST answered {head[:200]!r}")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    try:
        return await _drive(conns, seconds, call, lambda i: per)
    finally:
        for _, writer in streams:
            writer.close()


# -- the run -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return _client_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per run")
    parser.add_argument("--results", default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (2.0 if args.quick else 5.0)

    hi = _load("conflux_bench_http_ingest", os.path.join(HERE, "http_ingest.py"))
    ingest = hi._load_ingest()
    from conflux.auth import hash_key
    from conflux.engine import Engine

    workdir = tempfile.mkdtemp(prefix="conflux-bench-grpc-")
    project = os.path.join(workdir, "project")
    Engine.init(project, hi.SCHEMA).close()
    with open(os.path.join(project, ".conflux", "api-keys.toml"), "w") as fh:
        fh.write(f'[[keys]]\nkey_hash = "{hash_key(API_KEY)}"\nactor_id = "bench-pipeline"\n'
                 'actor_class = "pipeline"\n')
    singles, _ = ingest.Workload(11).batch(N_SINGLE)
    wl = ingest.Workload(12)
    batches = [wl.batch(BATCH)[0] for _ in range(N_BATCHES)]
    files = {}
    for name, data in (("single", singles), ("batch", batches)):
        files[name] = os.path.join(workdir, f"{name}.json")
        with open(files[name], "w") as fh:
            json.dump(data, fh)

    grpc_port = hi.free_port()
    server = hi.conflux_server("conflux", project, argparse.Namespace(workers=2, threads=8),
                               workdir)
    server.cmd += ["--grpc-port", str(grpc_port)]
    rest = server.url.rsplit("//", 1)[1]
    plan = [("grpc_single", 8), ("rest_single", 8), ("grpc_single", 64), ("rest_single", 64),
            ("grpc_batch", 8), ("rest_batch", 8)]
    labels = {"grpc_single": "SubmitOperation, 1 op", "rest_single": "POST /v1/ops, 1 op",
              "grpc_batch": "SubmitBatch, 1,000 ops", "rest_batch": "POST /v1/ops, 1,000 ops"}
    totals = {key: [] for key in plan}
    answered = 0
    print(f"Conflux gRPC vs REST: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{rounds} round(s) of {duration:g} s, daemon: 2 workers + conflux-grpc, 127.0.0.1",
          flush=True)
    server.start()
    try:
        for r in range(rounds):
            for mode, conns in (plan if r % 2 == 0 else list(reversed(plan))):
                address = f"127.0.0.1:{grpc_port}" if mode.startswith("grpc") else rest
                bodies = files["batch" if mode.endswith("batch") else "single"]
                before = server.cpu_seconds()
                run = subprocess.run([sys.executable, os.path.abspath(__file__), "--client",
                                      mode, address, str(conns), str(duration), bodies],
                                     capture_output=True, text=True, env=hi.child_env(),
                                     timeout=duration + 120)
                after = server.cpu_seconds()
                if run.returncode != 0:
                    raise RuntimeError(f"{mode} -c{conns}: {run.stderr[-2000:]}")
                figures = json.loads(run.stdout)
                figures["server_cpu_s"] = (after[0] + after[1]) - (before[0] + before[1])
                totals[(mode, conns)].append(figures)
                answered += figures["ops"]
                print(f"  round {r + 1}/{rounds} -c{conns:<3} {labels[mode]:<24} "
                      f"{figures['ops'] / figures['seconds']:>10,.0f} ops/s", flush=True)
        stored = Engine(project).last_seq()
    finally:
        server.stop()
    rows = {}
    print(f"\n{'measurement':<34}{'conns':>6}{'req/s':>10}{'ops/s':>10}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'server us/op':>14}{'client us/op':>14}")
    print("-" * 106)
    for (mode, conns), runs in totals.items():
        seconds = sum(f["seconds"] for f in runs)
        ops = sum(f["ops"] for f in runs)
        row = {"mode": mode, "conns": conns, "req_s": sum(f["requests"] for f in runs) / seconds,
               "ops_s": ops / seconds,
               "p50_ms": sorted(f["p50_ms"] for f in runs)[len(runs) // 2],
               "p99_ms": sorted(f["p99_ms"] for f in runs)[len(runs) // 2],
               "server_us_per_op": sum(f["server_cpu_s"] for f in runs) / ops * 1e6,
               "client_us_per_op": sum(f["client_cpu_s"] for f in runs) / ops * 1e6}
        rows[f"{mode}_{conns}"] = row
        print(f"{labels[mode]:<34}{conns:>6}{row['req_s']:>10,.0f}{row['ops_s']:>10,.0f}"
              f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['server_us_per_op']:>14.1f}"
              f"{row['client_us_per_op']:>14.1f}")
    print()
    for kind, conns in (("single", 8), ("single", 64), ("batch", 8)):
        g, r = rows[f"grpc_{kind}_{conns}"], rows[f"rest_{kind}_{conns}"]
        print(f"gRPC / REST, {kind} at -c{conns}: {g['ops_s'] / r['ops_s']:.2f} x ops/s, "
              f"server CPU per op {g['server_us_per_op'] / r['server_us_per_op']:.2f} x")
    ok = stored >= answered
    print(f"\nnothing answered is missing: {stored:,} ops logged >= {answered:,} answered: "
          f"{'yes' if ok else 'NO'}")
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as fh:
        json.dump({"rounds": rounds, "duration_s": duration, "rows": rows,
                   "logged": stored, "answered": answered}, fh, indent=2)
    print(f"wrote {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
