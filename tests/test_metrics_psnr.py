"""PSNR (LIIF protocols): hand-computed cases, border shaving, and the published bicubic baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from bicubic_pytorch.core import imresize
from PIL import Image
from shared_data import benchmark

from moeisr.metrics import psnr, set_mean


def _read(path: Path) -> torch.Tensor:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _butterfly() -> torch.Tensor:
    # Scaled to [0, 0.9] so the +0.05 offsets below never reach the SR clamp at 1. Float64, so the
    # hand-computed offsets are exact to ~1e-15 rather than float32's ~1e-7.
    return _read(benchmark("Set5") / "HR" / "butterfly.webp").double() * 0.9


def _corrupt_border(img: torch.Tensor, width: int) -> torch.Tensor:
    """Shift every channel of the outer `width` pixels by 0.5 (mod 1): an error of exactly 0.5 there."""
    out = (img + 0.5) % 1
    out[..., width:-width, width:-width] = img[..., width:-width, width:-width]
    return out


def test_constant_offset_on_all_channels_by_hand():
    # Difference 0.1 on R, G and B. Its Y (no offset) is 0.1 * (65.738 + 129.057 + 25.064) / 256
    # = 0.1 * 219.859 / 256 = 0.085882421875, so PSNR = -20 log10(0.085882421875) = 21.3219143 dB.
    hr = torch.full((2, 3, 40, 40), 0.5, dtype=torch.float64)
    value = psnr(hr + 0.1, hr, scale=4)
    assert value.dtype == torch.float64 and value.shape == (2,)
    assert value.tolist() == pytest.approx([21.321914340114525] * 2, abs=1e-9)


def test_shave_excludes_a_corrupted_border_of_width_scale():
    # Interior: +0.05 on G only. Y difference 0.05 * 129.057 / 256 = 0.0252064453125,
    # PSNR = -20 log10(0.0252064453125) = 31.9697679 dB. The outer `scale` pixels are inverted.
    hr = _butterfly()
    shifted = hr.clone()
    shifted[:, 1] += 0.05
    for scale in (2, 3, 4):
        value = psnr(_corrupt_border(shifted, scale), hr, scale=scale)
        assert value.item() == pytest.approx(31.969767909965977, abs=1e-6)
        # One more corrupted row/column reaches the scored area and costs several dB.
        assert psnr(_corrupt_border(shifted, scale + 1), hr, scale=scale).item() < 28


def test_non_integer_scale_shaves_its_ceiling():
    hr = _butterfly()
    shifted = hr.clone()
    shifted[:, 1] += 0.05
    assert psnr(_corrupt_border(shifted, 3), hr, scale=2.5).item() == pytest.approx(31.969767909965977, abs=1e-6)
    assert psnr(_corrupt_border(shifted, 4), hr, scale=2.5).item() < 28


def test_div2k_protocol_uses_rgb_and_shaves_scale_plus_6():
    # Interior: +0.1 on R only. RGB MSE = 0.1^2 / 3, PSNR = 10 log10(300) = 24.7712125 dB
    # (on Y it would be -20 log10(0.1 * 65.738 / 256) = 31.81 dB). The outer scale + 6 pixels are corrupted.
    hr = _butterfly()
    shifted = hr.clone()
    shifted[:, 0] += 0.1
    scale = 2
    value = psnr(_corrupt_border(shifted, scale + 6), hr, scale=scale, protocol="div2k")
    assert value.item() == pytest.approx(24.77121254719662, abs=1e-6)
    assert psnr(_corrupt_border(shifted, scale + 7), hr, scale=scale, protocol="div2k").item() < 22
    assert psnr(shifted, hr, scale=scale).item() == pytest.approx(-20 * math.log10(0.1 * 65.738 / 256), abs=1e-6)


def test_identical_images_give_inf_and_psnr_is_symmetric():
    hr = _butterfly()
    noisy = (hr + 0.03 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert psnr(hr, hr, scale=4).item() == math.inf
    assert psnr(noisy, hr, scale=4).item() == psnr(hr, noisy, scale=4).item()
    assert math.isfinite(psnr(noisy, hr, scale=4).item())
    assert set_mean([psnr(noisy, hr, scale=4), psnr(hr, hr, scale=4)]) == math.inf


def test_sr_is_clamped_and_never_rounded():
    hr = _butterfly()
    # A sub-quantum error (1/1000 < 1/255 / 2) would vanish if the SR were rounded to 8 bits.
    assert psnr(hr + 0.001, hr, scale=2).item() == pytest.approx(-20 * math.log10(0.001 * 219.859 / 256), abs=1e-6)
    white = torch.ones(1, 3, 32, 32)
    assert psnr(white + 0.5, white, scale=2).item() == math.inf  # overshoot clamped back to 1


def test_set_mean_is_the_mean_of_per_image_values():
    assert set_mean([torch.tensor([30.0, 32.0], dtype=torch.float64), torch.tensor([34.0])]) == 32.0
    assert set_mean(torch.tensor([1.0, 2.0])) == 1.5
    with pytest.raises(ValueError):
        set_mean(torch.tensor([]))


def test_bad_inputs_raise_clear_errors():
    a = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, torch.rand(1, 3, 16, 15), scale=2)
    with pytest.raises(ValueError, match="too small for a border shave of 8"):
        psnr(a, a, scale=8)
    with pytest.raises(ValueError, match="too small for a border shave of 8"):
        psnr(a, a, scale=2, protocol="div2k")
    with pytest.raises(ValueError, match="unknown protocol"):
        psnr(a, a, scale=2, protocol="rgb")
    with pytest.raises(ValueError, match="floating-point"):
        psnr((a * 255).to(torch.uint8), (a * 255).to(torch.uint8), scale=2)
    with pytest.raises(ValueError, match="positive"):
        psnr(a, a, scale=0)


@pytest.mark.parametrize(("scale", "published"), [(2, 33.66), (3, 30.39), (4, 28.42)])
def test_set5_bicubic_baseline_matches_the_published_figure(scale, published):
    # The reference LR upscaled with MATLAB-style bicubic (bicubic-pytorch). Measured 33.685 / 30.408 /
    # 28.433; the published tables round the SR and its Y to 8 bits, which accounts for the ~0.02 dB.
    values = []
    for hr_path in sorted((benchmark("Set5") / "HR").glob("*.webp")):
        hr = _read(hr_path)
        h, w = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
        hr = hr[..., :h, :w]
        lr = _read(benchmark("Set5") / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.webp")
        values.append(psnr(imresize(lr, sizes=(h, w)), hr, scale=scale))
    assert len(values) == 5
    assert set_mean(values) == pytest.approx(published, abs=0.04)
