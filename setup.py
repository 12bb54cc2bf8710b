"""Build of Conflux: the Python package plus the compiled merge core from ``engine/``.

``engine/`` installs as the subpackage ``conflux.engine`` (``package_dir``), so ``conflux`` is
the only top-level import name. The Cython directives are set here, once: bounds checks and
wraparound off, C division, no None checks. ``CONFLUX_DEBUG_BUILD=1`` turns the checks and line
tracing back on. A failed compile degrades to a warning and the pure-Python core, never a broken
install; CI demands the compiled core with ``CONFLUX_REQUIRE_EXTENSIONS=1``.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.extension import Extension

DEBUG = os.environ.get("CONFLUX_DEBUG_BUILD") == "1"
REQUIRED = os.environ.get("CONFLUX_REQUIRE_EXTENSIONS") == "1"

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": not DEBUG,
    "linetrace": DEBUG,
    "embedsignature": True,
}


class OptionalBuildExt(build_ext):
    """Build the compiled core; on failure warn and leave the pure-Python twin in charge."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure degrades the same way
            self._failed(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def _failed(self, exc):
        if REQUIRED:
            raise exc
        print(f"WARNING: Conflux's compiled core was not built ({exc}); Conflux will run on "
              "its pure-Python core.", file=sys.stderr)


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRED:
            raise
        print("WARNING: Cython is not installed; building Conflux without its compiled core.",
              file=sys.stderr)
        return []
    macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    flags = ["-O0", "-g"] if DEBUG else ["-O3"]
    ext = Extension("conflux.engine._core_c", ["engine/_core_c.pyx"],
                    define_macros=macros, extra_compile_args=flags)
    return cythonize([ext], compiler_directives=DIRECTIVES, quiet=True,
                     build_dir="build/cython")


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
