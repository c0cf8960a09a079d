"""Render the ablations' report from the raw artefacts `moeisr.pipeline.ablations` writes into `<results>/ablations/`
(rows.csv, matched.csv, sweep.csv, meta.json); nothing is trained, decoded or evaluated here.

- `render(results)`: the summaries `<results>/ablations/{factor_cells,factors,sweep_points,routers}.csv`,
  `<results>/tables/ablations.md` (with, at its end, the selection section of every recipe suite under
  `<results>/ablations/*/`) and `<results>/figures/ablations_*.png`.
- `render(results, folder=<results>/ablations/<suite>)`: a recipe suite's (meta.json with a `selection`):
  `moeisr.report.ablations.recipe.render_recipe`.
- `section_markdown(results)`: the ablation section of REPORT.md, from those files (None when there are none).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from moeisr.artefacts import ABLATION_META_FILE, ABLATION_RAW_CSVS
from moeisr.io import atomic_write_text
from moeisr.provenance import header
from moeisr.report.ablations import analysis, figures, recipe
from moeisr.report.ablations.analysis import read_summary_if_any
from moeisr.report.ablations.reading import reading_markdown
from moeisr.report.ablations.tables import (
    FLOPS_NOTE,
    budget_lines,
    cells_table,
    default_oracle,
    factors_table,
    found_table,
    routers_table,
    sweep_table,
)
from moeisr.report.tables import dataset_label

SUMMARIES = ("factor_cells", "factors", "sweep_points", "routers", "sweep_intervals")  # computed here
TABLE = Path("tables") / "ablations.md"


def _folder(results: str | Path) -> Path:
    return Path(results) / "ablations"


def figure_path(results: str | Path, name: str) -> Path:
    return Path(results) / "figures" / f"ablations_{name}.png"


def sweep_figure_name(family: str) -> str:
    return f"sweep_{family.removeprefix('moeisr-')}"


def read_raw(results: str | Path, folder: str | Path | None = None) -> tuple[dict[str, pd.DataFrame], dict] | None:
    """The raw frames (rows, matched, sweep) and meta.json of `folder` (default `<results>/ablations/`), or None
    without meta.json."""
    folder = Path(folder) if folder is not None else _folder(results)
    meta_path = folder / ABLATION_META_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return {name: read_summary_if_any(folder / f"{name}.csv") for name in ABLATION_RAW_CSVS}, meta


def summaries(raw: Mapping[str, pd.DataFrame], meta: dict) -> dict[str, pd.DataFrame]:
    """The summary frames (SUMMARIES) of the raw frames (`analysis`)."""
    rows_meta = pd.DataFrame(meta["rows"])
    rows, matched, sweep = raw["rows"], raw["matched"], raw["sweep"]
    cells = analysis.factor_cells(rows, rows_meta, matched) if len(rows_meta) and len(rows) else pd.DataFrame()
    factors = analysis.factor_summary(cells, rows_meta) if len(cells) else pd.DataFrame()
    intervals = analysis.row_intervals(rows, rows_meta, matched) if len(factors) else pd.DataFrame()
    if len(intervals):  # the paired 95% CI of each row against its reference (issue 21, item 2)
        factors = factors.merge(intervals, on="row", how="left")
    points = analysis.sweep_points(sweep) if len(sweep) else pd.DataFrame()
    levels = meta["sweep"]["oracle_levels"]
    routers = analysis.router_summary(points, levels) if len(points) else pd.DataFrame()
    intervals = analysis.sweep_intervals(sweep) if len(sweep) else pd.DataFrame()
    return {"factor_cells": cells, "factors": factors, "sweep_points": points, "routers": routers,
            "sweep_intervals": intervals}  # fmt: skip


def grid_line(meta: dict) -> str:
    grid, sweep = meta["grid"], meta["sweep"]
    sizes = grid["set_sizes"]
    parts = [
        ", ".join(dataset_label(s, grid["limit"].get(s, sizes[s]), sizes[s]) for s in grid["sets"]),
        "scales " + ", ".join(f"×{s:g}" for s in grid["scales"]),
        f"sweep: {sweep['points']} routing budgets + argmax, oracle ε levels "
        + ", ".join(f"{v:g}/255" for v in sweep["oracle_levels"])
        + f", random seeds {', '.join(map(str, sweep['random_seeds']))}",
    ]
    return "Grid: " + "; ".join(parts) + "."


def ablations_markdown(frames: Mapping[str, pd.DataFrame], meta: dict, command: str | None = None) -> str:
    """The text of tables/ablations.md: provenance, budget and grid, the factor tables, the sweep, the routers and
    the Reading (`reading.reading_markdown`)."""
    summary, cells, points, routers = (frames[name] for name in ("factors", "factor_cells", "sweep_points", "routers"))
    levels = meta["sweep"]["oracle_levels"]
    sizes = meta["grid"]["set_sizes"]
    lines = ["# Ablations", "", header(meta["commit"], meta["profile"], command or meta.get("command")), ""]
    lines += ["## Budget and grid", "", *budget_lines(summary, meta["main_steps"]), ""]
    lines += [grid_line(meta), "", f"_{FLOPS_NOTE}._", ""]
    lines += [
        "## Factors",
        "",
        "Means over the set×scale cells; Δ against the row's reference (same base, same "
        "budget); decoder cost = Σ_j share_j · c_j / c_max over the output pixels.",
        "",
        factors_table(summary) if not summary.empty else "_(no rows yet)_",
    ]
    lines += ["", "## Factors per cell", "", cells_table(cells, sizes) if not cells.empty else "_(no rows yet)_"]
    lines += ["", "## Controllable routing sweep (main MoEISR checkpoints)", ""]
    lines += [
        "PSNR / GFLOPs per cell; ● = on the Pareto front of the attainable points (learned knobs, random routers, "
        "backbone; the oracle reads the HR image and is a reference line only).",
        "",
    ]
    lines += _per_family(points, sweep_table, sizes)
    lines += ["## Reference routers", ""]
    lines += [
        "Random: each pixel's expert drawn so that every expert keeps exactly the argmax routing's share of the "
        "image's pixels. Oracle: each pixel's cheapest expert whose luma error is within ε of the deepest expert's "
        "(ε in 8-bit levels, |ΔY| with PSNR's weights); it reads the HR image.",
        "",
    ]
    lines += _per_family(routers, routers_table, sizes)
    lines += ["## How much of the possible saving the mapper finds", ""]
    lines += [found_table(routers, default_oracle(levels), sizes), "", "## Reading", ""]
    lines += reading_markdown(summary, points, routers, levels, intervals=frames.get("sweep_intervals"))
    return "\n".join(lines).rstrip() + "\n"


def _per_family(frame: pd.DataFrame, table: Callable, sizes: Mapping[str, int]) -> list[str]:
    """A `### family` subsection per MoEISR model of `frame` with `table(frame, family, sizes)`."""
    lines = []
    for family in dict.fromkeys(frame["family"]) if not frame.empty else []:
        lines += [f"### {family}", "", table(frame, family, sizes), ""]
    return lines


def render(
    results: str | Path,
    *,
    command: str | None = None,
    log: Callable[[str], None] = print,
    folder: str | Path | None = None,
) -> list[Path]:
    """Write the summaries, tables/ablations.md and the figures from `<results>/ablations/`'s raw artefacts; returns
    the files written ([] with a note when the pipeline has not written them yet). With `folder`, another suite's
    raw artefacts; a recipe suite's (a `selection` in its meta.json) go to `recipe.render_recipe`."""
    results = Path(results)
    folder = Path(folder) if folder is not None else _folder(results)
    raw = read_raw(results, folder)
    if raw is None:
        log(f"[report] no {folder / ABLATION_META_FILE}: run the ablations' report stage first")
        return []
    if "selection" in raw[1]:
        return recipe.render_recipe(results, folder, raw, command, log)
    frames = summaries(*raw)
    meta = raw[1]
    main = folder.resolve() == _folder(results).resolve()
    # another suite without a selection rule: its own table and figures (ablations_<suite>...), the main's untouched
    prefix = "" if main else f"{folder.name}_"
    written = [atomic_write_text(folder / f"{name}.csv", frames[name].to_csv(index=False)) for name in SUMMARIES]
    text = ablations_markdown(frames, meta, command) + (recipe.included_sections(results) if main else "")
    table = results / TABLE if main else results / TABLE.parent / f"ablations_{folder.name}.md"
    written.append(atomic_write_text(table, text))
    figure = figures.factors_figure(frames["factors"], figure_path(results, prefix + "factors"))
    if figure is not None:
        written.append(figure)
    points = frames["sweep_points"]
    for family in dict.fromkeys(points["family"]) if len(points) else []:
        sizes = meta["grid"]["set_sizes"]
        path = figure_path(results, prefix + sweep_figure_name(family))
        figure = figures.sweep_figure(points, family, path, sizes)
        if figure is not None:
            written.append(figure)
    log(f"[report] wrote {', '.join(str(p) for p in written)}")
    return written


# ------------------------------------------------------------------------------------------ REPORT.md


def section_markdown(results: str | Path) -> str | None:
    """The "## Ablations" section of REPORT.md from `<results>/ablations/`'s summaries, tables/ablations.md and the
    ablation figures; None when there are no summaries.

    The Reading is rebuilt from the summary CSVs (`reading.reading_markdown`), subsections one level down; the other
    sections of tables/ablations.md follow, headings one level down; then the figures of what the CSVs hold.
    """
    results = Path(results)
    frames = {
        name: read_summary_if_any(_folder(results) / f"{name}.csv")
        for name in ("factors", "sweep_points", "routers", "sweep_intervals")
    }
    if all(frame.empty for frame in frames.values()):
        return None
    routers = frames["routers"]
    levels = sorted(
        {float(m.group(1)) for m in (re.search(r"oracle ε=([\d.]+)/255", str(r)) for r in routers.get("router", []))
         if m}
    )  # fmt: skip
    lines = ["## Ablations", ""]
    lines += reading_markdown(frames["factors"], frames["sweep_points"], routers, levels, heading="###",
                              intervals=frames["sweep_intervals"])  # fmt: skip
    table = results / TABLE
    if table.is_file():
        lines += [f"_Tables: `{TABLE.as_posix()}`; data: `ablations/*.csv`._", ""]
        lines += [_demoted_tables(table.read_text(encoding="utf-8")), ""]
    # only the figures of what the CSVs hold: a figure left by an earlier run with other models is not shown
    shown = [("Ablation factors", "factors")] if not frames["factors"].empty else []
    for family in dict.fromkeys(frames["sweep_points"].get("family", [])):
        shown.append((f"Routing sweep: {family}", sweep_figure_name(family)))
    for title, name in shown:
        if figure_path(results, name).is_file():
            lines += [f"### {title}", "", f"![{title}](figures/ablations_{name}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _demoted_tables(markdown: str) -> str:
    """The `## ` sections of tables/ablations.md except its Reading, each heading one level down."""
    sections = re.split(r"(?m)^(?=## )", markdown)
    kept = [s for s in sections[1:] if not s.startswith("## Reading")]
    return re.sub(r"(?m)^(#{2,5}) ", r"#\1 ", "".join(kept)).rstrip()
