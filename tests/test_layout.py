"""The source tree never shadows the installed package.

Python puts the working directory first on ``sys.path`` for ``python -c``, ``python -m`` and
the daemons the benchmarks start. The package lives under ``src/`` so that, run from the root
of a clone, ``import conflux`` finds the installed package with its compiled core rather than
a source copy without one.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

PROBE = ("import conflux, conflux.kernel as e, conflux.cli; "
         "print(conflux.__file__); print(e.IMPLEMENTATION)")


def _from_root(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_import_from_the_repository_root_finds_the_installed_package():
    out = _from_root("-c", PROBE)
    assert out.returncode == 0, out.stderr
    path, implementation = out.stdout.split()
    assert not path.startswith(str(ROOT / "src")), path
    assert "site-packages" in path
    assert implementation == "c"


def test_module_entry_points_run_from_the_repository_root():
    # ``python -m`` puts the working directory first on sys.path, as gunicorn's workers do
    out = _from_root("-m", "conflux", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("conflux ")


def test_no_package_at_the_repository_root():
    assert not (ROOT / "conflux").exists()
    assert (ROOT / "src" / "conflux" / "__init__.py").is_file()
