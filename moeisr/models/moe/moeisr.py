"""MoEISR (`moeisr`): a LIIF/LTE backbone whose decoder MLP is replaced by J experts and a mapper.

RECONSTRUCTION NOTE: "Balancing Efficiency and Quality: MoEISR for Arbitrary-Scale Image
Super-Resolution" (Oh, Kim, Nam, Kim) is unavailable in full; this wrapper is our reconstruction and
every choice is a knob documented in docs/moeisr.md.

The wrapper is model-agnostic: it uses only the backbone contract of `moeisr.models.base.ImplicitSR`
(`encode(lr)` with a "feat" entry, `query(features, coord, cell, mlp=...)` calling `mlp` once on
B×Q×K×D inputs, `imnet`, `imnet_in_dim`). Everything the backbone computes before its MLP (encoder,
LTE's coef/freq/phase, LIIF's unfolding, local ensemble, LTE's bilinear skip) is kept as is.

- `encode(lr)`: the backbone's features plus "moe_logits", the mapper's B×J×h×w logits (with
  `mapper.use_cell` they depend on the scale, so they are computed at the first query of each scale
  and cached in the features dict with "moe_logits_scale").
- `query(features, coord, cell)`: samples the logits at the queries and routes them. In training mode
  (`module.training`) routing is a straight-through Gumbel-Softmax sample and every expert runs on
  every query; in eval mode it is argmax(logits - routing_knob · cost/cost_max) with sparse dispatch.
- `query_with_info` / `forward_train` also return the `RoutingInfo` (the side channel for the losses):
  `loss = l1(pred, gt) + model.aux_loss(info)`.
- `upscale(lr, size, routing_knob=...)`, `expert_map(lr, size)`: chunked over the output grid.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from moeisr.coords import make_coord
from moeisr.errors import UserError
from moeisr.models.base import DEFAULT_CHUNK_SIZE, Decoder, Features, ImplicitSR, cell_scale_factors, upscale
from moeisr.models.moe.experts import (
    ExpertSet,
    copy_linear_layers,
    linear_layers,
    mlp_hidden_list,
    resolve_expert_hidden_lists,
)
from moeisr.models.moe.mapper import Mapper, relative_scale, sample_logits
from moeisr.models.moe.routing import Router, RoutingInfo, knob_assign, knob_for_budget, routed_macs
from moeisr.registry import models

MAPPER_DEFAULTS = {"n_layers": 3, "width": 64, "use_cell": False}
ROUTING_DEFAULTS = {"tau": 1.0, "balance": "switch", "balance_weight": 0.01, "cost_weight": 0.0, "routing_knob": 0.0}


# Routing options that enter the spec only when given, so that every earlier checkpoint's spec is unchanged.
ROUTING_OPTIONAL = {"cost_target", "noise_anneal_steps", "expert_loss_weight"}


def _merge(defaults: dict, given: Mapping | None, what: str, optional: set | frozenset = frozenset()) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults) - set(optional))
    if unknown:
        raise UserError(f"unknown MoEISR {what} option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **given}


@models.register("moeisr")
class MoEISR(ImplicitSR):
    """A backbone (`backbone_spec`, e.g. a `liif` or `lte` spec) decoded by J experts chosen per pixel.

    experts: None/"depth"/"width" or a list of hidden lists / MLP specs (see experts.py); sorted by cost.
    mapper: {"n_layers": 1..5 (3), "width": 64, "use_cell": False}.
    routing: {"tau": 1.0, "balance": "switch"|"cv2"|"none", "balance_weight": 0.01, "cost_weight": 0.0,
              "routing_knob": 0.0}.
    """

    compute_knob_name = "routing_knob"
    has_routing_loss = True

    def __init__(self, backbone_spec, experts=None, mapper=None, routing=None):
        super().__init__()
        mapper_cfg = _merge(MAPPER_DEFAULTS, mapper, "mapper")
        routing_cfg = _merge(ROUTING_DEFAULTS, routing, "routing", ROUTING_OPTIONAL)
        self.backbone = models.make(backbone_spec)
        for attr in ("encode", "query", "imnet", "imnet_in_dim"):
            if not hasattr(self.backbone, attr):
                raise UserError(
                    f"backbone {backbone_spec.get('name')!r} has no {attr!r}; MoEISR needs a LIIF-like model"
                )
        source_mlp = self.backbone.imnet
        out_dim = linear_layers(source_mlp)[-1].out_features
        hidden_lists = resolve_expert_hidden_lists(experts, mlp_hidden_list(source_mlp))
        # the backbone's own MLP is replaced by the experts: drop it so it holds no parameters
        self.backbone.imnet = None
        self.imnet_in_dim = self.backbone.imnet_in_dim
        self.experts = ExpertSet(self.imnet_in_dim, out_dim, hidden_lists)
        feat_dim = self._feature_channels()
        self.mapper = Mapper(feat_dim, len(self.experts), **mapper_cfg)
        self.router = Router(**{k: v for k, v in routing_cfg.items() if k != "routing_knob"})
        self.routing_knob = float(routing_cfg["routing_knob"])
        self.spec = {
            "name": "moeisr",
            "args": {
                "backbone_spec": copy.deepcopy(getattr(self.backbone, "spec", backbone_spec)),
                "experts": self.experts.hidden_lists,
                "mapper": mapper_cfg,
                "routing": routing_cfg,
            },
        }

    def _feature_channels(self) -> int:
        encoder = getattr(self.backbone, "encoder", None)
        if encoder is not None and hasattr(encoder, "out_dim"):
            return int(encoder.out_dim)
        with torch.no_grad():  # fall back to probing a tiny image
            return int(self.backbone.encode(torch.zeros(1, 3, 4, 4))["feat"].shape[1])

    # ---- knobs -------------------------------------------------------------------------------------

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def set_routing_knob(self, value: float) -> None:
        """Set the inference routing knob: 0 plain argmax, >0 cheaper, <0 dearer, ±inf all cheapest / deepest."""
        value = float(value)
        if math.isnan(value):
            raise UserError("routing_knob is NaN; use a float, +inf (all cheapest) or -inf (all deepest)")
        self.routing_knob = value

    def set_tau(self, tau: float) -> None:
        """Set the Gumbel-Softmax temperature used in training mode (e.g. for annealing)."""
        if not tau > 0:
            raise UserError(f"Gumbel temperature tau={tau} must be > 0")
        self.router.tau = float(tau)

    # ---- encode / query ----------------------------------------------------------------------------

    def encode(self, lr: torch.Tensor) -> Features:
        """lr B×3×h×w in [0, 1] → the backbone's features plus "moe_logits" B×J×h×w (unless use_cell)."""
        features = dict(self.backbone.encode(lr))
        if not self.mapper.use_cell:
            features["moe_logits"] = self.mapper(features["feat"])
        return features

    def _lr_logits(self, features: Mapping[str, torch.Tensor], cell: torch.Tensor) -> torch.Tensor:
        if not self.mapper.use_cell:
            return features["moe_logits"]
        feat = features["feat"]
        scale = relative_scale(cell, feat.shape[-2:])
        cached = features.get("moe_logits_scale")
        if cached is None or cached.shape != scale.shape or not torch.equal(cached, scale):
            if not isinstance(features, dict):
                return self.mapper(feat, scale)
            features["moe_logits"] = self.mapper(feat, scale)  # cache: one scale per image in upscale
            features["moe_logits_scale"] = scale
        return features["moe_logits"]

    def query_logits(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor
    ) -> torch.Tensor:
        """Mapper logits at the queries: coord, cell B×Q×2 → B×Q×J."""
        return sample_logits(self._lr_logits(features, cell), coord)

    def query_with_info(
        self,
        features: Mapping[str, torch.Tensor],
        coord: torch.Tensor,
        cell: torch.Tensor,
        routing_knob: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, RoutingInfo]:
        """Decode B×Q×2 queries → (B×Q×3 RGB in the [0, 1] range, not clamped; RoutingInfo).

        Training mode: Gumbel (from `generator` or the global RNG) + dense mixture; eval mode: knob
        argmax + sparse dispatch (`routing_knob` overrides `self.routing_knob` for this call).
        """
        logits = self.query_logits(features, coord, cell)
        knob = self.routing_knob if routing_knob is None else float(routing_knob)
        costs = self.experts.relative_costs(device=logits.device)
        # the executed path skips the eval softmax nobody reads (the published one keeps it for FLOPs counts)
        eval_probs = not self.backbone.uses_executed_path()
        info = self.router.route(logits, costs, self.training, knob, generator, eval_probs=eval_probs)

        keep = [] if self.training and self.router.expert_loss_weight else None

        def decode(x: torch.Tensor) -> torch.Tensor:
            return self.router.dispatch(self.experts, x, info, keep)

        decode.accepts_inference_inputs = True  # the experts take the "as executed" inputs (docs/speed.md)

        pred = self.backbone.query(features, coord, cell, mlp=decode)
        if keep:
            # each expert's own prediction: the backbone's ensemble blend of that expert's outputs (the backbone
            # calls its mlp once per query, so the kept outputs stand in for it without running the expert again)
            info.expert_preds = torch.stack(
                [self.backbone.query(features, coord, cell, mlp=lambda x, out=out: out) for out in keep]
            )
        return pred, info

    def query(
        self,
        features: Mapping[str, torch.Tensor],
        coord: torch.Tensor,
        cell: torch.Tensor,
        mlp: Decoder | None = None,
        routing_knob: float | None = None,
    ) -> torch.Tensor:
        """coord, cell B×Q×2 → B×Q×3 RGB (see `query_with_info`). `mlp` is not supported: the experts decode."""
        if mlp is not None:
            raise ValueError("MoEISR decodes with its experts; query(..., mlp=...) is not supported")
        return self.query_with_info(features, coord, cell, routing_knob=routing_knob)[0]

    def forward_train(
        self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, RoutingInfo]:
        """Training entry point: lr B×3×h×w, coord/cell B×Q×2 → (pred B×Q×3, RoutingInfo for `aux_loss`)."""
        return self.query_with_info(self.encode(lr), coord, cell, generator=generator)

    def aux_loss(self, info: RoutingInfo) -> torch.Tensor:
        """The routing loss to add to the reconstruction loss: balance_weight·balance + cost_weight·cost."""
        return self.router.aux_loss(info)

    # ---- whole images ------------------------------------------------------------------------------

    def upscale(
        self, lr: torch.Tensor, size: tuple[int, int], *, routing_knob: float | None = None, **options
    ) -> torch.Tensor:
        """`ImplicitSR.upscale` (lr B×3×h×w in [0, 1] → B×3×H×W in [0, 1]) with an optional per-call routing knob.

        options: chunk_size, progress, cell_clamp, precision, as in `moeisr.models.base.upscale`.
        Call `model.eval()` first: in training mode the routing is a random Gumbel sample.
        """
        target = self if routing_knob is None else _WithKnob(self, float(routing_knob))
        return upscale(target, lr, size, **options)

    def _grid_logits(self, lr: torch.Tensor, size: tuple[int, int], chunk_size: int, cell_clamp: float | None):
        """Yield (start, stop, B×n×J logits) over the raster-ordered output grid, with `upscale`'s coords and cells."""
        B, _, h, w = lr.shape
        H, W = int(size[0]), int(size[1])
        fh, fw = cell_scale_factors((h, w), (H, W), cell_clamp)
        device, dtype = lr.device, lr.dtype
        features = self.encode(lr)
        rows = make_coord((H,), device=device, dtype=dtype)[:, 0]
        cols = make_coord((W,), device=device, dtype=dtype)[:, 0]
        cell_value = torch.tensor([2.0 / H, 2.0 / W], dtype=dtype, device=device)
        cell_value = cell_value * torch.tensor([fh, fw], dtype=dtype, device=device)
        for start in range(0, H * W, chunk_size):
            stop = min(start + chunk_size, H * W)
            index = torch.arange(start, stop, device=device)
            coord = torch.stack((rows[index // W], cols[index % W]), dim=-1).unsqueeze(0).expand(B, -1, -1)
            yield start, stop, self.query_logits(features, coord, cell_value.expand(B, stop - start, 2))

    def expert_map(
        self,
        lr: torch.Tensor,
        size: tuple[int, int],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        cell_clamp: float | None = None,
        routing_knob: float | None = None,
    ) -> torch.Tensor:
        """The eval-mode expert of every output pixel: lr B×3×h×w, size (H, W) → B×H×W int64 in [0, J).

        Uses the deterministic knob-argmax rule whatever the module's mode, with the same coordinates
        and cells as `upscale`, so it is exactly the routing `upscale` uses in eval mode.
        """
        knob = self.routing_knob if routing_knob is None else float(routing_knob)
        costs = self.experts.relative_costs(device=lr.device)
        out = torch.empty(lr.shape[0], int(size[0]) * int(size[1]), dtype=torch.int64, device=lr.device)
        with torch.inference_mode():
            for start, stop, logits in self._grid_logits(lr, size, chunk_size, cell_clamp):
                out[:, start:stop] = knob_assign(logits, costs, knob)
        return out.view(lr.shape[0], int(size[0]), int(size[1]))

    def knob_for_budget(
        self,
        lr: torch.Tensor,
        size: tuple[int, int],
        budget: float,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        cell_clamp: float | None = None,
    ) -> float:
        """The smallest routing knob whose decoder MACs on this image are at most `budget` × the all-deepest MACs.

        budget in [c_min/c_max, 1]; exact for this (lr, size) because the cost is monotone in the knob.
        """
        with torch.inference_mode():
            logits = torch.cat([chunk for _, _, chunk in self._grid_logits(lr, size, chunk_size, cell_clamp)], dim=1)
        return knob_for_budget(logits, self.experts.relative_costs(device=lr.device), float(budget))

    # ---- cost accounting ---------------------------------------------------------------------------

    def ensemble_size(self) -> int:
        """K, the decoder inputs per query (4 with LIIF/LTE local ensemble), found by probing the backbone."""
        seen = []

        def probe(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[2])
            return x.new_zeros(*x.shape[:-1], self.experts.out_dim)

        param = next(self.parameters())
        with torch.no_grad():
            feats = self.backbone.encode(torch.zeros(1, 3, 2, 2, device=param.device, dtype=param.dtype))
            coord = torch.zeros(1, 1, 2, device=param.device, dtype=param.dtype)
            self.backbone.query(feats, coord, torch.ones_like(coord), mlp=probe)
        return int(seen[0])

    def decoder_macs(self, expert_map: torch.Tensor, ensemble: int | None = None) -> int:
        """Exact MLP MACs of decoding the pixels of `expert_map` (any shape, int64): Σ_q K · macs(expert(q))."""
        k = self.ensemble_size() if ensemble is None else int(ensemble)
        return routed_macs(expert_map, self.experts.macs_per_input, k)

    def mapper_macs(self, lr_size: tuple[int, int]) -> int:
        """Mapper conv MACs for one LR image of lr_size (h, w) (once per image, or per scale with use_cell)."""
        return self.mapper.macs_per_lr_pixel() * int(lr_size[0]) * int(lr_size[1])


class _WithKnob:
    """A view of a MoEISR model whose queries use a fixed routing knob (for the generic `upscale`)."""

    def __init__(self, model: MoEISR, knob: float):
        self.model, self.knob = model, knob

    def encode(self, lr: torch.Tensor) -> Features:
        return self.model.encode(lr)

    def query(self, features, coord, cell):
        return self.model.query(features, coord, cell, routing_knob=self.knob)


def _backbone_from(source: Any) -> nn.Module:
    if isinstance(source, nn.Module):
        return source
    raise UserError(
        f"init_from_backbone needs a LIIF/LTE model (load a checkpoint with moeisr.load_model), got "
        f"{type(source).__name__}"
    )


def init_from_backbone(
    moe_model: MoEISR,
    backbone: nn.Module,
    freeze_encoder: bool = False,
    target_expert: int | None = None,
) -> MoEISR:
    """Initialise `moe_model` from a trained backbone model (`moeisr.load_model(path)` loads one), in place.

    Copies the encoder and every other pre-MLP parameter and buffer (e.g. LTE's coef/freq/phase) into
    `moe_model.backbone`, and the backbone MLP into expert `target_expert` (default: the most expensive,
    J-1). Shapes must match exactly, else UserError. The other experts and the mapper keep their fresh
    initialisation. `freeze_encoder` sets requires_grad=False on `moe_model.backbone.encoder` (not saved in
    checkpoints: call again when resuming). Returns `moe_model`.
    """
    source = _backbone_from(backbone)
    name = getattr(backbone, "name", None) or getattr(source, "spec", {}).get("name", type(source).__name__)
    if getattr(source, "imnet", None) is None:
        raise UserError(f"{name}: the backbone has no decoder MLP (imnet) to copy; is it a LIIF/LTE model?")
    src_state = {k: v for k, v in source.state_dict().items() if not k.startswith("imnet.")}
    dst_state = moe_model.backbone.state_dict()
    missing, unexpected = sorted(set(dst_state) - set(src_state)), sorted(set(src_state) - set(dst_state))
    if missing or unexpected:
        raise UserError(
            f"{name} does not match the MoEISR backbone: missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "build MoEISR with the same backbone_spec as the checkpoint"
        )
    bad = [k for k in src_state if src_state[k].shape != dst_state[k].shape]
    if bad:
        k = bad[0]
        raise UserError(
            f"{name}: {k} has shape {tuple(src_state[k].shape)}, the MoEISR backbone {tuple(dst_state[k].shape)}; "
            "build MoEISR with the same backbone_spec as the checkpoint"
        )
    index = moe_model.n_experts - 1 if target_expert is None else int(target_expert)
    if not 0 <= index < moe_model.n_experts:
        raise UserError(f"target_expert={target_expert} is out of range for {moe_model.n_experts} experts")
    src_layers, dst_layers = linear_layers(source.imnet), linear_layers(moe_model.experts[index])
    src_shapes = [tuple(layer.weight.shape) for layer in src_layers]
    dst_shapes = [tuple(layer.weight.shape) for layer in dst_layers]
    if src_shapes != dst_shapes:
        raise UserError(
            f"{name}: the backbone MLP (hidden {mlp_hidden_list(source.imnet)}) does not fit expert {index} "
            f"(hidden {moe_model.experts[index].hidden_list}); make the most expensive expert equal the backbone MLP "
            "or pass target_expert"
        )
    with torch.no_grad():
        moe_model.backbone.load_state_dict(src_state, strict=True)
        if any((s.bias is None) != (d.bias is None) for s, d in zip(src_layers, dst_layers, strict=True)):
            raise UserError(f"{name}: the backbone MLP and expert {index} disagree on biases")
        copy_linear_layers(src_layers, dst_layers)
    if freeze_encoder:
        encoder = getattr(moe_model.backbone, "encoder", None)
        if encoder is None:
            raise UserError("freeze_encoder: this backbone has no `encoder` submodule")
        encoder.requires_grad_(False)
    return moe_model
