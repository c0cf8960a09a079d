"""The ablations' Markdown tables (`tables/ablations.md`), computed from the summaries (`analysis`); the readings
are `reading`'s. The summaries are the CSVs of `results/ablations/` read back, so REPORT.md can rebuild from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from moeisr.evaluate.routers import oracle_label
from moeisr.report.ablations.analysis import found_share
from moeisr.report.tables import dataset_label

DEFAULT_ORACLE_LEVEL = 1.0  # the ε (8-bit levels) the reading compares with: within one grey level of the deepest
NOISE_FACTOR = "seed"  # its rows retrain the reference with another seed: run-to-run noise, not a design factor
FLOPS_NOTE = "GFLOPs as fvcore counts them (1 MAC = 1 FLOP), per image; PSNR in dB on Y with shave = scale"


def fmt(value, digits: int, signed: bool = False) -> str:
    """A number for a table cell; '–' for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown(frame_rows: list[dict]) -> str:
    if not frame_rows:
        return "_(no rows yet)_"
    return pd.DataFrame(frame_rows).to_markdown(index=False, disable_numparse=True)


def _cell(dataset: str, scale: float, n: int, sizes: Mapping[str, int] | None) -> str:
    return f"{dataset_label(dataset, int(n), (sizes or {}).get(dataset))} ×{scale:g}"


def family_label(base: str) -> str:
    """'moeisr_liif' → 'MoEISR-LIIF' (other names upper-cased)."""
    return "MoEISR-" + base.removeprefix("moeisr_").upper() if base.startswith("moeisr_") else base.upper()


def oracle_name(level: float) -> str:
    """The display name of the oracle router whose cache label is `oracle_label(level)`: 'oracle ε=1/255'."""
    return oracle_label(level).replace("oracle:eps=", "oracle ε=")


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
    values = (fmt(r[c], digits, True) for c in (column, f"{column}_min", f"{column}_max"))
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
                "PSNR (dB)": fmt(r["psnr"], 3),
                "ΔPSNR vs ref (dB), mean [min, max]": "–" if is_ref else _range(r, "d_psnr", 3),
                **(
                    {}
                    if "ci_lo" not in r
                    else {
                        "ΔPSNR vs ref over images (dB), mean [95% paired CI]": _interval(r),
                        "verdict (decided by)": _verdict(r),
                    }
                ),  # fmt: skip
                "GFLOPs": fmt(r["gflops"], 3),
                "ΔGFLOPs vs ref (%), mean [min, max]": "–" if is_ref else _range(r, "d_gflops_pct", 1),
                "ΔPSNR vs ref re-routed to the row's cost (dB), mean [min, max]": _matched(r),
                "decoder cost (% of deepest)": fmt(100 * r["rel_cost"], 1),
                "pixels on deepest (%)": fmt(100 * r["deepest_share"], 1),
            }
        )
    return markdown(rows)


def _interval(r) -> str:
    """'-0.012 [-0.020, -0.004]' from a summary row's paired interval, '–' for a reference or a row without one."""
    if r.get("ci_lo") is None or r["ci_lo"] != r["ci_lo"]:
        return "–"
    return f"{r['ci_mean']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]"


def _verdict(r) -> str:
    if not isinstance(r.get("verdict"), str):
        return "–"
    return f"{r['verdict']} ({r['decided_by']})"


def _matched_psnr(r) -> float | None:
    """A summary row's mean ΔPSNR against its reference re-routed to its cost, None if not compared (or old CSV)."""
    d = r.get("d_psnr_matched")
    return None if d is None or d != d else float(d)


def _matched(r) -> str:
    """'+0.012 [-0.003, +0.020] (ΔGFLOPs +0.4%)' for a row compared at matched cost, else '–'."""
    if _matched_psnr(r) is None:
        return "–"
    return f"{_range(r, 'd_psnr_matched', 3)} (ΔGFLOPs {fmt(r['d_gflops_pct_matched'], 1, True)}%)"


def cells_table(cells: pd.DataFrame, sizes: Mapping[str, int] | None) -> str:
    """Markdown: every row in every set×scale cell."""
    rows = [
        {
            "row": f"`{c['row']}`",
            "cell": _cell(c["dataset"], c["scale"], c["n"], sizes),
            "PSNR (dB)": fmt(c["psnr"], 3),
            "ΔPSNR vs ref (dB)": fmt(c["d_psnr"], 3, True),
            "GFLOPs": fmt(c["gflops"], 3),
            "ΔGFLOPs vs ref (%)": fmt(c["d_gflops_pct"], 1, True),
            "ΔPSNR vs ref re-routed to the row's cost (dB)": fmt(c.get("d_psnr_matched"), 3, True),
            "decoder cost (% of deepest)": fmt(100 * c["rel_cost"], 1),
            "pixels on deepest (%)": fmt(100 * c["deepest_share"], 1),
        }
        for _, c in cells.iterrows()
    ]
    return markdown(rows)


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
    return markdown(rows)


def routers_table(routers: pd.DataFrame, family: str, sizes: Mapping[str, int] | None) -> str:
    """Markdown: the reference routers of one MoEISR model per cell, against routing every pixel to the deepest."""
    part = routers[routers["family"] == family]
    rows = [
        {
            "cell": _cell(r["dataset"], r["scale"], r["n"], sizes),
            "router": r["router"],
            "PSNR (dB)": fmt(r["psnr"], 3),
            "ΔPSNR vs all deepest (dB)": fmt(r["d_psnr"], 3, True),
            "GFLOPs": fmt(r["gflops"], 3),
            "FLOPs saved vs all deepest (%)": fmt(r["saved_pct"], 1),
            "on front": "reference line" if r["router"].startswith("oracle") else ("yes" if r["on_front"] else "no"),
            "below the attainable front (dB; < 0: above it)": fmt(r["front_gap_db"], 3),
        }
        for _, r in part.iterrows()
    ]
    return markdown(rows)


def found_table(routers: pd.DataFrame, level: float | None, sizes: Mapping[str, int] | None) -> str:
    """Markdown: per MoEISR model and cell, the argmax routing's FLOPs saving as % of the oracle's at ε=level."""
    if level is None:
        return "_(no oracle rows)_"
    found = found_share(routers, oracle_name(level))
    rows = [
        {
            "model": f["family"],
            "cell": _cell(f["dataset"], f["scale"], f["n"], sizes),
            "argmax: saved (%)": fmt(f["saved_pct"], 1),
            "argmax: ΔPSNR (dB)": fmt(f["d_psnr"], 3, True),
            f"{oracle_name(level)}: saved (%)": fmt(f["saved_pct_oracle"], 1),
            f"{oracle_name(level)}: ΔPSNR (dB)": fmt(f["d_psnr_oracle"], 3, True),
            "share of the oracle's saving found (%)": fmt(f["found_pct"], 0),
            "argmax − random at its shares (dB)": fmt(f["learned_minus_random_db"], 3, True),
        }
        for _, f in found.iterrows()
    ]
    return markdown(rows)
