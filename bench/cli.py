"""CLI start-up benchmark: how long a user waits for one ``conflux`` command.

Every figure is a fresh process started as a user starts it: the installed console script
(``conflux`` beside the Python running this script, e.g. ``.venv/bin/conflux``) in a project
made with ``examples/schema.toml`` in a temporary directory. In one run, interleaved round by
round (the order rotated each round, a first round thrown away), the median of ``--rounds``:

(a) ``python -c pass`` with the console script's own interpreter: the baseline, the least a
    Python command can take;
(b) ``conflux get route.api-v1``: target at most 4 x (a);
(c) ``conflux set route.api-v1 weight N``, a synced commit of one operation (N changes every
    round): target at most 5 x (a);
(d) ``conflux --help``, for context (it builds every command's parser);
(e) ``git commit -qam`` of a one-line change in a throwaway repository, for context: what a
    change costs where Conflux takes over from a config file in git.

``--compare NAME=PATH`` adds another build's console script (e.g. one installed from an
earlier commit into another virtualenv), measured in the same rounds on its own project, so
that before and after are side by side. Figures go to stdout and ``bench/results/cli.json``.

    .venv/bin/python bench/cli.py                 # about half a minute
    .venv/bin/python bench/cli.py --rounds 60 --compare before=/tmp/old-venv/bin/conflux

To see where a command's start goes: ``python -X importtime -c "from conflux.cli import
main; main(['get', 'route.api-v1'])" 2>&1 | sort -t'|' -k2 -n``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "cli.json")
SCHEMA = os.path.join(os.path.dirname(HERE), "examples", "schema.toml")
TARGETS = {"get": 4.0, "set": 5.0}


def interpreter_of(script: str) -> str:
    """The Python a console script runs on (its ``#!`` line)."""
    with open(script, "rb") as handle:
        first = handle.readline().decode()
    if not first.startswith("#!"):
        raise SystemExit(f"{script}: not a console script (no #! line)")
    return first[2:].strip().split()[0]


def environment(home: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONFLUX_", "PYTHON", "GIT_"))}
    env.update(CONFLUX_ACTOR="autoscaler:autoscaler-7", HOME=home, GIT_CONFIG_NOSYSTEM="1",
               GIT_CONFIG_GLOBAL=os.devnull, GIT_AUTHOR_NAME="Bench",
               GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="Bench",
               GIT_COMMITTER_EMAIL="bench@localhost")
    return env


def run(argv, cwd, env) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{done.stderr.decode().strip()}")


def make_project(conflux: str, path: str, env: dict) -> None:
    os.makedirs(path)
    run([conflux, "init", "--schema", SCHEMA], path, env)
    for words in (["service.checkout", "image", "registry.local/checkout:1.4.2"],
                  ["route.api-v1", "service", "checkout"], ["route.api-v1", "path", "/api"],
                  ["route.api-v1", "weight", "50"], ["route.api-v1", "timeout", "30s"]):
        run([conflux, "set", *words], path, env)


def make_git_repository(path: str, env: dict) -> str:
    os.makedirs(path)
    name = os.path.join(path, "routes.yaml")
    with open(name, "w") as handle:
        handle.writelines(f"route-{i}:\n  weight: 50\n  path: /api/{i}\n" for i in range(100))
    for argv in (["git", "init", "-q"], ["git", "config", "gc.auto", "0"],
                 ["git", "add", "routes.yaml"], ["git", "commit", "-qm", "routes"]):
        run(argv, path, env)
    return name


def one_line_change(name: str, value: int) -> None:
    with open(name) as handle:
        lines = handle.readlines()
    lines[1] = f"  weight: {value}\n"
    with open(name, "w") as handle:
        handle.writelines(lines)


def timed(argv, cwd, env) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode})")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conflux", default=os.path.join(os.path.dirname(sys.executable),
                                                          "conflux"),
                        help="the console script to measure (default: the one beside this "
                             "Python)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="another build's console script, measured in the same rounds")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    builds = {"conflux": os.path.abspath(args.conflux)}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or name in builds:
            parser.error(f"--compare {item!r}: give NAME=PATH with a new NAME")
        builds[name] = os.path.abspath(path)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    python = interpreter_of(builds["conflux"])
    work = tempfile.mkdtemp(prefix="conflux-bench-cli-", dir=args.tmpdir)
    try:
        env = environment(work)
        print(f"Conflux CLI start-up benchmark: Python {platform.python_version()}, "
              f"{os.cpu_count()} CPUs, {args.rounds} rounds", flush=True)
        runs = {"python -c pass": ([python, "-c", "pass"], work)}
        for name, conflux in builds.items():
            project = os.path.join(work, f"project-{name}")
            make_project(conflux, project, env)
            runs[f"{name} get"] = ([conflux, "get", "route.api-v1"], project)
            runs[f"{name} set"] = ([conflux, "set", "route.api-v1", "weight", None], project)
            runs[f"{name} --help"] = ([conflux, "--help"], project)
        repository = os.path.join(work, "git")
        routes = make_git_repository(repository, env)
        runs["git commit"] = (["git", "commit", "-qam", "weight"], repository)
        samples: dict[str, list[float]] = {key: [] for key in runs}
        keys = list(runs)
        for rnd in range(args.rounds + 1):
            shift = rnd % len(keys)
            for key in keys[shift:] + keys[:shift]:
                command, cwd = runs[key]
                if key == "git commit":
                    one_line_change(routes, rnd)
                command = [str(rnd % 100) if word is None else word for word in command]
                seconds = timed(command, cwd, env)
                if rnd:  # the first round warms the page cache and is not counted
                    samples[key].append(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(samples["python -c pass"])
    figures = {}
    print()
    print(f"  {'command':<28} {'median':>9} {'x python':>9}   target")
    for key, values in samples.items():
        median = statistics.median(values)
        ratio = median / base
        target = TARGETS.get(key.rsplit(" ", 1)[-1]) if key.startswith("conflux ") else None
        figures[key] = {"median_ms": round(1000 * median, 2),
                        "min_ms": round(1000 * min(values), 2),
                        "ratio_to_python": round(ratio, 2), "target_ratio": target,
                        "met": None if target is None else ratio <= target,
                        "samples_ms": [round(1000 * v, 2) for v in values]}
        verdict = "" if target is None else (f"<= {target:g} x: "
                                             f"{'met' if ratio <= target else 'MISSED'}")
        print(f"  {key:<28} {1000 * median:>6.1f} ms {ratio:>8.2f}x   {verdict}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"figures": figures, "builds": builds, "rounds": args.rounds,
                   "python": platform.python_version(), "cpus": os.cpu_count()}, handle,
                  indent=2)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
