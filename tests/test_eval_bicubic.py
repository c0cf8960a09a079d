"""The bicubic baseline through the real CLI, against the published figures (Y, shave = scale)."""

from pathlib import Path

import pandas as pd
import pytest

from moeisr.cli import main
from moeisr.report.published import bicubic_psnr

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bicubic.csv"


@pytest.mark.data
def test_eval_bicubic_set5_matches_published_and_resumes(tmp_path, capsys):
    out = tmp_path / "bicubic.csv"
    args = ["eval", "bicubic", "--sets", "Set5", "--scales", "2,3,4", "--out", str(out), "--quiet"]
    assert main(args) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 15 and set(frame["image"]) == {"baby", "bird", "butterfly", "head", "woman"}
    assert {"model", "dataset", "image", "scale", "psnr", "ssim", "lpips"} <= set(frame.columns)
    for scale, mean in frame.groupby("scale")["psnr"].mean().items():
        assert abs(mean - bicubic_psnr()[("Set5", int(scale))]) < 0.1
    assert frame["lpips"].between(0.05, 0.6).all()
    capsys.readouterr()
    # A second run finds everything in the cache and computes nothing.
    assert main(args) == 0
    assert "0 new rows; 15 rows written" in capsys.readouterr().out
    assert pd.read_csv(out).equals(frame)


def test_committed_bicubic_results_match_all_twelve_published_figures():
    frame = pd.read_csv(RESULTS)
    means = frame.groupby(["dataset", "scale"])["psnr"].mean()
    assert len(means) == 12
    benchmark = {k: v for k, v in bicubic_psnr().items() if k[0] != "DIV2K"}  # the published DIV2K rows: not here
    assert len(benchmark) == 12
    for (dataset, scale), published in benchmark.items():
        assert means[(dataset, float(scale))] == pytest.approx(published, abs=0.1), (dataset, scale)
    counts = frame.groupby("dataset")["image"].nunique().to_dict()
    assert counts == {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100}
