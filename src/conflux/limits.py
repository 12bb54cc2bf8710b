"""The bounds Conflux puts on what it is sent, and the one check of a parsed value against
them (docs/security.md, "Limits").

Every parser entry (REST bodies in JSON and msgpack, the import formats, values on the
command line) hands what it parsed to ``check_parsed`` before anything else reads it, so a
hostile nesting depth or a YAML alias bomb is refused before it is walked recursively,
copied or encoded. The size of each field value is the engine's to check (``[limits]
max_value_bytes`` in ``config.toml``), since every write passes through it.
"""

from __future__ import annotations

from conflux.kernel import core
from conflux.errors import InputError

__all__ = ["MAX_NESTING", "MAX_VALUE_NESTING", "MAX_EXPANSION", "DEFAULT_MAX_VALUE_BYTES",
           "check_parsed", "value_problem"]

#: Levels of lists and maps in one request body, one file's documents or one command-line
#: value: room for a batch's own levels around values of ``MAX_VALUE_NESTING``.
MAX_NESTING = 100
#: Levels of lists and maps in one field value (a map field's JSON), the value itself the
#: first: ``schema._MAX_MAP_DEPTH`` and the compiled fast path allow as many.
MAX_VALUE_NESTING = 64
#: What one file's documents may hold once YAML aliases are expanded (bytes, as
#: ``value_extent`` counts them): this, or the file's own size if that is more. Without
#: aliases a file never holds more than its size.
MAX_EXPANSION = 16 << 20
#: The default of ``[limits] max_value_bytes``: the largest field value, as stored.
DEFAULT_MAX_VALUE_BYTES = 1 << 20

_UNBOUNDED = (1 << 62)


def check_parsed(value, what: str, *, budget: int = _UNBOUNDED, error=InputError) -> None:
    """Refuse ``value`` (``error``, naming ``what``) if it nests deeper than ``MAX_NESTING``
    levels or, with aliases expanded, holds more than ``budget`` bytes."""
    found = core.value_extent(value, MAX_NESTING, budget)
    if found == -1:
        raise error(f"{what} is nested deeper than {MAX_NESTING} levels of lists and maps")
    if found == -2:
        raise error(f"{what} holds more than {budget:,} bytes once its aliases are expanded "
                    f"(at most its own size, or {MAX_EXPANSION >> 20} MiB)")


def value_problem(value, max_bytes: int) -> str | None:
    """Why a field value cannot be taken (too deep, or bigger than ``max_bytes`` counting
    every alias expanded), or None; cheap either way: the walk stops at the bound."""
    found = core.value_extent(value, MAX_VALUE_NESTING, max_bytes)
    if found == -1:
        return f"the value is nested deeper than {MAX_VALUE_NESTING} levels of lists and maps"
    if found == -2:
        return (f"the value is larger than {max_bytes:,} bytes, the most a field value may be "
                "(config.toml: [limits] max_value_bytes)")
    return None
