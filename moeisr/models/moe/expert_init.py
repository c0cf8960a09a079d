"""Initialising the cheaper experts from the backbone MLP (our reconstruction; docs/moeisr.md §6).

`random` (the default) leaves every expert but the deepest at its fresh initialisation. `prefix` copies the
backbone MLP's first k hidden layers into an expert whose hidden list is those k widths (the depth family), so
that each expert starts as a truncated backbone; its output layer stays random. `prefix_lstsq` also fits that
output layer by least squares so that the expert reproduces the backbone's own outputs on decoder inputs the
backbone produced on training patches (no ground truth is used): with H the expert's last hidden activations and
Y the backbone MLP's outputs, W = argmin ‖[H 1] W − Y‖². The prefix and least-squares code is shared with the dense
baselines' init (`moeisr.models.prefix_init`).
"""

from __future__ import annotations

import torch
from torch import nn

from moeisr.errors import UserError
from moeisr.models.moe.experts import copy_linear_layers, linear_layers
from moeisr.models.prefix_init import PREFIX_INITS, decoder_inputs, fit_output_layer, prefix_activations

EXPERT_INITS = PREFIX_INITS
__all__ = ["EXPERT_INITS", "decoder_inputs", "init_experts_from_prefix"]


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
            targets = backbone.imnet(fit_inputs)
            # hiddens[k]: the activations after the backbone's first k hidden layers
            hiddens = prefix_activations(source, fit_inputs, len(widths))
        for index in range(moe_model.n_experts - 1):
            hidden = list(moe_model.experts[index].hidden_list)
            if hidden != widths[: len(hidden)]:
                continue
            layers = linear_layers(moe_model.experts[index])
            copy_linear_layers(source[: len(hidden)], layers[:-1])
            if method == "prefix_lstsq":
                fit_output_layer(layers[-1], hiddens[len(hidden)], targets)
            done.append(index)
    return done
