"""``without_gc``: Python's cyclic garbage collector paused around work that builds many
objects and no cycles (an import, a group commit of the daemon's commit service).

A module of its own, below both of them: the importer is library code and must not import
the daemon to get it.
"""

from __future__ import annotations

import functools
import gc

__all__ = ["without_gc"]


def without_gc(fn):
    """Run ``fn`` with the cyclic garbage collector paused. PERF: an import holds every parsed
    document (a few million objects for a big tree) and creates an operation per field; with
    the collector on, its full passes over all of them took two thirds of the import's time.
    The commit service's groups hold thousands of operations each: with the collector on, a
    group of eight 1,000-op batches costs about 1.1 x as much (bench/commit_service.py).
    Nothing either builds is cyclic garbage; what they let go of is freed by reference
    counting as they go."""
    @functools.wraps(fn)
    def paused(*args, **kwargs):
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return paused
