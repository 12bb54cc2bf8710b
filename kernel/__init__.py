"""Conflux's merge core: the compiled twin when it is built, else the pure-Python one.

Both twins export the same names (``__all__`` of ``_core_py``). The compiled one is preferred;
when it is missing Conflux warns once and runs on the pure-Python twin, and ``conflux status``
says which core is in use. ``CONFLUX_REQUIRE_EXTENSIONS=1`` (set by CI) turns the fallback into
an error, so a broken build cannot pass as the fallback. ``CONFLUX_CORE=py`` picks the
pure-Python twin on purpose (benchmarks, debugging).
"""

import os
import warnings

from conflux.errors import CoreMissing

from . import _core_py

try:
    from . import _core_c
except ImportError as exc:  # not built, or built for another Python
    _core_c = None
    _import_error = exc
else:
    _import_error = None

if _core_c is None and os.environ.get("CONFLUX_REQUIRE_EXTENSIONS") == "1":
    raise CoreMissing(f"the compiled core conflux.kernel._core_c did not load ({_import_error}); "
                      "build it with 'pip install .' or unset CONFLUX_REQUIRE_EXTENSIONS")

if os.environ.get("CONFLUX_CORE") == "py" or _core_c is None:
    if _core_c is None:
        warnings.warn(f"Conflux's compiled core is not available ({_import_error}); running on "
                      "the pure-Python core, which is several times slower", RuntimeWarning,
                      stacklevel=2)
    core = _core_py
else:
    core = _core_c

IMPLEMENTATION = core.IMPLEMENTATION


def op_parts(op) -> list:
    """What an operation writes: a promotion's field operations, else the operation itself."""
    return op.children if op.children else [op]

TWINS = {"py": _core_py, **({"c": _core_c} if _core_c is not None else {})}

__all__ = ["core", "IMPLEMENTATION", "TWINS", "op_parts"]
