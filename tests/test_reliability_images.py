"""Bad images through every CLI that reads them (sr, flops, eval, train): one line, exit 2, no partial output.

Awkward but valid modes (grey, RGBA, palette, 16-bit) are converted, not refused; training images smaller
than the HR patch are skipped with a one-line warning.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from test_reliability_support import (
    BAD_IMAGE_MESSAGES,
    BAD_IMAGES,
    FOUND_WHEN_DECODED,
    LIIF_SPEC,
    assert_refused,
    cli,
    eval_root,
    make_bad_image,
    real_rgb,
    temp_leftovers,
    train_args,
    train_folder,
    visible_files,
)
from test_train_support import cli_command, one_thread, subprocess_env  # noqa: F401 (fixture)

from moeisr.data.images import load_image
from moeisr.evaluate.cache import ResultsCache


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_sr_refuses_a_bad_input_image(tmp_path, capsys, kind):
    bad = make_bad_image(kind, tmp_path / "in")
    out = tmp_path / "out" / "sr.png"
    code, err = cli(capsys, "sr", "bicubic", bad, "--scale", 2, "-o", out)
    assert_refused(code, err, "moeisr sr: error:", bad.name, BAD_IMAGE_MESSAGES[kind])
    assert not out.exists() and temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_flops_refuses_a_bad_input_image(tmp_path, capsys, kind):
    bad = make_bad_image(kind, tmp_path / "in")
    spec = tmp_path / "liif.yaml"
    spec.write_text(LIIF_SPEC)
    code, err = cli(capsys, "flops", spec, "--image", bad, "--scale", 2)
    assert_refused(code, err, "moeisr flops: error:", bad.name, BAD_IMAGE_MESSAGES[kind])
    assert capsys.readouterr().out == ""  # no partial report


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_eval_refuses_a_bad_benchmark_image_and_keeps_finished_rows(tmp_path, capsys, kind):
    bad = make_bad_image(kind, tmp_path / "made")
    root = eval_root(tmp_path / "data", bad)
    out = tmp_path / "results" / "set5.csv"
    args = ["eval", "bicubic", "--sets", "Set5", "--scales", 2, "--data-root", root, "--out", out]
    code, err = cli(capsys, *args, "--no-lpips", "--no-flops", "--quiet")
    message = BAD_IMAGE_MESSAGES[kind] if kind != "one_pixel" else "too small to evaluate at x2"
    assert_refused(code, err, "moeisr eval: error:", bad.name, message)
    assert not out.exists() and temp_leftovers(tmp_path) == []  # the CSV is written only when complete
    rows = ResultsCache(out.with_suffix(".jsonl")).rows()
    if kind in FOUND_WHEN_DECODED:  # only found when decoded: bird's row (evaluated first) is kept for a re-run
        assert [r["image"] for r in rows] == ["bird"]
    else:  # refused from the file header, before any work
        assert rows == []


@pytest.mark.parametrize("kind", [k for k in BAD_IMAGES if k != "one_pixel"])
def test_train_refuses_a_bad_training_image(tmp_path, capsys, kind, one_thread):  # noqa: F811
    folder = train_folder(tmp_path / "images")
    bad = make_bad_image(kind, folder)
    run = tmp_path / "run"
    code, err = cli(capsys, *train_args(run, f"data.train_sets=[{folder}]"))
    assert_refused(code, err, "moeisr train: error:", bad.name, BAD_IMAGE_MESSAGES[kind])
    assert not (run / "final.pt").exists() and temp_leftovers(tmp_path) == []
    if kind in FOUND_WHEN_DECODED:  # only found when first sampled: the step-0 checkpoint is complete
        assert {"last.pt", "log.csv", "spec.yaml"} <= set(visible_files(run))
        assert torch.load(run / "last.pt", weights_only=True)["train_state"]["step"] == 0
    else:  # refused from the file header, before the first checkpoint
        assert visible_files(run) == []


def test_train_skips_images_smaller_than_the_patch_with_a_one_line_warning(tmp_path):
    """The real CLI in a subprocess: warnings reach stderr as one line each (pytest would capture them)."""
    folder = train_folder(tmp_path / "images")
    Image.fromarray(real_rgb(70, 40)).save(folder / "narrow.png")  # 40 px wide < 64 px HR patch (smoke)
    make_bad_image("one_pixel", folder)
    run = tmp_path / "run"
    argv = [str(a) for a in train_args(run, f"data.train_sets=[{folder}]", "optim.max_steps=2")]
    out = subprocess.run(cli_command(argv), env=subprocess_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"moeisr train: warning: {folder / 'narrow.png'}: 70x40 is smaller than the 64x64 HR patch needed; skipped",
        f"moeisr train: warning: {folder / 'zz_one_pixel.png'}: 1x1 is smaller than the 64x64 HR patch needed; skipped",
    ]
    # the grey and palette images were trained on, not refused
    assert torch.load(run / "final.pt", weights_only=True)["meta"]["step"] == 2


def test_train_with_only_too_small_images_says_what_to_change(tmp_path, capsys, one_thread):  # noqa: F811
    folder = tmp_path / "images"
    make_bad_image("one_pixel", folder)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="zz_one_pixel.png: 1x1 is smaller than the 64x64 HR patch"):
        code, err = cli(capsys, *train_args(run, f"data.train_sets=[{folder}]"))
    assert_refused(code, err, f"every training image in {folder} is smaller than the 64x64 HR patch", "data.inp_size")
    assert visible_files(run) == []


def _awkward_modes(folder) -> dict[str, tuple]:
    """Real pixels saved as grey, RGBA, palette and 16-bit grey PNGs, with the RGB each must load as."""
    rgb = real_rgb(24, 20)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).astype(np.uint8).reshape(rgb.shape[:2])
    palette = Image.fromarray(rgb).quantize(colors=32)
    files = {
        "grey": (Image.fromarray(grey), np.repeat(grey[..., None], 3, axis=2)),
        "rgba": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb),
        "palette": (palette, np.asarray(palette.convert("RGB"))),
        "grey16": (Image.fromarray(grey.astype(np.uint16) * 257), np.repeat(grey[..., None], 3, axis=2)),
    }
    out = {}
    for name, (image, expected) in files.items():
        image.save(folder / f"{name}.png")
        out[name] = (folder / f"{name}.png", expected)
    return out


def test_grey_rgba_palette_and_16_bit_inputs_are_converted_not_refused(tmp_path, capsys):
    for name, (path, expected) in _awkward_modes(tmp_path).items():
        with Image.open(path) as img:
            assert img.mode == {"grey": "L", "rgba": "RGBA", "palette": "P", "grey16": "I;16"}[name]
        loaded = (load_image(path) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(loaded, expected), name
        out = tmp_path / f"{name}_x2.png"
        code, err = cli(capsys, "sr", "bicubic", path, "--scale", 2, "-o", out)
        assert code == 0 and err == "", err
        with Image.open(out) as img:
            assert img.mode == "RGB" and img.size == (40, 48)
            if name in ("grey", "grey16"):  # a grey input stays grey in all three channels
                r, g, b = (np.asarray(c) for c in img.split())
                assert np.array_equal(r, g) and np.array_equal(g, b)
