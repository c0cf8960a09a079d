"""The reproduction check: recompute a fixed, stratified sample of cached rows from the checkpoints and compare.

A report built from an evaluation cache is only as trustworthy as the cache. `sample_items` picks, for every
(set, scale) cell of the checked scales, one image by a fixed seed, and takes that image for every main model,
so the sample covers each model × set × scale and its decodes share the HR image; other models get a fixed
small sample of their own rows. `recompute` evaluates those items afresh (never reading or writing the cache)
and `compare` puts each recomputed row beside the cached one: |ΔPSNR| in dB and |ΔGFLOPs| relative.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pandas as pd

from moeisr.errors import UserError
from moeisr.evaluate.runner import FlopsFn, Grid, GridItem, ModelEntry, compute_rows, grid_items
from moeisr.evaluate.tidy import MATCH_KEYS, MODEL_ORDER

SAMPLE_SEED = 0
CHECKED_SCALES = (2.0, 3.0, 4.0)  # the in-distribution cells every main model is checked on
OTHER_MODEL_ROWS = 3  # sampled rows of a model outside the main list
PSNR_TOLERANCE_DB = 0.01
GFLOPS_TOLERANCE = 1e-6  # relative: the counts are exact, so any difference is a changed model or path


def sample_items(
    entries: Sequence[ModelEntry],
    grid: Grid,
    main_models: Sequence[str],
    *,
    seed: int = SAMPLE_SEED,
    scales: Sequence[float] = CHECKED_SCALES,
    other_rows: int = OTHER_MODEL_ROWS,
    root=None,
) -> list[GridItem]:
    """The grid items to recompute (module docstring), in grid order; the same for the same grid and seed."""
    items = grid_items(entries, grid, root)
    rng = random.Random(seed)
    chosen = {}  # (set, scale) -> the stem of its sampled image
    for dataset in grid.sets:
        stems = sorted({path.stem for _, d, path, _, _ in items if d == dataset})
        for scale in grid.scales:
            if float(scale) in scales:
                chosen[(dataset, float(scale))] = rng.choice(stems)
    extra = set()  # indices into `items` of the other models' rows
    for entry in entries:
        if entry.name not in main_models:
            own = [i for i, item in enumerate(items) if item[0] is entry]
            extra |= set(random.Random(f"{seed}:{entry.name}").sample(own, min(other_rows, len(own))))
    return [
        (entry, dataset, path, scale, knob)
        for i, (entry, dataset, path, scale, knob) in enumerate(items)
        if i in extra or (entry.name in main_models and knob is None and chosen.get((dataset, scale)) == path.stem)
    ]


def recompute(
    items: Sequence[GridItem],
    grid: Grid,
    *,
    device: str = "cpu",
    flops_fn: FlopsFn | None = None,
    with_lpips: bool = True,
    progress: bool = True,
    commit: str = "",
) -> pd.DataFrame:
    """Evaluate `items` afresh (no cache involved): one tidy row each, as `evaluate` writes them."""
    rows = compute_rows(
        items, grid, device=device, with_lpips=with_lpips, flops_fn=flops_fn, progress=progress, commit=commit,
        desc="recheck",
    )  # fmt: skip
    return pd.DataFrame(list(rows))


MATCH = ["model", "ckpt_hash", "dataset", "image", "image_hash", "scale", "knob"]


def compare(recomputed: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Each recomputed row beside its reference row: columns MATCH, psnr, psnr_ref, dpsnr (dB), gflops,
    gflops_ref, rel_dgflops, within (|dpsnr| ≤ PSNR_TOLERANCE_DB and rel_dgflops ≤ GFLOPS_TOLERANCE).

    A recomputed row without a reference row has NaN reference values and within False.
    """
    if recomputed.empty:
        return pd.DataFrame(columns=[*MATCH, "psnr", "psnr_ref", "dpsnr", "gflops", "gflops_ref", "within"])
    ref = reference[[*MATCH, "psnr", "gflops"]].astype({"scale": float, "knob": str})
    new = recomputed[[*MATCH, "psnr", "gflops"]].astype({"scale": float, "knob": str})
    both = new.merge(ref, on=MATCH, how="left", suffixes=("", "_ref"))
    both["dpsnr"] = both["psnr"] - both["psnr_ref"]
    both["rel_dgflops"] = [
        0.0 if (math.isnan(a) and math.isnan(b)) else abs(a - b) / max(abs(b), 1e-12)
        for a, b in zip(both["gflops"], both["gflops_ref"], strict=True)
    ]
    both["within"] = (both["dpsnr"].abs() <= PSNR_TOLERANCE_DB) & (both["rel_dgflops"] <= GFLOPS_TOLERANCE)
    return both


def summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per model: rows recomputed, max |ΔPSNR| (dB), max relative |ΔGFLOPs|, rows outside the tolerance."""
    if comparison.empty:
        return pd.DataFrame(columns=["model", "recomputed", "max_abs_dpsnr", "max_rel_dgflops", "outside"])
    grouped = comparison.groupby("model", sort=False)
    return pd.DataFrame(
        {
            "recomputed": grouped.size(),
            "max_abs_dpsnr": grouped["dpsnr"].apply(lambda d: d.abs().max()),
            "max_rel_dgflops": grouped["rel_dgflops"].max(),
            "outside": grouped["within"].apply(lambda w: int((~w).sum())),
        }
    ).reset_index()


# ------------------------------------------------------------------- the eval stage against a previous main.csv


def read_rows_csv(path) -> pd.DataFrame | None:
    """A previously written main.csv (identifier columns read as text), or None if there is none."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    text_columns = {c: str for c in ("model", "run_id", "ckpt_hash", "config_hash", "dataset", "image", "knob")}
    try:
        return pd.read_csv(path, dtype=text_columns, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: cannot read the committed results ({exc}); move it away to regenerate it") from None


def _match_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["scale"] = out["scale"].astype(float)
    out["knob"] = out["knob"].astype(str)
    out["image"] = out["image"].astype(str)
    out["ckpt_hash"] = out["ckpt_hash"].astype(str)
    return out.drop_duplicates(subset=MATCH_KEYS, keep="last")


def _max_abs(values: pd.Series) -> float:
    values = values.abs().dropna()
    return float(values.max()) if len(values) else math.nan


def reproduction_check(committed: pd.DataFrame, recomputed: pd.DataFrame) -> pd.DataFrame:
    """Per model: how recomputed rows differ from committed ones, matched on (model, dataset, image, scale, knob).

    Columns: model, compared (rows in both), only_committed, only_recomputed, max_abs_dpsnr (dB), max_abs_dgflops,
    same_checkpoints (every compared row has the same ckpt_hash). NaN maxima when nothing was compared.
    """
    old, new = _match_frame(committed), _match_frame(recomputed)
    both = old.merge(new, on=MATCH_KEYS, suffixes=("_old", "_new"))
    models = [m for m in MODEL_ORDER if m in set(old["model"]) | set(new["model"])]
    models += sorted((set(old["model"]) | set(new["model"])) - set(models))
    rows = []
    for model in models:
        pair = both[both["model"] == model]
        keys_old = set(map(tuple, old.loc[old["model"] == model, MATCH_KEYS].to_numpy().tolist()))
        keys_new = set(map(tuple, new.loc[new["model"] == model, MATCH_KEYS].to_numpy().tolist()))
        rows.append(
            {
                "model": model,
                "compared": len(pair),
                "only_committed": len(keys_old - keys_new),
                "only_recomputed": len(keys_new - keys_old),
                "max_abs_dpsnr": _max_abs(pair["psnr_new"] - pair["psnr_old"]),
                "max_abs_dgflops": _max_abs(pair["gflops_new"] - pair["gflops_old"]),
                "same_checkpoints": bool(
                    (pair["ckpt_hash_old"].astype(str) == pair["ckpt_hash_new"].astype(str)).all()
                ),
            }
        )
    return pd.DataFrame(rows)
