"""`moeisr speedups`: the measured wall-clock speed-up of each efficient model over its equal-budget backbone, per
cell of the main grid, with the bundled (trained) checkpoints (issue 21, item 4; issue 24).

For each reference of `SPEED_PAIRS` and each set × scale cell where it and its efficient models have default rows in
`<results>/main.csv`: one image (`moeisr.evaluate.speed.representative_image`, chosen on the first efficient model's
rows), its LR as the grid's protocol makes it, every model's full `upscale` of it timed alternately in this process
(`time_side_by_side`: warm-up, then `repeats` rounds, median). Each finished cell is appended to
`<results>/speedups.csv` at once, so an interrupted run resumes where it stopped (cells already measured with the
same checkpoints are skipped; `fresh` starts over).

A speed-up is only worth publishing from a quiet machine: the 1-minute load average before the run (`load_start`)
and after each cell (`load_1min`, which counts the run's own threads) are recorded with every row, and `max_load`
refuses to start above it.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from moeisr.artefacts import MAIN_CSV, RUN_FILE, SPEEDUPS_CSV
from moeisr.data.benchmark import list_images
from moeisr.data.degrade import degrade
from moeisr.data.images import load_image
from moeisr.errors import UserError
from moeisr.evaluate.cache import ckpt_hash
from moeisr.evaluate.recheck import read_rows_csv
from moeisr.evaluate.runner import checkpoint_entry, super_resolve
from moeisr.evaluate.speed import representative_image, time_side_by_side
from moeisr.provenance import cpu_name, current_commit

# (reference, its efficient models): the first model's rows choose each cell's image. Recipe v2's pairs (the report's
# headline) first, then recipe v1's MoEISR alone (one reference per model: the report keeps one row per model and
# cell); a pair without rows in main.csv is skipped.
SPEED_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("liif-equal-budget-v2", ("moeisr-liif-v2", "lm-liif")),
    ("lte-equal-budget-v2", ("moeisr-lte-v2", "lm-lte")),
    ("liif-equal-budget", ("moeisr-liif",)),
    ("lte-equal-budget", ("moeisr-lte",)),
)
REPEATS = 3
WARMUP = 1
CHUNK_SIZE = 32768  # the eval stage's query chunk, so the timed work is the evaluated work
COLUMNS = (
    *("reference", "model", "dataset", "scale", "image", "reference_seconds", "model_seconds", "speedup"),
    *("flops_ratio", "repeats", "reference_ckpt", "model_ckpt", "threads", "load_start", "load_1min", "cpu", "commit"),
)


def _default_rows(results: Path) -> pd.DataFrame:
    rows = read_rows_csv(results / MAIN_CSV)
    if rows is None:
        raise UserError(f"{results / MAIN_CSV}: no evaluated rows; run `moeisr reproduce` first")
    return rows[rows["knob"].astype(str) == "none"]


def _bundles(results: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """(model → its bundled checkpoint, model → encoder FLOPs per LR pixel), from run.json."""
    path = results / RUN_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; run `moeisr reproduce` first")
    run = json.loads(path.read_text(encoding="utf-8"))
    bundles = {e["model"]: results / e["checkpoint"] for e in run["experiments"] if e.get("checkpoint")}
    return bundles, run.get("encoder_flops_per_lr_pixel") or {}


def _measured(out: Path, fresh: bool) -> set[tuple]:
    """The (model, dataset, scale, model_ckpt, reference_ckpt) of the rows already in `out` (none with `fresh`)."""
    if fresh or not out.is_file():
        return set()
    rows = pd.read_csv(out, dtype={"model_ckpt": str, "reference_ckpt": str})
    keys = ("model", "dataset", "scale", "model_ckpt", "reference_ckpt")
    return set(zip(*(rows[k] for k in keys), strict=True))


def measure_speedups(
    results: str | Path = "results",
    *,
    repeats: int = REPEATS,
    sets: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    device: str = "cpu",
    fresh: bool = False,
    max_load: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Measure every missing cell into `<results>/speedups.csv` (module docstring) and return its path.

    sets/scales: restrict the cells (default: every cell of main.csv). max_load: UserError when the 1-minute load
    average is above it at the start (None: no check). UserError when main.csv, run.json or a bundle is missing, or
    a bundle is not the checkpoint main.csv's rows were evaluated with.
    """
    results = Path(results)
    rows, (bundles, encoder_flops) = _default_rows(results), _bundles(results)
    load = os.getloadavg()[0]
    if max_load is not None and load > max_load:
        raise UserError(f"1-minute load average {load:.2f} > {max_load:g}: the machine is busy; stop the other jobs "
                        "(or raise --max-load) before measuring speed")  # fmt: skip
    out = results / SPEEDUPS_CSV
    done = _measured(out, fresh)
    if fresh and out.exists():
        out.unlink()
    cells, hashes = [], {}
    wanted_scales = {float(s) for s in scales or ()}
    for reference, models in SPEED_PAIRS:
        present = [m for m in models if m in set(rows["model"]) and m in bundles]
        skipped = [m for m in models if m not in present]
        if skipped:
            log(f"[speedups] {', '.join(skipped)}: no evaluated rows or bundle; not measured")
        if not present or reference not in bundles:
            continue
        names = (reference, *present)
        hashes |= {m: ckpt_hash(bundles[m]) for m in names}
        for m in names:
            evaluated = set(rows.loc[rows["model"] == m, "ckpt_hash"].astype(str))
            if evaluated != {hashes[m]}:
                raise UserError(f"{bundles[m]}: hash {hashes[m]} is not the checkpoint {m}'s rows were evaluated "
                                f"with ({', '.join(sorted(evaluated))}); rerun `moeisr reproduce`")  # fmt: skip
        mine = rows[rows["model"].isin(names)]
        for (dataset, scale), cell in mine.groupby(["dataset", "scale"], sort=False):
            if (sets and dataset not in sets) or (scales and float(scale) not in wanted_scales):
                continue
            if set(cell["model"]) != set(names):
                continue
            if all((m, dataset, float(scale), hashes[m], hashes[reference]) in done for m in present):
                continue
            cells.append((reference, present, dataset, float(scale), cell))
    log(f"[speedups] {len(cells)} cells to measure, {repeats} rounds each ({device}, {torch.get_num_threads()} "
        f"threads, load {load:.2f}); writing {out}")  # fmt: skip
    entries, images = {}, {}
    commit, cpu = current_commit(), cpu_name()
    for reference, present, dataset, scale, cell in tqdm(cells, desc="speedups", unit="cell", disable=not progress):
        for m in (reference, *present):
            if m not in entries:
                entries[m] = checkpoint_entry(bundles[m], name=m, device=device)
        chooser = cell[cell["model"] == present[0]]
        image = representative_image(chooser, encoder_flops.get(present[0], 0.0))
        if dataset not in images:
            images[dataset] = {p.stem: p for p in list_images(dataset)}
        hr, lr = degrade(load_image(images[dataset][image]), scale)
        lr, size = lr[None].to(device), tuple(hr.shape[-2:])

        runs = {m: _upscaler(entries[m], lr, size, device) for m in (reference, *present)}
        seconds = time_side_by_side(runs, repeats, WARMUP)
        gflops = cell[cell["image"].astype(str) == image].set_index("model")["gflops"]
        load_now = os.getloadavg()[0]
        median = {m: statistics.median(t) for m, t in seconds.items()}
        lines = [
            {
                "reference": reference, "model": m, "dataset": dataset, "scale": scale, "image": image,
                "reference_seconds": round(median[reference], 4), "model_seconds": round(median[m], 4),
                "speedup": round(median[reference] / median[m], 3),
                "flops_ratio": round(float(gflops[reference] / gflops[m]), 3), "repeats": repeats,
                "reference_ckpt": hashes[reference], "model_ckpt": hashes[m],
                "threads": torch.get_num_threads(), "load_start": round(load, 2), "load_1min": round(load_now, 2),
                "cpu": cpu, "commit": commit,
            }
            for m in present
        ]  # fmt: skip
        pd.DataFrame(lines, columns=list(COLUMNS)).to_csv(out, mode="a", header=not out.exists(), index=False)
    return out


def _upscaler(entry, lr: torch.Tensor, size: tuple[int, int], device: str) -> Callable[[], None]:
    """One full SR of `lr` (1×3×h×w in [0, 1]) to `size` with the entry's model, as the eval stage runs it."""

    def once() -> None:
        with torch.inference_mode():
            super_resolve(entry, lr, size, None, CHUNK_SIZE)
        if device.startswith("cuda"):
            torch.cuda.synchronize()  # CUDA runs asynchronously: wait, so the timer sees the work

    return once
