"""LMF's render MLP (`lmmlp`): a narrow Linear/ReLU stack whose hidden pre-activations are modulated.

For every hidden layer i the pre-activation y = W_i·x + b_i becomes y·(1 + scale_i) + shift_i before the
ReLU, with scale_i, shift_i (hidden_dim values each) taken from the latent modulations of the LR pixel the
query decodes from. The output layer is not modulated. State-dict keys follow the official LMF/LIIF MLP
layout (`layers.{0,2,4,...}.weight/bias`), so official checkpoints load strictly.

The modulations arrive as tables at LR resolution (`ModulationTables`): per hidden layer, one row per LR
pixel holding [1 + scale | shift] (each part only if modulated). `1 + scale` is added once per LR pixel
instead of once per query, which is the same float addition on the same values as the official per-query
`mod + 1.0`. Each layer gathers the rows of its table for the queries' pixels (data movement) and applies
one multiply and one add per hidden value: these element-wise FLOPs run inside this module, so fvcore
counts them with the render MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.registry import models

# rows per block on the inference path: a block's activations and gathered modulations stay in cache
ROW_BLOCK = 8192


@dataclass
class ModulationTables:
    """Per hidden layer, the LR-resolution modulation rows: `tables` D×P×M (P = B·h·w LR pixels, M = hidden_dim
    for one of scale/shift, 2·hidden_dim for both as [1 + scale | shift])."""

    tables: torch.Tensor
    scale: bool
    shift: bool


@models.register("lmmlp")
class ModulatedMLP(nn.Module):
    """`hidden_depth` Linear(→hidden_dim) layers, each modulated then ReLU'd, and a Linear(→out_dim) output.

    Official args: in_dim, out_dim, hidden_dim, hidden_depth, mod_scale, mod_shift; `mod_up_merge` (an official
    GPU-memory option of how modulations are upsampled, no effect on values) is accepted and ignored;
    `use_conv` (1×1 convolutions instead of Linear layers, other state-dict shapes) is not supported.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        hidden_depth: int,
        mod_scale: bool = True,
        mod_shift: bool = True,
        mod_up_merge: bool = False,
        use_conv: bool = False,
    ):
        super().__init__()
        if use_conv:
            raise ValueError("lmmlp: use_conv=True (1x1 convolutions) is not supported; use Linear layers")
        if hidden_depth < 1:
            raise ValueError(f"lmmlp: hidden_depth must be >= 1, got {hidden_depth}")
        layers: list[nn.Module] = []
        last = in_dim
        for _ in range(hidden_depth):
            layers += [nn.Linear(last, hidden_dim), nn.ReLU()]
            last = hidden_dim
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden_dim, self.hidden_depth = hidden_dim, hidden_depth
        self.mod_scale, self.mod_shift = bool(mod_scale), bool(mod_shift)
        self.spec = {
            "name": "lmmlp",
            "args": {
                "in_dim": in_dim,
                "out_dim": out_dim,
                "hidden_dim": hidden_dim,
                "hidden_depth": hidden_depth,
                "mod_scale": self.mod_scale,
                "mod_shift": self.mod_shift,
            },
        }

    @property
    def mod_dim(self) -> int:
        """Modulation channels the latent MLP must produce for this MLP (official `mod_dim`)."""
        return self.hidden_dim * self.hidden_depth * (int(self.mod_scale) + int(self.mod_shift))

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def macs_per_input(self) -> int:
        """MACs of one evaluation: Σ in·out over the Linear layers."""
        return sum(layer.in_features * layer.out_features for layer in self.linears())

    def modulation_flops_per_input(self) -> int:
        """Element-wise FLOPs of the modulations in one evaluation: a multiply and/or an add per hidden value."""
        return self.hidden_dim * self.hidden_depth * (int(self.mod_scale) + int(self.mod_shift))

    def tables_from(self, mod: torch.Tensor) -> ModulationTables:
        """The official modulation channels P×mod_dim ([scales of every layer | shifts of every layer]) →
        ModulationTables D×P×M with `1 + scale` precomputed."""
        P, D, n = mod.shape[0], self.hidden_depth, self.hidden_dim
        parts = []
        start = 0
        if self.mod_scale:
            parts.append(mod[:, : D * n].reshape(P, D, n) + 1.0)
            start = D * n
        if self.mod_shift:
            parts.append(mod[:, start : start + D * n].reshape(P, D, n))
        if not parts:
            return ModulationTables(mod.new_zeros(D, P, 0), False, False)
        tables = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        return ModulationTables(tables.transpose(0, 1).contiguous(), self.mod_scale, self.mod_shift)

    def forward(self, x: torch.Tensor, mods: ModulationTables, pixels: torch.Tensor) -> torch.Tensor:
        """x N×in_dim (rows: query × shift), `pixels` N int64 rows of `mods`' tables → N×out_dim."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or x.shape[0] <= ROW_BLOCK:
            return self._rows(x, mods, pixels, in_place=not torch.is_grad_enabled())
        out = x.new_empty(x.shape[0], self.out_dim)
        for start in range(0, x.shape[0], ROW_BLOCK):
            stop = min(start + ROW_BLOCK, x.shape[0])
            out[start:stop] = self._rows(x[start:stop], mods, pixels[start:stop], in_place=True)
        return out

    def _rows(self, x: torch.Tensor, mods: ModulationTables, pixels: torch.Tensor, in_place: bool) -> torch.Tensor:
        linears = self.linears()
        n = self.hidden_dim
        for i, layer in enumerate(linears):
            x = F.linear(x, layer.weight, layer.bias)
            if i == len(linears) - 1:
                break
            if mods.scale or mods.shift:
                rows = torch.index_select(mods.tables[i], 0, pixels)
                scale = rows[:, :n] if mods.scale else None
                shift = rows[:, n if mods.scale else 0 :] if mods.shift else None
                if in_place:
                    if scale is not None:
                        x.mul_(scale)
                    if shift is not None:
                        x.add_(shift)
                else:
                    if scale is not None:
                        x = x * scale
                    if shift is not None:
                        x = x + shift
            x = x.relu_() if in_place else F.relu(x)
        return x
