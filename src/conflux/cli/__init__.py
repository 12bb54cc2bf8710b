"""The ``conflux`` command line: a thin shell over the engine API.

``get_parser()`` builds the whole argparse tree without side effects (the man page is built
from it); ``main(argv)`` runs one command and returns its exit status: 0, 2 for bad input, 1
for other failures, with one line on stderr naming what was wrong.

A command module defines ``add_parser(sub)`` and its handlers. Importing it must stay cheap
(``main`` imports only the module of the command it runs, ``--help`` all of them): what a
handler alone needs (the engine, HTTP, git, formats, signatures) is imported in the handler.
"""

from __future__ import annotations

import argparse
import os
import sys

from conflux import __version__
from conflux.errors import ConfluxError

__all__ = ["get_parser", "main", "run", "COMMANDS"]

#: Every command, in the order ``--help`` lists them, and its module in ``conflux.cli``.
_MODULES = {"init": "init", "import": "import_", "export": "export", "set": "set",
            "delete": "delete", "move": "move", "tree": "tree", "get": "get", "log": "log", "blame": "blame",
            "status": "status", "promote": "promote", "conflicts": "conflicts",
            "resolve": "resolve", "milestone": "milestone", "rollback": "rollback", "diff": "diff", "watch": "watch",
            "daemon": "daemon", "store": "store", "auth": "auth", "rbac": "rbac",
            "keys": "keys", "audit": "audit", "bulk-set": "bulk_set",
            "completion": "completion"}


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


def _module(command: str):
    name = f"conflux.cli.{_MODULES[command]}"
    # NOTE: __import__ rather than importlib.import_module, which python -X importtime does
    # not report
    __import__(name)
    return sys.modules[name]


def __getattr__(name: str):
    # COMMANDS, every command's module, is imported only when asked for: running one command
    # imports that command's module alone (see main)
    if name == "COMMANDS":
        return tuple(_module(command) for command in _MODULES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_parser() -> argparse.ArgumentParser:
    """The whole command line: every command, with its options and help."""
    return _build(_MODULES)


def _build(commands) -> argparse.ArgumentParser:
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
    for command in commands:
        _module(command).add_parser(sub)
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


def _command_in(argv: list[str]) -> str | None:
    """The command ``argv`` runs, when nothing but ``--dir PATH`` comes before it; else None
    (no command, an unknown one, ``--help``, ``--version``...)."""
    i = 0
    while i < len(argv) and (argv[i] == "--dir" or argv[i].startswith("--dir=")):
        i += 2 if argv[i] == "--dir" else 1
    return argv[i] if i < len(argv) and argv[i] in _MODULES else None


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # PERF: when argv names a command, only its parser is built and only its module
    # imported: importing and building all of them was about half of 'conflux get'. The
    # words after a command go to its parser alone, so the result, the errors and every
    # --help are the whole tree's (tests/test_startup.py compares them).
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (conflux completion)
        import argcomplete

        argcomplete.autocomplete(get_parser())
    command = _command_in(argv)
    parser = _build([command]) if command else get_parser()
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
