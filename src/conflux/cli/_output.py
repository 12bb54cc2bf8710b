"""Shared pieces of the commands: opening the project, the actor, printing."""

from __future__ import annotations

import sys

from conflux.errors import InputError

# NOTE: every command module imports this one to build its parser, which must stay cheap
# (``conflux --help``, the man page): the engine, the actors and json are imported by the
# functions that use them.


def open_engine(args):
    """The project's engine; ``main`` closes it when the command is done."""
    from conflux.engine import Engine

    args.engine = Engine(args.dir)
    return args.engine


def add_actor(parser) -> None:
    parser.add_argument("--actor", metavar="[CLASS:]ID",
                        help="who is writing (default: $CONFLUX_ACTOR, else human:<login>)")


def actor_of(args):
    from conflux.actors import Actor, default_actor

    return Actor.parse(args.actor) if args.actor else default_actor()


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for programs")


def print_json(data) -> None:
    import json

    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def hlc_text(engine, hlc) -> str:
    return engine.core.hlc_format(hlc) if hlc else "-"


def show_value(engine, entity_id: str, field: str, value) -> str:
    spec = engine.schema.field(entity_id.partition(".")[0], field)
    return spec.format(value)


def table(rows: list[list[str]], indent: str = "  ") -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]
        out.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(out)


def parse_value(engine, entity_id: str, field: str, text: str, *, element: bool = False):
    """A command-line word as a value of the field's type (JSON for maps and whole lists)."""
    engine.schema.split_entity_id(entity_id)
    spec = engine.schema.field(entity_id.partition(".")[0], field)
    return spec.parse_text(text, element=element)


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``1 file``, ``3 files``."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)
