"""The ablations' readings on the committed results (`results/ablations/`, `results/tables/ablations.md`): every
comparison is a row of a verdict table whose values are the summaries' and whose verdicts follow the floors; each
section adds at most three short sentences whose numbers are in its table; and the report re-renders the committed
summaries byte for byte from the committed raw artefacts (read from CSV/JSON: nothing is decoded or evaluated)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from moeisr.artefacts import ABLATION_META_FILE as META_FILE
from moeisr.artefacts import ABLATION_RAW_CSVS as RAW_CSVS
from moeisr.report.ablations.analysis import read_summary
from moeisr.report.ablations.reading import (
    NOISE_VERDICT,
    NOTABLE_DB,
    NOTABLE_PCT,
    factor_verdicts,
    sweep_comparisons,
)
from moeisr.report.ablations.render import SUMMARIES, TABLE, render, section_markdown
from moeisr.report.ablations.tables import NOISE_FACTOR, default_oracle, oracle_name

RESULTS = Path(__file__).resolve().parents[1] / "results"
DECIMAL = re.compile(r"[+-]?\d+\.\d+")


def _csv(name: str) -> pd.DataFrame:
    return read_summary(RESULTS / "ablations" / f"{name}.csv")


@pytest.fixture(scope="module")
def factors():
    return _csv("factors")


@pytest.fixture(scope="module")
def verdicts(factors):
    return factor_verdicts(factors)


def _levels(routers: pd.DataFrame) -> list[float]:
    return sorted({float(m.group(1)) for r in routers["router"] if (m := re.search(r"oracle ε=([\d.]+)/255", r))})


def test_a_verdict_line_per_factor_row_with_the_summary_values(factors, verdicts):
    rows = factors[factors["factor"].apply(lambda f: isinstance(f, str))]
    assert list(verdicts["row"]) == list(rows["row"]) and len(verdicts) >= 10
    both = verdicts.merge(rows, on="row", suffixes=("", "_summary"))
    for column in ("d_psnr", "d_gflops_pct", "d_psnr_matched"):
        pd.testing.assert_series_equal(both[column], both[f"{column}_summary"], check_names=False)
    expected = both["d_psnr_matched_summary"].fillna(both["d_psnr_summary"])
    pd.testing.assert_series_equal(both["quality_db"], expected, check_names=False)
    assert both["d_psnr_matched"].notna().sum() >= 10  # most rows moved the cost: compared at matched cost too


def test_the_floors_are_the_threshold_or_the_seed_to_seed_difference(factors, verdicts):
    for base, part in verdicts.groupby("base"):
        noise = factors[(factors["base"] == base) & (factors["factor"] == NOISE_FACTOR)]
        assert len(noise) == 1  # the committed suite retrains each reference once with another seed
        for axis, column, threshold in (("db", "d_psnr", NOTABLE_DB), ("pct", "d_gflops_pct", NOTABLE_PCT)):
            measured = noise[column].abs().max()
            assert set(part[f"floor_{axis}"]) == {max(threshold, measured)}
            assert set(part[f"floor_{axis}_by"]) == {"noise" if measured > threshold else "threshold"}


def test_the_verdicts_follow_the_floors(verdicts):
    words = {  # (PSNR beyond its floor, GFLOPs beyond its floor) at the row's own cost -> verdict
        (1, -1): "better", (1, 0): "better", (1, 1): "trade-off", (-1, 1): "worse", (-1, 0): "worse",
        (-1, -1): "trade-off", (0, -1): "cheaper", (0, 1): "costlier", (0, 0): "neutral",
    }  # fmt: skip
    seen = set()
    for _, v in verdicts.iterrows():
        if v["factor"] == NOISE_FACTOR:
            assert v["verdict"] == NOISE_VERDICT
            continue
        q = 0 if abs(v["quality_db"]) <= v["floor_db"] else int(math.copysign(1, v["quality_db"]))
        c = 0 if abs(v["d_gflops_pct"]) <= v["floor_pct"] else int(math.copysign(1, v["d_gflops_pct"]))
        if not math.isnan(v["d_psnr_matched"]) and q:  # at equal cost, the cost does not trade against the quality
            c = 0
        assert v["verdict"] == words[q, c], v["row"]
        seen.add(v["verdict"])
    assert {"better", "worse", "cheaper", "neutral"} <= seen


def test_the_sweep_comparisons_are_the_router_summaries():
    points, routers = _csv("sweep_points"), _csv("routers")
    level = default_oracle(_levels(routers))
    comparisons = sweep_comparisons(points, routers, level).set_index(["family", "comparison"])
    for family, part in routers.groupby("family"):
        by = part.set_index(["router", "dataset", "scale"])
        argmax, random = by.loc["learned argmax"], by.loc["random, argmax shares"]
        oracle = by.loc[oracle_name(level)]
        diff = argmax["psnr"] - random["psnr"]
        line = comparisons.loc[(family, "argmax − random at the argmax's shares (dB)")]
        assert math.isclose(line["mean"], diff.mean()) and math.isclose(line["max"], diff.max())
        assert line["verdict"] == ("better" if diff.mean() > NOTABLE_DB else "neutral" if diff.mean() >= -NOTABLE_DB
                                   else "worse")  # fmt: skip
        saved = comparisons.loc[(family, "argmax: FLOPs saved vs all deepest (%)")]
        assert math.isclose(saved["mean"], argmax["saved_pct"].mean())
        found = comparisons.loc[(family, f"argmax: share of the {oracle_name(level)} saving found (%)")]
        assert math.isclose(found["mean"], (100 * argmax["saved_pct"] / oracle["saved_pct"]).mean())
        on_front = points[(points["family"] == family) & (points["knob"] == "none") & (points["router"] == "learned")]
        front = comparisons.loc[(family, "argmax: below the attainable front (dB)")]
        assert front["verdict"] == ("on front" if on_front["on_front"].all() else "below front")


def _reading_sections(markdown: str) -> dict[str, str]:
    reading = markdown.split("\n## Reading\n", 1)[1].split("\n## ", 1)[0]  # up to the next section (recipe v2's)
    return {s.split("\n", 1)[0]: s.split("\n", 1)[1] for s in re.split(r"(?m)^### ", reading)[1:]}


def test_the_committed_reading_is_tables_with_at_most_three_short_sentences():
    markdown = (RESULTS / TABLE).read_text(encoding="utf-8")
    sections = _reading_sections(markdown)
    assert list(sections) == ["Factors: MoEISR-LIIF", "Factors: MoEISR-LTE", "Routing sweep"]
    for title, body in sections.items():
        table = "\n".join(line for line in body.splitlines() if line.startswith("|"))
        prose = " ".join(line for line in body.splitlines() if line.strip() and not line.startswith("|"))
        sentences = re.split(r"(?<=\.) (?=[A-Z])", prose.strip())
        assert table and 1 <= len(sentences) <= 3, title
        assert all(len(s) < 300 for s in sentences), [len(s) for s in sentences]
        assert [n for n in DECIMAL.findall(prose) if n not in table] == [], title  # every number is the table's
    liif = sections["Factors: MoEISR-LIIF"]
    assert "| `liif-seed1`" in liif and "| noise " in liif and "| 0.050 (threshold) " in liif


def test_the_committed_table_holds_the_verdicts_of_the_committed_csvs(verdicts):
    sections = _reading_sections((RESULTS / TABLE).read_text(encoding="utf-8"))
    for _, v in verdicts.iterrows():
        section = sections[f"Factors: MoEISR-{v['base'].removeprefix('moeisr_').upper()}"]
        line = next(line for line in section.splitlines() if f"| `{v['row']}` " in line)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == f"{v['d_psnr']:+.3f}" and cells[4] == f"{v['d_gflops_pct']:+.1f}"
        assert cells[-1] == v["verdict"]


def test_the_report_renders_the_committed_summaries_from_the_raw_artefacts(tmp_path):
    (tmp_path / "ablations").mkdir()
    for name in [f"{n}.csv" for n in RAW_CSVS] + [META_FILE]:
        shutil.copy(RESULTS / "ablations" / name, tmp_path / "ablations" / name)
    for section in (RESULTS / "ablations").glob("*/selection.md"):  # a suite's selection, which the table ends with
        (tmp_path / "ablations" / section.parent.name).mkdir()
        shutil.copy(section, tmp_path / "ablations" / section.parent.name / section.name)
    written = render(tmp_path, log=lambda line: None)
    for name in SUMMARIES:
        assert (tmp_path / "ablations" / f"{name}.csv").read_bytes() == (
            RESULTS / "ablations" / f"{name}.csv"
        ).read_bytes(), name

    def body(path):  # without the provenance lines (this machine, this command)
        return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("_Generated by")]

    assert body(tmp_path / TABLE) == body(RESULTS / TABLE)
    assert {p.name for p in written if p.suffix == ".png"} == {
        "ablations_factors.png", "ablations_sweep_liif.png", "ablations_sweep_lte.png"
    }  # fmt: skip


def test_the_report_md_section_is_built_from_the_results_folder(tmp_path):
    section = section_markdown(RESULTS)
    assert section.startswith("## Ablations\n\n### Factors: MoEISR-LIIF\n")
    sections = _reading_sections((RESULTS / TABLE).read_text(encoding="utf-8"))
    assert all(body.strip() in section for body in sections.values())  # the same reading as tables/ablations.md
    assert "\n## " not in section and "### Budget and grid" in section and "#### moeisr-liif" in section
    assert "![Routing sweep: moeisr-lte](figures/ablations_sweep_lte.png)" in section
    assert section_markdown(tmp_path) is None


def test_a_factor_verdict_cites_its_interval_and_an_interval_holding_zero_is_no_finding(factors):
    verdicts = factor_verdicts(factors).set_index("row")
    findings = verdicts[verdicts["verdict"].isin(["better", "worse"])]
    assert len(findings) >= 2  # the committed rows have findings to cite
    assert findings["quality_lo"].notna().all() and (findings["psnr_decided_by"] == "interval").all()
    assert ((findings["quality_lo"] > 0) | (findings["quality_hi"] < 0)).all()
    # liif-j2 passes the floor at matched cost; widen its interval over 0 and it is no longer "better"
    row = factors["row"] == "liif-j2"
    assert verdicts.loc["liif-j2", "verdict"] == "better"
    widened = factors.copy()
    widened.loc[row, "matched_ci_lo"] = -0.01
    line = factor_verdicts(widened).set_index("row").loc["liif-j2"]
    assert line["verdict"] == "costlier" and line["psnr_decided_by"] == "interval"  # only its +16.6% GFLOPs remain


def test_learned_minus_random_is_paired_per_image_from_the_sweep_rows():
    sweep = pd.read_csv(RESULTS / "ablations" / "sweep.csv", dtype={"knob": str, "image": str})
    intervals = _csv("sweep_intervals").set_index("family")
    points, routers = _csv("sweep_points"), _csv("routers")
    comparisons = sweep_comparisons(points, routers, default_oracle(_levels(routers)), intervals.reset_index())
    keys = ["dataset", "image", "scale"]
    for family, rows in sweep.groupby("family"):
        argmax = rows[(rows["router"] == "learned") & (rows["knob"] == "none")].set_index(keys)["psnr"]
        random = rows[(rows["router"] == "random") & rows["knob"].str.startswith("random:shares-of=none:")]
        diff = (argmax - random.groupby(keys)["psnr"].mean()).dropna()
        line = intervals.loc[family]
        assert line["pairs"] == len(diff) > 4 * 5  # images, not the 4 cells
        assert math.isclose(line["mean"], diff.mean()) and line["ci_lo"] < diff.mean() < line["ci_hi"]
        assert (line["better"], line["worse"]) == ((diff > 0).sum(), (diff < 0).sum())
        shown = comparisons.set_index(["family", "comparison"]).loc[
            (family, "argmax − random at the argmax's shares (dB)")
        ]
        assert (shown["ci_lo"], shown["ci_hi"], shown["ci_over"]) == (
            line["ci_lo"],
            line["ci_hi"],
            f"{len(diff)} images",
        )
