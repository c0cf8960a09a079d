"""REPORT.md has one writer and every number in it comes from the committed data files: re-rendering the committed
results folder (main.csv, run.json, reproduction.csv, timings, logs, pictures, ablations, bench) reproduces the
committed REPORT.md and tables, to the byte (the machine line comes from run.json, not from the renderer); and its
prose stays short.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from moeisr.report.render import render_results

RESULTS = Path(__file__).resolve().parents[1] / "results"
# What render_results writes; everything else in results/ is its input (or another suite's output it links to).
OUTPUTS = [
    "REPORT.md", "tables/main.md", "tables/experts.md", "tables/published.md", "figures/psnr_vs_gflops.png",
    "figures/flops_per_image.png", "figures/expert_maps.png", "figures/qualitative.png", "figures/learning_curves.png",
]  # fmt: skip


def _render_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy, ignore=shutil.ignore_patterns("checkpoints"))
    for name in OUTPUTS:
        (copy / name).unlink()
    render_results(copy, log=lambda line: None)
    assert all((copy / name).is_file() for name in OUTPUTS)
    return copy


def test_rendering_the_committed_data_reproduces_the_committed_report(tmp_path):
    copy = _render_copy(tmp_path)
    assert (copy / "REPORT.md").read_text() == (RESULTS / "REPORT.md").read_text()
    for table in ("main.md", "experts.md", "published.md"):
        assert (copy / "tables" / table).read_text() == (RESULTS / "tables" / table).read_text(), table


def prose_paragraphs(markdown: str) -> list[str]:
    """Blocks of REPORT.md that are prose: not headings, tables, lists, quotes, images or code."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", markdown)]
    return [b for b in blocks if b and not b.startswith(("#", "|", "-", "!", "`", "_Generated", "_File"))]


def test_prose_paragraphs_are_short():
    paragraphs = prose_paragraphs((RESULTS / "REPORT.md").read_text())
    assert paragraphs, "REPORT.md has no prose to check"
    longest = max(paragraphs, key=len)
    assert len(longest) < 600, longest[:200]


def test_a_recheck_over_zero_rows_gives_no_verdict(tmp_path):
    from moeisr.evaluate.recheck import compare
    from moeisr.report.render import reproduction_markdown

    rows = pd.read_csv(RESULTS / "main.csv")
    compare(rows.iloc[:0], rows).to_csv(tmp_path / "reproduction.csv", index=False)  # a grid without ×2-×4
    run = {"mode": "verified", "recheck_file": "reproduction.csv", "eval_check": {"reason": "no previous main.csv"}}
    text = reproduction_markdown(run, rows, tmp_path)
    assert "**not checked**" in text and "PASS" not in text and "FAIL" not in text
