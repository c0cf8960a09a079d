"""LM-LTE (`lm-lte`, official name `lmlte`): LTE with its MLP split into a latent and a render MLP.

Encoder features → LTE's amplitude (`coef`) and frequency (`freq`) maps, 3×3 convs of `hidden_dim` channels.
Latent MLP input, per LR pixel: coef ⊙ [cos πf, sin πf] with f_j = freq_2j + freq_2j+1 + phase(cell)_j (LTE's
Fourier basis at a relative coordinate of (1, 1), as the official code builds it). Its output is
[scales | shifts | coef' | freq'] (coef' and freq', hidden_dim of the render MLP each, only with `mod_input`).
Render input, per query and shift: LTE's basis from the picked LR pixel's coef'/freq' (with `mod_input`; else
from coef/freq) at the relative coordinate, with its own phase layer `imphase` (`phase` without `mod_input`).
The blended prediction gets LTE's bilinear skip of the input.

The phase Linear layers act on the cell only: the latent one is applied once per image (official: once per LR
pixel, the same values), the render one once per query (official: once per query and shift).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.models.base import Features, normalise
from moeisr.models.decoders.local_grid import cell_index_map
from moeisr.models.lmf.common import LatentModulatedSR, LatentState, check_render_spec
from moeisr.registry import models


def fourier_basis(coef: torch.Tensor, freq: torch.Tensor, rel: torch.Tensor | None, phase: torch.Tensor | None):
    """coef ⊙ [cos πf, sin πf] with f_j = freq_2j·rel_0 + freq_2j+1·rel_1 (+ phase_j): coef, freq ...×d, rel
    ...×2 (None: both weights 1, the latent MLP's input), phase broadcastable to ...×d/2 (None: no phase)."""
    pairs = freq.unflatten(-1, (-1, 2))
    f = (pairs if rel is None else pairs * rel.unsqueeze(-2)).sum(dim=-1)
    if phase is not None:
        f = f + phase
    f = math.pi * f
    return coef * torch.cat((torch.cos(f), torch.sin(f)), dim=-1)


@models.register("lm-lte", "lmlte")
class LMLTE(LatentModulatedSR):
    """LM-LTE on a registered encoder (`encoder_spec`), with an `lmmlp` render MLP (`imnet_spec`) and an `mlp`
    latent MLP (`hypernet_spec`; its in_dim/out_dim are derived, as in the official code). Official args."""

    def __init__(
        self,
        encoder_spec,
        imnet_spec=None,
        hypernet_spec=None,
        hidden_dim=128,
        local_ensemble=True,
        cell_decode=True,
        mod_input=False,
        cmsr_spec=None,
    ):
        super().__init__()
        check_render_spec(imnet_spec, hypernet_spec)
        if hidden_dim % 2:
            raise ValueError(f"lm-lte: hidden_dim must be even, got {hidden_dim}")
        self.local_ensemble, self.cell_decode, self.mod_input = bool(local_ensemble), bool(cell_decode), bool(mod_input)
        self.hidden_dim = int(hidden_dim)
        self.encoder = models.make(encoder_spec)
        C = self.encoder.out_dim
        self.coef = nn.Conv2d(C, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(C, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        render_dim = int(imnet_spec["args"]["hidden_dim"])
        if self.mod_input:
            if render_dim % 2:
                raise ValueError(f"lm-lte: the render MLP's hidden_dim must be even with mod_input, got {render_dim}")
            self.imphase = nn.Linear(2, render_dim // 2, bias=False)
        self.imnet_in_dim = render_dim if self.mod_input else self.hidden_dim
        self.imnet = models.make(imnet_spec, args={"in_dim": self.imnet_in_dim})
        self.latent_in_dim = self.hidden_dim
        self.latent_out_dim = self.imnet.mod_dim + (2 * render_dim if self.mod_input else 0)
        self.hypernet = models.make(hypernet_spec, args={"in_dim": self.latent_in_dim, "out_dim": self.latent_out_dim})
        args = {
            "encoder_spec": copy.deepcopy(getattr(self.encoder, "spec", encoder_spec)),
            "imnet_spec": copy.deepcopy(imnet_spec),
            "hypernet_spec": copy.deepcopy(hypernet_spec),
            "hidden_dim": self.hidden_dim,
            "local_ensemble": self.local_ensemble,
            "cell_decode": self.cell_decode,
            "mod_input": self.mod_input,
        }
        self.finish_spec("lm-lte", args, cmsr_spec)

    def encode(self, lr: torch.Tensor) -> Features:
        """lr B×3×h×w in [0, 1] → {"feat", "coef_freq": B·h·w × 2·hidden_dim channels-last (coef, then freq),
        "inp": the normalised lr (for the skip), "index_map"}. The latent MLP runs at the first query."""
        inp = normalise(lr)
        feat = self.run_encoder(inp)
        B, _, h, w = feat.shape
        d = self.hidden_dim
        coef_freq = feat.new_empty(B, h, w, 2 * d)
        coef_freq[..., :d] = self.coef(feat).permute(0, 2, 3, 1)
        coef_freq[..., d:] = self.freq(feat).permute(0, 2, 3, 1)
        index_map = cell_index_map(B, h, w, device=feat.device, dtype=feat.dtype)
        return {"feat": feat, "coef_freq": coef_freq.view(B * h * w, 2 * d), "inp": inp, "index_map": index_map}

    def _latent_output(self, features: Features, rel_cell: torch.Tensor) -> torch.Tensor:
        B, _, h, w = features["feat"].shape
        d = self.hidden_dim
        coef_freq = features["coef_freq"].view(B, h * w, 2 * d)
        phase = self.phase(rel_cell).unsqueeze(1) if self.cell_decode else None  # B×1×d/2, once per image
        x = fourier_basis(coef_freq[..., :d], coef_freq[..., d:], None, phase)
        return self.hypernet(x.reshape(B * h * w, d))

    def _render_table(self, features: Features, out: torch.Tensor) -> torch.Tensor:
        """P×2·in rows: [coef' | freq'] from the latent output with `mod_input`, else LTE's [coef | freq]."""
        return out[:, self.imnet.mod_dim :] if self.mod_input else features["coef_freq"]

    def _render_input(
        self, state: LatentState, pixels: torch.Tensor, rel_coord: torch.Tensor, rel_cell: torch.Tensor
    ) -> torch.Tensor:
        B, Q, K, _ = rel_coord.shape
        d = self.imnet_in_dim
        q = torch.index_select(state.inp_table, 0, pixels).view(B, Q, K, 2 * d)
        phase = None
        if self.cell_decode:
            phase = (self.imphase if self.mod_input else self.phase)(rel_cell).unsqueeze(2)  # B×Q×1×d/2
        return fourier_basis(q[..., :d], q[..., d:], rel_coord, phase).view(B * Q * K, d)

    def _skip(self, features: Features, coord: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(
            features["inp"], coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False
        )[:, :, 0, :].transpose(1, 2)
