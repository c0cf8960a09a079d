"""The ablations' Markdown tables (`tables/ablations.md`) and their plain reading, both computed from the summaries.

Every number in the reading comes from the summary frames through templated sentences (`reading`); none is typed.
The summaries are the CSVs of `results/ablations/` read back, so REPORT.md can regenerate the reading from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from moeisr.evaluate.routers import DEFAULT_ORACLE_LEVEL
from moeisr.report.ablations.analysis import found_share
from moeisr.report.tables import dataset_label

NOTABLE_DB = 0.05  # a factor "mattered" if some value moved PSNR by at least this much (mean over the cells) ...
NOTABLE_PCT = 5.0  # ... or the GFLOPs by at least this many percent; our thresholds, stated in the reading
NOISE_FACTOR = "seed"  # its rows retrain the reference with another seed: run-to-run noise, not a design factor
FLOPS_NOTE = "GFLOPs as fvcore counts them (1 MAC = 1 FLOP), per image; PSNR in dB on Y with shave = scale"


def _fmt(value, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _markdown(frame_rows: list[dict]) -> str:
    if not frame_rows:
        return "_(no rows yet)_"
    return pd.DataFrame(frame_rows).to_markdown(index=False, disable_numparse=True)


def _cell(dataset: str, scale: float, n: int, sizes: Mapping[str, int] | None) -> str:
    return f"{dataset_label(dataset, int(n), (sizes or {}).get(dataset))} ×{scale:g}"


def family_label(base: str) -> str:
    """'moeisr_liif' → 'MoEISR-LIIF' (other names upper-cased)."""
    return "MoEISR-" + base.removeprefix("moeisr_").upper() if base.startswith("moeisr_") else base.upper()


def oracle_name(level: float) -> str:
    return f"oracle ε={level:g}/255"


def default_oracle(levels: Sequence[float]) -> float | None:
    """The ε level the reading compares with: DEFAULT_ORACLE_LEVEL if evaluated, else the largest level."""
    if not len(levels):
        return None
    return DEFAULT_ORACLE_LEVEL if DEFAULT_ORACLE_LEVEL in levels else max(levels)


# ------------------------------------------------------------------------------------------- tables


def budget_lines(summary: pd.DataFrame, main_steps: Mapping[str, int]) -> list[str]:
    """Sentences on the fine-tuning budget of the rows, from the steps their checkpoints record."""
    if summary.empty:
        return ["No ablation row has results yet."]
    steps = sorted({int(s) for s in summary["steps"].dropna()})
    main = ", ".join(f"{family_label(b)} {s}" for b, s in main_steps.items())
    if len(steps) == 1:
        text = (
            f"**Shortened budget, the same for every row**: each row, its reference included, fine-tunes {steps[0]} "
            f"steps from the trained backbone the main job uses (the main models: {main} steps). Compare a row with "
            "its reference, not with the main MoEISR models. One training seed per row; rows of factor "
            f"`{NOISE_FACTOR}` retrain a reference with another seed to measure the run-to-run noise."
        )
    else:
        text = (
            f"**Warning: the rows trained for different step counts ({', '.join(map(str, steps))})**, so they are not "
            f"comparable as they stand (the main models: {main} steps); re-run the train stage."
        )
    return [text]


def _range(r, column: str, digits: int) -> str:
    """'+0.012 [-0.003, +0.020]': the mean and the per-cell extremes of a summary column."""
    values = (_fmt(r[c], digits, True) for c in (column, f"{column}_min", f"{column}_max"))
    return "{} [{}, {}]".format(*values)


def factors_table(summary: pd.DataFrame) -> str:
    """Markdown: one line per row, means over the set×scale cells against the row's reference."""
    rows = []
    for _, r in summary.iterrows():
        is_ref = not isinstance(r["factor"], str)
        rows.append(
            {
                "model": family_label(r["base"]),
                "factor": "reference" if is_ref else r["factor_label"],
                "value": r["value"],
                "row": f"`{r['row']}`",
                "steps": str(int(r["steps"])) if r["steps"] == r["steps"] else "–",
                "cells": str(int(r["cells"])),
                "PSNR (dB)": _fmt(r["psnr"], 3),
                "ΔPSNR vs ref (dB), mean [min, max]": "–" if is_ref else _range(r, "d_psnr", 3),
                "GFLOPs": _fmt(r["gflops"], 3),
                "ΔGFLOPs vs ref (%), mean [min, max]": "–" if is_ref else _range(r, "d_gflops_pct", 1),
                "ΔPSNR vs ref re-routed to the row's cost (dB), mean [min, max]": _matched(r),
                "decoder cost (% of deepest)": _fmt(100 * r["rel_cost"], 1),
                "pixels on deepest (%)": _fmt(100 * r["deepest_share"], 1),
            }
        )
    return _markdown(rows)


def _matched_psnr(r) -> float | None:
    """A summary row's mean ΔPSNR against its reference re-routed to its cost, None if not compared (or old CSV)."""
    d = r.get("d_psnr_matched")
    return None if d is None or d != d else float(d)


def _matched(r) -> str:
    """'+0.012 [-0.003, +0.020] (ΔGFLOPs +0.4%)' for a row compared at matched cost, else '–'."""
    if _matched_psnr(r) is None:
        return "–"
    return f"{_range(r, 'd_psnr_matched', 3)} (ΔGFLOPs {_fmt(r['d_gflops_pct_matched'], 1, True)}%)"


def cells_table(cells: pd.DataFrame, sizes: Mapping[str, int] | None) -> str:
    """Markdown: every row in every set×scale cell."""
    rows = [
        {
            "row": f"`{c['row']}`",
            "cell": _cell(c["dataset"], c["scale"], c["n"], sizes),
            "PSNR (dB)": _fmt(c["psnr"], 3),
            "ΔPSNR vs ref (dB)": _fmt(c["d_psnr"], 3, True),
            "GFLOPs": _fmt(c["gflops"], 3),
            "ΔGFLOPs vs ref (%)": _fmt(c["d_gflops_pct"], 1, True),
            "ΔPSNR vs ref re-routed to the row's cost (dB)": _fmt(c.get("d_psnr_matched"), 3, True),
            "decoder cost (% of deepest)": _fmt(100 * c["rel_cost"], 1),
            "pixels on deepest (%)": _fmt(100 * c["deepest_share"], 1),
        }
        for _, c in cells.iterrows()
    ]
    return _markdown(rows)


def sweep_table(points: pd.DataFrame, family: str, sizes: Mapping[str, int] | None) -> str:
    """Markdown: the learned routing at each knob (cheapest first) and the backbone, one column per cell with
    'PSNR / GFLOPs', ● when the point is on the Pareto front of the attainable points."""
    part = points[(points["family"] == family) & points["router"].isin(["learned", "backbone"])]
    if part.empty:
        return "_(no sweep rows yet)_"
    cells = list(dict.fromkeys(zip(part["dataset"], part["scale"], strict=True)))
    labels = list(dict.fromkeys(part.sort_values("gflops", kind="stable")["label"]))
    labels = [x for x in labels if x != "backbone"] + (["backbone"] if "backbone" in labels else [])
    rows = []
    for label in labels:
        row = {"routing": label}
        for dataset, scale in cells:
            hit = part[(part["label"] == label) & (part["dataset"] == dataset) & (part["scale"] == scale)]
            name = _cell(dataset, scale, int(hit["n"].iloc[0]) if len(hit) else 0, sizes) if len(hit) else None
            key = name or f"{dataset} ×{scale:g}"
            if hit.empty:
                row[key] = "–"
                continue
            h = hit.iloc[0]
            row[key] = f"{h['psnr']:.3f} / {h['gflops']:.3f}" + (" ●" if h["on_front"] else "")
        rows.append(row)
    return _markdown(rows)


def routers_table(routers: pd.DataFrame, family: str, sizes: Mapping[str, int] | None) -> str:
    """Markdown: the reference routers of one MoEISR model per cell, against routing every pixel to the deepest."""
    part = routers[routers["family"] == family]
    rows = [
        {
            "cell": _cell(r["dataset"], r["scale"], r["n"], sizes),
            "router": r["router"],
            "PSNR (dB)": _fmt(r["psnr"], 3),
            "ΔPSNR vs all deepest (dB)": _fmt(r["d_psnr"], 3, True),
            "GFLOPs": _fmt(r["gflops"], 3),
            "FLOPs saved vs all deepest (%)": _fmt(r["saved_pct"], 1),
            "on front": "reference line" if r["router"].startswith("oracle") else ("yes" if r["on_front"] else "no"),
            "below the attainable front (dB; < 0: above it)": _fmt(r["front_gap_db"], 3),
        }
        for _, r in part.iterrows()
    ]
    return _markdown(rows)


def found_table(routers: pd.DataFrame, level: float | None, sizes: Mapping[str, int] | None) -> str:
    """Markdown: per MoEISR model and cell, the argmax routing's FLOPs saving as % of the oracle's at ε=level."""
    if level is None:
        return "_(no oracle rows)_"
    found = found_share(routers, oracle_name(level))
    rows = [
        {
            "model": f["family"],
            "cell": _cell(f["dataset"], f["scale"], f["n"], sizes),
            "argmax: saved (%)": _fmt(f["saved_pct"], 1),
            "argmax: ΔPSNR (dB)": _fmt(f["d_psnr"], 3, True),
            f"{oracle_name(level)}: saved (%)": _fmt(f["saved_pct_oracle"], 1),
            f"{oracle_name(level)}: ΔPSNR (dB)": _fmt(f["d_psnr_oracle"], 3, True),
            "share of the oracle's saving found (%)": _fmt(f["found_pct"], 0),
            "argmax − random at its shares (dB)": _fmt(f["learned_minus_random_db"], 3, True),
        }
        for _, f in found.iterrows()
    ]
    return _markdown(rows)


# ------------------------------------------------------------------------------------------- reading


def factor_reading(summary: pd.DataFrame) -> list[str]:
    """One paragraph per base: the seed-to-seed noise, each factor's values against the reference with their
    direction (better, cheaper, a trade-off), then which factors mattered."""
    paragraphs = []
    for base, part in summary.groupby("base", sort=False):
        factors = part[part["factor"].apply(lambda f: isinstance(f, str))]
        noise = factors[factors["factor"] == NOISE_FACTOR]
        factors = factors[factors["factor"] != NOISE_FACTOR]
        if factors.empty and noise.empty:
            continue
        cells = int(part["cells"].max())
        sentences = [
            f"**{family_label(base)}** (means over {cells} set×scale cell{'s' if cells != 1 else ''} against its "
            "reference):"
        ]
        # the floors: our thresholds, raised to the largest |mean effect| of retraining the reference with another seed
        floor_db = max([NOTABLE_DB, *noise["d_psnr"].abs()])
        floor_pct = max([NOTABLE_PCT, *noise["d_gflops_pct"].abs()])
        if len(noise):
            seeds = "; ".join(
                f"seed {r['value']} instead of {r['reference_value']} {_change(r)}" for _, r in noise.iterrows()
            )
            sentences.append(f"Run-to-run noise, the reference retrained with another seed: {seeds}.")
        effects = []
        for _, rows in factors.groupby("factor", sort=False):
            label = rows["factor_label"].iloc[0]
            items = "; ".join(
                f"{r['value']} instead of {r['reference_value']} {_change(r)}: {_direction(r, floor_db, floor_pct)}"
                + _at_matched_cost(r, floor_db)
                for _, r in rows.iterrows()
            )
            sentences.append(f"{label[0].upper()}{label[1:]}: {items}.")
            effects.append((label, rows))
        if effects:
            sentences += _ranking(effects, floor_db, floor_pct, bool(len(noise)))
        paragraphs.append(" ".join(sentences))
    return paragraphs


def _change(r) -> str:
    return (
        f"changed PSNR by {r['d_psnr']:+.3f} dB (per cell {r['d_psnr_min']:+.3f} to {r['d_psnr_max']:+.3f}) and "
        f"GFLOPs by {r['d_gflops_pct']:+.1f}%"
    )


DIRECTIONS = {  # (quality, cost): each -1, 0 or +1 against the floors
    (1, -1): "better and cheaper",
    (1, 0): "better at the same cost",
    (0, -1): "cheaper at the same quality",
    (-1, 1): "worse and costlier",
    (-1, 0): "worse at the same cost",
    (0, 1): "costlier at the same quality",
    (1, 1): "a trade-off, better but costlier",
    (-1, -1): "a trade-off, cheaper but worse",
    (0, 0): "within the floor on both axes",
}


def _direction(r, floor_db: float, floor_pct: float) -> str:
    """How a row moved against its reference, each axis counted only beyond its floor."""

    def sign(value: float, floor: float) -> int:
        return 0 if abs(value) <= floor else (1 if value > 0 else -1)

    return DIRECTIONS[sign(r["d_psnr"], floor_db), sign(r["d_gflops_pct"], floor_pct)]


def _at_matched_cost(r, floor_db: float) -> str:
    """The clause on a row compared with its reference re-routed to the row's decoder cost ('' if it was not)."""
    d = _matched_psnr(r)
    if d is None:
        return ""
    verdict = "within the floor" if abs(d) <= floor_db else ("better" if d > 0 else "worse")
    return (
        f"; against the reference re-routed to the row's decoder cost (GFLOPs {r['d_gflops_pct_matched']:+.1f}%) "
        f"it is {d:+.3f} dB (per cell {r['d_psnr_matched_min']:+.3f} to {r['d_psnr_matched_max']:+.3f}), {verdict}"
    )


def _quality_effect(r) -> tuple[float, str]:
    """A row's PSNR effect at equal decoder cost when it was measured there (else its plain ΔPSNR), and a note."""
    matched = _matched_psnr(r)
    if matched is not None:
        return matched, "at equal cost"
    return float(r["d_psnr"]), "at its own cost"


def _ranking(effects: list, floor_db: float, floor_pct: float, measured_noise: bool) -> list[str]:
    """Sentences ranking the factors by their largest effects, then sorting them into: changed the quality at equal
    decoder cost, only moved the operating point (cost beyond the floor, quality at equal cost within it), neither."""
    summary = []
    for label, rows in effects:
        quality = max((r for _, r in rows.iterrows()), key=lambda r: abs(_quality_effect(r)[0]))
        cost = rows.loc[rows["d_gflops_pct"].abs().idxmax()]
        summary.append((label, quality, _quality_effect(quality), cost))
    by_psnr = sorted(summary, key=lambda e: -abs(e[2][0]))
    by_flops = sorted(summary, key=lambda e: -abs(e[3]["d_gflops_pct"]))
    ranked = (
        "Ranked by their largest PSNR effect (at equal decoder cost where measured): "
        + ", ".join(f"{label} ({q['value']}: {d:+.3f} dB {where})" for label, q, (d, where), _ in by_psnr)
        + "; by their largest FLOPs effect (at their own routing): "
        + ", ".join(f"{label} ({c['value']}: {c['d_gflops_pct']:+.1f}%)" for label, _, _, c in by_flops)
        + "."
    )
    quality = [label for label, _, (d, _), _ in by_psnr if abs(d) > floor_db]
    moved = [label for label, _, _, c in by_flops if label not in quality and abs(c["d_gflops_pct"]) > floor_pct]
    quiet = [label for label, _, _, _ in summary if label not in quality and label not in moved]
    rule = f"our thresholds of {NOTABLE_DB} dB and {NOTABLE_PCT:g}%"
    if measured_noise:
        rule += " and the seed-to-seed difference"
    why = " (the reference's routing knob reaches the same cost at a PSNR within the floor)" if moved else ""
    verdict = (
        f"With a floor of {floor_db:.3f} dB and {floor_pct:.1f}% GFLOPs (the larger of {rule}), the factors that "
        f"changed the quality (at equal cost where measured): {', '.join(quality) or 'none'}; that moved only the "
        f"operating point{why}: {', '.join(moved) or 'none'}" + (f"; neither: {', '.join(quiet)}." if quiet else ".")
    )
    return [ranked, verdict]


def sweep_reading(points: pd.DataFrame, routers: pd.DataFrame, levels: Sequence[float]) -> list[str]:
    """One paragraph per MoEISR model of the sweep: range of the knob, Pareto status, random and oracle routers."""
    paragraphs = []
    level = default_oracle(levels)
    found = found_share(routers, oracle_name(level)) if level is not None else pd.DataFrame()
    for family, part in points.groupby("family", sort=False):
        learned = part[part["router"] == "learned"]
        cells = learned.groupby(["dataset", "scale"], sort=False)
        n = cells.ngroups
        if not n:
            continue
        low = cells["gflops"].min() / cells["gflops"].max()
        spread = cells["psnr"].max() - cells["psnr"].min()
        knobs = learned["knob"].nunique()
        sentences = [
            f"**{family}** routing sweep ({knobs} knob values, all cheapest to all deepest, {n} cell"
            f"{'s' if n != 1 else ''}): the all-cheapest routing costs {100 * low.min():.0f}–{100 * low.max():.0f}% "
            f"of the all-deepest GFLOPs and the knob moves PSNR by {spread.min():.3f}–{spread.max():.3f} dB per cell."
        ]
        argmax = learned[learned["knob"] == "none"]
        if len(argmax):
            on = int(argmax["on_front"].sum())
            gap = argmax["front_gap_db"].max()
            sentences.append(
                f"The argmax routing (knob default) lies on the Pareto front of the attainable points (learned knobs, "
                f"random routers, backbone) in {on} of {len(argmax)} cells"
                + (f"; elsewhere it is at most {gap:.3f} dB below it." if on < len(argmax) else ".")
            )
        finite = learned[~learned["knob"].isin(["inf", "-inf"])]
        if len(finite):
            sentences.append(
                f"Of the learned points between the extremes ({len(finite)} over all cells), "
                f"{int(finite['on_front'].sum())} are on the front."
            )
        here = found[found["family"] == family] if len(found) else found
        if len(here):
            diff = here["learned_minus_random_db"].dropna()
            if len(diff):
                sentences.append(
                    f"Random routing at the argmax's expert shares (the same FLOPs) is {_above(diff.mean())} the "
                    f"learned routing on average (learned − random per cell: {diff.min():+.3f} to {diff.max():+.3f} "
                    "dB)."
                )
            sentences.append(
                f"The oracle at ε = {level:g}/255 saves {here['saved_pct_oracle'].mean():.1f}% of the all-deepest "
                f"FLOPs at ΔPSNR {here['d_psnr_oracle'].mean():+.3f} dB on average; the argmax saves "
                f"{here['saved_pct'].mean():.1f}% at {here['d_psnr'].mean():+.3f} dB, i.e. it finds "
                f"{_pct(here['found_pct'].mean())} of the oracle's saving (per cell {_pct(here['found_pct'].min())} to "
                f"{_pct(here['found_pct'].max())})."
            )
        lossless = routers[(routers["family"] == family) & (routers["router"] == oracle_name(0.0))]
        if len(lossless) and level != 0.0:
            sentences.append(
                f"Even with ε = 0 (no pixel worse than the deepest expert) the oracle saves "
                f"{lossless['saved_pct'].mean():.1f}% at {lossless['d_psnr'].mean():+.3f} dB."
            )
        paragraphs.append(" ".join(sentences))
    return paragraphs


def _above(diff: float) -> str:
    return f"{diff:.3f} dB below" if diff >= 0 else f"{-diff:.3f} dB above"


def _pct(value: float) -> str:
    return "–" if value != value else f"{value:.0f}%"


def reading(summary: pd.DataFrame, points: pd.DataFrame, routers: pd.DataFrame, levels: Sequence[float]) -> list[str]:
    """The ablation paragraphs of REPORT.md: factors, then the routing sweep."""
    out = factor_reading(summary) if not summary.empty else []
    if not points.empty:
        out += sweep_reading(points, routers, levels)
    return out or ["No ablation results yet: run `moeisr ablations`."]


def ablations_markdown(
    header: str,
    summary: pd.DataFrame,
    cells: pd.DataFrame,
    points: pd.DataFrame,
    routers: pd.DataFrame,
    levels: Sequence[float],
    main_steps: Mapping[str, int],
    grid_line: str,
    sizes: Mapping[str, int] | None = None,
) -> str:
    """The text of tables/ablations.md: provenance, budget, the factor tables, the sweep and the routers."""
    level = default_oracle(levels)
    lines = ["# Ablations", "", header, "", "## Budget and grid", "", *budget_lines(summary, main_steps), ""]
    lines += [grid_line, "", f"_{FLOPS_NOTE}._", ""]
    lines += [
        "## Factors",
        "",
        "Means over the set×scale cells; Δ against the row's reference (same base, same "
        "budget); decoder cost = Σ_j share_j · c_j / c_max over the output pixels.",
        "",
        factors_table(summary),
    ]
    lines += ["", "## Factors per cell", "", cells_table(cells, sizes) if not cells.empty else "_(no rows yet)_"]
    lines += ["", "## Controllable routing sweep (main MoEISR checkpoints)", ""]
    lines += [
        "PSNR / GFLOPs per cell; ● = on the Pareto front of the attainable points (learned knobs, random routers, "
        "backbone; the oracle reads the HR image and is a reference line only).",
        "",
    ]
    for family in dict.fromkeys(points["family"]) if not points.empty else []:
        lines += [f"### {family}", "", sweep_table(points, family, sizes), ""]
    lines += ["## Reference routers", ""]
    lines += [
        "Random: each pixel's expert drawn so that every expert keeps exactly the argmax routing's share of the "
        "image's pixels. Oracle: each pixel's cheapest expert whose luma error is within ε of the deepest expert's "
        "(ε in 8-bit levels, |ΔY| with PSNR's weights); it reads the HR image.",
        "",
    ]
    for family in dict.fromkeys(routers["family"]) if not routers.empty else []:
        lines += [f"### {family}", "", routers_table(routers, family, sizes), ""]
    lines += ["## How much of the possible saving the mapper finds", "", found_table(routers, level, sizes)]
    lines += ["", "## Reading", ""]
    for paragraph in reading(summary, points, routers, levels):
        lines += [paragraph, ""]
    return "\n".join(lines).rstrip() + "\n"
