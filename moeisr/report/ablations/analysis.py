"""Summaries of the ablation rows and of the routing sweep, from tidy per-image rows (pandas in, pandas out).

Every comparison averages over the images both sides have (inner joins), so a partly filled cache never compares
means over different images. PSNR in dB (Y, shave = scale), GFLOPs as fvcore counts them (1 MAC = 1 FLOP).

- `factor_cells`: per ablation row and set×scale cell, PSNR/GFLOPs against the row's reference (same base, same
  fine-tuning budget), with the pixel shares' mean relative decoder cost.
- `factor_summary`: the same averaged over the cells, one line per row.
- `sweep_points`: per MoEISR model and cell, one point per router (backbone, learned routing at each knob, random
  router, oracle) with its Pareto status among the *attainable* points (everything but the oracle, which looks
  at the HR image) and its gap to that front.
- `router_summary`: the sweep's reference points side by side (all-deepest, all-cheapest, learned argmax,
  random at the learned shares, oracle at each ε) with FLOPs saved against all-deepest.
- `sweep_intervals`: the learned argmax routing minus random routing at its shares, paired per image, with its 95%
  bootstrap interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moeisr.report.tables import SET_ORDER, pixel_shares, sort_cells

IMAGE_KEYS = ["dataset", "image", "scale"]
CELL = ["dataset", "scale"]
ROUTERS = ("backbone", "learned", "random", "oracle")  # the `router` column of the sweep rows


def _shares(frame: pd.DataFrame, model: str, costs: Sequence[float]) -> pd.DataFrame:
    """Per cell: pooled pixel shares of `model` → mean relative decoder cost Σ share_j c_j/c_max and deepest share."""
    shares = pixel_shares(frame, model)
    if shares.empty:
        return pd.DataFrame(columns=[*CELL, "rel_cost", "deepest_share"])
    cols = [f"share_{j}" for j in range(len(costs))]
    values = shares.reindex(columns=cols).fillna(0.0).to_numpy()
    out = shares[CELL].copy()
    out["rel_cost"] = values @ np.asarray(costs, dtype=np.float64)
    out["deepest_share"] = values[:, -1]
    return out.groupby(CELL, sort=False).mean().reset_index()  # knob "none" only: one line per cell


def factor_cells(frame: pd.DataFrame, meta: pd.DataFrame, matched: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (row, dataset, scale): n, psnr, gflops, ref_psnr, ref_gflops, d_psnr (dB), d_gflops_pct (% of the
    reference's GFLOPs), rel_cost and deepest_share (pixel-weighted; 1 = every pixel on the deepest expert); and,
    for the rows in `matched`, d_psnr_matched / d_gflops_pct_matched against the reference re-routed to the row's
    decoder cost (NaN elsewhere).

    frame: tidy rows whose `model` is the row name; meta: one line per row with `row`, `reference`, `costs`
    (relative expert costs, cheapest first); matched: tidy rows of the re-routed references, `row` naming the factor
    row each stands beside. Rows with no image in common with their reference are left out, and the matched means
    cover only the images all three sides have.
    """
    columns = [*IMAGE_KEYS, "psnr", "gflops"]
    per_image = frame[["model", *columns]].drop_duplicates(["model", *IMAGE_KEYS], keep="last")
    if matched is None or matched.empty:
        matched = per_image.iloc[0:0].rename(columns={"model": "row"})  # typed, so the means stay float
    matched = matched[["row", *columns]].drop_duplicates(["row", *IMAGE_KEYS], keep="last")
    parts = []
    for _, m in meta.iterrows():
        mine = per_image[per_image["model"] == m["row"]].drop(columns="model")
        ref = per_image[per_image["model"] == m["reference"]].drop(columns="model")
        merged = mine.merge(ref, on=IMAGE_KEYS, suffixes=("", "_ref"))
        if merged.empty:
            continue
        at_cost = matched[matched["row"] == m["row"]].drop(columns="row")
        merged = merged.merge(at_cost, on=IMAGE_KEYS, how="left", suffixes=("", "_matched"))
        both = merged["psnr_matched"].notna()
        merged["d_psnr_matched"] = (merged["psnr"] - merged["psnr_matched"]).where(both)
        merged["gflops_row_matched"] = merged["gflops"].where(both)  # the same images on both sides
        grouped = merged.groupby(CELL, sort=False)
        cells = grouped[["psnr", "gflops", "psnr_ref", "gflops_ref", "d_psnr_matched"]].mean()
        cells["d_gflops_pct_matched"] = 100.0 * (
            grouped["gflops_row_matched"].mean() / grouped["gflops_matched"].mean() - 1.0
        )
        cells["n"] = grouped.size()
        cells = cells.reset_index().merge(_shares(frame, m["row"], m["costs"]), on=CELL, how="left")
        cells.insert(0, "row", m["row"])
        parts.append(cells)
    if not parts:
        return pd.DataFrame()
    cells = pd.concat(parts, ignore_index=True).rename(columns={"psnr_ref": "ref_psnr", "gflops_ref": "ref_gflops"})
    cells["d_psnr"] = cells["psnr"] - cells["ref_psnr"]
    cells["d_gflops_pct"] = 100.0 * (cells["gflops"] / cells["ref_gflops"] - 1.0)
    matched_columns = ["d_psnr_matched", "d_gflops_pct_matched"]
    cells = cells[[c for c in cells.columns if c not in matched_columns] + matched_columns]  # last, as in the CSV
    order = {name: i for i, name in enumerate(meta["row"])}
    cells = sort_cells(cells)
    return cells.sort_values("row", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def row_intervals(frame: pd.DataFrame, meta: pd.DataFrame, matched: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per non-reference row: its ΔPSNR against its reference paired over images (dataset, image, scale) with the
    95% paired bootstrap interval (`moeisr.metrics.paired`), the pairs better/worse and the verdict; and, for the rows
    in `matched` (the reference re-routed to the row's decoder cost, per image, `row` naming the factor row), the
    same interval at matched cost.

    Columns: row, pairs, ci_mean, ci_lo, ci_hi, better, worse, verdict, decided_by, matched_ci_mean, matched_ci_lo,
    matched_ci_hi (NaN without matched rows). Empty when no row has a pair.
    """
    from moeisr.metrics.paired import paired_bootstrap

    per_image = frame[["model", *IMAGE_KEYS, "psnr"]].drop_duplicates(["model", *IMAGE_KEYS], keep="last")
    at_cost = (
        matched[["row", *IMAGE_KEYS, "psnr"]].drop_duplicates(["row", *IMAGE_KEYS], keep="last")
        if matched is not None and len(matched)
        else None
    )
    out = []
    for _, m in meta.iterrows():
        if m["row"] == m["reference"]:
            continue
        mine = per_image[per_image["model"] == m["row"]].drop(columns="model")
        ref = per_image[per_image["model"] == m["reference"]].drop(columns="model")
        merged = mine.merge(ref, on=IMAGE_KEYS, suffixes=("", "_ref"))
        if merged.empty:
            continue
        stats = paired_bootstrap(merged["psnr"] - merged["psnr_ref"])
        verdict, decided = stats.verdict()
        line = {"row": m["row"], "pairs": stats.n, "ci_mean": stats.mean, "ci_lo": stats.lo, "ci_hi": stats.hi,
                "better": stats.better, "worse": stats.worse, "verdict": verdict, "decided_by": decided,
                "matched_ci_mean": math.nan, "matched_ci_lo": math.nan, "matched_ci_hi": math.nan}  # fmt: skip
        if at_cost is not None:
            pair = mine.merge(at_cost[at_cost["row"] == m["row"]].drop(columns="row"), on=IMAGE_KEYS,
                              suffixes=("", "_matched"))  # fmt: skip
            if len(pair):
                at = paired_bootstrap(pair["psnr"] - pair["psnr_matched"])
                line |= {"matched_ci_mean": at.mean, "matched_ci_lo": at.lo, "matched_ci_hi": at.hi}
        out.append(line)
    return pd.DataFrame(out)


def factor_summary(cells: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One line per row: the meta columns, then the cell count and the mean / min / max over the cells of d_psnr
    and d_gflops_pct, the mean PSNR and GFLOPs, rel_cost and deepest_share, and the mean / min / max of
    d_psnr_matched with the mean d_gflops_pct_matched (NaN for rows not compared at matched cost)."""
    if cells.empty:
        return pd.DataFrame()
    grouped = cells.groupby("row", sort=False)
    summary = grouped.agg(
        cells=("d_psnr", "size"),
        images=("n", "sum"),
        psnr=("psnr", "mean"),
        gflops=("gflops", "mean"),
        d_psnr=("d_psnr", "mean"),
        d_psnr_min=("d_psnr", "min"),
        d_psnr_max=("d_psnr", "max"),
        d_gflops_pct=("d_gflops_pct", "mean"),
        d_gflops_pct_min=("d_gflops_pct", "min"),
        d_gflops_pct_max=("d_gflops_pct", "max"),
        rel_cost=("rel_cost", "mean"),
        deepest_share=("deepest_share", "mean"),
        d_psnr_matched=("d_psnr_matched", "mean"),
        d_psnr_matched_min=("d_psnr_matched", "min"),
        d_psnr_matched_max=("d_psnr_matched", "max"),
        d_gflops_pct_matched=("d_gflops_pct_matched", "mean"),
    ).reset_index()
    columns = [c for c in meta.columns if c != "costs"]
    return meta[columns].merge(summary, on="row", how="inner")


# ------------------------------------------------------------------------------------------- the sweep


def pareto_mask(gflops: Sequence[float], psnr: Sequence[float]) -> np.ndarray:
    """Whether each point is on the Pareto front: no other point has GFLOPs ≤ and PSNR ≥ with one strictly better."""
    g, p = np.asarray(gflops, dtype=float), np.asarray(psnr, dtype=float)
    mask = np.ones(len(g), dtype=bool)
    for i in range(len(g)):
        better = (g <= g[i]) & (p >= p[i]) & ((g < g[i]) | (p > p[i]))
        mask[i] = not better.any()
    return mask


def front_gap(gflops: Sequence[float], psnr: Sequence[float], at_gflops: float, at_psnr: float) -> float:
    """dB between the best PSNR any of the points reaches at ≤ `at_gflops` and `at_psnr` (0 if none is better)."""
    g, p = np.asarray(gflops, dtype=float), np.asarray(psnr, dtype=float)
    reachable = p[g <= at_gflops + 1e-12]
    return float(max(0.0, reachable.max() - at_psnr)) if len(reachable) else 0.0


def point_label(router: str, knob: str) -> str:
    """Readable name of a sweep point: 'all cheapest (knob +inf)', 'knob 0.1234', 'random @ …', 'oracle ε=1/255'."""
    if router == "backbone":
        return "backbone"
    if router == "oracle":
        return "oracle ε=" + knob.split("eps=", 1)[1]
    if router == "random":
        fields = dict(part.split("=", 1) for part in knob.split(":")[1:])
        return f"random @ shares of {_knob_text(fields['shares-of'])}, seed {fields['seed']}"
    return _knob_text(knob)


def _knob_text(knob: str) -> str:
    return {"inf": "all cheapest (knob +inf)", "-inf": "all deepest (knob −inf)", "none": "argmax (knob default)"}.get(
        knob, f"knob {knob}"
    )


def sweep_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (family, dataset, scale, router, knob): n, psnr, gflops (means over the images every point of the cell
    has), share_*, label, on_front and front_gap_db among the attainable points (router != oracle; the oracle's
    own gap is to the same attainable front, negative when it is above it).

    frame: tidy rows with `family` (the MoEISR model the point belongs to) and `router` columns.
    """
    if frame.empty:
        return pd.DataFrame()
    frame = frame.drop_duplicates(["family", "router", "knob", *IMAGE_KEYS], keep="last")
    parts = []
    for (family, dataset, scale), cell in frame.groupby(["family", *CELL], sort=False):
        n_points = len(cell[["router", "knob"]].drop_duplicates())
        per_image = cell.groupby("image").size()  # rows are unique per point and image (deduplicated above)
        common = per_image.index[per_image == n_points]  # the images every point of the cell has
        cell = cell[cell["image"].isin(common)]
        if cell.empty:
            continue
        shares = sorted((c for c in cell.columns if re.fullmatch(r"share_\d+", c)), key=lambda c: int(c[6:]))
        grouped = cell.groupby(["router", "knob"], sort=False)
        points = grouped[["psnr", "gflops", *shares]].mean()
        points["n"] = grouped.size()
        points = points.reset_index()
        points.insert(0, "family", family)
        points.insert(1, "dataset", dataset)
        points.insert(2, "scale", scale)
        attainable = points["router"] != "oracle"
        points["on_front"] = False
        points.loc[attainable, "on_front"] = pareto_mask(
            points.loc[attainable, "gflops"], points.loc[attainable, "psnr"]
        )
        ag, ap = points.loc[attainable, "gflops"], points.loc[attainable, "psnr"]
        points["front_gap_db"] = [
            front_gap(ag, ap, g, p) if att else _signed_gap(ag, ap, g, p)
            for g, p, att in zip(points["gflops"], points["psnr"], attainable, strict=True)
        ]
        parts.append(points)
    if not parts:
        return pd.DataFrame()
    points = pd.concat(parts, ignore_index=True)
    points["label"] = [point_label(r, k) for r, k in zip(points["router"], points["knob"], strict=True)]
    return _sorted(points, "family", "router")


def _sorted(frame: pd.DataFrame, group: str, router: str) -> pd.DataFrame:
    """`group` in order of appearance, then dataset (SET_ORDER), scale, `router` (ROUTERS order), GFLOPs."""
    groups = {g: i for i, g in enumerate(dict.fromkeys(frame[group]))}
    sets = {s: i for i, s in enumerate(SET_ORDER)}
    ranks = {r: i for i, r in enumerate(ROUTERS)}
    keys = {
        group: lambda c: c.map(groups),
        "dataset": lambda c: c.map(lambda d: (sets.get(d, len(sets)), d)),
        router: lambda c: c.map(lambda r: ranks.get(r, len(ranks))),
    }
    columns = [group, "dataset", "scale", router, "gflops"]
    return frame.sort_values(columns, key=lambda c: keys.get(c.name, lambda x: x)(c), kind="stable").reset_index(
        drop=True
    )


def _signed_gap(gflops, psnr, at_gflops: float, at_psnr: float) -> float:
    g, p = np.asarray(gflops, dtype=float), np.asarray(psnr, dtype=float)
    reachable = p[g <= at_gflops + 1e-12]
    return float(reachable.max() - at_psnr) if len(reachable) else math.nan


def router_summary(points: pd.DataFrame, levels: Sequence[float]) -> pd.DataFrame:
    """Per (family, dataset, scale) and reference router: psnr, gflops, d_psnr and saved_pct against all-deepest
    (% of its GFLOPs), on_front, front_gap_db. Routers: all deepest, all cheapest, learned argmax, random at the
    learned argmax's shares (mean over seeds), backbone, and the oracle at each ε level."""
    if points.empty:
        return pd.DataFrame()
    wanted = [
        ("all deepest", lambda p: (p["router"] == "learned") & (p["knob"] == "-inf")),
        ("all cheapest", lambda p: (p["router"] == "learned") & (p["knob"] == "inf")),
        ("learned argmax", lambda p: (p["router"] == "learned") & (p["knob"] == "none")),
        ("random, argmax shares", lambda p: (p["router"] == "random") & p["knob"].str.contains("shares-of=none:")),
        ("backbone", lambda p: p["router"] == "backbone"),
    ]
    for level in levels:
        wanted.append((f"oracle ε={level:g}/255", lambda p, lv=level: p["knob"] == f"oracle:eps={lv:g}/255"))
    rows = []
    for (family, dataset, scale), cell in points.groupby(["family", *CELL], sort=False):
        deepest = cell[(cell["router"] == "learned") & (cell["knob"] == "-inf")]
        if deepest.empty:
            continue
        d_psnr, d_gflops = float(deepest["psnr"].iloc[0]), float(deepest["gflops"].iloc[0])
        for name, pick in wanted:
            chosen = cell[pick(cell)]
            if chosen.empty:
                continue
            psnr, gflops = float(chosen["psnr"].mean()), float(chosen["gflops"].mean())
            rows.append(
                {
                    "family": family,
                    "dataset": dataset,
                    "scale": scale,
                    "router": name,
                    "n": int(chosen["n"].min()),
                    "psnr": psnr,
                    "gflops": gflops,
                    "d_psnr": psnr - d_psnr,
                    "saved_pct": 100.0 * (1.0 - gflops / d_gflops),
                    "on_front": bool(chosen["on_front"].all()),
                    "front_gap_db": float(chosen["front_gap_db"].mean()),
                }
            )
    return pd.DataFrame(rows)


def found_share(summary: pd.DataFrame, oracle: str) -> pd.DataFrame:
    """Per (family, dataset, scale): the learned argmax's FLOPs saving as % of the oracle's (`oracle` is a router
    name of `router_summary`, e.g. 'oracle ε=1/255'), with both savings and PSNR differences."""
    if summary.empty:
        return pd.DataFrame()
    keys = ["family", *CELL]

    def pick(router: str, columns: dict[str, str]) -> pd.DataFrame:
        return summary.loc[summary["router"] == router, keys + list(columns)].rename(columns=columns)

    learned = pick("learned argmax", {"n": "n", "saved_pct": "saved_pct", "d_psnr": "d_psnr", "psnr": "learned_psnr"})
    best = pick(oracle, {"saved_pct": "saved_pct_oracle", "d_psnr": "d_psnr_oracle"})
    random = pick("random, argmax shares", {"psnr": "random_psnr"})
    joined = learned.merge(best, on=keys, how="inner").merge(random, on=keys, how="left")
    joined["found_pct"] = 100.0 * joined["saved_pct"] / joined["saved_pct_oracle"].where(joined["saved_pct_oracle"] > 0)
    joined["learned_minus_random_db"] = joined["learned_psnr"] - joined["random_psnr"]
    return joined


TEXT_COLUMNS = (
    "model", "run_id", "ckpt_hash", "config_hash", "dataset", "image", "knob", "row", "base", "reference", "factor",
    "factor_label", "value", "reference_value", "train_commit", "family", "router", "label",
)  # fmt: skip


ARGMAX_MINUS_RANDOM = "argmax − random at the argmax's shares"
RANDOM_AT_ARGMAX = "random:shares-of=none:"  # the knob prefix of the random router at the argmax routing's shares


def sweep_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Per MoEISR model (`family`): the learned argmax routing's PSNR minus the random router's at the argmax's expert
    shares (the mean over its seeds), paired per image (dataset, image, scale) over every cell of the sweep, with
    the 95% paired bootstrap interval (`moeisr.metrics.paired`).

    frame: the sweep's tidy rows (`family`, `router`, `knob`, ...). Columns: family, comparison, pairs, mean, ci_lo,
    ci_hi, better, worse. Empty without such pairs.
    """
    from moeisr.metrics.paired import paired_bootstrap

    if frame.empty:
        return pd.DataFrame()
    frame = frame.drop_duplicates(["family", "router", "knob", *IMAGE_KEYS], keep="last")
    out = []
    for family, rows in frame.groupby("family", sort=False):
        argmax = rows[(rows["router"] == "learned") & (rows["knob"].astype(str) == "none")]
        random = rows[(rows["router"] == "random") & rows["knob"].astype(str).str.startswith(RANDOM_AT_ARGMAX)]
        random = random.groupby(IMAGE_KEYS, as_index=False)["psnr"].mean()  # over the random seeds
        pairs = argmax[[*IMAGE_KEYS, "psnr"]].merge(random, on=IMAGE_KEYS, suffixes=("", "_random"))
        if pairs.empty:
            continue
        stats = paired_bootstrap(pairs["psnr"] - pairs["psnr_random"])
        out.append({"family": family, "comparison": ARGMAX_MINUS_RANDOM, "pairs": stats.n, "mean": stats.mean,
                    "ci_lo": stats.lo, "ci_hi": stats.hi, "better": stats.better, "worse": stats.worse})  # fmt: skip
    return pd.DataFrame(out)


def read_summary(path) -> pd.DataFrame:
    """A CSV written by the ablation report, identifiers as text (knob labels 'inf' and 'none' stay labels)."""
    header = pd.read_csv(path, nrows=0).columns
    dtype = {c: str for c in TEXT_COLUMNS if c in header}
    return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""], float_precision="round_trip")


def read_summary_if_any(path) -> pd.DataFrame:
    """`read_summary(path)`, or an empty frame when the file is missing, empty or unreadable (not run yet)."""
    path = Path(path)
    try:
        return read_summary(path) if path.is_file() and path.stat().st_size else pd.DataFrame()
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame()
