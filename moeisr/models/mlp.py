"""The decoder MLP (`mlp`), with LIIF's state-dict keys: `layers.{0,2,4,...}.weight/bias`."""

from __future__ import annotations

import torch
from torch import nn

from moeisr.registry import models


@models.register("mlp")
class MLP(nn.Module):
    """Linear-ReLU stack over the last dim: (..., in_dim) → (..., out_dim), any leading dims."""

    def __init__(self, in_dim: int, out_dim: int, hidden_list: list[int]):
        super().__init__()
        dims = [in_dim, *hidden_list]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.spec = {"name": "mlp", "args": {"in_dim": in_dim, "out_dim": out_dim, "hidden_list": list(hidden_list)}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).view(*lead, -1)
