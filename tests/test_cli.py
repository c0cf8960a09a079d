import subprocess
import sys

from moeisr import __version__
from moeisr.cli import build_parser


def test_version_via_module():
    out = subprocess.run([sys.executable, "-m", "moeisr", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"moeisr {__version__}"


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        assert subparser.format_help().startswith("usage: moeisr " + name)
