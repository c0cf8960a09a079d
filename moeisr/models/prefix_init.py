"""Starting a shallower decoder MLP from a deeper trained one (our reconstruction; docs/moeisr.md §6 and
docs/dense_baselines.md).

`prefix` copies the trained MLP's first k hidden layers into an MLP whose hidden list is those k widths; its
output layer keeps its fresh initialisation. `prefix_lstsq` also fits that output layer by least squares so that
the shallower MLP reproduces the trained MLP's own outputs on decoder inputs the trained model produced on training
patches (no ground truth is used): with H the last copied hidden activations and Y the trained MLP's outputs,
W = argmin ‖[H 1] W − Y‖².

Two users: MoEISR's cheaper experts (`moeisr.models.moe.expert_init`) and the dense baselines with a shallower
decoder than their `init_from` parent (`init_shallower_from_parent`: LIIF from LIIF, LTE from LTE).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from moeisr.errors import UserError
from moeisr.models.moe.experts import copy_linear_layers, linear_layers
from moeisr.registry import models

PREFIX_INITS = ("random", "prefix", "prefix_lstsq")


def decoder_inputs(
    backbone: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The backbone MLP's input vectors (N × imnet_in_dim) on `batches` of (inp B×3×h×w in [0, 1], coord B×Q×2,
    cell B×Q×2): every query point and local-ensemble shift, through the backbone's own `query(mlp=...)`."""
    captured: list[torch.Tensor] = []

    def capture(x: torch.Tensor) -> torch.Tensor:
        captured.append(x.reshape(-1, x.shape[-1]).detach())
        return backbone.imnet(x)

    with torch.no_grad():
        for inp, coord, cell in batches:
            backbone.query(backbone.encode(inp), coord, cell, mlp=capture)
    if not captured:
        raise UserError("prefix_lstsq needs at least one batch of training patches to fit on")
    return torch.cat(captured)


def prefix_activations(linears: Sequence[nn.Linear], inputs: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """[inputs, ReLU(layer 1), ..., after `depth` hidden layers] of the Linear/ReLU stack `linears` (no grad)."""
    hiddens = [inputs]
    with torch.no_grad():
        for layer in linears[:depth]:
            hiddens.append(torch.relu(layer(hiddens[-1])))
    return hiddens


def fit_output_layer(layer: nn.Linear, hidden: torch.Tensor, targets: torch.Tensor) -> None:
    """Set `layer` (with a bias) in place to the least-squares map of `hidden` (N × in) onto `targets` (N × out):
    W = argmin ‖[H 1] W − Y‖², solved in float64 (LAPACK gelsd, so a rank-deficient H is fine)."""
    with torch.no_grad():
        h = hidden.double()
        design = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype, device=h.device)], dim=1)
        solution = torch.linalg.lstsq(design, targets.double(), driver="gelsd").solution  # (in+1) × out
        layer.weight.copy_(solution[:-1].T.to(layer.weight.dtype))
        layer.bias.copy_(solution[-1].to(layer.bias.dtype))


# ------------------------------------------------------------------------------ dense shallower decoders


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def shallower_depth(model: nn.Module, parent: nn.Module, source: str = "parent") -> int:
    """The number of hidden layers of `model`'s decoder MLP when `model` is `parent` with a shallower MLP: the same
    family (LIIF/LTE) and encoder, every other argument equal, and the MLP's hidden list a proper prefix of the
    parent's (same widths, fewer layers). Otherwise UserError naming what differs."""
    name, parent_name = model.spec["name"], parent.spec["name"]
    if models.get(name) is not models.get(parent_name):
        raise UserError(
            f"{source}: its model is {parent_name!r}, this experiment's is {name!r}; a shallower decoder starts from "
            "a parent of the same family (LIIF from LIIF, LTE from LTE)"
        )
    args, parent_args = model.spec["args"], parent.spec["args"]
    for key in sorted(set(args) | set(parent_args), key=lambda k: (k != "encoder_spec", k)):
        if key != "imnet_spec" and args.get(key) != parent_args.get(key):
            what = "encoder (encoder_spec)" if key == "encoder_spec" else f"{key!r}"
            raise UserError(
                f"{source}: its {what} differs from this experiment's ({_short(parent_args.get(key))} vs "
                f"{_short(args.get(key))}); a shallower decoder keeps everything but the MLP's depth (train the "
                "parent with the same profile)"
            )
    imnet, parent_imnet = dict(args.get("imnet_spec") or {}), dict(parent_args.get("imnet_spec") or {})
    mlp_args, parent_mlp_args = dict(imnet.get("args") or {}), dict(parent_imnet.get("args") or {})
    hidden, parent_hidden = list(mlp_args.pop("hidden_list", [])), list(parent_mlp_args.pop("hidden_list", []))
    if imnet.get("name") != "mlp" or parent_imnet.get("name") != "mlp" or mlp_args != parent_mlp_args:
        raise UserError(
            f"{source}: its decoder ({_short(parent_imnet)}) and this experiment's ({_short(imnet)}) are not the same "
            "kind of MLP; only the hidden_list may differ"
        )
    if len(hidden) >= len(parent_hidden):
        if hidden == parent_hidden:
            raise UserError(f"{source}: its decoder MLP (hidden {hidden}) equals this experiment's; nothing to cut")
        raise UserError(
            f"{source}: this experiment's decoder MLP (hidden {hidden}) is not shallower than the parent's "
            f"(hidden {parent_hidden}); a dense model starts from a deeper parent by copying its first layers"
        )
    for i, (width, parent_width) in enumerate(zip(hidden, parent_hidden, strict=False)):
        if width != parent_width:
            raise UserError(
                f"{source}: hidden layer {i + 1} of this experiment's decoder MLP is {width} wide, the parent's "
                f"{parent_width}; the shallower MLP keeps the parent's widths (hidden {parent_hidden[: len(hidden)]})"
            )
    return len(hidden)


def init_shallower_from_parent(
    model: nn.Module,
    parent: nn.Module,
    method: str,
    fit_inputs: torch.Tensor | None = None,
    source: str = "parent",
) -> int:
    """Start `model`, `parent` with a shallower decoder MLP (`shallower_depth`), from the trained `parent`, in place:
    every parameter and buffer outside the MLP (the encoder, LTE's coef/freq/phase) copied exactly, the parent MLP's
    first d hidden layers copied, and the output layer by `method`: `prefix` keeps its fresh initialisation,
    `prefix_lstsq` fits it to the parent's outputs on `fit_inputs` (N × imnet_in_dim, `decoder_inputs`). Returns d.
    """
    if method not in ("prefix", "prefix_lstsq"):
        raise UserError(
            f"{source}: this experiment's decoder MLP is shallower than its parent's; set init.experts to prefix "
            f"(copy the parent's first hidden layers) or prefix_lstsq (and fit the output layer), not {method!r}"
        )
    depth = shallower_depth(model, parent, source)
    if method == "prefix_lstsq" and fit_inputs is None:
        raise UserError("init.experts prefix_lstsq needs decoder inputs from training patches to fit on")
    src_state = {k: v for k, v in parent.state_dict().items() if not k.startswith("imnet.")}
    dst_state = {k: v for k, v in model.state_dict().items() if not k.startswith("imnet.")}
    if src_state.keys() != dst_state.keys() or any(v.shape != dst_state[k].shape for k, v in src_state.items()):
        raise UserError(f"{source}: its weights outside the decoder MLP do not fit this experiment's model")
    source_layers, layers = linear_layers(parent.imnet), linear_layers(model.imnet)
    with torch.no_grad():
        for key, value in src_state.items():
            dst_state[key].copy_(value)
        copy_linear_layers(source_layers[:depth], layers[:-1])
        if method == "prefix_lstsq":
            targets = parent.imnet(fit_inputs)
            fit_output_layer(layers[-1], prefix_activations(source_layers, fit_inputs, depth)[depth], targets)
    return depth
