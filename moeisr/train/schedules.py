"""Learning-rate schedules: linear warm-up, then `step`, `cosine` or `constant`, as a pure function of the step.

The rate is recomputed from the step count before every optimiser step, so resuming needs nothing but
the step (the scheduler state in a checkpoint is only a record of it):

- warm-up: for step < warmup_steps, lr * (step + 1) / warmup_steps (the first step is never at lr 0);
- `constant`: lr;
- `step`: lr * gamma ** (number of milestones <= step); milestones count from step 0, warm-up included;
- `cosine`: min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2 with t = (step - warmup) / (max_steps - warmup),
  so the rate reaches min_lr at max_steps;
- per module group (`param_groups`): lr × `optim.lr_scale[group]`, and 0 for the encoder group while
  step < `optim.freeze_encoder_steps`;
- `cosine_restarts`: the same cosine with t = ((step - warmup) mod cycle_steps) / cycle_steps, so the
  rate falls to min_lr over each cycle and restarts at lr (SGDR without cycle growth).

`step` is the number of optimiser steps already taken (0 for the first).
"""

from __future__ import annotations

import bisect
import math

import torch

from moeisr.config import OptimSpec


def lr_at(optim: OptimSpec, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based) under `optim` (module docstring)."""
    base, schedule, warmup = optim.lr, optim.schedule, optim.warmup_steps
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule.name == "constant":
        return base
    if schedule.name == "step":
        return base * schedule.gamma ** bisect.bisect_right(schedule.milestones, step)
    if schedule.name == "cosine":
        t = min(max((step - warmup) / max(optim.max_steps - warmup, 1), 0.0), 1.0)
        return schedule.min_lr + (base - schedule.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule.name == "cosine_restarts":
        t = ((step - warmup) % schedule.cycle_steps) / schedule.cycle_steps
        return schedule.min_lr + (base - schedule.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule.name!r}")


MODULE_GROUPS = ("encoder", "mapper", "experts", "other")


def module_group(name: str) -> str:
    """The lr group of a parameter name: encoder (the backbone CNN), mapper, experts (decoder MLPs), other."""
    parts = name.split(".")
    if "encoder" in parts:
        return "encoder"
    if parts[0] == "mapper":
        return "mapper"
    if parts[0] in ("experts", "imnet") or "imnet" in parts:
        return "experts"
    return "other"


def param_groups(model: torch.nn.Module, optim: OptimSpec) -> list[dict]:
    """The optimiser's parameter groups: one group (all trainable parameters) unless `optim.lr_scale` or
    `optim.freeze_encoder_steps` is set, then one per module group present, each with its `lr_scale`."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not optim.lr_scale and not optim.freeze_encoder_steps:
        return [{"params": [p for _, p in named], "lr_scale": 1.0, "group": "all"}]
    groups = []
    for group in MODULE_GROUPS:
        params = [p for n, p in named if module_group(n) == group]
        if params:
            groups.append({"params": params, "lr_scale": float(optim.lr_scale.get(group, 1.0)), "group": group})
    return groups


class LRSchedule:
    """Sets the optimiser's learning rate from `lr_at` before each step; its state is just the step."""

    def __init__(self, optimizer: torch.optim.Optimizer, optim: OptimSpec):
        self.optimizer = optimizer
        self.optim = optim
        self.step = 0
        self.lr = lr_at(optim, 0)

    def apply(self, step: int) -> float:
        """Set every parameter group's lr for optimiser step `step` (0-based); returns it."""
        self.step = int(step)
        self.lr = lr_at(self.optim, self.step)
        frozen = self.step < self.optim.freeze_encoder_steps
        for group in self.optimizer.param_groups:
            scale = 0.0 if frozen and group.get("group") == "encoder" else group.get("lr_scale", 1.0)
            group["lr"] = self.lr * scale
        return self.lr

    def state_dict(self) -> dict:
        return {"name": self.optim.schedule.name, "step": self.step, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.apply(int(state["step"]))
