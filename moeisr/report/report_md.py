"""REPORT.md: provenance, what was run, stage timings, the reproduction check, a reading computed from the
numbers, the tables and the figures.

Every number in the reading is computed from the result rows by templated sentences (`reading`); none is typed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moeisr.metrics.paired import FLOOR_DB, paired_bootstrap
from moeisr.provenance import machine_text, threads_text
from moeisr.report.tables import (
    FAMILIES,
    Family,
    current_speedups,
    family_cells,
    frontier_pairs,
    pixel_shares,
    seed_spread,
    speedup_provenance,
)

STAGE_ORDER = {"train": 0, "eval": 1, "check": 2, "report": 3}
SEED_SPREAD = "seed spread of ΔPSNR (dB)"
WITHIN_SEEDS = "within seed spread"


def _paired(frame: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Per-image PSNR of model `a` minus model `b` (default routing), over the images both have."""
    rows = frame[frame["knob"].astype(str) == "none"]
    keys = ["dataset", "image", "scale"]
    pair = rows[rows["model"] == a][keys + ["psnr"]].merge(rows[rows["model"] == b][keys + ["psnr"]], on=keys)
    return pair["psnr_x"] - pair["psnr_y"]


def comparison_rows(
    frame: pd.DataFrame, deepest: Mapping[str, int] | None = None, families: Sequence[Family] = FAMILIES
) -> pd.DataFrame:
    """The reading as a table: per family, MoEISR against the equal-budget backbone, the extra training alone
    (equal budget against the backbone) and MoEISR against the backbone it started from.

    Columns: comparison, cells, pairs (image × scale), the mean ΔPSNR over the pairs (dB) with its 95% paired bootstrap
    interval (`moeisr.metrics.paired`), the range of the cell means, pairs better/worse, FLOPs saved (% of the second
    model's, mean and range over cells), the deepest expert's share of pixels (range over cells, MoEISR rows),
    verdict and what decided it (the interval, or the practical floor).

    With seed replicas in `frame` (`<model>-seed<k>` rows, `tables.seed_spread`), a column SEED_SPREAD: for MoEISR
    against the equal budget, the max − min over training seeds of that ΔPSNR (≤ ×4 pairs; "–" elsewhere); when
    |ΔPSNR| is below it, the verdict is WITHIN_SEEDS, decided by the seeds. Without replicas the table is unchanged.
    """
    out, spreads = [], {}
    for family in families:
        cells = family_cells(frame, family)
        if cells.empty:
            continue
        shares = pixel_shares(frame, family.moe)
        column = f"share_{(deepest or {}).get(family.moe)}"
        share = (
            f"{100 * shares[column].min():.1f}–{100 * shares[column].max():.1f}%"
            if not shares.empty and column in shares
            else "–"
        )
        eq, bb = family.equal_label, family.backbone_name
        comparisons = [
            (f"{family.moe_label} vs {eq}", family.moe, family.equal, cells["d_psnr_equal"], cells["saved_pct"]),
            (f"{eq} vs {bb} (extra training)", family.equal, family.backbone,
             cells["equal_psnr"] - cells["backbone_psnr"], None),
            (f"{family.moe_label} vs {bb}", family.moe, family.backbone, cells["d_psnr_backbone"],
             100.0 * (1.0 - cells["moe_gflops"] / cells["backbone_gflops"])),
        ]  # fmt: skip
        if "lmf_d_psnr_equal" in cells and cells["lmf_d_psnr_equal"].notna().all():
            comparisons.append(
                (f"{family.lmf_label} vs {eq}", family.lmf, family.equal, cells["lmf_d_psnr_equal"],
                 cells["lmf_saved_pct"])
            )  # fmt: skip
        for label, a, b, d_cells, saved in comparisons:
            stats = paired_bootstrap(_paired(frame, a, b))
            out.append(_comparison_row(label, cells, stats, d_cells, saved, share if a == family.moe else "–"))
            spread = seed_spread(frame, a, b) if (a, b) == (family.moe, family.equal) else None
            if spread is not None:
                spreads[len(out) - 1] = spread[1]
                if abs(stats.mean) < spread[1]:
                    out[-1].update(verdict=WITHIN_SEEDS, **{"decided by": "seeds"})
        pairs = frontier_pairs(frame, family)
        if not pairs.empty and pairs["d_psnr_frontier"].notna().all():
            per_cell = pairs.groupby(["dataset", "scale"])["d_psnr_frontier"].mean()
            stats = paired_bootstrap(pairs["d_psnr_frontier"])
            label = f"{family.moe_label} vs the dense {family.label} frontier (interpolated at its GFLOPs)"
            out.append(_comparison_row(label, cells, stats, per_cell, None, share))
    table = pd.DataFrame(out)
    if spreads:
        table.insert(table.columns.get_loc("verdict"), SEED_SPREAD,
                     [f"{spreads[i]:.3f}" if i in spreads else "–" for i in range(len(table))])  # fmt: skip
    return table


def _comparison_row(label, cells, stats, d_cells, saved, share) -> dict:
    """A row of `comparison_rows`; `saved` None for a pair at equal FLOPs by construction (NaN, shown as "–")."""
    verdict, decided = stats.verdict()
    return {
        "comparison": label,
        "cells": len(cells),
        "pairs": stats.n,
        "ΔPSNR (dB)": round(stats.mean, 3),
        "per cell": f"{d_cells.min():+.3f} to {d_cells.max():+.3f}",
        "95% CI": f"[{stats.lo:+.3f}, {stats.hi:+.3f}]",
        "pairs better / worse": f"{stats.better} / {stats.worse}",
        "FLOPs saved (%)": math.nan if saved is None else round(float(saved.mean()), 1),
        "saved per cell (%)": "–" if saved is None else f"{saved.min():.1f} to {saved.max():.1f}",
        "deepest expert": share,
        "verdict": verdict,
        "decided by": decided,
    }


def _decoder_gflops(frame: pd.DataFrame, model: str, encoder_flops: Mapping[str, float]) -> pd.Series:
    """Per row of `model` (default setting): GFLOPs without the encoder's (its FLOPs per LR pixel × lr_h·lr_w)."""
    rows = frame[(frame["model"] == model) & (frame["knob"].astype(str) == "none")]
    return rows["gflops"] - encoder_flops[model] * rows["lr_h"] * rows["lr_w"] / 1e9


def efficiency_rows(
    frame: pd.DataFrame,
    budget_steps: Mapping[str, int],
    encoder_flops: Mapping[str, float],
    families: Sequence[Family] = FAMILIES,
    speedups: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The efficiency methods side by side: per family with LMF rows, MoEISR and LMF against the equal-budget
    backbone, on the family's cells (`family_cells`, default settings).

    Columns: backbone, method, training steps (whole chain, `budget_steps`) and whether that equals the equal-budget
    backbone's, total and decoder-only FLOPs saved (% of the equal-budget backbone's, means over cells; decoder =
    total minus the shared encoder's FLOPs, `encoder_flops` per LR pixel), ΔPSNR with its 95% paired bootstrap
    interval and verdict, and the cells where the method has both more PSNR and fewer FLOPs than the other one; with
    `speedups` (`speedups.csv`'s rows), the median measured speed-up over the cells and the median FLOPs ratio on the
    same images.
    """
    speedups = current_speedups(speedups, frame, families)
    out = []
    for family in families:
        cells = family_cells(frame, family)
        if cells.empty or "lmf_psnr" not in cells or cells["lmf_psnr"].isna().any():
            continue
        keep = ["dataset", "image", "scale"]
        default = frame[frame["knob"].astype(str) == "none"]
        decoder = {}
        for model in (family.equal, family.moe, family.lmf):
            rows = default[default["model"] == model][keep].assign(dec=_decoder_gflops(frame, model, encoder_flops))
            decoder[model] = rows.groupby(["dataset", "scale"])["dec"].mean()
        between = paired_bootstrap(_paired(frame, family.moe, family.lmf))  # MoEISR − LMF, per image
        methods = ((family.moe_label, family.moe, "moe", family.lmf_label, "lmf"),
                   (family.lmf_label, family.lmf, "lmf", family.moe_label, "moe"))  # fmt: skip
        for label, model, prefix, other_label, other in methods:
            saved = cells["saved_pct"] if prefix == "moe" else cells["lmf_saved_pct"]
            dec_saved = 100.0 * (1.0 - decoder[model] / decoder[family.equal])
            stats = paired_bootstrap(_paired(frame, model, family.equal))
            verdict, decided = stats.verdict()
            dominates = (cells[f"{prefix}_psnr"] > cells[f"{other}_psnr"]) & (
                cells[f"{prefix}_gflops"] < cells[f"{other}_gflops"]
            )
            steps, equal_steps = budget_steps.get(model), budget_steps.get(family.equal)
            frontier = frontier_pairs(frame, family, model)
            out.append(
                {
                    "backbone": family.label,
                    "method": label,
                    "training steps": "–" if steps is None else str(steps),
                    "equal budget?": "yes"
                    if steps == equal_steps
                    else f"no (equal-budget {family.label}: {equal_steps})",
                    "FLOPs saved, total (%)": round(float(saved.mean()), 1),
                    "FLOPs saved, decoder (%)": round(float(dec_saved.mean()), 1),
                    "ΔPSNR (dB)": round(stats.mean, 3),
                    "95% CI": f"[{stats.lo:+.3f}, {stats.hi:+.3f}]",
                    "verdict": verdict,
                    "decided by": decided,
                    "ΔPSNR vs dense frontier at its GFLOPs (dB)": _frontier_text(frontier),
                    "cells with more PSNR and fewer FLOPs than the other": f"{int(dominates.sum())} of {len(cells)}",
                    "_other": other_label,
                    "_vs_other": between if prefix == "moe" else between.reversed(),
                }
            )
            if not speedups.empty:
                out[-1] |= _measured_speedup(speedups[speedups["model"] == model], len(cells))
    return pd.DataFrame(out)


def _measured_speedup(rows: pd.DataFrame, cells: int) -> dict:
    """The efficiency table's speed-up columns from one model's `speedups.csv` rows."""
    if rows.empty:
        return {"speed-up, measured (median ×)": "–", "FLOPs ratio (median ×)": "–"}
    part = "" if len(rows) == cells else f" ({len(rows)} of {cells} cells)"
    return {
        "speed-up, measured (median ×)": f"{rows['speedup'].median():.2f}{part}",
        "FLOPs ratio (median ×)": f"{rows['flops_ratio'].median():.2f}",
    }


def _frontier_text(pairs: pd.DataFrame) -> str:
    """The efficiency table's frontier cell: mean ΔPSNR with its CI, or why there is none (never extrapolated)."""
    if pairs.empty:
        return "– (no dense rows yet)"
    outside = int(pairs["d_psnr_frontier"].isna().sum())
    if outside:
        return f"– ({outside} of {len(pairs)} pairs outside the dense frontier's GFLOPs range; not extrapolated)"
    stats = paired_bootstrap(pairs["d_psnr_frontier"])
    return f"{stats.mean:+.3f} [{stats.lo:+.3f}, {stats.hi:+.3f}] (interpolated)"


def _budget_caveat(a, b) -> str:
    """', at unequal budgets (...)' when two efficiency rows' whole training chains differ, else ''."""
    if a["training steps"] == b["training steps"]:
        return ""
    return (
        f", but at unequal budgets ({a['method']} {a['training steps']} training steps, {b['method']} "
        f"{b['training steps']}): part of the gap may be training, not the method"
    )


def efficiency_sentences(table: pd.DataFrame) -> str:
    """A short paragraph per backbone from `efficiency_rows`: which method gives the better trade-off, and where."""
    paragraphs = []
    column = "cells with more PSNR and fewer FLOPs than the other"
    for backbone, rows in table.groupby("backbone", sort=False):
        a, b = rows.iloc[0], rows.iloc[1]
        more_saved, less_saved = (a, b) if a["FLOPs saved, total (%)"] >= b["FLOPs saved, total (%)"] else (b, a)
        gap = more_saved["_vs_other"]  # paired per image: the method saving more minus the other
        word, decided = gap.verdict()
        if word == "matches":
            verdict = f"{more_saved['method']} gives the better trade-off: more FLOPs saved at the same PSNR"
        elif word == "better":
            verdict = f"{more_saved['method']} gives the better trade-off: more FLOPs saved and more PSNR kept"
        else:
            verdict = (
                f"neither dominates: {more_saved['method']} saves more FLOPs, {less_saved['method']} keeps more PSNR"
            )
        saved = "FLOPs saved, total (%)"
        sentences = [
            f"On {backbone}, {verdict}{_budget_caveat(a, b)}.",
            f"Against the equal-budget {backbone}, {a['method']} saves {a[saved]:.1f}% of the FLOPs at "
            f"{a['ΔPSNR (dB)']:+.3f} dB (95% CI {a['95% CI']}, {a['verdict']}) and {b['method']} {b[saved]:.1f}% at "
            f"{b['ΔPSNR (dB)']:+.3f} dB ({b['95% CI']}, {b['verdict']}).",
            f"{more_saved['method']} minus {less_saved['method']}, paired per image: {gap.mean:+.3f} dB, CI "
            f"[{gap.lo:+.3f}, {gap.hi:+.3f}] (decided by the {decided}).",
            f"Per cell, {a['method']} has more PSNR at fewer FLOPs in {a[column]} cells, {b['method']} in {b[column]}.",
        ]
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def efficiency_markdown(
    frame: pd.DataFrame,
    budget_steps: Mapping[str, int],
    encoder_flops: Mapping[str, float],
    speedups: pd.DataFrame | None = None,
    families: Sequence[Family] = FAMILIES,
) -> str | None:
    """The efficiency comparison (`efficiency_rows`) as Markdown with its sentences, or None without LMF rows."""
    table = efficiency_rows(frame, budget_steps, encoder_flops, families, speedups)
    if table.empty:
        return None
    lead = (
        "MoEISR and LMF against one equal-budget backbone, on the same encoder and grid (means over the main "
        "table's cells; LMF with CMSR off). Decoder FLOPs = total minus the shared encoder's, what LMF's published "
        'savings count. LMF trained until held-out validation stopped rising, so its budget differs: "training '
        "steps\" counts each model's whole chain. The dense-frontier column interpolates the dense decoders' PSNR at "
        "the method's GFLOPs per image and never extrapolates outside their range."
    )
    measured = current_speedups(speedups, frame, families)
    provenance = [] if measured.empty else [speedup_provenance(measured)]
    shown = table.drop(columns=["_other", "_vs_other"]).to_markdown(index=False, disable_numparse=True)
    return "\n\n".join([lead, *provenance, shown, efficiency_sentences(table)])


def reading(
    frame: pd.DataFrame,
    set_sizes: Mapping[str, int] | None = None,
    deepest: Mapping[str, int] | None = None,
    families: Sequence[Family] = FAMILIES,
) -> list[str]:
    """The "Reading" section: the comparison table (`comparison_rows`), then one short sentence per headline family
    (an earlier recipe's rows stay in the table only) whose numbers all come from that table."""
    table = comparison_rows(frame, deepest, families)
    if table.empty:
        return ["_No family has all three models evaluated yet._"]
    sentences = []
    for family in families:
        rows = table[table["comparison"].str.startswith(f"{family.moe_label} vs equal")]
        if rows.empty or family.recipe:
            continue
        r = rows.iloc[0]
        relation = {"worse": "is worse than", "better": "is better than", WITHIN_SEEDS: "is within the seed spread of"}
        spread = f", seed spread {r[SEED_SPREAD]} dB" if r.get(SEED_SPREAD, "–") != "–" else ""
        sentences.append(
            f"{family.moe_label} {relation.get(r['verdict'], 'matches')} the {family.equal_label} "
            f"({r['ΔPSNR (dB)']:+.3f} dB, 95% CI {r['95% CI']}{spread}, decided by the {r['decided by']}) at "
            f"{r['FLOPs saved (%)']:.1f}% fewer FLOPs."
        )
    lead = (
        "Verdicts come from the 95% paired bootstrap interval over images (2000 resamples, seed 0); a difference "
        f"below {FLOOR_DB:g} dB is not counted as a finding."
    )
    if SEED_SPREAD in table:
        lead += (
            " Nor is a ΔPSNR smaller than its seed spread: the range of that ΔPSNR over training seeds, each seed's "
            "MoEISR against the same seed's equal-budget backbone (Seeds table; pairs up to ×4)."
        )
    shown = table.assign(**{
        "ΔPSNR (dB)": table["ΔPSNR (dB)"].map("{:+.3f}".format),
        "FLOPs saved (%)": table["FLOPs saved (%)"].map(lambda x: "–" if pd.isna(x) else f"{x:.1f}"),
    })  # fmt: skip
    return [shown.to_markdown(index=False, disable_numparse=True), " ".join(sentences), lead]


@dataclass
class ReportInputs:
    """Everything REPORT.md shows; `tables` maps a title to (markdown, file), `figures` a title to a relative path."""

    profile: str
    commit: str
    command: str
    experiments: list[dict]
    grid_lines: list[str]
    timings: Mapping
    check_markdown: str
    paragraphs: list[str]
    tables: dict[str, tuple[str, str]] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ablations: str = ""  # the "## Ablations" section (`ablation_section`), empty when there are no results
    speed: str = ""  # the "## Speed" section (`speed_section`), empty when the speed suite has not run
    eval_seconds: float | None = None  # sum of the grid rows' per-row evaluation times
    machine: Mapping[str, str] | None = None  # run.json's `provenance.machine()` record of the run; None: not recorded


def _duration(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _details(info: Mapping) -> str:
    checked = info.get("last_checked")
    return info.get("details", "") + (f" (re-checked {checked})" if checked else "")


def stage_time_lines(timings: Mapping, experiments: Sequence[Mapping], eval_seconds: float | None) -> list[str]:
    """The "Wall time per stage" section: each stage's wall time (of the last run that did work in it) beside
    what computing it from scratch took (training: the experiments' recorded training times; evaluation: the
    sum of the grid rows' per-row times), then the partial `--models` jobs as recorded in timings.json."""
    stages = timings.get("stages", {})
    trained = [e.get("train_seconds") for e in experiments if e.get("train_seconds") is not None]
    from_scratch = {
        "train": (sum(trained) if trained else None, f"sum of the {len(trained)} experiments' recorded training times"),
        "eval": (eval_seconds, "sum of the grid rows' recorded per-row times (decode, metrics, FLOPs count)"),
        "report": (None, ""),
    }
    rows = []
    for stage, (seconds, how) in from_scratch.items():
        info = stages.get(stage, {})
        if not info and seconds is None:
            continue
        rows.append(
            {
                "stage": stage,
                "wall time": _duration(info.get("seconds")),
                "when": info.get("finished", "–"),
                "commit": f"`{info.get('commit', '–')}`",
                "from scratch": _duration(seconds) + (f" ({how})" if seconds is not None else ""),
                "details": _details(info),
            }
        )
    lines = [pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else "–", ""]
    partial = [
        {
            "job": f"`{name}`",
            "wall time": _duration(info.get("seconds")),
            "when": info.get("finished", "–"),
            "commit": f"`{info.get('commit', '–')}`",
            "details": _details(info),
        }
        for name, info in sorted(stages.items(), key=lambda item: (STAGE_ORDER.get(item[0].split()[0], 9), item[0]))
        if name not in from_scratch
    ]
    if partial:
        lines += ["Partial jobs (`--models`), each as it last ran:", ""]
        lines += [pd.DataFrame(partial).to_markdown(index=False, disable_numparse=True), ""]
    lines += [
        "Recorded in `timings.json` beside this file; a stage that only reused earlier work keeps the timing of the "
        "run that did it. From-scratch times were measured under whatever else ran then (often two 1-thread jobs "
        "side by side), so they are a guide, not a benchmark. A commit marked `+dirty` had tracked files changed "
        "outside `runs/` and `results/` (before commit `e60f8e4` the run snapshots under `runs/` counted too, and "
        "before `f5f687e` the results being rewritten).",
        "",
    ]
    return lines


def render_report(inputs: ReportInputs) -> str:
    """The Markdown text of REPORT.md."""
    m = inputs.machine
    where = (
        f"machine: {machine_text(m)}, Python {m['python']}, {m['os']}"
        if m
        else "machine: not recorded in run.json (the report stage of `moeisr reproduce` records it)"
    )
    lines = [
        f"# moeisr reproduction report (profile `{inputs.profile}`)",
        "",
        f"_Generated at commit `{inputs.commit}` by `{inputs.command}`; {where}._",
        "",
        "MoEISR here is **our reconstruction** of the paper (docs/moeisr.md); its numbers are not the paper's. "
        "Each backbone is compared with MoEISR fine-tuned from it **and** with the same backbone fine-tuned for "
        'exactly MoEISR\'s extra steps ("equal budget"), so that no row wins by training longer.',
        "",
    ]
    lines += [f"> {note}" for note in inputs.notes]
    if inputs.notes:
        lines.append("")
    lines += ["## Reading", ""]
    for paragraph in inputs.paragraphs:
        lines += [paragraph, ""]
    lines += ["## What was run", ""]
    rows = [
        {
            "experiment": e["experiment"],
            "model column": e["model"],
            "config hash": f"`{e['config_hash']}`",
            "init from": e.get("init_from") or "–",
            "steps": str(e.get("steps", "–")),
            "training time (recorded)": _duration(e.get("train_seconds")),
            "this run": e["status"],
            "checkpoint": f"`{e['checkpoint']}` ({e['size_mb']:.1f} MB, sha256 `{e['ckpt_hash']}`)",
        }
        for e in inputs.experiments
    ]
    lines += [pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]
    lines += [f"- {line}" for line in inputs.grid_lines]
    lines += ["", "## Wall time per stage", ""]
    lines += stage_time_lines(inputs.timings or {}, inputs.experiments, inputs.eval_seconds)
    lines += ["## Reproduction check", "", inputs.check_markdown, ""]
    for title, (markdown, path) in inputs.tables.items():
        lines += [f"## {title}", "", f"_File: `{path}`._", "", markdown, ""]
    if inputs.figures:
        lines += ["## Figures", ""]
        for title, path in inputs.figures.items():
            lines += [f"### {title}", "", f"![{title}]({path})", ""]
    if inputs.ablations:
        lines += [inputs.ablations.rstrip(), ""]
    if inputs.speed:
        lines += [inputs.speed.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ ablations


def ablation_section(results: str | Path) -> str:
    """The "## Ablations" section for REPORT.md (`moeisr.report.ablations.render.section_markdown`), or "" when
    `<results>/ablations/` holds no summaries."""
    from moeisr.report.ablations.render import section_markdown

    return section_markdown(results) or ""


def _range(values) -> str:
    values = [float(v) for v in values if v is not None]
    if not values:
        return "not measured"
    low, high = min(values), max(values)
    return f"{low:.2f}" if math.isclose(low, high, abs_tol=5e-3) else f"{low:.2f}–{high:.2f}"


def measured_commits(provenance: dict) -> str:
    """The commits that measured a speed summary's rows, as `a`, `b` (the writing commit for older summaries)."""
    return ", ".join(f"`{c}`" for c in provenance.get("measured_at_commits") or [provenance.get("commit", "?")])


def _target_row(target: str, goal, measured: str, met: bool | None) -> dict:
    """A row of the speed targets; `met` None (a summary older than the per-value flags) shows as "–"."""
    shown = "–" if met is None else "yes" if met else "no"
    return {"target": target, "goal": goal or "–", "measured": measured, "met": shown}


def _all_met(flags) -> bool | None:
    """Whether every flag is true; None when a flag is missing (None)."""
    flags = list(flags)
    return None if any(f is None for f in flags) else all(flags)


def speed_section(results: str | Path) -> str:
    """The "## Speed (wall clock)" section for REPORT.md from `<results>/bench/summary.json` (written by
    `nox -s bench`), or "" when the speed suite has not run. Links the suite's tables and figure.

    Goals and whether they were met are the summary's (its targets' text and per-value `values_met` flags, from
    bench/report.py's TARGETS); none is decided here."""
    path = Path(results) / "bench" / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        targets = summary["targets"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    prov, m = summary.get("provenance", {}), summary.get("machine", {})
    commits = measured_commits(prov)
    ratio = targets.get("realised_over_flops_x4", {})
    by_model: dict[str, list] = {}  # "model (routing)" -> [(value, met), ...] of the executed path
    for key, value in ratio.get("values", {}).items():
        model, _dataset, _scale, routing, _path = key.split("/")
        if key.endswith("as_executed"):
            by_model.setdefault(f"{model} ({routing})", []).append((value, ratio.get("values_met", {}).get(key)))
    reference = targets.get("liif_vs_reference_speedup", {})
    fractions = targets.get("decoder_peak_fraction", {})
    rss = targets.get("peak_rss", {})
    rows = [
        _target_row(f"realised speed-up / FLOPs saving, {name}, ×4 Set14 and Urban100", ratio.get("target"),
                    _range(v for v, _ in pairs), _all_met(met for _, met in pairs))
        for name, pairs in sorted(by_model.items())
    ]  # fmt: skip
    if reference.get("value") is not None:
        measured = f"{reference['value']:.2f}× (max abs diff {reference.get('max_abs_diff', float('nan')):.1e})"
        rows.append(_target_row("our LIIF `upscale` vs the official inference path, Urban100 ×4",
                                reference["target"], measured, reference.get("met")))  # fmt: skip
    for name, value in sorted(fractions.get("values", {}).items()):
        rows.append(_target_row(f"decoder share of the fp32 matmul peak, {name.split('/')[0]}",
                                fractions.get("target"), f"{value:.2f}",
                                fractions.get("values_met", {}).get(name)))  # fmt: skip
    if rss.get("values"):
        case, worst = max(rss["values"].items(), key=lambda item: item[1])
        rows.append(_target_row(f"peak RSS, {len(rss['values'])} cases", rss.get("target"),
                                f"max {worst:.2f} GB ({case})", rss.get("met")))  # fmt: skip
    lines = [
        "## Speed (wall clock)",
        "",
        f"_`nox -s bench`, rows measured at commit(s) {commits}, summary written {prov.get('written_at', '?')}; "
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {threads_text(m.get('torch_threads', '?'))}. "
        "Every ratio is taken within one run, side by side. Weights per model:_",
        "",
        *(f"- {k}: {v}" for k, v in summary.get("weights", {}).items()),
        "",
        pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else "_no targets measured_",
        "",
        "Everything the suite measured, with each row's commit: [bench/bench.md](bench/bench.md), "
        "[bench/summary.json](bench/summary.json), [bench/measurements.json](bench/measurements.json); the "
        "method and what was kept or dropped: docs/speed.md.",
    ]
    if (Path(results) / "bench" / "speed.png").is_file():
        lines += ["", "![Speed suite](bench/speed.png)"]
    return "\n".join(lines) + "\n"
