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


def test_bad_argument_values_give_one_line_errors(capsys, tmp_path):
    from moeisr.cli import main

    out = str(tmp_path / "x.csv")
    assert main(["eval", "bicubic", "--sets", "Set5", "--scales", "two", "--out", out]) == 2
    assert main(["eval", "bicubic", "--sets", "Set5", "--routing-knob", "abc", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "moeisr eval: error: --scales: 'two' is not a number; use e.g. --scales 2,3,4",
        "moeisr eval: error: --routing-knob 'abc' is not a number, inf, -inf, 'cheapest' or 'deepest'",
    ]
