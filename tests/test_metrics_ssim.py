"""SSIM on Y (skimage, Gaussian window): identity, agreement with a direct skimage call, published baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bicubic_pytorch.core import imresize
from PIL import Image
from shared_data import benchmark
from skimage.metrics import structural_similarity

from moeisr.metrics import rgb_to_y, set_mean, ssim


def _read(path: Path) -> torch.Tensor:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _bicubic_pair(set_name: str, image: str, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    hr = _read(benchmark(set_name) / "HR" / f"{image}.webp")
    h, w = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
    hr = hr[..., :h, :w]
    lr = _read(benchmark(set_name) / "LR_bicubic" / f"X{scale}" / f"{image}x{scale}.webp")
    return imresize(lr, sizes=(h, w)), hr


def test_rgb_to_y_is_bt601_studio_swing():
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(black), torch.tensor(16 / 255))
    assert torch.allclose(rgb_to_y(white), torch.tensor(235 / 255))
    assert rgb_to_y(white).shape == (1, 1, 2, 2)


def test_identical_images_give_one():
    _, hr = _bicubic_pair("Set5", "bird", 4)
    assert ssim(hr, hr, scale=4).tolist() == [1.0]


def test_matches_a_direct_skimage_call_on_a_real_pair():
    scale = 3
    sr, hr = _bicubic_pair("Set14", "zebra", scale)
    value = ssim(sr, hr, scale=scale)
    assert value.dtype == torch.float64 and value.shape == (1,)

    def y_numpy(img: torch.Tensor) -> np.ndarray:  # Y written out independently of rgb_to_y
        r, g, b = img[0].clamp(0, 1).double().numpy()
        return (16 + 65.481 * r + 128.553 * g + 24.966 * b)[scale:-scale, scale:-scale] / 255

    direct = structural_similarity(
        y_numpy(sr), y_numpy(hr), data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert value.item() == pytest.approx(direct, abs=1e-12)
    assert 0.5 < direct < 0.95


def test_batch_is_per_image_and_sr_is_clamped():
    sr, hr = _bicubic_pair("Set5", "butterfly", 4)
    batch = ssim(torch.cat([sr, hr]), torch.cat([hr, hr]), scale=4)
    assert batch.shape == (2,) and batch[1].item() == 1.0
    overshoot = sr * 1.3 - 0.15
    assert torch.equal(ssim(overshoot, hr, scale=4), ssim(overshoot.clamp(0, 1), hr, scale=4))


def test_div2k_shave_and_errors():
    sr, hr = _bicubic_pair("Set5", "head", 2)
    assert ssim(sr, hr, scale=2, protocol="div2k").item() != ssim(sr, hr, scale=2).item()
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(sr, hr[..., :-2], scale=2)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), scale=3)


@pytest.mark.parametrize(("scale", "published"), [(2, 0.9299), (3, 0.8682), (4, 0.8104)])
def test_set5_bicubic_baseline_matches_the_published_figure(scale, published):
    # Measured 0.9306 / 0.8691 / 0.8114 against the published 0.9299 / 0.8682 / 0.8104 (EDSR/RCAN
    # tables, MATLAB ssim on 8-bit Y).
    names = ("baby", "bird", "butterfly", "head", "woman")
    values = [ssim(*_bicubic_pair("Set5", name, scale), scale=scale) for name in names]
    assert set_mean(values) == pytest.approx(published, abs=0.0015)
