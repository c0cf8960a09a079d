"""Helpers for the training tests (no tests here): CLI runs in-process and in subprocesses, on one thread.

Every run uses one intra-op thread, in-process and in subprocesses alike: bit-identical comparisons need
the same thread count, and on a shared 2-core machine one thread is also much faster than two.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moeisr.cli import main

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def spec_path(name: str) -> str:
    return str(EXPERIMENTS / f"{name}.yaml")


def train_args(name: str, out: Path, *sets: str, profile: str = "smoke", extra: tuple[str, ...] = ()) -> list[str]:
    """argv of `moeisr train` (without the program name)."""
    args = ["train", spec_path(name), "--profile", profile, "--out", str(out), "--no-progress", *extra]
    return [*args, "--set", *sets] if sets else args


def run_cli(args: list[str], capsys=None) -> tuple[int, str]:
    """Run the CLI in this process; (exit code, captured stderr) when capsys is given."""
    code = main(args)
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


def subprocess_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "moeisr", *args]


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]["sd"]


def assert_identical_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def log_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def last_logged_step(run_dir: Path) -> int:
    """The step of the last complete row of run_dir/log.csv (0 if none yet)."""
    try:
        text = (run_dir / "log.csv").read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    lines = [line for line in text.split("\n")[1:-1] if line]  # complete lines after the header
    return int(lines[-1].split(",")[0]) if lines else 0


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["train_state"]["step"])


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 180.0) -> None:
    """Poll run_dir/log.csv until a row with step >= `step`; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while last_logged_step(run_dir) < step:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"training ended (code {proc.returncode}) before step {step}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no step {step} in {run_dir / 'log.csv'} after {timeout} s")
        time.sleep(0.005)
