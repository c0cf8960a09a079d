"""SSIM on the BT.601 Y channel via scikit-image, with the same border shave as PSNR."""

from __future__ import annotations

import torch
from skimage.metrics import structural_similarity

from moeisr.metrics._common import check_pair, shave_border, shave_for
from moeisr.metrics.color import rgb_to_y

# Gaussian window of sigma 1.5, as in Wang et al. (2004); scikit-image truncates it at 3.5 sigma.
_SIGMA = 1.5
SSIM_WINDOW = 2 * int(3.5 * _SIGMA + 0.5) + 1  # px: the smallest side SSIM accepts (after shaving)


def ssim(sr: torch.Tensor, hr: torch.Tensor, scale: float, protocol: str = "benchmark") -> torch.Tensor:
    """Per-image SSIM of SR against HR on Y: float64 tensor of shape (B,), 1.0 for identical images.

    sr, hr: B×3×H×W float tensors in [0, 1] of the same shape; sr is clamped to [0, 1], never
    quantised. Both are converted to BT.601 Y (see `rgb_to_y`), the border is shaved as for `psnr`
    (ceil(scale), or ceil(scale) + 6 for "div2k"), and skimage's `structural_similarity` runs with
    data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False.
    """
    sr, hr = check_pair(sr, hr)
    shave = shave_for(scale, protocol)
    y_sr = shave_border(rgb_to_y(sr.detach().to(torch.float64)), shave)[:, 0].cpu().numpy()
    y_hr = shave_border(rgb_to_y(hr.detach().to(torch.float64)), shave)[:, 0].cpu().numpy()
    if min(y_sr.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving, got {y_sr.shape[-2:]}")
    values = [
        structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=_SIGMA, use_sample_covariance=False)
        for a, b in zip(y_sr, y_hr, strict=True)
    ]
    return torch.tensor(values, dtype=torch.float64)
