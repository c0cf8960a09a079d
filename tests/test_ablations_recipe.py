"""`moeisr ablations --suite experiments/ablations/recipe.yaml` end to end on the smoke profile.

Data root from tests/test_pipeline_support.py (two real 96×96 Set5 crops and the real training images, T91 among
them). The main LIIF trains 4 steps (`--train-main`); the suite's smoke rows (liif-ref, liif-prefix-lstsq and the
dense liif-equal) fine-tune 2 steps from it, validating on fixed 48 px T91 crops at ×2 and ×4 at their last step.
First `train,heldout` alone, recording the sets validation reads (in training and in the heldout stage) and the
sets training reads: T91's crops and BSD200, never a benchmark set. Then `eval,report`: the benchmark grid for
reporting, the selection from the held-out rows (the report layer reads no image), its table and chosen recipe.
The main suite's folders stay untouched.
"""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_pipeline_support import smoke_workspace

import moeisr.data.train
import moeisr.train.validation
from moeisr.artefacts import ABLATION_META_FILE, ABLATION_RAW_CSVS
from moeisr.commands.ablations import ablations
from moeisr.data.layout import BENCHMARK_SETS
from moeisr.report.ablations.analysis import read_summary
from moeisr.report.ablations.recipe import missing_rows, select, selection_markdown
from moeisr.report.ablations.render import TABLE, render

pytestmark = [pytest.mark.slow, pytest.mark.data]  # ~40 s on 2 shared cores

SUITE = Path(__file__).resolve().parents[1] / "experiments" / "ablations" / "recipe.yaml"
RESULTS = Path(__file__).resolve().parents[1] / "results"  # the committed main suite's raw artefacts
OVERRIDES = ["optim.max_steps=4"]
ROWS = ("liif-ref", "liif-prefix-lstsq", "liif-equal")
CROP, SCALES, LIMIT = 48, (2.0, 4.0), 2  # the smoke profile's held-out split


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipe")
    with smoke_workspace(base) as (root, folders), pytest.MonkeyPatch.context() as patch:
        validated, trained = [], []
        list_images, set_hr_dir = moeisr.train.validation.list_images, moeisr.data.train.set_hr_dir
        patch.setattr(moeisr.train.validation, "list_images",
                      lambda name, **kw: validated.append(name) or list_images(name, **kw))  # fmt: skip
        patch.setattr(moeisr.data.train, "set_hr_dir", lambda name, r: trained.append(name) or set_hr_dir(name, r))
        options = {"profile": "smoke", "overrides": OVERRIDES, "suite": SUITE, "progress": False, **folders}
        choose_log: list[str] = []
        chosen, _ = ablations(stages=["train", "heldout"], train_main=True, log=choose_log.append, **options)
        sets = {"validated": sorted(set(validated)), "trained": sorted(set(trained)), "validations": len(validated)}
        report_log: list[str] = []
        reported, written = ablations(stages=["eval", "report"], log=report_log.append, **options)
        yield {"chosen": chosen, "reported": reported, "written": written, "folders": folders, "root": root,
               "sets": sets, "log": choose_log + report_log, "options": options}  # fmt: skip


@pytest.fixture(autouse=True)
def _data_root(workspace, monkeypatch):
    monkeypatch.setenv("MOEISR_DATA", str(workspace["root"]))


def _folder(workspace):
    return workspace["folders"]["results"] / "ablations" / "recipe"


def test_the_recipe_is_chosen_without_reading_a_benchmark_set(workspace):
    sets = workspace["sets"]
    assert sets["validated"] == ["T91"] and sets["trained"] == ["BSD200"]  # the held-out split; the training data
    assert not set(sets["validated"] + sets["trained"]) & set(BENCHMARK_SETS)
    assert sets["validations"] >= 2  # in training (each row, its last step) and in the heldout stage
    heldout = read_summary(_folder(workspace) / "heldout.csv")
    assert set(heldout["dataset"]) == {"T91"} and set(heldout["crop"]) == {CROP}
    assert set(heldout["row"]) == set(ROWS) and set(heldout["scale"]) == set(SCALES)
    assert len(heldout) == len(ROWS) * len(SCALES) * LIMIT and (heldout["h"] == CROP).all()
    assert any(line.startswith("held-out split (the selection's only data): T91, fixed 48 px crops") for line in
               workspace["log"])  # fmt: skip


def test_rows_train_and_validate_on_the_held_out_crops_at_their_last_step(workspace):
    result = workspace["chosen"]
    assert [r.name for r in result.rows] == list(ROWS)
    assert {n: c.status for n, c in result.checkpoints.items()} == {n: "trained" for n in ROWS}
    assert result.checkpoints["liif-equal"].path.parent == _folder(workspace) / "checkpoints"
    runs = workspace["folders"]["runs"] / "smoke" / "ablations" / "recipe"
    assert sorted(p.name for p in runs.iterdir()) == sorted(ROWS)
    heldout = read_summary(_folder(workspace) / "heldout.csv")
    for name in ROWS:
        log = pd.read_csv(_folder(workspace) / "logs" / f"{name}.csv")
        last = log.dropna(subset=["val_psnr"]).iloc[-1]
        assert last["step"] == 2 and log["val_psnr"].notna().sum() == 1  # validated once, at the last step
        mine = heldout[heldout["row"] == name]
        # the heldout stage measures the bundled checkpoint on the crops training validated on: the same mean
        assert mine.groupby("scale")["psnr"].mean().mean() == pytest.approx(last["val_psnr"], abs=1e-4)
        moe = name != "liif-equal"
        assert mine["rel_cost"].notna().all() == moe and (mine["gflops"] > 0).all()
        if moe:
            shares = mine[[c for c in mine.columns if c.startswith("share_")]]
            assert shares.sum(axis=1).to_numpy() == pytest.approx(1.0)


def test_the_selection_writes_a_table_and_a_chosen_recipe(workspace):
    folder, results = _folder(workspace), workspace["folders"]["results"]
    expected = {folder / f for f in ("heldout_rows.csv", "selection.csv", "factor_cells.csv", "factors.csv",
                                     "equal_cells.csv", "recipe.json", "selection.md")}  # fmt: skip
    assert set(workspace["written"]) == expected | {results / "tables" / "ablations_recipe.md"}
    summary = read_summary(folder / "heldout_rows.csv").set_index("row")
    assert list(summary.index) == list(ROWS)
    assert summary.loc["liif-equal", "dense_for"] == "moeisr_liif" and math.isnan(
        summary.loc["liif-equal", "saved_pct"]
    )
    for name in ("liif-ref", "liif-prefix-lstsq"):
        assert summary.loc[name, "dense"] == "liif-equal" and math.isfinite(summary.loc[name, "saved_pct"])
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["heldout"] == {"set": "T91", "scales": list(SCALES), "crop": CROP, "limit": LIMIT}
    assert recipe["complete"] is True and recipe["missing_rows"] == []  # every planned row has held-out numbers
    (chosen,) = recipe["recipes"]
    assert chosen["base"] == "moeisr_liif" and chosen["reference"] == "liif-ref"
    assert chosen["status"] in {"v1", "one knob"} and chosen["chosen"] in {"liif-ref", "liif-prefix-lstsq"}
    decision = read_summary(folder / "selection.csv").set_index("row").loc["liif-prefix-lstsq"]
    assert decision["winner"] == (chosen["chosen"] == "liif-prefix-lstsq")
    table = (results / "tables" / "ablations_recipe.md").read_text()
    assert "## Recipe v2: chosen on the held-out split (recipe suite)" in table and "no benchmark set is read" in table
    assert "| `liif-prefix-lstsq` " in table and "## Benchmark grid (reporting only: never used to choose)" in table
    assert "ΔPSNR vs ref re-routed to the row's cost" in table  # the suite's matched-cost column
    assert (folder / "selection.md").read_text() in table


def test_a_selection_over_part_of_the_rows_says_it_is_provisional(workspace):
    folder = _folder(workspace)
    meta = json.loads((folder / ABLATION_META_FILE).read_text())
    assert meta["planned_rows"] == list(ROWS)
    summary = read_summary(folder / "heldout_rows.csv")
    decisions, recipes = select(summary, meta)
    assert "Provisional" not in selection_markdown(summary, decisions, recipes, meta)
    part = summary[summary["row"] != "liif-prefix-lstsq"]  # a knob row not measured yet
    decisions, recipes = select(part, meta)
    assert missing_rows(part, meta) == ["liif-prefix-lstsq"]
    assert "**Provisional**: 1 of 3 rows have no held-out numbers yet (`liif-prefix-lstsq`)" in selection_markdown(
        part, decisions, recipes, meta
    )


def test_the_main_suite_is_left_alone(workspace):
    results = workspace["folders"]["results"]
    assert not (results / "ablations" / "meta.json").exists() and not (results / TABLE).exists()
    assert sorted(p.name for p in (results / "ablations").iterdir()) == ["recipe"]


def test_the_main_table_ends_with_the_recipe_section_only_when_there_is_one(workspace, tmp_path):
    (tmp_path / "ablations").mkdir()
    for name in [f"{n}.csv" for n in ABLATION_RAW_CSVS] + [ABLATION_META_FILE]:
        shutil.copy(RESULTS / "ablations" / name, tmp_path / "ablations" / name)
    render(tmp_path, log=lambda line: None)
    alone = (tmp_path / TABLE).read_text()
    assert "Recipe v2" not in alone
    (tmp_path / "ablations" / "recipe").mkdir()
    section = (_folder(workspace) / "selection.md").read_text()
    (tmp_path / "ablations" / "recipe" / "selection.md").write_text(section)
    render(tmp_path, log=lambda line: None)
    assert (tmp_path / TABLE).read_text() == alone + "\n" + section


def test_a_second_run_reuses_everything(workspace):
    lines: list[str] = []
    again, _ = ablations(log=lines.append, **workspace["options"])
    assert {c.status for c in again.checkpoints.values()} == {"reused"}
    assert again.heldout_computed == [] and again.rows_computed == 0
    assert f"training left: none ({len(ROWS)} rows trained)" in lines  # what --plan says before a run
    assert not any(
        ("training" in line and not line.startswith("training left")) or "resuming" in line for line in lines
    )
    first = next(line for line in workspace["log"] if line.startswith("training left"))
    assert first.startswith(f"training left: {len(ROWS)} of {len(ROWS)} rows, {2 * len(ROWS)} of {2 * len(ROWS)} steps")


def test_another_suite_without_a_rule_renders_beside_the_main_suite(tmp_path):
    (tmp_path / "ablations" / "other").mkdir(parents=True)
    for name in [f"{n}.csv" for n in ABLATION_RAW_CSVS] + [ABLATION_META_FILE]:
        shutil.copy(RESULTS / "ablations" / name, tmp_path / "ablations" / "other" / name)
    written = render(tmp_path, log=lambda line: None, folder=tmp_path / "ablations" / "other")
    assert (tmp_path / "tables" / "ablations_other.md").is_file() and not (tmp_path / TABLE).exists()
    assert all(p.parent.name == "other" or p.name.startswith("ablations_other") for p in written)
