"""Recipe v2 (issue 20, item 3): the selection rule of docs/moeisr.md ("Recipe v2: how it is chosen") applied to a
recipe suite's held-out measurements, and the tables that report it.

The rule reads `heldout.csv` (the pipeline's heldout stage: every row's checkpoint on fixed crops of the held-out
split, T91) and `meta.json` (rows, factors, dense targets, the rule's parameters) and nothing else: the benchmark
grid's rows (`rows.csv`, `matched.csv`) are reported beside it, in a section that says they chose nothing.

- `heldout_summary(records, meta)`: one line per row: held-out PSNR per scale and its mean over the scales, decoder
  cost, GFLOPs, FLOPs saved against the base's dense row and ΔPSNR against it and against the reference.
- `select(summary, meta)`: per knob row whether it passes and which value each factor keeps (`decisions`), and per
  MoEISR base the chosen recipe (`recipes`).
- `render_recipe(...)`: `<folder>/{heldout_rows,selection}.csv`, `recipe.json`, `selection.md` (the section
  `tables/ablations.md` includes) and `tables/ablations_<suite>.md`.

All PSNRs in dB (Y channel, shave = scale, as in validation), FLOPs as fvcore counts them (1 MAC = 1 FLOP).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from moeisr.io import atomic_write_text
from moeisr.provenance import header
from moeisr.report.ablations import analysis
from moeisr.report.ablations.tables import FLOPS_NOTE, factors_table, family_label, fmt, markdown

CELL_KEYS = ["image", "scale"]
EPS_DB = 1e-9  # float slack of the rule's comparisons (PSNRs are means of float64 values)
SELECTION_MD = "selection.md"
RECIPE_JSON = "recipe.json"


def _is_text(value) -> bool:
    return isinstance(value, str) and value != ""


def _scale_name(scale: float) -> str:
    return f"x{scale:g}"


# ------------------------------------------------------------------------------------------- summary


def current_records(heldout: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The held-out records of the checkpoints meta.json lists (a retrained row's stale records are dropped)."""
    if heldout.empty:
        return heldout
    hashes = {r["row"]: r["ckpt_hash"] for r in meta["rows"]}
    keep = [hashes.get(row) == h for row, h in zip(heldout["row"], heldout["ckpt_hash"], strict=True)]
    return heldout[keep].reset_index(drop=True)


def heldout_summary(records: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """One line per row of meta.json with held-out records, in its order: row, base, factor, factor_label, value,
    reference, dense (the base's dense row), n (crops per scale), psnr_<xs> per scale and psnr (their mean),
    gflops (mean over the scales of the per-scale means), rel_cost (same; NaN for dense rows), and against the dense
    row on the crops both have: saved_pct (mean over the scales of 100·(1 − GFLOPs/GFLOPs_dense)), d_psnr_equal
    (mean) and d_psnr_equal_min (its worst scale); against the reference: d_psnr_ref (mean over the scales)."""
    if records.empty:
        return pd.DataFrame()
    records = records.drop_duplicates(["row", *CELL_KEYS], keep="last")
    scales = sorted(records["scale"].unique())
    rows = [r for r in meta["rows"] if r["row"] in set(records["row"])]
    dense = {r["dense_for"]: r["row"] for r in meta["rows"] if _is_text(r.get("dense_for"))}
    by_row = {name: part.set_index(CELL_KEYS) for name, part in records.groupby("row", sort=False)}

    def per_scale(mine: pd.DataFrame, other: pd.DataFrame | None, column: str, fn: Callable) -> list[float]:
        values = []
        for scale in scales:
            a = mine.xs(scale, level="scale")
            if other is None:
                values.append(float(a[column].mean()) if column in a and len(a) else math.nan)
                continue
            b = other.xs(scale, level="scale")
            common = a.index.intersection(b.index)
            values.append(fn(a.loc[common], b.loc[common]) if len(common) else math.nan)
        return values

    lines = []
    for r in rows:
        mine = by_row[r["row"]]
        line = {k: r.get(k) for k in ("row", "base", "factor", "factor_label", "value", "reference", "dense_for")}
        line["dense"] = dense.get(r["base"])
        line["n"] = int(mine.groupby(level="scale").size().min())
        psnr = per_scale(mine, None, "psnr", None)
        for scale, value in zip(scales, psnr, strict=True):
            line[f"psnr_{_scale_name(scale)}"] = value
        line["psnr"] = float(np.mean(psnr))
        line["gflops"] = float(np.nanmean(per_scale(mine, None, "gflops", None))) if "gflops" in mine else math.nan
        rel = per_scale(mine, None, "rel_cost", None) if "rel_cost" in mine else [math.nan]
        line["rel_cost"] = float(np.mean(rel)) if not all(map(math.isnan, rel)) else math.nan
        target = by_row.get(line["dense"]) if line["dense"] else None
        if target is not None and "gflops" in mine and "gflops" in target:
            saved = per_scale(
                mine, target, "gflops", lambda a, b: 100.0 * (1 - a["gflops"].mean() / b["gflops"].mean())
            )
            d_eq = per_scale(mine, target, "psnr", lambda a, b: float(a["psnr"].mean() - b["psnr"].mean()))
            line.update(saved_pct=float(np.mean(saved)), d_psnr_equal=float(np.mean(d_eq)), d_psnr_equal_min=min(d_eq))
        else:
            line.update(saved_pct=math.nan, d_psnr_equal=math.nan, d_psnr_equal_min=math.nan)
        reference = by_row.get(r["reference"])
        d_ref = per_scale(mine, reference, "psnr", lambda a, b: float(a["psnr"].mean() - b["psnr"].mean()))
        line["d_psnr_ref"] = float(np.mean(d_ref)) if reference is not None else math.nan
        lines.append(line)
    return pd.DataFrame(lines)


# ------------------------------------------------------------------------------------------- the rule


def select(summary: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, list[dict]]:
    """The rule (docs/moeisr.md, "Recipe v2: how it is chosen"), per MoEISR base of the summary:

    1. a knob row *passes* if its FLOPs saved against the dense row are >= min_saved_pct and its PSNR is >= the
       reference's + min_gain_db, or, when the reference's own saving is below min_saved_pct, >= the reference's −
       tolerance_db;
    2. per factor, the passing row with the highest PSNR wins; rows within min_gain_db of it tie, and a tie goes to the
       larger saving, then to the row listed first in the suite;
    3. v2 = the reference's settings with every winner's values; no winner: v2 = v1;
    4. two or more winners: the combination is untested until a row of `combined_factor` with exactly those values
       has run; it is then v2 if it passes (1) and its PSNR is >= the best winner's − min_gain_db, else the best
       winner alone is v2. Until then the best winner is the fallback.

    Returns (decisions: one line per knob row with admissible, passes, winner and a reason; recipes: one dict per
    base with the reference's numbers, the winners, the merged settings, the status and the chosen row)."""
    rule = meta["selection"]
    gain, floor, tolerance = rule["min_gain_db"], rule["min_saved_pct"], rule["tolerance_db"]
    combined = rule.get("combined_factor")
    settings = {r["row"]: r.get("set") or {} for r in meta["rows"]}
    decisions, recipes = [], []
    if summary.empty:
        return pd.DataFrame(), []
    order = {name: i for i, name in enumerate(r["row"] for r in meta["rows"])}
    for base, part in summary.groupby("base", sort=False):
        if _is_text(part["dense_for"].iloc[0]):
            continue  # a dense row: the target, not a candidate
        reference = part[part["factor"].isna() | (part["factor"] == "")]
        if reference.empty:
            continue
        ref = reference.iloc[0]
        ref_ok = _admissible(ref, floor)
        threshold = ref["psnr"] + gain if ref_ok else ref["psnr"] - tolerance
        knobs = part[part["factor"].apply(_is_text) & (part["factor"] != combined)]
        winners = []
        for factor, rows in knobs.groupby("factor", sort=False):
            lines = [_decision(r, ref_ok, threshold, floor, gain, tolerance) for _, r in rows.iterrows()]
            passing = [(line, r) for line, (_, r) in zip(lines, rows.iterrows(), strict=True) if line["passes"]]
            if passing:
                best = max(r["psnr"] for _, r in passing)
                tied = [(line, r) for line, r in passing if r["psnr"] >= best - gain - EPS_DB]
                line, winner = min(tied, key=lambda t: (-_saved(t[1]), order.get(t[1]["row"], 0)))
                line["winner"] = True
                line["reason"] += "; kept" + (f" (tie within {gain:g} dB: larger saving, then listed first)"
                                              if len(tied) > 1 else "")  # fmt: skip
                winners.append(winner)
            decisions += [{"base": base, "factor": factor, **line} for line in lines]
        recipes.append(_recipe(base, ref, ref_ok, winners, part, combined, settings, gain, floor, threshold))
    return pd.DataFrame(decisions), recipes


def _saved(row) -> float:
    value = row.get("saved_pct")
    return -math.inf if value is None or math.isnan(value) else float(value)


def _admissible(row, floor: float) -> bool:
    return _saved(row) >= floor - EPS_DB


def _decision(row, ref_ok: bool, threshold: float, floor: float, gain: float, tolerance: float) -> dict:
    """One knob row's line of the decision table: admissible (the cost floor), passes (rule step 1) and why."""
    admissible = _admissible(row, floor)
    good = row["psnr"] >= threshold - EPS_DB
    if _saved(row) == -math.inf:
        reason = "no FLOPs saved against a dense row (the dense row is not measured)"
    elif not admissible:
        reason = f"saves {_saved(row):.1f}% < {floor:g}%"
    elif not good:
        need = f"+{gain:g}" if ref_ok else f"−{tolerance:g}"
        reason = f"ΔPSNR vs ref {row['d_psnr_ref']:+.3f} dB, below the {need} dB the rule asks"
    else:
        reason = "passes"
    return {"row": row["row"], "value": row["value"], "psnr": row["psnr"], "d_psnr_ref": row["d_psnr_ref"],
            "saved_pct": row["saved_pct"], "admissible": admissible, "passes": admissible and good,
            "winner": False, "reason": reason}  # fmt: skip


def _recipe(base, ref, ref_ok, winners, part, combined, settings, gain, floor, threshold) -> dict:
    """The chosen recipe of one base (rule steps 3 and 4)."""
    merged: dict = {}
    for w in winners:
        merged.update(settings.get(w["row"], {}))
    best = max(winners, key=lambda w: (w["psnr"], _saved(w))) if winners else None
    out = {
        "base": base,
        "reference": ref["row"],
        "reference_psnr": float(ref["psnr"]),
        "reference_saved_pct": None if _saved(ref) == -math.inf else _saved(ref),
        "reference_admissible": ref_ok,
        "winners": [
            {"factor": w["factor"], "row": w["row"], "value": w["value"], "set": settings.get(w["row"], {})}
            for w in winners
        ],  # fmt: skip
        "set": merged,
        "fallback": best["row"] if best is not None and len(winners) > 1 else None,
    }
    if not winners:
        out.update(status="v1", chosen=ref["row"])
        return out
    if len(winners) == 1:
        out.update(status="one knob", chosen=winners[0]["row"])
        return out
    combos = part[(part["factor"] == combined)] if combined else part.iloc[0:0]
    combos = [c for _, c in combos.iterrows() if settings.get(c["row"], {}) == merged]
    if not combos:
        out.update(status="combined, untested", chosen=None)
        return out
    combo = combos[0]
    ok = _admissible(combo, floor) and combo["psnr"] >= threshold - EPS_DB and combo["psnr"] >= best["psnr"] - gain
    out.update(status="combined, confirmed" if ok else "combined, refused", chosen=combo["row"] if ok else best["row"],
               combined_row=combo["row"])  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------- tables


def _rule_line(meta: dict) -> str:
    rule, split = meta["selection"], meta["heldout"]
    crops = f"one fixed {split['crop']} px crop per image" if split["crop"] else "whole images"
    limit = "" if split["limit"] is None else f", first {split['limit']} images"
    scales = ", ".join(f"×{s:g}" for s in split["scales"])
    return (
        f"Chosen on the held-out split alone: {split['set']} ({crops}{limit}) at {scales}; no benchmark set is read. "
        f"A knob row passes if it saves ≥ {rule['min_saved_pct']:g}% of the FLOPs of its dense equal-budget row on "
        f"the same crops and its PSNR (mean over the scales) beats the reference's by ≥ {rule['min_gain_db']:g} dB "
        f"(when the reference itself saves less, loses ≤ {rule['tolerance_db']:g} dB); per factor the best passing "
        f"row is kept (within {rule['min_gain_db']:g} dB: the larger saving, then the first listed); the kept values "
        'make v2, and none kept means v2 = v1. The rule is docs/moeisr.md\'s ("Recipe v2: how it is chosen").'
    )


def selection_table(summary: pd.DataFrame, decisions: pd.DataFrame, scales: list[str]) -> str:
    """Markdown: every row of the summary with its held-out numbers and, for knob rows, the rule's decision."""
    by_row = decisions.set_index("row") if len(decisions) else pd.DataFrame()
    rows = []
    for _, r in summary.iterrows():
        is_dense, is_ref = _is_text(r.get("dense_for")), not _is_text(r["factor"])
        d = by_row.loc[r["row"]] if r["row"] in by_row.index else None
        line = {
            "model": family_label(r["base"]) if not is_dense else f"dense ({r['base']})",
            "factor": "dense equal-budget row" if is_dense else ("reference" if is_ref else r["factor_label"]),
            "value": "–" if is_dense or is_ref else r["value"],
            "row": f"`{r['row']}`",
        }
        for name in scales:
            line[f"PSNR {name.replace('x', '×')} (dB)"] = fmt(r[f"psnr_{name}"], 3)
        line.update({
            "PSNR mean (dB)": fmt(r["psnr"], 3),
            "ΔPSNR vs ref (dB)": "–" if is_ref else fmt(r["d_psnr_ref"], 3, True),
            "ΔPSNR vs dense row (dB), mean [worst scale]": "–" if is_dense else
            f"{fmt(r['d_psnr_equal'], 3, True)} [{fmt(r['d_psnr_equal_min'], 3, True)}]",
            "decoder cost (% of deepest)": fmt(100 * r["rel_cost"], 1),
            "FLOPs saved vs dense row (%)": "–" if is_dense else fmt(r["saved_pct"], 1),
            "rule": "–" if d is None else ("**kept**" if d["winner"] else ("passes" if d["passes"] else "no")),
            "why": "–" if d is None else d["reason"],
        })  # fmt: skip
        rows.append(line)
    return markdown(rows)


def recipe_lines(recipes: list[dict], meta: dict) -> list[str]:
    """One bullet per base: the chosen recipe, its status and, for a reference that misses the floor, that fact."""
    floor = meta["selection"]["min_saved_pct"]
    lines = []
    for r in recipes:
        name = family_label(r["base"])
        saved = "not measured" if r["reference_saved_pct"] is None else f"{r['reference_saved_pct']:.1f}%"
        floor_note = (
            "" if r["reference_admissible"] else f" v1 itself saves {saved} (< {floor:g}%) on the held-out crops."
        )
        changes = "; ".join(f"`{k}: {json.dumps(v)}` (`{w['row']}`)" for w in r["winners"] for k, v in w["set"].items())
        if r["status"] == "v1":
            text = f"**v2 = v1** (`{r['reference']}`): no knob row passed.{floor_note}"
        elif r["status"] == "one knob":
            text = f"**v2 = v1 with {changes}**.{floor_note}"
        elif r["status"] == "combined, untested":
            factor = meta["selection"].get("combined_factor")
            text = (
                f"**v2 = v1 with {changes}**: the combination is untested; add a `{factor}` row with these values. "
                f"Until it has run, the fallback is `{r['fallback']}` alone.{floor_note}"
            )
        else:
            verdict = "confirmed" if r["status"] == "combined, confirmed" else "refused, so the best single knob stays"
            text = (
                f"**v2 = `{r['chosen']}`**: the combination ({changes}) was trained as `{r['combined_row']}` and "
                f"{verdict}.{floor_note}"
            )
        lines.append(f"- {name}: {text}")
    return lines or ["_(no MoEISR row has held-out results yet)_"]


def missing_rows(summary: pd.DataFrame, meta: dict) -> list[str]:
    """The profile's rows (`meta['planned_rows']`) without held-out numbers in `summary`: while any is missing, the
    rule has run on part of the suite and its choice is provisional."""
    measured = set(summary["row"]) if len(summary) else set()
    return [r for r in meta["planned_rows"] if r not in measured]


def selection_markdown(
    summary: pd.DataFrame, decisions: pd.DataFrame, recipes: list[dict], meta: dict, missing: list[str] | None = None
) -> str:
    """The "Recipe v2" section (`selection.md`), which tables/ablations.md includes. missing: `missing_rows`, when
    the caller has it already."""
    scales = [c.removeprefix("psnr_") for c in summary.columns if c.startswith("psnr_x")] if len(summary) else []
    lines = [f"## Recipe v2: chosen on the held-out split ({meta['suite']} suite)", "", _rule_line(meta), ""]
    missing = missing_rows(summary, meta) if missing is None else missing
    if missing:
        planned = len(meta["planned_rows"])
        lines += [f"**Provisional**: {len(missing)} of {planned} rows have no held-out numbers yet "
                  f"({', '.join(f'`{r}`' for r in missing)}); the rule ran on the others, so the choice below may "
                  "change once they have.", ""]  # fmt: skip
    lines += ["### Chosen recipe", "", *recipe_lines(recipes, meta), ""]
    lines += ["### Held-out rows", ""]
    lines += [selection_table(summary, decisions, scales) if len(summary) else "_(no held-out results yet)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def equal_budget_cells(rows: pd.DataFrame, meta_rows: pd.DataFrame) -> pd.DataFrame:
    """`analysis.factor_cells` with each MoEISR row compared with its base's dense row instead of its reference: the
    benchmark grid's ΔPSNR and ΔGFLOPs against the dense equal-budget target (reporting only)."""
    dense = {r["dense_for"]: r["row"] for _, r in meta_rows.iterrows() if _is_text(r.get("dense_for"))}
    moe = meta_rows[meta_rows["base"].isin(list(dense))].copy()
    if moe.empty:
        return pd.DataFrame()
    moe["reference"] = moe["base"].map(dense)
    return analysis.factor_cells(rows, moe)


def equal_budget_table(cells: pd.DataFrame) -> str:
    """Markdown: each MoEISR row against its dense row on the benchmark grid, mean and per-cell range (reporting)."""
    if cells.empty:
        return "_(no benchmark rows with a dense row yet)_"
    rows = []
    for name, part in cells.groupby("row", sort=False):
        d_psnr, saved = part["d_psnr"], 0.0 - part["d_gflops_pct"]  # 0.0 − x: no "-0.0" for an equal count
        rows.append(
            {
                "row": f"`{name}`",
                "cells": str(len(part)),
                "ΔPSNR vs dense row (dB), mean [min, max]": (
                    f"{fmt(d_psnr.mean(), 3, True)} [{fmt(d_psnr.min(), 3, True)}, {fmt(d_psnr.max(), 3, True)}]"
                ),
                "FLOPs saved vs dense row (%), mean [min, max]": (
                    f"{fmt(saved.mean(), 1)} [{fmt(saved.min(), 1)}, {fmt(saved.max(), 1)}]"
                ),
            }
        )
    return markdown(rows)


def budget_line(meta: dict) -> str:
    """The rows' fine-tuning budget, from the steps their checkpoints record; a warning when they differ."""
    steps = sorted({int(r["steps"]) for r in meta["rows"] if r.get("steps") is not None})
    if not steps:
        return "No row has a checkpoint yet."
    if len(steps) > 1:
        return (f"**Warning: the rows trained for different step counts ({', '.join(map(str, steps))})**, so they are "
                "not comparable as they stand; re-run the train stage.")  # fmt: skip
    return (
        f"**One budget for every row**: each row, the references and the dense rows included, fine-tunes {steps[0]} "
        "steps from the trained backbone the main job uses; a row is compared with its reference and its dense row, "
        "never with the main models. One training seed per row."
    )


def recipe_markdown(section: str, frames: Mapping[str, pd.DataFrame], meta: dict, command: str | None) -> str:
    """tables/ablations_<suite>.md: provenance, budget, the selection section, then the benchmark grid's tables
    (reporting only)."""
    factors, cells, equal = frames["factors"], frames["factor_cells"], frames["equal_cells"]
    grid = meta["grid"]
    lines = [f"# Ablations: the {meta['suite']} suite", "", header(meta["commit"], meta["profile"],
             command or meta.get("command")), ""]  # fmt: skip
    lines += ["## Budget", "", budget_line(meta), ""]
    lines += [section.rstrip(), ""]
    lines += ["## Benchmark grid (reporting only: never used to choose)", ""]
    lines += [
        "Sets " + ", ".join(grid["sets"]) + "; scales " + ", ".join(f"×{s:g}" for s in grid["scales"]) + ". "
        f"_{FLOPS_NOTE}._",
        "",
        "### Against the reference, with the matched-cost column", "",
        factors_table(factors) if not factors.empty else "_(no rows yet)_", "",
        "### Against the dense equal-budget row", "",
        equal_budget_table(equal), "",
    ]  # fmt: skip
    if not cells.empty:
        folder = Path("ablations") / meta["suite"]
        lines += [f"_Per cell: `{folder / 'factor_cells.csv'}` (against the reference), `{folder / 'equal_cells.csv'}` "
                  "(against the dense row)._", ""]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def render_recipe(results: Path, folder: Path, raw, command: str | None, log: Callable[[str], None]) -> list[Path]:
    """Apply the rule and write its outputs (module docstring); returns the files written."""
    frames_raw, meta = raw
    heldout = analysis.read_summary_if_any(folder / "heldout.csv")
    records = current_records(heldout, meta)
    summary = heldout_summary(records, meta)
    decisions, recipes = select(summary, meta)
    rows_meta = pd.DataFrame(meta["rows"])
    rows, matched = frames_raw["rows"], frames_raw["matched"]
    cells = analysis.factor_cells(rows, rows_meta, matched) if len(rows_meta) and len(rows) else pd.DataFrame()
    factors = analysis.factor_summary(cells, rows_meta.drop(columns=["set"], errors="ignore")) if len(cells) else cells
    equal = equal_budget_cells(rows, rows_meta) if len(rows_meta) and len(rows) else pd.DataFrame()
    missing = missing_rows(summary, meta)
    section = selection_markdown(summary, decisions, recipes, meta, missing)
    if missing:
        log(f"[report] WARNING: provisional selection: {len(missing)} rows have no held-out numbers yet "
            f"({', '.join(missing)})")  # fmt: skip
    written = [
        atomic_write_text(folder / "heldout_rows.csv", summary.to_csv(index=False)),
        atomic_write_text(folder / "selection.csv", decisions.to_csv(index=False)),
        atomic_write_text(folder / "factor_cells.csv", cells.to_csv(index=False)),
        atomic_write_text(folder / "factors.csv", factors.to_csv(index=False)),
        atomic_write_text(folder / "equal_cells.csv", equal.to_csv(index=False)),
        atomic_write_text(
            folder / RECIPE_JSON,
            json.dumps(
                {
                    "selection": meta["selection"],
                    "heldout": meta["heldout"],
                    "complete": not missing,
                    "missing_rows": missing,
                    "recipes": recipes,
                },  # fmt: skip
                indent=1,
                ensure_ascii=False,
                default=str,
            )
            + "\n",
        ),  # fmt: skip
        atomic_write_text(folder / SELECTION_MD, section),
    ]
    frames = {"factors": factors, "factor_cells": cells, "equal_cells": equal}
    table = results / "tables" / f"ablations_{meta['suite']}.md"
    written.append(atomic_write_text(table, recipe_markdown(section, frames, meta, command)))
    log(f"[report] wrote {', '.join(str(p) for p in written)}")
    return written


def included_sections(results: Path) -> str:
    """The selection sections of every recipe suite under `<results>/ablations/*/` (sorted), for tables/ablations.md;
    '' when there is none."""
    parts = [p.read_text(encoding="utf-8") for p in sorted((Path(results) / "ablations").glob(f"*/{SELECTION_MD}"))]
    return "".join("\n" + part for part in parts)
