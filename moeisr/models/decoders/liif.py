"""LIIF (`liif`): local implicit image function over encoder features.

Each query is decoded from the feature of its nearest LR cell (with its 3×3 neighbourhood when
`feat_unfold`), its offset to that cell's centre and, when `cell_decode`, the output cell size; with
`local_ensemble` the four cells around the query are decoded and blended by opposite areas.

Differences from the official code are in how, not what: the four shifts are decoded with one MLP call,
and `encode` lays the features out once as a channels-last table whose row for each LR cell already holds
its 3×3 unfolded feature in the official channel order (channel-major, then 3×3 position), so a query
gathers one contiguous row instead of the official code re-unfolding the whole map on every call. When
that table (9× the features) would exceed `unfold_table_max_bytes`, `encode` keeps a zero-padded copy
of the features instead and the 3×3 neighbourhoods are gathered per query. Both give the official values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from moeisr.models.base import Decoder, Features, ImplicitSR, denormalise, normalise
from moeisr.models.decoders.local_grid import cell_index_map, combine, gather_rows, nearest_cells
from moeisr.registry import models

# 3 GiB: a 1024×1024 LR image with 64-channel features (2.2 GiB) still gets the fast table.
UNFOLD_TABLE_MAX_BYTES = 3 * 2**30


@models.register("liif")
class LIIF(ImplicitSR):
    """LIIF decoder on top of a registered encoder (`encoder_spec`) with an `imnet_spec` MLP."""

    def __init__(self, encoder_spec, imnet_spec, local_ensemble=True, feat_unfold=True, cell_decode=True):
        super().__init__()
        if imnet_spec is None:
            raise ValueError("liif: imnet_spec is required")
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.encoder = models.make(encoder_spec)
        feat_dim = self.encoder.out_dim * (9 if feat_unfold else 1)
        self.imnet_in_dim = feat_dim + 2 + (2 if cell_decode else 0)
        self.imnet = models.make(imnet_spec, args={"in_dim": self.imnet_in_dim})
        # inference memory knob, not part of the model: largest unfolded feature table `encode` builds
        self.unfold_table_max_bytes = UNFOLD_TABLE_MAX_BYTES
        self.spec = {
            "name": "liif",
            "args": {
                "encoder_spec": copy.deepcopy(getattr(self.encoder, "spec", encoder_spec)),
                "imnet_spec": copy.deepcopy(imnet_spec),
                "local_ensemble": local_ensemble,
                "feat_unfold": feat_unfold,
                "cell_decode": cell_decode,
            },
        }

    def encode(self, lr: torch.Tensor) -> Features:
        """lr B×3×h×w in [0, 1] → {"feat": B×C×h×w, "index_map": B×2×h×w cell indices, and either
        "feat_table": B×(h·w)×imnet_in_dim (each cell's (unfolded) feature, trailing coordinate columns
        zero) or, for a large unfolded map, "feat_padded": B×(h+2)(w+2)×C (channels-last, zero border)}."""
        feat = self.encoder(normalise(lr))
        B, C, h, w = feat.shape
        features = {"feat": feat, "index_map": cell_index_map(B, h, w, device=feat.device, dtype=feat.dtype)}
        if not self.feat_unfold:
            table = feat.new_zeros(B, h, w, self.imnet_in_dim)
            table[..., :C] = feat.permute(0, 2, 3, 1)
            features["feat_table"] = table.view(B, h * w, self.imnet_in_dim)
            return features
        padded = F.pad(feat, (1, 1, 1, 1))
        if B * h * w * self.imnet_in_dim * feat.element_size() <= self.unfold_table_max_bytes:
            # the unfold written straight into the table, one 3×3 position at a time (no 9× temporary)
            table = feat.new_zeros(B, h, w, self.imnet_in_dim)
            unfolded = table[..., : 9 * C].view(B, h, w, C, 9)
            for k, (dr, dc) in enumerate((dr, dc) for dr in range(3) for dc in range(3)):
                unfolded[..., k] = padded[:, :, dr : dr + h, dc : dc + w].permute(0, 2, 3, 1)
            features["feat_table"] = table.view(B, h * w, self.imnet_in_dim)
        else:
            features["feat_padded"] = padded.permute(0, 2, 3, 1).reshape(B, (h + 2) * (w + 2), C)
        return features

    def decoder_inputs(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked MLP inputs B×Q×K×imnet_in_dim and rel_coord B×Q×K×2 for B×Q×2 coord and cell."""
        B, C, h, w = features["feat"].shape
        rows, cols, rel_coord = nearest_cells(coord, features["index_map"], self.local_ensemble)
        end = C * (9 if self.feat_unfold else 1)
        if "feat_table" in features:
            inp = gather_rows(features["feat_table"], rows * w + cols)
        else:
            Q, K = rows.shape[1:]
            offsets = torch.tensor([dr * (w + 2) + dc for dr in range(3) for dc in range(3)], device=coord.device)
            q_feat = gather_rows(features["feat_padded"], (rows * (w + 2) + cols).unsqueeze(-1) + offsets)
            inp = coord.new_empty(B, Q, K, self.imnet_in_dim)
            inp[..., :end].view(B, Q, K, C, 9).copy_(q_feat.transpose(-1, -2))  # B×Q×K×9×C → C-major
        inp[..., end : end + 2] = rel_coord
        if self.cell_decode:
            rel_cell = cell * torch.tensor([h, w], device=cell.device, dtype=cell.dtype)
            inp[..., end + 2 : end + 4] = rel_cell.unsqueeze(2)
        return inp, rel_coord

    def query(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor, mlp: Decoder | None = None
    ) -> torch.Tensor:
        """coord, cell: B×Q×2 → B×Q×3 RGB in the [0, 1] range (not clamped).

        `mlp` (default `self.imnet`) is called once on B×Q×K×imnet_in_dim and must return B×Q×K×3;
        K = 4 with local ensemble, else 1.
        """
        inp, rel_coord = self.decoder_inputs(features, coord, cell)
        pred = (self.imnet if mlp is None else mlp)(inp)
        return denormalise(combine(pred, rel_coord))
