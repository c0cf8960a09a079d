"""Bad scales through eval, flops and train, and the output pixel budget of sr and flops (--force).

`moeisr sr --scale` with 0, -2, nan, inf and 0.5 is covered by
tests/test_models_sr_cli.py::test_bad_scales_are_refused_in_one_line.
"""

from __future__ import annotations

import shutil

import pytest
from PIL import Image
from test_reliability_support import (
    EXPERIMENTS,
    LIIF_SPEC,
    assert_refused,
    cli,
    real_rgb,
    save_png,
    temp_leftovers,
    train_args,
    visible_files,
)

BAD_SCALES = ("0", "-2", "nan", "inf", "0.5")


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_eval_refuses_a_bad_scale(tmp_path, capsys, scale):
    out = tmp_path / "results.csv"
    code, err = cli(capsys, "eval", "bicubic", "--sets", "Set5", "--scales", f"2,{scale}", "--out", out)
    assert_refused(code, err, f"--scales: '{scale}' must be a finite number >= 1")
    assert visible_files(tmp_path) == []


@pytest.mark.parametrize("scale", BAD_SCALES)
def test_flops_refuses_a_bad_scale(tmp_path, capsys, scale):
    spec = tmp_path / "liif.yaml"
    spec.write_text(LIIF_SPEC)
    code, err = cli(capsys, "flops", spec, "--lr-size", "8x8", f"--scale={scale}")
    assert_refused(code, err, f"scale {scale} is not supported: it must be a finite number >= 1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.scale_min=0", "'data.scale_min' must be >= 1, got 0.0"),
        ("data.scale_min=-2", "'data.scale_min' must be >= 1, got -2.0"),
        ("data.scale_min=nan", "override 'data.scale_min=nan': 'data.scale_min' must be a finite number, got nan"),
        ("data.scale_max=inf", "override 'data.scale_max=inf': 'data.scale_max' must be a finite number, got inf"),
        ("data.scale_min=0.5", "'data.scale_min' must be >= 1, got 0.5"),
        ("data.val_scale=.inf", "'data.val_scale' must be a finite number, got inf"),
        ("eval.scales=[2, -inf]", "'eval.scales' must be a finite number, got -inf"),
    ],
)
def test_train_refuses_a_bad_scale_before_creating_the_run(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    code, err = cli(capsys, *train_args(run, override))
    assert_refused(code, err, "moeisr train: error:", message)
    assert not run.exists()


def test_train_refuses_an_infinite_scale_written_in_the_spec_file(tmp_path, capsys):
    spec = tmp_path / "liif.yaml"
    spec.write_text((EXPERIMENTS / "liif.yaml").read_text() + "data: {scale_max: .inf}\n")
    shutil.copyfile(EXPERIMENTS / "profiles.yaml", tmp_path / "profiles.yaml")
    run = tmp_path / "run"
    code, err = cli(capsys, "train", spec, "--profile", "smoke", "--out", run)
    assert_refused(code, err, f"{spec}: 'data.scale_max' must be a finite number, got inf")
    assert not run.exists()


# ----------------------------------------------------------------------------------- pixel budget


def test_sr_refuses_an_output_over_the_pixel_budget_unless_forced(tmp_path, capsys):
    src = save_png(real_rgb(69, 69), tmp_path / "face.png")
    out = tmp_path / "out" / "sr.png"
    # the default budget (64 MP): x200 of 69x69 would be 13800x13800 = 190 MP
    code, err = cli(capsys, "sr", "bicubic", src, "--scale", 200, "-o", out)
    assert_refused(code, err, "the output 13800x13800 has 190,440,000 pixels, over the budget of 64,000,000", "--force")
    code, err = cli(capsys, "sr", "bicubic", src, "--size", "20000x4000", "-o", out)
    assert_refused(code, err, "the output 20000x4000 has 80,000,000 pixels")
    assert not out.exists() and temp_leftovers(tmp_path) == []
    # a small stated budget: refused, then allowed with --force
    code, err = cli(capsys, "sr", "bicubic", src, "--scale", 2, "--max-pixels", 19_000, "-o", out)
    assert_refused(code, err, "the output 138x138 has 19,044 pixels, over the budget of 19,000 (--max-pixels)")
    assert not out.exists()
    code, err = cli(capsys, "sr", "bicubic", src, "--scale", 2, "--max-pixels", 19_000, "--force", "-o", out)
    assert code == 0, err
    with Image.open(out) as img:
        assert img.size == (138, 138)
    assert cli(capsys, "sr", "bicubic", src, "--scale", 2, "--max-pixels", 19_044, "-o", out)[0] == 0  # at the budget


def test_flops_refuses_an_output_over_the_pixel_budget_unless_forced(tmp_path, capsys):
    spec = tmp_path / "liif.yaml"
    spec.write_text(LIIF_SPEC)
    code, err = cli(capsys, "flops", spec, "--lr-size", "100x100", "--scale", 100)
    assert_refused(code, err, "the output 10000x10000 has 100,000,000 pixels, over the budget of 64,000,000")
    code, err = cli(capsys, "flops", spec, "--lr-size", "8x8", "--scale", 2, "--max-pixels", 100)
    assert_refused(code, err, "the output 16x16 has 256 pixels, over the budget of 100")
    assert cli(capsys, "flops", spec, "--lr-size", "8x8", "--scale", 2, "--max-pixels", 100, "--force")[0] == 0


def test_a_one_pixel_lr_size_is_refused_by_flops(tmp_path, capsys):
    spec = tmp_path / "liif.yaml"
    spec.write_text(LIIF_SPEC)
    code, err = cli(capsys, "flops", spec, "--lr-size", "1x9", "--scale", 2)
    assert_refused(code, err, "the LR size (--lr-size) is 1x9 pixels; super-resolution needs at least 2x2")
