"""Paired bootstrap intervals on real per-image PSNR differences (the committed main.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeisr.metrics.paired import paired_bootstrap

MAIN = Path(__file__).resolve().parents[1] / "results" / "main.csv"


def differences(a: str, b: str) -> np.ndarray:
    rows = pd.read_csv(MAIN)
    rows = rows[rows["knob"].astype(str) == "none"]
    keys = ["dataset", "image", "scale"]
    pair = rows[rows.model == a].merge(rows[rows.model == b], on=keys, suffixes=("_a", "_b"))
    return (pair.psnr_a - pair.psnr_b).to_numpy()


def test_the_interval_holds_the_mean_and_is_reproducible():
    d = differences("moeisr-liif", "liif-equal-budget")
    result = paired_bootstrap(d)
    assert result.n == len(d) == 324 and result.lo < result.mean < result.hi
    assert result.mean == pytest.approx(d.mean()) and result.better + result.worse <= result.n
    assert paired_bootstrap(d) == result  # fixed seed
    assert result.hi < 0 and result.verdict() == ("worse", "interval")  # MoEISR-LIIF is below on most images


def test_a_tiny_but_consistent_difference_is_stopped_by_the_floor():
    d = differences("liif-equal-budget", "liif") * 0 + 0.01 + np.linspace(-0.001, 0.001, 324)
    result = paired_bootstrap(d)
    assert result.lo > 0 and result.verdict() == ("matches", "floor 0.05")


def test_an_interval_across_zero_matches():
    d = np.array([0.2, -0.25, 0.1, -0.05, 0.02, -0.03])
    assert paired_bootstrap(d).verdict() == ("matches", "interval")
    with pytest.raises(ValueError):
        paired_bootstrap([np.nan])


def test_the_reversed_comparison_mirrors_the_bootstrap_of_the_negated_differences():
    d = np.random.default_rng(3).normal(0.04, 0.1, size=57)
    forward, backward = paired_bootstrap(d), paired_bootstrap(-d)
    mirrored = forward.reversed()
    assert (mirrored.n, mirrored.better, mirrored.worse) == (backward.n, backward.better, backward.worse)
    assert np.allclose([mirrored.mean, mirrored.lo, mirrored.hi], [backward.mean, backward.lo, backward.hi])
