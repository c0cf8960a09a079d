"""Input checks and border shaving shared by the pixel metrics (PSNR, SSIM, LPIPS)."""

from __future__ import annotations

import math

import torch


def check_pair(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an (SR, HR) pair and return it with the SR clamped to [0, 1] (never rounded).

    Both must be floating B×3×H×W tensors of the same shape; HR must already lie in [0, 1].
    Raises ValueError otherwise (an integer tensor is refused rather than guessed to be 0..255).
    """
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor in [0, 1], got {getattr(t, 'dtype', type(t))}")
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"{name} must be B×3×H×W, got shape {tuple(t.shape)}")
    if sr.shape != hr.shape:
        raise ValueError(
            f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}; crop HR to the SR size first"
        )
    if hr.numel() and (hr.min() < 0 or hr.max() > 1):
        raise ValueError(f"hr values must lie in [0, 1], got [{hr.min().item():.4g}, {hr.max().item():.4g}]")
    return sr.clamp(0, 1), hr


def shave_for(scale: float, protocol: str) -> int:
    """Border width, in pixels, removed from each side before PSNR/SSIM.

    "benchmark" (LIIF's Set5/Set14/B100/Urban100 rule): ceil(scale), which is `scale` itself for the
    integer scales the published tables use; for a non-integer scale the ceiling keeps every pixel
    that is within `scale` pixels of the border out of the score.
    "div2k" (LIIF's DIV2K rule): ceil(scale) + 6.
    """
    if protocol not in ("benchmark", "div2k"):
        raise ValueError(f"unknown protocol {protocol!r}: use 'benchmark' or 'div2k'")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    shave = math.ceil(scale)
    return shave + 6 if protocol == "div2k" else shave


def shave_border(x: torch.Tensor, shave: int) -> torch.Tensor:
    """Crop `shave` pixels from each spatial border of (..., H, W); ValueError if nothing would remain."""
    h, w = x.shape[-2:]
    if h <= 2 * shave or w <= 2 * shave:
        raise ValueError(f"a {h}x{w} image is too small for a border shave of {shave} px on each side")
    if shave == 0:
        return x
    return x[..., shave:-shave, shave:-shave]
