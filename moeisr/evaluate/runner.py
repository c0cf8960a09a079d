"""The evaluation grid runner: models × sets × images × scales × knobs → tidy rows in a `ResultsCache`.

Each row is computed once: the runner asks the cache which keys are missing and appends every finished
image immediately, so an interrupted run loses at most the image in flight and a re-run only computes
what is missing.

Protocol (version `PROTOCOL_VERSION`; bump it whenever a change would alter any number):
- LR: `moeisr.data.degrade.degrade` (integer scales: MATLAB bicubic of the HR cropped to a multiple of the
  scale, 8-bit; other scales: LIIF's crop rule), the ground truth is the matching HR crop;
- SR: the model's `upscale` (clamped to [0, 1], never rounded), or MATLAB bicubic for `bicubic`; LTE and
  MoEISR over LTE decode with the cell clamped to the x4 cell above x4, as LTE's own test code does
  (`protocol_cell_clamp`); LIIF keeps the true cell, as LIIF's does;
- metrics: `psnr`/`ssim` with `protocol` ("benchmark": Y, shave = scale), LPIPS(alex) on RGB.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from moeisr.data.benchmark import list_images
from moeisr.data.degrade import degrade, upscale_bicubic
from moeisr.data.images import load_image
from moeisr.evaluate.cache import (
    BICUBIC_HASH,
    SHARE_PREFIX,
    CacheKey,
    ResultsCache,
    ckpt_hash,
    dataset_label,
    image_hash,
    knob_label,
    make_key,
)
from moeisr.metrics import psnr, ssim
from moeisr.models.base import compute_knob
from moeisr.provenance import current_commit

PROTOCOL_VERSION = 2  # 2: LTE-family models decode with LTE's cell clamp (rows of LIIF and bicubic are unchanged)

# LTE's test code enlarges the cell of scales above its training maximum to that maximum's cell.
LTE_CELL_CLAMP = 4.0

# A FLOPs callable: (model, lr 1×3×h×w, scale, routing knob) -> (FLOPs, expert shares or None);
# see moeisr.flops.per_image.PerImageFlops.
FlopsFn = Callable[[torch.nn.Module, torch.Tensor, float, float | None], tuple[float, list[float] | None]]


@dataclass
class ModelEntry:
    """One model to evaluate: `name` fills the `model` column; `model` is None for the bicubic baseline."""

    name: str
    model: torch.nn.Module | None
    ckpt_hash: str
    run_id: str = ""
    profile: str = ""
    cell_clamp: float | None = None  # the protocol's cell clamp for this model (`protocol_cell_clamp`)

    @property
    def has_knob(self) -> bool:
        """Whether the model has an inference compute knob (`moeisr.models.base.compute_knob`)."""
        return compute_knob(self.model) is not None


def bicubic_entry() -> ModelEntry:
    return ModelEntry(name="bicubic", model=None, ckpt_hash=BICUBIC_HASH)


def protocol_cell_clamp(model: torch.nn.Module | None) -> float | None:
    """The cell clamp the protocol decodes `model` with: `LTE_CELL_CLAMP` for LTE (also as a MoEISR backbone)."""
    backbone = getattr(model, "backbone", model)
    name = (getattr(backbone, "spec", None) or {}).get("name")
    return LTE_CELL_CLAMP if name == "lte" else None


def checkpoint_entry(path: str | Path, name: str | None = None, device: str = "cpu") -> ModelEntry:
    """Load a checkpoint (ours or official) for evaluation; the name defaults to the run's experiment name."""
    from moeisr.models.checkpoint import load_model, read_checkpoint

    path = Path(path)
    meta = read_checkpoint(path).get("meta") or {}
    model = load_model(path, map_location=device)
    return ModelEntry(
        name=name or meta.get("experiment") or path.parent.name or path.stem,
        model=model,
        ckpt_hash=ckpt_hash(path),
        run_id=str(meta.get("run_id") or path.parent.name),
        profile=str(meta.get("profile") or ""),
        cell_clamp=protocol_cell_clamp(model),
    )


@dataclass
class Grid:
    """What to evaluate. `limit` is a per-set image count (None = all)."""

    sets: Sequence[str]
    scales: Sequence[float]
    knobs: Sequence[float | None] = (None,)
    limit: dict[str, int] = field(default_factory=dict)
    protocol: str = "benchmark"
    precision: str = "fp32"  # the decoders' numeric precision (`upscale(..., precision=)`)

    def __post_init__(self):
        self.sets = [dataset_label(s) for s in self.sets]
        self.limit = {dataset_label(s): n for s, n in self.limit.items()}


GridItem = tuple[ModelEntry, str, Path, float, float | str | None]  # (entry, set, HR file, scale, knob)


def grid_items(
    entries: Sequence[ModelEntry], grid: Grid, root: str | Path | None = None, knobs: dict | None = None
) -> list[GridItem]:
    """Every (entry, set, HR file, scale, knob) of the grid, in the order `evaluate` visits them.

    knobs: entry name -> the knob labels to visit for that entry (default: the grid's knobs for a model with
    a compute knob, the default routing otherwise).
    """
    images = {s: list_images(s, root, grid.limit.get(s)) for s in grid.sets}
    return [
        (entry, dataset, path, float(scale), knob)
        for entry in entries
        for dataset in grid.sets
        for path in images[dataset]
        for scale in grid.scales
        for knob in ((knobs or {}).get(entry.name) or (grid.knobs if entry.has_knob else (None,)))
    ]


def item_key(item: GridItem, grid: Grid) -> CacheKey:
    """The cache key of one grid item (hashes the HR file's content, memoised)."""
    entry, dataset, path, scale, knob = item
    return make_key(
        entry.ckpt_hash,
        dataset,
        path.stem,
        image_hash(path),
        scale,
        knob,
        grid.protocol,
        PROTOCOL_VERSION,
        grid.precision,
    )


def grid_keys(entries: Sequence[ModelEntry], grid: Grid, root: str | Path | None = None, knobs=None) -> list[CacheKey]:
    """The cache keys of a grid, in the order `evaluate` visits them."""
    return [item_key(item, grid) for item in grid_items(entries, grid, root, knobs)]


def requested_metrics(entry: ModelEntry, with_lpips: bool, with_flops: bool) -> tuple[str, ...]:
    """The metric columns a row of `entry` must hold to be reused from the cache."""
    return ("psnr", "ssim", *(("lpips",) if with_lpips else ()), *(("gflops",) if with_flops and entry.model else ()))


def super_resolve(
    entry: ModelEntry,
    lr: torch.Tensor,
    size: tuple[int, int],
    knob: float | None,
    chunk_size: int,
    precision: str = "fp32",
):
    """SR of 1×3×h×w `lr` to `size` in [0, 1] with the entry's model (or bicubic)."""
    if entry.model is None:
        return upscale_bicubic(lr, size).clamp(0, 1)
    kwargs = {compute_knob(entry.model): knob} if entry.has_knob and knob is not None else {}
    if precision != "fp32":
        kwargs["precision"] = precision
    return entry.model.upscale(lr, size, chunk_size=chunk_size, cell_clamp=entry.cell_clamp, **kwargs)


def evaluate(
    entries: Sequence[ModelEntry],
    grid: Grid,
    cache: ResultsCache,
    *,
    device: str = "cpu",
    root: str | Path | None = None,
    with_lpips: bool = True,
    flops_fn: FlopsFn | None = None,
    chunk_size: int = 32768,
    progress: bool = True,
    commit: str | None = None,
    computed: set | None = None,
) -> tuple[list, int]:
    """Compute every missing row of the grid and append it to `cache`.

    Returns (the grid's cache keys, in grid order; the number of rows computed now). `computed`, if a set,
    receives the keys of the rows computed now.
    """
    todo = grid_items(entries, grid, root)
    keys = [item_key(item, grid) for item in todo]
    by_metrics: dict[tuple[str, ...], list] = {}  # one cache lookup per metric set (bicubic has no FLOPs)
    for item, key in zip(todo, keys, strict=True):
        by_metrics.setdefault(requested_metrics(item[0], with_lpips, flops_fn is not None), []).append(key)
    missing = {key for metrics, group in by_metrics.items() for key in cache.missing(group, metrics)}
    work = [item for item, key in zip(todo, keys, strict=True) if key in missing]
    if computed is not None:
        computed |= missing
    written = 0
    rows = compute_rows(
        work, grid, device=device, with_lpips=with_lpips, flops_fn=flops_fn, chunk_size=chunk_size,
        progress=progress, commit=commit or current_commit(), desc="eval",
    )  # fmt: skip
    for row in rows:
        written += cache.append([row])  # one row at a time: an interruption loses at most the image in flight
    return keys, written


def compute_rows(
    items: Sequence[GridItem],
    grid: Grid,
    *,
    device: str = "cpu",
    with_lpips: bool = True,
    flops_fn: FlopsFn | None = None,
    chunk_size: int = 32768,
    progress: bool = True,
    commit: str = "",
    desc: str = "eval",
):
    """Evaluate `items` (no cache involved), yielding one tidy row each, in order; each HR image is read once per
    run of consecutive items on it."""
    lpips_model = None
    if with_lpips:
        from moeisr.metrics import load_lpips

        lpips_model = load_lpips(device)
    hr_path, hr = None, None
    bar = tqdm(items, desc=desc, unit="img", disable=not progress)
    for entry, dataset, path, scale, knob in bar:
        bar.set_postfix_str(f"{entry.name} {dataset}/{path.stem} x{scale:g}")
        if path != hr_path:
            hr_path, hr = path, load_image(path)
        row = evaluate_one(
            entry,
            dataset,
            path.stem,
            hr,
            scale,
            knob,
            grid.protocol,
            device=device,
            lpips_model=lpips_model,
            flops_fn=flops_fn,
            chunk_size=chunk_size,
            image_hash=image_hash(path),
            precision=grid.precision,
        )
        row["commit"] = commit
        yield row


def evaluate_one(
    entry: ModelEntry,
    dataset: str,
    image: str,
    hr_full: torch.Tensor,
    scale: float,
    knob: float | None,
    protocol: str = "benchmark",
    *,
    device: str = "cpu",
    lpips_model=None,
    flops_fn: FlopsFn | None = None,
    chunk_size: int = 32768,
    image_hash: str,
    precision: str = "fp32",
) -> dict:
    """One tidy row for one image (3×H×W in [0, 1], its file's `image_hash`) at one scale and knob."""
    hr, lr = degrade(hr_full, scale)
    hr, lr = hr[None].to(device), lr[None].to(device)
    size = tuple(hr.shape[-2:])
    start = time.perf_counter()
    with torch.inference_mode():
        sr = super_resolve(entry, lr, size, knob, chunk_size, precision)
    seconds = time.perf_counter() - start
    row = {
        "model": entry.name,
        "run_id": entry.run_id,
        "ckpt_hash": entry.ckpt_hash,
        "dataset": dataset_label(dataset),
        "image": image,
        "image_hash": image_hash,
        "scale": float(scale),
        "knob": knob_label(knob),
        "protocol": protocol,
        "protocol_version": PROTOCOL_VERSION,
        "precision": precision,
        "psnr": float(psnr(sr, hr, scale, protocol)[0]),
        "ssim": float(ssim(sr, hr, scale, protocol)[0]),
        "lpips": float(lpips_model(sr, hr)[0]) if lpips_model is not None else math.nan,
        "gflops": math.nan,
        "seconds": seconds,
        "profile": entry.profile,
        "lr_h": lr.shape[-2],
        "lr_w": lr.shape[-1],
    }
    if flops_fn is not None and entry.model is not None:
        flops, shares = flops_fn(entry.model, lr, scale, knob)
        row["gflops"] = flops / 1e9
        for j, share in enumerate(shares or []):
            row[f"{SHARE_PREFIX}{j}"] = share
    return row


def parse_limits(values: Iterable[str], sets: Sequence[str]) -> dict[str, int]:
    """`["20"]` → the same limit for every set; `["Urban100=20", "B100=50"]` → per-set limits."""
    limits: dict[str, int] = {}
    for value in values:
        name, _, count = value.rpartition("=")
        for target in [name] if name else sets:
            limits[target] = int(count)
    return limits
