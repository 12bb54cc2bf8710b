"""Build of Conflux: the Python package plus the compiled merge core from ``kernel/``.

``kernel/`` installs as the subpackage ``conflux.kernel`` (``package_dir``), so ``conflux`` is
the only top-level import name. The Cython directives are set here, once: bounds checks and
wraparound off, C division, no None checks. ``CONFLUX_DEBUG_BUILD=1`` turns the checks and line
tracing back on. A failed compile degrades to a warning and the pure-Python core, never a broken
install; CI demands the compiled core with ``CONFLUX_REQUIRE_EXTENSIONS=1``.
"""

import os
import shutil
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
    # NOTE: Cython looks for a module's own .pxd under its full name (conflux/kernel/), but
    # kernel/ only becomes conflux.kernel when installed; show it the .pxd where it looks.
    shadow = os.path.join("build", "cython", "pxd", "conflux", "kernel")
    os.makedirs(shadow, exist_ok=True)
    for package in (os.path.dirname(shadow), shadow):
        open(os.path.join(package, "__init__.pxd"), "a").close()
    shutil.copyfile(os.path.join("kernel", "_core_c.pxd"), os.path.join(shadow, "_core_c.pxd"))
    flags = ["-O0", "-g"] if DEBUG else ["-O3"]
    ext = Extension("conflux.kernel._core_c", ["kernel/_core_c.pyx"],
                    define_macros=macros, extra_compile_args=flags)
    return cythonize([ext], compiler_directives=DIRECTIVES, quiet=True,
                     build_dir=os.path.join("build", "cython"),
                     include_path=[os.path.join("build", "cython", "pxd")])


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
