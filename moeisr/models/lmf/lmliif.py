"""LM-LIIF (`lm-liif`, official name `lmliif`): LIIF with its MLP split into a latent and a render MLP.

Latent MLP input, per LR pixel: the 3×3-unfolded feature (with `feat_unfold`, official channel order:
channel-major, then 3×3 position) and, with `cell_decode`, the cell in LR-cell units. Its output is
[scales of every hidden layer | shifts of every hidden layer | latent code] (the code only with `mod_input`).
Render MLP input, per query and shift: the picked LR pixel's latent code (with `mod_input`; else its plain,
not unfolded, feature), the relative coordinate and the cell, as in LIIF. No skip connection.

Memory: the unfolded features are 9× the feature map, so for a large image the latent MLP runs on strips of
LR rows (each unfolded on its own, from a zero-padded copy) with gradients off; the values are the same.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from moeisr.models.base import Features, normalise
from moeisr.models.decoders.local_grid import cell_index_map
from moeisr.models.lmf.common import LatentModulatedSR, LatentState, check_render_spec
from moeisr.registry import models

# the unfolded latent-MLP input of one strip of LR rows stays below this many bytes (gradients off)
LATENT_STRIP_BYTES = 256 * 2**20


@models.register("lm-liif", "lmliif")
class LMLIIF(LatentModulatedSR):
    """LM-LIIF on a registered encoder (`encoder_spec`), with an `lmmlp` render MLP (`imnet_spec`) and an `mlp`
    latent MLP (`hypernet_spec`; its in_dim/out_dim are derived, as in the official code). Official args."""

    def __init__(
        self,
        encoder_spec,
        imnet_spec=None,
        hypernet_spec=None,
        local_ensemble=True,
        feat_unfold=True,
        cell_decode=True,
        mod_input=False,
        cmsr_spec=None,
    ):
        super().__init__()
        check_render_spec(imnet_spec, hypernet_spec)
        self.local_ensemble, self.feat_unfold = bool(local_ensemble), bool(feat_unfold)
        self.cell_decode, self.mod_input = bool(cell_decode), bool(mod_input)
        self.encoder = models.make(encoder_spec)
        C = self.encoder.out_dim
        hidden = int(imnet_spec["args"]["hidden_dim"])
        imnet_in = (hidden if self.mod_input else C) + 2 + (2 if self.cell_decode else 0)
        self.imnet = models.make(imnet_spec, args={"in_dim": imnet_in})
        self.imnet_in_dim = imnet_in
        self.latent_in_dim = C * (9 if self.feat_unfold else 1) + (2 if self.cell_decode else 0)
        self.latent_out_dim = self.imnet.mod_dim + (hidden if self.mod_input else 0)
        self.hypernet = models.make(hypernet_spec, args={"in_dim": self.latent_in_dim, "out_dim": self.latent_out_dim})
        args = {
            "encoder_spec": copy.deepcopy(getattr(self.encoder, "spec", encoder_spec)),
            "imnet_spec": copy.deepcopy(imnet_spec),
            "hypernet_spec": copy.deepcopy(hypernet_spec),
            "local_ensemble": self.local_ensemble,
            "feat_unfold": self.feat_unfold,
            "cell_decode": self.cell_decode,
            "mod_input": self.mod_input,
        }
        self.finish_spec("lm-liif", args, cmsr_spec)

    def encode(self, lr: torch.Tensor) -> Features:
        """lr B×3×h×w in [0, 1] → {"feat": B×C×h×w, "index_map": B×2×h×w}. The latent MLP runs at the first
        query, once per cell (moeisr.models.lmf.common)."""
        feat = self.run_encoder(normalise(lr))
        B, _, h, w = feat.shape
        return {"feat": feat, "index_map": cell_index_map(B, h, w, device=feat.device, dtype=feat.dtype)}

    def _latent_input(self, feat: torch.Tensor, rel_cell: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """The latent MLP input of LR rows [r0, r1): B·(r1-r0)·w × latent_in_dim (rows in raster order per image)."""
        B, C, h, w = feat.shape
        if self.feat_unfold:
            strip = feat if (r0, r1) == (0, h) else feat[:, :, max(r0 - 1, 0) : min(r1 + 1, h)]
            pad_top, pad_bottom = (1 if r0 == 0 else 0), (1 if r1 == h else 0)
            padded = F.pad(strip, (1, 1, pad_top, pad_bottom))
            x = F.unfold(padded, 3)  # B×9C×((r1-r0)·w), channel-major then 3×3 position, as the official unfold
        else:
            x = feat[:, :, r0:r1].reshape(B, C, -1)
        x = x.transpose(1, 2)
        if self.cell_decode:
            x = torch.cat((x, rel_cell.unsqueeze(1).expand(B, x.shape[1], 2)), dim=-1)
        return x.reshape(-1, self.latent_in_dim)

    def _latent_output(self, features: Features, rel_cell: torch.Tensor) -> torch.Tensor:
        feat = features["feat"]
        B, _, h, w = feat.shape
        row_bytes = B * w * self.latent_in_dim * feat.element_size()
        strip = h if torch.is_grad_enabled() else max(1, min(h, LATENT_STRIP_BYTES // max(row_bytes, 1)))
        if strip >= h:
            return self.hypernet(self._latent_input(feat, rel_cell, 0, h))
        out = feat.new_empty(B, h, w, self.latent_out_dim)
        for r0 in range(0, h, strip):
            r1 = min(r0 + strip, h)
            out[:, r0:r1] = self.hypernet(self._latent_input(feat, rel_cell, r0, r1)).view(B, r1 - r0, w, -1)
        return out.view(B * h * w, -1)

    def _render_table(self, features: Features, out: torch.Tensor) -> torch.Tensor:
        """P×imnet_in_dim rows: the latent code (or the plain feature), trailing coordinate columns zero."""
        code = out[:, self.imnet.mod_dim :] if self.mod_input else None
        if code is None:
            feat = features["feat"]
            code = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])
        table = code.new_zeros(code.shape[0], self.imnet_in_dim)
        table[:, : code.shape[1]] = code
        return table

    def _render_input(
        self, state: LatentState, pixels: torch.Tensor, rel_coord: torch.Tensor, rel_cell: torch.Tensor
    ) -> torch.Tensor:
        B, Q, K, _ = rel_coord.shape
        inp = torch.index_select(state.inp_table, 0, pixels).view(B, Q, K, self.imnet_in_dim)
        end = self.imnet_in_dim - 2 - (2 if self.cell_decode else 0)
        if torch.is_grad_enabled():  # no in-place writes into a gathered tensor autograd may need
            parts = [inp[..., :end], rel_coord]
            if self.cell_decode:
                parts.append(rel_cell.unsqueeze(2).expand(B, Q, K, 2))
            inp = torch.cat(parts, dim=-1)
        else:
            inp[..., end : end + 2] = rel_coord
            if self.cell_decode:
                inp[..., end + 2 : end + 4] = rel_cell.unsqueeze(2)
        return inp.view(B * Q * K, self.imnet_in_dim)
