"""Recipe v2 leads the report once its rows exist, and recipe v1 stays beside it (issue 20, item 5).

The frames here start from the committed grid rows without recipe v2's models (and the converged backbones they
start from); the v2 rows are then the v1 LIIF family's rows under the v2 names (the converged LIIF, its equal-budget
control and MoEISR-LIIF v2) with MoEISR's PSNR raised by 0.05 dB, so that each number the report shows for v2 is
known from v1's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from moeisr.report.report_md import comparison_rows, reading
from moeisr.report.tables import (
    FAMILIES_V1,
    FAMILIES_V2,
    family_models,
    main_table,
    report_families,
    target_rows,
)

MAIN_CSV = Path(__file__).resolve().parents[1] / "results" / "main.csv"
SHIFT_DB = 0.05
AS_V2 = {"liif": "liif-converged", "liif-equal-budget": "liif-equal-budget-v2", "moeisr-liif": "moeisr-liif-v2"}


@pytest.fixture(scope="module")
def frames():
    committed = pd.read_csv(MAIN_CSV, dtype={"image": str, "knob": str})
    v2_only = family_models(FAMILIES_V2) - family_models(FAMILIES_V1)
    v1 = committed[~committed["model"].isin(v2_only)]
    v2 = v1[v1["model"].isin(list(AS_V2))].copy()
    v2.loc[v2["model"] == "moeisr-liif", "psnr"] += SHIFT_DB
    v2["model"] = v2["model"].map(AS_V2)
    return v1, pd.concat([v1, v2], ignore_index=True)


def test_v1_alone_is_the_headline_until_v2_has_rows(frames):
    v1, _ = frames
    assert report_families(v1) == (FAMILIES_V1, ())


def test_v2_leads_per_backbone_and_v1_follows_labelled(frames):
    _, both = frames
    headline, earlier = report_families(both)
    assert headline == (FAMILIES_V2[0], FAMILIES_V1[1])  # LTE has no v2 rows: v1 still leads there
    (liif_v1,) = earlier
    assert (liif_v1.moe, liif_v1.equal, liif_v1.lmf, liif_v1.dense) == ("moeisr-liif", "liif-equal-budget", None, ())
    assert liif_v1.moe_label == "MoEISR-LIIF (recipe v1)" and liif_v1.equal_label == "equal-budget LIIF (recipe v1)"

    table = comparison_rows(both, families=(*headline, *earlier)).set_index("comparison")
    v2_row, v1_row = table.loc["MoEISR-LIIF vs equal-budget LIIF"], table.loc[
        "MoEISR-LIIF (recipe v1) vs equal-budget LIIF (recipe v1)"]  # fmt: skip
    assert v2_row["ΔPSNR (dB)"] == pytest.approx(v1_row["ΔPSNR (dB)"] + SHIFT_DB, abs=1e-3)
    assert v2_row["FLOPs saved (%)"] == v1_row["FLOPs saved (%)"]
    assert "equal-budget LIIF vs converged LIIF (extra training)" in table.index
    assert "equal-budget LIIF (recipe v1) vs LIIF (recipe v1) (extra training)" in table.index
    sentences = reading(both, families=(*headline, *earlier))[1]  # the earlier recipe: in the table only
    assert sentences.startswith("MoEISR-LIIF ") and "MoEISR-LTE " in sentences and "recipe v1" not in sentences

    target = {r["model"]: r for r in target_rows(both, (*headline, *earlier))}
    assert set(target) == {"MoEISR-LIIF", "MoEISR-LIIF (recipe v1)", "MoEISR-LTE"}
    assert target["MoEISR-LIIF"]["worst_lo"] > target["MoEISR-LIIF (recipe v1)"]["worst_lo"]

    main = main_table(both, families=headline)
    assert "### LIIF: converged LIIF, equal-budget LIIF, MoEISR-LIIF, LM-LIIF" in main
    assert "converged LIIF PSNR" in main and "### LTE: LTE, equal-budget LTE, MoEISR-LTE" in main
