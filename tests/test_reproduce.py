"""`moeisr reproduce` end to end on the smoke profile with a reduced grid, then again: everything reused.

The data root is a temporary folder holding two 96×96 crops of real Set5 images (so that a full-image decode
takes a fraction of a second) and a link to the real training images; training is cut to 4 steps and the grid
to ×4 by overrides applied to every experiment alike.
"""

import json
import math
import os
import re

import numpy as np
import pandas as pd
import pytest
from test_pipeline_support import smoke_workspace

from moeisr.commands.reproduce import run_reproduce as reproduce
from moeisr.errors import UserError
from moeisr.evaluate.cache import REQUIRED_COLUMNS
from moeisr.evaluate.recheck import reproduction_check
from moeisr.models.checkpoint import read_checkpoint
from moeisr.pipeline.bundle import bundle_status, prepare_checkpoint
from moeisr.pipeline.reproduce import EVALUATED_MODELS, ROLES, default_paths, load_experiments
from moeisr.provenance import machine_text
from moeisr.report.report_md import comparison_rows, efficiency_rows, reading
from moeisr.report.tables import FAMILIES, FLOPS_HEADER, MODEL_ORDER, reproduction_table

# ~3 min on 2 shared cores: 17 short trainings, 18 evaluations, 5 figures, twice
pytestmark = [pytest.mark.slow, pytest.mark.data]

OVERRIDES = ["optim.max_steps=4", "eval.scales=[4]"]  # 4 steps, one scale: ~1 min in all
MOEISR_MODELS = [m for m in EVALUATED_MODELS if m.startswith("moeisr-")]  # recipe v1's and v2's
ROWS = len(EVALUATED_MODELS) + len(MOEISR_MODELS)  # the grid's rows: every model once, MoEISR again at all-deepest
FIGURES = ("psnr_vs_gflops", "flops_per_image", "expert_maps", "qualitative", "learning_curves")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A data root with two real 96×96 crops in Set5 (the smoke grid evaluates the first) and the pipeline's folders."""
    base = tmp_path_factory.mktemp("reproduce")
    with smoke_workspace(base) as (root, folders):
        lines: list[str] = []
        result = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, seeds=False, **folders)
        yield {"result": result, "log": lines, "folders": folders, "root": root}


@pytest.fixture(autouse=True)
def _data_root(workspace, monkeypatch):
    monkeypatch.setenv("MOEISR_DATA", str(workspace["root"]))


def test_first_run_trains_every_model_and_writes_every_output(workspace):
    result = workspace["result"]
    assert {n: c.status for n, c in result.checkpoints.items()} == {r.experiment: "trained" for r in ROLES}
    results = workspace["folders"]["results"]
    expected = ["main.csv", "REPORT.md", "timings.json", "tables/main.md", "tables/experts.md", "tables/published.md"]
    expected += [f"figures/{name}.png" for name in FIGURES] + [f"checkpoints/{r.experiment}.pt" for r in ROLES]
    expected += [f"logs/{r.experiment}.csv" for r in ROLES]
    assert [p for p in expected if not (results / p).is_file()] == []
    # 1 image x 1 scale x every evaluated model, and each MoEISR again at all-deepest routing (the decomposition)
    assert result.rows_computed == ROWS

    # bundles: weights only, with the provenance the reuse decision needs
    for role in ROLES:
        ckpt = read_checkpoint(results / "checkpoints" / f"{role.experiment}.pt")
        assert "train_state" not in ckpt
        meta = ckpt["meta"]
        assert meta["experiment"] == role.experiment and meta["profile"] == "smoke" and meta["steps"] == 4
        assert meta["config_hash"] == result.checkpoints[role.experiment].experiment.config_hash
    # LMF's bundle carries the CMSR table measured on training images, with CMSR off by default
    lmf = read_checkpoint(results / "checkpoints" / "lm_lte.pt")
    assert set(lmf["model"]["args"]["cmsr_spec"]) == {"table", "mse_threshold"}
    assert lmf["model"]["args"]["cmsr_spec"]["mse_threshold"] is None and lmf["meta"]["calibrated"]
    # the equal-budget controls trained exactly as many steps as the MoEISR fine-tunes
    for control, moe in [(f"{b}_equal{v}", f"moeisr_{b}{v}") for b in ("liif", "lte") for v in ("", "_v2")]:
        logs = [pd.read_csv(results / "logs" / f"{name}.csv") for name in (control, moe)]
        assert logs[0]["step"].max() == logs[1]["step"].max() == 4


def test_main_csv_schema_and_model_names(workspace):
    results = workspace["folders"]["results"]
    frame = pd.read_csv(results / "main.csv", dtype={"knob": str, "config_hash": str})
    assert set(REQUIRED_COLUMNS) | {"config_hash", "lr_h", "lr_w"} <= set(frame.columns)
    assert list(dict.fromkeys(frame["model"])) == [m for m in MODEL_ORDER if m in EVALUATED_MODELS]
    assert set(frame["dataset"]) == {"Set5"} and set(frame["image"]) == {"baby"}
    assert set(frame["scale"]) == {4.0} and len(frame) == ROWS
    deepest = frame[frame["knob"] == "-inf"]
    assert sorted(deepest["model"]) == sorted(MOEISR_MODELS)
    assert (deepest[[c for c in frame if c.startswith("share_")]].fillna(0).idxmax(axis=1) != "share_0").all()
    checkpoints = workspace["result"].checkpoints
    hashes = {r.model: checkpoints[r.experiment].experiment.config_hash for r in ROLES if r.evaluated}
    for model, config_hash in hashes.items():
        assert set(frame.loc[frame["model"] == model, "config_hash"]) == {config_hash}
    assert frame.loc[frame["model"] == "bicubic", "gflops"].isna().all()
    assert (frame.loc[frame["model"] != "bicubic", "gflops"] > 0).all()
    for model, experts in [(f"moeisr-{b}{v}", j) for b, j in (("liif", 4), ("lte", 3)) for v in ("", "-v2")]:
        shares = frame.loc[frame["model"] == model, [f"share_{j}" for j in range(experts)]]
        assert shares.sum(axis=1).tolist() == pytest.approx([1.0, 1.0])  # learned and all-deepest routing
    # MoEISR decodes some pixels with cheaper experts than its backbone's MLP
    default = frame[frame["knob"] == "none"]
    gflops = {m: default.loc[default["model"] == m, "gflops"].to_numpy() for m in EVALUATED_MODELS}
    for b, v in [(b, v) for b in ("liif", "lte") for v in ("", "-v2")]:
        assert (gflops[f"moeisr-{b}{v}"] < gflops[b]).all()


def test_tables_and_report_render(workspace):
    results = workspace["folders"]["results"]
    main = (results / "tables" / "main.md").read_text()
    assert FLOPS_HEADER in main and "ΔPSNR vs equal budget (dB)" in main and "FLOPs saved (%)" in main
    assert "Set5 (first 1)" in main  # the smoke grid evaluates 1 of the 2 images: labelled as a subset
    assert main.count("| Set5 (first 1) | ×4") == 2  # one row per family
    experts = (results / "tables" / "experts.md").read_text()
    assert "expert 3 (%)" in experts and "mean relative decoder cost (%)" in experts
    assert "Citations, not measurements" in (results / "tables" / "published.md").read_text()
    decomposition = (results / "tables" / "decomposition.md").read_text()  # deficit + routing cost = ΔPSNR
    assert "### MoEISR-LIIF" in decomposition and "### MoEISR-LTE" in decomposition
    frame = pd.read_csv(results / "main.csv", dtype={"knob": str})
    for family in FAMILIES:

        def psnr(model, knob):
            return frame.loc[(frame["model"] == model) & (frame["knob"] == knob), "psnr"].item()

        deficit = psnr(family.moe, "-inf") - psnr(family.equal, "none")
        cost = psnr(family.moe, "none") - psnr(family.moe, "-inf")
        assert f"| {deficit:+.3f}" in decomposition and f"| {cost:+.3f}" in decomposition
    efficiency = (results / "tables" / "efficiency.md").read_text()  # MoEISR and LMF against one equal budget
    for family in FAMILIES:
        for method in (family.moe_label, family.lmf_label):
            assert re.search(rf"\|\s*{family.label}\s*\|\s*{method}\s*\|", efficiency), method
        assert f"On {family.label}, " in efficiency and f"{family.lmf_label} PSNR" in main
    report = (results / "REPORT.md").read_text()
    for role, info in workspace["result"].checkpoints.items():
        assert info.experiment.config_hash in report and role in report
    for name in FIGURES:
        assert f"(figures/{name}.png)" in report
    assert "MoEISR-LIIF" in report and "Smoke profile" in report and "not checked (no previous main.csv)" in report
    recheck = workspace["result"].recheck  # the sampled recheck: every model, one image per set and scale ×2-×4
    assert (
        recheck is not None and len(recheck) == len(EVALUATED_MODELS) and recheck["within"].all()
    )  # one cell: Set5 ×4
    assert "Mode **verified**" in report and "Verdict: **PASS**" in report
    # the machine line names the run's machine, recorded in run.json, not whichever process renders the report
    run = json.loads((results / "run.json").read_text())
    assert run["machine"]["cores"] == str(os.cpu_count()) and machine_text(run["machine"]) in report


def test_second_run_reuses_checkpoints_and_cache(workspace):
    folders = workspace["folders"]
    bundles = {r.experiment: folders["results"] / "checkpoints" / f"{r.experiment}.pt" for r in ROLES}
    before = {name: path.stat().st_mtime_ns for name, path in bundles.items()}
    lines: list[str] = []
    again = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, seeds=False, **folders)
    assert {c.status for c in again.checkpoints.values()} == {"reused"}
    assert not any("training" in line or "resuming" in line for line in lines)
    assert {name: path.stat().st_mtime_ns for name, path in bundles.items()} == before
    assert again.rows_computed == 0
    # nothing was computed, so nothing is compared with the previous main.csv; the sample is recomputed again
    assert again.check is None and again.recheck["within"].all()
    report = (folders["results"] / "REPORT.md").read_text()
    assert "not checked (0 rows recomputed by the eval stage)" in report and "Verdict: **PASS**" in report


def test_full_mode_recomputes_every_row_and_compares_them_with_the_previous_main_csv(workspace):
    folders = workspace["folders"]
    lines: list[str] = []
    full = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, full=True, seeds=False, **folders)
    assert full.mode == "full" and full.recheck is None  # no sample: every row is recomputed
    assert full.rows_computed == len(full.rows) == ROWS  # one image at one scale per model (+ all-deepest)
    assert len(list(folders["cache"].glob("full-*.jsonl"))) == 1  # a fresh cache file beside the shared one
    check = full.check
    assert int(check["compared"].sum()) == ROWS and check["max_abs_dpsnr"].max() == 0.0
    report = (folders["results"] / "REPORT.md").read_text()
    assert "Mode **full**" in report and f"The {ROWS} rows the eval stage computed" in report


def test_a_changed_config_is_not_reused_and_a_foreign_run_is_not_resumed(workspace):
    folders = workspace["folders"]
    paths = default_paths("smoke", **folders)
    changed = load_experiments(paths, "smoke", [*OVERRIDES, "train.seed=1"])["liif"]
    bundle = paths.bundle / "liif.pt"
    reusable, why = bundle_status(bundle, changed)
    assert not reusable and "train.seed: 0 -> 1" in why
    quiet = {"log_copy": paths.logs / "unused.csv", "parent": None, "progress": False, "log": lambda line: None}
    with pytest.raises(UserError, match="move .* away"):  # the run folder holds the seed-0 run
        prepare_checkpoint(changed, bundle=bundle, run_dir=paths.run_dir("smoke", "liif"), **quiet)
    with pytest.raises(UserError, match="include the train stage"):
        prepare_checkpoint(
            changed, bundle=bundle, run_dir=paths.run_dir("smoke", "none"), allow_training=False, **quiet
        )


def test_reproduction_check_reports_the_largest_differences(workspace):
    committed = pd.read_csv(workspace["folders"]["results"] / "main.csv", dtype={"knob": str, "image": str})
    recomputed = committed.copy()
    moved = recomputed.index[recomputed["model"] == "lte"][0]
    recomputed.loc[moved, "psnr"] += 0.02
    recomputed.loc[moved, "gflops"] += 0.5
    recomputed = recomputed.drop(recomputed.index[recomputed["model"] == "bicubic"][:1])
    check = reproduction_check(committed, recomputed).set_index("model")
    assert check.loc["lte", "max_abs_dpsnr"] == pytest.approx(0.02)
    assert check.loc["lte", "max_abs_dgflops"] == pytest.approx(0.5)
    assert check.loc["liif", "max_abs_dpsnr"] == 0.0
    assert (check.loc["bicubic", "only_committed"], check.loc["bicubic", "compared"]) == (1, 0)
    assert math.isnan(check.loc["bicubic", "max_abs_dgflops"])
    assert "ABOVE the 0.01 dB target" in reproduction_table(check.reset_index())


def test_reading_is_a_table_computed_from_the_rows_and_says_when_moeisr_loses(workspace):
    frame = pd.read_csv(workspace["folders"]["results"] / "main.csv", dtype={"knob": str, "image": str})
    frame = frame[frame["knob"] == "none"].copy()  # as the report reads them (all-deepest rows: decomposition only)
    liif = FAMILIES[0]
    equal = frame.loc[frame["model"] == liif.equal, "psnr"].to_numpy()
    moe = frame["model"] == liif.moe
    frame.loc[moe, "psnr"] = equal - 0.25  # MoEISR 0.25 dB below the equal-budget backbone on every image
    rows = comparison_rows(frame).set_index("comparison")
    row = rows.loc["MoEISR-LIIF vs equal-budget LIIF"]
    assert row["ΔPSNR (dB)"] == pytest.approx(-0.25) and row["95% CI"] == "[-0.250, -0.250]"
    assert (row["verdict"], row["decided by"]) == ("worse", "interval")
    assert row["pairs better / worse"] == f"0 / {row['pairs']}"
    saved = 100 * (1 - frame.loc[moe, "gflops"].mean() / frame.loc[frame["model"] == liif.equal, "gflops"].mean())
    assert row["FLOPs saved (%)"] == pytest.approx(saved, abs=0.05)
    frame.loc[moe, "psnr"] = equal + 0.1
    assert comparison_rows(frame).set_index("comparison").loc["MoEISR-LIIF vs equal-budget LIIF", "verdict"] == "better"
    frame.loc[moe, "psnr"] = equal + 0.01  # consistent but below the practical floor
    row = comparison_rows(frame).set_index("comparison").loc["MoEISR-LIIF vs equal-budget LIIF"]
    assert (row["verdict"], row["decided by"]) == ("matches", "floor 0.05")
    shown = reading(frame)[0]  # signed ΔPSNR; no "FLOPs saved" for a pair at equal FLOPs by construction
    extra = next(line for line in shown.splitlines() if "(extra training)" in line)
    assert "| +0.010 " in shown.splitlines()[2] and extra.count("| –") >= 3


def test_dense_frontier_from_trained_dense_models(workspace):
    """The dense controls (docs/dense_baselines.md), reproduced from the converged smoke backbones and evaluated on
    the grid: the frontier interpolates their per-image PSNR at recipe v2's GFLOPs, the main table and the reading
    state the difference as interpolated, and the figure draws the frontier."""
    from moeisr.report import figures
    from moeisr.report.tables import FAMILIES_V2, frontier_pairs, main_table

    frame = pd.read_csv(workspace["folders"]["results"] / "main.csv", dtype={"knob": str, "image": str})
    frame = frame[frame["knob"] == "none"]
    for family in FAMILIES_V2:
        pairs = frontier_pairs(frame, family)
        assert len(pairs) == 1
        dense = frame[frame["model"].isin(family.frontier)].sort_values("gflops")
        assert dense["gflops"].is_monotonic_increasing and dense["gflops"].nunique() == len(family.frontier)
        moe_gflops = pairs["moe_gflops"].item()
        if dense["gflops"].min() <= moe_gflops <= dense["gflops"].max():
            expected = float(np.interp(moe_gflops, dense["gflops"], dense["psnr"]))
            assert pairs["frontier_psnr"].item() == pytest.approx(expected)
    table = main_table(frame, families=FAMILIES_V2)
    assert "ΔPSNR vs dense frontier at equal GFLOPs (dB, interpolated)" in table
    rows = comparison_rows(frame, families=FAMILIES_V2).set_index("comparison")
    for family in FAMILIES_V2:  # a frontier comparison only where MoEISR sits inside the frontier's GFLOPs range
        inside = frontier_pairs(frame, family)["d_psnr_frontier"].notna().all()
        label = f"{family.moe_label} vs the dense {family.label} frontier (interpolated at its GFLOPs)"
        assert (label in rows.index) == inside
    efficiency = efficiency_rows(frame, {}, {m: 0.0 for m in frame["model"].unique()}, FAMILIES_V2)
    efficiency = efficiency.set_index("method")
    lmf = frontier_pairs(frame, FAMILIES_V2[1], "lm-lte")
    column = efficiency.loc["LM-LTE", "ΔPSNR vs dense frontier at its GFLOPs (dB)"]
    assert column.endswith("(interpolated)") if lmf["d_psnr_frontier"].notna().all() else "not extrapolated" in column
    means = frame.groupby(["model", "dataset", "scale", "knob"]).agg(psnr=("psnr", "mean"), gflops=("gflops", "mean"))
    curves = figures._dense_frontiers(means.reset_index().assign(n=1, curve=False))
    assert set(curves["model"]) == {"LIIF dense frontier", "LTE dense frontier"}


# ---- --plan: what is left, read from the bundles, run folders and cache ------------------------------------------


def _plan(folders, **kwargs):
    from moeisr.pipeline.plan import make_plan
    from moeisr.pipeline.reproduce import setup

    return make_plan(setup("smoke", overrides=OVERRIDES, **{"seeds": False, **folders, **kwargs}))


def test_plan_after_the_run_has_nothing_left(workspace):
    frame = _plan(workspace["folders"]).frame
    assert list(frame["experiment"][1:]) == [r.experiment for r in ROLES]
    assert frame["steps_left"].sum() == 0 and frame["rows_left"].sum() == 0
    counted = frame[frame["model"] != ""].set_index("model")["rows"].to_dict()
    # one row per model on the one-image, one-scale grid, MoEISR twice (default and all-deepest routing)
    assert counted == {m: 2 if m in MOEISR_MODELS else 1 for m in EVALUATED_MODELS}


def test_plan_counts_exactly_the_missing_rows_and_steps(workspace, tmp_path):
    import shutil

    folders = workspace["folders"]
    cache = tmp_path / "cache"
    shutil.copytree(folders["cache"], cache)
    lines = (cache / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if '"model":"liif-equal-budget"' not in line.replace(" ", "")]
    assert len(lines) - len(kept) == 1
    (cache / "results.jsonl").write_text("\n".join(kept) + "\n")
    runs = tmp_path / "runs"
    shutil.copytree(folders["runs"], runs)
    results = tmp_path / "results"
    shutil.copytree(folders["results"], results)
    (results / "checkpoints" / "lte_d1.pt").unlink()  # its finished run folder remains: its steps count as done
    shutil.rmtree(runs / "smoke" / "lte_d2")
    (results / "checkpoints" / "lte_d2.pt").unlink()  # nothing left of it: every step and row to do

    frame = _plan({"results": results, "runs": runs, "cache": cache}).frame.set_index("experiment")
    left = frame[(frame["steps_left"] > 0) | (frame["rows_left"] > 0)]
    assert left["rows_left"].to_dict() == {"liif_equal": 1, "lte_d1": 1, "lte_d2": 1}
    assert left["steps_left"].to_dict() == {"liif_equal": 0, "lte_d1": 0, "lte_d2": 4}
    assert (left["eval_hours"] > 0).all() and left.loc["lte_d2", "train_hours"] > 0
    # lte_d2's pace: the recorded training of the smoke run's bundled lte experiments, not a constant
    assert "recorded for" in left.loc["lte_d2", "train_pace"]


def test_plan_cli_prints_the_table_and_the_total(workspace, capsys):
    from moeisr.cli import main

    folders = workspace["folders"]
    argv = ["reproduce", "--plan", "--no-seeds", "--profile", "smoke", "--set", *OVERRIDES]
    argv += [f"--{k}={v}" for k, v in folders.items()]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| moeisr-lte-v2 " in out and "done" in out
    assert re.search(r"Left: training –, evaluation –", out)


def test_plan_of_empty_folders_has_everything_left(workspace, tmp_path):
    folders = {"results": tmp_path / "results", "runs": tmp_path / "runs", "cache": tmp_path / "cache"}
    frame = _plan(folders).frame
    trained = frame[frame["experiment"] != ""]
    assert (trained["steps_left"] == trained["steps"]).all() and (trained["train_hours"] > 0).all()
    assert (frame["rows_left"] == frame["rows"]).all() and frame["rows"].sum() == ROWS
    assert set(trained["train_pace"].str.extract(r"\((.*)\)")[0]) == {"planning constant"}
