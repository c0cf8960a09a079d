"""Continuing a backbone until it converges: held-out validation on fixed T91 crops at several scales, cosine restarts,
and the stop rule (best held-out PSNR gain per 1000 steps), end to end on the bundled cpu LIIF."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from moeisr.config import load_experiment
from moeisr.data.benchmark import list_images
from moeisr.data.images import load_image
from moeisr.models.checkpoint import load_model, read_checkpoint
from moeisr.train import lr_at, train
from moeisr.train.loop import converged
from moeisr.train.validation import Validator, fixed_crop

REPO = Path(__file__).resolve().parents[1]


def test_the_stop_rule_compares_the_best_so_far_with_the_best_one_window_before():
    history = [(0, 30.00), (500, 29.80), (1000, 30.10), (1500, 30.05), (2000, 30.15)]
    assert converged(history, 1000, 1000, 0.02) is None  # +0.10 dB in 1000 steps
    assert converged(history, 2000, 1000, 0.02) is None  # +0.05 dB
    assert converged([*history, (3000, 30.16)], 3000, 1000, 0.02).startswith("best validation 30.160 dB gained")
    assert converged([*history, (4000, 30.14)], 4000, 2000, 0.02).startswith("best validation 30.150 dB")  # dip
    assert converged([(1000, 30.0)], 1000, 1000, 0.02) is None  # nothing one window before: no verdict


def test_cosine_restarts_fall_to_min_lr_and_restart_after_the_warm_up():
    exp = load_experiment(REPO / "experiments" / "liif_converged.yaml", "cpu")
    o = exp.spec.optim
    assert lr_at(o, 0) == pytest.approx(o.lr / o.warmup_steps)
    assert lr_at(o, o.warmup_steps) == pytest.approx(o.lr)
    end = o.warmup_steps + o.schedule.cycle_steps
    assert lr_at(o, end - 1) == pytest.approx(o.schedule.min_lr, abs=1e-8)
    assert lr_at(o, end) == pytest.approx(o.lr)  # the restart


@pytest.mark.data
def test_fixed_crops_are_the_same_window_at_every_scale_and_in_every_run():
    path = list_images("T91", limit=1)[0]
    hr = load_image(path)
    a, b = fixed_crop(hr, 72, path.name), fixed_crop(hr, 72, path.name)
    assert a.shape == (3, 72, 72) and torch.equal(a, b)
    assert not torch.equal(a, fixed_crop(hr, 72, "another name"))


@pytest.mark.data
def test_held_out_validation_scores_the_bundled_liif_above_bicubic_at_each_scale():
    model = load_model(REPO / "results" / "checkpoints" / "liif.pt")
    validator = Validator("T91", [2, 4], limit=3, crop=48)
    per_scale = validator.per_scale(model, torch.device("cpu"))
    assert set(per_scale) == {2.0, 4.0} and per_scale[2.0] > per_scale[4.0] > 20
    assert validator(model, torch.device("cpu")) == pytest.approx(sum(per_scale.values()) / 2)


@pytest.mark.data
@pytest.mark.slow
def test_a_continued_run_stops_when_held_out_validation_no_longer_rises(tmp_path):
    overrides = [
        "optim.max_steps=9", "optim.warmup_steps=0", "optim.schedule.cycle_steps=3", "train.stop_check_every=3",
        "train.val_every=3", "train.ckpt_every=3", "data.val_limit=2", "data.val_crop=24", "train.stop_gain_db=1000",
    ]  # fmt: skip
    experiment = load_experiment(REPO / "experiments" / "liif_converged.yaml", "cpu", overrides)
    final = train(experiment, tmp_path / "run", progress=False, init=REPO / "results" / "checkpoints" / "liif.pt")
    meta = read_checkpoint(final)["meta"]
    assert meta["step"] == 3 and meta["stopped_early"].startswith("best validation")  # the first check stops it
    history = read_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["val_history"]
    assert [s for s, _ in history] == [0, 3] and all(math.isfinite(v) for _, v in history)
