"""Reference routers for a trained MoEISR model: every expert's output per pixel, the oracle and the random router.

The model classes are not touched: `expert_outputs` decodes the whole output grid once per expert through the
backbone's own `query(..., mlp=expert)` inside the generic chunked `upscale` (the same inputs, the same
"as executed" path and the same clamping as `MoEISR.upscale` when every pixel goes to that expert), sharing one
`encode`. Any per-pixel routing is then `assemble(outputs, assign)`, equal to the model's sparse dispatch up to
float rounding (tested ≤ 1e-5).

- `oracle_assign(outputs, hr, eps)`: for each pixel the cheapest expert whose luma error is within `eps` of the
  deepest expert's. The error is |ΔY| of the pixel with the weights PSNR uses (`moeisr.metrics.color.diff_to_y`),
  in [0, 1] units, so with eps = 0 no pixel is worse than the deepest expert's and the oracle's PSNR is at least
  the all-deepest PSNR. It needs the HR image: a reference line, not a router one could deploy.
- `random_assign(counts, ...)`: a uniformly random placement of exactly `counts[j]` pixels on expert j (the same
  expert shares, hence the same decoder FLOPs, as a given routing).
- `sweep_knobs(model, lrs, sizes, points)`: routing knobs from all-cheapest (+inf) to all-deepest (-inf) whose
  mean relative decoder cost on the calibration images is evenly spread between the cheapest expert's and 1.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from moeisr.coords import make_coord
from moeisr.metrics.color import diff_to_y
from moeisr.models.base import DEFAULT_CHUNK_SIZE, upscale
from moeisr.models.moe.routing import knob_assign, knob_for_budget

ORACLE_UNIT = 1.0 / 255.0  # the oracle's ε is given in 8-bit levels of the luma difference
KNOB_DIGITS = 4  # significant digits of the calibrated knobs (readable cache labels)


class _OneExpert:
    """A view of a MoEISR model whose every query is decoded by expert `index` (for the generic `upscale`).

    `features` is shared between the views of one image, so the encoder and the mapper run once."""

    def __init__(self, model, index: int, shared: dict):
        self.model, self.index, self.shared = model, index, shared

    def encode(self, lr: torch.Tensor):
        if "features" not in self.shared:
            self.shared["features"] = self.model.encode(lr)
        return self.shared["features"]

    def query(self, features, coord, cell):
        return self.model.backbone.query(features, coord, cell, mlp=self.model.experts[self.index])


def expert_outputs(
    model,
    lr: torch.Tensor,
    size: tuple[int, int],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cell_clamp: float | None = None,
) -> torch.Tensor:
    """Every expert's SR of `lr` (B×3×h×w in [0, 1]) at `size` (H, W): J×B×3×H×W in [0, 1], cheapest expert first.

    cell_clamp: as in `moeisr.models.base.upscale` (the evaluation protocol's, e.g. LTE's x4 cell).
    Costs one full decode per expert (Σ_j c_j / c_max decodes of the deepest expert) and one encode.
    """
    shared: dict = {}
    with torch.inference_mode():
        return torch.stack(
            [
                upscale(_OneExpert(model, j, shared), lr, size, chunk_size=chunk_size, cell_clamp=cell_clamp)
                for j in range(model.n_experts)
            ]
        )


def assemble(outputs: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """The SR image of a per-pixel routing: outputs J×B×3×H×W, assign B×H×W int64 in [0, J) → B×3×H×W."""
    index = assign.to(outputs.device)[None, :, None].expand(1, -1, outputs.shape[2], -1, -1)
    return outputs.gather(0, index)[0]


def pixel_errors(outputs: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """|ΔY| per pixel and expert, the luma difference PSNR squares: J×B×H×W in [0, 1] units. hr: B×3×H×W."""
    return torch.stack([diff_to_y(out - hr)[:, 0].abs() for out in outputs])


def oracle_assign(outputs: torch.Tensor, hr: torch.Tensor, eps: float) -> torch.Tensor:
    """The cheapest expert whose |ΔY| is within `eps` ([0, 1] units, >= 0) of the deepest expert's: B×H×W int64.

    Experts are sorted by cost (index 0 cheapest), so this is the smallest j with err_j <= err_{J-1} + eps; the
    deepest expert always qualifies, so every pixel gets one.
    """
    if not eps >= 0:
        raise ValueError(f"oracle eps must be >= 0, got {eps}")
    errors = pixel_errors(outputs, hr)
    ok = errors <= errors[-1:] + eps
    return ok.to(torch.int8).argmax(dim=0)  # first True along the (cost-sorted) expert axis


def counts_for_shares(shares: Sequence[float], total: int) -> list[int]:
    """Integer counts summing to `total` closest to `shares` · total (largest remainder; ties to cheaper experts)."""
    shares = [max(float(s), 0.0) for s in shares]
    norm = sum(shares)
    if norm <= 0:
        raise ValueError("shares must have a positive sum")
    exact = [s / norm * total for s in shares]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return counts


def random_assign(counts: Sequence[int], shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A uniformly random routing with exactly counts[j] pixels on expert j: int64 tensor of `shape`."""
    total = math.prod(shape)
    if sum(counts) != total:
        raise ValueError(f"counts {list(counts)} do not sum to the {total} pixels of {shape}")
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(list(counts), dtype=torch.int64))
    return labels[torch.randperm(total, generator=generator)].view(shape)


def derived_generator(*parts) -> torch.Generator:
    """A torch.Generator seeded from the text of `parts` (e.g. seed, dataset, image, scale): stable across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def oracle_label(level: float) -> str:
    """The cache knob label of the oracle at ε = level / 255."""
    return f"oracle:eps={level:g}/255"


def random_label(knob_label: str, seed: int) -> str:
    """The cache knob label of the random router at the shares of the learned routing at `knob_label`."""
    return f"random:shares-of={knob_label}:seed={seed}"


# --------------------------------------------------------------------------------------- the sweep


def calibration_logits(model, lrs: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The mapper's logits at every LR pixel centre of each (1×3×h×w lr, output size): N×J, pooled.

    Sampling at LR pixel centres returns the LR logits themselves; the output size only sets the cell (which
    matters to a mapper with `use_cell`).
    """
    parts = []
    with torch.inference_mode():
        for lr, size in zip(lrs, sizes, strict=True):
            h, w = lr.shape[-2:]
            features = model.encode(lr)
            coord = make_coord((h, w), device=lr.device, dtype=lr.dtype).view(1, h * w, 2)
            cell = torch.tensor([2.0 / size[0], 2.0 / size[1]], device=lr.device, dtype=lr.dtype).expand(1, h * w, 2)
            parts.append(model.query_logits(features, coord, cell)[0])
    return torch.cat(parts)


def _round_sig(value: float, digits: int = KNOB_DIGITS) -> float:
    if value == 0 or math.isinf(value):
        return value
    return float(f"{value:.{digits - 1}e}")


def sweep_knobs(model, lrs: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]], points: int) -> list[float]:
    """`points` (>= 3) routing knobs, cheapest routing first: +inf, the knobs of the evenly spaced interior budgets
    between c_min/c_max and 1 on the pooled calibration logits (rounded to KNOB_DIGITS), -inf. Duplicates (an
    untrained mapper can reach a budget's neighbour) are dropped, so fewer may come back."""
    costs = model.experts.relative_costs()
    logits = calibration_logits(model, lrs, sizes)
    low = float(costs.min())
    budgets = [low + (1.0 - low) * i / (points - 1) for i in range(1, points - 1)]
    knobs = [math.inf] + [_round_sig(knob_for_budget(logits, costs, b)) for b in budgets] + [-math.inf]
    return sorted(dict.fromkeys(knobs), reverse=True)


def default_routing_cost(
    model, lrs: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(pooled calibration logits N×J, relative expert costs (J,) float64, mean c_j / c_max of the model's default
    routing on them), for `knob_at_cost` and `matched_knob`."""
    costs = model.experts.relative_costs().to(torch.float64)
    logits = calibration_logits(model, lrs, sizes)
    return logits, costs, float(costs[knob_assign(logits, costs, model.routing_knob)].mean())


def knob_at_cost(logits: torch.Tensor, costs: torch.Tensor, target: float) -> float:
    """The knob (rounded to KNOB_DIGITS) routing `logits` at mean relative cost `target`; a target below the
    cheapest expert's cost gives all cheapest."""
    return _round_sig(knob_for_budget(logits, costs, max(target, float(costs.min()))))


def matched_knob(
    row_model, reference_model, lrs: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
) -> tuple[float, float, float]:
    """The reference's routing knob whose decoder cost matches the row's default routing, on the pooled calibration
    logits of (lrs, sizes). Returns (knob rounded to KNOB_DIGITS, the row's cost, the reference's default cost), the
    costs as mean c_j / c_max. Both models keep the backbone's MLP as their deepest expert, so equal relative costs
    are equal decoder FLOPs."""
    row_cost = default_routing_cost(row_model, lrs, sizes)[2]
    logits, costs, reference_cost = default_routing_cost(reference_model, lrs, sizes)
    return knob_at_cost(logits, costs, row_cost), row_cost, reference_cost
