"""Wall-clock speed-ups of trained models, measured side by side on one image (issue 21, item 4).

The machine is shared and noisy, so a speed-up is a ratio of two models timed in one process, alternately: each
round runs every model once (the first model of a round rotates, so no model always runs first after the same
other), after untimed warm-up runs; each model's time is the median of its rounds. The image of a set × scale cell
is the one whose decoder share of the FLOPs is closest to the cell's median (`representative_image`), computed from
the evaluated rows' exact per-image FLOPs: deterministic and free, where the share of the *time* would have to be
measured on every image first (docs/speed.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import pandas as pd


def decoder_share(rows: pd.DataFrame, encoder_flops_per_lr_pixel: float) -> pd.Series:
    """Per row (columns gflops, lr_h, lr_w): the share of its FLOPs spent after the encoder, in [0, 1]."""
    encoder_gflops = encoder_flops_per_lr_pixel * rows["lr_h"] * rows["lr_w"] / 1e9
    return 1.0 - encoder_gflops / rows["gflops"]


def representative_image(rows: pd.DataFrame, encoder_flops_per_lr_pixel: float) -> str:
    """The `image` of `rows` (one model's rows of one cell) whose decoder share of the FLOPs is closest to the
    cell's median (ties: the first in name order). ValueError for no rows."""
    if rows.empty:
        raise ValueError("no rows to pick an image from")
    rows = rows.sort_values("image", kind="stable")
    share = decoder_share(rows, encoder_flops_per_lr_pixel)
    distance = (share - share.median()).abs().to_numpy()
    return str(rows["image"].iloc[int(distance.argmin())])


def time_side_by_side(
    runs: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each callable of `runs` `repeats` times, alternating (round r starts at the r-th model), after `warmup`
    untimed rounds. Returns {name: [seconds per round]}, in `runs` order. ValueError for repeats < 1."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds
