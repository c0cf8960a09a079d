"""EDSR feature encoders (`edsr-baseline`, `edsr`) in LIIF's `no_upsampling` form.

Module and state-dict names follow LIIF's `models/edsr.py`, so official checkpoints load with
`strict=True`: `sub_mean.*`, `add_mean.*`, `head.0.*`, `body.{i}.body.{0,2}.*`, `body.{n}.*`. The two
MeanShift layers are kept only for those keys: the official forward pass does not apply them (LIIF's data
pipeline normalises the input to [-1, 1] instead), and neither does this one. They are buffers here, so
they never reach an optimiser.

On the "as executed" inference path (`moeisr.models.base.executing()`, gradients off) the residual sums go
into the fresh convolution outputs and the multiply by `res_scale = 1` is skipped: bit-for-bit the same
features, fewer passes over memory. Elsewhere (training, FLOPs counts of the published path) the forward is
the official one, multiply included.
"""

from __future__ import annotations

import torch
from torch import nn

from moeisr.models.base import conv_chain_radius, executing
from moeisr.registry import models

RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Module):
    """A fixed 1×1 conv adding `sign * rgb_range * mean` (unused in forward; kept for the state-dict keys)."""

    def __init__(self, rgb_range: float, sign: int):
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(RGB_MEAN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, self.bias)


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by `res_scale`, plus the input. `body.{0,2}` as in the official keys."""

    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(True), conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if executing() and not torch.is_grad_enabled():
            res = self.body(x)  # a fresh tensor: the scale and the sum can be applied in place
            if self.res_scale != 1:  # ×1 is exact, so skipping it changes no bit
                res.mul_(self.res_scale)
            return res.add_(x)
        return self.body(x).mul(self.res_scale) + x


class EDSREncoder(nn.Module):
    """EDSR without upsampler: B×3×h×w (normalised to [-1, 1]) → B×n_feats×h×w features."""

    def __init__(self, n_resblocks: int, n_feats: int, res_scale: float, rgb_range: float = 1):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], conv3x3(n_feats, n_feats)
        )
        self.out_dim = n_feats

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel depends on (one per 3×3 conv: 2·n_resblocks + 2)."""
        return conv_chain_radius(self.head) + conv_chain_radius(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        if executing() and not torch.is_grad_enabled():
            return self.body(x).add_(x)
        return self.body(x) + x


def _make(name, n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range) -> EDSREncoder:
    if not no_upsampling:
        raise ValueError(f"{name}: only the feature encoder (no_upsampling=True) is supported")
    encoder = EDSREncoder(n_resblocks, n_feats, res_scale, rgb_range)
    args = dict(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, scale=scale)
    encoder.spec = {"name": name, "args": {**args, "no_upsampling": True, "rgb_range": rgb_range}}
    return encoder


@models.register("edsr-baseline")
def make_edsr_baseline(n_resblocks=16, n_feats=64, res_scale=1, scale=2, no_upsampling=True, rgb_range=1):
    """EDSR-baseline encoder (16 blocks, 64 channels). `scale` is accepted for official specs and unused."""
    return _make("edsr-baseline", n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)


@models.register("edsr")
def make_edsr(n_resblocks=32, n_feats=256, res_scale=0.1, scale=2, no_upsampling=True, rgb_range=1):
    """Full EDSR encoder (32 blocks, 256 channels, res_scale 0.1). `scale` is accepted and unused."""
    return _make("edsr", n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)
