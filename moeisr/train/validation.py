"""Validation during training: mean PSNR on the first N images of a set, at one or more scales.

The pairs follow the benchmark protocol (`moeisr.data.BenchmarkSet`: LIIF's crop rule, MATLAB bicubic,
8-bit LR), the SR is the model's `upscale` in eval mode, and PSNR is `moeisr.metrics.psnr` with the
"benchmark" protocol (Y channel, shave = scale), or "div2k" (RGB, shave = scale + 6) on DIV2K.

With `crop`, every HR image is first cut to one fixed crop×crop window whose position is seeded by the
file name (the same window at every scale and in every run), so that a held-out set of large images
(T91: 5.4 MP in all) costs a fraction of a full pass. The value is the mean over scales of the set means.
For a model with a routing loss, `pick_agreement` is the share of training picks that equal inference picks.

`measure` gives the same PSNRs per pair, with each pair's expert shares and mean relative decoder cost
Σ_j share_j · c_j / c_max for MoEISR (its default routing) and, given a FLOPs counter (`moeisr.flops.per_image`),
the pair's FLOPs: what a recipe is chosen on (docs/moeisr.md, "Recipe v2: how it is chosen").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from moeisr.coords import make_cell, make_coord
from moeisr.data.benchmark import BenchmarkPair, list_images
from moeisr.data.degrade import degrade
from moeisr.data.images import load_image
from moeisr.data.layout import canonical_set_name
from moeisr.errors import UserError
from moeisr.metrics import psnr, set_mean


def fixed_crop(hr: torch.Tensor, size: int, key: str) -> torch.Tensor:
    """The size×size window of `hr` (3×H×W) at a position drawn from a generator seeded by `key`.

    UserError if the image is smaller than `size` on either side.
    """
    h, w = hr.shape[-2:]
    if h < size or w < size:
        raise UserError(f"{key}: {h}x{w} px is smaller than the validation crop of {size} px; lower data.val_crop")
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    gen = torch.Generator().manual_seed(seed)
    top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    return hr[..., top : top + size, left : left + size]


def validation_pairs(
    set_name: str, scale: float, limit: int | None = None, crop: int | None = None
) -> list[BenchmarkPair]:
    """The (name, hr, lr, scale) pairs of a validation pass: whole images or fixed crops, degraded at `scale`."""
    pairs = []
    for path in list_images(set_name, limit=limit):
        hr = load_image(path)
        if crop is not None:
            hr = fixed_crop(hr, crop, path.name)
        hr, lr = degrade(hr, scale, quantize=True)
        pairs.append(BenchmarkPair(path.stem, hr, lr, float(scale)))
    return pairs


class Validator:
    """PSNR of a model on `set_name` at `scales` (first `limit` images, optional fixed crops); pairs are built once."""

    def __init__(
        self,
        set_name: str,
        scales: float | Sequence[float],
        limit: int | None = None,
        chunk_size: int = 65536,
        crop: int | None = None,
    ):
        self.set_name = canonical_set_name(set_name)
        self.scales = [float(scales)] if isinstance(scales, int | float) else [float(s) for s in scales]
        self.limit, self.crop = limit, crop
        self.protocol = "div2k" if self.set_name.startswith("DIV2K") else "benchmark"
        self.chunk_size = chunk_size
        self._pairs: dict[float, list[BenchmarkPair]] | None = None

    def pairs(self) -> dict[float, list[BenchmarkPair]]:
        """The validation pairs by scale (built on first use)."""
        if self._pairs is None:
            self._pairs = {s: validation_pairs(self.set_name, s, self.limit, self.crop) for s in self.scales}
        return self._pairs

    def _psnr(self, model: nn.Module, pair: BenchmarkPair, device: torch.device) -> float:
        sr = model.upscale(pair.lr[None].to(device), tuple(pair.hr.shape[-2:]), chunk_size=self.chunk_size)
        return psnr(sr.cpu(), pair.hr[None], pair.scale, protocol=self.protocol)

    @torch.no_grad()
    def per_scale(self, model: nn.Module, device: torch.device) -> dict[float, float]:
        """Mean PSNR (dB) of each scale; the model is put back in its previous train/eval mode."""
        was_training = model.training
        model.eval()
        try:
            means = {}
            for scale, pairs in self.pairs().items():
                means[scale] = set_mean([self._psnr(model, pair, device) for pair in pairs])
        finally:
            model.train(was_training)
        return means

    @torch.no_grad()
    def measure(self, model: nn.Module, device: torch.device | str, flops: Callable | None = None) -> list[dict]:
        """One record per validation pair: dataset, image, scale, crop, h, w (HR), psnr (as `per_scale` computes it,
        whose means these are), and for MoEISR (a model with `experts` and `expert_map`) share_0..share_{J-1} of
        its output pixels per expert and rel_cost = Σ_j share_j · c_j / c_max at its default routing; with
        `flops(model, lr, scale, knob) -> (FLOPs, shares or None)` (`moeisr.flops.per_image.PerImageFlops`) also
        gflops. The model is put back in its previous train/eval mode."""
        was_training = model.training
        model.eval()
        routed = hasattr(model, "expert_map") and hasattr(model, "experts")
        costs = model.experts.relative_costs().tolist() if routed else None
        records = []
        try:
            for scale, pairs in self.pairs().items():
                for pair in pairs:
                    h, w = pair.hr.shape[-2:]
                    record = {"dataset": self.set_name, "image": pair.name, "scale": scale, "crop": self.crop,
                              "h": int(h), "w": int(w), "psnr": float(self._psnr(model, pair, device))}  # fmt: skip
                    lr = pair.lr[None].to(device)
                    shares = None
                    if flops is not None:
                        total, shares = flops(model, lr, scale, None)
                        record["gflops"] = total / 1e9
                    if routed:
                        if shares is None:
                            assign = model.expert_map(lr, (int(h), int(w)))
                            counts = torch.bincount(assign.reshape(-1), minlength=len(costs)).tolist()
                            shares = [n / sum(counts) for n in counts]
                        record.update({f"share_{j}": float(v) for j, v in enumerate(shares)})
                        record["rel_cost"] = float(sum(v * c for v, c in zip(shares, costs, strict=True)))
                    records.append(record)
        finally:
            model.train(was_training)
        return records

    @torch.no_grad()
    def pick_agreement(self, model: nn.Module, device: torch.device, queries: int = 4096) -> float:
        """The share of queries whose training pick (a Gumbel sample at the router's current noise, seed 0) is the
        inference pick (argmax at knob 0), on `queries` fixed pixels of the first validation image at the
        first scale; the model is put back in its previous mode. Only for models with a routing loss."""
        pair = self.pairs()[self.scales[0]][0]
        H, W = pair.hr.shape[-2:]
        index = torch.randperm(H * W, generator=torch.Generator().manual_seed(0))[:queries]
        coord = make_coord((H, W))[index][None].to(device)
        cell = make_cell(coord, (H, W))
        was_training = model.training
        try:
            features = model.encode(pair.lr[None].to(device))
            model.train()
            generator = torch.Generator(device=device).manual_seed(0)
            _, sampled = model.query_with_info(features, coord, cell, generator=generator)
            model.eval()
            _, chosen = model.query_with_info(features, coord, cell, routing_knob=0.0)
        finally:
            model.train(was_training)
        return float((sampled.assign == chosen.assign).float().mean())

    def __call__(self, model: nn.Module, device: torch.device) -> float:
        """Mean over the scales of the per-scale mean PSNR (dB)."""
        values = list(self.per_scale(model, device).values())
        return sum(values) / len(values)
