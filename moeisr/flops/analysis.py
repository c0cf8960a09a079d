"""`count`: fvcore's FlopCountAnalysis on the real `upscale` path of an implicit SR model.

What is traced. A small wrapper module whose forward is `model.upscale(lr, size, chunk_size=...)`
(MoEISR: with the routing knob), i.e. the very function users call: encode once, then query the output
grid in chunks of `chunk_size` pixels. fvcore traces with `torch.jit`, so the data-dependent sparse
dispatch of MoEISR is recorded with the actual index tensors of this input: each expert's Linear layers
appear with exactly the rows routed to it.

Which path. Under the default decoder_path "auto" a trace takes the published path (moeisr.models.base), so
the counts are the papers' operations. With `using_decoder_path(model, "as_executed")` the count follows
what `upscale` runs by default (LIIF's split first layer, LTE's basis inside the MLPs, no EDSR ×1, no eval
softmax; `FlopReport.path` says which); `_fill_experts` knows both paths' per-expert costs.

Keeping everything alive. A jit trace drops operations whose results never reach the outputs. At eval on
the published path, MoEISR's routing probabilities are computed and never used, and when every pixel goes to one expert
(always at routing knob ±inf) even the mapper and the logit sampling become dead code, although the
real forward runs them. So the traced forward runs under a TorchFunctionMode that takes a one-element
copy (`aten::as_strided` + `aten::clone`, both zero-cost) of every tensor an operation returns and
returns those copies as extra outputs: every operation the real forward executes is counted. The
anchors are subtracted from the reported zero-cost call counts.

Warnings. fvcore's unsupported-operator and uncalled-module warnings are switched off
(`unsupported_ops_warnings(False)`, `uncalled_modules_warnings(False)`) because we report both
ourselves: unsupported operators in `FlopReport.uncounted_ops`, and modules that never ran (e.g. an
expert that received no pixel, EDSR's unused MeanShift layers) show up as 0 in the breakdown.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.overrides import TorchFunctionMode

from moeisr.errors import UserError
from moeisr.flops import closed_form
from moeisr.flops.handles import extra_handles
from moeisr.models.base import DEFAULT_CHUNK_SIZE, output_size
from moeisr.models.moe.moeisr import MoEISR

CONVENTION = (
    "GFLOPs, fvcore: 1 multiply-add (MAC) = 1 FLOP for linear/conv/matmul (bias adds and ReLU not counted); "
    "element-wise floating-point arithmetic = 1 FLOP per output element; reductions = 1 per input element; "
    "softmax = 3 per element; interpolation per output element: bilinear 4, bicubic 16, nearest 0; "
    "data movement, casts, comparisons and integer index arithmetic = 0"
)
PATH = "as published: the per-query MLP decodes every local-ensemble shift of every output pixel"
PATH_EXECUTED = (
    "as executed: the exact reformulation upscale runs by default (LIIF: first layer split per LR pixel; LTE: "
    "Fourier basis built inside the MLP's first layer; docs/speed.md)"
)
# the fvcore scope of the model inside the traced wrapper
_ROOT = "model"


@dataclass
class FlopReport:
    """FLOPs of one `upscale` call, split by component (all in FLOPs, see `convention`).

    total = encoder + mapper + latent + decoder + other.
    encoder: the feature encoder module (EDSR/RDN convs and their residual adds).
    mapper: MoEISR's mapper CNN (0 otherwise); the per-query logit sampling and routing are in `other`.
    latent: LMF's latent MLP (`hypernet`), at LR resolution, once per image and scale (0 otherwise).
    decoder: the per-query MLP (LIIF/LTE `imnet`, or MoEISR's experts as routed), MACs only; for LMF the
    render MLP (`imnet`) at HR resolution, its MACs and its modulations (a multiply and an add per hidden value).
    other: everything else; `other_parts` splits it into the remaining modules (e.g. LTE's `coef`, `freq`
    convs at LR resolution and its `phase` Linear) and "unscoped" (operations outside any submodule:
    input normalisation, coordinates, LIIF/LTE's decoder-input construction and Fourier features,
    ensemble blend, LTE's bilinear skip, MoEISR's logit sampling and routing).
    per_expert: decoder FLOPs of each expert (MoEISR; cheapest first); expert_queries: output pixels routed
    to each expert; expert_shares: their fractions (sum 1). On the executed path (`path`, counted with
    `using_decoder_path(model, "as_executed")`) the decoder also holds LIIF's per-LR-pixel projection and
    LTE's basis construction, which run inside the MLPs there.
    by_operator: FLOPs per operator type; zero_cost_ops: calls of operators counted 0 by decision;
    uncounted_ops: calls of operators nobody decided about (fvcore counted them as 0).
    """

    model: str
    total: int
    encoder: int
    mapper: int
    decoder: int
    other: int
    lr_size: tuple[int, int]
    out_size: tuple[int, int]
    scale: float
    routing: str
    routing_knob: float | None = None
    latent: int = 0
    other_parts: dict[str, int] = field(default_factory=dict)
    per_expert: list[int] = field(default_factory=list)
    expert_queries: list[int] = field(default_factory=list)
    expert_shares: list[float] = field(default_factory=list)
    expert_hidden_lists: list[list[int]] = field(default_factory=list)
    by_operator: dict[str, int] = field(default_factory=dict)
    zero_cost_ops: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    convention: str = CONVENTION
    path: str = PATH

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (infinite knobs become the strings "inf" / "-inf")."""
        out = asdict(self)
        out["lr_size"], out["out_size"] = list(self.lr_size), list(self.out_size)
        knob = self.routing_knob
        out["routing_knob"] = knob if knob is None or math.isfinite(knob) else ("inf" if knob > 0 else "-inf")
        return out


class _KeepAlive(TorchFunctionMode):
    """Collects a one-element copy of every tensor result, so the jit trace keeps every operation."""

    def __init__(self):
        super().__init__()
        self.anchors: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > 0 and t.layout == torch.strided:
                self.anchors.append(torch.as_strided(t, (1,), (1,)).clone())
        return out


class _UpscaleTrace(nn.Module):
    """forward(lr) = model.upscale(lr, size, chunk_size) plus the liveness anchors."""

    def __init__(self, model: nn.Module, size: tuple[int, int], chunk_size: int, routing_knob: float | None):
        super().__init__()
        self.model = model
        self.size, self.chunk_size, self.routing_knob = size, chunk_size, routing_knob
        self.n_anchors = 0

    def forward(self, lr: torch.Tensor):
        kwargs = {"chunk_size": self.chunk_size}
        if isinstance(self.model, MoEISR):
            kwargs["routing_knob"] = self.routing_knob
        keep = _KeepAlive()
        with keep:
            out = self.model.upscale(lr, self.size, **kwargs)
        self.n_anchors = len(keep.anchors)
        return (out, *keep.anchors)


def synthetic_lr(lr_size: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """A deterministic 1×3×h×w test pattern in [0, 1] (smooth ramps and a sine). Its values do not change
    the FLOPs of LIIF/LTE; for MoEISR they would decide the routing, so `count` uses it there only at
    routing knob ±inf, where the routing ignores the content."""
    h, w = lr_size
    rows = torch.linspace(0, 1, h, device=device, dtype=dtype).view(h, 1)
    cols = torch.linspace(0, 1, w, device=device, dtype=dtype).view(1, w)
    channels = (rows * cols, 0.5 + 0.5 * torch.sin(6 * math.pi * rows * (1 - cols)), (rows + cols) / 2)
    return torch.stack([c.expand(h, w) for c in channels]).unsqueeze(0)


def _as_lr_batch(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"image must be a 3×h×w or 1×3×h×w tensor, got {shape}")
    if image.dim() == 4 and image.shape[0] != 1:
        raise UserError(f"image must hold one image (1×3×h×w), got a batch of {image.shape[0]}")
    if not image.is_floating_point() or image.min() < 0 or image.max() > 1:
        raise UserError("image must be a float tensor in [0, 1] (e.g. moeisr.data.images.load_image)")
    return image if image.dim() == 4 else image.unsqueeze(0)


def _positive_pair(value, name: str, letters: str) -> tuple[int, int]:
    """`value` as two positive ints, else a UserError naming the argument (`name`) and its parts (`letters`)."""
    message = f"{name} {value!r} must be two positive integers ({letters})"
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(message) from None
    if a < 1 or b < 1 or (a, b) != tuple(value):
        raise UserError(message)
    return a, b


def _components(model: nn.Module) -> tuple[str, str | None, str | None, str]:
    """fvcore scope names (under the wrapper) of the encoder, mapper, latent MLP and decoder of `model`."""
    if isinstance(model, MoEISR):
        return f"{_ROOT}.backbone.encoder", f"{_ROOT}.mapper", None, f"{_ROOT}.experts"
    if not (hasattr(model, "encoder") and hasattr(model, "imnet")):
        raise UserError(f"{type(model).__name__} is not an implicit SR model with an encoder and an imnet MLP")
    latent = f"{_ROOT}.hypernet" if isinstance(getattr(model, "hypernet", None), nn.Module) else None
    return f"{_ROOT}.encoder", None, latent, f"{_ROOT}.imnet"


def _other_parts(wrapper: nn.Module, by_module: Mapping[str, int], components: set[str]) -> dict[str, int]:
    """FLOPs of the modules outside the components, at the coarsest level that avoids them."""
    parts: dict[str, int] = {}

    def visit(name: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}"
            if full in components:
                continue
            if any(c.startswith(full + ".") for c in components):
                visit(full, child)
            elif by_module.get(full, 0):
                parts[full[len(_ROOT) + 1 :]] = int(by_module[full])

    visit(_ROOT, wrapper.model)
    return parts


def count(
    model: nn.Module,
    lr_size: tuple[int, int] | None,
    scale: float,
    image: torch.Tensor | None = None,
    routing_knob: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    out_size: tuple[int, int] | None = None,
) -> FlopReport:
    """Count the FLOPs of `model.upscale` from an LR image of `lr_size` (h, w) to round(scale·(h, w)).

    image: the LR input, 3×h×w or 1×3×h×w float in [0, 1] (lr_size may then be None; if given it must
      match). Without it a deterministic synthetic pattern is used, which is exact for LIIF/LTE (their
      FLOPs do not depend on pixel values).
    MoEISR: the count follows the mapper's actual routing on `image`. Without an image the routing is
      only defined for routing_knob = +inf (every pixel to the cheapest expert) or -inf (every pixel to
      the deepest): any other knob without an image raises UserError. routing_knob None = the model's.
    chunk_size: output pixels per query chunk, as in `upscale`. Encoder, mapper, decoder and the per-query
      parts do not depend on it; each chunk adds the O(h + w) element-wise FLOPs of its coordinate set-up.
      Tracing time grows with the number of chunks, so keep chunks large.
    out_size: decode to this (H, W) instead of round(scale·(h, w)), any positive size (smaller than the LR
      too: `moeisr.flops.per_image` fits its size model on tiny outputs); `scale` is then only recorded.
    The model is traced in eval mode (restored afterwards) on the device of its parameters.
    """
    if chunk_size < 1:
        raise UserError(f"chunk_size must be a positive number of pixels, got {chunk_size}")
    param = next(model.parameters())
    if image is not None:
        lr = _as_lr_batch(image).to(device=param.device, dtype=param.dtype)
        image_hw = tuple(lr.shape[-2:])
        if lr_size is not None and _positive_pair(lr_size, "lr_size", "h, w") != image_hw:
            raise UserError(f"lr_size {tuple(lr_size)} does not match the image's size {image_hw}; drop one")
        lr_size = image_hw
    elif lr_size is None:
        raise UserError("pass lr_size (h, w) or an LR image")
    else:
        lr_size = _positive_pair(lr_size, "lr_size", "h, w")
        lr = synthetic_lr(lr_size, device=param.device, dtype=param.dtype)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise UserError(f"scale {scale!r} is not a number; pass e.g. 2 or 3.7") from None
    size = output_size(lr_size, scale) if out_size is None else _positive_pair(out_size, "out_size", "H, W")

    is_moe = isinstance(model, MoEISR)
    knob = None
    if is_moe:
        knob = model.routing_knob if routing_knob is None else float(routing_knob)
        if math.isnan(knob):
            raise UserError("routing_knob is NaN; use a float, +inf (all cheapest) or -inf (all deepest)")
        if image is None and not math.isinf(knob):
            raise UserError(
                "MoEISR's FLOPs depend on the image it routes: pass an LR image (--image LR.png), or a routing "
                "knob of +inf (all pixels to the cheapest expert) or -inf (all to the deepest)"
            )
        routing = "actual routing on the given image" if image is not None else "content-independent (knob ±inf)"
    elif routing_knob is not None:
        raise UserError(f"routing_knob applies to MoEISR models only, not to {type(model).__name__}")
    elif getattr(model, "cmsr_table", None) is not None and (getattr(model, "cmsr_mse", None) or 0) > 0:
        # LMF with CMSR on: which pixels are rendered at which scale depends on the image's modulations
        if image is None:
            raise UserError(
                "LMF's FLOPs with CMSR on depend on the image: pass an LR image (--image LR.png), or turn CMSR off "
                "(cmsr_mse None or 0)"
            )
        routing = f"CMSR at MSE threshold {model.cmsr_mse:g} on the given image"
    else:
        routing = "none (single decoder MLP)"

    wrapper = _UpscaleTrace(model, size, int(chunk_size), knob)
    zero_calls: Counter = Counter()
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(wrapper, (lr,))
        analysis.set_op_handle(**extra_handles(zero_calls))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_module = analysis.by_module()
        by_operator = analysis.by_operator()
        uncounted = analysis.unsupported_ops()
    finally:
        model.train(was_training)
    for anchor_op in ("aten::as_strided", "aten::clone"):
        zero_calls[anchor_op] -= wrapper.n_anchors
    zero_calls = +zero_calls  # drop the entries the anchors accounted for

    encoder_name, mapper_name, latent_name, decoder_name = _components(model)
    total = int(by_module[""])
    encoder = int(by_module.get(encoder_name, 0))
    mapper = int(by_module.get(mapper_name, 0)) if mapper_name else 0
    latent = int(by_module.get(latent_name, 0)) if latent_name else 0
    decoder = int(by_module.get(decoder_name, 0))
    named = {n for n in (encoder_name, mapper_name, latent_name, decoder_name) if n}
    parts = _other_parts(wrapper, by_module, named)
    unscoped = total - encoder - mapper - latent - decoder - sum(parts.values())
    if unscoped:
        parts["unscoped"] = unscoped

    report = FlopReport(
        model=str(getattr(model, "spec", {}).get("name", type(model).__name__)),
        total=total,
        encoder=encoder,
        mapper=mapper,
        decoder=decoder,
        other=total - encoder - mapper - latent - decoder,
        lr_size=lr_size,
        out_size=size,
        scale=scale,
        routing=routing,
        routing_knob=knob,
        latent=latent,
        other_parts=parts,
        by_operator={k: int(v) for k, v in sorted(by_operator.items())},
        zero_cost_ops=dict(sorted(zero_calls.items())),
        uncounted_ops=dict(sorted(uncounted.items())),
        chunk_size=int(chunk_size),
        path=PATH_EXECUTED if model.decoder_path == "as_executed" else PATH,
    )
    if is_moe:
        _fill_experts(report, model, by_module, decoder_name)
    return report


def _expert_cost(model: MoEISR, j: int, lr_pixels: int, ensemble: int, executed: bool) -> tuple[int, int]:
    """(FLOPs once per image if expert j decodes any pixel, FLOPs per pixel routed to it) on the counted path."""
    expert = model.experts[j]
    if not executed:
        return 0, ensemble * expert.macs_per_input
    backbone = model.backbone
    if hasattr(backbone, "factored_inputs"):  # LIIF: FactoredInputs, the per-LR-pixel projection in the expert
        n_tail = 2 + (2 if backbone.cell_decode else 0)
        hidden = expert.hidden_list
        once = closed_form.liif_projection(lr_pixels, expert.in_dim, hidden[0] if hidden else expert.out_dim, n_tail)
        return once, ensemble * closed_form.liif_executed_per_input(expert.in_dim, hidden, n_tail, expert.out_dim)
    if hasattr(backbone, "fourier_inputs"):  # LTE: the basis is built inside the expert's first layer
        return 0, ensemble * (expert.macs_per_input + closed_form.lte_basis_executed(backbone.hidden_dim))
    return 0, ensemble * expert.macs_per_input


def _fill_experts(report: FlopReport, model: MoEISR, by_module: Mapping[str, int], decoder_name: str) -> None:
    """per_expert FLOPs, and the pixels routed to each expert recovered from them (exact integers).

    Published path: an expert's FLOPs are pixels · K · MACs per input. Executed path: LIIF's experts add their
    per-LR-pixel projection once (if they decode any pixel) and fewer MACs per input; LTE's add the basis
    construction per input (`closed_form.liif_projection`, `liif_executed_per_input`, `lte_basis_executed`)."""
    ensemble = model.ensemble_size()
    executed = model.decoder_path == "as_executed"
    lr_pixels = report.lr_size[0] * report.lr_size[1]
    report.expert_hidden_lists = copy.deepcopy(model.experts.hidden_lists)
    for j in range(model.n_experts):
        flops = int(by_module.get(f"{decoder_name}.experts.{j}", 0))
        once, per_pixel = _expert_cost(model, j, lr_pixels, ensemble, executed)
        queries, rest = divmod(flops - once, per_pixel) if flops else (0, 0)
        if rest or queries < 0 or (flops and queries == 0 and once == 0):
            raise RuntimeError(
                f"expert {j}: {flops} FLOPs is not {once} + a multiple of {per_pixel} FLOPs per pixel "
                f"({'executed' if executed else 'published'} path)"
            )
        report.per_expert.append(flops)
        report.expert_queries.append(queries)
    n = sum(report.expert_queries)
    report.expert_shares = [q / n if n else 0.0 for q in report.expert_queries]
