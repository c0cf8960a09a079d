"""MoEISR: a mapper routes every output pixel to one of J decoder experts of different cost.

RECONSTRUCTION of "Balancing Efficiency and Quality: MoEISR for Arbitrary-Scale Image Super-Resolution"
(Oh, Kim, Nam, Kim); every design choice is a knob, see docs/moeisr.md.

Importing this package registers the `moeisr` model.
"""

from moeisr.models.moe.colors import colorize_expert_map, expert_colors, expert_shares, overlay_expert_map
from moeisr.models.moe.experts import ExpertMLP, ExpertSet, resolve_expert_hidden_lists
from moeisr.models.moe.mapper import Mapper, sample_logits
from moeisr.models.moe.moeisr import MoEISR, init_from_backbone
from moeisr.models.moe.routing import Router, RoutingInfo, balance_loss, cost_loss, knob_assign, sparse_dispatch

__all__ = [
    "ExpertMLP",
    "ExpertSet",
    "Mapper",
    "MoEISR",
    "Router",
    "RoutingInfo",
    "balance_loss",
    "colorize_expert_map",
    "cost_loss",
    "expert_colors",
    "expert_shares",
    "init_from_backbone",
    "knob_assign",
    "overlay_expert_map",
    "resolve_expert_hidden_lists",
    "sample_logits",
    "sparse_dispatch",
]
