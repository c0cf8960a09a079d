"""Per-image FLOPs for the evaluation grid, without tracing every image.

A backbone's FLOPs depend only on the LR and output sizes, so one fvcore count per size is exact for
every image of that size. MoEISR's depend on the routing only through how many pixels each expert
decodes, and each expert's cost per pixel is fixed. So, exactly:

    FLOPs(image, knob) = FLOPs(all pixels to the cheapest expert) + Σ_j n_j · (c_j − c_0)

with the first term counted by fvcore (`count(..., routing_knob=+inf)`, once per size), n_j the pixels
the mapper sends to expert j on this image (`expert_map`), and c_j = ensemble · MACs per decoder input
of expert j (the fvcore-verified closed form).

The MAC terms are exact. A few element-wise FLOPs of the dispatch also depend on the routing (about
0.01% of the total on the test image); they are taken at their all-cheapest count. The tests check the
result against a full `count` on real images to a relative 1e-3, and the MAC part exactly.
"""

from __future__ import annotations

import math

import torch

from moeisr.flops.analysis import count
from moeisr.models.moe.moeisr import MoEISR


class PerImageFlops:
    """Callable `(model, lr 1×3×h×w, scale, knob) -> (FLOPs, expert shares or None)` with a size cache."""

    def __init__(self, chunk_size: int = 1 << 20):
        self.chunk_size = chunk_size
        self._base: dict[tuple, int] = {}

    def base(self, model: torch.nn.Module, lr_hw: tuple[int, int], scale: float) -> int:
        key = (id(model), lr_hw, float(scale))
        if key not in self._base:
            knob = math.inf if isinstance(model, MoEISR) else None
            self._base[key] = count(model, lr_hw, scale, routing_knob=knob, chunk_size=self.chunk_size).total
        return self._base[key]

    def __call__(self, model, lr: torch.Tensor, scale: float, knob: float | None):
        lr_hw = tuple(lr.shape[-2:])
        total = self.base(model, lr_hw, scale)
        if not isinstance(model, MoEISR):
            return total, None
        size = (round(lr_hw[0] * scale), round(lr_hw[1] * scale))
        with torch.inference_mode():
            experts = model.expert_map(lr, size, routing_knob=knob)
        counts = torch.bincount(experts.reshape(-1), minlength=model.n_experts).tolist()
        ensemble = model.ensemble_size()
        cost = [ensemble * macs for macs in model.experts.macs_per_input]
        total += sum(n * (c - cost[0]) for n, c in zip(counts, cost, strict=True))
        pixels = sum(counts)
        return total, [n / pixels for n in counts]
