"""`moeisr data|sr|eval|train|flops|report|reproduce`: a thin layer over the library.

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

COMMANDS = ("data", "sr", "eval", "flops", "train", "report", "reproduce", "ablations", "cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moeisr", description=__doc__.splitlines()[0])
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


def _one_line_warning(command: str):
    """A `warnings.formatwarning` printing `moeisr CMD: warning: message` (no source line, no file:line)."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        kind = "" if issubclass(category, UserWarning) else f" ({category.__name__})"
        text = " ".join(str(message).split())
        return f"moeisr {command}: warning{kind}: {text}\n"

    return format_warning


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 interrupted).

    A problem the user can fix (`UserError`, or a full disk / permission error from the OS) is printed as
    one line without a traceback; `--debug` re-raises it with its traceback. Any other exception is a bug
    and keeps its traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UserError as exc:  # raised by an argument's type= parser
        print(f"moeisr: error: {exc}", file=sys.stderr)
        return 2
    previous_format = warnings.formatwarning
    if not args.debug:  # warnings as one line each, like errors; restored on return
        warnings.formatwarning = _one_line_warning(args.command)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"moeisr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = environment_error_message(exc)
        if args.debug or message is None:
            raise
        print(f"moeisr {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"moeisr {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
