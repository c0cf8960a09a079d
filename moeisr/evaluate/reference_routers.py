"""Evaluation of the ablations through the main job's runner and results cache.

- Rows and the knob sweep go through `moeisr.evaluate.runner.evaluate` unchanged (knob labels: "none" for the
  model's default routing, the float's repr for a knob, "inf"/"-inf" for all-cheapest/all-deepest).
- Oracle and random rows (`evaluate_reference_routers`) need every expert's output, so they have their own loop;
  each row is still made by the runner's `evaluate_one` (same degradation, metrics, LPIPS and row schema), fed the
  assembled SR image through a stand-in model. Their cache labels (`routers.oracle_label`, `routers.random_label`)
  keep them apart from knob rows. Their `seconds` is NaN: they are not a runnable model.
- FLOPs: `moeisr.flops.per_image.ArchitectureFlops` shares fvcore's all-cheapest counts between checkpoints of one
  architecture (the routing settings tau/λ do not change it); a given routing's FLOPs are that count plus
  Σ_j n_j (c_j − c_0) (`PerImageFlops.routed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm import tqdm

from moeisr.data.benchmark import list_images
from moeisr.data.degrade import degrade
from moeisr.data.images import load_image
from moeisr.evaluate.cache import ResultsCache, knob_label
from moeisr.evaluate.routers import (
    ORACLE_UNIT,
    assemble,
    derived_generator,
    expert_outputs,
    oracle_assign,
    oracle_label,
    random_assign,
    random_label,
)
from moeisr.evaluate.runner import Grid, ModelEntry, evaluate_one, item_key
from moeisr.flops.per_image import ArchitectureFlops


class _Routed(torch.nn.Module):
    """Stand-in for `evaluate_one`: returns a precomputed SR image and reports its routing's FLOPs."""

    def __init__(self, model, sr: torch.Tensor, assign: torch.Tensor):
        super().__init__()
        self.inner, self.sr, self.assign = model, sr, assign

    def expert_map(self, *args, **kwargs):  # marks the entry as MoE for the runner
        return self.assign

    def upscale(self, lr, size, chunk_size=None, routing_knob=None, cell_clamp=None):
        return self.sr


def reference_labels(knobs: Sequence[float | None], levels: Sequence[float], seeds: Sequence[int]) -> list[str]:
    """The cache labels of the oracle (one per ε level) and random rows (one per learned knob and seed).

    The random router takes the shares of the learned routing at each finite knob (±inf routes every pixel to one
    expert: random routing at those shares is the same routing)."""
    labels = [oracle_label(level) for level in levels]
    for knob in knobs:
        if knob is None or math.isfinite(knob):
            labels += [random_label(knob_label(knob), seed) for seed in seeds]
    return labels


def evaluate_reference_routers(
    entries: Sequence[ModelEntry],
    grid: Grid,
    knobs: dict[str, Sequence[float | None]],
    levels: Sequence[float],
    seeds: Sequence[int],
    cache: ResultsCache,
    flops: ArchitectureFlops,
    *,
    device: str = "cpu",
    lpips_model=None,
    progress: bool = True,
    commit: str = "unknown",
) -> int:
    """Compute the missing oracle and random rows of every (MoE entry, image, scale); returns how many were written.

    knobs: entry name → the learned knobs whose shares the random router copies (None = default routing).
    levels: the oracle's ε in 8-bit levels of the luma difference. All rows of one image and scale share one
    `expert_outputs` call; an image whose rows are all cached is skipped without decoding anything.
    """
    images = {s: list_images(s, limit=grid.limit.get(s)) for s in grid.sets}
    work = []
    for entry in entries:
        labels = reference_labels(knobs[entry.name], levels, seeds)
        for dataset in grid.sets:
            for path in images[dataset]:
                for scale in grid.scales:
                    keys = [item_key((entry, dataset, path, scale, x), grid) for x in labels]
                    missing = set(cache.missing(keys, ("psnr", "ssim", "gflops", *(("lpips",) if lpips_model else ()))))
                    todo = [lab for lab, key in zip(labels, keys, strict=True) if key in missing]
                    if todo:
                        work.append((entry, dataset, path, float(scale), todo, keys[0].image_hash))
    written = 0
    bar = tqdm(work, desc="oracle/random", unit="img", disable=not progress)
    for entry, dataset, path, scale, todo, hr_hash in bar:
        bar.set_postfix_str(f"{entry.name} {dataset}/{path.stem} x{scale:g}")
        hr_full = load_image(path)
        hr, lr = degrade(hr_full, scale)
        hr, lr = hr[None].to(device), lr[None].to(device)
        size = tuple(hr.shape[-2:])
        model = entry.model
        outputs = expert_outputs(model, lr, size, cell_clamp=entry.cell_clamp)
        rows = []
        for label in todo:
            assign = _assignment(model, label, outputs, hr, lr, size, (dataset, path.stem, scale))
            routed = _Routed(model, assemble(outputs, assign), assign)
            stand_in = ModelEntry(entry.name, routed, entry.ckpt_hash, entry.run_id, entry.profile, entry.cell_clamp)
            row = evaluate_one(
                stand_in,
                dataset,
                path.stem,
                hr_full,
                scale,
                label,
                grid.protocol,
                device=device,
                lpips_model=lpips_model,
                flops_fn=lambda m, x, s, k: flops.routed(m.inner, tuple(x.shape[-2:]), s, m.assign),
                image_hash=hr_hash,
                precision=grid.precision,
            )
            row.update(seconds=math.nan, commit=commit)
            rows.append(row)
        written += cache.append(rows)  # one image's rows at a time: an interruption loses at most one image
    return written


def _assignment(model, label: str, outputs, hr, lr, size, where) -> torch.Tensor:
    """The per-pixel routing a reference label stands for (see `routers.oracle_label` / `random_label`)."""
    kind, _, rest = label.partition(":")
    if kind == "oracle":
        level = float(rest.removeprefix("eps=").removesuffix("/255"))
        return oracle_assign(outputs, hr, level * ORACLE_UNIT)
    if kind == "random":
        fields = dict(part.split("=", 1) for part in rest.split(":"))
        knob = None if fields["shares-of"] == "none" else float(fields["shares-of"])
        with torch.inference_mode():
            learned = model.expert_map(lr, size, routing_knob=knob)
        counts = torch.bincount(learned.reshape(-1), minlength=model.n_experts).tolist()
        generator = derived_generator(fields["seed"], *where, fields["shares-of"])
        return random_assign(counts, tuple(learned.shape), generator)
    raise ValueError(f"not a reference-router label: {label!r}")
