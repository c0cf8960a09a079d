"""Interruptions through the real CLI: `kill -9` at random points of training and of evaluation, then a
re-run, and two evaluations writing the same results at once.

tests/test_train_resume.py kills training once at a fixed step; tests/test_eval_cache.py kills and races
bare cache writers. Here the points are drawn at random (seeded, so a failure can be replayed) and the
processes are whole `moeisr train` / `moeisr eval` commands.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from test_reliability_support import cli, cli_output, temp_leftovers, train_args
from test_train_support import (
    assert_identical_weights,
    checkpoint_step,
    cli_command,
    log_rows,
    one_thread,  # noqa: F401 (fixture)
    subprocess_env,
    wait_for_step,
)

from moeisr.evaluate.cache import ResultsCache

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)

# 30 steps, a checkpoint every 4 and a log row every step: most kills land between checkpoints
TRAIN_SETS = ("optim.max_steps=30", "train.ckpt_every=4", "train.log_every=1")
EVAL = ("eval", "bicubic", "--sets", "Set5", "--no-lpips", "--no-flops", "--quiet")
KEY = ["dataset", "image", "scale"]


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "the process ended before it could be killed"


def kill_training_at(args: list, run: Path, step: int, delay: float) -> int:
    """Start `moeisr train`, kill -9 it `delay` s after step `step` is logged; returns the step of last.pt."""
    proc = subprocess.Popen(
        cli_command([str(a) for a in args]), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_step(proc, run, step)
        time.sleep(delay)  # anywhere inside a step, a checkpoint being written included
        kill_9(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (run / "final.pt").exists()
    return checkpoint_step(run / "last.pt")


def losses(run: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["l1"], r["lr"]) for r in log_rows(run)]


@pytest.mark.slow  # 8-14 s on 2 shared cores (three measurements)
@pytest.mark.usefixtures("one_thread")
def test_kill_9_twice_at_random_points_of_training_then_resume_is_bit_identical(tmp_path, capsys):
    rng = random.Random(20240611)
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert cli(capsys, *train_args(reference, *TRAIN_SETS))[0] == 0
    args = train_args(run, *TRAIN_SETS)
    first = kill_training_at(args, run, rng.randint(2, 10), rng.uniform(0, 0.05))
    assert first % 4 == 0 and first < 30
    second = kill_training_at([*args, "--resume"], run, rng.randint(first + 2, 22), rng.uniform(0, 0.05))
    assert first <= second < 30 and second % 4 == 0
    code, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    assert_identical_weights(reference / "final.pt", run / "final.pt")
    assert losses(run) == losses(reference)  # one row per step, none lost or repeated
    assert temp_leftovers(run) == []  # half-written checkpoints of the killed runs were removed


def complete_rows(cache: Path) -> list[dict]:
    """The complete lines of a JSON-lines cache, each parsed (a killed writer may leave a partial tail)."""
    data = cache.read_bytes() if cache.exists() else b""
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def assert_valid_rows(frame: pd.DataFrame) -> None:
    assert not frame.duplicated(KEY).any()
    assert frame.psnr.between(15, 60).all() and frame.ssim.between(0, 1).all() and frame.lpips.isna().all()
    assert (frame.model == "bicubic").all() and frame.seconds.ge(0).all()


def test_kill_9_during_eval_then_a_rerun_writes_each_row_once(tmp_path, capsys):
    rng = random.Random(7)
    grid = ("--scales", "2,3,4")  # Set5 at 3 scales: 15 rows
    reference = tmp_path / "reference.csv"
    assert cli(capsys, *EVAL, *grid, "--out", reference)[0] == 0
    expected = pd.read_csv(reference).set_index(KEY).sort_index()
    assert len(expected) == 15

    out, cache = tmp_path / "killed" / "results.csv", tmp_path / "killed" / "results.jsonl"
    proc = subprocess.Popen(cli_command([*EVAL, *grid, "--out", str(out)]), env=subprocess_env())
    try:
        rows_before_kill = rng.randint(3, 10)
        while len(complete_rows(cache)) < rows_before_kill and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        kill_9(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()  # the CSV is written once, complete, at the end
    kept = complete_rows(cache)
    assert 3 <= len(kept) < 15

    code, printed, err = cli_output(capsys, *EVAL, *grid, "--out", out)
    assert code == 0, err
    done = len({(r["dataset"], r["image"], r["scale"]) for r in kept})
    assert f"{15 - done} new rows; 15 rows written to {out}" in printed  # only the missing rows were computed
    frame = pd.read_csv(out)
    assert len(frame) == 15
    assert_valid_rows(frame)
    got = frame.set_index(KEY).sort_index()
    assert got.index.equals(expected.index)
    assert (got.psnr == expected.psnr).all() and (got.ssim == expected.ssim).all()  # the same numbers
    assert complete_rows(cache) == [json.loads(line) for line in cache.read_bytes().splitlines()]  # no torn tail


def test_two_evals_writing_the_same_results_at_once_lose_and_interleave_nothing(tmp_path, capsys):
    out, cache = tmp_path / "results.csv", tmp_path / "results.jsonl"
    grids = {"A": "2,3", "B": "3,4"}  # x3 is in both: both may compute it
    procs = {
        name: subprocess.Popen(
            cli_command([*EVAL, "--scales", scales, "--out", str(out), "--cache", str(cache)]),
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name, scales in grids.items()
    }
    for proc in procs.values():
        assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    lines = cache.read_bytes().splitlines()
    parsed = [json.loads(line) for line in lines]  # an interleaved line would not parse
    assert 15 <= len(parsed) <= 20
    frame = ResultsCache(cache).load()
    assert len(frame) == 15 and not frame.duplicated(KEY).any()  # both grids, each row once
    assert sorted(frame.scale.unique()) == [2.0, 3.0, 4.0]
    # the CSV is one whole grid (whichever eval finished last), never a mix or a fragment
    written = pd.read_csv(out)
    assert len(written) == 10 and sorted(written.scale.unique()) in ([2.0, 3.0], [3.0, 4.0])
    assert_valid_rows(written)
    # the union needs no new work
    union = tmp_path / "union.csv"
    code, printed, err = cli_output(capsys, *EVAL, "--scales", "2,3,4", "--out", union, "--cache", cache)
    assert code == 0, err
    assert "0 new rows; 15 rows written" in printed
    assert math.isclose(pd.read_csv(union).psnr.sum(), frame.psnr.sum())
