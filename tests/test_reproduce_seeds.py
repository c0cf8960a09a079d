"""`moeisr reproduce` end to end on the smoke profile, seeds on (the default): the seed replicas of MoEISR and the
equal-budget controls train from the same parent bundles as the main models, are evaluated up to ×4 only, and the
report has a Seeds table and weighs MoEISR's ΔPSNR against its seed spread.

Workspace as in tests/test_reproduce.py (two real 96×96 Set5 crops, 4 training steps), but with the grid at ×4 and
×6, so that the replicas' ×4-only subgrid is visible.
"""

import json
import re

import pandas as pd
import pytest
from test_pipeline_support import smoke_workspace

from moeisr.commands.reproduce import run_reproduce as reproduce
from moeisr.models.checkpoint import read_checkpoint
from moeisr.pipeline.reproduce import EVALUATED_MODELS, ROLES, SEED_MODEL_NAMES, SEED_ROLES
from moeisr.report.report_md import SEED_SPREAD, WITHIN_SEEDS, comparison_rows, reading
from moeisr.report.tables import (
    FAMILIES_V2,
    MODEL_ORDER,
    seed_spread,
    target_markdown,
    target_rows,
    without_seed_replicas,
)

# ~75 s on 2 shared cores: 16 short trainings, the grid at two scales, the report
pytestmark = [pytest.mark.slow, pytest.mark.data]

OVERRIDES = ["optim.max_steps=4", "eval.scales=[4,6]"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("seeds")
    with smoke_workspace(base) as (root, folders):
        lines: list[str] = []
        result = reproduce("smoke", overrides=OVERRIDES, progress=False, log=lines.append, **folders)
        yield {"result": result, "log": lines, "folders": folders, "root": root}


@pytest.fixture(autouse=True)
def _data_root(workspace, monkeypatch):
    monkeypatch.setenv("MOEISR_DATA", str(workspace["root"]))


def _main_csv(workspace) -> pd.DataFrame:
    return pd.read_csv(workspace["folders"]["results"] / "main.csv", dtype={"knob": str, "image": str})


def test_seed_replicas_train_from_the_main_models_parent_bundles_with_their_own_seed(workspace):
    result, folders = workspace["result"], workspace["folders"]
    assert {n: c.status for n, c in result.checkpoints.items()} == {r.name: "trained" for r in (*ROLES, *SEED_ROLES)}
    runs = folders["runs"] / "smoke"
    hashes = {r.name: result.checkpoints[r.name].experiment.config_hash for r in (*ROLES, *SEED_ROLES)}
    assert len(set(hashes.values())) == len(hashes)  # every replica has its own config hash
    for role in SEED_ROLES:
        main = result.checkpoints[role.experiment].experiment
        meta = read_checkpoint(folders["results"] / "checkpoints" / f"{role.name}.pt")["meta"]
        assert meta["experiment"] == role.name and meta["spec"]["train"]["seed"] == role.seed != main.train.seed
        assert meta["init_from"] == main.init_from and meta["steps"] == 4
        assert meta["config_hash"] == hashes[role.name] != hashes[role.experiment]
        # the run started from the bundle the main model started from
        parents = [read_checkpoint(runs / name / "final.pt")["train_state"]["parent_checkpoint"]
                   for name in (role.name, role.experiment)]  # fmt: skip
        assert parents[0] == parents[1] == str(folders["results"] / "checkpoints" / f"{main.init_from}.pt")
        assert (folders["results"] / "logs" / f"{role.name}.csv").is_file()
    started = [line for line in workspace["log"] if "_seed" in line and "starting from" in line]
    assert len(started) == len(SEED_ROLES)


def test_replicas_are_evaluated_at_x4_only_and_rechecked(workspace):
    frame = _main_csv(workspace)
    replicas = frame[frame["model"].isin(SEED_MODEL_NAMES)]
    assert sorted(replicas["model"]) == sorted(SEED_MODEL_NAMES)  # one row each: Set5 baby ×4, default routing
    assert set(replicas["scale"]) == {4.0} and set(replicas["knob"]) == {"none"}
    assert set(frame.loc[frame["model"].isin(EVALUATED_MODELS[1:]), "scale"]) == {4.0, 6.0}
    checkpoints = workspace["result"].checkpoints
    for role in SEED_ROLES:
        assert (
            frame.loc[frame["model"] == role.model, "config_hash"].item()
            == checkpoints[role.name].experiment.config_hash
        )
    order = list(dict.fromkeys(frame["model"]))  # each replica right after its main model
    for family in FAMILIES_V2:  # the seeded models: recipe v2's
        for model in (family.moe, family.equal):
            at = order.index(model)
            assert order[at + 1 : at + 3] == [f"{model}-seed1", f"{model}-seed2"]
    assert [m for m in order if m not in SEED_MODEL_NAMES] == [m for m in MODEL_ORDER if m in EVALUATED_MODELS]
    recheck = workspace["result"].recheck  # replicas sampled like the main models, on the same image
    assert set(SEED_MODEL_NAMES) <= set(recheck["model"]) and recheck["within"].all()
    assert set(recheck.loc[recheck["model"].isin(SEED_MODEL_NAMES), "scale"]) == {4.0}


def test_seeds_table_manifest_and_report(workspace):
    results = workspace["folders"]["results"]
    frame = _main_csv(workspace)
    frame = frame[frame["knob"] == "none"]
    seeds = (results / "tables" / "seeds.md").read_text()
    for model in ("moeisr-liif-v2", "moeisr-lte-v2", "liif-equal-budget-v2", "lte-equal-budget-v2"):
        assert f"### {model}\n" in seeds
        psnr = [frame.loc[(frame["model"] == m) & (frame["scale"] == 4.0), "psnr"].item()
                for m in (model, f"{model}-seed1", f"{model}-seed2")]  # fmt: skip
        cells = [f"{p:.3f}" for p in psnr] + [f"{max(psnr) - min(psnr):.3f}"]
        assert re.search(
            r"\s*\|\s*".join(["", *map(re.escape, cells), ""]), seeds
        )  # the ×4 cell: PSNR per seed, spread
    assert "seed 0 (main)" in seeds and "### ΔPSNR per seed" in seeds
    run = json.loads((results / "run.json").read_text())
    assert run["seeds"]["moeisr-liif-v2"] == 0 and run["seeds"]["lte-equal-budget-v2-seed2"] == 2
    assert {e["experiment"] for e in run["experiments"]} >= {r.name for r in SEED_ROLES}
    report = (results / "REPORT.md").read_text()
    assert "## Seeds" in report and "(tables/seeds.md)" not in report and "_File: `tables/seeds.md`._" in report
    assert SEED_SPREAD in report and "Nor is a ΔPSNR smaller than its seed spread" in report
    experts = (results / "tables" / "experts.md").read_text()  # the other tables show the main models only
    assert "seed" not in experts and "seed" not in (results / "tables" / "main.md").read_text()


def _with(frame, model, psnr):
    """`frame` with `model`'s PSNR set to `psnr` on every row."""
    frame = frame.copy()
    frame.loc[frame["model"] == model, "psnr"] = psnr
    return frame


def test_seed_spread_decides_a_difference_smaller_than_it(workspace):
    frame = _main_csv(workspace)
    frame = frame[frame["knob"] == "none"]  # as the report reads them
    liif, label = FAMILIES_V2[0], "MoEISR-LIIF vs equal-budget LIIF"
    # MoEISR 0.1 dB above the equal budget on every image and scale: "better", decided by the interval ...
    for model in (liif.equal, f"{liif.equal}-seed1", f"{liif.equal}-seed2"):
        frame = _with(frame, model, 30.0)
    frame = _with(_with(_with(frame, liif.moe, 30.1), f"{liif.moe}-seed1", 30.4), f"{liif.moe}-seed2", 30.1)
    # ... but seed 1's MoEISR is 0.4 dB above seed 1's equal budget: spread 0.3 dB > 0.1 dB
    deltas, spread = seed_spread(frame, liif.moe, liif.equal)
    assert deltas == pytest.approx({None: 0.1, 1: 0.4, 2: 0.1}) and spread == pytest.approx(0.3)
    row = comparison_rows(frame, families=FAMILIES_V2).set_index("comparison").loc[label]
    assert row["ΔPSNR (dB)"] == pytest.approx(0.1) and row[SEED_SPREAD] == "0.300"
    assert (row["verdict"], row["decided by"]) == (WITHIN_SEEDS, "seeds")
    assert "MoEISR-LIIF is within the seed spread of the equal-budget LIIF" in reading(frame, families=FAMILIES_V2)[1]
    assert "seed spread 0.300 dB, decided by the seeds" in reading(frame, families=FAMILIES_V2)[1]
    # a spread of 0.02 dB leaves the verdict to the interval; the other rows carry no seed spread
    frame = _with(frame, f"{liif.moe}-seed1", 30.12)
    rows = comparison_rows(frame, families=FAMILIES_V2).set_index("comparison")
    row = rows.loc[label]
    assert (row[SEED_SPREAD], row["verdict"], row["decided by"]) == ("0.020", "better", "interval")
    assert rows.loc["equal-budget LIIF vs converged LIIF (extra training)", SEED_SPREAD] == "–"
    # without the replicas (the committed report's case) the table is the same, less the column and any verdict the
    # seeds decided (the LTE family keeps its real rows)
    plain, rows = comparison_rows(without_seed_replicas(frame), families=FAMILIES_V2), rows.reset_index()
    assert SEED_SPREAD not in plain and plain.drop(columns=["verdict", "decided by"]).equals(
        rows.drop(columns=[SEED_SPREAD, "verdict", "decided by"])
    )
    kept = rows["decided by"] != "seeds"
    assert plain[kept].equals(rows[kept].drop(columns=SEED_SPREAD))
    assert "seed spread" not in " ".join(reading(without_seed_replicas(frame)))


def test_the_target_is_applied_to_each_seed_replica(workspace):
    frame = _main_csv(workspace)
    liif = FAMILIES_V2[0]
    for model in (liif.equal, f"{liif.equal}-seed1", f"{liif.equal}-seed2"):
        frame = _with(frame, model, 30.0)
    # seeds 0 and 2 within the -0.05 dB bound, seed 1 0.1 dB below the equal budget (one image: the CI is the value)
    frame = _with(_with(_with(frame, liif.moe, 29.99), f"{liif.moe}-seed1", 29.9), f"{liif.moe}-seed2", 30.0)
    (row,) = [r for r in target_rows(frame, FAMILIES_V2) if r["model"] == liif.moe_label]
    assert (row["cells"], row["cells_met"]) == (1, 1)  # the ×4 cell (×6 is above the target's scales)
    assert {k: (v.cells, v.cells_met) for k, v in row["by_seed"].items()} == {1: (1, 0), 2: (1, 1)}
    assert not row["by_seed"][1].met
    text = target_markdown(target_rows(frame, FAMILIES_V2))
    assert "| seeds 1 / 2: cells meeting the bound " in text and "| 0 of 1 / 1 of 1 " in text
    assert "each seed's MoEISR against the same seed's equal budget" in text
    assert "seed" not in target_markdown(target_rows(without_seed_replicas(frame), FAMILIES_V2))
