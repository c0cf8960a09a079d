"""The main PSNR-vs-GFLOPs figure: markers per model, and the ablation suite's routing sweeps as curves only where
they average the same images as the markers."""

import pandas as pd
import pytest
from PIL import Image

from moeisr.evaluate import pictures
from moeisr.report import figures


def _rows():
    """Tidy eval rows: two images of Set5 at x2 and x4 for LIIF and MoEISR-LIIF, bicubic without FLOPs."""
    rows = []
    for scale in (2.0, 4.0):
        for image in ("baby", "bird"):
            for model, psnr, gflops in (
                ("bicubic", 30.0, float("nan")),
                ("liif", 33.0, 100.0),
                ("moeisr-liif", 32.9, 60.0),
            ):
                rows.append({"model": model, "dataset": "Set5", "image": image, "scale": scale, "knob": "none",
                             "psnr": psnr - scale, "gflops": gflops / scale})  # fmt: skip
    return pd.DataFrame(rows)


def _sweep(n_at_x4: int):
    """Sweep points of moeisr-liif at x2 (2 images, as the markers) and x4 (n_at_x4 images), plus a random router."""
    points = []
    for scale, n in ((2.0, 2), (4.0, n_at_x4)):
        for knob, gflops in (("inf", 20.0), ("0.5", 40.0), ("-inf", 100.0)):
            cell = {"family": "moeisr-liif", "dataset": "Set5", "scale": scale, "n": n}
            points.append(
                {**cell, "router": "learned", "knob": knob, "psnr": 30.0 + gflops / 50, "gflops": gflops / scale}
            )
        points.append({**cell, "router": "random", "knob": "none", "psnr": 30.0, "gflops": 30.0 / scale})
    return pd.DataFrame(points)


def _means(rows):
    means = rows.groupby(["model", "dataset", "scale", "knob"]).agg(psnr=("psnr", "mean"), n=("psnr", "size"))
    return means.reset_index().assign(curve=False)


def test_sweep_curves_are_kept_only_where_they_average_the_markers_images():
    curves = figures._matching_sweep(_means(_rows()), _sweep(n_at_x4=5))
    assert set(curves["scale"]) == {2.0}  # x4 averages 5 images, the markers 2: left out
    assert list(curves["model"].unique()) == ["moeisr-liif"] and curves["curve"].all()
    assert sorted(curves["knob"]) == ["-inf", "0.5", "inf"]  # learned routing only, not the random router


def test_the_figure_is_written_with_and_without_a_sweep(tmp_path):
    rows = _rows()
    for name, sweep in (("plain", None), ("swept", _sweep(n_at_x4=2))):
        path = figures.psnr_vs_gflops(rows, tmp_path / f"{name}.png", {"Set5": 5}, sweep)
        with Image.open(path) as image:
            assert image.width > 200 and image.height > 100
    assert figures.psnr_vs_gflops(rows.iloc[:0], tmp_path / "empty.png") is None


def test_figures_get_the_permissions_of_a_plain_open(tmp_path):
    """Written atomically, yet readable by others as a plain open() would leave it (mkstemp made them 0600)."""
    import os

    old = os.umask(0o022)
    try:
        path = figures.psnr_vs_gflops(_rows(), tmp_path / "plain.png", {"Set5": 5})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_best_box_is_the_window_of_largest_sum():
    import torch

    score = torch.rand(37, 29)
    size, step = 8, 4
    top, left = pictures.best_box(score, size, step)
    brute = {
        (t, ll): float(score[t : t + size, ll : ll + size].sum())
        for t in range(0, 37 - size + 1, step)
        for ll in range(0, 29 - size + 1, step)
    }
    assert (top, left) == max(brute, key=brute.get)


class _Oracle:
    """Returns the HR image itself: it gains most over bicubic where bicubic errs most."""

    def __init__(self, hr):
        self.hr = hr

    def upscale(self, lr, size):
        return self.hr[None, :, : size[0], : size[1]]


@pytest.mark.data
def test_the_qualitative_crop_is_where_the_models_gain_most_over_bicubic():
    """On a real Set5 image, with an oracle 'model', the crop is the window where bicubic's error is largest,
    every panel is that window of its method's full-image output, and the oracle's crop PSNR is infinite."""
    import torch

    from moeisr.data.benchmark import list_images
    from moeisr.data.degrade import degrade, upscale_bicubic
    from moeisr.data.images import load_image

    hr = load_image(list_images("Set5", limit=2)[1])[:, :96, :120]  # bird
    hr_cropped, lr = degrade(hr, 4)
    crops = pictures.qualitative_crops("Set5/bird", hr, 4, {"bicubic": None, "oracle": _Oracle(hr_cropped)}, crop=24)
    bicubic = upscale_bicubic(lr[None], hr_cropped.shape[-2:])[0].clamp(0, 1)
    error = (bicubic.mean(0) - hr_cropped.mean(0)) ** 2
    top, left, side, _ = crops.box
    assert side == 24 and top % 4 == 0 and left % 4 == 0
    assert (top, left) == pictures.best_box(error, 24, 4)
    labels = [label for label, _, _ in crops.panels]
    assert labels == ["HR", "bicubic", "oracle"]
    assert torch.equal(crops.panels[1][1], bicubic[:, top : top + 24, left : left + 24])
    assert crops.panels[2][2] == float("inf") and crops.panels[1][2] < 40
