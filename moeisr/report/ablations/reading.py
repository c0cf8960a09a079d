"""The ablations' readings, tables first: every comparison is a row of a verdict table computed from the summaries,
and each section adds at most three short sentences whose numbers are formatted from that table's cells.

- `factor_verdicts(summary)`: per factor row, ΔPSNR and ΔGFLOPs against its reference, ΔPSNR against the reference
  re-routed to the row's decoder cost (where measured), the two floors with what set them and the verdict.
- `sweep_comparisons(points, routers, level)`: per MoEISR model, the routing sweep's comparisons (knob range, the
  argmax routing against the attainable front, against random routing at its shares and against the oracle).
- `reading_markdown(...)`: the Reading subsections of tables/ablations.md and of REPORT.md's ablation section.

Verdicts (docs/ablations.md, "Reading"): each axis counts only beyond its floor; the quality axis is the ΔPSNR at the
re-routed reference's cost where measured (the factor moved the cost/quality curve), else at the row's own cost.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import pandas as pd

from moeisr.metrics.paired import paired_bootstrap
from moeisr.report.ablations.tables import NOISE_FACTOR, default_oracle, family_label, fmt, markdown, oracle_name

NOTABLE_DB = 0.05  # a change counts if it moves PSNR by more than this much (mean over the cells) ...
NOTABLE_PCT = 5.0  # ... or the GFLOPs by more than this many percent; our thresholds, raised to the measured noise
NOISE_VERDICT = "noise"  # the verdict of a noise row (the reference retrained with another seed): it sets the floor
MAX_SENTENCES = 3  # per section
COMPARE_DIGITS = {"dB": 3, "%": 1}


def _is_factor(value) -> bool:
    return isinstance(value, str)


# ------------------------------------------------------------------------------------------- factors


def floors(part: pd.DataFrame) -> dict:
    """One base's floors: floor_db (PSNR, dB) and floor_pct (GFLOPs, %), each our threshold or, when larger, the
    largest |mean effect| of its noise rows, with floor_db_by / floor_pct_by = 'threshold' or 'noise'."""
    noise = part[part["factor"] == NOISE_FACTOR]
    out = {}
    for axis, column, threshold in (("db", "d_psnr", NOTABLE_DB), ("pct", "d_gflops_pct", NOTABLE_PCT)):
        measured = float(noise[column].abs().max()) if len(noise) else 0.0
        out[f"floor_{axis}"], out[f"floor_{axis}_by"] = (
            (measured, "noise") if measured > threshold else (threshold, "threshold")
        )
    return out


def _sign(value: float, floor: float) -> int:
    return 0 if abs(value) <= floor else (1 if value > 0 else -1)


def verdict(
    quality_db: float,
    d_gflops_pct: float,
    at_matched_cost: bool,
    floor_db: float,
    floor_pct: float,
    interval: tuple[float, float] | None = None,
) -> str:
    """better / worse (quality beyond its floor and, given its 95% `interval`, that interval excluding 0; at its own
    cost only if the cost did not move the same way), trade-off (better but costlier, or cheaper but worse, at its
    own cost), cheaper / costlier (the quality not a finding: only the operating point moved), neutral (neither)."""
    q, c = _quality_sign(quality_db, floor_db, interval)[0], _sign(d_gflops_pct, floor_pct)
    if q:
        if at_matched_cost or c != q:
            return "better" if q > 0 else "worse"
        return "trade-off"
    return {-1: "cheaper", 1: "costlier"}.get(c, "neutral")


def _quality_sign(quality_db: float, floor_db: float, interval: tuple[float, float] | None) -> tuple[int, str]:
    """(sign of the quality axis, what decided it): 0 when the interval holds 0 ('interval') or |quality| is within
    the floor ('floor'); without an interval the floor alone decides."""
    if interval is not None and interval[0] <= 0 <= interval[1]:
        return 0, "interval"
    if abs(quality_db) <= floor_db:
        return 0, "floor"
    return (1 if quality_db > 0 else -1), ("interval" if interval is not None else "floor")


def _interval(r, measured: bool) -> tuple[float, float] | None:
    """The 95% CI of the quality axis of a summary line (matched cost where measured), or None if not computed."""
    lo, hi = ("matched_ci_lo", "matched_ci_hi") if measured else ("ci_lo", "ci_hi")
    value = r.get(lo)
    return None if value is None or value != value else (float(value), float(r[hi]))


def factor_verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    """One line per factor row of `summary` (`analysis.factor_summary`, or factors.csv read back, with the
    `analysis.row_intervals` columns when computed), in its order: base, factor_label, row, value, reference_value,
    d_psnr, d_gflops_pct, d_psnr_matched, quality_db (the matched ΔPSNR where measured, else d_psnr) with its 95%
    interval quality_lo / quality_hi (NaN if not computed) and what decided the PSNR axis (psnr_decided_by:
    'interval', or 'floor (threshold|noise)'), the floors (`floors`) and verdict (`verdict`; NOISE_VERDICT for noise
    rows)."""
    columns = ["base", "factor", "factor_label", "row", "value", "reference_value", "d_psnr", "d_gflops_pct"]
    lines = []
    if summary.empty:
        return pd.DataFrame(lines)
    for _, part in summary.groupby("base", sort=False):
        limits = floors(part)
        for _, r in part[part["factor"].apply(_is_factor)].iterrows():
            matched = r.get("d_psnr_matched")
            measured = matched is not None and not math.isnan(matched)
            quality = float(matched) if measured else float(r["d_psnr"])
            interval = _interval(r, measured)
            decided = _quality_sign(quality, limits["floor_db"], interval)[1]
            word = (
                NOISE_VERDICT
                if r["factor"] == NOISE_FACTOR
                else verdict(quality, r["d_gflops_pct"], measured, limits["floor_db"], limits["floor_pct"], interval)
            )
            line = {c: r[c] for c in columns}
            line.update(d_psnr_matched=float(matched) if measured else math.nan, quality_db=quality, **limits)
            line.update(
                quality_lo=interval[0] if interval else math.nan,
                quality_hi=interval[1] if interval else math.nan,
                psnr_decided_by=f"floor ({limits['floor_db_by']})" if decided == "floor" else decided,
            )
            line["verdict"] = word
            lines.append(line)
    return pd.DataFrame(lines)


def _floor(value: float, by: str, digits: int) -> str:
    return f"{fmt(value, digits)} ({by})"


def _ci(v) -> str:
    """A verdict line's quality interval as text ("–" when not computed)."""
    lo = v.get("quality_lo")
    return "–" if lo is None or lo != lo else f"[{fmt(lo, 3, True)}, {fmt(v['quality_hi'], 3, True)}]"


def factor_verdicts_table(verdicts: pd.DataFrame) -> str:
    """Markdown: one base's verdict lines."""
    rows = []
    for _, v in verdicts.iterrows():
        noise = v["verdict"] == NOISE_VERDICT
        rows.append(
            {
                "factor": v["factor_label"],
                "row": f"`{v['row']}`",
                "value (reference's)": f"{v['value']} ({v['reference_value']})",
                "ΔPSNR (dB)": fmt(v["d_psnr"], 3, True),
                "ΔGFLOPs (%)": fmt(v["d_gflops_pct"], 1, True),
                "ΔPSNR vs ref re-routed to the row's cost (dB)": fmt(v["d_psnr_matched"], 3, True),
                "PSNR axis: 95% CI (dB)": _ci(v),
                "PSNR axis decided by": "–" if noise else v["psnr_decided_by"],
                "PSNR floor (dB)": "–" if noise else _floor(v["floor_db"], v["floor_db_by"], 3),
                "GFLOPs floor (%)": "–" if noise else _floor(v["floor_pct"], v["floor_pct_by"], 1),
                "verdict": v["verdict"],
            }
        )
    return markdown(rows)


def factor_sentences(verdicts: pd.DataFrame) -> list[str]:
    """At most three sentences on one base's verdict lines: the floors and the rule, the rows by verdict, the
    largest effects."""
    if verdicts.empty:
        return []
    first = verdicts.iloc[0]
    sentences = [
        "The PSNR axis (the ΔPSNR against the re-routed reference where there is one) counts only when its 95% "
        f"paired interval excludes 0 and it passes {fmt(first['floor_db'], 3)} dB (set by the {first['floor_db_by']}); "
        f"the GFLOPs axis beyond {fmt(first['floor_pct'], 1)}% (set by the {first['floor_pct_by']})."
    ]
    factors = verdicts[verdicts["verdict"] != NOISE_VERDICT]
    if factors.empty:
        return sentences
    groups = factors.groupby("verdict", sort=False)["row"].agg(list)
    order = ["better", "worse", "trade-off", "cheaper", "costlier", "neutral"]
    findings = factors.set_index("row")

    def named(row: str) -> str:  # a better/worse verdict cites its interval
        v = findings.loc[row]
        return f"{row} {_ci(v)}" if v["verdict"] in ("better", "worse", "trade-off") and _ci(v) != "–" else row

    sentences.append(
        "Verdicts: "
        + "; ".join(f"{word}: {', '.join(named(r) for r in groups[word])}" for word in order if word in groups)
        + "."
    )
    quality = factors.loc[factors["quality_db"].abs().idxmax()]
    cost = factors.loc[factors["d_gflops_pct"].abs().idxmax()]
    sentences.append(
        f"Largest PSNR effect: {quality['row']} ({quality['factor_label']}), {fmt(quality['quality_db'], 3, True)} "
        f"dB; largest GFLOPs change: {cost['row']} ({cost['factor_label']}), {fmt(cost['d_gflops_pct'], 1, True)}%."
    )
    return sentences


# ------------------------------------------------------------------------------------------- sweep


def _per_cell(frame: pd.DataFrame, value) -> pd.Series:
    """`value(cell)` for each (dataset, scale) cell of `frame`."""
    return pd.Series([value(cell) for _, cell in frame.groupby(["dataset", "scale"], sort=False)], dtype=float)


def sweep_comparisons(
    points: pd.DataFrame, routers: pd.DataFrame, level: float | None, intervals: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per MoEISR model (`family`), the sweep's comparisons, one line each: comparison, unit ('dB' or '%'), mean,
    min and max over the set×scale cells, floor (dB, NaN where no verdict applies) and verdict ('' where none).

    - all cheapest: GFLOPs (% of all deepest); knob: PSNR range (dB), the learned knob's span per cell;
    - argmax: below the attainable front (dB): verdict 'on front' in every cell, else 'below front';
    - learned knobs between the extremes on the front (%);
    - argmax − random at the argmax's shares (dB): verdict better / worse / neutral against NOTABLE_DB and its 95%
      paired bootstrap interval (ci_lo, ci_hi; NaN on the lines without a verdict) over the images where
      `intervals` (`analysis.sweep_intervals`) has the model, else over the cells (ci_over: "38 images", "4 cells");
    - argmax and the oracle at ε = `level` (and at ε = 0): FLOPs saved vs all deepest (%), ΔPSNR vs all deepest (dB);
      argmax: share of the oracle's saving found (%).
    """
    lines = []
    if points.empty:
        return pd.DataFrame(lines)

    def add(family, comparison, unit, values: pd.Series, floor=math.nan, word="", interval=(math.nan,) * 3 + ("",)):
        values = values.dropna()
        if len(values):
            lines.append({"family": family, "comparison": comparison, "unit": unit, "mean": values.mean(),
                          "min": values.min(), "max": values.max(), "floor": floor, "verdict": word,
                          "ci_mean": interval[0], "ci_lo": interval[1], "ci_hi": interval[2],
                          "ci_over": interval[3]})  # fmt: skip

    per_image = (
        intervals.set_index("family") if intervals is not None and len(intervals) else pd.DataFrame()
    )  # the argmax − random pairs per image, where the sweep's rows gave them

    for family, part in points.groupby("family", sort=False):
        learned = part[part["router"] == "learned"]
        if learned.empty:
            continue
        add(family, "all cheapest: GFLOPs (% of all deepest)", "%",
            _per_cell(learned, lambda c: 100 * c["gflops"].min() / c["gflops"].max()))  # fmt: skip
        add(family, "knob: PSNR range (dB)", "dB", _per_cell(learned, lambda c: c["psnr"].max() - c["psnr"].min()))
        argmax = learned[learned["knob"] == "none"]
        if len(argmax):
            word = "on front" if argmax["on_front"].all() else "below front"
            add(family, "argmax: below the attainable front (dB)", "dB", argmax["front_gap_db"].reset_index(drop=True),
                word=word)  # fmt: skip
        between = learned[~learned["knob"].isin(["inf", "-inf", "none"])]
        if len(between):
            add(family, "learned knobs between the extremes on the front (%)", "%",
                _per_cell(between, lambda c: 100 * c["on_front"].mean()))  # fmt: skip
        here = routers[routers["family"] == family] if len(routers) else routers
        pick = functools.partial(_pick, here)
        diff = (pick("learned argmax", "psnr") - pick("random, argmax shares", "psnr")).dropna()
        if len(diff):  # its interval resamples the images where they are known, else the cells
            if family in per_image.index:
                line = per_image.loc[family]
                interval = (line["mean"], line["ci_lo"], line["ci_hi"], f"{int(line['pairs'])} images")
            else:
                stats = paired_bootstrap(diff)
                interval = (stats.mean, stats.lo, stats.hi, f"{stats.n} cells")
            word = verdict(interval[0], 0.0, True, NOTABLE_DB, NOTABLE_PCT, interval[1:3])
            add(family, "argmax − random at the argmax's shares (dB)", "dB", diff, NOTABLE_DB, word, interval)
        oracles = [level] + ([0.0] if level not in (None, 0.0) else [])
        for router in ["learned argmax"] + [oracle_name(v) for v in oracles if v is not None]:
            name = "argmax" if router == "learned argmax" else router
            add(family, f"{name}: FLOPs saved vs all deepest (%)", "%", pick(router, "saved_pct"))
            add(family, f"{name}: ΔPSNR vs all deepest (dB)", "dB", pick(router, "d_psnr"))
        if level is not None:
            saved = pick(oracle_name(level), "saved_pct")
            found = (100 * pick("learned argmax", "saved_pct") / saved.where(saved > 0)).dropna()
            add(family, f"argmax: share of the {oracle_name(level)} saving found (%)", "%", found)
    return pd.DataFrame(lines)


def _pick(routers: pd.DataFrame, router: str, column: str) -> pd.Series:
    """`column` of one router's lines of `routers` by (dataset, scale)."""
    chosen = routers[routers["router"] == router] if len(routers) else routers
    return chosen.set_index(["dataset", "scale"])[column] if len(chosen) else pd.Series(dtype=float)


def _value(c, key: str) -> str:
    signed = c["unit"] == "dB" and ("Δ" in c["comparison"] or "−" in c["comparison"])
    return fmt(c[key], COMPARE_DIGITS[c["unit"]], signed)


def _sweep_ci(c, with_mean: bool = True) -> str:
    """A sweep line's 95% interval as text, with what it resamples and (`with_mean`) the mean it is around ("–" for
    lines without a verdict)."""
    lo = c.get("ci_lo", math.nan)
    if lo != lo:
        return "–"
    mean = f", mean {_value(c, 'ci_mean')}" if with_mean else ""
    over = f" over {c['ci_over']}{mean}" if c.get("ci_over") else ""
    return f"[{_value(c, 'ci_lo')}, {_value(c, 'ci_hi')}]{over}"


def sweep_comparisons_table(comparisons: pd.DataFrame) -> str:
    """Markdown: the sweep's comparison lines."""
    rows = [
        {
            "model": c["family"],
            "comparison": c["comparison"],
            "mean over cells": _value(c, "mean"),
            "per cell [min, max]": f"[{_value(c, 'min')}, {_value(c, 'max')}]",
            "95% CI": _sweep_ci(c),
            "floor (dB)": fmt(c["floor"], 3) if c["floor"] == c["floor"] else "–",
            "verdict": c["verdict"] or "–",
        }
        for _, c in comparisons.iterrows()
    ]
    return markdown(rows)


def sweep_sentences(comparisons: pd.DataFrame, level: float | None) -> list[str]:
    """At most three sentences: the argmax against the front, against random routing, the share of the oracle's
    saving it finds; each per MoEISR model, numbers as in the table."""
    if comparisons.empty:
        return []

    def lines(prefix: str) -> pd.DataFrame:
        return comparisons[comparisons["comparison"].str.startswith(prefix)]

    sentences = []
    front = lines("argmax: below the attainable front")
    if len(front):
        below = "below it by up to {} dB"
        parts = [
            f"{c['family']} " + (c["verdict"] if c["verdict"] == "on front" else below.format(_value(c, "max")))
            for _, c in front.iterrows()
        ]
        sentences.append(f"The argmax routing against the attainable Pareto front: {'; '.join(parts)}.")
    random = lines("argmax − random")
    if len(random):
        parts = [
            f"{c['family']} {_value(c, 'ci_mean')} dB, CI {_sweep_ci(c, with_mean=False)} ({c['verdict']})"
            for _, c in random.iterrows()
        ]
        sentences.append(
            f"Learned minus random routing at the argmax's expert shares (same FLOPs): {'; '.join(parts)}."
        )
    found = lines("argmax: share of the")
    if len(found) and level is not None:
        parts = [f"{c['family']} {_value(c, 'mean')}%" for _, c in found.iterrows()]
        sentences.append(f"Share of the {oracle_name(level)} FLOPs saving the argmax finds: {'; '.join(parts)}.")
    return sentences[:MAX_SENTENCES]


# ------------------------------------------------------------------------------------------- markdown


def reading_markdown(
    summary: pd.DataFrame,
    points: pd.DataFrame,
    routers: pd.DataFrame,
    levels: Sequence[float],
    heading: str = "###",
    intervals: pd.DataFrame | None = None,
) -> list[str]:
    """The Reading's lines: per base a verdict table and its sentences, then the sweep's (`intervals`: the per-image
    argmax − random intervals, `analysis.sweep_intervals`); `heading` marks the subsections."""
    lines = []
    verdicts = factor_verdicts(summary)
    for base in dict.fromkeys(verdicts["base"]) if len(verdicts) else []:
        part = verdicts[verdicts["base"] == base]
        lines += [f"{heading} Factors: {family_label(base)}", "", factor_verdicts_table(part), ""]
        rule, *findings = factor_sentences(part)  # the rule, then what it found: a paragraph each
        lines += [rule, ""] + ([" ".join(findings), ""] if findings else [])
    level = default_oracle(levels)
    comparisons = sweep_comparisons(points, routers, level, intervals)
    if len(comparisons):
        lines += [f"{heading} Routing sweep", "", sweep_comparisons_table(comparisons), ""]
        lines += [" ".join(sweep_sentences(comparisons, level)), ""]
    return lines or ["No ablation results yet: run `moeisr ablations`.", ""]
