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

"As executed" inference path (`decoder_path`, see moeisr.models.base and docs/speed.md): the MLP's first
Linear layer sees [unfolded feature | rel_coord | cell]; its feature part W_f·f + b depends only on the LR
pixel, so it is computed once per LR pixel and MLP (a 3×3 convolution of the feature map with W_f, which
is exactly W_f applied to the unfolded feature) and each query gathers that row and adds W_t·[rel_coord,
cell]. About 43% of the decoder MACs of the default LIIF are saved; the result equals the published path up
to float rounding (tested ≤ 1e-5). Used when the MLP accepts `FactoredInputs` (LIIF's MLP, MoEISR's
experts: `accepts_inference_inputs`); any other `mlp` gets the dense inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.models.base import Decoder, Features, ImplicitSR, denormalise, inference_cache, normalise
from moeisr.models.decoders.local_grid import cell_index_map, combine, gather_rows, nearest_cells
from moeisr.models.mlp import FactoredInputs
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
        zero) or, for a large unfolded map, "feat_padded": B×(h+2)(w+2)×C (channels-last, zero border)}.

        On the "as executed" path neither table is built; the per-LR-pixel projections of the MLPs' first
        layers are computed at the first query and cached in the dict's "inference_cache"."""
        feat = self.run_encoder(normalise(lr))
        B, C, h, w = feat.shape
        features = {"feat": feat, "index_map": cell_index_map(B, h, w, device=feat.device, dtype=feat.dtype)}
        if self.uses_executed_path():
            return features
        features.update(self._neighbourhoods(feat))
        return features

    def _neighbourhoods(self, feat: torch.Tensor) -> Features:
        """The dense-input source: {"feat_table": ...} or {"feat_padded": ...} (see `encode`)."""
        B, C, h, w = feat.shape
        features: Features = {}
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
        if "feat_table" not in features and "feat_padded" not in features:  # encoded for the executed path
            source = self._neighbourhoods(features["feat"])
            if isinstance(features, dict):
                features.update(source)
            else:
                features = {**features, **source}
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
        mlp = self.imnet if mlp is None else mlp
        if self.uses_executed_path() and getattr(mlp, "accepts_inference_inputs", False):
            inp, rel_coord = self.factored_inputs(features, coord, cell)
        else:
            inp, rel_coord = self.decoder_inputs(features, coord, cell)
        return denormalise(combine(mlp(inp), rel_coord))

    def factored_inputs(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor
    ) -> tuple[FactoredInputs, torch.Tensor]:
        """The "as executed" decoder inputs: FactoredInputs (lead B×Q×K, tail [rel_coord, cell]) and rel_coord
        B×Q×K×2. The per-LR-pixel projections are cached in `features` (when it is a dict)."""
        feat = features["feat"]
        B, C, h, w = feat.shape
        rows, cols, rel_coord = nearest_cells(coord, features["index_map"], self.local_ensemble)
        batch_offset = (torch.arange(B, device=coord.device) * (h * w)).view(B, 1, 1)
        pixels = rows * w + cols + batch_offset
        tail = rel_coord
        if self.cell_decode:
            rel_cell = cell * torch.tensor([h, w], device=cell.device, dtype=cell.dtype)
            tail = torch.cat((rel_coord, rel_cell.unsqueeze(2).expand_as(rel_coord)), dim=-1)
        cache = inference_cache(features)

        def project(linear: nn.Linear) -> torch.Tensor:
            return cache.memo(("liif_projection", linear), lambda: self.project_features(feat, linear))

        return FactoredInputs(pixels, tail, project, self.imnet_in_dim, cache), rel_coord

    def project_features(self, feat: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """W_f·feature + bias for every LR pixel: feat B×C×h×w → (B·h·w)×out, where W_f is the feature part
        (the first C·9 or C columns) of the first MLP layer `linear`. With `feat_unfold` this is a 3×3
        convolution with zero padding, which is exactly W_f applied to the official 3×3 unfold."""
        B, C, h, w = feat.shape
        k = 3 if self.feat_unfold else 1
        weight = linear.weight[:, : C * k * k].reshape(linear.out_features, C, k, k).contiguous()
        projected = F.conv2d(feat, weight, linear.bias, padding=k // 2)
        return projected.permute(0, 2, 3, 1).reshape(B * h * w, linear.out_features)
