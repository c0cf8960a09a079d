"""The official LIIF/LTE inference path, re-implemented on moeisr model objects' weights.

This is the baseline that moeisr's `encode`/`query`/`upscale` are checked against (equality to 1e-5)
and timed against. It reproduces, operation for operation, what the official `test.py` does:

- normalise the input with data_norm (x - 0.5) / 0.5 and materialise all H·W query coordinates;
- `batched_predict`: run the encoder once (`gen_feat`), then `query_rgb` on chunks of 30000 queries;
- LIIF's `query_rgb` unfolds the *whole* feature map 3×3 on every call, then loops over the four
  ensemble shifts, sampling features and cell centres with nearest `grid_sample` and calling the MLP once
  per shift; LTE's computes the basis per shift and adds a bilinear skip of the input;
- de-normalise (x * 0.5 + 0.5) and clamp to [0, 1].

Device-agnostic (the official code hard-codes the CUDA device); no autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from moeisr.models.decoders.liif import LIIF
from moeisr.models.decoders.lte import LTE

OFFICIAL_BATCH = 30000


def official_make_coord(shape, flatten=True, device=None):
    """Pixel-centre coordinates in [-1, 1] written out as the official utility computes them."""
    axes = []
    for n in shape:
        half = 1.0 / n  # (1 - (-1)) / (2 n)
        axes.append(-1 + half + (2 * half) * torch.arange(n, device=device).float())
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.view(-1, grid.shape[-1]) if flatten else grid


def _sample_nearest(maps, coord):
    """Nearest-cell values of B×C×h×w `maps` at B×Q×2 (row, col) coords → B×Q×C."""
    grid = coord.flip(-1).unsqueeze(1)
    return F.grid_sample(maps, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)


def _shift_plan(local_ensemble):
    if local_ensemble:
        return [-1, 1], [-1, 1], 1e-6
    return [0], [0], 0


def _blend(preds, areas, local_ensemble):
    """Official opposite-area blend: normalise by the total, swap diagonals, accumulate in order."""
    total = torch.stack(areas).sum(dim=0)
    if local_ensemble:
        areas[0], areas[3] = areas[3], areas[0]
        areas[1], areas[2] = areas[2], areas[1]
    out = 0
    for pred, area in zip(preds, areas, strict=True):
        out = out + pred * (area / total).unsqueeze(-1)
    return out


def _cell_centres(feat):
    centres = official_make_coord(feat.shape[-2:], flatten=False, device=feat.device)
    return centres.permute(2, 0, 1).unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])


def _in_feature_cells_(offsets, feat):
    """Rescale B×Q×2 (row, col) offsets from [-1, 1] units to feature cells of B×C×h×w `feat`, in place."""
    offsets[:, :, 0] *= feat.shape[-2]
    offsets[:, :, 1] *= feat.shape[-1]
    return offsets


def _ensemble_shifts(coord, feat, local_ensemble):
    """The official local-ensemble loop over B×Q×2 `coord` (one shift, or four with `local_ensemble`).

    Yields per shift the shifted coords (nudged by eps, clamped inside (-1, 1): where `feat`'s nearest cell is
    sampled) and `rel_coord`, the offset of `coord` from that cell's centre in feature cells, both B×Q×2.
    """
    xs, ys, eps = _shift_plan(local_ensemble)
    rx, ry = 2 / feat.shape[-2] / 2, 2 / feat.shape[-1] / 2
    centres = _cell_centres(feat)
    for vx in xs:
        for vy in ys:
            shifted = coord.clone()
            shifted[:, :, 0] += vx * rx + eps
            shifted[:, :, 1] += vy * ry + eps
            shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
            q_coord = _sample_nearest(centres, shifted)
            yield shifted, _in_feature_cells_(coord - q_coord, feat)


def official_mlp(mlp, x):
    """The official MLP forward, `layers(x)` (nn.Sequential with out-of-place ReLUs), whatever moeisr's
    MLP.forward does at inference (it reuses buffers there), so the reference times the official code."""
    return mlp.layers(x)


def liif_gen_feat(model: LIIF, inp):
    return {"feat": model.encoder(inp)}


def liif_query_rgb(model: LIIF, state, coord, cell):
    """One official LIIF `query_rgb` call on B×Q×2 coord/cell (normalised output space)."""
    feat = state["feat"]
    if model.feat_unfold:  # redone on every call, as in the official code
        feat = F.unfold(feat, 3, padding=1).view(feat.shape[0], feat.shape[1] * 9, *feat.shape[-2:])
    preds, areas = [], []
    for shifted, rel_coord in _ensemble_shifts(coord, feat, model.local_ensemble):
        q_feat = _sample_nearest(feat, shifted)
        inp = torch.cat([q_feat, rel_coord], dim=-1)
        if model.cell_decode:
            rel_cell = _in_feature_cells_(cell.clone(), feat)
            inp = torch.cat([inp, rel_cell], dim=-1)
        bs, q = coord.shape[:2]
        preds.append(official_mlp(model.imnet, inp.view(bs * q, -1)).view(bs, q, -1))
        areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
    return _blend(preds, areas, model.local_ensemble)


def lte_gen_feat(model: LTE, inp):
    feat = model.encoder(inp)
    return {"inp": inp, "feat": feat, "coef": model.coef(feat), "freq": model.freq(feat)}


def lte_query_rgb(model: LTE, state, coord, cell):
    """One official LTE `query_rgb` call on B×Q×2 coord/cell (normalised output space)."""
    feat, coef, freq = state["feat"], state["coef"], state["freq"]
    preds, areas = [], []
    for shifted, rel_coord in _ensemble_shifts(coord, feat, True):
        q_coef = _sample_nearest(coef, shifted)
        q_freq = _sample_nearest(freq, shifted)
        rel_cell = _in_feature_cells_(cell.clone(), feat)
        bs, q = coord.shape[:2]
        # (…, 2, hidden/2): element [i, j] is channel 2j + i, dotted with rel_coord over i
        q_freq = torch.stack(torch.split(q_freq, 2, dim=-1), dim=-1)
        q_freq = torch.sum(q_freq * rel_coord.unsqueeze(-1), dim=-2)
        q_freq += model.phase(rel_cell.view(bs * q, -1)).view(bs, q, -1)
        q_freq = torch.cat((torch.cos(math.pi * q_freq), torch.sin(math.pi * q_freq)), dim=-1)
        inp = q_coef * q_freq
        preds.append(official_mlp(model.imnet, inp.contiguous().view(bs * q, -1)).view(bs, q, -1))
        areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
    out = _blend(preds, areas, True)
    skip = F.grid_sample(
        state["inp"], coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out + skip[:, :, 0, :].permute(0, 2, 1)


def _path_for(model):
    if isinstance(model, LIIF):
        return liif_gen_feat, liif_query_rgb
    if isinstance(model, LTE):
        return lte_gen_feat, lte_query_rgb
    raise TypeError(f"no official reference path for {type(model).__name__}")


def reference_predict(model, lr, coord, cell, bsize=OFFICIAL_BATCH):
    """Official `batched_predict` with data_norm: lr B×3×h×w in [0, 1], coord/cell B×Q×2 → B×Q×3
    de-normalised, not clamped."""
    gen_feat, query_rgb = _path_for(model)
    with torch.no_grad():
        state = gen_feat(model, (lr - 0.5) / 0.5)
        preds = []
        for start in range(0, coord.shape[1], bsize):
            stop = min(start + bsize, coord.shape[1])
            preds.append(query_rgb(model, state, coord[:, start:stop, :], cell[:, start:stop, :]))
        pred = torch.cat(preds, dim=1)
    return pred * 0.5 + 0.5


def reference_upscale(model, lr, size, bsize=OFFICIAL_BATCH, cell_clamp=None):
    """The official test-time pipeline for an H×W output: all coords materialised, cells 2/H, 2/W
    (times LTE's `max(scale / scale_max, 1)` when `cell_clamp` is given), batched_predict, clamp.
    Returns B×3×H×W in [0, 1]."""
    B, _, h, w = lr.shape
    H, W = size
    coord = official_make_coord((H, W), device=lr.device).unsqueeze(0).expand(B, -1, -1)
    cell = torch.ones_like(coord)
    cell[:, :, 0] *= 2 / H
    cell[:, :, 1] *= 2 / W
    if cell_clamp is not None:
        cell[:, :, 0] *= max(H / h / cell_clamp, 1)
        cell[:, :, 1] *= max(W / w / cell_clamp, 1)
    pred = reference_predict(model, lr, coord, cell, bsize).clamp_(0, 1)
    return pred.view(B, H, W, 3).permute(0, 3, 1, 2).contiguous()
