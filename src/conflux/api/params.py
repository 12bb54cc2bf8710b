"""What every resource shares: its context (the engine, the commit path, the body limits)
and the query parameters' readers."""

from __future__ import annotations

from dataclasses import dataclass

from conflux.api.media import BodyBudget
from conflux.errors import InputError


class Resource:
    """A REST resource over the shared context (Falcon calls its ``on_get``/``on_post``)."""

    def __init__(self, ctx: "Context"):
        self.ctx = ctx


@dataclass
class Context:
    engine: object
    committer: object
    body_limit: int
    bodies: BodyBudget


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
