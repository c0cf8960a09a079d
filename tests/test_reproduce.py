"""`moeisr reproduce` end to end on the smoke profile with a reduced grid, then again: everything reused.

The data root is a temporary folder holding two 96×96 crops of real Set5 images (so that a full-image decode
takes a fraction of a second) and a link to the real training images; training is cut to 4 steps and the grid
to ×4 by overrides applied to every experiment alike.
"""

import copy
import math

import pandas as pd
import pytest
from test_pipeline_support import smoke_workspace

from moeisr.commands.reproduce import run_reproduce as reproduce
from moeisr.errors import UserError
from moeisr.evaluate.cache import REQUIRED_COLUMNS
from moeisr.evaluate.recheck import reproduction_check
from moeisr.models.checkpoint import read_checkpoint
from moeisr.pipeline.bundle import bundle_status, prepare_checkpoint
from moeisr.pipeline.reproduce import ROLES, default_paths, load_experiments
from moeisr.report.report_md import family_reading
from moeisr.report.tables import FAMILIES, FLOPS_HEADER, MODEL_ORDER, reproduction_table

pytestmark = pytest.mark.slow  # ~1 min on 2 shared cores: 6 short trainings, 7 evaluations, 5 figures, twice

OVERRIDES = ["optim.max_steps=4", "eval.scales=[4]"]  # 4 steps, one scale: ~1 min in all
FIGURES = ("psnr_vs_gflops", "flops_per_image", "expert_maps", "qualitative", "learning_curves")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A data root with two real 96×96 crops in Set5 (the smoke grid evaluates the first) and the pipeline's folders."""
    base = tmp_path_factory.mktemp("reproduce")
    with smoke_workspace(base) as (root, folders):
        lines: list[str] = []
        result = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, **folders)
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
    assert result.rows_computed == len(MODEL_ORDER)  # 1 image x 1 scale x 7 models

    # bundles: weights only, with the provenance the reuse decision needs
    for role in ROLES:
        ckpt = read_checkpoint(results / "checkpoints" / f"{role.experiment}.pt")
        assert "train_state" not in ckpt
        meta = ckpt["meta"]
        assert meta["experiment"] == role.experiment and meta["profile"] == "smoke" and meta["steps"] == 4
        assert meta["config_hash"] == result.checkpoints[role.experiment].experiment.config_hash
    # the equal-budget controls trained exactly as many steps as the MoEISR fine-tunes
    for control, moe in (("liif_equal", "moeisr_liif"), ("lte_equal", "moeisr_lte")):
        logs = [pd.read_csv(results / "logs" / f"{name}.csv") for name in (control, moe)]
        assert logs[0]["step"].max() == logs[1]["step"].max() == 4


def test_main_csv_schema_and_model_names(workspace):
    results = workspace["folders"]["results"]
    frame = pd.read_csv(results / "main.csv", dtype={"knob": str, "config_hash": str})
    assert set(REQUIRED_COLUMNS) | {"config_hash", "lr_h", "lr_w"} <= set(frame.columns)
    assert list(dict.fromkeys(frame["model"])) == list(MODEL_ORDER)
    assert set(frame["dataset"]) == {"Set5"} and set(frame["image"]) == {"baby"}
    assert set(frame["scale"]) == {4.0} and len(frame) == len(MODEL_ORDER)
    checkpoints = workspace["result"].checkpoints
    hashes = {r.model: checkpoints[r.experiment].experiment.config_hash for r in ROLES}
    for model, config_hash in hashes.items():
        assert set(frame.loc[frame["model"] == model, "config_hash"]) == {config_hash}
    assert frame.loc[frame["model"] == "bicubic", "gflops"].isna().all()
    assert (frame.loc[frame["model"] != "bicubic", "gflops"] > 0).all()
    for model, experts in (("moeisr-liif", 4), ("moeisr-lte", 3)):
        shares = frame.loc[frame["model"] == model, [f"share_{j}" for j in range(experts)]]
        assert shares.sum(axis=1).tolist() == pytest.approx([1.0])
    # MoEISR decodes some pixels with cheaper experts than its backbone's MLP
    gflops = {m: frame.loc[frame["model"] == m, "gflops"].to_numpy() for m in MODEL_ORDER}
    assert (gflops["moeisr-liif"] < gflops["liif"]).all() and (gflops["moeisr-lte"] < gflops["lte"]).all()


def test_tables_and_report_render(workspace):
    results = workspace["folders"]["results"]
    main = (results / "tables" / "main.md").read_text()
    assert FLOPS_HEADER in main and "ΔPSNR vs equal budget (dB)" in main and "FLOPs saved (%)" in main
    assert "Set5 (first 1)" in main  # the smoke grid evaluates 1 of the 2 images: labelled as a subset
    assert main.count("| Set5 (first 1) | ×4") == 2  # one row per family
    experts = (results / "tables" / "experts.md").read_text()
    assert "expert 3 (%)" in experts and "mean relative decoder cost (%)" in experts
    assert "Citations, not measurements" in (results / "tables" / "published.md").read_text()
    report = (results / "REPORT.md").read_text()
    for role, info in workspace["result"].checkpoints.items():
        assert info.experiment.config_hash in report and role in report
    for name in FIGURES:
        assert f"(figures/{name}.png)" in report
    assert "MoEISR-LIIF" in report and "Smoke profile" in report and "No previous `main.csv`" in report


def test_second_run_reuses_checkpoints_and_cache(workspace):
    folders = workspace["folders"]
    bundles = {r.experiment: folders["results"] / "checkpoints" / f"{r.experiment}.pt" for r in ROLES}
    before = {name: path.stat().st_mtime_ns for name, path in bundles.items()}
    lines: list[str] = []
    again = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, **folders)
    assert {c.status for c in again.checkpoints.values()} == {"reused"}
    assert not any("training" in line or "resuming" in line for line in lines)
    assert {name: path.stat().st_mtime_ns for name, path in bundles.items()} == before
    assert again.rows_computed == 0
    # the reproduction check compared every row with the first run's main.csv: identical
    check = again.check
    assert check is not None and int(check["compared"].sum()) == len(MODEL_ORDER)
    assert check["max_abs_dpsnr"].max() == 0.0 and (check["only_committed"] == 0).all()
    assert "within the 0.01 dB target" in (folders["results"] / "REPORT.md").read_text()


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


def test_reading_is_computed_from_the_rows_and_says_when_moeisr_loses(workspace):
    frame = pd.read_csv(workspace["folders"]["results"] / "main.csv", dtype={"knob": str, "image": str})
    liif = FAMILIES[0]
    equal = frame.loc[frame["model"] == liif.equal, "psnr"].to_numpy()
    moe = frame["model"] == liif.moe
    frame.loc[moe, "psnr"] = equal - 0.25  # MoEISR 0.25 dB below the equal-budget backbone
    text = " ".join(family_reading(frame, liif))
    assert "at a PSNR difference of -0.250 dB on average" in text
    assert "does not match the equal-budget LIIF in any cell" in text and "trades quality for compute" in text
    saved = 100 * (1 - frame.loc[moe, "gflops"].mean() / frame.loc[frame["model"] == liif.equal, "gflops"].mean())
    assert f"saved {saved:.1f}% of the FLOPs of the equal-budget LIIF" in text
    frame.loc[moe, "psnr"] = equal + 0.1
    assert "matches or beats the equal-budget LIIF (ΔPSNR ≥ −0.005 dB) in every cell" in " ".join(
        family_reading(frame, liif)
    )


def test_a_model_subset_prepares_its_parents_and_evaluates_only_itself(workspace, tmp_path):
    """--models: one job per model sharing a cache (e.g. on a cluster); the report waits for all of them."""
    folders = {**workspace["folders"], "cache": tmp_path / "cache"}  # an empty cache: every row is new
    lines: list[str] = []
    part = reproduce(
        "smoke", overrides=OVERRIDES, progress=False, log=lines.append, stages=["train", "eval"],
        models=["moeisr-liif", "bicubic"], **folders,
    )  # fmt: skip
    assert set(part.checkpoints) == {"liif", "moeisr_liif"}  # the model and the backbone it starts from
    assert part.rows_computed == 2  # bicubic and moeisr-liif on the 1-image, 1-scale grid
    rows = pd.read_json(tmp_path / "cache" / "results.jsonl", lines=True)
    assert sorted(rows["model"]) == ["bicubic", "moeisr-liif"]
    rest = [m for m in MODEL_ORDER if m not in ("bicubic", "moeisr-liif")]
    again = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, stages=["eval"], models=rest,
                      **folders)  # fmt: skip
    assert again.rows_computed == len(rest)
    report = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, stages=["report"], **folders)
    assert report.rows_computed == 0 and len(report.rows) == len(MODEL_ORDER)
    with pytest.raises(UserError, match="report stage needs every model"):
        reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, models=["liif"], **folders)
    with pytest.raises(UserError, match="unknown model 'liff'; choose from bicubic, liif"):
        reproduce("smoke", overrides=OVERRIDES, stages=["eval"], progress=False, log=lines.append, models=["liff"],
                  **folders)  # fmt: skip


def test_concurrent_model_jobs_keep_each_others_timings(tmp_path):
    """Two `--models` jobs that read timings.json before either wrote keep both jobs' entries (the race that
    lost two experiments' train timings when the cpu models were trained as parallel jobs)."""
    from moeisr.pipeline.reproduce import _load_timings, _save_timings

    path = tmp_path / "timings.json"
    _save_timings(path, {"profile": "cpu", "commit": "a", "stages": {"train (liif)": {"seconds": 1}}}, {})
    loaded = _load_timings(path)  # both jobs start from this
    jobs = {"lte": copy.deepcopy(loaded), "moeisr-liif": copy.deepcopy(loaded)}
    for model, timings in jobs.items():
        timings["stages"][f"train ({model})"] = {"seconds": 2}
        timings["experiments"] = {model.replace("-", "_"): {"steps": 2000}}
    for timings in jobs.values():
        written = _save_timings(path, timings, loaded)
    assert set(written["stages"]) == {"train (liif)", "train (lte)", "train (moeisr-liif)"}
    assert set(written["experiments"]) == {"lte", "moeisr_liif"}
    assert _load_timings(path) == written
