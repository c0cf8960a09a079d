"""A results folder that is not writable, and a full disk (simulated), through sr, eval and train.

Each is one line and exit 2 before or instead of any partial output, and earlier results stay intact:
every write goes through `moeisr.io` (temp file, fsync, rename), so a failed write leaves the old file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest
from test_reliability_support import (
    assert_refused,
    cli,
    read_only,
    real_rgb,
    run_as_restricted_user,
    save_png,
    temp_leftovers,
    train_args,
)
from test_train_support import assert_identical_weights, checkpoint_step, one_thread  # noqa: F401 (fixture)

from moeisr.evaluate.cache import ResultsCache

EVAL = ("bicubic", "--sets", "Set5", "--limit", "1", "--no-lpips", "--no-flops", "--quiet")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_results_folder_that_is_not_writable_is_one_line_and_keeps_earlier_results(tmp_path, capsys):
    src = save_png(real_rgb(24, 20), tmp_path / "lr.png")
    results = tmp_path / "results"
    # earlier results, written while the folder was still writable
    assert cli(capsys, "sr", "bicubic", src, "--scale", 2, "-o", results / "sr.png")[0] == 0
    assert cli(capsys, "eval", *EVAL, "--scales", "2", "--out", results / "set5.csv")[0] == 0
    before = snapshot(results)
    with read_only(results):
        sr, ev, train = run_as_restricted_user(
            ["sr", "bicubic", src, "--scale", 3, "-o", results / "sr.png"],
            ["eval", *EVAL, "--scales", "2,3", "--out", results / "set5.csv"],
            train_args(results / "run"),
        )
    assert_refused(sr["code"], sr["err"], f"cannot write {results / 'sr.png'}: folder {results} is not writable")
    assert_refused(ev["code"], ev["err"], f"cannot write {results / 'set5.csv'}", "check its permissions")
    assert_refused(train["code"], train["err"], f"cannot write {results / 'run'}", "choose another output path")
    assert snapshot(results) == before  # nothing changed, nothing added (no run dir, no temp file)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_sr_keeps_the_earlier_output(tmp_path, capsys, monkeypatch):
    src = save_png(real_rgb(24, 20), tmp_path / "lr.png")
    out = tmp_path / "sr.png"
    assert cli(capsys, "sr", "bicubic", src, "--scale", 2, "-o", out)[0] == 0
    before = out.read_bytes()
    with monkeypatch.context() as patch:  # the disk fills up: every write and fsync fails
        patch.setattr(os, "write", no_space)
        patch.setattr(os, "fsync", no_space)
        code, err = cli(capsys, "sr", "bicubic", src, "--scale", 3, "-o", out)
    assert_refused(code, err, f"cannot write {out}: no space left on device (free some space and retry)")
    assert out.read_bytes() == before and temp_leftovers(tmp_path) == []


@pytest.mark.data
def test_a_full_disk_during_eval_keeps_earlier_rows_and_a_rerun_completes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "set5.csv"
    assert cli(capsys, "eval", *EVAL, "--scales", "2", "--out", out)[0] == 0
    before = snapshot(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", no_space)
        patch.setattr(os, "fsync", no_space)
        code, err = cli(capsys, "eval", *EVAL, "--scales", "2,3", "--out", out)
    assert_refused(code, err, f"cannot write {out.with_suffix('.jsonl')}: no space left on device")
    assert snapshot(tmp_path) == before  # the CSV and the cache are byte for byte the earlier ones
    # space freed: the re-run computes only the missing row
    code, err = cli(capsys, "eval", *EVAL, "--scales", "2,3", "--out", out)
    assert code == 0, err
    frame = pd.read_csv(out)
    assert sorted(frame.scale) == [2.0, 3.0] and not frame.duplicated(["image", "scale"]).any()
    assert len(ResultsCache(out.with_suffix(".jsonl")).rows()) == 2


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.mark.data
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is being synced")
@pytest.mark.parametrize("fills_at", ["checkpoint", "log"])
@pytest.mark.usefixtures("one_thread")
def test_a_full_disk_during_training_keeps_the_last_checkpoint_and_resume_is_identical(
    tmp_path, capsys, monkeypatch, fills_at
):
    sets = ("optim.max_steps=12", "train.ckpt_every=4", "train.log_every=1")
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert cli(capsys, *train_args(reference, *sets))[0] == 0
    real_fsync, checkpoints = os.fsync, []

    def fsync_until_full(fd):
        # The disk fills up once the checkpoints of steps 0 and 4 are safe: the next checkpoint (step 8),
        # or the next log row (step 5), cannot be made durable.
        name = fd_path(fd)
        is_checkpoint = "/.last.pt." in name  # the temp file of an atomic last.pt
        target = is_checkpoint if fills_at == "checkpoint" else name.endswith("/log.csv")
        if len(checkpoints) >= 2 and target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)
        if is_checkpoint:
            checkpoints.append(name)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync_until_full)
        code, err = cli(capsys, *train_args(run, *sets))
    if fills_at == "checkpoint":
        assert_refused(code, err, f"cannot write {run / 'last.pt'}: no space left on device")
    else:  # a write on the open log: the OS does not say which file, the log names itself
        assert_refused(code, err, f"moeisr train: error: cannot write {run / 'log.csv'}: no space left on device")
    assert checkpoint_step(run / "last.pt") == 4 and not (run / "final.pt").exists()  # the earlier state
    assert temp_leftovers(tmp_path) == []
    # space freed: the run resumes from step 4 and ends exactly where an uninterrupted run does
    assert cli(capsys, *train_args(run, *sets, extra=("--resume",)))[0] == 0
    assert checkpoint_step(run / "final.pt") == 12
    assert_identical_weights(reference / "final.pt", run / "final.pt")
