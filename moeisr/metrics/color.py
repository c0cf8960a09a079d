"""RGB to luma (Y of BT.601 YCbCr), as SR papers evaluate it."""

from __future__ import annotations

import torch

# BT.601 "studio swing" luma weights for 8-bit output, applied to [0, 1] RGB: Y = 16 + 65.481 R + ...
_Y_WEIGHTS_255 = (65.481, 128.553, 24.966)
# LIIF/EDSR's PSNR converts the *difference* image with these weights over 256 and no offset.
_Y_DIFF_WEIGHTS_256 = (65.738, 129.057, 25.064)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of B×3×H×W RGB in [0, 1]: B×1×H×W in [16/255, 235/255].

    Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, the MATLAB `rgb2ycbcr` Y on a [0, 1] scale.
    """
    w = img.new_tensor(_Y_WEIGHTS_255).view(1, 3, 1, 1) / 255.0
    return (img * w).sum(dim=1, keepdim=True) + 16.0 / 255.0


def diff_to_y(diff: torch.Tensor) -> torch.Tensor:
    """Luma of a B×3×H×W RGB *difference* image (no offset; LIIF's weights / 256): B×1×H×W."""
    w = diff.new_tensor(_Y_DIFF_WEIGHTS_256).view(1, 3, 1, 1) / 256.0
    return (diff * w).sum(dim=1, keepdim=True)


def luma_weight_sum() -> float:
    """The factor by which `diff_to_y` scales a grey (equal-channel) difference: Σ weights / 256 (≈ 0.859)."""
    return sum(_Y_DIFF_WEIGHTS_256) / 256.0
