"""What every resource shares: its context (the engine, the commit path, the body limits, the
threads for slow work) and the query parameters' readers."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from conflux.api.media import BodyBudget
from conflux.errors import InputError


class Resource:
    """A REST resource over the shared context (Falcon awaits its ``on_get``/``on_post``)."""

    def __init__(self, ctx: "Context"):
        self.ctx = ctx


@dataclass
class Context:
    engine: object
    committer: object
    body_limit: int
    bodies: BodyBudget
    #: Threads for work that may take long or wait on a disk (git, a synced commit of its
    #: own, a whole environment's state, an export): it runs there, not on the event loop,
    #: which keeps answering the others meanwhile.
    pool: ThreadPoolExecutor

    async def blocking(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` in one of ``pool``'s threads, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def here_or_blocking(self, here: bool, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the event loop when ``here``, else as ``blocking``."""
        if here:
            return fn(*args, **kwargs)
        return await self.blocking(fn, *args, **kwargs)


def env_param(req, engine) -> str:
    env = req.get_param("env")
    if env is None:  # "?env=" names no environment: 404, not the base
        env = engine.schema.base_env
    engine.schema.env_chain(env)  # 404 for an unknown environment
    return env


def or_default(value, default):
    """A query parameter's value, ``default`` only when it is absent (an empty value names
    nothing and is refused downstream, not taken for the default)."""
    return default if value is None else value


def flag_param(req, name: str) -> bool:
    value = req.get_param(name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InputError(f"{name} must be true or false, got {value!r}", field=name)


def int_param(req, name: str, default: int, low: int, high: int) -> int:
    value = req.get_param(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(value)
