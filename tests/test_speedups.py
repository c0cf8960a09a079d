"""`moeisr speedups`: measured speed-ups of the committed checkpoints, one representative image per cell, and how the
report reads them (issue 21, item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from moeisr.errors import UserError
from moeisr.evaluate.speed import decoder_share, representative_image, time_side_by_side
from moeisr.pipeline.speedups import SPEED_PAIRS, measure_speedups
from moeisr.report.tables import current_speedups, main_table, report_families

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _committed():
    rows = pd.read_csv(RESULTS / "main.csv", dtype={"image": str, "knob": str})
    encoder = json.loads((RESULTS / "run.json").read_text())["encoder_flops_per_lr_pixel"]
    return rows[rows["knob"] == "none"], encoder


def test_the_representative_image_has_the_median_decoder_share_of_its_cell():
    rows, encoder = _committed()
    cell = rows[(rows["model"] == "moeisr-liif") & (rows["dataset"] == "B100") & (rows["scale"] == 2.0)]
    share = decoder_share(cell, encoder["moeisr-liif"])
    assert len(cell) == 25 and share.between(0.0, 1.0, inclusive="neither").all()
    assert share.nunique() > 10  # routing makes the share differ per image, so the choice matters
    picked = representative_image(cell, encoder["moeisr-liif"])
    distance = (share - share.median()).abs()
    assert distance[cell["image"] == picked].iloc[0] == distance.min()
    with pytest.raises(ValueError):
        representative_image(cell.iloc[:0], 0.0)


def test_side_by_side_rounds_alternate_and_rotate_the_first_model():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = time_side_by_side(runs, repeats=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert {k: len(v) for k, v in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in seconds.values() for t in v)
    with pytest.raises(ValueError, match="at least 1"):
        time_side_by_side(runs, repeats=0)


@pytest.mark.data
def test_measuring_the_committed_checkpoints_writes_resumable_rows_the_report_reads(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results, ignore=shutil.ignore_patterns("figures", "ablations", "bench", "speedups.csv"))
    out = measure_speedups(results, repeats=3, sets=["Set5"], scales=[12.0], progress=False, log=lambda line: None)
    measured = pd.read_csv(out, dtype={"image": str})
    rows, _ = _committed()
    evaluated = set(rows["model"])  # the pairs with rows: recipe v1's until v2 is evaluated
    efficient = {m for ref, models in SPEED_PAIRS if ref in evaluated for m in models if m in evaluated}
    assert efficient
    assert set(measured["model"]) == efficient and len(measured) == len(efficient)
    for _, m in measured.iterrows():
        on_image = rows[(rows["dataset"] == "Set5") & (rows["scale"] == 12.0) & (rows["image"] == m["image"])]
        gflops = on_image.set_index("model")["gflops"]
        assert m["flops_ratio"] == pytest.approx(gflops[m["reference"]] / gflops[m["model"]], abs=1e-3)
        assert m["speedup"] == pytest.approx(m["reference_seconds"] / m["model_seconds"], rel=1e-2)
        assert m["model_ckpt"] == on_image.set_index("model")["ckpt_hash"][m["model"]]
    # a second run resumes: every cell is there with the same checkpoints, so nothing is timed again
    lines = []
    measure_speedups(results, sets=["Set5"], scales=[12.0], progress=False, log=lines.append)
    assert any("0 cells to measure" in line for line in lines)
    assert len(pd.read_csv(out)) == len(measured)
    # the report shows them beside the FLOPs ratio, and drops a row measured with another checkpoint
    headline = report_families(rows)[0]
    shown = current_speedups(measured, rows, headline)  # the headline's pairs (recipe v1's are measured, not shown)
    assert set(zip(shown["reference"], shown["model"], strict=True)) == {
        (f.equal, m) for f in headline for m in (f.moe, f.lmf) if m in efficient
    }
    table = main_table(rows, speedups=measured, families=headline)
    assert "MoEISR-LIIF speed-up, measured (×)" in table and f"{shown['speedup'].iloc[0]:.2f}" in table
    stale = measured.assign(model_ckpt="000000000000")
    assert current_speedups(stale, rows, headline).empty
    assert "speed-up, measured" not in main_table(rows, speedups=stale, families=headline)
    # a pair the tables do not show (here: against another reference) is dropped, and so is not in the provenance
    other = measured.assign(reference="liif")
    assert current_speedups(other, rows, headline).empty
    assert len(current_speedups(pd.concat([other, measured]), rows, headline)) == len(shown)


@pytest.mark.data
def test_a_bundle_that_is_not_the_evaluated_checkpoint_is_refused(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results, ignore=shutil.ignore_patterns("figures", "ablations", "bench", "speedups.csv"))
    shutil.copy(results / "checkpoints" / "liif.pt", results / "checkpoints" / "liif_equal.pt")
    with pytest.raises(UserError, match="not the checkpoint"):
        measure_speedups(results, sets=["Set5"], scales=[12.0], progress=False, log=lambda line: None)
    with pytest.raises(UserError, match="busy"):
        measure_speedups(results, max_load=-1.0, progress=False, log=lambda line: None)
