"""Per-image FLOPs for the evaluation grid, without tracing a full-size decode of every image.

Output size. For a fixed model and LR size (h, w), every operation of `upscale` is done either once (the
encoder, MoEISR's mapper CNN, LIIF's per-LR-pixel projection on the executed path), once per output row or
column (the coordinate axes), or once per output pixel (coordinates, decoder inputs, the MLPs, the ensemble
blend), as long as the output is decoded in one chunk. So the fvcore count of a decode to (H, W) is exactly

    F(h, w; H, W) = a(h, w) + b·H + c·W + d·H·W                                      (integers a, b, c, d)

where only the constant term depends on the LR size: the per-row, per-column and per-pixel work reads the
LR features but never scales with them. `SizeModel.fit` traces four tiny outputs around `FIT_ORIGIN` at two
small LR sizes (`FIT_LR_SIZES`), solves for (a, b, c, d) in integer arithmetic at each, and requires equal
(b, c, d) from both and an exact prediction at a fifth output (`FIT_CHECK`). A model that breaks the form
raises `SizeModelMismatch`, and `PerImageFlops` then counts every full size instead. After the fit, an
image costs one trace of a tiny output at its real LR size, which gives a(h, w). Outputs above one chunk
(`chunk_size` pixels) are always counted in full, since each chunk adds its own set-up.
tests/test_flops_per_image.py checks the result against full counts of LIIF, LTE and MoEISR on real images
at integer and non-integer scales, on both decoder paths.

Routing. MoEISR's FLOPs depend on the routing only through how many pixels each expert decodes, and
each expert's cost per pixel is fixed. So, exactly:

    FLOPs(image, knob) = FLOPs(all pixels to the cheapest expert) + Σ_j n_j · (c_j − c_0)

with the first term from the size model of the count at `routing_knob=+inf`, n_j the pixels the mapper
sends to expert j on this image (`expert_map`), and c_j = ensemble · MACs per decoder input of expert j
(the fvcore-verified closed form). The MAC terms are exact. A few element-wise FLOPs of the dispatch also
depend on the routing (about 0.01% of the total on the test image); they are taken at their all-cheapest
count. The tests check the result against a full `count` to a relative 1e-3.

Other compute knobs (LMF's CMSR): when the knob is set, which pixels are rendered at which scale depends on the
image's modulations, so the image is traced in full with the knob on (`with_knob`).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from moeisr.flops.analysis import count
from moeisr.models.base import compute_knob, output_size
from moeisr.models.moe.moeisr import MoEISR

FIT_ORIGIN = (3, 3)  # (H0, W0): the fitted outputs are (H0 + i, W0 + j), i, j in {0, 1}; tiny, so traces are cheap
FIT_LR_SIZES = ((12, 12), (13, 17))  # the per-row/column/pixel terms must agree at both
FIT_CHECK = (7, 5)  # an output away from the fitted ones, which the model must predict exactly

# count_at(lr_hw, out_hw) -> FLOPs of one decode
CountFn = Callable[[tuple[int, int], tuple[int, int]], int]


class SizeModelMismatch(RuntimeError):
    """The FLOPs of a model are not of the form a(h, w) + b·H + c·W + d·H·W (see the module docstring)."""


@dataclass(frozen=True)
class SizeModel:
    """The output-size terms of F(h, w; H, W) = a(h, w) + b·H + c·W + d·H·W for one architecture."""

    b: int
    c: int
    d: int

    def output_terms(self, out_hw: tuple[int, int]) -> int:
        """b·H + c·W + d·H·W."""
        H, W = out_hw
        return self.b * H + self.c * W + self.d * H * W

    def constant(self, count_at: CountFn, lr_hw: tuple[int, int]) -> int:
        """a(h, w), from one trace of the smallest fitted output at the LR size."""
        return count_at(lr_hw, FIT_ORIGIN) - self.output_terms(FIT_ORIGIN)

    @classmethod
    def fit(cls, count_at: CountFn) -> SizeModel:
        """Fit (b, c, d) at each of `FIT_LR_SIZES`; SizeModelMismatch unless they agree and predict `FIT_CHECK`."""
        H0, W0 = FIT_ORIGIN
        fits = []
        for lr_hw in FIT_LR_SIZES:
            f00, f10 = count_at(lr_hw, (H0, W0)), count_at(lr_hw, (H0 + 1, W0))
            f01, f11 = count_at(lr_hw, (H0, W0 + 1)), count_at(lr_hw, (H0 + 1, W0 + 1))
            d = f11 - f10 - f01 + f00
            fits.append(cls(b=f10 - f00 - d * W0, c=f01 - f00 - d * H0, d=d))
        if any(fit != fits[0] for fit in fits):
            sizes = ", ".join(f"{h}x{w}: {fit}" for (h, w), fit in zip(FIT_LR_SIZES, fits, strict=True))
            raise SizeModelMismatch(f"the output-size terms depend on the LR size ({sizes})")
        lr_hw, model = FIT_LR_SIZES[0], fits[0]
        predicted = model.constant(count_at, lr_hw) + model.output_terms(FIT_CHECK)
        found = count_at(lr_hw, FIT_CHECK)
        if predicted != found:
            raise SizeModelMismatch(f"the fit predicts {predicted} FLOPs at {FIT_CHECK}, fvcore counts {found}")
        return model


class PerImageFlops:
    """Callable `(model, lr 1×3×h×w, scale, knob) -> (FLOPs, expert shares or None)` with caches.

    `model_key(model)` decides which models share counts (default: the object itself); subclasses key by
    architecture so that checkpoints of one architecture trace once. `fit_sizes=False` always counts the
    full output (slow; the reference the size model is tested against).
    """

    def __init__(self, chunk_size: int = 1 << 20, fit_sizes: bool = True):
        self.chunk_size = chunk_size
        self.fit_sizes = fit_sizes
        self._size_models: dict[Hashable, SizeModel | None] = {}  # None: the architecture needs full counts
        self._counts: dict[tuple, int] = {}

    def model_key(self, model: torch.nn.Module) -> Hashable:
        """Models with equal keys share FLOPs counts (they must have the same architecture)."""
        return id(model)

    def _key(self, model: torch.nn.Module) -> Hashable:
        # the decoder path ("as published" or "as executed") changes the counts of the same weights
        return self.model_key(model), getattr(model, "decoder_path", None)

    def _count(self, model: torch.nn.Module, lr_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
        key = (self._key(model), lr_hw, out_hw)
        if key not in self._counts:
            knob = math.inf if isinstance(model, MoEISR) else None  # all pixels to the cheapest expert
            report = count(model, lr_hw, 1.0, routing_knob=knob, chunk_size=self.chunk_size, out_size=out_hw)
            self._counts[key] = report.total
        return self._counts[key]

    def size_model(self, model: torch.nn.Module) -> SizeModel | None:
        """The fitted size model of `model`'s architecture, or None if its FLOPs do not have that form."""
        key = self._key(model)
        if key not in self._size_models:
            try:
                self._size_models[key] = SizeModel.fit(functools.partial(self._count, model))
            except SizeModelMismatch:
                self._size_models[key] = None
        return self._size_models[key]

    def base(self, model: torch.nn.Module, lr_hw: tuple[int, int], scale: float) -> int:
        """FLOPs of decoding an h×w LR at `scale`, with every pixel on the cheapest expert for MoEISR."""
        lr_hw = (int(lr_hw[0]), int(lr_hw[1]))
        out_hw = output_size(lr_hw, scale)
        if self.fit_sizes and out_hw[0] * out_hw[1] <= self.chunk_size:
            sizes = self.size_model(model)
            if sizes is not None:
                return sizes.constant(functools.partial(self._count, model), lr_hw) + sizes.output_terms(out_hw)
        return self._count(model, lr_hw, out_hw)

    def with_knob(self, model, lr: torch.Tensor, scale: float, name: str, knob: float) -> int:
        """FLOPs of one image with a non-MoEISR compute knob set (LMF's CMSR: what is rendered at which scale
        depends on the image), traced in full on `lr` 1×3×h×w; the model's own knob value is restored."""
        previous = getattr(model, name)
        setattr(model, name, knob)
        try:
            return count(model, None, scale, image=lr, chunk_size=self.chunk_size).total
        finally:
            setattr(model, name, previous)

    def routed(self, model: MoEISR, lr_hw: tuple[int, int], scale: float, assign: torch.Tensor):
        """(FLOPs, expert shares) of decoding at `scale` with the per-pixel routing `assign` (int64, any shape)."""
        counts = torch.bincount(assign.reshape(-1), minlength=model.n_experts).tolist()
        cost = [model.ensemble_size() * macs for macs in model.experts.macs_per_input]
        total = self.base(model, lr_hw, scale) + sum(n * (c - cost[0]) for n, c in zip(counts, cost, strict=True))
        pixels = sum(counts)
        return total, [n / pixels for n in counts]

    def __call__(self, model, lr: torch.Tensor, scale: float, knob: float | None):
        lr_hw = tuple(lr.shape[-2:])
        name = compute_knob(model)
        if not isinstance(model, MoEISR) and name is not None and knob is not None:
            return self.with_knob(model, lr, scale, name, knob), None
        if not isinstance(model, MoEISR):
            return self.base(model, lr_hw, scale), None
        with torch.inference_mode():
            experts = model.expert_map(lr, output_size(lr_hw, scale), routing_knob=knob)
        return self.routed(model, lr_hw, scale, experts)


def architecture_key(model: torch.nn.Module) -> str:
    """The model's spec without MoEISR's routing settings (tau, λ, knob...), which never change its FLOPs."""
    spec = copy.deepcopy(getattr(model, "spec", None) or {"id": id(model)})
    if spec.get("name") == "moeisr":
        spec.get("args", {}).pop("routing", None)
    return json.dumps(spec, sort_keys=True, default=str)


class ArchitectureFlops(PerImageFlops):
    """`PerImageFlops` whose fvcore counts are shared between models of one architecture (`architecture_key`):
    the equal-budget backbones and the ablation rows reuse the counts of the first checkpoint traced."""

    def model_key(self, model: torch.nn.Module) -> Hashable:
        return architecture_key(model)


def encoder_flops_per_lr_pixel(model: torch.nn.Module, sizes=((12, 12), (16, 20))) -> float:
    """FLOPs per LR pixel of `model`'s feature encoder (fvcore, the `encoder` component of `count`).

    A fully convolutional encoder's count is proportional to h·w; it is measured at two LR `sizes` and a count
    that is not proportional raises ValueError. Used to split an image's total into encoder and the rest
    (the decoder side: MoEISR's mapper and experts, LMF's latent and render MLPs, LTE's estimator).
    """
    per_pixel = []
    for h, w in sizes:
        knob = math.inf if isinstance(model, MoEISR) else None  # the encoder does not depend on the routing
        per_pixel.append(count(model, (h, w), 1.0, routing_knob=knob).encoder / (h * w))
    if abs(per_pixel[0] - per_pixel[1]) > 1e-9 * max(per_pixel):
        raise ValueError(f"encoder FLOPs are not proportional to the LR area: {per_pixel} per pixel")
    return per_pixel[0]
