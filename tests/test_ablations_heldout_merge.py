"""The held-out stage's file survives two jobs over different rows at once (the recipe suite runs one job per base).

A real (untrained, smoke-sized) LIIF is measured on real T91 crops; while it is being measured, a second job's rows
land in `heldout.csv`, as a concurrent job would write them. Both jobs' rows must be in the file afterwards.
"""

from __future__ import annotations

import pandas as pd
import pytest

import moeisr.train.validation
from moeisr.config import load_experiment
from moeisr.evaluate.runner import ModelEntry
from moeisr.pipeline.ablations import AblationPaths, _heldout
from moeisr.pipeline.reproduce import default_paths
from moeisr.train import build_model

pytestmark = pytest.mark.data


def test_rows_written_by_another_job_meanwhile_are_kept(tmp_path, shared_data, monkeypatch):
    paths = AblationPaths(default_paths("smoke", results=tmp_path / "results"), suite="recipe")
    paths.heldout.parent.mkdir(parents=True)
    experiment = load_experiment(paths.main.experiments / "liif.yaml", "smoke")
    entry = ModelEntry("liif-ref", build_model(experiment), "aaaa")
    split = {"set": "T91", "scales": [2.0], "limit": 2, "crop": 24}
    other = pd.DataFrame({"row": ["lte-ref"] * 2, "ckpt_hash": "bbbb", "dataset": "T91", "image": ["t1", "t2"],
                          "scale": 2.0, "crop": 24, "h": 24, "w": 24, "psnr": [30.0, 31.0]})  # fmt: skip
    measure = moeisr.train.validation.Validator.measure

    def measure_while_another_job_writes(self, *args, **kwargs):
        other.to_csv(paths.heldout, index=False)  # the other job finished its rows during ours
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(moeisr.train.validation.Validator, "measure", measure_while_another_job_writes)
    measured = _heldout(split, {"liif-ref": entry}, paths, "cpu", "commit", None, log=lambda _: None)
    written = pd.read_csv(paths.heldout, dtype={"image": str})
    assert measured == ["liif-ref"]
    assert sorted(written["row"].unique()) == ["liif-ref", "lte-ref"]
    assert written[written["row"] == "lte-ref"]["psnr"].tolist() == [30.0, 31.0]
    assert len(written[written["row"] == "liif-ref"]) == 2 and written["psnr"].notna().all()
