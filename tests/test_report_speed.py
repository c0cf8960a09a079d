"""REPORT.md's speed section: built from the summary the speed suite writes (bench/report.py) by REPORT.md's one
writer (`moeisr.report.render`), absent when the suite has not run; the suite itself never edits REPORT.md.

The rows below have the fields the suite's tests record; their values are chosen to exercise both outcomes of
every target (this tests the plumbing from measurements to REPORT.md, not the machine's speed: that is bench/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from moeisr.report.report_md import ReportInputs, render_report, speed_section

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import benchlib
    import report

    yield benchlib, report
    for name in ("report", "benchlib"):
        sys.modules.pop(name, None)


def _store(benchlib):
    store = benchlib.Store(weights={"liif": "random (seed 0)", "moeisr-liif": "random (seed 0)"})
    for model, fraction in (("liif", 0.91), ("lte", 0.55)):
        store.decoder.append({"model": model, "routing": None, "path": "as_executed", "megapixels_per_s": 1.0,
                              "matmul_peak_gflops": 100.0, "peak_fraction": fraction})  # fmt: skip
    for model, dataset, ratio in (("moeisr-liif", "Set14", 0.97), ("moeisr-liif", "Urban100", 0.93),
                                  ("moeisr-lte", "Set14", 0.85), ("moeisr-lte", "Urban100", 0.91)):  # fmt: skip
        store.upscale.append({"model": model, "routing": "budget60", "dataset": dataset, "scale": 4,
                              "path": "as_executed", "seconds": 1.0, "megapixels_per_s": 1.0, "speedup": 1.5,
                              "flop_ratio": 1.5 / ratio, "realised_over_flops": ratio,
                              "expert_counts": [1, 2]})  # fmt: skip
    # LMF beside its backbone: rows without a target (they must not enter MoEISR's or the decoder targets)
    store.weights["lm-liif"] = "random (seed 0), CMSR off"
    store.decoder.append({"model": "lm-liif", "decoder": "latent MLP (per LR pixel) + render MLP (per query)",
                          "routing": None, "path": "as_executed", "megapixels_per_s": 2.0,
                          "matmul_peak_gflops": 100.0, "peak_fraction": 0.1})  # fmt: skip
    store.upscale.append({"family": "liif", "model": "lm-liif", "routing": None, "dataset": "Set14", "scale": 4,
                          "path": "as_executed", "seconds": 0.5, "megapixels_per_s": 2.0, "speedup": 2.0,
                          "flop_ratio": 4.0, "realised_over_flops": 0.5, "expert_counts": [3]})  # fmt: skip
    store.reference.append({"image": "img_011", "scale": 4, "ours_seconds": 1.0, "reference_seconds": 3.0,
                            "speedup": 3.0, "max_abs_diff": 6e-8})  # fmt: skip
    store.memory.append({"case": "liif-lr-size-256-scale-30", "peak_rss_gb": 1.2, "out_size": [7680, 7680]})
    return store


def test_no_section_before_the_suite_has_run(tmp_path):
    assert speed_section(tmp_path) == ""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "summary.json").write_text("{not json")
    assert speed_section(tmp_path) == ""


def test_the_suite_writes_its_summary_and_leaves_report_md_to_its_one_writer(tmp_path, bench_report):
    benchlib, report = bench_report
    results = tmp_path / "results"
    results.mkdir()
    (results / "REPORT.md").write_text("# moeisr reproduction report\n\n## Reading\n\ntext\n")
    written = report.write(_store(benchlib), results / "bench")
    assert (results / "bench" / "speed.png").is_file() and (results / "bench" / "summary.json") in written
    # no run.json here, so nothing renders REPORT.md: the suite never splices it
    assert results / "REPORT.md" not in written and "Speed" not in (results / "REPORT.md").read_text()
    section = speed_section(results)
    lines = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    liif = lines["realised speed-up / FLOPs saving, moeisr-liif (budget60), ×4 Set14 and Urban100"]
    lte = lines["realised speed-up / FLOPs saving, moeisr-lte (budget60), ×4 Set14 and Urban100"]
    assert "0.93–0.97" in liif and liif.rstrip(" |").endswith("yes")
    assert "0.85–0.91" in lte and lte.rstrip(" |").endswith("no")
    assert "3.00×" in lines["our LIIF `upscale` vs the official inference path, Urban100 ×4"]
    assert lines["decoder share of the fp32 matmul peak, lte"].rstrip(" |").endswith("no")
    assert "max 1.20 GB (liif-lr-size-256-scale-30)" in lines["peak RSS, 1 cases"]
    assert "[bench/bench.md](bench/bench.md)" in section and "![Speed suite](bench/speed.png)" in section
    assert "liif: random (seed 0)" in section and "rows measured at commit(s) `" in section


def test_lmf_rows_are_tabled_beside_their_backbone_without_a_target(tmp_path, bench_report):
    """LM-LIIF's decoder and side-by-side rows reach bench.md and summary.json (speed-up against LIIF, measured in
    the same sweep) but none of the targets, which are MoEISR's and the LIIF/LTE decoders'."""
    import json

    benchlib, report = bench_report
    report.write(_store(benchlib), tmp_path / "bench")
    summary = json.loads((tmp_path / "bench" / "summary.json").read_text())
    assert summary["lmf_vs_backbone"]["lm-liif"]["Set14"]["4"]["as_executed"] == {
        "vs": "liif", "speedup": 2.0, "flop_ratio": 4.0, "realised_over_flops": 0.5}  # fmt: skip
    assert summary["decoder_megapixels_per_s"]["lm-liif"]["None"]["as_executed"] == 2.0
    targets = summary["targets"]
    assert set(targets["decoder_peak_fraction"]["values"]) == {"liif/as_executed", "lte/as_executed"}
    assert not any(k.startswith("lm-") for k in targets["realised_over_flops_x4"]["values"])
    assert targets["realised_over_flops_x4"]["met"]["as_executed"] is False  # moeisr-lte's 0.85, not lm-liif
    assert summary["weights"]["lm-liif"] == "random (seed 0), CMSR off"
    bench_md = (tmp_path / "bench" / "bench.md").read_text()
    decoder_rows = [line for line in bench_md.splitlines() if line.startswith("| lm-liif ")]
    assert len(decoder_rows) == 2 and "latent MLP (per LR pixel) + render MLP (per query)" in decoder_rows[0]
    section = speed_section(tmp_path)  # REPORT.md: the targets' rows only, and the weights of every model
    assert not [line for line in section.splitlines() if line.startswith("| ") and "lm-liif" in line]
    assert "lm-liif: random (seed 0), CMSR off" in section


def test_lmf_decoder_macs_are_the_closed_form_mlps(bench_report):
    """The suite's LMF models are their experiments' models; their decoder MACs are the closed form's latent and
    render MLPs without the modulations' element-wise FLOPs (which the suite never counts)."""
    from moeisr.flops import closed_form as cf
    from moeisr.registry import models

    benchlib, _ = bench_report
    tiny = {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}}
    for name, closed in (("lm-liif", cf.lm_liif), ("lm-lte", cf.lm_lte)):
        model = models.make(benchlib.lmf_spec(name, tiny))
        parts = benchlib.lmf_decoder_macs(model, 12 * 16, (3, 4))
        expected = closed((3, 4), (12, 16), feat_dim=8)
        modulations = 12 * 16 * 4 * cf.lmf_mod_dim(model.imnet.hidden_dim, model.imnet.hidden_depth)
        assert parts == {"latent": expected["latent"], "render": expected["render"] - modulations}
        assert benchlib.decoder_macs(model, [12 * 16], (3, 4), "as_published") == sum(parts.values())


def test_render_report_places_the_speed_section(tmp_path, bench_report):
    benchlib, report = bench_report
    report.write(_store(benchlib), tmp_path / "bench")
    inputs = ReportInputs(profile="cpu", commit="abc", command="moeisr reproduce", experiments=[], grid_lines=[],
                          timings={}, check_markdown="–", paragraphs=[], speed=speed_section(tmp_path))  # fmt: skip
    text = render_report(inputs)
    assert text.count("## Speed (wall clock)") == 1 and "<!--" not in text


def test_a_run_on_other_weights_is_recorded_per_row(tmp_path, bench_report):
    """A later `-k bf16` run on trained checkpoints stamps its own row; the earlier rows keep the weights they
    were measured with, and the summary names both for the model they share."""
    benchlib, report = bench_report
    out = tmp_path / "bench"
    report.write(_store(benchlib), out)
    trained = benchlib.Store(weights={"liif": "results/checkpoints/liif.pt"})
    trained.experiments.append({"experiment": "bf16_decoder_gemms", "model": "liif", "speedup": 1.3})
    merged = report.merge(trained, out)
    assert {r["weights"] for r in merged["decoder"] if r["model"] == "liif"} == {"random (seed 0)"}
    assert merged["experiments"][0]["weights"] == "results/checkpoints/liif.pt"
    assert merged["weights"]["liif"] == "random (seed 0) | results/checkpoints/liif.pt"
    assert merged["weights"]["moeisr-liif"] == "random (seed 0)"


def test_stage_times_show_this_run_beside_the_from_scratch_cost():
    """A second run that reused everything took seconds; the section also shows what the work took when it was
    done (recorded training times, summed per-row eval times) and lists the partial --models jobs."""
    from moeisr.report.report_md import stage_time_lines

    timings = {
        "stages": {
            "train": {"seconds": 0.1, "finished": "t1", "commit": "c2", "details": "trained or bundled: none"},
            "eval": {"seconds": 0.2, "finished": "t1", "commit": "c2", "details": "0 of 4 rows computed"},
            "eval (moeisr-liif)": {"seconds": 3900.0, "finished": "t0", "commit": "c1", "details": "2 of 2 rows"},
        }
    }
    experiments = [{"train_seconds": 3600.0}, {"train_seconds": 5400.0}, {"train_seconds": None}]
    text = "\n".join(stage_time_lines(timings, experiments, eval_seconds=600.0))
    train_row = next(line for line in text.splitlines() if line.startswith("| train "))
    assert "0.1 s" in train_row and "2.50 h (sum of the 2 experiments' recorded training times)" in train_row
    eval_row = next(line for line in text.splitlines() if line.startswith("| eval "))
    assert "0.2 s" in eval_row and "10.0 min" in eval_row
    assert "Partial jobs" in text and "`eval (moeisr-liif)`" in text and "65.0 min" in text
    assert "Partial jobs" not in "\n".join(stage_time_lines({"stages": {}}, [], None))
