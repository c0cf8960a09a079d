"""Bicubic degradations: MATLAB's imresize, the integer benchmark protocol and LIIF's arbitrary-scale rule.

Resampler (`resize`). Reproduces MATLAB's `imresize(A, [h w], 'bicubic')`: Keys cubic kernel (a = -0.5),
stretched by 1/scale when shrinking (antialiasing), output pixel centres mapped as
u = (x + 0.5) / scale - 0.5, border pixels replicated (out-of-range indices clamped, as in the imresize
that made the reference files), one separable pass per axis, the axis with the smaller scale first
(height first on ties). With `quantize=True` the input is taken as 8-bit (snapped to 1/255 levels) and
each pass is rounded half up and clamped to 0..255, which is what MATLAB does for uint8 images. With it,
every reference LR file of Set5, Set14 and B100 (x2, x3, x4) is reproduced bit for bit.
`backend="bicubic_pytorch"` runs each pass through `bicubic_pytorch.core.imresize` instead: same kernel,
but symmetric (mirrored) borders, so border pixels differ from the reference files (63-68 dB with
quantize=True, 56-57 dB without rounding; measured on Set5, Set14, B100 x2-x4).

Integer protocol (`downsample`): crop HR at the top-left to a multiple of k, then resize by 1/k. The
benchmark LR are 8-bit files, so `quantize` defaults to True there; it is a knob.

Arbitrary and out-of-distribution scales (`degrade_arbitrary`), LIIF's rule, for any real s >= 1:
    h_lr = floor(H / s + 1e-9),  w_lr = floor(W / s + 1e-9)
    HR crop = top-left (round(h_lr * s), round(w_lr * s))      (Python's round)
    LR = resize(HR crop, (h_lr, w_lr))
For an integer s this is exactly `downsample` (same crop, same sizes, same code path).

All functions accept 3×H×W or B×3×H×W float tensors in [0, 1] and return the same rank, clamped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from moeisr.errors import UserError

Backend = Literal["matlab", "bicubic_pytorch"]
BACKENDS = ("matlab", "bicubic_pytorch")


def _keys_cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(n_in: int, n_out: int, antialias: bool = True, device=None) -> torch.Tensor:
    """Dense (n_out, n_in) float64 matrix of one MATLAB bicubic resampling pass (rows sum to 1)."""
    scale = n_out / n_in
    stretch = scale if (antialias and scale < 1) else 1.0
    width = 4.0 / stretch
    u = (torch.arange(1, n_out + 1, dtype=torch.float64, device=device)) / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64, device=device)[None, :]
    w = stretch * _keys_cubic(stretch * (u[:, None] - idx))
    w = w / w.sum(dim=1, keepdim=True)
    idx = idx.clamp(1, n_in).long() - 1  # replicate the border pixels
    return torch.zeros(n_out, n_in, dtype=torch.float64, device=device).scatter_add_(1, idx, w)


def _resize_axis(x: torch.Tensor, dim: int, n_out: int, antialias: bool, backend: str) -> torch.Tensor:
    """Resample N×C×H×W `x` along dim -2 (height) or -1 (width) to n_out samples."""
    if backend == "bicubic_pytorch":
        from bicubic_pytorch.core import imresize

        sizes = (n_out, x.shape[-1]) if dim == -2 else (x.shape[-2], n_out)
        return imresize(x, sizes=sizes, kernel="cubic", antialiasing=antialias).to(x.dtype)
    weights = resize_weights(x.shape[dim], n_out, antialias, device=x.device).to(x.dtype)
    return weights @ x if dim == -2 else x @ weights.T


def _check_image(img: torch.Tensor) -> None:
    if not torch.is_tensor(img) or img.dim() not in (3, 4) or not img.is_floating_point():
        shape = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
        raise ValueError(f"expected a float 3×H×W or B×3×H×W tensor, got {shape}")


def resize(
    img: torch.Tensor,
    size: tuple[int, int],
    quantize: bool = False,
    antialias: bool = True,
    backend: Backend = "matlab",
) -> torch.Tensor:
    """MATLAB-style bicubic resize of 3×H×W or B×3×H×W `img` in [0, 1] to `size` = (h, w).

    quantize: treat the input as 8-bit and round every pass to 8-bit levels (MATLAB on uint8).
    Returns the same rank as the input, float, clamped to [0, 1]. Differentiable when quantize=False.
    """
    _check_image(img)
    h, w = (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise UserError(f"resize target {h}x{w} is empty; use a positive output size")
    if backend not in BACKENDS:
        raise UserError(f"unknown resize backend {backend!r}; use one of {', '.join(BACKENDS)}")
    x = img if img.dim() == 4 else img[None]
    if quantize:
        x = torch.floor(x.double().clamp(0, 1) * 255 + 0.5)
    elif x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    H, W = x.shape[-2:]
    passes = sorted([(h / H, 0, -2, h), (w / W, 1, -1, w)])  # smaller scale first, height on ties
    for _, _, dim, n_out in passes:
        if x.shape[dim] == n_out:
            continue  # a same-size pass is the identity
        x = _resize_axis(x, dim, n_out, antialias, backend)
        if quantize:
            x = torch.floor(x + 0.5).clamp_(0, 255)
    out = x.float() / 255 if quantize else x.clamp(0, 1)
    out = out.to(img.dtype)
    return out if img.dim() == 4 else out[0]


def upscale_bicubic(lr: torch.Tensor, size: tuple[int, int], quantize: bool = False, backend: Backend = "matlab"):
    """Bicubic upsampling of 3×h×w or B×3×h×w `lr` to `size` = (H, W), the bicubic baseline (MATLAB-style).

    quantize=True rounds to 8-bit levels as MATLAB does on uint8 LR files. Returns float in [0, 1].
    """
    return resize(lr, size, quantize=quantize, backend=backend)


def _integer_scale(scale) -> int:
    value = float(scale)
    if not value.is_integer() or value < 1:
        raise UserError(f"scale {scale} is not a positive integer; use degrade_arbitrary for non-integer scales")
    return int(value)


def _check_scale(scale) -> float:
    value = float(scale)
    if not math.isfinite(value) or value < 1:
        raise UserError(f"scale {scale} must be a finite number >= 1")
    return value


def crop_to_multiple(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Top-left crop of 3×H×W or B×3×H×W `hr` to (H - H % k, W - W % k), as the reference files were made."""
    k = _integer_scale(scale)
    H, W = hr.shape[-2:]
    if H < k or W < k:
        raise UserError(f"image of {H}x{W} pixels is smaller than scale x{k}; use a larger image or a smaller scale")
    return hr[..., : H - H % k, : W - W % k]


def floor_lr_size(hr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """LR (h, w) for an HR (H, W) at real `scale` >= 1: floor(H / s + 1e-9), floor(W / s + 1e-9); may be 0."""
    s = _check_scale(scale)
    return math.floor(hr_size[0] / s + 1e-9), math.floor(hr_size[1] / s + 1e-9)


def lr_size(hr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`floor_lr_size`, with a UserError when a side would be empty."""
    h, w = floor_lr_size(hr_size, scale)
    if h < 1 or w < 1:
        raise UserError(
            f"image of {hr_size[0]}x{hr_size[1]} pixels is too small for scale x{scale}; use a smaller scale"
        )
    return h, w


def crop_for_scale(hr: torch.Tensor, scale: float) -> torch.Tensor:
    """Top-left HR crop of (round(h_lr * s), round(w_lr * s)) used by LIIF's rule; 3×H×W or B×3×H×W."""
    s = _check_scale(scale)
    h, w = lr_size(tuple(hr.shape[-2:]), s)
    return hr[..., : round(h * s), : round(w * s)]


def downsample(hr: torch.Tensor, scale: int, quantize: bool = True, backend: Backend = "matlab") -> torch.Tensor:
    """Integer-protocol LR: crop `hr` to a multiple of `scale` (top-left), then MATLAB bicubic by 1/scale.

    hr: 3×H×W or B×3×H×W in [0, 1]. Returns 3×(H//k)×(W//k) (or batched) in [0, 1]; 8-bit levels if quantize.
    """
    _check_image(hr)
    k = _integer_scale(scale)
    cropped = crop_to_multiple(hr, k)
    return resize(cropped, (cropped.shape[-2] // k, cropped.shape[-1] // k), quantize=quantize, backend=backend)


def degrade_arbitrary(
    hr: torch.Tensor, scale: float, quantize: bool = True, backend: Backend = "matlab"
) -> torch.Tensor:
    """LR of `hr` at any real scale >= 1 following LIIF's rule (module docstring); equals `downsample` for integers.

    hr: 3×H×W or B×3×H×W in [0, 1], uncropped. Returns 3×h_lr×w_lr (or batched) in [0, 1].
    """
    _check_image(hr)
    s = _check_scale(scale)
    return resize(crop_for_scale(hr, s), lr_size(tuple(hr.shape[-2:]), s), quantize=quantize, backend=backend)


def degrade(
    hr: torch.Tensor, scale: float, quantize: bool = True, backend: Backend = "matlab"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR crop, LR) pair for evaluation at any scale >= 1: the crop is the ground truth matching the LR."""
    s = _check_scale(scale)
    return crop_for_scale(hr, s), degrade_arbitrary(hr, s, quantize=quantize, backend=backend)
