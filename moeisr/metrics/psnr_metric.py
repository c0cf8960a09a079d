"""PSNR with the LIIF-family protocols (benchmark: Y of the difference, shave = scale; div2k: RGB)."""

from __future__ import annotations

import torch

from moeisr.metrics._common import check_pair, shave_border, shave_for
from moeisr.metrics.color import diff_to_y


def psnr(sr: torch.Tensor, hr: torch.Tensor, scale: float, protocol: str = "benchmark") -> torch.Tensor:
    """Per-image PSNR in dB (peak 1) of SR against HR: float64 tensor of shape (B,).

    sr, hr: B×3×H×W float tensors in [0, 1] of the same shape; sr is clamped to [0, 1], never
    quantised to 8 bits.
    protocol "benchmark": the difference sr - hr is converted to Y with (65.738, 129.057, 25.064)/256
    (no offset), then ceil(scale) pixels are shaved from each border.
    protocol "div2k": the RGB difference, ceil(scale) + 6 pixels shaved.
    PSNR = -10 log10(mean(diff^2)). Identical images give +inf (zero error).
    Raises ValueError on mismatched shapes, an unknown protocol, or a shave that leaves no pixels.
    """
    sr, hr = check_pair(sr, hr)
    shave = shave_for(scale, protocol)
    diff = sr.to(torch.float64) - hr.to(torch.float64)
    if protocol == "benchmark":
        diff = diff_to_y(diff)
    diff = shave_border(diff, shave)
    mse = diff.pow(2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse)  # log10(0) = -inf, so zero error is +inf


def set_mean(per_image: torch.Tensor | list[torch.Tensor]) -> float:
    """Mean of per-image values over a set (the figure tables report, e.g. mean PSNR over Set5).

    Accepts one (N,) tensor or a list of (B,) tensors. A single +inf PSNR makes the mean +inf.
    """
    values = torch.cat([v.reshape(-1) for v in per_image]) if isinstance(per_image, list) else per_image.reshape(-1)
    if values.numel() == 0:
        raise ValueError("cannot average an empty set of metric values")
    return values.to(torch.float64).mean().item()
