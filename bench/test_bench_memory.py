"""Peak resident memory of single `upscale` calls, each in a fresh interpreter (bench/memcase.py), so one
case's peak does not hide another's. The full-size cases run with --bench-large only: LIIF and LTE with the
paper's EDSR-baseline and RDN encoders (256-wide decoders, random weights) at ×4 of a 1024² LR (RDN then
encodes in 2×2 tiles) and ×30 of a 256² LR (a 7680² output), each must stay under 6 GB. They take 5-40
minutes each on 2 shared cores; e.g. `nice -n 10 pytest bench/test_bench_memory.py --bench-large
--bench-threads 1 -k large -p no:cacheprovider` (MOEISR_BENCH_OUT=... keeps results/ untouched)."""

from __future__ import annotations

import benchlib as B
import pytest

LIMIT_GB = 6.0
CASES = [
    ("liif", ["--image", "Set14:barbara", "--scale", "4"]),
    ("lte", ["--image", "Set14:barbara", "--scale", "4"]),
    ("moeisr-liif", ["--image", "Set14:barbara", "--scale", "4", "--routing", "budget60"]),
    ("moeisr-lte", ["--image", "Set14:barbara", "--scale", "4", "--routing", "budget60"]),
    ("liif", ["--image", "Set14:barbara", "--scale", "4", "--path", "as_published"]),
    ("liif", ["--image", "Set14:barbara", "--scale", "12"]),
    ("liif", ["--largest", "Urban100", "--scale", "4"]),
    ("moeisr-liif", ["--largest", "Urban100", "--scale", "4", "--routing", "budget60"]),
    # issue 3's "Done when": the paper's RDN encoder on a real Set14 image at x2, x3.5 and x12
    *[
        (name, ["--image", "Set14:barbara", "--scale", scale])
        for name in ("liif-rdn", "lte-rdn")
        for scale in ("2", "3.5", "12")
    ],
]
FULL_SIZE_INPUTS = [["--lr-size", "1024", "--scale", "4"], ["--lr-size", "256", "--scale", "30"]]
LARGE = [(name, args) for name in ("liif", "lte", "liif-rdn", "lte-rdn") for args in FULL_SIZE_INPUTS]


def _case_id(case):
    name, args = case
    return "-".join([name, *[a.lstrip("-").replace(":", "_") for a in args]])


def _run(benchmark, store, name, args):
    result = {}

    def once():
        result.update(B.memory_case([name, *args]))

    benchmark.pedantic(once, rounds=1)
    result["case"] = _case_id((name, args))
    result["under_limit"] = result["peak_rss_gb"] < LIMIT_GB
    store.memory.append(result)
    benchmark.extra_info.update(result)
    assert result["under_limit"], f"{result['case']}: peak RSS {result['peak_rss_gb']:.2f} GB >= {LIMIT_GB} GB"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_peak_memory(benchmark, store, case):
    _run(benchmark, store, *case)


@pytest.mark.parametrize("case", LARGE, ids=_case_id)
def test_peak_memory_large(benchmark, store, large, case):
    if not large:
        pytest.skip("long case: run with --bench-large")
    _run(benchmark, store, *case)
