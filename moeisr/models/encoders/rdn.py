"""RDN feature encoder (`rdn`) in LIIF's `no_upsampling` form.

Names follow LIIF's `models/rdn.py` so official checkpoints load with `strict=True`: `SFENet1`, `SFENet2`,
`RDBs.{i}.convs.{c}.conv.0`, `RDBs.{i}.LFF`, `GFF.{0,1}`. The official configs are A (D=20 blocks,
C=6 convs, G=32) and B (16, 8, 64); `D`, `C`, `G` may override the config (e.g. small test models).

On the "as executed" inference path (`moeisr.models.base.executing()`, gradients off) the residual sums are
taken in place, into the fresh convolution outputs: bit-for-bit the official features, fewer allocations.
(Buffers for the dense concatenations were tried and dropped: oneDNN reorders NCHW inputs into its blocked
layout anyway, so they saved 5% of the peak memory; docs/speed.md §6.)
"""

from __future__ import annotations

import torch
from torch import nn

from moeisr.models.base import conv_chain_radius, executing
from moeisr.registry import models

CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}


class DenseConv(nn.Module):
    """3×3 conv + ReLU whose output is concatenated to its input (`conv.0` as in the official keys)."""

    def __init__(self, in_ch: int, growth: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, growth, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    """C dense convs, a 1×1 local feature fusion back to G0 channels, plus the input."""

    def __init__(self, G0: int, G: int, C: int):
        super().__init__()
        self.convs = nn.Sequential(*[DenseConv(G0 + c * G, G) for c in range(C)])
        self.LFF = nn.Conv2d(G0 + C * G, G0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if executing() and not torch.is_grad_enabled():
            return self.LFF(self.convs(x)).add_(x)
        return self.LFF(self.convs(x)) + x


class RDNEncoder(nn.Module):
    """RDN without upsampler: B×3×h×w (normalised to [-1, 1]) → B×G0×h×w features."""

    def __init__(self, G0: int, kernel_size: int, D: int, C: int, G: int):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.SFENet1 = nn.Conv2d(3, G0, kernel_size, padding=pad)
        self.SFENet2 = nn.Conv2d(G0, G0, kernel_size, padding=pad)
        self.RDBs = nn.ModuleList([ResidualDenseBlock(G0, G, C) for _ in range(D)])
        self.GFF = nn.Sequential(nn.Conv2d(D * G0, G0, 1), nn.Conv2d(G0, G0, kernel_size, padding=pad))
        self.out_dim = G0

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel depends on (one per 3×3 conv on the longest path)."""
        return conv_chain_radius(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        fused = self.GFF(torch.cat(block_outputs, 1))
        if executing() and not torch.is_grad_enabled():
            return fused.add_(shallow)
        return fused + shallow


@models.register("rdn")
def make_rdn(G0=64, RDNkSize=3, RDNconfig="B", scale=2, no_upsampling=True, D=None, C=None, G=None):
    """RDN encoder (config B: 16 blocks of 8 convs, growth 64). `scale` is accepted for official specs."""
    if not no_upsampling:
        raise ValueError("rdn: only the feature encoder (no_upsampling=True) is supported")
    if RDNconfig not in CONFIGS:
        raise ValueError(f"rdn: RDNconfig must be one of {sorted(CONFIGS)}, got {RDNconfig!r}")
    base_D, base_C, base_G = CONFIGS[RDNconfig]
    D, C, G = D or base_D, C or base_C, G or base_G
    encoder = RDNEncoder(G0, RDNkSize, D, C, G)
    args = dict(G0=G0, RDNkSize=RDNkSize, RDNconfig=RDNconfig, scale=scale, no_upsampling=True)
    if (D, C, G) != (base_D, base_C, base_G):
        args.update(D=D, C=C, G=G)
    encoder.spec = {"name": "rdn", "args": args}
    return encoder
