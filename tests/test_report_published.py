"""The published PSNRs are a verbatim copy of the shared file, read with their sources, and rendered beside ours."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moeisr.report.published import PUBLISHED_CSV, bicubic_psnr, published_results
from moeisr.report.tables import bicubic_note, published_table

MAIN_CSV = Path(__file__).resolve().parents[1] / "results" / "main.csv"


def test_the_copy_equals_the_shared_file(shared_data):
    shared = shared_data.parent  # ../shared: data/ and published/
    assert PUBLISHED_CSV.read_bytes() == (shared / "published" / "published_sr.csv").read_bytes()


def test_rows_keep_their_sources_and_map_to_our_names():
    rows = published_results()
    assert len(rows) == len(pd.read_csv(PUBLISHED_CSV)) and all(r.source for r in rows)
    assert {r.family for r in rows} == {"bicubic", "liif", "lte", ""}
    assert "DIV2K" in {r.dataset for r in rows} and "DIV2K_valid" not in {r.dataset for r in rows}
    assert bicubic_psnr()[("Set5", 2)] == 33.66  # the shared file's bicubic Set5 x2


def test_the_table_puts_our_rows_beside_the_published_ones():
    ours = pd.read_csv(MAIN_CSV)
    table = published_table(ours[ours["knob"].astype(str) == "none"])
    bicubic_line = next(line for line in table.splitlines() if line.startswith("| bicubic") and "Set5" in line)
    ours_set5_x2 = ours[(ours.model == "bicubic") & (ours.dataset == "Set5") & (ours.scale == 2)].psnr.mean()
    assert "33.66" in bicubic_line and f"bicubic {ours_set5_x2:.2f}" in bicubic_line
    assert "RDN-LTE" in table and "Set14" in table and "further published rows" in table
    note = bicubic_note(ours)
    assert "0.859 ×" in note and note.startswith("Set14 sits +0.0")


def test_a_subset_of_a_set_is_labelled_not_comparable():
    ours = pd.read_csv(MAIN_CSV)
    ours = ours[ours["knob"].astype(str) == "none"]
    counted = ours.groupby("dataset")["image"].nunique()
    sizes = {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100}
    table = published_table(ours, sizes)
    urban = next(line for line in table.splitlines() if line.startswith("| bicubic") and "Urban100" in line)
    assert f"(first {counted['Urban100']} of 100 images)" in urban  # the cpu grid evaluates a subset
    set5 = next(line for line in table.splitlines() if line.startswith("| bicubic") and "Set5" in line)
    assert "subset" not in set5 and counted["Set5"] == 5
    assert (
        f"Urban100 (first {counted['Urban100']} of 100 images)" in table
        and "no row of those sets is comparable" in table
    )
