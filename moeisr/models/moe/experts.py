"""The experts: J decoder MLPs of different capacity that replace the backbone's single MLP.

RECONSTRUCTION NOTE: the MoEISR paper's full text is unavailable; the expert families below are our
reconstruction, every one a config knob (see docs/moeisr.md).

An expert has the same layout as LIIF's `MLP` (Linear, ReLU, ..., Linear in an `nn.Sequential` called
`layers`), so a backbone MLP can be copied into it layer by layer. It maps decoder inputs
(..., in_dim) to RGB residuals (..., out_dim) exactly like the MLP it replaces.

Experts are kept sorted by cost, ascending: expert 0 is the cheapest, expert J-1 the most expensive.
Cost is the closed-form multiply-accumulate count per decoder input, sum of in·out over the Linear
layers (biases and ReLUs are not counted, as in fvcore). A query of LIIF/LTE with local ensemble
feeds K=4 decoder inputs to its expert, so its cost is K times that.

Ways to write the `experts` config (all resolved by `resolve_expert_hidden_lists`):
- `None` or `"depth"`: prefixes of the backbone MLP's hidden list. LIIF ([256]*4) gives
  [256], [256]*2, [256]*3, [256]*4; LTE ([256]*3) gives [256], [256]*2, [256]*3.
- `"depth+linear"`: `"depth"` plus a cheapest expert with no hidden layer (one Linear from the decoder input to
  RGB): LTE's 3-layer MLP then gives 4 experts, as the paper's design names. OUR CHOICE for that fourth expert:
  the prefix family's natural next step down, and `init.experts: prefix_lstsq` fits it like the others.
- `"width"`: the backbone's depth at widths w/4, w/2, 3w/4, w (LIIF: [64]*4, [128]*4, [192]*4, [256]*4).
- an explicit list whose items are hidden lists (`[256, 256]`), `{"hidden_list": [...]}` or an MLP spec
  `{"name": "mlp", "args": {"hidden_list": [...]}}` (in/out dims always come from the backbone).
  E.g. the 4-expert LTE family documented in docs/moeisr.md: [[128], [256], [256, 256], [256, 256, 256]].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from moeisr.errors import UserError
from moeisr.models.mlp import InferenceInputs, as_inference_inputs, inference_forward

FAMILIES = ("depth", "depth+linear", "width")


class ExpertMLP(nn.Module):
    """One expert: Linear/ReLU stack with `hidden_list` hidden widths, LIIF's MLP layout.

    forward: x (..., in_dim) -> (..., out_dim), or `InferenceInputs` (the "as executed"
    inference path, see moeisr.models.mlp) -> (*lead, out_dim).
    """

    accepts_inference_inputs = True

    def __init__(self, in_dim: int, out_dim: int, hidden_list: Sequence[int]):
        super().__init__()
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.hidden_list = [int(h) for h in hidden_list]
        layers: list[nn.Module] = []
        last = self.in_dim
        for hidden in self.hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU()]
            last = hidden
        layers.append(nn.Linear(last, self.out_dim))
        self.layers = nn.Sequential(*layers)

    @property
    def macs_per_input(self) -> int:
        """Multiply-accumulates for one decoder input: sum of in·out over the Linear layers."""
        return linear_macs(self)

    def forward(self, x: torch.Tensor | InferenceInputs) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not (torch.is_grad_enabled() or torch.jit.is_tracing()):
            return inference_forward(linear_layers(self), as_inference_inputs(x))
        lead = x.shape[:-1]  # flattened like the backbone MLP, so an expert copied from it matches it bit for bit
        return self.layers(x.reshape(-1, x.shape[-1])).view(*lead, -1)

    def extra_repr(self) -> str:
        return f"hidden_list={self.hidden_list}, macs_per_input={self.macs_per_input}"


def linear_layers(module: nn.Module) -> list[nn.Linear]:
    """The nn.Linear layers of `module`, in registration (= forward, for Sequential MLPs) order."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def linear_macs(module: nn.Module) -> int:
    """Closed-form MACs per input row of an MLP: sum of in_features·out_features over its Linears."""
    return sum(layer.in_features * layer.out_features for layer in linear_layers(module))


def mlp_hidden_list(module: nn.Module) -> list[int]:
    """The hidden widths of a Linear/ReLU MLP (out_features of every Linear but the last)."""
    return [layer.out_features for layer in linear_layers(module)[:-1]]


def _hidden_list_of(item: Any) -> list[int]:
    if isinstance(item, dict):
        args = item.get("args", item)
        if "hidden_list" not in args:
            raise UserError(f"expert spec {item!r} has no 'hidden_list'; write e.g. {{'hidden_list': [256, 256]}}")
        item = args["hidden_list"]
    if not isinstance(item, (list, tuple)) or not all(isinstance(h, int) and h > 0 for h in item):
        raise UserError(f"expert hidden list {item!r} must be a list of positive integers, e.g. [256, 256]")
    return list(item)


def copy_linear_layers(source: Sequence[nn.Linear], target: Sequence[nn.Linear]) -> None:
    """Copy weights and biases layer by layer (call under torch.no_grad()); UserError when the two disagree on
    a layer's shape or on having a bias."""
    for src, dst in zip(source, target, strict=True):
        if src.weight.shape != dst.weight.shape or (src.bias is None) != (dst.bias is None):
            raise UserError(f"cannot copy a Linear {tuple(src.weight.shape)} into {tuple(dst.weight.shape)}")
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)


def resolve_expert_hidden_lists(experts: Any, backbone_hidden: Sequence[int]) -> list[list[int]]:
    """Turn the `experts` config into a list of hidden lists (unsorted; `ExpertSet` sorts).

    experts: None | "depth" | "width" | list of hidden lists / {"hidden_list": ...} / MLP specs.
    backbone_hidden: the backbone MLP's hidden widths, e.g. [256, 256, 256, 256] for LIIF.
    """
    backbone_hidden = list(backbone_hidden)
    if experts is None or experts in ("depth", "depth+linear"):
        if not backbone_hidden:
            raise UserError(f"the {experts or 'depth'!r} expert family needs a backbone MLP with a hidden layer")
        prefixes = [backbone_hidden[: i + 1] for i in range(len(backbone_hidden))]
        return ([[]] if experts == "depth+linear" else []) + prefixes
    if experts == "width":
        if not backbone_hidden:
            raise UserError("the 'width' expert family needs a backbone MLP with at least one hidden layer")
        depth, width = len(backbone_hidden), max(backbone_hidden)
        return [[max(1, width * q // 4)] * depth for q in (1, 2, 3, 4)]
    if isinstance(experts, str):
        raise UserError(f"unknown expert family {experts!r}; use one of {FAMILIES} or an explicit list of hidden lists")
    if not isinstance(experts, (list, tuple)) or len(experts) == 0:
        raise UserError(f"'experts' must be a family name or a non-empty list of hidden lists, got {experts!r}")
    return [_hidden_list_of(item) for item in experts]


class ExpertSet(nn.Module):
    """J experts sorted by ascending cost (stable: equal-cost experts keep their config order).

    Attributes:
      experts: nn.ModuleList of ExpertMLP; experts[0] is the cheapest, experts[-1] the most expensive.
      macs_per_input: list[int], MACs of each expert for one decoder input.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_lists: Sequence[Sequence[int]]):
        super().__init__()
        if len(hidden_lists) == 0:
            raise UserError("MoEISR needs at least one expert")
        built = [ExpertMLP(in_dim, out_dim, h) for h in hidden_lists]
        order = sorted(range(len(built)), key=lambda i: built[i].macs_per_input)
        self.experts = nn.ModuleList(built[i] for i in order)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def __len__(self) -> int:
        return len(self.experts)

    def __getitem__(self, index: int) -> ExpertMLP:
        return self.experts[index]

    def __iter__(self):
        return iter(self.experts)

    @property
    def hidden_lists(self) -> list[list[int]]:
        return [list(e.hidden_list) for e in self.experts]

    @property
    def macs_per_input(self) -> list[int]:
        return [e.macs_per_input for e in self.experts]

    def relative_costs(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """cost_j / cost_max as a (J,) tensor in (0, 1]; the routing knob scales these."""
        macs = torch.tensor(self.macs_per_input, device=device, dtype=dtype)
        return macs / macs.max()
