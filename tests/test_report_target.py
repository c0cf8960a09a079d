"""Issue 20's target, read from the committed grid rows: every ×2–×4 cell's 95% CI lower bound of MoEISR − equal
budget at or above −0.05 dB, at ≥ 30% of the FLOPs saved on average over those cells."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moeisr.metrics.paired import paired_bootstrap
from moeisr.report.tables import FAMILIES, TARGET_LOWER_DB, TARGET_SAVED_PCT, target_markdown, target_rows

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_the_target_is_read_from_per_cell_intervals_of_the_committed_rows():
    frame = pd.read_csv(RESULTS / "main.csv", dtype={"image": str, "knob": str})
    rows = {r["model"]: r for r in target_rows(frame)}
    assert set(rows) == {f.moe_label for f in FAMILIES}
    default = frame[frame["knob"] == "none"]
    for family in FAMILIES:
        r = rows[family.moe_label]
        keys = ["dataset", "image", "scale"]
        pairs = default[default["model"] == family.moe][keys + ["psnr", "gflops"]].merge(
            default[default["model"] == family.equal][keys + ["psnr", "gflops"]], on=keys, suffixes=("", "_eq")
        )
        pairs = pairs[pairs["scale"] <= 4]
        lows = {cell: paired_bootstrap(p["psnr"] - p["psnr_eq"]).lo for cell, p in pairs.groupby(["dataset", "scale"])}
        assert r["cells"] == len(lows) == 12  # 4 sets × 3 scales
        assert r["cells_met"] == sum(lo >= TARGET_LOWER_DB for lo in lows.values())
        assert r["worst_lo"] == min(lows.values())
        assert r["met"] == (r["cells_met"] == r["cells"] and r["saved_pct"] >= TARGET_SAVED_PCT)
    text = target_markdown(list(rows.values()))
    assert all(f"{m} {'meets' if r['met'] else 'misses'} the target" in text for m, r in rows.items())
