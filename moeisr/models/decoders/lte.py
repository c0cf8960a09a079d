"""LTE (`lte`): local texture estimator over encoder features.

Per query and per local-ensemble shift, the nearest cell's amplitude (`coef`) and frequency (`freq`)
maps and a cell-dependent phase build a Fourier basis `coef * [cos(pi f), sin(pi f)]` that the MLP
decodes; the four shifts are blended by opposite areas and a bilinear upsampling of the (normalised)
input is added. As in `liif.py`, the shifts share one MLP call and features are gathered from a
channels-last copy of the coef/freq maps, computed once in `encode`.

"As executed" inference path (`decoder_path`, see moeisr.models.base and docs/speed.md): the MLP input is
not materialised for the whole chunk. `fourier_inputs` hands the MLP a `FourierInputs` whose first layer
builds the basis block by block (4096 rows), in place into reused buffers (gather coef|freq rows, the
frequency-coordinate products and their sum, + phase, ×π, cos and sin written into the two halves, ×coef),
and multiplies it straight away: the same arithmetic in the same order as `decoder_inputs` (the same basis
bit for bit), without the chunk-sized temporaries. For MoEISR's sparse dispatch an expert builds the basis
of its own queries only. The phase, a function of the cell alone, is computed once per chunk when the
chunk's cell is constant (`upscale`). An executed-path `encode` stores the frequency maps planar (all
f_2j, then all f_2j+1: "coef_freq_planar") so that the products read contiguous rows; same values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.models.base import Decoder, Features, ImplicitSR, InferenceCache, denormalise, inference_cache, normalise
from moeisr.models.decoders.local_grid import cell_index_map, combine, gather_rows, nearest_cells
from moeisr.models.mlp import InferenceInputs
from moeisr.registry import models


@dataclass
class FourierInputs(InferenceInputs):
    """LTE's decoder inputs as the recipe of the basis (the "as executed" path, module docstring).

    Row r of the equivalent dense input (query r // K, shift r % K) is coef(p) ⊙ [cos πf, sin πf] with
    p = pixels[r], f_j = freq(p)_{2j}·rel_coord[r, 0] + freq(p)_{2j+1}·rel_coord[r, 1] + phase(query)_j.

    table: (B·h·w)×2d coef|freq rows of every LR pixel (`encode`'s "coef_freq" or "coef_freq_planar",
      flattened); planar: whether the freq half holds all f_2j, then all f_2j+1 (else interleaved pairs).
    pixels: N×K int64 rows of `table` for the N = B·Q queries; rel_coord: N×K×2.
    phase: P×d/2, the phase of every query (P = N) or of all of them (P = 1, a constant cell).
    queries: None (all N queries, in order) or int64 indices into them (a MoEISR expert's share).
    lead: the lead shape of the dense input, (B, Q, K) or (len(queries), K).
    """

    table: torch.Tensor
    pixels: torch.Tensor
    rel_coord: torch.Tensor
    phase: torch.Tensor
    cache: InferenceCache
    lead: tuple[int, ...]
    planar: bool = False
    queries: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.lead, self.table.shape[-1] // 2)

    def take(self, index: torch.Tensor) -> FourierInputs:
        queries = index if self.queries is None else self.queries.index_select(0, index)
        lead = (queries.numel(), self.pixels.shape[-1])
        return FourierInputs(
            self.table, self.pixels, self.rel_coord, self.phase, self.cache, lead, self.planar, queries
        )

    def first_layer(self, linear: nn.Linear, out: torch.Tensor | None, start: int = 0, stop: int | None = None):
        k = self.pixels.shape[-1]
        n_rows = math.prod(self.lead)
        stop = n_rows if stop is None else stop
        if start % k or stop % k:
            raise ValueError(f"row block [{start}, {stop}) must hold whole queries of {k} inputs")
        q0, q1 = start // k, stop // k
        if self.queries is None:
            pixels, rel, picked = self.pixels[q0:q1], self.rel_coord[q0:q1], None
        else:
            picked = self.queries[q0:q1]
            pixels, rel = self.pixels.index_select(0, picked), self.rel_coord.index_select(0, picked)
        if self.phase.shape[0] == 1:
            phase = self.phase  # one cell for every query: broadcast
        elif picked is None:
            phase = self.phase[q0:q1]
        else:
            phase = self.phase.index_select(0, picked)
        basis = self.basis(pixels.reshape(-1), rel.reshape(-1, 2), phase)
        if out is None:
            return F.linear(basis, linear.weight, linear.bias)
        return torch.addmm(linear.bias, basis, linear.weight.t(), out=out)

    def basis(self, pixels: torch.Tensor, rel: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The dense rows for `pixels` (m), `rel` (m×2) and the per-query `phase` (m/K×d/2 or 1×d/2) → m×d, in
        the cache's buffers (fresh tensors when it hands out none), with `LTE.decoder_inputs`' arithmetic."""
        m, k = pixels.numel(), self.pixels.shape[-1]
        table, cache = self.table, self.cache
        d = table.shape[-1] // 2
        buf = cache.buffer("lte_coef_freq", m, 2 * d, table)
        coef_freq = table.index_select(0, pixels) if buf is None else torch.index_select(table, 0, pixels, out=buf)
        if self.planar:
            f_even, f_odd = coef_freq[:, d : d + d // 2], coef_freq[:, d + d // 2 :]
        else:
            pairs = coef_freq[:, d:].view(m, d // 2, 2)
            f_even, f_odd = pairs[..., 0], pairs[..., 1]
        # f_2j·rel_0 + f_2j+1·rel_1: both products rounded, then their sum, as `.sum(dim=-1)` over the pairs
        # does (addcmul_ would fuse the second product into the add and round differently)
        buf = cache.buffer("lte_freq", m, d // 2, table)
        freq = f_even * rel[:, :1] if buf is None else torch.mul(f_even, rel[:, :1], out=buf)
        buf = cache.buffer("lte_freq_y", m, d // 2, table)
        freq.add_(f_odd * rel[:, 1:] if buf is None else torch.mul(f_odd, rel[:, 1:], out=buf))
        freq.view(m // k, k, d // 2).add_(phase.unsqueeze(1))
        freq.mul_(math.pi)
        basis = cache.buffer("lte_basis", m, d, table)
        basis = table.new_empty(m, d) if basis is None else basis
        torch.cos(freq, out=basis[:, : d // 2])
        torch.sin(freq, out=basis[:, d // 2 :])
        return basis.mul_(coef_freq[:, :d])


@models.register("lte")
class LTE(ImplicitSR):
    """LTE decoder on top of a registered encoder (`encoder_spec`) with an `imnet_spec` MLP."""

    def __init__(self, encoder_spec, imnet_spec, hidden_dim=256):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"lte: hidden_dim must be even, got {hidden_dim}")
        self.encoder = models.make(encoder_spec)
        self.coef = nn.Conv2d(self.encoder.out_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(self.encoder.out_dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.hidden_dim = hidden_dim
        self.imnet_in_dim = hidden_dim
        self.imnet = models.make(imnet_spec, args={"in_dim": hidden_dim})
        self.spec = {
            "name": "lte",
            "args": {
                "encoder_spec": copy.deepcopy(getattr(self.encoder, "spec", encoder_spec)),
                "imnet_spec": copy.deepcopy(imnet_spec),
                "hidden_dim": hidden_dim,
            },
        }

    def encode(self, lr: torch.Tensor) -> Features:
        """lr B×3×h×w in [0, 1] → {"feat": B×C×h×w, "coef_freq": B×(h·w)×2·hidden channels-last
        (coef channels first, then freq), "inp": the normalised lr, "index_map": B×2×h×w}.

        On the "as executed" path the table is "coef_freq_planar" instead: the same values with the freq
        channels reordered as all f_2j, then all f_2j+1 (module docstring)."""
        inp = normalise(lr)
        feat = self.run_encoder(inp)
        B, _, h, w = feat.shape
        d = self.hidden_dim
        # filled one map at a time so that the NCHW conv outputs never coexist at full size
        coef_freq = feat.new_empty(B, h, w, 2 * d)
        coef_freq[..., :d] = self.coef(feat).permute(0, 2, 3, 1)
        freq = self.freq(feat).permute(0, 2, 3, 1)
        planar = self.uses_executed_path()
        if planar:  # [f_0, f_2, ..., f_1, f_3, ...]: a copy in another order, the same values
            coef_freq[..., d:].view(B, h, w, 2, d // 2).copy_(freq.view(B, h, w, d // 2, 2).transpose(-1, -2))
        else:
            coef_freq[..., d:] = freq
        del freq
        index_map = cell_index_map(B, h, w, device=feat.device, dtype=feat.dtype)
        key = "coef_freq_planar" if planar else "coef_freq"
        return {"feat": feat, key: coef_freq.view(B, h * w, 2 * d), "inp": inp, "index_map": index_map}

    def decoder_inputs(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked MLP inputs B×Q×4×hidden_dim and rel_coord B×Q×4×2 for B×Q×2 coord and cell."""
        B, _, h, w = features["feat"].shape
        Q = coord.shape[1]
        d = self.hidden_dim
        rows, cols, rel_coord = nearest_cells(coord, features["index_map"], local_ensemble=True)
        if "coef_freq" in features:
            q = gather_rows(features["coef_freq"], rows * w + cols)  # B×Q×4×2d
            q_freq = q[..., d:].reshape(B, Q, 4, d // 2, 2)
        else:  # encoded for the executed path: the freq half is planar
            q = gather_rows(features["coef_freq_planar"], rows * w + cols)
            q_freq = q[..., d:].reshape(B, Q, 4, 2, d // 2).transpose(-1, -2)
        q_coef = q[..., :d]
        rel_cell = cell * torch.tensor([h, w], device=cell.device, dtype=cell.dtype)
        phase = self.phase(rel_cell).unsqueeze(2)  # B×Q×1×d/2, the same for every shift
        # frequency pairs (f[2j], f[2j+1]) dotted with the relative coordinate
        freq = (q_freq * rel_coord.unsqueeze(-2)).sum(dim=-1) + phase
        freq = math.pi * freq
        return q_coef * torch.cat((torch.cos(freq), torch.sin(freq)), dim=-1), rel_coord

    def query(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor, mlp: Decoder | None = None
    ) -> torch.Tensor:
        """coord, cell: B×Q×2 → B×Q×3 RGB in the [0, 1] range (not clamped).

        `mlp` (default `self.imnet`) is called once on B×Q×4×hidden_dim and must return B×Q×4×3; the
        area blend and the bilinear skip of the input are added after it. On the executed path an `mlp`
        that accepts inference inputs gets `FourierInputs` instead (module docstring).
        """
        mlp = self.imnet if mlp is None else mlp
        if self.uses_executed_path() and getattr(mlp, "accepts_inference_inputs", False):
            inp, rel_coord = self.fourier_inputs(features, coord, cell)
        else:
            inp, rel_coord = self.decoder_inputs(features, coord, cell)
        pred = mlp(inp)
        skip = F.grid_sample(
            features["inp"], coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False
        )[:, :, 0, :].transpose(1, 2)
        return denormalise(combine(pred, rel_coord) + skip)

    def fourier_inputs(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor
    ) -> tuple[FourierInputs, torch.Tensor]:
        """The "as executed" decoder inputs for B×Q×2 coord and cell: FourierInputs (lead B×Q×4) and rel_coord
        B×Q×4×2. Buffers live in `features`' InferenceCache (when it is a dict)."""
        B, _, h, w = features["feat"].shape
        Q = coord.shape[1]
        rows, cols, rel_coord = nearest_cells(coord, features["index_map"], local_ensemble=True)
        K = rows.shape[-1]
        pixels = (rows * w + cols + (torch.arange(B, device=coord.device) * (h * w)).view(B, 1, 1)).view(B * Q, K)
        rel_cell = cell * torch.tensor([h, w], device=cell.device, dtype=cell.dtype)
        if Q > 1 and cell.stride(1) == 0 and (B == 1 or cell.stride(0) == 0):
            phase = self.phase(rel_cell[:1, 0])  # upscale's cell is one value expanded over the chunk: 1×d/2
        else:
            phase = self.phase(rel_cell).reshape(B * Q, -1)
        planar = "coef_freq" not in features
        table = features["coef_freq_planar" if planar else "coef_freq"].reshape(-1, 2 * self.hidden_dim)
        cache = inference_cache(features)
        inputs = FourierInputs(table, pixels, rel_coord.view(B * Q, K, 2), phase, cache, (B, Q, K), planar)
        return inputs, rel_coord
