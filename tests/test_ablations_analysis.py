"""The factor summaries on hand-made rows: the comparison with the reference, and with the reference re-routed to
the row's decoder cost (`factor_cells(..., matched)`), down to the reading's sentence."""

import math

import pandas as pd
import pytest

from moeisr.report.ablations.analysis import factor_cells, factor_summary
from moeisr.report.ablations.tables import factor_reading, factors_table


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


def test_the_reading_and_table_report_the_matched_cost_comparison(frames):
    rows, meta, matched = frames
    summary = factor_summary(factor_cells(rows, meta, matched), meta)
    text = " ".join(factor_reading(summary))
    assert (
        "5 instead of 3 changed PSNR by -0.100 dB" in text
        and "GFLOPs by -20.0%: a trade-off, cheaper but worse" in text
    )
    assert "against the reference re-routed to the row's decoder cost (GFLOPs -1.2%) it is +0.200 dB" in text
    assert "+0.200 to +0.200), better" in text
    table = factors_table(summary)
    assert "| ΔPSNR vs ref re-routed to the row's cost (dB), mean [min, max]" in table
    assert "| +0.200 [+0.200, +0.200] (ΔGFLOPs -1.2%) " in table
