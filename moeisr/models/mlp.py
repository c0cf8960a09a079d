"""The decoder MLP (`mlp`), with LIIF's state-dict keys: `layers.{0,2,4,...}.weight/bias`.

Besides ordinary tensors, an MLP (and a MoEISR expert, which shares its layout) accepts the inputs of the
"as executed" inference path (docs/speed.md), which compute the same values with fewer operations:

- `FactoredInputs` (LIIF): the decoder input is [feature of an LR pixel | per-query tail (rel_coord,
  cell)] and many queries share an LR pixel, so the first Linear layer is split: its feature part
  W_f·f + b is computed once per LR pixel (`project`) and each query only gathers that row and adds
  W_t·tail.
- `DenseInputs`: the ordinary input rows, plus an `InferenceCache` whose buffers the layers write
  into instead of allocating fresh tensors for every chunk.
- `FourierInputs` (LTE, in moeisr/models/decoders/lte.py): the Fourier basis is built by the first layer,
  block by block, into reused buffers (for a MoEISR expert: only for its own queries).

All are `InferenceInputs`: a `shape` (that of the equivalent dense input), `take(index)` (a subset of the
queries, for sparse dispatch; nothing is copied) and `first_layer(linear, out, start, stop)`.

`inference_forward` evaluates the Linear/ReLU stack on either; the result equals the plain forward up to
float rounding (the tests bound the difference by 1e-5 on real images). A plain tensor with gradients off
(outside a jit trace) also goes through it, with in-place ReLUs: bit-for-bit the plain forward, with fewer
fresh allocations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.models.base import InferenceCache, decoder_hidden_dtype
from moeisr.registry import models


class InferenceInputs:
    """Base of the "as executed" decoder inputs (module docstring). Subclasses are dataclasses with a `cache`
    (the per-image InferenceCache) and implement the three members below."""

    cache: InferenceCache

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the equivalent dense input: (*lead, in_dim); rows are lead-major."""
        raise NotImplementedError

    def take(self, index: torch.Tensor) -> InferenceInputs:
        """The queries `index` (int64 into the first two lead dims flattened): lead (B, Q, K) → (len(index), K)."""
        raise NotImplementedError

    def first_layer(self, linear: nn.Linear, out: torch.Tensor | None, start: int = 0, stop: int | None = None):
        """linear(dense rows[start:stop]) as n×out_features (into `out` if given), without building all rows."""
        raise NotImplementedError


@dataclass
class FactoredInputs(InferenceInputs):
    """Decoder inputs with the first Linear layer factored (LIIF's "as executed" path).

    Row i of the equivalent dense input is [feature of LR pixel `pixels[i]` | `tail[i]`], `in_dim` wide.

    pixels: lead-shaped int64 (e.g. B×Q×K), indices into the flattened per-LR-pixel table (B·h·w rows).
    tail: lead×T float, the per-query columns that follow the feature (LIIF: rel_coord, then the cell).
    project: linear -> (B·h·w)×out, W_f·feature + bias for every LR pixel, where W_f is the first
        in_dim - T columns of `linear.weight` (cached by the caller, once per image and layer).
    in_dim: width of the dense input row.
    cache: the per-image InferenceCache (activation buffers).
    """

    pixels: torch.Tensor
    tail: torch.Tensor
    project: Callable[[nn.Linear], torch.Tensor]
    in_dim: int
    cache: InferenceCache

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the equivalent dense input: (*lead, in_dim)."""
        return (*self.pixels.shape, self.in_dim)

    def take(self, index: torch.Tensor) -> FactoredInputs:
        """Rows `index` (int64) of the first two lead dims flattened: lead (B, Q, K) → (len(index), K)."""
        lead = self.pixels.shape
        pixels = self.pixels.reshape(lead[0] * lead[1], *lead[2:]).index_select(0, index)
        tail = self.tail.reshape(lead[0] * lead[1], *self.tail.shape[2:]).index_select(0, index)
        return FactoredInputs(pixels, tail, self.project, self.in_dim, self.cache)

    def first_layer(self, linear: nn.Linear, out: torch.Tensor | None, start: int = 0, stop: int | None = None):
        """linear(dense rows[start:stop]) as n×out_features (into `out` if given), without building the rows."""
        n_tail = self.tail.shape[-1]
        rows = self.pixels.reshape(-1)[start:stop]
        tail = self.tail.reshape(-1, n_tail)[start:stop]
        projected = self.project(linear)  # (B·h·w)×out, already holds the bias
        tail_weight = linear.weight[:, -n_tail:].t()
        if out is None:
            return torch.addmm(projected.index_select(0, rows), tail, tail_weight)
        return torch.index_select(projected, 0, rows, out=out).addmm_(tail, tail_weight)


@dataclass
class DenseInputs(InferenceInputs):
    """Ordinary decoder input rows with the InferenceCache whose buffers the layers reuse.

    x: B×Q×K×D. queries: None (all B·Q queries) or int64 indices into the B·Q queries (a MoEISR expert's
    share): the rows are then gathered block by block inside the MLP, never as one big copy.
    """

    x: torch.Tensor
    cache: InferenceCache
    queries: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        if self.queries is None:
            return tuple(self.x.shape)
        return (self.queries.numel(), *self.x.shape[2:])

    def take(self, index: torch.Tensor) -> DenseInputs:
        """Queries `index` of the first two dims flattened: shape (len(index), K, D); nothing is copied."""
        queries = index if self.queries is None else self.queries.index_select(0, index)
        return DenseInputs(self.x, self.cache, queries)

    def first_layer(self, linear: nn.Linear, out: torch.Tensor | None, start: int = 0, stop: int | None = None):
        """linear(rows[start:stop]) as n×out_features (into `out` if given)."""
        d = self.x.shape[-1]
        if self.queries is None:
            rows = self.x.reshape(-1, d)[start:stop]
        else:
            k = self.x.shape[2]
            stop = self.queries.numel() * k if stop is None else stop
            if start % k or stop % k:
                raise ValueError(f"row block [{start}, {stop}) must hold whole queries of {k} inputs")
            per_query = self.x.reshape(-1, k * d)
            picked = self.queries[start // k : stop // k]
            buf = self.cache.buffer("dense_rows", picked.numel(), k * d, self.x)
            rows = (
                per_query.index_select(0, picked) if buf is None else torch.index_select(per_query, 0, picked, out=buf)
            ).view(-1, d)
        if out is None:
            return F.linear(rows, linear.weight, linear.bias)
        return torch.addmm(linear.bias, rows, linear.weight.t(), out=out)


def as_inference_inputs(x: torch.Tensor | InferenceInputs) -> InferenceInputs:
    """Inference inputs as they are; a plain tensor wrapped with a fresh (per-call) InferenceCache."""
    return x if isinstance(x, InferenceInputs) else DenseInputs(x, InferenceCache())


# Rows per block of `inference_forward` (at least ROW_BLOCK_PER_THREAD per thread on many-core machines):
# a block's activations (4 MB at width 256) stay in the caches through all layers, so the memory-bound
# passes (gather, tail, bias, ReLU) do not stream from DRAM. Measured in docs/speed.md: the LIIF decoder
# 1.17x (2 threads) and 1.2x (1 thread) faster than one block per chunk.
ROW_BLOCK = 4096
ROW_BLOCK_PER_THREAD = 1024


def inference_forward(linears: Sequence[nn.Linear], x: InferenceInputs, row_block: int | None = None) -> torch.Tensor:
    """Linear/ReLU stack (ReLU after every Linear but the last) on "as executed" inputs → (*lead, out).

    The rows go through all layers in blocks of `row_block` (default: ROW_BLOCK, or ROW_BLOCK_PER_THREAD per
    thread if more); hidden activations go to the cache's two alternating buffers (fresh tensors when it
    hands out none); the output is a fresh tensor of the weights' dtype. While `upscale(..., precision="bf16")` runs
    (`decoder_hidden_dtype`), every layer after the first multiplies in bfloat16 (weights cast once per image).
    """
    lead = x.shape[:-1]
    n = math.prod(lead)
    dtype = decoder_hidden_dtype()
    params = [(layer.weight, layer.bias) for layer in linears]
    if dtype is not None:  # low-precision copies of the weights, made once per image (the cache's memo)
        params[1:] = [
            x.cache.memo(("low_precision", layer, dtype), lambda w=w, b=b: (w.to(dtype), b.to(dtype)))
            for layer, (w, b) in zip(linears[1:], params[1:], strict=True)
        ]
    block = row_block or max(ROW_BLOCK, ROW_BLOCK_PER_THREAD * torch.get_num_threads())
    k = lead[-1] if len(lead) > 1 else 1
    block = max(k, block - block % k)  # whole queries per block (DenseInputs gathers by query)
    out = None
    for start in range(0, n, block):
        stop = min(start + block, n)
        y = None
        for i, (layer, (weight, bias)) in enumerate(zip(linears, params, strict=True)):
            last = i == len(linears) - 1
            buf = None if last else x.cache.buffer(f"hidden_{i % 2}", stop - start, layer.out_features, weight)
            if i == 0:
                y = x.first_layer(layer, buf, start, stop)
            elif buf is None:
                y = F.linear(y, weight, bias)
            else:
                y = torch.addmm(bias, y, weight.t(), out=buf)
            if not last:
                y = y.relu_()
            if i == 0 and dtype is not None and not last:
                low = x.cache.buffer("hidden_low", stop - start, layer.out_features, params[1][0])
                y = y.to(dtype) if low is None else low.copy_(y)
        if dtype is not None:
            y = y.to(linears[0].weight.dtype)
        if start == 0 and stop == n:
            return y.view(*lead, -1)
        if out is None:
            out = y.new_empty(n, y.shape[-1])
        out[start:stop] = y
    return out.view(*lead, -1)


@models.register("mlp")
class MLP(nn.Module):
    """Linear-ReLU stack over the last dim: (..., in_dim) → (..., out_dim), any leading dims.

    Also takes `InferenceInputs` (the "as executed" inference path, module docstring).
    """

    accepts_inference_inputs = True

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

    def forward(self, x: torch.Tensor | InferenceInputs) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and (torch.is_grad_enabled() or torch.jit.is_tracing()):
            lead = x.shape[:-1]
            return self.layers(x.reshape(-1, x.shape[-1])).view(*lead, -1)
        return inference_forward([m for m in self.layers if isinstance(m, nn.Linear)], as_inference_inputs(x))
