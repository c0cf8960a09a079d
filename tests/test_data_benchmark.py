"""Evaluation sets on the shared data, plus the DIV2K layout and mixed formats in a temporary root."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from moeisr.data import BenchmarkSet, data_root, downsample, iter_pairs, list_images, load_image, reference_lr_path
from moeisr.errors import UserError


@pytest.mark.data
def test_list_images_sorted_and_counted():
    names = [p.stem for p in list_images("Set5")]
    assert names == ["baby", "bird", "butterfly", "head", "woman"]
    assert len(list_images("set14")) == 14
    assert len(list_images("B100")) == 100 and len(list_images("bsd100", limit=7)) == 7
    assert [p.name for p in list_images("Urban100", limit=2)] == ["img_001.webp", "img_002.webp"]
    assert len(list_images("T91")) == 91 and len(list_images("BSD200")) == 200


@pytest.mark.parametrize(("typo", "nearest"), [("Set15", "Set5"), ("Urban10", "Urban100"), ("B10", "B100")])
def test_unknown_set_suggests_nearest(typo, nearest):
    with pytest.raises(UserError, match=f"did you mean {nearest}\\?"):
        list_images(typo)


@pytest.mark.data
def test_missing_div2k_says_what_to_do():
    with pytest.raises(UserError, match="DIV2K_valid_HR"):
        list_images("DIV2K")


@pytest.mark.data
def test_reference_lr_paths():
    hr = list_images("Set5")[0]
    assert reference_lr_path("Set5", hr, 3) == data_root() / "benchmark/Set5/LR_bicubic/X3/babyx3.webp"
    assert reference_lr_path("Set5", hr, 2.5) is None
    assert reference_lr_path("Set5", hr, 8) is None
    assert reference_lr_path("Urban100", list_images("Urban100")[0], 2) is None


@pytest.mark.data
def test_generated_pairs_equal_reference_pairs():
    generated = BenchmarkSet("Set14", 3, limit=4)
    reference = BenchmarkSet("Set14", 3, limit=4, lr_source="reference")
    for a, b in zip(generated, reference, strict=True):
        assert a.name == b.name and a.scale == 3
        assert torch.equal(a.hr, b.hr)
        assert torch.equal(a.lr, b.lr)
        assert a.hr.shape[-2:] == (a.lr.shape[-2] * 3, a.lr.shape[-1] * 3)


@pytest.mark.data
def test_non_integer_and_out_of_distribution_pairs():
    for scale in (2.5, 6, 12):
        pair = next(iter_pairs("Urban100", scale, limit=1))
        h, w = pair.lr.shape[-2:]
        assert pair.hr.shape == (3, round(h * scale), round(w * scale))
        assert 0 <= pair.lr.min() and pair.lr.max() <= 1
    with pytest.raises(UserError, match="no reference LR"):
        BenchmarkSet("Urban100", 2, limit=1, lr_source="reference")


@pytest.mark.data
def test_div2k_layout_and_mixed_formats(tmp_path):
    """DIV2K under root/DIV2K/, HR as PNG, reference LR as PNG; a user set of mixed formats as a benchmark."""
    hr = load_image(list_images("Set5")[3])[:, :96, :120]
    array = (hr * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    valid = tmp_path / "DIV2K" / "DIV2K_valid_HR"
    lr_dir = tmp_path / "DIV2K" / "DIV2K_valid_LR_bicubic" / "X2"
    valid.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    Image.fromarray(array).save(valid / "0801.png")
    Image.fromarray(array).save(valid / "0802.bmp")
    lr = (downsample(hr, 2) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(lr).save(lr_dir / "0801x2.png")
    (valid / "readme.txt").write_text("not an image")
    assert [p.name for p in list_images("DIV2K", root=tmp_path)] == ["0801.png", "0802.bmp"]
    assert reference_lr_path("div2k", valid / "0801.png", 2, root=tmp_path) == lr_dir / "0801x2.png"
    pair = BenchmarkSet("DIV2K", 2, root=tmp_path, limit=1, lr_source="reference")[0]
    assert torch.equal(pair.lr, downsample(hr, 2))

    set5 = tmp_path / "benchmark" / "Set5" / "HR"
    set5.mkdir(parents=True)
    for suffix in ("png", "jpg", "webp"):
        Image.fromarray(array).save(set5 / f"img.{suffix}")
    shutil.copyfile(valid / "0802.bmp", set5 / "z.bmp")
    assert [p.suffix for p in list_images("Set5", root=tmp_path)] == [".jpg", ".png", ".webp", ".bmp"]
