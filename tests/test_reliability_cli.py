"""How the CLI reports failures: one line and exit 2 for what the user can fix, a traceback with --debug
(before or after the subcommand), and a traceback for anything else (a bug)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings

import pytest
from test_reliability_support import assert_refused, cli, make_bad_image

from moeisr.cli import main
from moeisr.errors import UserError


def run_module(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "moeisr", *map(str, argv)], capture_output=True, text=True, env=env)


def test_a_user_error_is_one_line_without_traceback_and_debug_shows_it(tmp_path):
    empty = make_bad_image("empty", tmp_path)
    out = tmp_path / "sr.png"
    plain = run_module("sr", "bicubic", empty, "--scale", 2, "-o", out)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == f"moeisr sr: error: {empty}: file is empty (0 bytes); replace it with a valid image\n"
    debug = run_module("sr", "bicubic", empty, "--scale", 2, "-o", out, "--debug")
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.strip().splitlines()[-1] == f"moeisr.errors.UserError: {empty}: file is empty (0 bytes); " + (
        "replace it with a valid image"
    )
    assert not out.exists()


def test_debug_before_the_subcommand_re_raises(tmp_path):
    empty = make_bad_image("empty", tmp_path)
    with pytest.raises(UserError, match="file is empty"):
        main(["--debug", "sr", "bicubic", str(empty), "--scale", "2", "-o", str(tmp_path / "sr.png")])


@pytest.fixture
def failing_sr(monkeypatch):
    """Make `moeisr sr` raise the exception put in the returned list."""
    raised = []

    def run(args):
        raise raised[0]

    monkeypatch.setattr("moeisr.commands.sr.run", run)
    return raised


ARGV = ("sr", "bicubic", "in.png", "--scale", "2", "-o", "out.png")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/out.png"), "cannot write /data/out.png: no space"),
        (OSError(errno.ENOSPC, "No space left on device"), "cannot write: no space left on device (free some space"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/run"), "/data/run: Permission denied (check the"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "/mnt/ro/x: Read-only file system (check"),
    ],
)
def test_full_disk_and_permission_errors_from_anywhere_are_one_line(capsys, failing_sr, error, message):
    failing_sr.append(error)
    code, err = cli(capsys, *ARGV)
    assert_refused(code, err, f"moeisr sr: error: {message}")
    failing_sr[0] = error
    with pytest.raises(type(error)):  # --debug shows where it came from
        main(["--debug", *ARGV])


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), RuntimeError("a bug"), KeyError("x")])
def test_other_exceptions_are_bugs_and_keep_their_traceback(failing_sr, error):
    failing_sr.append(error)
    with pytest.raises(type(error)):
        main(list(ARGV))


def test_the_one_line_warning_format_is_restored_after_each_command(capsys, failing_sr):
    before = warnings.formatwarning
    failing_sr.append(UserError("stop"))
    assert cli(capsys, *ARGV)[0] == 2
    assert warnings.formatwarning is before
