"""The one writer of REPORT.md: renders the main results, the ablations and the speed suite from the files the
pipelines wrote into the results folder. Pure: it reads tidy CSV/JSON and PNG files and writes Markdown and PNG.

Inputs (`<results>/`): `main.csv` (the grid's tidy rows), `run.json` (provenance, grid, checks and picture index,
written by `moeisr.pipeline.reproduce`), `reproduction.csv` (the sampled recheck), `timings.json`, `logs/*.csv`,
`figures/data/` (the decoded expert maps and crops), `speedups.csv`, `ablations/` and `bench/` when those ran.
Outputs: `tables/*.md`, `figures/*.png` and `REPORT.md`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from moeisr.artefacts import MAIN_CSV, RUN_FILE, SPEEDUPS_CSV, TIMINGS_FILE
from moeisr.errors import UserError
from moeisr.evaluate import recheck
from moeisr.evaluate.pictures import read_crops, read_expert_maps
from moeisr.io import atomic_write_text, read_json_object
from moeisr.report import figures, report_md, tables
from moeisr.report.ablations.analysis import read_summary_if_any
from moeisr.report.report_md import ReportInputs, ablation_section, reading, render_report, speed_section


def reproduction_markdown(run: dict, rows: pd.DataFrame, results: Path) -> str:
    """The REPORT.md section of the reproduction check: the mode, the sampled recheck, the eval-stage comparison."""
    parts = []
    recheck_file = run.get("recheck_file")
    comparison = pd.read_csv(results / recheck_file, dtype={"image": str, "knob": str}) if recheck_file else None
    if run["mode"] == "full":
        parts.append(f"Mode **full**: every one of the {len(rows)} rows was recomputed from the bundled checkpoints.")
    elif comparison is None:
        parts.append("Mode **verified**, but the check stage did not run: the cached rows were **not checked**.")
    elif comparison.empty:  # a verdict needs rows to stand on
        parts.append("Mode **verified**, but the sample held no row at ×2–×4: the cached rows were **not checked**.")
    else:
        verdict = "PASS" if bool(comparison["within"].all()) else "FAIL"
        parts.append(
            f"Mode **verified**: the {len(rows)} rows come from the evaluation cache; a fixed sample of "
            f"{len(comparison)} of them (one image per set and scale at ×2–×4, chosen with seed "
            f"{recheck.SAMPLE_SEED}, for every model) was recomputed from the bundled checkpoints without the cache. "
            f"Verdict: **{verdict}** (tolerance {recheck.PSNR_TOLERANCE_DB} dB; per row in `{recheck_file}`)."
        )
        parts.append(tables.recheck_table(recheck.summary(comparison), comparison))
    check = run["eval_check"]
    if check["reason"] is not None:
        parts.append(f"Eval-stage rows against the previous `main.csv`: not checked ({check['reason']}).")
    else:
        parts.append(
            f"The {check['computed']} rows the eval stage computed in this run, against the `main.csv` found before "
            "it (matched on model, dataset, image, scale, knob; target ≤ 0.01 dB):\n\n"
            + tables.reproduction_table(pd.DataFrame(check["rows"]))
        )
    return "\n\n".join(parts) + "\n"


def render_results(results: str | Path, log=print) -> Path:
    """Write tables/, figures/ and REPORT.md of the results folder from its data files; returns REPORT.md's path.

    UserError when `main.csv` or `run.json` is missing (run `moeisr reproduce` with the report stage first).
    """
    results = Path(results)
    run_path, main_csv = results / RUN_FILE, results / MAIN_CSV
    if not run_path.is_file() or not main_csv.is_file():
        raise UserError(f"{results}: no {RUN_FILE} and main.csv to render; run `moeisr reproduce` first")
    run = json.loads(run_path.read_text(encoding="utf-8"))
    all_rows = recheck.read_rows_csv(main_csv)
    with_replicas = tables.without_all_deepest(all_rows)  # MoEISR's all-deepest rows feed the decomposition only
    rows = tables.without_seed_replicas(with_replicas)  # the seed replicas' feed the Seeds table and the reading
    sizes = run["set_sizes"]
    headline, earlier = tables.report_families(rows)  # recipe v2 leads once it has rows; v1 is kept beside it
    tables_dir, figures_dir = results / "tables", results / "figures"

    speedups_csv = results / SPEEDUPS_CSV  # `moeisr speedups`, once it ran
    speedups = pd.read_csv(speedups_csv, dtype={"image": str}) if speedups_csv.is_file() else None
    rendered = {
        "Main table": ("main.md", tables.main_table(rows, sizes, speedups=speedups, families=headline)),
        "Expert shares": ("experts.md", tables.experts_table(rows, run["experts"], sizes)),
        "Published numbers (citations)": ("published.md", tables.published_table(rows, sizes, families=headline)),
    }
    decomposition = tables.decomposition_table(all_rows, sizes, (*headline, *earlier))
    if decomposition is not None:
        rendered["Decomposition: training deficit and routing cost"] = ("decomposition.md", decomposition)
    efficiency = (
        report_md.efficiency_markdown(
            rows, run.get("budget_steps") or {}, run.get("encoder_flops_per_lr_pixel") or {}, speedups, headline
        )
        if run.get("encoder_flops_per_lr_pixel")
        else None
    )
    if efficiency is not None:
        rendered["Efficiency methods: MoEISR and LMF"] = ("efficiency.md", efficiency)
    seeds = tables.seeds_table(with_replicas, sizes, run.get("seeds"), families=headline)
    if seeds is not None:
        rendered["Seeds"] = ("seeds.md", seeds)
    out_tables = {}
    for title, (name, markdown) in rendered.items():
        atomic_write_text(tables_dir / name, f"# {title}\n\n{markdown}")
        out_tables[title] = (markdown, f"tables/{name}")

    out_figures = {}

    def add(title: str, written: Path | None) -> None:
        if written is not None:
            out_figures[title] = str(Path(written).relative_to(results))

    sweep = read_summary_if_any(results / "ablations" / "sweep_points.csv")  # once the ablations ran
    scale = run["figure_scale"]
    add(
        "PSNR vs GFLOPs",
        figures.psnr_vs_gflops(
            rows[rows["model"].isin(tables.family_models(headline))],
            figures_dir / "psnr_vs_gflops.png",
            sizes,
            sweep,
            headline,
        ),
    )
    add("FLOPs per image", figures.flops_distribution(rows, figures_dir / "flops_per_image.png"))
    samples = read_expert_maps((results / run["pictures"]["expert_maps"]).parent)
    add("Expert maps", figures.expert_maps_figure(samples, figures_dir / "expert_maps.png", scale))
    crops = read_crops((results / run["pictures"]["crops"]).parent)
    if crops is not None:
        add("Qualitative crops", figures.qualitative_figure(crops, figures_dir / "qualitative.png", scale))
    logs = {m: pd.read_csv(results / f) for m, f in run["logs"].items()
            if (results / f).is_file() and tables.replica_of(m) is None}  # fmt: skip
    add(
        "Learning curves",
        figures.learning_curves(logs, run["log_offsets"], figures_dir / "learning_curves.png", run.get("validation")),
    )

    inputs = ReportInputs(
        profile=run["profile"],
        commit=run["commit"],
        command=run["command"],
        experiments=run["experiments"],
        grid_lines=run["grid_lines"],
        timings=read_json_object(results / TIMINGS_FILE),
        check_markdown=reproduction_markdown(run, all_rows, results),
        paragraphs=reading(with_replicas, sizes, run["deepest_expert"], (*headline, *earlier)),
        tables=out_tables,
        figures=out_figures,
        notes=run["notes"],
        ablations=ablation_section(results),
        speed=speed_section(results),
        eval_seconds=float(all_rows["seconds"].sum()) if "seconds" in all_rows else None,
        machine=run.get("machine"),
    )
    report = atomic_write_text(results / "REPORT.md", render_report(inputs))
    log(f"[report] wrote {tables_dir}/, {figures_dir}/ ({len(out_figures)} figures) and {report}")
    return report
