"""Markdown tables rendered from tidy result rows (one row per model, dataset, image, scale, knob).

Every comparison averages over the images that all compared models have (an inner join per image), so a
partially filled cache never compares means over different images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from moeisr.evaluate.tidy import (  # noqa: F401
    MATCH_KEYS,
    MODEL_ORDER,
    SET_ORDER,
    dataset_label,
    model_rank,
    replica_name,
    replica_of,
    sort_cells,
)
from moeisr.metrics.paired import paired_bootstrap
from moeisr.report.published import PUBLISHED_CSV, PublishedResult, bicubic_psnr, published_results

FLOPS_HEADER = "GFLOPs, fvcore: 1 MAC = 1 FLOP"
IMAGE_KEYS = ["dataset", "image", "scale"]


@dataclass(frozen=True)
class Family:
    """A backbone, the same backbone fine-tuned for the MoEISR budget, MoEISR over it, and LMF's counterpart of the
    backbone, on the same encoder (`model` column names). `recipe` names a MoEISR recipe kept beside the headline one
    ("recipe v1"; empty for the headline), `backbone_label` the backbone where it is not the plain `label`."""

    label: str
    backbone: str
    equal: str
    moe: str
    lmf: str | None = None
    dense: tuple[str, ...] = ()  # the backbone with shallower MLPs at MoEISR's budget (docs/dense_baselines.md)
    recipe: str = ""
    backbone_label: str = ""

    @property
    def frontier(self) -> tuple[str, ...]:
        """The dense frontier's models: the shallower dense decoders and the equal-budget backbone (full depth)."""
        return (*self.dense, self.equal)

    @property
    def _suffix(self) -> str:
        return f" ({self.recipe})" if self.recipe else ""

    @property
    def moe_label(self) -> str:
        return f"MoEISR-{self.label}{self._suffix}"

    @property
    def equal_label(self) -> str:
        return f"equal-budget {self.label}{self._suffix}"

    @property
    def backbone_name(self) -> str:
        return (self.backbone_label or self.label) + self._suffix

    @property
    def lmf_label(self) -> str:
        return f"LM-{self.label}"


# Recipe v1: MoEISR fine-tuned from the 6000-step backbones with the first recipe; its equal-budget controls.
FAMILIES_V1 = (
    Family("LIIF", "liif", "liif-equal-budget", "moeisr-liif", "lm-liif", ("liif-d1", "liif-d2", "liif-d3")),
    Family("LTE", "lte", "lte-equal-budget", "moeisr-lte", "lm-lte", ("lte-d1", "lte-d2")),
)
# Recipe v2 (issue 20): MoEISR, its equal-budget controls and the dense controls, all from the converged backbones.
FAMILIES_V2 = (
    Family("LIIF", "liif-converged", "liif-equal-budget-v2", "moeisr-liif-v2", "lm-liif",
           ("liif-d1", "liif-d2", "liif-d3"), backbone_label="converged LIIF"),
    Family("LTE", "lte-converged", "lte-equal-budget-v2", "moeisr-lte-v2", "lm-lte", ("lte-d1", "lte-d2"),
           backbone_label="converged LTE"),
)  # fmt: skip
FAMILIES = FAMILIES_V1  # the headline families until recipe v2's rows exist (`report_families`)


def family_models(families: Sequence[Family]) -> set[str]:
    """Every `model` value of `families` (backbone, equal budget, MoEISR, LMF, dense), with bicubic."""
    return {"bicubic"} | {m for f in families for m in (f.backbone, f.equal, f.moe, f.lmf, *f.dense) if m}


def report_families(frame: pd.DataFrame) -> tuple[tuple[Family, ...], tuple[Family, ...]]:
    """(headline, earlier): the families the report leads with and the earlier recipe's kept beside them. Once a
    recipe v2 MoEISR has rows in `frame`, v2 leads (per backbone with v2 rows) and v1 follows as "recipe v1" (the
    decomposition, the target and the reading show both; LMF and the dense controls stay with the headline);
    before, v1 alone, as it always was."""
    models = set(frame["model"]) if len(frame) else set()
    v2 = tuple(f for f in FAMILIES_V2 if f.moe in models)
    if not v2:
        return FAMILIES_V1, ()
    moved = {f.label for f in v2}
    headline = tuple(next((f for f in v2 if f.label == v1.label), v1) for v1 in FAMILIES_V1)
    earlier = tuple(replace(f, lmf=None, dense=(), recipe="recipe v1") for f in FAMILIES_V1 if f.label in moved)
    return headline, earlier


def set_means(frame: pd.DataFrame, metrics: Sequence[str] = ("psnr", "ssim", "lpips")) -> pd.DataFrame:
    """Mean of per-image metrics per (model, dataset, scale, knob), with the image count `n`."""
    keys = ["model", "dataset", "scale", "knob"]
    grouped = frame.groupby(keys, sort=False)
    means = grouped[list(metrics)].mean()
    means["n"] = grouped.size()
    return means.reset_index()


def _fmt(value, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _scale_label(scale: float) -> str:
    return f"×{scale:g}"


def _markdown(rows: list[dict]) -> str:
    if not rows:
        return "_(no rows)_"
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def bicubic_table(frame: pd.DataFrame, set_sizes: dict[str, int] | None = None) -> str:
    """Markdown: bicubic PSNR/SSIM/LPIPS per set and scale, next to the published PSNR and the difference."""
    means = sort_cells(set_means(frame[frame["model"] == "bicubic"]))
    rows = []
    for _, r in means.iterrows():
        published = bicubic_psnr().get((r["dataset"], int(r["scale"])))
        rows.append(
            {
                "dataset": dataset_label(r["dataset"], int(r["n"]), (set_sizes or {}).get(r["dataset"])),
                "scale": f"x{r['scale']:g}",
                "images": int(r["n"]),
                "PSNR (dB)": round(r["psnr"], 2),
                "published PSNR": published,
                "Δ vs published": None if published is None else round(r["psnr"] - published, 3),
                "SSIM": round(r["ssim"], 4),
                "LPIPS": round(r["lpips"], 4),
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False)


def bicubic_note(frame: pd.DataFrame) -> str:
    """One sentence on Set14's offset from the published bicubic, with the numbers computed from `frame`."""
    from moeisr.metrics.color import luma_weight_sum

    means = set_means(frame[(frame["model"] == "bicubic") & (frame["dataset"] == "Set14")])
    published = bicubic_psnr()
    offsets = [r["psnr"] - published[("Set14", int(r["scale"]))] for _, r in means.iterrows()
               if ("Set14", int(r["scale"])) in published]  # fmt: skip
    if not offsets:
        return ""
    return (
        f"Set14 sits {min(offsets):+.2f} to {max(offsets):+.2f} dB from the published bicubic because of `bridge`, a "
        f"greyscale image: the LIIF protocol scores it as RGB, whose Y difference is {luma_weight_sum():.3f} × the "
        "grey one, while the published tables score its single channel. We keep the LIIF protocol.\n"
    )


# ------------------------------------------------------------------------------------- families


def _per_image(frame: pd.DataFrame, model: str, prefix: str, keep_knob: bool = False) -> pd.DataFrame:
    rows = frame[frame["model"] == model]
    if not keep_knob:  # the default setting only (LMF's CMSR sweep rows are not the model's default)
        rows = rows[rows["knob"].astype(str) == "none"]
    columns = IMAGE_KEYS + (["knob"] if keep_knob else []) + ["psnr", "gflops"]
    out = rows[columns].rename(columns={"psnr": f"{prefix}_psnr", "gflops": f"{prefix}_gflops"})
    return out.drop_duplicates(subset=IMAGE_KEYS + (["knob"] if keep_knob else []), keep="last")


def family_cells(frame: pd.DataFrame, family: Family) -> pd.DataFrame:
    """Per (dataset, scale, knob): mean PSNR/GFLOPs of the family's three models over their common images.

    Columns: dataset, scale, knob, n, bicubic_psnr (NaN without bicubic rows), {backbone,equal,moe}_{psnr,gflops},
    d_psnr_equal = moe − equal and d_psnr_backbone = moe − backbone (dB), saved_pct = 100·(1 − moe/equal GFLOPs);
    with the family's LMF rows (at its default, CMSR off), lmf_{psnr,gflops}, lmf_d_psnr_equal and lmf_saved_pct
    (NaN where LMF has no row for an image; n counts the images of the three models).
    Empty when any of the three models has no rows.
    """
    moe = _per_image(frame, family.moe, "moe", keep_knob=True)
    backbone = _per_image(frame, family.backbone, "backbone")
    equal = _per_image(frame, family.equal, "equal")
    if moe.empty or backbone.empty or equal.empty:
        return pd.DataFrame()
    merged = moe.merge(backbone, on=IMAGE_KEYS).merge(equal, on=IMAGE_KEYS)
    bicubic = _per_image(frame, "bicubic", "bicubic")[IMAGE_KEYS + ["bicubic_psnr"]]
    merged = merged.merge(bicubic, on=IMAGE_KEYS, how="left")
    lmf = _per_image(frame, family.lmf, "lmf") if family.lmf else pd.DataFrame()
    if not lmf.empty:
        merged = merged.merge(lmf, on=IMAGE_KEYS, how="left")
    if merged.empty:
        return pd.DataFrame()
    grouped = merged.groupby(["dataset", "scale", "knob"], sort=False)
    cells = grouped[[c for c in merged.columns if c.endswith(("_psnr", "_gflops"))]].mean()
    cells["n"] = grouped.size()
    cells = cells.reset_index()
    cells["d_psnr_equal"] = cells["moe_psnr"] - cells["equal_psnr"]
    cells["d_psnr_backbone"] = cells["moe_psnr"] - cells["backbone_psnr"]
    cells["saved_pct"] = 100.0 * (1.0 - cells["moe_gflops"] / cells["equal_gflops"])
    if "lmf_psnr" in cells:
        complete = (grouped["lmf_psnr"].count() == grouped.size()).to_numpy()  # a cell LMF lacks an image of
        cells.loc[~complete, ["lmf_psnr", "lmf_gflops"]] = math.nan
        cells["lmf_d_psnr_equal"] = cells["lmf_psnr"] - cells["equal_psnr"]
        cells["lmf_saved_pct"] = 100.0 * (1.0 - cells["lmf_gflops"] / cells["equal_gflops"])
    return sort_cells(cells)


def frontier_pairs(frame: pd.DataFrame, family: Family, model: str | None = None) -> pd.DataFrame:
    """Per image × scale where `model` (default: the family's MoEISR) and every frontier model have a default row:
    its PSNR minus the dense frontier's PSNR interpolated at its GFLOPs on that image (linear in GFLOPs between the
    two frontier points around it; NaN outside the frontier's GFLOPs range, never extrapolated).

    Columns: dataset, image, scale, moe_psnr, moe_gflops, frontier_psnr, d_psnr_frontier. Empty without dense rows.
    """
    if not family.dense:
        return pd.DataFrame()
    merged = _per_image(frame, model or family.moe, "moe")
    for i, model in enumerate(family.frontier):
        merged = merged.merge(_per_image(frame, model, f"f{i}"), on=IMAGE_KEYS)
    if merged.empty:
        return pd.DataFrame()
    points = range(len(family.frontier))
    gflops = merged[[f"f{i}_gflops" for i in points]].to_numpy()
    psnr = merged[[f"f{i}_psnr" for i in points]].to_numpy()
    order = np.argsort(gflops, axis=1)
    gflops, psnr = np.take_along_axis(gflops, order, 1), np.take_along_axis(psnr, order, 1)
    at = merged["moe_gflops"].to_numpy()
    inside = (at >= gflops[:, 0]) & (at <= gflops[:, -1])
    merged["frontier_psnr"] = [np.interp(x, g, p) if ok else math.nan
                               for x, g, p, ok in zip(at, gflops, psnr, inside, strict=True)]  # fmt: skip
    merged["d_psnr_frontier"] = merged["moe_psnr"] - merged["frontier_psnr"]
    return merged[IMAGE_KEYS + ["moe_psnr", "moe_gflops", "frontier_psnr", "d_psnr_frontier"]]


# ------------------------------------------------------------------------------------------ seeds

SEED_MAX_SCALE = 4.0  # the seed replicas' rows: the grid's scales up to ×4, default setting


def without_seed_replicas(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without the seed replicas' rows (`<model>-seed<k>`), which only the Seeds table and the reading's
    seed spread read."""
    return frame[[replica_of(m) is None for m in frame["model"]]]


def seed_versions(frame: pd.DataFrame, model: str) -> dict[int | None, str]:
    """{None: `model`, k: its replica trained with seed k, ...} for the replicas with rows in `frame`, by seed;
    {} when `model` has no replica."""
    replicas = [replica_of(m) for m in set(frame["model"])]
    seeds = sorted(r[1] for r in replicas if r is not None and r[0] == model)
    return {None: model, **{k: replica_name(model, k) for k in seeds}} if seeds else {}


def _seed_pairs(frame: pd.DataFrame, versions: Mapping[str, str]) -> pd.DataFrame:
    """Per image × scale ≤ SEED_MAX_SCALE where every model of `versions` (column → model) has a default row: their
    PSNRs, one column each."""
    merged = None
    for column, model in versions.items():
        rows = _per_image(frame[frame["scale"] <= SEED_MAX_SCALE], model, "x")[IMAGE_KEYS + ["x_psnr"]]
        rows = rows.rename(columns={"x_psnr": column})
        merged = rows if merged is None else merged.merge(rows, on=IMAGE_KEYS)
    return pd.DataFrame() if merged is None else merged


def seed_spread(frame: pd.DataFrame, a: str, b: str) -> tuple[dict[int | None, float], float] | None:
    """The seed spread of `a` − `b`: ({seed: mean over image × scale pairs (≤ ×4) of a's replica with that seed
    minus b's}, max − min over seeds), the main models pairing as seed None, on the pairs every seed of both has;
    None without at least two seeds that both models have."""
    seeds = [k for k in seed_versions(frame, a) if k in seed_versions(frame, b)]
    if len(seeds) < 2:
        return None
    versions = {f"a{k}": (a if k is None else replica_name(a, k)) for k in seeds}
    versions |= {f"b{k}": (b if k is None else replica_name(b, k)) for k in seeds}
    pairs = _seed_pairs(frame, versions)
    if pairs.empty:
        return None
    deltas = {k: float((pairs[f"a{k}"] - pairs[f"b{k}"]).mean()) for k in seeds}
    return deltas, max(deltas.values()) - min(deltas.values())


def _seed_label(seed: int | None, main_seeds: Mapping[str, int], model: str) -> str:
    return f"seed {main_seeds.get(model, 0)} (main)" if seed is None else f"seed {seed}"


def seeds_table(
    frame: pd.DataFrame,
    set_sizes: Mapping[str, int] | None = None,
    main_seeds: Mapping[str, int] | None = None,
    families: Sequence[Family] = FAMILIES,
) -> str | None:
    """Markdown: per model with seed replicas, its cell mean PSNR (dB) per training seed at the scales up to ×4 and
    the spread (max − min over seeds), then over all image × scale pairs; per family, MoEISR's ΔPSNR against the
    equal-budget backbone per seed (replica k against replica k) and its spread. None without replicas.

    main_seeds: the main models' own `train.seed` (run.json's "seeds"; 0 when missing), for the column labels."""
    main_seeds = main_seeds or {}
    models = sorted({r[0] for m in set(frame["model"]) if (r := replica_of(m)) is not None}, key=model_rank)
    sections = [
        "Each model with seed replicas is fine-tuned again from the same parent checkpoint with other training seeds "
        f"and evaluated at the scales up to ×{SEED_MAX_SCALE:g} (default setting). PSNR in dB, means per image over "
        "the images every seed of the model has; spread = max − min over seeds. A difference between models smaller "
        "than the seed spread is not a finding (the reading applies this to MoEISR against the equal budget)."
    ]
    for model in models:
        versions = seed_versions(frame, model)
        columns = {_seed_label(k, main_seeds, model): name for k, name in versions.items()}
        pairs = _seed_pairs(frame, columns)
        if pairs.empty:
            continue
        cells = pairs.groupby(["dataset", "scale"], sort=False)[list(columns)].mean()
        cells["n"] = pairs.groupby(["dataset", "scale"], sort=False).size()
        rows = []
        for _, c in sort_cells(cells.reset_index()).iterrows():
            row = {
                "dataset": dataset_label(c["dataset"], int(c["n"]), (set_sizes or {}).get(c["dataset"])),
                "scale": _scale_label(c["scale"]),
                "images": str(int(c["n"])),
            }
            row |= {label: _fmt(c[label], 3) for label in columns}
            row["spread (dB)"] = _fmt(max(c[label] for label in columns) - min(c[label] for label in columns), 3)
            rows.append(row)
        means = pairs[list(columns)].mean()
        summary = {"dataset": "all pairs", "scale": "", "images": str(len(pairs))}
        summary |= {label: _fmt(means[label], 3) for label in columns}
        summary["spread (dB)"] = _fmt(float(means.max() - means.min()), 3)
        sections += [f"### {model}", _markdown([*rows, summary])]
    deltas = []
    for family in families:
        spread = seed_spread(frame, family.moe, family.equal)
        if spread is None:
            continue
        per_seed, width = spread
        row = {"comparison": f"{family.moe_label} − equal-budget {family.label}"}
        row |= {_seed_label(k, main_seeds, family.moe): _fmt(d, 3, signed=True) for k, d in per_seed.items()}
        deltas.append(row | {"spread (dB)": _fmt(width, 3)})
    if deltas:
        sections += [
            "### ΔPSNR per seed",
            "MoEISR's replica with seed k against the equal-budget backbone's replica with seed k, mean over the "
            "image × scale pairs (≤ ×4) every seed of both has (dB). The reading's seed spread.",
            _markdown(deltas),
        ]
    return "\n\n".join(sections) + "\n" if len(sections) > 1 else None


ALL_DEEPEST_KNOB = "-inf"  # the knob label of MoEISR's all-deepest rows (every pixel to its deepest expert)


def without_all_deepest(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without MoEISR's all-deepest rows, which only the decomposition table reads."""
    return frame[frame["knob"].astype(str) != ALL_DEEPEST_KNOB]


def decomposition_cells(frame: pd.DataFrame, family: Family) -> pd.DataFrame:
    """Per (dataset, scale) where MoEISR has all-deepest rows: the split of its ΔPSNR against the equal budget.

    Columns: dataset, scale, n (images with all three rows), equal_psnr, deepest_psnr (MoEISR, every pixel to its
    deepest expert), learned_psnr (MoEISR, its learned routing), training_deficit = deepest − equal, routing_cost
    = learned − deepest, total = learned − equal (dB; total = training_deficit + routing_cost). Empty without rows.
    """
    merged = _decomposition_pairs(frame, family)
    if merged.empty:
        return pd.DataFrame()
    grouped = merged.groupby(["dataset", "scale"], sort=False)
    cells = grouped[["equal_psnr", "deepest_psnr", "learned_psnr"]].mean()
    cells["n"] = grouped.size()
    cells = cells.reset_index()
    cells["training_deficit"] = cells["deepest_psnr"] - cells["equal_psnr"]
    cells["routing_cost"] = cells["learned_psnr"] - cells["deepest_psnr"]
    cells["total"] = cells["learned_psnr"] - cells["equal_psnr"]
    return sort_cells(cells)


TARGET_LOWER_DB = -0.05  # issue 20's target: each ×2–×4 cell's 95% CI lower bound of MoEISR − equal budget ≥ this
TARGET_SAVED_PCT = 30.0  # ... with at least this % of the equal budget's FLOPs saved on average over those cells
TARGET_MAX_SCALE = 4.0


def _target_cells(frame: pd.DataFrame, moe: str, equal: str) -> tuple[dict[str, float], float]:
    """({cell label: 95% CI lower bound of `moe` − `equal`} on the ×2–×4 cells, mean FLOPs saved over them (%));
    ({}, nan) without pairs."""
    pairs = _per_image(frame, moe, "moe").merge(_per_image(frame, equal, "equal"), on=IMAGE_KEYS)
    pairs = pairs[pairs["scale"] <= TARGET_MAX_SCALE]
    lows, saved = {}, []
    for (dataset, scale), cell in sort_cells(pairs).groupby(["dataset", "scale"], sort=False):
        lows[f"{dataset} {_scale_label(scale)}"] = paired_bootstrap(cell["moe_psnr"] - cell["equal_psnr"]).lo
        saved.append(100.0 * (1.0 - cell["moe_gflops"].mean() / cell["equal_gflops"].mean()))
    return lows, float(np.mean(saved)) if saved else math.nan


class SeedTarget(NamedTuple):
    """Issue 20's target on one seed replica: its ×2–×4 cells, those meeting the bound, whether it is met."""

    cells: int
    cells_met: int
    met: bool


def _target_met(lows: Mapping[str, float], saved_pct: float) -> tuple[int, bool]:
    """(cells whose lower bound meets TARGET_LOWER_DB, whether the target is met)."""
    met_cells = sum(lo >= TARGET_LOWER_DB for lo in lows.values())
    return met_cells, met_cells == len(lows) and saved_pct >= TARGET_SAVED_PCT


def target_rows(frame: pd.DataFrame, families: Sequence[Family] = FAMILIES) -> list[dict]:
    """Issue 20's target per MoEISR model: on each ×2–×4 cell, the 95% paired bootstrap interval (over the cell's
    images) of its PSNR minus the equal-budget backbone's; the target is met when every lower bound is at least
    TARGET_LOWER_DB and the mean FLOPs saved over those cells is at least TARGET_SAVED_PCT. One dict per model with
    rows at those scales: model, cells, cells_met, worst (cell label), worst_lo (dB), saved_pct, met, and by_seed:
    {seed k: SeedTarget} for the same test on the seed replicas (seed k's MoEISR against seed k's
    equal budget; {} without replicas)."""
    out = []
    for family in families:
        lows, saved_pct = _target_cells(frame, family.moe, family.equal)
        if not lows:
            continue
        worst = min(lows, key=lows.get)
        met_cells, met = _target_met(lows, saved_pct)
        moes, equals = seed_versions(frame, family.moe), seed_versions(frame, family.equal)
        by_seed = {}
        for k in (k for k in moes if k is not None and k in equals):
            seed_lows, seed_saved = _target_cells(frame, moes[k], equals[k])
            if seed_lows:
                by_seed[k] = SeedTarget(len(seed_lows), *_target_met(seed_lows, seed_saved))
        out.append({"model": family.moe_label, "cells": len(lows), "cells_met": met_cells, "worst": worst,
                    "worst_lo": lows[worst], "saved_pct": saved_pct, "met": met, "by_seed": by_seed})  # fmt: skip
    return out


def target_markdown(rows: list[dict]) -> str:
    """The target's table and one short sentence per model (`target_rows`); the lead states the criterion. With
    seed replicas, two columns apply the same test to each other seed."""
    seeds = sorted({k for r in rows for k in r["by_seed"]})
    label = ("seeds " if len(seeds) > 1 else "seed ") + " / ".join(str(k) for k in seeds)

    def per_seed(r: dict, what: Callable[[SeedTarget], str]) -> str:
        return " / ".join(what(r["by_seed"][k]) if k in r["by_seed"] else "–" for k in seeds)

    table = _markdown([
        {"model": r["model"], "cells (×2–×4)": str(r["cells"]),
         f"cells with CI lower bound ≥ {TARGET_LOWER_DB:+.2f} dB": str(r["cells_met"]),
         "worst cell": r["worst"], "its CI lower bound (dB)": _fmt(r["worst_lo"], 3, signed=True),
         "FLOPs saved, mean over cells (%)": _fmt(r["saved_pct"], 1), "target met": "yes" if r["met"] else "no",
         **({f"{label}: cells meeting the bound": per_seed(r, lambda c: f"{c.cells_met} of {c.cells}"),
             f"{label}: target met": per_seed(r, lambda c: "yes" if c.met else "no")} if seeds else {})}
        for r in rows
    ])  # fmt: skip
    sentences = [
        f"{r['model']} {'meets' if r['met'] else 'misses'} the target: {r['cells_met']} of {r['cells']} cells meet the "
        f"bound (worst {r['worst']}, {r['worst_lo']:+.3f} dB), {r['saved_pct']:.1f}% saved."
        for r in rows
    ]
    lead = (
        f"Issue 20's target: on every ×2–×{TARGET_MAX_SCALE:g} cell, the 95% paired bootstrap interval of MoEISR's "
        f"PSNR minus the equal-budget backbone's has its lower bound at or above {TARGET_LOWER_DB:+.2f} dB, with at "
        f"least {TARGET_SAVED_PCT:g}% of the FLOPs saved on average over those cells."
    )
    if seeds:
        lead += " The seed columns apply the same test to each seed's MoEISR against the same seed's equal budget."
    return "\n\n".join([lead, table, " ".join(sentences)])


def decomposition_table(
    frame: pd.DataFrame, set_sizes: Mapping[str, int] | None = None, families: Sequence[Family] = FAMILIES
) -> str | None:
    """Markdown: per MoEISR model and cell, its ΔPSNR against the equal-budget backbone split into the training
    deficit (all-deepest routing − equal budget) and the routing cost (learned − all-deepest routing), both from
    evaluated rows, with a last row over every image × scale pair (paired bootstrap 95% CIs). None without rows."""

    sections = [
        "ΔPSNR of MoEISR against its equal-budget backbone = **training deficit** (MoEISR with every pixel routed to "
        "its deepest expert, routing knob −∞, minus the equal-budget backbone) + **routing cost** (MoEISR's learned "
        "routing minus all-deepest). Both are evaluated rows, not estimates. PSNR in dB, means per image."
    ]
    target = target_rows(frame, families)
    if target:
        sections += ["### Target", target_markdown(target)]
    for family in families:
        cells = decomposition_cells(frame, family)
        if cells.empty:
            continue
        rows = [
            {
                "dataset": dataset_label(c["dataset"], int(c["n"]), (set_sizes or {}).get(c["dataset"])),
                "scale": _scale_label(c["scale"]),
                "images": str(int(c["n"])),
                f"{family.label} equal-budget PSNR": _fmt(c["equal_psnr"], 2),
                f"{family.moe_label} all-deepest PSNR": _fmt(c["deepest_psnr"], 2),
                f"{family.moe_label} PSNR": _fmt(c["learned_psnr"], 2),
                "training deficit (dB)": _fmt(c["training_deficit"], 3, signed=True),
                "routing cost (dB)": _fmt(c["routing_cost"], 3, signed=True),
                "ΔPSNR vs equal budget (dB)": _fmt(c["total"], 3, signed=True),
            }
            for _, c in cells.iterrows()
        ]
        pairs = _decomposition_pairs(frame, family)
        summary = {"dataset": "all pairs", "scale": "", "images": str(len(pairs))}
        summary |= {k: "" for k in list(rows[0])[3:6]}
        deepest, learned, equal = pairs["deepest_psnr"], pairs["learned_psnr"], pairs["equal_psnr"]
        for column, values in (("training deficit (dB)", deepest - equal), ("routing cost (dB)", learned - deepest),
                               ("ΔPSNR vs equal budget (dB)", learned - equal)):  # fmt: skip
            stats = paired_bootstrap(values)
            summary[column] = f"{stats.mean:+.3f} [{stats.lo:+.3f}, {stats.hi:+.3f}]"
        rows.append(summary)
        sections += [f"### {family.moe_label}", _markdown(rows)]
    return "\n\n".join(sections) + "\n" if any(s.startswith("### MoEISR") for s in sections) else None


def _decomposition_pairs(frame: pd.DataFrame, family: Family) -> pd.DataFrame:
    """Per image × scale with all three rows: equal_psnr, deepest_psnr, learned_psnr."""
    moe = frame[frame["model"] == family.moe]
    deepest = moe[moe["knob"].astype(str) == ALL_DEEPEST_KNOB][IMAGE_KEYS + ["psnr"]]
    deepest = deepest.rename(columns={"psnr": "deepest_psnr"}).drop_duplicates(subset=IMAGE_KEYS, keep="last")
    learned = _per_image(frame, family.moe, "learned")[IMAGE_KEYS + ["learned_psnr"]]
    equal = _per_image(frame, family.equal, "equal")[IMAGE_KEYS + ["equal_psnr"]]
    return deepest.merge(learned, on=IMAGE_KEYS).merge(equal, on=IMAGE_KEYS)


def current_speedups(
    speedups: pd.DataFrame | None, frame: pd.DataFrame, families: Sequence[Family] = FAMILIES
) -> pd.DataFrame:
    """The rows of `speedups.csv` (`moeisr.pipeline.speedups`) that the tables of `families` show: MoEISR or LMF
    against the family's equal-budget backbone (a pair measured before, e.g. recipe v1's, is dropped), measured
    with the checkpoints `frame`'s rows were evaluated with (stale rows of an older checkpoint dropped), the last
    one per (model, dataset, scale)."""
    if speedups is None or speedups.empty:
        return pd.DataFrame()
    shown = {(f.equal, m) for f in families for m in (f.moe, f.lmf) if m}
    speedups = speedups[[pair in shown for pair in zip(speedups["reference"], speedups["model"], strict=True)]]
    hashes = frame.groupby("model")["ckpt_hash"].agg(lambda h: set(h.astype(str)))
    columns = ("model", "reference", "model_ckpt", "reference_ckpt")
    same = [hashes.get(m) == {mc} and hashes.get(ref) == {rc}
            for m, ref, mc, rc in zip(*(speedups[c].astype(str) for c in columns), strict=True)]  # fmt: skip
    return speedups[same].drop_duplicates(subset=["model", "dataset", "scale"], keep="last")


def speedup_provenance(speedups: pd.DataFrame) -> str:
    """One sentence: where and how the measured speed-ups of `current_speedups` were timed."""
    threads = ", ".join(str(t) for t in sorted(set(speedups["threads"])))
    commits = ", ".join(f"`{c}`" for c in sorted(set(speedups["commit"].astype(str))))
    return (
        f"Measured speed-up: the equal-budget backbone's wall-clock time over the model's, one image per cell (its "
        f"decoder share of the FLOPs closest to the cell's median), timed alternately in one process, median of "
        f"{int(speedups['repeats'].min())}+ rounds, on {', '.join(sorted(set(speedups['cpu'])))} with {threads} "
        f"torch thread(s), at commit {commits}, 1-minute load average {_load_text(speedups)} (`moeisr speedups`, "
        "docs/speed.md); FLOPs ratio on the same image."
    )


def _load_text(speedups: pd.DataFrame) -> str:
    """The load averages of a speed-up run: before it started (what says the machine was quiet) and during it."""
    during = f"{speedups['load_1min'].min():.2f} to {speedups['load_1min'].max():.2f} during it"
    if "load_start" not in speedups:
        return during
    return f"{speedups['load_start'].max():.2f} before the run, {during} (its own threads included)"


def _speedup(speedups: pd.DataFrame, model: str, dataset: str, scale: float) -> tuple[str, str]:
    """(measured speed-up, FLOPs ratio) of `model` in a cell, as text; dashes when it was not measured."""
    if speedups.empty:
        return "–", "–"
    row = speedups[(speedups["model"] == model) & (speedups["dataset"] == dataset) & (speedups["scale"] == scale)]
    if row.empty:
        return "–", "–"
    return f"{row['speedup'].iloc[0]:.2f}", f"{row['flops_ratio'].iloc[0]:.2f}"


def _frontier_cell(pairs: pd.DataFrame) -> str:
    """A cell's ΔPSNR against the dense frontier with its 95% paired CI over images, or why there is none."""
    if pairs.empty:
        return "–"
    if pairs["d_psnr_frontier"].isna().any():
        return "outside the frontier"
    stats = paired_bootstrap(pairs["d_psnr_frontier"])
    return f"{stats.mean:+.3f} [{stats.lo:+.3f}, {stats.hi:+.3f}]"


def main_table(
    frame: pd.DataFrame,
    set_sizes: Mapping[str, int] | None = None,
    families: Sequence[Family] = FAMILIES,
    speedups: pd.DataFrame | None = None,
) -> str:
    """Markdown: per family, each dataset and scale with PSNR and GFLOPs of the backbone, its equal-budget
    fine-tune and MoEISR, MoEISR's ΔPSNR vs the equal-budget backbone and the % of its FLOPs saved; with dense rows,
    MoEISR's ΔPSNR against the dense frontier with its 95% CI; with LMF rows, the LM- columns; with `speedups`
    (`speedups.csv`'s rows), the measured speed-ups beside the FLOPs ratios."""
    speedups = current_speedups(speedups, frame, families)
    sections = [
        f"**{FLOPS_HEADER}** (element-wise arithmetic 1 FLOP per element, see docs/flops.md); GFLOPs and PSNR "
        "(dB, Y channel, shave = scale) are means per image over the images every model of the row has. "
        "ΔPSNR and FLOPs saved compare MoEISR with the equal-budget backbone (the backbone fine-tuned for "
        "exactly MoEISR's extra steps)."
    ]
    all_cells = {family.label: family_cells(frame, family) for family in families}
    all_pairs = {family.label: frontier_pairs(frame, family) for family in families}
    if any(not pairs.empty for pairs in all_pairs.values()):
        sections.append(
            "ΔPSNR vs the dense frontier: MoEISR minus the dense decoders' PSNR interpolated linearly at MoEISR's "
            "GFLOPs on each image (the frontier: the backbone with 1 to all MLP hidden layers, each at MoEISR's "
            "budget; docs/dense_baselines.md). In brackets: its 95% paired bootstrap interval over the cell's images; "
            "\"outside the frontier\" where an image's MoEISR GFLOPs leave the dense points' range (never "
            "extrapolated)."
        )
    if any("lmf_psnr" in cells for cells in all_cells.values()):
        sections.append(
            "The LM- columns compare LMF (at its default, CMSR off) with the same equal-budget backbone; LMF's own "
            "training budget is in the efficiency table."
        )
    if not speedups.empty:
        sections.append(speedup_provenance(speedups))
    for family in families:
        cells = all_cells[family.label]
        pairs = all_pairs[family.label]
        frontier = None if pairs.empty else dict(list(pairs.groupby(["dataset", "scale"])))
        show_knob = not cells.empty and cells["knob"].nunique() > 1
        rows = []
        for _, c in cells.iterrows():
            row = {
                "dataset": dataset_label(c["dataset"], int(c["n"]), (set_sizes or {}).get(c["dataset"])),
                "scale": _scale_label(c["scale"]),
            }
            if show_knob:
                row["knob"] = c["knob"]
            row.update(
                {
                    "images": str(int(c["n"])),
                    "bicubic PSNR": _fmt(c["bicubic_psnr"], 2),
                    f"{family.backbone_name} PSNR": _fmt(c["backbone_psnr"], 2),
                    f"{family.label} equal-budget PSNR": _fmt(c["equal_psnr"], 2),
                    f"{family.moe_label} PSNR": _fmt(c["moe_psnr"], 2),
                    "ΔPSNR vs equal budget (dB)": _fmt(c["d_psnr_equal"], 3, signed=True),
                    f"{family.backbone_name} GFLOPs": _fmt(c["backbone_gflops"], 2),
                    f"{family.label} equal-budget GFLOPs": _fmt(c["equal_gflops"], 2),
                    f"{family.moe_label} GFLOPs": _fmt(c["moe_gflops"], 2),
                    "FLOPs saved (%)": _fmt(c["saved_pct"], 1),
                }
            )
            if not speedups.empty:
                measured, ratio = _speedup(speedups, family.moe, c["dataset"], c["scale"])
                row |= {
                    f"{family.moe_label} speed-up, measured (×)": measured,
                    f"{family.moe_label} FLOPs ratio (×)": ratio,
                }
            if frontier is not None:
                row["ΔPSNR vs dense frontier at equal GFLOPs (dB, interpolated) [95% CI]"] = _frontier_cell(
                    frontier.get((c["dataset"], c["scale"]), pd.DataFrame())
                )
            if "lmf_psnr" in c:
                row.update(
                    {
                        f"{family.lmf_label} PSNR": _fmt(c["lmf_psnr"], 2),
                        f"{family.lmf_label} ΔPSNR vs equal budget (dB)": _fmt(c["lmf_d_psnr_equal"], 3, signed=True),
                        f"{family.lmf_label} GFLOPs": _fmt(c["lmf_gflops"], 2),
                        f"{family.lmf_label} FLOPs saved (%)": _fmt(c["lmf_saved_pct"], 1),
                    }
                )
                if not speedups.empty:
                    measured, ratio = _speedup(speedups, family.lmf, c["dataset"], c["scale"])
                    row |= {f"{family.lmf_label} speed-up, measured (×)": measured,
                            f"{family.lmf_label} FLOPs ratio (×)": ratio}  # fmt: skip
            rows.append(row)
        lmf = f", {family.lmf_label}" if not cells.empty and "lmf_psnr" in cells else ""
        sections.append(f"### {family.label}: {family.backbone_name}, {family.equal_label}, {family.moe_label}{lmf}")
        sections.append(_markdown(rows))
    return "\n\n".join(sections) + "\n"


# -------------------------------------------------------------------------------------- experts


def share_columns(frame: pd.DataFrame) -> list[str]:
    """The expert-share columns present in `frame`, in expert order (share_0, share_1, ...)."""
    found = [c for c in frame.columns if c.startswith("share_") and c[6:].isdigit()]
    return sorted(found, key=lambda c: int(c[6:]))


def pixel_shares(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per (dataset, scale, knob): the share of output pixels routed to each expert, pooled over images.

    Each image weighs by its output pixel count round(lr_h·s)·round(lr_w·s). Columns: dataset, scale, knob, n,
    share_0..share_{J-1} (fractions summing to 1). Empty if `model` has no share columns filled.
    """
    rows = frame[frame["model"] == model]
    columns = [c for c in share_columns(rows) if rows[c].notna().any()]
    if rows.empty or not columns:
        return pd.DataFrame()
    pixels = [round(h * s) * round(w * s) for h, w, s in zip(rows["lr_h"], rows["lr_w"], rows["scale"], strict=True)]
    weighted = rows[columns].fillna(0.0).mul(np.asarray(pixels, dtype=np.float64), axis=0)
    weighted[["dataset", "scale", "knob"]] = rows[["dataset", "scale", "knob"]]
    grouped = weighted.groupby(["dataset", "scale", "knob"], sort=False)
    sums = grouped[columns].sum()
    shares = sums.div(sums.sum(axis=1), axis=0)
    shares["n"] = grouped.size()
    return sort_cells(shares.reset_index())


def experts_table(
    frame: pd.DataFrame,
    experts: Mapping[str, Sequence[tuple[str, float]]],
    set_sizes: Mapping[str, int] | None = None,
) -> str:
    """Markdown: per MoEISR model, the % of output pixels each expert decodes, per dataset and scale.

    experts: model name → [(label, relative cost c_j / c_max)] per expert, cheapest first. The last column is
    the mean relative decoder cost Σ_j share_j · c_j / c_max (100% = every pixel to the deepest expert).
    """
    sections = []
    for model, info in experts.items():
        cells = pixel_shares(frame, model)
        legend = "; ".join(
            f"expert {j} = {label} ({100 * cost:.0f}% of the deepest expert's MACs)"
            for j, (label, cost) in enumerate(info)
        )
        sections.append(f"### {model}\n\n{legend}.")
        rows = []
        for _, c in cells.iterrows():
            shares = [c.get(f"share_{j}", math.nan) for j in range(len(info))]
            row = {
                "dataset": dataset_label(c["dataset"], int(c["n"]), (set_sizes or {}).get(c["dataset"])),
                "scale": _scale_label(c["scale"]),
                "knob": c["knob"],
                "images": str(int(c["n"])),
            }
            for j, share in enumerate(shares):
                row[f"expert {j} (%)"] = _fmt(100 * share, 1)
            cost = sum(s * cost for s, (_, cost) in zip(shares, info, strict=True))
            row["mean relative decoder cost (%)"] = _fmt(100 * cost, 1)
            rows.append(row)
        sections.append(_markdown(rows))
    return "\n\n".join(sections) + "\n"


# ------------------------------------------------------------------------------------ published


def published_table(
    frame: pd.DataFrame,
    set_sizes: Mapping[str, int] | None = None,
    published: Sequence[PublishedResult] | None = None,
    families: Sequence[Family] = FAMILIES,
) -> str:
    """Markdown: the published PSNRs (`moeisr.report.published`) on the sets we evaluate, with our rows beside.

    Our columns: bicubic beside the published bicubic (the one directly comparable row), our backbone and its
    MoEISR beside the published LIIF/LTE rows of the same family; context rows (MetaSR, fixed-scale EDSR/RDN) are
    left out, as are sets we do not evaluate (they stay in the CSV). Where `frame` holds fewer of a set's images
    than `set_sizes` counts, our mean is over that subset, and the row says so: not comparable, bicubic included.
    """
    published = published_results() if published is None else published
    ours = set_means(frame, metrics=("psnr",)) if len(frame) else pd.DataFrame(columns=["model", "dataset", "scale"])
    evaluated = set(ours["dataset"]) if len(ours) else set()
    by_family = {f.backbone: (f.backbone, f.moe) for f in families} | {"bicubic": ("bicubic",)}
    shown = [p for p in published if p.family in by_family and p.dataset in evaluated]
    left_out = len(published) - len(shown)
    counted = frame.groupby("dataset")["image"].nunique() if len(frame) else pd.Series(dtype=int)
    subsets = {d: (int(n), set_sizes[d]) for d, n in counted.items() if set_sizes and n < set_sizes.get(d, n)}
    lines = [
        "**Citations, not measurements of this suite.** The published LIIF/LTE numbers come from other encoders "
        "(full-size EDSR-baseline or RDN), other training data (DIV2K) and other budgets; only bicubic is directly "
        "comparable, and only on a whole set. Every row names its source.",
        "",
    ]
    if subsets:
        listed = ", ".join(f"{d} (first {n} of {m} images)" for d, (n, m) in subsets.items())
        lines += [f"Our means on {listed} are over the evaluated subset, so no row of those sets is comparable.", ""]
    rows = []
    order = {name: i for i, name in enumerate(SET_ORDER)}
    for item in sorted(shown, key=lambda p: (p.family != "bicubic", p.method, order.get(p.dataset, 99), p.scale)):
        row = {
            "published method": item.method,
            "dataset": item.dataset,
            "scale": _scale_label(item.scale),
            "protocol": item.protocol,
            "published PSNR (cited)": _fmt(item.psnr, 2),
            "ours": "",
            "source": item.source,
        }
        values = []
        for name in by_family[item.family]:
            match = ours[(ours["model"] == name) & (ours["dataset"] == item.dataset) & (ours["scale"] == item.scale)]
            if len(match):
                values.append(f"{name} {match['psnr'].iloc[0]:.2f}")
        subset = (
            f" (first {subsets[item.dataset][0]} of {subsets[item.dataset][1]} images)"
            if item.dataset in subsets
            else ""
        )
        row["ours"] = "; ".join(values) + subset if values else "not evaluated"
        rows.append(row)
    if rows:
        lines.append(_markdown(rows))
    else:
        lines.append("_No published row is on a set this run evaluated._")
    lines += ["", f"{left_out} further published rows (other sets, context methods) are in `{PUBLISHED_CSV.name}`."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ reproduction check


def recheck_table(summary: pd.DataFrame, comparison: pd.DataFrame) -> str:
    """Markdown of the sampled recheck: per model, the rows recomputed, max |ΔPSNR|, max relative |ΔGFLOPs| and
    the rows outside the tolerance; then the sampled (set, scale, image) cells."""
    rows = [
        {
            "model": r["model"],
            "rows recomputed": str(int(r["recomputed"])),
            "max |ΔPSNR| (dB)": f"{r['max_abs_dpsnr']:.4f}",
            "max |ΔGFLOPs| (relative)": f"{r['max_rel_dgflops']:.1e}",
            "outside tolerance": str(int(r["outside"])),
        }
        for _, r in summary.iterrows()
    ]
    cells = comparison.drop_duplicates(["dataset", "scale", "image"])
    sample = ", ".join(
        f"{d} ×{s:g}: {i}" for d, s, i in zip(cells["dataset"], cells["scale"], cells["image"], strict=True)
    )
    return pd.DataFrame(rows).to_markdown(index=False) + f"\n\nSampled images: {sample}.\n"


def reproduction_table(check: pd.DataFrame, target_db: float = 0.01) -> str:
    """Markdown of `reproduction_check` with a one-line verdict against `target_db`."""
    if check.empty or int(check["compared"].sum()) == 0:
        return "_Nothing to compare: no committed rows match the recomputed grid._\n"
    rows = [
        {
            "model": r["model"],
            "rows compared": str(int(r["compared"])),
            "only committed": str(int(r["only_committed"])),
            "only recomputed": str(int(r["only_recomputed"])),
            "max abs ΔPSNR (dB)": _fmt(r["max_abs_dpsnr"], 4),
            "max abs ΔGFLOPs": _fmt(r["max_abs_dgflops"], 4),
            "same checkpoints": "yes" if r["same_checkpoints"] else "no",
        }
        for _, r in check.iterrows()
    ]
    worst = float(np.nanmax(check["max_abs_dpsnr"].to_numpy(dtype=float))) if check["compared"].sum() else math.nan
    if math.isnan(worst):
        verdict = "no PSNR was compared."
    else:
        verdict = f"largest absolute ΔPSNR {worst:.4f} dB: {'within' if worst <= target_db else 'ABOVE'} the "
        verdict += f"{target_db} dB target."
    return _markdown(rows) + f"\n\nVerdict: {verdict}\n"
