"""Initialising the cheaper experts from the backbone MLP (our reconstruction; docs/moeisr.md §6).

`random` (the default) leaves every expert but the deepest at its fresh initialisation. `prefix` copies the
backbone MLP's first k hidden layers into an expert whose hidden list is those k widths (the depth family), so
that each expert starts as a truncated backbone; its output layer stays random. `prefix_lstsq` also fits that
output layer by least squares so that the expert reproduces the backbone's own outputs on decoder inputs the
backbone produced on training patches (no ground truth is used): with H the expert's last hidden activations and
Y the backbone MLP's outputs, W = argmin ‖[H 1] W − Y‖².
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from moeisr.errors import UserError
from moeisr.models.moe.experts import copy_linear_layers, linear_layers

EXPERT_INITS = ("random", "prefix", "prefix_lstsq")


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


def init_experts_from_prefix(
    moe_model: nn.Module, backbone: nn.Module, method: str, fit_inputs: torch.Tensor | None = None
) -> list[int]:
    """Initialise every expert but the deepest by `method` (module docstring); returns the indices it set.

    An expert is set when its hidden widths equal the first k of the backbone MLP's; others keep their
    initialisation. `fit_inputs` (N × imnet_in_dim, `decoder_inputs`) is required for `prefix_lstsq`.
    """
    if method not in EXPERT_INITS:
        raise UserError(f"expert_init must be one of {', '.join(EXPERT_INITS)}, got {method!r}")
    if method == "random":
        return []
    if method == "prefix_lstsq" and fit_inputs is None:
        raise UserError("expert_init prefix_lstsq needs decoder inputs from training patches to fit on")
    source = linear_layers(backbone.imnet)
    widths = [layer.out_features for layer in source[:-1]]
    done = []
    with torch.no_grad():
        if fit_inputs is not None:
            targets = backbone.imnet(fit_inputs).double()
            hiddens = [fit_inputs]  # hiddens[k]: the activations after the backbone's first k hidden layers
            for layer in source[:-1]:
                hiddens.append(torch.relu(layer(hiddens[-1])))
        for index in range(moe_model.n_experts - 1):
            hidden = list(moe_model.experts[index].hidden_list)
            if hidden != widths[: len(hidden)]:
                continue
            layers = linear_layers(moe_model.experts[index])
            copy_linear_layers(source[: len(hidden)], layers[:-1])
            if method == "prefix_lstsq":
                h = hiddens[len(hidden)].double()
                design = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)
                solution = torch.linalg.lstsq(design, targets, driver="gelsd").solution  # (k+1) × out
                layers[-1].weight.copy_(solution[:-1].T.to(layers[-1].weight.dtype))
                layers[-1].bias.copy_(solution[-1].to(layers[-1].bias.dtype))
            done.append(index)
    return done
