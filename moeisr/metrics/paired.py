"""Paired statistics over images: the mean difference with a percentile bootstrap confidence interval.

Two methods evaluated on the same images give one difference per image (e.g. ΔPSNR in dB). The bootstrap
resamples images with replacement (`resamples` times, a fixed seed) and takes the 2.5th and 97.5th percentiles of
the resampled means as the 95% interval. A verdict is read from the interval, with a practical-significance
floor: a difference whose interval excludes 0 but whose mean is below the floor is reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
FLOOR_DB = 0.05  # practical significance: below this |mean ΔPSNR| a difference is not a finding


@dataclass(frozen=True)
class PairedDifference:
    """mean, lo, hi: the mean difference and its 95% interval; better/worse: images above/below zero."""

    n: int
    mean: float
    lo: float
    hi: float
    better: int
    worse: int

    def verdict(self, floor: float = FLOOR_DB) -> tuple[str, str]:
        """(verdict, what decided it): 'better' / 'worse' when the interval excludes 0 and |mean| ≥ floor,
        'matches' otherwise; the second item says whether the interval or the floor decided."""
        if self.lo > 0 or self.hi < 0:
            if abs(self.mean) >= floor:
                return ("better" if self.mean > 0 else "worse"), "interval"
            return "matches", f"floor {floor:g}"
        return "matches", "interval"

    def reversed(self) -> PairedDifference:
        """The same comparison the other way round (b − a for a − b): the percentile interval mirrors exactly."""
        return PairedDifference(self.n, -self.mean, -self.hi, -self.lo, self.worse, self.better)


def paired_bootstrap(differences, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95):
    """The PairedDifference of per-image `differences` (1-D, e.g. dB); NaNs are dropped. ValueError when empty."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        raise ValueError("no paired differences to bootstrap")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(int(d.size), float(d.mean()), float(lo), float(hi), int((d > 0).sum()), int((d < 0).sum()))
