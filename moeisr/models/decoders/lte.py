"""LTE (`lte`): local texture estimator over encoder features.

Per query and per local-ensemble shift, the nearest cell's amplitude (`coef`) and frequency (`freq`)
maps and a cell-dependent phase build a Fourier basis `coef * [cos(pi f), sin(pi f)]` that the MLP
decodes; the four shifts are blended by opposite areas and a bilinear upsampling of the (normalised)
input is added. As in `liif.py`, the shifts share one MLP call and features are gathered from a
channels-last copy of the coef/freq maps, computed once in `encode`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.models.base import Decoder, Features, ImplicitSR, denormalise, normalise
from moeisr.models.decoders.local_grid import cell_index_map, combine, gather_rows, nearest_cells
from moeisr.registry import models


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
        (coef channels first, then freq), "inp": the normalised lr, "index_map": B×2×h×w}."""
        inp = normalise(lr)
        feat = self.encoder(inp)
        B, _, h, w = feat.shape
        d = self.hidden_dim
        # filled one map at a time so that the NCHW conv outputs never coexist at full size
        coef_freq = feat.new_empty(B, h, w, 2 * d)
        coef_freq[..., :d] = self.coef(feat).permute(0, 2, 3, 1)
        coef_freq[..., d:] = self.freq(feat).permute(0, 2, 3, 1)
        index_map = cell_index_map(B, h, w, device=feat.device, dtype=feat.dtype)
        return {"feat": feat, "coef_freq": coef_freq.view(B, h * w, 2 * d), "inp": inp, "index_map": index_map}

    def decoder_inputs(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked MLP inputs B×Q×4×hidden_dim and rel_coord B×Q×4×2 for B×Q×2 coord and cell."""
        B, _, h, w = features["feat"].shape
        Q = coord.shape[1]
        d = self.hidden_dim
        rows, cols, rel_coord = nearest_cells(coord, features["index_map"], local_ensemble=True)
        q = gather_rows(features["coef_freq"], rows * w + cols)  # B×Q×4×2d
        q_coef, q_freq = q[..., :d], q[..., d:]
        rel_cell = cell * torch.tensor([h, w], device=cell.device, dtype=cell.dtype)
        phase = self.phase(rel_cell).unsqueeze(2)  # B×Q×1×d/2, the same for every shift
        # frequency pairs (f[2j], f[2j+1]) dotted with the relative coordinate
        freq = (q_freq.reshape(B, Q, 4, d // 2, 2) * rel_coord.unsqueeze(-2)).sum(dim=-1) + phase
        freq = math.pi * freq
        return q_coef * torch.cat((torch.cos(freq), torch.sin(freq)), dim=-1), rel_coord

    def query(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor, mlp: Decoder | None = None
    ) -> torch.Tensor:
        """coord, cell: B×Q×2 → B×Q×3 RGB in the [0, 1] range (not clamped).

        `mlp` (default `self.imnet`) is called once on B×Q×4×hidden_dim and must return B×Q×4×3; the
        area blend and the bilinear skip of the input are added after it.
        """
        inp, rel_coord = self.decoder_inputs(features, coord, cell)
        pred = (self.imnet if mlp is None else mlp)(inp)
        skip = F.grid_sample(
            features["inp"], coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False
        )[:, :, 0, :].transpose(1, 2)
        return denormalise(combine(pred, rel_coord) + skip)
