"""Property-based tests (hypothesis) of coordinates, cells, crops and metrics, for any size and scale.

Example-based checks of the same functions are in tests/test_metrics_psnr.py (identical images give +inf,
PSNR is symmetric, on a real image) and tests/test_data_train.py (the coordinate convention on a known crop).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from moeisr.coords import make_cell, make_coord
from moeisr.data.degrade import crop_for_scale, crop_to_multiple, degrade, lr_size
from moeisr.data.train import ImplicitDownsampled, TrainImages
from moeisr.errors import UserError
from moeisr.metrics import psnr, ssim
from moeisr.metrics._common import shave_border, shave_for

# deadline=None: no timing assertion; database=None: no .hypothesis/ folder in the checkout;
# derandomize: the same examples on every run, so CI is reproducible.
PROPERTY = settings(deadline=None, max_examples=60, database=None, derandomize=True)

sides = st.integers(min_value=1, max_value=300)
scales = st.one_of(st.integers(min_value=1, max_value=12).map(float), st.floats(min_value=1.0, max_value=30.0))


# ------------------------------------------------------------------------------- coordinates, cells


@PROPERTY
@given(n=st.integers(min_value=1, max_value=5000))
def test_make_coord_sits_at_pixel_centres_and_its_cells_tile_minus_1_to_1(n):
    coord = make_coord((n,), dtype=torch.float64)[:, 0]
    assert coord.shape == (n,)
    expected = -1 + (2 * torch.arange(n, dtype=torch.float64) + 1) / n  # the centre of pixel i
    assert torch.allclose(coord, expected, rtol=0, atol=1e-12)
    assert -1 < coord.min() and coord.max() < 1
    assert torch.allclose(coord, -coord.flip(0), rtol=0, atol=1e-12)  # symmetric about 0
    half = 1.0 / n  # half a cell: pixel i spans [c_i - 1/n, c_i + 1/n]
    edges = torch.cat([coord - half, coord[-1:] + half])
    assert edges[0].item() == pytest.approx(-1, abs=1e-12) and edges[-1].item() == pytest.approx(1, abs=1e-12)
    assert torch.allclose(edges.diff(), torch.full((n,), 2.0 / n, dtype=torch.float64), rtol=0, atol=1e-12)


@PROPERTY
@given(h=st.integers(min_value=1, max_value=64), w=st.integers(min_value=1, max_value=64))
def test_make_coord_2d_is_row_major_and_make_cell_is_one_pixel(h, w):
    grid = make_coord((h, w), flatten=False, dtype=torch.float64)
    flat = make_coord((h, w), dtype=torch.float64)
    assert grid.shape == (h, w, 2) and flat.shape == (h * w, 2)
    assert torch.equal(flat, grid.reshape(-1, 2))
    rows, cols = make_coord((h,), dtype=torch.float64)[:, 0], make_coord((w,), dtype=torch.float64)[:, 0]
    assert torch.equal(grid[:, 0, 0], rows) and torch.equal(grid[0, :, 1], cols)
    assert torch.equal(grid[..., 0], rows[:, None].expand(h, w)) and torch.equal(grid[..., 1], cols.expand(h, w))
    cell = make_cell(flat, (h, w))
    assert torch.equal(cell[:, 0], torch.full((h * w,), 2.0 / h, dtype=torch.float64))
    assert torch.equal(cell[:, 1], torch.full((h * w,), 2.0 / w, dtype=torch.float64))
    # (coord + 1) / cell - 1/2 recovers the integer pixel index
    index = (flat + 1) / cell - 0.5
    assert torch.allclose(index, index.round(), atol=1e-9)
    assert index[:, 0].max() == pytest.approx(h - 1) and index[:, 1].max() == pytest.approx(w - 1)


# ------------------------------------------------------------------------------------------- crops


@PROPERTY
@given(h=sides, w=sides, scale=scales)
def test_evaluation_crops_stay_inside_the_image_and_match_the_lr(h, w, scale):
    hr = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).expand(1, 3, h, w) / (h * w)
    if math.floor(h / scale + 1e-9) < 1 or math.floor(w / scale + 1e-9) < 1:
        with pytest.raises(UserError, match="too small"):
            crop_for_scale(hr, scale)
        return
    lr_h, lr_w = lr_size((h, w), scale)
    crop = crop_for_scale(hr, scale)
    ch, cw = crop.shape[-2:]
    assert ch <= h and cw <= w  # never past the image
    assert torch.equal(crop, hr[..., :ch, :cw])  # the top-left corner, pixel for pixel
    assert abs(ch - lr_h * scale) <= 0.5 + 1e-6 and abs(cw - lr_w * scale) <= 0.5 + 1e-6
    if float(scale).is_integer():
        k = int(scale)
        assert torch.equal(crop_to_multiple(hr, k), crop)  # the integer protocol's crop is the same
        assert ch % k == 0 and cw % k == 0


@PROPERTY
@given(h=st.integers(min_value=1, max_value=40), w=st.integers(min_value=1, max_value=40), scale=scales)
def test_degrade_gives_an_lr_of_the_documented_size(h, w, scale):
    hr = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * 41 + w))
    if math.floor(h / scale + 1e-9) < 1 or math.floor(w / scale + 1e-9) < 1:
        with pytest.raises(UserError):
            degrade(hr, scale)
        return
    crop, lr = degrade(hr, scale)
    assert tuple(lr.shape[-2:]) == lr_size((h, w), scale)
    assert tuple(crop.shape[-2:]) == tuple(crop_for_scale(hr, scale).shape[-2:])
    assert 0 <= lr.min() and lr.max() <= 1


@pytest.fixture(scope="module")
def coded_images(tmp_path_factory) -> TrainImages:
    """Images whose pixel (y, x) stores y in red and x in green, at awkward sizes around a 32 px patch."""
    folder = tmp_path_factory.mktemp("coded")
    for name, (h, w) in {"exact": (32, 32), "one_more": (33, 90), "tall": (200, 32), "small": (20, 100)}.items():
        y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        Image.fromarray(np.dstack([y, x, np.full_like(y, 7)]).astype(np.uint8)).save(folder / f"{name}.png")
    return TrainImages([folder], cache=True)


@PROPERTY
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    epoch=st.integers(min_value=0, max_value=1000),
    index=st.integers(min_value=0, max_value=2),
    inp_size=st.sampled_from([4, 8]),
    scale_max=st.sampled_from([1.0, 2.5, 4.0]),
)
def test_training_crops_never_read_outside_the_image(coded_images, seed, epoch, index, inp_size, scale_max):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # images smaller than the patch are skipped, with a warning
        ds = ImplicitDownsampled(
            coded_images, inp_size=inp_size, scale_max=scale_max, sample_q=None, seed=seed, epoch=epoch
        )
    kept = [p.name for p in ds.images.paths]
    assert ("small.png" in kept) == (20 >= ds.patch_max)  # 20 px high: skipped when the patch is larger
    item = ds[index % len(ds)]
    image = ds.images[index % len(ds.images)]
    side = round(2 / item["cell"][0, 0].item())
    assert item["gt"].shape == (side * side, 3) and item["inp"].shape == (3, inp_size, inp_size)
    levels = (item["gt"] * 255).round().long()
    ys, xs = levels[:, 0], levels[:, 1]
    height, width = image.shape[-2:]
    assert 0 <= ys.min() and ys.max() < height and 0 <= xs.min() and xs.max() < width
    # exactly the side x side block of one crop (flips and transposes only reorder it)
    top, left = ys.min().item(), xs.min().item()
    assert ys.max() - top == side - 1 and xs.max() - left == side - 1
    assert len(set(zip(ys.tolist(), xs.tolist(), strict=True))) == side * side
    assert (levels[:, 2] == 7).all()
    assert item["coord"].abs().max() < 1


# ----------------------------------------------------------------------------------------- metrics


def images(h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g, dtype=torch.float64), torch.rand(1, 3, h, w, generator=g).double()


protocols = st.sampled_from(["benchmark", "div2k"])
small_scales = st.one_of(st.integers(min_value=1, max_value=6).map(float), st.floats(min_value=1.0, max_value=6.0))


@PROPERTY
@given(h=st.integers(3, 48), w=st.integers(3, 48), scale=small_scales, protocol=protocols, seed=st.integers(0, 99))
def test_psnr_is_inf_for_identical_images_symmetric_and_never_negative(h, w, scale, protocol, seed):
    a, b = images(h, w, seed)
    if min(h, w) <= 2 * shave_for(scale, protocol):
        with pytest.raises(ValueError, match="too small for a border shave"):
            psnr(a, b, scale, protocol)
        return
    assert psnr(a, a, scale, protocol).item() == math.inf  # documented: zero error is +inf, not capped
    ab, ba = psnr(a, b, scale, protocol).item(), psnr(b, a, scale, protocol).item()
    assert ab == ba  # the squared difference is symmetric, bit for bit
    assert 0 <= ab < math.inf  # peak 1 and values in [0, 1]: the error power is at most 1


@PROPERTY
@given(h=st.integers(1, 40), w=st.integers(1, 40), shave=st.integers(0, 12))
def test_shaving_never_reads_outside_the_image(h, w, shave):
    x = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w)
    if h <= 2 * shave or w <= 2 * shave:
        with pytest.raises(ValueError, match="too small"):  # never an empty or wrapped-around slice
            shave_border(x, shave)
        return
    inner = shave_border(x, shave)
    assert inner.shape[-2:] == (h - 2 * shave, w - 2 * shave)
    expected = [[r * w + c for c in range(shave, w - shave)] for r in range(shave, h - shave)]
    assert inner[0, 0].tolist() == expected


@PROPERTY
@given(h=st.integers(24, 48), w=st.integers(24, 48), scale=st.integers(1, 4), seed=st.integers(0, 99))
def test_psnr_and_ssim_ignore_exactly_the_shaved_border(h, w, scale, seed):
    hr, sr = images(h, w, seed)
    border = sr.clone()
    border[..., :scale, :] = 1 - border[..., :scale, :]  # change every pixel of the shaved frame
    border[..., -scale:, :] = 1 - border[..., -scale:, :]
    border[..., :, :scale] = 1 - border[..., :, :scale]
    border[..., :, -scale:] = 1 - border[..., :, -scale:]
    assert psnr(border, hr, scale).item() == psnr(sr, hr, scale).item()
    assert ssim(border, hr, scale).item() == ssim(sr, hr, scale).item()
    inside = sr.clone()
    inside[..., scale, scale] = 1 - inside[..., scale, scale]  # the first scored pixel counts
    assert psnr(inside, hr, scale).item() != psnr(sr, hr, scale).item()
