"""The decoder MLP (`mlp`), with LIIF's state-dict keys: `layers.{0,2,4,...}.weight/bias`.

Besides ordinary tensors, an MLP (and a MoEISR expert, which shares its layout) accepts `FactoredInputs`:
the "as executed" inference path of LIIF (docs/speed.md). LIIF's decoder input is
[feature of an LR pixel | per-query tail (rel_coord, cell)], and many queries share an LR pixel, so the
first Linear layer is split: its feature part W_f·f + b is computed once per LR pixel (`project`) and each
query only gathers that row and adds W_t·tail. The result equals the plain forward up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.registry import models


@dataclass
class FactoredInputs:
    """Decoder inputs with the first Linear layer factored (LIIF's "as executed" path).

    Row i of the equivalent dense input is [feature of LR pixel `pixels[i]` | `tail[i]`], `in_dim` wide.

    pixels: lead-shaped int64 (e.g. B×Q×K), indices into the flattened per-LR-pixel table (B·h·w rows).
    tail: lead×T float, the per-query columns that follow the feature (LIIF: rel_coord, then the cell).
    project: linear -> (B·h·w)×out, W_f·feature + bias for every LR pixel, where W_f is the first
        in_dim - T columns of `linear.weight`. Callers cache it (once per image and layer).
    in_dim: width of the dense input row.
    workspace: reusable activation buffers (a dict owned by the caller, e.g. per image), or None.
    """

    pixels: torch.Tensor
    tail: torch.Tensor
    project: Callable[[nn.Linear], torch.Tensor]
    in_dim: int
    workspace: MutableMapping | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the equivalent dense input: (*lead, in_dim)."""
        return (*self.pixels.shape, self.in_dim)

    def take(self, index: torch.Tensor) -> FactoredInputs:
        """Rows `index` (int64) of the first two lead dims flattened: lead (B, Q, K, ...) → (len(index), K, ...)."""
        lead = self.pixels.shape
        pixels = self.pixels.reshape(lead[0] * lead[1], *lead[2:]).index_select(0, index)
        tail = self.tail.reshape(lead[0] * lead[1], *self.tail.shape[2:]).index_select(0, index)
        return FactoredInputs(pixels, tail, self.project, self.in_dim, self.workspace)


def _buffer(workspace: MutableMapping | None, slot: int, rows: int, width: int, like: torch.Tensor) -> torch.Tensor | None:
    """A rows×width view of a reusable buffer (grown on demand), or None without a workspace.

    Reusing buffers across chunks avoids fresh multi-MB allocations, which on Linux are mmapped and
    page-faulted on every chunk (measured in docs/speed.md).
    """
    if workspace is None or torch.is_grad_enabled() or torch.jit.is_tracing():
        return None
    key = ("activation", slot, width, like.dtype, like.device)
    buf = workspace.get(key)
    if buf is None or buf.shape[0] < rows:
        buf = like.new_empty(rows, width)
        workspace[key] = buf
    return buf[:rows]


def factored_forward(linears: Sequence[nn.Linear], x: FactoredInputs) -> torch.Tensor:
    """Linear/ReLU stack (ReLU after every Linear but the last) on factored inputs → (*lead, out)."""
    first = linears[0]
    n_tail = x.tail.shape[-1]
    rows = x.pixels.reshape(-1)
    n = rows.numel()
    tail = x.tail.reshape(n, n_tail)
    projected = x.project(first)  # (B·h·w)×out, already holds the bias
    out = _buffer(x.workspace, 0, n, first.out_features, projected)
    if out is None:
        y = torch.addmm(projected.index_select(0, rows), tail, first.weight[:, -n_tail:].t())
    else:
        y = torch.index_select(projected, 0, rows, out=out).addmm_(tail, first.weight[:, -n_tail:].t())
    for i, layer in enumerate(linears[1:], start=1):
        y = y.relu_()
        last = i == len(linears) - 1
        out = None if last else _buffer(x.workspace, i % 2, n, layer.out_features, y)
        y = F.linear(y, layer.weight, layer.bias) if out is None else torch.addmm(layer.bias, y, layer.weight.t(), out=out)
    return y.view(*x.pixels.shape, -1)


@models.register("mlp")
class MLP(nn.Module):
    """Linear-ReLU stack over the last dim: (..., in_dim) → (..., out_dim), any leading dims.

    Also takes `FactoredInputs` (LIIF's "as executed" inference path; see the module docstring).
    """

    accepts_factored_inputs = True

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

    def forward(self, x: torch.Tensor | FactoredInputs) -> torch.Tensor:
        if isinstance(x, FactoredInputs):
            return factored_forward([m for m in self.layers if isinstance(m, nn.Linear)], x)
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).view(*lead, -1)
