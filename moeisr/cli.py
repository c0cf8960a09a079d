"""`moeisr data|sr|eval|flops|train|report|reproduce|ablations|speedups|cache`: a thin layer over the library.

Each subcommand lives in `moeisr/commands/<name>.py` and exposes `add_parser(subparsers)`, which
registers its arguments and sets `func` (a callable taking the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from moeisr import __version__
from moeisr.errors import UserError
from moeisr.io import environment_error_message

COMMANDS = ("data", "sr", "eval", "flops", "train", "report", "reproduce", "ablations", "speedups", "cache")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line with the prefix of every other error: `PROG: error: ...`,
    PROG being `moeisr CMD` once the subcommand is known (its subparsers are of this class too), else `moeisr`.

    Both argparse's own errors (a missing or unknown argument, a bad choice) and a `UserError` raised by an
    argument's `type=` parser (e.g. `--scales 0`) come out this way, with exit status 2.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):
        try:
            return super().parse_known_args(args, namespace)
        except UserError as exc:  # from a type= parser; the subcommand's parser is the first to see it
            self.exit(2, f"{self.prog}: error: {exc}\n")

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # reported by the subcommand's parser, which did not know them
            self.innermost(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def innermost(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The parser of the (sub)subcommand `parsed` chose, e.g. the one of `moeisr data verify`."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest, None))
                if chosen is not None:
                    return chosen.innermost(parsed) if isinstance(chosen, Parser) else chosen
        return self


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="moeisr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"moeisr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"moeisr.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"moeisr.commands.{name}":
                raise
            continue  # subcommand not built yet
        module.add_parser(sub)
    for subparser in sub.choices.values():
        # also accept --debug after the subcommand; SUPPRESS keeps the top-level value otherwise
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _one_line_warning(prog: str):
    """A `warnings.formatwarning` printing `PROG: warning: message` (PROG e.g. `moeisr sr`; no source line,
    no file:line)."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        kind = "" if issubclass(category, UserWarning) else f" ({category.__name__})"
        text = " ".join(str(message).split())
        return f"{prog}: warning{kind}: {text}\n"

    return format_warning


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 interrupted).

    Every error line starts `moeisr CMD: error: ` (`moeisr: error: ` only when no subcommand could be read).
    A problem the user can fix (`UserError`, or a full disk / permission error from the OS) is printed as
    one line without a traceback; `--debug` re-raises it with its traceback. Any other exception is a bug
    and keeps its traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error (already printed in one line)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    prog = parser.innermost(args).prog  # `moeisr CMD` (`moeisr data verify` for a nested one), as argparse's errors
    previous_format = warnings.formatwarning
    if not args.debug:  # warnings as one line each, like errors; restored on return
        warnings.formatwarning = _one_line_warning(prog)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = environment_error_message(exc)
        if args.debug or message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
