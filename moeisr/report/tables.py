"""Markdown tables rendered from tidy result rows (one row per model, dataset, image, scale, knob)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from moeisr.report.published import BICUBIC_PSNR

SET_ORDER = ("Set5", "Set14", "B100", "Urban100", "DIV2K")


def set_means(frame: pd.DataFrame, metrics: Sequence[str] = ("psnr", "ssim", "lpips")) -> pd.DataFrame:
    """Mean of per-image metrics per (model, dataset, scale, knob), with the image count `n`."""
    keys = ["model", "dataset", "scale", "knob"]
    grouped = frame.groupby(keys, sort=False)
    means = grouped[list(metrics)].mean()
    means["n"] = grouped.size()
    return means.reset_index()


def dataset_label(name: str, n: int, total: int | None) -> str:
    """'Urban100 (first 20)' when a subset was evaluated, else the set's name."""
    return f"{name} (first {n})" if total is not None and n < total else name


def bicubic_table(frame: pd.DataFrame, set_sizes: dict[str, int] | None = None) -> str:
    """Markdown: bicubic PSNR/SSIM/LPIPS per set and scale, next to the published PSNR and the difference."""
    means = set_means(frame[frame["model"] == "bicubic"])
    order = {name: i for i, name in enumerate(SET_ORDER)}
    means = means.sort_values(["dataset", "scale"], key=lambda c: c.map(order) if c.name == "dataset" else c)
    rows = []
    for _, r in means.iterrows():
        published = BICUBIC_PSNR.get((r["dataset"], int(r["scale"])))
        rows.append(
            {
                "dataset": dataset_label(r["dataset"], int(r["n"]), (set_sizes or {}).get(r["dataset"])),
                "scale": f"x{r['scale']:g}",
                "images": int(r["n"]),
                "PSNR (dB)": round(r["psnr"], 2),
                "published PSNR": published,
                "Δ vs published": None if published is None else round(r["psnr"] - published, 3),
                "SSIM": round(r["ssim"], 4),
                "LPIPS": round(r["lpips"], 4),
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False)
