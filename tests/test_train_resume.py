"""Resuming is bit-identical (kill -9 and SIGTERM), and the run-directory rules are enforced."""

import signal
import subprocess

import pytest
from test_train_support import (
    assert_identical_weights,
    checkpoint_step,
    cli_command,
    log_rows,
    one_thread,  # noqa: F401 (fixture)
    run_cli,
    subprocess_env,
    train_args,
    wait_for_step,
)

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)

# 40 steps, a checkpoint every 4 and a log row every step: a kill lands between checkpoints
LIIF_SETS = ("optim.max_steps=40", "train.ckpt_every=4", "train.log_every=1")
MOE_SETS = ("optim.max_steps=30", "train.ckpt_every=7", "train.log_every=1")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted LIIF smoke run (in this process, one thread) at runs/liif."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("runs") / "liif"
        assert run_cli(train_args("liif", run, *LIIF_SETS)) == (0, "")
    finally:
        torch.set_num_threads(before)
    return run


def _losses(run_dir):
    return [(r["step"], r["loss"], r["l1"], r["balance"], r["lr"]) for r in log_rows(run_dir)]


def _interrupt_and_resume(args, run_dir, at_step, sig):
    """Start `moeisr train args` in a subprocess, send `sig` once step `at_step` is logged, then resume here."""
    proc = subprocess.Popen(
        cli_command(args), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_step(proc, run_dir, at_step)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "final.pt").exists(), "the run finished before the signal; nothing was interrupted"
    stopped_at = checkpoint_step(run_dir / "last.pt")
    assert run_cli([*args, "--resume"]) == (0, "")
    return proc.returncode, err, stopped_at


def test_kill_9_then_resume_is_bit_identical(reference, tmp_path, one_thread):  # noqa: F811
    run = tmp_path / "liif"
    code, _, stopped_at = _interrupt_and_resume(train_args("liif", run, *LIIF_SETS), run, 10, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert 8 <= stopped_at < 40 and stopped_at % 4 == 0  # the last periodic checkpoint before the kill
    assert_identical_weights(reference / "final.pt", run / "final.pt")
    # the log is continuous and equal to the uninterrupted one (wall-clock seconds aside)
    assert _losses(run) == _losses(reference)


def test_sigterm_saves_at_the_next_step_and_moeisr_resume_is_bit_identical(reference, tmp_path, one_thread):  # noqa: F811
    init = ("--init", str(reference / "final.pt"))
    uninterrupted, run = tmp_path / "moe_ref", tmp_path / "moe"
    assert run_cli(train_args("moeisr_liif", uninterrupted, *MOE_SETS, extra=init)) == (0, "")
    args = train_args("moeisr_liif", run, *MOE_SETS, extra=init)
    code, err, stopped_at = _interrupt_and_resume(args, run, 10, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert f"stopped by SIGTERM at step {stopped_at}" in err and "--resume" in err
    assert 10 <= stopped_at < 30  # saved at the step boundary after the signal
    assert_identical_weights(uninterrupted / "final.pt", run / "final.pt")
    assert _losses(run) == _losses(uninterrupted)


def test_resume_with_a_changed_config_is_refused(reference, capsys):
    code, err = run_cli(train_args("liif", reference, *LIIF_SETS, "optim.lr=2e-4", extra=("--resume",)), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "config hash" in err and "optim.lr: 0.0001 -> 0.0002" in err and "--out" in err


def test_an_existing_run_dir_needs_resume(reference, capsys):
    code, err = run_cli(train_args("liif", reference, *LIIF_SETS), capsys)
    assert code == 2 and f"run directory {reference} already exists and is not empty; pass --resume" in err
    code, err = run_cli(train_args("liif", reference.parent / "absent", extra=("--resume",)), capsys)
    assert code == 2 and "does not exist; start the run without --resume" in err


def test_init_from_needs_the_parent_checkpoint(reference, capsys):
    runs = reference.parent
    # no runs/lte: the error names the command that produces it, and nothing is created
    code, err = run_cli(train_args("moeisr_lte", runs / "moeisr_lte"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{runs / 'lte' / 'final.pt'} does not exist" in err and "moeisr train" in err and "--out" in err
    assert not (runs / "moeisr_lte").exists()
    # runs/liif was trained with overrides: its hash differs from liif.yaml's, so it is not used silently
    code, err = run_cli(train_args("moeisr_liif", runs / "moeisr_liif"), capsys)
    assert code == 2 and "was trained with config hash" in err and f"--init {runs / 'liif' / 'final.pt'}" in err
    code, err = run_cli(train_args("moeisr_liif", runs / "x", extra=("--init", str(runs / "nope.pt"))), capsys)
    assert code == 2 and "no such checkpoint file" in err
