"""The ``conflux`` command line: a thin shell over the engine API.

``get_parser()`` builds the whole argparse tree without side effects (the man page is built
from it); ``main(argv)`` runs one command and returns its exit status: 0, 2 for bad input, 1
for other failures, with one line on stderr naming what was wrong.
"""

from __future__ import annotations

import argparse
import os
import sys

from conflux import __version__
from conflux.errors import ConfluxError

from conflux.cli import (audit, auth, blame, conflicts, daemon, delete, diff, export, get,
                         import_, init, keys, log, milestone, promote, rbac, resolve,
                         set as set_cmd, status, watch)

__all__ = ["get_parser", "main", "run", "COMMANDS"]


class UsageError(Exception):
    """A command line argparse could not read (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and options and positionals in any order within a
    command (``conflux get E --env staging FIELD``, ``conflux set E F --add 1 2``)."""

    intermixed = False
    _parsing = False
    _epilog = None

    @property
    def epilog(self):
        """An epilog may be a function, called when help is shown: the import and export
        commands list the installed formats without every command paying for the lookup."""
        return self._epilog() if callable(self._epilog) else self._epilog

    @epilog.setter
    def epilog(self, value):
        self._epilog = value

    def parse_known_args(self, args=None, namespace=None):
        if self.intermixed and not self._parsing:
            self._parsing = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._parsing = False
        return super().parse_known_args(args, namespace)

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message}")


#: Every command, in the order ``--help`` lists them.
COMMANDS = (init, import_, export, set_cmd, delete, get, log, blame, status, promote, conflicts,
            resolve, milestone, diff, watch, daemon, auth, rbac, keys, audit)


def get_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="conflux",
        description="Conflux: typed operations on infrastructure config, merged field by "
                    "field with CRDT rules, every change logged with actor and intent.",
        epilog="Run 'conflux COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"conflux {__version__}")
    parser.add_argument("--dir", default=os.environ.get("CONFLUX_PROJECT", "."),
                        metavar="PATH",
                        help="the project directory holding .conflux/ (default: the current "
                             "directory, or $CONFLUX_PROJECT)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for module in COMMANDS:
        module.add_parser(sub)
    for command in sub.choices.values():
        _intermix(command)
    return parser


def _intermix(parser: argparse.ArgumentParser) -> None:
    """Intermixed parsing for every leaf command (``conflux rbac check``'s too): argparse
    cannot intermix a parser that has subcommands of its own."""
    nested = [action for action in parser._actions
              if isinstance(action, argparse._SubParsersAction)]
    parser.intermixed = not nested
    for action in nested:
        for command in action.choices.values():
            _intermix(command)


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return args.handler(args) or 0
    except ConfluxError as exc:
        print(f"conflux {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"conflux {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into something that stopped reading (head, less): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        engine = getattr(args, "engine", None)
        if engine is not None:
            engine.close()


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
