"""The factor summaries on hand-made rows: the comparison with the reference, and with the reference re-routed to
the row's decoder cost (`factor_cells(..., matched)`), down to the reading's verdict line."""

import math

import pandas as pd
import pytest

from moeisr.report.ablations.analysis import factor_cells, factor_summary
from moeisr.report.ablations.reading import factor_verdicts, factor_verdicts_table
from moeisr.report.ablations.tables import factors_table


def _rows(model, psnrs, gflops, shares):
    """Tidy rows of one model on two Set5 images at ×2 (20×20 LR each)."""
    return [
        {
            "model": model,
            "dataset": "Set5",
            "image": image,
            "scale": 2.0,
            "knob": "none",
            "psnr": p,
            "gflops": g,
            "lr_h": 20,
            "lr_w": 20,
            "share_0": shares[0],
            "share_1": shares[1],
        }  # fmt: skip
        for image, p, g in zip(("baby", "bird"), psnrs, gflops, strict=True)
    ]


@pytest.fixture
def frames():
    # the row routes more pixels to the cheap expert than its reference: 20% fewer GFLOPs, 0.1 dB less;
    # the reference re-routed to the row's cost loses 0.3 dB, so at equal cost the row is 0.2 dB better
    ref = _rows("ref", [30.0, 32.0], [10.0, 10.0], [0.2, 0.8])
    rows = pd.DataFrame(ref + _rows("row", [29.9, 31.9], [8.0, 8.0], [0.6, 0.4]))
    meta = pd.DataFrame(
        [
            {"row": "ref", "base": "moeisr_liif", "reference": "ref", "factor": None, "factor_label": None,
             "value": "3", "reference_value": None, "steps": 800, "costs": [0.25, 1.0]},
            {"row": "row", "base": "moeisr_liif", "reference": "ref", "factor": "mapper_depth",
             "factor_label": "mapper depth", "value": "5", "reference_value": "3", "steps": 800, "costs": [0.25, 1.0]},
        ]
    )  # fmt: skip
    matched = pd.DataFrame(_rows("ref", [29.7, 31.7], [8.1, 8.1], [0.6, 0.4])).assign(row="row")
    return rows, meta, matched


def test_factor_cells_compare_with_the_reference_and_at_matched_cost(frames):
    rows, meta, matched = frames
    cells = factor_cells(rows, meta, matched).set_index("row")
    assert math.isclose(cells.loc["row", "d_psnr"], -0.1, abs_tol=1e-9)
    assert math.isclose(cells.loc["row", "d_gflops_pct"], -20.0, abs_tol=1e-9)
    assert math.isclose(cells.loc["row", "d_psnr_matched"], 0.2, abs_tol=1e-9)
    assert math.isclose(cells.loc["row", "d_gflops_pct_matched"], 100 * (8.0 / 8.1 - 1), abs_tol=1e-9)
    assert math.isnan(cells.loc["ref", "d_psnr_matched"])  # nothing to match: the reference itself
    assert math.isclose(cells.loc["row", "rel_cost"], 0.6 * 0.25 + 0.4, abs_tol=1e-9)
    # without re-routed rows the matched columns are NaN, the rest unchanged
    plain = factor_cells(rows, meta).set_index("row")
    assert plain["d_psnr_matched"].isna().all() and plain.loc["row", "d_psnr"] == cells.loc["row", "d_psnr"]


def test_the_verdict_and_tables_report_the_matched_cost_comparison(frames):
    rows, meta, matched = frames
    summary = factor_summary(factor_cells(rows, meta, matched), meta)
    verdicts = factor_verdicts(summary).set_index("row")
    assert list(verdicts.index) == ["row"]  # the reference is no comparison
    line = verdicts.loc["row"]
    assert math.isclose(line["d_psnr"], -0.1, abs_tol=1e-9) and math.isclose(line["d_gflops_pct"], -20.0, abs_tol=1e-9)
    # at its own cost a trade-off (cheaper but 0.1 dB worse); at the reference's re-routed cost 0.2 dB better
    assert math.isclose(line["quality_db"], 0.2, abs_tol=1e-9) and line["verdict"] == "better"
    assert (line["floor_db"], line["floor_db_by"], line["floor_pct_by"]) == (0.05, "threshold", "threshold")
    table = factor_verdicts_table(verdicts.reset_index())
    assert "| -0.100 " in table and "| -20.0 " in table and "| +0.200 " in table and "| better " in table
    assert "| 0.050 (threshold) " in table and "| 5.0 (threshold) " in table
    table = factors_table(summary)
    assert "| ΔPSNR vs ref re-routed to the row's cost (dB), mean [min, max]" in table
    assert "| +0.200 [+0.200, +0.200] (ΔGFLOPs -1.2%) " in table
    # without the re-routed reference, the row's own cost decides: cheaper but worse beyond both floors
    plain = factor_verdicts(factor_summary(factor_cells(rows, meta), meta)).set_index("row").loc["row"]
    assert math.isnan(plain["d_psnr_matched"]) and plain["verdict"] == "trade-off"
